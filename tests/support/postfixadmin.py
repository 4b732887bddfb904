"""PostfixAdmin's ``fetchmail`` table as PostfixAdmin 3.x leaves it on PostgreSQL: the table
``upgrade_344_pgsql`` creates, with the columns later upgrades add (``usessl`` 439/479,
``sslcertck``/``sslcertpath``/``sslfingerprint`` 1519, ``domain``/``active``/``created``/
``modified`` 1762), their types as PostfixAdmin's ``{BOOLEAN}``, ``{DATE}``, ``{DATECURRENT}``
expand on PostgreSQL. Written from PostfixAdmin's upgrade.php; what fetchd reads and writes is
only this table, as fetchmail.pl does."""

from __future__ import annotations

import base64
from typing import Any

FETCHMAIL_TABLE = """
CREATE TABLE fetchmail (
    id serial,
    domain varchar(255) DEFAULT '',
    mailbox varchar(255) NOT NULL DEFAULT '',
    src_server varchar(255) NOT NULL DEFAULT '',
    src_auth varchar(15) NOT NULL,
    src_user varchar(255) NOT NULL DEFAULT '',
    src_password varchar(255) NOT NULL DEFAULT '',
    src_folder varchar(255) NOT NULL DEFAULT '',
    poll_time integer NOT NULL DEFAULT 10,
    fetchall boolean NOT NULL DEFAULT false,
    keep boolean NOT NULL DEFAULT false,
    protocol varchar(15) NOT NULL,
    usessl boolean NOT NULL DEFAULT false,
    sslcertck boolean NOT NULL DEFAULT false,
    sslcertpath varchar(255) DEFAULT '',
    sslfingerprint varchar(255) DEFAULT '',
    extra_options text,
    returned_text text,
    mda varchar(255) NOT NULL DEFAULT '',
    date timestamp with time zone DEFAULT now(),
    created timestamp with time zone DEFAULT '2000-01-01 00:00:00+00',
    modified timestamp with time zone DEFAULT now(),
    active boolean NOT NULL DEFAULT false,
    PRIMARY KEY (id),
    CHECK (src_auth IN ('password','kerberos_v5','kerberos','kerberos_v4','gssapi','cram-md5',
                        'otp','ntlm','msn','ssh','any')),
    CHECK (protocol IN ('POP3', 'IMAP', 'POP2', 'ETRN', 'AUTO'))
)
"""


def encode_password(password: str) -> str:
    """How PostfixAdmin stores ``src_password``: base64 of the password."""
    return base64.b64encode(password.encode()).decode()


def insert_row(conn: Any, **columns: Any) -> int:
    """One row as PostfixAdmin's form would add it (``src_password`` given in clear here and
    stored base64); its id. Unnamed columns keep the table's defaults, except ``active``,
    ``src_auth`` and ``protocol``, which the form always sets."""
    values: dict[str, Any] = {"active": True, "src_auth": "password", "protocol": "POP3"}
    values |= columns
    if "src_password" in values:
        values["src_password"] = encode_password(values["src_password"])
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    row = conn.execute(
        f"INSERT INTO fetchmail ({names}) VALUES ({marks}) RETURNING id", list(values.values())
    ).fetchone()
    return int(row[0])
