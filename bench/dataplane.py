"""Data-plane benchmark: tools/call throughput and latency (issue 3's targets).

    python bench/dataplane.py [--concurrency 1,4,16] [--seconds 5] [--client sdk|wire|sdk,wire]

Three ways to serve the same backend call, each measured with the same load
(C concurrent callers for D seconds, every server in its own process):
  (a) the REST backend called directly over HTTP (aiohttp);
  (b) a hand-written MCP server on the official SDK (MCPServer, stateful JSON
      responses) whose tool calls the backend — what a user would write instead;
  (c) mcpgw serving a files tree whose REST tool points at the backend.
(b) and (c) are called over Streamable HTTP, by default with the official SDK client; (d), a
direct-response tool of mcpgw, shows what the MCP round trip alone costs.  (e) and (f) are (c)
with the front door on (a second gateway process configured with an API key and a JWT provider
whose JWKS the backend process serves): callers present an API key, then a JWT (RS256).  After the
tables, the front door's own cost per request is measured in this process, on the middleware
alone (no network, no MCP), without authentication, with an API key and with a JWT whose keys
are cached: the "added cost per call" of authentication.

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
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

SERVER_ID = "0b5e7a1c-0000-4000-8000-000000000001"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# -- roles (each runs in its own process) ---------------------------------------


def role_backend(port: int, jwks: str) -> None:
    import uvicorn
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def item(request: Request) -> JSONResponse:
        return JSONResponse({"q": request.query_params.get("q"), "value": 42})

    published = json.loads(Path(jwks).read_text())

    async def keys(request: Request) -> JSONResponse:
        return JSONResponse(published)

    uvicorn.run(Starlette(routes=[Route("/item", item), Route("/jwks.json", keys)]), host="127.0.0.1", port=port,
                log_level="error", access_log=False)


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


API_KEY = "bench-api-key-0123456789abcdef"
ISSUER = "https://id.bench.invalid"


class Credentials:
    """The API key and a JWT (RS256) the authenticated gateway accepts, and the JWKS that verifies it."""

    def __init__(self) -> None:
        from cryptography.hazmat.primitives.asymmetric import rsa
        from jwt.algorithms import RSAAlgorithm

        private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        public: dict[str, object] = RSAAlgorithm.to_jwk(private.public_key(), as_dict=True)
        self.jwks = {"keys": [{**public, "kid": "bench-1", "use": "sig", "alg": "RS256"}]}
        self._private = private
        self.token = self.new_token()

    def new_token(self, sub: str = "bench") -> str:
        import jwt

        now = int(time.time())
        return jwt.encode({"iss": ISSUER, "aud": "mcpgw", "sub": sub, "iat": now, "exp": now + 3600,
                           "scope": "bench"}, self._private, algorithm="RS256", headers={"kid": "bench-1"})

    @staticmethod
    def auth(jwks_url: str) -> dict[str, object]:
        import hashlib

        return {"api_keys": [{"name": "bench", "key_sha256": hashlib.sha256(API_KEY.encode()).hexdigest(),
                              "allow": ["bench/*"]}],
                "jwt": {"jwks_url": jwks_url, "issuer": ISSUER, "audience": "mcpgw",
                        "rules": [{"claim": "scope", "value": "bench", "allow": ["bench/*"]}]}}


def role_mcpgw(port: int, backend: int, auth: bool = False) -> None:
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
    extra: dict[str, Any] = {"auth": Credentials.auth(f"http://127.0.0.1:{backend}/jwks.json")} if auth else {}
    gateway = Gateway(Settings.model_validate({"files": tree, "log_level": "warning", **extra}))
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

    def __init__(self, url: str, credential: str | None = None) -> None:
        self.url = url
        self.headers = {"accept": "application/json, text/event-stream", "content-type": "application/json",
                        "mcp-protocol-version": self.VERSION}
        if credential is not None:
            self.headers["authorization"] = f"Bearer {credential}"
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
    url: str, tool: str, concurrency: int, seconds: float, meter: CpuMeter, client: str = "sdk",
    credential: str | None = None,
) -> tuple[int, list[float], dict[str, float | None]]:
    import httpx2
    from mcp.client import Client
    from mcp.client.streamable_http import streamable_http_client

    latencies: list[float] = []
    ready = asyncio.Barrier(concurrency + 1)
    start = asyncio.Event()
    window: dict[str, float] = {}

    async def sdk_worker() -> None:
        # The SDK client's task groups must be entered and left by the same task.
        headers = {"authorization": f"Bearer {credential}"} if credential else {}
        async with httpx2.AsyncClient(headers=headers, timeout=30) as http, \
                Client(streamable_http_client(url, http_client=http), mode="legacy", cache=None) as session:
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
        async with WireSession(url, credential) as session:
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

    for key in ("load", "server"):
        value = cpu.get(key)
        if value is not None:
            row[f"cpu {key}"] = value
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
    parser.add_argument("--jwks")
    parser.add_argument("--front-door-requests", type=int, default=20_000,
                        help="requests per variant of the in-process front-door measurement (0: skip it)")
    args = parser.parse_args()
    if args.role:
        {"backend": lambda: role_backend(args.port, args.jwks), "sdk": lambda: role_sdk(args.port, args.backend),
         "mcpgw": lambda: role_mcpgw(args.port, args.backend),
         "mcpgw-auth": lambda: role_mcpgw(args.port, args.backend, auth=True)}[args.role]()
        return
    credentials = Credentials()
    jwks = Path(tempfile.mkdtemp(prefix="mcpgw-bench-")) / "jwks.json"
    jwks.write_text(json.dumps(credentials.jwks))
    ports = {"backend": free_port(), "sdk": free_port(), "mcpgw": free_port(), "mcpgw-auth": free_port()}
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    procs = [
        subprocess.Popen([sys.executable, __file__, "--role", role, "--port", str(port),
                          "--backend", str(ports["backend"]), "--jwks", str(jwks)], env=env)
        for role, port in ports.items()
    ]
    pids = {role: p.pid for role, p in zip(ports, procs, strict=True)}
    try:
        asyncio.run(main(args, ports, pids, credentials))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(10)


async def main(args: argparse.Namespace, ports: dict[str, int], pids: dict[str, int],
               credentials: Credentials) -> None:
    for port in ports.values():
        await wait_listening(port)
    concurrencies = [int(c) for c in str(args.concurrency).split(",")]
    for client in str(args.client).split(","):
        for concurrency in concurrencies:
            await table(concurrency, args.seconds, ports, pids, client, credentials)
    if args.front_door_requests:
        await front_door_cost(args.front_door_requests, f"http://127.0.0.1:{ports['backend']}/jwks.json",
                              credentials)


async def front_door_cost(requests: int, jwks_url: str, credentials: Credentials) -> None:
    """CPU per request of the front door alone: the middleware around an app that answers at once."""
    from mcpgw.gateway.frontdoor import AuthSettings, FrontDoor

    async def inner(scope: object, receive: object, send: Callable[[dict[str, object]], Awaitable[None]]) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        if message["type"] == "http.response.start" and message["status"] != 200:
            raise RuntimeError(f"the front door answered {message['status']}")

    def scope(credential: str | None) -> dict[str, object]:
        headers = [(b"host", b"127.0.0.1:8080"), (b"content-type", b"application/json")]
        if credential is not None:
            headers.append((b"authorization", f"Bearer {credential}".encode()))
        return {"type": "http", "method": "POST", "path": "/mcp/bench", "raw_path": b"/mcp/bench",
                "query_string": b"", "headers": headers, "client": ("127.0.0.1", 50000),
                "server": ("127.0.0.1", 8080), "scheme": "http"}

    fresh = [credentials.new_token(f"user-{i}") for i in range(min(requests, 2_000))]
    auth = AuthSettings.model_validate(Credentials.auth(jwks_url))
    variants: dict[str, tuple[AuthSettings | None, list[str | None]]] = {
        "no authentication (loopback caller)": (None, [None]),
        "API key": (auth, [API_KEY]),
        "JWT, keys cached": (auth, [credentials.token]),
        "JWT, a new token each request": (auth, list(fresh)),
    }
    print(f"\nthe front door alone, in this process, up to {requests} requests each (CPU per request)")
    costs: dict[str, float] = {}
    for name, (settings, presented) in variants.items():
        door = FrontDoor(inner, settings)
        await door(scope(credentials.new_token("warm-up") if settings else None), receive, send)  # type: ignore[arg-type]
        rounds = requests if len(presented) == 1 else len(presented)
        started = time.process_time()
        for i in range(rounds):
            await door(scope(presented[i % len(presented)]), receive, send)  # type: ignore[arg-type]
        costs[name] = (time.process_time() - started) / rounds * 1e6
        print(f"  {name:<40} {costs[name]:>8.1f} µs")
    base = costs["no authentication (loopback caller)"]
    for name in ("API key", "JWT, keys cached", "JWT, a new token each request"):
        added = costs[name] - base
        print(f"  added by {name}: {added:.1f} µs per call (target <= 50 µs: {'met' if added <= 50 else 'MISSED'})")


async def table(concurrency: int, seconds: float, ports: dict[str, int], pids: dict[str, int],
                client: str, credentials: Credentials) -> None:
    backend, sdk, gw, gw_auth = ports["backend"], ports["sdk"], ports["mcpgw"], ports["mcpgw-auth"]
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
    via_auth = CpuMeter({"server": pids["mcpgw-auth"], "backend": pids["backend"]})
    e = report("(e) mcpgw, front door on: API key", *await measure_mcp(
        f"http://127.0.0.1:{gw_auth}/mcp/bench", "get_item", concurrency, seconds, via_auth, client,
        API_KEY), seconds)
    f = report("(f) mcpgw, front door on: JWT (RS256)", *await measure_mcp(
        f"http://127.0.0.1:{gw_auth}/mcp/bench", "get_item", concurrency, seconds, via_auth, client,
        credentials.token), seconds)
    added = c["p50 ms"] - a["p50 ms"]
    print(f"(c)/(b) throughput: {c['calls/s'] / b['calls/s']:.2f}x (target >= 1.0x)")
    print(f"(c) p50 minus (a) p50: {added:.2f} ms (target <= 2 ms: {'met' if added <= 2 else 'MISSED'})")
    print(f"(d) p50, the MCP round trip alone ({client} client + gateway, no backend): {d['p50 ms']:.2f} ms")
    for label, row in (("(e) API key", e), ("(f) JWT", f)):
        cpu = (f"; gateway CPU per call {(row['cpu server'] - c['cpu server']) * 1e3:+.0f} µs"
               if "cpu server" in row and "cpu server" in c else "")
        print(f"{label}: {row['calls/s'] / c['calls/s']:.2f}x the calls/s of (c); "
              f"p50 {row['p50 ms'] - c['p50 ms']:+.2f} ms{cpu}")
    load_cpu = c.get("cpu load")
    if load_cpu is not None:
        # One load-generator process serves all C callers, so it finishes at most 1/cpu calls a second and,
        # by Little's law, no mean latency of (c) can be below C x its CPU per call, whatever the gateway does.
        busy = c["calls/s"] * load_cpu / 1e3
        print(f"floor set by the load generator alone: {concurrency} x {load_cpu:.3f} ms = "
              f"{concurrency * load_cpu:.2f} ms mean latency (it is busy {busy:.0%} of the time)")


if __name__ == "__main__":
    cli()
