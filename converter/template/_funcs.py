"""The functions a template may call: Go's builtins and the Sprig subset specs use.

Each function takes the already evaluated arguments (a piped value comes
last, as in Go) and returns a JSON-like value.  The table records arity so
the parser can reject ``upper 1 2`` before any render, and a one-line
description that the README table and error messages reuse.  Typed Sprig
parameters are checked the way Go's ``reflect`` call would (``upper 1`` is an
error), and messages name types, never values: a value may be a credential.

Sprig semantics kept on purpose: ``add``/``sub``/``div``/... work on int64
after Sprig's lenient casting (``add "2" 1.9`` is 3), ``b64dec`` of bad input
returns the decoder's message as text, ``fromJson`` of bad input is nil,
``split`` returns a map ``_0, _1, ...``.  Deviations: ``now`` is an RFC 3339
UTC string (there is no Go ``time.Time``), ``keys`` is sorted, ``trunc``
counts characters rather than bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import html
import json
import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType
from typing import Any
from urllib.parse import quote_plus

from mcpgw.converter.template._budget import Budget, measure
from mcpgw.converter.template._fmt import sprint, sprintf, sprintln
from mcpgw.converter.template._values import (
    NO_VALUE,
    go_quote,
    go_string,
    is_number,
    sorted_keys,
    to_json,
    type_name,
)


class FuncError(Exception):
    """A function refused its arguments; the message names types, never values."""


@dataclass(frozen=True, slots=True)
class Func:
    impl: Callable[..., Any] | None  # None: evaluated by the engine itself (and, or, gjson)
    min_args: int
    max_args: int | None
    description: str
    budgeted: bool = False
    """``impl`` takes the render's ``Budget`` first: it can build a result far larger than its arguments."""


# -- argument checks ----------------------------------------------------------------------------


def _str(value: Any, position: int) -> str:
    if isinstance(value, str):
        return value
    raise FuncError(f"argument {position} must be a string, got {type_name(value)}")


