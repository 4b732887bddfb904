"""``bsmtp FILE``: the batch SMTP file fetchmail writes, appended durably, never half a message."""

from __future__ import annotations

import asyncio
import os
import pwd
import sys
from pathlib import Path

from fetchd.delivery.bsmtp import BSMTPDeliverer, BSMTPSettings
from fetchd.delivery.headers import Trace
from fetchd.demo.pop3server import DemoPOP3Server

MESSAGE = b"Return-Path: <alice@example.org>\r\nSubject: hi\r\n\r\nhello\r\n.dot\r\n"
AS_SENT = MESSAGE.split(b"\r\n", 1)[1]  # the Return-Path became MAIL FROM, as in fetchmail


def deliverer(path: Path | str, **extra: object) -> BSMTPDeliverer:
    values: dict[str, object] = {
        "path": str(path),
        "recipients": ("joe",),
        "trace": Trace(invisible=True),
    }
    values.update(extra)
    return BSMTPDeliverer(BSMTPSettings(**values))  # type: ignore[arg-type]


LOGIN = pwd.getpwuid(os.getuid()).pw_name


async def test_the_batch_is_the_smtp_dialogue(tmp_path: Path) -> None:
    out = tmp_path / "batch"
    target = deliverer(out, smtpaddress="example.net")
    assert (await target.deliver(MESSAGE)).delivered
    assert (
        await target.deliver("Subject: \u00e9\r\n\r\n8 bit\r\n".encode(), recipients=("a", "b"))
    ).delivered
    assert out.read_bytes() == (
        b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<joe@example.net>\r\nDATA\r\n"
        + AS_SENT.replace(b"\r\n.dot", b"\r\n..dot")
        + b".\r\n"
        # No sender header: fetchmail's BSMTP sender is the login name of the user running it.
        + f"MAIL FROM:<{LOGIN}> BODY=8BITMIME\r\n".encode()
        + b"RCPT TO:<a@example.net>\r\nRCPT TO:<b@example.net>\r\n"
        + b"DATA\r\n"
        + "Subject: \u00e9\r\n\r\n8 bit\r\n".encode()
        + b".\r\n"
    )
    assert oct(out.stat().st_mode & 0o777) == "0o600"


async def test_a_full_disk_leaves_the_file_as_it_was(small_disk: Path) -> None:
    out = small_disk / "batch"
    target = deliverer(out)
    assert (await target.deliver(MESSAGE)).delivered
    before = out.read_bytes()
    big = b"Subject: big\r\n\r\n" + (b"x" * 76 + b"\r\n") * 2000
    outcome = await target.deliver(big)
    assert not outcome.delivered and not outcome.may_delete and "disk full" in outcome.reason
    assert out.read_bytes() == before  # no half message in the batch


async def test_bsmtp_to_standard_output_end_to_end(tmp_path: Path) -> None:
    pop = DemoPOP3Server("demo", "pw-bsmtp", [MESSAGE])
    await pop.start()
    try:
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            f"poll 127.0.0.1 proto pop3 port {pop.port} user demo password pw-bsmtp is joe here"
            " bsmtp - sslproto ''\n"
        )
        rc.chmod(0o600)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "-s", "-f", str(rc),
            env={"HOME": str(tmp_path), "XDG_STATE_HOME": str(tmp_path / "state"),
                 "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        out, err = await asyncio.wait_for(process.communicate(), 60)
    finally:
        await pop.stop()
    assert process.returncode == 0, err
    assert out.startswith(b"MAIL FROM:<alice@example.org>\r\nRCPT TO:<joe@localhost>\r\nDATA\r\n")
    assert out.endswith(b"\r\n..dot\r\n.\r\n") and b"(fetchd-" in out
    assert pop.messages == []
