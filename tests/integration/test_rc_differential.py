"""Differential test: fetchd reads each rc file in tests/rcfiles exactly as the real fetchmail does.

fetchmail (the Debian package) is the oracle: ``fetchmail --configdump -f FILE`` prints how it
read a file. It refuses some things as root, so as root we run it as an ordinary user
(FETCHD_TEST_USER, default ``fmtest``), with the file owned by that user and private, and give our
parser the same login name, home and file location.
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchd.config import ParseEnvironment, configdump, load_rcfile
from fetchd.config.describe import describe
from fetchd.errors import RCSyntaxError
from tests.support.fetchmail import fetchmail_binary, oracle_user
from tests.support.rcdiff import disagreement, run_fetchmail
from tests.support.rcgen import generate

CORPUS = Path(__file__).parent.parent / "rcfiles"
EXAMPLES = Path(__file__).parents[2] / "contrib" / "examples"
# The example files we ship must read as fetchmail reads them, like the corpus.
GOOD = sorted((CORPUS / "good").glob("*.rc")) + sorted(EXAMPLES.glob("*.fetchmailrc"))
BAD = sorted((CORPUS / "bad").glob("*.rc"))

pytestmark = pytest.mark.fetchmail


@pytest.fixture
def home() -> Iterator[Path]:
    """A home the oracle's user can enter: pytest's own tmp_path is private to root."""
    path = Path(tempfile.mkdtemp(prefix="fetchd-rc-"))
    path.chmod(0o755)
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _place(source: Path, home: Path, user: pwd.struct_passwd) -> Path:
    target = home / source.name
    target.write_bytes(source.read_bytes())
    target.chmod(0o600)
    if os.geteuid() == 0:
        os.chown(home, user.pw_uid, user.pw_gid)
        os.chown(target, user.pw_uid, user.pw_gid)
    return target


def _run_fetchmail(
    rcfile: Path, home: Path, user: pwd.struct_passwd, what: str = "--configdump"
) -> subprocess.CompletedProcess[str]:
    return run_fetchmail(fetchmail_binary(), rcfile, home, user, what)


def _ours(rcfile: Path, home: Path, user: pwd.struct_passwd) -> str:
    env = ParseEnvironment(login=user.pw_name, home=str(home), rcdir=str(rcfile.parent))
    return configdump(load_rcfile(str(rcfile), env=env, check=False))


@pytest.mark.parametrize("source", GOOD, ids=[p.stem for p in GOOD])
def test_fetchd_dumps_what_fetchmail_dumps(source: Path, home: Path) -> None:
    user = oracle_user()
    rcfile = _place(source, home, user)
    theirs = _run_fetchmail(rcfile, rcfile.parent, user)
    assert theirs.returncode == 0, f"fetchmail rejected a file of the good corpus: {theirs.stderr}"
    assert _ours(rcfile, rcfile.parent, user) == theirs.stdout


@pytest.mark.parametrize("source", BAD, ids=[p.stem for p in BAD])
def test_fetchd_rejects_what_fetchmail_rejects(source: Path, home: Path) -> None:
    user = oracle_user()
    rcfile = _place(source, home, user)
    theirs = _run_fetchmail(rcfile, rcfile.parent, user)
    assert theirs.returncode == 5, f"fetchmail accepted a file of the bad corpus: {theirs.stdout}"
    with pytest.raises(RCSyntaxError) as caught:
        _ours(rcfile, rcfile.parent, user)
    error = caught.value
    assert error.exit_code == 5
    # fetchmail names the line; we name the same line (and a column), or, when an unclosed
    # quote caused it, the quote's line first and fetchmail's line after it.
    their_line = int(theirs.stderr.split(":")[2])
    assert error.found_line == their_line, (str(error), theirs.stderr)


@pytest.mark.parametrize("word", ["xoauth2", "oauthbearer"])
def test_the_oauth2_auth_words_are_our_one_deliberate_extension(word: str, home: Path) -> None:
    """fetchmail 6.4 refuses ``auth xoauth2`` / ``auth oauthbearer`` (fetchmail 7 knows them);
    fetchd reads them, as its README says, and its dump keeps the word it read."""
    user = oracle_user()
    source = home / "o.rc"
    source.write_text(f"poll h auth {word} user u\n")
    rcfile = _place(source, home, user)
    theirs = _run_fetchmail(rcfile, home, user)
    assert theirs.returncode == 5 and f"syntax error at {word}" in theirs.stderr
    assert f'"auth":"{word}",' in _ours(rcfile, home, user)


def test_the_corpus_is_large_enough() -> None:
    assert len(GOOD) >= 40 and len(BAD) >= 10
    assert len(list(EXAMPLES.glob("*.fetchmailrc"))) >= 3


# Sentences of fetchmail's -V that fetchd writes word for word.
SAME_SENTENCES = (
    "Connection must be through interface",
    "Polling loop will monitor",
    "Server connections will be made via plugin",
    "Listener connections will be made via plugout",
    "Poll trace information",
    "Messages with bad headers",
)


def test_verbose_describes_links_tracepolls_and_bad_headers_as_fetchmail(home: Path) -> None:
    user = oracle_user()
    source = home / "v.rc"
    source.write_text(
        'poll a.example proto pop3 tracepolls bad-header accept plugin "ssh -W %h:%p gw"\n'
        '  plugout "nc %h %p" interface ppp0/10.0.0.1/255.255.255.0 monitor ppp0\n'
        "  user joe pass secret\n"
        "poll b.example proto imap user ann pass secret\n"
    )
    rcfile = _place(source, home, user)
    theirs = _run_fetchmail(rcfile, home, user, "-V")
    env = ParseEnvironment(login=user.pw_name, home=str(home), rcdir=str(home))
    ours = describe(load_rcfile(str(rcfile), env=env, check=False))

    def chosen(text: str) -> list[str]:
        return [line for line in text.splitlines() if line.strip().startswith(SAME_SENTENCES)]

    assert len(chosen(theirs.stdout)) == 6  # all for the first server, none for the second
    assert chosen(ours) == chosen(theirs.stdout)


# -V sentences fetchd writes as fetchmail does, with its own name where fetchmail names itself.
GLOBAL_SENTENCES = (
    "Fetchmail will forward",
    "Fetchmail will direct",
    "Fetchmail will treat",
    "fetchd will forward",
    "fetchd will direct",
    "fetchd will treat",
    "No mailservers set up",
)
ENTRY = "poll a.example proto pop3 user joe pass secret\n"


@pytest.mark.parametrize(
    ("text", "sentences"),
    [
        ("", 1),
        ("set no bouncemail\nset no softbounce\n" + ENTRY, 3),
        ("set postmaster joe\n" + ENTRY, 1),
    ],
    ids=["empty", "bounces", "postmaster"],
)
def test_verbose_global_sentences_read_as_fetchmail_with_our_name(
    text: str, sentences: int, home: Path
) -> None:
    """-V says "fetchd will ...", and "No mailservers set up" for a file with none, as fetchmail."""
    user = oracle_user()
    source = home / "g.rc"
    source.write_text(text)
    rcfile = _place(source, home, user)
    theirs = _run_fetchmail(rcfile, home, user, "-V")
    env = ParseEnvironment(login=user.pw_name, home=str(home), rcdir=str(home))
    ours = describe(load_rcfile(str(rcfile), env=env, check=False))

    def chosen(text: str) -> list[str]:
        lines = [line.strip() for line in text.splitlines()]
        return [line for line in lines if line.startswith(GLOBAL_SENTENCES)]

    # fetchmail writes "No mailservers set up" to stderr, fetchd to stdout with the rest.
    said = chosen(theirs.stdout + theirs.stderr)
    expected = [line.replace("Fetchmail will", "fetchd will") for line in said]
    assert len(expected) == sentences
    assert chosen(ours) == expected
    assert "Fetchmail will" not in ours


# Random rc files (tests/support/rcgen.py), each read by fetchmail and by fetchd
# (tests/support/rcdiff.py). contrib/rc-differential.py runs tens of thousands of seeds outside
# CI; these fixed ones keep the comparison in CI. fetchd differs on purpose in two places, left
# out of the comparison: `no tracepolls` and `set no showdots` (see rcdiff.comparable).
GENERATED_SEEDS = range(0, 3000, 25)


@pytest.mark.parametrize("seed", GENERATED_SEEDS)
def test_generated_rc_files_read_as_fetchmail_reads_them(seed: int, home: Path) -> None:
    differs = disagreement(seed, fetchmail_binary(), home, oracle_user())
    assert differs is None, f"seed {seed}:\n{generate(seed)}\n{differs}"
