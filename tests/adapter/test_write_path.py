"""The design's write path: ``on_config_update`` → ConfigConverter → ``update_tools`` / ``add_router`` /
``set_cluster`` as one transaction on the versioned state, committed whole or not at all."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.converter.converter import ServerSnapshot
from mcpgw.gateway.settings import Settings
from mcpgw.registry.errors import ConversionError, StateError
from mcpgw.registry.managers import ClusterManager, DynamicToolRegistry, RouterManager
from mcpgw.registry.models import ServerModels
from mcpgw.registry.state import StateChange, StateStore
from mcpgw.remote.base import ServiceInstance
from mcpgw.remote.files import FilesSource
from mcpgw.remote.memory import MemorySource
from mcpgw.remote.nacos import NacosSource
from tests.support.builders import rest_tool, server_doc, tools_doc, versions_doc

SID = "8f4a2c1e-6b3d-4e59-9a7f-2d1c0b9e7a55"
OTHER = "3c9e5b7a-1f2d-4a6b-8c0e-5d4f3a2b1c0d"


def snapshot(*tools: str, server_id: str = SID, name: str = "weather", instances: int = 1,
             version: str = "1.0.0") -> ServerSnapshot:
    return ServerSnapshot(
        server_id=server_id, namespace="public", versions=versions_doc(server_id, name, version, [version]),
        server_spec=server_doc(server_id, name, version), tools_spec=tools_doc(*(rest_tool(t) for t in tools)),
        instances=tuple(ServiceInstance(ip="10.0.0.1", port=8000 + n) for n in range(instances)),
    )


class Recorded:
    """The store, its managers and an adapter, with every write call and every committed change recorded."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.store = StateStore()
        self.calls: list[tuple[str, str]] = []
        self.changes: list[StateChange] = []
        self.store.subscribe(self.changes.append)
        self.adapter = MCPServerAdapter(MemorySource(), self.store)
        for owner, method in ((DynamicToolRegistry, "update_tools"), (RouterManager, "add_router"),
                              (RouterManager, "remove_router"), (ClusterManager, "set_cluster"),
                              (ClusterManager, "remove_cluster")):
            original = getattr(owner, method)

            def spy(self_: Any, *args: Any, _original: Any = original, _method: str = method) -> Any:
                first = args[0]
                subject = getattr(first, "name", first) if not isinstance(first, tuple) else len(first)
                self.calls.append((_method, str(subject)))
                return _original(self_, *args)

            monkeypatch.setattr(owner, method, spy)


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> Recorded:
    return Recorded(monkeypatch)


async def test_on_config_update_converts_and_commits_through_update_tools_add_router_and_set_cluster(
    recorded: Recorded,
) -> None:
    update = await recorded.adapter.on_config_update(SID, snapshot("forecast", "alerts", instances=2))
    assert update.committed and isinstance(update.result, ServerModels)
    assert [call for call, _ in recorded.calls] == ["add_router", "update_tools", "set_cluster"]
    state = recorded.store.current
    assert sorted(recorded.adapter.tools.tools("weather") or {}) == ["alerts", "forecast"]
    assert recorded.adapter.routers.route("weather") is not None
    cluster = update.result.cluster
    assert cluster is not None and recorded.adapter.clusters.cluster(cluster.name) == cluster
    assert len(state.clusters[cluster.name].instances) == 2
    # One transaction, one swap: subscribers heard one change, naming all three parts.
    assert len(recorded.changes) == 1
    assert recorded.changes[0].endpoints == {"weather", ""} and recorded.changes[0].clusters == {cluster.name}
    # The balancer state followed the committed cluster.
    assert recorded.adapter.clusters.runtime(cluster.name) is not None


def stage(recorded: Recorded, models: ServerModels, *, cluster: bool = True, fail: bool = False) -> None:
    adapter = recorded.adapter
    with recorded.store.transaction(models.server_id, models=models):
        adapter.routers.add_router(models.route)
        adapter.tools.update_tools(models.server_id, models.tools)
        if cluster and models.cluster is not None:
            adapter.clusters.set_cluster(models.cluster, models.server_id)
        if fail:
            raise RuntimeError("the writer failed half way")


