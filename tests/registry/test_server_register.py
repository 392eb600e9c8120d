"""The in-memory server register of registry/server_register.py."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Collection, Sequence

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mcpgw.registry.balancing import BalancingPolicy, refresh_strategies, register_strategy
from mcpgw.registry.errors import McpgwError
from mcpgw.registry.models import Instance
from mcpgw.registry.server_register import (
    McpServer,
    McpServerStatus,
    McpTransportType,
    RegistrationError,
    ServerRegister,
)


def weather(register: ServerRegister, *ids: str) -> None:
    for n, server_id in enumerate(ids):
        register.connect("weather-service", server_id, "10.0.0.1", 9000 + n)


def nacos(address: str, **changes: object) -> Instance:
    """A source instance as the overlay mirrors it: id ``ip:port``."""
    host, port = address.rsplit(":", 1)
    return Instance(id=address, host=host, port=int(port), **changes)  # type: ignore[arg-type]


def test_many_instances_register_under_one_name_and_are_selected_in_turn() -> None:
    register = ServerRegister()
    assert register.connect("weather-service", "weather-server-1", "10.0.0.1", 9001)
    assert register.connect("weather-service", "weather-server-2", "10.0.0.2", 9002)
    picks = [register.select("weather-service").id for _ in range(4)]  # type: ignore[union-attr]
    assert picks == ["weather-server-1", "weather-server-2"] * 2
    assert [i.id for i in register.instances("weather-service")] == ["weather-server-1", "weather-server-2"]


def test_registering_a_known_id_again_updates_it_in_place() -> None:
    register = ServerRegister()
    weather(register, "a", "b")
    assert not register.connect("weather-service", "a", "10.9.9.9", 9100, weight=3.0, metadata={"zone": "x"})
    assert register.count("weather-service") == 2
    updated = register.get("weather-service", "a")
    assert updated is not None
    assert (updated.host, updated.port, updated.weight) == ("10.9.9.9", 9100, 3.0)
    assert dict(updated.metadata) == {"zone": "x", "transport": "mcp-streamable"}
    assert [i.id for i in register.instances("weather-service")] == ["a", "b"]


def test_the_service_record_goes_with_its_last_instance() -> None:
    register = ServerRegister()
    weather(register, "a", "b")
    assert register.unregister("weather-service", "a")
    assert not register.unregister("weather-service", "a")
    assert register.has("weather-service")
    assert register.unregister("weather-service", "b")
    assert not register.has("weather-service")
    assert register.runtime("weather-service") is None
    assert register.select("weather-service") is None
    assert register.get_statistics() == {"totalServerNames": 0, "totalServers": 0, "serverCounts": {},
                                         "originCounts": {"connect": 0, "source": 0},
                                         "statusCounts": {"ACTIVE": 0, "INACTIVE": 0, "UNHEALTHY": 0}}


def test_queries_answer_from_the_current_registrations() -> None:
    register = ServerRegister()
    weather(register, "w1", "w2", "w3")
    register.connect("calc-service", "c1", "10.0.0.5", 7000, transport="mcp-sse")
    assert register.has("weather-service", "w2")
    assert not register.has("weather-service", "c1")
    assert not register.has("file-service")
    assert register.get("calc-service", "c1").metadata["transport"] == "mcp-sse"  # type: ignore[union-attr]
    assert register.get("calc-service", "w1") is None
    assert (register.count("weather-service"), register.count("nope"), register.count()) == (3, 0, 4)
    assert {name: len(r.instances) for name, r in register.all().items()} == {"weather-service": 3, "calc-service": 1}
    assert register.get_statistics() == {
        "totalServerNames": 2,
        "totalServers": 4,
        "serverCounts": {"weather-service": 3, "calc-service": 1},
        "originCounts": {"connect": 4, "source": 0},
        "statusCounts": {"ACTIVE": 4, "INACTIVE": 0, "UNHEALTHY": 0},
    }


def test_selection_skips_unhealthy_disabled_and_ejected_instances() -> None:
    register = ServerRegister(BalancingPolicy(strategy="round_robin"))
    weather(register, "ok", "sick", "off", "flaky", "spare")
    register.connect("weather-service", "sick", "10.0.0.1", 9001, healthy=False)
    assert register.set_status("weather-service", "off", enabled=False)
    assert not register.set_status("weather-service", "off", enabled=False)
    assert not register.set_status("weather-service", "ghost", healthy=False)
    runtime = register.runtime("weather-service")
    assert runtime is not None
    for _ in range(5):
        runtime.record_start("flaky")
        runtime.record_finish("flaky", ok=False, latency=1.0)
    assert {register.select("weather-service").id for _ in range(10)} == {"ok", "spare"}  # type: ignore[union-attr]


def test_balancing_statistics_survive_re_registration() -> None:
    register = ServerRegister()
    weather(register, "a", "b")
    runtime = register.runtime("weather-service")
    assert runtime is not None
    runtime.record_start("a")
    register.connect("weather-service", "a", "10.0.0.1", 9000, weight=2.0)
    assert register.runtime("weather-service") is runtime
    assert runtime.stats()["instances"][0]["in_flight"] == 1


def test_selection_honours_the_per_service_strategy_and_session_key() -> None:
    register = ServerRegister(BalancingPolicy(overrides={"sticky": "consistent_hash"}))
    for n in range(4):
        register.connect("sticky", f"s{n}", "10.0.0.1", 9000 + n)
    first = register.select("sticky", key="session-1")
    assert first is not None
    assert all(register.select("sticky", key="session-1") == first for _ in range(10))
    other = register.select("sticky", key="session-1", exclude={first.id})
    assert other is not None
    assert other != first


def test_subscribers_hear_of_changes_but_not_of_no_ops() -> None:
    register = ServerRegister()
    heard: list[str] = []
    unsubscribe = register.subscribe(heard.append)
    weather(register, "a")
    weather(register, "a")
    register.set_status("weather-service", "a", healthy=False)
    register.unregister("weather-service", "a")
    register.unregister("weather-service", "a")
    assert heard == ["weather-service"] * 3
    unsubscribe()
    weather(register, "b")
    assert heard == ["weather-service"] * 3


def test_a_failing_subscriber_neither_blocks_registration_nor_other_subscribers() -> None:
    register = ServerRegister()
    heard: list[str] = []

    def broken(name: str) -> None:
        raise RuntimeError("subscriber bug")

    register.subscribe(broken)
    register.subscribe(heard.append)
    weather(register, "a")
    assert heard == ["weather-service"]
    assert register.count() == 1


def test_a_subscriber_may_read_the_register_it_is_told_about() -> None:
    register = ServerRegister()
    seen: list[int] = []
    register.subscribe(lambda name: seen.append(register.count(name)))
    weather(register, "a", "b")
    assert seen == [1, 2]


@pytest.mark.parametrize(
    ("arguments", "problem"),
    [
        ({"service_name": " "}, "the service name is empty"),
        ({"server_id": ""}, "the server id is empty"),
        ({"port": 70000}, "port 70000 is outside 1-65535"),
        ({"weight": -1.0}, "weight -1.0"),
        ({"weight": float("nan")}, "weight nan"),
        ({"transport": "stdio"}, "transport 'stdio'"),
    ],
)
def test_invalid_registrations_are_refused_with_the_reason(arguments: dict[str, object], problem: str) -> None:
    register = ServerRegister()
    call: dict[str, object] = {"service_name": "svc", "server_id": "s1", "host": "10.0.0.1", "port": 9000}
    call.update(arguments)
    with pytest.raises(RegistrationError, match="cannot register") as caught:
        register.connect(**call)  # type: ignore[arg-type]
    assert problem in str(caught.value)
    assert isinstance(caught.value, McpgwError)
    assert register.count() == 0


@settings(max_examples=30, deadline=None)
@given(
    operations=st.lists(
        st.tuples(st.booleans(), st.sampled_from(["a", "b"]), st.sampled_from(["x", "y", "z"])), max_size=40
    )
)
def test_register_matches_a_dictionary_model(operations: list[tuple[bool, str, str]]) -> None:
    register = ServerRegister()
    model: dict[str, dict[str, int]] = {}
    for port, (add, name, server_id) in enumerate(operations, start=1):
        if add:
            is_new = server_id not in model.get(name, {})
            assert register.connect(name, server_id, "h", port) == is_new
            model.setdefault(name, {})[server_id] = port
        else:
            existed = server_id in model.get(name, {})
            assert register.unregister(name, server_id) == existed
            if existed:
                del model[name][server_id]
                if not model[name]:
                    del model[name]
    assert register.get_statistics()["serverCounts"] == {name: len(ids) for name, ids in model.items()}
    for name, ids in model.items():
        assert {i.id: i.port for i in register.instances(name)} == ids
        assert register.select(name) is not None


def test_concurrent_registration_selection_and_removal_stay_consistent() -> None:
    register = ServerRegister()
    register.connect("svc", "anchor", "10.0.0.1", 9000)
    # Generous bounds: the reader spins holding the GIL, so on a loaded 2-core machine writers crawl.
    writers, per_writer = 4, 100
    start = threading.Barrier(writers + 2)
    errors: list[BaseException] = []
    selected: Counter[str] = Counter()
    done = threading.Event()

    def write(worker: int) -> None:
        try:
            start.wait(timeout=30)
            for n in range(per_writer):
                register.connect("svc", f"w{worker}-{n}", "10.0.0.2", 9001)
                if n % 2:
                    assert register.unregister("svc", f"w{worker}-{n}")
        except BaseException as exc:
            errors.append(exc)

    def read() -> None:
        try:
            start.wait(timeout=30)
            while not done.is_set():
                chosen = register.select("svc")
                assert chosen is not None
                selected[chosen.id] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    reader = threading.Thread(target=read)
    for thread in (*threads, reader):
        thread.start()
    start.wait(timeout=30)
    for thread in threads:
        thread.join(timeout=60)
    done.set()
    reader.join(timeout=60)
    assert not errors
    assert not any(t.is_alive() for t in (*threads, reader))
    expected = {"anchor"} | {f"w{w}-{n}" for w in range(writers) for n in range(0, per_writer, 2)}
    assert {i.id for i in register.instances("svc")} == expected
    assert register.count("svc") == len(expected) == register.runtime("svc").stats()["total"]  # type: ignore[union-attr]
    assert sum(selected.values()) > 0


def test_mirroring_replaces_the_source_instances_of_many_services_and_keeps_the_connected_ones() -> None:
    register = ServerRegister()
    weather(register, "connected-1")
    register.mirror_source({"weather-service": [nacos("10.1.0.1:80"), nacos("10.1.0.2:80")],
                            "calc-service": [nacos("10.2.0.1:80")]})

    changed = register.mirror_source({"weather-service": [nacos("10.1.0.3:80")],
                                      "calc-service": [nacos("10.2.0.1:80")]})
    assert changed == {"weather-service"}
    assert [(i.id, o) for i, o in register.all()["weather-service"].entries()] == [
        ("10.1.0.3:80", "source"), ("connected-1", "connect")]
    assert [i.id for i in register.connected("weather-service")] == ["connected-1"]
    assert [i.id for i in register.mirrored("calc-service")] == ["10.2.0.1:80"]
    assert (register.origin("weather-service", "10.1.0.3:80"), register.origin("weather-service", "connected-1"),
            register.origin("weather-service", "10.1.0.1:80")) == ("source", "connect", None)


def test_a_service_goes_with_its_last_source_instance_unless_something_is_connected_to_it() -> None:
    register = ServerRegister()
    weather(register, "connected-1")
    register.mirror_source({"weather-service": [nacos("10.1.0.1:80")], "calc-service": [nacos("10.2.0.1:80")],
                            "file-service": [nacos("10.3.0.1:80")]})

    changed = register.mirror_source({"file-service": []}, removed=["weather-service", "calc-service", "unknown"])
    assert changed == {"weather-service", "calc-service", "file-service"}
    assert set(register.all()) == {"weather-service"}
    assert [i.id for i in register.instances("weather-service")] == ["connected-1"]
    assert not register.has("calc-service") and register.runtime("calc-service") is None

    assert register.unregister("weather-service", "connected-1")
    assert not register.all()


def test_statistics_count_both_origins() -> None:
    register = ServerRegister()
    weather(register, "connected-1", "connected-2")
    register.mirror_source({"weather-service": [nacos("10.1.0.1:80")], "calc-service": [nacos("10.2.0.1:80")] * 2})

    assert register.get_statistics() == {
        "totalServerNames": 2,
        "totalServers": 4,
        "serverCounts": {"weather-service": 3, "calc-service": 1},
        "originCounts": {"connect": 2, "source": 2},
        "statusCounts": {"ACTIVE": 4, "INACTIVE": 0, "UNHEALTHY": 0},
    }
    assert (register.count(), register.count("weather-service")) == (4, 3)


def test_mirroring_notifies_no_subscriber_and_connect_changes_still_do() -> None:
    register = ServerRegister()
    heard: list[str] = []
    register.subscribe(heard.append)
    register.mirror_source({"weather-service": [nacos("10.1.0.1:80")]})
    register.mirror_source({}, removed=["weather-service"])
    assert heard == []

    register.mirror_source({"weather-service": [nacos("10.1.0.1:80")]})
    weather(register, "connected-1")
    assert heard == ["weather-service"]


def test_only_connected_instances_can_be_unregistered_or_have_their_status_set() -> None:
    register = ServerRegister()
    register.mirror_source({"weather-service": [nacos("10.1.0.1:80")]})
    assert not register.unregister("weather-service", "10.1.0.1:80")
    assert not register.set_status("weather-service", "10.1.0.1:80", healthy=False)
    assert register.get("weather-service", "10.1.0.1:80") == nacos("10.1.0.1:80")


def test_selection_balances_over_both_origins_and_the_source_wins_a_shared_address() -> None:
    register = ServerRegister(BalancingPolicy(strategy="round_robin"))
    register.mirror_source({"weather-service": [nacos("10.0.0.1:9000", weight=5.0)]})
    weather(register, "shadowed", "own")  # "shadowed" is at 10.0.0.1:9000 too
    assert {register.select("weather-service").id for _ in range(12)} == {  # type: ignore[union-attr]
        "10.0.0.1:9000", "own"}

    register.mirror_source({}, removed=["weather-service"])
    assert {register.select("weather-service").id for _ in range(12)} == {  # type: ignore[union-attr]
        "shadowed", "own"}


def test_a_runtime_follows_mirrored_changes_once_it_exists() -> None:
    register = ServerRegister()
    register.mirror_source({"weather-service": [nacos("10.1.0.1:80")]})
    runtime = register.runtime("weather-service")
    assert runtime is not None
    register.mirror_source({"weather-service": [nacos("10.1.0.2:80")]})
    assert register.runtime("weather-service") is runtime
    assert [i.id for i in runtime.instances] == ["10.1.0.2:80"]


# ---------------------------------------------------------------------- the design's register (McpMemoryRegister)


def design_server(server_id: str, port: int, status: McpServerStatus = McpServerStatus.ACTIVE,
                  name: str = "weather-service") -> McpServer:
    return McpServer(id=server_id, name=name, host="10.0.0.1", port=port, status=status)


def test_get_server_by_load_balance_returns_nothing_when_every_instance_is_unhealthy() -> None:
    register = ServerRegister()
    for n in range(3):
        register.register(design_server(f"w{n}", 9000 + n, McpServerStatus.UNHEALTHY))
    register.register(design_server("off", 9100, McpServerStatus.INACTIVE))
    # Panic mode would pick one of them; the design's register must not.
    assert [register.get_server_by_load_balance("weather-service") for _ in range(5)] == [None] * 5
    assert register.get_server_by_load_balance("no-such-service") is None
    assert register.get_server_count("weather-service") == 4


def test_get_server_by_load_balance_with_one_of_three_healthy_always_returns_that_one() -> None:
    register = ServerRegister()
    register.register(design_server("w1", 9001, McpServerStatus.UNHEALTHY))
    register.register(design_server("w2", 9002))
    register.register(design_server("w3", 9003, McpServerStatus.INACTIVE))
    picks = {register.get_server_by_load_balance("weather-service").id for _ in range(20)}  # type: ignore[union-attr]
    assert picks == {"w2"}


def test_get_server_by_load_balance_takes_active_servers_in_round_robin_and_follows_status_changes() -> None:
    register = ServerRegister()
    for n in (1, 2, 3):
        register.register(design_server(f"w{n}", 9000 + n))
    assert [register.get_server_by_load_balance("weather-service").id  # type: ignore[union-attr]
            for _ in range(6)] == ["w1", "w2", "w3"] * 2
    register.register(design_server("w3", 9003, McpServerStatus.UNHEALTHY))
    picks = [register.get_server_by_load_balance("weather-service").id for _ in range(4)]  # type: ignore[union-attr]
    assert sorted(Counter(picks).items()) == [("w1", 2), ("w2", 2)]
    assert picks[0] != picks[1]
    register.set_status("weather-service", "w3", healthy=True)
    chosen = register.get_server_by_load_balance("weather-service")
    assert chosen is not None and chosen.status is McpServerStatus.ACTIVE


def test_the_design_register_models_servers_with_transport_and_status() -> None:
    register = ServerRegister()
    assert register.register(McpServer(id="c1", name="calc", host="10.0.0.5", port=7000,
                                       transport_type=McpTransportType.SSE, metadata={"zone": "a"}))
    assert not register.register(McpServer(id="c1", name="calc", host="10.0.0.5", port=7001,
                                           transport_type=McpTransportType.SSE, status=McpServerStatus.UNHEALTHY,
                                           metadata={"zone": "a"}))
    server = register.get_server("calc", "c1")
    assert server is not None
    assert (server.port, server.transport_type, server.status, server.origin) == (
        7001, McpTransportType.SSE, McpServerStatus.UNHEALTHY, "connect")
    assert dict(server.metadata) == {"zone": "a", "transport": "mcp-sse"}
    register.mirror_source({"calc": [nacos("10.0.0.6:7000", enabled=False)]})
    assert [(s.id, s.status, s.origin) for s in register.get_servers_by_name("calc")] == [
        ("10.0.0.6:7000", McpServerStatus.INACTIVE, "source"), ("c1", McpServerStatus.UNHEALTHY, "connect")]
    assert register.get_server("calc", "nope") is None and register.get_server("nope", "c1") is None
    assert register.get_servers_by_name("nope") == []


def test_unregister_cleans_up_an_emptied_name_and_get_all_servers_is_a_list() -> None:
    register = ServerRegister()
    register.register(design_server("w1", 9001))
    register.register(design_server("w2", 9002))
    register.register(design_server("c1", 7000, name="calc"))
    everything = register.get_all_servers()
    assert isinstance(everything, list)
    assert [(s.name, s.id) for s in everything] == [("calc", "c1"), ("weather-service", "w1"),
                                                    ("weather-service", "w2")]
    assert register.get_server_by_load_balance("calc") is not None
    assert register.unregister("calc", "c1")
    assert not register.has_server("calc")
    assert register.get_server_by_load_balance("calc") is None
    assert register.get_server_count() == 2 and register.get_server_count("calc") == 0
    # A name registered again starts a fresh rotation, not the emptied name's.
    register.register(design_server("c2", 7002, name="calc"))
    assert register.get_server_by_load_balance("calc").id == "c2"  # type: ignore[union-attr]
    stats = register.get_statistics()
    assert stats["totalServerNames"] == 2 and stats["totalServers"] == 3
    assert stats["statusCounts"] == {"ACTIVE": 3, "INACTIVE": 0, "UNHEALTHY": 0}


def test_the_design_register_takes_its_strategy_by_name() -> None:
    class Last:
        def pick(self, instances: Sequence[Instance], key: str | None = None,
                 exclude: Collection[str] = ()) -> Instance | None:
            return instances[-1] if instances else None

        def on_start(self, instance_id: str) -> None: ...

        def on_finish(self, instance_id: str, *, ok: bool, latency_s: float) -> None: ...

    register_strategy("always-last", lambda *, rng, clock: Last())
    try:
        register = ServerRegister(strategy="Always_Last")
        for n in (1, 2, 3):
            register.register(design_server(f"w{n}", 9000 + n))
        register.register(design_server("w4", 9004, McpServerStatus.UNHEALTHY))
        assert {register.get_server_by_load_balance("weather-service").id  # type: ignore[union-attr]
                for _ in range(5)} == {"w3"}
    finally:
        refresh_strategies()
    with pytest.raises(McpgwError, match="unknown load-balancing strategy 'always-last' for the server register"):
        ServerRegister(strategy="always-last")


def test_design_selection_stays_consistent_under_concurrent_registration() -> None:
    register = ServerRegister()
    for n in range(4):
        register.register(design_server(f"w{n}", 9000 + n))
    stop = threading.Event()
    bad: list[object] = []

    def flap() -> None:
        for round_ in range(300):
            register.register(design_server("w0", 9000, McpServerStatus.UNHEALTHY if round_ % 2 else
                                            McpServerStatus.ACTIVE))
            register.unregister("weather-service", "w9")
            register.register(design_server("w9", 9009))
        stop.set()

    def select() -> None:
        while not stop.is_set():
            chosen = register.get_server_by_load_balance("weather-service")
            if chosen is None or chosen.status is not McpServerStatus.ACTIVE:
                bad.append(chosen)

    threads = [threading.Thread(target=flap), threading.Thread(target=select), threading.Thread(target=select)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert not any(t.is_alive() for t in threads)
    assert bad == []
