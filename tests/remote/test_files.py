"""The files source follows a Nacos-layout tree live, whatever way editors save.

Every test drives real files and the real watcher; none sleeps.  A
non-event is asserted by making a second, unrelated change afterwards and
checking that the next event received is that one.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from mcpgw.registry.errors import SourceError, SourceNotFound
from mcpgw.remote.base import (
    ConfigKey,
    McpServerInfo,
    RemoteClient,
    ServiceInstance,
    ServiceKey,
    server_spec_key,
    versions_key,
)
from mcpgw.remote.files import FilesSource, parse_instances

SPEC = server_spec_key("s1", "1.0.0")
SENTINEL = ConfigKey("public", "DEFAULT_GROUP", "sentinel.json")
SERVICE = ServiceKey("public", "mcp-endpoints", "weather::1.0.0")
OTHER_SERVICE = ServiceKey("public", "mcp-endpoints", "other")

Event = tuple[Any, Any]


class Recorder:
    """Queues every callback; waits are bounded so a missing event fails instead of hanging."""

    def __init__(self) -> None:
        self.events: asyncio.Queue[Event] = asyncio.Queue()

    async def config(self, key: ConfigKey, content: str) -> None:
        self.events.put_nowait((key, content))

    async def instances(self, key: ServiceKey, instances: tuple[ServiceInstance, ...]) -> None:
        self.events.put_nowait((key, instances))

    async def listing(self) -> None:
        self.events.put_nowait(("listing", None))

    async def next(self) -> Event:
        async with asyncio.timeout(5):
            return await self.events.get()


def config_file(root: Path, key: ConfigKey) -> Path:
    return root / "config" / key.namespace / key.group / key.data_id


def service_file(root: Path, key: ServiceKey) -> Path:
    return root / "naming" / key.namespace / key.group / f"{key.service}.json"


def write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


def write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(path.name + ".tmp")
    scratch.write_text(text)
    os.replace(scratch, path)


def instances_json(*ips: str) -> str:
    return json.dumps([{"ip": ip, "port": 8000} for ip in ips])


@pytest.fixture
def root(tmp_path: Path) -> Path:
    tree = tmp_path / "tree"
    (tree / "config").mkdir(parents=True)
    return tree


@pytest.fixture
async def source(root: Path) -> AsyncIterator[FilesSource]:
    files = FilesSource(root)
    await files.start()
    yield files
    await files.stop()


async def mark(source: FilesSource, recorder: Recorder, root: Path, text: str) -> None:
    """Make an unrelated change and wait for it: every event before it has been seen."""
    await source.listen_config(SENTINEL, recorder.config)
    write(config_file(root, SENTINEL), text)
    assert await recorder.next() == (SENTINEL, text)


def test_files_source_satisfies_the_remote_client_protocol(tmp_path: Path) -> None:
    assert isinstance(FilesSource(tmp_path), RemoteClient)


async def test_get_config_reads_the_file_and_none_when_missing(source: FilesSource, root: Path) -> None:
    assert await source.get_config(SPEC) is None
    write(config_file(root, SPEC), '{"id": "s1"}')
    assert await source.get_config(SPEC) == '{"id": "s1"}'


async def test_listener_gets_changes_and_empty_string_on_deletion(source: FilesSource, root: Path) -> None:
    recorder = Recorder()
    await source.listen_config(SPEC, recorder.config)
    write(config_file(root, SPEC), "v1")
    assert await recorder.next() == (SPEC, "v1")
    write(config_file(root, SPEC), "v2")
    assert await recorder.next() == (SPEC, "v2")
    config_file(root, SPEC).unlink()
    assert await recorder.next() == (SPEC, "")
    assert await source.get_config(SPEC) is None


async def test_atomic_rename_gives_exactly_one_event_with_the_new_content(
    source: FilesSource, root: Path
) -> None:
    write(config_file(root, SPEC), "v1")
    assert await source.get_config(SPEC) == "v1"
    recorder = Recorder()
    await source.listen_config(SPEC, recorder.config)
    write_atomically(config_file(root, SPEC), "v2")
    assert await recorder.next() == (SPEC, "v2")
    await mark(source, recorder, root, "after the rename")


async def test_editor_scratch_and_hidden_files_are_ignored(source: FilesSource, root: Path) -> None:
    recorder = Recorder()
    scratch_names = [".s1.json.swp", "s1.json~", ".#s1.json", "s1.json.tmp", "#s1.json#", ".hidden"]
    for name in scratch_names:
        await source.listen_config(ConfigKey("public", "mcp-server", name), recorder.config)
    for name in scratch_names:
        write(root / "config" / "public" / "mcp-server" / name, "scratch")
    await mark(source, recorder, root, "after the scratch files")
    assert await source.list_mcp_servers() == []


async def test_rewriting_the_same_content_gives_no_event(source: FilesSource, root: Path) -> None:
    write(config_file(root, SPEC), "v1")
    assert await source.get_config(SPEC) == "v1"
    recorder = Recorder()
    await source.listen_config(SPEC, recorder.config)
    write(config_file(root, SPEC), "v1")
    write_atomically(config_file(root, SPEC), "v1")
    await mark(source, recorder, root, "after the rewrites")


async def test_an_emptied_file_keeps_its_previous_content(source: FilesSource, root: Path) -> None:
    write(config_file(root, SPEC), "v1")
    assert await source.get_config(SPEC) == "v1"
    recorder = Recorder()
    await source.listen_config(SPEC, recorder.config)
    write(config_file(root, SPEC), "")
    await mark(source, recorder, root, "after the truncation")
    assert await source.get_config(SPEC) == "v1"


async def test_change_between_read_and_listen_reaches_the_new_listener(
    source: FilesSource, root: Path
) -> None:
    write(config_file(root, SPEC), "v1")
    assert await source.get_config(SPEC) == "v1"
    write(config_file(root, SPEC), "v2")
    await mark(source, Recorder(), root, "the watcher has seen v2")
    late = Recorder()
    await source.listen_config(SPEC, late.config)
    assert await late.next() == (SPEC, "v2")


async def test_instances_file_create_modify_delete_delivers_full_lists(
    source: FilesSource, root: Path
) -> None:
    recorder = Recorder()
    assert await source.list_instances(SERVICE) == []
    await source.subscribe(SERVICE, recorder.instances)
    path = service_file(root, SERVICE)
    write(path, instances_json("10.0.0.1"))
    key, instances = await recorder.next()
    assert key == SERVICE
    assert [i.address for i in instances] == ["10.0.0.1:8000"]
    write_atomically(path, instances_json("10.0.0.1", "10.0.0.2"))
    _, instances = await recorder.next()
    assert [i.address for i in instances] == ["10.0.0.1:8000", "10.0.0.2:8000"]
    path.unlink()
    assert await recorder.next() == (SERVICE, ())
    assert path.name == "weather::1.0.0.json"


async def test_an_instances_file_that_does_not_parse_keeps_the_previous_list_and_is_reported(
    source: FilesSource, root: Path
) -> None:
    path = service_file(root, SERVICE)
    write(path, instances_json("10.0.0.1"))
    previous = await source.list_instances(SERVICE)
    recorder = Recorder()
    await source.subscribe(SERVICE, recorder.instances)
    await source.subscribe(OTHER_SERVICE, recorder.instances)

    write(path, '[{"ip": "10.0.0.9", "port": 80')
    write(service_file(root, OTHER_SERVICE), instances_json("10.0.0.7"))
    key, _ = await recorder.next()
    assert key == OTHER_SERVICE
    assert await source.list_instances(SERVICE) == previous
    problem = source.problems()["naming/public/mcp-endpoints/weather::1.0.0.json"]
    assert "is not a valid instances file: not valid JSON" in problem

    write(path, instances_json("10.0.0.3"))
    _, instances = await recorder.next()
    assert [i.ip for i in instances] == ["10.0.0.3"]
    assert source.problems() == {}


async def test_a_bad_instance_is_dropped_with_its_reason_and_the_others_are_delivered(
    source: FilesSource, root: Path
) -> None:
    path = service_file(root, SERVICE)
    write(path, instances_json("10.0.0.1"))
    await source.list_instances(SERVICE)
    recorder = Recorder()
    await source.subscribe(SERVICE, recorder.instances)

    write(path, json.dumps([{"ip": "10.0.0.9", "port": "eighty"}, {"ip": "10.0.0.2", "port": 8000}]))
    _, instances = await recorder.next()

    assert [i.address for i in instances] == ["10.0.0.2:8000"]
    problem = source.problems()["naming/public/mcp-endpoints/weather::1.0.0.json"]
    assert "instance [0]: 'port' must be an integer" in problem
    assert "dropped" in problem


def test_instances_get_nacos_defaults_for_missing_fields() -> None:
    [instance] = parse_instances(SERVICE, '[{"ip": "10.0.3.15", "port": 8000, "metadata": {"n": 1}}]').instances
    assert instance == ServiceInstance(
        ip="10.0.3.15",
        port=8000,
        weight=1.0,
        healthy=True,
        enabled=True,
        ephemeral=True,
        cluster_name="DEFAULT",
        service_name="mcp-endpoints@@weather::1.0.0",
        instance_id="10.0.3.15#8000#DEFAULT#mcp-endpoints@@weather::1.0.0",
        metadata={"n": "1"},
    )


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("{}", "expected a JSON list"),
        ("[" * 10_000 + "]" * 10_000, "nested deeper than"),
    ],
)
def test_an_instances_file_that_cannot_be_used_says_what_is_wrong(text: str, reason: str) -> None:
    with pytest.raises(ValueError, match=re.escape(reason)):
        parse_instances(SERVICE, text)


@pytest.mark.parametrize(
    ("entry", "reason"),
    [
        ("1", "instance [0] is not a JSON object"),
        ('{"port": 80}', "'ip' must be a non-empty string"),
        ('{"ip": "h", "port": 80, "healthy": "yes"}', "'healthy' must be true or false"),
        ('{"ip": "h", "port": 80, "weight": -1}', "'weight' must be a number >= 0"),
        ('{"ip": "h", "port": 80, "weight": 1e999}', "the weight inf is not a finite number"),
        ('{"ip": "h", "port": 80, "weight": NaN}', "the weight nan is not a finite number"),
        ('{"ip": "h", "port": 80, "weight": -Infinity}', "'weight' must be a number >= 0"),
        ('{"ip": "h", "port": 80, "weight": 10001}', "between 0 and 10000"),
        ('{"ip": "127.0.0.1@127.0.0.2", "port": 80}', "neither an IP address nor a host name"),
        ('{"ip": "127.0.0.1/x?y#", "port": 80}', "neither an IP address nor a host name"),
        ('{"ip": "h", "port": 70000}', "'port' must be an integer between 1 and 65535"),
    ],
)
def test_a_bad_instance_says_what_is_wrong_and_is_dropped(entry: str, reason: str) -> None:
    parsed = parse_instances(SERVICE, f'[{entry}, {{"ip": "10.0.0.1", "port": 80}}]')

    assert [i.address for i in parsed.instances] == ["10.0.0.1:80"]
    [dropped] = parsed.dropped
    assert reason in dropped


async def test_listing_is_derived_from_versions_files_on_disk(source: FilesSource, root: Path) -> None:
    manifest = {"id": "b", "name": "weather", "protocol": "http", "frontProtocol": "mcp-sse"}
    write(config_file(root, versions_key("b")), json.dumps({**manifest, "latestPublishedVersion": "1.1.0"}))
    write(config_file(root, versions_key("a")), "{broken")
    write(config_file(root, SPEC), "{}")
    assert await source.list_mcp_servers() == [
        McpServerInfo(id="a", name=""),
        McpServerInfo(id="b", name="weather", protocol="http", front_protocol="mcp-sse", version="1.1.0"),
    ]
    config_file(root, versions_key("a")).unlink()
    assert [info.id for info in await source.list_mcp_servers()] == ["b"]


async def test_listing_watchers_fire_when_a_versions_file_changes(source: FilesSource, root: Path) -> None:
    recorder = Recorder()
    await source.watch_listing(recorder.listing)
    write(config_file(root, versions_key("a")), '{"id": "a"}')
    assert await recorder.next() == ("listing", None)
    config_file(root, versions_key("a")).unlink()
    assert await recorder.next() == ("listing", None)


async def test_a_directory_moved_into_the_tree_is_picked_up(source: FilesSource, root: Path) -> None:
    key = versions_key("moved", namespace="team-b")
    staging = root.parent / "staging"
    write(staging / key.group / key.data_id, '{"name": "moved"}')
    recorder = Recorder()
    await source.listen_config(key, recorder.config)
    staging.rename(root / "config" / "team-b")
    assert await recorder.next() == (key, '{"name": "moved"}')
    shutil.rmtree(root / "config" / "team-b")
    assert await recorder.next() == (key, "")


async def test_keys_that_would_escape_the_tree_are_refused(source: FilesSource) -> None:
    with pytest.raises(SourceError, match="cannot be stored under"):
        await source.get_config(ConfigKey("public", "..", "passwd"))


async def test_start_on_a_missing_directory_raises_a_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    with pytest.raises(SourceNotFound) as caught:
        await FilesSource(missing).start()
    assert str(caught.value) == (
        f"The files source directory {missing} does not exist; "
        "create it or point the gateway at an existing Nacos-layout tree."
    )


async def test_start_on_a_file_or_a_tree_without_config_raises(tmp_path: Path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("")
    with pytest.raises(SourceNotFound, match="is not a directory"):
        await FilesSource(a_file).start()
    with pytest.raises(SourceError, match="has no config/ directory") as caught:
        await FilesSource(tmp_path).start()
    assert not isinstance(caught.value, SourceNotFound)


async def test_stop_leaves_no_task_running_and_ends_events(root: Path) -> None:
    before = asyncio.all_tasks()
    source = FilesSource(root)
    await source.start()
    recorder = Recorder()
    await source.listen_config(SPEC, recorder.config)
    await source.stop()
    assert asyncio.all_tasks() == before
    write(config_file(root, SPEC), "v1")
    assert await source.get_config(SPEC) == "v1"
    assert recorder.events.empty()
