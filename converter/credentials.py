"""Credential references: ``${nacos.<dataId>/<group>}`` in a tools spec, with Nacos' semantics.

Nacos' console lets an operator keep a secret out of the tools spec: the spec
says ``${nacos.weatherKey/credentials}`` and the secret lives in that other
config.  Nacos' consumer, Higress' MCP watcher, rewrites the reference text
to ``.config.credentials.<group>_<dataId>`` and puts the config's content
there (parsed JSON, else the string), so a reference is meant to stand inside
a template action: ``{{ ${nacos.weatherKey/credentials}.data }}`` with the
config ``{"data": "key-abc-123"}`` sends ``key-abc-123``.

What mcpgw does with that, and why:

- Inside an action of a request-side template (``requestTemplate.url``,
  ``headers[].value``, ``body``, ``security.credential`` and a security
  scheme's ``defaultCredential``) the template engine reads the reference as
  an operand naming ``$.config.credentials["<group>_<dataId>"]``.  Looked up
  by key from the root, not by Higress' textual field path, because a dataId
  such as ``weather-api-key.json`` holds characters a Go field name cannot
  (``-`` does not parse, ``.`` splits the name), and because dot moves inside
  ``range``/``with``.  The long form ``.config.credentials.<name>`` works too.
- A whole header value or security credential that is exactly one reference
  (the form mcpgw used to paste text into) is read as ``{{ reference }}``:
  unambiguous, and those fields only ever travel to the backend.
- Anywhere else a reference is an error naming file, tool and JSON path: in a
  description, schema or annotation it would be shown to MCP clients, in a
  response template the answer goes to the client, and in any other field it
  would stay literal text.  Direct-response tools render without credentials.
- A reference that cannot resolve is an error when the config arrives, not a
  ``<no value>`` sent to the backend: a missing or deleted config, a field the
  JSON does not have, a name two references share.

Contents are bounded (size and nesting) and never quoted in an error.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

CREDENTIAL_REF = re.compile(r"\$\{nacos\.([A-Za-z0-9_.:-]+)/([A-Za-z0-9_.:-]+)\}")
"""``${nacos.<dataId>/<group>}``; dataId and group in the characters Nacos allows in them."""

REFERENCE_START = "${nacos."
"""What every reference starts with: text that starts so but does not match is a misspelt reference."""

REFERENCE_FORM = "${nacos.<dataId>/<group>}"

MAX_CONTENT_BYTES = 64 * 1024
"""Credentials are keys, tokens and small JSON documents; a bigger config is a mistake (and costs every call)."""
MAX_CONTENT_DEPTH = 32
"""Nesting of a JSON credential; deeper would only cost recursion."""


def credential_name(data_id: str, group: str) -> str:
    """The key under ``.config.credentials`` a referenced config is known by (Higress' name)."""
    return f"{group}_{data_id}"


def reference_text(data_id: str, group: str) -> str:
    return f"${{nacos.{data_id}/{group}}}"


@dataclass(frozen=True, slots=True)
class Reference:
    """One reference as written: where in the string it starts, and what it names."""

    start: int
    data_id: str
    group: str

    @property
    def text(self) -> str:
        return reference_text(self.data_id, self.group)


@dataclass(frozen=True, slots=True)
class CredentialUse:
    """A reference the template engine read inside an action, with the literal fields that follow it."""

    data_id: str
    group: str
    fields: tuple[str, ...]
    """``("data",)`` for ``${nacos.k/g}.data``; empty when the value is used whole or passed on."""
    offset: int
    """Where the reference starts in the template source."""

    @property
    def name(self) -> str:
        return credential_name(self.data_id, self.group)

    @property
    def text(self) -> str:
        return reference_text(self.data_id, self.group) + "".join(f".{f}" for f in self.fields)


@dataclass(frozen=True, slots=True)
class CredentialSite:
    """A reference read by a compiled field: the field's JSON path in the tools spec, and the use."""

    path: str
    use: CredentialUse
    whole_value: bool
    """The field is exactly this reference: the content must be a plain value."""


@dataclass(frozen=True, slots=True)
class Misspelt:
    """Text starting with ``${nacos.`` that is not a reference."""

    start: int


def scan(text: str) -> Iterator[Reference | Misspelt]:
    """Every reference and every misspelt one in ``text``, in order."""
    position = text.find(REFERENCE_START)
    while position >= 0:
        match = CREDENTIAL_REF.match(text, position)
        if match is None:
            yield Misspelt(position)
            position = text.find(REFERENCE_START, position + 1)
        else:
            yield Reference(position, match.group(1), match.group(2))
            position = text.find(REFERENCE_START, match.end())


def whole_reference(text: str) -> Reference | None:
    """The reference ``text`` consists of (white space around it aside), if it is exactly one."""
    stripped = text.strip()
    match = CREDENTIAL_REF.fullmatch(stripped)
    if match is None:
        return None
    return Reference(0, match.group(1), match.group(2))


class ContentError(ValueError):
    """A referenced config's content cannot be used; the message never quotes the content."""


def parse_content(raw: str) -> Any:
    """The value a referenced config stands for: its JSON, else its text without surrounding white space.

    Raises ``ContentError`` for an empty (deleted) config, one larger than
    ``MAX_CONTENT_BYTES`` or JSON nested deeper than ``MAX_CONTENT_DEPTH``.
    """
    size = len(raw.encode("utf-8", "surrogatepass"))
    if size > MAX_CONTENT_BYTES:
        raise ContentError(
            f"is {size} bytes; a referenced config may hold at most {MAX_CONTENT_BYTES} bytes"
        )
    text = raw.strip()
    if not text:
        raise ContentError("is empty")
    try:
        value = json.loads(text)
    except RecursionError:
        raise ContentError(f"is JSON nested more than {MAX_CONTENT_DEPTH} levels deep") from None
    except ValueError:
        return text
    if _depth(value) > MAX_CONTENT_DEPTH:
        raise ContentError(f"is JSON nested more than {MAX_CONTENT_DEPTH} levels deep")
    if value is None:
        raise ContentError("is JSON null")
    return value


def _depth(value: Any) -> int:
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list):
            deepest = max(deepest, depth)
            stack.extend((child, depth + 1) for child in item)
    return deepest


