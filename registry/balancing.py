"""Load balancing and passive health of backend clusters.

A backend usually runs several instances, and Nacos tells us about them late:
a killed instance stays ``healthy`` there until its heartbeat times out. So
the gateway keeps its own view per cluster (``ClusterRuntime``): per-instance
call statistics that survive instance-set updates, passive outlier detection
that ejects an instance after consecutive failures with a growing back-off,
and panic mode, which ignores health when so few instances are left that
honouring it would overload them (Envoy's semantics). An active health
checker (``registry.health``) may add its verdicts. Each cluster also keeps
a ``RetryBudget``, so that retries add a bounded share to a failing
cluster's load; ``TimeoutPolicy`` says how long a call may take, by tool,
by service or by default.

The strategies (``Balancer``) only choose among the candidates they are given;
``ClusterRuntime`` decides who is a candidate (enabled, healthy, not ejected,
or every enabled instance in panic mode). Picking is on the path of every
tool call, so a strategy that needs precomputed state keys it by the identity
of the candidate tuple and rebuilds it only when that tuple changes: a pick
costs well under 2 µs for round robin and least connections at 1,000
instances (``python bench/lb.py``). Pass tuples: a list is never cached.

Thread safety: picks take no lock (counters are ``itertools.count``, state
objects are swapped whole); ``ClusterRuntime`` mutations hold a private lock
for O(instances) at most.
"""

from __future__ import annotations

import bisect
import hashlib
import heapq
import importlib.metadata
import itertools
import math
import random
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Final, Literal, Protocol, TypeVar

import structlog

from mcpgw.registry.errors import McpgwError
from mcpgw.registry.models import Cluster, Instance, sanitize_name

log = structlog.get_logger("mcpgw.balancing")

Clock = Callable[[], float]
_Setting = TypeVar("_Setting")
InstanceState = Literal["active", "ejected", "unhealthy", "disabled"]


class BalancingConfigError(McpgwError, ValueError):
    """A balancing policy naming an unknown strategy or holding an impossible setting."""


def instance_weight(instance: Instance) -> float:
    """The weight balancing uses for ``instance``.

    ``metadata["weight"]`` overrides the Nacos weight when it is a finite
    number ≥ 0, so an operator can tune one instance without touching Nacos'
    own weight; anything else in that field is ignored.
    """
    raw = instance.metadata.get("weight")
    if raw is not None:
        try:
            value = float(raw)
        except ValueError:
            return instance.weight
        if math.isfinite(value) and value >= 0:
            return value
    return instance.weight


class Balancer(Protocol):
    """A load-balancing strategy.

    ``pick`` chooses among ``instances`` exactly as given (every one is a
    candidate), skipping the ids in ``exclude`` (instances a retry already
    tried), and returns ``None`` when nothing is left. ``key`` matters only to
    key-affine strategies (the MCP session id). The hooks tell stateful
    strategies about calls; the others ignore them.
    """

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None: ...

    def on_start(self, instance_id: str) -> None: ...

    def on_finish(self, instance_id: str, *, ok: bool, latency_s: float) -> None: ...


def _cache_key(instances: Sequence[Instance]) -> Sequence[Instance] | None:
    # Only an immutable tuple may be cached by identity: a list could be
    # mutated in place behind the cache's back.
    return instances if isinstance(instances, tuple) else None


def _first_not_excluded(draw: Callable[[], Instance], exclude: Collection[str], attempts: int) -> Instance | None:
    """Keep drawing until an instance outside ``exclude`` comes up, at most ``attempts`` times."""
    for _ in range(attempts):
        chosen = draw()
        if chosen.id not in exclude:
            return chosen
    return None


class _NoHooks:
    """For strategies that do not learn from calls."""

    def on_start(self, instance_id: str) -> None:
        return None

    def on_finish(self, instance_id: str, *, ok: bool, latency_s: float) -> None:
        return None


class RoundRobin(_NoHooks):
    """Each candidate in turn; exactly even over every cycle."""

    def __init__(self) -> None:
        self._counter = itertools.count()

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None:
        n = len(instances)
        if not n:
            return None
        if exclude:
            return _first_not_excluded(lambda: instances[next(self._counter) % n], exclude, n)
        return instances[next(self._counter) % n]


