"""A 50,000-message INBOX against a real Dovecot: no new mail is found without error, and a poll
with fetchall lists every size in bounded chunks (aioimaplib's per-line recursion never meets a
50,000-line reply)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from fetchd.imap.connect import open_imap
from fetchd.tls import TLSSettings
from tests.support.dovecot import Dovecot

pytestmark = [pytest.mark.dovecot, pytest.mark.slow]

COUNT = 50_000


def fill(dovecot: Dovecot, count: int) -> None:
    """Write seen messages straight into cur/, as fast as the disk allows."""
    cur = dovecot.maildir / "cur"
    for i in range(count):
        path = cur / f"{1_700_000_000 + i}.M{i}P1.fixture:2,S"
        path.write_bytes(b"From: a@example.org\nSubject: old %d\n\nold mail\n" % i)
        if os.geteuid() == 0:
            os.chown(path, dovecot.uid, dovecot.gid)


async def test_fifty_thousand_seen_messages(dovecot: Dovecot, tmp_path: Path) -> None:
    fill(dovecot, COUNT)
    dovecot.deliver(b"Subject: the new one\r\n\r\nnew\r\n")
    tls = TLSSettings(sslcertfile=dovecot.ca_file)

    async def listing(fetchall: bool) -> tuple[int, float]:
        source = await open_imap(
            host=dovecot.host,
            port=dovecot.imap_port,
            user=dovecot.user,
            password=dovecot.password,
            label="big",
            tls=tls,
            timeout=120.0,
            auth="any",
            folder="INBOX",
            fetchall=fetchall,
            recorded=None,
        )
        began = time.perf_counter()
        found = await source.list_messages()
        elapsed = time.perf_counter() - began
        await source.abort()
        return len(found), elapsed

    await listing(False)  # Dovecot indexes the Maildir on first use; not ours to measure
    new, seconds = await listing(False)
    assert new == 1
    everything, _ = await listing(True)
    assert everything == COUNT + 1
    print(f"\n50,000 seen + 1 new: unseen listing in {seconds:.3f} s")
