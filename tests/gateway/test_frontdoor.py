"""The front door over real HTTP: API keys and JWTs (JWKS served on loopback), per-tool views, the admin
credential, Origin, header forwarding, rate limits, sessions bound to their credential, and the audit line.

Clients are the official SDK's (with the credential on its HTTP client) or ``Wire`` where the test needs
the raw HTTP answer (status codes and headers).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import httpx2
import jwt
import mcp_types as types
import pytest
import structlog
import yaml
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa
from jwt.algorithms import ECAlgorithm, OKPAlgorithm, RSAAlgorithm
from mcp.client import Client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared.exceptions import MCPError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import mcpgw.gateway.frontdoor as frontdoor
from mcpgw.gateway.frontdoor import FrontDoor, RateLimited, RateLimiter, RateLimitSettings
from mcpgw.gateway.settings import DEMO_TREE, load_settings
from tests.gateway import serving, text
from tests.gateway.edge import TOOLS, Edge, edge_gateway

CI_KEY = "ci-bot-key-0123456789abcdef"
FULL_KEY = "full-key-0123456789abcdef00"
ADMIN = "admin-token-0123456789abcdef"
ISSUER = "https://id.example.test"
README = Path(__file__).resolve().parents[2] / "README.md"


def sha(text_: str) -> str:
    return hashlib.sha256(text_.encode()).hexdigest()


class Provider:
    """An identity provider: signing keys, and their JWKS served on loopback (replaceable: rotation)."""

    def __init__(self) -> None:
        self.keys: dict[str, tuple[str, Any]] = {}
        self.published: list[dict[str, Any]] = []
        self.fetches = 0
        self.add("rsa-1", "RS256", rsa.generate_private_key(public_exponent=65537, key_size=2048))

    def add(self, kid: str, alg: str, private: Any) -> None:
        self.keys[kid] = (alg, private)
        exporters: dict[str, Any] = {"RS256": RSAAlgorithm, "ES256": ECAlgorithm, "EdDSA": OKPAlgorithm}
        jwk = exporters[alg].to_jwk(private.public_key(), as_dict=True)
        self.published.append({**jwk, "kid": kid, "use": "sig", "alg": alg})

    def retire(self, kid: str) -> None:
        self.published = [k for k in self.published if k["kid"] != kid]

    def token(self, kid: str = "rsa-1", *, sub: str = "alice", scope: str = "", audience: str = "mcpgw",
              expires_in: float = 300, **claims: Any) -> str:
        alg, private = self.keys[kid]
        now = int(time.time())
        body = {"iss": ISSUER, "aud": audience, "sub": sub, "iat": now, "exp": now + int(expires_in),
                "scope": scope, **claims}
        return jwt.encode(body, private, algorithm=alg, headers={"kid": kid})

    def app(self) -> Starlette:
        async def jwks(request: Request) -> Response:
            self.fetches += 1
            return JSONResponse({"keys": self.published})

        return Starlette(routes=[Route("/jwks.json", jwks)])


@contextlib.asynccontextmanager
async def guarded(tmp_path: Any, **settings: Any) -> AsyncIterator[tuple[Edge, Provider]]:
    provider = Provider()
    async with serving(provider.app()) as idp:
        auth = {
            "api_keys": [
                {"name": "ci-bot", "key_sha256": sha(CI_KEY), "allow": ["weather/get_*", "gateway-info/greet"]},
                {"name": "full", "key": FULL_KEY},
            ],
            "jwt": {"jwks_url": idp + "/jwks.json", "issuer": ISSUER, "audience": "mcpgw",
                    "allow": ["gateway-info/*"],
                    "rules": [{"claim": "scope", "value": "weather.read", "allow": ["weather/get_*"]},
                              {"claim": "sub", "value": "root", "allow": ["*"]}]},
            "admin_token_sha256": sha(ADMIN),
            "allowed_origins": ["https://app.example.test"],
            "authorization_servers": [ISSUER],
            "scopes_supported": ["weather.read"],
        }
        async with edge_gateway(tmp_path, auth=auth, **settings) as edge:
            yield edge, provider


@contextlib.asynccontextmanager
async def sdk(edge: Edge, credential: str, path: str = "/mcp/weather", inbox: Any = None,
              **headers: str) -> AsyncIterator[Client]:
    """The official SDK client with the credential on its HTTP client (which the SDK leaves to us to close)."""
    async with httpx2.AsyncClient(headers={"Authorization": f"Bearer {credential}", **headers}, timeout=10) as http:
        transport = streamable_http_client(edge.url + path, http_client=http)
        async with Client(transport, mode="legacy", cache=None, message_handler=inbox) as session:
            yield session


async def names(session: Client) -> set[str]:
    return {tool.name for tool in (await session.list_tools()).tools}


async def test_no_credential_is_401_pointing_at_valid_protected_resource_metadata(tmp_path: Any) -> None:
    async with guarded(tmp_path) as (edge, _), httpx.AsyncClient(trust_env=False) as http:
        refused = await http.post(edge.url + "/mcp/weather", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        challenge = refused.headers["www-authenticate"]
        assert refused.status_code == 401 and challenge.startswith("Bearer resource_metadata=")
        metadata_url = challenge.split('"')[1]
        assert metadata_url == edge.url + "/.well-known/oauth-protected-resource/mcp/weather"
        metadata = await http.get(metadata_url)
        root = await http.get(edge.url + "/.well-known/oauth-protected-resource")
        nothing = await http.get(edge.url + "/.well-known/oauth-protected-resource/admin/state")
        health = await http.get(edge.url + "/healthz")
    assert refused.json()["error"]["message"].startswith("authentication required")
    doc = metadata.json()
    assert metadata.status_code == 200 and doc["resource"] == edge.url + "/mcp/weather"
    assert doc["authorization_servers"] == [ISSUER] and doc["bearer_methods_supported"] == ["header"]
    assert doc["scopes_supported"] == ["weather.read"]
    assert root.json()["resource"] == edge.url + "/mcp"
    assert nothing.status_code == 404 and health.status_code == 200


async def test_wrong_key_expired_or_foreign_tokens_are_401_invalid_token(tmp_path: Any) -> None:
    async with guarded(tmp_path) as (edge, provider), httpx.AsyncClient(trust_env=False) as http:
        async def answer(credential: str) -> httpx.Response:
            return await http.post(edge.url + "/mcp", headers={"authorization": f"Bearer {credential}"},
                                   json={"jsonrpc": "2.0", "id": 1, "method": "ping"})

        wrong = await answer("not-a-key-at-all-0123456789")
        expired = await answer(provider.token(expires_in=-120))
        foreign = await answer(provider.token(audience="someone-else"))
        forged = await answer(provider.token()[:-4] + "AAAA")
        unsigned = await answer(jwt.encode({"iss": ISSUER, "aud": "mcpgw", "sub": "x", "exp": 2**40}, "k" * 32,
                                           algorithm="HS256"))
    for response, reason in ((wrong, "not a valid API key"), (expired, "expired"), (foreign, "another audience"),
                             (forged, "does not verify"), (unsigned, "not accepted")):
        assert response.status_code == 401, reason
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert reason in response.json()["error"]["message"]


async def test_an_api_key_sees_and_calls_only_its_tools_and_others_answer_as_unknown(tmp_path: Any) -> None:
    async with guarded(tmp_path) as (edge, _):
        async with asyncio.timeout(10), sdk(edge, CI_KEY) as session:
            assert await names(session) == {"get_city", "get_forecast"}
            city = await session.call_tool("get_city", {"name": "Lisbon"})
            assert city.is_error is not True
            with pytest.raises(MCPError) as hidden:
                await session.call_tool("echo", {"q": "x"})
            with pytest.raises(MCPError) as missing:
                await session.call_tool("no_such_tool", {})
        assert hidden.value.error.code == missing.value.error.code == types.INVALID_PARAMS
        assert hidden.value.error.message == missing.value.error.message.replace("no_such_tool", "echo")
        async with asyncio.timeout(10), sdk(edge, CI_KEY, "/mcp") as aggregate:
            assert await names(aggregate) == {"weather_get_city", "weather_get_forecast", "gateway-info_greet"}
        async with asyncio.timeout(10), sdk(edge, FULL_KEY) as full:
            assert {"echo", "get_city", "slow"} <= await names(full)


async def test_jwts_are_verified_against_the_jwks_and_their_claims_choose_the_tools(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(frontdoor, "JWKS_MIN_REFRESH_S", 0.0)
    async with guarded(tmp_path) as (edge, provider):
        async with asyncio.timeout(10), sdk(edge, provider.token(scope="openid weather.read"), "/mcp") as reader:
            assert await names(reader) == {"weather_get_city", "weather_get_forecast", "gateway-info_greet"}
            greeted = await reader.call_tool("gateway-info_greet", {"name": "jwt"})
            assert "jwt" in text(greeted)
        async with asyncio.timeout(10), sdk(edge, provider.token(sub="bob"), "/mcp") as plain:
            assert await names(plain) == {"gateway-info_greet"}
        fetched = provider.fetches
        # Rotation: a new key (another type) is published and the old one retired; a token naming the new kid
        # makes the gateway fetch the set again; the retired key's tokens stop working once it has.
        provider.add("ec-2", "ES256", ec.generate_private_key(ec.SECP256R1()))
        provider.add("ed-3", "EdDSA", ed25519.Ed25519PrivateKey.generate())
        provider.retire("rsa-1")
        for kid in ("ec-2", "ed-3"):
            async with asyncio.timeout(10), sdk(edge, provider.token(kid, sub="root"), "/mcp") as root:
                assert "weather_echo" in await names(root)
        assert provider.fetches == fetched + 1
        async with httpx.AsyncClient(trust_env=False) as http:
            retired = await http.post(edge.url + "/mcp", headers={"authorization": "Bearer " + provider.token(
                sub="carol")}, json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        assert retired.status_code == 401 and "signing key" in retired.json()["error"]["message"]


async def test_admin_surfaces_need_the_admin_token_as_bearer_or_basic(tmp_path: Any) -> None:
    basic = "Basic " + base64.b64encode(f"admin:{ADMIN}".encode()).decode()
    async with guarded(tmp_path) as (edge, _), httpx.AsyncClient(trust_env=False) as http:
        for path in ("/admin/state", "/metrics", "/ui", "/admin/changes"):
            refused = await http.get(edge.url + path)
            assert refused.status_code == 401 and refused.headers["www-authenticate"].startswith("Basic")
            assert (await http.get(edge.url + path, headers={"authorization": f"Bearer {CI_KEY}"})).status_code == 401
            assert (await http.get(edge.url + path, headers={"authorization": f"Bearer {ADMIN}"})).status_code == 200
            assert (await http.get(edge.url + path, headers={"authorization": basic})).status_code == 200
        # The connect API takes the admin token too (it has no connect_token here, and the caller is local).
        connected = await http.get(edge.url + "/api/mcp/servers", headers={"authorization": f"Bearer {ADMIN}"})
        # The admin token is no MCP credential.
        mcp = await http.post(edge.url + "/mcp", headers={"authorization": f"Bearer {ADMIN}"},
                              json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
    assert connected.status_code == 200 and mcp.status_code == 401


async def test_a_foreign_origin_is_403_and_listed_or_own_loopback_origins_pass(tmp_path: Any) -> None:
    async with guarded(tmp_path) as (edge, _), httpx.AsyncClient(trust_env=False) as http:
        port = edge.url.rsplit(":", 1)[1]

        async def with_origin(origin: str, path: str = "/mcp") -> int:
            response = await http.post(edge.url + path, json={"jsonrpc": "2.0", "id": 1, "method": "ping"},
                                       headers={"origin": origin, "authorization": f"Bearer {FULL_KEY}",
                                                "accept": "application/json, text/event-stream"})
            return response.status_code

        assert await with_origin("https://evil.example.test") == 403
        assert await with_origin(f"http://127.0.0.1:{int(port) + 1}") == 403
        assert await with_origin("https://app.example.test") != 403
        assert await with_origin(f"http://localhost:{port}") != 403
        assert await with_origin(f"http://127.0.0.1:{port}") != 403
        admin = await http.get(edge.url + "/admin/state", headers={"origin": "https://evil.example.test",
                                                                   "authorization": f"Bearer {ADMIN}"})
    assert admin.status_code == 403


async def test_only_allowlisted_caller_headers_reach_the_backend(tmp_path: Any) -> None:
    caller = {"X-Trace": "t-42", "X-Other": "nope", "Cookie": "c=1"}
    async with guarded(tmp_path, forward_headers={"weather/echo": ["X-Trace"]}) as (edge, _), \
            asyncio.timeout(10), sdk(edge, FULL_KEY, **caller) as session:
        await session.call_tool("echo", {"q": "a"})
        await session.call_tool("header_arg", {"v": "b"})
    echo, header_arg = edge.backend.received[-2:]
    assert echo["headers"].get("x-trace") == "t-42" and "x-trace" not in header_arg["headers"]
    for received in (echo, header_arg):
        assert "x-other" not in received["headers"] and "cookie" not in received["headers"]
        assert FULL_KEY not in json.dumps(received["headers"])


async def test_a_rate_limit_is_429_with_retry_after_and_recovers(tmp_path: Any) -> None:
    limits = {"per_tool": {"weather/echo": {"per_second": 1, "burst": 2}}}
    async with guarded(tmp_path, rate_limits=limits) as (edge, _):
        limiter = edge.gateway.endpoints.rate_limits
        assert limiter is not None
        now = [1000.0]
        limiter.clock = lambda: now[0]
        async with edge.wire() as wire:
            wire.http.headers["authorization"] = f"Bearer {FULL_KEY}"
            assert (await wire.initialize()).status_code == 200
            assert [(await wire.call("echo", {"q": "x"}, n)).status_code for n in (1, 2)] == [200, 200]
            refused = await wire.call("echo", {"q": "x"}, 3)
            other = await wire.call("get_city", {"name": "Lisbon"}, 4)
            now[0] += 1.0
            recovered = await wire.call("echo", {"q": "x"}, 5)
        async with asyncio.timeout(10), sdk(edge, FULL_KEY) as session:  # the SDK's view of the same limit
            with pytest.raises(MCPError) as caught:
                await session.call_tool("echo", {"q": "x"})
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    error = refused.json()["error"]
    assert "1/s for weather/echo" in error["message"] and "retry in 1.0 s" in error["message"]
    assert other.status_code == 200 and recovered.status_code == 200
    assert "rate limit exceeded" in caught.value.error.message


def test_rate_limits_per_caller_are_separate_buckets_and_a_refusal_takes_no_token() -> None:
    now = [0.0]
    limiter = RateLimiter(RateLimitSettings.model_validate({"per_identity": {"per_second": 2, "burst": 1},
                                                            "per_tool": {"a/*": {"per_second": 1, "burst": 4}}}),
                          clock=lambda: now[0])
    alice, bob = (frontdoor.Identity("api_key", n) for n in ("alice", "bob"))
    limiter.admit(alice, "a", "t")
    limiter.admit(bob, "a", "t")
    with pytest.raises(RateLimited) as caught:
        limiter.admit(alice, "a", "t")
    assert caught.value.retry_after == pytest.approx(0.5) and "api_key:alice" in caught.value.limit
    now[0] = 0.5
    limiter.admit(alice, "a", "t")  # the refused call took nothing from the tool's bucket either
    for _ in range(2):
        now[0] += 0.5
        limiter.admit(alice, "a", "t")
    with pytest.raises(RateLimited, match="1/s for a/") as caught:
        limiter.admit(bob, "a", "t")  # bob's own bucket is full; the tool's shared one is not
    assert caught.value.retry_after == pytest.approx(0.5)


async def test_a_session_answers_only_the_credential_that_opened_it(tmp_path: Any) -> None:
    async with guarded(tmp_path) as (edge, _), edge.wire() as wire:
        wire.http.headers["authorization"] = f"Bearer {FULL_KEY}"
        assert (await wire.initialize()).status_code == 200
        wire.http.headers["authorization"] = f"Bearer {CI_KEY}"
        hijack = await wire.list_tools()
        wire.http.headers["authorization"] = f"Bearer {FULL_KEY}"
        own = await wire.list_tools()
    assert hijack.status_code == 404 and own.status_code == 200


async def test_list_changed_follows_each_sessions_own_view(tmp_path: Any) -> None:
    class Counting:
        def __init__(self) -> None:
            self.count = 0
            self.changed = asyncio.Event()

        async def __call__(self, message: Any) -> None:
            if isinstance(message, types.ToolListChangedNotification):
                self.count += 1
                self.changed.set()

    restricted, full = Counting(), Counting()
    async with guarded(tmp_path) as (edge, _):
        tools_file = edge.gateway.settings.files_root / TOOLS

        def describe(tool: str, description: str) -> None:
            doc = json.loads(tools_file.read_text())
            next(t for t in doc["tools"] if t["name"] == tool)["description"] = description
            tools_file.write_text(json.dumps(doc))

        async with asyncio.timeout(10), sdk(edge, CI_KEY, inbox=restricted) as mine, \
                sdk(edge, FULL_KEY, inbox=full) as theirs:
            await names(mine), await names(theirs)
            describe("echo", "a change only the full view sees")
            await full.changed.wait()
            full.changed.clear()
            describe("get_city", "a change both views see")
            await full.changed.wait()
            await restricted.changed.wait()
    assert restricted.count == 1 and full.count == 2


async def test_each_call_leaves_one_audit_line_without_arguments(tmp_path: Any) -> None:
    with structlog.testing.capture_logs() as logs:
        async with guarded(tmp_path, audit={"enabled": True}) as (edge, _), \
                asyncio.timeout(10), sdk(edge, CI_KEY) as session:
            await session.call_tool("get_city", {"name": "secret-city"})
            with pytest.raises(MCPError):
                await session.call_tool("echo", {"q": "x"})
    lines = [e for e in logs if e["event"] == "audit.call"]
    assert [(e["identity"], e["tool"], e["outcome"]) for e in lines] == [
        ("api_key:ci-bot", "get_city", "ok"), ("api_key:ci-bot", "echo", "unknown_tool")]
    assert all(e["duration_ms"] >= 0 and e["endpoint"] == "/mcp/weather" for e in lines)
    assert "secret-city" not in json.dumps(lines) and CI_KEY not in json.dumps(logs, default=str)


async def test_without_authentication_only_loopback_callers_are_served_unless_allowed_loudly() -> None:
    async def inner(scope: Any, receive: Any, send: Any) -> None:
        await JSONResponse({"ok": True})(scope, receive, send)

    async def status(door: FrontDoor, client: str, path: str) -> int:
        transport = httpx.ASGITransport(app=door, client=(client, 5000))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as http:
            return (await http.post(path, json={})).status_code

    closed = FrontDoor(inner, None)
    opened = FrontDoor(inner, frontdoor.AuthSettings(allow_unauthenticated_remote=True))
    assert await status(closed, "127.0.0.1", "/mcp") == 200
    assert await status(closed, "203.0.113.7", "/mcp") == 403
    assert await status(closed, "203.0.113.7", "/sse/weather") == 403
    assert await status(closed, "203.0.113.7", "/admin/state") == 403
    assert await status(closed, "203.0.113.7", "/healthz") == 200
    assert await status(opened, "203.0.113.7", "/mcp") == 200
    assert await status(opened, "203.0.113.7", "/metrics") == 403
    said = {event for event, _ in frontdoor.startup_warnings(frontdoor.AuthSettings(), "0.0.0.0")}
    assert said == {"auth.loopback_only", "auth.admin_loopback_only"}


async def test_the_readme_securing_example_works_as_written(tmp_path: Any) -> None:
    readme = README.read_text()
    found = re.search(r"<!-- securing-example:start -->\n```yaml\n(.*?)```\n<!-- securing-example:end -->", readme,
                      re.S)
    assert found is not None, "README lost its securing example markers"
    (tmp_path / "gateway.yaml").write_text(found.group(1))
    loaded = load_settings(tmp_path / "gateway.yaml", {"files": DEMO_TREE})
    assert loaded.host == "0.0.0.0" and loaded.auth.jwt is not None and loaded.audit.enabled
    documented = yaml.safe_load(found.group(1))
    del documented["host"]
    key = re.search(r"this one: (demo-ci-key-\S+)\)", found.group(1))
    token = re.search(r"this one: (demo-admin-token-\S+)\)", found.group(1))
    assert key is not None and token is not None
    async with edge_gateway(tmp_path, **documented) as edge, httpx.AsyncClient(trust_env=False) as http:
        async with asyncio.timeout(10), sdk(edge, key.group(1), "/mcp") as session:
            listed = await names(session)
        refused = await http.post(edge.url + "/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "ping"})
        basic = base64.b64encode(f"anyone:{token.group(1)}".encode()).decode()
        admin = await http.get(edge.url + "/admin/state", headers={"authorization": f"Basic {basic}"})
        anonymous_admin = await http.get(edge.url + "/admin/state")
    assert listed == {"weather_get_city", "weather_get_forecast", "gateway-info_greet"}
    assert refused.status_code == 401 and admin.status_code == 200 and anonymous_admin.status_code == 401
