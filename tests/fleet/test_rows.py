"""PostfixAdmin's fetchmail table, read from a real PostgreSQL into fetchd's frozen accounts."""

from __future__ import annotations

import dataclasses

import psycopg
import pytest

from fetchd.config import ParseEnvironment, parse
from fetchd.config.fragments import Defaults, parse_defaults
from fetchd.errors import ConfigError, FleetRowError
from fetchd.fleet.database import FleetDatabase
from fetchd.fleet.dsn import check_dsn, shown_dsn
from fetchd.fleet.rows import FleetAccount, accounts_from_rows
from tests.support.postfixadmin import insert_row

ENV = ParseEnvironment("fetchd", "/home/fetchd", None, "/etc/fetchd", "mx.example.org")
CYCLE = 60


NO_DEFAULTS = Defaults()


async def read(
    dsn: str, defaults: Defaults = NO_DEFAULTS
) -> tuple[list[FleetAccount], list[FleetRowError]]:
    database = FleetDatabase(dsn)
    try:
        rows = await database.active_rows()
    finally:
        await database.close()
    return accounts_from_rows(rows, defaults, ENV, CYCLE)


async def test_a_row_is_the_entry_fetchmail_pl_would_write(postfix_db: str) -> None:
    """Every column lands where the rc parser puts the same words fetchmail.pl writes for the
    row: the account equals the parse of that entry (password base64-decoded, flags, folder,
    mda, TLS settings, extra_options), with poll_time as the interval in cycles."""
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        row_id = insert_row(
            conn,
            mailbox="joe@example.org",
            src_server="pop.remote.example",
            src_auth="cram-md5",
            src_user="joe.remote",
            src_password="pä$$ word",
            src_folder="Archive",
            poll_time=5,
            fetchall=True,
            keep=True,
            protocol="IMAP",
            usessl=True,
            sslcertck=True,
            sslcertpath="/etc/ssl/certs",
            sslfingerprint="AB:CD",
            mda="/usr/bin/procmail -d %T",
            extra_options="limit 2000 no rewrite folder Sent",
        )
    accounts, errors = await read(postfix_db)
    assert errors == []
    [account] = accounts
    assert (account.row_id, account.poll_time, account.label) == (
        row_id,
        5,
        "joe.remote@pop.remote.example",
    )
    written = parse(
        "poll pop.remote.example with proto IMAP auth cram-md5 interval 5\n"
        "  user 'joe.remote' there with password 'pä$$ word' folder 'Archive'"
        " mda '/usr/bin/procmail -d %T' is 'joe@example.org' here keep fetchall ssl sslcertck"
        ' sslcertpath /etc/ssl/certs sslfingerprint "AB:CD" limit 2000 no rewrite folder Sent\n',
        "rc",
        ENV,
    ).servers[0]
    assert account.server == dataclasses.replace(
        written, line=row_id, users=(dataclasses.replace(written.users[0], line=row_id),)
    )
    user = account.server.users[0]
    assert user.password == "pä$$ word"
    assert user.mailboxes == ("Archive", "Sent")
    assert (user.limit, user.rewrite, user.keep, user.ssl) == (2000, False, True, True)


async def test_only_active_rows_and_the_defaults_entry_applies(postfix_db: str) -> None:
    """Inactive rows are not accounts; the rc file's defaults entry fills what a row leaves
    unset (smtphost, port, sslproto, keep) and never what the row says."""
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        on = insert_row(conn, mailbox="a@x", src_server="s1", src_user="a", src_password="pa")
        insert_row(
            conn, mailbox="b@x", src_server="s2", src_user="b", src_password="pb", active=False
        )
        own = insert_row(
            conn, mailbox="c@x", src_server="s3", src_user="c", src_password="pc", protocol="IMAP"
        )
    defaults = parse_defaults(
        "set postmaster fleet-admin\n"
        "defaults proto pop3 port 1110 smtphost mx.local/2525 sslproto '' keep\n",
        "/etc/fetchd/fleetrc",
        ENV,
    )
    accounts, errors = await read(postfix_db, defaults)
    assert errors == []
    assert [a.row_id for a in accounts] == [on, own]
    first, second = (a.server for a in accounts)
    assert (first.protocol, first.service, first.users[0].smtphunt) == (
        "POP3",
        "1110",
        ("mx.local/2525",),
    )
    assert first.users[0].sslproto == "" and first.users[0].keep is True
    assert second.protocol == "IMAP"  # the row's protocol, not the defaults entry's


