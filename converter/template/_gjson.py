"""The GJSON path subset behind Higress' ``gjson "<path>"`` template function.

Higress renders response templates with a gjson-backed fork of
``text/template`` whose ``gjson`` function evaluates a GJSON path
(https://github.com/tidwall/gjson#path-syntax) against the current data.
Specs in the wild use the simple parts of that syntax, which are supported:

- ``a.b.c`` keys, ``items.0`` array indexes, ``\\.`` (and any ``\\x``) escapes;
- ``*`` and ``?`` wildcards in a key (first matching key);
- ``items.#`` (array length) and ``items.#.name`` (map the rest over the array);
- queries ``items.#(age>40)`` (first match) and ``items.#(age>40)#`` (all
  matches) with ``== != < <= > >= % !%`` against a quoted string, number,
  ``true``/``false`` or a bare word, ``%`` being a ``*``/``?`` pattern;
- modifiers ``@this``, ``@reverse``, ``@keys``, ``@values``, ``@flatten``.

Multipaths (``{a,b}`` / ``[a,b]``), pipes (``|``), literals (``!true``),
JSON lines (``..``) and ``&&``/``||`` in queries are refused with a message.
Paths compile once; ``get`` is a loop over the compiled steps.
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mcpgw.converter.template._values import is_number


class GjsonPathError(ValueError):
    """A GJSON path that is malformed or uses syntax this engine does not support."""


_MISSING: Any = object()


@dataclass(frozen=True, slots=True)
class _Query:
    path: tuple[Step, ...]
    op: str
    raw: str
    text: str
    pattern: re.Pattern[str] | None


@dataclass(frozen=True, slots=True)
class Step:
    kind: str  # key | wild | hash | query | modifier
    key: str = ""
    pattern: re.Pattern[str] | None = None
    query: _Query | None = None
    all_matches: bool = False


_MODIFIERS = frozenset({"this", "reverse", "keys", "values", "flatten"})
_OPERATORS = ("==", "!=", "<=", ">=", "!%", "=", "<", ">", "%")


def _split(path: str) -> list[str]:
    """Split on dots outside escapes, parentheses and quotes; keep escapes for later."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    quoted = False
    i = 0
    while i < len(path):
        char = path[i]
        if char == "\\" and i + 1 < len(path):
            current.append(path[i : i + 2])
            i += 2
            continue
        if quoted:
            quoted = char != '"'
        elif char == '"' and depth:
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise GjsonPathError("unbalanced ')' in the path")
        elif char == "." and not depth:
            parts.append("".join(current))
            current = []
            i += 1
            continue
        elif char == "|" and not depth:
            raise GjsonPathError("pipes ('|') in GJSON paths are not supported; use dots")
        current.append(char)
        i += 1
    if depth or quoted:
        raise GjsonPathError("unclosed '(' or quote in the path")
    parts.append("".join(current))
    return parts


def _unescape(raw: str) -> str:
    return re.sub(r"\\(.)", r"\1", raw, flags=re.DOTALL)


