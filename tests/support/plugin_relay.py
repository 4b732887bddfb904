"""A plugin command for the tests, as ``ssh -W %h:%p`` or ``nc %h %p`` would be: it connects to
HOST PORT and relays its standard input and output to that connection until either side ends.

It first writes its pid and arguments to the file named by $RELAY_LOG, one line per run, so a
test sees how fetchd ran it.
"""

from __future__ import annotations

import os
import selectors
import socket
import sys


def main() -> None:
    host, port = sys.argv[1], int(sys.argv[2])
    with open(os.environ["RELAY_LOG"], "a") as log:
        log.write(f"{os.getpid()} {' '.join(sys.argv[1:])}\n")
    remote = socket.create_connection((host, port))
    local = socket.socket(fileno=os.dup(0))  # stdin and stdout: the same socket from fetchd
    selector = selectors.DefaultSelector()
    selector.register(local, selectors.EVENT_READ, remote)
    selector.register(remote, selectors.EVENT_READ, local)
    while True:
        for key, _ in selector.select():
            data = key.fileobj.recv(65536)  # type: ignore[union-attr]
            if not data:
                return  # one side ended: so does the relay, as nc does
            key.data.sendall(data)


if __name__ == "__main__":
    main()