async def test_a_bad_row_is_named_by_id_and_the_others_are_polled(postfix_db: str) -> None:
    """Rows with a server option, local names, a command hook, an unknown word in
    extra_options, or a password that is not base64 each give a FleetRowError naming the row
    (and the column); the good rows are still accounts, and no password is in any message."""
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        good = insert_row(conn, mailbox="g@x", src_server="s", src_user="g", src_password="pg")
        bad_extra = {
            insert_row(conn, mailbox="m@x", src_server="s", src_user=f"u{n}",
                       src_password="Secret-Row-Pw", extra_options=extra): want
            for n, (extra, want) in enumerate(
                [
                    ("port 110", "extra_options line 1, column 1"),
                    ("is bob here", "local names are not set here"),
                    ("preconnect 'rm -rf ~'", "'preconnect' is refused here"),
                    ("password 'x'", "'password' is refused here"),
                    ("limit 10 bogus", "extra_options line 1, column 10"),
                    ("no rewrite\npoll other.example", "line 2, column 1"),
                ]
            )
        }  # fmt: skip
        unencoded = insert_row(conn, mailbox="n@x", src_server="s", src_user="n")
        conn.execute(
            "UPDATE fetchmail SET src_password = 'Secret-Row-Pw!' WHERE id = %s", [unencoded]
        )
        pop2 = insert_row(conn, mailbox="p@x", src_server="s", src_user="p", protocol="POP2")
    accounts, errors = await read(postfix_db)
    assert [a.row_id for a in accounts] == [good]
    by_row = {error.row_id: str(error) for error in errors}
    assert set(by_row) == {*bad_extra, unencoded, pop2}
    for row_id, want in bad_extra.items():
        assert by_row[row_id].startswith(f"fetchmail row {row_id}: "), by_row[row_id]
        assert want in by_row[row_id], by_row[row_id]
    assert "src_password is not base64" in by_row[unencoded]
    assert "protocol 'POP2' is not polled" in by_row[pop2]
    assert all("Secret-Row-Pw" not in text for text in by_row.values())
    assert all(isinstance(e, ConfigError) for e in errors)


def test_a_dsn_with_a_password_is_refused_and_never_shown() -> None:
    """A DSN on the command line with a password is refused without repeating it; what logs
    and --status show of a DSN has no password."""
    for dsn in (
        "postgresql://fetchd:Hunter-22@db.example/postfix",
        "host=/run/postgresql dbname=postfix password=Hunter-22",
    ):
        with pytest.raises(ConfigError) as refused:
            check_dsn(dsn)
        assert "Hunter-22" not in str(refused.value)
        assert "Hunter-22" not in shown_dsn(dsn)
    fine = "postgresql://fetchd@/postfix?host=/run/postgresql"
    assert check_dsn(fine) == fine
    assert shown_dsn(fine) == "dbname=postfix host=/run/postgresql user=fetchd"


async def test_an_unreachable_database_is_a_typed_error_without_secrets(tmp_path: object) -> None:
    """No server on the socket: FleetDatabaseError (transient) naming the DSN's parts."""
    from fetchd.errors import FleetDatabaseError

    database = FleetDatabase(f"postgresql://nobody@/none?host={tmp_path}&connect_timeout=2")
    with pytest.raises(FleetDatabaseError) as failed:
        await database.active_rows()
    assert failed.value.transient
    assert "cannot connect" in str(failed.value) and "dbname=none" in str(failed.value)
