"""The ``fetchd`` command as a user runs it: a real process, real rc files, real sockets.

The POP3 server (the demo server) and the MTA (aiosmtpd) run in the test's own event loop, so
they outlive a fetchd killed with SIGKILL, as a real provider and a real MTA would.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from fetchd.demo.pop3server import DemoPOP3Server

MESSAGES = [
    f"Return-Path: <s{i}@example.org>\r\nSubject: message {i}\r\nMessage-ID: <m{i}@example.org>"
    f"\r\n\r\nbody of {i}\r\n".encode()
    for i in range(1, 11)
]
SECRET = "s3cr3t-Pa55"


@dataclass
class Sink:
    received: list[bytes] = field(default_factory=list)
    rcpts: list[list[str]] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.received.append(envelope.original_content or b"")
        self.rcpts.append(list(envelope.rcpt_tos))
        return "250 queued"

    def subjects(self) -> list[str]:
        return [
            next(line for line in m.decode().split("\r\n") if line.startswith("Subject"))
            for m in self.received
        ]


@dataclass
class World:
    home: Path
    pop: DemoPOP3Server
    sink: Sink
    smtp_port: int

    def rcfile(self, text: str, mode: int = 0o600) -> Path:
        path = self.home / ".fetchmailrc"
        path.write_text(text)
        path.chmod(mode)
        return path

    def standard_rc(self, extra: str = "") -> Path:
        return self.rcfile(
            f"poll 127.0.0.1 proto pop3 port {self.pop.port}\n"
            f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{self.smtp_port}'
            f" sslproto '' {extra}\n"  # the demo server speaks no TLS
        )

    async def fetchd(
        self,
        *args: str,
        env: dict[str, str] | None = None,
        stdin: bytes | None = None,
        python: str | None = None,
    ) -> tuple[int, str, str]:
        """``fetchd ARGS``; with ``python``, that program (``python -c``) instead of fetchd's
        ``__main__``, given the same arguments."""
        environment = {
            "HOME": str(self.home),
            "XDG_STATE_HOME": str(self.home / "state"),
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "LC_ALL": "C.UTF-8",
        }
        environment.update(env or {})
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            *(["-c", python] if python is not None else ["-m", "fetchd"]),
            *args,
            env=environment,
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(process.communicate(stdin or b""), 60)
        assert process.returncode is not None
        return process.returncode, out.decode(), err.decode()


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[World]:
    pop = DemoPOP3Server("demo", SECRET, list(MESSAGES))
    await pop.start()
    sink = Sink()
    server = await asyncio.get_running_loop().create_server(
        lambda: SMTP(sink, decode_data=False, hostname="mta.test"), "127.0.0.1", 0
    )
    yield World(tmp_path, pop, sink, server.sockets[0].getsockname()[1])
    server.close()
    await server.wait_closed()
    await pop.stop()


async def test_help_and_version(world: World) -> None:
    code, out, _ = await world.fetchd("--help")
    assert code == 0 and "selecting messages:" in out and "--sslfingerprint" in out
    rc = world.standard_rc()
    code, out, err = await world.fetchd("-V", "-f", str(rc))
    assert code == 0, err
    assert out.startswith("This is fetchd release ")
    assert "Options for retrieving from demo@127.0.0.1:" in out
    assert SECRET not in out + err


async def test_poll_delivers_everything_once_then_finds_nothing(world: World) -> None:
    rc = world.standard_rc()
    code, out, err = await world.fetchd("-f", str(rc))
    assert code == 0, err
    assert world.sink.subjects() == [f"Subject: message {i}" for i in range(1, 11)]
    assert world.sink.rcpts[0] == ["joe@127.0.0.1"]
    assert world.pop.messages == []
    assert "10 messages for demo at 127.0.0.1" in out
    world.pop.messages.append(b"Subject: message 11\r\n\r\nnew\r\n")
    code, out, err = await world.fetchd("-f", str(rc), "-k")
    assert code == 0, err
    code, out, err = await world.fetchd("-f", str(rc), "-k")
    assert code == 1, err  # fetchmail's "no mail": the one kept message is not fetched again
    assert len(world.sink.received) == 11
    assert SECRET not in out + err


async def test_check_mode_fetches_nothing(world: World) -> None:
    code, _, err = await world.fetchd("-c", "-f", str(world.standard_rc()))
    assert code == 0, err
    assert world.sink.received == [] and len(world.pop.messages) == 10


async def test_limit_and_fetchlimit_from_the_command_line(world: World) -> None:
    code, _, err = await world.fetchd("-f", str(world.standard_rc()), "-B", "3")
    assert code == 0, err
    assert len(world.sink.received) == 3 and len(world.pop.messages) == 7
    code, _, err = await world.fetchd("-f", str(world.standard_rc()), "-l", "10")
    assert code == 1, err  # every message is over 10 octets: left on the server
    assert len(world.sink.received) == 3 and len(world.pop.messages) == 7


async def test_syntax_error_is_one_line_and_exit_5(world: World) -> None:
    rc = world.rcfile("poll h user u is l here\n  aka elsewhere.example.org\n")
    code, _out, err = await world.fetchd("-f", str(rc))
    assert code == 5
    assert err.count("\n") == 1 and "Traceback" not in err
    assert f"{rc}:" in err and "server option 'aka'" in err


async def test_loose_permissions_exit_6(world: World) -> None:
    rc = world.standard_rc()
    rc.chmod(0o644)
    code, _, err = await world.fetchd("-f", str(rc))
    assert code == 6
    assert "0700" in err and f"chmod 600 {rc}" in err
    assert world.sink.received == []


async def test_configdump_json_and_stdin(world: World) -> None:
    text = world.standard_rc().read_text()
    code, out, err = await world.fetchd("-f", "-", "--configdump=json", stdin=text.encode())
    assert code == 0, err
    data = json.loads(out)
    [server] = data["servers"]
    assert server["pollname"] == "127.0.0.1" and server["service"] == str(world.pop.port)
    assert server["users"][0]["localnames"] == ["joe"]


async def test_a_signed_service_number_is_the_port_polled(world: World) -> None:
    """`service "+N"` is port N, as fetchmail's strtoul reads it, not the protocol's default."""
    rc = world.rcfile(
        f'poll 127.0.0.1 proto pop3 service "+{world.pop.port}"\n'
        f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{world.smtp_port}'
        " sslproto ''\n"
    )
    code, _, err = await world.fetchd("-f", str(rc))
    assert code == 0, err
    assert len(world.sink.received) == len(MESSAGES)


async def test_no_password_and_no_terminal_is_exit_3(world: World) -> None:
    rc = world.rcfile(f"poll 127.0.0.1 proto pop3 port {world.pop.port} user demo is joe here\n")
    code, _, err = await world.fetchd("-f", str(rc))
    assert code == 3
    assert "no password for demo@127.0.0.1" in err and "no terminal" in err


async def test_wrong_password_is_exit_3_and_secret_free(world: World) -> None:
    rc = world.rcfile(
        f"poll 127.0.0.1 proto pop3 port {world.pop.port}\n"
        f"  user demo password wrong-{SECRET} is joe here sslproto ''\n"
    )
    code, out, err = await world.fetchd("-v", "-v", "-f", str(rc))
    assert code == 3
    assert SECRET not in out + err
    assert world.pop.messages == MESSAGES


async def test_a_failing_account_does_not_stop_the_others(world: World) -> None:
    rc = world.rcfile(
        f"poll 127.0.0.1 proto pop3 port {world.pop.port}\n"
        f'  user demo password "{SECRET}" is joe here preconnect "exit 3" sslproto ""\n'
        f"poll localhost proto pop3 port {world.pop.port}\n"
        f'  user demo password "{SECRET}" is joe here lmtp smtphost "127.0.0.1/1" sslproto ""\n'
        f"poll 127.0.0.1 proto pop3 port {world.pop.port}\n"
        f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{world.smtp_port}'
        ' sslproto ""\n'
    )
    code, out, err = await world.fetchd("-f", str(rc))
    assert code == 0, out + err  # the third account delivered: fetchmail's rule, 0 wins
    logged = out + err
    assert "preconnect" in logged and "failed with status 3" in logged
    assert "cannot reach any LMTP listener: 127.0.0.1/1" in logged
    assert len(world.sink.received) == 10


@pytest.mark.parametrize(
    ("failpoint", "duplicates"),
    [("delivered:4", 1), ("recorded:4", 0), ("deleted:1", 0), ("before_commit:1", 0)],
)
async def test_kill_9_loses_nothing(world: World, failpoint: str, duplicates: int) -> None:
    """SIGKILL at each step of the invariant, then a normal poll: every message arrives, once,
    except the one delivered but not yet recorded when the process died."""
    rc = world.standard_rc()
    code, _, _ = await world.fetchd("-f", str(rc), env={"FETCHD_FAILPOINTS": failpoint})
    assert code == -9
    assert len(world.pop.messages) == 10  # killed before QUIT: the server rolled back
    code, _, err = await world.fetchd("-f", str(rc))
    assert code in (0, 1), err
    subjects = world.sink.subjects()
    assert sorted(set(subjects)) == sorted(f"Subject: message {i}" for i in range(1, 11))
    assert len(subjects) == 10 + duplicates
    assert world.pop.messages == []


async def test_keywords_not_acted_on_are_warned_about_once_by_line(world: World) -> None:
    rc = world.rcfile(
        f"poll 127.0.0.1 proto pop3 port {world.pop.port} principal imap/host uidl\n"
        f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{world.smtp_port}'
        ' sslproto ""\n'
        f"  mimedecode\n"
        f'  mimedecode properties "for another program"\n'
    )
    code, _out, err = await world.fetchd("-f", str(rc))
    assert code == 0, err
    assert err.count(f"fetchd: {rc}:3: 'mimedecode' is read but not acted on yet by fetchd") == 1
    assert "'principal'" not in err  # Kerberos acts on it (the service principal)
    assert err.count("is read but not acted on") == 1  # uidl and properties: nothing to do
    assert len(world.sink.received) == 10


async def test_verbose_shows_the_dialogue_with_secrets_masked(world: World) -> None:
    code, out, err = await world.fetchd("-v", "-f", str(world.standard_rc()), "-l", "95")
    assert code == 0, err
    assert "POP3> USER demo" in out and "POP3> PASS *" in out and "POP3< +OK logged in" in out
    assert "SMTP> MAIL FROM:<s1@example.org>" in out and "SMTP< 250" in out
    assert "fetchd: skipping message demo@127.0.0.1:10 (98 octets)" in err
    assert SECRET not in out + err


async def test_silent_prints_nothing_on_success(world: World) -> None:
    code, out, err = await world.fetchd("-s", "-f", str(world.standard_rc()))
    assert code == 0, err
    assert out == "" and err == ""


async def test_mda_delivery_end_to_end(world: World) -> None:
    spool = world.home / "spool"
    spool.mkdir()
    rc = world.rcfile(
        f"poll 127.0.0.1 proto pop3 port {world.pop.port}\n"
        f'  user demo password "{SECRET}" is joe here sslproto ""\n'
        f'  mda "cat > {spool}/$$.msg; test -s {spool}/$$.msg"\n'
    )
    code, out, err = await world.fetchd("-f", str(rc))
    assert code == 0, out + err
    files = sorted(spool.iterdir())
    assert len(files) == 10 and world.pop.messages == []
    bodies = sorted(f.read_bytes() for f in files)
    assert all(b"\r" not in body for body in bodies)  # stripcr: the default with an MDA
    assert sorted(b.split(b"\n", 3)[3] for b in bodies) == sorted(
        m.replace(b"\r\n", b"\n") for m in MESSAGES
    )


async def test_syslog_gets_the_lines_at_facility_mail(world: World) -> None:
    import socket

    path = world.home / "log.sock"
    lines: list[str] = []

    async def syslogd(sock: socket.socket) -> None:
        while True:
            lines.append((await asyncio.get_running_loop().sock_recv(sock, 4096)).decode())

    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as syslog:
        syslog.bind(str(path))
        syslog.setblocking(False)
        reader = asyncio.create_task(syslogd(syslog))
        rc = world.standard_rc()
        code, out, err = await world.fetchd(
            "--syslog", "-v", "-f", str(rc), env={"FETCHD_SYSLOG_SOCKET": str(path)}
        )
        await asyncio.sleep(0.1)
        reader.cancel()
    assert code == 0, err
    assert out == "" and err == ""  # as fetchmail: with syslog, status goes there only
    assert len(world.sink.received) == 10
    info = [line for line in lines if line.startswith("<22>")]  # LOG_MAIL | LOG_INFO
    assert any(
        "fetchd[" in line and "reading message demo@127.0.0.1:1 of 10" in line for line in info
    )
    assert any("POP3> PASS *" in line for line in lines)
    assert not any(SECRET in line for line in lines)


async def test_syslog_unreachable_falls_back_to_stderr(world: World) -> None:
    rc = world.standard_rc()
    rc.write_text("set syslog\n" + rc.read_text())
    code, _out, err = await world.fetchd(
        "-f", str(rc), env={"FETCHD_SYSLOG_SOCKET": str(world.home / "no-such.sock")}
    )
    assert code == 0, err
    assert "reading message demo@127.0.0.1:1 of 10" in err


async def test_multidrop_routes_each_message_to_its_local_users(world: World) -> None:
    stranger = b"To: stranger@elsewhere.net\r\nSubject: lost\r\nMessage-ID: <3@x>\r\n\r\nlost\r\n"
    world.pop.messages[:] = [
        b"X-Original-To: ann@mail.example.org\r\nTo: list@lists.example.org\r\nSubject: env\r\n"
        b"\r\nenvelope\r\n",
        b"To: joe@mail.example.org, Ann <ann@mail.example.org>\r\nSubject: both\r\n\r\nboth\r\n",
        stranger,
        stranger,  # the server put it in twice: delivered once, as fetchmail
        b"To: sales@shop.example.net\r\nSubject: shop\r\n\r\nshop\r\n",
    ]
    rc = world.rcfile(
        'set postmaster "pm"\n'
        f"poll 127.0.0.1 proto pop3 port {world.pop.port} aka mail.example.org\n"
        '  envelope "X-Original-To" localdomains example.net\n'
        f'  user demo password "{SECRET}" to joe ann here smtphost 127.0.0.1/{world.smtp_port}'
        ' sslproto ""\n'
    )
    code, out, err = await world.fetchd("-f", str(rc))
    assert code == 0, out + err
    assert world.sink.rcpts == [
        ["ann@127.0.0.1"],
        ["joe@127.0.0.1", "ann@127.0.0.1"],
        ["pm@127.0.0.1"],
        ["sales@shop.example.net"],
    ]
    assert (
        b"X-Fetchmail-Warning: recipient address stranger@elsewhere.net didn't match"
        in (world.sink.received[2])
    )
    assert b"\tfor <ann@127.0.0.1> (multi-drop); " in world.sink.received[0]
    assert b"\tfor <" not in world.sink.received[1]  # two recipients: none named, as fetchmail
    assert world.pop.messages == []  # the duplicate left the server too


async def test_interface_decides_whether_to_poll(world: World) -> None:
    """fetchmail's `interface`: the loopback interface has 127.0.0.1, not 10.0.0.1."""
    line = (
        f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{world.smtp_port}'
        ' sslproto ""\n'
    )
    excluded = world.rcfile(
        f"poll 127.0.0.1 proto pop3 port {world.pop.port} interface lo/10.0.0.1\n" + line
    )
    code, out, err = await world.fetchd("-f", str(excluded))
    assert code == 1, err  # fetchmail's "no mail": skipped, not failed
    assert "skipping poll of 127.0.0.1, lo/10.0.0.1 IP address excluded" in out + err
    assert world.sink.received == []
    admitted = world.rcfile(
        f"poll 127.0.0.1 proto pop3 port {world.pop.port} interface lo/127.0.0.0/255.0.0.0\n" + line
    )
    code, out, err = await world.fetchd("-f", str(admitted))
    assert code == 0, err
    assert len(world.sink.received) == 10


