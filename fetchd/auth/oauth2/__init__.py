"""OAuth2 for mail logins: the token store, refreshing, and (next) the login flows."""
