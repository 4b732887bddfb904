"""Credentials: SASL mechanisms, OAuth2 (``oauth2/``: token store, refresh, login flows) and
the password prompt."""
