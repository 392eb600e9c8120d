"""``mcpgw import openapi``: a publish document (what ``mcpgw publish`` reads) from an OpenAPI or Swagger document.

Operators describe REST APIs in OpenAPI already; writing the same API again
as REST-to-MCP tools by hand is where specs go wrong. This module reads an
OpenAPI 3.0/3.1 or Swagger 2.0 document and writes one tool per operation:

- **Validation** by openapi-spec-validator. A document that breaks the
  OpenAPI schema (the structure) is refused with each problem's JSON path;
  the validator's semantic findings (an ``example`` or ``default`` that does
  not match its own schema, which real published APIs often have) are
  warnings, errors with ``strict``.
- **References** are resolved with ``referencing`` (the resolver of
  python-jsonschema): local pointers, and files next to the document
  (``other.yaml#/Pet``), never the network. A schema is inlined where it is
  used, since many MCP clients do not follow ``$ref``; a recursive one (a
  tree, a linked list) cannot be, and becomes an entry of the tool's
  ``$defs`` with ``#/$defs/…`` references. A tool whose inlined schema would
  exceed what the gateway serves is written with every component in
  ``$defs`` instead.
- **Schemas** become JSON Schema 2020-12 (what MCP uses): OpenAPI 3.0's
  ``nullable``, boolean ``exclusiveMinimum``/``Maximum`` and ``example``, and
  Swagger's ``x-nullable`` are translated; ``discriminator``, ``xml`` and
  ``externalDocs`` are dropped; ``readOnly`` properties are not asked for.
- **Arguments**: each parameter is an argument placed where it lives
  (``argsPosition``: path, query, header, cookie). A JSON or form body that
  is an object adds its properties as ``body`` arguments (``argsToJsonBody``
  / ``argsToFormBody``); any other body (an array, a name clash with a
  parameter) is the one argument ``body``, sent as JSON. Operations with a
  multipart, binary or file body cannot be made by a REST template and are
  skipped with a warning naming them.
- **Where calls go**: with ``service``, the tools' URLs are paths (the
  document's base path first) sent to the instances of that Nacos service;
  without it, to the document's absolute server URL (config, never an
  argument).
- **Responses**: a JSON answer is returned as the backend's JSON, preceded by
  a short description of its fields from the response schema, the way
  Higress' converter helps a model read it.
- **Security**: the document's schemes the gateway can apply (HTTP bearer
  and basic, API keys in a header or query; OAuth 2 and OpenID Connect as a
  bearer token obtained out of band) become ``securitySchemes`` whose
  ``defaultCredential`` is a Nacos credential reference
  (``${nacos.<server>-<scheme>.json/mcp-credentials}``): the secret is never
  in the document. Cookie keys and mutual TLS are reported, not applied.
- **Names**: the ``operationId`` (else method and path), made to fit MCP's
  tool-name characters, unique within the server; annotations from the
  method (GET/HEAD read-only, PUT/DELETE idempotent, DELETE destructive).

Every tool written is checked by the same code ``publish`` runs (so what is
imported publishes and serves); a tool that fails it is dropped with the
reason as a warning, or refused with ``strict``.
"""

from __future__ import annotations

import copy
import datetime
import hashlib
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal
from urllib.parse import urldefrag, urljoin, urlsplit

import yaml
from referencing import Registry, Resource
from referencing.exceptions import NoSuchResource, Unresolvable

from mcpgw.adapter.publish_documents import LoadedDocument, PublishDocument, check_document_release
from mcpgw.converter.servable import MAX_SCHEMA_CHARS
from mcpgw.registry.errors import McpgwError

METHODS: Final = ("get", "put", "post", "delete", "options", "head", "patch", "trace")
CREDENTIALS_GROUP: Final = "mcp-credentials"
MAX_DOCUMENT_BYTES: Final = 64 * 1024 * 1024
_MAX_PROBLEMS_SHOWN: Final = 10
_MAX_DESCRIPTION: Final = 4000
_MAX_TOOL_NAME: Final = 64
_MAX_FIELDS_DESCRIBED: Final = 40
_SCHEMA_BUDGET: Final = MAX_SCHEMA_CHARS * 3 // 4
_DROPPED_KEYWORDS: Final = frozenset(("discriminator", "xml", "externalDocs", "example", "nullable", "x-nullable"))
_SCHEMA_KEYWORDS_OF_A_V2_PARAMETER: Final = (
    "type", "format", "items", "enum", "default", "minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum",
    "minLength", "maxLength", "pattern", "minItems", "maxItems", "uniqueItems", "multipleOf",
)
Dialect = Literal["swagger-2.0", "openapi-3.0", "openapi-3.1"]


class OpenApiImportError(McpgwError):
    """The OpenAPI document cannot be imported (unreadable, not OpenAPI, invalid, or nothing importable)."""


