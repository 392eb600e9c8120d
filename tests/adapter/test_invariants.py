"""One test per invariant of ARCHITECTURE §6, plus the peers' bugs it lists, over the memory source."""

from __future__ import annotations

import asyncio

from mcpgw.registry.state import AGGREGATE
from mcpgw.remote.base import server_spec_key, tools_spec_key, versions_key
from tests.adapter.conftest import Harness
from tests.support.builders import (
    instances,
    rest_tool,
    server_doc,
    server_files,
    service_key,
    tools_doc,
    versions_doc,
)

W = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"
M = "5b2d7e91-0c4a-4f8e-b3d6-9a1e2f4c6d80"


async def test_invariant_1_level_triggered_bursts_coalesce_and_reconciles_never_overlap(harness: Harness) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("t0"))))
    await harness.settle()
    listener = harness.adapter.listeners[W]
    before = listener.reconciles
    for i in range(100):
        await harness.source.put_config(tools_spec_key(W, "1.0.0"), tools_doc(rest_tool(f"t{i}")))
    await harness.settle()
    assert listener.reconciles - before <= 3
    # The last update of the burst is the one served: nothing inside the burst was dropped for good.
    assert sorted(harness.store.current.tools("weather") or {}) == ["t99"]


async def test_invariant_1_one_slow_server_never_blocks_another(harness: Harness) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("a"))))
    await harness.publish(server_files(M, "maps", "1.0.0", tools_doc(rest_tool("b")), service="maps"))
    await harness.settle()
    gate = asyncio.Event()
    original = harness.source.get_config

    async def slow_get(key):  # type: ignore[no-untyped-def]
        if key.data_id.startswith(W) and "mcp-tools" in key.data_id and not gate.is_set():
            await gate.wait()
        return await original(key)

    harness.source.get_config = slow_get  # type: ignore[method-assign]
    # weather moves to a new version whose tools spec read hangs; maps changes meanwhile.
    await harness.publish({server_spec_key(W, "2.0.0"): server_doc(W, "weather", "2.0.0"),
                           tools_spec_key(W, "2.0.0"): tools_doc(rest_tool("a2"))})
    await harness.source.put_config(versions_key(W), versions_doc(W, "weather", "2.0.0", ["1.0.0", "2.0.0"]))
    await harness.source.put_config(tools_spec_key(M, "1.0.0"), tools_doc(rest_tool("b2")))
    async with asyncio.timeout(5):
        await harness.adapter.listeners[M].wait_idle()
    assert sorted(harness.store.current.tools("maps") or {}) == ["b2"]
    assert sorted(harness.store.current.tools("weather") or {}) == ["a"]
    gate.set()
    await harness.settle()
    assert sorted(harness.store.current.tools("weather") or {}) == ["a2"]


async def test_invariant_2_converter_output_does_not_depend_on_event_order(harness: Harness) -> None:
    files = server_files(W, "weather", "1.0.0", tools_doc(rest_tool("b"), rest_tool("a")))
    for key in reversed(list(files)):
        await harness.source.put_config(key, files[key])
    await harness.source.set_instances(service_key(), instances(2, 1))
    await harness.settle()
    first = harness.store.current.servers[W]
    assert [t.name for t in first.tools] == ["a", "b"]
    assert first.cluster is not None and [i.port for i in first.cluster.instances] == [1, 2]


async def test_invariant_3_unchanged_content_is_a_noop(harness: Harness) -> None:
    files = server_files(W, "weather", "1.0.0", tools_doc(rest_tool("a")))
    await harness.publish(files)
    await harness.settle()
    version = harness.store.current.version
    count = len(harness.changes)
    # Rewriting identical content (reformatted JSON is different content; identical is not) changes nothing.
    await harness.source.put_config(versions_key(W), files[versions_key(W)] + " ")
    await harness.settle()
    assert harness.store.current.version == version
    assert len(harness.changes) == count


async def test_invariant_4_last_known_good_invalid_update_keeps_previous_and_others_unaffected(
    harness: Harness,
) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast"))))
    await harness.publish(server_files(M, "maps", "1.0.0", tools_doc(rest_tool("geocode")), service="maps"))
    await harness.settle()
    await harness.source.put_config(tools_spec_key(W, "1.0.0"), '{"tools": [')
    await harness.source.put_config(tools_spec_key(M, "1.0.0"), tools_doc(rest_tool("geocode"), rest_tool("route")))
    await harness.settle()
    state = harness.store.current
    assert sorted(state.tools("weather") or {}) == ["forecast"]  # not an empty list (Pixiu)
    status = state.statuses[W]
    assert status.phase == "stale" and status.applied_version == "1.0.0"
    assert status.last_error is not None
    assert status.last_error["file"] == f"{W}-1.0.0-mcp-tools.json"
    assert "not valid JSON" in status.last_error["reason"]
    assert sorted(state.tools("maps") or {}) == ["geocode", "route"]


