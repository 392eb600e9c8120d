"""The compiled REST-to-MCP binding of one tool: Higress' ``json-go-template`` format.

Nacos' console stores, for every tool of a REST-backed MCP server, a
``json-go-template`` that says how a tool call becomes an HTTP request and
how the answer becomes MCP content.  This module compiles that template once,
at conversion time, so that every mistake in it (two ``argsTo*`` flags, an
unknown argument position, a template that does not parse, an unknown
security scheme) is a ``ConversionError`` naming the tool and the JSON path
while the previous good version keeps serving; and it executes the compiled
binding per call without any I/O: the gateway sends the ``RestRequest`` and
hands the answer back to ``map_response``.

Semantics (ARCHITECTURE.md §5), and the choices made where the format is
silent:

- Request-side templates (url, header values, body, credentials) render
  against ``{"args": <validated args>, "config": <server config>}``.
- Destinations come from the cluster, never from rendering.  A ``url`` that
  is relative (or whose text before the first ``{{`` names no scheme) is
  sent to the chosen instance of the server's cluster; a ``url`` whose
  scheme and host are written out before any ``{{`` (``https://api.x.com/v1/
  {{ .args.p }}``, or no template at all) is sent to that fixed origin:
  config, not client input.  What rendering produces may only be the path
  and query: a rendered URL that names a scheme or host, or that does not
  continue the fixed origin with ``/``, ``?`` or ``#``, is a tool error.
  Characters a URL path or query cannot carry (spaces, line breaks,
  non-ASCII, ...) are percent-encoded, so nothing rendered can end the
  request line either.  A ``Host`` header may only be a fixed value, and no
  argument can be sent as one.  Credentials therefore only ever reach the
  host they were configured for; redirects are not followed (gateway).
- ``{name}`` in the rendered URL is a path argument, percent-encoded with
  nothing left safe (a ``.`` or ``..`` value too, so it cannot climb out of
  its place in the path).  An argument consumed by a placeholder is not sent
  again elsewhere unless ``argsPosition`` says where.
- Positioned arguments go where ``argsPosition`` says.  The others go by the
  ``argsTo*`` flag; with none set they are only reachable from templates.
  With ``argsToJsonBody``/``argsToFormBody`` the body holds the unpositioned
  arguments plus the ``position: body`` ones.
- Body precedence: explicit ``body`` > ``argsToJsonBody`` > ``argsToFormBody``
  > ``position: body`` arguments (form-encoded if a header declares
  ``application/x-www-form-urlencoded``, JSON otherwise).  An explicit body is
  sent as ``application/json`` unless a header sets ``Content-Type``.
- A 2xx answer that is not JSON is returned as text even when
  ``responseTemplate.body`` is set: a template written for JSON would only
  produce ``<no value>`` noise.
- With an ``outputSchema`` and a JSON object answer, ``structured`` is that
  object; the text is the rendered ``responseTemplate.body`` if there is one,
  otherwise the JSON itself (what MCP asks for backwards compatibility).
- ``errorResponseTemplate`` renders against the JSON object answer (or ``{}``
  when the answer is not an object) with ``_headers`` added: lower-cased
  response header names plus ``:status``, as Higress (Envoy) exposes them.
  If it fails to render, the plain status message is returned instead: the
  upstream error matters more than the template's.
- A direct-response tool (empty ``url``) renders ``responseTemplate.body``
  against ``{"args", "config"}``; it must have one.
- Credentials (``defaultCredential`` and ``security.credential``) are
  templates too, so they can come from ``{{ .config.credentials.… }}``.  They
  never appear in a repr, a ``ConversionError`` or an ``InvocationError``; the
  client's own ``Authorization`` is never forwarded from here.
- Nacos credential references (``converter.credentials``) are read inside the
  actions of the request-side fields only (url, header values, body, the
  credentials); a header value or credential that is exactly one reference is
  read as ``{{ reference }}``; a reference outside an action is an error.  The
  binding lists every reference it reads (``credential_sites``) so the
  converter can check each against the config's content.  A direct-response
  tool renders without ``config.credentials``: its answer goes to the client.
"""

from __future__ import annotations

import base64
import difflib
import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

from mcpgw.converter.credentials import CredentialSite, Misspelt, Reference, scan, whole_reference
from mcpgw.converter.secrets import credential_values, scrub_text, scrub_value, secret_forms
from mcpgw.converter.template import GoTemplate, parse
from mcpgw.registry.errors import ConversionError, InvocationError, TemplateError
from mcpgw.remote.jsondoc import load_json

TEMPLATE_KIND = "json-go-template"

Position = Literal["query", "path", "header", "cookie", "body"]
_POSITIONS: dict[str, Position] = {
    "query": "query",
    "path": "path",
    "header": "header",
    "cookie": "cookie",
    "body": "body",
}
_ARGS_TO_FLAGS = ("argsToJsonBody", "argsToUrlParam", "argsToFormBody")

