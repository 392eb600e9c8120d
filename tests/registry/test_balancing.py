"""Balancing strategies, passive outlier detection and panic mode of registry/balancing.py."""

from __future__ import annotations

import itertools
import json
import random
from collections import Counter
from collections.abc import Sequence
from types import MappingProxyType

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgw.registry.balancing import (
    STRATEGIES,
    BalancingConfigError,
    BalancingPolicy,
    ClusterRuntime,
    ConsistentHash,
    LeastConnections,
    OutlierPolicy,
    ResponseTime,
    RoundRobin,
    SmoothWeightedRoundRobin,
    WeightedRandom,
    instance_weight,
    make_balancer,
)
from mcpgw.registry.errors import McpgwError
from mcpgw.registry.models import Instance


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def instances(count: int, *, weights: Sequence[float] | None = None, prefix: str = "i") -> tuple[Instance, ...]:
    return tuple(
        Instance(id=f"{prefix}{n}", host="10.0.0.1", port=8000 + n, weight=1.0 if weights is None else weights[n])
        for n in range(count)
    )


def fail(runtime: ClusterRuntime, instance_id: str, times: int, *, timed_out: bool = False) -> None:
    for _ in range(times):
        runtime.record_start(instance_id)
        runtime.record_finish(instance_id, ok=False, latency=0.5, timed_out=timed_out)


def picked_ids(runtime: ClusterRuntime, times: int) -> set[str]:
    picks = [runtime.pick() for _ in range(times)]
    assert all(picks)
    return {i.id for i in picks if i}


def state_of(runtime: ClusterRuntime, instance_id: str) -> str:
    rows = {row["id"]: row for row in runtime.stats()["instances"]}
    return str(rows[instance_id]["state"])


# --- strategies -------------------------------------------------------------------------------


@given(count=st.integers(1, 30), cycles=st.integers(1, 6), offset=st.integers(0, 50))
def test_round_robin_picks_every_instance_exactly_once_per_cycle(count: int, cycles: int, offset: int) -> None:
    pool = instances(count)
    balancer = RoundRobin()
    for _ in range(offset):
        balancer.pick(pool)
    for _ in range(cycles):
        cycle = [balancer.pick(pool) for _ in range(count)]
        assert Counter(i.id for i in cycle if i) == {i.id: 1 for i in pool}


@settings(max_examples=40, deadline=None)
@given(weights=st.lists(st.integers(1, 20), min_size=1, max_size=8))
def test_smooth_weighted_round_robin_keeps_shares_within_one_percent(weights: list[int]) -> None:
    pool = instances(len(weights), weights=[float(w) for w in weights])
    balancer = SmoothWeightedRoundRobin()
    picks = Counter(balancer.pick(pool).id for _ in range(10_000))  # type: ignore[union-attr]
    total = sum(weights)
    for instance, weight in zip(pool, weights, strict=True):
        assert abs(picks[instance.id] / 10_000 - weight / total) <= 0.01


@settings(max_examples=25, deadline=None)
@given(weights=st.lists(st.floats(0.05, 100.0), min_size=2, max_size=8))
def test_smooth_weighted_round_robin_beyond_the_precomputed_cycle_keeps_shares(weights: list[float]) -> None:
    pool = instances(len(weights), weights=weights)
    balancer = SmoothWeightedRoundRobin(cycle_budget=0)
    picks = Counter(balancer.pick(pool).id for _ in range(10_000))  # type: ignore[union-attr]
    total = sum(weights)
    for instance, weight in zip(pool, weights, strict=True):
        assert abs(picks[instance.id] / 10_000 - weight / total) <= 0.01


@given(count=st.integers(2, 40), weight=st.floats(0.1, 100.0))
def test_smooth_weighted_round_robin_never_repeats_an_instance_when_weights_are_equal(
    count: int, weight: float
) -> None:
    pool = instances(count, weights=[weight] * count)
    balancer = SmoothWeightedRoundRobin()
    picks = [balancer.pick(pool) for _ in range(3 * count + 1)]
    assert all(a != b for a, b in itertools.pairwise(picks))


