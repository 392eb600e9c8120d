"""How Go prints, compares and JSON-encodes the JSON-like values a template sees.

Go templates run on ``map[string]interface{}`` data, so what users see in
their output is Go's ``fmt`` and ``encoding/json`` behaviour, not Python's:
``1e+06`` rather than ``1000000.0``, ``map[a:1 b:2]`` rather than
``{'a': 1, 'b': 2}``, ``<nil>`` rather than ``None``.  Everything that turns a
value into text for a template lives here so the engine and the function
library agree on it.
"""

from __future__ import annotations

import json
import math
from decimal import Decimal
from typing import Any

NO_VALUE = "<no value>"
"""What an action prints for a missing key or a null, as Go does for map data."""


class JsonList(list[Any]):
    """A list produced by ``gjson``: printed as compact JSON, like Higress' gjson results."""


class JsonDict(dict[str, Any]):
    """An object produced by ``gjson``: printed as compact JSON, like Higress' gjson results."""


def type_name(value: Any) -> str:
    """The Go type a JSON-decoded value would have; used in messages instead of the value."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "[]interface {}"
    if isinstance(value, dict):
        return "map[string]interface {}"
    return type(value).__name__


def is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def sorted_keys(mapping: dict[Any, Any]) -> list[Any]:
    """Map keys in the order Go's fmt and range use (sorted)."""
    try:
        return sorted(mapping)
    except TypeError:
        return sorted(mapping, key=go_string)


def _float_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip digits of ``abs(value)`` and the decimal point position.

    ``value == 0.DIGITS × 10**point``; Python's ``repr`` and Go's ``strconv``
    both produce the shortest digits that read back to the same float.
    """
    if value == 0:
        return "0", 1
    decimal = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(map(str, decimal.digits))
    assert isinstance(decimal.exponent, int)
    point = len(digits) + decimal.exponent
    return digits.rstrip("0"), point


def _fixed(digits: str, point: int) -> str:
    if point <= 0:
        return "0." + "0" * -point + digits
    if point >= len(digits):
        return digits + "0" * (point - len(digits))
    return digits[:point] + "." + digits[point:]


def _scientific(digits: str, point: int, *, min_exponent_digits: int) -> str:
    exponent = point - 1
    mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
    sign = "-" if exponent < 0 else "+"
    return f"{mantissa}e{sign}{abs(exponent):0{min_exponent_digits}d}"


def _non_finite(value: float) -> str | None:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return None


def format_float(value: float) -> str:
    """Go's ``%v`` of a float64: shortest digits, exponent form outside [1e-4, 1e6)."""
    special = _non_finite(value)
    if special is not None:
        return special
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    digits, point = _float_digits(value)
    exponent = point - 1
    if exponent < -4 or exponent >= 6:
        return sign + _scientific(digits, point, min_exponent_digits=2)
    return sign + _fixed(digits, point)


def go_string(value: Any) -> str:
    """Go's ``fmt.Sprint`` of one JSON-decoded value (``%v``)."""
    if isinstance(value, str):
        return value
    if value is None:
        return "<nil>"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, JsonList | JsonDict):
        try:
            return to_json(value)
        except ValueError:
            pass  # NaN or infinity inside: JSON cannot say it, Go's notation can
    if isinstance(value, list):
        return "[" + " ".join(go_string(item) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (f"{go_string(key)}:{go_string(value[key])}" for key in sorted_keys(value))
        return "map[" + " ".join(pairs) + "]"
    return str(value)


def print_action(value: Any) -> str:
    """What ``{{ pipeline }}`` writes: like ``go_string`` but a missing value is ``<no value>``."""
    if isinstance(value, str):
        return value
    if value is None:
        return NO_VALUE
    return go_string(value)


# -- JSON as Go's encoding/json writes it -------------------------------------------------------

_JSON_HTML_SAFE = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


def _json_float(value: float) -> str:
    if not math.isfinite(value):
        raise ValueError("json: unsupported value: a non-finite float")
    if value == 0:
        return "-0" if math.copysign(1.0, value) < 0 else "0"
    sign = "-" if value < 0 else ""
    digits, point = _float_digits(value)
    if 1e-6 <= abs(value) < 1e21:
        return sign + _fixed(digits, point)
    return sign + _scientific(digits, point, min_exponent_digits=1)


def _json_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False).translate(_JSON_HTML_SAFE)


def to_json(value: Any, indent: str | None = None) -> str:
    """``json.Marshal`` (or ``MarshalIndent`` with ``indent``): sorted keys, HTML-safe, Go floats.

    Raises ValueError for values JSON cannot hold (NaN, infinities).
    """
    parts: list[str] = []
    _encode(value, parts, indent, "\n")
    return "".join(parts)


def _encode(value: Any, out: list[str], indent: str | None, newline: str) -> None:
    if isinstance(value, str):
        out.append(_json_string(value))
    elif value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, float):
        out.append(_json_float(value))
    elif isinstance(value, list | tuple):
        _encode_items(value, out, indent, newline, "[]")
    elif isinstance(value, dict):
        _encode_items(value, out, indent, newline, "{}")
    else:
        out.append(_json_string(str(value)))


def _encode_items(value: Any, out: list[str], indent: str | None, newline: str, brackets: str) -> None:
    if not value:
        out.append(brackets)
        return
    is_object = brackets == "{}"
    inner = newline + indent if indent is not None else ""
    out.append(brackets[0])
    items = sorted_keys(value) if is_object else value
    for position, item in enumerate(items):
        if position:
            out.append(",")
        out.append(inner)
        if is_object:
            out.append(_json_string(go_string(item)))
            out.append(": " if indent is not None else ":")
            _encode(value[item], out, indent, inner)
        else:
            _encode(item, out, indent, inner)
    out.append(newline if indent is not None else "")
    out.append(brackets[1])


# -- strconv.Quote --------------------------------------------------------------------------------

_QUOTE_ESCAPES = {
    "\a": "\\a",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
    "\v": "\\v",
    "\\": "\\\\",
    '"': '\\"',
}


def go_quote(text: str) -> str:
    """Go's ``strconv.Quote``: double-quoted, printable Unicode kept, the rest escaped."""
    out = ['"']
    for char in text:
        escaped = _QUOTE_ESCAPES.get(char)
        if escaped is not None:
            out.append(escaped)
        elif char.isprintable() or char == " ":
            out.append(char)
        else:
            code = ord(char)
            if code < 0x80:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
    out.append('"')
    return "".join(out)
