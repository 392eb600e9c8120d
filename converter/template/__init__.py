"""Go ``text/template`` for Nacos/Higress ``json-go-template`` REST-to-MCP specs.

Nacos' console stores REST-to-MCP tools in Higress' format, whose url,
headers, body and response fields are Go templates with Sprig functions and
Higress' ``gjson``.  No maintained Python library runs those, so this package
is a small, strict engine: ``parse`` compiles the source once into closures
(every syntax error, unknown function, wrong argument count or unsupported
construct is a ``TemplateError`` with line and column, at publish time), and
``GoTemplate.render`` runs them in microseconds per call.

Semantics are Go's, on ``map[string]interface{}`` data:

- ``{{ .a.b }}`` on a missing key prints ``<no value>``, as Go does for map
  data (Go's ``missingkey=default``); a JSON null prints ``<no value>`` too.
  Looking *into* a null (``.a.b`` with ``a: null``) is an error, as in Go.
  Use ``{{ .a.b | default "" }}`` or ``{{ with .a }}`` for optional values.
- Values print as Go's ``fmt`` does: ``1e+06`` for the float 1000000.0,
  ``map[a:1 b:2]``, ``[1 2 3]``; ``toJson`` gives JSON.  Values returned by
  ``gjson`` print as JSON instead (Higress' gjson results do).
- Truth: false, 0, nil and empty strings, lists and maps are false.
- ``range`` walks lists, maps (sorted keys, like Go), and integers (Go 1.22);
  ``break``/``continue``, ``else``; ``with``/``else with``; ``if``/``else if``.
- Comparisons follow Go, except that ints and floats compare by value (JSON
  numbers are float64 in Go, ints may stay ints here).
- Extensions from Higress: ``.items.0.name`` indexes lists; ``gjson "path"``
  (see ``_gjson`` for the path syntax supported).
- Extension from Nacos, where the caller asks for it (``parse(...,
  credentials=True)``, request-side fields only): ``${nacos.<dataId>/<group>}``
  inside an action is the referenced config's content,
  ``$.config.credentials["<group>_<dataId>"]``, and may be followed by fields
  (``{{ ${nacos.weatherKey/credentials}.data }}``); see ``converter.credentials``.

Not supported (parse errors): ``define``/``template``/``block``, ``call``,
method calls (a field given arguments), complex numbers, Go's ``date`` and
other Sprig functions not in ``SUPPORTED_FUNCTIONS``.

Error messages name types, positions and field names, never data values or
string literals: templates and their data hold credentials.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any

from mcpgw.converter.credentials import CredentialUse
from mcpgw.converter.template._budget import (
    DEFAULT_LIMITS,
    Budget,
    BudgetExceeded,
    RenderLimits,
    RenderOffload,
    render_limits,
    size_of,
)
from mcpgw.converter.template._funcs import FUNCTIONS
from mcpgw.converter.template._parse import ExecError, Parser, Render, State, location
from mcpgw.registry.errors import TemplateError

__all__ = [
    "DEFAULT_LIMITS",
    "SUPPORTED_FUNCTIONS",
    "GoTemplate",
    "RenderLimits",
    "RenderOffload",
    "parse",
    "render_limits",
    "size_of",
]

SUPPORTED_FUNCTIONS: Mapping[str, str] = MappingProxyType(
    {name: FUNCTIONS[name].description for name in sorted(FUNCTIONS)}
)
"""Every function a template may call, with a one-line description."""


class GoTemplate:
    """A parsed template: immutable, safe to render from many tasks at once.

    Equality is by name and source, so models holding templates compare by
    what the operator wrote; the repr shows only the name because a template
    (a credential, say) may itself be a secret.
    """

    __slots__ = ("_credential_uses", "_name", "_refs", "_root", "_slots", "_source")

    def __init__(
        self,
        source: str,
        name: str,
        root: Render,
        slots: int,
        refs: frozenset[str],
        credential_uses: tuple[CredentialUse, ...] = (),
    ) -> None:
        self._source = source
        self._name = name
        self._root = root
        self._slots = slots
        self._refs = refs
        self._credential_uses = credential_uses

    @property
    def source(self) -> str:
        return self._source

    @property
    def name(self) -> str:
        return self._name

    def render(self, data: Any) -> str:
        """Execute against JSON-like ``data``; raise TemplateError with the failing line and column.

        The render is bounded by the ``RenderLimits`` of the enclosing
        ``render_limits`` block (the defaults outside one); going over them is
        a TemplateError naming the limit and its setting.  In an inline block
        it may raise ``RenderOffload`` instead (see ``converter.template._budget``).
        """
        frame: list[Any] = [None] * self._slots
        frame[0] = data
        out: list[str] = []
        budget = Budget()
        try:
            self._root(State(frame, out, budget), data)
            text = "".join(out)
            budget.finish(text)
        except ExecError as exc:
            raise TemplateError(
                f"{location(self._source, self._name, exc.pos)}: {exc.message}{_limit_hint(exc.message)}"
            ) from None
        except BudgetExceeded as exc:
            raise TemplateError(f"template {self._name!r}: {exc}{_limit_hint(str(exc))}") from None
        except RenderOffload:
            raise
        except RecursionError:
            raise TemplateError(f"template {self._name!r}: the data nests too deeply to render") from None
        except Exception as exc:
            # A value of a type JSON never produces, or an engine bug: still the one error type callers
            # handle, and without the exception's text, which may quote the data.
            raise TemplateError(
                f"template {self._name!r}: failed to render ({type(exc).__name__}); "
                "the data may hold a value that is not JSON"
            ) from None
        return text

    def references(self) -> frozenset[str]:
        """Data paths read from the root (``args.city``, ``config.credentials.x``); best effort.

        Collected from field chains evaluated against the root (not inside
        ``range``/``with``, where dot moves), from ``$.x`` anywhere, from
        ``index .a "k"`` with literal keys, and from literal ``gjson`` paths
        made of plain keys.
        """
        return self._refs

    @property
    def credential_uses(self) -> tuple[CredentialUse, ...]:
        """The credential references read inside actions, in source order (only with ``credentials=True``)."""
        return self._credential_uses

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, GoTemplate):
            return NotImplemented
        return (self._name, self._source) == (other._name, other._source)

    def __hash__(self) -> int:
        return hash((self._name, self._source))

    def __repr__(self) -> str:
        return f"GoTemplate(name={self._name!r})"


def _limit_hint(message: str) -> str:
    if "(templates." not in message:
        return ""
    return "; make the template do less with this data, or raise the limit in the gateway's templates settings"


def parse(source: str, *, name: str = "template", credentials: bool = False) -> GoTemplate:
    """Compile ``source``; raise TemplateError("template 'name' line L col C: reason") if it cannot run.

    ``credentials``: read ``${nacos.<dataId>/<group>}`` inside actions as a credential reference
    (otherwise it is an error there).
    """
    if not isinstance(source, str):
        raise TemplateError(f"template {name!r}: the template must be a string, not {type(source).__name__}")
    return _parse_cached(source, name, credentials)


# Compiled templates are immutable, and the same template text recurs across tools and servers
# (response bodies, auth headers) and across every version of a spec: parse each text once.
# Kept small on purpose: once full, every insertion re-tracks the cache's dict in the youngest
# GC generation, so each young collection walks all of it (64k entries cost ~4 ms a collection).
@functools.lru_cache(maxsize=1 << 12)
def _parse_cached(source: str, name: str, credentials: bool) -> GoTemplate:
    try:
        parser = Parser(source, name, credentials=credentials)
        root = parser.parse()
    except RecursionError:
        raise TemplateError(f"template {name!r}: the template nests too deeply; simplify it") from None
    return GoTemplate(source, name, root, parser.nslots, frozenset(parser.refs), tuple(parser.credential_uses))
