"""Load-balancer benchmark (issue 5's targets).

    python bench/lb.py [--number 200000]

Reports, for every strategy at 10 and 1,000 instances (equal weights, and
weights 1, 2, 3 repeating): the cost of one pick on the bare strategy and
through ``ClusterRuntime.pick`` (the gateway's path: ejection check +
candidate tuple), measured with ``timeit``. Target: ≤ 2 µs per pick for round
robin and least connections at 1,000 instances. Then the measured shares of
three instances weighted 1, 2, 3 over 60,000 picks (least connections and
response time under a closed-loop load where every instance answers in the
same time; consistent hashing over distinct session ids).
"""

from __future__ import annotations

import argparse
import itertools
import random
import sys
import timeit
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcpgw.registry.balancing import STRATEGIES, BalancingPolicy, ClusterRuntime, make_balancer
from mcpgw.registry.models import Instance

TARGET_US = 2.0
TARGETED = {"round_robin", "least_connections", "smooth_weighted_round_robin"}


def pool(count: int, *, weighted: bool) -> tuple[Instance, ...]:
    return tuple(
        Instance(
            id=f"10.0.{n // 250}.{n % 250}#8000",
            host=f"10.0.{n // 250}.{n % 250}",
            port=8000,
            weight=float(1 + n % 3) if weighted else 1.0,
        )
        for n in range(count)
    )


def cost_us(count: int, weighted: bool, strategy: str, number: int) -> tuple[float, float]:
    instances = pool(count, weighted=weighted)
    sessions = itertools.cycle([f"session-{n}" for n in range(4096)])
    balancer = make_balancer(strategy, rng=random.Random(1))
    runtime = ClusterRuntime("bench", BalancingPolicy(strategy=strategy), rng=random.Random(1))
    runtime.update_instances(instances)
    # Some calls in flight, so cost comparisons are not all ties.
    for instance in instances[::3]:
        balancer.on_start(instance.id)
        runtime.record_start(instance.id)
        balancer.on_finish(instance.id, ok=True, latency_s=0.01)
        runtime.record_finish(instance.id, ok=True, latency=0.01)
        balancer.on_start(instance.id)
        runtime.record_start(instance.id)
    balancer.pick(instances, key="warm-up")
    runtime.pick(key="warm-up")

    def bare() -> None:
        balancer.pick(instances, key=next(sessions))

    def through_runtime() -> None:
        runtime.pick(key=next(sessions))

    best_bare = min(timeit.repeat(bare, number=number, repeat=3)) / number
    best_runtime = min(timeit.repeat(through_runtime, number=number, repeat=3)) / number
    return best_bare * 1e6, best_runtime * 1e6


def shares(strategy: str, picks: int = 60_000) -> list[float]:
    instances = pool(3, weighted=True)
    runtime = ClusterRuntime("bench", BalancingPolicy(strategy=strategy), rng=random.Random(2))
    runtime.update_instances(instances)
    rng = random.Random(3)
    in_flight: list[str] = []
    counts: Counter[str] = Counter()
    for n in range(picks):
        if len(in_flight) >= 30:
            done = in_flight.pop(rng.randrange(len(in_flight)))
            runtime.record_finish(done, ok=True, latency=0.010)
        chosen = runtime.pick(key=f"session-{n}")
        assert chosen is not None
        counts[chosen.id] += 1
        runtime.record_start(chosen.id)
        in_flight.append(chosen.id)
    return [100.0 * counts[i.id] / picks for i in instances]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=200_000, help="picks per timing run")
    args = parser.parse_args()

    print(f"Cost per pick (best of 3 x {args.number} picks), µs")
    print(f"{'strategy':<30} {'instances':>9} {'weights':>8} {'bare':>8} {'runtime':>8}  target")
    misses = []
    for strategy in STRATEGIES:
        for count in (10, 1000):
            for weighted in (False, True):
                bare, through = cost_us(count, weighted, strategy, args.number)
                verdict = ""
                if strategy in TARGETED and count == 1000:
                    verdict = "ok" if through <= TARGET_US else "MISSED"
                    if verdict == "MISSED":
                        misses.append(strategy)
                label = "1,2,3" if weighted else "equal"
                print(f"{strategy:<30} {count:>9} {label:>8} {bare:>8.2f} {through:>8.2f}  {verdict}")

    print()
    print("Shares of three instances weighted 1, 2, 3 over 60,000 picks, %  (ideal 16.7 / 33.3 / 50.0)")
    print(f"{'strategy':<30} {'w=1':>6} {'w=2':>6} {'w=3':>6}")
    for strategy in STRATEGIES:
        one, two, three = shares(strategy)
        print(f"{strategy:<30} {one:>6.1f} {two:>6.1f} {three:>6.1f}")
    if misses:
        print(f"\ntarget of {TARGET_US} µs missed by: {', '.join(sorted(set(misses)))}")
        sys.exit(1)


if __name__ == "__main__":
    main()
