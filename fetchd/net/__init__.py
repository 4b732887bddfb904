"""The network around a mail server connection: TLS policy, plugin/plugout connectors,
TCP keepalive, this host's name, and interface/monitor checks."""
