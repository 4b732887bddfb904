"""Contract test: the fake IMAP server (tests/fakes/imapserver.py) against stdlib imaplib."""

from __future__ import annotations

import asyncio
import imaplib

from tests.fakes.imapserver import FakeIMAPServer


def _session(port: int) -> dict[str, object]:
    seen: dict[str, object] = {}
    client = imaplib.IMAP4("127.0.0.1", port, timeout=5)
    try:
        seen["login"] = client.login("alice", "secret")[0]
        seen["select"] = client.select("INBOX")
        seen["unseen"] = client.uid("SEARCH", "UNSEEN")[1]
        seen["fetch"] = client.uid("FETCH", "1:*", "(UID RFC822.SIZE BODY.PEEK[])")[1]
        seen["store"] = client.uid("STORE", "1", "+FLAGS.SILENT", "(\\Deleted)")[0]
        seen["expunge"] = client.expunge()[1]
        seen["after"] = client.uid("SEARCH", "ALL")[1]
        seen["logout"] = client.logout()[0]
    finally:
        if client.state != "LOGOUT":
            client.shutdown()
    return seen


async def test_fake_speaks_imap_to_imaplib() -> None:
    """imaplib logs in, searches, fetches bodies, deletes and expunges through the fake."""
    server = FakeIMAPServer()
    server.add(b"Subject: one\r\n\r\nbody one\r\n")
    server.add(b"Subject: two\r\n\r\nbody two\r\n", flags={"\\Seen"})
    port = await server.start()
    try:
        seen = await asyncio.to_thread(_session, port)
    finally:
        await server.stop()
    assert seen["login"] == "OK"
    assert seen["select"] == ("OK", [b"2"])
    assert seen["unseen"] == [b"1"]
    fetched = seen["fetch"]
    assert isinstance(fetched, list)
    assert fetched[0] == (
        b"1 (UID 1 RFC822.SIZE 26 BODY[] {26}",
        b"Subject: one\r\n\r\nbody one\r\n",
    )
    assert fetched[2][1] == b"Subject: two\r\n\r\nbody two\r\n"
    assert seen["store"] == "OK"
    assert seen["expunge"] == [b"1"]
    assert seen["after"] == [b"2"]
    assert seen["logout"] == "BYE"
    assert [m.uid for m in server.messages] == [2]


async def test_fake_refuses_wrong_password_to_imaplib() -> None:
    """A wrong password gets a tagged NO, which imaplib reports as an error."""
    server = FakeIMAPServer()
    port = await server.start()

    def attempt() -> str:
        client = imaplib.IMAP4("127.0.0.1", port, timeout=5)
        try:
            client.login("alice", "wrong")
        except imaplib.IMAP4.error as exc:
            return str(exc)
        finally:
            client.shutdown()
        return "accepted"

    try:
        outcome = await asyncio.to_thread(attempt)
    finally:
        await server.stop()
    assert "AUTHENTICATIONFAILED" in outcome


def _partial_session(port: int) -> list[object]:
    """Parts <0.10> and <20.10> of message 1, or "abort" where the server hung up."""
    client = imaplib.IMAP4("127.0.0.1", port, timeout=5)
    parts: list[object] = []
    try:
        client.login("alice", "secret")
        client.select("INBOX")
        for start in (0, 20):
            parts.append(client.uid("FETCH", "1", f"(BODY.PEEK[]<{start}.10>)")[1])
    except imaplib.IMAP4.abort:
        parts.append("abort")
    finally:
        client.shutdown()
    return parts


async def test_fake_serves_partial_bodies_and_cuts_them_to_imaplib() -> None:
    """BODY.PEEK[]<offset.length> gives imaplib that slice (BODY[]<offset>, short at the end);
    with ``cut_uid``/``cut_at`` the server hangs up in the middle of the part holding the cut."""
    server = FakeIMAPServer()
    server.add(b"Subject: one\r\n\r\nbody one\r\n")
    port = await server.start()
    try:
        whole = await asyncio.to_thread(_partial_session, port)
        server.cut_uid, server.cut_at = 1, 24
        cut = await asyncio.to_thread(_partial_session, port)
    finally:
        await server.stop()
    assert whole == [
        [(b"1 (UID 1 BODY[]<0> {10}", b"Subject: o"), b")"],
        [(b"1 (UID 1 BODY[]<20> {6}", b" one\r\n"), b")"],
    ]
    assert cut == [whole[0], "abort"]
