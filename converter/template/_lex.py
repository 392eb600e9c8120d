"""The lexer: Go ``text/template`` source to tokens, with Go's rules for delimiters.

It follows ``text/template/parse/lex.go`` where users can tell the
difference: a trim marker is ``{{-`` or ``-}}`` *with* white space next to
the dash (``{{-3}}`` is the number -3); a comment must touch its delimiters;
actions may span lines; strings use Go's escapes.  Two extensions: a numeric
segment glued to a field chain (``.items.0.name``) is an index, as in
Higress' gjson-backed engine, where Go would reject it; and, where the caller
allows it, a Nacos credential reference ``${nacos.<dataId>/<group>}`` is one
token (see ``converter.credentials``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple, NoReturn

from mcpgw.converter.credentials import CREDENTIAL_REF, REFERENCE_FORM, REFERENCE_START

SPACES = " \t\r\n"
_TERMINATORS = SPACES + ".,|:()"
KEYWORDS = frozenset({"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"})

Fail = Callable[[int, str], NoReturn]


class Tok(NamedTuple):
    """One token; ``pos`` is the offset in the source, for error messages."""

    kind: str
    val: Any
    pos: int


def lex(src: str, fail: Fail, *, credentials: bool = False) -> list[Tok]:
    """Tokenise the whole source; calls ``fail(offset, reason)`` on the first lexical error.

    With ``credentials``, ``${nacos.<dataId>/<group>}`` in an action is a
    ``credential`` token whose value is ``(dataId, group)``.
    """
    return _Lexer(src, fail, credentials).run()


def _is_word_char(char: str) -> bool:
    return char == "_" or char.isalnum()


class _Lexer:
    def __init__(self, src: str, fail: Fail, credentials: bool) -> None:
        self.src = src
        self.fail = fail
        self.credentials = credentials
        self.toks: list[Tok] = []

    def run(self) -> list[Tok]:
        src, n = self.src, len(self.src)
        pos = 0
        trim_next = False
        while True:
            start = src.find("{{", pos)
            end = n if start < 0 else start
            text = src[pos:end]
            if trim_next:
                text = text.lstrip(SPACES)
            if start < 0:
                if text:
                    self.toks.append(Tok("text", text, pos))
                break
            trim_left = start + 3 < n and src[start + 2] == "-" and src[start + 3] in SPACES
            if trim_left:
                text = text.rstrip(SPACES)
            if text:
                self.toks.append(Tok("text", text, pos))
            inner = start + (4 if trim_left else 2)
            if src.startswith("/*", inner):
                pos, trim_next = self._comment(start, inner)
            else:
                self.toks.append(Tok("left", None, start))
                pos, trim_next = self._action(start, inner)
        self.toks.append(Tok("eof", None, n))
        return self.toks

    def _right_delim(self, p: int) -> int:
        """Length of the right delimiter at ``p`` (4 with a trim marker, 2 without), else 0."""
        src = self.src
        if p + 3 < len(src) and src[p] in SPACES and src.startswith("-}}", p + 1):
            return 4
        return 2 if src.startswith("}}", p) else 0

    def _comment(self, start: int, inner: int) -> tuple[int, bool]:
        close = self.src.find("*/", inner + 2)
        if close < 0:
            self.fail(start, "unclosed comment: end it with */}}")
        after = close + 2
        width = self._right_delim(after)
        if not width:
            self.fail(after, "comment ends before closing delimiter: write */}} with nothing in between")
        return after + width, width == 4

    def _action(self, start: int, p: int) -> tuple[int, bool]:
        src, n, toks = self.src, len(self.src), self.toks
        while True:
            width = self._right_delim(p)
            if width:
                toks.append(Tok("right", None, p))
                return p + width, width == 4
            if p >= n:
                self.fail(start, "unclosed action: add the closing }}")
            char = src[p]
            if char in SPACES:
                q = p + 1
                while q < n and src[q] in SPACES and self._right_delim(q) != 4:
                    q += 1
                toks.append(Tok("space", None, p))
                p = q
            elif char in "()|,":
                toks.append(Tok(char, None, p))
                p += 1
            elif char == ":":
                if not src.startswith(":=", p):
                    self.fail(p, "expected := after ':'")
                toks.append(Tok(":=", None, p))
                p += 2
            elif char == "=":
                toks.append(Tok("=", None, p))
                p += 1
            elif char == '"':
                p = self._quoted(p)
            elif char == "`":
                close = src.find("`", p + 1)
                if close < 0:
                    self.fail(p, "unterminated raw quoted string: add the closing `")
                toks.append(Tok("string", src[p + 1 : close], p))
                p = close + 1
            elif char == "'":
                p = self._char_constant(p)
            elif src.startswith(REFERENCE_START, p):
                p = self._credential(p)
            elif char == "$":
                q = self._word_end(p + 1)
                toks.append(Tok("var", src[p:q], p))
                p = self._after_word(q)
            elif char == ".":
                p = self._dot(p)
            elif char in "+-" or "0" <= char <= "9":
                p = self._number(p)
            elif _is_word_char(char):
                q = self._word_end(p)
                word = src[p:q]
                if word in ("true", "false"):
                    toks.append(Tok("bool", word == "true", p))
                elif word == "nil":
                    toks.append(Tok("nil", None, p))
                elif word in KEYWORDS:
                    toks.append(Tok("keyword", word, p))
                else:
                    toks.append(Tok("ident", word, p))
                p = self._after_word(q)
            else:
                self.fail(p, f"unrecognized character in action: U+{ord(char):04X}")

    def _credential(self, p: int) -> int:
        if not self.credentials:
            self.fail(
                p,
                "a credential reference cannot be used in this field: only request templates (url, header "
                "values, body, security credentials) may use one",
            )
        match = CREDENTIAL_REF.match(self.src, p)
        if match is None:
            self.fail(
                p,
                f"this is not a credential reference: write {REFERENCE_FORM}, dataId and group in letters, "
                "digits and '-', '_', '.', ':'",
            )
        self.toks.append(Tok("credential", (match.group(1), match.group(2)), p))
        return self._after_word(match.end())

    def _word_end(self, p: int) -> int:
        src, n = self.src, len(self.src)
        while p < n and _is_word_char(src[p]):
            p += 1
        return p

    def _after_word(self, p: int) -> int:
        """Go insists a field, variable or name is followed by a terminator."""
        if p < len(self.src) and self.src[p] not in _TERMINATORS and not self.src.startswith("}}", p):
            self.fail(p, f"bad character U+{ord(self.src[p]):04X} after a name")
        return p

    def _dot(self, p: int) -> int:
        src, toks = self.src, self.toks
        following = src[p + 1] if p + 1 < len(src) else ""
        if "0" <= following <= "9":
            # Tokens are contiguous unless a space token sits between them.
            if toks and toks[-1].kind in ("field", "var", ")"):
                q = p + 1
                while q < len(src) and "0" <= src[q] <= "9":
                    q += 1
                toks.append(Tok("field", src[p + 1 : q], p))
                return self._after_word(q)
            return self._number(p)
        if following and _is_word_char(following):
            q = self._word_end(p + 1)
            toks.append(Tok("field", src[p + 1 : q], p))
            return self._after_word(q)
        toks.append(Tok("dot", None, p))
        return self._after_word(p + 1)

    def _number(self, p: int) -> int:
        src, n = self.src, len(self.src)
        q = p
        if q < n and src[q] in "+-":
            q += 1
        digits = "0123456789_"
        if src.startswith("0", q) and q + 1 < n and src[q + 1] in "xXoObB":
            digits = {"x": "0123456789abcdefABCDEF_", "o": "01234567_", "b": "01_"}[src[q + 1].lower()]
            q += 2
        while q < n and src[q] in digits:
            q += 1
        if q < n and src[q] == ".":
            q += 1
            while q < n and src[q] in digits:
                q += 1
        exponent = "eE" if len(digits) == 11 else ("pP" if len(digits) == 23 else "")
        if exponent and q < n and src[q] in exponent:
            q += 1
            if q < n and src[q] in "+-":
                q += 1
            while q < n and src[q] in "0123456789_":
                q += 1
        if q < n and src[q] == "i":
            self.fail(p, "complex numbers are not supported")
        text = src[p:q]
        if (q < n and _is_word_char(src[q])) or not any(c in "0123456789" for c in text):
            self.fail(p, "bad number syntax")
        self.toks.append(Tok("number", _number_value(text, lambda why: self.fail(p, why)), p))
        return q

    def _quoted(self, p: int) -> int:
        src, n = self.src, len(self.src)
        q = p + 1
        while True:
            if q >= n or src[q] == "\n":
                self.fail(p, 'unterminated quoted string: add the closing "')
            if src[q] == "\\":
                q += 2
                continue
            if src[q] == '"':
                break
            q += 1
        self.toks.append(Tok("string", unquote(src[p + 1 : q], '"', lambda why: self.fail(p, why)), p))
        return q + 1

    def _char_constant(self, p: int) -> int:
        src, n = self.src, len(self.src)
        q = p + 1
        while True:
            if q >= n or src[q] == "\n":
                self.fail(p, "unterminated character constant: add the closing '")
            if src[q] == "\\":
                q += 2
                continue
            if src[q] == "'":
                break
            q += 1
        value = unquote(src[p + 1 : q], "'", lambda why: self.fail(p, why))
        if len(value) != 1:
            self.fail(p, "a character constant must hold exactly one character")
        self.toks.append(Tok("number", ord(value), p))
        return q + 1


def _number_value(text: str, fail: Callable[[str], NoReturn]) -> int | float:
    """Go's ideal constant: an int unless the text has a fraction or exponent."""
    clean = text.replace("_", "")
    body = clean.lstrip("+-")
    is_hex = body[:2].lower() == "0x"
    try:
        if (is_hex and any(c in body for c in "pP")) or (not is_hex and any(c in body for c in ".eE")):
            return float.fromhex(clean) if is_hex else float(clean)
        if len(body) > 1 and body[0] == "0" and body[1].isdigit():
            return int(clean, 8)
        return int(clean, 0)
    except ValueError:
        fail("bad number syntax")


