"""ConfigConverter: one server's aggregated snapshot in, gateway models (or a precise error) out.

Pure and deterministic: no I/O, no clock, no randomness; the same snapshot
gives equal models whatever the order of its inputs.  It raises only
``ConversionError``, which names server, version, file (dataId), JSON path and
reason, because that is what an operator needs to fix a spec.  Everything a
call needs is compiled here (argument validators, parsed templates) so a bad
template is rejected when the config arrives, not when a user calls the tool.
"""

from __future__ import annotations

import hashlib
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from mcpgw.converter import credentials as refs
from mcpgw.converter.arguments import ArgumentValidator
from mcpgw.converter.models import ServerSpec, ToolDefinition, ToolsSpec, VersionsFile
from mcpgw.converter.rest import compile_rest_binding
from mcpgw.converter.servable import check_tool, shown_name
from mcpgw.registry.errors import ConversionError
from mcpgw.registry.models import BackendKind, Cluster, Instance, Route, ServerModels, Tool, sanitize_name
from mcpgw.remote.base import (
    ConfigKey,
    ServiceInstance,
    ServiceKey,
    instance_problem,
    server_spec_key,
    tools_spec_key,
    versions_key,
)
from mcpgw.remote.jsondoc import JsonDocumentError, check_value, load_json

TEMPLATE_KIND = "json-go-template"
REST_PROTOCOLS = frozenset({"http", "https"})
MCP_PROTOCOLS = frozenset({"mcp-sse", "mcp-streamable"})
UNSERVABLE_PROTOCOLS = frozenset({"stdio", "dubbo"})


@dataclass(frozen=True, slots=True)
class ServerSnapshot:
    """Everything the listener gathered for one server, at one moment."""

    server_id: str
    namespace: str
    versions: str
    server_spec: str | None = None
    tools_spec: str | None = None
    instances: tuple[ServiceInstance, ...] | None = None
    credentials: Mapping[ConfigKey, str | None] = field(default_factory=lambda: MappingProxyType({}))
    """The content of every config the tools spec references (``None``: it does not exist)."""
    credentials_unread: bool = False
    """Checking offline (``validate`` of a lone file, ``publish``): the referenced configs were not read, so
    only where references stand is checked, not what they resolve to."""
    backend_tools: tuple[Mapping[str, Any], ...] | None = None
    """What a proxied MCP backend answered to ``tools/list`` (MCP ``Tool`` objects as JSON); only
    used when the tools spec lists no tools.  ``None``: not fetched (yet)."""


@dataclass(frozen=True, slots=True)
class DisabledServer:
    """The versions file says ``enabled: false``: serve nothing of it."""

    server_id: str
    name: str
    version: str | None


def _pydantic_path(loc: Iterable[int | str]) -> str:
    path = "$"
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


M = TypeVar("M", bound=BaseModel)


Problems = list[ConversionError] | None
"""Where ``ConfigConverter.check`` collects every problem; ``None`` (serving) stops at the first."""


def _load_object(content: str, *, where: dict[str, str], what: str, advice: str) -> dict[str, Any]:
    try:
        raw = load_json(content)
    except JsonDocumentError as exc:
        said = f"{what} is {exc.reason}" if exc.reason.startswith("not valid JSON") else f"{what}: {exc.reason}"
        raise ConversionError(f"{said}; {advice}", path=exc.path, **where) from exc
    if not isinstance(raw, dict):
        raise ConversionError(f"{what} must be a JSON object, got {type(raw).__name__}", **where)
    return raw


def _validated(model: type[M], raw: Any, *, where: Mapping[str, str], what: str, problems: Problems = None) -> M:
    try:
        return model.model_validate(raw)
    except ValidationError as exc:
        # (path, message) of each problem; a validator's own sentence without pydantic's "Value error, ".
        found = [(_pydantic_path(e["loc"]), e["msg"].removeprefix("Value error, ")) for e in exc.errors()]
        if problems is not None:
            problems.extend(ConversionError(f"{what}: {msg}", path=path, **where) for path, msg in found[1:])
        more = f" (and {len(found) - 1} more problems)" if len(found) > 1 and problems is None else ""
        path, msg = found[0]
        raise ConversionError(f"{what}: {msg}{more}", path=path, **where) from exc


