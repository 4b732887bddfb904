"""A secret that never renders: tokens and client secrets travel as this type, not as ``str``.

``repr``, ``str`` and f-strings show ``*``, so a secret that reaches a log line, an exception
message or a dataclass repr by mistake shows nothing. Only ``reveal`` gives the text, and only the
code that sends it on the wire (or writes the token store) calls it.
"""

from __future__ import annotations

from typing import Final

MASK: Final = "*"


class Secret:
    """A string value that hides itself from every rendering."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        """The secret text, for the wire or the private token store only."""
        return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, format_spec: str) -> str:
        return MASK

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)

    def __bool__(self) -> bool:
        return bool(self._value)
