"""Fixtures of the fleet tests: a private PostgreSQL cluster for the session and, per test, a
fresh database holding PostfixAdmin's ``fetchmail`` table."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from tests.support.postfixadmin import FETCHMAIL_TABLE
from tests.support.postgres import INITDB, PG_CTL, Postgres


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Postgres]:
    if not (INITDB.exists() and PG_CTL.exists()):
        if os.environ.get("CI"):
            pytest.fail(f"{INITDB} is missing under CI (.ci/run installs Debian's postgresql)")
        pytest.skip("PostgreSQL is not installed (apt-get install postgresql)")
    server = Postgres()
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture
def postfix_db(postgres_server: Postgres) -> str:
    """The DSN of a new database with PostfixAdmin's (empty) fetchmail table."""
    import psycopg

    dsn = postgres_server.dsn(postgres_server.create_database("pfa"))
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(FETCHMAIL_TABLE)
    return dsn
