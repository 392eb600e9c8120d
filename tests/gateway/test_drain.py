"""Graceful drain (issue 11 item 6): in process, then the real ``mcpgw serve`` under SIGTERM."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import httpx

from mcpgw.gateway.app import Gateway
from tests.gateway import listening_socket, serving
from tests.gateway.edge import TOOLS, Backend, Wire, edge_gateway, result_text

REPO = Path(__file__).resolve().parents[2]


def _instance_stats(gateway: Gateway) -> dict[str, object]:
    for stats in gateway.clusters.stats().values():
        for row in stats["instances"]:
            if row["calls"]:
                return dict(row)
    raise AssertionError("no instance took a call")


async def test_a_drain_flips_readiness_refuses_new_sessions_and_lets_calls_in_flight_finish(tmp_path: Path) -> None:
    async with edge_gateway(tmp_path) as edge, edge.wire() as session, httpx.AsyncClient(
        base_url=edge.url, trust_env=False
    ) as http:
        assert (await session.initialize()).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        in_flight = asyncio.create_task(session.call("slow", {}))
        async with asyncio.timeout(10):
            await edge.backend.arrived.wait()
            draining = asyncio.create_task(edge.gateway.drain(30))
            ready = await http.get("/readyz")
            assert ready.status_code == 503 and ready.json()["draining"] is True
            async with edge.wire() as newcomer:
                refused = await newcomer.initialize()
            assert refused.status_code == 503 and "shutting down" in refused.json()["error"]["message"]
            assert refused.json()["error"]["code"] == -32000
            assert not draining.done()
            edge.backend.release.set()
            answered = await in_flight
            await draining
    assert answered.status_code == 200 and answered.json()["result"].get("isError") is not True


async def test_a_call_still_running_after_the_drain_time_gets_an_error_and_its_backend_is_not_blamed(
    tmp_path: Path,
) -> None:
    async with edge_gateway(tmp_path) as edge, edge.wire() as session:
        assert (await session.initialize()).status_code == 200
        in_flight = asyncio.create_task(session.call("slow", {}))
        async with asyncio.timeout(10):
            await edge.backend.arrived.wait()
            await edge.gateway.drain(0.1)
            answered = await in_flight
        assert answered.status_code == 200
        assert answered.json()["result"]["isError"] is True
        assert "shutting down" in result_text(answered) and "after its drain time" in result_text(answered)
        stats = _instance_stats(edge.gateway)
        assert stats["failures"] == 0 and stats["in_flight"] == 0 and stats["consecutive_failures"] == 0


async def test_mcpgw_serve_drains_on_sigterm_and_exits_0_logging_json_lines_only(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(REPO / "fixtures/nacos-configs/demo", tree)
    from tests.gateway.edge import EDGE_TOOLS

    doc = json.loads((tree / TOOLS).read_text())
    for listed, meta in EDGE_TOOLS:
        doc["tools"].append(listed)
        doc["toolsMeta"][listed["name"]] = meta
    (tree / TOOLS).write_text(json.dumps(doc))
    backend = Backend()
    backend_sock = listening_socket()
    (tree / "naming/public/DEFAULT_GROUP/weather-api.json").write_text(json.dumps(
        [{"ip": "127.0.0.1", "port": backend_sock.getsockname()[1], "weight": 1, "healthy": True, "enabled": True}]))
    env = {**os.environ, "MCPGW_DRAIN_TIMEOUT": "0.5", "MCPGW_LOG_FORMAT": "json", "MCPGW_LOG_LEVEL": "debug"}
    lines: list[str] = []
    async with serving(backend.app(), backend_sock):
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "mcpgw", "serve", "--files", str(tree), "--port", "0", "--no-demo-backend",
            cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )
        try:
            assert process.stdout is not None
            async with asyncio.timeout(30):
                url = ""
                while not url:
                    line = (await process.stdout.readline()).decode()
                    assert line, "mcpgw serve ended before it listened"
                    lines.append(line)
                    found = re.search(r'"url": "(http://[^"]+)"', line)
                    if found and "gateway.listening" in line:
                        url = found.group(1)
                async with Wire(url + "/weather") as session, httpx.AsyncClient(trust_env=False) as http:
                    assert (await session.initialize()).status_code == 200
                    in_flight = asyncio.create_task(session.call("slow", {}))
                    await backend.arrived.wait()
                    process.send_signal(signal.SIGTERM)
                    answered = await in_flight
                    assert "shutting down" in result_text(answered)
                    with contextlib.suppress(httpx.TransportError):  # the listener may be closed already
                        assert (await http.get(url.removesuffix("/mcp") + "/readyz")).status_code == 503
                lines.extend((await process.stdout.read()).decode().splitlines())
                code = await process.wait()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
            backend.release.set()
    assert code == 0
    # Every line is JSON at debug level too (uvicorn's, the SDKs' and ours), servers are named, and the
    # shutdown says why it began and that it ended.
    events = [json.loads(line) for line in lines if line.strip()]
    names = [event["event"] for event in events]
    assert {"gateway.stopping", "gateway.stopped", "mcp.drain.started"} <= set(names)
    stopping = next(event for event in events if event["event"] == "gateway.stopping")
    assert stopping["signal"] == "SIGTERM" and stopping["level"] == "info"
    added = {event.get("server") for event in events if event["event"] == "discovery.server_added"}
    assert added == {"weather", "gateway-info"}