def _parse(model: type[M], content: str, *, where: dict[str, str], what: str, problems: Problems = None) -> M:
    raw = _load_object(content, where=where, what=what, advice="fix the file and publish it again")
    return _validated(model, raw, where=where, what=what, problems=problems)


def parse_versions(server_id: str, namespace: str, content: str, *, problems: Problems = None) -> VersionsFile:
    where = {"server_id": server_id, "file": versions_key(server_id, namespace).data_id}
    versions = _parse(VersionsFile, content, where=where, what="versions file", problems=problems)
    if versions.id != server_id:
        raise ConversionError(
            f"versions file says id {versions.id!r} but its dataId belongs to server {server_id!r}",
            path="$.id",
            **where,
        )
    return versions


def select_version(versions: VersionsFile, namespace: str) -> str | None:
    """The version to serve: ``latestPublishedVersion``, never a draft.

    ``None`` when nothing was ever published (only drafts): not an error, just
    nothing to serve yet.
    """
    latest = versions.latestPublishedVersion
    if not latest:
        return None
    detail = next((d for d in versions.versionDetails if d.version == latest), None)
    where = {"server_id": versions.id, "file": versions_key(versions.id, namespace).data_id}
    if detail is None:
        raise ConversionError(
            f"latestPublishedVersion {latest!r} is not listed in versionDetails",
            path="$.latestPublishedVersion",
            **where,
        )
    if not detail.published:
        raise ConversionError(
            f"latestPublishedVersion {latest!r} is a draft (it has no release_date); "
            "publish it or point latestPublishedVersion at a released version",
            path="$.latestPublishedVersion",
            **where,
        )
    return latest


def parse_server_spec(
    server_id: str, version: str, namespace: str, content: str, *, problems: Problems = None
) -> ServerSpec:
    where = {
        "server_id": server_id,
        "version": version,
        "file": server_spec_key(server_id, version, namespace).data_id,
    }
    spec = _parse(ServerSpec, content, where=where, what="server spec", problems=problems)
    if spec.id != server_id:
        raise ConversionError(f"server spec says id {spec.id!r}", path="$.id", **where)
    if spec.versionDetail.version != version:
        raise ConversionError(
            f"server spec is for version {spec.versionDetail.version!r}, expected {version!r}",
            path="$.versionDetail.version",
            **where,
        )
    return spec


def service_key_of(spec: ServerSpec) -> ServiceKey | None:
    ref = spec.remoteServerConfig.serviceRef if spec.remoteServerConfig else None
    if ref is None:
        return None
    return ServiceKey(ref.namespaceId or "public", ref.groupName or "DEFAULT_GROUP", ref.serviceName)


def credential_refs(content: str, namespace: str) -> frozenset[ConfigKey]:
    """Every ``${nacos.<dataId>/<group>}`` in a tools spec, as config keys: the configs to fetch and watch."""
    return frozenset(ConfigKey(namespace, group, data_id) for data_id, group in refs.references_in(content))


def credential_name(key: ConfigKey) -> str:
    """The name under ``.config.credentials`` a referenced config is known by."""
    return refs.credential_name(key.data_id, key.group)


def _canonical(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode())
        h.update(b"\x00")
    return h.hexdigest()[:16]


def _instances(raw: Iterable[ServiceInstance], scheme: str) -> tuple[tuple[Instance, ...], tuple[str, ...]]:
    """The cluster's instances, and why each unusable one was dropped.

    Sources check instances already; this is the check no source can skip
    (the host goes into the URL every call is sent to, and the weight into
    every balancer and every JSON answer that shows it).
    """
    by_id: dict[str, Instance] = {}
    dropped: list[str] = []
    for inst in raw:
        problem = instance_problem(inst.ip, inst.port, inst.weight)
        if problem is not None:
            dropped.append(f"instance {inst.ip!r}:{inst.port!r} of the serviceRef dropped: {problem}")
            continue
        inst_scheme = inst.metadata.get("protocol", scheme)
        if inst_scheme not in ("http", "https"):
            inst_scheme = scheme
        item = Instance(
            id=f"{inst.ip}:{inst.port}",
            host=inst.ip,
            port=inst.port,
            weight=float(inst.weight),
            healthy=inst.healthy,
            enabled=inst.enabled,
            scheme=inst_scheme,
            metadata=MappingProxyType(dict(inst.metadata)),
        )
        by_id[item.id] = item
    return tuple(by_id[k] for k in sorted(by_id)), tuple(dropped)


