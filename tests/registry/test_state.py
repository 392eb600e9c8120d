"""GatewayState swaps: whole, checked, no-op on unchanged content, names claimed not shadowed."""

from __future__ import annotations

import immutables
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgw.registry.errors import StateError
from mcpgw.registry.models import Cluster, Instance, Route, ServerModels, Tool
from mcpgw.registry.state import AGGREGATE, AggregateNaming, StateChange, StateStore


def make_server(sid: str, name: str, tools: list[str], *, instances: int = 1, version: str = "1.0.0",
                fp: str = "") -> ServerModels:
    cluster = Cluster(
        name=f"{sid}.cluster",
        service=f"public/DEFAULT_GROUP/{name}-api",
        instances=tuple(Instance(id=f"10.0.0.{i}:80", host=f"10.0.0.{i}", port=80) for i in range(instances)),
    )
    route = Route(name=name, server_id=sid, server_name=name, backend="rest", cluster=cluster.name)
    return ServerModels(
        server_id=sid, name=name, version=version, protocol="http", front_protocol="mcp-streamable",
        description="", route=route, cluster=cluster,
        tools=tuple(
            Tool(server_id=sid, server_name=name, name=t, description="", input_schema={"type": "object"},
                 route=name, cluster=cluster.name, fingerprint=f"{sid}:{t}:{version}")
            for t in tools
        ),
        fingerprint=fp or f"{sid}:{name}:{version}:{','.join(tools)}:{instances}",
    )


def test_applied_server_is_listed_on_its_endpoint_and_the_aggregate() -> None:
    store = StateStore()
    store.apply(make_server("s1", "weather", ["forecast", "alerts"]))
    state = store.current
    assert sorted(state.tools("weather") or {}) == ["alerts", "forecast"]
    assert sorted(state.tools(AGGREGATE) or {}) == ["weather_alerts", "weather_forecast"]
    assert state.statuses["s1"].phase == "serving"


def test_unchanged_content_is_a_noop_without_version_bump_or_notification() -> None:
    store = StateStore()
    seen: list[StateChange] = []
    store.subscribe(seen.append)
    store.apply(make_server("s1", "weather", ["forecast"]))
    version = store.current.version
    assert store.apply(make_server("s1", "weather", ["forecast"])) is None
    assert store.current.version == version
    assert len(seen) == 1


def test_instance_change_updates_cluster_in_place_without_list_changed() -> None:
    store = StateStore()
    store.apply(make_server("s1", "weather", ["forecast"], instances=1))
    change = store.apply(make_server("s1", "weather", ["forecast"], instances=3))
    assert change is not None
    assert change.endpoints == frozenset()
    assert change.clusters == {"s1.cluster"}
    assert change.removed_clusters == frozenset()
    assert len(store.current.clusters["s1.cluster"].instances) == 3


def test_tool_change_notifies_exactly_the_affected_endpoints() -> None:
    store = StateStore()
    store.apply(make_server("s1", "weather", ["forecast"]))
    store.apply(make_server("s2", "maps", ["geocode"]))
    change = store.apply(make_server("s1", "weather", ["forecast", "alerts"], version="1.1.0"))
    assert change is not None
    assert change.endpoints == {"weather", AGGREGATE}


def test_removed_server_takes_its_tools_routes_and_clusters_with_it() -> None:
    store = StateStore()
    store.apply(make_server("s1", "weather", ["forecast"]))
    store.apply(make_server("s2", "maps", ["geocode"]))
    change = store.remove("s1")
    assert change is not None and change.removed_clusters == {"s1.cluster"}
    state = store.current
    assert "weather" not in state.routes and "s1.cluster" not in state.clusters
    assert state.tools("weather") is None
    assert sorted(state.tools(AGGREGATE) or {}) == ["maps_geocode"]
    assert "s1" not in state.statuses


def test_error_keeps_last_good_tools_and_marks_the_server_stale() -> None:
    store = StateStore()
    store.apply(make_server("s1", "weather", ["forecast"]))
    store.record_problem("s1", name="weather", phase="error", version="1.1.0", message="bad",
                         error={"file": "x-mcp-tools.json", "path": "$", "reason": "bad"})
    state = store.current
    assert sorted(state.tools("weather") or {}) == ["forecast"]
    assert state.statuses["s1"].phase == "stale"
    assert state.statuses["s1"].applied_version == "1.0.0"
    assert state.statuses["s1"].last_error == {"file": "x-mcp-tools.json", "path": "$", "reason": "bad"}


def test_two_servers_with_one_name_are_a_reported_conflict_owned_by_the_lower_id() -> None:
    store = StateStore()
    store.apply(make_server("s2", "weather", ["b"]))
    store.apply(make_server("s1", "weather", ["a"]))
    state = store.current
    assert state.routes["weather"].server_id == "s1"
    assert sorted(state.tools("weather") or {}) == ["a"]
    assert sorted(state.tools(AGGREGATE) or {}) == ["weather_a"]
    assert state.conflicts()[0]["hidden"] == ["s2"]
    store.remove("s1")
    assert sorted(store.current.tools("weather") or {}) == ["b"]
    assert store.current.conflicts() == []