@dataclass
class ImportResult:
    document: dict[str, Any]
    """The publish document."""
    dialect: Dialect
    operations: int
    """Operations in the OpenAPI document."""
    warnings: list[str] = field(default_factory=list)
    credentials: list[str] = field(default_factory=list)
    """The Nacos configs (``group/dataId``) the tools' credentials are read from."""

    def yaml(self, source: str) -> str:
        header = (
            f"# A publish document made by `mcpgw import openapi` from {source} ({self.dialect}):\n"
            f"# {len(self.document['tools'])} tools from {self.operations} operations. Publish it with\n"
            "#   mcpgw publish THIS_FILE --nacos HOST:PORT   (or --files DIR)\n"
        )
        if self.credentials:
            header += "# Before serving, create the credential configs (content {\"data\": \"<secret>\"}):\n"
            header += "".join(f"#   {c}\n" for c in self.credentials)
        return header + yaml.dump(self.document, Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=120)


class _Dumper(yaml.SafeDumper):
    """No anchors: shared schema objects are written out, since a reader of the file is a person."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Dumper.add_representer(str, _str_representer)


# ---------------------------------------------------------------- reading and validating


def _load_file(path: Path) -> Any:
    try:
        size = path.stat().st_size
        if size > MAX_DOCUMENT_BYTES:
            raise OpenApiImportError(f"{path} has {size} bytes, more than the {MAX_DOCUMENT_BYTES} accepted")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise OpenApiImportError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise OpenApiImportError(f"{path} is not UTF-8 text: {exc}") from exc
    try:
        return _as_json(yaml.safe_load(text))
    except yaml.YAMLError as exc:
        raise OpenApiImportError(f"{path} is neither JSON nor YAML: {exc}") from exc


def _as_json(value: Any) -> Any:
    """YAML's data as JSON has it: response codes like ``200:`` are string keys, dates are strings."""
    if isinstance(value, Mapping):
        return {str(k).lower() if isinstance(k, bool) else str(k): _as_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_as_json(v) for v in value]
    if isinstance(value, datetime.date):
        return value.isoformat()
    return value


def _dialect(document: Any, path: Path) -> Dialect:
    if not isinstance(document, Mapping):
        raise OpenApiImportError(f"{path} is not an OpenAPI document: its top level is not a mapping")
    swagger, openapi = document.get("swagger"), document.get("openapi")
    if swagger is not None:
        if str(swagger) != "2.0":
            raise OpenApiImportError(f"{path}: swagger {swagger!r} is not supported; only Swagger 2.0 is")
        return "swagger-2.0"
    if openapi is None:
        raise OpenApiImportError(
            f"{path} is not an OpenAPI document: it has neither an 'openapi' nor a 'swagger' field "
            "(OpenAPI 3.0/3.1 and Swagger 2.0 are supported)"
        )
    text = str(openapi)
    if text.startswith("3.0"):
        return "openapi-3.0"
    if text.startswith("3.1"):
        return "openapi-3.1"
    raise OpenApiImportError(f"{path}: openapi {openapi!r} is not supported; use OpenAPI 3.0.x or 3.1.x")


def _json_path(parts: Sequence[Any]) -> str:
    out = "$"
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else f".{part}" if re.fullmatch(r"\w+", str(part)) \
            else f"[{json.dumps(str(part))}]"
    return out


def _validate(document: Mapping[str, Any], dialect: Dialect, path: Path, *, strict: bool) -> list[str]:
    """Structural problems raise; the semantic findings are returned as warnings (raised with ``strict``)."""
    from openapi_spec_validator import OpenAPIV2SpecValidator, OpenAPIV30SpecValidator, OpenAPIV31SpecValidator

    kind = {"swagger-2.0": OpenAPIV2SpecValidator, "openapi-3.0": OpenAPIV30SpecValidator,
            "openapi-3.1": OpenAPIV31SpecValidator}[dialect]
    validator = kind(document, base_uri=path.resolve().as_uri())
    structural = [f"{_json_path(list(e.absolute_path))}: {_first_line(e.message)}"
                  for e in validator.schema_validator.iter_errors(document)]
    if structural:
        raise OpenApiImportError(_problems(f"{path} is not a valid {dialect} document", structural))
    semantic: list[str] = []
    try:
        for error in validator.root_validator(validator.schema_path):
            semantic.append(f"{_json_path(list(error.absolute_path))}: {_first_line(error.message)}")
            if len(semantic) >= 50:
                break
    except Exception as exc:  # a reference the validator cannot follow is the resolver's to report below
        semantic.append(f"the validator stopped: {type(exc).__name__}: {str(exc)[:200]}")
    if semantic and strict:
        raise OpenApiImportError(_problems(f"{path} has problems (--strict)", semantic))
    return [f"{path}: {finding} (the validator's finding; imported anyway)" for finding in semantic]


def _first_line(message: str) -> str:
    """A validator's message without the schema and the instance it appends (which can be the whole document)."""
    line = message.strip().split("\n", 1)[0]
    return line if len(line) <= 300 else line[:299] + "…"


def _problems(headline: str, problems: Sequence[str]) -> str:
    shown = "\n  ".join(problems[:_MAX_PROBLEMS_SHOWN])
    more = f"\n  … and {len(problems) - _MAX_PROBLEMS_SHOWN} more" if len(problems) > _MAX_PROBLEMS_SHOWN else ""
    return f"{headline}:\n  {shown}{more}"


