"""The control socket's checks and the runtime directory's lock, in-process."""

from __future__ import annotations

import asyncio
import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from fetchd.daemon import control
from fetchd.daemon.runtime import DaemonLock, PidFile, ensure_private_dir, runtime_dir
from fetchd.errors import DaemonRunningError, FetchdError


@pytest.mark.parametrize(
    ("line", "error"),
    [
        (b'{"v": 2, "cmd": "quit"}', '"v": 1'),
        (b'["quit"]', '"v": 1'),
        (b'{"v": 1, "cmd": "rm"}', "unknown command"),
        (b'{"v": 1, "cmd": "poll", "account": 5}', "short string"),
        (b'{"v": 1, "cmd": "poll", "account": "' + b"a" * 300 + b'"}', "short string"),
        (b"{not json", "Expecting"),
        (b'{"v": 1, "cmd": "quit", "pad": "' + b"x" * 5000 + b'"}', "too long"),
    ],
)
def test_bad_requests_are_refused_with_a_reason(line: bytes, error: str) -> None:
    with pytest.raises(ValueError, match=error):
        control.parse_request(line)


def test_a_good_request() -> None:
    assert control.parse_request(b'{"v": 1, "cmd": "poll", "account": "a@b"}\n') == {
        "v": 1,
        "cmd": "poll",
        "account": "a@b",
    }


class Recorder:
    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []

    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        self.requests.append(request)
        return {"ok": True, "echo": request["cmd"]}


async def _exchange(path: Path, payload: bytes) -> dict[str, Any]:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(payload)
    await writer.drain()
    line = await asyncio.wait_for(reader.readline(), 10)
    writer.close()
    answer: dict[str, Any] = json.loads(line)
    return answer


