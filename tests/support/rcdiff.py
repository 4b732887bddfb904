"""One random rc file read by the real fetchmail and by fetchd, and whether they agree.

Used by the differential test (a fixed set of seeds in CI) and by contrib/rc-differential.py,
which runs many thousands of seeds outside CI. fetchmail runs as ``user`` (the test user when we
are root), with ``home`` as its home; the file is written there, private, owned by that user.
"""

from __future__ import annotations

import difflib
import os
import pwd
import subprocess
from pathlib import Path

from fetchd.config import ParseEnvironment, configdump, load_rcfile
from fetchd.config.check import check_config
from fetchd.config.lexer import Kind, tokenize
from fetchd.errors import FetchdError, RCSyntaxError
from tests.support.rcgen import generate


def run_fetchmail(
    fetchmail: str, rcfile: Path, home: Path, user: pwd.struct_passwd, what: str = "--configdump"
) -> subprocess.CompletedProcess[str]:
    command = [fetchmail, what, "-f", str(rcfile)]
    if os.geteuid() == 0:
        # runuser sets HOME to the user's own: set ours again inside.
        command = ["runuser", "-u", user.pw_name, "--", "env", f"HOME={home}", *command]
    env = {"HOME": str(home), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C"}
    return subprocess.run(command, capture_output=True, text=True, env=env, timeout=30, check=False)


def disagreement(seed: int, fetchmail: str, home: Path, user: pwd.struct_passwd) -> str | None:
    """None when fetchd reads the file of ``seed`` as fetchmail does, else what differs."""
    text = generate(seed)
    rcfile = home / "generated.rc"
    rcfile.write_bytes(text.encode())  # as written: a CR LF stays a CR LF
    rcfile.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(home, user.pw_uid, user.pw_gid)
        os.chown(rcfile, user.pw_uid, user.pw_gid)
    theirs = run_fetchmail(fetchmail, rcfile, home, user)
    try:
        config = load_rcfile(
            str(rcfile),
            env=ParseEnvironment(login=user.pw_name, home=str(home), rcdir=str(home)),
            check=False,
        )
        check_config(config)
        ours: str | FetchdError = configdump(config)
    except FetchdError as error:
        ours = error
    if "idle mode does not work" in theirs.stderr:
        return None  # fetchd idles on each entry that can: a documented difference
    if theirs.returncode == 0:
        if not isinstance(ours, str):
            return f"fetchd refused what fetchmail reads: {ours}"
        mine, their = comparable(ours, text), comparable(theirs.stdout, text)
        if mine != their:
            changed = difflib.unified_diff(their, mine, "fetchmail", "fetchd", n=1, lineterm="")
            return "dumps differ:\n" + "\n".join(list(changed)[:12])
        return None
    if theirs.returncode != 5:
        return f"fetchmail exited {theirs.returncode}: {theirs.stderr}"
    if not isinstance(ours, FetchdError):
        return f"fetchd read what fetchmail refused ({theirs.stderr.strip()})"
    if ours.exit_code != 5:
        return f"fetchd exited {ours.exit_code}, fetchmail 5: {ours} / {theirs.stderr.strip()}"
    if "syntax error" in theirs.stderr:
        if not isinstance(ours, RCSyntaxError):
            return f"fetchmail: {theirs.stderr.strip()}; fetchd: not a syntax error: {ours}"
        if _fetchmail_line(text, ours.found_line) != int(theirs.stderr.split(":")[2]):
            return f"other line: fetchmail {theirs.stderr.strip()}; fetchd {ours}"
    return None


def _fetchmail_line(text: str, line: int) -> int:
    """Our line as fetchmail numbers it: its scanner does not count the newlines inside a quoted
    string, fetchd names the line an editor shows (a deliberate difference, in the README)."""
    inside = sum(
        token.text.count("\n")
        for token in tokenize(text, "rc")
        if token.kind is Kind.STRING and token.text[:1] in "\"'" and token.line < line
    )
    return line - inside


def comparable(dump: str, text: str) -> list[str]:
    """The dump's lines, less two flags where fetchd differs on purpose (README): `no
    tracepolls` and `set no showdots` are off in fetchd, while fetchmail 6.4 stores them as a
    nonzero flag (on)."""
    ignored = [
        key
        for key, word in (("'tracepolls'", "no tracepolls"), ("'showdots'", "no showdots"))
        if word in text
    ]
    return [
        line for line in dump.splitlines() if not line.strip().startswith(tuple(ignored) or ("\0",))
    ]