# ---------------------------------------------------------------- references


class _Refs:
    """Resolves ``$ref`` against the document and the files next to it (never the network)."""

    def __init__(self, document: Any, path: Path) -> None:
        self.root_uri = path.resolve().as_uri()
        self.directory = path.resolve().parent

        def retrieve(uri: str) -> Resource[Any]:
            parts = urlsplit(uri)
            if parts.scheme != "file":
                raise OpenApiImportError(f"{uri} is not a file next to the document")
            file = Path(parts.path).resolve()
            return Resource.opaque(_load_file(file))

        self.registry: Registry[Any] = Registry(retrieve=retrieve).with_resource(  # type: ignore[call-arg,unused-ignore]
            self.root_uri, Resource.opaque(document)
        )

    def resolve(self, ref: str, base: str, where: str) -> tuple[Any, str, str]:
        """``(contents, absolute uri, base uri of the contents)`` of ``ref`` written in a document at ``base``."""
        absolute = urljoin(base, ref)
        scheme = urlsplit(absolute).scheme
        if scheme not in ("file", ""):
            raise OpenApiImportError(
                f"{where}: $ref {ref!r} points at {absolute}; references are only followed to files next to "
                "the document, never over the network. Download it next to the document and refer to the file."
            )
        try:
            resolved = self.registry.resolver(base).lookup(ref)
        except (Unresolvable, NoSuchResource) as exc:
            cause = exc.__cause__ or exc
            raise OpenApiImportError(f"{where}: $ref {ref!r} cannot be resolved: {cause}") from exc
        return resolved.contents, absolute, urldefrag(absolute).url

    def follow(self, node: Any, base: str, where: str) -> tuple[Any, str]:
        """A non-schema object (parameter, request body, response, path item) with its references followed."""
        seen: set[str] = set()
        while isinstance(node, Mapping) and isinstance(node.get("$ref"), str):
            node, absolute, base = self.resolve(node["$ref"], base, where)
            if absolute in seen:
                raise OpenApiImportError(f"{where}: $ref {absolute} refers to itself")
            seen.add(absolute)
        return node, base


# ---------------------------------------------------------------- schemas


class _Schemas:
    """Turns OpenAPI schemas into JSON Schema 2020-12 for one tool, collecting the ``$defs`` it needs."""

    def __init__(self, refs: _Refs, dialect: Dialect, *, inline: bool) -> None:
        self.refs = refs
        self.dialect = dialect
        self.inline = inline
        self.defs: dict[str, Any] = {}
        self._names: dict[str, str] = {}
        self._stack: list[str] = []
        self._recursive: set[str] = set()
        self._memo: dict[tuple[str, bool], Any] = {}

    def convert(self, schema: Any, base: str, where: str, *, request: bool = True) -> Any:
        if not isinstance(schema, Mapping):
            return schema
        if isinstance(schema.get("$ref"), str):
            siblings = {k: v for k, v in schema.items() if k != "$ref"}
            target = self._ref(schema["$ref"], base, where, request)
            if not siblings or self.dialect != "openapi-3.1":
                return target
            return {**self._object(siblings, base, where, request), "allOf": [target]}
        return self._object(schema, base, where, request)

    def dereferenced(self, schema: Any) -> Any:
        """A schema that is only a reference to one of ``defs``, as that definition (its inner references stay)."""
        if isinstance(schema, Mapping) and set(schema) == {"$ref"} and str(schema["$ref"]).startswith("#/$defs/"):
            return self.defs.get(str(schema["$ref"]).removeprefix("#/$defs/"), schema)
        return schema

    def _def_name(self, absolute: str) -> str:
        name = self._names.get(absolute)
        if name is None:
            fragment = urldefrag(absolute).fragment
            stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", fragment.rsplit("/", 1)[-1] or Path(urlsplit(absolute).path).stem)
            stem = stem.strip("_") or "schema"
            name, n = stem, 2
            while name in self._names.values():
                name, n = f"{stem}_{n}", n + 1
            self._names[absolute] = name
        return name

    def _ref(self, ref: str, base: str, where: str, request: bool) -> Any:
        target, absolute, target_base = self.refs.resolve(ref, base, where)
        pointer = {"$ref": f"#/$defs/{self._def_name(absolute)}"}
        key = (absolute, request)
        if absolute in self._stack:
            self._recursive.add(absolute)
            return pointer
        if absolute in self._recursive or (not self.inline and absolute in self._names and
                                          self._names[absolute] in self.defs):
            return pointer
        if key in self._memo:
            return self._memo[key]
        self._stack.append(absolute)
        try:
            converted = self.convert(target, target_base, where, request=request)
        finally:
            self._stack.pop()
        if absolute in self._recursive or not self.inline:
            self.defs[self._def_name(absolute)] = converted
            return pointer
        self._memo[key] = converted
        return converted

    def _object(self, schema: Mapping[str, Any], base: str, where: str, request: bool) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in schema.items():
            if key in _DROPPED_KEYWORDS or (key.startswith("x-") and key != "x-nullable"):
                continue
            if key in ("properties", "patternProperties", "$defs", "definitions") and isinstance(value, Mapping):
                converted = {str(k): self.convert(v, base, where, request=request) for k, v in value.items()}
                if key == "properties" and request:
                    converted = {k: v for k, v in converted.items() if not _read_only(value[k])}
                out["$defs" if key == "definitions" else key] = converted
            elif key in ("items", "additionalProperties", "not", "contains", "propertyNames", "if", "then", "else",
                         "unevaluatedProperties", "unevaluatedItems") and isinstance(value, Mapping):
                out[key] = self.convert(value, base, where, request=request)
            elif key in ("allOf", "anyOf", "oneOf", "prefixItems") and isinstance(value, list):
                out[key] = [self.convert(v, base, where, request=request) for v in value]
            elif key == "items" and isinstance(value, list):  # draft 4 tuple form
                out["prefixItems"] = [self.convert(v, base, where, request=request) for v in value]
            else:
                out[key] = copy.deepcopy(value)
        if request and isinstance(out.get("required"), list) and isinstance(schema.get("properties"), Mapping):
            out["required"] = [r for r in out["required"] if not _read_only(schema["properties"].get(r, {}))]
            if not out["required"]:
                del out["required"]
        if self.dialect != "openapi-3.1":
            _from_draft4(schema, out)
        if "example" in schema and "examples" not in out:
            out["examples"] = [copy.deepcopy(schema["example"])]
        return out