def test_bare_naming_reports_same_tool_in_two_servers() -> None:
    store = StateStore(AggregateNaming(mode="bare"))
    store.apply(make_server("s1", "weather", ["search"]))
    store.apply(make_server("s2", "maps", ["search"]))
    state = store.current
    assert state.tools(AGGREGATE)["search"].server_id == "s1"  # type: ignore[index]
    assert state.conflicts() == [
        {"kind": "aggregate-tool", "name": "search", "served_by": "s1/search", "hidden": ["s2/search"]}
    ]


def test_state_that_fails_its_check_is_never_swapped_in() -> None:
    store = StateStore()
    good = make_server("s1", "weather", ["forecast"])
    store.apply(good)
    before = store.current
    broken_tool = Tool(server_id="s1", server_name="weather", name="x", description="", input_schema={},
                       route="weather", cluster="missing-cluster", fingerprint="x")
    bad = ServerModels(**{**{f: getattr(good, f) for f in good.__dataclass_fields__},
                          "tools": (broken_tool,), "fingerprint": "other"})
    with pytest.raises(StateError, match="missing cluster"):
        store.apply(bad)
    assert store.current is before


def test_readers_keep_the_state_they_read_while_writers_swap() -> None:
    store = StateStore()
    store.apply(make_server("s1", "weather", ["forecast"]))
    snapshot = store.current
    store.remove("s1")
    assert sorted(snapshot.tools("weather") or {}) == ["forecast"]
    assert isinstance(snapshot.servers, immutables.Map)


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["s1", "s2", "s3", "s4"]), st.sampled_from(["a", "b", "a_b"]),
                          st.lists(st.sampled_from(["x", "y", "b_x"]), max_size=3, unique=True), st.booleans()),
                max_size=25))
def test_incremental_state_equals_state_built_from_scratch(ops: list[tuple[str, str, list[str], bool]]) -> None:
    """Updating one server at a time must give exactly what a fresh build of the final servers gives."""
    store = StateStore()
    final: dict[str, ServerModels] = {}
    for sid, name, tools, remove in ops:
        if remove:
            store.remove(sid)
            final.pop(sid, None)
        else:
            models = make_server(sid, name, tools)
            store.apply(models)
            final[sid] = models
    fresh = StateStore()
    for sid in sorted(final, reverse=True):
        fresh.apply(final[sid])
    a, b = store.current, fresh.current
    assert dict(a.routes) == dict(b.routes)
    assert dict(a.clusters) == dict(b.clusters)
    assert {k: dict(v) for k, v in a.endpoints.items() if v} == {k: dict(v) for k, v in b.endpoints.items() if v}
    assert a.conflicts() == b.conflicts()


def test_names_longer_than_clients_accept_are_shortened_deterministically_and_reported() -> None:
    stem = "get_the_current_weather_forecast_for_a_city_by_its_name_and_country"  # 68 characters
    tools = [stem + "_daily", stem + "_hourly", "short"]
    store = StateStore()
    store.apply(make_server("s1", "weather", tools))
    state = store.current
    own, aggregate = sorted(state.tools("weather") or {}), sorted(state.tools(AGGREGATE) or {})
    assert own[-1] == "short" and "weather_short" in aggregate
    shortened = [n for n in own + aggregate if n not in ("short", "weather_short")]
    assert len(shortened) == 4 and len(set(shortened)) == 4  # two long names sharing a beginning stay apart
    assert all(len(n) == 64 and n[-9] == "-" for n in shortened)
    assert {state.tools("weather")[n].name for n in own[:2]} == set(tools[:2])  # type: ignore[index]
    # The same names on another replica, and reported where operators look.
    again = StateStore()
    again.apply(make_server("s9", "weather", tools))
    assert sorted(again.current.tools(AGGREGATE) or {}) == aggregate
    warnings = state.statuses["s1"].warnings
    assert len(warnings) == 4 and all("longer than 64 characters" in w for w in warnings)
    assert any(f"listed as {n} on /mcp:" in w for w in warnings for n in aggregate if n != "weather_short")
    assert not [w for w in warnings if "short " in w]


def test_the_longest_listed_name_is_configurable() -> None:
    store = StateStore(AggregateNaming(max_length=20))
    store.apply(make_server("s1", "weather", ["forecast_for_tomorrow"]))  # 21 characters
    state = store.current
    (own,) = state.tools("weather") or {}
    (aggregate,) = state.tools(AGGREGATE) or {}
    assert len(own) == len(aggregate) == 20 and own.startswith("forecast_fo") and aggregate.startswith("weather_for")