def backend_scheme(spec: ServerSpec) -> str:
    """``http`` or ``https`` towards the server's instances (an instance's ``metadata.protocol`` still wins).

    Nacos keeps the backend's transport in ``serviceRef.transportProtocol``: its console writes it for every
    remote server, and for an MCP server given by an ``https://`` URL it is the only place that says so
    (``protocol`` is then ``mcp-sse`` or ``mcp-streamable``).  A REST server's ``protocol`` says it too; when
    the two disagree, https wins: a credential meant for TLS must not go out in clear text.
    """
    ref = spec.remoteServerConfig.serviceRef if spec.remoteServerConfig else None
    transport = (ref.transportProtocol or "").strip().lower() if ref is not None else ""
    return "https" if "https" in (transport, spec.protocol) else "http"


def cluster_name(server_id: str, service: ServiceKey) -> str:
    """Stable per server and serviceRef, unique across servers (a peer keyed clusters by tool name)."""
    return ".".join(
        (server_id, sanitize_name(service.namespace), sanitize_name(service.group), sanitize_name(service.service))
    )


BACKEND_TOOLS_FILE = "tools/list of the backend"
"""What errors in a backend's tool list name as their file: the listing, not a Nacos config."""


def _backend_definitions(
    listing: Iterable[Mapping[str, Any]], where: Mapping[str, str]
) -> list[tuple[str, ToolDefinition]]:
    """The backend's ``tools/list`` answer as tool definitions, checked like a tools spec's.

    The answer is another program's output: a malformed entry is a conversion
    error of the server (last-known-good keeps serving), never a crash.
    """
    definitions: list[tuple[str, ToolDefinition]] = []
    for index, entry in enumerate(listing):
        path = f"$.tools[{index}]"
        try:
            check_value(entry)
        except JsonDocumentError as exc:
            raise ConversionError(
                f"the backend listed a tool that is not valid: {exc.reason}",
                path=exc.path.replace("$", path, 1),
                **where,
            ) from exc
        try:
            definition = ToolDefinition.model_validate(dict(entry))
        except ValidationError as exc:
            first = exc.errors()[0]
            raise ConversionError(
                f"the backend listed a tool that is not valid: {first['msg']}",
                path=_pydantic_path(first["loc"]).replace("$", path, 1),
                **where,
            ) from exc
        definitions.append((path, definition))
    return definitions


_VALIDATOR_CACHE_SIZE = 250_000
"""Above the distinct schemas of 10,000 servers x 10 tools: a miss costs a meta-schema check (~0.5 ms)."""
_validators: OrderedDict[str, ArgumentValidator] = OrderedDict()


def argument_validator(schema: Mapping[str, Any]) -> ArgumentValidator:
    """A compiled validator per distinct schema, memoised.

    Checking a schema against the 2020-12 meta-schema costs ~0.5 ms, most of a
    server's conversion; an update usually leaves its tools' schemas as they
    were, so memoising keeps one server's change in the sub-millisecond range.
    Validators are immutable, so sharing them is safe.
    """
    key = _canonical(schema)
    found = _validators.get(key)
    if found is not None:
        _validators.move_to_end(key)
        return found
    validator = ArgumentValidator(schema)
    _validators[key] = validator
    if len(_validators) > _VALIDATOR_CACHE_SIZE:
        _validators.popitem(last=False)
    return validator


@dataclass(frozen=True, slots=True)
class _ToolsOf:
    """What every tool of one server is converted with."""

    spec: ToolsSpec
    meta_raw: Mapping[str, Any]
    schemes: list[dict[str, Any]]
    schemes_raw: Any
    route: Route
    cluster: Cluster | None
    backend: BackendKind
    where: dict[str, str]


