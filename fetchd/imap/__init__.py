"""IMAP retrieval: ``parse`` (pure response reader and parser), ``command`` (pure argument
encoding), ``client`` (the asyncio session over aioimaplib's protocol: TLS, login, commands) and
``source`` (``IMAPSource``, one folder as a ``MailSource`` for the poll engine)."""
