"""Benchmark: parse and dump a 1,000-entry .fetchmailrc (issue target: under 0.3 s).

    python contrib/bench/rcparse.py [ENTRIES]

Prints the best of five runs of parse alone and of parse + --configdump, in seconds.
"""

from __future__ import annotations

import sys
import time

from fetchd.config import ParseEnvironment, configdump, parse


def rcfile(entries: int) -> str:
    lines = ["set daemon 300", 'set postmaster "postmaster"', "defaults proto pop3 timeout 60"]
    for i in range(entries):
        lines.append(
            f"poll pop{i}.example.org with proto {'imap' if i % 2 else 'pop3'} port {1100 + i}\n"
            f'  user "user{i}" there with password "pw{i}\\t#x" is local{i} here\n'
            f'  options keep fetchall limit {i * 1000} smtphost mx1 "mx2/2525" ssl sslcertck'
            f"  folder INBOX Archive{i}  # comment {i}"
        )
    return "\n".join(lines) + "\n"


def best(fn: object, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    entries = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
    text = rcfile(entries)
    env = ParseEnvironment(login="bench", home="/tmp", rcdir="/tmp", hostname="bench")
    config = parse(text, "bench.rc", env)
    assert len(config.servers) == entries
    parse_only = best(lambda: parse(text, "bench.rc", env))
    with_dump = best(lambda: configdump(parse(text, "bench.rc", env)))
    print(
        f"{entries} entries, {len(text)} bytes: parse {parse_only:.3f} s, "
        f"parse + configdump {with_dump:.3f} s"
    )


if __name__ == "__main__":
    main()
