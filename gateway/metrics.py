"""What ``/metrics`` tells an operator: calls, upstreams, reloads, sessions, the source, the build.

Every metric is a prometheus-client type in the gateway's own registry (one per
``Gateway``, so several gateways in one process never mix their counts). Labels
are bounded by the configuration, never by clients: ``server`` and ``tool`` are
names the specs define (a call to an unknown tool is not counted per name),
``cluster`` names a backend service, ``code`` is an HTTP status or one of
``error`` / ``timeout`` / ``too_large``, ``outcome`` one of ``OUTCOMES``. No
session id, argument or credential ever becomes a label.

The families (see README "Metrics"):

- ``mcpgw_tool_calls_total{server,tool,outcome}``, ``mcpgw_tool_call_duration_seconds{server,tool}``
- ``mcpgw_upstream_requests_total{cluster,code}``, ``mcpgw_upstream_request_duration_seconds{cluster}``
- ``mcpgw_retries_total{cluster}``, ``mcpgw_instance_ejections_total{cluster}``
- ``mcpgw_config_reloads_total{server,result}`` (``applied`` / ``rejected``),
  ``mcpgw_config_last_reload_success_timestamp_seconds{server}``
- ``mcpgw_sessions{endpoint}``, ``mcpgw_source_connected{source}``, ``mcpgw_build_info{version}``
- the process collector (``process_*``) and the state gauges of ``gateway.app``.

Failed upstream calls are also logged at info, at most one line per cluster per
``FAILURE_LOG_INTERVAL`` seconds (with how many were not logged), so a backend
that cannot be reached is visible at the default log level without a storm.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Final, Literal, Protocol

import structlog
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

import mcpgw
from mcpgw.registry.state import StateChange, StateStore

log = structlog.get_logger("mcpgw.metrics")

Outcome = Literal["ok", "tool_error", "invalid_arguments", "no_instance", "upstream_error", "timeout", "error"]
OUTCOMES: Final[tuple[str, ...]] = (
    "ok", "tool_error", "invalid_arguments", "no_instance", "upstream_error", "timeout", "error",
)
"""``ok``: answered; ``tool_error``: answered with ``isError`` (the backend said no); ``invalid_arguments``:
refused before any backend saw it; ``no_instance``: nothing to send it to; ``upstream_error``: the backend
failed or could not be reached; ``timeout``: no answer in time; ``error``: anything else."""

CALL_BUCKETS: Final = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds: a gateway adds about a millisecond, backends take from milliseconds to a minute."""

FAILURE_LOG_INTERVAL: Final = 10.0
"""Seconds between two info lines about failed upstream calls of one cluster."""


class CallObserver(Protocol):
    """What the call path reports; ``GatewayMetrics`` records it, ``NO_OBSERVER`` drops it."""

    def tool_call(self, server: str, tool: str, outcome: Outcome, seconds: float) -> None: ...

    def upstream(self, cluster: str, code: str, seconds: float, failure: str | None = None) -> None: ...

    def retry(self, cluster: str) -> None: ...


class _NoObserver:
    def tool_call(self, server: str, tool: str, outcome: Outcome, seconds: float) -> None:
        return None

    def upstream(self, cluster: str, code: str, seconds: float, failure: str | None = None) -> None:
        return None

    def retry(self, cluster: str) -> None:
        return None


NO_OBSERVER: Final[CallObserver] = _NoObserver()