async def test_server_answers_and_refuses_over_long_or_slow_requests(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(control, "REQUEST_TIMEOUT", 0.3)
    handler = Recorder()
    server = control.ControlServer(tmp_path / "control.sock", handler)
    await server.start()
    try:
        assert stat.S_IMODE((tmp_path / "control.sock").stat().st_mode) == 0o600
        answer = await _exchange(server.path, b'{"v": 1, "cmd": "status"}\n')
        assert answer == {"v": 1, "ok": True, "echo": "status"}
        answer = await _exchange(server.path, b"x" * 100_000 + b"\n")
        assert answer["ok"] is False and "bad request" in answer["error"]
        answer = await _exchange(server.path, b'{"v": 1, "cmd": "qu')  # and then nothing
        assert answer["ok"] is False and "bad request" in answer["error"]
        assert [r["cmd"] for r in handler.requests] == ["status"]  # the bad ones never got there
        # The blocking client the command line uses.
        reply = await asyncio.to_thread(control.request, server.path, "poll", "x@y")
        assert reply == {"v": 1, "ok": True, "echo": "poll"}
    finally:
        await server.stop()
    assert not server.path.exists()
    assert await asyncio.to_thread(control.request, server.path, "quit") is None


async def test_a_stale_socket_is_replaced_but_a_file_that_is_not_one_is_kept(
    tmp_path: Path,
) -> None:
    import socket

    path = tmp_path / "control.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # the file stays, nobody listens: what a crash leaves
    server = control.ControlServer(path, Recorder())
    await server.start()
    assert (await _exchange(path, b'{"v": 1, "cmd": "status"}\n'))["ok"] is True
    await server.stop()
    path.write_text("someone's notes")
    with pytest.raises(FetchdError, match="not a socket"):
        await control.ControlServer(path, Recorder()).start()
    assert path.read_text() == "someone's notes"
    path.unlink()
    path.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(FetchdError, match="not a socket"):
        await control.ControlServer(path, Recorder()).start()
    assert path.is_symlink()


def test_runtime_dir_prefers_xdg_and_falls_back_to_home(tmp_path: Path) -> None:
    assert runtime_dir({"XDG_RUNTIME_DIR": "/run/user/7"}) == Path("/run/user/7/fetchd")
    assert runtime_dir({"HOME": str(tmp_path)}) == tmp_path / ".fetchd" / "run"


def test_private_dir_is_made_private_and_a_symlink_is_refused(tmp_path: Path) -> None:
    loose = tmp_path / "loose"
    loose.mkdir(mode=0o755)
    assert stat.S_IMODE(ensure_private_dir(loose).stat().st_mode) == 0o700
    (tmp_path / "link").symlink_to(loose)
    with pytest.raises(FetchdError, match="not a directory of ours"):
        ensure_private_dir(tmp_path / "link")


def test_one_lock_holder_and_a_stale_lock_is_taken_over(tmp_path: Path) -> None:
    (tmp_path / "lock").write_text("4242\n")  # left by a crashed daemon: not locked
    first = DaemonLock(tmp_path)
    first.acquire()
    assert (tmp_path / "lock").read_text() == f"{os.getpid()}\n"
    assert DaemonLock(tmp_path).held_by_other()
    with pytest.raises(DaemonRunningError, match=f"pid {os.getpid()}") as caught:
        DaemonLock(tmp_path).acquire()
    assert caught.value.exit_code == 8
    first.release()
    assert not DaemonLock(tmp_path).held_by_other()
    second = DaemonLock(tmp_path)
    second.acquire()
    second.release()


def test_a_symlinked_lock_file_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "precious"
    target.write_text("keep me")
    (tmp_path / "lock").symlink_to(target)
    with pytest.raises(FetchdError, match="cannot open the daemon lock"):
        DaemonLock(tmp_path).acquire()
    assert target.read_text() == "keep me"


def test_pidfile_is_fetchmails_and_replaces_a_planted_symlink(tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("keep me\n")
    path = tmp_path / "fetchmail.pid"
    path.symlink_to(victim)
    pidfile = PidFile(path)
    pidfile.write(300)
    assert not path.is_symlink() and path.read_text() == f"{os.getpid()}\n300\n"
    assert victim.read_text() == "keep me\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 & ~_umask()
    pidfile.remove()
    assert not path.exists()


def test_pidfile_of_another_process_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "fetchmail.pid"
    path.write_text("1\n300\n")  # a later daemon's, say
    PidFile(path).remove()
    assert path.read_text() == "1\n300\n"


def test_an_unwritable_pidfile_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FetchdError, match=r"cannot write the pid file .*missing/x\.pid"):
        PidFile(tmp_path / "missing" / "x.pid").write(0)
    assert list(tmp_path.iterdir()) == []


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_fetchmail_pidfile_counts_only_with_a_live_fetchmail(tmp_path: Path) -> None:
    """A stale pid file, or one naming a process that is not fetchmail, does not block."""
    from fetchd.daemon.runtime import fetchmail_pidfiles, running_fetchmail

    env = {"HOME": str(tmp_path)}
    assert fetchmail_pidfiles(env)[0] == tmp_path / ".fetchmail.pid"
    assert fetchmail_pidfiles(env | {"FETCHMAILHOME": "/x"})[0] == Path("/x/fetchmail.pid")
    assert running_fetchmail(env) is None  # no file
    (tmp_path / ".fetchmail.pid").write_text(f"{os.getpid()}\n300\n")  # alive, but python
    assert running_fetchmail(env) is None
    (tmp_path / ".fetchmail.pid").write_text("garbage\n")
    assert running_fetchmail(env) is None


def test_status_shows_the_daemon_and_outcomes_as_words() -> None:
    from fetchd.daemon.service import format_status, status_document

    answer = {
        "daemon": {
            "pid": 42,
            "version": "9.9",
            "rcfile": "/home/u/.fetchmailrc",
            "uptime": 3725.0,
            "reload_failed_at": 1.0e9,
            "reload_error": "/home/u/.fetchmailrc:3:1: syntax error",
            "tasks": 7,
        },
        "accounts": [
            {"account": "u@a", "state": "waiting", "outcome": 3, "messages": 0, "octets": 0},
            {"account": "v@b", "state": "waiting", "outcome": 0, "messages": 2, "octets": 9},
            {"account": "w@c", "state": "polling", "outcome": None},
        ],
    }
    text = format_status(answer)
    first, failed = text.splitlines()[:2]
    assert first == (
        "fetchd 9.9 daemon, pid 42, up 1h 02m 05s, rc file /home/u/.fetchmailrc, 7 tasks"
    )
    assert failed.startswith("reload failed at ") and "3:1: syntax error" in failed
    rows = {line.split()[0]: line for line in text.splitlines()[3:]}
    assert "auth failed (3)" in rows["u@a"] and "mail (0)" in rows["v@b"]
    assert " - " in rows["w@c"]
    document = status_document(answer)
    assert [a["outcome_text"] for a in document["accounts"]] == ["auth failed", "mail", None]
    assert document["daemon"]["pid"] == 42


def test_daemon_paths_are_made_absolute_before_detaching(tmp_path: Path) -> None:
    from fetchd.config import parse
    from fetchd.daemon.service import absolute_paths
    from fetchd.options import parse_args

    config = parse("set idfile ids\nset pidfile p.pid\npoll a user u password p\n", "my.rc")
    options = parse_args(["-f", "my.rc", "-L", "log", "-i", "../ids2", "--pidfile", "x.pid"])
    config, options = absolute_paths(config, options, "/srv/mail")
    assert (options.rcfile, config.filename, options.pidfile) == (
        "/srv/mail/my.rc",
        "/srv/mail/my.rc",
        "/srv/mail/x.pid",
    )
    assert options.override("logfile") == "/srv/mail/log"
    assert options.override("idfile") == "/srv/ids2"
    # The parser has made the rc file's own paths absolute already (against the rc file's
    # directory, as fetchmail does); they are left as they are.
    assert config.globals.idfile == os.path.abspath("ids")