def _read_only(schema: Any) -> bool:
    return isinstance(schema, Mapping) and schema.get("readOnly") is True


def _from_draft4(schema: Mapping[str, Any], out: dict[str, Any]) -> None:
    """OpenAPI 3.0 and Swagger 2.0 keywords that JSON Schema 2020-12 spells otherwise."""
    for bound, limit in (("exclusiveMinimum", "minimum"), ("exclusiveMaximum", "maximum")):
        if isinstance(schema.get(bound), bool):
            if schema[bound] and limit in out:
                out[bound] = out.pop(limit)
            else:
                out.pop(bound, None)
    if schema.get("nullable") is True or schema.get("x-nullable") is True:
        kind = out.get("type")
        if isinstance(kind, str):
            out["type"] = [kind, "null"]
        elif isinstance(kind, list) and "null" not in kind:
            out["type"] = [*kind, "null"]
        if isinstance(out.get("enum"), list) and None not in out["enum"]:
            out["enum"] = [*out["enum"], None]


def _is_object(schema: Any) -> bool:
    return isinstance(schema, Mapping) and "$ref" not in schema and (
        schema.get("type") == "object" or (schema.get("type") is None and isinstance(schema.get("properties"), Mapping)
                                           and not any(k in schema for k in ("anyOf", "oneOf")))
    )


def _merged_all_of(schema: Any) -> Any:
    """An ``allOf`` of object schemas as one object schema (what a body's properties are read from)."""
    if not isinstance(schema, Mapping) or not isinstance(schema.get("allOf"), list):
        return schema
    parts = [_merged_all_of(p) for p in schema["allOf"]]
    if not all(_is_object(p) for p in parts):
        return schema
    merged: dict[str, Any] = {"type": "object", "properties": {}}
    required: list[str] = []
    for part in (*parts, {k: v for k, v in schema.items() if k != "allOf"}):
        merged["properties"].update(part.get("properties") or {})
        required += [r for r in part.get("required") or [] if r not in required]
        if part.get("description") and "description" not in merged:
            merged["description"] = part["description"]
    if required:
        merged["required"] = required
    return merged


# ---------------------------------------------------------------- operations


@dataclass
class _Operation:
    method: str
    path: str
    node: Mapping[str, Any]
    base: str
    parameters: list[tuple[Mapping[str, Any], str]]


def _operations(document: Mapping[str, Any], refs: _Refs) -> Iterator[_Operation]:
    paths = document.get("paths") or {}
    if not isinstance(paths, Mapping):
        return
    for route, item in paths.items():
        where = f"paths.{route}"
        item, base = refs.follow(item, refs.root_uri, where)
        if not isinstance(item, Mapping):
            continue
        shared = [refs.follow(p, base, f"{where}.parameters") for p in item.get("parameters") or []]
        for method in METHODS:
            operation = item.get(method)
            if not isinstance(operation, Mapping):
                continue
            own = [refs.follow(p, base, f"{where}.{method}.parameters") for p in operation.get("parameters") or []]
            merged: dict[tuple[str, str], tuple[Mapping[str, Any], str]] = {}
            for parameter, parameter_base in (*shared, *own):
                if isinstance(parameter, Mapping) and "name" in parameter and "in" in parameter:
                    merged[(str(parameter["name"]), str(parameter["in"]))] = (parameter, parameter_base)
            yield _Operation(method, str(route), operation, base, list(merged.values()))


