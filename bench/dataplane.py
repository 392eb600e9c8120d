"""Data-plane benchmark: tools/call throughput and latency (issue 3's targets).

    python bench/dataplane.py [--concurrency 1,4,16] [--seconds 5] [--client sdk|wire|sdk,wire]

Three ways to serve the same backend call, each measured with the same load
(C concurrent callers for D seconds, every server in its own process):
  (a) the REST backend called directly over HTTP (aiohttp);
  (b) a hand-written MCP server on the official SDK (MCPServer, stateful JSON
      responses) whose tool calls the backend — what a user would write instead;
  (c) mcpgw serving a files tree whose REST tool points at the backend.
(b) and (c) are called over Streamable HTTP, by default with the official SDK client; (d), a
direct-response tool of mcpgw, shows what the MCP round trip alone costs.

    python bench/dataplane.py --concurrency 1,4,16   # one table per concurrency
    python bench/dataplane.py --client sdk,wire      # the SDK client, then a lean wire-level one

Every row also gives the CPU time per call of each process taking part (the
load generator, the MCP server, the backend), read from /proc over the
measured window.  Everything shares this machine's cores, so once they are
busy, latency is queueing; the CPU columns show who spends it.  One process
drives all C callers, so its CPU per call sets a floor under every MCP row's
latency (printed): with the SDK client (~0.6 ms a call) that floor passes
2 ms at C = 4 on its own.  ``--client wire`` drives the same MCP exchanges
(handshake, session id, ``tools/call``, every answer checked) with a lean
aiohttp client, to see the servers rather than the load generator.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_ID = "0b5e7a1c-0000-4000-8000-000000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- roles (each runs in its own process) ---------------------------------------


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


def role_sdk(port: int, backend: int) -> None:
    import httpx
    import uvicorn
    from mcp.server.mcpserver import MCPServer

    server = MCPServer("handwritten", log_level="ERROR")
    client = httpx.AsyncClient(base_url=f"http://127.0.0.1:{backend}", trust_env=False)

    @server.tool()
    async def get_item(q: str) -> str:
        """Fetch an item from the backend."""
        response = await client.get("/item", params={"q": q})
        return response.text

    app = server.streamable_http_app(json_response=True)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)


def role_mcpgw(port: int, backend: int) -> None:
    import logging

    import structlog
    import uvicorn

    from mcpgw.gateway.app import Gateway
    from mcpgw.gateway.settings import Settings
    from tests.support.builders import rest_tool, server_files, tools_doc

    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.WARNING))
    tree = Path(tempfile.mkdtemp(prefix="mcpgw-bench-"))
    echo = rest_tool("echo", "", template={"requestTemplate": {"url": "", "method": "GET"},
                                           "responseTemplate": {"body": "{{ .args.q }}"}})
    files = server_files(SERVER_ID, "bench", "1.0.0", tools_doc(rest_tool("get_item", "/item"), echo),
                         service="backend")
    for key, content in files.items():
        path = tree / "config" / key.namespace / key.group / key.data_id
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content)
    naming = tree / "naming/public/DEFAULT_GROUP/backend.json"
    naming.parent.mkdir(parents=True)
    naming.write_text(json.dumps([{"ip": "127.0.0.1", "port": backend}]))
    gateway = Gateway(Settings(files=tree, log_level="warning"))
    uvicorn.run(gateway.asgi(), host="127.0.0.1", port=port, log_level="error", access_log=False)


# -- load -------------------------------------------------------------------------


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process, from /proc (None where there is no /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    """CPU per call of the load generator (this process) and of the given server processes."""

    def __init__(self, servers: dict[str, int]) -> None:
        self.servers = servers
        self.start: dict[str, float | None] = {}

    def begin(self) -> None:
        self.start = {"load": time.process_time(), **{name: cpu_seconds(pid) for name, pid in self.servers.items()}}

    def end(self, calls: int) -> dict[str, float | None]:
        now = {"load": time.process_time(), **{name: cpu_seconds(pid) for name, pid in self.servers.items()}}
        out: dict[str, float | None] = {}
        for name, before in self.start.items():
            after = now[name]
            out[name] = None if before is None or after is None or not calls else (after - before) / calls * 1e3
        return out


async def drive(call: Callable[[], Awaitable[None]], concurrency: int, seconds: float) -> tuple[int, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append((time.perf_counter() - started) * 1e3)

    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), latencies


async def wait_listening(port: int) -> None:
    for _ in range(200):
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
            writer.close()
            return
        except OSError:
            await asyncio.sleep(0.05)
    raise RuntimeError(f"nothing listens on {port}")


async def measure_direct(
    backend: int, concurrency: int, seconds: float, meter: CpuMeter
) -> tuple[int, list[float], dict[str, float | None]]:
    # The fastest Python client we know (aiohttp, ~80 µs CPU a request against httpx's ~700 µs), so the
    # baseline is as low as it gets and the overhead of (c) over it is not flattered.
    import aiohttp

    async with aiohttp.ClientSession(f"http://127.0.0.1:{backend}") as client:
        async def call() -> None:
            async with client.get("/item", params={"q": "x"}) as response:
                response.raise_for_status()
                await response.read()

        await drive(call, concurrency, 0.5)
        meter.begin()
        count, latencies = await drive(call, concurrency, seconds)
        return count, latencies, meter.end(count)


class WireSession:
    """A lean MCP client over aiohttp: the handshake, then ``tools/call`` POSTs with the session id.

    Speaks exactly what the SDK client sends on the wire for a handshake-era
    session with JSON responses (both servers here answer JSON) and checks
    every answer (JSON-RPC id, no error, no ``isError``), at ~1/6 of the SDK
    client's CPU per call, so that the load generator stops being the
    bottleneck on a small machine.
    """

    VERSION = "2025-11-25"

    def __init__(self, url: str) -> None:
        self.url = url
        self.headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                        "mcp-protocol-version": self.VERSION}
        self.next_id = 0

    async def __aenter__(self) -> WireSession:
        import aiohttp

        self.http = aiohttp.ClientSession()
        answer = await self._post("initialize", {"protocolVersion": self.VERSION, "capabilities": {},
                                                 "clientInfo": {"name": "bench-wire", "version": "0"}})
        if "result" not in answer:
            raise RuntimeError(f"initialize failed: {answer}")
        async with self.http.post(self.url, headers=self.headers,
                                  json={"jsonrpc": "2.0", "method": "notifications/initialized"}) as response:
            if response.status != 202:
                raise RuntimeError(f"notifications/initialized answered {response.status}")
        return self

    async def __aexit__(self, *exc: object) -> None:
        async with self.http.delete(self.url, headers=self.headers):
            pass
        await self.http.close()

    async def _post(self, method: str, params: dict[str, object]) -> dict[str, object]:
        self.next_id += 1
        body = {"jsonrpc": "2.0", "id": self.next_id, "method": method, "params": params}
        async with self.http.post(self.url, headers=self.headers, json=body) as response:
            if response.content_type != "application/json":
                raise RuntimeError(f"{method}: expected a JSON answer, got {response.status} {response.content_type}")
            if "mcp-session-id" in response.headers:
                self.headers["mcp-session-id"] = response.headers["mcp-session-id"]
            answer: dict[str, object] = await response.json()
        if answer.get("id") != self.next_id or "error" in answer:
            raise RuntimeError(f"{method} failed: {answer}")
        return answer

    async def call_tool(self, tool: str, arguments: dict[str, object]) -> None:
        answer = await self._post("tools/call", {"name": tool, "arguments": arguments})
        result = answer.get("result")
        if not isinstance(result, dict) or result.get("isError"):
            raise RuntimeError(f"tools/call {tool} failed: {answer}")


async def measure_mcp(
    url: str, tool: str, concurrency: int, seconds: float, meter: CpuMeter, client: str = "sdk"
) -> tuple[int, list[float], dict[str, float | None]]:
    from mcp.client import Client

    latencies: list[float] = []
    ready = asyncio.Barrier(concurrency + 1)
    start = asyncio.Event()
    window: dict[str, float] = {}

    async def sdk_worker() -> None:
        # The SDK client's task groups must be entered and left by the same task.
        async with Client(url, mode="legacy", cache=None) as session:
            await session.call_tool(tool, {"q": "warm-up"})
            await ready.wait()
            await start.wait()
            while time.perf_counter() < window["end"]:
                started = time.perf_counter()
                result = await session.call_tool(tool, {"q": "x"})
                if result.is_error:
                    raise RuntimeError(str(result.content))
                latencies.append((time.perf_counter() - started) * 1e3)

    async def wire_worker() -> None:
        async with WireSession(url) as session:
            await session.call_tool(tool, {"q": "warm-up"})
            await ready.wait()
            await start.wait()
            while time.perf_counter() < window["end"]:
                started = time.perf_counter()
                await session.call_tool(tool, {"q": "x"})
                latencies.append((time.perf_counter() - started) * 1e3)

    worker = {"sdk": sdk_worker, "wire": wire_worker}[client]
    tasks = [asyncio.create_task(worker()) for _ in range(concurrency)]
    await ready.wait()
    window["end"] = time.perf_counter() + seconds
    meter.begin()
    start.set()
    await asyncio.gather(*tasks)
    return len(latencies), latencies, meter.end(len(latencies))


def report(name: str, count: int, latencies: list[float], cpu: dict[str, float | None],
           seconds: float) -> dict[str, float]:
    ordered = sorted(latencies)
    row = {"calls/s": count / seconds, "p50 ms": statistics.median(ordered),
           "p99 ms": ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))]}

    def ms(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.3f}"

    load = cpu.get("load")
    if load is not None:
        row["cpu load"] = load
    print(f"{name:<44} {row['calls/s']:>9.0f} {row['p50 ms']:>8.2f} {row['p99 ms']:>8.2f} "
          f"{ms(cpu.get('load')):>9} {ms(cpu.get('server')):>9} {ms(cpu.get('backend')):>9}")
    return row


def cli() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--concurrency", default="1,4,16",
                        help="comma-separated concurrencies; one table each (default 1,4,16)")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--client", default="sdk", choices=["sdk", "wire", "sdk,wire"],
                        help="MCP load generator: the official SDK client (default), a lean aiohttp client "
                             "speaking the same wire (wire), or both, one table each")
    parser.add_argument("--role")
    parser.add_argument("--port", type=int)
    parser.add_argument("--backend", type=int)
    args = parser.parse_args()
    if args.role:
        {"backend": lambda: role_backend(args.port), "sdk": lambda: role_sdk(args.port, args.backend),
         "mcpgw": lambda: role_mcpgw(args.port, args.backend)}[args.role]()
        return
    backend, sdk, gw = free_port(), free_port(), free_port()
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen([sys.executable, __file__, "--role", role, "--port", str(port), "--backend", str(backend)],
                         env=env)
        for role, port in (("backend", backend), ("sdk", sdk), ("mcpgw", gw))
    ]
    pids = {role: p.pid for role, p in zip(("backend", "sdk", "mcpgw"), procs, strict=True)}
    try:
        asyncio.run(main(args, backend, sdk, gw, pids))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


async def main(args: argparse.Namespace, backend: int, sdk: int, gw: int, pids: dict[str, int]) -> None:
    for port in (backend, sdk, gw):
        await wait_listening(port)
    concurrencies = [int(c) for c in str(args.concurrency).split(",")]
    for client in str(args.client).split(","):
        for concurrency in concurrencies:
            await table(concurrency, args.seconds, backend, sdk, gw, pids, client)


async def table(concurrency: int, seconds: float, backend: int, sdk: int, gw: int, pids: dict[str, int],
                client: str) -> None:
    print(f"\nconcurrency {concurrency}, {seconds:g} s each, MCP load generator: {client} client; "
          "CPU columns: ms of CPU per call in each process")
    print(f"{'':<44} {'calls/s':>9} {'p50 ms':>8} {'p99 ms':>8} {'cpu load':>9} {'cpu srv':>9} {'cpu back':>9}")
    direct = CpuMeter({"backend": pids["backend"]})
    via_sdk = CpuMeter({"server": pids["sdk"], "backend": pids["backend"]})
    via_gw = CpuMeter({"server": pids["mcpgw"], "backend": pids["backend"]})
    a = report("(a) backend directly over HTTP", *await measure_direct(backend, concurrency, seconds, direct), seconds)
    b = report("(b) hand-written official-SDK server", *await measure_mcp(
        f"http://127.0.0.1:{sdk}/mcp", "get_item", concurrency, seconds, via_sdk, client), seconds)
    c = report("(c) mcpgw", *await measure_mcp(
        f"http://127.0.0.1:{gw}/mcp/bench", "get_item", concurrency, seconds, via_gw, client), seconds)
    d = report("(d) mcpgw direct-response tool (no backend)", *await measure_mcp(
        f"http://127.0.0.1:{gw}/mcp/bench", "echo", concurrency, seconds, via_gw, client), seconds)
    added = c["p50 ms"] - a["p50 ms"]
    print(f"(c)/(b) throughput: {c['calls/s'] / b['calls/s']:.2f}x (target >= 1.0x)")
    print(f"(c) p50 minus (a) p50: {added:.2f} ms (target <= 2 ms: {'met' if added <= 2 else 'MISSED'})")
    print(f"(d) p50, the MCP round trip alone ({client} client + gateway, no backend): {d['p50 ms']:.2f} ms")
    load_cpu = c.get("cpu load")
    if load_cpu is not None:
        # One load-generator process serves all C callers, so it finishes at most 1/cpu calls a second and,
        # by Little's law, no mean latency of (c) can be below C x its CPU per call, whatever the gateway does.
        busy = c["calls/s"] * load_cpu / 1e3
        print(f"floor set by the load generator alone: {concurrency} x {load_cpu:.3f} ms = "
              f"{concurrency * load_cpu:.2f} ms mean latency (it is busy {busy:.0%} of the time)")


if __name__ == "__main__":
    cli()