def json_type(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, dict):
        return "a JSON object"
    if isinstance(value, list):
        return "a JSON list"
    return "null"


def follow(value: Any, fields: Sequence[str]) -> str | None:
    """Why ``fields`` cannot be read from a credential's value (``None``: they can), naming fields, never values."""
    walked = ""
    for field in fields:
        if isinstance(value, dict):
            if field not in value:
                return f"has no field {walked + '.' + field!r}" if walked else f"has no field {field!r}"
            value = value[field]
        elif isinstance(value, list) and field.isdigit():
            if int(field) >= len(value):
                return f"has no element {walked + '.' + field!r}"
            value = value[int(field)]
        elif not walked and isinstance(value, str):
            return f"is not JSON (it holds a plain value), so .{field} cannot be read from it"
        else:
            where = f"at {walked!r} " if walked else ""
            return f"holds {json_type(value)} {where}where a JSON object is needed to read .{field}"
        walked = f"{walked}.{field}" if walked else field
        if value is None:
            return f"holds null at {walked!r}"
    return None


def is_plain(value: Any) -> bool:
    """Whether a value prints as itself in a header (a string, number or boolean)."""
    return isinstance(value, str | int | float | bool)


# -- where references may stand ---------------------------------------------------------------

TEMPLATE_KIND = "json-go-template"

_PLAIN_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_-]*")