class ConfigConverter:
    """Turns one server's snapshot into ``ServerModels``, ``DisabledServer`` or a ``ConversionError``.

    Stateless: one instance may be shared by every listener.
    """

    def convert(self, snap: ServerSnapshot) -> ServerModels | DisabledServer | None:
        """``None`` when the server has no published version yet."""
        return self._convert(snap, None)

    def check(self, snap: ServerSnapshot) -> list[ConversionError]:
        """Every problem ``convert`` would find, not just the first (``mcpgw validate``).

        The same code runs: a problem that stops ``convert`` stops here too,
        after the problems found so far; problems of single tools (or of the
        fields of one document) are collected and the next one is checked.
        """
        problems: list[ConversionError] = []
        try:
            self._convert(snap, problems)
        except ConversionError as exc:
            problems.append(exc)
        return problems

    def _convert(self, snap: ServerSnapshot, problems: Problems) -> ServerModels | DisabledServer | None:
        versions = parse_versions(snap.server_id, snap.namespace, snap.versions, problems=problems)
        if not versions.enabled:
            return DisabledServer(snap.server_id, versions.name, versions.latestPublishedVersion)
        version = select_version(versions, snap.namespace)
        if version is None:
            return None
        spec_file = server_spec_key(snap.server_id, version, snap.namespace).data_id
        tools_file = tools_spec_key(snap.server_id, version, snap.namespace).data_id
        if snap.server_spec is None:
            raise ConversionError(
                "server spec not found; it may still be being written",
                server_id=snap.server_id,
                version=version,
                file=spec_file,
            )
        spec = parse_server_spec(snap.server_id, version, snap.namespace, snap.server_spec, problems=problems)
        if not spec.enabled:
            return DisabledServer(snap.server_id, spec.name, version)
        spec_where = {"server_id": snap.server_id, "version": version, "file": spec_file}
        protocol = spec.protocol
        if protocol in UNSERVABLE_PROTOCOLS:
            raise ConversionError(
                f"protocol {protocol!r} runs on the client's machine and cannot be served by a remote "
                "gateway; publish it with protocol http, https, mcp-sse or mcp-streamable",
                path="$.protocol",
                **spec_where,
            )
        if protocol not in REST_PROTOCOLS and protocol not in MCP_PROTOCOLS:
            raise ConversionError(
                f"unknown protocol {protocol!r}; expected one of http, https, mcp-sse, mcp-streamable",
                path="$.protocol",
                **spec_where,
            )
        backend: BackendKind = "rest" if protocol in REST_PROTOCOLS else protocol  # type: ignore[assignment]
        scheme = backend_scheme(spec)

        service = service_key_of(spec)
        cluster: Cluster | None = None
        dropped: tuple[str, ...] = ()
        if service is not None:
            instances, dropped = _instances(snap.instances or (), scheme)
            cluster = Cluster(name=cluster_name(snap.server_id, service), service=str(service), instances=instances)
        elif backend != "rest":
            raise ConversionError(
                "a proxied MCP server needs remoteServerConfig.serviceRef naming its backend service",
                path="$.remoteServerConfig.serviceRef",
                **spec_where,
            )
        export_path = spec.remoteServerConfig.exportPath if spec.remoteServerConfig else ""
        if export_path and not export_path.startswith("/"):
            export_path = "/" + export_path
        route = Route(
            name=sanitize_name(spec.name),
            server_id=snap.server_id,
            server_name=spec.name,
            backend=backend,
            cluster=cluster.name if cluster else None,
            export_path=export_path or ("/mcp" if backend == "mcp-streamable" else "/sse"),
        )

        tools_where = {"server_id": snap.server_id, "version": version, "file": tools_file}
        if snap.tools_spec is None:
            raise ConversionError("tools spec not found; it may still be being written", **tools_where)
        tools_raw = self._tools_json(snap.tools_spec, tools_where)
        config = self._credentials(snap, tools_raw, tools_where)
        tools_spec = _validated(ToolsSpec, tools_raw, where=tools_where, what="tools spec", problems=problems)
        tools_from_backend = backend != "rest" and not tools_spec.tools
        definitions: list[tuple[str, ToolDefinition]] = [
            (f"$.tools[{index}]", definition) for index, definition in enumerate(tools_spec.tools)
        ]
        definitions_where = tools_where
        if tools_from_backend and snap.backend_tools is not None:
            definitions_where = {**tools_where, "file": BACKEND_TOOLS_FILE}
            definitions = _backend_definitions(snap.backend_tools, definitions_where)
        tools = self._tools(definitions, tools_spec, tools_raw, route, cluster, backend, definitions_where, problems)
        if not snap.credentials_unread:
            self._check_credential_uses(tools, config["credentials"], tools_where)
        # Only what is served counts: a draft added to the versions file, or reformatted JSON, is no change.
        fingerprint = _digest(
            version,
            _canonical(spec.model_dump(by_alias=True)),
            ",".join(t.fingerprint for t in tools),
            _canonical(sorted(config["credentials"].items())),
            _canonical([(i.id, i.weight, i.healthy, i.enabled, i.scheme, sorted(i.metadata.items()))
                        for i in cluster.instances])
            if cluster
            else "",
            # Only when there are any: the fingerprints of servers without dropped instances stay as they were.
            *((_canonical(list(dropped)),) if dropped else ()),
        )
        return ServerModels(
            server_id=snap.server_id,
            name=spec.name,
            version=version,
            protocol=protocol,
            front_protocol=spec.frontProtocol,
            description=spec.description,
            route=route,
            cluster=cluster,
            tools=tools,
            fingerprint=fingerprint,
            template_config=MappingProxyType(config),
            tools_from_backend=tools_from_backend,
            warnings=dropped,
        )

    @staticmethod
    def _tools_json(content: str, where: dict[str, str]) -> dict[str, Any]:
        raw = _load_object(content, where=where, what="tools spec",
                           advice="the previous version keeps serving until it is fixed")
        if raw.get("encryptData"):
            raise ConversionError(
                "tools spec is encrypted (encryptData); mcpgw cannot decrypt Nacos-encrypted specs, "
                "publish the tools spec unencrypted",
                path="$.encryptData",
                **where,
            )
        return raw

    @staticmethod
    def _credentials(snap: ServerSnapshot, tools_raw: dict[str, Any], where: dict[str, str]) -> dict[str, Any]:
        """``{"credentials": {name: content}}`` for every reference, each checked for where it stands."""
        credentials: dict[str, Any] = {}
        # Most specs reference no credential: skip the walk when the text cannot hold a reference
        # (a JSON \\u escape could spell one without the literal "${nacos.", so that case walks).
        text_of_spec = snap.tools_spec or ""
        if refs.REFERENCE_START not in text_of_spec and "\\u" not in text_of_spec:
            return {"credentials": credentials}
        named: dict[str, ConfigKey] = {}
        for site in refs.sites(tools_raw):
            located = {"path": site.path, "tool": site.tool, **where}
            for found in refs.scan(site.text):
                if isinstance(found, refs.Misspelt):
                    raise ConversionError(
                        f"text starting with {refs.REFERENCE_START} is not a credential reference; write "
                        f"{refs.REFERENCE_FORM}, dataId and group in letters, digits and '-', '_', '.', ':'",
                        **located,
                    )
                if not site.allowed:
                    raise ConversionError(
                        f"the credential reference {found.text} cannot be used here: this field {site.why_not}; "
                        "a credential may only be used in a request template (requestTemplate url, header "
                        "values, body, security credential) or a security scheme's defaultCredential",
                        **located,
                    )
                key = ConfigKey(snap.namespace, found.group, found.data_id)
                name = credential_name(key)
                other = named.setdefault(name, key)
                if other != key:
                    raise ConversionError(
                        f"the credential references {refs.reference_text(other.data_id, other.group)} and "
                        f"{found.text} are both known as .config.credentials.{name}; rename one of the configs",
                        **located,
                    )
                if snap.credentials_unread:
                    credentials[name] = "not read"  # a stand-in: offline checks render nothing
                    continue
                content = snap.credentials.get(key)
                what = f"referenced config {found.data_id} (group {found.group})"
                if not content:
                    raise ConversionError(
                        f"{what} does not exist; create it or remove the reference", **located
                    )
                try:
                    credentials[name] = refs.parse_content(content)
                except refs.ContentError as exc:
                    raise ConversionError(f"{what} {exc}; fix the config or remove the reference", **located) from exc
        return {"credentials": credentials}

    @staticmethod
    def _check_credential_uses(tools: Iterable[Tool], contents: Mapping[str, Any], where: dict[str, str]) -> None:
        """Every reference resolves to what its field needs: no ``<no value>`` ever reaches a backend."""
        for tool in tools:
            binding = tool.binding
            for site in binding.credential_sites if binding is not None else ():
                use = site.use
                if use.name not in contents:
                    why: str | None = "was not read"
                else:
                    value = contents[use.name]
                    why = refs.follow(value, use.fields)
                    if why is None and site.whole_value and not refs.is_plain(value):
                        why = (
                            f"holds {refs.json_type(value)}, but a field that is exactly one reference needs a "
                            f"plain value: write {{{{ {use.text}.<field> }}}} to send one of its fields"
                        )
                if why is not None:
                    raise ConversionError(
                        f"{use.text} cannot be resolved: the config {why}; fix the template or the config",
                        path=site.path,
                        tool=tool.name,
                        **where,
                    )

    @staticmethod
    def _tools(
        definitions: Iterable[tuple[str, ToolDefinition]],
        spec: ToolsSpec,
        raw: Mapping[str, Any],
        route: Route,
        cluster: Cluster | None,
        backend: BackendKind,
        where: dict[str, str],
        problems: Problems = None,
    ) -> tuple[Tool, ...]:
        seen: set[str] = set()
        tools: list[Tool] = []
        server = _ToolsOf(
            spec=spec,
            meta_raw=raw.get("toolsMeta") or {},
            schemes=[s.model_dump(by_alias=True, exclude_none=True) for s in spec.securitySchemes],
            schemes_raw=raw.get("securitySchemes"),
            route=route,
            cluster=cluster,
            backend=backend,
            where=where,
        )
        for path, definition in definitions:
            try:
                tool = ConfigConverter._tool(path, definition, seen, server)
            except ConversionError as exc:
                if problems is None:
                    raise
                problems.append(exc)
                continue
            if tool is not None:
                tools.append(tool)
        tools.sort(key=lambda t: t.name)
        return tuple(tools)

    @staticmethod
    def _tool(path: str, definition: ToolDefinition, seen: set[str], server: _ToolsOf) -> Tool | None:
        """One tool of the server, ``None`` if it is disabled, or the ``ConversionError`` that keeps it out."""
        spec, meta_raw, route, cluster, backend, where = (
            server.spec, server.meta_raw, server.route, server.cluster, server.backend, server.where
        )
        name = definition.name
        if name in seen:
            raise ConversionError(
                "two tools have this name; tool names must be unique in a server",
                path=f"{path}.name",
                tool=shown_name(name),
                **where,
            )
        seen.add(name)
        meta = spec.toolsMeta.get(name)
        if meta is not None and not meta.enabled:
            return None
        try:
            check_tool(definition, path)
        except ConversionError as exc:
            raise ConversionError(exc.reason, path=exc.path, tool=shown_name(name), **where) from exc
        try:
            validator = argument_validator(definition.inputSchema)
        except ConversionError as exc:
            raise ConversionError(exc.reason, path=exc.path.replace("$", f"{path}", 1), tool=name, **where) from exc
        binding = None
        if backend == "rest":
            template = (meta.templates if meta else {}).get(TEMPLATE_KIND)
            if not isinstance(template, dict):
                raise ConversionError(
                    f"REST tool has no {TEMPLATE_KIND} template in toolsMeta; add one or disable the tool",
                    path=f"$.toolsMeta.{name}.templates",
                    tool=name,
                    **where,
                )
            try:
                binding = compile_rest_binding(name, template, server.schemes, definition.inputSchema)
            except ConversionError as exc:
                raise ConversionError(exc.reason, path=exc.path, tool=name, **where) from exc
            if not binding.is_direct and binding.needs_instance and cluster is None:
                raise ConversionError(
                    "the tool's url is relative but the server has no remoteServerConfig.serviceRef "
                    "to send it to; add a serviceRef or use an absolute url",
                    path=f"$.toolsMeta.{name}.templates.{TEMPLATE_KIND}.requestTemplate.url",
                    tool=name,
                    **where,
                )
        return Tool(
            server_id=route.server_id,
            server_name=route.server_name,
            name=name,
            description=definition.description,
            input_schema=MappingProxyType(dict(definition.inputSchema)),
            output_schema=definition.outputSchema,
            annotations=definition.annotations,
            route=route.name,
            cluster=cluster.name if cluster else None,
            fingerprint=_digest(
                route.name,
                backend,
                _canonical(definition.model_dump()),
                _canonical(meta_raw.get(name)),
                _canonical(server.schemes_raw),
            ),
            binding=binding,
            validator=validator,
        )