def _tool_name(operation: _Operation, taken: set[str]) -> str:
    raw = operation.node.get("operationId") or f"{operation.method}_{operation.path}"
    name = re.sub(r"_{2,}", "_", re.sub(r"[^A-Za-z0-9_.-]+", "_", str(raw))).strip("_.-") or operation.method
    if len(name) > _MAX_TOOL_NAME:
        digest = hashlib.sha256(name.encode()).hexdigest()[:8]
        name = f"{name[: _MAX_TOOL_NAME - 9]}_{digest}"
    unique, n = name, 2
    while unique in taken:
        unique, n = f"{name[: _MAX_TOOL_NAME - 4]}_{n}", n + 1
    taken.add(unique)
    return unique


def _description(operation: Mapping[str, Any], method: str, path: str) -> str:
    parts = [str(operation[k]).strip() for k in ("summary", "description") if operation.get(k)]
    if len(parts) == 2 and parts[1].startswith(parts[0]):
        parts = parts[1:]
    text = "\n\n".join(parts) or f"{method.upper()} {path}"
    if operation.get("deprecated") is True:
        text = "(Deprecated) " + text
    return text if len(text) <= _MAX_DESCRIPTION else text[: _MAX_DESCRIPTION - 1] + "…"


def _json_media(content: Mapping[str, Any]) -> tuple[str, Any] | None:
    for media, entry in content.items():
        bare = str(media).split(";")[0].strip().lower()
        if bare == "application/json" or bare.endswith("+json") or bare == "*/*":
            return bare, entry
    return None


# ---------------------------------------------------------------- the importer


@dataclass
class _Context:
    refs: _Refs
    dialect: Dialect
    document: Mapping[str, Any]
    base_path: str
    origin: str
    schemes: dict[str, dict[str, Any]]
    global_security: Any
    warnings: list[str]
    used_schemes: set[str] = field(default_factory=set)


class _Skip(Exception):
    """This operation cannot be a REST-to-MCP tool; the message says why."""


def import_openapi(
    path: Path,
    *,
    server: str | None = None,
    service: str | None = None,
    group: str = "DEFAULT_GROUP",
    version: str | None = None,
    strict: bool = False,
    namespace: str = "public",
    protocol: Literal["http", "https"] | None = None,
) -> ImportResult:
    """The publish document for the OpenAPI document at ``path``; raises ``OpenApiImportError``."""
    document = _load_file(path)
    dialect = _dialect(document, path)
    warnings = _validate(document, dialect, path, strict=strict)
    refs = _Refs(document, path)
    info = document.get("info") if isinstance(document.get("info"), Mapping) else {}
    name = server or _slug(str(info.get("title") or path.stem))
    if not name:
        raise OpenApiImportError(f"{path}: the document has no title to name the server after; pass --server NAME")
    scheme, origin, base_path = _where(document, dialect)
    if service is None and not origin:
        raise OpenApiImportError(
            f"{path}: the document names no absolute server URL, so the tools have nowhere to send calls; "
            "pass --service NAME (the Nacos service whose instances serve this API)"
        )
    context = _Context(refs, dialect, document, base_path, "" if service else origin, _security_schemes(
        document, dialect, name, warnings), document.get("security"), warnings)
    tools: list[dict[str, Any]] = []
    taken: set[str] = set()
    operations = list(_operations(document, refs))
    for operation in operations:
        label = f"{operation.method.upper()} {operation.path}"
        try:
            tools.append(_tool(operation, _tool_name(operation, taken), context))
        except _Skip as exc:
            warnings.append(f"{label} skipped: {exc}")
    server_doc: dict[str, Any] = {
        "name": name,
        "version": version or _version(info.get("version")),
        "description": _server_description(info),
        # With a service, the instances' scheme is not the public URL's: plain HTTP unless told.
        "protocol": protocol or ("http" if service is not None or scheme not in ("http", "https") else scheme),
    }
    if service is not None:
        server_doc["serviceRef"] = {"groupName": group, "serviceName": service}
    out: dict[str, Any] = {"server": server_doc}
    used = [context.schemes[s] for s in sorted(context.used_schemes)]
    if used:
        out["securitySchemes"] = used
    out["tools"] = tools
    _drop_unpublishable(out, path, namespace, warnings, strict)
    if not out["tools"]:
        raise OpenApiImportError(_problems(f"{path}: no operation could be imported", warnings or ["it has none"]))
    credentials = sorted({_credential_config(name, s["id"]) for s in out.get("securitySchemes", [])})
    return ImportResult(out, dialect, len(operations), warnings, credentials)


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-")[:60]


def _version(raw: Any) -> str:
    text = re.sub(r"[^A-Za-z0-9._:-]+", "-", str(raw or "")).strip("-")
    return text or "1.0.0"


def _server_description(info: Mapping[str, Any]) -> str:
    title = str(info.get("title") or "").strip()
    text = str(info.get("description") or "").strip().split("\n\n")[0]
    joined = f"{title}: {text}" if title and text else title or text
    return joined[:_MAX_DESCRIPTION]


