"""Validation and coercion of tool-call arguments against a tool's ``inputSchema``.

MCP clients (and the language models behind them) routinely send ``"3"`` for
an integer or ``"true"`` for a boolean, and leave out arguments that have a
schema ``default``.  Peers either forward such calls unchanged, so the backend
sees a malformed request, or reject them outright.  We do what an operator
expects: coerce strings where the schema asks for a number or a boolean, fill
in defaults, and then validate strictly with ``jsonschema`` *before* any
backend is called, so an invalid call never leaves the gateway.

The validator is compiled once per tool at conversion time; a schema that is
itself invalid is a ``ConversionError`` of the server, not a failure of every
call.

Choices worth knowing:

- Coercion follows ``properties`` and ``items`` only; it does not resolve
  ``$ref`` or look into ``anyOf``/``oneOf``/``allOf`` (validation does).
- Defaults are filled for missing properties of objects that are present;
  an absent nested object is not invented unless it has a default itself.
- ``format`` is an annotation, as JSON Schema 2020-12 says: not asserted.
- An unknown ``$schema`` falls back to Draft 2020-12, the MCP default.
"""

from __future__ import annotations

import copy
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import jsonschema
import jsonschema_rs
import referencing.exceptions
from jsonschema.exceptions import SchemaError
from jsonschema.protocols import Validator

from mcpgw.registry.errors import ConversionError, InvocationError

_INTEGER = re.compile(r"[+-]?\d+")
_MAX_PROBLEMS_SHOWN = 10
_MAX_PROBLEM_CHARS = 300

_KNOWN_DRAFTS: tuple[type[Validator], ...] = (
    jsonschema.Draft4Validator,
    jsonschema.Draft6Validator,
    jsonschema.Draft7Validator,
    jsonschema.Draft201909Validator,
    jsonschema.Draft202012Validator,
)


def _draft_key(uri: str) -> str:
    """Meta-schema URIs are written with and without ``https`` and a trailing ``#``."""
    return uri.split("://", 1)[-1].rstrip("#").rstrip("/")


_DRAFTS_BY_URI: dict[str, type[Validator]] = {
    _draft_key(str(cls.META_SCHEMA.get("$id", cls.META_SCHEMA.get("id", "")))): cls for cls in _KNOWN_DRAFTS
}


_META_URIS: dict[type[Validator], str] = {
    cls: str(cls.META_SCHEMA.get("$id", cls.META_SCHEMA.get("id", ""))) for cls in _KNOWN_DRAFTS
}


class InvalidArguments(InvocationError):
    """A tool call whose arguments do not satisfy the tool's ``inputSchema``.

    ``problems`` lists each violation as ``"at <json path>: <what is wrong>"``.
    """

    def __init__(self, problems: Sequence[str]) -> None:
        self.problems = tuple(problems)
        super().__init__(self._sentence())

    def _sentence(self) -> str:
        shown = "; ".join(self.problems[:_MAX_PROBLEMS_SHOWN])
        hidden = len(self.problems) - _MAX_PROBLEMS_SHOWN
        more = f"; and {hidden} more" if hidden > 0 else ""
        return (
            f"The arguments do not match the tool's input schema: {shown}{more}. "
            "Correct them and call the tool again."
        )


class ArgumentValidator:
    """The compiled ``inputSchema`` of one tool."""

    __slots__ = ("_cls", "_schema", "_validator")

    def __init__(self, input_schema: Mapping[str, Any]) -> None:
        if not isinstance(input_schema, Mapping):
            raise ConversionError(
                f"the input schema must be a JSON object, not {type(input_schema).__name__}",
                path="$.inputSchema",
            )
        schema = dict(input_schema)
        cls = _validator_class(schema)
        _check_schema(cls, schema)
        self._schema = schema
        self._cls = cls
        # Built on first use: most tools of a large fleet are never called, and building costs ~25 µs.
        self._validator: Validator | None = None

    def validate(self, arguments: Mapping[str, Any] | None) -> dict[str, Any]:
        """Return a coerced, default-filled copy of ``arguments``, or raise ``InvalidArguments``."""
        if arguments is None:
            arguments = {}
        if not isinstance(arguments, Mapping):
            raise InvalidArguments(
                [f"at $: the arguments must be a JSON object, not {type(arguments).__name__}"]
            )
        coerced = _coerce_object(arguments, self._schema)
        try:
            validator = self._validator
            if validator is None:
                validator = self._validator = self._cls(self._schema)
            errors = sorted(validator.iter_errors(coerced), key=lambda e: (e.json_path, e.message))
        except referencing.exceptions.Unresolvable as exc:
            raise InvocationError(
                f"The tool's input schema refers to {exc.ref!r}, which cannot be resolved; "
                "the operator must fix the tool's inputSchema."
            ) from exc
        if errors:
            raise InvalidArguments([_problem(e.json_path, e.message) for e in errors])
        return coerced


def check_schema(schema: Mapping[str, Any], prefix: str = "$.inputSchema") -> None:
    """``ConversionError`` unless ``schema`` is valid under its draft's meta-schema; paths start at ``prefix``."""
    _check_schema(_validator_class(schema), dict(schema), prefix)