def _glob(raw: str) -> re.Pattern[str]:
    """A GJSON ``*``/``?`` pattern as a regex; escaped characters are literal."""
    out: list[str] = []
    i = 0
    while i < len(raw):
        char = raw[i]
        if char == "\\" and i + 1 < len(raw):
            out.append(re.escape(raw[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "*" else ("." if char == "?" else re.escape(char)))
        i += 1
    return re.compile("".join(out), re.DOTALL)


def _has_wildcard(raw: str) -> bool:
    return bool(re.search(r"(?<!\\)[*?]", raw))


@functools.lru_cache(maxsize=512)
def compile_path(path: str) -> tuple[Step, ...]:
    """Compile a GJSON path or raise GjsonPathError saying what is wrong."""
    if not path:
        raise GjsonPathError("the GJSON path is empty")
    if path[0] in "{[!" or path.startswith(".."):
        raise GjsonPathError("multipaths, literals and JSON lines are not supported in GJSON paths")
    steps: list[Step] = []
    for part in _split(path):
        if part == "":
            raise GjsonPathError("empty component in the path (two dots in a row?)")
        if part == "#":
            steps.append(Step("hash"))
        elif part.startswith("#("):
            steps.append(_compile_query(part))
        elif part.startswith("@"):
            name = part[1:].split(":", 1)[0]
            if name not in _MODIFIERS or ":" in part:
                raise GjsonPathError(
                    f"modifier @{name} is not supported; use one of " + ", ".join(f"@{m}" for m in sorted(_MODIFIERS))
                )
            steps.append(Step("modifier", key=name))
        elif _has_wildcard(part):
            steps.append(Step("wild", pattern=_glob(part)))
        else:
            steps.append(Step("key", key=_unescape(part)))
    return tuple(steps)


def _compile_query(part: str) -> Step:
    all_matches = part.endswith(")#")
    close = len(part) - (2 if all_matches else 1)
    if part[close] != ")":
        raise GjsonPathError("a query must look like #(...) or #(...)#")
    body = part[2:close]
    if "&&" in body or "||" in body:
        raise GjsonPathError("&& and || in GJSON queries are not supported")
    left, op, raw = _split_condition(body)
    path = compile_path(left) if left else ()
    raw = raw.strip()
    text = raw
    if raw.startswith('"'):
        try:
            text = json.loads(raw)
        except ValueError as exc:
            raise GjsonPathError("the quoted value in the query is not a valid string") from exc
    pattern = _glob(text) if op in ("%", "!%") else None
    query = _Query(path, "=" if op == "==" else op, raw, text, pattern)
    return Step("query", query=query, all_matches=all_matches)


def _split_condition(body: str) -> tuple[str, str, str]:
    depth = 0
    quoted = False
    i = 0
    while i < len(body):
        char = body[i]
        if char == "\\":
            i += 2
            continue
        if quoted:
            quoted = char != '"'
        elif char == '"':
            quoted = True
        elif char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
        elif not depth:
            for op in _OPERATORS:
                if body.startswith(op, i):
                    return body[:i].strip(), op, body[i + len(op) :]
        i += 1
    return body.strip(), "", ""


def _compare(op: str, left: Any, right: Any) -> bool:
    comparisons: dict[str, Callable[[Any, Any], bool]] = {
        "=": lambda a, b: bool(a == b),
        "!=": lambda a, b: bool(a != b),
        "<": lambda a, b: bool(a < b),
        "<=": lambda a, b: bool(a <= b),
        ">": lambda a, b: bool(a > b),
        ">=": lambda a, b: bool(a >= b),
    }
    return comparisons[op](left, right)


def _matches(element: Any, query: _Query) -> bool:
    value = _get(element, query.path, 0) if query.path else element
    if value is _MISSING:
        return False
    if not query.op:
        return True
    op = query.op
    if isinstance(value, str):
        if query.pattern is not None:
            return bool(query.pattern.fullmatch(value)) == (op == "%")
        return _compare(op, value, query.text)
    if isinstance(value, bool):
        # GJSON orders false before true and compares with the literal's text.
        literal = query.raw
        return {
            "=": literal == str(value).lower(),
            "!=": literal != str(value).lower(),
            "<": not value and literal == "true",
            "<=": not value or literal == "true",
            ">": value and literal == "false",
            ">=": value or literal == "false",
        }.get(op, False)
    if is_number(value) and query.pattern is None:
        try:
            number = float(query.raw)
        except ValueError:
            number = 0.0
        return _compare(op, value, number)
    return False


def get(data: Any, steps: tuple[Step, ...]) -> Any:
    """The value at the compiled path, or None when nothing is there (GJSON's "not exists")."""
    value = _get(data, steps, 0)
    return None if value is _MISSING else value


def _get(value: Any, steps: tuple[Step, ...], start: int) -> Any:
    for position in range(start, len(steps)):
        step = steps[position]
        kind = step.kind
        if kind == "key":
            if isinstance(value, dict):
                value = value.get(step.key, _MISSING)
            elif isinstance(value, list) and step.key.isdigit():
                index = int(step.key)
                value = value[index] if index < len(value) else _MISSING
            else:
                return _MISSING
        elif kind == "wild":
            if not isinstance(value, dict):
                return _MISSING
            assert step.pattern is not None
            matched = next((key for key in value if step.pattern.fullmatch(key)), None)
            value = _MISSING if matched is None else value[matched]
        elif kind == "hash":
            if not isinstance(value, list):
                return _MISSING
            if position == len(steps) - 1:
                return len(value)
            return _map_rest(value, steps, position + 1)
        elif kind == "query":
            if not isinstance(value, list):
                return _MISSING
            assert step.query is not None
            query = step.query
            if step.all_matches:
                return _map_rest([item for item in value if _matches(item, query)], steps, position + 1)
            value = next((item for item in value if _matches(item, query)), _MISSING)
        else:
            value = _modify(step.key, value)
        if value is _MISSING:
            return _MISSING
    return value


def _map_rest(items: list[Any], steps: tuple[Step, ...], start: int) -> list[Any]:
    results = (_get(item, steps, start) for item in items)
    return [result for result in results if result is not _MISSING]


def _modify(name: str, value: Any) -> Any:
    if name == "reverse":
        if isinstance(value, list):
            return value[::-1]
        if isinstance(value, dict):
            return dict(reversed(value.items()))
        return value
    if name == "keys":
        return list(value) if isinstance(value, dict) else _MISSING
    if name == "values":
        return list(value.values()) if isinstance(value, dict) else _MISSING
    if name == "flatten":
        if not isinstance(value, list):
            return value
        flat: list[Any] = []
        for item in value:
            flat.extend(item if isinstance(item, list) else [item])
        return flat
    return value
