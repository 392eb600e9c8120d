"""Reading JSON that anyone could have written: one loader with the limits every layer can live with.

Nacos configs, instances files and listing answers are input from outside
the gateway: whoever can write to Nacos (or to the files tree) decides what
they contain.  Python's ``json`` module accepts more than the gateway can
serve, and fails in ways no caller expects:

- ``NaN``, ``Infinity`` and ``1e999`` parse into floats that no JSON encoder
  with ``allow_nan=False`` (Starlette's, the SDK's) will write again, so a
  weight or a schema bound like that made every later answer that shows it
  fail;
- a lone surrogate escape (``"\\ud800"``) parses into a ``str`` that cannot be
  encoded as UTF-8, which broke every ``tools/list`` that included it;
- nesting is limited only by the interpreter's stack: ~1,000 levels raise
  ``RecursionError`` (not a ``ValueError``), which escaped every handler, and
  a few hundred levels parse but break the first recursive walk or encoder
  downstream.

``load_json`` parses and then checks the whole document, so whatever it
returns can be walked recursively, re-encoded and served.  Everything it
rejects is a ``JsonDocumentError`` (a ``ValueError``) whose ``reason`` is a
sentence and whose ``path`` is the JSON path of the first offending value.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

MAX_DEPTH = 64
"""Containers nested in one document; real specs stay under 15 (a JSON Schema of nested objects)."""

MAX_DOCUMENT_CHARS = 10 * 1024 * 1024
"""Characters of one document: Nacos' own default limit for a config's content is 10 MiB."""

_SURROGATE = re.compile(r"[\ud800-\udfff]")
_ESCAPE = "\\u"


class JsonDocumentError(ValueError):
    """A document that is not JSON the gateway can use; ``reason`` says why, ``path`` where."""

    def __init__(self, reason: str, path: str = "$") -> None:
        self.reason = reason
        self.path = path
        super().__init__(reason if path == "$" else f"at {path}: {reason}")


class _NonFinite:
    """Stands in for ``NaN``/``Infinity``/``1e999`` while parsing, so the check can say where it was."""

    __slots__ = ("text",)

    def __init__(self, text: str) -> None:
        self.text = text


def load_json(text: str, *, max_depth: int = MAX_DEPTH, finite: bool = True) -> Any:
    """The parsed document, or ``JsonDocumentError``; see the module docstring for what is checked.

    ``finite=False`` keeps ``NaN``/``Infinity``/``1e999`` as floats, for a caller that checks its numbers
    one by one (an instances file drops the one instance whose weight is not finite, not the whole file).
    """
    if len(text) > MAX_DOCUMENT_CHARS:
        raise JsonDocumentError(
            f"the document has {len(text)} characters, more than the {MAX_DOCUMENT_CHARS} allowed; split it"
        )
    non_finite: list[_NonFinite] = []

    def constant(name: str) -> _NonFinite | float:
        if not finite:
            return float(name)
        non_finite.append(_NonFinite(name))
        return non_finite[-1]

    def number(literal: str) -> float | _NonFinite:
        value = float(literal)
        return value if math.isfinite(value) or not finite else constant(literal)

    try:
        value = json.loads(text, parse_constant=constant, parse_float=number)
    except json.JSONDecodeError as exc:
        raise JsonDocumentError(f"not valid JSON (line {exc.lineno} column {exc.colno}: {exc.msg})") from exc
    except RecursionError as exc:
        reason = f"nested deeper than the {max_depth} levels allowed"
        raise JsonDocumentError(reason, _too_deep(text, max_depth)) from exc
    # A surrogate can only come from a backslash-u escape or a str that already held one: skip the scan otherwise.
    check_strings = _ESCAPE in text or _SURROGATE.search(text) is not None
    # Each level of nesting costs a bracket: a document with few brackets cannot be too deep.
    if non_finite or check_strings or text.count("[") + text.count("{") > max_depth:
        check_value(value, max_depth=max_depth, check_strings=check_strings, finite=finite)
    return value


def check_value(value: Any, *, max_depth: int = MAX_DEPTH, check_strings: bool = True, finite: bool = True) -> None:
    """``JsonDocumentError`` unless ``value`` is within ``max_depth``, its numbers finite and all its text UTF-8."""
    stack: list[tuple[Any, int, tuple[str | int, ...]]] = [(value, 1, ())]
    while stack:
        node, depth, where = stack.pop()
        if isinstance(node, dict):
            if depth > max_depth:
                raise JsonDocumentError(f"nested deeper than the {max_depth} levels allowed", _path(where))
            for key, item in node.items():
                if check_strings and _SURROGATE.search(key):
                    raise JsonDocumentError(_surrogate_reason("key", key), _path(where))
                stack.append((item, depth + 1, (*where, key)))
        elif isinstance(node, list):
            if depth > max_depth:
                raise JsonDocumentError(f"nested deeper than the {max_depth} levels allowed", _path(where))
            stack.extend((item, depth + 1, (*where, index)) for index, item in enumerate(node))
        elif check_strings and isinstance(node, str) and _SURROGATE.search(node):
            raise JsonDocumentError(_surrogate_reason("text", node), _path(where))
        elif isinstance(node, _NonFinite) or (finite and isinstance(node, float) and not math.isfinite(node)):
            shown = node.text if isinstance(node, _NonFinite) else repr(node)
            reason = f"{shown} is not a finite number; JSON cannot carry it, write a number"
            raise JsonDocumentError(reason, _path(where))


def _too_deep(text: str, max_depth: int) -> str:
    """The JSON path of the first container nested deeper than ``max_depth`` (a scan of the text: the
    parser gave up before it could say)."""
    frames: list[list[Any]] = []  # [is_object, key or index, expecting a key]
    index, end = 0, len(text)
    while index < end:
        char = text[index]
        if char == '"':
            close = index + 1
            while close < end and text[close] != '"':
                close += 2 if text[close] == "\\" else 1
            if frames and frames[-1][0] and frames[-1][2]:
                try:
                    frames[-1][1] = json.loads(text[index : close + 1])
                except ValueError:
                    frames[-1][1] = text[index + 1 : close]
            index = close
        elif char in "{[":
            if len(frames) >= max_depth:
                return _path(tuple(frame[1] for frame in frames))
            frames.append([char == "{", 0 if char == "[" else "", char == "{"])
        elif char in "}]" and frames:
            frames.pop()
        elif char == ":" and frames:
            frames[-1][2] = False
        elif char == "," and frames:
            if frames[-1][0]:
                frames[-1][2] = True
            else:
                frames[-1][1] += 1
        index += 1
    return "$"


def has_lone_surrogate(text: str) -> bool:
    """Whether ``text`` holds a code point that UTF-8 cannot encode."""
    return _SURROGATE.search(text) is not None


def _surrogate_reason(what: str, text: str) -> str:
    found = _SURROGATE.search(text)
    code = f"\\u{ord(found.group()):04x}" if found else "a surrogate"
    return f"the {what} holds {code}, half of a UTF-16 pair, which is not a character; fix the escape"


def _path(parts: tuple[str | int, ...]) -> str:
    path = "$"
    for part in parts:
        if isinstance(part, int):
            path += f"[{part}]"
        elif re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", part):
            path += f".{part}"
        else:
            path += f"[{json.dumps(part, ensure_ascii=True)}]"
    return path
