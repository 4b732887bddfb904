"""The systemd user unit: one text for ``systemd/fetchd.service`` and ``fetchd --systemd-unit``.

The shipped file is this text with ``ExecStart`` at ``%h/.local/bin/fetchd`` (a test keeps the two
identical); ``fetchd --systemd-unit`` prints it with the absolute path of the fetchd being run, so
a virtual environment or a pipx install needs no editing.
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

SHIPPED_PROGRAM = "%h/.local/bin/fetchd"
DEFAULT_INTERVAL = 300

_TEMPLATE = """\
# fetchd as a systemd user service:
#   mkdir -p ~/.config/systemd/user
#   fetchd --systemd-unit > ~/.config/systemd/user/fetchd.service
#   systemctl --user enable --now fetchd
# `fetchd --systemd-unit` writes the path of the fetchd you ran into ExecStart; this copy in the
# source tree expects ~/.local/bin/fetchd (pip install --user, pipx).
# `systemctl --user status fetchd` shows what the daemon last did; `fetchd --status` more.
[Unit]
Description=fetchd mail retriever (fetchmail-compatible)
After=network-online.target
Wants=network-online.target

[Service]
# fetchd says READY once its control socket listens, STATUS after every poll, STOPPING when
# asked to stop, and pings the watchdog from its event loop: a hung daemon is restarted.
Type=notify
NotifyAccess=main
# The rc file's `set daemon N` sets the interval; --daemon-default only when it has none
# (`-d N` here would override the rc file, as fetchmail's -d does).
ExecStart={program} --nodetach --daemon-default {interval}
ExecReload=/bin/kill -HUP $MAINPID
WatchdogSec=120
# Stopping at any moment is safe: a message leaves the server only after its delivery is
# recorded, so an interrupted poll costs at most one duplicate, never a lost message.
KillSignal=SIGTERM
TimeoutStopSec=30
Restart=on-failure
RestartSec=60
# 8: another fetchd daemon already runs for this user; 5: the rc file is broken. Restarting
# cannot help either (fix the file, then `systemctl --user restart fetchd`).
RestartPreventExitStatus=5 8
UMask=0077
# No sandboxing by default, because it would stop the common MDAs. In a user unit every one of
# the settings below implies NoNewPrivileges=yes (systemd.exec(5)), under which a set-uid or
# set-gid program runs without its privileges: Debian's procmail (set-uid root, set-gid mail)
# then cannot create /var/mail/$USER ("Couldn't create", exit 73), and Postfix's sendmail
# cannot hand mail to the set-gid postdrop. fetchd would keep every message on the server.
# If you deliver over SMTP or LMTP (the default), into a Maildir, or through an MDA that needs
# no privileges, opt in with `systemctl --user edit fetchd` and these lines:
#   [Service]
#   NoNewPrivileges=yes
#   RestrictSUIDSGID=yes
#   LockPersonality=yes
#   RestrictRealtime=yes
#   RestrictNamespaces=yes
#   RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6
#   SystemCallArchitectures=native
#   SystemCallFilter=@system-service

[Install]
WantedBy=default.target
"""


def unit_text(program: str = SHIPPED_PROGRAM, interval: int = DEFAULT_INTERVAL) -> str:
    """The unit, running ``program`` (already in systemd's command-line syntax)."""
    return _TEMPLATE.format(program=program, interval=interval)


def running_program(argv0: str | None = None, executable: str | None = None) -> str:
    """How systemd should start the fetchd being run now, as an ``ExecStart`` command.

    The console script's absolute path (a symlink is kept: pipx's ``~/.local/bin/fetchd``
    survives a reinstall); under ``python -m fetchd``, that interpreter with ``-m fetchd``.
    """
    argv0 = sys.argv[0] if argv0 is None else argv0
    if not argv0 or argv0 in ("-c", "-m") or Path(argv0).name == "__main__.py":
        python = os.path.abspath(executable or sys.executable)
        return f"{_exec_word(python)} -m fetchd"
    if os.sep not in argv0:
        argv0 = shutil.which(argv0) or argv0
    return _exec_word(os.path.abspath(argv0))


def _exec_word(word: str) -> str:
    """One word of an ExecStart line: specifiers (%) and variables ($) escaped, quoted when it
    holds blanks, quotes or backslashes (systemd.service(5), "Command lines")."""
    word = word.replace("%", "%%").replace("$", "$$")
    if any(c.isspace() or c in "\"'\\;" for c in word):
        return '"' + word.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return word
