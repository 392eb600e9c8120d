"""/metrics after real calls and real reloads: names, labels and counts an operator's dashboards rely on."""

from __future__ import annotations

import asyncio
import json
import os
from typing import Any

import httpx
import structlog
from mcp.client import Client
from prometheus_client.parser import text_string_to_metric_families

import mcpgw
from mcpgw.gateway.metrics import OUTCOMES
from tests.gateway import listening_socket, state_until
from tests.gateway.edge import TOOLS, WEATHER, Edge, edge_gateway


async def scrape(edge: Edge) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of /metrics, keyed by name and sorted labels."""
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(edge.url + "/metrics")
    assert response.status_code == 200
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str) -> float | None:
    return samples.get((name, tuple(sorted(labels.items()))))


def client(edge: Edge, path: str = "/mcp/weather") -> Client:
    return Client(edge.url + path, mode="legacy", cache=None)


async def test_calls_count_by_server_tool_and_outcome_with_latency_and_upstream_codes(tmp_path: Any) -> None:
    async with edge_gateway(tmp_path) as edge:
        async with asyncio.timeout(10), client(edge) as session:
            for _ in range(3):
                assert (await session.call_tool("echo", {"q": "x"})).is_error is not True
            invalid = await session.call_tool("echo", {"q": 5})
            assert invalid.is_error is True
        samples = await scrape(edge)
    assert value(samples, "mcpgw_tool_calls_total", server="weather", tool="echo", outcome="ok") == 3
    assert value(samples, "mcpgw_tool_calls_total", server="weather", tool="echo",
                 outcome="invalid_arguments") == 1
    assert value(samples, "mcpgw_tool_call_duration_seconds_count", server="weather", tool="echo") == 4
    assert value(samples, "mcpgw_upstream_requests_total", cluster=_cluster(edge), code="200") == 3
    assert value(samples, "mcpgw_upstream_request_duration_seconds_count", cluster=_cluster(edge)) == 3
    assert value(samples, "mcpgw_build_info", version=mcpgw.__version__) == 1
    assert value(samples, "mcpgw_sessions", endpoint="/mcp/weather") is not None
    assert value(samples, "mcpgw_source_connected", source="files") == 1
    assert any(name == "process_resident_memory_bytes" for name, _ in samples)
    # Labels stay bounded: outcomes from the documented set, never a session id or an argument.
    for _name, labels in samples:
        found = dict(labels)
        assert found.get("outcome", "ok") in OUTCOMES
        assert "x" not in found.values() and "session" not in " ".join(found)


def _cluster(edge: Edge) -> str:
    [name] = [n for n, c in edge.gateway.store.current.clusters.items() if c.service.endswith("weather-api")]
    return name


async def test_an_unreachable_backend_is_counted_and_logged_once_per_interval(tmp_path: Any) -> None:
    closed = listening_socket()
    port = closed.getsockname()[1]
    closed.close()  # nothing listens there any more: every connect is refused
    with structlog.testing.capture_logs() as logs:
        async with edge_gateway(tmp_path) as edge:
            naming = edge.gateway.settings.files_root / "naming/public/DEFAULT_GROUP/weather-api.json"
            cluster = _cluster(edge)
            naming.write_text(json.dumps([{"ip": "127.0.0.1", "port": port, "weight": 1, "healthy": True}]))
            async with asyncio.timeout(5):
                await state_until(edge.gateway.store, lambda: any(
                    i.port == port for i in edge.gateway.store.current.clusters[cluster].instances))
            async with asyncio.timeout(10), client(edge) as session:
                for _ in range(2):
                    result = await session.call_tool("echo", {"q": "x"})
                    assert result.is_error is True
            samples = await scrape(edge)
    assert value(samples, "mcpgw_tool_calls_total", server="weather", tool="echo", outcome="upstream_error") == 2
    assert value(samples, "mcpgw_upstream_requests_total", cluster=cluster, code="error") == 2
    failed = [e for e in logs if e["event"] == "upstream.failed"]
    assert len(failed) == 1 and failed[0]["log_level"] == "info" and failed[0]["cluster"] == cluster
    assert str(port) in failed[0]["problem"]


async def test_reloads_count_applied_and_rejected_changes_and_a_recovery_is_logged(tmp_path: Any) -> None:
    with structlog.testing.capture_logs() as logs:
        async with edge_gateway(tmp_path) as edge:
            store = edge.gateway.store
            before = await scrape(edge)
            applied = value(before, "mcpgw_config_reloads_total", server="weather", result="applied")
            assert applied is not None and applied >= 1
            assert (value(before, "mcpgw_config_last_reload_success_timestamp_seconds", server="weather") or 0) > 0
            tools_file = edge.gateway.settings.files_root / TOOLS
            good = tools_file.read_text()
            _write(tools_file, good.replace('"tools": [', '"tools": [7, ', 1))
            async with asyncio.timeout(5):
                await state_until(store, lambda: store.current.statuses[WEATHER].last_error is not None)
            rejected = await scrape(edge)
            assert value(rejected, "mcpgw_config_reloads_total", server="weather", result="rejected") == 1
            assert not [e for e in logs if e["event"] == "server.recovered"]
            doc = json.loads(good)
            doc["tools"][0]["description"] = "changed"
            _write(tools_file, json.dumps(doc))
            async with asyncio.timeout(5):
                await state_until(store, lambda: store.current.statuses[WEATHER].last_error is None
                                  or (store.current.statuses[WEATHER].applied_at or 0)
                                  > (store.current.statuses[WEATHER].last_error_at or 0))
            after = await scrape(edge)
    assert value(after, "mcpgw_config_reloads_total", server="weather", result="applied") == applied + 1
    assert value(after, "mcpgw_config_reloads_total", server="weather", result="rejected") == 1
    [recovered] = [e for e in logs if e["event"] == "server.recovered"]
    assert recovered["server"] == "weather" and recovered["server_id"] == WEATHER and recovered["log_level"] == "info"


def _write(path: Any, text: str) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
