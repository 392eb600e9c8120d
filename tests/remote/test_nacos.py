"""The Nacos source over the real nacos-sdk-python: against the protocol double, and at the end the real Nacos."""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from mcpgw.registry.errors import SourceAuthError, SourceUnavailable
from mcpgw.remote.base import ConfigKey, ServiceInstance, ServiceKey, versions_key
from mcpgw.remote.nacos import NacosSource
from tests.support.nacos_double import NacosDouble
from tests.support.nacos_target import NacosTarget, eventually

KEY = ConfigKey("public", "mcp-server", "s1-1.0.0-mcp-server.json")
SERVICE = ServiceKey("public", "mcp-endpoints", "weather::1.0.0")
RECONNECT_BOUND = 15.0  # the SDK's reconnect loop waits up to 3 s per attempt
PROMPT = 2.0  # well under the SDK's 5 s listen tick: a new listener must not wait for it


class Recorder:
    """A callback that records what it is given; tests await the next call with a bound."""

    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[Any, ...]] = asyncio.Queue()

    async def __call__(self, *args: Any) -> None:
        self.calls.put_nowait(args)

    async def next(self, within: float = 5.0) -> tuple[Any, ...]:
        async with asyncio.timeout(within):
            return await self.calls.get()


def addresses(instances: tuple[ServiceInstance, ...]) -> list[str]:
    return [i.address for i in instances]


def make_source(double: NacosDouble, tmp_path: Path, **kwargs: Any) -> NacosSource:
    return NacosSource(
        double.server_addr,
        cache_dir=tmp_path / "cache",
        log_dir=tmp_path / "logs",
        listing_poll_interval=0.05,
        **kwargs,
    )


@pytest.fixture
async def double() -> AsyncIterator[NacosDouble]:
    async with NacosDouble() as running:
        yield running


@pytest.fixture
async def source(double: NacosDouble, tmp_path: Path) -> AsyncIterator[NacosSource]:
    started = make_source(double, tmp_path)
    await started.start()
    yield started
    await started.stop()


def versions_json(server_id: str, name: str, latest: str = "1.0.0") -> str:
    return json.dumps(
        {
            "id": server_id,
            "name": name,
            "protocol": "http",
            "frontProtocol": "mcp-streamable",
            "enabled": True,
            "latestPublishedVersion": latest,
            "versionDetails": [{"version": latest, "release_date": "2025-09-01T08:00:00Z", "is_latest": True}],
        }
    )


async def test_get_config_returns_content_and_none_when_missing(double: NacosDouble, source: NacosSource) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")

    assert await source.get_config(KEY) == "A"
    assert await source.get_config(ConfigKey("public", "mcp-server", "missing.json")) is None


async def test_pushed_change_is_delivered_and_deletion_arrives_as_empty(
    double: NacosDouble, source: NacosSource
) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")
    recorder = Recorder()
    assert await source.get_config(KEY) == "A"
    await source.listen_config(KEY, recorder)

    double.set_config("public", KEY.group, KEY.data_id, "B")
    assert await recorder.next(PROMPT) == (KEY, "B")
    double.delete_config("public", KEY.group, KEY.data_id)
    assert await recorder.next() == (KEY, "")


async def test_change_between_read_and_listen_is_delivered_once(double: NacosDouble, source: NacosSource) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")
    recorder = Recorder()
    assert await source.get_config(KEY) == "A"
    double.set_config("public", KEY.group, KEY.data_id, "B")  # before the listener exists
    await source.listen_config(KEY, recorder)

    assert await recorder.next() == (KEY, "B")
    double.set_config("public", KEY.group, KEY.data_id, "C")
    # A duplicate "B" (push + md5 resync) would come before "C".
    assert await recorder.next() == (KEY, "C")


async def test_listening_gives_no_initial_event(double: NacosDouble, source: NacosSource) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")
    recorder = Recorder()
    await source.listen_config(KEY, recorder)
    await double.wait_for(lambda: double.config_listeners("public", KEY.group, KEY.data_id) == 1)

    double.set_config("public", KEY.group, KEY.data_id, "B")
    assert await recorder.next() == (KEY, "B")


async def test_stopped_listener_is_not_called_again(double: NacosDouble, source: NacosSource) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")
    stays, leaves = Recorder(), Recorder()
    await source.listen_config(KEY, stays)
    await source.listen_config(KEY, leaves)
    await source.stop_listening(KEY, leaves)

    double.set_config("public", KEY.group, KEY.data_id, "B")
    assert await stays.next() == (KEY, "B")
    assert leaves.calls.empty()


