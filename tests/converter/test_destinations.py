"""Destinations come from the cluster: rendering chooses the path and query, never the scheme, host or port.

The property tests build requests from argument values made to escape
(``@``, ``//``, ``\\``, ``..``, ``%``, line breaks, full URLs, other hosts)
and read the URL exactly as aiohttp will (``yarl.URL(url, encoded=True)``):
either the call is refused with a tool error, or it goes to the configured
origin with nothing that could end the request line.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from yarl import URL

from mcpgw.converter.rest import RestBinding, compile_rest_binding
from mcpgw.registry.errors import ConversionError, InvocationError

BASE = "http://10.0.0.1:8080"
FUZZ = settings(max_examples=400, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMA = {"type": "object", "properties": {"u": {"type": "string"}, "id": {"type": "string"}}}


def compiled(url: str, **template: Any) -> RestBinding:
    return compile_rest_binding(
        "t", {"requestTemplate": {"url": url, "method": "GET", **template.pop("request", {})}, **template}, [], SCHEMA
    )


def conversion_error(url: str, **template: Any) -> ConversionError:
    with pytest.raises(ConversionError) as caught:
        compiled(url, **template)
    return caught.value


@pytest.mark.parametrize("url", [
    "http://{{ .config.host }}/w",
    "https://{{ .args.u }}",
    "http://api.{{ .config.region }}.example.com/w",
    "http://127.0.0.1:{{ .args.u }}/w",
    "http://user@{{ .args.u }}/w",
    "https://{id}.example.com/w",
    "ftp://files.example.com/{{ .args.u }}",
    "http://[::1/{{ .args.u }}",
    "http://host:99999/{{ .args.u }}",
    "http://host:port/{{ .args.u }}",
])
def test_a_url_whose_host_is_not_written_out_is_refused_when_the_spec_is_converted(url: str) -> None:
    error = conversion_error(url)

    assert error.path.endswith("requestTemplate.url")
    assert any(word in error.reason for word in ("written out", "scheme", "not a valid http(s) host"))


@pytest.mark.parametrize("rendered", [
    "https://cfg.example.com/w", "//evil.example.com/x", "\\\\evil.example.com\\x", "/\\evil.example.com/x",
    "file:///etc/passwd", "javascript:alert(1)", "localhost:8000/x",
])
def test_a_relative_url_that_renders_a_destination_is_a_tool_error(rendered: str) -> None:
    with pytest.raises(InvocationError, match="destination comes from the server's instances"):
        compiled("{{ .config.target }}").build_request({}, {"target": rendered}, BASE)


def test_a_host_header_may_only_be_fixed_and_no_argument_may_be_sent_as_one() -> None:
    assert compiled("/w", request={"headers": [{"key": "Host", "value": "api.example.com"}]})
    templated = conversion_error("/w", request={"headers": [{"key": "host", "value": "{{ .args.u }}"}]})
    assert "Host header" in templated.reason
    positioned = conversion_error("/w", argsPosition={"Host": "header"})
    assert "Host header" in positioned.reason


def test_rendered_text_that_a_url_cannot_carry_is_percent_encoded_not_sent_raw() -> None:
    request = compiled("/search?q={{ .args.u }}").build_request({"u": "a b\r\nHost: evil\u00e9"}, {}, BASE)

    assert request.url == f"{BASE}/search?q=a%20b%0D%0AHost:%20evil%C3%A9"


@pytest.mark.parametrize(("value", "segment"),
                         [("..", "%2E%2E"), (".", "%2E"), ("...", "..."), ("a/../b", "a%2F..%2Fb")])
def test_a_path_argument_is_one_segment_that_cannot_climb(value: str, segment: str) -> None:
    assert compiled("/items/{id}/x").build_request({"id": value}, {}, BASE).url == f"{BASE}/items/{segment}/x"


# -- escape attempts ---------------------------------------------------------------------------------

_TOKENS = [*"@:/\\?#%.[]&= \t\r\n\x00", "127.0.0.2", "//", "http://", "evil.com", "%2F", "%40", "..", "é", "8000", "a"]
_escape = st.lists(st.sampled_from(_TOKENS), max_size=10).map("".join)

TEMPLATES = {
    "whole url from an argument": ("{{ .args.u }}", BASE),
    "relative path": ("/a/{{ .args.u }}", BASE),
    "after a written-out port": ("http://127.0.0.1:8000{{ .args.u }}", "http://127.0.0.1:8000"),
    "after a written-out host": ("http://127.0.0.1{{ .args.u }}/x", "http://127.0.0.1"),
    "path of a fixed origin": ("https://api.example.com/v1/{{ .args.u }}?k={{ .args.u }}", "https://api.example.com"),
    "path placeholder": ("/items/{id}", BASE),
    "placeholder after a fixed origin": ("https://api.example.com/items/{id}", "https://api.example.com"),
}


def _origin(url: str) -> tuple[str | None, str | None, int | None]:
    parsed = URL(url, encoded=True)
    return parsed.scheme, parsed.host, parsed.port


@pytest.mark.parametrize("case", sorted(TEMPLATES))
@FUZZ
@given(value=_escape)
def test_no_argument_value_sends_a_call_anywhere_but_the_configured_origin(case: str, value: str) -> None:
    template, origin = TEMPLATES[case]
    binding = compiled(template, argsPosition={"id": "path"})
    try:
        request = binding.build_request({"u": value, "id": value}, {}, BASE)
    except InvocationError as exc:
        refused: InvocationError | None = exc
    else:
        refused = None
    if refused is not None:
        assert "Tool 't'" in str(refused)
        return
    assert _origin(request.url) == _origin(origin)
    assert request.url.startswith(origin)
    assert not any(c in request.url for c in " \t\r\n\x00\\")
