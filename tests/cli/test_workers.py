"""``mcpgw serve --workers N``: N gateway processes on one port, one session secret, drained together."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import httpx

from mcpgw.gateway.settings import DEMO_TREE

REPO = Path(__file__).resolve().parents[2]
INITIALIZE = {"jsonrpc": "2.0", "id": 0, "method": "initialize", "params": {
    "protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}}
HEADERS = {"accept": "application/json, text/event-stream", "content-type": "application/json"}


async def test_workers_share_the_port_and_the_sessions_and_drain_on_sigterm(tmp_path: Path) -> None:
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    env = {k: v for k, v in os.environ.items() if not k.startswith("MCPGW_")}
    env.update(MCPGW_LOG_FORMAT="json", MCPGW_LOG_LEVEL="info")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpgw", "serve", "--files", str(tree), "--port", "0", "--workers", "2",
        "--no-demo-backend", cwd=REPO, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT)
    assert process.stdout is not None
    lines: list[str] = []
    try:
        async with asyncio.timeout(30):
            url = ""
            while not url or sum("discovery.ready" in line for line in lines) < 2:
                line = (await process.stdout.readline()).decode()
                assert line, "serve --workers ended early:\n" + "".join(lines)
                lines.append(line)
                if (found := re.search(r'"url": "(http://[^"]+)/mcp"', line)) and "gateway.workers" in line:
                    url = found.group(1)
            pids: set[int] = set()
            seen: set[int] = set()
            for _ in range(200):  # fresh connections until both workers answered (the kernel spreads them)
                async with httpx.AsyncClient(trust_env=False) as http:
                    worker = (await http.get(url + "/admin/state")).json()["worker"]
                pids.add(worker["pid"])
                seen.add(worker["index"])
                assert worker["of"] == 2
                if seen == {0, 1}:
                    break
            assert seen == {0, 1} and len(pids) == 2
            # A session opened on one worker is accepted on whichever a new connection reaches.
            async with httpx.AsyncClient(trust_env=False) as http:
                opened = await http.post(url + "/mcp/weather", headers=HEADERS, json=INITIALIZE)
            session = opened.headers["mcp-session-id"]
            assert session.startswith("mcpgw1.")  # a secret was generated for the workers
            for n in range(20):
                async with httpx.AsyncClient(trust_env=False) as http:
                    listed = await http.post(url + "/mcp/weather", json={"jsonrpc": "2.0", "id": n,
                                                                          "method": "tools/list"},
                                             headers={**HEADERS, "mcp-session-id": session,
                                                      "mcp-protocol-version": "2025-06-18"})
                assert listed.status_code == 200 and "get_forecast" in listed.text, listed.text
            process.send_signal(signal.SIGTERM)
            rest = (await process.stdout.read()).decode().splitlines()
            code = await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    bad = [line for line in [*lines, *rest] if line.startswith("{") and line.count("{\"") > 1 and "}{" in line]
    assert not bad, bad
    events = [json.loads(line).get("event") for line in [*lines, *rest] if line.startswith("{")]
    assert code == 0
    assert events.count("mcp.drain.done") == 2 and events.count("gateway.stopped") == 3
    assert events.count("gateway.worker_exited") == 0


def test_a_worker_count_out_of_range_is_a_usage_error(capsys: object) -> None:
    from mcpgw.gateway.cli import _worker_argv, main

    assert main(["serve", "--workers", "0", "--port", "0"]) == 2
    assert _worker_argv(["--files", "t", "--workers", "4", "--port=9", "--host", "h", "--workers=2"]) == [
        "--files", "t", "--host", "h"]
