"""The benchmark's stdlib references: what a minimal POP3 client costs, with no care for safety.

    python references.py discard HOST PORT USER PASSWORD
    python references.py relay   HOST PORT USER PASSWORD SMTPHOST SMTPPORT
    python references.py imap-discard HOST PORT USER PASSWORD
    python references.py imap-relay   HOST PORT USER PASSWORD SMTPHOST SMTPPORT

``discard`` reads every message (RETR) and throws it away: the floor for any POP3 retriever.
``relay`` is the naive sequential poplib-to-smtplib relay: RETR, send over SMTP, DELE, one message
at a time, no UID store, no durability. fetchd must be no slower than ``relay``.
Both delete nothing in ``discard`` mode and everything in ``relay`` mode.
"""

from __future__ import annotations

import imaplib
import poplib
import smtplib
import sys


def _login(host: str, port: int, user: str, password: str) -> poplib.POP3:
    pop = poplib.POP3(host, port, timeout=300)
    pop.user(user)
    pop.pass_(password)
    return pop


def discard(host: str, port: int, user: str, password: str) -> int:
    pop = _login(host, port, user, password)
    count, _ = pop.stat()
    for number in range(1, count + 1):
        pop.retr(number)
    pop.quit()
    return count


def relay(host: str, port: int, user: str, password: str, smtphost: str, smtpport: int) -> int:
    pop = _login(host, port, user, password)
    smtp = smtplib.SMTP(smtphost, smtpport)
    count, _ = pop.stat()
    for number in range(1, count + 1):
        _, lines, _ = pop.retr(number)
        smtp.sendmail("bench@localhost", [f"{user}@localhost"], b"\r\n".join(lines) + b"\r\n")
        pop.dele(number)
    smtp.quit()
    pop.quit()
    return count


def _imap(host: str, port: int, user: str, password: str) -> imaplib.IMAP4:
    imap = imaplib.IMAP4(host, port, timeout=300)
    imap.login(user, password)
    imap.select("INBOX")
    return imap


def imap_discard(host: str, port: int, user: str, password: str) -> int:
    imap = _imap(host, port, user, password)
    uids = imap.uid("SEARCH", "ALL")[1][0].split()
    for uid in uids:
        imap.uid("FETCH", uid, "(BODY.PEEK[])")
    imap.logout()
    return len(uids)


def imap_relay(host: str, port: int, user: str, password: str, smtphost: str, smtpport: int) -> int:
    imap = _imap(host, port, user, password)
    smtp = smtplib.SMTP(smtphost, smtpport)
    uids = imap.uid("SEARCH", "ALL")[1][0].split()
    for uid in uids:
        data = imap.uid("FETCH", uid, "(BODY.PEEK[])")[1][0]
        assert isinstance(data, tuple)
        smtp.sendmail("bench@localhost", [f"{user}@localhost"], data[1])
        imap.uid("STORE", uid, "+FLAGS.SILENT", "(\\Deleted)")
    imap.expunge()
    smtp.quit()
    imap.logout()
    return len(uids)


if __name__ == "__main__":
    mode, host, port, user, password, *rest = sys.argv[1:]
    if mode == "discard":
        n = discard(host, int(port), user, password)
    elif mode == "relay":
        n = relay(host, int(port), user, password, rest[0], int(rest[1]))
    elif mode == "imap-discard":
        n = imap_discard(host, int(port), user, password)
    else:
        n = imap_relay(host, int(port), user, password, rest[0], int(rest[1]))
    print(f"{mode}: {n} messages")
