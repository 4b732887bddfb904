"""The whole ``fetchd`` command against a real Dovecot: POP3 and IMAP, TLS, a 300-message poll
killed with SIGKILL at several points, and migration from fetchmail's .fetchids."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import pytest

from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.mta import Sink, SlowSink, running_mta

pytestmark = pytest.mark.dovecot


def daemon_environment(home: Path) -> dict[str, str]:
    """A daemon's environment: its own home, state and (private) runtime directory."""
    (home / "run").mkdir(mode=0o700)
    return {
        "HOME": str(home),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_RUNTIME_DIR": str(home / "run"),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
    }


def rcfile(
    home: Path, dovecot: Dovecot, sink: Sink, protocol: str, extra: str = "", server: str = ""
) -> Path:
    port = dovecot.pop3_port if protocol == "pop3" else dovecot.imap_port
    path = home / "fetchmailrc"
    path.write_text(
        f"poll {dovecot.host} proto {protocol} port {port} {server}\n"
        f'  user {dovecot.user} password "{dovecot.password}" is joe here\n'
        f'  sslcertfile "{dovecot.ca_file}" smtphost 127.0.0.1/{sink.port} {extra}\n'
    )
    path.chmod(0o600)
    return path


def message(i: int) -> bytes:
    filler = (b"x" * 76 + b"\r\n") * (i * 37 % 40)  # RFC 5321 lines: the MTA refuses longer
    return (
        f"From: s{i}@example.org\r\nSubject: m{i}\r\nMessage-ID: <{i}@example.org>\r\n\r\n"
        f"body {i}\r\n.dot line\r\n"
    ).encode() + filler


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
async def test_poll_over_starttls(dovecot: Dovecot, tmp_path: Path, protocol: str) -> None:
    messages = [message(i) for i in range(12)]
    for item in messages:
        dovecot.deliver(item)
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, protocol)
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 0, out
        assert sorted(sink.bodies()) == sorted(messages)
        assert dovecot.messages() == []
        # The Received line names the server and the address connected to, as fetchmail's does.
        received = f"Received: from {dovecot.host} [127.0.0.1]\r\n".encode()
        assert all(m.startswith(received) for m in sink.received), sink.received[0][:80]
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 1, out
        assert len(sink.received) == 12


async def test_imap_keep_and_folders(dovecot: Dovecot, tmp_path: Path) -> None:
    dovecot.create_folder("Lists")
    dovecot.deliver(message(1))
    dovecot.deliver(message(2), folder="Lists")
    dovecot.deliver(message(3), seen=True)  # already read: IMAP polls only unseen mail
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, "imap", "keep folder INBOX Lists", "tracepolls")
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 0, out
        assert sorted(sink.bodies()) == sorted([message(1), message(2)])
        # tracepolls: each message's Received line says which account and folder it came from.
        polled = {m.split(b"\r\n")[1].split(b" polling ")[1] for m in sink.received}
        account = f"{dovecot.host} account {dovecot.user}"
        assert polled == {f"{account} folder {f})".encode() for f in ("INBOX", "Lists")}
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 1, out  # nothing new: recorded UIDs are not fetched again
        assert len(dovecot.messages()) == 2 and len(dovecot.messages("Lists")) == 1


async def test_fetchids_import_skips_what_fetchmail_kept(dovecot: Dovecot, tmp_path: Path) -> None:
    for i in range(4):
        dovecot.deliver(message(i))
    # What fetchmail would have written after fetching the first two with `keep`.
    import poplib

    pop = poplib.POP3(dovecot.host, dovecot.pop3_port)
    pop.user(dovecot.user)
    pop.pass_(dovecot.password)
    uids = [line.split()[1].decode() for line in pop.uidl()[1]]
    pop.quit()
    ids = tmp_path / ".fetchids"
    ids.write_text("".join(f"{dovecot.user}@{dovecot.host} {uid}\n" for uid in uids[:2]))
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, "pop3", "keep")
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 0, out
        assert sorted(sink.bodies()) == sorted([message(2), message(3)])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("failpoint", "pipelining"),
    [
        *((point, False) for point in ["retrieved:101", "delivered:102", "recorded:103"]),
        *((point, False) for point in ["deleted:1", "before_commit:1"]),
        ("delivered:102", True),  # MAIL..DATA in one group, the dot after the record
        ("recorded:103", True),
    ],
)
async def test_kill_9_during_a_300_message_poll(
    dovecot: Dovecot, tmp_path: Path, failpoint: str, pipelining: bool
) -> None:
    messages = [message(i) for i in range(300)]
    for item in messages:
        dovecot.deliver(item)
    async with running_mta(Sink(pipelining=pipelining)) as sink:
        rc = rcfile(tmp_path, dovecot, sink, "pop3")
        code, out = await run_fetchd(tmp_path, rc, env={"FETCHD_FAILPOINTS": failpoint})
        assert code == -9, out
        assert len(dovecot.messages()) == 300  # no QUIT: Dovecot rolled every DELE back
        code, out = await run_fetchd(tmp_path, rc)
        assert code in (0, 1), out
        delivered = sink.bodies()
        assert sorted(set(delivered)) == sorted(messages)  # none lost
        # At most one message is ever delivered but not yet recorded: one duplicate per kill.
        assert len(delivered) - 300 <= 1
        assert dovecot.messages() == []


