"""``mcpgw publish``: one human-friendly document per MCP server in, the three Nacos configs out.

Operations: publish a version (the latest by default, or a draft that leaves
``latestPublishedVersion`` alone), switch ``latestPublishedVersion``, delete
one version, delete a server.  Each is planned against what the target holds
now, so publishing identical content again writes nothing and says so.

This module is the planner, ``Publisher``.  What an operator writes, and how
it becomes the three Nacos documents and is checked before any write, is
``adapter.publish_documents``; where the configs go is ``adapter.publish_targets``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from mcpgw.adapter.publish_documents import (
    LoadedDocument,
    PublishError,
    _dump,
    check_release,
    default_server_id,
    drafted_versions,
    published_versions,
    render_server_spec,
    render_tools_spec,
    same_release,
)
from mcpgw.adapter.publish_targets import _ADMIN_VERSION_DELETE, Change, PublishTarget, Write
from mcpgw.converter.converter import credential_refs
from mcpgw.remote.base import DEFAULT_NAMESPACE, server_spec_key, tools_spec_key, versions_key


def utc_now() -> str:
    """A release date as Nacos writes it."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


Action = Literal["published", "drafted", "unchanged", "latest", "deleted-version", "deleted"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """What happened (or, in a dry run, would happen) to one server."""

    server: str
    action: Action
    version: str | None
    message: str
    writes: tuple[Write, ...] = field(default=())
    warnings: tuple[str, ...] = field(default=())
    """Things that will keep the gateway from serving the server, e.g. a referenced credential that is missing."""

    @property
    def changed(self) -> bool:
        return self.action != "unchanged"


@dataclass(frozen=True, slots=True)
class _Current:
    server_id: str
    versions: dict[str, Any]

    @property
    def latest(self) -> str | None:
        value = self.versions.get("latestPublishedVersion")
        return str(value) if value else None

    def detail(self, version: str) -> dict[str, Any] | None:
        for detail in self.versions.get("versionDetails") or []:
            if isinstance(detail, dict) and detail.get("version") == version:
                return detail
        return None

    @property
    def version_names(self) -> list[str]:
        return [str(d.get("version")) for d in self.versions.get("versionDetails") or [] if isinstance(d, dict)]


def _json_object(content: str | None, what: str) -> dict[str, Any] | None:
    if content is None or not content.strip():
        return None
    try:
        value = json.loads(content)
    except json.JSONDecodeError as exc:
        raise PublishError(f"the stored {what} is not valid JSON ({exc.msg}); fix it or delete the server") from exc
    if not isinstance(value, dict):
        raise PublishError(f"the stored {what} is not a JSON object; fix it or delete the server")
    return value


class Publisher:
    """Plans each operation against what the target holds now, checks it, then applies it (unless a dry run)."""

    def __init__(
        self,
        target: PublishTarget,
        *,
        namespace: str = DEFAULT_NAMESPACE,
        dry_run: bool = False,
        clock: Callable[[], str] = utc_now,
    ) -> None:
        self.target = target
        self.namespace = namespace or DEFAULT_NAMESPACE
        self.dry_run = dry_run
        self.clock = clock

    def _say(self, done: str, would: str) -> str:
        return would if self.dry_run else done

    async def _current(self, name: str, pinned_id: str | None = None) -> _Current | None:
        server_id = await self.target.find(self.namespace, name, pinned_id)
        if server_id is None:
            return None
        versions = _json_object(
            await self.target.read(versions_key(server_id, self.namespace)), f"versions file of {name}"
        )
        if versions is None:
            return None
        if versions.get("name") != name:
            raise PublishError(
                f"id {server_id} already belongs to server {versions.get('name')!r} in namespace {self.namespace}; "
                f"remove server.id from the document of {name!r} or choose another"
            )
        return _Current(server_id, versions)

    async def _stored(
        self, server_id: str, version: str, name: str
    ) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        spec = _json_object(
            await self.target.read(server_spec_key(server_id, version, self.namespace)),
            f"server spec of {name} {version}",
        )
        tools = _json_object(
            await self.target.read(tools_spec_key(server_id, version, self.namespace)),
            f"tools spec of {name} {version}",
        )
        return spec, tools

    async def _apply(self, change: Change) -> None:
        if not self.dry_run:
            await self.target.apply(change)

    async def publish_all(
        self,
        documents: Sequence[LoadedDocument],
        *,
        draft: bool = False,
        on_outcome: Callable[[Outcome], None] | None = None,
    ) -> list[Outcome]:
        """Publish every document in order (each already checked by ``load_documents``).

        What the target cannot take is refused for all documents before the first write;
        ``on_outcome`` hears of each server as soon as it is done.
        """
        for document in documents:
            why = self.target.limitation(document.document, self.namespace)
            if why is not None:
                raise PublishError(f"{document.file}: {why}")
        outcomes = []
        for document in documents:
            outcome = await self.publish(document, draft=draft)
            if on_outcome is not None:
                on_outcome(outcome)
            outcomes.append(outcome)
        return outcomes

    async def publish(self, loaded: LoadedDocument, *, draft: bool = False) -> Outcome:
        doc = loaded.document
        name, version = doc.server.name, doc.server.version
        draft = draft or doc.draft
        why = self.target.limitation(doc, self.namespace)
        if why is not None:
            raise PublishError(f"{loaded.file}: {why}")
        current = await self._current(name, doc.server.id)
        stored_spec: dict[str, Any] | None = None
        stored_tools: dict[str, Any] | None = None
        if current is None:
            if draft and not self.target.creates_drafts:
                raise PublishError(
                    f"{name} does not exist yet and Nacos publishes a server's first version at once: "
                    "publish it without --draft first"
                )
            server_id = doc.server.id or default_server_id(self.namespace, name)
        else:
            server_id = current.server_id
            if doc.server.id and doc.server.id != server_id:
                raise PublishError(
                    f"{name} exists with id {server_id} but {loaded.file} pins server.id {doc.server.id}; "
                    "remove server.id or delete the server first"
                )
            stored_spec, stored_tools = await self._stored(server_id, version, name)
        release = None if draft else self.clock()
        spec = render_server_spec(doc, server_id=server_id, namespace=self.namespace, release_date=release)
        tools = render_tools_spec(doc)
        same = same_release(stored_spec, stored_tools, spec, tools)
        detail = current.detail(version) if current else None
        if draft:
            if current is not None and current.latest == version:
                raise PublishError(
                    f"{version} is the published latest version of {name}: a draft needs a new version number "
                    "(or publish it without --draft)"
                )
            if same and detail is not None:
                return Outcome(name, "unchanged", version, f"unchanged {name} {version} (draft)")
            versions = drafted_versions(current.versions if current else None, spec, version)
        else:
            if same and detail is not None and detail.get("release_date") and current and current.latest == version:
                return Outcome(name, "unchanged", version, f"unchanged {name} {version}")
            versions = published_versions(current.versions if current else None, spec, version, str(release))
        writes: list[Write] = []
        if not same:
            writes += [
                Write(server_spec_key(server_id, version, self.namespace), _dump(spec)),
                Write(tools_spec_key(server_id, version, self.namespace), _dump(tools)),
            ]
        writes.append(Write(versions_key(server_id, self.namespace), _dump(versions)))
        change = Change(
            "publish",
            self.namespace,
            server_id,
            name,
            version,
            tuple(writes),
            create=current is None,
            latest=not draft,
            server_spec=spec,
            tools_spec=tools,
        )
        await self._apply(change)
        if draft:
            latest = current.latest if current else None
            stays = f"latest stays {latest}" if latest else "nothing published yet"
            message = self._say(
                f"published {name} {version} as a draft ({stays})",
                f"would publish {name} {version} as a draft ({stays})",
            )
            warnings = await self._credential_warnings(name, server_id, version, versions, spec, tools)
            return Outcome(name, "drafted", version, message, change.writes, warnings)
        message = self._say(f"published {name} {version} (latest)", f"would publish {name} {version} (latest)")
        warnings = await self._credential_warnings(name, server_id, version, versions, spec, tools)
        return Outcome(name, "published", version, message, change.writes, warnings)

    async def _credential_warnings(
        self,
        name: str,
        server_id: str,
        version: str,
        versions: Mapping[str, Any],
        spec: Mapping[str, Any],
        tools: Mapping[str, Any],
    ) -> tuple[str, ...]:
        """Referenced configs that are missing, or whose content the references cannot resolve against.

        Warnings, not errors: the operator may create or fix the config after publishing.
        """
        keys = sorted(credential_refs(_dump(tools), self.namespace))
        if not keys:
            return ()
        contents = {key: await self.target.read(key) for key in keys}
        missing = [
            f"{name} refers to config {key.data_id} (group {key.group}), which does not exist in namespace "
            f"{self.namespace}: the gateway will not serve {name} until it does"
            for key in keys
            if not contents[key]
        ]
        if missing:
            return tuple(missing)
        problems = check_release(
            versions, spec, tools, server_id=server_id, version=version, namespace=self.namespace, credentials=contents
        )
        return tuple(
            f"{name} {version}: {problem.reason} (at {problem.path}{f', tool {problem.tool}' if problem.tool else ''}"
            f"): the gateway will not serve {name} {version} until it is fixed"
            for problem in problems
        )

    async def _require(self, name: str) -> _Current:
        current = await self._current(name)
        if current is None:
            raise PublishError(f"there is no MCP server named {name!r} in namespace {self.namespace}")
        return current

    def _require_version(self, current: _Current, name: str, version: str) -> dict[str, Any]:
        detail = current.detail(version)
        if detail is None:
            known = ", ".join(current.version_names) or "none"
            raise PublishError(f"{name} has no version {version!r} (its versions: {known})")
        return detail

    async def set_latest(self, name: str, version: str) -> Outcome:
        """Serve ``version``: release it (if it was a draft) and point ``latestPublishedVersion`` at it."""
        current = await self._require(name)
        detail = self._require_version(current, name, version)
        if current.latest == version and detail.get("release_date"):
            return Outcome(name, "unchanged", version, f"unchanged {name}: {version} is already the latest")
        spec, tools = await self._stored(current.server_id, version, name)
        if spec is None or tools is None:
            raise PublishError(
                f"{name} {version} cannot be made the latest: its server or tools spec is missing; publish it again"
            )
        versions = published_versions(current.versions, dict(spec, id=current.server_id), version, self.clock())
        problems = check_release(
            versions, spec, tools, server_id=current.server_id, version=version, namespace=self.namespace
        )
        if problems:
            raise PublishError(f"{name} {version} cannot be served, so it stays unpublished: {problems[0].describe()}")
        change = Change(
            "set-latest",
            self.namespace,
            current.server_id,
            name,
            version,
            (Write(versions_key(current.server_id, self.namespace), _dump(versions)),),
            latest=True,
            server_spec=spec,
            tools_spec=tools,
        )
        await self._apply(change)
        message = self._say(f"{name}: latest version is now {version}", f"{name}: would make {version} the latest")
        return Outcome(name, "latest", version, message, change.writes)

    async def delete_version(self, name: str, version: str) -> Outcome:
        """Remove one version that is not being served."""
        if not self.target.deletes_single_versions:
            raise PublishError(_ADMIN_VERSION_DELETE)
        current = await self._require(name)
        self._require_version(current, name, version)
        if current.latest == version:
            raise PublishError(
                f"{version} is the latest published version of {name} and is being served; make another version "
                "the latest with --set-latest first, or delete the whole server with --delete"
            )
        remaining = [d for d in current.versions.get("versionDetails") or [] if d.get("version") != version]
        spec_writes = (
            Write(server_spec_key(current.server_id, version, self.namespace), None),
            Write(tools_spec_key(current.server_id, version, self.namespace), None),
        )
        versions_file = versions_key(current.server_id, self.namespace)
        # The versions file stops naming the version before its specs go.
        if remaining:
            first = Write(versions_file, _dump(dict(current.versions, versionDetails=remaining)))
        else:
            first = Write(versions_file, None)
        change = Change("delete-version", self.namespace, current.server_id, name, version, (first, *spec_writes))
        await self._apply(change)
        gone = "" if remaining else "; it was the only version, so the server is gone"
        message = self._say(f"deleted {name} {version}{gone}", f"would delete {name} {version}{gone}")
        return Outcome(name, "deleted-version", version, message, change.writes)

    async def delete(self, name: str) -> Outcome:
        """Remove the server and every version of it; a server that is not there is no error."""
        current = await self._current(name)
        if current is None:
            return Outcome(name, "unchanged", None, f"unchanged {name}: no such server in namespace {self.namespace}")
        writes = [Write(versions_key(current.server_id, self.namespace), None)]
        for version in current.version_names:
            writes += [
                Write(server_spec_key(current.server_id, version, self.namespace), None),
                Write(tools_spec_key(current.server_id, version, self.namespace), None),
            ]
        change = Change("delete", self.namespace, current.server_id, name, None, tuple(writes))
        await self._apply(change)
        count = len(current.version_names)
        message = self._say(f"deleted {name} ({count} version(s))", f"would delete {name} ({count} version(s))")
        return Outcome(name, "deleted", None, message, change.writes)
