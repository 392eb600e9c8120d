"""Go's ``fmt.Sprint``, ``Sprintln`` and ``Sprintf`` over JSON-like values.

Templates use ``printf`` for padding, decimals and quoting, and operators
compare the output with what Go produced, so the common verbs follow Go:
``%v %s %d %q %f %e %g %t %x %X %o %b %c %U %T`` with the ``+ - # 0 space``
flags, width and precision.  Like Go, a verb that does not fit its argument
is written inline (``%!d(string=abc)``) rather than failing the render.  One
leniency: numbers decoded from JSON are float64 in Go but may be ints here,
so float verbs accept ints and ``%d`` accepts integral floats.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from mcpgw.converter.template._values import (
    JsonDict,
    JsonList,
    format_float,
    go_quote,
    go_string,
    sorted_keys,
    type_name,
)


def sprint(args: Sequence[Any]) -> str:
    """``fmt.Sprint``: a space between operands when neither is a string."""
    out: list[str] = []
    previous_is_string = True
    for position, arg in enumerate(args):
        is_string = isinstance(arg, str)
        if position and not is_string and not previous_is_string:
            out.append(" ")
        out.append(go_string(arg))
        previous_is_string = is_string
    return "".join(out)


def sprintln(args: Sequence[Any]) -> str:
    return " ".join(go_string(arg) for arg in args) + "\n"


_MAX_WIDTH = 1_000_000
"""Go's fmt refuses widths and precisions above a million (``tooLarge``): BADWIDTH, BADPREC, or NOVERB."""


def sprintf(
    template: str, args: Sequence[Any], *, limit: int | None = None, room: Callable[[int], None] | None = None
) -> str:
    """Go's ``fmt.Sprintf``; ``room(size)`` is asked before the text grows past ``limit`` characters."""
    out: list[str] = []
    n = len(template)
    i = 0
    used = 0
    size = n  # the template's own text, and then every formatted argument
    while i < n:
        percent = template.find("%", i)
        if percent < 0:
            out.append(template[i:])
            break
        out.append(template[i:percent])
        i = percent + 1
        flags = ""
        while i < n and template[i] in "+-# 0":
            flags += template[i]
            i += 1
        star = i < n and template[i] == "*"
        width, i, used = _number_or_star(template, i, args, used)
        if width is not None and width > _MAX_WIDTH:
            if not star:
                out.append("%!(NOVERB)")
                break
            out.append("%!(BADWIDTH)")
            width = None
        precision: int | None = None
        if i < n and template[i] == ".":
            star = i + 1 < n and template[i + 1] == "*"
            precision, i, used = _number_or_star(template, i + 1, args, used)
            precision = precision or 0
            if precision > _MAX_WIDTH:
                if not star:
                    out.append("%!(NOVERB)")
                    break
                out.append("%!(BADPREC)")
                precision = None
        if i >= n:
            out.append("%!(NOVERB)")
            break
        verb = template[i]
        i += 1
        if verb == "%":
            out.append("%")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            piece = format_one(args[used], verb, flags, width, precision)
            size += len(piece)
            if limit is not None and room is not None and size > limit:
                room(size)
            out.append(piece)
            used += 1
    if used < len(args):
        extra = ", ".join(f"{_type_label(arg)}={go_string(arg)}" for arg in args[used:])
        out.append(f"%!(EXTRA {extra})")
    return "".join(out)


def _number_or_star(template: str, i: int, args: Sequence[Any], used: int) -> tuple[int | None, int, int]:
    if i < len(template) and template[i] == "*":
        arg = args[used] if used < len(args) else None
        value = arg if isinstance(arg, int) and not isinstance(arg, bool) else None
        return value, i + 1, used + 1
    start = i
    while i < len(template) and template[i].isdigit():
        i += 1
    return (int(template[start:i]) if i > start else None), i, used


def _type_label(value: Any) -> str:
    return "<nil>" if value is None else type_name(value)


def _pad(text: str, flags: str, width: int | None) -> str:
    if width is None or len(text) >= width:
        return text
    return text.ljust(width) if "-" in flags else text.rjust(width)


