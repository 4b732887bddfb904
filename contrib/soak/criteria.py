"""The soak run's pass criteria, as pure functions over what it recorded (no I/O).

- Resources: the least-squares slope, per hour, of RSS and of open descriptors over the samples
  taken after the warm-up; each must stay at or under its threshold.
- Delivery: every injected Message-ID arrived at the MTA exactly once, nothing arrived that
  was not injected, and no mailbox still holds mail at the end.
- Errors: every line the daemon logged at error level falls in the window of an injected fault
  (from its start to ``grace`` seconds after its end) and matches what that fault causes.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

# What each injected fault may make the daemon log at error level. A line that matches but
# falls outside every window of its fault is unexplained, and so is one that matches none.
FAULT_PATTERNS: Mapping[str, re.Pattern[str]] = {
    # Dovecot stopped: refused connections, sessions cut in the middle, IDLE dropped.
    "dovecot": re.compile(
        r"connection refused|connection reset|connection lost|closed the connection|"
        r"connection broke|connection is closed|server closed|unexpected end|end of file|EOF|"
        r"broken pipe|timed out|socket error|disconnected|shutting down|server shutting|BYE",
        re.IGNORECASE,
    ),
    # The MTA answering 4xx: the message stays on the server for the next poll.
    "mta": re.compile(r"\b4\d\d\b|soak: injected MTA fault|temporar", re.IGNORECASE),
}


@dataclass(frozen=True)
class Fault:
    kind: str  # a key of FAULT_PATTERNS
    start: float
    end: float


@dataclass(frozen=True)
class LogLine:
    at: float
    text: str


def slope_per_hour(samples: Sequence[tuple[float, float]]) -> float:
    """The least-squares slope of (seconds, value) pairs, in value units per hour; 0.0 for
    fewer than two distinct times."""
    if len(samples) < 2:
        return 0.0
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    spread = sum((t - mean_t) ** 2 for t, _ in samples)
    if spread == 0:
        return 0.0
    return sum((t - mean_t) * (v - mean_v) for t, v in samples) / spread * 3600


@dataclass(frozen=True)
class Delivery:
    injected: int
    delivered: int  # distinct injected Message-IDs that arrived
    missing: tuple[str, ...]
    duplicated: Mapping[str, int]  # Message-ID -> times it arrived (2 or more)
    unexpected: tuple[str, ...]  # arrived, never injected (or without a Message-ID)
    left_on_server: int

    @property
    def exactly_once(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected or self.left_on_server)


def check_delivery(
    injected: Iterable[str], arrived: Iterable[str], left_on_server: int
) -> Delivery:
    wanted = set(injected)
    counts = Counter(arrived)
    return Delivery(
        injected=len(wanted),
        delivered=sum(1 for mid in wanted if counts[mid]),
        missing=tuple(sorted(mid for mid in wanted if not counts[mid])),
        duplicated={mid: n for mid, n in sorted(counts.items()) if n > 1},
        unexpected=tuple(sorted(mid for mid in counts if mid not in wanted)),
        left_on_server=left_on_server,
    )


@dataclass(frozen=True)
class Errors:
    explained: Mapping[str, int]  # fault kind -> error lines it explains
    unexplained: tuple[LogLine, ...]


def explain_errors(lines: Iterable[LogLine], faults: Iterable[Fault], grace: float) -> Errors:
    faults = list(faults)
    explained: Counter[str] = Counter()
    unexplained = []
    for line in lines:
        cause = next(
            (
                f.kind
                for f in faults
                if f.start - 1.0 <= line.at <= f.end + grace
                and FAULT_PATTERNS[f.kind].search(line.text)
            ),
            None,
        )
        if cause is None:
            unexplained.append(line)
        else:
            explained[cause] += 1
    return Errors(dict(explained), tuple(unexplained))


@dataclass(frozen=True)
class Verdict:
    checks: Mapping[str, bool] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return bool(self.checks) and all(self.checks.values())


def verdict(
    *,
    rss_slope: float,
    rss_max: float,
    fd_slope: float,
    fd_max: float,
    samples_after_warmup: int,
    delivery: Delivery,
    errors: Errors,
    daemon_exit: int | None,
    status_failures: int,
    soak_errors: int = 0,
) -> Verdict:
    return Verdict(
        {
            "enough samples after the warm-up (3 or more)": samples_after_warmup >= 3,
            f"RSS slope {rss_slope:+.2f} MiB/h <= {rss_max:g}": rss_slope <= rss_max,
            f"descriptor slope {fd_slope:+.2f}/h <= {fd_max:g}": fd_slope <= fd_max,
            "every injected message delivered exactly once": delivery.exactly_once,
            "no unexplained error line": not errors.unexplained,
            "every --status answered": status_failures == 0,
            "the soak's own fault and command loops ran without error": soak_errors == 0,
            f"daemon ran to the end and exited 0 on --quit (exit {daemon_exit})": daemon_exit == 0,
        }
    )