def _where(document: Mapping[str, Any], dialect: Dialect) -> tuple[str, str, str]:
    """``(scheme, origin, base path)`` of the document's first server."""
    if dialect == "swagger-2.0":
        schemes = document.get("schemes") or []
        scheme = "https" if "https" in schemes and "http" not in schemes else "http" if schemes else ""
        host = str(document.get("host") or "")
        base_path = str(document.get("basePath") or "")
        return scheme or "http", f"{scheme or 'https'}://{host}" if host else "", base_path.rstrip("/")
    servers = document.get("servers") or []
    first = servers[0] if servers and isinstance(servers[0], Mapping) else {}
    url = str(first.get("url") or "")
    for variable, spec in (first.get("variables") or {}).items():
        if isinstance(spec, Mapping) and "default" in spec:
            url = url.replace("{" + str(variable) + "}", str(spec["default"]))
    parts = urlsplit(url)
    origin = f"{parts.scheme}://{parts.netloc}" if parts.scheme in ("http", "https") and parts.netloc else ""
    return parts.scheme or "http", origin, parts.path.rstrip("/")


def _credential_config(server: str, scheme_id: str) -> str:
    return f"{CREDENTIALS_GROUP}/{server}-{scheme_id}.json"


def _security_schemes(document: Mapping[str, Any], dialect: Dialect, server: str,
                      warnings: list[str]) -> dict[str, dict[str, Any]]:
    declared = (document.get("securityDefinitions") if dialect == "swagger-2.0"
                else (document.get("components") or {}).get("securitySchemes")) or {}
    out: dict[str, dict[str, Any]] = {}
    for raw_id, scheme in declared.items():
        if not isinstance(scheme, Mapping):
            continue
        scheme_id = re.sub(r"[^A-Za-z0-9_.-]+", "-", str(raw_id))
        kind = str(scheme.get("type", "")).lower()
        credential = "{{ ${nacos." + f"{server}-{scheme_id}.json/{CREDENTIALS_GROUP}" + "}.data }}"
        entry: dict[str, Any] = {"id": scheme_id}
        if kind == "http" and str(scheme.get("scheme", "")).lower() in ("bearer", "basic"):
            entry.update(type="http", scheme=str(scheme["scheme"]).lower())
        elif kind == "basic":
            entry.update(type="http", scheme="basic")
        elif kind == "apikey" and scheme.get("in") in ("header", "query") and scheme.get("name"):
            entry.update({"type": "apiKey", "in": scheme["in"], "name": str(scheme["name"])})
        elif kind in ("oauth2", "openidconnect"):
            entry.update(type="http", scheme="bearer")
            warnings.append(f"security scheme {raw_id!r} ({scheme.get('type')}) is applied as a bearer token the "
                            "gateway sends: obtain the token out of band and store it as its credential")
        else:
            warnings.append(f"security scheme {raw_id!r} ({scheme.get('type')}"
                            f"{', in ' + str(scheme.get('in')) if scheme.get('in') else ''}) cannot be applied by "
                            "the gateway; the operations that need only it are imported without it")
            continue
        entry["defaultCredential"] = credential
        out[str(raw_id)] = entry
    return out


def _tool(operation: _Operation, name: str, context: _Context) -> dict[str, Any]:
    inline_try = _tool_with(operation, name, context, inline=True)
    if len(json.dumps(inline_try["inputSchema"])) <= _SCHEMA_BUDGET:
        return inline_try
    by_reference = _tool_with(operation, name, context, inline=False)
    if len(json.dumps(by_reference["inputSchema"])) > _SCHEMA_BUDGET:
        raise _Skip(f"its input schema has more than {_SCHEMA_BUDGET} characters even with shared definitions")
    return by_reference