def test_smooth_weighted_round_robin_follows_nginx_sequence() -> None:
    pool = instances(3, weights=[5.0, 1.0, 1.0])
    balancer = SmoothWeightedRoundRobin()
    sequence = [balancer.pick(pool).id for _ in range(14)]  # type: ignore[union-attr]
    assert sequence == ["i0", "i0", "i1", "i0", "i2", "i0", "i0"] * 2


def test_metadata_weight_overrides_the_nacos_weight() -> None:
    heavy = Instance(id="a", host="h", port=1, weight=1.0, metadata=MappingProxyType({"weight": "3"}))
    light = Instance(id="b", host="h", port=2, weight=1.0)
    broken = Instance(id="c", host="h", port=3, weight=2.0, metadata=MappingProxyType({"weight": "lots"}))
    assert (instance_weight(heavy), instance_weight(light), instance_weight(broken)) == (3.0, 1.0, 2.0)
    balancer = SmoothWeightedRoundRobin()
    picks = Counter(balancer.pick((heavy, light)).id for _ in range(400))  # type: ignore[union-attr]
    assert picks == {"a": 300, "b": 100}


def test_weighted_random_follows_weights() -> None:
    pool = instances(3, weights=[1.0, 2.0, 3.0])
    balancer = WeightedRandom(rng=random.Random(7))
    picks = Counter(balancer.pick(pool).id for _ in range(30_000))  # type: ignore[union-attr]
    for instance, share in zip(pool, (1 / 6, 2 / 6, 3 / 6), strict=True):
        assert abs(picks[instance.id] / 30_000 - share) < 0.015


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_skips_excluded_instances_and_gives_none_when_all_are_excluded(name: str) -> None:
    pool = instances(4, weights=[1.0, 2.0, 3.0, 4.0])
    balancer = make_balancer(name, rng=random.Random(3))
    for n in range(50):
        chosen = balancer.pick(pool, key=f"session-{n}", exclude={"i0", "i3"})
        assert chosen is not None
        assert chosen.id in {"i1", "i2"}
    assert balancer.pick(pool, key="s", exclude={i.id for i in pool}) is None
    assert balancer.pick((), key="s") is None


@pytest.mark.parametrize("name", STRATEGIES)
def test_every_strategy_follows_a_changed_instance_set(name: str) -> None:
    balancer = make_balancer(name, rng=random.Random(3))
    balancer.pick(instances(5), key="s")
    replacement = instances(2, prefix="new")
    assert {balancer.pick(replacement, key=f"s{n}").id for n in range(40)} <= {"new0", "new1"}  # type: ignore[union-attr]


def closed_loop_gap(balancer: LeastConnections, pool: tuple[Instance, ...], seed: int, concurrency: int) -> float:
    """Worst max-minus-mean in-flight while calls start every step and random ones finish."""
    rng = random.Random(seed)
    in_flight = dict.fromkeys((i.id for i in pool), 0)
    calls: list[str] = []
    worst = 0.0
    for _ in range(1500):
        if calls and (len(calls) >= concurrency or rng.random() < 0.3):
            done = calls.pop(rng.randrange(len(calls)))
            in_flight[done] -= 1
            balancer.on_finish(done, ok=True, latency_s=0.01)
        chosen = balancer.pick(pool)
        assert chosen is not None
        balancer.on_start(chosen.id)
        in_flight[chosen.id] += 1
        calls.append(chosen.id)
        worst = max(worst, max(in_flight.values()) - sum(in_flight.values()) / len(pool))
    return worst


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32), concurrency=st.integers(1, 400))
def test_least_connections_keeps_in_flight_within_three_of_the_mean(seed: int, concurrency: int) -> None:
    pool = instances(8)
    assert closed_loop_gap(LeastConnections(rng=random.Random(seed)), pool, seed, concurrency) <= 3