def _member(path: str, key: object) -> str:
    """``$.a.b`` for plain keys, ``$.a["b.c"]`` for keys a dotted path would misread (as the REST compiler writes)."""
    if isinstance(key, int):
        return f"{path}[{key}]"
    text = str(key)
    if _PLAIN_KEY.fullmatch(text):
        return f"{path}.{text}"
    return f"{path}[{json.dumps(text)}]"


@dataclass(frozen=True, slots=True)
class Site:
    """A string of the tools spec that holds ``${nacos.``, and what a reference there may do."""

    path: str
    text: str
    tool: str
    allowed: bool
    """A request-side template field: references inside its actions resolve (the REST compiler checks the rest)."""
    why_not: str
    """For a forbidden site: what a reference there would do."""


_SHOWN = "is shown to MCP clients (tools/list)"
_RESPONSE = "is what the MCP client receives, so a secret in it would be shown to the client"
_LITERAL = "is not a request template, so the reference would never be resolved"
_REQUEST_FIELDS = frozenset(
    {("requestTemplate", "url"), ("requestTemplate", "body"), ("requestTemplate", "security", "credential")}
)


def _classify(segments: tuple[str | int, ...]) -> str:
    """Why a reference may not stand at ``segments`` of a tools spec; empty where it may."""
    if len(segments) == 3 and segments[0] == "securitySchemes" and segments[2] == "defaultCredential":
        return ""
    if segments[:1] == ("tools",):
        return _SHOWN
    if len(segments) >= 5 and segments[0] == "toolsMeta" and segments[2:4] == ("templates", TEMPLATE_KIND):
        part = segments[4:]
        header_value = len(part) == 4 and part[:2] == ("requestTemplate", "headers") and part[3] == "value"
        if part in _REQUEST_FIELDS or header_value:
            return ""
        if part[:1] in (("responseTemplate",), ("errorResponseTemplate",)):
            return _RESPONSE
    return _LITERAL


def _tool_of(segments: tuple[str | int, ...], spec: Mapping[str, Any]) -> str:
    if len(segments) >= 2 and segments[0] == "toolsMeta":
        return str(segments[1])
    if len(segments) >= 2 and segments[0] == "tools" and isinstance(segments[1], int):
        tools = spec.get("tools")
        if isinstance(tools, list) and segments[1] < len(tools) and isinstance(tools[segments[1]], dict):
            name = tools[segments[1]].get("name")
            return name if isinstance(name, str) else ""
    return ""


def sites(spec: Mapping[str, Any]) -> Iterator[Site]:
    """Every string (value or key) of a parsed tools spec that holds ``${nacos.``, classified."""
    stack: list[tuple[Any, tuple[str | int, ...]]] = [(spec, ())]
    while stack:
        value, segments = stack.pop()
        if isinstance(value, str):
            if REFERENCE_START in value:
                why = _classify(segments)
                yield Site(_path(segments), value, _tool_of(segments, spec), not why, why)
        elif isinstance(value, list):
            stack.extend((value[index], (*segments, index)) for index in range(len(value) - 1, -1, -1))
        elif isinstance(value, dict):
            for key in reversed(list(value)):
                child = (*segments, str(key))
                if REFERENCE_START in str(key):
                    yield Site(_path(child), str(key), _tool_of(child, spec), False, "is a JSON key")
                stack.append((value[key], child))


def _path(segments: Sequence[str | int]) -> str:
    path = "$"
    for segment in segments:
        path = _member(path, segment)
    return path


def references_in(content: str) -> Iterator[tuple[str, str]]:
    """``(dataId, group)`` of every reference anywhere in a tools spec's text, JSON escapes decoded."""
    if "\\u" in content:
        try:
            parsed = json.loads(content)
        except (ValueError, RecursionError):
            parsed = None
        if parsed is not None:
            for site in sites(parsed) if isinstance(parsed, dict) else ():
                for found in scan(site.text):
                    if isinstance(found, Reference):
                        yield found.data_id, found.group
            return
    for match in CREDENTIAL_REF.finditer(content):
        yield match.group(1), match.group(2)
