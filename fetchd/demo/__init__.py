"""``fetchd --demo``: a real poll against a throwaway POP3 server and SMTP sink on loopback."""