def test_least_connections_by_two_choices_never_picks_the_busiest_of_an_otherwise_idle_cluster() -> None:
    pool = instances(50)
    balancer = LeastConnections(rng=random.Random(1), exact_up_to=0)
    for _ in range(10):
        balancer.on_start("i7")
    assert all(balancer.pick(pool).id != "i7" for _ in range(2000))  # type: ignore[union-attr]


def test_least_connections_rotates_when_the_cluster_is_idle() -> None:
    pool = instances(4)
    balancer = LeastConnections(rng=random.Random(1))
    assert Counter(balancer.pick(pool).id for _ in range(400)) == {i.id: 100 for i in pool}  # type: ignore[union-attr]


def test_response_time_sends_clearly_fewer_calls_to_a_slow_instance_but_probes_it_again() -> None:
    clock = FakeClock()
    pool = instances(3)
    balancer = ResponseTime(rng=random.Random(5), clock=clock)
    latency = {"i0": 0.010, "i1": 0.012, "i2": 0.200}

    def run(calls: int, step_s: float) -> Counter[str]:
        picks: Counter[str] = Counter()
        for _ in range(calls):
            chosen = balancer.pick(pool)
            assert chosen is not None
            picks[chosen.id] += 1
            balancer.on_start(chosen.id)
            clock.now += step_s
            balancer.on_finish(chosen.id, ok=True, latency_s=latency[chosen.id])
        return picks

    busy = run(3000, 0.001)
    assert busy["i2"] < 0.05 * 3000
    assert min(busy["i0"], busy["i1"]) > 0.3 * 3000
    # While the fast instances keep fresh samples, the slow one's estimate
    # decays until it is tried again.
    later = run(2000, 0.05)
    assert 0 < later["i2"] < 0.05 * 2000


def test_response_time_does_not_mistake_failing_fast_for_fast() -> None:
    clock = FakeClock()
    pool = instances(4)
    balancer = ResponseTime(rng=random.Random(9), clock=clock)
    picks: Counter[str] = Counter()
    for _ in range(2000):
        chosen = balancer.pick(pool)
        assert chosen is not None
        picks[chosen.id] += 1
        balancer.on_start(chosen.id)
        clock.now += 0.001
        broken = chosen.id == "i3"
        balancer.on_finish(chosen.id, ok=not broken, latency_s=0.0001 if broken else 0.02)
    assert picks["i3"] < 0.05 * 2000


def test_least_connections_loads_instances_in_proportion_to_their_weights() -> None:
    pool = instances(3, weights=[1.0, 2.0, 3.0])
    balancer = LeastConnections(rng=random.Random(4))
    in_flight: Counter[str] = Counter()
    for _ in range(60):
        chosen = balancer.pick(pool)
        assert chosen is not None
        balancer.on_start(chosen.id)
        in_flight[chosen.id] += 1
    assert in_flight == {"i0": 10, "i1": 20, "i2": 30}


@settings(max_examples=20, deadline=None)
@given(count=st.integers(2, 12), gone=st.integers(0, 11))
def test_consistent_hash_moves_only_the_keys_of_a_removed_instance(count: int, gone: int) -> None:
    pool = instances(count)
    removed = pool[gone % count]
    keys = [f"session-{n}" for n in range(600)]
    balancer = ConsistentHash()
    before = {k: balancer.pick(pool, key=k) for k in keys}
    remaining = tuple(i for i in pool if i != removed)
    after = {k: balancer.pick(remaining, key=k) for k in keys}
    for key in keys:
        if before[key] != removed:
            assert after[key] == before[key]
        else:
            assert after[key] in remaining


def test_consistent_hash_is_sticky_spread_and_agrees_across_processes() -> None:
    pool = instances(4)
    a, b = ConsistentHash(), ConsistentHash()
    keys = [f"session-{n}" for n in range(4000)]
    placement = [a.pick(pool, key=k) for k in keys]
    assert placement == [b.pick(pool, key=k) for k in keys]
    assert placement == [a.pick(pool, key=k) for k in keys]
    shares = Counter(i.id for i in placement if i)
    assert min(shares.values()) > 0.15 * len(keys)


