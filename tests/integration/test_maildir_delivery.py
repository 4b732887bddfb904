"""Delivery straight into a Maildir: durable, atomic, and a full disk loses nothing."""

from __future__ import annotations

import os
import shutil
import stat
import tempfile
from pathlib import Path

import pytest

from fetchd.delivery.headers import Trace
from fetchd.delivery.maildir import MaildirDeliverer, MaildirSettings, maildir_path
from fetchd.demo.pop3server import DemoPOP3Server
from tests.support.command import run_fetchd

MESSAGE = b"Return-Path: <alice@example.org>\r\nSubject: hi\r\n\r\nhello\r\n.dotted\r\n"


def make_maildir(path: Path) -> Path:
    for sub in ("tmp", "new", "cur"):
        (path / sub).mkdir(parents=True, exist_ok=True)
    return path


def deliverer(path: Path, **extra: object) -> MaildirDeliverer:
    values: dict[str, object] = {
        "path": str(path),
        "recipient": "joe",
        "trace": Trace(server="pop.example.org"),
        "by": "fetchd.test",
    }
    values.update(extra)
    return MaildirDeliverer(MaildirSettings(**values))  # type: ignore[arg-type]


def files(path: Path, sub: str) -> list[Path]:
    return sorted((path / sub).iterdir())


def test_the_setting_names_a_maildir_only_with_its_prefix() -> None:
    assert maildir_path("maildir:~/Mail/inbox") == os.path.expanduser("~/Mail/inbox")
    assert maildir_path("/usr/bin/procmail -d %T") is None
    assert maildir_path(None) is None


async def test_a_message_lands_in_new_with_local_line_endings(tmp_path: Path) -> None:
    box = make_maildir(tmp_path / "Mail")
    target = deliverer(box)
    outcomes = [await target.deliver(MESSAGE) for _ in range(3)]
    assert all(o.delivered and o.may_delete for o in outcomes)
    delivered = files(box, "new")
    assert len(delivered) == 3 and len({p.name for p in delivered}) == 3
    assert files(box, "tmp") == []
    data = delivered[0].read_bytes()
    assert data.startswith(b"Received: from pop.example.org\n\tby fetchd.test with POP3 (fetchd-")
    assert data.endswith(MESSAGE.replace(b"\r\n", b"\n"))
    assert stat.S_IMODE(delivered[0].stat().st_mode) == 0o600


async def test_not_a_maildir_keeps_the_message(tmp_path: Path) -> None:
    (tmp_path / "half" / "new").mkdir(parents=True)
    for path in (tmp_path / "missing", tmp_path / "half"):
        outcome = await deliverer(path).deliver(MESSAGE)
        assert not outcome.delivered and not outcome.may_delete
        assert "not a Maildir" in outcome.reason
    assert not (tmp_path / "missing").exists()  # never created behind the user's back


async def test_nothing_is_committed_before_the_previous_record(tmp_path: Path) -> None:
    box = make_maildir(tmp_path / "Mail")

    async def recording_failed() -> None:
        raise OSError("the state store is broken")

    with pytest.raises(OSError, match="state store"):
        await deliverer(box).deliver(MESSAGE, ready=recording_failed)
    assert files(box, "new") == [] and files(box, "tmp") == []


async def test_a_full_disk_leaves_no_half_written_file(small_disk: Path) -> None:
    box = make_maildir(small_disk / "Mail")
    big = b"Subject: big\r\n\r\n" + b"x" * 76 * 2000 + b"\r\n"  # ~150 KiB > the disk
    outcome = await deliverer(box).deliver(big)
    assert not outcome.delivered and not outcome.may_delete
    assert "disk full" in outcome.reason
    assert files(box, "tmp") == [] and files(box, "new") == []
    assert (await deliverer(box).deliver(MESSAGE)).delivered  # room for a small one still


async def test_a_poll_into_a_full_maildir_keeps_what_did_not_fit(small_disk: Path) -> None:
    """The whole command: the message that does not fit stays on the server, the others are
    delivered, and the next poll (with room again) fetches it."""
    box = make_maildir(small_disk / "Mail")
    filler = small_disk / "filler"
    filler.write_bytes(b"f" * 40 * 1024)  # leaves about 20 KiB
    big = b"Subject: big\r\n\r\n" + (b"y" * 76 + b"\r\n") * 400  # about 31 KiB
    small = [b"Subject: small %d\r\n\r\nhi\r\n" % i for i in range(3)]
    pop = DemoPOP3Server("demo", "pw-maildir", [small[0], big, small[1], small[2]])
    await pop.start()
    home = Path(tempfile.mkdtemp(prefix="fetchd-home-"))
    try:
        rc = home / ".fetchmailrc"
        rc.write_text(
            f"poll 127.0.0.1 proto pop3 port {pop.port} user demo password pw-maildir is joe"
            f' here mda "maildir:{box}" sslproto ""\n'
        )
        rc.chmod(0o600)

        code, out = await run_fetchd(home, rc, timeout=60)
        assert "disk full" in out, out
        assert len(files(box, "new")) == 3 and files(box, "tmp") == []
        assert pop.messages == [big]  # only what was delivered left the server
        filler.unlink()  # room again
        code, out = await run_fetchd(home, rc, timeout=60)
        assert code == 0, out
        arrived = [p.read_bytes() for p in files(box, "new")]
        assert len(arrived) == 4 and sum(m.endswith(b"y" * 76 + b"\n") for m in arrived) == 1
        assert pop.messages == []
    finally:
        await pop.stop()
        shutil.rmtree(home, ignore_errors=True)
