"""Replay: drive the real adapter over the memory source through a scenario, step by step.

A scenario directory holds ``scenario.yaml`` — a description and a list of
steps, each a change to the source (configs written or deleted, instance
lists, an optional listing override) — and one golden file per step,
``expected/NN-<slug>.yaml``, with the gateway state that must follow.  After
each step the adapter is driven to quiescence and the state is compared with
the golden file; a mismatch is reported as a unified diff.

A golden records what is served and also what is watched: per server, the
configs the source has a listener of that server's ``ConfigListener`` for and
the services it is subscribed to, read from the source's own listener tables
(not from the listener's idea of them). So a version switch that left the old
version's spec watched, a serviceRef change that kept the old subscription or
a removed credential reference still listened to shows up as a diff, though
nothing served changes. Watches no running listener owns (leaked by a stopped
one) are listed under ``(no listener)``.
"""

from __future__ import annotations

import difflib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from mcpgw.adapter.discovery import MCPServerAdapter
from mcpgw.registry.describe import describe_state, server_label
from mcpgw.registry.errors import McpgwError
from mcpgw.registry.state import MAX_LISTED_NAME, AggregateNaming, StateStore
from mcpgw.remote.base import DEFAULT_NAMESPACE, ConfigKey, McpServerInfo, ServiceInstance, ServiceKey
from mcpgw.remote.memory import MemorySource


class ScenarioError(McpgwError):
    """A scenario file that cannot be understood."""


@dataclass(frozen=True, slots=True)
class StepResult:
    index: int
    name: str
    actual: str
    expected: str | None
    golden: Path

    @property
    def ok(self) -> bool:
        return self.expected is not None and self.expected == self.actual

    def diff(self) -> str:
        return "".join(
            difflib.unified_diff(
                (self.expected or "").splitlines(keepends=True),
                self.actual.splitlines(keepends=True),
                fromfile=f"{self.golden} (expected)",
                tofile="actual",
            )
        )


def dump_state(data: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(data), sort_keys=False, allow_unicode=True, width=120)


def _slug(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-")[:50] or "step"


def _three_part_key(path: str, what: str, last: str) -> tuple[str, str, str]:
    parts = path.split("/")
    if len(parts) == 2:
        return DEFAULT_NAMESPACE, parts[0], parts[1]
    if len(parts) == 3:
        return parts[0], parts[1], parts[2]
    raise ScenarioError(f"{what} path {path!r} must be 'group/{last}' or 'namespace/group/{last}'")


def _config_key(path: str) -> ConfigKey:
    return ConfigKey(*_three_part_key(path, "config", "dataId"))


def _service_key(path: str) -> ServiceKey:
    return ServiceKey(*_three_part_key(path, "service", "service"))


def _content(value: Any, where: str) -> str | None:
    if value is None:
        return None
    if isinstance(value, Mapping):
        if "json" in value:
            return json.dumps(value["json"], indent=2)
        if "text" in value:
            return str(value["text"])
    raise ScenarioError(f"{where}: a config is null (delete), {{json: ...}} or {{text: ...}}")


def _instance(raw: Mapping[str, Any], service: ServiceKey) -> ServiceInstance:
    return ServiceInstance(
        ip=str(raw["ip"]),
        port=int(raw["port"]),
        weight=float(raw.get("weight", 1.0)),
        healthy=bool(raw.get("healthy", True)),
        enabled=bool(raw.get("enabled", True)),
        service_name=service.service,
        metadata={str(k): str(v) for k, v in (raw.get("metadata") or {}).items()},
    )


def load_scenario(directory: Path) -> dict[str, Any]:
    path = directory / "scenario.yaml"
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as exc:
        raise ScenarioError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict) or not isinstance(data.get("steps"), list) or not data["steps"]:
        raise ScenarioError(f"{path}: expected a mapping with a non-empty 'steps' list")
    return data


async def _apply_step(source: MemorySource, step: Mapping[str, Any], where: str) -> None:
    for path, value in (step.get("configs") or {}).items():
        key = _config_key(path)
        content = _content(value, f"{where} config {path}")
        if content is None:
            await source.delete_config(key)
        else:
            await source.put_config(key, content)
    for path, instances in (step.get("services") or {}).items():
        service = _service_key(path)
        await source.set_instances(service, [_instance(i, service) for i in instances or []])
    if "listing" in step:
        listing = step["listing"]
        if listing == "derived":
            source.set_listing_override(None)
        else:
            source.set_listing_override(
                [McpServerInfo(id=str(s["id"]), name=str(s.get("name", ""))) for s in listing or []]
            )


def _config_path(key: ConfigKey) -> str:
    path = f"{key.group}/{key.data_id}"
    return path if key.namespace == DEFAULT_NAMESPACE else f"{key.namespace}/{path}"


def _service_path(key: ServiceKey) -> str:
    path = f"{key.group}/{key.service}"
    return path if key.namespace == DEFAULT_NAMESPACE else f"{key.namespace}/{path}"


def describe_watches(source: MemorySource, adapter: MCPServerAdapter) -> dict[str, Any]:
    """Per server, the configs watched and the services subscribed, as the source's listener tables have them."""
    owners = {id(listener): listener for listener in adapter.listeners.values()}
    watches: dict[str, dict[str, list[str]]] = {}

    def entry(callback: object) -> dict[str, list[str]]:
        listener = owners.get(id(getattr(callback, "__self__", None)))
        label = "(no listener)" if listener is None else server_label(listener.name, listener.server_id)
        return watches.setdefault(label, {"configs": [], "services": []})

    for key, callbacks in source.config_listeners().items():
        for callback in callbacks:
            entry(callback)["configs"].append(_config_path(key))
    for service, subscribers in source.subscribers().items():
        for subscriber in subscribers:
            entry(subscriber)["services"].append(_service_path(service))
    return {label: {kind: sorted(paths) for kind, paths in sorted(kinds.items()) if paths}
            for label, kinds in sorted(watches.items())}


async def replay(directory: Path, *, update: bool = False) -> list[StepResult]:
    """Run a scenario; with ``update`` the golden files are (re)written from the actual states."""
    scenario = load_scenario(directory)
    naming_raw = scenario.get("naming") or {}
    naming = AggregateNaming(mode=naming_raw.get("mode", "prefix"), separator=naming_raw.get("separator", "_"),
                             max_length=int(naming_raw.get("max_length", MAX_LISTED_NAME)))
    source = MemorySource()
    store = StateStore(naming)
    adapter = MCPServerAdapter(source, store, interval=3600)
    await source.start()
    results: list[StepResult] = []
    try:
        for index, step in enumerate(scenario["steps"], start=1):
            name = str(step.get("name") or f"step {index}")
            await _apply_step(source, step, f"step {index} ({name})")
            await adapter.quiesce()
            actual = dump_state({**describe_state(store.current), "watches": describe_watches(source, adapter)})
            golden = directory / "expected" / f"{index:02d}-{_slug(name)}.yaml"
            if update:
                golden.parent.mkdir(exist_ok=True)
                golden.write_text(actual)
            expected = golden.read_text() if golden.exists() else None
            results.append(StepResult(index, name, actual, expected, golden))
    finally:
        await adapter.close()
        await source.stop()
    return results
