"""The daemon's opt-in Prometheus endpoint (``--metrics ADDRESS``; extra ``metrics``).

- It binds only where told: ``PORT`` alone means 127.0.0.1; a host is an IP literal or
  ``localhost``, never a name to resolve. A non-loopback address is served only because the
  command line said so, and is warned about: anyone who reaches it reads the figures.
- Labels hold no account, user, server or DSN: only ``worker`` (host name and pid, one per
  process), ``outcome`` (fetchmail's exit code as a word) and ``stage`` (where a failed poll
  stopped: ``polling``, ``dns``, ``password``...). So a scrape can say nothing secret, and
  thousands of accounts do not make thousands of series.
- prometheus-client (the Prometheus project's own Python client) renders the exposition
  format and serves it from a thread of its own; the event loop only increments counters.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import TYPE_CHECKING

import structlog

from fetchd.errors import ConfigError

if TYPE_CHECKING:
    import threading
    from wsgiref.simple_server import WSGIServer

log = structlog.get_logger("fetchd.daemon")

DEFAULT_HOST = "127.0.0.1"
# Poll durations: from a no-mail poll of a near server to a big mailbox behind a slow link.
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 900.0)


@dataclass(frozen=True, slots=True)
class MetricsAddress:
    host: str
    port: int

    @property
    def loopback(self) -> bool:
        return ipaddress.ip_address(self.host).is_loopback

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


def parse_metrics_address(text: str) -> MetricsAddress:
    """``PORT``, ``HOST:PORT`` or ``[IPV6]:PORT``; HOST an IP literal or ``localhost``."""
    host, sep, port_text = text.rpartition(":")
    if not sep:
        host = DEFAULT_HOST
    elif host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        raise ConfigError(f"--metrics {text!r}: write an IPv6 address as [ADDRESS]:PORT")
    if host == "localhost":
        host = DEFAULT_HOST
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        raise ConfigError(
            f"--metrics {text!r}: the host must be an IP address or localhost (no name is "
            "looked up: the endpoint binds exactly where told)"
        ) from None
    if not port_text.isdigit() or not 0 <= int(port_text) <= 65535:
        raise ConfigError(f"--metrics {text!r}: the port must be a number from 0 to 65535")
    return MetricsAddress(str(address), int(port_text))


class PollMetrics:
    """The counters of one daemon process, in a registry of its own (no module globals)."""

    def __init__(self, worker: str) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
        from prometheus_client.process_collector import ProcessCollector

        self.worker = worker
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # RSS, CPU, open files of this worker
        labels = ["worker"]
        self._polls = Counter(
            "fetchd_polls", "Polls of an account, by outcome", [*labels, "outcome"],
            registry=self.registry,
        )  # fmt: skip
        self._messages = Counter(
            "fetchd_messages", "Messages delivered", labels, registry=self.registry
        )
        self._bytes = Counter(
            "fetchd_bytes", "Octets of the messages delivered", labels, registry=self.registry
        )
        self._errors = Counter(
            "fetchd_errors", "Polls that failed, by the stage they stopped in",
            [*labels, "stage"], registry=self.registry,
        )  # fmt: skip
        self._duration = Histogram(
            "fetchd_poll_duration_seconds", "How long a poll of an account took", labels,
            buckets=DURATION_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self._takeovers = Counter(
            "fetchd_lease_takeovers",
            "Fleet rows taken over from a worker whose claim ended unreleased",
            labels,
            registry=self.registry,
        )
        self._running = Gauge(
            "fetchd_polls_in_progress", "Polls under way now", labels, registry=self.registry
        )
        self._accounts = Gauge(
            "fetchd_accounts", "Accounts this worker knows (rc entries and fleet rows)", labels,
            registry=self.registry,
        )  # fmt: skip
        # Every series exists from the start at 0, so a rate() sees the first increment.
        for metric in (self._messages, self._bytes, self._takeovers, self._running):
            metric.labels(worker)
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self.bound: MetricsAddress | None = None

    def poll_started(self) -> None:
        self._running.labels(self.worker).inc()

    def poll_finished(
        self, outcome: str, messages: int, octets: int, seconds: float, stage: str | None
    ) -> None:
        worker = self.worker
        self._running.labels(worker).dec()
        self._polls.labels(worker, outcome).inc()
        self._messages.labels(worker).inc(messages)
        self._bytes.labels(worker).inc(octets)
        self._duration.labels(worker).observe(seconds)
        if stage is not None:
            self._errors.labels(worker, stage).inc()

    def takeover(self) -> None:
        self._takeovers.labels(self.worker).inc()

    def accounts(self, count: int) -> None:
        self._accounts.labels(self.worker).set(count)

    def render(self) -> bytes:
        from prometheus_client import generate_latest

        return generate_latest(self.registry)

    def serve(self, address: MetricsAddress) -> MetricsAddress:
        """Listen at ``address`` (port 0: any free one) in a thread; where it listens."""
        from prometheus_client import start_http_server

        try:
            server, thread = start_http_server(
                address.port, addr=address.host, registry=self.registry
            )
        except OSError as exc:
            raise ConfigError(
                f"--metrics {address}: cannot listen there: {exc.strerror or exc}"
            ) from None
        self._server, self._thread = server, thread
        self.bound = MetricsAddress(address.host, int(server.server_address[1]))
        return self.bound

    def close(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None


def start_metrics(text: str, worker: str) -> PollMetrics:
    """The endpoint ``--metrics text`` asks for, listening; a warning if it is not loopback."""
    try:
        import prometheus_client  # noqa: F401
    except ImportError:
        raise ConfigError(
            "--metrics needs prometheus-client: install fetchd with its metrics extra "
            "(pip install 'fetchd[metrics]')"
        ) from None
    metrics = PollMetrics(worker)
    bound = metrics.serve(parse_metrics_address(text))
    if not bound.loopback:
        log.warning(
            "metrics.exposed",
            text=f"metrics endpoint on {bound}, not a loopback address: anyone who can reach "
            "it reads this worker's figures (no names or passwords are in them)",
        )
    log.info("metrics.listening", text=f"Prometheus metrics on http://{bound}/metrics")
    return metrics


__all__ = ["MetricsAddress", "PollMetrics", "parse_metrics_address", "start_metrics"]
