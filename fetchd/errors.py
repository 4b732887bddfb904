"""The one error hierarchy of fetchd, and fetchmail's exit codes.

Every error a user can meet is a FetchdError subclass. Each class knows the fetchmail exit code it
maps to and whether retrying later may help (``transient``). Only ``fetchd.cli`` turns them into an
exit status; everything else raises or returns them.
"""

from __future__ import annotations

import enum
import os
import re


class ExitCode(enum.IntEnum):
    """fetchmail's exit codes (see fetchmail(1), "EXIT CODES")."""

    MAIL = 0
    NOMAIL = 1
    SOCKET = 2
    AUTH = 3
    PROTOCOL = 4
    SYNTAX = 5
    RCPERMS = 6
    SERVER = 7
    LOCK = 8
    LOCKBUSY = 9
    SMTP = 10
    DNS = 11
    BSMTP = 12
    FETCHLIMIT = 13
    SERVERBUSY = 14
    UNDEFINED = 23


class FetchdError(Exception):
    """Base of every error fetchd reports to a user."""

    exit_code: ExitCode = ExitCode.UNDEFINED
    transient: bool = False


class ConfigError(FetchdError):
    """The rc file or the command line cannot be understood."""

    exit_code = ExitCode.SYNTAX


class RCSyntaxError(ConfigError):
    """A syntax error in an rc file, located by file, line and column."""

    def __init__(
        self, filename: str, line: int, column: int, message: str, *, found_line: int = 0
    ) -> None:
        self.filename = filename
        self.line = line
        # Where the parser stopped (fetchmail's line), when ``line`` names an earlier cause:
        # a quote that is never closed.
        self.found_line = found_line or line
        self.column = column
        self.message = message
        super().__init__(f"{filename}:{line}:{column}: {message}")


class RCPermissionError(ConfigError):
    """The rc file is not private enough, or not owned by the user."""

    exit_code = ExitCode.RCPERMS


class HookError(FetchdError):
    """A preconnect or postconnect command failed (fetchmail: PS_SYNTAX, account skipped)."""

    exit_code = ExitCode.SYNTAX


class SocketError(FetchdError, ConnectionError):
    """The connection to the mail server could not be made or broke."""

    exit_code = ExitCode.SOCKET
    transient = True


def connect_error(host: str, port: int | None, exc: OSError) -> SocketError:
    """The one wording of a failed connection, for POP3 and IMAP alike:
    ``HOST:PORT: cannot connect: Connection refused``."""
    where = f"{host}:{port}" if port is not None else host
    return SocketError(f"{where}: cannot connect: {_reason(exc)}")


def _reason(exc: OSError) -> str:
    # asyncio puts "Connect call failed ('127.0.0.1', 110)" where strerror belongs, and joins the
    # errors of several addresses into one text without an errno: name the system's reason.
    errno = exc.errno
    if not errno:
        found = re.search(r"\[Errno (\d+)\]", str(exc))
        errno = int(found[1]) if found else None
    if errno:
        return os.strerror(errno)
    return str(exc) or type(exc).__name__


class FetchdTimeoutError(SocketError, TimeoutError):
    """A network wait passed its deadline."""


class DNSError(SocketError):
    """The server name could not be resolved."""

    exit_code = ExitCode.DNS


class TLSError(SocketError):
    """TLS could not be established, or the certificate was refused.

    Not transient: retrying will meet the same certificate or the same refusal.
    """

    transient = False


class AuthError(FetchdError):
    """The server refused our credentials, or no acceptable way to send them exists."""

    exit_code = ExitCode.AUTH


class CredentialsRejectedError(AuthError):
    """The server answered NO to the password or token we sent (not: no usable mechanism).
    For a stored OAuth2 token this means refresh once and retry once."""


class OAuth2GrantError(AuthError):
    """The provider refused the stored refresh token for good (``invalid_grant``: revoked,
    expired, password changed): only logging in again helps; the message says how."""


class OAuth2UnavailableError(SocketError):
    """The provider's token endpoint could not be reached or failed (network, 5xx): transient."""


class ProtocolError(FetchdError):
    """The server said something that breaks the protocol."""

    exit_code = ExitCode.PROTOCOL
    transient = True


class ServerError(FetchdError):
    """The server reported a failure of its own (e.g. [SYS/PERM])."""

    exit_code = ExitCode.SERVER
    transient = True


class ServerBusyError(ServerError):
    """The mailbox is in use or locked ([IN-USE], [LOGIN-DELAY])."""

    exit_code = ExitCode.SERVERBUSY


class LockError(FetchdError):
    """Another fetchd holds the lock we need."""

    exit_code = ExitCode.LOCKBUSY


class DaemonRunningError(FetchdError):
    """Another fetchd daemon of this user runs (fetchmail's client-side exclusion, exit 8)."""

    exit_code = ExitCode.LOCK


class StateError(FetchdError):
    """The UID store cannot be read or written; the account stops rather than re-deliver."""

    exit_code = ExitCode.UNDEFINED


class DeliveryError(FetchdError):
    """The MTA or MDA did not take a message."""

    exit_code = ExitCode.SMTP
    transient = True

    def __init__(self, message: str, *, code: int | None = None, permanent: bool = False) -> None:
        super().__init__(message)
        self.code = code
        self.permanent = permanent
        self.transient = not permanent


class FleetRowError(ConfigError):
    """A row of the accounts table (fleet mode) cannot be made into an account. It names the
    row's id and column, never a password; the table's other rows are polled as usual."""

    def __init__(self, row_id: int, message: str) -> None:
        self.row_id = row_id
        super().__init__(f"fetchmail row {row_id}: {message}")


class FleetDatabaseError(FetchdError):
    """The fleet's PostgreSQL could not be reached or refused a statement: transient (the
    daemon keeps its accounts and tries again). The text never holds the DSN's password."""

    exit_code = ExitCode.SOCKET
    transient = True


class ClaimLostError(FleetDatabaseError):
    """A fleet poll's claim on its row ended (its database session is gone): the poll sends no
    delete and abandons its session, as another worker may now take the row."""
