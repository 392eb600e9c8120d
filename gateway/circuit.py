"""Circuit breaking per upstream cluster, as Envoy does it: bounded requests in flight, bounded waiters.

Without a bound, a slow backend collects every caller the gateway has: each
call holds a socket, a task and memory until its timeout, and the backlog
outlives the slowness.  Envoy's circuit breakers cap, per cluster, the
requests in flight (``max_requests``) and the requests waiting for one of
those slots (``max_pending``); past both, a request fails at once.  Here an
*attempt* on a cluster takes a slot for as long as it runs; one that finds
every slot taken waits (at most its own time budget) if fewer than
``max_pending`` already wait, else the call fails immediately with
``CircuitOpen``, a clear tool error naming the cluster and the setting.
A call refused here never reached a backend, so it counts against no
instance.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

from mcpgw.registry.errors import InvocationError


@dataclass(frozen=True, slots=True)
class CircuitLimits:
    max_requests: int = 1024
    max_pending: int = 1024


class CircuitOpen(InvocationError):
    """The cluster's circuit breaker refused the call: too many calls in flight and waiting."""


@dataclass(eq=False, slots=True)
class _Circuit:
    limits: CircuitLimits
    active: int = 0
    waiters: collections.deque[asyncio.Future[None]] = field(default_factory=collections.deque)


class CircuitBreakers:
    """One breaker per cluster name, with the limits ``limits_for(cluster name)`` gives."""

    def __init__(self, limits_for: Callable[[str], CircuitLimits]) -> None:
        self._limits_for = limits_for
        self._circuits: dict[str, _Circuit] = {}
        self.refused = 0

    def in_flight(self, cluster: str) -> int:
        circuit = self._circuits.get(cluster)
        return circuit.active if circuit is not None else 0

    @contextlib.asynccontextmanager
    async def slot(self, cluster: str, wait: float) -> AsyncIterator[None]:
        """Hold one of the cluster's request slots; wait at most ``wait`` seconds for one, or raise ``CircuitOpen``."""
        await self.acquire(cluster, wait)
        try:
            yield
        finally:
            self.release(cluster)

    async def acquire(self, cluster: str, wait: float) -> None:
        """Take a slot (``slot`` without the context manager, for the hot path); pair with ``release``."""
        circuit = self._circuits.get(cluster)
        if circuit is None:
            circuit = self._circuits[cluster] = _Circuit(self._limits_for(cluster))
        if circuit.active < circuit.limits.max_requests and not circuit.waiters:
            circuit.active += 1
            return
        await self._acquire(cluster, circuit, wait)

    def release(self, cluster: str) -> None:
        circuit = self._circuits.get(cluster)
        if circuit is not None:
            self._release(cluster, circuit)

    async def _acquire(self, cluster: str, circuit: _Circuit, wait: float) -> None:
        limits = circuit.limits
        if circuit.active < limits.max_requests and not circuit.waiters:
            circuit.active += 1
            return
        if len(circuit.waiters) >= limits.max_pending:
            self.refused += 1
            raise CircuitOpen(
                f"cluster {cluster} is at its limit: {circuit.active} calls in flight and {len(circuit.waiters)} "
                f"waiting (balancing.circuit_breaker max_requests={limits.max_requests}, "
                f"max_pending={limits.max_pending}); the backend is overloaded or slow, retry later"
            )
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        circuit.waiters.append(granted)
        try:
            async with asyncio.timeout(wait):
                await granted
        except TimeoutError:
            self._forget(circuit, granted)
            self.refused += 1
            raise CircuitOpen(
                f"cluster {cluster} had no free request slot within {wait:g} s: {circuit.active} calls in flight "
                f"(balancing.circuit_breaker max_requests={limits.max_requests}); retry later"
            ) from None
        except asyncio.CancelledError:
            self._forget(circuit, granted)
            raise

    def _forget(self, circuit: _Circuit, granted: asyncio.Future[None]) -> None:
        if granted.done() and not granted.cancelled():
            self._hand_over(circuit)  # the slot came just too late: pass it on
        else:
            with contextlib.suppress(ValueError):
                circuit.waiters.remove(granted)
            granted.cancel()

    def _release(self, cluster: str, circuit: _Circuit) -> None:
        self._hand_over(circuit)
        if circuit.active == 0 and not circuit.waiters and self._circuits.get(cluster) is circuit:
            del self._circuits[cluster]

    def _hand_over(self, circuit: _Circuit) -> None:
        while circuit.waiters:
            waiter = circuit.waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot passes to the waiter: ``active`` stays
                return
        circuit.active -= 1
