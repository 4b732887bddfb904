"""Where fetchd keeps its state, and how those places are made private.

The state directory is ``$XDG_STATE_HOME/fetchd`` (``~/.local/state/fetchd`` when the variable is
unset or, as the XDG spec says, not an absolute path). Directories fetchd creates are 0700 and
files 0600: UIDs and account names are nobody else's business.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

STORE_FILENAME = "uids.sqlite3"
PRIVATE_DIR_MODE = 0o700
PRIVATE_FILE_MODE = 0o600


def default_state_dir(environ: Mapping[str, str] | None = None) -> Path:
    """The fetchd state directory, from ``XDG_STATE_HOME`` or the XDG default."""
    env = os.environ if environ is None else environ
    xdg_state_home = env.get("XDG_STATE_HOME", "")
    if xdg_state_home and os.path.isabs(xdg_state_home):
        return Path(xdg_state_home) / "fetchd"
    home = env.get("HOME") or os.path.expanduser("~")
    return Path(home) / ".local" / "state" / "fetchd"


def default_store_path(environ: Mapping[str, str] | None = None) -> Path:
    """The default UID store file inside the state directory."""
    return default_state_dir(environ) / STORE_FILENAME


def make_private_dir(path: Path) -> None:
    """Create ``path`` and missing parents as 0700; an existing directory is left as it is."""
    missing: list[Path] = []
    current = path
    while not current.exists():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for directory in reversed(missing):
        try:
            directory.mkdir(mode=PRIVATE_DIR_MODE)
        except FileExistsError:
            pass  # another process made it between our check and our mkdir
        else:
            # mkdir's mode is filtered by the umask; say exactly what we mean.
            os.chmod(directory, PRIVATE_DIR_MODE)
