"""A configuration source read from a directory tree in the Nacos layout, watched live.

This is what the gateway runs on when there is no Nacos: operators (or CI)
keep the three MCP-registry configs per server and the service instances in
plain files, edit them with any editor, and the gateway follows every save
within milliseconds::

    ROOT/config/<namespace>/<group>/<dataId>                config content, as is
    ROOT/naming/<namespace>/<group>/<serviceName>.json      JSON list of Nacos instances

The default namespace's directory is ``public``; service names keep their
``::`` and ``@@`` in the file name.

The tree is mirrored into a ``MemorySource``, which owns the Nacos semantics
(de-duplication by content, ``""`` on deletion, ordered notification, the
derived listing).  This module only turns file-system events into "re-read
these keys", which is what makes it robust to how editors save: an event is
never trusted for content, the real file is read again and compared with
what is known.  Temp and hidden files are ignored, an atomic rename is one
change, a rewrite with the same content is none, and an empty file counts as
a write in progress (the previous content stays).  A file that vanishes is
looked at again one debounce later before it counts as deleted, so an
editor's "move away, write new" save does not flap a server off and on.  An
instances file that does not parse keeps the previous list and is reported
by ``problems()``; it is never delivered.  One unusable entry in it (an ip
that is no address, a port or weight out of Nacos' ranges, a field of the
wrong type) is dropped and reported, and the other entries are delivered.
An empty file is reported until it is written (the previous content stays).

Watching uses ``watchfiles`` (inotify on Linux), not polling.  ``start()``
returns only once the watcher exists, and loads the tree after that, so no
change made after ``start()`` returns can be missed.  Reads, instance list
calls and listing calls also re-read the files they concern, so they never
return something older than what is on disk.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType

import structlog
from watchfiles import awatch

from mcpgw.registry.errors import SourceError, SourceNotFound
from mcpgw.remote.base import (
    DEFAULT_NAMESPACE,
    VERSIONS_GROUP,
    ConfigCallback,
    ConfigKey,
    InstancesCallback,
    ListingCallback,
    McpServerInfo,
    ServiceInstance,
    ServiceKey,
    instance_problem,
)
from mcpgw.remote.jsondoc import JsonDocumentError, load_json
from mcpgw.remote.memory import MemorySource

log = structlog.get_logger(__name__)

# A batch is handed over once the tree has been quiet for one step.
_STEP_MS = 5
# Only bounds how long an outside cancellation waits for the watcher thread;
# stop() ends the thread within one step through the stop event.
_RUST_TIMEOUT_MS = 1000
_RESTART_DELAY_S = 1.0

# Editors' swap, backup, lock and temp files, and anything hidden.
_SCRATCH = re.compile(r"^\.|^#.*#$|~$|\.tmp$|\.sw.$")

_KEY_DEPTH = 4  # config|naming / namespace / group / file

_FileRead = bytes | OSError | None


@dataclass(frozen=True, slots=True)
class InstancesFile:
    """What an instances file yields: the usable instances, and why each other entry was dropped."""

    instances: tuple[ServiceInstance, ...]
    dropped: tuple[str, ...] = ()


def parse_instances(key: ServiceKey, text: str) -> InstancesFile:
    """The instances of an instances file; ``ValueError`` when the file as a whole cannot be used.

    One bad entry (not an object, an ip that is not an address, a port or
    weight out of Nacos' ranges, ...) is dropped with its reason and the
    others are used: holding back a whole file for one entry would keep
    sending calls to instances the file no longer lists.  Missing fields get
    Nacos' defaults; metadata values that are not strings are kept as their
    JSON text, as Nacos stores strings only.
    """
    try:
        doc = load_json(text, finite=False)  # a weight of NaN drops its instance, not the file
    except JsonDocumentError as exc:
        raise ValueError(str(exc)) from exc
    if not isinstance(doc, list):
        raise ValueError(f"expected a JSON list of instances, found a JSON {_json_kind(doc)}")
    instances: list[ServiceInstance] = []
    dropped: list[str] = []
    for index, item in enumerate(doc):
        try:
            instances.append(_instance(key, index, item))
        except ValueError as exc:
            dropped.append(f"{exc}; the instance is dropped")
    return InstancesFile(tuple(instances), tuple(dropped))


EMPTY_FILE = "is empty; its previous content (if any) stays until it is written again, delete it to delete it"
"""An empty file is a write in progress (editors truncate, then write): kept as a problem until written."""


def decode_config(data: bytes) -> str:
    """A config file's content as the files source uses it; ``ValueError`` if it is not UTF-8 text."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc


def decode_instances(key: ServiceKey, data: bytes) -> InstancesFile:
    """An instances file's content as the files source uses it; ``ValueError`` if the file cannot be used."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"is not a valid instances file: not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    try:
        return parse_instances(key, text)
    except ValueError as exc:
        raise ValueError(f"is not a valid instances file: {exc}") from exc


def _json_kind(value: object) -> str:
    names = {dict: "object", str: "string", bool: "boolean", int: "number", float: "number", type(None): "null"}
    return names.get(type(value), type(value).__name__)


def _instance(key: ServiceKey, index: int, item: object) -> ServiceInstance:
    where = f"instance [{index}]"
    if not isinstance(item, dict):
        raise ValueError(f"{where} is not a JSON object")
    ip = item.get("ip")
    if not isinstance(ip, str) or not ip:
        raise ValueError(f"{where}: 'ip' must be a non-empty string")
    port = item.get("port")
    if not isinstance(port, int) or isinstance(port, bool) or not 0 < port < 65536:
        raise ValueError(f"{where}: 'port' must be an integer between 1 and 65535")
    weight = item.get("weight", 1.0)
    if not isinstance(weight, int | float) or isinstance(weight, bool) or weight < 0:
        raise ValueError(f"{where}: 'weight' must be a number >= 0")
    problem = instance_problem(ip, port, weight)
    if problem is not None:
        raise ValueError(f"{where}: {problem}")
    flags = {name: item.get(name, True) for name in ("healthy", "enabled", "ephemeral")}
    for name, flag in flags.items():
        if not isinstance(flag, bool):
            raise ValueError(f"{where}: '{name}' must be true or false")
    cluster = _optional_text(item, "clusterName", "DEFAULT", where)
    grouped = key.service if "@@" in key.service else f"{key.group}@@{key.service}"
    service_name = _optional_text(item, "serviceName", grouped, where)
    instance_id = _optional_text(item, "instanceId", f"{ip}#{port}#{cluster}#{service_name}", where)
    metadata = item.get("metadata", {})
    if not isinstance(metadata, dict):
        raise ValueError(f"{where}: 'metadata' must be a JSON object")
    return ServiceInstance(
        ip=ip,
        port=port,
        weight=float(weight),
        healthy=flags["healthy"],
        enabled=flags["enabled"],
        ephemeral=flags["ephemeral"],
        cluster_name=cluster,
        service_name=service_name,
        instance_id=instance_id,
        metadata=MappingProxyType(
            {name: value if isinstance(value, str) else json.dumps(value) for name, value in metadata.items()}
        ),
    )


def _optional_text(item: Mapping[str, object], name: str, default: str, where: str) -> str:
    value = item.get(name, default)
    if not isinstance(value, str):
        raise ValueError(f"{where}: '{name}' must be a string")
    return value or default


def is_safe_part(part: str) -> bool:
    """Whether a namespace, group, dataId or service name can be a file name of the tree."""
    return bool(part) and part not in (".", "..") and "/" not in part and "\0" not in part


def key_of(root: Path, path: Path) -> ConfigKey | ServiceKey | None:
    """The config or service a file of the tree holds; ``None`` for anything the source ignores."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        return None
    if len(parts) != _KEY_DEPTH or any(_SCRATCH.search(part) for part in parts[1:]):
        return None
    kind, namespace, group, name = parts
    if kind == "config":
        return ConfigKey(namespace, group, name)
    if kind == "naming" and name.endswith(".json") and len(name) > len(".json"):
        return ServiceKey(namespace, group, name.removesuffix(".json"))
    return None


class FilesSource:
    """A ``RemoteClient`` over ``ROOT/config`` and ``ROOT/naming``, following changes live."""

    def __init__(self, root: Path, *, debounce_ms: int = 10) -> None:
        self._root = root.absolute()
        self._debounce_ms = debounce_ms
        self._store = MemorySource()
        # Serialises read-then-apply, so an older read never overwrites a newer one.
        self._lock = asyncio.Lock()
        self._problems: dict[str, str] = {}
        self._stop_event = threading.Event()
        self._task: asyncio.Task[None] | None = None

    @property
    def root(self) -> Path:
        return self._root

    def connected(self) -> dict[str, bool]:
        """A local tree is always reachable; a missing root is a problem, reported by ``problems()``."""
        return {"files": True}

    def problems(self) -> dict[str, str]:
        """Files that cannot be used right now (path relative to ROOT → why); their previous content stays."""
        return dict(self._problems)

    # -- lifecycle -----------------------------------------------------------

    async def start(self) -> None:
        if self._task is not None:
            return
        await asyncio.to_thread(self._check_root)
        self._stop_event = threading.Event()
        watching = asyncio.Event()
        task = asyncio.create_task(self._watch(watching), name=f"files-source:{self._root}")
        # The task sets the event and creates the inotify watcher without
        # yielding in between, so once we resume the watcher exists.
        await watching.wait()
        if task.done():
            failure = task.exception()
            raise SourceError(
                f"Cannot watch the files source {self._root}: {failure}; check that it is readable."
            ) from failure
        self._task = task
        try:
            await self._refresh_paths([self._root])
        except BaseException:
            await self.stop()
            raise

    async def stop(self) -> None:
        task, self._task = self._task, None
        await self._store.stop()
        if task is None:
            return
        # The watcher notices the stop event within one step and ends with
        # its thread; cancelling is for a task stuck elsewhere (a restart
        # delay, a slow listener).
        self._stop_event.set()
        done, _ = await asyncio.wait({task}, timeout=_RUST_TIMEOUT_MS / 1000)
        if not done:
            task.cancel()
            await asyncio.wait({task})
        if not task.cancelled() and task.exception() is not None:
            log.error("files.watch_ended_with_error", root=str(self._root), error=str(task.exception()))

    def _check_root(self) -> None:
        if not self._root.exists():
            raise SourceNotFound(
                f"The files source directory {self._root} does not exist; "
                "create it or point the gateway at an existing Nacos-layout tree."
            )
        if not self._root.is_dir():
            raise SourceNotFound(
                f"The files source {self._root} is not a directory; point the gateway at a Nacos-layout tree."
            )
        if not (self._root / "config").is_dir():
            raise SourceError(
                f"The files source {self._root} has no config/ directory; "
                "expected the Nacos layout ROOT/config/<namespace>/<group>/<dataId>."
            )

    async def _watch(self, watching: asyncio.Event) -> None:
        # Kept alive on purpose: an error in one batch or in the watcher must
        # not end live updates for the rest of the process.
        resync = False
        watching.set()
        while True:
            changes = awatch(
                self._root,
                watch_filter=None,
                debounce=self._debounce_ms,
                step=_STEP_MS,
                stop_event=self._stop_event,
                rust_timeout=_RUST_TIMEOUT_MS,
                yield_on_timeout=True,
            )
            try:
                async with contextlib.aclosing(changes):
                    async for batch in changes:
                        paths = {Path(path) for _, path in batch}
                        if resync:
                            # The first yield comes from the new watcher, so
                            # nothing changed since then can be missed.
                            paths.add(self._root)
                            resync = False
                        if paths:
                            await self._refresh_guarded(paths)
                return
            except Exception:
                if self._task is None:
                    raise
                log.exception("files.watch_failed", root=str(self._root))
                await asyncio.sleep(_RESTART_DELAY_S)
                resync = True

    async def _refresh_guarded(self, paths: set[Path]) -> None:
        try:
            await self._refresh_paths(paths)
        except Exception:
            log.exception("files.refresh_failed", root=str(self._root))

    # -- RemoteClient --------------------------------------------------------

    async def list_mcp_servers(self, namespace: str = DEFAULT_NAMESPACE) -> list[McpServerInfo]:
        if is_safe_part(namespace):
            await self._refresh_paths([self._root / "config" / namespace / VERSIONS_GROUP])
        return await self._store.list_mcp_servers(namespace)

    async def get_config(self, key: ConfigKey) -> str | None:
        await self._refresh(configs=[key])
        return await self._store.get_config(key)

    async def listen_config(self, key: ConfigKey, callback: ConfigCallback) -> None:
        await self._store.listen_config(key, callback)

    async def stop_listening(self, key: ConfigKey, callback: ConfigCallback) -> None:
        await self._store.stop_listening(key, callback)

    async def list_instances(self, key: ServiceKey) -> list[ServiceInstance]:
        await self._refresh(services=[key])
        return await self._store.list_instances(key)

    async def subscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        await self._store.subscribe(key, callback)

    async def unsubscribe(self, key: ServiceKey, callback: InstancesCallback) -> None:
        await self._store.unsubscribe(key, callback)

    async def watch_listing(self, callback: ListingCallback) -> None:
        await self._store.watch_listing(callback)

    # -- from paths to keys --------------------------------------------------

    def config_path(self, key: ConfigKey) -> Path:
        """Where the config lives; ``SourceError`` if its key cannot name a file safely."""
        self._check_parts(str(key), key.namespace, key.group, key.data_id)
        return self._root / "config" / key.namespace / key.group / key.data_id

    def service_path(self, key: ServiceKey) -> Path:
        """Where the service's instances live; ``SourceError`` if its key cannot name a file safely."""
        self._check_parts(str(key), key.namespace, key.group, key.service)
        return self._root / "naming" / key.namespace / key.group / f"{key.service}.json"

    def _check_parts(self, name: str, *parts: str) -> None:
        if not all(is_safe_part(part) for part in parts):
            raise SourceError(
                f"{name} cannot be stored under {self._root}: namespace, group and name must be "
                "non-empty and contain no '/'; use Nacos names."
            )

    def _key_for(self, path: Path) -> ConfigKey | ServiceKey | None:
        return key_of(self._root, path)

    def _keys_for(
        self, paths: Iterable[Path], known: Iterable[ConfigKey | ServiceKey]
    ) -> tuple[set[ConfigKey], set[ServiceKey]]:
        """The keys to re-read after these paths changed (runs in a thread: it lists directories).

        A path above key level is a directory that appeared, vanished or was
        renamed: every key known under it and every file now under it.
        """
        configs: set[ConfigKey] = set()
        services: set[ServiceKey] = set()
        known_paths = {self._path_of(key): key for key in known}
        for path in paths:
            try:
                depth = len(path.relative_to(self._root).parts)
            except ValueError:
                continue
            if depth >= _KEY_DEPTH:
                candidates: Iterable[ConfigKey | ServiceKey | None] = [self._key_for(path)]
            else:
                under = [key for known_path, key in known_paths.items() if known_path.is_relative_to(path)]
                candidates = [*under, *(self._key_for(leaf) for leaf in self._leaves(path, depth))]
            for key in candidates:
                if isinstance(key, ConfigKey):
                    configs.add(key)
                elif isinstance(key, ServiceKey):
                    services.add(key)
        return configs, services

    def _path_of(self, key: ConfigKey | ServiceKey) -> Path:
        return self.config_path(key) if isinstance(key, ConfigKey) else self.service_path(key)

    def _leaves(self, directory: Path, depth: int) -> Iterator[Path]:
        try:
            with os.scandir(directory) as entries:
                found = [(Path(entry.path), entry.is_dir()) for entry in entries]
        except OSError:
            return
        for path, is_dir in found:
            if depth + 1 == _KEY_DEPTH:
                yield path
            elif is_dir:
                yield from self._leaves(path, depth + 1)

    # -- reading -------------------------------------------------------------

    async def _refresh_paths(self, paths: Iterable[Path]) -> None:
        known: list[ConfigKey | ServiceKey] = [*self._store.configs(), *self._store.services()]
        configs, services = await asyncio.to_thread(self._keys_for, list(paths), known)
        if configs or services:
            await self._refresh(configs=configs, services=services)

    async def _refresh(self, configs: Iterable[ConfigKey] = (), services: Iterable[ServiceKey] = ()) -> None:
        """Re-read these keys from disk and apply what changed to the store (which notifies)."""
        keys: list[ConfigKey | ServiceKey] = [*configs, *services]
        paths = {key: self._path_of(key) for key in keys}
        async with self._lock:
            reads = await asyncio.to_thread(_read_files, paths)
            known = {*self._store.configs(), *self._store.services()}
            vanished = {key: path for key, path in paths.items() if reads[key] is None and key in known}
            if vanished:
                await asyncio.sleep(self._debounce_ms / 1000)
                reads.update(await asyncio.to_thread(_read_files, vanished))
            config_changes: dict[ConfigKey, str | None] = {}
            service_changes: dict[ServiceKey, Sequence[ServiceInstance] | None] = {}
            for key, read in reads.items():
                if isinstance(key, ConfigKey):
                    config_changes.update(self._config_change(key, paths[key], read))
                else:
                    service_changes.update(self._service_change(key, paths[key], read))
            await self._store.apply_changes(configs=config_changes, services=service_changes)

    def _config_change(self, key: ConfigKey, path: Path, read: _FileRead) -> dict[ConfigKey, str | None]:
        if read is None:
            self._clear_problem(path)
            return {key: None}
        if isinstance(read, OSError):
            self._problem(path, f"cannot be read: {read.strerror or read}", "files.config_unreadable")
            return {}
        if not read:
            self._problem(path, EMPTY_FILE, "files.config_empty", quiet=True)
            return {}
        try:
            content = decode_config(read)
        except ValueError as exc:
            self._problem(path, str(exc), "files.config_invalid")
            return {}
        self._clear_problem(path)
        return {key: content}

    def _service_change(
        self, key: ServiceKey, path: Path, read: _FileRead
    ) -> dict[ServiceKey, Sequence[ServiceInstance] | None]:
        if read is None:
            self._clear_problem(path)
            return {key: None}
        if isinstance(read, OSError):
            self._problem(path, f"cannot be read: {read.strerror or read}", "files.instances_invalid")
            return {}
        if not read.strip():
            self._problem(path, EMPTY_FILE, "files.instances_empty", quiet=True)
            return {}
        try:
            parsed = decode_instances(key, read)
        except ValueError as exc:
            self._problem(path, str(exc), "files.instances_invalid")
            return {}
        if parsed.dropped:
            self._problem(path, "; ".join(parsed.dropped), "files.instances_dropped")
        else:
            self._clear_problem(path)
        return {key: parsed.instances}

    def _problem(self, path: Path, error: str, event: str, *, quiet: bool = False) -> None:
        name = str(path.relative_to(self._root))
        if self._problems.get(name) != error and not quiet:
            log.warning(event, path=name, error=error)
        self._problems[name] = error

    def _clear_problem(self, path: Path) -> None:
        self._problems.pop(str(path.relative_to(self._root)), None)


def _read_files(paths: Mapping[ConfigKey | ServiceKey, Path]) -> dict[ConfigKey | ServiceKey, _FileRead]:
    """Each file's bytes, ``None`` if it is not there, or the error that kept it from being read."""
    reads: dict[ConfigKey | ServiceKey, _FileRead] = {}
    for key, path in paths.items():
        try:
            reads[key] = path.read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            reads[key] = None
        except OSError as exc:
            reads[key] = exc
    return reads