_TEMPLATE_KEYS = frozenset(("requestTemplate", "responseTemplate", "errorResponseTemplate", "argsPosition", "security"))
_REQUEST_KEYS = frozenset(("url", "method", "headers", "body", "security", *_ARGS_TO_FLAGS))
_RESPONSE_KEYS = frozenset(("body", "prependBody", "appendBody"))

_METHOD = re.compile(r"[A-Za-z]+")
_HEADER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")
_PATH_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_.-]*)\}")
# Control characters (HTAB aside) cannot be sent in a header value: refuse them as the caller's mistake.
_FORBIDDEN_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[\ud800-\udfff]")
_SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# RFC 3986 characters a path, query or fragment may hold as they are ("%" too: escapes stay escapes).
_URL_SAFE = "/?#@!$&'()*+,;=:%-._~"
# Text that cannot end a host written before a template: the template would be rendering the host.
_HOST_CONTINUES = (".", "-", ":", "@", "[")
# Characters a cookie value may carry unescaped (RFC 6265 cookie-octet, minus '%').
_COOKIE_SAFE = "!#$&'()*+-./:<=>?@[]^_`{|}~"

_JSON = "application/json"
_FORM = "application/x-www-form-urlencoded"
_ERROR_BODY_CHARS = 500


@dataclass(frozen=True, slots=True)
class RestRequest:
    """The HTTP request one tool call becomes; the gateway sends it as is."""

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    secrets: frozenset[str] = frozenset()
    """Every form of every credential injected into this request: scrub them from what the client gets."""

    def __repr__(self) -> str:
        # Header values, query values and bodies may carry credentials: never show them.
        parts = urlsplit(self.url)
        shown = urlunsplit((parts.scheme, parts.netloc, parts.path, "…" if parts.query else "", ""))
        names = ", ".join(name for name, _ in self.headers)
        size = "none" if self.body is None else f"{len(self.body)} bytes"
        return f"RestRequest(method={self.method!r}, url={shown!r}, headers=[{names}], body={size})"


@dataclass(frozen=True, slots=True)
class RestResult:
    """What a tool call returns to the MCP client."""

    is_error: bool
    content: tuple[dict[str, Any], ...]
    structured: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class _Security:
    scheme_id: str
    kind: Literal["bearer", "basic", "apiKey-header", "apiKey-query"]
    name: str
    credential: GoTemplate


@dataclass(frozen=True, slots=True)
class _Header:
    name: str
    value: GoTemplate
    field: str


