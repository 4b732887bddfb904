"""The suite's private PostgreSQL: a real server, reachable on its socket only."""

from __future__ import annotations

import psycopg

from tests.support.postfixadmin import insert_row
from tests.support.postgres import Postgres


def test_cluster_answers_on_its_socket_and_listens_on_no_tcp_port(
    postgres_server: Postgres,
) -> None:
    """The cluster answers SQL over its Unix socket and has TCP switched off."""
    with psycopg.connect(postgres_server.dsn(), autocommit=True) as conn:
        row = conn.execute(
            "SELECT version(), current_setting('listen_addresses'), inet_server_addr()"
        ).fetchone()
    assert row is not None
    assert row[0].startswith("PostgreSQL 15")
    assert row[1] == ""  # no TCP listener at all
    assert row[2] is None  # this session came over the Unix socket
    assert (postgres_server.socket_dir / ".s.PGSQL.5432").is_socket()


def test_each_database_has_the_postfixadmin_table_and_its_checks(postfix_db: str) -> None:
    """A fresh database holds PostfixAdmin's fetchmail table, which refuses a protocol
    PostfixAdmin does not know (its CHECK constraint), as the real one does."""
    with psycopg.connect(postfix_db, autocommit=True) as conn:
        row_id = insert_row(conn, mailbox="joe@example.org", src_user="u", src_password="p")
        stored = conn.execute(
            "SELECT src_password, active, poll_time FROM fetchmail WHERE id = %s", [row_id]
        ).fetchone()
        assert stored == ("cA==", True, 10)
        try:
            insert_row(conn, mailbox="x", protocol="SMTP")
        except psycopg.errors.CheckViolation:
            pass
        else:
            raise AssertionError("the protocol CHECK constraint is missing")