def _check_schema(cls: type[Validator], schema: dict[str, Any], prefix: str = "$.inputSchema") -> None:
    """Reject a schema that is not valid under its draft's meta-schema.

    ``jsonschema``'s own ``check_schema`` costs ~0.5 ms a schema under the
    2020-12 meta-schema (``$dynamicRef`` resolution in Python); at 100,000
    tools that alone blows the initial-sync budget. ``jsonschema_rs`` checks
    the same meta-schemas in microseconds. It does not assert the ``regex``
    format, which the Python validator relies on at call time, so patterns are
    compiled here; and ``$schema`` is pinned to the draft we validate with, so
    an unknown ``$schema`` never makes it fetch anything over the network.
    The rare failure is re-checked by ``jsonschema`` for its familiar message.
    """
    pinned = {**schema, "$schema": _META_URIS[cls]}
    try:
        jsonschema_rs.meta.validate(pinned)
        _check_patterns(schema, prefix)
    except jsonschema_rs.ValidationError as exc:
        try:
            cls.check_schema(schema)
        except SchemaError as py_exc:
            raise _schema_error(py_exc.message, _json_path(prefix, py_exc.absolute_path)) from exc
        raise _schema_error(exc.message, _json_path(prefix, list(exc.instance_path))) from exc
    except jsonschema_rs.ReferencingError as exc:
        raise _schema_error(str(exc), prefix) from exc


def _schema_error(message: str, path: str) -> ConversionError:
    field = "outputSchema" if path.startswith("$.outputSchema") else "inputSchema"
    human = "output schema" if field == "outputSchema" else "input schema"
    return ConversionError(f"the {human} is not a valid JSON Schema: {message}; fix the tool's {field}", path=path)


# Keywords whose values are instance data, not subschemas: a "pattern" key inside them is not a regex.
_DATA_KEYWORDS = frozenset({"const", "enum", "default", "examples"})


def _check_patterns(node: Any, path: str) -> None:
    if isinstance(node, Mapping):
        for key, value in node.items():
            if key in _DATA_KEYWORDS:
                continue
            where = f"{path}.{key}"
            if key == "pattern" and isinstance(value, str):
                _compile(value, where)
            elif key == "patternProperties" and isinstance(value, Mapping):
                for regex in value:
                    _compile(str(regex), f"{where}.{regex}")
            _check_patterns(value, where)
    elif isinstance(node, list):
        for index, item in enumerate(node):
            _check_patterns(item, f"{path}[{index}]")


def _compile(regex: str, path: str) -> None:
    try:
        re.compile(regex)
    except re.error as exc:
        raise _schema_error(f"{regex!r} is not a regular expression this gateway can use ({exc})", path) from exc


def _validator_class(schema: Mapping[str, Any]) -> type[Validator]:
    declared = schema.get("$schema")
    if isinstance(declared, str):
        found = _DRAFTS_BY_URI.get(_draft_key(declared))
        if found is not None:
            return found
    return jsonschema.Draft202012Validator


def _problem(path: str, message: str) -> str:
    text = f"at {path}: {message}"
    if len(text) > _MAX_PROBLEM_CHARS:
        text = text[: _MAX_PROBLEM_CHARS - 1] + "…"
    return text


def _json_path(prefix: str, parts: Sequence[str | int]) -> str:
    path = prefix
    for part in parts:
        path += f"[{part}]" if isinstance(part, int) else f".{part}"
    return path


def _schema_types(schema: Mapping[str, Any]) -> frozenset[str]:
    declared = schema.get("type")
    if isinstance(declared, str):
        return frozenset((declared,))
    if isinstance(declared, list):
        return frozenset(t for t in declared if isinstance(t, str))
    return frozenset()


def _coerce(value: Any, schema: Any) -> Any:
    if not isinstance(schema, Mapping):
        return copy.deepcopy(value)
    types = _schema_types(schema)
    if isinstance(value, str) and types and "string" not in types:
        return _coerce_string(value, types)
    if isinstance(value, Mapping) and (not types or "object" in types):
        return _coerce_object(value, schema)
    if isinstance(value, list) and (not types or "array" in types):
        items = schema.get("items")
        return [_coerce(item, items) for item in value]
    return copy.deepcopy(value)


def _coerce_string(value: str, types: frozenset[str]) -> Any:
    """Turn ``"3"``, ``"2.5"``, ``"true"`` into what the schema asks for; the rest is for validation."""
    text = value.strip()
    if "integer" in types and _INTEGER.fullmatch(text):
        return int(text)
    if "number" in types:
        if _INTEGER.fullmatch(text):
            return int(text)
        try:
            number = float(text)
        except ValueError:
            pass
        else:
            if math.isfinite(number):
                return number
    if "boolean" in types and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return value


def _coerce_object(value: Mapping[str, Any], schema: Mapping[str, Any]) -> dict[str, Any]:
    properties = schema.get("properties")
    if not isinstance(properties, Mapping):
        properties = {}
    result = {key: _coerce(item, properties.get(key)) for key, item in value.items()}
    for key, subschema in properties.items():
        if key not in result and isinstance(subschema, Mapping) and "default" in subschema:
            result[key] = copy.deepcopy(subschema["default"])
    return result