def _bad(value: Any, verb: str) -> str:
    if value is None:
        return f"%!{verb}(<nil>)"
    return f"%!{verb}({type_name(value)}={go_string(value)})"


def format_one(value: Any, verb: str, flags: str, width: int | None, precision: int | None) -> str:
    """One ``%verb`` applied to one argument, lists and maps element by element as Go does."""
    if verb == "T":
        return _pad(_type_label(value), flags, width)
    if value is None:
        return _pad("<nil>", flags, width) if verb == "v" else _bad(value, verb)
    if isinstance(value, bool):
        if verb in "vt":
            return _pad("true" if value else "false", flags, width)
        return _bad(value, verb)
    if isinstance(value, int):
        if verb in "vdboxXcqU":
            return _format_int(value, "d" if verb == "v" else verb, flags, width, precision)
        if verb in "eEfFgG":
            return _format_float(float(value), verb, flags, width, precision)
        return _bad(value, verb)
    if isinstance(value, float):
        if verb in "veEfFgG":
            return _format_float(value, "g" if verb == "v" else verb, flags, width, precision)
        if verb == "d" and value.is_integer():
            return _format_int(int(value), verb, flags, width, precision)
        return _bad(value, verb)
    if isinstance(value, str):
        return _format_str(value, verb, flags, width, precision)
    if isinstance(value, JsonList | JsonDict) and verb in "vs":
        return _pad(go_string(value), flags, width)
    if isinstance(value, list):
        return "[" + " ".join(format_one(item, verb, flags, width, precision) for item in value) + "]"
    if isinstance(value, dict):
        pairs = (
            format_one(key, verb, flags, width, precision) + ":" + format_one(value[key], verb, flags, width, precision)
            for key in sorted_keys(value)
        )
        return "map[" + " ".join(pairs) + "]"
    return _bad(value, verb)


def _format_str(value: str, verb: str, flags: str, width: int | None, precision: int | None) -> str:
    if precision is not None:
        value = value[:precision]
    if verb in "vs":
        return _pad(value, flags, width)
    if verb == "q":
        return _pad(go_quote(value), flags, width)
    if verb in "xX":
        encoded = value.encode().hex()
        return _pad(encoded.upper() if verb == "X" else encoded, flags, width)
    return _bad(value, verb)


_INT_BASES = {"d": "d", "b": "b", "o": "o", "x": "x", "X": "X"}
_INT_PREFIXES = {"b": "0b", "o": "0", "x": "0x", "X": "0X"}


def _format_int(value: int, verb: str, flags: str, width: int | None, precision: int | None) -> str:
    if verb == "c":
        return _pad(chr(value) if 0 <= value <= 0x10FFFF else "\ufffd", flags, width)
    if verb == "q":
        char = chr(value) if 0 <= value <= 0x10FFFF else "\ufffd"
        inner = "\\'" if char == "'" else ('"' if char == '"' else go_quote(char)[1:-1])
        return _pad(f"'{inner}'", flags, width)
    if verb == "U":
        return _pad(f"U+{value:04X}", flags, width)
    digits = format(abs(value), _INT_BASES[verb])
    if precision is not None:
        digits = "" if precision == 0 and value == 0 else digits.rjust(precision, "0")
    prefix = _INT_PREFIXES.get(verb, "") if "#" in flags else ""
    sign = "-" if value < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
    if width is not None and "0" in flags and "-" not in flags and precision is None:
        digits = digits.rjust(width - len(sign) - len(prefix), "0")
    return _pad(sign + prefix + digits, flags, width)


def _format_float(value: float, verb: str, flags: str, width: int | None, precision: int | None) -> str:
    if not math.isfinite(value):
        return _pad(format_float(value), flags, width)
    sign = "-" if math.copysign(1.0, value) < 0 else ("+" if "+" in flags else (" " if " " in flags else ""))
    if verb in "gG" and precision is None:
        body = format_float(abs(value))
        if verb == "G":
            body = body.upper()
    else:
        body = format(abs(value), f"{'#' if '#' in flags else ''}.{6 if precision is None else precision}{verb}")
    if width is not None and "0" in flags and "-" not in flags:
        body = body.rjust(width - len(sign), "0")
    return _pad(sign + body, flags, width)
