"""Propagation benchmark over the Nacos protocol double or a real Nacos (targets: p99 <= 200 ms for both).

    python bench/propagation.py [--rounds 50]
    python bench/propagation.py --nacos HOST:PORT [--username nacos --password P] [--rounds 50]

By default one process runs the double; with ``--nacos`` the same rounds run
against that server (e.g. ``deploy/nacos/run.sh 8848``), where the naming
push cannot be timestamped (only the end-to-end figures are printed), names
are unique per run and the server is deleted afterwards.  Nacos batches a
service's changes for ``nacos.naming.push.pushTaskDelay`` (500 ms by default)
before it pushes them: that delay is the floor of (b) against a real server
(``NACOS_PUSH_DELAY_MS`` of ``deploy/nacos/run.sh`` sets it).

One process runs a gateway over the real ``NacosSource`` (the SDK talking
gRPC to Nacos), REST backends on loopback, and an MCP client of
the gateway.  Publishing and registering are mcpgw's own code: ``adapter.publish``
over the Nacos 3 admin API and ``adapter.registration`` (an ephemeral instance
over a connection of its own, as ``mcpgw register`` holds it).  Each round:

(a) publish -> callable: a new version carrying a new tool is published
    (``PUT /nacos/v3/admin/ai/mcp``); the clock starts when the publish starts and
    stops when the tool, called through the MCP client as soon as the
    gateway's state has it, answers from the backend.  The state swap is
    reported on its own.
(b) deregistration -> gone: a registered instance is released (deregistered,
    then its connection closed, as ``mcpgw register`` does on SIGTERM); the
    clock starts at the release and stops when the instance has left the
    cluster in the gateway's state.  The double's naming push is timestamped
    too, so the share of the path that is ours (push -> cluster) is visible.
    A second instance stays registered throughout, so the cluster never
    empties.

Everything shares one event loop on a 2-core machine, so the double and
the client add their own time to every figure: read them as upper bounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import math
import os
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcp.client import Client

from mcpgw.adapter.publish import Publisher
from mcpgw.adapter.publish_targets import nacos_target
from mcpgw.gateway.app import Gateway
from mcpgw.gateway.settings import Settings
from mcpgw.registry.state import GatewayState
from mcpgw.remote.base import ServiceKey
from tests.gateway import listening_socket, serving, text
from tests.gateway.test_nacos_serve import (
    Publishing,
    Registrar,
    Served,
    backends,
    instance_ports,
    rest_tools,
    tool_names,
)
from tests.support.nacos_double import NacosDouble
from tests.support.nacos_target import NacosTarget

TARGET_P99_MS = 200.0
_RUN = uuid.uuid4().hex[:6]
SERVER = f"bench-weather-{_RUN}"
SERVICE = ServiceKey("public", "DEFAULT_GROUP", f"bench-weather-api-{_RUN}")


def percentile(samples: list[float], q: float) -> float:
    """Nearest rank: with 50 samples, p99 is the largest."""
    ordered = sorted(samples)
    return ordered[max(math.ceil(q * len(ordered)) - 1, 0)]


def report(title: str, samples_s: list[float], *, target: bool = False) -> bool:
    ms = [s * 1000 for s in samples_s]
    p99 = percentile(ms, 0.99)
    verdict = ""
    if target:
        verdict = f"  {'ok' if p99 <= TARGET_P99_MS else 'MISSED'} (target p99 <= {TARGET_P99_MS:g} ms)"
    print(
        f"  {title:<36} p50 {percentile(ms, 0.50):7.1f}  p95 {percentile(ms, 0.95):7.1f}  "
        f"p99 {p99:7.1f}  max {max(ms):7.1f} ms{verdict}"
    )
    return not target or p99 <= TARGET_P99_MS


def quiet() -> None:
    # The SDK logs a warning per config read (no failover file); only errors matter here.
    handler = logging.StreamHandler()
    handler.setLevel(logging.ERROR)
    logging.getLogger().addHandler(handler)
    for name in ("config", "naming"):
        logging.getLogger(name).propagate = False
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.ERROR))


def has_tool(tool: str) -> Callable[[GatewayState], bool]:
    return lambda state: tool in tool_names(state, SERVER)


async def publish_rounds(
    rounds: int, served: Served, publisher: Publishing, session: Client
) -> tuple[list[float], list[float]]:
    to_state, to_call = [], []
    for n in range(1, rounds + 1):
        tool = f"tool_{n}"
        published = time.perf_counter()
        await publisher.update(SERVER, f"1.{n}.0", SERVICE, rest_tools(tool))
        publisher.call_durations.append(time.perf_counter() - published)
        async with asyncio.timeout(10):
            await served.until(has_tool(tool))
        swapped = time.perf_counter()
        result = await session.call_tool(tool, {"q": str(n)})
        answered = time.perf_counter()
        if result.is_error or json.loads(text(result))["path"] != f"/echo/{tool}":
            raise RuntimeError(f"round {n}: {tool} did not answer from the backend: {text(result)}")
        to_state.append(swapped - published)
        to_call.append(answered - published)
    return to_state, to_call


async def deregister_rounds(
    rounds: int, served: Served, registrar: Registrar, double: NacosDouble | None, server_id: str, port: int
) -> tuple[list[float], list[float], list[float]]:
    to_push, to_cluster, push_to_cluster = [], [], []
    pushed: list[float] = []

    def on_push(request_type: str, body: dict[str, Any]) -> None:
        if request_type != "NotifySubscriberRequest" or body.get("serviceName") != SERVICE.service:
            return
        if port not in {host["port"] for host in body["serviceInfo"]["hosts"]}:
            pushed.append(time.perf_counter())

    def has_it(present: bool) -> Callable[[GatewayState], bool]:
        return lambda state: (port in instance_ports(state, server_id)) == present

    if double is not None:
        double.push_observers.append(on_push)
    try:
        for _ in range(rounds):
            await registrar.register(SERVICE, port)
            async with asyncio.timeout(10):
                await served.until(has_it(True))
            pushed.clear()
            started = time.perf_counter()
            await registrar.deregister(SERVICE, port)
            async with asyncio.timeout(10):
                await served.until(has_it(False))
            gone = time.perf_counter()
            to_cluster.append(gone - started)
            if double is None:
                continue
            if not pushed:
                raise RuntimeError("the double never pushed the deregistration")
            to_push.append(pushed[0] - started)
            push_to_cluster.append(gone - pushed[0])
    finally:
        if double is not None:
            double.push_observers.remove(on_push)
    return to_push, to_cluster, push_to_cluster


async def measure(rounds: int, target: NacosTarget, state_dir: Path) -> dict[str, list[float]]:
    async with (
        backends("stable", "leaving") as [stable, leaving], Registrar(target, state_dir / "registrar") as registrar,
        nacos_target(target.server_addr, username=target.username, password=target.password) as publish_target,
    ):
        publisher = Publishing(Publisher(publish_target))
        publisher.call_durations = []
        await registrar.register(SERVICE, stable.port)
        server_id = await publisher.create(SERVER, "1.0.0", SERVICE, rest_tools("tool_0"))
        try:
            settings = Settings(
                nacos=target.server_addr,
                username=target.username,
                password=target.password,
                state_dir=state_dir / "gateway",
            )
            gateway = Gateway(settings)
            async with serving(gateway.asgi(), listening_socket()) as url:
                served = Served(url, gateway)
                async with asyncio.timeout(30):
                    await gateway.adapter.ready.wait()
                    await served.until(lambda state: "tool_0" in tool_names(state, SERVER))
                async with served.client(SERVER) as session:
                    to_state, to_call = await publish_rounds(rounds, served, publisher, session)
                to_push, to_cluster, push_to_cluster = await deregister_rounds(
                    rounds, served, registrar, target.double, server_id, leaving.port
                )
        finally:
            if target.double is None:
                await publisher.delete(SERVER)
    return {
        "publish_call": publisher.call_durations, "to_state": to_state, "to_call": to_call,
        "to_push": to_push, "to_cluster": to_cluster, "push_to_cluster": push_to_cluster,
    }


async def main(rounds: int, nacos: str | None, username: str | None, password: str | None) -> int:
    quiet()
    with tempfile.TemporaryDirectory(prefix="mcpgw-bench-") as tmp:
        if nacos:
            figures = await measure(rounds, NacosTarget("real", nacos, username, password), Path(tmp))
        else:
            async with NacosDouble() as double:
                target = NacosTarget("double", double.server_addr, None, None, double=double)
                figures = await measure(rounds, target, Path(tmp))

    print(f"propagation over {'the real Nacos at ' + nacos if nacos else 'the Nacos double'}, {rounds} rounds each")
    print("(a) publish started ->")
    report("the publish call returned", figures["publish_call"])
    report("state has the new tool", figures["to_state"])
    report("new tool answered through MCP", figures["to_call"])
    print("    publish returned ->")
    after = [call - took for call, took in zip(figures["to_call"], figures["publish_call"], strict=True)]
    ok = report("new tool answered through MCP", after, target=True)
    print("(b) deregistration called ->")
    if figures["to_push"]:
        report("double pushed it", figures["to_push"])
    ok = report("instance left the gateway's cluster", figures["to_cluster"], target=True) and ok
    if figures["push_to_cluster"]:
        report("  of which push -> cluster", figures["push_to_cluster"])
    return 0 if ok else 1


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=50, help="rounds of each measurement (default 50)")
    parser.add_argument("--nacos", metavar="HOST:PORT", help="a real Nacos 3 instead of the double")
    parser.add_argument("--username", default="nacos", help="with --nacos (default nacos)")
    parser.add_argument("--password", default=os.environ.get("NACOS_PASSWORD", "mcpgw-dev-password"),
                        help="with --nacos (default $NACOS_PASSWORD, else mcpgw-dev-password)")
    args = parser.parse_args()
    sys.exit(asyncio.run(main(args.rounds, args.nacos, args.username, args.password)))
