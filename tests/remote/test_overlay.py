"""RegisteringSource: self-registered servers merged into a source's instances, re-delivered at once."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from mcpgw.registry.models import Instance
from mcpgw.registry.server_register import ServerRegister
from mcpgw.remote.base import ServiceInstance, ServiceKey
from mcpgw.remote.memory import MemorySource
from mcpgw.remote.overlay import RegisteringSource, register_name

PLAIN = ServiceKey("public", "DEFAULT_GROUP", "weather-api")
GROUPED = ServiceKey("public", "mcp-endpoints", "amap::1.0.0")
ELSEWHERE = ServiceKey("dev", "DEFAULT_GROUP", "weather-api")


class Recorder:
    def __init__(self) -> None:
        self.calls: asyncio.Queue[tuple[ServiceKey, tuple[ServiceInstance, ...]]] = asyncio.Queue()

    async def __call__(self, key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
        self.calls.put_nowait((key, instances))

    async def next(self) -> list[str]:
        async with asyncio.timeout(5):
            _, instances = await self.calls.get()
        return addresses(instances)


def addresses(instances: Any) -> list[str]:
    return [i.address for i in instances]


def nacos(ip: str, port: int, **kwargs: Any) -> ServiceInstance:
    return ServiceInstance(ip=ip, port=port, **kwargs)


class CountingRegister(ServerRegister):
    """Counts what subscribers (the overlay) are told: a mirror that told them would re-deliver every change."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[str] = []

    def subscribe(self, callback: Callable[[str], None]) -> Callable[[], None]:
        def counted(name: str) -> None:
            self.told.append(name)
            callback(name)

        return super().subscribe(counted)


@pytest.fixture
def register() -> CountingRegister:
    return CountingRegister()


@pytest.fixture
def inner() -> MemorySource:
    return MemorySource(services={PLAIN: [nacos("10.0.0.1", 80)]})


@pytest.fixture
async def source(inner: MemorySource, register: ServerRegister) -> AsyncIterator[RegisteringSource]:
    overlay = RegisteringSource(inner, register, namespace="public")
    await overlay.start()
    yield overlay
    await overlay.stop()


def test_register_names_are_nacos_grouped_service_names() -> None:
    assert register_name(PLAIN) == "weather-api"
    assert register_name(GROUPED) == "mcp-endpoints@@amap::1.0.0"


async def test_listing_adds_registered_instances_of_the_matching_service_only(
    source: RegisteringSource, register: ServerRegister
) -> None:
    register.connect("weather-api", "w1", "127.0.0.1", 9001, weight=2.0, metadata={"protocol": "https"})
    register.connect("mcp-endpoints@@amap::1.0.0", "a1", "127.0.0.1", 9002)
    register.connect("other", "o1", "127.0.0.1", 9003)

    plain = await source.list_instances(PLAIN)
    assert addresses(plain) == ["10.0.0.1:80", "127.0.0.1:9001"]
    added = plain[1]
    assert (added.instance_id, added.weight, added.ephemeral, added.service_name) == ("w1", 2.0, True, "weather-api")
    assert added.metadata["protocol"] == "https"
    assert addresses(await source.list_instances(GROUPED)) == ["127.0.0.1:9002"]
    assert addresses(await source.list_instances(ELSEWHERE)) == []


async def test_the_source_wins_over_a_registration_of_the_same_address_or_id(
    source: RegisteringSource, inner: MemorySource, register: ServerRegister
) -> None:
    await inner.set_instances(PLAIN, [nacos("10.0.0.1", 80, weight=5.0), nacos("10.0.0.2", 80, instance_id="x")])
    register.connect("weather-api", "dup-address", "10.0.0.1", 80, weight=1.0)
    register.connect("weather-api", "x", "10.0.0.9", 80)
    register.connect("weather-api", "first", "127.0.0.1", 9001)
    register.connect("weather-api", "second", "127.0.0.1", 9001)

    merged = await source.list_instances(PLAIN)
    assert [(i.address, i.weight, i.instance_id) for i in merged] == [
        ("10.0.0.1:80", 5.0, ""), ("10.0.0.2:80", 1.0, "x"), ("127.0.0.1:9001", 1.0, "first")]

    await inner.set_instances(PLAIN, [])
    assert addresses(await source.list_instances(PLAIN)) == ["10.0.0.1:80", "10.0.0.9:80", "127.0.0.1:9001"]


async def test_connect_and_disconnect_are_redelivered_to_subscribers_at_once(
    source: RegisteringSource, register: ServerRegister
) -> None:
    recorder = Recorder()
    await source.subscribe(PLAIN, recorder)
    assert addresses(await source.list_instances(PLAIN)) == ["10.0.0.1:80"]

    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    await source.wait_delivered()
    assert recorder.calls.qsize() == 1  # delivered before wait_delivered returned, not later
    assert await recorder.next() == ["10.0.0.1:80", "127.0.0.1:9001"]

    register.unregister("weather-api", "w1")
    await source.wait_delivered()
    assert await recorder.next() == ["10.0.0.1:80"]


async def test_source_changes_keep_the_registered_instances(
    source: RegisteringSource, inner: MemorySource, register: ServerRegister
) -> None:
    recorder = Recorder()
    await source.subscribe(PLAIN, recorder)
    await source.list_instances(PLAIN)
    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert await recorder.next() == ["10.0.0.1:80", "127.0.0.1:9001"]

    await inner.set_instances(PLAIN, [nacos("10.0.0.2", 80)])
    assert await recorder.next() == ["10.0.0.2:80", "127.0.0.1:9001"]
    await inner.set_instances(PLAIN, [])
    assert await recorder.next() == ["127.0.0.1:9001"]


