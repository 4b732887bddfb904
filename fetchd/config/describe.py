"""``-V``: every account's settings in plain sentences, in the words fetchmail's -V uses: pure."""

from __future__ import annotations

from fetchd.auth.sasl import KERBEROS_AUTH, service_principal
from fetchd.config.lexer import OAUTH2_AUTH_WORDS
from fetchd.config.model import Config, Server, User


def _on(flag: bool) -> str:
    return "on" if flag else "off"


def describe(config: Config) -> str:
    g = config.globals
    lines = [f"Taking options from command line and {config.filename}"]
    if not config.servers:  # fetchmail says only this, about a file with no entries or none
        lines.append(f"No mailservers set up -- perhaps {config.filename} is missing?")
        return "\n".join(lines) + "\n"
    if g.poll_interval:
        lines.append(f"Poll interval is {g.poll_interval} seconds")
    else:
        lines.append("No poll interval: fetchd polls once and exits.")
    if g.logfile:
        lines.append(f"Logfile is {g.logfile}")
    if g.idfile:
        lines.append(f"Idfile is {g.idfile} (fetchmail's UIDs, imported once)")
    lines.append(f"fetchd will forward misaddressed multidrop messages to {g.postmaster}.")
    # As fetchmail's -V: only what differs from the default (bouncemail and softbounce on).
    if not g.bouncemail:
        lines.append("fetchd will direct error mail to the postmaster.")
    if not g.softbounce:
        lines.append("fetchd will treat permanent errors as permanent (drop messages).")
    for server in config.servers:
        for user in server.users:
            lines.extend(_account(server, user))
    return "\n".join(lines) + "\n"


def _kerberos(s: Server) -> list[str]:
    """Which service principal Kerberos asks a ticket for (the rc file's name stands for the
    true name here: -V resolves nothing)."""
    if s.auth not in KERBEROS_AUTH:
        return []
    protocol = "POP3" if s.protocol in ("POP3", "APOP") else "IMAP"
    principal = service_principal(protocol, s.host, s.principal)
    return [f"  Kerberos (SASL GSSAPI) with service principal {principal}."]


def _account(s: Server, u: User) -> list[str]:
    out = [f"Options for retrieving from {u.remote}@{s.pollname}:"]
    if not s.active:
        out.append("  This host will be queried only when named on the command line (skip).")
    if s.interval:
        out.append(f"  Poll of this server will occur every {s.interval} intervals.")
    out.append(f"  True name of server is {s.host}.")
    service = f" (using service {s.service})" if s.service else ""
    out.append(f"  Protocol is {s.protocol}{service}.")
    out.append(
        "  All available authentication methods will be tried."
        if s.auth == "any"
        else f"  {s.auth} authentication will be forced."
    )
    out.extend(_kerberos(s))
    if u.ssl:
        out.append("  SSL encrypted sessions enabled.")
    elif u.sslproto == "":
        out.append("  TLS is turned off (sslproto ''): passwords may cross the network in clear.")
    else:
        out.append("  STARTTLS will be required before a password is sent to a remote host.")
    if u.sslproto:
        out.append(f"  SSL protocol: {u.sslproto}.")
    out.append(f"  SSL server certificate checking {'enabled' if u.sslcertck else 'disabled'}.")
    if u.sslcertfile:
        out.append(f"  SSL trusted certificate file: {u.sslcertfile}")
    if u.sslcertpath:
        out.append(f"  SSL trusted certificate directory: {u.sslcertpath}")
    if u.sslfingerprint:
        out.append(f"  SSL key fingerprint (checked against the server key): {u.sslfingerprint}")
    if s.timeout > 0:  # fetchmail leaves the line out for a negative `timeout`
        out.append(f"  Server nonresponse timeout is {s.timeout} seconds.")
    if u.mailboxes:
        out.append(f"  Selected mailboxes are: {' '.join(u.mailboxes)}")
    else:
        out.append("  Default mailbox selected.")
    out += [
        "  All messages will be retrieved (--all on)."
        if u.fetchall
        else "  Only new messages will be retrieved (--all off).",
        f"  Fetched messages {'will' if u.keep else 'will not'} be kept on the server "
        f"(--keep {_on(u.keep)}).",
        f"  Old messages {'will' if u.flush else 'will not'} be flushed before message "
        f"retrieval (--flush {_on(u.flush)}).",
        f"  Oversized messages {'will' if u.limitflush else 'will not'} be flushed before "
        f"message retrieval (--limitflush {_on(u.limitflush)}).",
    ]
    if u.limit:
        out.append(f"  Message size limit is {u.limit} octets (--limit {u.limit}).")
    else:
        out.append("  No message size limit (--limit 0).")
    if u.fetchlimit:
        out.append(f"  Received-message limit is {u.fetchlimit} (--fetchlimit {u.fetchlimit}).")
    else:
        out.append("  No received-message limit (--fetchlimit 0).")
    if u.expunge:
        out.append(
            f"  Deletion interval between expunges forced to {u.expunge} (--expunge {u.expunge})."
        )
    if u.mda:
        out.append(f'  Messages will be delivered with "{u.mda}".')
    else:
        out.append(
            f"  Messages will be {'LMTP' if u.lmtp else 'SMTP'}-forwarded to: "
            f"{' '.join(u.smtphunt)}"
        )
    if u.smtpaddress:
        out.append(f"  Host part of MAIL FROM line will be {u.smtpaddress}")
    if u.antispam:
        out.append(
            f"  Listener SMTP reponses {' '.join(map(str, u.antispam))} will be treated as spam."
        )
    if u.preconnect:
        out.append(f'  Server connection will be brought up with "{u.preconnect}".')
    if u.postconnect:
        out.append(f'  Server connection will be taken down with "{u.postconnect}".')
    if s.interface:
        out.append(f"  Connection must be through interface {s.interface}.")
    if s.monitor:
        out.append(f"  Polling loop will monitor {s.monitor}.")
    if s.plugin:
        out.append(
            f"  Server connections will be made via plugin {s.plugin} (--plugin {s.plugin})."
        )
    if s.plugout:
        out.append(
            f"  Listener connections will be made via plugout {s.plugout} (--plugout {s.plugout})."
        )
    if s.tracepolls:
        out.append("  Poll trace information will be added to the Received header.")
    if s.badheader:
        out.append("  Messages with bad headers will be passed on.")
    if u.multidrop:
        out.append(f"  Multi-drop mode: {len(u.localnames)} local name(s) recognized.")
    else:
        out.append("  Single-drop mode: 1 local name recognized.")
    names = ", ".join(n if isinstance(n, str) else f"{n[0]} -> {n[1]}" for n in u.localnames)
    out.append(f"  Local name(s): {names}{' and *' if u.wildcard else ''}.")
    if s.auth in KERBEROS_AUTH:
        source = "none: Kerberos sends no password (the ticket in the credential cache logs in)"
    elif u.password:
        source = "given in the rc file"
    elif u.passwordfile:
        source = f"the first line of {u.passwordfile}, read at each login"
    elif u.passwordfd is not None:
        source = f"read once from file descriptor {u.passwordfd}"
    elif s.auth.lower() in OAUTH2_AUTH_WORDS:
        source = "from ~/.netrc (never asked for)"
    else:
        source = "from ~/.netrc, else asked for"
    if s.auth.lower() in OAUTH2_AUTH_WORDS:
        source = "the OAuth2 token that fetchd --oauth2-login stored, if any, else " + source
    out.append("  Password: " + source)
    return out