class RestBinding:
    """One tool's compiled ``json-go-template``; build it with ``compile_rest_binding``."""

    __slots__ = (
        "_args_to",
        "_body",
        "_credential_sites",
        "_error_template",
        "_headers",
        "_origin",
        "_positions",
        "_response_append",
        "_response_body",
        "_response_prepend",
        "_security",
        "_url",
        "is_direct",
        "method",
        "tool_name",
    )

    def __init__(
        self,
        *,
        tool_name: str,
        method: str,
        url: GoTemplate | None,
        origin: str | None,
        headers: tuple[_Header, ...],
        body: GoTemplate | None,
        args_to: str | None,
        positions: Mapping[str, Position],
        security: _Security | None,
        response_body: GoTemplate | None,
        response_prepend: GoTemplate | None,
        response_append: GoTemplate | None,
        error_template: GoTemplate | None,
        credential_sites: tuple[CredentialSite, ...] = (),
    ) -> None:
        self.tool_name = tool_name
        self.method = method
        self.is_direct = url is None
        self._url = url
        self._origin = origin
        self._headers = headers
        self._body = body
        self._args_to = args_to
        self._positions = dict(positions)
        self._security = security
        self._response_body = response_body
        self._response_prepend = response_prepend
        self._response_append = response_append
        self._error_template = error_template
        self._credential_sites = credential_sites

    @property
    def credential_sites(self) -> tuple[CredentialSite, ...]:
        """Every credential reference the request side reads, with the JSON path of its field."""
        return self._credential_sites

    def __repr__(self) -> str:
        return f"RestBinding(tool={self.tool_name!r}, method={self.method!r}, direct={self.is_direct})"

    @property
    def needs_instance(self) -> bool:
        """Whether calls go to an instance of the server's cluster (else to the url's fixed origin)."""
        return self._origin is None

    # -- request side -------------------------------------------------------------------------

    def build_request(self, args: Mapping[str, Any], config: Mapping[str, Any], base_url: str | None) -> RestRequest:
        """Turn validated arguments into the HTTP request for the backend at ``base_url``."""
        if self._url is None:
            raise InvocationError(f"Tool {self.tool_name!r} answers directly and sends no request; use render_direct.")
        data = _template_data(args, config)
        rendered_url = self._render(self._url, data, "requestTemplate.url").strip()
        origin, rest = self._destination(rendered_url, base_url)
        path_filled, consumed = self._fill_path(rest, args)
        url = origin + quote(path_filled, safe=_URL_SAFE)

        query: list[tuple[str, str]] = []
        headers: list[tuple[str, str]] = [
            (h.name, self._header_value(h.name, self._render(h.value, data, h.field))) for h in self._headers
        ]
        cookies: list[str] = []
        body_fields: dict[str, Any] = {}
        loose_fields: dict[str, Any] = {}
        for name, value in args.items():
            position = self._positions.get(name)
            if position is None:
                if name not in consumed:
                    loose_fields[name] = value
            elif position == "query":
                query.extend(_query_pairs(name, value))
            elif position == "header":
                headers.append((name, self._header_value(name, _text(value))))
            elif position == "cookie":
                cookies.append(f"{name}={quote(_text(value), safe=_COOKIE_SAFE)}")
            elif position == "body":
                body_fields[name] = value
            # position "path": consumed by its {name} placeholder, or by the url template itself.

        if self._args_to == "argsToUrlParam":
            for name, value in loose_fields.items():
                query.extend(_query_pairs(name, value))
        if cookies:
            headers = _merge_cookies(headers, cookies)

        body, content_type = self._body_bytes(data, headers, loose_fields, body_fields)
        if content_type is not None and _find_header(headers, "content-type") is None:
            headers.append(("Content-Type", content_type))

        injected: list[str] = []
        if self._security is not None:
            url, headers = self._apply_security(self._security, data, url, headers, injected)
        if query:
            url = _add_query(url, query)
        injected.extend(_sent_credentials(config, url, headers, body))
        return RestRequest(
            method=self.method, url=url, headers=tuple(headers), body=body, secrets=secret_forms(injected)
        )

    def _fill_path(self, url: str, args: Mapping[str, Any]) -> tuple[str, frozenset[str]]:
        consumed: set[str] = set()

        def substitute(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in args:
                # The placeholder may come from a credential's content: never quote it then.
                shown = "" if self._url is not None and self._url.credential_uses else f" {name!r}"
                raise InvocationError(
                    f"Tool {self.tool_name!r}: the URL needs the path argument{shown or ' in braces'}, "
                    "but the call does not give it; pass it or give it a default in the inputSchema."
                )
            consumed.add(name)
            return _path_segment(_text(args[name]))

        return _PATH_PLACEHOLDER.sub(substitute, url), frozenset(consumed)

    def _destination(self, rendered: str, base_url: str | None) -> tuple[str, str]:
        """Where the call goes (``scheme://host:port``, from config) and the rendered path and query."""
        if self._origin is not None:
            rest = rendered[len(self._origin) :] if rendered.startswith(self._origin) else None
            if rest is None or (rest and rest[0] not in "/?#"):
                raise InvocationError(
                    f"Tool {self.tool_name!r}: requestTemplate.url rendered to a URL that does not continue its "
                    f"configured origin {self._origin} with a path or query; the arguments cannot choose the "
                    "host, so the call was not sent."
                )
            return self._origin, rest
        # Read as any URL parser might (WHATWG takes "\\" for "/"): a scheme, or an authority after "//".
        if _SCHEME.match(rendered) or rendered.replace("\\", "/").startswith("//"):
            raise InvocationError(
                f"Tool {self.tool_name!r}: requestTemplate.url rendered to an absolute URL, but the destination "
                "comes from the server's instances and rendering may only give the path and query; "
                "the call was not sent."
            )
        if base_url is None:
            raise InvocationError(
                f"Tool {self.tool_name!r} has a relative requestTemplate.url but no backend instance "
                "was chosen; check the server's serviceRef and its instances."
            )
        base = base_url.rstrip("/")
        if not rendered or rendered.startswith(("/", "?")):
            return base, rendered
        return base, "/" + rendered

    def _header_value(self, name: str, value: str) -> str:
        if _FORBIDDEN_IN_HEADER.search(value):
            raise InvocationError(
                f"Tool {self.tool_name!r}: the value for header {name!r} contains a line break or another "
                "control character; "
                "header values must be a single line."
            )
        return value

    def _body_bytes(
        self,
        data: Mapping[str, Any],
        headers: Sequence[tuple[str, str]],
        loose_fields: Mapping[str, Any],
        body_fields: Mapping[str, Any],
    ) -> tuple[bytes | None, str | None]:
        if self._body is not None:
            return self._render(self._body, data, "requestTemplate.body").encode(), _JSON
        if self._args_to == "argsToJsonBody":
            return _json_bytes({**loose_fields, **body_fields}), _JSON
        if self._args_to == "argsToFormBody":
            return _form_bytes({**loose_fields, **body_fields}), _FORM
        if body_fields:
            declared = _find_header(headers, "content-type") or ""
            if declared.split(";", 1)[0].strip().lower() == _FORM:
                return _form_bytes(body_fields), None
            return _json_bytes(body_fields), _JSON
        return None, None

    def _apply_security(
        self,
        security: _Security,
        data: Mapping[str, Any],
        url: str,
        headers: list[tuple[str, str]],
        injected: list[str],
    ) -> tuple[str, list[tuple[str, str]]]:
        field = f"the credential of security scheme {security.scheme_id!r}"
        credential = self._render(security.credential, data, field, detail=False).strip()
        injected.append(credential)
        if not credential:
            raise InvocationError(
                f"Tool {self.tool_name!r}: {field} is empty; set defaultCredential, "
                "requestTemplate.security.credential or the config it refers to."
            )
        if _FORBIDDEN_IN_HEADER.search(credential):
            raise InvocationError(f"Tool {self.tool_name!r}: {field} contains a line break or a control character.")
        if security.kind == "apiKey-query":
            return _add_query(url, [(security.name, credential)]), headers
        if security.kind == "bearer":
            name, value = "Authorization", f"Bearer {credential}"
        elif security.kind == "basic":
            name, value = "Authorization", "Basic " + base64.b64encode(credential.encode()).decode("ascii")
        else:
            name, value = security.name, credential
        # The scheme is the operator's declared authentication: it wins over a same-named header.
        kept = [(k, v) for k, v in headers if k.lower() != name.lower()]
        kept.append((name, value))
        return url, kept

    # -- response side ------------------------------------------------------------------------

    def render_direct(self, args: Mapping[str, Any], config: Mapping[str, Any]) -> RestResult:
        """The answer of a direct-response tool: its response template, no backend involved."""
        if self._response_body is None:
            raise InvocationError(f"Tool {self.tool_name!r} is not a direct-response tool.")
        # The answer goes to the client: the credentials are not there to be rendered into it.
        shown = {key: value for key, value in config.items() if key != "credentials"}
        text = self._render(self._response_body, _template_data(args, shown), "responseTemplate.body")
        return RestResult(is_error=False, content=(_text_block(text),))

    def map_response(
        self,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
        *,
        has_output_schema: bool,
        secrets: frozenset[str] = frozenset(),
    ) -> RestResult:
        """Turn the backend's answer into MCP content, with ``secrets`` (``RestRequest.secrets``) scrubbed."""
        result = self._mapped(status, headers, body, has_output_schema=has_output_schema, secrets=secrets)
        if not secrets:
            return result
        return RestResult(
            is_error=result.is_error,
            content=tuple(
                scrub_value(block, secrets) if block.get("type") == "text" else block for block in result.content
            ),
            structured=scrub_value(result.structured, secrets),
        )

    def _mapped(
        self, status: int, headers: Mapping[str, str], body: bytes, *, has_output_schema: bool, secrets: frozenset[str]
    ) -> RestResult:
        if not 200 <= status < 300:
            return self._map_error(status, headers, body, secrets)
        content_type = _find_header(list(headers.items()), "content-type") or ""
        mime = content_type.split(";", 1)[0].strip().lower()
        if mime.startswith("image/"):
            encoded = base64.b64encode(body).decode("ascii")
            return RestResult(is_error=False, content=({"type": "image", "data": encoded, "mimeType": mime},))

        raw = _decode(body, content_type)
        parsed, is_json = _parse_json(raw)
        structured = parsed if has_output_schema and is_json and isinstance(parsed, dict) else None
        if self._response_body is not None and is_json:
            text = self._render(self._response_body, parsed, "responseTemplate.body")
        elif self._response_prepend is not None or self._response_append is not None:
            data = parsed if is_json else {}
            prepend = self._render_optional(self._response_prepend, data, "responseTemplate.prependBody")
            append = self._render_optional(self._response_append, data, "responseTemplate.appendBody")
            text = prepend + raw + append
        elif structured is not None:
            text = json.dumps(structured, ensure_ascii=False)
        else:
            text = raw
        return RestResult(is_error=False, content=(_text_block(text),), structured=structured)

    def _map_error(self, status: int, headers: Mapping[str, str], body: bytes, secrets: frozenset[str]) -> RestResult:
        # Scrubbed before anything is cut short: a credential cut in half would survive a later scrub.
        raw = scrub_text(_decode(body, _find_header(list(headers.items()), "content-type") or ""), secrets)
        if self._error_template is not None:
            parsed, _ = _parse_json(raw)
            data = dict(parsed) if isinstance(parsed, dict) else {}
            data["_headers"] = {":status": str(status), **{k.lower(): v for k, v in headers.items()}}
            try:
                return RestResult(is_error=True, content=(_text_block(self._error_template.render(data)),))
            except TemplateError:
                pass  # the plain message below still tells the client what the upstream said
        excerpt = raw[:_ERROR_BODY_CHARS].strip()
        message = (
            f"upstream returned HTTP {status}: {excerpt}"
            if excerpt
            else f"upstream returned HTTP {status} with an empty body"
        )
        return RestResult(is_error=True, content=(_text_block(message),))

    # -- helpers ------------------------------------------------------------------------------

    def _render_optional(self, template: GoTemplate | None, data: Any, field: str) -> str:
        return "" if template is None else self._render(template, data, field)

    def _render(self, template: GoTemplate, data: Any, field: str, *, detail: bool = True) -> str:
        try:
            return template.render(data)
        except TemplateError as exc:
            # The engine never quotes data, but a credential's failure is reported by place only.
            why = f": {exc}" if detail else ""
            raise InvocationError(
                f"Tool {self.tool_name!r}: {field} failed to render{why}. "
                "The operator must fix the tool's json-go-template or its config."
            ) from exc


def compile_rest_binding(
    tool_name: str,
    template: Mapping[str, Any],
    security_schemes: Sequence[Mapping[str, Any]],
    input_schema: Mapping[str, Any],
) -> RestBinding:
    """Compile ``toolsMeta[tool].templates["json-go-template"]`` or raise ``ConversionError``.

    ``input_schema`` catches an ``argsPosition`` for an argument the schema
    forbids (``additionalProperties: false``): such a position can never apply
    and is almost always a misspelt argument name.
    """
    return _Compiler(tool_name, security_schemes, input_schema).compile(template)


class _Compiler:
    def __init__(
        self,
        tool_name: str,
        security_schemes: Sequence[Mapping[str, Any]],
        input_schema: Mapping[str, Any],
    ) -> None:
        self.tool = tool_name
        self.schemes = security_schemes
        self.input_schema = input_schema
        self.root = f"{_member('$.toolsMeta', tool_name)}.templates.{TEMPLATE_KIND}"
        self.credential_sites: list[CredentialSite] = []

    def fail(self, reason: str, path: str) -> ConversionError:
        return ConversionError(reason, tool=self.tool, path=path)

    def compile(self, template: Mapping[str, Any]) -> RestBinding:
        root = self.root
        self.require_object(template, root)
        self.reject_typos(template, _TEMPLATE_KEYS, root)
        request = self.optional_object(template, "requestTemplate", root)
        response = self.optional_object(template, "responseTemplate", root)
        request_path = f"{root}.requestTemplate"
        response_path = f"{root}.responseTemplate"
        self.reject_typos(request, _REQUEST_KEYS, request_path)
        self.reject_typos(response, _RESPONSE_KEYS, response_path)

        url_source = self.optional_string(request, "url", request_path).strip()
        url = self.template(url_source, f"{request_path}.url", credentials=True) if url_source else None
        origin = self.origin(url_source, f"{request_path}.url") if url_source else None

        response_body, prepend, append = self.response_templates(response, response_path)
        if url is None and response_body is None:
            raise self.fail(
                "requestTemplate.url is empty, which makes this a direct-response tool, but "
                "responseTemplate.body is missing; set a url or a response body",
                f"{request_path}.url",
            )
        error_source = self.optional_string(template, "errorResponseTemplate", root)
        return RestBinding(
            tool_name=self.tool,
            method=self.method(request, request_path),
            url=url,
            origin=origin,
            headers=self.headers(request, request_path),
            body=self.optional_template(request, "body", request_path, credentials=True),
            args_to=self.args_to(request, request_path),
            positions=self.positions(template, root),
            security=self.security(request, request_path),
            response_body=response_body,
            response_prepend=prepend,
            response_append=append,
            error_template=(self.template(error_source, f"{root}.errorResponseTemplate") if error_source else None),
            credential_sites=tuple(self.credential_sites),
        )

    # -- structure ----------------------------------------------------------------------------

    def require_object(self, value: Any, path: str) -> None:
        if not isinstance(value, Mapping):
            raise self.fail(f"expected a JSON object, found {_json_type(value)}", path)

    def optional_object(self, parent: Mapping[str, Any], key: str, path: str) -> Mapping[str, Any]:
        value = parent.get(key)
        if value is None:
            return {}
        self.require_object(value, f"{path}.{key}")
        return value  # type: ignore[no-any-return]

    def optional_string(self, parent: Mapping[str, Any], key: str, path: str) -> str:
        value = parent.get(key)
        if value is None:
            return ""
        if not isinstance(value, str):
            raise self.fail(f"expected a string, found {_json_type(value)}", f"{path}.{key}")
        return value

    def reject_typos(self, value: Mapping[str, Any], known: frozenset[str], path: str) -> None:
        """Unknown keys are tolerated (newer Nacos may add some), unless they look like a misspelt one."""
        for key in value:
            if key in known or not isinstance(key, str):
                continue
            absent = {k.lower(): k for k in known if k not in value}
            close = difflib.get_close_matches(key.lower(), absent, n=1, cutoff=0.85)
            if close:
                raise self.fail(f"unknown field {key!r}; did you mean {absent[close[0]]!r}?", f"{path}.{key}")

    # -- templates ----------------------------------------------------------------------------

    def template(
        self, source: str, path: str, *, secret: bool = False, credentials: bool = False, whole_value: bool = False
    ) -> GoTemplate:
        """Compile one field; with ``credentials`` it may read credential references inside its actions.

        ``whole_value``: a field that is exactly one reference is read as ``{{ reference }}``.
        """
        whole = whole_reference(source) if credentials and whole_value else None
        if whole is not None:
            source = "{{ " + whole.text + " }}"
        try:
            compiled = parse(source, name=path, credentials=credentials)
        except TemplateError as exc:
            # The engine never quotes source text; a credential's failure is still reported by place only.
            why = "" if secret else f": {exc}"
            raise self.fail(f"the template does not parse{why}", path) from exc
        if credentials:
            self.check_placement(source, compiled, path)
            self.credential_sites.extend(
                CredentialSite(path, use, whole_value=whole is not None) for use in compiled.credential_uses
            )
        return compiled

    def check_placement(self, source: str, compiled: GoTemplate, path: str) -> None:
        """Every reference in the source must be one the engine read, i.e. stand inside an action."""
        read = {use.offset for use in compiled.credential_uses}
        for found in scan(source):
            if isinstance(found, Misspelt):
                raise self.fail(
                    "text starting with ${nacos. is not a credential reference; write ${nacos.<dataId>/<group>}, "
                    "dataId and group in letters, digits and '-', '_', '.', ':'",
                    path,
                )
            if isinstance(found, Reference) and found.start not in read:
                raise self.fail(
                    f"the credential reference {found.text} is outside a template action, so it would be sent as "
                    f"literal text; write {{{{ {found.text} }}}} for a config that holds a plain value, or "
                    f"{{{{ {found.text}.field }}}} for a field of a JSON config",
                    path,
                )

    def optional_template(
        self, parent: Mapping[str, Any], key: str, path: str, *, credentials: bool = False
    ) -> GoTemplate | None:
        source = self.optional_string(parent, key, path)
        return self.template(source, f"{path}.{key}", credentials=credentials) if source else None

    def origin(self, source: str, path: str) -> str | None:
        """The fixed ``scheme://host[:port]`` of a url that writes it out, ``None`` for one relative to the instance.

        Only the text before the first ``{{`` counts: what a template renders
        is never trusted to name the destination (see the module docstring).
        """
        literal = source.split("{{", 1)[0]
        found = _SCHEME.match(literal)
        if not found:
            return None
        scheme = found.group()[:-1]
        if scheme.lower() not in ("http", "https") or not literal[len(scheme) + 1 :].startswith("//"):
            raise self.fail(
                f"the url has scheme {scheme!r}; use an absolute http(s) URL or a path relative to the backend",
                path,
            )
        authority = literal[len(scheme) + 3 :]
        for end in "/?#":
            authority = authority.split(end, 1)[0]
        if not authority or authority.endswith(_HOST_CONTINUES) or "{" in authority or "}" in authority:
            raise self.fail(
                "the url's scheme, host and port must be written out before any {{ }} or {argument}: the "
                "destination is config, and a template or an argument may only render the path and query "
                "(or make the url relative, to send calls to the server's instances)",
                path,
            )
        origin = f"{scheme}://{authority}"
        try:
            parts = urlsplit(origin)
            valid = bool(parts.hostname) and (parts.port is None or parts.port > 0)
        except ValueError:
            valid = False
        if not valid:
            raise self.fail(f"the url's origin {origin!r} is not a valid http(s) host and port", path)
        return origin

    def response_templates(
        self, response: Mapping[str, Any], path: str
    ) -> tuple[GoTemplate | None, GoTemplate | None, GoTemplate | None]:
        body = self.optional_template(response, "body", path)
        prepend = self.optional_template(response, "prependBody", path)
        append = self.optional_template(response, "appendBody", path)
        if body is not None and (prepend is not None or append is not None):
            other = "prependBody" if prepend is not None else "appendBody"
            raise self.fail(
                f"responseTemplate.body and responseTemplate.{other} cannot both be set: body replaces "
                "the response, prependBody/appendBody wrap it; keep one",
                f"{path}.{other}",
            )
        return body, prepend, append

    # -- request fields -----------------------------------------------------------------------

    def method(self, request: Mapping[str, Any], path: str) -> str:
        method = self.optional_string(request, "method", path).strip() or "GET"
        if not _METHOD.fullmatch(method):
            raise self.fail(f"{method!r} is not an HTTP method", f"{path}.method")
        return method.upper()

    def headers(self, request: Mapping[str, Any], path: str) -> tuple[_Header, ...]:
        raw = request.get("headers")
        if raw is None:
            return ()
        if not isinstance(raw, list):
            raise self.fail(f"expected a list of {{key, value}}, found {_json_type(raw)}", f"{path}.headers")
        compiled = []
        for index, entry in enumerate(raw):
            entry_path = f"{path}.headers[{index}]"
            self.require_object(entry, entry_path)
            key = entry.get("key")
            if not isinstance(key, str) or not _HEADER_NAME.fullmatch(key.strip()):
                raise self.fail(f"{key!r} is not a valid HTTP header name", f"{entry_path}.key")
            value = entry.get("value", "")
            if isinstance(value, bool) or not isinstance(value, str | int | float):
                raise self.fail(f"expected a string, found {_json_type(value)}", f"{entry_path}.value")
            field = f"{entry_path}.value"
            if key.strip().lower() == "host" and "{{" in str(value):
                raise self.fail(
                    "a Host header picks which site of the backend gets the call, so it may only be a fixed "
                    "value, not a template",
                    field,
                )
            compiled.append(
                _Header(key.strip(), self.template(str(value), field, credentials=True, whole_value=True), field)
            )
        return tuple(compiled)

    def args_to(self, request: Mapping[str, Any], path: str) -> str | None:
        chosen = []
        for flag in _ARGS_TO_FLAGS:
            value = request.get(flag, False)
            if not isinstance(value, bool):
                raise self.fail(f"expected true or false, found {_json_type(value)}", f"{path}.{flag}")
            if value:
                chosen.append(flag)
        if len(chosen) > 1:
            raise self.fail(
                f"{chosen[0]} and {chosen[1]} are both true; at most one argsTo* flag may be set",
                f"{path}.{chosen[1]}",
            )
        return chosen[0] if chosen else None

    def positions(self, template: Mapping[str, Any], root: str) -> dict[str, Position]:
        raw = template.get("argsPosition")
        if raw is None:
            return {}
        self.require_object(raw, f"{root}.argsPosition")
        positions: dict[str, Position] = {}
        for arg, position in raw.items():
            normalized = _POSITIONS.get(position.strip().lower()) if isinstance(position, str) else None
            if normalized is None:
                raise self.fail(
                    f"{position!r} is not an argument position; use one of {', '.join(sorted(_POSITIONS))}",
                    _member(f"{root}.argsPosition", str(arg)),
                )
            if normalized == "header" and str(arg).lower() == "host":
                raise self.fail(
                    "an argument cannot be sent as the Host header: it would let the caller pick which site "
                    "of the backend gets the call (and its credentials); use another position",
                    _member(f"{root}.argsPosition", str(arg)),
                )
            if normalized in ("header", "cookie") and not _HEADER_NAME.fullmatch(str(arg)):
                raise self.fail(
                    f"argument {arg!r} cannot be sent as a {normalized}: its name is not a valid "
                    f"{normalized} name; use another position or a requestTemplate header",
                    _member(f"{root}.argsPosition", str(arg)),
                )
            if not self.schema_allows(str(arg)):
                raise self.fail(
                    f"argsPosition names argument {arg!r}, which the inputSchema does not declare and "
                    "does not allow (additionalProperties is false); fix the name or the schema",
                    _member(f"{root}.argsPosition", str(arg)),
                )
            positions[str(arg)] = normalized
        return positions

    def schema_allows(self, arg: str) -> bool:
        properties = self.input_schema.get("properties")
        declared = isinstance(properties, Mapping) and arg in properties
        return declared or self.input_schema.get("additionalProperties") is not False

    def security(self, request: Mapping[str, Any], path: str) -> _Security | None:
        raw = request.get("security")
        if raw is None:
            return None
        security_path = f"{path}.security"
        self.require_object(raw, security_path)
        scheme_id = raw.get("id")
        if not isinstance(scheme_id, str) or not scheme_id:
            raise self.fail("the security block needs the id of a securitySchemes entry", f"{security_path}.id")
        for index, scheme in enumerate(self.schemes):
            if isinstance(scheme, Mapping) and scheme.get("id") == scheme_id:
                return self.scheme(scheme, f"$.securitySchemes[{index}]", raw, security_path)
        known = ", ".join(repr(s.get("id")) for s in self.schemes if isinstance(s, Mapping)) or "none"
        raise self.fail(
            f"security scheme {scheme_id!r} is not declared in securitySchemes (declared: {known})",
            f"{security_path}.id",
        )

    def scheme(self, scheme: Mapping[str, Any], scheme_path: str, use: Mapping[str, Any], use_path: str) -> _Security:
        scheme_id = str(scheme["id"])
        kind_of = str(scheme.get("type", "")).strip().lower()
        kind: Literal["bearer", "basic", "apiKey-header", "apiKey-query"]
        name = ""
        if kind_of == "http":
            http_scheme = str(scheme.get("scheme", "")).strip().lower()
            if http_scheme not in ("bearer", "basic"):
                raise self.fail(
                    f"http security scheme {scheme_id!r} needs scheme 'bearer' or 'basic'",
                    f"{scheme_path}.scheme",
                )
            kind = "bearer" if http_scheme == "bearer" else "basic"
        elif kind_of == "apikey":
            where = str(scheme.get("in", "")).strip().lower()
            name = str(scheme.get("name", "")).strip()
            if where not in ("header", "query"):
                raise self.fail(
                    f"apiKey security scheme {scheme_id!r} needs in 'header' or 'query'", f"{scheme_path}.in"
                )
            if not name or (where == "header" and not _HEADER_NAME.fullmatch(name)):
                raise self.fail(
                    f"apiKey security scheme {scheme_id!r} needs the {where} name to carry the key",
                    f"{scheme_path}.name",
                )
            kind = "apiKey-header" if where == "header" else "apiKey-query"
        else:
            raise self.fail(
                f"security scheme {scheme_id!r} has type {scheme.get('type')!r}; use 'http' or 'apiKey'",
                f"{scheme_path}.type",
            )
        override = use.get("credential")
        if override:
            source, source_path = override, f"{use_path}.credential"
        else:
            source, source_path = scheme.get("defaultCredential"), f"{scheme_path}.defaultCredential"
        if not isinstance(source, str) or not source.strip():
            raise self.fail(
                f"security scheme {scheme_id!r} has no defaultCredential and the tool gives no credential",
                source_path,
            )
        return _Security(
            scheme_id, kind, name, self.template(source, source_path, secret=True, credentials=True, whole_value=True)
        )


# -- value encoding -------------------------------------------------------------------------------


def _template_data(args: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """The request-side template root; plain dicts because the engine walks JSON-shaped data only."""
    return {"args": _plain(args), "config": _plain(config)}


def _plain(value: Any) -> Any:
    # Server config arrives as read-only mapping proxies (it is shared by every call).
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    return value


def _path_segment(text: str) -> str:
    """A path argument as one segment: every reserved character escaped, and ``.``/``..`` too (no climbing)."""
    if text in (".", ".."):
        return text.replace(".", "%2E")
    return quote(text, safe="")


def _text(value: Any) -> str:
    """How an argument reads in a URL, header or form.

    Scalars as Go's ``%v`` prints them, except that integral floats print as
    integers (``3``, never ``1e+06``); objects and lists as compact JSON.
    """
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < 1e15:
            return str(int(value))
        return repr(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _query_pairs(name: str, value: Any) -> list[tuple[str, str]]:
    if isinstance(value, list):
        return [(name, _text(item)) for item in value]
    return [(name, _text(value))]


def _add_query(url: str, pairs: Sequence[tuple[str, str]]) -> str:
    parts = urlsplit(url)
    extra = urlencode(pairs, quote_via=quote)
    query = f"{parts.query}&{extra}" if parts.query else extra
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, parts.fragment))


def _json_bytes(fields: Mapping[str, Any]) -> bytes:
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def _form_bytes(fields: Mapping[str, Any]) -> bytes:
    pairs = [pair for name, value in fields.items() for pair in _query_pairs(name, value)]
    return urlencode(pairs).encode("ascii")


def _find_header(headers: Sequence[tuple[str, str]], name: str) -> str | None:
    for key, value in headers:
        if key.lower() == name:
            return value
    return None


def _merge_cookies(headers: list[tuple[str, str]], cookies: Sequence[str]) -> list[tuple[str, str]]:
    joined = "; ".join(cookies)
    for index, (key, value) in enumerate(headers):
        if key.lower() == "cookie":
            merged = f"{value.rstrip('; ')}; {joined}" if value.strip() else joined
            return [*headers[:index], (key, merged), *headers[index + 1 :]]
    return [*headers, ("Cookie", joined)]


# -- response decoding ----------------------------------------------------------------------------


def _decode(body: bytes, content_type: str) -> str:
    charset = "utf-8"
    for param in content_type.split(";")[1:]:
        key, _, value = param.partition("=")
        if key.strip().lower() == "charset" and value.strip():
            charset = value.strip().strip('"')
    try:
        return body.decode(charset, errors="replace")
    except LookupError:
        return body.decode("utf-8", errors="replace")


def _parse_json(text: str) -> tuple[Any, bool]:
    """The answer as JSON the gateway can serve again (``remote.jsondoc``), or ``(None, False)``: it is text."""
    if not text.strip():
        return None, False
    try:
        return load_json(text), True
    except ValueError:
        return None, False


def _sent_credentials(
    config: Mapping[str, Any], url: str, headers: Sequence[tuple[str, str]], body: bytes | None
) -> list[str]:
    """The server's credential values that rendering put into this request (a header, the url, the body)."""
    values = credential_values(config)
    if not values:
        return []
    sent = [url, *(value for _, value in headers)]
    if body:
        sent.append(body.decode("utf-8", errors="replace"))
    return [
        value for value in values
        if value and (any(value in text for text in sent) or quote(value, safe=_URL_SAFE) in url)
    ]


def _text_block(text: str) -> dict[str, Any]:
    return {"type": "text", "text": text}


def _json_type(value: Any) -> str:
    names: Mapping[type, str] = {bool: "a boolean", int: "a number", float: "a number", str: "a string"}
    if value is None:
        return "null"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, list):
        return "a list"
    return names.get(type(value), type(value).__name__)


def _member(path: str, key: str) -> str:
    """``$.a.b`` for plain keys, ``$.a['b.c']`` for keys a dotted path would misread."""
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_-]*", key):
        return f"{path}.{key}"
    return f"{path}[{json.dumps(key)}]"