def _int(value: Any, position: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    raise FuncError(f"argument {position} must be an integer, got {type_name(value)}")


def _bool(value: Any, position: int) -> bool:
    if isinstance(value, bool):
        return value
    raise FuncError(f"argument {position} must be a boolean, got {type_name(value)}")


def _dict(value: Any, position: int) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    raise FuncError(f"argument {position} must be a map, got {type_name(value)}")


def _list(value: Any, position: int, what: str) -> list[Any]:
    if isinstance(value, list):
        return value
    raise FuncError(f"cannot find {what} on type {type_name(value)}")


# -- Go builtins ---------------------------------------------------------------------------------


def _not(value: Any) -> bool:
    return not value


def _len(value: Any) -> int:
    if isinstance(value, str):
        return len(value.encode())
    if isinstance(value, list | dict):
        return len(value)
    if value is None:
        raise FuncError("len of nil")
    raise FuncError(f"len of type {type_name(value)}")


def _index_arg(index: Any, size: int) -> int:
    if index is None:
        raise FuncError("cannot index slice/array with nil")
    if not isinstance(index, int) or isinstance(index, bool):
        raise FuncError(f"cannot index slice/array with type {type_name(index)}")
    if index < 0 or index >= size:
        raise FuncError(f"index out of range: {index}")
    return index


def _index(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("index of untyped nil")
    for index in indexes:
        if isinstance(item, list):
            item = item[_index_arg(index, len(item))]
        elif isinstance(item, str):
            data = item.encode()
            item = data[_index_arg(index, len(data))]
        elif isinstance(item, dict):
            if not isinstance(index, str):
                raise FuncError(f"a map key must be a string, got {type_name(index)}")
            item = item.get(index)
        elif item is None:
            raise FuncError("index of nil")
        else:
            raise FuncError(f"can't index item of type {type_name(item)}")
    return item


def _slice(item: Any, *indexes: Any) -> Any:
    if item is None:
        raise FuncError("slice of untyped nil")
    if len(indexes) == 3:
        raise FuncError("3-index slices are not supported")
    if isinstance(item, str):
        data = item.encode()
        bounds = [_slice_bound(index, len(data)) for index in indexes]
        start, end = (bounds + [0, len(data)][len(bounds) :])[:2]
        if start > end:
            raise FuncError(f"invalid slice index: {start} > {end}")
        return data[start:end].decode("utf-8", "replace")
    if isinstance(item, list):
        bounds = [_slice_bound(index, len(item)) for index in indexes]
        start, end = (bounds + [0, len(item)][len(bounds) :])[:2]
        if start > end:
            raise FuncError(f"invalid slice index: {start} > {end}")
        return item[start:end]
    raise FuncError(f"can't slice item of type {type_name(item)}")


def _slice_bound(index: Any, size: int) -> int:
    if not isinstance(index, int) or isinstance(index, bool):
        raise FuncError(f"cannot index slice/array with type {type_name(index)}")
    if index < 0 or index > size:
        raise FuncError(f"index out of range: {index}")
    return index


def _printf(budget: Budget, template: Any, *args: Any) -> str:
    return sprintf(_str(template, 1), args, limit=budget.max_size, room=budget.room)


def _escaper_input(args: tuple[Any, ...]) -> str:
    """Go's evalArgs for html/js/urlquery: one string as is, else Sprint with nil as <no value>."""
    if len(args) == 1 and isinstance(args[0], str):
        return args[0]
    return sprint([NO_VALUE if arg is None else arg for arg in args])


def _html(*args: Any) -> str:
    text = html.escape(_escaper_input(args), quote=False)
    return text.replace("'", "&#39;").replace('"', "&#34;").replace("\x00", "\ufffd")


_JS_ESCAPES = {
    "\\": "\\\\",
    "'": "\\'",
    '"': '\\"',
    "<": "\\u003C",
    ">": "\\u003E",
    "&": "\\u0026",
    "=": "\\u003D",
}


def _js(*args: Any) -> str:
    out: list[str] = []
    for char in _escaper_input(args):
        escaped = _JS_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char < " " or (char >= "\x80" and not char.isprintable()):
            out.append(f"\\u{ord(char):04X}")
        else:
            out.append(char)
    return "".join(out)


def _urlquery(*args: Any) -> str:
    return quote_plus(_escaper_input(args), safe="")


def _basic_kind(value: Any) -> str:
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if is_number(value):
        return "number"
    if isinstance(value, str):
        return "string"
    return "other"


def _eq(first: Any, *others: Any) -> bool:
    kind = _basic_kind(first)
    for other in others:
        other_kind = _basic_kind(other)
        if kind != other_kind:
            if kind != "nil" and other_kind != "nil":
                raise FuncError(f"incompatible types for comparison: {type_name(first)} and {type_name(other)}")
            continue
        if kind == "other":
            raise FuncError(f"non-comparable type {type_name(first)}")
        if first == other:
            return True
    return False


def _ne(first: Any, second: Any) -> bool:
    return not _eq(first, second)


def _ordered(first: Any, second: Any) -> tuple[Any, Any]:
    kind, other_kind = _basic_kind(first), _basic_kind(second)
    if kind not in ("number", "string") or other_kind not in ("number", "string"):
        raise FuncError(f"invalid type for comparison: {type_name(first)} and {type_name(second)}")
    if kind != other_kind:
        raise FuncError(f"incompatible types for comparison: {type_name(first)} and {type_name(second)}")
    return first, second


def _lt(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a < b)


def _le(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a <= b)


def _gt(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a > b)


def _ge(first: Any, second: Any) -> bool:
    a, b = _ordered(first, second)
    return bool(a >= b)


# -- Sprig: values and defaults ------------------------------------------------------------------


def _empty(value: Any) -> bool:
    return not value


def _default(fallback: Any, *given: Any) -> Any:
    if not given or not given[0]:
        return fallback
    return given[0]


def _coalesce(*values: Any) -> Any:
    return next((value for value in values if value), None)


def _ternary(if_true: Any, if_false: Any, condition: Any) -> Any:
    return if_true if _bool(condition, 3) else if_false


def _to_json(value: Any) -> str:
    try:
        return to_json(value)
    except ValueError:
        return ""


def _to_pretty_json(value: Any) -> str:
    try:
        return to_json(value, indent="  ")
    except ValueError:
        return ""


def _reject_constant(name: str) -> Any:
    raise ValueError(name)


def _from_json(text: Any) -> Any:
    try:
        return json.loads(_str(text, 1), parse_constant=_reject_constant)
    except ValueError:
        return None


def _b64enc(text: Any) -> str:
    return base64.b64encode(_str(text, 1).encode()).decode("ascii")


_B64_ALPHABET = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/=")


def _b64dec(text: Any) -> str:
    data = _str(text, 1).replace("\r", "").replace("\n", "")
    try:
        return base64.b64decode(data, validate=True).decode("utf-8", "replace")
    except (binascii.Error, ValueError):
        bad = next((i for i, char in enumerate(data) if char not in _B64_ALPHABET), len(data))
        return f"illegal base64 data at input byte {bad}"


def _strval(value: Any) -> str:
    return go_string(value)


def _int64(value: int) -> int:
    """Go's int64 arithmetic wraps around; Python's integers would grow without bound."""
    return ((value + (1 << 63)) & ((1 << 64) - 1)) - (1 << 63)


def _cast_int(value: Any) -> int:
    """spf13/cast's ToInt64, which Sprig's arithmetic uses: lenient, 0 when it cannot."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, int):
        return _int64(value)
    if isinstance(value, float):
        return _int64(int(value)) if value == value and abs(value) != float("inf") else 0
    if isinstance(value, str):
        text = re.sub(r"\.0*$", "", value)
        try:
            parsed = int(text, 0)
        except ValueError:
            if re.fullmatch(r"[+-]?0[0-7]+", text):
                parsed = int(text, 8)
            else:
                return 0
        # ParseInt refuses what does not fit in 64 bits, and cast then gives 0.
        return parsed if -(1 << 63) <= parsed < (1 << 63) else 0
    return 0


def _cast_float(value: Any) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return 0.0
    return 0.0


def _atoi(text: Any) -> int:
    value = _str(text, 1)
    return int(value) if re.fullmatch(r"[+-]?[0-9]+", value) else 0


# -- Sprig: arithmetic (int64, truncating like Go) -----------------------------------------------


def _trunc_div(a: int, b: int) -> int:
    if b == 0:
        raise FuncError("integer divide by zero")
    quotient = abs(a) // abs(b)
    return quotient if (a < 0) == (b < 0) else -quotient


def _add(*values: Any) -> int:
    return _int64(sum(_cast_int(value) for value in values))


def _add1(value: Any) -> int:
    return _int64(_cast_int(value) + 1)


def _sub(a: Any, b: Any) -> int:
    return _int64(_cast_int(a) - _cast_int(b))


def _mul(first: Any, *values: Any) -> int:
    product = _cast_int(first)
    for value in values:
        product = _int64(product * _cast_int(value))
    return product


def _div(a: Any, b: Any) -> int:
    return _int64(_trunc_div(_cast_int(a), _cast_int(b)))


def _mod(a: Any, b: Any) -> int:
    x, y = _cast_int(a), _cast_int(b)
    return x - y * _trunc_div(x, y)


def _max(first: Any, *values: Any) -> int:
    return max([_cast_int(first), *(_cast_int(value) for value in values)])


def _min(first: Any, *values: Any) -> int:
    return min([_cast_int(first), *(_cast_int(value) for value in values)])


def _addf(*values: Any) -> float:
    return float(sum(_cast_float(value) for value in values))


def _subf(first: Any, *values: Any) -> float:
    result = _cast_float(first)
    for value in values:
        result -= _cast_float(value)
    return result


def _mulf(first: Any, *values: Any) -> float:
    result = _cast_float(first)
    for value in values:
        result *= _cast_float(value)
    return result


def _divf(first: Any, *values: Any) -> float:
    result = _cast_float(first)
    for value in values:
        divisor = _cast_float(value)
        if divisor == 0:
            raise FuncError("division by zero")
        result /= divisor
    return result


# -- Sprig: strings ------------------------------------------------------------------------------


def _is_title_separator(char: str) -> bool:
    if char < "\x80":
        return not (char.isalnum() or char == "_")
    return not (char.isalpha() or char.isdigit()) and char.isspace()


def _title(text: Any) -> str:
    out: list[str] = []
    previous_is_separator = True
    for char in _str(text, 1):
        out.append(char.upper() if previous_is_separator else char)
        previous_is_separator = _is_title_separator(char)
    return "".join(out)


def _quote(*values: Any) -> str:
    return " ".join(go_quote(_strval(value)) for value in values if value is not None)


def _squote(*values: Any) -> str:
    return " ".join(f"'{_strval(value)}'" for value in values if value is not None)


def _go_split(text: str, separator: str) -> list[str]:
    return list(text) if separator == "" else text.split(separator)


def _split(separator: Any, text: Any) -> dict[str, Any]:
    parts = _go_split(_str(text, 2), _str(separator, 1))
    return {f"_{i}": part for i, part in enumerate(parts)}


def _split_list(separator: Any, text: Any) -> list[Any]:
    return list(_go_split(_str(text, 2), _str(separator, 1)))


def _join(separator: Any, values: Any) -> str:
    if isinstance(values, list):
        parts = [_strval(value) for value in values if value is not None]
    else:
        parts = [] if values is None else [_strval(values)]
    return _str(separator, 1).join(parts)


def _trunc(length: Any, text: Any) -> str:
    count, value = _int(length, 1), _str(text, 2)
    if count < 0:
        return value[count:] if len(value) + count > 0 else value
    return value[:count]


def _repeat(budget: Budget, count: Any, text: Any) -> str:
    times = _int(count, 1)
    if times < 0:
        raise FuncError("negative repeat count")
    value = _str(text, 2)
    budget.room(times * len(value))
    return value * times


def _indent(budget: Budget, spaces: Any, text: Any) -> str:
    width, value = max(_int(spaces, 1), 0), _str(text, 2)
    budget.room(len(value) + width * (value.count("\n") + 1))
    pad = " " * width
    return pad + value.replace("\n", "\n" + pad)


def _nindent(budget: Budget, spaces: Any, text: Any) -> str:
    return "\n" + _indent(budget, spaces, text)


def _nospace(text: Any) -> str:
    return "".join(char for char in _str(text, 1) if not char.isspace())


def _regex(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise FuncError(f"invalid regular expression: {exc.msg}") from None


def _regex_match(pattern: Any, text: Any) -> bool:
    try:
        compiled = _regex(_str(pattern, 1))
    except FuncError:
        return False
    return compiled.search(_str(text, 2)) is not None


_GO_TEMPLATE_REF = re.compile(r"\$(?:\{(\w+)\}|(\w+)|(\$))")


def _regex_replace_all(budget: Budget, pattern: Any, text: Any, replacement: Any) -> str:
    """Go's ReplaceAllString: ``$1``, ``${1}``, ``${name}`` expand; ``$$`` is a dollar."""
    compiled = _regex(_str(pattern, 1))
    template = _str(replacement, 3)
    subject = _str(text, 2)
    grown = len(subject)

    def expand(match: re.Match[str]) -> str:
        def group(ref: re.Match[str]) -> str:
            if ref.group(3):
                return "$"
            name = ref.group(1) or ref.group(2)
            try:
                found = match.group(int(name) if name.isdigit() else name)
            except IndexError:
                return ""
            return found or ""

        nonlocal grown
        expanded = _GO_TEMPLATE_REF.sub(group, template)
        grown += len(expanded) - (match.end() - match.start())
        budget.room(grown)
        budget.charge(1)
        return expanded

    return compiled.sub(expand, subject)


# -- Sprig: lists and dicts ----------------------------------------------------------------------


def _list_of(budget: Budget, *values: Any) -> list[Any]:
    result = list(values)
    measure(result, budget)
    return result


def _dict_of(budget: Budget, *values: Any) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for i in range(0, len(values), 2):
        key = _strval(values[i])
        result[key] = values[i + 1] if i + 1 < len(values) else ""
    measure(result, budget)
    return result


def _has_key(mapping: Any, key: Any) -> bool:
    return _str(key, 2) in _dict(mapping, 1)


def _keys(*mappings: Any) -> list[Any]:
    return [key for i, mapping in enumerate(mappings, 1) for key in sorted_keys(_dict(mapping, i))]


def _first(values: Any) -> Any:
    items = _list(values, 1, "first")
    return items[0] if items else None


def _last(values: Any) -> Any:
    items = _list(values, 1, "last")
    return items[-1] if items else None


def _uniq(budget: Budget, values: Any) -> list[Any]:
    # Scalars are found in a set (equal scalars hash alike, so this keeps ``in``'s equality); only lists
    # and maps are compared one by one, and those comparisons are charged as steps.
    result: list[Any] = []
    seen: set[Any] = set()
    containers: list[Any] = []
    for item in _list(values, 1, "uniq"):
        if isinstance(item, list | dict):
            budget.charge(len(containers) + 1)
            if item in containers:
                continue
            containers.append(item)
        elif item in seen:
            continue
        else:
            seen.add(item)
        result.append(item)
    return result


# -- Sprig: misc ---------------------------------------------------------------------------------


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256sum(text: Any) -> str:
    return hashlib.sha256(_str(text, 1).encode()).hexdigest()


def _uuidv4() -> str:
    return str(uuid.uuid4())


def _upper(text: Any) -> str:
    return _str(text, 1).upper()


def _lower(text: Any) -> str:
    return _str(text, 1).lower()


def _trim(text: Any) -> str:
    return _str(text, 1).strip()


def _trim_prefix(prefix: Any, text: Any) -> str:
    return _str(text, 2).removeprefix(_str(prefix, 1))


def _trim_suffix(suffix: Any, text: Any) -> str:
    return _str(text, 2).removesuffix(_str(suffix, 1))


def _replace(budget: Budget, old: Any, new: Any, text: Any) -> str:
    before, after, value = _str(old, 1), _str(new, 2), _str(text, 3)
    count = len(value) + 1 if before == "" else value.count(before)
    budget.room(len(value) + count * (len(after) - len(before)))
    return value.replace(before, after)


def _contains(substring: Any, text: Any) -> bool:
    return _str(substring, 1) in _str(text, 2)


def _has_prefix(prefix: Any, text: Any) -> bool:
    return _str(text, 2).startswith(_str(prefix, 1))


def _has_suffix(suffix: Any, text: Any) -> bool:
    return _str(text, 2).endswith(_str(suffix, 1))


def _print(*args: Any) -> str:
    return sprint(args)


def _println(*args: Any) -> str:
    return sprintln(args)


_VARIADIC = None

FUNCTIONS: Mapping[str, Func] = MappingProxyType(
    {
        # Go text/template builtins
        "and": Func(None, 1, _VARIADIC, "first empty argument, or the last one (short-circuits)"),
        "or": Func(None, 1, _VARIADIC, "first non-empty argument, or the last one (short-circuits)"),
        "not": Func(_not, 1, 1, "boolean negation of the argument's truth"),
        "len": Func(_len, 1, 1, "length of a string (bytes), list or map"),
        "index": Func(_index, 1, _VARIADIC, "index x 1 2 is x[1][2]; lists by int, maps by string key"),
        "slice": Func(_slice, 1, 3, "slice x 1 2 is x[1:2] for strings (bytes) and lists"),
        "print": Func(_print, 0, _VARIADIC, "fmt.Sprint of the arguments"),
        "printf": Func(_printf, 1, _VARIADIC, "fmt.Sprintf: %v %s %d %q %f %e %g %t %x %o %b %c %U %T", budgeted=True),
        "println": Func(_println, 0, _VARIADIC, "fmt.Sprintln of the arguments"),
        "eq": Func(_eq, 2, _VARIADIC, "eq a b c is a==b || a==c"),
        "ne": Func(_ne, 2, 2, "a != b"),
        "lt": Func(_lt, 2, 2, "a < b (numbers or strings)"),
        "le": Func(_le, 2, 2, "a <= b (numbers or strings)"),
        "gt": Func(_gt, 2, 2, "a > b (numbers or strings)"),
        "ge": Func(_ge, 2, 2, "a >= b (numbers or strings)"),
        "html": Func(_html, 0, _VARIADIC, "HTML-escaped text of the arguments"),
        "js": Func(_js, 0, _VARIADIC, "JavaScript-escaped text of the arguments"),
        "urlquery": Func(_urlquery, 0, _VARIADIC, "query-escaped text of the arguments (space is +)"),
        # Higress
        "gjson": Func(None, 1, 1, 'gjson "a.b.0" evaluates a GJSON path against the current data'),
        # Sprig
        "default": Func(_default, 1, _VARIADIC, "default d x is x unless x is empty, else d"),
        "empty": Func(_empty, 1, 1, "true for nil, false, 0, and empty strings, lists and maps"),
        "coalesce": Func(_coalesce, 0, _VARIADIC, "first non-empty argument"),
        "ternary": Func(_ternary, 3, 3, "ternary a b cond is a if cond (a boolean) else b"),
        "toJson": Func(_to_json, 1, 1, "compact JSON, keys sorted, as Go encodes it"),
        "toPrettyJson": Func(_to_pretty_json, 1, 1, "JSON indented by two spaces"),
        "fromJson": Func(_from_json, 1, 1, "parse a JSON string (nil if it is not JSON)"),
        "b64enc": Func(_b64enc, 1, 1, "standard base64 of a string"),
        "b64dec": Func(_b64dec, 1, 1, "decode standard base64 (the error text if invalid, like Sprig)"),
        "add": Func(_add, 0, _VARIADIC, "integer sum (arguments cast to int64)"),
        "add1": Func(_add1, 1, 1, "x + 1 as an integer"),
        "sub": Func(_sub, 2, 2, "integer a - b"),
        "mul": Func(_mul, 1, _VARIADIC, "integer product"),
        "div": Func(_div, 2, 2, "integer a / b, truncated"),
        "mod": Func(_mod, 2, 2, "integer a % b (sign of a)"),
        "max": Func(_max, 1, _VARIADIC, "largest integer"),
        "min": Func(_min, 1, _VARIADIC, "smallest integer"),
        "addf": Func(_addf, 0, _VARIADIC, "float sum"),
        "subf": Func(_subf, 1, _VARIADIC, "float a - b - ..."),
        "mulf": Func(_mulf, 1, _VARIADIC, "float product"),
        "divf": Func(_divf, 1, _VARIADIC, "float a / b / ..."),
        "upper": Func(_upper, 1, 1, "upper case"),
        "lower": Func(_lower, 1, 1, "lower case"),
        "title": Func(_title, 1, 1, "first letter of each word in upper case"),
        "trim": Func(_trim, 1, 1, "strip leading and trailing white space"),
        "trimPrefix": Func(_trim_prefix, 2, 2, "trimPrefix p s removes prefix p from s"),
        "trimSuffix": Func(_trim_suffix, 2, 2, "trimSuffix x s removes suffix x from s"),
        "replace": Func(_replace, 3, 3, "replace old new s replaces every old by new in s", budgeted=True),
        "quote": Func(_quote, 0, _VARIADIC, "Go double-quoted strings, space separated (nil skipped)"),
        "squote": Func(_squote, 0, _VARIADIC, "single-quoted strings, space separated (nil skipped)"),
        "contains": Func(_contains, 2, 2, "contains sub s: whether s contains sub"),
        "hasPrefix": Func(_has_prefix, 2, 2, "hasPrefix p s: whether s starts with p"),
        "hasSuffix": Func(_has_suffix, 2, 2, "hasSuffix x s: whether s ends with x"),
        "split": Func(_split, 2, 2, "split sep s: a map {_0: first part, _1: second, ...}"),
        "splitList": Func(_split_list, 2, 2, "splitList sep s: a list of parts"),
        "join": Func(_join, 2, 2, "join sep list: the items as text joined by sep (nil skipped)"),
        "trunc": Func(_trunc, 2, 2, "trunc n s: first n characters (last -n if negative)"),
        "repeat": Func(_repeat, 2, 2, "repeat n s: s n times", budgeted=True),
        "nospace": Func(_nospace, 1, 1, "remove all white space"),
        "indent": Func(_indent, 2, 2, "indent n s: prefix every line with n spaces", budgeted=True),
        "nindent": Func(_nindent, 2, 2, "a newline, then indent n s", budgeted=True),
        "regexMatch": Func(_regex_match, 2, 2, "regexMatch re s: whether re matches somewhere in s"),
        "regexReplaceAll": Func(
            _regex_replace_all, 3, 3, "regexReplaceAll re s repl, with $1 / ${name}", budgeted=True
        ),
        "toString": Func(_strval, 1, 1, "the value as text (%v)"),
        "int": Func(_cast_int, 1, 1, "the value as an integer (0 if it is not one)"),
        "int64": Func(_cast_int, 1, 1, "the value as an integer (0 if it is not one)"),
        "float64": Func(_cast_float, 1, 1, "the value as a float (0 if it is not one)"),
        "atoi": Func(_atoi, 1, 1, "a decimal string as an integer (0 if it is not one)"),
        "list": Func(_list_of, 0, _VARIADIC, "a list of the arguments", budgeted=True),
        "dict": Func(_dict_of, 0, _VARIADIC, "dict k1 v1 k2 v2: a map (keys as text)", budgeted=True),
        "hasKey": Func(_has_key, 2, 2, "hasKey map key: whether the map has the key"),
        "keys": Func(_keys, 1, _VARIADIC, "the keys of the maps, sorted"),
        "first": Func(_first, 1, 1, "first item of a list (nil if empty)"),
        "last": Func(_last, 1, 1, "last item of a list (nil if empty)"),
        "uniq": Func(_uniq, 1, 1, "the list without repeated items", budgeted=True),
        "now": Func(_now, 0, 0, "current UTC time as RFC 3339 text"),
        "sha256sum": Func(_sha256sum, 1, 1, "hex SHA-256 of a string"),
        "uuidv4": Func(_uuidv4, 0, 0, "a random UUID"),
    }
)