async def test_a_change_that_leaves_the_merged_list_equal_notifies_nobody(
    source: RegisteringSource, register: ServerRegister
) -> None:
    recorder = Recorder()
    await source.subscribe(PLAIN, recorder)
    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert await recorder.next() == ["10.0.0.1:80", "127.0.0.1:9001"]

    register.connect("weather-api", "shadowed", "10.0.0.1", 80)  # the source's instance wins
    register.connect("other", "o1", "127.0.0.1", 9003)
    await source.wait_delivered()
    assert recorder.calls.empty()


async def test_redelivery_reads_the_source_when_nothing_was_listed_yet(
    source: RegisteringSource, register: ServerRegister
) -> None:
    recorder = Recorder()
    await source.subscribe(PLAIN, recorder)  # no list_instances: the overlay does not know the source's list

    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert await recorder.next() == ["10.0.0.1:80", "127.0.0.1:9001"]


async def test_registrations_from_another_thread_are_delivered_in_the_loop(
    source: RegisteringSource, register: ServerRegister
) -> None:
    recorder = Recorder()
    await source.subscribe(GROUPED, recorder)
    await asyncio.to_thread(register.connect, "mcp-endpoints@@amap::1.0.0", "a1", "127.0.0.1", 9002)
    assert await recorder.next() == ["127.0.0.1:9002"]


async def test_unsubscribed_callbacks_hear_nothing_more_from_either_side(
    source: RegisteringSource, inner: MemorySource, register: ServerRegister
) -> None:
    gone, staying = Recorder(), Recorder()
    await source.subscribe(PLAIN, gone)
    await source.subscribe(PLAIN, staying)
    await source.unsubscribe(PLAIN, gone)
    await source.unsubscribe(PLAIN, gone)  # unknown pairs are ignored

    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert await staying.next() == ["10.0.0.1:80", "127.0.0.1:9001"]
    await inner.set_instances(PLAIN, [])
    assert await staying.next() == ["127.0.0.1:9001"]
    assert gone.calls.empty()


async def test_a_failing_subscriber_does_not_starve_the_others(
    source: RegisteringSource, register: ServerRegister
) -> None:
    async def broken(key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
        raise RuntimeError("subscriber bug")

    recorder = Recorder()
    await source.subscribe(PLAIN, broken)
    await source.subscribe(PLAIN, recorder)
    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert await recorder.next() == ["10.0.0.1:80", "127.0.0.1:9001"]
    register.unregister("weather-api", "w1")
    assert await recorder.next() == ["10.0.0.1:80"]


async def test_after_stop_register_changes_are_ignored(inner: MemorySource, register: ServerRegister) -> None:
    overlay = RegisteringSource(inner, register)
    await overlay.start()
    recorder = Recorder()
    await overlay.subscribe(PLAIN, recorder)
    await overlay.stop()

    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    await overlay.wait_delivered()
    assert recorder.calls.empty()


async def test_source_instances_are_mirrored_without_a_second_delivery(
    source: RegisteringSource, inner: MemorySource, register: CountingRegister
) -> None:
    recorder = Recorder()
    await source.subscribe(PLAIN, recorder)
    await source.list_instances(PLAIN)
    assert [(i.id, o) for i, o in register.all()["weather-api"].entries()] == [("10.0.0.1:80", "source")]

    await inner.set_instances(PLAIN, [nacos("10.0.0.2", 443, weight=3.0, metadata={"protocol": "https"})])
    assert await recorder.next() == ["10.0.0.2:443"]
    await source.wait_delivered()
    assert recorder.calls.empty()
    assert register.told == []
    [mirrored] = register.mirrored("weather-api")
    assert (mirrored.id, mirrored.weight, mirrored.base_url) == ("10.0.0.2:443", 3.0, "https://10.0.0.2:443")

    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert await recorder.next() == ["10.0.0.2:443", "127.0.0.1:9001"]
    assert register.told == ["weather-api"]
    assert register.get_statistics()["originCounts"] == {"connect": 1, "source": 1}


async def test_only_connected_instances_are_merged_into_the_source_lists(
    source: RegisteringSource, register: ServerRegister
) -> None:
    await source.subscribe(PLAIN, Recorder())
    register.mirror_source({"weather-api": [Instance(id="10.9.9.9:80", host="10.9.9.9", port=80)]})
    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert addresses(await source.list_instances(PLAIN)) == ["10.0.0.1:80", "127.0.0.1:9001"]


async def test_a_service_nobody_watches_any_more_leaves_the_register_but_its_connections_stay(
    source: RegisteringSource, inner: MemorySource, register: ServerRegister
) -> None:
    await inner.set_instances(ELSEWHERE, [nacos("10.8.0.1", 80)])
    first, second, elsewhere = Recorder(), Recorder(), Recorder()
    await source.subscribe(PLAIN, first)
    await source.subscribe(PLAIN, second)
    await source.subscribe(ELSEWHERE, elsewhere)
    await source.list_instances(PLAIN)
    await source.list_instances(ELSEWHERE)
    register.connect("weather-api", "w1", "127.0.0.1", 9001)
    assert set(register.all()) == {"weather-api", "dev/DEFAULT_GROUP/weather-api"}

    await source.unsubscribe(PLAIN, first)
    assert [i.id for i in register.instances("weather-api")] == ["10.0.0.1:80", "w1"]
    await source.unsubscribe(PLAIN, second)
    assert [i.id for i in register.instances("weather-api")] == ["w1"]

    await source.stop()
    assert set(register.all()) == {"weather-api"}
