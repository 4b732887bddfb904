"""Issue 14 item 4: fetchd under exhausted resources. A real fetchd process, started with a
resource limit (address space, descriptors), a full or read-only state disk, or a stepped wall
clock (libfaketime), polls fake servers in the test's event loop into a real SMTP sink
(aiosmtpd). Each case must end in a clear error for the account concerned (account and stage
named), delete nothing that was not recorded, and leave the other accounts polling."""

from __future__ import annotations

import asyncio
import os
import resource
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from fetchd.demo.pop3server import DemoPOP3Server
from tests.fakes.imapserver import FakeIMAPServer
from tests.fakes.pop3server import FakePOP3Server, Faults
from tests.support.mta import Sink, running_mta

GOOD = [f"Subject: good {i}\r\n\r\nbody {i}\r\n".encode() for i in range(3)]
ADDRESS_SPACE = 512 * 1024 * 1024


@dataclass
class Child:
    code: int
    out: str


def _limits(**limits: int) -> Callable[[], None]:
    def apply() -> None:
        for name, value in limits.items():
            resource.setrlimit(getattr(resource, name), (value, value))

    return apply


async def run_fetchd(home: Path, rc: str, *args: str, timeout: float = 60, **limits: int) -> Child:
    """``fetchd -f RC ARGS`` in a child process with the given rlimits; its combined output."""
    rcfile = home / "fetchmailrc"
    rcfile.write_text(rc)
    rcfile.chmod(0o600)
    env = {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "FETCHD_SYSLOG_SOCKET": str(home / "syslog.sock"),
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "fetchd",
        "-N",
        "-f",
        str(rcfile),
        *args,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        preexec_fn=_limits(**limits),
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), timeout)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return Child(process.returncode, out.decode(errors="replace"))


def pop3_entry(port: int, user: str, password: str, sink: Sink) -> str:
    return (
        f"poll 127.0.0.1 via 127.0.0.1 proto pop3 port {port}\n"
        f'  user {user} password "{password}" is joe here smtphost 127.0.0.1/{sink.port}'
        " sslproto ''\n"
    )


@pytest.fixture
async def good_pop3() -> AsyncIterator[DemoPOP3Server]:
    server = DemoPOP3Server("good", "pw-good", list(GOOD))
    await server.start()
    yield server
    await server.stop()


def assert_clean(out: str) -> None:
    assert "Traceback" not in out, out
    assert "MemoryError" not in out, out


def imap_entry(name: str, port: int, user: str, password: str, sink: Sink) -> str:
    return (
        f"poll {name} via 127.0.0.1 proto imap port {port}\n"
        f'  user {user} password "{password}" is joe here smtphost 127.0.0.1/{sink.port}'
        " sslproto ''\n"
    )


async def test_an_endless_pop3_message_listed_at_10_12_octets_under_512_mb(
    tmp_path: Path, good_pop3: DemoPOP3Server
) -> None:
    """A POP3 server whose STAT and LIST say 10**12 octets and whose RETR never ends, to a
    fetchd limited to 512 MB of address space: the message streams to the MDA in bounded
    memory until the 512 MiB cap, then that account fails with a clear error naming it, its
    message is neither delivered nor deleted, and the next account's mail is delivered."""
    hostile = FakePOP3Server(
        [b"Subject: huge\r\n\r\nx\r\n"],
        "evil",
        "pw-evil",
        Faults(list_size=10**12, endless_retr=True),
    )
    delivered = tmp_path / "mda-out"
    async with hostile, running_mta() as sink:
        rc = pop3_entry(hostile.port, "evil", "pw-evil", sink).replace(
            "poll 127.0.0.1 via", "poll hostile via"
        ).replace(f"smtphost 127.0.0.1/{sink.port}", f"mda 'cat > {delivered}'") + pop3_entry(
            good_pop3.port, "good", "pw-good", sink
        ).replace("poll 127.0.0.1 via", "poll good via")
        child = await run_fetchd(tmp_path, rc, timeout=120, RLIMIT_AS=ADDRESS_SPACE)
    print(child.out)
    assert_clean(child.out)
    assert "evil@hostile" in child.out and "larger than 536870912 octets" in child.out
    assert len(sink.received) == 3
    assert len(hostile.messages) == 1 and not any(c.startswith("DELE") for c in hostile.commands)
    assert len(good_pop3.messages) == 0


@pytest.mark.parametrize("size", [2 << 30, 900 << 20], ids=["2GiB", "900MiB"])
@pytest.mark.parametrize("path", ["batched", "partial"])
async def test_a_huge_imap_literal_under_512_mb(
    tmp_path: Path, good_pop3: DemoPOP3Server, size: int, path: str
) -> None:
    """An IMAP server that answers FETCH with a 2 GiB literal (over the protocol's 1 GiB) or
    a 900 MiB one (under it, over what 512 MB of address space holds), for a small message
    (fetched in a batch) or a large one (fetched in parts), to a fetchd limited to 512 MB: a
    clear error for that account, its message kept, the next account delivered."""
    hostile = FakeIMAPServer(user="evil", password="pw-evil", huge_literal=size)
    body = b"x\r\n" if path == "batched" else (b"x" * 998 + b"\r\n") * 300
    hostile.add(b"Subject: huge\r\n\r\n" + body)
    await hostile.start()
    try:
        async with running_mta() as sink:
            rc = imap_entry("hostile", hostile.port, "evil", "pw-evil", sink) + pop3_entry(
                good_pop3.port, "good", "pw-good", sink
            ).replace("poll 127.0.0.1 via", "poll good via")
            child = await run_fetchd(tmp_path, rc, RLIMIT_AS=ADDRESS_SPACE)
    finally:
        await hostile.stop()
    print(child.out)
    assert_clean(child.out)
    assert f"evil@hostile: polling INBOX: server announced a literal of {size} octets" in child.out
    fetches = [c for c in hostile.received if b"BODY.PEEK[]" in c]
    assert fetches and all((b"<0." in c) == (path == "partial") for c in fetches), fetches
    assert len(sink.received) == 3
    assert len(hostile.messages) == 1 and "\\Deleted" not in hostile.messages[0].flags
    assert len(good_pop3.messages) == 0