async def test_invariant_4_last_known_good_still_follows_its_instances_while_the_newest_spec_is_broken(
    harness: Harness,
) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast"))))
    await harness.source.set_instances(service_key(), instances(8080, 8081))
    await harness.settle()
    await harness.source.put_config(tools_spec_key(W, "1.0.0"), "{not json")
    await harness.settle()

    await harness.source.set_instances(service_key(), instances(8081))
    await harness.settle()

    served = harness.store.current.servers[W]
    assert [t.name for t in served.tools] == ["forecast"]
    assert served.cluster is not None and [i.port for i in served.cluster.instances] == [8081]
    status = harness.store.current.statuses[W]
    assert status.phase == "stale" and status.last_error is not None


async def test_invariant_5_deletion_is_explicit_and_empty_pushes_never_wipe(harness: Harness) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast"))))
    await harness.source.set_instances(service_key(), instances(8080))
    await harness.settle()
    harness.source.set_listing_override([])
    await harness.source.set_instances(service_key(), [])
    await harness.settle()
    await harness.settle()
    state = harness.store.current
    assert sorted(state.tools("weather") or {}) == ["forecast"]
    harness.source.set_listing_override(None)
    await harness.source.delete_config(versions_key(W))
    await harness.settle()
    state = harness.store.current
    assert state.tools("weather") is None and W not in state.statuses and not state.clusters
    listener = harness.adapter.listeners.get(W)
    assert listener is None or listener.watched <= {versions_key(W)}


async def test_invariant_5_deleting_the_last_server_ends_its_listener_though_the_listing_is_empty(
    harness: Harness,
) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast"))))
    await harness.settle()
    assert W in harness.adapter.listeners
    for key in list(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast")))):
        await harness.source.delete_config(key)
    await harness.settle()  # first empty listing: suspicious, nothing stopped yet
    await harness.settle()  # repeated, and the versions file is gone: confirmed
    assert W not in harness.adapter.listeners
    assert harness.store.current.tools("weather") is None


async def test_invariant_6_make_before_break_cluster_exists_whenever_a_tool_points_at_it(harness: Harness) -> None:
    seen_bad: list[str] = []

    def check(_change: object) -> None:
        state = harness.store.current
        for tools in state.endpoints.values():
            for tool in tools.values():
                if tool.cluster is not None and tool.cluster not in state.clusters:
                    seen_bad.append(tool.name)

    harness.store.subscribe(check)
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast"))))
    await harness.settle()
    old_cluster = harness.store.current.servers[W].cluster
    await harness.source.put_config(server_spec_key(W, "1.0.0"), server_doc(W, "weather", "1.0.0", service="svc2"))
    await harness.settle()
    new_cluster = harness.store.current.servers[W].cluster
    assert old_cluster is not None and new_cluster is not None and old_cluster.name != new_cluster.name
    assert old_cluster.name not in harness.store.current.clusters
    assert seen_bad == []


async def test_invariant_7_every_change_is_observable(harness: Harness) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast"))))
    await harness.settle()
    status = harness.store.current.statuses[W]
    assert (status.phase, status.applied_version, status.tools) == ("serving", "1.0.0", 1)
    assert status.applied_at is not None and status.updated_at >= status.applied_at
    version = harness.store.current.version
    await harness.source.put_config(tools_spec_key(W, "1.0.0"), "not json")
    await harness.settle()
    assert harness.store.current.version > version
    assert harness.store.current.statuses[W].last_error_at is not None


async def test_new_server_is_served_without_waiting_for_the_next_poll(harness: Harness) -> None:
    task = asyncio.create_task(harness.adapter.run())
    try:
        async with asyncio.timeout(5):
            await harness.adapter.ready.wait()
        served = asyncio.Event()
        harness.store.subscribe(lambda c: served.set() if harness.store.current.tools("weather") else None)
        await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("forecast"))))
        async with asyncio.timeout(5):  # the discovery interval is an hour: only the listing signal can do it
            await served.wait()
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def test_same_tool_name_in_two_servers_gets_two_clusters(harness: Harness) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("search")), service="a"))
    await harness.publish(server_files(M, "maps", "1.0.0", tools_doc(rest_tool("search")), service="b"))
    await harness.settle()
    agg = harness.store.current.tools(AGGREGATE) or {}
    assert agg["weather_search"].cluster != agg["maps_search"].cluster


async def test_tool_fingerprint_changes_with_path_or_method(harness: Harness) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("t", "/a"))))
    await harness.settle()
    before = (harness.store.current.tools("weather") or {})["t"].fingerprint
    count = len(harness.changes)
    await harness.source.put_config(tools_spec_key(W, "1.0.0"), tools_doc(rest_tool("t", "/b")))
    await harness.settle()
    after = (harness.store.current.tools("weather") or {})["t"].fingerprint
    assert before != after
    assert harness.changes[-1].endpoints == {"weather", AGGREGATE} and len(harness.changes) > count


async def test_restarted_instance_new_address_replaces_the_old(harness: Harness) -> None:
    await harness.publish(server_files(W, "weather", "1.0.0", tools_doc(rest_tool("t"))))
    await harness.source.set_instances(service_key(), instances(8080, host="10.0.0.1"))
    await harness.settle()
    await harness.source.set_instances(service_key(), instances(8080, host="10.0.0.2"))
    await harness.settle()
    cluster = harness.store.current.servers[W].cluster
    assert cluster is not None and [i.host for i in cluster.instances] == ["10.0.0.2"]
