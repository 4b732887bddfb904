"""The durable UID store: records, UIDVALIDITY, .fetchids import, refusal of untrusted files."""

from __future__ import annotations

import os
import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from fetchd.errors import StateError
from fetchd.state import UIDStore, default_state_dir, default_store_path
from fetchd.state.database import SCHEMA_VERSION

FETCHIDS = (
    b"bob@LocalHost 000000016b060bb2\n"
    b"bob@LocalHost 000000026b060bb2\n"
    b"bob@127.0.0.1 000000036b060bb2\n"
    b"joe@example.com@localhost 000000016b060bb2\n"
)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "uids.sqlite3"


@pytest.fixture
def store(store_path: Path) -> Iterator[UIDStore]:
    with UIDStore.open(store_path) as opened:
        yield opened


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def _filled_store_bytes(path: Path, count: int = 5000) -> bytes:
    with UIDStore.open(path) as store:
        store.account("pop.example.org", "bob").record_delivered(f"uid-{i}" for i in range(count))
    return path.read_bytes()


# --- records ---------------------------------------------------------------------------------


def test_recorded_uids_survive_close_and_reopen(store_path: Path) -> None:
    """What record_delivered stored is what delivered() returns after reopening the file."""
    with UIDStore.open(store_path) as store:
        store.account("pop.example.org", "bob").record_delivered(["a", "b"])
        store.account("pop.example.org", "bob").record_delivered(["c", "a"])
    with UIDStore.open(store_path) as store:
        assert store.account("pop.example.org", "bob").delivered() == {"a", "b", "c"}


def test_accounts_do_not_see_each_others_records(store: UIDStore) -> None:
    """Server, user and folder each separate the records."""
    store.account("pop.example.org", "bob").record_delivered(["1"])
    store.account("pop.example.org", "alice").record_delivered(["2"])
    store.account("imap.example.org", "bob").record_delivered(["3"])
    store.account("pop.example.org", "bob", "Archive").record_delivered(["4"])
    assert store.account("pop.example.org", "bob").delivered() == {"1"}
    assert store.account("pop.example.org", "alice").delivered() == {"2"}
    assert store.account("imap.example.org", "bob").delivered() == {"3"}
    assert store.account("pop.example.org", "bob", "Archive").delivered() == {"4"}


def test_host_case_and_inbox_case_name_the_same_account(store: UIDStore) -> None:
    """'POP.Example.ORG'/'inbox' is the same mailbox as 'pop.example.org'/'INBOX'; users differ."""
    store.account("POP.Example.ORG", "bob", "inbox").record_delivered(["1"])
    assert store.account("pop.example.org", "bob").delivered() == {"1"}
    assert store.account("pop.example.org", "Bob").delivered() == set()


def test_invalid_uids_are_refused_before_anything_is_written(store: UIDStore) -> None:
    """An empty or non-str UID is a programming error; the valid ones of that batch stay out."""
    account = store.account("pop.example.org", "bob")
    with pytest.raises(ValueError):
        account.record_delivered(["ok", ""])
    assert account.delivered() == set()


def test_forget_absent_drops_only_uids_the_server_no_longer_lists(store: UIDStore) -> None:
    """Records for UIDs missing from the listing go; listed ones and other accounts stay."""
    bob = store.account("pop.example.org", "bob")
    alice = store.account("pop.example.org", "alice")
    bob.record_delivered(["1", "2", "3", "4"])
    alice.record_delivered(["1", "9"])
    bob.forget_absent(["2", "4", "5"])
    assert bob.delivered() == {"2", "4"}
    assert alice.delivered() == {"1", "9"}
    bob.forget_absent([])
    assert bob.delivered() == set()


