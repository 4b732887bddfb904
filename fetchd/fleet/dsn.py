"""The fleet's database address: checked before use, and shown without secrets.

A DSN is given on the command line, where every user of the machine can read it (``ps``): one
with a password is refused, and the password goes where libpq looks for it (``~/.pgpass``,
``PGPASSFILE``, ``PGPASSWORD``). What fetchd shows of a DSN (logs, ``--status``, errors) is
rebuilt from its parts without any password.
"""

from __future__ import annotations

from fetchd.errors import ConfigError


def _parts(dsn: str) -> dict[str, str]:
    from psycopg import conninfo

    try:
        return {k: str(v) for k, v in conninfo.conninfo_to_dict(dsn).items() if v is not None}
    except Exception:  # psycopg.ProgrammingError; its text may quote the DSN
        raise ConfigError(
            "--fleet: the DSN cannot be read (a postgresql:// URL or key=value pairs)"
        ) from None


def check_dsn(dsn: str) -> str:
    """``dsn`` if it can be used: parsable, and with no password in it."""
    if "password" in _parts(dsn):
        raise ConfigError(
            "--fleet: the DSN holds a password, which every user can read on the command line; "
            "put it in ~/.pgpass (or PGPASSFILE) instead, where libpq finds it"
        )
    return dsn


def shown_dsn(dsn: str) -> str:
    """The DSN as logs and ``--status`` show it: its parts, any password left out."""
    try:
        parts = _parts(dsn)
    except ConfigError:
        return "(unreadable DSN)"
    return " ".join(f"{k}={v}" for k, v in sorted(parts.items()) if k != "password")