def _tool_with(operation: _Operation, name: str, context: _Context, *, inline: bool) -> dict[str, Any]:
    where = f"paths.{operation.path}.{operation.method}"
    schemas = _Schemas(context.refs, context.dialect, inline=inline)
    properties: dict[str, Any] = {}
    required: list[str] = []
    positions: dict[str, str] = {}
    for parameter, base in operation.parameters:
        location = str(parameter["in"])
        arg = str(parameter["name"])
        if location == "body":
            continue
        if location == "formData":
            if parameter.get("type") == "file":
                raise _Skip("it uploads a file (formData type file), which a REST template cannot send")
            continue
        if location not in ("path", "query", "header", "cookie"):
            raise _Skip(f"parameter {arg!r} is in {location!r}, which is not a place an argument can go")
        if location == "header" and arg.lower() in ("accept", "content-type", "authorization"):
            continue  # set by the gateway (and by the security scheme), as OpenAPI says for these names
        properties[arg] = _parameter_schema(parameter, base, schemas, context.dialect, f"{where}.parameters")
        positions[arg] = location
        if parameter.get("required") is True or location == "path":
            required.append(arg)
    request: dict[str, Any] = {"url": _url(context, operation.path), "method": operation.method.upper()}
    template: dict[str, Any] = {"requestTemplate": request}
    body = _body(operation, context, schemas, where)
    if body is not None:
        kind, body_schema, body_required, description = body
        merged = _merged_all_of(schemas.dereferenced(body_schema))
        flat = _is_object(merged) and not (set(merged.get("properties") or {}) & set(properties)) and \
            merged.get("properties")
        if flat:
            for prop, prop_schema in merged["properties"].items():
                properties[prop] = prop_schema
                positions[prop] = "body"
            required += [r for r in merged.get("required") or [] if r in merged["properties"] and r not in required]
            request["argsToJsonBody" if kind == "json" else "argsToFormBody"] = True
        elif kind == "json":
            arg = "body" if "body" not in properties else "requestBody"
            properties[arg] = {**body_schema, **({"description": description} if description else {})}
            if body_required:
                required.append(arg)
            request["body"] = "{{ toJson .args." + arg + " }}"
            request["headers"] = [{"key": "Content-Type", "value": "application/json"}]
        else:
            raise _Skip("its form body is not an object of fields")
    if positions:
        template["argsPosition"] = positions
    security = _security_for(operation.node, context)
    if security is not None:
        request["security"] = {"id": context.schemes[security]["id"]}
        context.used_schemes.add(security)
    template["responseTemplate"] = _response_template(operation, context, where)
    # The gateway fills in an absent argument's default; the API applies its own, so the default is told, not sent.
    properties = {arg: _default_told(schema) for arg, schema in properties.items()}
    input_schema: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        input_schema["required"] = required
    if schemas.defs:
        input_schema["$defs"] = schemas.defs
    tool: dict[str, Any] = {
        "name": name,
        "description": _description(operation.node, operation.method, operation.path),
        "inputSchema": input_schema,
        "annotations": _annotations(operation),
        "template": template,
    }
    return tool


def _default_told(schema: Any) -> Any:
    if not isinstance(schema, Mapping) or "default" not in schema:
        return schema
    told = {k: v for k, v in schema.items() if k != "default"}
    note = f"Default: {json.dumps(schema['default'], ensure_ascii=False)}."
    told["description"] = f"{str(schema.get('description') or '').rstrip()}\n\n{note}".lstrip()
    return told


def _url(context: _Context, route: str) -> str:
    return f"{context.origin}{context.base_path}{route}"


def _parameter_schema(parameter: Mapping[str, Any], base: str, schemas: _Schemas, dialect: Dialect,
                      where: str) -> Any:
    if dialect == "swagger-2.0":
        raw: Any = {k: parameter[k] for k in _SCHEMA_KEYWORDS_OF_A_V2_PARAMETER if k in parameter}
        if "x-nullable" in parameter:
            raw["x-nullable"] = parameter["x-nullable"]
    elif isinstance(parameter.get("schema"), Mapping):
        raw = parameter["schema"]
    elif isinstance(parameter.get("content"), Mapping) and parameter["content"]:
        raw = next(iter(parameter["content"].values())).get("schema") or {}
    else:
        raw = {}
    schema = schemas.convert(raw, base, where)
    if parameter.get("description") and isinstance(schema, dict):
        schema = {**schema, "description": str(parameter["description"])}
    if parameter.get("deprecated") is True and isinstance(schema, dict):
        schema = {**schema, "deprecated": True}
    return schema


def _body(operation: _Operation, context: _Context, schemas: _Schemas,
          where: str) -> tuple[str, Any, bool, str] | None:
    """``(json|form, schema, required, description)`` of the operation's body, or None."""
    if context.dialect == "swagger-2.0":
        consumes = [str(c).lower() for c in operation.node.get("consumes") or context.document.get("consumes") or []]
        for parameter, base in operation.parameters:
            if parameter.get("in") == "body":
                if consumes and not any(c.endswith("json") or c == "*/*" for c in consumes):
                    raise _Skip(f"its body is {', '.join(consumes)}, which a REST template cannot send")
                schema = schemas.convert(parameter.get("schema") or {}, base, f"{where}.parameters")
                return "json", schema, parameter.get("required") is True, str(parameter.get("description") or "")
        fields = [(p, b) for p, b in operation.parameters if p.get("in") == "formData"]
        if not fields:
            return None
        if any("multipart" in c for c in consumes) and not any("urlencoded" in c for c in consumes):
            raise _Skip("its body is multipart/form-data, which a REST template cannot send")
        properties = {str(p["name"]): _parameter_schema(p, b, schemas, context.dialect, where) for p, b in fields}
        required = [str(p["name"]) for p, _ in fields if p.get("required") is True]
        return "form", {"type": "object", "properties": properties, **({"required": required} if required else {})}, \
            bool(required), ""
    raw = operation.node.get("requestBody")
    if raw is None:
        return None
    body, base = context.refs.follow(raw, operation.base, f"{where}.requestBody")
    content = body.get("content") if isinstance(body, Mapping) else None
    if not isinstance(content, Mapping) or not content:
        return None
    found = _json_media(content)
    if found is not None:
        schema = schemas.convert((found[1] or {}).get("schema") or {}, base, f"{where}.requestBody")
        return "json", schema, body.get("required") is True, str(body.get("description") or "")
    for media, entry in content.items():
        if str(media).split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
            schema = schemas.convert((entry or {}).get("schema") or {}, base, f"{where}.requestBody")
            return "form", schema, body.get("required") is True, str(body.get("description") or "")
    raise _Skip(f"its body is {', '.join(map(str, content))}, which a REST template cannot send "
                "(JSON and URL-encoded forms can be)")


