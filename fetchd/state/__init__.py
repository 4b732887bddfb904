"""Durable state: the UID store (what was delivered), fetchmail's .fetchids import, account locks.

- ``store``: ``UIDStore`` / ``AccountState`` on SQLite; the delivery invariant's "record durably"
- ``database``: the SQLite file itself: atomic creation, trust checks, schema, migrations
- ``fetchids``: pure parser of fetchmail's ``.fetchids``
- ``lock``: ``AccountLock``, one flock per account so two fetchd never poll one mailbox
- ``paths``: the XDG state directory, private (0700/0600) creation
"""

from fetchd.state.key import INBOX, AccountKey
from fetchd.state.lock import AccountLock
from fetchd.state.paths import default_state_dir, default_store_path
from fetchd.state.store import AccountState, FetchidsImport, UIDStore

__all__ = [
    "INBOX",
    "AccountKey",
    "AccountLock",
    "AccountState",
    "FetchidsImport",
    "UIDStore",
    "default_state_dir",
    "default_store_path",
]
