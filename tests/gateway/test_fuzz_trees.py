"""Fuzz: random mutations of a valid tree, applied to a running gateway, one file at a time (issue 11, item 8).

One gateway serves three servers from a files tree (``tests.support.hostile``)
for the whole property.  Each example mutates one file of one server (its
versions file, server spec, tools spec or instances file) at the byte level
(random bytes, invalid UTF-8, truncation, 10k-deep nesting, an empty file)
or at the JSON level (one value anywhere replaced by a hostile one: NaN,
1e999, a lone surrogate, a deep object, a credential reference, a template,
another host, a wrong type...), lets the gateway settle (re-read, then
quiescence: no sleeps), and checks:

- the process is alive: ``/healthz`` answers, ``/admin/state`` is JSON;
- the other servers are untouched: same phase, same revision, same tools;
- the aggregate ``tools/list`` answers with a result;
- the mutated server serves its new version, or is explicitly gone (deleted
  or disabled), or keeps serving its last good tools with the error located
  (file and reason) on ``/admin/state`` and in ``mcpgw state``'s table, or
  the source names the file it could not use;
- ``mcpgw validate`` on the tree agrees: it reports a problem exactly when
  the gateway does (the same judge);
- and once the file is restored, the server serves its original version.

Seeded (``derandomize``), bounded (``MAX_EXAMPLES``: about three seconds on a
quiet machine; 1,500 examples pass too, in a minute), and part of the normal
test run.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpgw.converter.validate import validate_tree
from mcpgw.gateway.cli import _table
from mcpgw.remote.base import ConfigKey, ServiceKey
from tests.support.hostile import SERVERS, SERVICES, StageOnItsOwnLoop, config_path, file_of, service_path
from tests.support.mcp_wire import McpWire

MAX_EXAMPLES = 150
KINDS = ("versions", "server", "tools", "instances")
DEEP = "[" * 10_000 + "]" * 10_000


@dataclass
class Baseline:
    statuses: dict[str, dict[str, Any]]
    tools: set[str]
    files: dict[ConfigKey | ServiceKey, bytes]


class Driver(StageOnItsOwnLoop):
    """The stage, one MCP session on ``/mcp``, and what was served before any mutation."""

    def __init__(self, tmp: Path) -> None:
        super().__init__(tmp)
        self.wire: McpWire = self.run(self.stage.wire().open())
        self.baseline: Baseline = self.run(self._baseline())

    def key(self, server_id: str, kind: str) -> ConfigKey | ServiceKey:
        return SERVICES[server_id] if kind == "instances" else file_of(server_id, kind)

    def path(self, key: ConfigKey | ServiceKey) -> Path:
        return config_path(self.stage.tree, key) if isinstance(key, ConfigKey) else service_path(self.stage.tree, key)

    async def _baseline(self) -> Baseline:
        doc = await self.stage.state()
        files = {self.key(sid, kind): self.path(self.key(sid, kind)).read_bytes() for sid in SERVERS for kind in KINDS}
        return Baseline(doc["servers"], {t["name"] for t in await self.wire.tools()}, files)


@pytest.fixture
def driver(tmp_path: Path) -> Iterator[Driver]:
    running = Driver(tmp_path)
    try:
        yield running
    finally:
        running.close()


# -- mutations ----------------------------------------------------------------------------------------

_HOSTILE_VALUES = [
    "NaN", "Infinity", "-1e999", "1e999", '"\\ud800"', '"x\\udfff"', "null", "true", "0", "-1", "70000", "[]", "{}",
    '"${nacos.victim-key.json/mcp-credentials}"', '"{{ .args.u }}"', '"{{ range 99 }}"', '"http://127.0.0.2:1/"',
    '"127.0.0.1@127.0.0.2"', '"../../x"', '"a b\\r\\nc"', '""', '"' + "x" * 5000 + '"',
    '{"type": "object", "properties": {"x": null}}', '{"a": ' * 70 + "1" + "}" * 70, "[" * 900 + "]" * 900,
]
_json_leaf = st.sampled_from(_HOSTILE_VALUES) | st.integers().map(str) | st.text(max_size=12).map(json.dumps)
HOLE = "\u0000mcpgw-fuzz-hole\u0000"


def _paths(value: Any, at: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [at]
    if isinstance(value, dict):
        for key, item in value.items():
            found.extend(_paths(item, (*at, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found.extend(_paths(item, (*at, index)))
    return found


def _with_hole(doc: Any, at: tuple[Any, ...], action: str) -> Any:
    if not at:
        return HOLE
    parent = doc
    for part in at[:-1]:
        parent = parent[part]
    if action == "delete":
        del parent[at[-1]]
    elif action == "add" and isinstance(parent, dict):
        parent["x-fuzz"] = HOLE
    else:
        parent[at[-1]] = HOLE
    return doc


Mutation = tuple[ConfigKey | ServiceKey, bytes | None]
"""A file and its new content (``None``: deleted)."""


@st.composite
def mutations(draw: st.DrawFn, files: dict[ConfigKey | ServiceKey, bytes]) -> Mutation:
    key = draw(st.sampled_from(sorted(files, key=str)))
    original = files[key]
    kind = draw(st.sampled_from(["json"] * 6 + ["bytes", "utf8", "truncate", "deep", "empty", "delete"]))
    if kind == "bytes":
        return key, draw(st.binary(min_size=1, max_size=64))
    if kind == "utf8":
        cut = draw(st.integers(0, len(original)))
        return key, original[:cut] + b"\xc3\x28\xff" + original[cut:]
    if kind == "truncate":
        return key, original[: draw(st.integers(1, max(1, len(original) - 1)))]
    if kind == "deep":
        return key, DEEP.encode()
    if kind == "empty":
        return key, b""
    if kind == "delete":
        return key, None
    doc = json.loads(original)
    paths = _paths(doc)
    at = paths[draw(st.integers(0, len(paths) - 1))]
    action = draw(st.sampled_from(["replace", "replace", "delete", "add"])) if at else "replace"
    mutated = _with_hole(doc, at, action)
    text = json.dumps(mutated).replace(json.dumps(HOLE), draw(_json_leaf))
    return key, text.encode()


# -- what the gateway shows ---------------------------------------------------------------------------


def _complaint(doc: dict[str, Any], server_id: str) -> str | None:
    """What the gateway says is wrong about this server or its files (``None``: nothing)."""
    if doc["source_problems"]:
        return "; ".join(f"{p['where']}: {p['problem']}" for p in doc["source_problems"])
    if doc["discovery"]["listing_problem"]:
        return str(doc["discovery"]["listing_problem"])
    status = doc["servers"].get(server_id)
    if status is None or status["phase"] == "disabled":
        return None
    if status["warnings"]:
        return "; ".join(status["warnings"])
    if status["last_error"]:
        error = status["last_error"]
        return f"{error['file']} {error['path']}: {error['reason']}"
    # A wait ("waiting for <file>") or a source error, shown while the last good version serves. Only drafts is
    # no problem: nothing was published yet.
    if status["message"] and status["message"] != "no published version yet (only drafts)":
        return str(status["message"])
    return None


def _visible_in_table(doc: dict[str, Any], key: ConfigKey | ServiceKey, server_id: str) -> bool:
    """Whether ``mcpgw state`` (the table it prints for this document) names the file, or the server's error.

    A change to one file can surface in another: a server spec that loses its serviceRef makes the tools
    spec's relative urls unservable, and the error names the tools spec's url.
    """
    table = _table(doc)
    name = key.data_id if isinstance(key, ConfigKey) else f"{key.service}.json"
    error = (doc["servers"].get(server_id) or {}).get("last_error")
    return name in table or (error is not None and error["file"] in table and error["reason"][:40] in table)


async def _check_example(driver: Driver, key: ConfigKey | ServiceKey, content: bytes | None, server_id: str) -> None:
    running, baseline = driver.stage, driver.baseline
    path = driver.path(key)
    if content is None:
        path.unlink()
        await running.settle(key)
    else:
        await running.write(key, content)

    health = await running.http.get(running.url + "/healthz")
    assert health.status_code == 200
    doc = await running.state()
    listed = {tool["name"] for tool in await driver.wire.tools()}
    for other, status in baseline.statuses.items():
        if other == server_id:
            continue
        now = doc["servers"][other]
        assert (now["phase"], now["revision"], now["tools"]) == (status["phase"], status["revision"], status["tools"])
        own = {name for name in baseline.tools if name.startswith(f"{SERVERS[other]}_")}
        assert own <= listed, f"{SERVERS[other]} lost tools after a mutation of {key}"

    status = doc["servers"].get(server_id)
    complaint = _complaint(doc, server_id)
    if status is not None and status["phase"] in ("stale", "error", "pending") and status["applied_version"]:
        # Last good served: the server's tools as before the mutation.
        own = {name for name in baseline.tools if name.startswith(f"{SERVERS[server_id]}_")}
        assert own <= listed
    if complaint is not None:
        assert _visible_in_table(doc, key, server_id)
    problems = await asyncio.to_thread(validate_tree, running.tree)
    assert bool(problems) == (complaint is not None), (
        f"validate and the gateway disagree about {key}: validate says {[str(p) for p in problems][:3]}, "
        f"the gateway says {complaint!r}"
    )


async def _restore(driver: Driver, key: ConfigKey | ServiceKey, server_id: str) -> None:
    await driver.stage.write(key, driver.baseline.files[key])
    doc = await driver.stage.state()
    status = doc["servers"][server_id]
    assert (status["phase"], status["revision"]) == (driver.baseline.statuses[server_id]["phase"],
                                                     driver.baseline.statuses[server_id]["revision"])
    assert doc["source_problems"] == []
    assert {tool["name"] for tool in await driver.wire.tools()} == driver.baseline.tools


@settings(max_examples=MAX_EXAMPLES, derandomize=True, database=None, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_file_never_hurts_the_gateway_or_other_servers_and_is_reported_where_it_is(
    driver: Driver, data: st.DataObject
) -> None:
    key, content = data.draw(mutations(driver.baseline.files), label="mutation")
    server_id = next(sid for sid in SERVERS for kind in KINDS if driver.key(sid, kind) == key)
    try:
        driver.run(_check_example(driver, key, content, server_id))
    finally:
        driver.run(_restore(driver, key, server_id))
