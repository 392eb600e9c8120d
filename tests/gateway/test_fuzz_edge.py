"""Fuzzing the edge (issue 11 item 8): malformed MCP traffic and malformed connect API bodies.

One gateway (with its backend) runs in a thread of its own for the whole
module, so hypothesis can drive it from plain synchronous tests; every
property is derandomized (the same cases every run, in CI too) and bounded
in examples.  Invariants, for every case: it is answered (within the
client's timeout), never with HTTP 500, never with JSON-RPC -32603
(Internal error, which would mean a gateway bug), and afterwards the
process still answers ``/healthz``.  Accepted connect requests can be
deleted again through the DELETE path.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.gateway.edge import ACCEPT, INITIALIZE, PROTOCOL, Edge, edge_gateway

FUZZ = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


class Live:
    """The gateway of ``edge_gateway`` served from a thread with its own event loop."""

    def __init__(self, tmp: Path) -> None:
        self._tmp = tmp
        self._ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self.edge: Edge | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="fuzzed-gateway", daemon=True)
        self._thread.start()
        if not self._ready.wait(20) or self.edge is None:
            raise RuntimeError(f"the fuzzed gateway did not start: {self.failure!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by the fixture
            self.failure = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with edge_gateway(self._tmp) as edge:
            self.edge = edge
            self._ready.set()
            await self._stop.wait()

    @property
    def url(self) -> str:
        assert self.edge is not None
        return self.edge.url

    def close(self) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(20)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    gateway = Live(tmp_path_factory.mktemp("fuzz"))
    try:
        yield gateway
    finally:
        gateway.close()
    assert gateway.failure is None


@pytest.fixture(scope="module")
def http(live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.url, trust_env=False, timeout=10) as client:
        yield client


@pytest.fixture(scope="module")
def session_headers(http: httpx.Client) -> dict[str, str]:
    opened = http.post("/mcp/weather", headers=ACCEPT, json=INITIALIZE)
    assert opened.status_code == 200
    headers = {**ACCEPT, "mcp-session-id": opened.headers["mcp-session-id"], "mcp-protocol-version": PROTOCOL}
    http.post("/mcp/weather", headers=headers, json={"jsonrpc": "2.0", "method": "notifications/initialized"})
    return headers


def assert_well_answered(response: httpx.Response) -> None:
    assert response.status_code != 500, response.text
    assert response.status_code < 500 or response.status_code == 503, response.text
    if "application/json" not in response.headers.get("content-type", "") or not response.content:
        return
    answer = response.json()
    if isinstance(answer, dict):
        error = answer.get("error")
        if isinstance(error, dict):
            assert error.get("code") != -32603, answer
        result = answer.get("result")
        if isinstance(result, dict) and result.get("isError"):
            assert "failed internally" not in json.dumps(result), answer


# -- strategies ----------------------------------------------------------------------------------------

JSON = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=6), children, max_size=4),
    max_leaves=12,
)
METHODS = ["initialize", "tools/list", "tools/call", "ping", "notifications/initialized", "notifications/cancelled",
           "resources/list", "prompts/list", "completion/complete", "logging/setLevel", "subscriptions/listen"]
TOOLS = ["echo", "header_arg", "loop", "big_answer", "get_forecast", "get_city", "report_observation", "nope"]
ARGUMENTS = st.dictionaries(st.sampled_from(["q", "v", "n", "city", "name", "days", "temperature"]),
                            JSON | st.text(alphabet=st.characters(codec="utf-8"), max_size=30), max_size=4)
PARAMS = st.one_of(
    st.fixed_dictionaries({"name": st.sampled_from(TOOLS) | st.text(max_size=8), "arguments": ARGUMENTS | JSON}),
    JSON,
)
ENVELOPES = st.fixed_dictionaries(
    {},
    optional={
        "jsonrpc": st.just("2.0") | JSON,
        "id": st.integers() | st.text(max_size=6) | JSON,
        "method": st.sampled_from(METHODS) | st.text(max_size=10) | JSON,
        "params": PARAMS,
        "result": JSON,
        "error": JSON,
    },
)
CALLS = st.fixed_dictionaries({
    "jsonrpc": st.just("2.0"), "id": st.integers(0, 2**40) | st.text(min_size=1, max_size=6),
    "method": st.just("tools/call"),
    "params": st.fixed_dictionaries({"name": st.sampled_from(TOOLS), "arguments": ARGUMENTS}),
})
NEAR_VALID = st.fixed_dictionaries(
    {"jsonrpc": st.just("2.0"), "method": st.sampled_from(METHODS), "id": JSON},
    optional={"params": PARAMS},
)
RAW = st.one_of(
    st.binary(max_size=80),
    st.integers(1, 3000).map(lambda depth: b"[" * depth + b"]" * depth),
    st.integers(1, 3000).map(lambda depth: b'{"a":' * depth + b"1" + b"}" * depth),
)


@FUZZ
@given(message=CALLS | NEAR_VALID | ENVELOPES | JSON, raw=RAW, as_raw=st.booleans(), with_session=st.booleans())
def test_malformed_mcp_traffic_is_always_answered_never_as_an_internal_error(
    http: httpx.Client, session_headers: dict[str, str], message: Any, raw: bytes, as_raw: bool,
    with_session: bool,
) -> None:
    body = raw if as_raw else json.dumps(message).encode()
    headers = session_headers if with_session else ACCEPT
    response = http.post("/mcp/weather", headers=headers, content=body)
    assert_well_answered(response)
    if not as_raw and isinstance(message, dict) and "method" in message and "id" in message:
        assert response.status_code != 202, f"a request was accepted and never answered: {message!r}"
    if not with_session and response.headers.get("mcp-session-id"):
        http.delete("/mcp/weather", headers={**ACCEPT, "mcp-session-id": response.headers["mcp-session-id"],
                                             "mcp-protocol-version": PROTOCOL})


@FUZZ
@given(method=st.sampled_from(["GET", "DELETE", "PUT", "PATCH", "OPTIONS"]),
       header_values=st.dictionaries(st.sampled_from(["accept", "content-type", "mcp-protocol-version",
                                                      "mcp-session-id", "last-event-id", "origin"]),
                                     st.text(alphabet=st.characters(min_codepoint=32, max_codepoint=126), max_size=40)
                                     .map(lambda value: value.strip() or "x"),
                                     max_size=4))
def test_other_methods_and_odd_headers_are_answered_never_as_an_internal_error(
    http: httpx.Client, method: str, header_values: dict[str, str]
) -> None:
    if method == "GET" and "mcp-session-id" not in header_values:
        header_values["mcp-session-id"] = "unknown"  # a GET on a real session would open a stream
    response = http.request(method, "/mcp/weather", headers=header_values)
    assert_well_answered(response)


NAMES = st.one_of(st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9_.:-]{0,20}", fullmatch=True),
                  st.text(alphabet="ab/.:@# \\%?&\u00e9\x00", max_size=12), JSON)
HOSTS = st.one_of(st.ip_addresses().map(str), st.from_regex(r"[a-z][a-z0-9-]{0,10}(\.[a-z][a-z0-9-]{0,10}){0,3}",
                                                           fullmatch=True),
                  st.text(max_size=20), st.sampled_from(["127.0.0.1:9999", "127.0.0.1/x?y#", "http://h/", "[::1]"]),
                  JSON)
CONNECT_BODIES = st.fixed_dictionaries(
    {},
    optional={
        "serverId": NAMES, "serverName": NAMES, "groupName": NAMES, "host": HOSTS,
        "port": st.integers(-10, 70_000) | JSON, "weight": st.floats() | JSON,
        "metadata": st.dictionaries(st.text(max_size=5), st.text(max_size=5) | JSON, max_size=3) | JSON,
        "ttlSeconds": st.floats() | JSON, "namespaceId": NAMES,
    },
)


@FUZZ
@given(body=CONNECT_BODIES | JSON, raw=RAW, as_raw=st.booleans())
def test_malformed_connect_bodies_are_refused_with_4xx_and_every_accepted_one_can_be_deleted(
    http: httpx.Client, body: Any, raw: bytes, as_raw: bool
) -> None:
    content = raw if as_raw else json.dumps(body).encode()
    response = http.post("/api/mcp/servers/connect", content=content, headers={"content-type": "application/json"})
    assert response.status_code in (200, 201, 400, 413, 422), response.text
    if response.status_code in (200, 201):
        accepted = response.json()
        deleted = http.delete(f"/api/mcp/servers/{accepted['serverName']}/{accepted['serverId']}")
        assert deleted.status_code == 200, deleted.text


def test_after_the_fuzzing_the_gateway_still_answers(live: Live, http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200
    assert http.get("/readyz").status_code == 200
    assert http.get("/admin/state").status_code == 200
    assert http.get("/api/mcp/servers").json()["statistics"]["totalServers"] >= 0
    opened = http.post("/mcp", headers=ACCEPT, json=INITIALIZE)
    assert opened.status_code == 200
