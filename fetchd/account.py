"""One account's poll as the command runs it, once or in a daemon: the stages around the
pipeline (interface check, lock, preconnect, password, DNS, each folder, postconnect), every
failure turned into one clear line with its stage and fetchmail's exit code, and the wait in
IMAP IDLE between polls.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import structlog

from fetchd.auth.oauth2.credential import stored_record, token_for_login
from fetchd.auth.oauth2.store import TokenRecord
from fetchd.auth.prompt import Passwords
from fetchd.config import Config
from fetchd.config.model import Server, User
from fetchd.daemon.supervisor import AccountStatus
from fetchd.errors import ConfigError, CredentialsRejectedError, ExitCode, FetchdError
from fetchd.hooks import run_hook
from fetchd.net.interface import note_activity, skip_reason
from fetchd.net.plugin import PluginLinks
from fetchd.options import Options
from fetchd.pipeline import open_imap_folder, poll_folder, protocol_of, server_true_name
from fetchd.poll import PollMemory, PollResult
from fetchd.state import AccountLock, UIDStore

log = structlog.get_logger("fetchd")


@dataclass
class RunMemory:
    """What one run of the command (a one-shot run, or a daemon's whole life) remembers
    between polls: the passwords typed at the terminal and the warnings already given."""

    passwords: Passwords = field(default_factory=Passwords)
    polls: PollMemory = field(default_factory=PollMemory)


# IDLE is renewed before servers drop it (RFC 2177: 30 minutes).
IDLE_RENEW = 28 * 60.0


def can_idle(server: Server) -> bool:
    """fetchmail IDLEs on an entry with one IMAP account and one folder; fetchd does so for
    every such entry, each on its own connection, while the other entries poll as usual."""
    return (
        server.protocol == "IMAP"
        and len(server.users) == 1
        and server.users[0].idle
        and len(server.users[0].mailboxes) <= 1
    )


def warn_idle_refused(entries: list[Server]) -> None:
    for server in entries:
        if any(user.idle for user in server.users) and not can_idle(server):
            log.warning(
                "idle.refused",
                text=f"{server.pollname}: idle works for an entry with one IMAP account and one "
                "folder, as in fetchmail; polling it at the daemon interval instead",
            )


async def idle_until_mail(config: Config, server: Server, user: User, *, memory: RunMemory) -> None:
    """Wait in IDLE until the folder changes; the caller then polls (a fresh search, so nothing
    that arrived between the poll and the IDLE is missed)."""
    label = f"{user.remote}@{server.pollname}"
    password = await _secret_for_login(config, server, user, label, memory)
    plugin = PluginLinks(server.plugin) if server.plugin else None
    try:
        await _idle_once(server, user, label, password, plugin)
    finally:
        if plugin is not None:
            await plugin.aclose()


async def _secret_for_login(
    config: Config,
    server: Server,
    user: User,
    label: str,
    memory: RunMemory,
    record: TokenRecord | None = None,
) -> str:
    """The stored OAuth2 token when the account has one (never a prompt), else the password."""
    record = record or stored_record(server, user)
    if record is not None:
        return await token_for_login(server, record, label)
    return await memory.passwords.for_login(config.filename, server, user)


async def _idle_once(
    server: Server, user: User, label: str, password: str, plugin: PluginLinks | None
) -> None:
    folder = (user.mailboxes or ("INBOX",))[0]
    truename, _address = await server_true_name(server)  # Kerberos's service principal names it
    source = await open_imap_folder(
        server, user, password, label, folder, plugin, truename=truename
    )
    try:
        log.info("idle.start", text=f"{label}: waiting for new mail (IDLE)")
        while not await source.client.idle(IDLE_RENEW):
            pass  # renewed: nothing arrived for 28 minutes
    finally:
        await source.abort()


async def poll_user(
    config: Config,
    server: Server,
    user: User,
    options: Options,
    store: UIDStore,
    status: AccountStatus | None = None,
    *,
    memory: RunMemory,
) -> int:
    """One account's poll; every failure becomes one clear line and fetchmail's exit code.

    In daemon mode ``status`` is updated for ``--status``, and an error that repeats the
    previous poll's is logged at debug level only: once per change, not once per poll.
    ``memory`` is the run's: passwords typed once, warnings given once.
    """
    label = f"{user.remote}@{server.pollname}"
    with structlog.contextvars.bound_contextvars(account=label):
        return await _poll_user(config, server, user, options, store, status, label, memory)


async def _poll_user(
    config: Config,
    server: Server,
    user: User,
    options: Options,
    store: UIDStore,
    status: AccountStatus | None,
    label: str,
    memory: RunMemory,
) -> int:
    stage = "configuration"
    messages = octets = 0
    began = time.monotonic()
    try:
        if not user.remote:
            raise ConfigError(
                f'poll {server.pollname!r}: the user name is empty (`user ""`, line '
                f"{user.line}); write the name to log in as in the rc file"
            )
        protocol = protocol_of(server)
        folders = user.mailboxes or ("INBOX",)
        if protocol == "POP3":
            folders = ("INBOX",)
        stage = "interface"
        skipped = skip_reason(server.pollname, server.interface, server.monitor)
        delivered = 0
        if skipped is not None:  # fetchmail's interface/monitor: not now, and not an error
            log.info("poll.skipped", text=skipped)
        else:
            try:
                lock = AccountLock.for_account(server.pollname, user.remote)
                stage = "locking"
                with lock:
                    if user.preconnect:
                        stage = "preconnect"
                        await run_hook("preconnect", user.preconnect, label, server.deadline)
                    stage = "password"
                    record = stored_record(server, user)
                    password = await _secret_for_login(config, server, user, label, memory, record)
                    stage = "dns"
                    true_name = await server_true_name(server)  # once per poll, for every folder
                    for folder in folders:
                        stage = f"polling {folder}" if protocol == "IMAP" else "polling"

                        async def poll(secret: str, folder: str = folder) -> PollResult:
                            return await poll_folder(
                                config.globals,
                                server,
                                user,
                                secret,
                                protocol,
                                folder,
                                options.check,
                                store,
                                true_name,
                                memory.polls,
                            )

                        try:
                            result = await poll(password)
                        except CredentialsRejectedError:
                            if record is None:
                                raise
                            # A token we believed valid was refused (revoked early, clock
                            # skew): refresh once and retry once. The refused login fetched
                            # nothing, so nothing can be delivered twice.
                            stage = "refreshing the OAuth2 token"
                            password = await token_for_login(
                                server, record, label, rejected=password
                            )
                            stage = f"polling {folder}" if protocol == "IMAP" else "polling"
                            result = await poll(password)
                        delivered += result.delivered
                        messages += result.delivered
                        octets += result.octets
                        if options.check and result.on_server - result.seen > 0:
                            delivered += 1
                    if user.postconnect:
                        stage = "postconnect"
                        await run_hook("postconnect", user.postconnect, label, server.deadline)
            finally:
                note_activity(server.monitor)  # our own traffic is not the link's activity
        code, error = int(ExitCode.MAIL if delivered else ExitCode.NOMAIL), None
    except FetchdError as exc:
        code, error = int(exc.exit_code), f"{stage}: {exc}"
        repeated = status is not None and status.error == error
        (log.debug if repeated else log.error)(
            "account.failed", stage=stage, text=f"{label}: {error}"
        )
    # For machines (journald, key=value); a person's terminal has the fetchmail-style lines.
    log.info(
        "poll.summary",
        outcome=code,
        delivered=messages,
        octets=octets,
        seconds=round(time.monotonic() - began, 3),
        error=error,
    )
    if status is not None:
        if status.error and not error:
            log.info("account.recovered", text=f"{label}: polling works again")
        status.last_poll, status.outcome, status.error = time.time(), code, error
        status.messages += messages
        status.octets += octets
    return code