async def test_imap_keep_marks_delivered_mail_seen(dovecot: Dovecot, tmp_path: Path) -> None:
    import imaplib

    for i in range(3):
        dovecot.deliver(message(i))
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, "imap", "keep")
        code, out = await run_fetchd(tmp_path, rc)
        assert code == 0, out
    client = imaplib.IMAP4(dovecot.host, dovecot.imap_port)
    client.login(dovecot.user, dovecot.password)
    client.select("INBOX", readonly=True)
    assert client.search(None, "UNSEEN")[1] == [b""]
    assert len(client.search(None, "SEEN")[1][0].split()) == 3
    client.logout()


async def read_until(stream: asyncio.StreamReader, *markers: bytes) -> None:
    """Read lines until each marker was seen; the process ending first fails the test."""
    missing = set(markers)
    while missing:
        line = await asyncio.wait_for(stream.readline(), 20)
        assert line, f"the daemon ended before printing {missing!r}"
        missing = {marker for marker in missing if marker not in line}


async def both_idle(dovecot: Dovecot, other_than: set[int], timeout: float = 20) -> set[int]:
    """Wait until Dovecot has two IMAP sessions in IDLE that are not just ``other_than``."""
    deadline = asyncio.get_running_loop().time() + timeout
    while len(now := dovecot.idle_sessions()) != 2 or now == other_than:
        assert asyncio.get_running_loop().time() < deadline, f"IDLE sessions: {now}"
        await asyncio.sleep(0.02)
    return now


async def test_idle_delivers_new_mail_within_two_seconds(dovecot: Dovecot, tmp_path: Path) -> None:
    """A daemon with two `idle` entries (two folders) waits in IMAP IDLE on both and polls an
    entry as soon as Dovecot reports new mail in its folder, long before the 3600-second
    interval; a third entry whose server is down does not hold them up."""
    import time

    dovecot.create_folder("Lists")
    rc = tmp_path / "fetchmailrc"
    async with running_mta() as sink:
        account = (
            f'user {dovecot.user} password "{dovecot.password}" is joe here '
            f'sslcertfile "{dovecot.ca_file}" smtphost 127.0.0.1/{sink.port} idle'
        )
        rc.write_text(
            "set daemon 3600\n"
            f"poll inbox via {dovecot.host} proto imap port {dovecot.imap_port}\n"
            f"  {account} folder INBOX\n"
            f"poll lists via {dovecot.host} proto imap port {dovecot.imap_port}\n"
            f"  {account} folder Lists\n"
            f"poll down via {dovecot.host} proto pop3 port 1 user x password y is joe here\n"
        )
        rc.chmod(0o600)
        environment = daemon_environment(tmp_path)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "fetchd",
            "-f",
            str(rc),
            "--nodetach",
            env=environment,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        assert process.stdout is not None
        idling = {b"inbox": b"@inbox: waiting for new mail (IDLE)", b"lists": b"@lists: waiting"}
        try:
            # Wait until both idle (their first polls found nothing).
            await read_until(process.stdout, idling[b"inbox"], idling[b"lists"])
            before: set[int] = set()
            for i in range(4):
                folder, name = ("INBOX", b"inbox") if i % 2 == 0 else ("Lists", b"lists")
                # Inside IDLE, not between poll and IDLE: Dovecot shows both sessions in IDLE,
                # one of them new since the last delivery.
                before = await both_idle(dovecot, other_than=before)
                began = time.monotonic()
                dovecot.deliver(message(i), folder=folder)
                while len(sink.received) < i + 1:
                    assert time.monotonic() - began < 2.0, f"not delivered within 2 s ({folder})"
                    await asyncio.sleep(0.02)
                await read_until(process.stdout, idling[name])
        finally:
            process.terminate()
            await process.wait()
        assert sorted(sink.bodies()) == sorted(message(i) for i in range(4))