def _security_for(operation: Mapping[str, Any], context: _Context) -> str | None:
    requirements = operation.get("security", context.global_security)
    if not isinstance(requirements, list) or not requirements:
        return None
    for requirement in requirements:
        if isinstance(requirement, Mapping):
            if not requirement:
                return None  # {} : anonymous access is one of the options
            names = list(requirement)
            if len(names) == 1 and names[0] in context.schemes:
                return str(names[0])
    return None


def _annotations(operation: _Operation) -> dict[str, Any]:
    method = operation.method
    annotations: dict[str, Any] = {}
    if operation.node.get("summary"):
        annotations["title"] = str(operation.node["summary"])[:200]
    if method in ("get", "head", "options"):
        annotations["readOnlyHint"] = True
    else:
        annotations["readOnlyHint"] = False
        annotations["destructiveHint"] = method == "delete"
    annotations["idempotentHint"] = method in ("get", "head", "options", "put", "delete")
    annotations["openWorldHint"] = True
    return annotations


def _response_template(operation: _Operation, context: _Context, where: str) -> dict[str, Any]:
    responses = operation.node.get("responses")
    if not isinstance(responses, Mapping):
        return {}
    chosen = next((responses[c] for c in sorted(map(str, responses)) if c.startswith("2") and c in responses), None)
    if chosen is None:
        chosen = next((v for k, v in responses.items() if str(k).startswith("2")), None)
    if chosen is None:
        return {}
    response, base = context.refs.follow(chosen, operation.base, f"{where}.responses")
    if not isinstance(response, Mapping):
        return {}
    if context.dialect == "swagger-2.0":
        schema, media = response.get("schema"), "application/json"
    else:
        found = _json_media(response.get("content") or {})
        if found is None:
            return {}
        media, schema = found[0], (found[1] or {}).get("schema")
    if not isinstance(schema, Mapping):
        return {}
    schemas = _Schemas(context.refs, context.dialect, inline=True)
    try:
        resolved = _merged_all_of(schemas.convert(schema, base, f"{where}.responses", request=False))
    except OpenApiImportError as exc:
        context.warnings.append(f"{where}: the response schema is not described: {exc}")
        return {}
    lines: list[str] = []
    _describe_fields(resolved, "", lines, depth=0, defs=schemas.defs)
    if not lines:
        return {}
    intro = (f"The API answered {media}; its fields:\n" + "\n".join(lines[:_MAX_FIELDS_DESCRIBED])
             + ("\n- …" if len(lines) > _MAX_FIELDS_DESCRIBED else "") + "\n\nThe answer:\n")
    return {"prependBody": intro}


def _describe_fields(schema: Any, prefix: str, lines: list[str], *, depth: int, defs: Mapping[str, Any]) -> None:
    if not isinstance(schema, Mapping) or depth > 2 or len(lines) > _MAX_FIELDS_DESCRIBED:
        return
    if isinstance(schema.get("$ref"), str):
        schema = defs.get(schema["$ref"].rsplit("/", 1)[-1], {})
        if depth > 0:
            return
    if schema.get("type") == "array" or "items" in schema:
        _describe_fields(schema.get("items"), f"{prefix}[]", lines, depth=depth + 1, defs=defs)
        return
    for prop, sub in (schema.get("properties") or {}).items():
        if not isinstance(sub, Mapping):
            continue
        kind = sub.get("type", "object" if "properties" in sub else "")
        kind = "/".join(map(str, kind)) if isinstance(kind, list) else str(kind)
        about = " ".join(str(sub.get("description") or "").split())[:120]
        lines.append(f"- {prefix}{'.' if prefix else ''}{prop} ({kind or 'any'})" + (f": {about}" if about else ""))
        _describe_fields(sub, f"{prefix}{'.' if prefix else ''}{prop}", lines, depth=depth + 1, defs=defs)


def _drop_unpublishable(out: dict[str, Any], path: Path, namespace: str, warnings: list[str], strict: bool) -> None:
    """Check the document as ``publish`` will; drop (or, strict, refuse) the tools it refuses."""
    for _ in range(len(out["tools"]) + 1):
        try:
            loaded = LoadedDocument(path, PublishDocument.model_validate(out))
        except Exception as exc:  # a bug of this module, not of the user's document
            raise OpenApiImportError(f"the imported document is not a valid publish document: {exc}") from exc
        problems = check_document_release(loaded, namespace=namespace)
        if not problems:
            return
        names = {p.tool for p in problems if p.tool}
        if strict or not names:
            raise OpenApiImportError(_problems(f"{path}: the imported document would not publish",
                                               [p.describe() for p in problems]))
        for problem in problems:
            warnings.append(f"tool {problem.tool} dropped: {problem.reason} (at {problem.path})")
        out["tools"] = [t for t in out["tools"] if t["name"] not in names]
        if not out["tools"]:
            return
