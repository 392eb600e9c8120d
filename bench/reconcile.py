"""Reconciler benchmark over the memory source (issue 2's targets).

    python bench/reconcile.py [--servers 1000,10000] [--tools 10] [--changes 200]

Reports: initial sync time and memory per tool for N servers x T tools; p50/p99
latency from one server's change at the source to the swapped state (at 100
servers and at the largest N); how many reconciles a burst of 100 changes to
one server causes.  Every tool has its own schema and templates (no sharing
that real specs would not have).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.gateway.app import FIRST_SYNC_GC_PAUSE_LIMIT, pause_collector_until
from mcpgw.registry.server_register import ServerRegister
from mcpgw.registry.state import StateChange, StateStore
from mcpgw.remote.base import ConfigKey, ServiceInstance, ServiceKey, tools_spec_key
from mcpgw.remote.memory import MemorySource
from mcpgw.remote.overlay import RegisteringSource
from tests.support.builders import server_files


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


def tools_spec(server: int, tools: int, rev: int = 0) -> str:
    out = []
    meta = {}
    for t in range(tools):
        name = f"tool_{t}"
        arg = f"arg_{server}_{t}"
        out.append({
            "name": name, "description": f"Tool {t} of server {server} (rev {rev})",
            "inputSchema": {"type": "object", "properties": {arg: {"type": "string"}, "limit": {"type": "integer",
                            "default": 10 + t}}, "required": [arg]},
        })
        meta[name] = {"enabled": True, "templates": {"json-go-template": {
            "requestTemplate": {"url": f"/api/{server}/{t}/{{{arg}}}", "method": "GET",
                                "headers": [{"key": "X-Rev", "value": f"{rev}"}]},
            "argsPosition": {arg: "path", "limit": "query"},
            "responseTemplate": {"body": "{{ .result }} ({{ len .items }} items)"},
        }}}
    return json.dumps({"tools": out, "toolsMeta": meta})


def server_id(i: int) -> str:
    return f"{i:08x}-0000-4000-8000-{i:012x}"


async def initial_sync(
    n: int, tools: int
) -> tuple[float, float, MemorySource, StateStore, MCPServerAdapter, RegisteringSource]:
    source = MemorySource()
    register = ServerRegister()
    overlay = RegisteringSource(source, register)
    await overlay.start()
    for i in range(n):
        files = server_files(server_id(i), f"server-{i}", "1.0.0", tools_spec(i, tools), service=f"svc-{i}")
        for key, content in files.items():
            await source.put_config(key, content)
        await source.set_instances(ServiceKey("public", "DEFAULT_GROUP", f"svc-{i}"),
                                   [ServiceInstance(ip="10.0.0.1", port=8000 + i % 1000)])
    gc.collect()
    before = rss_bytes()
    store = StateStore()
    # As the gateway wires it: the adapter reads through the overlay that merges connected servers
    # and mirrors every instance into the in-memory server register.
    adapter = MCPServerAdapter(overlay, store, interval=3600)
    synced = asyncio.Event()
    # The gateway pauses the collector during its first sync and freezes the result: do the same.
    pause = asyncio.create_task(pause_collector_until(synced, FIRST_SYNC_GC_PAUSE_LIMIT))
    started = time.perf_counter()
    await adapter.quiesce()
    elapsed = time.perf_counter() - started
    synced.set()
    await pause
    per_tool = (rss_bytes() - before) / (n * tools)
    assert len(store.current.servers) == n, "not every server was applied"
    assert register.count() == n, "not every instance reached the server register"
    return elapsed, per_tool, source, store, adapter, overlay


async def change_latency(source: MemorySource, store: StateStore, n: int, tools: int, changes: int) -> list[float]:
    seen = asyncio.Event()
    target: dict[str, str] = {}

    def on_change(change: StateChange) -> None:
        if target.get("id") in change.servers:
            seen.set()

    store.subscribe(on_change)
    latencies = []
    for c in range(changes):
        i = (c * 7919) % n
        sid = server_id(i)
        target["id"] = sid
        seen.clear()
        key: ConfigKey = tools_spec_key(sid, "1.0.0")
        started = time.perf_counter()
        await source.put_config(key, tools_spec(i, tools, rev=c + 1))
        await asyncio.wait_for(seen.wait(), 10)
        latencies.append((time.perf_counter() - started) * 1e3)
    return latencies


async def burst(source: MemorySource, adapter: MCPServerAdapter, tools: int) -> int:
    sid = server_id(0)
    listener = adapter.listeners[sid]
    await adapter.quiesce()
    before = listener.reconciles
    for c in range(100):
        await source.put_config(tools_spec_key(sid, "1.0.0"), tools_spec(0, tools, rev=10_000 + c))
    await adapter.quiesce()
    return listener.reconciles - before


def pct(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


async def main() -> None:
    import structlog

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    parser = argparse.ArgumentParser()
    parser.add_argument("--servers", default="100,1000,10000")
    parser.add_argument("--tools", type=int, default=10)
    parser.add_argument("--changes", type=int, default=200)
    args = parser.parse_args()
    print(f"{'servers':>8} {'tools':>7} {'sync s':>8} {'KB/tool':>8} {'chg p50 ms':>11} {'chg p99 ms':>11} "
          f"{'burst→reconciles':>17}")
    for n in [int(x) for x in args.servers.split(",")]:
        elapsed, per_tool, source, store, adapter, overlay = await initial_sync(n, args.tools)
        lat = await change_latency(source, store, n, args.tools, args.changes)
        reconciles = await burst(source, adapter, args.tools)
        print(f"{n:>8} {n * args.tools:>7} {elapsed:>8.2f} {per_tool / 1024:>8.1f} {statistics.median(lat):>11.2f} "
              f"{pct(lat, 99):>11.2f} {reconciles:>17}")
        await adapter.close()
        await overlay.stop()
        del source, store, adapter, overlay
        gc.collect()


if __name__ == "__main__":
    asyncio.run(main())