def test_unknown_strategy_names_the_valid_ones() -> None:
    with pytest.raises(BalancingConfigError) as caught:
        make_balancer("fastest")
    message = str(caught.value)
    assert "'fastest'" in message
    assert all(name in message for name in STRATEGIES)
    assert isinstance(caught.value, McpgwError)


def test_policy_normalises_names_and_resolves_overrides() -> None:
    policy = BalancingPolicy(strategy="Round-Robin", overrides={"mcp-endpoints@@amap": "LEAST_CONNECTIONS"})
    assert policy.strategy == "round_robin"
    assert policy.strategy_for("mcp-endpoints@@amap", "amap") == "least_connections"
    assert policy.strategy_for("other", "cluster") == "round_robin"
    narrowed = policy.for_cluster("mcp-endpoints-amap")
    assert (narrowed.strategy, dict(narrowed.overrides)) == ("least_connections", {})
    assert ClusterRuntime("mcp-endpoints-amap", narrowed).strategy == "least_connections"
    assert BalancingPolicy(strategy="weighted_round_robin").strategy == "smooth_weighted_round_robin"
    with pytest.raises(BalancingConfigError, match="for service 'svc'"):
        BalancingPolicy(overrides={"svc": "nope"})


def test_impossible_outlier_settings_are_rejected_with_every_problem() -> None:
    with pytest.raises(BalancingConfigError) as caught:
        OutlierPolicy(consecutive_failures=0, max_ejection_percent=150)
    assert "consecutive_failures" in str(caught.value)
    assert "max_ejection_percent" in str(caught.value)


# --- cluster runtime: health, ejection, panic ----------------------------------------------------


def runtime_of(
    pool: Sequence[Instance], *, strategy: str = "round_robin", clock: FakeClock | None = None, **outlier: float
) -> ClusterRuntime:
    policy = BalancingPolicy(strategy=strategy, outlier=OutlierPolicy(**outlier))  # type: ignore[arg-type]
    runtime = ClusterRuntime("svc", policy, clock=clock or FakeClock(), rng=random.Random(0))
    runtime.update_instances(pool)
    return runtime


@settings(max_examples=60, deadline=None)
@given(
    flags=st.lists(st.sampled_from(["active", "unhealthy", "disabled", "drained", "ejected"]), min_size=1, max_size=10),
    strategy=st.sampled_from(STRATEGIES),
)
def test_ejected_unhealthy_and_disabled_instances_are_never_picked_outside_panic(
    flags: list[str], strategy: str
) -> None:
    pool = tuple(
        Instance(
            id=f"i{n}",
            host="h",
            port=8000 + n,
            healthy=flag != "unhealthy",
            enabled=flag != "disabled",
            weight=0.0 if flag == "drained" else 1.0,
        )
        for n, flag in enumerate(flags)
    )
    runtime = runtime_of(pool, strategy=strategy, max_ejection_percent=100, panic_threshold_percent=0)
    for n, flag in enumerate(flags):
        if flag == "ejected":
            fail(runtime, f"i{n}", 5)
    allowed = {f"i{n}" for n, flag in enumerate(flags) if flag == "active"}
    picked = {getattr(runtime.pick(key=f"s{k}"), "id", None) for k in range(40)}
    assert picked <= allowed if allowed else picked == {None}


def test_panic_mode_spreads_over_every_enabled_instance_when_too_few_are_healthy() -> None:
    pool = (
        Instance(id="ok", host="h", port=1),
        Instance(id="sick1", host="h", port=2, healthy=False),
        Instance(id="sick2", host="h", port=3, healthy=False),
        Instance(id="off", host="h", port=4, enabled=False),
    )
    runtime = runtime_of(pool)
    assert runtime.panic
    assert picked_ids(runtime, 30) == {"ok", "sick1", "sick2"}
    runtime.update_instances((pool[0], Instance(id="sick1", host="h", port=2), pool[2], pool[3]))
    assert runtime.stats()["panic"] is False
    assert picked_ids(runtime, 30) == {"ok", "sick1"}