@pytest.mark.parametrize(
    ("protocol", "how"), [("pop3", "quit"), ("pop3", "sigterm"), ("imap", "quit")]
)
async def test_stopping_the_daemon_mid_poll_loses_nothing(
    dovecot: Dovecot, tmp_path: Path, protocol: str, how: str
) -> None:
    """500 messages, the daemon stopped after about 100: it exits promptly, every message is
    either delivered or still on the server, and the next poll delivers the rest."""
    import signal
    import time

    total = 500
    for i in range(total):
        dovecot.deliver(f"Subject: m{i}\r\nMessage-ID: <{i}@example.org>\r\n\r\n{i}\r\n".encode())
    environment = daemon_environment(tmp_path)
    async with running_mta(SlowSink()) as sink:
        rc = rcfile(tmp_path, dovecot, sink, protocol)
        one_shot = rc.read_text()
        rc.write_text("set daemon 3600\n" + one_shot)
        output = (tmp_path / "daemon.out").open("wb")
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "-N", "-f", str(rc), env=environment,
            stdout=output, stderr=asyncio.subprocess.STDOUT,
        )  # fmt: skip
        try:
            while len(sink.received) < 100:
                assert daemon.returncode is None and len(sink.received) < total
                await asyncio.sleep(0.01)
            if how == "quit":
                quitter = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "fetchd", "--quit", env=environment,
                    stdout=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                assert await quitter.wait() == 0
            else:
                daemon.send_signal(signal.SIGTERM)
            # Timed from the daemon's own "stopping" line: starting `fetchd --quit` (a Python
            # process) is not what is measured.
            deadline = time.monotonic() + 20
            while b"stopping: no new polls" not in (tmp_path / "daemon.out").read_bytes():
                assert time.monotonic() < deadline, "the daemon never said it was stopping"
                await asyncio.sleep(0.01)
            asked = time.monotonic()
            try:
                assert await asyncio.wait_for(daemon.wait(), 10) == 0
            except TimeoutError:
                print((tmp_path / "daemon.out").read_text()[-3000:])
                raise
            stopped_after = time.monotonic() - asked
        finally:
            if daemon.returncode is None:
                daemon.kill()
            await daemon.communicate()
            output.close()
        delivered_by_daemon = len(sink.received)
        assert delivered_by_daemon < total  # it really was stopped mid-poll
        assert stopped_after < 2.0, f"took {stopped_after:.2f} s to stop"
        # Nothing lost: what was not delivered is still on the server.
        on_server = {m.split(b"\r\n")[0].decode() for m in dovecot.messages()}
        assert {f"Subject: m{i}" for i in range(total)} <= on_server | set(sink.subjects())
        rc.write_text(one_shot)
        code, out = await run_fetchd(tmp_path, rc)
        assert code in (0, 1), out
    subjects = sink.subjects()
    assert set(subjects) == {f"Subject: m{i}" for i in range(total)}
    assert len(subjects) - total <= 1  # at most the one message in the unclosable window
    assert dovecot.messages() == []


@pytest.mark.parametrize("how", ["interval", "fetchd --poll"])
async def test_the_daemon_delivers_new_mail_at_the_interval_or_when_asked(
    dovecot: Dovecot, tmp_path: Path, how: str
) -> None:
    import time

    interval = 2 if how == "interval" else 3600
    environment = daemon_environment(tmp_path)
    dovecot.deliver(message(0))
    async with running_mta() as sink:
        rc = rcfile(tmp_path, dovecot, sink, "imap")
        rc.write_text(f"set daemon {interval}\n" + rc.read_text())
        daemon = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "-N", "-f", str(rc), env=environment,
            stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
        )  # fmt: skip
        try:
            while len(sink.received) < 1 or dovecot.messages():  # the first poll, at start,
                assert daemon.returncode is None  # delivered its message and expunged it
                await asyncio.sleep(0.05)
            dovecot.deliver(message(1))
            began = time.monotonic()
            if how == "fetchd --poll":
                poller = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "fetchd", "--poll", env=environment,
                    stdout=asyncio.subprocess.DEVNULL,
                )  # fmt: skip
                assert await poller.wait() == 0
            while len(sink.received) < 2:
                assert time.monotonic() - began < interval * 1.05 + 3, "not delivered in time"
                await asyncio.sleep(0.05)
            while dovecot.messages():  # the poll deletes it right after delivering it
                assert time.monotonic() - began < interval * 1.05 + 10, "not deleted in time"
                await asyncio.sleep(0.05)
        finally:
            daemon.terminate()
            await daemon.wait()
    assert sorted(sink.bodies()) == [message(0), message(1)]
    assert dovecot.messages() == []


@pytest.mark.parametrize("protocol", ["pop3", "imap"])
async def test_a_bad_header_stays_on_the_server_until_accepted(
    dovecot: Dovecot, tmp_path: Path, protocol: str
) -> None:
    """bad-header reject (the default): not delivered, and, unlike fetchmail, not deleted
    either; the user is told why and how to get it. With bad-header accept it is delivered."""
    broken = b"Subject: broken\r\nthis line has no colon\r\n\r\nbody\r\n"
    dovecot.deliver(broken)
    dovecot.deliver(message(1))
    async with running_mta() as sink:
        code, out = await run_fetchd(tmp_path, rcfile(tmp_path, dovecot, sink, protocol))
        assert code == 0, out
        assert sink.bodies() == [message(1)]
        assert "header line 2 is not a header field ('bad-header accept'" in out, out
        assert dovecot.messages() == [broken]
        accepting = rcfile(tmp_path, dovecot, sink, protocol, server="bad-header accept")
        code, out = await run_fetchd(tmp_path, accepting)
        assert code == 0, out
        assert sink.bodies() == [message(1), broken] and dovecot.messages() == []