# --- the last-resort paths of the command line --------------------------------------------

# Runs fetchd's own main() with one function deep inside replaced by a crash whose text quotes
# the password, as an exception from a library may.
_CRASHING = """
import sys
import fetchd.pop3.client

def crash(line):
    raise RuntimeError("cannot parse the reply to PASS {secret}")

fetchd.pop3.client.parse_reply = crash
from fetchd.cli import main
sys.exit(main(sys.argv[1:]))
"""


async def test_an_internal_error_is_one_line_without_its_text(world: World) -> None:
    """A crash deep inside a poll prints one line naming the exception's type and place, never
    its text (which may quote a secret) and never a traceback; exit 23 (fetchmail's "undefined")."""
    rc = world.standard_rc()
    snippet = _CRASHING.replace("{secret}", SECRET)
    code, out, err = await world.fetchd("-f", str(rc), python=snippet)
    assert code == 23, err
    assert err.count("\n") == 1 and err.startswith("fetchd: internal error at "), err
    assert "RuntimeError" in err and "--debug" in err
    assert SECRET not in err + out and "Traceback" not in err
    assert "cannot parse" not in err
    assert world.sink.received == []


async def test_ctrl_c_mid_poll_is_one_line_and_exit_130(world: World, tmp_path: Path) -> None:
    """SIGINT (Ctrl-C) while a poll waits on a silent server: "fetchd: interrupted", exit 130,
    no traceback."""
    accepted = asyncio.Event()

    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set()
        await reader.read()  # never greets; ends when fetchd goes
        writer.close()

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    rc = world.rcfile(
        f"poll 127.0.0.1 proto pop3 port {port} timeout 60\n"
        f'  user demo password "{SECRET}" is joe here smtphost 127.0.0.1/{world.smtp_port}\n'
    )
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "fetchd", "-f", str(rc),
        env={"HOME": str(world.home), "XDG_STATE_HOME": str(world.home / "state"),
             "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    try:
        await asyncio.wait_for(accepted.wait(), 30)  # the poll is under way
        process.send_signal(signal.SIGINT)
        out, err = await asyncio.wait_for(process.communicate(), 30)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
        server.close()
    assert process.returncode == 130, err
    assert err.decode() == "fetchd: interrupted\n"
    assert out == b""


async def test_a_closed_pipe_on_stdout_is_a_quiet_exit(world: World) -> None:
    """`fetchd --configdump | head -0`: the reader is gone; fetchd exits 23 and writes nothing
    to stderr (no traceback, no "Exception ignored" at shutdown)."""
    rc = world.standard_rc()
    reader, writer = os.pipe()
    os.close(reader)
    try:
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "fetchd", "-f", str(rc), "--configdump",
            env={"HOME": str(world.home), "PATH": os.environ.get("PATH", "/usr/bin:/bin")},
            stdout=writer, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    finally:
        os.close(writer)
    _, err = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 23
    assert err == b""


async def test_an_rc_file_that_is_not_regular_is_exit_6(world: World) -> None:
    """A FIFO (or a directory) as the rc file: fetchmail's "must be a regular file", exit 6,
    and nothing read from it."""
    fifo = world.home / "rc.fifo"
    os.mkfifo(fifo, 0o600)
    directory = world.home / "rc.dir"
    directory.mkdir(mode=0o700)
    for path in (fifo, directory):
        code, _, err = await world.fetchd("-f", str(path))
        assert code == 6, err
        assert err == f"fetchd: File {path} must be a regular file.\n"


async def test_an_rc_file_owned_by_someone_else_is_exit_6(world: World) -> None:
    """A private rc file owned by another user: "must be owned by you", exit 6, no poll."""
    if os.geteuid() != 0:
        pytest.skip("giving a file to another user needs root")
    rc = world.standard_rc()
    other = pwd.getpwnam(os.environ.get("FETCHD_TEST_USER", "fmtest"))
    os.chown(rc, other.pw_uid, other.pw_gid)
    code, _, err = await world.fetchd("-f", str(rc))
    assert code == 6, err
    assert err == f"fetchd: File {rc} must be owned by you.\n"
    assert world.sink.received == []


async def test_the_demo_delivers_every_message_exactly_once(tmp_path: Path) -> None:
    """`fetchd --demo`, the README's first command, through the installed console script: three
    polls of its own POP3 server into its own SMTP sink, each message delivered once, the server
    emptied, exit 0; nothing of the user's home is read or written."""
    script = Path(sys.executable).with_name("fetchd")
    command = [str(script)] if script.exists() else [sys.executable, "-m", "fetchd"]
    home = tmp_path / "home"
    home.mkdir(mode=0o700)
    (home / ".fetchmailrc").write_text("this is no rc file\n")  # the demo must not read it
    (home / ".fetchmailrc").chmod(0o600)
    process = await asyncio.create_subprocess_exec(
        *command, "--demo",
        env={"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
             "LC_ALL": "C.UTF-8"},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out_bytes, err_bytes = await asyncio.wait_for(process.communicate(), 120)
    out, err = out_bytes.decode(), err_bytes.decode()
    assert process.returncode == 0, out + err
    assert "Traceback" not in out + err
    assert "fetchd demo: the SMTP sink received 5 messages:" in out, out
    subjects = [line for line in out.splitlines() if line.startswith("  MAIL FROM ")]
    assert [line.rsplit("Subject: ", 1)[1] for line in subjects] == [
        f"demo message {i}" for i in range(1, 6)
    ], out
    assert "fetchd demo: 0 messages left on the POP3 server" in out, out
    assert out.rstrip().endswith("fetchd demo: every message delivered exactly once; done."), out
    assert sorted(p.name for p in home.iterdir()) == [".fetchmailrc"]


async def test_postconnect_runs_after_the_poll_and_its_failure_loses_nothing(
    world: World,
) -> None:
    """`postconnect` runs once the account was polled: by then every message was delivered and
    the POP3 session had ended (the deletions committed). Its output is shown; a postconnect
    that fails is reported (exit 5, fetchmail's) and takes back nothing that was done."""
    seen: list[tuple[int, int]] = []  # (messages the MTA had, messages left on the server)

    async def record(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((len(world.sink.received), len(world.pop.messages)))
        writer.write(b"recorded\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(record, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    probe = world.home / "probe.py"
    probe.write_text(
        "import socket\n"
        f"s = socket.create_connection(('127.0.0.1', {port}))\n"
        "print('postconnect saw', s.recv(100).decode().strip())\n"
    )
    try:
        for status in (0, 7):
            rc = world.rcfile(
                f"poll 127.0.0.1 proto pop3 port {world.pop.port}\n"
                f'  user demo password "{SECRET}" is joe here'
                f" smtphost 127.0.0.1/{world.smtp_port} sslproto ''\n"
                f'  postconnect "{sys.executable} {probe}; exit {status}"\n'
            )
            code, out, err = await world.fetchd("-f", str(rc))
            if status == 0:
                assert code == 0, out + err
                assert seen == [(10, 0)]  # after all ten deliveries and the committed QUIT
                assert "postconnect: postconnect saw recorded" in out + err
            else:
                # Nothing new to fetch; the command ran and failed.
                assert code == 5, out + err
                assert "postconnect command for demo@127.0.0.1 failed with status 7" in out + err
                assert seen == [(10, 0), (10, 0)]
    finally:
        server.close()
    assert len(world.sink.received) == 10


async def test_a_defaults_user_is_the_login_of_entries_naming_none(world: World) -> None:
    """`defaults ... user demo`: every later entry without `user` logs in as demo."""
    rc = world.rcfile(
        f'defaults proto pop3 user demo password "{SECRET}" is joe here\n'
        f"poll 127.0.0.1 port {world.pop.port} sslproto '' smtphost 127.0.0.1/{world.smtp_port}\n"
    )
    code, out, err = await world.fetchd("-f", str(rc))
    assert code == 0, out + err
    assert len(world.sink.received) == 10 and world.pop.messages == []


async def test_an_empty_user_is_refused_at_poll_time_not_logged_in_as_us(world: World) -> None:
    rc = world.rcfile(
        f'poll 127.0.0.1 proto pop3 port {world.pop.port}\n  user "" password "{SECRET}"'
        f" is joe here smtphost 127.0.0.1/{world.smtp_port}\n"
    )
    code, out, err = await world.fetchd("-f", str(rc))
    assert code == 5, out + err
    assert "the user name is empty" in out + err and "line 2" in out + err
    assert world.sink.received == [] and len(world.pop.messages) == 10
    code, out, _ = await world.fetchd("--configdump", "-f", str(rc))
    assert code == 0 and '"remote":"",' in out  # read as fetchmail reads it


async def test_a_missing_rc_file_is_named(world: World) -> None:
    """`-f nosuch.rc` says the file does not exist; -V without one says it may be missing."""
    code, out, err = await world.fetchd("-f", str(world.home / "nosuch.rc"))
    assert code == 5
    assert f"the rc file {world.home / 'nosuch.rc'} does not exist" in err
    code, out, err = await world.fetchd("--version")
    assert code == 0, err
    assert f"No mailservers set up -- perhaps {world.home / '.fetchmailrc'} is missing?" in out


async def test_verbose_speaks_of_fetchd_and_an_unclosed_quote_is_placed(world: World) -> None:
    code, out, err = await world.fetchd("-V", "-f", str(world.standard_rc()))
    assert code == 0, err
    assert "fetchd will forward misaddressed multidrop messages" in out
    assert "Fetchmail will" not in out
    rc = world.rcfile('poll h proto pop3\n  user u password "x y\n  keep\n')
    code, _, err = await world.fetchd("-f", str(rc))
    assert code == 5
    assert f'{rc}:2:19: the quote " opened here is never closed' in err
    assert "(line 2, column 22)" in err