def test_panic_threshold_zero_never_panics_and_gives_none_when_nothing_is_healthy() -> None:
    runtime = runtime_of((Instance(id="sick", host="h", port=1, healthy=False),), panic_threshold_percent=0)
    assert not runtime.panic
    assert runtime.pick() is None


def test_consecutive_failures_eject_with_a_doubling_capped_back_off_and_readmit() -> None:
    clock = FakeClock()
    runtime = runtime_of(instances(4), clock=clock, base_ejection_s=10, max_ejection_s=30)
    fail(runtime, "i0", 4)
    assert state_of(runtime, "i0") == "active"
    fail(runtime, "i0", 1)
    assert state_of(runtime, "i0") == "ejected"
    assert "i0" not in picked_ids(runtime, 20)

    for expected in (10.0, 20.0, 30.0, 30.0):
        if expected != 10.0:
            fail(runtime, "i0", 5)
        assert runtime.stats()["instances"][0]["ejected_for_s"] == expected
        clock.now += expected - 0.001
        assert state_of(runtime, "i0") == "ejected"
        clock.now += 0.001
        assert state_of(runtime, "i0") == "active"
        assert "i0" in picked_ids(runtime, 4)

    clock.now += 30.0
    fail(runtime, "i0", 5)
    assert runtime.stats()["instances"][0]["ejected_for_s"] == 10.0
    assert runtime.stats()["instances"][0]["ejections"] == 5


def test_timeouts_count_as_failures_and_a_success_resets_the_count() -> None:
    runtime = runtime_of(instances(4))
    fail(runtime, "i1", 4, timed_out=True)
    runtime.record_start("i1")
    runtime.record_finish("i1", ok=True, latency=0.01)
    fail(runtime, "i1", 4)
    assert state_of(runtime, "i1") == "active"
    fail(runtime, "i1", 1, timed_out=True)
    assert state_of(runtime, "i1") == "ejected"
    row = runtime.stats()["instances"][1]
    assert (row["failures"], row["timeouts"], row["calls"]) == (9, 5, 10)


def test_no_more_than_the_maximum_share_of_instances_is_ejected() -> None:
    runtime = runtime_of(instances(4), max_ejection_percent=50)
    for instance_id in ("i0", "i1", "i2"):
        fail(runtime, instance_id, 5)
    states = [row["state"] for row in runtime.stats()["instances"]]
    assert states == ["ejected", "ejected", "active", "active"]
    assert not runtime.panic


def test_statistics_survive_an_instance_set_update_for_instances_that_stay() -> None:
    clock = FakeClock()
    runtime = runtime_of(instances(3), clock=clock, strategy="least_connections")
    runtime.record_start("i1")
    fail(runtime, "i2", 5)
    runtime.update_instances((*instances(3)[1:], Instance(id="i9", host="h", port=9)))
    rows = {row["id"]: row for row in runtime.stats()["instances"]}
    assert set(rows) == {"i1", "i2", "i9"}
    assert rows["i1"]["in_flight"] == 1
    assert rows["i2"]["state"] == "ejected"
    assert rows["i9"]["calls"] == 0
    json.dumps(runtime.stats())


def test_an_identical_instance_set_does_not_reset_the_rotation() -> None:
    pool = instances(3)
    runtime = runtime_of(pool)
    first = runtime.pick()
    runtime.update_instances(instances(3))
    assert runtime.pick() != first


def test_cluster_runtime_sticks_sessions_and_fails_over_to_the_next_instance_on_the_ring() -> None:
    runtime = runtime_of(instances(5), strategy="consistent_hash")
    home = runtime.pick(key="session-42")
    assert home is not None
    assert all(runtime.pick(key="session-42") == home for _ in range(10))
    fallback = runtime.pick(key="session-42", exclude={home.id})
    assert fallback is not None
    assert fallback != home
    assert runtime.pick(key="session-42", exclude={home.id}) == fallback
