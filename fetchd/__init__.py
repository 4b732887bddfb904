"""fetchd: fetchmail rebuilt as an asyncio daemon."""

__version__ = "0.1.0.dev0"
