"""Fleet mode (``fetchd --fleet DSN``): the accounts of a mail panel's own table in PostgreSQL
(PostfixAdmin's ``fetchmail``), polled by the daemon's supervisor, each poll's summary written
back to the row as fetchmail.pl writes it. Needs the ``fleet`` extra (psycopg 3)."""
