"""Two gateway processes behind a real nginx (round robin, no affinity), driven by the official SDK client of the
handshake era: with a shared session secret every replica accepts the session the other opened."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from mcp.client import Client

from mcpgw.gateway.settings import DEMO_TREE
from tests.gateway import Inbox, listening_socket, serving, text
from tests.gateway.test_end_to_end import TOOLS_11, Recorder

REPO = Path(__file__).resolve().parents[2]
NGINX = shutil.which("nginx") or next((p for p in ("/usr/sbin/nginx",) if Path(p).exists()), None)
SECRET = "replicas-share-this-secret-0123456789"

pytestmark = pytest.mark.skipif(NGINX is None, reason="nginx is not installed (CI installs it: .ci/run)")


@dataclass
class Replica:
    process: asyncio.subprocess.Process
    url: str
    lines: list[str] = field(default_factory=list)
    drain: asyncio.Task[None] | None = None


async def start_replica(tree: Path, secret: str | None) -> Replica:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    env.update(MCPGW_LOG_FORMAT="json", MCPGW_LOG_LEVEL="info")
    if secret is not None:
        env["MCPGW_SESSION_SECRET"] = secret
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpgw", "serve", "--files", str(tree), "--port", "0", "--no-demo-backend",
        cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    assert process.stdout is not None
    lines: list[str] = []
    url = ""
    ready = False
    async with asyncio.timeout(30):
        while not (url and ready):
            line = (await process.stdout.readline()).decode()
            assert line, "mcpgw serve ended before it was ready:\n" + "".join(lines)
            lines.append(line)
            found = re.search(r'"url": "(http://[^"]+)/mcp"', line)
            if found and "gateway.listening" in line:
                url = found.group(1)
            ready = ready or "discovery.ready" in line
    replica = Replica(process, url, lines)

    async def keep_reading() -> None:
        assert process.stdout is not None
        while line := (await process.stdout.readline()).decode():
            replica.lines.append(line)

    replica.drain = asyncio.create_task(keep_reading())
    return replica


async def stop_replica(replica: Replica) -> None:
    if replica.process.returncode is None:
        replica.process.terminate()
    async with asyncio.timeout(20):
        await replica.process.wait()
    if replica.drain is not None:
        await replica.drain


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def nginx_in_front(tmp_path: Path, upstreams: list[str]) -> AsyncIterator[str]:
    prefix = tmp_path / "nginx"
    (prefix / "logs").mkdir(parents=True)
    port = free_port()
    servers = "".join(f"    server {u.removeprefix('http://')};\n" for u in upstreams)
    temp = "".join(f"  {kind}_temp_path {prefix}/{kind};\n" for kind in ("client_body", "proxy", "fastcgi",
                                                                           "uwsgi", "scgi"))
    (prefix / "nginx.conf").write_text(
        ("user root;\n" if os.geteuid() == 0 else "")
        + f"daemon off;\nworker_processes 1;\npid {prefix}/nginx.pid;\nerror_log {prefix}/logs/error.log;\n"
        "events { worker_connections 512; }\n"
        "http {\n  access_log off;\n" + temp
        + "  upstream gateways {\n" + servers + "  }\n"  # round robin, no affinity
        f"  server {{\n    listen 127.0.0.1:{port};\n"
        "    location / {\n      proxy_pass http://gateways;\n      proxy_http_version 1.1;\n"
        "      proxy_set_header Connection \"\";\n      proxy_buffering off;\n"
        "      proxy_read_timeout 300s;\n    }\n  }\n}\n"
    )
    assert NGINX is not None
    process = await asyncio.create_subprocess_exec(NGINX, "-p", str(prefix), "-c", str(prefix / "nginx.conf"),
                                                   stdout=asyncio.subprocess.DEVNULL,
                                                   stderr=asyncio.subprocess.PIPE)
    try:
        async with asyncio.timeout(10):
            while True:  # nginx says nothing when it listens: connect until it accepts (bounded)
                try:
                    _, writer = await asyncio.open_connection("127.0.0.1", port)
                except OSError:
                    assert process.returncode is None, (await process.stderr.read()).decode()  # type: ignore[union-attr]
                    await asyncio.sleep(0.02)
                    continue
                writer.close()
                break
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        async with asyncio.timeout(10):
            await process.wait()


@contextlib.asynccontextmanager
async def two_replicas(tmp_path: Path, secret: str | None) -> AsyncIterator[tuple[str, Path, list[Replica]]]:
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    backend = Recorder()
    sock = listening_socket()
    (tree / "naming/public/DEFAULT_GROUP/weather-api.json").write_text(json.dumps(
        [{"ip": "127.0.0.1", "port": sock.getsockname()[1], "weight": 1, "healthy": True, "enabled": True}]))
    async with serving(backend.app(), sock):
        replicas = list(await asyncio.gather(start_replica(tree, secret), start_replica(tree, secret)))
        try:
            async with nginx_in_front(tmp_path, [r.url for r in replicas]) as url:
                yield url, tree, replicas
        finally:
            await asyncio.gather(*(stop_replica(r) for r in replicas))


def leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in leaves(inner)]
    return [exc]


def edit_description(tree: Path, description: str) -> None:
    path = tree / TOOLS_11
    doc = json.loads(path.read_text())
    doc["tools"][0]["description"] = description
    temporary = path.with_suffix(".tmp")
    temporary.write_text(json.dumps(doc))
    temporary.replace(path)


async def test_with_a_shared_secret_a_session_works_through_any_replica(tmp_path: Path) -> None:
    async with two_replicas(tmp_path, SECRET) as (url, tree, replicas):
        inbox = Inbox()
        async with asyncio.timeout(60), Client(url + "/mcp/weather", mode="legacy", cache=None,
                                               message_handler=inbox) as session:
            listed = {t.name for t in (await session.list_tools()).tools}
            assert {"get_forecast", "get_city"} <= listed
            failures: list[Any] = []
            for n in range(100):
                result = await session.call_tool("get_city", {"name": "Lisbon"})
                if result.is_error or "Lisbon" not in text(result):
                    failures.append((n, text(result)))
            assert failures == []
            revision = 0
            while not inbox.changed.is_set():  # the client opens its GET stream on its own schedule
                revision += 1
                edit_description(tree, f"revision {revision}")
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(0.5):
                        await inbox.changed.wait()
            # Both replicas follow the tree: the listing, wherever it lands, soon shows the last edit.
            while {t.name: t for t in (await session.list_tools()).tools}["get_forecast"].description != (
                    f"revision {revision}"):
                pass
    # Each replica served part of the session; at least one rebuilt it from its id.
    restored = [sum('"mcp.session.restored"' in line for line in r.lines) for r in replicas]
    assert sum(restored) >= 1, restored
    assert not any("Session not found" in line for r in replicas for line in r.lines)


async def test_without_the_secret_the_other_replica_answers_404(tmp_path: Path) -> None:
    async with two_replicas(tmp_path, None) as (url, _tree, _replicas):
        failures: list[str] = []
        for _ in range(3):
            try:
                async with asyncio.timeout(20), Client(url + "/mcp/weather", mode="legacy", cache=None) as session:
                    for _ in range(4):
                        await session.call_tool("get_city", {"name": "Lisbon"})
            except Exception as exc:
                failures.extend(f"{type(leaf).__name__}: {leaf}" for leaf in leaves(exc))
        assert failures, "round robin without a shared secret should lose the session"
        assert any("404" in f or "Session not found" in f for f in failures), failures


def test_a_forged_or_foreign_session_id_is_refused(tmp_path: Path) -> None:
    """Unit-level: ids are bound to their endpoint, their caller, their expiry and the secret."""
    from mcpgw.gateway.session_ids import SessionIds, caller_digest

    clock = [1000.0]
    ids = SessionIds(SECRET, max_age=60, clock=lambda: clock[0])
    params = {"protocolVersion": "2025-06-18", "capabilities": {"roots": {}}, "clientInfo": {"name": "c",
                                                                                           "version": "1"}}
    minted = ids.mint("weather", params, caller_digest("key:ci"))
    claims = ids.verify(minted, "weather")
    assert claims is not None and claims.protocol_version == "2025-06-18"
    assert claims.caller == caller_digest("key:ci") and claims.capabilities == {"roots": {}}
    assert ids.verify(minted, "maps") is None
    assert SessionIds("another-secret-0123456789").verify(minted, "weather") is None
    head, payload, mac = minted.split(".")
    tampered = json.loads(__import__("base64").urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    tampered["e"] = "maps"
    forged_payload = __import__("base64").urlsafe_b64encode(json.dumps(tampered).encode()).rstrip(b"=").decode()
    assert ids.verify(f"{head}.{forged_payload}.{mac}", "maps") is None
    assert ids.verify("0" * 32, "weather") is None and ids.verify("mcpgw1.x.y", "weather") is None
    assert ids.mint("weather", {"protocolVersion": "1999-01-01"}, None).startswith("mcpgw1.")
    downgraded = ids.verify(ids.mint("weather", {"protocolVersion": "1999-01-01"}, None), "weather")
    assert downgraded is not None and downgraded.protocol_version != "1999-01-01"
    clock[0] += 61
    assert ids.verify(minted, "weather") is None
    huge = ids.mint("weather", {**params, "capabilities": {"experimental": {"x": "y" * 10_000}}}, None)
    assert len(huge) < 4096
    assert all(0x21 <= ord(ch) <= 0x7E for ch in minted)  # visible ASCII, as the transport requires



KEY_A = "replica-key-a-0123456789abcdef"
KEY_B = "replica-key-b-0123456789abcdef"


@contextlib.asynccontextmanager
async def two_in_process(tmp_path: Path, secrets_: tuple[str | None, str | None]) -> AsyncIterator[list[str]]:
    """Two gateways in this process on one tree, each with its own secret (or none)."""
    import hashlib

    from mcpgw.gateway.app import Gateway
    from mcpgw.gateway.settings import Settings

    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    backend = Recorder()
    sock = listening_socket()
    (tree / "naming/public/DEFAULT_GROUP/weather-api.json").write_text(json.dumps(
        [{"ip": "127.0.0.1", "port": sock.getsockname()[1], "weight": 1, "healthy": True, "enabled": True}]))
    auth = {"api_keys": [{"name": "a", "key_sha256": hashlib.sha256(KEY_A.encode()).hexdigest(), "allow": ["*"]},
                         {"name": "b", "key_sha256": hashlib.sha256(KEY_B.encode()).hexdigest(), "allow": ["*"]}]}
    gateways = [Gateway(Settings.model_validate({"files": tree, "discovery_interval": 3600, "auth": auth,
                                                "session_secret": secret}))
                for secret in secrets_]
    async with serving(backend.app(), sock), contextlib.AsyncExitStack() as stack:
        urls = [await stack.enter_async_context(serving(g.asgi())) for g in gateways]
        async with asyncio.timeout(10):
            for gateway in gateways:
                await gateway.adapter.ready.wait()
        yield urls


def headers(key: str, session: str | None = None) -> dict[str, str]:
    out = {"accept": "application/json, text/event-stream", "content-type": "application/json",
           "authorization": f"Bearer {key}", "mcp-protocol-version": "2025-06-18"}
    return {**out, "mcp-session-id": session} if session else out


INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


async def test_a_restored_session_keeps_its_endpoint_its_caller_and_needs_the_same_secret(tmp_path: Path) -> None:
    import httpx

    async with two_in_process(tmp_path, (SECRET, SECRET)) as (a, b), httpx.AsyncClient(trust_env=False) as http:
        opened = await http.post(a + "/mcp/weather", headers=headers(KEY_A), json=INITIALIZE)
        session = opened.headers["mcp-session-id"]
        assert opened.status_code == 200 and session.startswith("mcpgw1.")
        listed = await http.post(b + "/mcp/weather", headers=headers(KEY_A, session), json=LIST)
        assert listed.status_code == 200 and "get_forecast" in listed.text
        # The same id on another endpoint, or with another caller's credential: unknown, on both replicas.
        for url in (a, b):
            elsewhere = await http.post(url + "/mcp", headers=headers(KEY_A, session), json=LIST)
            stolen = await http.post(url + "/mcp/weather", headers=headers(KEY_B, session), json=LIST)
            assert (elsewhere.status_code, stolen.status_code) == (404, 404), (elsewhere.text, stolen.text)
        # A DELETE on B ends it there; A still holds its own until it ends it too.
        assert (await http.delete(b + "/mcp/weather", headers=headers(KEY_A, session))).status_code == 200
    async with two_in_process(tmp_path / "other", (SECRET, "a-different-secret-0123456789")) as (a, b), \
            httpx.AsyncClient(trust_env=False) as http:
        opened = await http.post(a + "/mcp/weather", headers=headers(KEY_A), json=INITIALIZE)
        session = opened.headers["mcp-session-id"]
        refused = await http.post(b + "/mcp/weather", headers=headers(KEY_A, session), json=LIST)
        assert refused.status_code == 404
    async with two_in_process(tmp_path / "none", (None, None)) as (a, _b), httpx.AsyncClient(trust_env=False) as http:
        opened = await http.post(a + "/mcp/weather", headers=headers(KEY_A), json=INITIALIZE)
        assert not opened.headers["mcp-session-id"].startswith("mcpgw1.")  # without a secret: as before
