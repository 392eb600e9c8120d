"""The in-memory source keeps the Nacos semantics the adapter relies on."""

from __future__ import annotations

import asyncio
import json

import pytest

from mcpgw.registry.errors import SourceUnavailable
from mcpgw.remote.base import (
    ConfigKey,
    McpServerInfo,
    RemoteClient,
    ServiceInstance,
    ServiceKey,
    server_spec_key,
    versions_key,
)
from mcpgw.remote.memory import MemorySource

SPEC = server_spec_key("s1", "1.0.0")
OTHER = ConfigKey("public", "DEFAULT_GROUP", "other.json")
SERVICE = ServiceKey("public", "mcp-endpoints", "weather::1.0.0")
A = ServiceInstance("10.0.0.1", 8080)
B = ServiceInstance("10.0.0.2", 8080, weight=2.0)


class Recorder:
    """Records every callback; callbacks only enqueue, as the contract requires."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[tuple[object, object]] = asyncio.Queue()

    async def config(self, key: ConfigKey, content: str) -> None:
        self.events.put_nowait((key, content))

    async def instances(self, key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
        self.events.put_nowait((key, instances))

    async def listing(self) -> None:
        self.events.put_nowait(("listing", None))

    def drain(self) -> list[tuple[object, object]]:
        drained = []
        while not self.events.empty():
            drained.append(self.events.get_nowait())
        return drained


def manifest(server_id: str, name: str, *, enabled: bool = True, version: str = "1.0.0") -> str:
    return json.dumps(
        {
            "id": server_id,
            "name": name,
            "protocol": "http",
            "frontProtocol": "mcp-streamable",
            "enabled": enabled,
            "latestPublishedVersion": version,
        }
    )


def test_memory_source_satisfies_the_remote_client_protocol() -> None:
    assert isinstance(MemorySource(), RemoteClient)


async def test_missing_config_reads_as_none_and_put_config_makes_it_readable() -> None:
    source = MemorySource()
    assert await source.get_config(SPEC) is None
    await source.put_config(SPEC, "{}")
    assert await source.get_config(SPEC) == "{}"


async def test_listener_gets_no_initial_event_then_changes_and_empty_string_on_deletion() -> None:
    source = MemorySource({SPEC: "v1"})
    recorder = Recorder()
    assert await source.get_config(SPEC) == "v1"
    await source.listen_config(SPEC, recorder.config)
    assert recorder.drain() == []
    await source.put_config(SPEC, "v2")
    await source.delete_config(SPEC)
    assert recorder.drain() == [(SPEC, "v2"), (SPEC, "")]
    assert await source.get_config(SPEC) is None


async def test_unchanged_content_notifies_nobody() -> None:
    source = MemorySource({SPEC: "v1"})
    recorder = Recorder()
    await source.listen_config(SPEC, recorder.config)
    await source.put_config(SPEC, "v1")
    await source.delete_config(OTHER)
    assert recorder.drain() == []


async def test_change_between_read_and_listen_reaches_the_new_listener() -> None:
    source = MemorySource({SPEC: "v1"})
    recorder = Recorder()
    assert await source.get_config(SPEC) == "v1"
    await source.put_config(SPEC, "v2")
    await source.listen_config(SPEC, recorder.config)
    assert recorder.drain() == [(SPEC, "v2")]


async def test_stop_listening_ends_events_and_unknown_pairs_are_ignored() -> None:
    source = MemorySource()
    recorder = Recorder()
    await source.stop_listening(SPEC, recorder.config)
    await source.listen_config(SPEC, recorder.config)
    await source.stop_listening(SPEC, recorder.config)
    await source.put_config(SPEC, "v1")
    assert recorder.drain() == []


async def test_subscribers_get_the_full_list_including_an_empty_one() -> None:
    source = MemorySource()
    recorder = Recorder()
    assert await source.list_instances(SERVICE) == []
    await source.subscribe(SERVICE, recorder.instances)
    await source.set_instances(SERVICE, [A])
    await source.set_instances(SERVICE, [A, B])
    await source.set_instances(SERVICE, [A, B])
    await source.set_instances(SERVICE, [])
    assert recorder.drain() == [(SERVICE, (A,)), (SERVICE, (A, B)), (SERVICE, ())]
    assert await source.list_instances(SERVICE) == []


async def test_unsubscribe_ends_instance_events() -> None:
    source = MemorySource()
    recorder = Recorder()
    await source.subscribe(SERVICE, recorder.instances)
    await source.unsubscribe(SERVICE, recorder.instances)
    await source.unsubscribe(SERVICE, recorder.instances)
    await source.set_instances(SERVICE, [A])
    assert recorder.drain() == []


async def test_listing_is_derived_from_versions_manifests_sorted_by_id() -> None:
    source = MemorySource(
        {
            versions_key("zz"): manifest("zz", "weather", enabled=False, version="2.0.0"),
            versions_key("aa"): "{not json",
            versions_key("mm", namespace="team-b"): manifest("mm", "elsewhere"),
            ConfigKey("public", "mcp-server-versions", "notes.txt"): "ignored",
            SPEC: "{}",
        }
    )
    assert await source.list_mcp_servers() == [
        McpServerInfo(id="aa", name=""),
        McpServerInfo(
            id="zz",
            name="weather",
            protocol="http",
            front_protocol="mcp-streamable",
            enabled=False,
            version="2.0.0",
        ),
    ]
    assert [info.id for info in await source.list_mcp_servers("team-b")] == ["mm"]


async def test_listing_override_replaces_the_derived_listing_until_cleared() -> None:
    source = MemorySource({versions_key("aa"): manifest("aa", "a")})
    override = [McpServerInfo(id="ghost", name="ghost"), McpServerInfo(id="x", name="x", namespace="other")]
    source.set_listing_override(override)
    assert await source.list_mcp_servers() == [McpServerInfo(id="ghost", name="ghost")]
    source.set_listing_override(None)
    assert [info.id for info in await source.list_mcp_servers()] == ["aa"]


async def test_listing_watchers_fire_on_manifest_changes_only() -> None:
    source = MemorySource()
    recorder = Recorder()
    await source.watch_listing(recorder.listing)
    await source.put_config(SPEC, "{}")
    assert recorder.drain() == []
    await source.put_config(versions_key("aa"), manifest("aa", "a"))
    await source.delete_config(versions_key("aa"))
    await source.notify_listing()
    assert recorder.drain() == [("listing", None)] * 3


async def test_apply_tree_notifies_only_what_changed_in_key_order() -> None:
    keep, change, drop, add = (ConfigKey("public", "g", name) for name in ("keep", "change", "drop", "add"))
    gone = ServiceKey("public", "g", "gone")
    source = MemorySource({keep: "k", change: "c1", drop: "d"}, {SERVICE: [A], gone: [B]})
    recorder = Recorder()
    for key in (keep, change, drop, add):
        await source.listen_config(key, recorder.config)
    for service in (SERVICE, gone):
        await source.subscribe(service, recorder.instances)
    await source.watch_listing(recorder.listing)

    await source.apply_tree({keep: "k", change: "c2", add: "a", versions_key("s"): "{}"}, {SERVICE: [A]})

    assert recorder.drain() == [(add, "a"), (change, "c2"), (drop, ""), (gone, ()), ("listing", None)]
    assert source.configs() == {keep: "k", change: "c2", add: "a", versions_key("s"): "{}"}
    assert source.services() == {SERVICE: (A,)}


async def test_a_failing_listener_does_not_keep_the_change_from_the_others() -> None:
    source = MemorySource()
    recorder = Recorder()

    async def broken(key: ConfigKey, content: str) -> None:
        raise RuntimeError("listener bug")

    await source.listen_config(SPEC, broken)
    await source.listen_config(SPEC, recorder.config)
    await source.put_config(SPEC, "v1")
    assert recorder.drain() == [(SPEC, "v1")]


async def test_injected_failures_happen_once_and_reads_are_counted() -> None:
    source = MemorySource({SPEC: "v1"})
    source.fail_next_get(SPEC, SourceUnavailable("nacos is down"))
    source.fail_next_listing(SourceUnavailable("admin api is down"))
    with pytest.raises(SourceUnavailable, match="nacos is down"):
        await source.get_config(SPEC)
    with pytest.raises(SourceUnavailable, match="admin api is down"):
        await source.list_mcp_servers()
    assert await source.get_config(SPEC) == "v1"
    assert await source.list_mcp_servers() == []
    await source.list_instances(SERVICE)
    assert source.get_config_calls[SPEC] == 2
    assert source.list_mcp_servers_calls == 2
    assert source.list_instances_calls[SERVICE] == 1


async def test_stop_forgets_every_watch() -> None:
    source = MemorySource()
    recorder = Recorder()
    await source.listen_config(SPEC, recorder.config)
    await source.subscribe(SERVICE, recorder.instances)
    await source.watch_listing(recorder.listing)
    await source.stop()
    await source.put_config(versions_key("aa"), "{}")
    await source.put_config(SPEC, "v1")
    await source.set_instances(SERVICE, [A])
    assert recorder.drain() == []
