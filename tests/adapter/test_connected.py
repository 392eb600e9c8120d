"""Self-registration with a gateway's connect API (no Nacos), against a real gateway over HTTP.

The gateway runs on a copy of the demo tree whose weather server's
``serviceRef`` (``weather-api``) has no instances, so a tool call reaches
the demo backend only while ``connected(...)`` holds its connection.  The
gateway's ASGI app is wrapped to count answered connect requests (the first
one and every heartbeat), which is what the heartbeat tests wait on, and to
answer some of them with an error of the test's choosing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client import Client
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send
from structlog.testing import capture_logs

from mcpgw.adapter.registration import (
    CONNECT_PATH,
    ConnectedInstance,
    ConnectRefused,
    GatewayConnection,
    GatewayUnreachable,
    InvalidRegistration,
    connected,
    run_until_signal,
)
from mcpgw.gateway.app import Gateway
from mcpgw.gateway.cli import main
from mcpgw.gateway.demo_backend import create_demo_backend
from mcpgw.gateway.settings import DEMO_TREE, Settings
from tests.gateway import listening_socket, serving, text

REPO = Path(__file__).resolve().parents[2]
SERVICE = "weather-api"
NO_INSTANCE = "no healthy instance of public/DEFAULT_GROUP/weather-api"
TOKEN = "right-token-0123456789"


@dataclass
class ConnectCounter:
    """Wraps the gateway: counts answered connect requests, and answers the queued ``refusals`` itself."""

    app: ASGIApp
    answered: int = 0
    refusals: list[tuple[int, str]] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        is_connect = scope["type"] == "http" and scope["method"] == "POST" and scope["path"] == CONNECT_PATH
        if is_connect and self.refusals:
            status, message = self.refusals.pop(0)
            await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
        else:
            await self.app(scope, receive, send)
        if is_connect:
            self.answered += 1
            self.changed.set()

    async def wait_for(self, count: int) -> None:
        """Until ``count`` connect requests were answered in all (the caller bounds the wait)."""
        while self.answered < count:
            self.changed.clear()
            await self.changed.wait()


@dataclass
class Running:
    url: str
    gateway: Gateway
    backend_port: int
    http: httpx.AsyncClient
    counter: ConnectCounter

    def client(self) -> Client:
        return Client(self.url + "/mcp/weather", mode="legacy", cache=None)

    async def servers(self) -> dict[str, list[dict[str, Any]]]:
        listing = await self.http.get("/api/mcp/servers")
        assert listing.status_code == 200, listing.text
        servers: dict[str, list[dict[str, Any]]] = listing.json()["servers"]
        return servers

    async def call_get_city(self) -> tuple[bool, str]:
        async with self.client() as session:
            result = await session.call_tool("get_city", {"name": "Lisbon"})
        return result.is_error is True, text(result)


@contextlib.asynccontextmanager
async def _running(tmp_path: Path, token: str | None = None) -> AsyncIterator[Running]:
    tree = tmp_path / "tree"
    shutil.copytree(DEMO_TREE, tree)
    (tree / "naming/public/DEFAULT_GROUP/weather-api.json").unlink()
    backend_sock = listening_socket()
    gateway = Gateway(Settings(files=tree, discovery_interval=3600, upstream_timeout=1.0, connect_token=token))
    counter = ConnectCounter(gateway.asgi())
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        serving(create_demo_backend(), backend_sock),
        serving(counter) as url,
        httpx.AsyncClient(base_url=url, headers=headers, trust_env=False) as http,
    ):
        async with asyncio.timeout(5):
            await gateway.adapter.ready.wait()
        yield Running(url, gateway, backend_sock.getsockname()[1], http, counter)


@pytest.fixture
async def running(tmp_path: Path) -> AsyncIterator[Running]:
    async with _running(tmp_path) as running:
        yield running


@pytest.fixture
async def guarded(tmp_path: Path) -> AsyncIterator[Running]:
    async with _running(tmp_path, token=TOKEN) as running:
        yield running


async def test_a_rest_tool_reaches_the_backend_only_while_it_is_connected(running: Running) -> None:
    async with asyncio.timeout(10):
        is_error, answer = await running.call_get_city()
        assert is_error and NO_INSTANCE in answer
        async with connected(running.url, SERVICE, running.backend_port) as instance:
            is_error, answer = await running.call_get_city()
            assert not is_error, answer
            assert "Portugal" in answer
            [listed] = (await running.servers())[SERVICE]
            assert (listed["serverId"], listed["origin"]) == (f"127.0.0.1:{running.backend_port}", "connect")
            assert 29 <= listed["expiresInSeconds"] <= 30
        # No waiting: the DELETE was answered once the gateway had applied it.
        is_error, answer = await running.call_get_city()
    assert is_error and NO_INSTANCE in answer
    assert await running.servers() == {}
    assert instance.server_id == instance.address == f"127.0.0.1:{running.backend_port}"
    assert str(instance) == f"{instance.address} in service public/DEFAULT_GROUP/{SERVICE} at gateway {running.url}"


async def test_a_grouped_service_is_connected_and_disconnected_under_its_grouped_name(running: Running) -> None:
    async with connected(running.url, "amap::1.0.0", 9000, group="mcp-endpoints", server_id="amap-1",
                         weight=2.5, metadata={"apiKey": "s3cret-value"}) as instance:
        [listed] = (await running.servers())["mcp-endpoints@@amap::1.0.0"]
        assert (listed["serverId"], listed["weight"]) == ("amap-1", 2.5)
        assert "apiKey" in listed["metadataKeys"]
        assert instance.server_name == "mcp-endpoints@@amap::1.0.0"
        assert instance.service == "public/mcp-endpoints/amap::1.0.0"
    assert await running.servers() == {}


async def test_the_heartbeat_renews_the_lease_past_its_ttl(running: Running) -> None:
    leases = running.gateway.connect_api
    async with connected(running.url, SERVICE, running.backend_port, ttl=1) as instance:
        first_deadline = leases.lease_deadline(SERVICE, instance.server_id)
        assert first_deadline is not None
        async with asyncio.timeout(5):
            await running.counter.wait_for(5)  # the connect, then four heartbeats: at least 4/3 s, past the 1 s lease
        renewed_deadline = leases.lease_deadline(SERVICE, instance.server_id)
        assert renewed_deadline is not None and renewed_deadline > first_deadline + 1
        assert [s["serverId"] for s in (await running.servers())[SERVICE]] == [instance.server_id]
        is_error, answer = await running.call_get_city()
        assert not is_error, answer


@pytest.mark.parametrize(
    ("status", "level", "event"),
    [(404, "error", "registration.heartbeat_refused"), (409, "error", "registration.heartbeat_refused"),
     (503, "warning", "registration.heartbeat_failed")],
)
async def test_a_failed_heartbeat_is_logged_with_its_status_and_message_and_the_next_one_renews(
    running: Running, status: int, level: str, event: str
) -> None:
    leases = running.gateway.connect_api
    async with connected(running.url, SERVICE, running.backend_port, ttl=1) as instance:
        running.counter.refusals.append((status, "the gateway says no"))
        before = leases.lease_deadline(SERVICE, instance.server_id)
        assert before is not None
        with capture_logs() as logs:
            async with asyncio.timeout(5):
                await running.counter.wait_for(3)  # the connect, the failed heartbeat, the next one
        after = leases.lease_deadline(SERVICE, instance.server_id)
        assert after is not None and after > before
    [failure] = [entry for entry in logs if entry["event"] == event]
    assert (failure["log_level"], failure["status"], failure["error"]) == (level, status, "the gateway says no")
    assert await running.servers() == {}


async def test_a_heartbeat_connects_again_a_server_the_gateway_dropped(running: Running) -> None:
    async with connected(running.url, SERVICE, running.backend_port, ttl=1) as instance:
        dropped = await running.http.delete(f"/api/mcp/servers/{SERVICE}/{instance.server_id}")
        assert dropped.status_code == 200
        with capture_logs() as logs:
            async with asyncio.timeout(5):
                # The heartbeat after the one that connected again: by then that one's answer was handled.
                await running.counter.wait_for(3)
        assert [s["serverId"] for s in (await running.servers())[SERVICE]] == [instance.server_id]
    assert "registration.reconnected" in [entry["event"] for entry in logs]


async def test_leaving_after_the_gateway_dropped_the_server_logs_the_failed_disconnect_and_does_not_raise(
    running: Running,
) -> None:
    with capture_logs() as logs:
        async with connected(running.url, SERVICE, running.backend_port) as instance:
            assert (await running.http.delete(f"/api/mcp/servers/{SERVICE}/{instance.server_id}")).status_code == 200
    [failure] = [entry for entry in logs if entry["event"] == "registration.disconnect_failed"]
    assert failure["status"] == 404
    assert "is connected" in failure["error"]


async def test_an_error_inside_the_block_still_disconnects(running: Running) -> None:
    seen_inside: list[int] = []

    async def crash() -> None:
        async with connected(running.url, SERVICE, running.backend_port):
            seen_inside.append(len((await running.servers())[SERVICE]))
            raise RuntimeError("backend crashed")

    with pytest.raises(RuntimeError, match="backend crashed"):
        await crash()
    assert seen_inside == [1]
    assert await running.servers() == {}


async def test_a_cancelled_block_still_disconnects(running: Running) -> None:
    inside = asyncio.Event()

    async def hold_forever() -> None:
        async with connected(running.url, SERVICE, running.backend_port):
            inside.set()
            await asyncio.Event().wait()

    task = asyncio.create_task(hold_forever())
    async with asyncio.timeout(5):
        await inside.wait()
        assert len((await running.servers())[SERVICE]) == 1
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert await running.servers() == {}


async def test_a_wrong_token_is_refused_quoting_the_gateway_and_never_the_token(guarded: Running) -> None:
    wrong = "wrong-token-0123456789"
    with pytest.raises(ConnectRefused) as caught:
        async with connected(guarded.url, SERVICE, guarded.backend_port, token=wrong):
            pytest.fail("connected with a wrong token")
    message = str(caught.value)
    assert message.startswith(f"the gateway at {guarded.url} refused to connect 127.0.0.1:{guarded.backend_port} "
                              f"to service '{SERVICE}' (401): the connect API needs the gateway's connect token")
    assert caught.value.status == 401
    assert wrong not in message and TOKEN not in message
    assert await guarded.servers() == {}


async def test_the_right_token_connects_and_renews_and_disconnects(guarded: Running) -> None:
    async with connected(guarded.url, SERVICE, guarded.backend_port, token=TOKEN, ttl=1):
        async with asyncio.timeout(5):
            await guarded.counter.wait_for(2)
        assert len((await guarded.servers())[SERVICE]) == 1
    assert await guarded.servers() == {}


async def test_an_unreachable_gateway_fails_fast_naming_the_url() -> None:
    sock = listening_socket()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    sock.close()  # nobody listens there any more
    async with asyncio.timeout(5):
        with pytest.raises(GatewayUnreachable, match=f"cannot reach the gateway at {url} to connect service"):
            async with connected(url, SERVICE, 8000, timeout=1):
                pytest.fail("connected with nobody listening")


@pytest.mark.parametrize(
    ("changes", "problem"),
    [
        ({"gateway_url": "127.0.0.1:8080"}, "the gateway URL must be http://host:port"),
        ({"gateway_url": "http://127.0.0.1:99999"}, "the gateway URL is not a URL"),
        ({"gateway_url": "http://user:secret@127.0.0.1:8080"}, "carries credentials"),
        ({"port": 0}, "port 0 is not an integer in 1-65535"),
        ({"weight": 10001.0}, "weight 10001.0 is not a number in 0-10000"),
        ({"metadata": {"": "x"}}, "metadata entry '' must map"),
        ({"server_id": "a/b"}, "server id 'a/b' must be non-empty and must not contain '/'"),
        ({"ttl": 0.5}, "ttl 0.5 is not a number of seconds in 1-86400"),
        ({"token": "two words"}, "the token is empty or contains whitespace"),
    ],
)
def test_invalid_connections_are_rejected_before_contacting_the_gateway(
    changes: dict[str, Any], problem: str
) -> None:
    arguments: dict[str, Any] = {"gateway_url": "http://127.0.0.1:8080", "service": SERVICE, "port": 8000, **changes}
    with pytest.raises(InvalidRegistration, match="Fix the arguments") as caught:
        GatewayConnection(**arguments)
    assert problem in str(caught.value)
    assert "secret" not in str(caught.value) and "two words" not in str(caught.value)


async def test_run_until_signal_holds_a_gateway_connection_until_stopped(running: Running) -> None:
    stop = asyncio.Event()
    seen: list[str] = []

    def on_connected(instance: ConnectedInstance) -> None:
        seen.append(f"up {instance.address}")
        stop.set()

    connection = GatewayConnection(running.url, SERVICE, running.backend_port)
    async with asyncio.timeout(10):
        instance = await run_until_signal(connection, on_registered=on_connected,
                                          on_deregistered=lambda i: seen.append(f"down {i.address}"), stop=stop)
    assert seen == [f"up {instance.address}", f"down {instance.address}"]
    assert await running.servers() == {}


async def test_cli_connects_until_sigterm_then_disconnects_and_exits_0(guarded: Running) -> None:
    port = guarded.backend_port
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "mcpgw", "register", "--gateway", guarded.url, "--service", SERVICE,
        "--port", str(port), "--weight", "2", "--metadata", "protocol=http",
        cwd=REPO, env={**os.environ, "MCPGW_CONNECT_TOKEN": TOKEN},
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )
    assert process.stdout is not None
    try:
        async with asyncio.timeout(20):
            first = (await process.stdout.readline()).decode()
            assert first == (f"registered 127.0.0.1:{port} in service public/DEFAULT_GROUP/{SERVICE} at gateway "
                             f"{guarded.url} (lease 30s, renewed every 10s); SIGTERM or Ctrl-C deregisters it\n")
            [listed] = (await guarded.servers())[SERVICE]
            assert listed["weight"] == 2.0
            assert "protocol" in listed["metadataKeys"]
            process.send_signal(signal.SIGTERM)
            out, err = await process.communicate()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode == 0, err.decode()
    assert out.decode() == f"deregistered 127.0.0.1:{port} from service public/DEFAULT_GROUP/{SERVICE}\n"
    assert TOKEN not in first + out.decode() + err.decode()
    assert await guarded.servers() == {}


def test_cli_needs_exactly_one_of_nacos_and_gateway(capsys: pytest.CaptureFixture[str]) -> None:
    for where in ([], ["--nacos", "127.0.0.1:8848", "--gateway", "http://127.0.0.1:8080"]):
        with pytest.raises(SystemExit) as exited:
            main(["register", *where, "--service", SERVICE, "--port", "80"])
        assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "one of the arguments --nacos --gateway is required" in err
    assert "argument --gateway: not allowed with argument --nacos" in err


def test_cli_rejects_options_of_the_other_kind_of_registration(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["register", "--nacos", "127.0.0.1:8848", "--service", SERVICE, "--port", "80", "--ttl", "10"]) == 2
    assert "--token and --ttl go with --gateway" in capsys.readouterr().err
    assert main(["register", "--gateway", "http://127.0.0.1:8080", "--service", SERVICE, "--port", "80",
                 "--username", "nacos"]) == 2
    assert "--namespace, --username and --password go with --nacos" in capsys.readouterr().err
