"""Credentials: SASL mechanisms now; OAuth2 and fetchmail's password sources next."""