class RandomChoice(_NoHooks):
    """A uniformly random candidate."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._random = (rng or random.Random()).random

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None:
        if exclude:
            instances = [i for i in instances if i.id not in exclude]
        n = len(instances)
        return instances[int(self._random() * n)] if n else None


@dataclass(frozen=True, slots=True)
class _Cumulative:
    source: Sequence[Instance] | None
    candidates: tuple[Instance, ...]
    bounds: tuple[float, ...]
    total: float

    @classmethod
    def build(cls, instances: Sequence[Instance]) -> _Cumulative:
        bounds = tuple(itertools.accumulate(instance_weight(i) for i in instances))
        return cls(_cache_key(instances), tuple(instances), bounds, bounds[-1] if bounds else 0.0)


class WeightedRandom(_NoHooks):
    """A random candidate with probability proportional to its weight."""

    def __init__(self, *, rng: random.Random | None = None) -> None:
        self._random = (rng or random.Random()).random
        self._state = _Cumulative.build(())

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None:
        state = self._state
        if state.source is not instances:
            state = self._state = _Cumulative.build(instances)
        if exclude:
            state = _Cumulative.build([i for i in state.candidates if i.id not in exclude])
        if state.total <= 0:
            return None
        index = bisect.bisect_right(state.bounds, self._random() * state.total)
        # Rounding can land exactly on the total; that draw belongs to the last candidate.
        return state.candidates[min(index, len(state.candidates) - 1)]


def _integer_weights(weights: Sequence[float]) -> list[int]:
    """Weights as the smallest integers with the same ratios (to a thousandth)."""
    scaled = [max(1, round(w * 1000)) for w in weights]
    divisor = math.gcd(*scaled)
    return [w // divisor for w in scaled]


def _nginx_cycle(candidates: tuple[Instance, ...], weights: list[int]) -> tuple[Instance, ...]:
    """One full period of nginx's smooth weighted round robin.

    Every step adds each weight to its instance's current value, picks the
    largest (the first on ties) and subtracts the total from it; the
    sequence repeats after ``sum(weights)`` steps.
    """
    total = sum(weights)
    current = [0] * len(weights)
    cycle: list[Instance] = []
    positions = range(len(weights))
    for _ in range(total):
        current = [c + w for c, w in zip(current, weights, strict=True)]
        best = max(positions, key=current.__getitem__)
        current[best] -= total
        cycle.append(candidates[best])
    return tuple(cycle)


@dataclass(slots=True)
class _SwrrState:
    source: Sequence[Instance] | None
    candidates: tuple[Instance, ...]
    sequence: tuple[Instance, ...] | None
    """The repeating pick order; ``None`` when it is too long to precompute."""
    heap: list[tuple[float, int]] = field(default_factory=list)
    strides: tuple[float, ...] = ()

    @classmethod
    def build(cls, instances: Sequence[Instance], cycle_budget: int) -> _SwrrState:
        candidates = tuple(instances)
        weights = [instance_weight(i) for i in candidates]
        if len(set(weights)) <= 1:
            # Equal weights: nginx's algorithm degenerates to plain round robin.
            return cls(_cache_key(instances), candidates, candidates)
        integers = _integer_weights(weights)
        if len(integers) * sum(integers) <= cycle_budget:
            return cls(_cache_key(instances), candidates, _nginx_cycle(candidates, integers))
        # Too long a period to precompute (many instances with uneven weights):
        # earliest-virtual-deadline first gives the same shares, equally
        # smooth, at O(log n) per pick.
        strides = tuple(1.0 / w for w in integers)
        heap = [(stride, index) for index, stride in enumerate(strides)]
        heapq.heapify(heap)
        return cls(_cache_key(instances), candidates, None, heap, strides)

    def next_by_deadline(self) -> Instance:
        deadline, index = self.heap[0]
        heapq.heapreplace(self.heap, (deadline + self.strides[index], index))
        return self.candidates[index]

    def earliest_not_in(self, exclude: Collection[str]) -> Instance | None:
        # A retry is rare: an O(n) scan beats popping past a heavy excluded
        # instance that may hold many consecutive deadlines.
        due = [(deadline, index) for deadline, index in self.heap if self.candidates[index].id not in exclude]
        return self.candidates[min(due)[1]] if due else None


class SmoothWeightedRoundRobin(_NoHooks):
    """nginx's smooth weighted round robin: shares follow the weights, picks are interleaved.

    The period is precomputed when ``instances × sum(weights)`` fits in
    ``cycle_budget`` (weights 1, 2, 3 for a, b, c give ``c b a c b c``:
    interleaved, never long runs of one instance).
    """

    def __init__(self, *, cycle_budget: int = 1 << 17) -> None:
        self._counter = itertools.count()
        self._cycle_budget = cycle_budget
        self._state = _SwrrState.build((), cycle_budget)

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None:
        state = self._state
        if state.source is not instances:
            state = self._state = _SwrrState.build(instances, self._cycle_budget)
        sequence = state.sequence
        if sequence is None:
            return state.earliest_not_in(exclude) if exclude else state.next_by_deadline()
        n = len(sequence)
        if not n:
            return None
        if exclude:
            return _first_not_excluded(lambda: sequence[next(self._counter) % n], exclude, n)
        return sequence[next(self._counter) % n]


@dataclass(frozen=True, slots=True)
class _Weighted:
    source: Sequence[Instance] | None
    candidates: tuple[Instance, ...]
    inverse_weights: tuple[float, ...]
    ids: tuple[str, ...]
    uniform: bool
    """All weights equal: costs compare as plain in-flight counts."""

    @classmethod
    def build(cls, instances: Sequence[Instance], source: Sequence[Instance] | None = None) -> _Weighted:
        candidates = tuple(instances)
        inverse = tuple(1.0 / w if (w := instance_weight(i)) > 0 else math.inf for i in candidates)
        ids = tuple(i.id for i in candidates)
        return cls(source, candidates, inverse, ids, len(set(inverse)) <= 1)

    def without(self, exclude: Collection[str]) -> _Weighted:
        return _Weighted.build([i for i in self.candidates if i.id not in exclude])


class LeastConnections:
    """Fewest in-flight calls per unit of weight.

    Above ``exact_up_to`` candidates it uses the power of two choices: two
    distinct random candidates are drawn and the cheaper one is kept, which
    costs the same at 1,000 instances as at 10 and keeps the load within a
    small constant of the mean. In small clusters that constant is too
    large (a simulated closed-loop load of 128 calls over 8 instances drifts
    5 calls above the mean), so up to ``exact_up_to`` candidates it scans
    them all and takes the cheapest, starting at a rotating position so
    ties (an idle cluster) rotate. An exact scan causes no herd here because
    ``on_start`` is counted synchronously right after each pick.
    """

    def __init__(self, *, rng: random.Random | None = None, exact_up_to: int = 16) -> None:
        self._random = (rng or random.Random()).random
        self._exact_up_to = exact_up_to
        self._rotation = itertools.count()
        self._state = _Weighted.build(())
        self._in_flight: dict[str, int] = {}

    def _cost(self, instance_id: str, inverse_weight: float) -> float:
        return (self._in_flight.get(instance_id, 0) + 1) * inverse_weight

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None:
        state = self._state
        if state.source is not instances:
            state = self._state = _Weighted.build(instances, _cache_key(instances))
        if exclude:
            state = state.without(exclude)
        candidates = state.candidates
        n = len(candidates)
        if n < 2:
            return candidates[0] if n else None
        if n <= self._exact_up_to:
            return candidates[self._cheapest(state, next(self._rotation) % n)]
        inverse = state.inverse_weights
        # random() < 1 and n < 2**53 make int(random() * n) < n: no bounds check needed.
        first = int(self._random() * n)
        second = int(self._random() * (n - 1))
        if second >= first:
            second += 1
        a, b = candidates[first], candidates[second]
        if self._cost(b.id, inverse[second]) < self._cost(a.id, inverse[first]):
            return b
        return a

    def _cheapest(self, state: _Weighted, start: int) -> int:
        loads: list[float] = list(map(self._in_flight.get, state.ids, itertools.repeat(0)))
        costs = (
            loads if state.uniform else [(load + 1) * w for load, w in zip(loads, state.inverse_weights, strict=True)]
        )
        # The first minimum after ``start``: ties (an idle cluster) rotate.
        rotated = costs[start:] + costs[:start]
        index = rotated.index(min(rotated)) + start
        return index - len(costs) if index >= len(costs) else index

    def on_start(self, instance_id: str) -> None:
        self._in_flight[instance_id] = self._in_flight.get(instance_id, 0) + 1

    def on_finish(self, instance_id: str, *, ok: bool, latency_s: float) -> None:
        remaining = self._in_flight.get(instance_id, 0) - 1
        # Dropping idle entries keeps the map bounded by what is in flight.
        if remaining > 0:
            self._in_flight[instance_id] = remaining
        else:
            self._in_flight.pop(instance_id, None)


class ResponseTime(LeastConnections):
    """Lowest expected latency, by power of two choices (after Finagle's EWMA balancer).

    The cost of an instance is its latency EWMA times (in-flight + 1);
    weights are not used, latency is the signal. The EWMA decays towards
    zero while an instance receives no samples, so a slow instance that
    stops being chosen is probed again after a while instead of being
    starved forever. An instance without samples is assumed to be as fast
    as the cluster's average. A failed call counts as at least
    ``failure_penalty_s``: failing fast must not look fast.
    """

    _FLOOR_S: Final = 0.001
    """Added to every latency so in-flight calls still count when latencies are ~0."""

    def __init__(
        self,
        *,
        rng: random.Random | None = None,
        clock: Clock = time.monotonic,
        alpha: float = 0.3,
        decay_s: float = 10.0,
        failure_penalty_s: float = 1.0,
    ) -> None:
        # Always two choices: each cost reads the clock and takes an
        # exponential, too dear to compute for every candidate on every pick.
        super().__init__(rng=rng, exact_up_to=0)
        self._clock = clock
        self._alpha = alpha
        self._decay_s = decay_s
        self._failure_penalty_s = failure_penalty_s
        self._latency: dict[str, tuple[float, float]] = {}
        self._cluster_latency = 0.0

    def _decayed(self, latency: float, stamp: float, now: float) -> float:
        return latency * math.exp((stamp - now) / self._decay_s)

    def _cost(self, instance_id: str, inverse_weight: float) -> float:
        sample = self._latency.get(instance_id)
        latency = self._cluster_latency if sample is None else self._decayed(*sample, self._clock())
        return (latency + self._FLOOR_S) * (self._in_flight.get(instance_id, 0) + 1)

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None:
        if self._state.source is not instances:
            present = {i.id for i in instances}
            self._latency = {k: v for k, v in self._latency.items() if k in present}
        return super().pick(instances, key=key, exclude=exclude)

    def on_finish(self, instance_id: str, *, ok: bool, latency_s: float) -> None:
        super().on_finish(instance_id, ok=ok, latency_s=latency_s)
        now = self._clock()
        sample = latency_s if ok else max(latency_s, self._failure_penalty_s)
        previous = self._latency.get(instance_id)
        if previous is None:
            self._latency[instance_id] = (sample, now)
        else:
            current = self._decayed(*previous, now)
            self._latency[instance_id] = (current + self._alpha * (sample - current), now)
        if ok:
            self._cluster_latency += self._alpha * (latency_s - self._cluster_latency)


def _hash64(text: str) -> int:
    # Stable across processes (unlike hash()), so gateway replicas agree on placement.
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "big")


@dataclass(frozen=True, slots=True)
class _Ring:
    source: Sequence[Instance] | None
    candidates: tuple[Instance, ...]
    points: list[int]
    owners: list[Instance]


class ConsistentHash(_NoHooks):
    """Sticky placement of ``key`` (the MCP session id) on a hash ring.

    Each instance owns ``vnodes_per_weight × weight`` points (at least one,
    at most ``max_vnodes``), derived from its id alone: when another
    instance comes or goes, only the keys on that instance's arcs move. A
    pick without a key falls back to round robin.
    """

    def __init__(self, *, vnodes_per_weight: int = 100, max_vnodes: int = 1000) -> None:
        self._vnodes_per_weight = vnodes_per_weight
        self._max_vnodes = max_vnodes
        self._points_of: dict[tuple[str, int], tuple[int, ...]] = {}
        self._ring = _Ring((), (), [], [])
        self._keyless = RoundRobin()

    def _build(self, instances: Sequence[Instance]) -> _Ring:
        # O(total points): ~5 ms at 50 instances, ~0.1 s at 1,000; it runs only
        # when the candidate set changes, and each instance's points are hashed once.
        owner_of: dict[int, Instance] = {}
        points_of: dict[tuple[str, int], tuple[int, ...]] = {}
        for instance in instances:
            count = min(self._max_vnodes, max(1, round(self._vnodes_per_weight * instance_weight(instance))))
            cache_key = (instance.id, count)
            points = self._points_of.get(cache_key)
            if points is None:
                points = tuple(sorted(_hash64(f"{instance.id}#{n}") for n in range(count)))
            points_of[cache_key] = points
            owner_of.update(dict.fromkeys(points, instance))
        self._points_of = points_of
        ordered = sorted(owner_of)
        return _Ring(_cache_key(instances), tuple(instances), ordered, list(map(owner_of.__getitem__, ordered)))

    def pick(
        self, instances: Sequence[Instance], *, key: str | None = None, exclude: Collection[str] = ()
    ) -> Instance | None:
        ring = self._ring
        if ring.source is not instances:
            ring = self._ring = self._build(instances)
        if key is None:
            return self._keyless.pick(ring.candidates, exclude=exclude)
        size = len(ring.points)
        if not size:
            return None
        start = bisect.bisect_left(ring.points, _hash64(key))
        if not exclude:
            return ring.owners[start % size]
        # Walk clockwise to the next instance not excluded: the key's fallback is stable too.
        for offset in range(size):
            owner = ring.owners[(start + offset) % size]
            if owner.id not in exclude:
                return owner
        return None


STRATEGIES: Final[tuple[str, ...]] = (
    "smooth_weighted_round_robin",
    "round_robin",
    "random",
    "weighted_random",
    "least_connections",
    "response_time",
    "consistent_hash",
)
"""The built-in strategies (each registered under the ``mcpgw.balancers`` entry point group like any plugin)."""
DEFAULT_STRATEGY: Final = "smooth_weighted_round_robin"
_ALIASES: Final[Mapping[str, str]] = MappingProxyType(
    {"weighted_round_robin": "smooth_weighted_round_robin", "swrr": "smooth_weighted_round_robin"}
)

ENTRY_POINT_GROUP: Final = "mcpgw.balancers"
"""Where strategies are found by name: a package adds one with, in its pyproject.toml,
``[project.entry-points."mcpgw.balancers"] fewest_errors = "my_package.module:factory"``, the factory being
called as ``factory(rng=…, clock=…)`` and returning a ``Balancer``."""


class BalancerFactory(Protocol):
    def __call__(self, *, rng: random.Random | None, clock: Clock) -> Balancer: ...


# The built-ins' factories, which the package's own entry points name.
def smooth_weighted_round_robin(*, rng: random.Random | None, clock: Clock) -> Balancer:
    return SmoothWeightedRoundRobin()


def round_robin(*, rng: random.Random | None, clock: Clock) -> Balancer:
    return RoundRobin()


def random_choice(*, rng: random.Random | None, clock: Clock) -> Balancer:
    return RandomChoice(rng=rng)


def weighted_random(*, rng: random.Random | None, clock: Clock) -> Balancer:
    return WeightedRandom(rng=rng)


def least_connections(*, rng: random.Random | None, clock: Clock) -> Balancer:
    return LeastConnections(rng=rng)


def response_time(*, rng: random.Random | None, clock: Clock) -> Balancer:
    return ResponseTime(rng=rng, clock=clock)


def consistent_hash(*, rng: random.Random | None, clock: Clock) -> Balancer:
    return ConsistentHash()


_factories: dict[str, BalancerFactory] = {}
_discovered: dict[str, importlib.metadata.EntryPoint] | None = None
_discovery_lock = threading.Lock()


def _canonical(name: str) -> str:
    normalised = name.strip().lower().replace("-", "_")
    return _ALIASES.get(normalised, normalised)


def _entry_points() -> dict[str, importlib.metadata.EntryPoint]:
    global _discovered
    found = _discovered
    if found is None:
        with _discovery_lock:
            found = _discovered
            if found is None:
                found = {}
                for entry in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
                    name = _canonical(entry.name)
                    if name in found and found[name].value != entry.value:
                        log.warning("balancing.strategy_shadowed", strategy=name, kept=found[name].value,
                                    ignored=entry.value)
                        continue
                    found[name] = entry
                _discovered = found
    return found


def refresh_strategies() -> None:
    """Forget the entry points found so far: the next lookup scans the installed packages again."""
    global _discovered
    with _discovery_lock:
        _discovered = None
        _factories.clear()


def register_strategy(name: str, factory: BalancerFactory) -> None:
    """Add a strategy at run time (what an entry point does at install time); a later one of a name wins."""
    canonical = _canonical(name)
    if not canonical.replace("_", "").isalnum():
        raise BalancingConfigError(f"a strategy name is letters, digits, '_' and '-', not {name!r}")
    _factories[canonical] = factory


def available_strategies() -> tuple[str, ...]:
    """Every strategy name known: the built-ins first, then those of plugins, sorted."""
    names = set(_entry_points()) | set(_factories)
    return (*(n for n in STRATEGIES if n in names), *sorted(names - set(STRATEGIES)))


def strategy_name(name: str, *, where: str = "") -> str:
    """The canonical strategy name for ``name`` (case and ``-``/``_`` insensitive).

    Raises ``BalancingConfigError`` listing the valid names when it is unknown.
    """
    normalised = _canonical(name)
    if normalised not in _factories and normalised not in _entry_points():
        place = f" {where}" if where else ""
        known = available_strategies()
        hint = ("" if known else " (no strategy is registered at all: is mcpgw installed, `pip install -e .`, "
                "so that its entry points exist?)")
        raise BalancingConfigError(
            f"unknown load-balancing strategy {name!r}{place}; use one of: {', '.join(known)}{hint}."
        )
    return normalised


def _factory(name: str) -> BalancerFactory:
    strategy = strategy_name(name)
    factory = _factories.get(strategy)
    if factory is None:
        entry = _entry_points()[strategy]
        try:
            loaded = entry.load()
        except Exception as exc:
            raise BalancingConfigError(
                f"load-balancing strategy {strategy!r} ({entry.value}, from the {ENTRY_POINT_GROUP} entry points) "
                f"cannot be loaded: {type(exc).__name__}: {exc}. Fix or uninstall the package that provides it."
            ) from exc
        if not callable(loaded):
            raise BalancingConfigError(f"load-balancing strategy {strategy!r} ({entry.value}) is not callable")
        factory = _factories[strategy] = loaded
    return factory


def make_balancer(name: str, *, rng: random.Random | None = None, clock: Clock = time.monotonic) -> Balancer:
    """A fresh balancer of strategy ``name``; ``rng`` and ``clock`` make it deterministic in tests."""
    strategy = strategy_name(name)
    balancer = _factory(strategy)(rng=rng, clock=clock)
    if not callable(getattr(balancer, "pick", None)):
        raise BalancingConfigError(f"load-balancing strategy {strategy!r} made {type(balancer).__name__}, which has "
                                   "no pick(instances, key=..., exclude=...)")
    for hook in ("on_start", "on_finish"):
        if not callable(getattr(balancer, hook, None)):
            raise BalancingConfigError(f"load-balancing strategy {strategy!r} made {type(balancer).__name__}, "
                                       f"which has no {hook}(): derive it from a built-in or add the hook")
    return balancer


@dataclass(frozen=True, slots=True)
class OutlierPolicy:
    """Passive outlier detection and panic mode (defaults follow Envoy's spirit).

    ``consecutive_failures`` failed or timed-out calls in a row eject an
    instance for ``base_ejection_s``, doubled on each repeat ejection up to
    ``max_ejection_s``; an instance that stays in for ``max_ejection_s`` after
    re-admission starts again from the base. At most
    ``max_ejection_percent`` of a cluster is ejected at once. When the share
    of healthy, non-ejected instances among the enabled ones falls below
    ``panic_threshold_percent``, health is ignored (0 disables panic mode).
    """

    consecutive_failures: int = 5
    base_ejection_s: float = 10.0
    max_ejection_s: float = 300.0
    max_ejection_percent: float = 50.0
    panic_threshold_percent: float = 50.0

    def __post_init__(self) -> None:
        problems = []
        if self.consecutive_failures < 1:
            problems.append(f"consecutive_failures must be at least 1, got {self.consecutive_failures}")
        if not self.base_ejection_s > 0:
            problems.append(f"base_ejection_s must be positive, got {self.base_ejection_s}")
        if not self.max_ejection_s >= self.base_ejection_s:
            problems.append(
                f"max_ejection_s ({self.max_ejection_s}) must be at least base_ejection_s ({self.base_ejection_s})"
            )
        for name in ("max_ejection_percent", "panic_threshold_percent"):
            value = getattr(self, name)
            if not 0 <= value <= 100:
                problems.append(f"{name} must be between 0 and 100, got {value}")
        if problems:
            raise BalancingConfigError("invalid outlier detection settings: " + "; ".join(problems) + ".")


@dataclass(frozen=True, slots=True)
class RetryBudgetPolicy:
    """How many retries a cluster may make (after Finagle's ``RetryBudget`` and Envoy's ``retry_budget``).

    Over the last ``window_s`` seconds, retries may add at most ``percent``
    of the calls made, plus ``min_retries_per_s`` per second so that a
    quiet cluster can still retry its rare failure. When a cluster fails
    under load, its retries therefore add at most ``percent`` to its load
    instead of multiplying it (a retry storm).
    """

    percent: float = 20.0
    min_retries_per_s: float = 5.0
    window_s: float = 10.0

    def __post_init__(self) -> None:
        problems = []
        if not 0 <= self.percent <= 1000:
            problems.append(f"percent must be between 0 and 1000, got {self.percent}")
        if not self.min_retries_per_s >= 0:
            problems.append(f"min_retries_per_s must be at least 0, got {self.min_retries_per_s}")
        if not self.window_s > 0:
            problems.append(f"window_s must be positive, got {self.window_s}")
        if problems:
            raise BalancingConfigError("invalid retry budget settings: " + "; ".join(problems) + ".")


class RetryBudget:
    """The sliding-window account of one cluster's calls and retries.

    The window is kept in ten slots so that recording a call costs one
    counter increment, and old traffic leaves the window a slot at a time.
    """

    _SLOTS: Final = 10

    def __init__(self, policy: RetryBudgetPolicy | None = None, *, clock: Clock = time.monotonic) -> None:
        self.policy = policy or RetryBudgetPolicy()
        self._clock = clock
        self._slot_s = self.policy.window_s / self._SLOTS
        self._stamps = [-1] * self._SLOTS
        self._calls = [0] * self._SLOTS
        self._retries = [0] * self._SLOTS
        self._lock = threading.Lock()
        self.retried = 0
        """Retries granted since start."""
        self.refused = 0
        """Retries refused since start because the budget was spent."""

    def _slot(self) -> int:
        stamp = int(self._clock() / self._slot_s)
        index = stamp % self._SLOTS
        if self._stamps[index] != stamp:
            self._stamps[index] = stamp
            self._calls[index] = 0
            self._retries[index] = 0
        return index

    def _window(self, index: int) -> tuple[int, int]:
        oldest = self._stamps[index] - self._SLOTS
        live = [n for n in range(self._SLOTS) if self._stamps[n] > oldest]
        return sum(self._calls[n] for n in live), sum(self._retries[n] for n in live)

    def record_call(self) -> None:
        """Count a call (its first attempt; retries are counted by ``try_retry``)."""
        with self._lock:
            self._calls[self._slot()] += 1

    def try_retry(self) -> bool:
        """Take one retry from the budget; ``False`` (and nothing taken) when it is spent."""
        with self._lock:
            index = self._slot()
            calls, retries = self._window(index)
            allowed = self.policy.min_retries_per_s * self.policy.window_s + self.policy.percent / 100 * calls
            if retries + 1 > allowed:
                self.refused += 1
                return False
            self._retries[index] += 1
            self.retried += 1
            return True

    def stats(self) -> dict[str, Any]:
        with self._lock:
            calls, retries = self._window(self._slot())
        return {
            "window_calls": calls,
            "window_retries": retries,
            "retried": self.retried,
            "refused": self.refused,
        }


def cluster_keys(cluster: Cluster) -> tuple[str, ...]:
    """The names a setting may use for ``cluster``, most specific first.

    The cluster name, then its Nacos service as ``namespace/group/service``,
    ``group@@service`` (Nacos' grouped name) and the bare service name.
    """
    parts = cluster.service.split("/", 2)
    if len(parts) != 3:
        return (cluster.name, cluster.service)
    _namespace, group, service = parts
    return (cluster.name, cluster.service, f"{group}@@{service}", service)


def lookup_cluster(table: Mapping[str, _Setting], cluster: Cluster | None) -> _Setting | None:
    """The entry of ``table`` for the first of the cluster's keys present in it."""
    if cluster is None or not table:
        return None
    for key in cluster_keys(cluster):
        found = table.get(key)
        if found is not None:
            return found
    return None


@dataclass(frozen=True, slots=True)
class CallLimits:
    """How long one tool call may take.

    ``timeout`` bounds the whole call, retries included: the client hears
    back within it. ``try_timeout`` bounds one attempt, so that an instance
    that hangs leaves time to retry an idempotent call elsewhere; by default
    an attempt may use all the time left.
    """

    timeout: float
    try_timeout: float | None = None

    def __post_init__(self) -> None:
        if not self.timeout > 0 or (self.try_timeout is not None and not self.try_timeout > 0):
            raise BalancingConfigError(
                f"timeouts must be positive numbers of seconds, got timeout={self.timeout}, "
                f"try_timeout={self.try_timeout}."
            )


@dataclass(frozen=True, slots=True)
class LimitsOverride:
    """Call limits set for a service or a tool; ``None`` inherits the wider setting."""

    timeout: float | None = None
    try_timeout: float | None = None

    def over(self, limits: CallLimits) -> CallLimits:
        return CallLimits(
            timeout=self.timeout if self.timeout is not None else limits.timeout,
            try_timeout=self.try_timeout if self.try_timeout is not None else limits.try_timeout,
        )


@dataclass(frozen=True, slots=True)
class TimeoutPolicy:
    """Call limits by tool (``server/tool``), then by service (see ``cluster_keys``), then the default.

    The server in a tool key is its name or its id.
    """

    default: CallLimits = field(default_factory=lambda: CallLimits(30.0))
    services: Mapping[str, LimitsOverride] = field(default_factory=lambda: MappingProxyType({}))
    tools: Mapping[str, LimitsOverride] = field(default_factory=lambda: MappingProxyType({}))

    def limits(self, server_name: str, server_id: str, tool: str, cluster: Cluster | None) -> CallLimits:
        limits = self.default
        service = lookup_cluster(self.services, cluster)
        if service is not None:
            limits = service.over(limits)
        override = self.tools.get(f"{server_name}/{tool}") or self.tools.get(f"{server_id}/{tool}")
        return override.over(limits) if override is not None else limits

    @property
    def longest(self) -> float:
        """The longest ``timeout`` any call can have: what the MCP endpoint must wait at most."""
        overrides = (*self.services.values(), *self.tools.values())
        return max([self.default.timeout, *(o.timeout for o in overrides if o.timeout is not None)])


@dataclass(frozen=True, slots=True)
class BalancingPolicy:
    """How clusters are balanced: a default strategy, per-service overrides, outlier settings, retry budget.

    ``overrides`` maps a Nacos service name (or a cluster name) to a
    strategy name; a service name also matches its sanitised cluster name
    (``mcp-endpoints@@amap::1.0`` → ``mcp-endpoints-amap-1.0``). Names are
    checked when the policy is built.
    """

    strategy: str = DEFAULT_STRATEGY
    outlier: OutlierPolicy = field(default_factory=OutlierPolicy)
    overrides: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    retry_budget: RetryBudgetPolicy = field(default_factory=RetryBudgetPolicy)

    def __post_init__(self) -> None:
        object.__setattr__(self, "strategy", strategy_name(self.strategy, where="as the default strategy"))
        checked = {
            service: strategy_name(name, where=f"for service {service!r}") for service, name in self.overrides.items()
        }
        # Exact names win over sanitised aliases when both are present.
        aliases = {sanitize_name(service): name for service, name in checked.items()}
        object.__setattr__(self, "overrides", MappingProxyType(aliases | checked))

    def strategy_for(self, *names: str) -> str:
        """The strategy of the first of ``names`` (service, then cluster name) with an override."""
        for name in names:
            override = self.overrides.get(name)
            if override is not None:
                return override
        return self.strategy

    def for_cluster(self, *names: str) -> BalancingPolicy:
        """This policy narrowed to one cluster: its strategy resolved, no overrides left."""
        return BalancingPolicy(
            strategy=self.strategy_for(*names), outlier=self.outlier, retry_budget=self.retry_budget
        )


@dataclass(slots=True)
class _InstanceStats:
    calls: int = 0
    failures: int = 0
    timeouts: int = 0
    in_flight: int = 0
    consecutive_failures: int = 0
    ewma_latency_s: float | None = None
    ejections: int = 0
    ejection_level: int = 0
    ejected_until: float | None = None
    readmitted_at: float | None = None
    check_passing: bool | None = None
    """The active health check's verdict; ``None`` while unchecked."""
    check_detail: str = ""


_LATENCY_ALPHA: Final = 0.3


class ClusterRuntime:
    """Balancing and passive health state of one cluster, kept across instance-set updates.

    ``update_instances`` replaces the instance set (a Nacos push); statistics
    of instances whose id stays are kept. ``pick`` is the hot path;
    ``record_start``/``record_finish`` bracket every call made to a picked
    instance and drive outlier detection; ``set_check_result`` takes the
    verdicts of an active health checker. ``retry_budget`` accounts the
    cluster's retries.
    """

    def __init__(
        self,
        name: str,
        policy: BalancingPolicy | None = None,
        *,
        service: str = "",
        clock: Clock = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.name = name
        policy = policy or BalancingPolicy()
        self.strategy = policy.strategy_for(*(n for n in (service, name) if n))
        self._outlier = policy.outlier
        self._clock = clock
        self._balancer = make_balancer(self.strategy, rng=rng, clock=clock)
        self.retry_budget = RetryBudget(policy.retry_budget, clock=clock)
        self.ejections_total = 0
        """Ejections since the cluster appeared (a counter: instances that leave keep their share)."""
        self.health_check: Mapping[str, Any] | None = None
        """The active health check's settings while one runs for this cluster (shown in ``stats``)."""
        self._lock = threading.Lock()
        self._instances: tuple[Instance, ...] = ()
        self._stats: dict[str, _InstanceStats] = {}
        self._candidates: tuple[Instance, ...] = ()
        self._panic = False
        self._next_readmission = math.inf

    @property
    def instances(self) -> tuple[Instance, ...]:
        return self._instances

    @property
    def panic(self) -> bool:
        """Whether too few instances are healthy and health is being ignored."""
        return self._panic

    def update_instances(self, instances: Sequence[Instance]) -> None:
        """Replace the instance set; an identical set is a no-op (the rotation is not reset)."""
        incoming = tuple(instances)
        with self._lock:
            if incoming == self._instances:
                return
            self._stats = {i.id: self._stats.get(i.id) or _InstanceStats() for i in incoming}
            self._instances = incoming
            self._recompute()

    def pick(self, key: str | None = None, exclude: Collection[str] = ()) -> Instance | None:
        """An instance for the next call.

        ``None`` when no instance may take it: none enabled, none healthy with
        panic mode off, or every candidate in ``exclude``.
        """
        if self._clock() >= self._next_readmission:
            self._readmit_due()
        return self._balancer.pick(self._candidates, key=key, exclude=exclude)

    def record_start(self, instance_id: str) -> None:
        with self._lock:
            self._balancer.on_start(instance_id)
            stats = self._stats.get(instance_id)
            if stats is not None:
                stats.calls += 1
                stats.in_flight += 1

    def record_finish(self, instance_id: str, *, ok: bool, latency: float, timed_out: bool = False) -> None:
        """End a call that took ``latency`` seconds.

        A failure or timeout counts towards ejection; a success resets the count.
        """
        succeeded = ok and not timed_out
        with self._lock:
            self._balancer.on_finish(instance_id, ok=succeeded, latency_s=latency)
            stats = self._stats.get(instance_id)
            if stats is None:
                return
            stats.in_flight = max(0, stats.in_flight - 1)
            previous = stats.ewma_latency_s
            stats.ewma_latency_s = latency if previous is None else previous + _LATENCY_ALPHA * (latency - previous)
            if succeeded:
                stats.consecutive_failures = 0
                return
            stats.failures += 1
            if timed_out:
                stats.timeouts += 1
            stats.consecutive_failures += 1
            if stats.consecutive_failures >= self._outlier.consecutive_failures and stats.ejected_until is None:
                self._eject(instance_id, stats)

    def record_abandoned(self, instance_id: str, *, latency: float) -> None:
        """End a call that says nothing of the instance's health: the gateway gave it up (a drain) or never sent it.

        Neither a failure nor a success: the failure streak stays as it was.
        """
        with self._lock:
            self._balancer.on_finish(instance_id, ok=True, latency_s=latency)
            stats = self._stats.get(instance_id)
            if stats is not None:
                stats.in_flight = max(0, stats.in_flight - 1)

    def set_check_result(self, instance_id: str, *, passing: bool, detail: str = "") -> None:
        """Take an active health check's verdict on an instance (after its thresholds were crossed).

        A failing instance takes no traffic (it counts as unhealthy, panic
        mode included). An instance that passes again after failing has
        come back, so an ejection still running is ended at once instead of
        at its back-off (Envoy's ``successful_active_health_check_uneject_host``).
        """
        with self._lock:
            stats = self._stats.get(instance_id)
            if stats is None or (stats.check_passing is passing and stats.check_detail == detail):
                return
            came_back = passing and stats.check_passing is False
            stats.check_passing = passing
            stats.check_detail = detail
            if came_back and stats.ejected_until is not None:
                self._readmit(instance_id, stats, self._clock())
            self._recompute()

    def _readmit(self, instance_id: str, stats: _InstanceStats, now: float) -> None:
        stats.ejected_until = None
        stats.readmitted_at = now
        stats.consecutive_failures = 0
        log.info("cluster.instance_readmitted", cluster=self.name, instance=instance_id)

    def _eject(self, instance_id: str, stats: _InstanceStats) -> None:
        ejected = sum(1 for s in self._stats.values() if s.ejected_until is not None)
        if (ejected + 1) * 100 > self._outlier.max_ejection_percent * len(self._instances):
            log.warning("cluster.ejection_refused", cluster=self.name, instance=instance_id, ejected=ejected)
            return
        now = self._clock()
        recently_back = stats.readmitted_at is not None and now - stats.readmitted_at < self._outlier.max_ejection_s
        stats.ejection_level = stats.ejection_level + 1 if recently_back else 0
        duration = min(
            self._outlier.base_ejection_s * 2.0 ** min(stats.ejection_level, 62), self._outlier.max_ejection_s
        )
        stats.ejected_until = now + duration
        stats.ejections += 1
        self.ejections_total += 1
        stats.consecutive_failures = 0
        log.warning("cluster.instance_ejected", cluster=self.name, instance=instance_id, seconds=duration)
        self._recompute()

    def _readmit_due(self) -> None:
        with self._lock:
            now = self._clock()
            for instance_id, stats in self._stats.items():
                if stats.ejected_until is not None and stats.ejected_until <= now:
                    self._readmit(instance_id, stats, now)
            self._recompute()

    def _state_of(self, instance: Instance) -> InstanceState:
        if not instance.enabled or instance_weight(instance) <= 0:
            return "disabled"
        stats = self._stats[instance.id]
        if not instance.healthy or stats.check_passing is False:
            return "unhealthy"
        if stats.ejected_until is not None:
            return "ejected"
        return "active"

    def _recompute(self) -> None:
        """Rebuild the candidate tuple; called with the lock held after any state change."""
        states = [(i, self._state_of(i)) for i in self._instances]
        enabled = tuple(i for i, state in states if state != "disabled")
        active = tuple(i for i, state in states if state == "active")
        panic = bool(enabled) and len(active) * 100 < self._outlier.panic_threshold_percent * len(enabled)
        if panic != self._panic:
            event = "cluster.panic_entered" if panic else "cluster.panic_left"
            log.warning(event, cluster=self.name, active=len(active), enabled=len(enabled))
        self._panic = panic
        self._candidates = enabled if panic else active
        self._next_readmission = min(
            (s.ejected_until for s in self._stats.values() if s.ejected_until is not None), default=math.inf
        )

    def stats(self) -> dict[str, Any]:
        """Per-instance statistics for ``/admin/state`` (JSON-serialisable)."""
        if self._clock() >= self._next_readmission:
            self._readmit_due()
        with self._lock:
            now = self._clock()
            rows = []
            for instance in self._instances:
                stats = self._stats[instance.id]
                ewma = stats.ewma_latency_s
                rows.append(
                    {
                        "id": instance.id,
                        "host": instance.host,
                        "port": instance.port,
                        "weight": instance_weight(instance),
                        "state": self._state_of(instance),
                        "calls": stats.calls,
                        "failures": stats.failures,
                        "timeouts": stats.timeouts,
                        "in_flight": stats.in_flight,
                        "consecutive_failures": stats.consecutive_failures,
                        "ewma_latency_ms": None if ewma is None else round(ewma * 1000, 3),
                        "ejections": stats.ejections,
                        "ejected_for_s": (None if stats.ejected_until is None else round(stats.ejected_until - now, 3)),
                        "health_check": (
                            None if stats.check_passing is None else ("passing" if stats.check_passing else "failing")
                        ),
                        "health_check_detail": stats.check_detail or None,
                    }
                )
            return {
                "name": self.name,
                "strategy": self.strategy,
                "panic": self._panic,
                "total": len(self._instances),
                "candidates": len(self._candidates),
                "ejected": sum(1 for row in rows if row["state"] == "ejected"),
                "health_check": None if self.health_check is None else dict(self.health_check),
                "retry_budget": self.retry_budget.stats(),
                "instances": rows,
            }