async def test_callbacks_may_call_back_into_the_source_without_deadlock(
    double: NacosDouble, source: NacosSource
) -> None:
    # The SDK awaits its callbacks under its own locks; ours must run outside them.
    seen: asyncio.Queue[tuple[str, int]] = asyncio.Queue()

    async def on_config(key: ConfigKey, content: str) -> None:
        await source.stop_listening(key, on_config)
        seen.put_nowait((content, 0))

    async def on_instances(key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
        seen.put_nowait(("instances", len(await source.list_instances(key))))

    double.set_config("public", KEY.group, KEY.data_id, "A")
    await source.listen_config(KEY, on_config)
    await source.subscribe(SERVICE, on_instances)
    double.set_config("public", KEY.group, KEY.data_id, "B")
    double.add_instance("public", SERVICE.group, SERVICE.service, "10.0.0.1", 8000)

    async with asyncio.timeout(5):
        results = {await seen.get(), await seen.get()}
    assert results == {("B", 0), ("instances", 1)}


async def test_instances_are_pushed_on_register_and_deregister_down_to_zero(
    double: NacosDouble, source: NacosSource
) -> None:
    recorder = Recorder()
    assert await source.list_instances(SERVICE) == []
    await source.subscribe(SERVICE, recorder)

    double.add_instance(
        "public", SERVICE.group, SERVICE.service, "10.0.0.1", 8000, weight=2.0, metadata={"protocol": "https"}
    )
    key, instances = await recorder.next()
    assert key == SERVICE
    assert addresses(instances) == ["10.0.0.1:8000"]
    assert instances[0].weight == 2.0
    assert instances[0].metadata["protocol"] == "https"
    assert instances[0].ephemeral is False

    await source.register_instance(SERVICE, "10.0.0.2", 8001)
    _, instances = await recorder.next()
    assert addresses(instances) == ["10.0.0.1:8000", "10.0.0.2:8001"]

    double.remove_instance("public", SERVICE.group, SERVICE.service, "10.0.0.1", 8000)
    _, instances = await recorder.next()
    assert addresses(instances) == ["10.0.0.2:8001"]
    await source.deregister_instance(SERVICE, "10.0.0.2", 8001)
    # Policy: a real scale-to-zero is delivered (the SDK would drop it by default).
    assert await recorder.next() == (SERVICE, ())


async def test_subscribing_after_listing_gives_no_initial_event(double: NacosDouble, source: NacosSource) -> None:
    double.add_instance("public", SERVICE.group, SERVICE.service, "10.0.0.1", 8000)
    recorder = Recorder()
    assert [i.address for i in await source.list_instances(SERVICE)] == ["10.0.0.1:8000"]
    await source.subscribe(SERVICE, recorder)

    double.add_instance("public", SERVICE.group, SERVICE.service, "10.0.0.2", 8000)
    _, instances = await recorder.next()
    assert addresses(instances) == ["10.0.0.1:8000", "10.0.0.2:8000"]


async def test_listing_reads_every_page(double: NacosDouble, tmp_path: Path) -> None:
    for n in range(7):
        double.set_config(
            "public",
            "mcp-server-versions",
            f"id-{n}-mcp-versions.json",
            versions_json(f"id-{n}", f"server-{n}", latest=f"1.{n}.0"),
        )
    double.set_config("other", "mcp-server-versions", "x-mcp-versions.json", versions_json("x", "elsewhere"))
    source = make_source(double, tmp_path, list_page_size=3)
    await source.start()
    try:
        servers = await source.list_mcp_servers()
    finally:
        await source.stop()

    assert sorted(s.id for s in servers) == [f"id-{n}" for n in range(7)]
    by_id = {s.id: s for s in servers}
    assert by_id["id-4"].name == "server-4"
    assert by_id["id-4"].version == "1.4.0"
    assert by_id["id-4"].protocol == "http"
    assert by_id["id-4"].front_protocol == "mcp-streamable"
    assert by_id["id-4"].namespace == "public"
    assert double.requests_seen  # the SDK really talked to the double


async def test_watch_listing_fires_when_a_server_is_created(double: NacosDouble, source: NacosSource) -> None:
    recorder = Recorder()
    await source.watch_listing(recorder)
    async with httpx.AsyncClient(base_url=double.admin_base_url) as admin:
        created = await admin.post(
            "/nacos/v3/admin/ai/mcp",
            data={
                "serverSpecification": json.dumps(
                    # Without remoteServerConfig Nacos 3.1 fails with a NullPointerException (code 30000).
                    {"name": "weather", "protocol": "http", "versionDetail": {"version": "1.0.0"},
                     "remoteServerConfig": {"exportPath": ""}}
                ),
                "endpointSpecification": json.dumps(
                    {"type": "REF", "data": {"namespaceId": "public", "groupName": "DEFAULT_GROUP",
                                             "serviceName": "weather-api"}}
                ),
            },
        )
    assert created.json()["code"] == 0
    assert await recorder.next() == ()
    assert [s.name for s in await source.list_mcp_servers()] == ["weather"]


async def test_wrong_credentials_fail_start_with_a_clear_auth_error(double: NacosDouble, tmp_path: Path) -> None:
    double.require_auth("nacos", "right-password")
    source = make_source(double, tmp_path, username="nacos", password="wrong-password")

    started = time.monotonic()
    with pytest.raises(SourceAuthError, match="rejected the credentials for user nacos") as caught:
        await source.start()
    assert time.monotonic() - started < 5
    assert "wrong-password" not in str(caught.value)


async def test_right_credentials_reach_config_naming_and_listing(double: NacosDouble, tmp_path: Path) -> None:
    double.require_auth("nacos", "right-password")
    double.set_config("public", KEY.group, KEY.data_id, "A")
    double.set_config("public", "mcp-server-versions", "id-1-mcp-versions.json", versions_json("id-1", "one"))
    source = make_source(double, tmp_path, username="nacos", password="right-password")
    await source.start()
    try:
        assert await source.get_config(KEY) == "A"
        assert await source.list_instances(SERVICE) == []
        assert [s.id for s in await source.list_mcp_servers()] == ["id-1"]
    finally:
        await source.stop()


async def test_unreachable_server_fails_start_quickly(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    source = NacosSource(f"127.0.0.1:{port}", cache_dir=tmp_path / "c", log_dir=tmp_path / "l")

    started = time.monotonic()
    with pytest.raises(SourceUnavailable, match=f"cannot reach Nacos at 127.0.0.1:{port}"):
        await source.start()
    assert time.monotonic() - started < 5


async def test_restart_resyncs_and_delivers_what_changed_while_down(double: NacosDouble, source: NacosSource) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")
    configs, instances = Recorder(), Recorder()
    await source.listen_config(KEY, configs)
    await source.subscribe(SERVICE, instances)
    await source.register_instance(SERVICE, "10.0.0.9", 9000)
    assert addresses((await instances.next())[1]) == ["10.0.0.9:9000"]

    await double.stop()
    double.set_config("public", KEY.group, KEY.data_id, "changed while down")
    double.add_instance("public", SERVICE.group, SERVICE.service, "10.0.0.1", 8000)
    await double.start()

    assert await configs.next(RECONNECT_BOUND) == (KEY, "changed while down")
    # Our ephemeral instance vanished with the old connection; it is registered again before the
    # re-read, so subscribers see the new instance join and never see ours flap away and back.
    _, latest = await instances.next(RECONNECT_BOUND)
    assert addresses(latest) == ["10.0.0.1:8000", "10.0.0.9:9000"]
    assert len(double.instances("public", SERVICE.group, SERVICE.service)) == 2

    double.set_config("public", KEY.group, KEY.data_id, "after")
    assert await configs.next() == (KEY, "after")


async def test_service_and_config_in_another_namespace(double: NacosDouble, source: NacosSource) -> None:
    other = ServiceKey("team-b", "mcp-endpoints", "maps")
    other_key = versions_key("id-b", namespace="team-b")
    double.add_instance("team-b", other.group, other.service, "10.1.0.1", 7000)
    double.add_instance("public", other.group, other.service, "10.9.9.9", 7000)  # same name, other namespace
    double.set_config("team-b", other_key.group, other_key.data_id, "B")

    assert addresses(tuple(await source.list_instances(other))) == ["10.1.0.1:7000"]
    assert await source.get_config(other_key) == "B"
    assert await source.get_config(versions_key("id-b")) is None

    recorder = Recorder()
    await source.subscribe(other, recorder)
    double.add_instance("team-b", other.group, other.service, "10.1.0.2", 7000)
    _, instances = await recorder.next()
    assert addresses(instances) == ["10.1.0.1:7000", "10.1.0.2:7000"]


async def test_publish_and_remove_config_write_through_to_nacos(double: NacosDouble, source: NacosSource) -> None:
    await source.publish_config(KEY, '{"id": "s1"}')
    assert double.config("public", KEY.group, KEY.data_id) == '{"id": "s1"}'

    await source.remove_config(KEY)
    assert double.config("public", KEY.group, KEY.data_id) is None


async def test_delayed_push_still_arrives(double: NacosDouble, source: NacosSource) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")
    recorder = Recorder()
    await source.listen_config(KEY, recorder)
    await double.wait_for(lambda: double.config_listeners("public", KEY.group, KEY.data_id) == 1)
    double.delay_pushes(0.2)

    started = time.monotonic()
    double.set_config("public", KEY.group, KEY.data_id, "B")
    assert await recorder.next() == (KEY, "B")
    assert time.monotonic() - started >= 0.2


async def test_changes_whose_pushes_were_lost_arrive_after_a_reconnect(
    double: NacosDouble, source: NacosSource
) -> None:
    double.set_config("public", KEY.group, KEY.data_id, "A")
    configs, instances = Recorder(), Recorder()
    await source.listen_config(KEY, configs)
    await source.subscribe(SERVICE, instances)
    double.drop_pushes(True)
    double.set_config("public", KEY.group, KEY.data_id, "B")
    double.add_instance("public", SERVICE.group, SERVICE.service, "10.0.0.1", 8000)

    await double.restart()  # pushes stay lost: only the resync can bring the changes

    assert await configs.next(RECONNECT_BOUND) == (KEY, "B")
    _, latest = await instances.next(RECONNECT_BOUND)
    assert addresses(latest) == ["10.0.0.1:8000"]


async def test_reading_configs_logs_no_warning_about_the_absent_failover_files(
    double: NacosDouble, source: NacosSource, caplog: pytest.LogCaptureFixture
) -> None:
    # The SDK looks for a ``*_failover`` file before every read and warns "File not found" when there is
    # none, which is the normal case: one WARNING per read would bury the warnings that matter.
    double.set_config("public", KEY.group, KEY.data_id, "v1")
    with caplog.at_level(logging.DEBUG):
        for _ in range(3):
            assert await source.get_config(KEY) == "v1"
        assert await source.get_config(ConfigKey("public", "mcp-server", "absent.json")) is None
    sdk = [r for r in caplog.records if r.name in ("config", "naming") and r.levelno >= logging.WARNING]
    assert sdk == [], [r.getMessage() for r in sdk]


# ---------------------------------------------------------------- the same against the real Nacos too


def source_for(target: NacosTarget, where: Path, **kwargs: Any) -> NacosSource:
    return NacosSource(
        target.server_addr,
        username=kwargs.pop("username", target.username),
        password=kwargs.pop("password", target.password),
        cache_dir=where / "cache",
        log_dir=where / "logs",
        listing_poll_interval=0.05,
        **kwargs,
    )


async def test_wrong_password_fails_start_with_a_clear_auth_error_on_both(nacos: NacosTarget, tmp_path: Path) -> None:
    if nacos.double is not None:
        nacos.double.require_auth("nacos", "right-password")
    source = source_for(nacos, tmp_path, username="nacos", password="wrong-password")

    with pytest.raises(SourceAuthError, match="rejected the credentials for user nacos") as caught:
        async with asyncio.timeout(5):
            await source.start()
    assert "wrong-password" not in str(caught.value)


async def test_nacos_restart_is_followed_config_pushes_resume_and_our_instance_comes_back(
    nacos: NacosTarget, tmp_path: Path
) -> None:
    nacos.need_restartable()
    key = ConfigKey("public", "mcpgw-it", f"restart-{uuid.uuid4().hex[:8]}.json")
    service = ServiceKey("public", "mcpgw-it", f"restart-{uuid.uuid4().hex[:8]}")
    source, writer = source_for(nacos, tmp_path / "source"), source_for(nacos, tmp_path / "writer")
    await source.start()
    await writer.start()
    try:
        configs, instances = Recorder(), Recorder()
        await writer.publish_config(key, "A")
        assert await eventually(lambda: source.get_config(key), lambda content: content == "A") == "A"
        await source.listen_config(key, configs)
        await source.subscribe(service, instances)
        await source.register_instance(service, "127.0.0.1", 9000)
        assert addresses((await instances.next())[1]) == ["127.0.0.1:9000"]

        async with asyncio.timeout(90):
            await nacos.stop()
            await nacos.start()
        # Once it is back: a change (by a client that connects now) reaches the listener and our ephemeral
        # instance is registered again, both within the 10 s the gateway has to converge.
        await writer.stop()
        writer = source_for(nacos, tmp_path / "writer-after")
        await writer.start()
        await writer.publish_config(key, "after the restart")
        assert await configs.next(10) == (key, "after the restart")
        back = await eventually(lambda: source.list_instances(service), lambda found: len(found) == 1)
        assert addresses(tuple(back)) == ["127.0.0.1:9000"]
    finally:
        await writer.stop()
        await source.stop()
