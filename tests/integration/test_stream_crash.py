"""kill -9 of the whole ``fetchd`` command in the middle of a streamed message's body (the MTA
has the header and part of the body, in DATA), against the real Dovecot over POP3 and IMAP.

The failpoint ``mid_body:N`` (fetchd.failpoints) kills the process in the N-th streamed message,
once the MTA has its header, its read-ahead and one more chunk. Afterwards the MTA holds only
whole messages, the server still has every message, and the next run delivers the rest: none
lost, at most one duplicate for the kill.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.command import run_fetchd
from tests.support.dovecot import Dovecot
from tests.support.mta import running_mta

pytestmark = pytest.mark.dovecot


def message(i: int, lines: int) -> bytes:
    head = f"From: s{i}@example.org\r\nSubject: m{i}\r\nMessage-ID: <{i}@example.org>\r\n\r\n"
    return head.encode() + b"".join(
        b"%02d %07d " % (i, n) + b"z" * 66 + b"\r\n" for n in range(lines)
    )


# Small ones come whole; 1 and 4 (1.6 MB: over IMAP's 1 MiB batches too) stream in chunks.
MESSAGES = [message(i, 20_000 if i in (1, 4) else 20 + i) for i in range(6)]


@pytest.mark.parametrize(
    "streamed",
    [pytest.param(1, id="mid-first-streamed"), pytest.param(2, id="mid-second-streamed")],
)
@pytest.mark.parametrize("protocol", ["pop3", "imap"])
async def test_kill_9_mid_body_of_a_streamed_message(
    dovecot: Dovecot, tmp_path: Path, protocol: str, streamed: int
) -> None:
    """Killed mid-body: no partial message at the MTA, all still on the server; the next run
    delivers every message, with at most one duplicate."""
    for item in MESSAGES:
        dovecot.deliver(item)
    async with running_mta() as sink:
        port = dovecot.pop3_port if protocol == "pop3" else dovecot.imap_port
        rc = tmp_path / "fetchmailrc"
        rc.write_text(
            f"poll {dovecot.host} proto {protocol} port {port}\n"
            f'  user {dovecot.user} password "{dovecot.password}" is joe here\n'
            f'  sslcertfile "{dovecot.ca_file}" smtphost 127.0.0.1/{sink.port}\n'
        )
        rc.chmod(0o600)
        code, out = await run_fetchd(
            tmp_path, rc, env={"FETCHD_FAILPOINTS": f"mid_body:{streamed}"}
        )
        assert code == -9, out
        before = sink.bodies()
        assert all(body in MESSAGES for body in before)  # whole ones only
        # Killed in message 1 (or 4): what came before it, and nothing of it.
        assert len(before) == (1 if streamed == 1 else 4)
        assert sorted(dovecot.messages()) == sorted(MESSAGES)  # nothing deleted

        code, out = await run_fetchd(tmp_path, rc)
        assert code == 0, out
        delivered = sink.bodies()
        assert sorted(set(delivered)) == sorted(MESSAGES)  # none lost
        assert len(delivered) - len(MESSAGES) <= 1  # at most one duplicate for the kill
        assert dovecot.messages() == []