_SIMPLE_ESCAPES = {
    "a": "\a",
    "b": "\b",
    "f": "\f",
    "n": "\n",
    "r": "\r",
    "t": "\t",
    "v": "\v",
    "\\": "\\",
}


def unquote(body: str, quote: str, fail: Callable[[str], NoReturn]) -> str:
    """Decode Go's escapes (``strconv.Unquote``); ``\\x`` and octal escapes are bytes."""
    if "\\" not in body:
        return body
    out = bytearray()
    i, n = 0, len(body)
    while i < n:
        char = body[i]
        if char != "\\":
            out += char.encode("utf-8", "surrogatepass")
            i += 1
            continue
        kind = body[i + 1] if i + 1 < n else ""
        if kind in _SIMPLE_ESCAPES:
            out += _SIMPLE_ESCAPES[kind].encode()
            i += 2
        elif kind == quote:
            out += quote.encode()
            i += 2
        elif kind in ("x", "u", "U"):
            size = {"x": 2, "u": 4, "U": 8}[kind]
            digits = body[i + 2 : i + 2 + size]
            if len(digits) != size or any(c not in "0123456789abcdefABCDEF" for c in digits):
                fail(f"invalid \\{kind} escape in string")
            code = int(digits, 16)
            if kind == "x":
                out.append(code)
            elif code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                fail("invalid Unicode code point in string escape")
            else:
                out += chr(code).encode()
            i += 2 + size
        elif "0" <= kind <= "7":
            digits = body[i + 1 : i + 4]
            if len(digits) != 3 or any(c not in "01234567" for c in digits) or int(digits, 8) > 255:
                fail("invalid octal escape in string: use three octal digits up to \\377")
            out.append(int(digits, 8))
            i += 4
        else:
            fail("unknown escape sequence in string")
    return out.decode("utf-8", "replace")
