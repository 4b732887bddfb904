"""``fetchd --demo``: fetchd's main job end to end, with no mail account needed.

A POP3 server and an SMTP sink, both in this process on 127.0.0.1, stand in for the provider and
the local MTA. The demo writes an ordinary rc file, and the real engine polls it three times:
with ``keep`` (mail delivered, left on the server), again (nothing new: the UID store knows), and
with ``nokeep`` (the messages already delivered are deleted unread, never delivered twice).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import tempfile
from pathlib import Path

from fetchd import logconfig
from fetchd.account import RunMemory
from fetchd.config import ParseEnvironment, parse
from fetchd.demo.pop3server import DemoPOP3Server
from fetchd.demo.smtpsink import DemoSMTPSink
from fetchd.oneshot import poll_entries
from fetchd.options import Options

_MESSAGES = [
    (
        f"Return-Path: <sender{i}@example.org>\r\nFrom: Sender {i} <sender{i}@example.org>\r\n"
        f"To: demo@example.org\r\nSubject: demo message {i}\r\nMessage-ID: <demo{i}@example.org>"
        f"\r\n\r\nHello from message {i}.\r\n.A line that starts with a dot.\r\n"
    ).encode()
    for i in range(1, 6)
]


def run_demo(options: Options) -> int:
    logconfig.configure(verbosity=options.verbose, silent=options.silent, fmt="console")
    with tempfile.TemporaryDirectory(prefix="fetchd-demo-") as home:
        os.environ["XDG_STATE_HOME"] = home  # the demo's UID store and locks, thrown away after
        return asyncio.run(_demo(Path(home), options))


async def _demo(home: Path, options: Options) -> int:
    memory = RunMemory()  # one run of three polls
    server = DemoPOP3Server("demo", "demo-password", list(_MESSAGES))
    sink = DemoSMTPSink()
    await server.start()
    await sink.start()
    try:
        rcfile = home / "fetchmailrc"
        rcfile.write_text(
            f"poll 127.0.0.1 proto pop3 port {server.port}\n"
            f"  user demo password demo-password is demo here\n"
            f"  keep smtphost 127.0.0.1/{sink.port}\n"
            "  sslproto ''   # the demo server has no TLS: clear text is allowed for it\n"
        )
        env = ParseEnvironment(login="demo", home=str(home), rcdir=str(home))
        config = parse(rcfile.read_text(), str(rcfile), env)
        print(
            f"fetchd demo: POP3 server on 127.0.0.1:{server.port} with {len(_MESSAGES)} "
            f"messages, SMTP sink on 127.0.0.1:{sink.port}"
        )
        print(f"fetchd demo: rc file {rcfile}:\n{rcfile.read_text()}")
        print("fetchd demo: poll 1, keep: every message is delivered and left on the server")
        first = await poll_entries(config, list(config.servers), options, memory)
        print("fetchd demo: poll 2, keep: nothing is new, so nothing is delivered")
        second = await poll_entries(config, list(config.servers), options, memory)
        nokeep = dataclasses.replace(
            config,
            servers=tuple(
                dataclasses.replace(
                    s, users=tuple(dataclasses.replace(u, keep=False) for u in s.users)
                )
                for s in config.servers
            ),
        )
        print("fetchd demo: poll 3, nokeep: delivered messages are deleted, not sent again")
        third = await poll_entries(nokeep, list(nokeep.servers), options, memory)
    finally:
        await server.stop()
        await sink.stop()
    print(f"fetchd demo: the SMTP sink received {len(sink.received)} messages:")
    for item in sink.received:
        subject = next(
            (line for line in item.data.split(b"\r\n") if line.startswith(b"Subject")), b""
        )
        print(f"  MAIL FROM {item.sender} RCPT TO {', '.join(item.recipients)}: {subject.decode()}")
    print(f"fetchd demo: {len(server.messages)} messages left on the POP3 server")
    ok = (
        (first, second, third) == (0, 1, 1)
        and len(sink.received) == len(_MESSAGES)
        and not server.messages
    )
    print("fetchd demo: " + ("every message delivered exactly once; done." if ok else "FAILED"))
    return 0 if ok else 1
