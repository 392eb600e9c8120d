"""Scale-out benchmark: one worker, two workers, and two replicas behind nginx (issue 13).

    python bench/replicas.py [--concurrency 16] [--seconds 5] [--runs 3]

The same REST tool (a files tree, a loopback backend) served three ways, each
by ``mcpgw serve`` as an operator starts it:
  (1) ``mcpgw serve`` — one gateway process;
  (2) ``mcpgw serve --workers 2`` — two worker processes on one port (SO_REUSEPORT);
  (3) two ``mcpgw serve`` replicas with one ``session_secret``, behind nginx
      (round robin, no affinity): every session's requests alternate replicas.
Each is driven with C concurrent handshake-era sessions of the lean wire client
of ``bench/dataplane.py`` for D seconds, runs interleaved (1, 2, 3, 1, 2, 3, …),
and the median run of each is printed: calls/s, p50/p99, and each process's CPU
per call (the load generator, every gateway process, nginx, the backend), read
from /proc. Everything shares this machine's cores: what bounds the ratio of
(2) to (1) is printed beside it (the cores the gateways could use at all).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from dataplane import WireSession, cpu_seconds, free_port, wait_listening  # noqa: E402

SERVER_ID = "0b5e7a1c-0000-4000-8000-000000000002"
SECRET = "bench-replicas-shared-secret-0123456789"


def build_tree(backend: int) -> Path:
    from tests.support.builders import rest_tool, server_files, tools_doc

    tree = Path(tempfile.mkdtemp(prefix="mcpgw-bench-replicas-"))
    files = server_files(SERVER_ID, "bench", "1.0.0", tools_doc(rest_tool("get_item", "/item")), service="backend")
    for key, content in files.items():
        path = tree / "config" / key.namespace / key.group / key.data_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    naming = tree / "naming/public/DEFAULT_GROUP/backend.json"
    naming.parent.mkdir(parents=True)
    naming.write_text(json.dumps([{"ip": "127.0.0.1", "port": backend}]))
    return tree


def role_backend(port: int) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"q": request.query_params.get("q"), "value": 42})

    uvicorn.run(Starlette(routes=[Route("/item", item)]), host="127.0.0.1", port=port, log_level="error",
                access_log=False)


def children(pid: int) -> list[int]:
    """Direct children of a process (Linux /proc)."""
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def tree_cpu(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        for member in (pid, *children(pid)):
            value = cpu_seconds(member)
            total += value or 0.0
    return total


class Setup:
    """One way of serving: its processes, the URL the load goes to, and the processes whose CPU is counted."""

    def __init__(self, name: str, url: str, processes: list[subprocess.Popen[bytes]], groups: dict[str, list[int]]):
        self.name, self.url, self.processes, self.groups = name, url, processes, groups

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(20)
            except subprocess.TimeoutExpired:
                process.kill()


def serve(tree: Path, port: int, *extra: str, secret: str | None = None) -> subprocess.Popen[bytes]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    env.update(MCPGW_LOG_LEVEL="warning", PYTHONPATH=str(ROOT))
    if secret:
        env["MCPGW_SESSION_SECRET"] = secret
    return subprocess.Popen([sys.executable, "-m", "mcpgw", "serve", "--files", str(tree), "--port", str(port),
                             "--no-demo-backend", *extra], env=env, stdout=subprocess.DEVNULL)


def nginx(upstreams: list[int]) -> tuple[subprocess.Popen[bytes], int]:
    binary = shutil.which("nginx") or "/usr/sbin/nginx"
    prefix = Path(tempfile.mkdtemp(prefix="mcpgw-bench-nginx-"))
    (prefix / "logs").mkdir()
    port = free_port()
    servers = "".join(f"server 127.0.0.1:{u}; " for u in upstreams)
    temp = "".join(f"{kind}_temp_path {prefix}/{kind}; " for kind in ("client_body", "proxy", "fastcgi", "uwsgi",
                                                                       "scgi"))
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off; worker_processes 1; pid {prefix}/nginx.pid; error_log {prefix}/logs/error.log;\n"
        f"events {{ worker_connections 1024; }}\nhttp {{ access_log off; {temp}\n"
        f"  upstream gateways {{ {servers} keepalive 64; }}\n"
        f"  server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass http://gateways; proxy_http_version 1.1; "
        "proxy_set_header Connection \"\"; proxy_buffering off; } }\n}\n")
    return subprocess.Popen([binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf")]), port


async def run_load(url: str, concurrency: int, seconds: float, groups: dict[str, list[int]]) -> dict[str, Any]:
    latencies: list[float] = []
    ready = asyncio.Barrier(concurrency + 1)
    start = asyncio.Event()
    window: dict[str, float] = {}

    async def worker() -> None:
        async with WireSession(url) as session:
            await session.call_tool("get_item", {"q": "warm-up"})
            await ready.wait()
            await start.wait()
            while time.perf_counter() < window["end"]:
                began = time.perf_counter()
                await session.call_tool("get_item", {"q": "x"})
                latencies.append((time.perf_counter() - began) * 1e3)

    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await ready.wait()
    before = {"load": time.process_time(), **{name: tree_cpu(pids) for name, pids in groups.items()}}
    window["end"] = time.perf_counter() + seconds
    start.set()
    await asyncio.gather(*tasks)
    after = {"load": time.process_time(), **{name: tree_cpu(pids) for name, pids in groups.items()}}
    calls = len(latencies)
    ordered = sorted(latencies)
    return {"calls/s": calls / seconds, "p50": statistics.median(ordered),
            "p99": ordered[min(calls - 1, int(0.99 * calls))],
            "cpu": {name: (after[name] - before[name]) / calls * 1e3 for name in before}}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--runs", type=int, default=3, help="interleaved runs of each setup; the median is shown")
    parser.add_argument("--role")
    parser.add_argument("--port", type=int)
    args = parser.parse_args()
    if args.role == "backend":
        role_backend(args.port)
        return
    backend_port = free_port()
    backend = subprocess.Popen([sys.executable, __file__, "--role", "backend", "--port", str(backend_port)])
    tree = build_tree(backend_port)
    setups: list[Setup] = []
    try:
        one = free_port()
        single = serve(tree, one)
        setups.append(Setup("(1) mcpgw serve (1 worker)", f"http://127.0.0.1:{one}/mcp/bench", [single],
                            {"gateway": [single.pid], "backend": [backend.pid]}))
        two = free_port()
        workers = serve(tree, two, "--workers", "2")
        setups.append(Setup("(2) mcpgw serve --workers 2", f"http://127.0.0.1:{two}/mcp/bench", [workers],
                            {"gateway": [workers.pid], "backend": [backend.pid]}))
        a, b = free_port(), free_port()
        replica_a, replica_b = serve(tree, a, secret=SECRET), serve(tree, b, secret=SECRET)
        balancer, lb_port = nginx([a, b])
        setups.append(Setup("(3) 2 replicas behind nginx", f"http://127.0.0.1:{lb_port}/mcp/bench",
                            [balancer, replica_a, replica_b],
                            {"gateway": [replica_a.pid, replica_b.pid], "nginx": [balancer.pid],
                             "backend": [backend.pid]}))
        asyncio.run(measure(setups, [backend_port, one, two, a, b, lb_port], args))
    finally:
        for setup in setups:
            setup.stop()
        backend.terminate()
        backend.wait(10)
        shutil.rmtree(tree, ignore_errors=True)


async def measure(setups: list[Setup], ports: list[int], args: argparse.Namespace) -> None:
    for port in ports:
        await wait_listening(port)
    for setup in setups:  # every gateway (and worker) has synced before anything is measured
        for _ in range(3):
            await run_load(setup.url, 2, 0.3, {})
    results: dict[str, list[dict[str, Any]]] = {s.name: [] for s in setups}
    for _ in range(args.runs):
        for setup in setups:
            results[setup.name].append(await run_load(setup.url, args.concurrency, args.seconds, setup.groups))
    print(f"\nconcurrency {args.concurrency}, {args.seconds:g} s per run, median of {args.runs} interleaved runs "
          f"(wire client); CPU: ms per call, each process group, {os.cpu_count()} cores")
    print(f"{'':<32} {'calls/s':>8} {'p50 ms':>7} {'p99 ms':>7} {'cpu load':>9} {'cpu gw':>8} {'cpu nginx':>9} "
          f"{'cpu back':>9}")
    medians: dict[str, dict[str, Any]] = {}
    for setup in setups:
        runs = sorted(results[setup.name], key=lambda r: r["calls/s"])
        median = runs[len(runs) // 2]
        medians[setup.name] = median
        cpu = median["cpu"]
        print(f"{setup.name:<32} {median['calls/s']:>8.0f} {median['p50']:>7.2f} {median['p99']:>7.2f} "
              f"{cpu['load']:>9.3f} {cpu['gateway']:>8.3f} {cpu.get('nginx', 0.0):>9.3f} {cpu['backend']:>9.3f}")
    first, second = medians[setups[0].name], medians[setups[1].name]
    busy = {name: median["calls/s"] * sum(median["cpu"].values()) / 1e3 for name, median in medians.items()}
    print(f"(2)/(1) calls/s: {second['calls/s'] / first['calls/s']:.2f}x; cores in use (all processes): "
          + ", ".join(f"{name.split()[0]} {value:.2f}" for name, value in busy.items())
          + f" of {os.cpu_count()}")


if __name__ == "__main__":
    main()