def test_calls_from_many_threads_all_land(store: UIDStore) -> None:
    """The store is usable from worker threads (asyncio.to_thread); concurrent calls serialise."""
    account = store.account("pop.example.org", "bob")

    def record(thread: int) -> None:
        for i in range(20):
            account.record_delivered([f"{thread}-{i}"])

    threads = [threading.Thread(target=record, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert account.delivered() == {f"{t}-{i}" for t in range(8) for i in range(20)}


def test_two_handles_on_one_file_see_each_others_commits(store_path: Path) -> None:
    """Two fetchd processes share the file: a commit by one is visible to the other at once."""
    with UIDStore.open(store_path) as first, UIDStore.open(store_path) as second:
        first.account("pop.example.org", "bob").record_delivered(["1"])
        second.account("pop.example.org", "alice").record_delivered(["2"])
        assert second.account("pop.example.org", "bob").delivered() == {"1"}
        assert first.account("pop.example.org", "alice").delivered() == {"2"}


def test_commits_are_fsynced_wal_with_synchronous_full(store: UIDStore) -> None:
    """The connection runs in WAL mode with synchronous=FULL, so every commit reaches the disk."""
    connection = store._connection
    assert connection is not None
    assert connection.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    assert connection.execute("PRAGMA synchronous").fetchone() == (2,)  # 2 = FULL


def test_a_closed_store_refuses_use(store_path: Path) -> None:
    """After close, calls raise StateError instead of silently doing nothing."""
    store = UIDStore.open(store_path)
    account = store.account("pop.example.org", "bob")
    store.close()
    store.close()
    with pytest.raises(StateError, match="closed"):
        account.record_delivered(["1"])


# --- UIDVALIDITY -----------------------------------------------------------------------------


def test_first_uidvalidity_is_not_a_change(store: UIDStore) -> None:
    """Learning the validity for the first time, or seeing the same again, reports no change."""
    account = store.account("imap.example.org", "bob")
    assert account.uidvalidity is None
    assert account.set_uidvalidity(1000) is False
    assert account.set_uidvalidity(1000) is False
    assert account.uidvalidity == 1000


def test_changed_uidvalidity_sets_old_records_aside(store: UIDStore) -> None:
    """After a change, old UIDs no longer count as delivered; new records start empty."""
    account = store.account("imap.example.org", "bob")
    account.set_uidvalidity(1000)
    account.record_delivered(["1", "2", "3"])
    assert account.set_uidvalidity(2000) is True
    assert account.delivered() == set()
    account.record_delivered(["1"])
    assert account.delivered() == {"1"}


def test_old_records_return_with_their_uidvalidity(store: UIDStore) -> None:
    """A mailbox restored with its old validity sees its old records again (RFC 3501 2.3.1.1)."""
    account = store.account("imap.example.org", "bob")
    account.set_uidvalidity(1000)
    account.record_delivered(["1", "2"])
    account.set_uidvalidity(2000)
    account.record_delivered(["7"])
    account.forget_absent(["7"])  # prunes only the current validity's records
    assert account.set_uidvalidity(1000) is True
    assert account.delivered() == {"1", "2"}


def test_uidvalidity_persists_across_reopen(store_path: Path) -> None:
    """A new handle starts from the stored validity, so a change is detected after a restart."""
    with UIDStore.open(store_path) as store:
        account = store.account("imap.example.org", "bob")
        account.set_uidvalidity(1000)
        account.record_delivered(["5"])
    with UIDStore.open(store_path) as store:
        account = store.account("imap.example.org", "bob")
        assert account.uidvalidity == 1000
        assert account.delivered() == {"5"}
        assert account.set_uidvalidity(1001) is True


def test_forget_other_uidvalidities_drops_only_the_set_aside_records(store: UIDStore) -> None:
    """The deliberate clean-up removes old-validity records and keeps the current ones."""
    account = store.account("imap.example.org", "bob")
    account.set_uidvalidity(1)
    account.record_delivered(["old"])
    account.set_uidvalidity(2)
    account.record_delivered(["new"])
    account.forget_other_uidvalidities()
    assert account.delivered() == {"new"}
    account.set_uidvalidity(1)
    assert account.delivered() == set()


@pytest.mark.parametrize("bad", [0, -1, 2**32])
def test_uidvalidity_out_of_range_is_refused(store: UIDStore, bad: int) -> None:
    """UIDVALIDITY is a non-zero 32-bit number; anything else is a programming error."""
    with pytest.raises(ValueError):
        store.account("imap.example.org", "bob").set_uidvalidity(bad)


# --- fetchmail .fetchids import --------------------------------------------------------------


def test_import_records_the_accounts_uids_as_delivered(store: UIDStore, tmp_path: Path) -> None:
    """Only this account's lines are imported, host and user matched case-blind."""
    fetchids = tmp_path / ".fetchids"
    fetchids.write_bytes(FETCHIDS)
    outcome = store.import_fetchids(fetchids, "localhost", "BOB")
    assert (outcome.imported, outcome.already_done, outcome.found) == (2, False, True)
    assert store.account("localhost", "BOB").delivered() == {
        "000000016b060bb2",
        "000000026b060bb2",
    }


def test_import_matches_the_via_name_fetchmail_wrote(store: UIDStore, tmp_path: Path) -> None:
    """fetchmail writes the 'via' name; fetchids_host selects those lines for our account."""
    fetchids = tmp_path / ".fetchids"
    fetchids.write_bytes(FETCHIDS)
    outcome = store.import_fetchids(fetchids, "mail.example.org", "bob", fetchids_host="127.0.0.1")
    assert outcome.imported == 1
    assert store.account("mail.example.org", "bob").delivered() == {"000000036b060bb2"}


def test_import_runs_only_once_per_account(store_path: Path, tmp_path: Path) -> None:
    """A second import, even after a restart and with new lines in the file, records nothing."""
    fetchids = tmp_path / ".fetchids"
    fetchids.write_bytes(FETCHIDS)
    with UIDStore.open(store_path) as store:
        store.import_fetchids(fetchids, "localhost", "bob")
        store.account("localhost", "bob").forget_absent(["000000016b060bb2"])
    fetchids.write_bytes(FETCHIDS + b"bob@localhost later-uid\n")
    with UIDStore.open(store_path) as store:
        outcome = store.import_fetchids(fetchids, "localhost", "bob")
        assert (outcome.imported, outcome.already_done) == (0, True)
        assert store.account("localhost", "bob").delivered() == {"000000016b060bb2"}
        # Another account of the same file still gets its own first import.
        assert store.import_fetchids(fetchids, "localhost", "joe@example.com").imported == 1


def test_missing_fetchids_is_not_remembered(store: UIDStore, tmp_path: Path) -> None:
    """No file: nothing recorded, and a later run with the file still imports it."""
    fetchids = tmp_path / ".fetchids"
    outcome = store.import_fetchids(fetchids, "localhost", "bob")
    assert (outcome.imported, outcome.found) == (0, False)
    fetchids.write_bytes(FETCHIDS)
    assert store.import_fetchids(fetchids, "localhost", "bob").imported == 2


def test_malformed_fetchids_imports_nothing(store: UIDStore, tmp_path: Path) -> None:
    """A bad line names file and line; no UID and no import mark is recorded, so a fix can retry."""
    fetchids = tmp_path / ".fetchids"
    fetchids.write_bytes(FETCHIDS + b"this line has no at sign\n")
    with pytest.raises(StateError, match=rf"{fetchids}:5: "):
        store.import_fetchids(fetchids, "localhost", "bob")
    assert store.account("localhost", "bob").delivered() == set()
    fetchids.write_bytes(FETCHIDS)
    assert store.import_fetchids(fetchids, "localhost", "bob").imported == 2


def test_unreadable_fetchids_is_an_error(store: UIDStore, tmp_path: Path) -> None:
    """A path that exists but cannot be read (here a directory) raises StateError naming it."""
    with pytest.raises(StateError, match=str(tmp_path)):
        store.import_fetchids(tmp_path, "localhost", "bob")


# --- files we must not trust -----------------------------------------------------------------


def _assert_refused(path: Path) -> StateError:
    with pytest.raises(StateError) as caught:
        UIDStore.open(path)
    assert str(path) in str(caught.value)
    return caught.value


def test_garbage_file_is_refused_and_left_alone(tmp_path: Path) -> None:
    """Random bytes are not a store: StateError, and the file is not touched."""
    path = tmp_path / "uids.sqlite3"
    garbage = bytes(range(256)) * 64
    path.write_bytes(garbage)
    _assert_refused(path)
    assert path.read_bytes() == garbage


@pytest.mark.parametrize("keep", [0.0, 0.001, 0.1, 0.5, 0.9])
def test_truncated_store_is_refused(tmp_path: Path, keep: float) -> None:
    """A real store cut short anywhere (even to nothing) raises StateError, never reads as empty."""
    path = tmp_path / "uids.sqlite3"
    data = _filled_store_bytes(path)
    assert len(data) > 20 * 4096  # many pages, so the cuts land in different structures
    path.write_bytes(data[: int(len(data) * keep)])
    _assert_refused(path)


def test_damaged_page_is_refused(tmp_path: Path) -> None:
    """Garbage written over a page in the middle fails quick_check: StateError."""
    path = tmp_path / "uids.sqlite3"
    data = bytearray(_filled_store_bytes(path))
    middle = (len(data) // 4096 // 2) * 4096
    data[middle : middle + 4096] = b"\xa5" * 4096
    path.write_bytes(bytes(data))
    error = _assert_refused(path)
    assert "backup" in str(error)


def test_directory_in_place_of_the_store_is_refused(tmp_path: Path) -> None:
    """A directory at the store path raises StateError naming it."""
    path = tmp_path / "uids.sqlite3"
    path.mkdir()
    error = _assert_refused(path)
    assert "directory" in str(error)


def test_another_programs_sqlite_database_is_refused_untouched(tmp_path: Path) -> None:
    """A valid SQLite file that is not fetchd's raises StateError and is not modified."""
    path = tmp_path / "uids.sqlite3"
    other = sqlite3.connect(path)
    other.execute("CREATE TABLE messages (id TEXT)")
    other.commit()
    other.close()
    before = path.read_bytes()
    error = _assert_refused(path)
    assert "another program" in str(error)
    assert path.read_bytes() == before


def test_store_from_a_newer_fetchd_is_refused(store_path: Path) -> None:
    """A schema version above ours asks for an upgrade instead of guessing."""
    UIDStore.open(store_path).close()
    raw = sqlite3.connect(store_path)
    raw.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    raw.commit()
    raw.close()
    error = _assert_refused(store_path)
    assert "newer fetchd" in str(error)


def test_write_ahead_log_without_its_store_is_refused(store_path: Path) -> None:
    """A -wal left where the store was deleted means lost state: refuse rather than start empty."""
    store_path.parent.mkdir(parents=True)
    Path(f"{store_path}-wal").write_bytes(b"x" * 100)
    _assert_refused(store_path)
    assert not store_path.exists()


# --- creation and paths ----------------------------------------------------------------------


def test_created_directories_and_files_are_private(tmp_path: Path) -> None:
    """Missing directories are made 0700 and the store and its WAL 0600, whatever the umask."""
    path = tmp_path / "a" / "b" / "uids.sqlite3"
    old_umask = os.umask(0)
    try:
        with UIDStore.open(path) as store:
            store.account("pop.example.org", "bob").record_delivered(["1"])
            assert _mode(Path(f"{path}-wal")) == 0o600
    finally:
        os.umask(old_umask)
    assert _mode(tmp_path / "a") == 0o700
    assert _mode(tmp_path / "a" / "b") == 0o700
    assert _mode(path) == 0o600
    assert sorted(p.name for p in path.parent.iterdir()) == ["uids.sqlite3"]


def test_default_path_follows_xdg_state_home(tmp_path: Path) -> None:
    """$XDG_STATE_HOME/fetchd/uids.sqlite3 when set and absolute, else ~/.local/state/fetchd."""
    home = str(tmp_path)
    assert default_store_path({"XDG_STATE_HOME": "/x/state", "HOME": home}) == Path(
        "/x/state/fetchd/uids.sqlite3"
    )
    fallback = tmp_path / ".local" / "state" / "fetchd"
    assert default_state_dir({"HOME": home}) == fallback
    assert default_state_dir({"XDG_STATE_HOME": "relative/dir", "HOME": home}) == fallback
    assert default_state_dir({"XDG_STATE_HOME": "", "HOME": home}) == fallback


def test_open_without_a_path_uses_the_xdg_default(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """UIDStore.open() creates the store in the XDG state directory."""
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    with UIDStore.open() as store:
        assert store.path == tmp_path / "xdg" / "fetchd" / "uids.sqlite3"
    assert store.path.is_file()
    assert _mode(tmp_path / "xdg" / "fetchd") == 0o700


# --- schema migration and WAL mode ----------------------------------------------------------


def _version(path: Path) -> int:
    raw = sqlite3.connect(path)
    try:
        return int(raw.execute("SELECT version FROM schema_version").fetchone()[0])
    finally:
        raw.close()


def test_an_older_store_is_migrated_in_place_keeping_its_records(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store of schema version 1 opened by a fetchd of version 2 is migrated on open, in one
    transaction: new schema, new version, the recorded UIDs kept."""
    with UIDStore.open(store_path) as store:
        store.account("pop.example.org", "bob").record_delivered(["1", "2"])
    monkeypatch.setattr("fetchd.state.database.SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(
        "fetchd.state.database._MIGRATIONS",
        {SCHEMA_VERSION: "ALTER TABLE accounts ADD COLUMN note TEXT"},
    )
    with UIDStore.open(store_path) as store:
        assert store.account("pop.example.org", "bob").delivered() == {"1", "2"}
    assert _version(store_path) == SCHEMA_VERSION + 1
    raw = sqlite3.connect(store_path)
    columns = [row[1] for row in raw.execute("PRAGMA table_info(accounts)")]
    raw.close()
    assert "note" in columns


def test_a_failing_migration_leaves_the_store_as_it_was(
    store_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A migration that fails half-way is rolled back: StateError naming the step, and the store
    still at its old version with its first statement undone."""
    with UIDStore.open(store_path) as store:
        store.account("pop.example.org", "bob").record_delivered(["1"])
    monkeypatch.setattr("fetchd.state.database.SCHEMA_VERSION", SCHEMA_VERSION + 1)
    monkeypatch.setattr(
        "fetchd.state.database._MIGRATIONS",
        {SCHEMA_VERSION: "ALTER TABLE accounts ADD COLUMN note TEXT; SELECT * FROM no_such_table"},
    )
    error = _assert_refused(store_path)
    assert f"migration from {SCHEMA_VERSION} failed" in str(error)
    monkeypatch.undo()
    assert _version(store_path) == SCHEMA_VERSION
    raw = sqlite3.connect(store_path)
    columns = [row[1] for row in raw.execute("PRAGMA table_info(accounts)")]
    raw.close()
    assert "note" not in columns
    with UIDStore.open(store_path) as store:
        assert store.account("pop.example.org", "bob").delivered() == {"1"}


def test_a_version_without_a_migration_is_refused(store_path: Path) -> None:
    """A schema version below ours that no migration starts from: refused, not guessed at."""
    UIDStore.open(store_path).close()
    raw = sqlite3.connect(store_path)
    raw.execute("UPDATE schema_version SET version = 0")
    raw.commit()
    raw.close()
    error = _assert_refused(store_path)
    assert "no migration from schema version 0" in str(error)


@pytest.mark.parametrize("journal", ["wal", "delete"])
def test_a_filesystem_that_refuses_wal_mode_is_refused(
    store_path: Path, monkeypatch: pytest.MonkeyPatch, journal: str
) -> None:
    """Where SQLite cannot run in WAL mode (here its "unix-none" VFS, without the locking WAL
    needs, as on some network filesystems), the store is refused rather than used without it:
    a store in WAL mode cannot even be read there, and one a tool switched back to a rollback
    journal is refused when WAL mode is asked for and not granted."""
    with UIDStore.open(store_path) as store:
        store.account("pop.example.org", "bob").record_delivered(["1"])
    raw = sqlite3.connect(store_path)
    raw.execute(f"PRAGMA journal_mode = {journal}")
    raw.close()
    real = sqlite3.connect

    def without_locking(database: str, *args: object, **kwargs: object) -> sqlite3.Connection:
        return real(f"{database}&vfs=unix-none", *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr("fetchd.state.database.sqlite3.connect", without_locking)
    error = _assert_refused(store_path)
    if journal == "delete":
        assert "the filesystem refused WAL mode (got 'delete')" in str(error)
    monkeypatch.undo()
    with UIDStore.open(store_path) as store:  # untouched: fine where WAL works
        assert store.account("pop.example.org", "bob").delivered() == {"1"}