class _FailureLog:
    """One info line per cluster per interval about failed upstream calls, with the count it folded in."""

    def __init__(self, interval: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._interval = interval
        self._clock = clock
        self._last: dict[str, float] = {}
        self._folded: dict[str, int] = {}

    def failed(self, cluster: str, failure: str) -> None:
        now = self._clock()
        last = self._last.get(cluster)
        if last is not None and now - last < self._interval:
            self._folded[cluster] = self._folded.get(cluster, 0) + 1
            return
        self._last[cluster] = now
        folded = self._folded.pop(cluster, 0)
        log.info("upstream.failed", cluster=cluster, problem=failure, not_logged_since_last=folded)

    def forget(self, cluster: str) -> None:
        self._last.pop(cluster, None)
        self._folded.pop(cluster, None)


class GatewayMetrics:
    """The call path's counters and histograms, the reload counters, and the build info, in ``registry``."""

    def __init__(self, registry: CollectorRegistry, *, failure_log_interval: float = FAILURE_LOG_INTERVAL) -> None:
        self.registry = registry
        self.tool_calls = Counter("mcpgw_tool_calls", "Tool calls answered, by server, tool and outcome",
                                  ["server", "tool", "outcome"], registry=registry)
        self.tool_call_duration = Histogram("mcpgw_tool_call_duration_seconds",
                                            "Time from a tool call's arrival to its answer", ["server", "tool"],
                                            buckets=CALL_BUCKETS, registry=registry)
        self.upstream_requests = Counter("mcpgw_upstream_requests", "Requests to backends, by cluster and HTTP "
                                         "status (or error, timeout, too_large)", ["cluster", "code"],
                                         registry=registry)
        self.upstream_duration = Histogram("mcpgw_upstream_request_duration_seconds",
                                           "Time one backend request took", ["cluster"], buckets=CALL_BUCKETS,
                                           registry=registry)
        self.retries = Counter("mcpgw_retries", "Calls retried on another instance", ["cluster"], registry=registry)
        self.config_reloads = Counter("mcpgw_config_reloads", "Server changes applied or rejected",
                                      ["server", "result"], registry=registry)
        self.last_reload_success = Gauge("mcpgw_config_last_reload_success_timestamp_seconds",
                                         "When a server's latest change was applied", ["server"], registry=registry)
        self.auth_denials = Counter("mcpgw_auth_denied", "Requests refused by the front door, by reason",
                                    ["reason"], registry=registry)
        self.build = Info("mcpgw_build", "The running mcpgw", registry=registry)
        self.build.info({"version": mcpgw.__version__})
        ProcessCollector(registry=registry)
        self._failures = _FailureLog(failure_log_interval)
        self._seen: dict[str, tuple[str, float | None, float | None]] = {}
        """Per server id: its name, and the applied_at / last_error_at last counted."""

    # -- the call path (CallObserver) -------------------------------------------

    def tool_call(self, server: str, tool: str, outcome: Outcome, seconds: float) -> None:
        self.tool_calls.labels(server, tool, outcome).inc()
        self.tool_call_duration.labels(server, tool).observe(seconds)

    def upstream(self, cluster: str, code: str, seconds: float, failure: str | None = None) -> None:
        self.upstream_requests.labels(cluster, code).inc()
        self.upstream_duration.labels(cluster).observe(seconds)
        if failure is not None:
            self._failures.failed(cluster, failure)

    def auth_denied(self, reason: str) -> None:
        self.auth_denials.labels(reason).inc()

    def retry(self, cluster: str) -> None:
        self.retries.labels(cluster).inc()

    # -- reloads -----------------------------------------------------------------

    def follow(self, store: StateStore) -> Callable[[], None]:
        """Count each server's applied and rejected changes as the store commits them; returns the unsubscribe."""
        self._observe(store, store.current.statuses.keys())
        return store.subscribe(lambda change: self._on_change(store, change))

    def _on_change(self, store: StateStore, change: StateChange) -> None:
        self._observe(store, change.servers)

    def _observe(self, store: StateStore, server_ids: object) -> None:
        statuses = store.current.statuses
        for server_id in server_ids:  # type: ignore[attr-defined]
            status = statuses.get(server_id)
            previous = self._seen.get(server_id)
            if status is None:
                if previous is not None:
                    self._seen.pop(server_id)
                    self._drop_server(previous[0])
                continue
            name = status.name or server_id
            before_applied, before_error = (previous[1], previous[2]) if previous else (None, None)
            if previous is not None and previous[0] != name:
                self._drop_server(previous[0])
            if status.applied_at is not None and status.applied_at != before_applied:
                self.config_reloads.labels(name, "applied").inc()
                self.last_reload_success.labels(name).set(status.applied_at)
                # A recovery: the change counted before this one was a rejection, and this one applied.
                was_rejected = before_error is not None and (before_applied is None or before_error > before_applied)
                if was_rejected:
                    log.info("server.recovered", server=name, server_id=server_id, version=status.applied_version)
            if status.last_error_at is not None and status.last_error_at != before_error:
                self.config_reloads.labels(name, "rejected").inc()
            self._seen[server_id] = (name, status.applied_at, status.last_error_at)

    def _drop_server(self, name: str) -> None:
        for result in ("applied", "rejected"):
            self._remove(self.config_reloads, name, result)
        self._remove(self.last_reload_success, name)

    @staticmethod
    def _remove(metric: Counter | Gauge, *labels: str) -> None:
        with contextlib.suppress(KeyError):
            metric.remove(*labels)


def state_families(
    sessions: Mapping[str, int], connected: Mapping[str, bool], ejections: Mapping[str, int]
) -> Iterator[Metric]:
    """The gauges read at scrape time: sessions per endpoint, source links, ejections per cluster."""
    open_sessions = GaugeMetricFamily("mcpgw_sessions", "Open MCP sessions per endpoint", labels=["endpoint"])
    for endpoint, count in sorted(sessions.items()):
        open_sessions.add_metric([endpoint], count)
    yield open_sessions
    links = GaugeMetricFamily("mcpgw_source_connected", "1 while the config source is reachable", labels=["source"])
    for source, up in sorted(connected.items()):
        links.add_metric([source], 1.0 if up else 0.0)
    yield links
    ejected = CounterMetricFamily("mcpgw_instance_ejections", "Instances ejected by outlier detection",
                                  labels=["cluster"])
    for cluster, count in sorted(ejections.items()):
        ejected.add_metric([cluster], count)
    yield ejected