async def test_a_transaction_that_leaves_a_part_out_commits_nothing(recorded: Recorded) -> None:
    await recorded.adapter.on_config_update(SID, snapshot("forecast"))
    before = recorded.store.current
    models = recorded.adapter.converter.convert(snapshot("forecast", "alerts", instances=3))
    assert isinstance(models, ServerModels) and models.cluster is not None
    with pytest.raises(StateError, match="points at missing cluster"):
        stage(recorded, models, cluster=False)  # set_cluster forgotten
    assert recorded.store.current is before
    with pytest.raises(RuntimeError, match="half way"):
        stage(recorded, models, fail=True)
    assert recorded.store.current is before
    assert sorted(recorded.adapter.tools.tools("weather") or {}) == ["forecast"]


async def test_the_staged_parts_are_what_is_served(recorded: Recorded) -> None:
    models = recorded.adapter.converter.convert(snapshot("forecast", "alerts"))
    assert isinstance(models, ServerModels)
    with recorded.store.transaction(SID, models=models):
        recorded.adapter.routers.add_router(models.route)
        recorded.adapter.tools.update_tools(SID, [t for t in models.tools if t.name == "alerts"])
        recorded.adapter.clusters.set_cluster(models.cluster, SID)  # type: ignore[arg-type]
    assert sorted(recorded.adapter.tools.tools("weather") or {}) == ["alerts"]


def test_write_calls_outside_a_transaction_or_for_another_server_are_refused() -> None:
    store = StateStore()
    tools, routers, clusters = DynamicToolRegistry(store), RouterManager(store), ClusterManager(store)
    models = MCPServerAdapter(MemorySource(), store).converter.convert(snapshot("forecast"))
    assert isinstance(models, ServerModels) and models.cluster is not None
    with pytest.raises(StateError, match="outside a transaction"):
        tools.update_tools(SID, models.tools)
    with pytest.raises(StateError, match="outside a transaction"):
        routers.add_router(models.route)
    with pytest.raises(StateError, match="outside a transaction"):
        clusters.set_cluster(models.cluster, SID)
    with pytest.raises(StateError, match="inside the transaction of server"), \
            store.transaction(OTHER, models=models):
        clusters.set_cluster(models.cluster, SID)
    with pytest.raises(StateError, match="inside another one"), store.transaction(SID, models=models), \
            store.transaction(SID, models=models):
        pass
    assert store.current.version == 0


async def test_withdraw_removes_router_and_cluster_and_keeps_a_disabled_status(recorded: Recorded) -> None:
    await recorded.adapter.on_config_update(SID, snapshot("forecast"))
    await recorded.adapter.on_config_update(OTHER, snapshot("geocode", server_id=OTHER, name="maps"))
    recorded.calls.clear()
    recorded.adapter.withdraw(SID, phase="disabled", name="weather", version="1.0.0", message="off")
    assert recorded.calls == [("remove_router", SID), ("remove_cluster", SID)]
    state = recorded.store.current
    assert SID not in state.servers and state.statuses[SID].phase == "disabled"
    assert recorded.adapter.tools.tools("weather") is None and recorded.adapter.routers.route("weather") is None
    assert list(recorded.adapter.tools.tools("") or {}) == ["maps_geocode"]
    assert not [c for c in state.clusters if c.startswith(SID)]


async def test_a_snapshot_that_does_not_convert_changes_nothing(recorded: Recorded) -> None:
    await recorded.adapter.on_config_update(SID, snapshot("forecast"))
    before = recorded.store.current
    broken = replace(snapshot("forecast"), tools_spec='{"tools": [')
    with pytest.raises(ConversionError, match="not valid JSON"):
        await recorded.adapter.on_config_update(SID, broken)
    with pytest.raises(ValueError, match="snapshot of"):
        await recorded.adapter.on_config_update(OTHER, snapshot("forecast"))
    assert recorded.store.current is before


async def test_a_served_server_follows_its_instances_through_the_same_path(recorded: Recorded) -> None:
    await recorded.adapter.on_config_update(SID, snapshot("forecast", instances=1))
    recorded.calls.clear()
    models = recorded.adapter.reconvert(SID, snapshot("forecast", instances=3))
    assert models is not None and models.cluster is not None
    assert ("set_cluster", models.cluster.name) in recorded.calls
    assert len(recorded.store.current.clusters[models.cluster.name].instances) == 3


def test_apply_builds_the_remote_client_the_settings_name(tmp_path: Path) -> None:
    assert isinstance(MCPServerAdapter.apply(Settings(files=tmp_path)), FilesSource)
    source = MCPServerAdapter.apply(Settings(nacos="127.0.0.1:8848", state_dir=tmp_path))
    assert isinstance(source, NacosSource)
