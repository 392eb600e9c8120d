"""The in-memory server register: backend instances by service name, with load-balanced selection.

MCP servers that register themselves with the gateway, Nacos service
instances and the files source all end up as instances under a service
name; the gateway asks this register for one instance per call. The design
(a Java ``McpMemoryRegister``) keeps many instances under one name, each with
a unique id, drops a name's record when its last instance goes, and selects
healthy, enabled, active instances by load balancing.

Selection is on the hot path and must never wait for a writer: writers
serialise on a lock and publish a new immutable snapshot (copy-on-write),
and ``select`` reads whichever snapshot is current without locking. Each name
has a ``ClusterRuntime`` that outlives snapshots, so balancing position and
health statistics survive re-registrations. Subscribers are told the name
that changed (level-triggered: they re-read), after the lock is released so
they may call back into the register.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, Final, Literal, get_args

import structlog

from registry.balancing import BalancingPolicy, Clock, ClusterRuntime
from registry.errors import McpgwError
from registry.models import Instance

log = structlog.get_logger("mcpgw.server_register")

Transport = Literal["mcp-streamable", "mcp-sse", "http", "https"]
TRANSPORTS: Final[tuple[str, ...]] = get_args(Transport)

Subscriber = Callable[[str], None]


class RegistrationError(McpgwError, ValueError):
    """A registration that cannot be accepted (empty name, bad port, negative weight, ...)."""


@dataclass(frozen=True, slots=True)
class _Snapshot:
    instances: Mapping[str, tuple[Instance, ...]] = field(default_factory=lambda: MappingProxyType({}))
    runtimes: Mapping[str, ClusterRuntime] = field(default_factory=lambda: MappingProxyType({}))


class ServerRegister:
    """Backend instances by service name; thread-safe, lock-free on the read and select path."""

    def __init__(self, policy: BalancingPolicy | None = None, *, clock: Clock = time.monotonic) -> None:
        self._policy = policy or BalancingPolicy()
        self._clock = clock
        self._lock = threading.Lock()
        self._snapshot = _Snapshot()
        self._subscribers: tuple[Subscriber, ...] = ()

    def register(
        self,
        service_name: str,
        server_id: str,
        host: str,
        port: int,
        *,
        weight: float = 1.0,
        metadata: Mapping[str, str] | None = None,
        transport: Transport = "mcp-streamable",
        scheme: Literal["http", "https"] = "http",
        healthy: bool = True,
        enabled: bool = True,
    ) -> bool:
        """Add or update the instance ``server_id`` of ``service_name``.

        Returns ``True`` when the instance is new, ``False`` when an existing
        registration was updated (or was already identical, which changes
        nothing and notifies nobody). ``transport`` is kept in the instance's
        ``metadata["transport"]``.
        """
        instance = replace(
            self._instance(service_name, server_id, host, port, weight, metadata, transport, scheme),
            healthy=healthy,
            enabled=enabled,
        )
        with self._lock:
            current = self._snapshot.instances.get(service_name, ())
            position = next((n for n, i in enumerate(current) if i.id == server_id), None)
            if position is None:
                updated = (*current, instance)
            elif current[position] == instance:
                return False
            else:
                updated = (*current[:position], instance, *current[position + 1 :])
            self._publish(service_name, updated)
        log.info("server_register.registered", service=service_name, server=server_id, new=position is None)
        self._notify(service_name)
        return position is None

    def unregister(self, service_name: str, server_id: str) -> bool:
        """Remove one instance; the service goes with its last instance. ``False`` if it was not there."""
        with self._lock:
            current = self._snapshot.instances.get(service_name, ())
            remaining = tuple(i for i in current if i.id != server_id)
            if len(remaining) == len(current):
                return False
            self._publish(service_name, remaining)
        log.info("server_register.unregistered", service=service_name, server=server_id)
        self._notify(service_name)
        return True

    def set_status(
        self, service_name: str, server_id: str, *, healthy: bool | None = None, enabled: bool | None = None
    ) -> bool:
        """Change an instance's health or enabled flag (an active health check's verdict).

        Returns ``False`` when the instance is unknown or nothing changed.
        """
        with self._lock:
            current = self._snapshot.instances.get(service_name, ())
            updated = tuple(
                replace(
                    i,
                    healthy=i.healthy if healthy is None else healthy,
                    enabled=i.enabled if enabled is None else enabled,
                )
                if i.id == server_id
                else i
                for i in current
            )
            if updated == current:
                return False
            self._publish(service_name, updated)
        self._notify(service_name)
        return True

    def get(self, service_name: str, server_id: str) -> Instance | None:
        return next((i for i in self.instances(service_name) if i.id == server_id), None)

    def instances(self, service_name: str) -> tuple[Instance, ...]:
        """All instances of a service in registration order, whatever their state."""
        return self._snapshot.instances.get(service_name, ())

    def select(self, service_name: str, key: str | None = None, exclude: Collection[str] = ()) -> Instance | None:
        """One healthy, enabled, non-ejected instance by the service's balancing strategy.

        ``key`` is for sticky strategies (the MCP session id), ``exclude`` the
        ids a retry already tried. ``None`` when the service is unknown or
        has no usable instance.
        """
        runtime = self._snapshot.runtimes.get(service_name)
        return None if runtime is None else runtime.pick(key, exclude)

    def runtime(self, service_name: str) -> ClusterRuntime | None:
        """The balancing and health state of a service: call ``record_start``/``record_finish`` on it."""
        return self._snapshot.runtimes.get(service_name)

    def has(self, service_name: str, server_id: str | None = None) -> bool:
        if server_id is None:
            return service_name in self._snapshot.instances
        return self.get(service_name, server_id) is not None

    def count(self, service_name: str | None = None) -> int:
        """Instances of one service, or of all services when no name is given."""
        instances = self._snapshot.instances
        if service_name is not None:
            return len(instances.get(service_name, ()))
        return sum(len(group) for group in instances.values())

    def all(self) -> Mapping[str, tuple[Instance, ...]]:
        """Every service and its instances: a consistent read-only snapshot."""
        return self._snapshot.instances

    def statistics(self) -> dict[str, Any]:
        """Counts in the design's shape: ``{totalServerNames, totalServers, serverCounts}``."""
        instances = self._snapshot.instances
        counts = {name: len(group) for name, group in instances.items()}
        return {"totalServerNames": len(counts), "totalServers": sum(counts.values()), "serverCounts": counts}

    def subscribe(self, callback: Subscriber) -> Callable[[], None]:
        """Call ``callback(service_name)`` after every change of that service; returns an unsubscribe."""
        with self._lock:
            self._subscribers = (*self._subscribers, callback)

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers = tuple(s for s in self._subscribers if s is not callback)

        return unsubscribe

    def _instance(
        self,
        service_name: str,
        server_id: str,
        host: str,
        port: int,
        weight: float,
        metadata: Mapping[str, str] | None,
        transport: str,
        scheme: str,
    ) -> Instance:
        where = f"server {server_id!r} of service {service_name!r}"
        problems = []
        if not service_name.strip():
            problems.append("the service name is empty")
        if not server_id.strip():
            problems.append("the server id is empty")
        if not host.strip():
            problems.append("the host is empty")
        if not 1 <= port <= 65535:
            problems.append(f"port {port} is outside 1-65535")
        if not (math.isfinite(weight) and weight >= 0):
            problems.append(f"weight {weight} is not a finite number ≥ 0")
        if transport not in TRANSPORTS:
            problems.append(f"transport {transport!r} is not one of {', '.join(TRANSPORTS)}")
        if scheme not in ("http", "https"):
            problems.append(f"scheme {scheme!r} is not http or https")
        if problems:
            raise RegistrationError(
                f"cannot register {where}: {'; '.join(problems)}. Fix the registration and send it again."
            )
        return Instance(
            id=server_id,
            host=host,
            port=port,
            weight=weight,
            scheme=scheme,
            metadata=MappingProxyType({**(metadata or {}), "transport": transport}),
        )

    def _publish(self, service_name: str, instances: tuple[Instance, ...]) -> None:
        """Swap in a snapshot where ``service_name`` has ``instances``; called with the lock held."""
        previous = self._snapshot
        by_name = dict(previous.instances)
        runtimes = dict(previous.runtimes)
        if instances:
            runtime = runtimes.get(service_name)
            if runtime is None:
                runtime = runtimes[service_name] = ClusterRuntime(
                    service_name, self._policy, service=service_name, clock=self._clock
                )
            runtime.update_instances(instances)
            by_name[service_name] = instances
        else:
            by_name.pop(service_name, None)
            runtimes.pop(service_name, None)
        self._snapshot = _Snapshot(MappingProxyType(by_name), MappingProxyType(runtimes))

    def _notify(self, service_name: str) -> None:
        for callback in self._subscribers:
            try:
                callback(service_name)
            except Exception:
                log.exception("server_register.subscriber_failed", service=service_name)
