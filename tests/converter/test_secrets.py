"""Credentials injected into a request are scrubbed from everything the client gets back, in every form sent."""

from __future__ import annotations

import base64
import json
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mcpgw.converter.rest import RestBinding, compile_rest_binding
from mcpgw.converter.secrets import REDACTED, secret_forms

BASE = "http://10.0.0.1:8080"
SECRET = "k3y/with+odd chars&é"
FUZZ = settings(max_examples=300, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
SCHEMES = [
    {"id": "header", "type": "apiKey", "in": "header", "name": "X-Key", "defaultCredential": SECRET},
    {"id": "query", "type": "apiKey", "in": "query", "name": "key", "defaultCredential": SECRET},
    {"id": "basic", "type": "http", "scheme": "basic", "defaultCredential": f"user:{SECRET}"},
    {"id": "bearer", "type": "http", "scheme": "bearer", "defaultCredential": SECRET},
]


def binding(scheme: str, **template: Any) -> RestBinding:
    request = {"url": "/echo", "method": "GET", "security": {"id": scheme}}
    return compile_rest_binding("t", {"requestTemplate": request, **template}, SCHEMES, {"type": "object"})


def _leaks(text: str, secret: str = SECRET) -> list[str]:
    forms = [secret, quote(secret, safe=""), quote_plus(secret), base64.b64encode(secret.encode()).decode(),
             json.dumps(secret)[1:-1], json.dumps(secret, ensure_ascii=False)[1:-1]]
    return [form for form in forms if form in text]


def _echo(request_url: str, headers: tuple[tuple[str, str], ...]) -> bytes:
    return json.dumps({"url": request_url, "headers": dict(headers)}).encode()


@pytest.mark.parametrize("scheme", ["header", "query", "basic", "bearer"])
@pytest.mark.parametrize("status", [200, 401, 503])
def test_an_echoed_request_comes_back_without_the_credential(scheme: str, status: int) -> None:
    compiled = binding(scheme)
    request = compiled.build_request({}, {}, BASE)
    assert request.secrets  # something was injected

    result = compiled.map_response(status, {"content-type": "application/json"}, _echo(request.url, request.headers),
                                   has_output_schema=False, secrets=request.secrets)

    text = json.dumps([dict(block) for block in result.content])
    assert _leaks(text) == []
    assert REDACTED in text


def test_a_credential_at_the_cut_of_an_error_excerpt_is_not_left_half_shown() -> None:
    compiled = binding("header")
    request = compiled.build_request({}, {}, BASE)
    body = ("x" * 495 + SECRET).encode()

    result = compiled.map_response(502, {}, body, has_output_schema=False, secrets=request.secrets)

    assert SECRET[:5] not in result.content[0]["text"]


def test_structured_content_and_rendered_templates_are_scrubbed_too() -> None:
    compiled = binding("header", responseTemplate={"prependBody": "got: "},
                       errorResponseTemplate="refused: {{ .headers }}")
    request = compiled.build_request({}, {}, BASE)
    body = _echo(request.url, request.headers)

    ok = compiled.map_response(200, {"content-type": "application/json"}, body, has_output_schema=True,
                               secrets=request.secrets)
    refused = compiled.map_response(400, {"content-type": "application/json"}, body, has_output_schema=False,
                                    secrets=request.secrets)

    assert _leaks(json.dumps(ok.structured, ensure_ascii=False)) == []
    assert _leaks(ok.content[0]["text"]) == []
    assert _leaks(refused.content[0]["text"]) == []


def test_a_credential_from_a_referenced_config_rendered_into_a_header_is_scrubbed() -> None:
    request_template = {"url": "/echo", "method": "GET",
                        "headers": [{"key": "X-Token", "value": "{{ ${nacos.token/creds}.data }}"}]}
    compiled = compile_rest_binding("t", {"requestTemplate": request_template}, [], {"type": "object"})
    config = {"credentials": {"creds_token": {"data": SECRET, "note": "not sent"}}}
    request = compiled.build_request({}, config, BASE)

    result = compiled.map_response(500, {}, _echo(request.url, request.headers), has_output_schema=False,
                                   secrets=request.secrets)

    assert _leaks(result.content[0]["text"]) == []
    assert "not sent" not in " ".join(request.secrets)


@FUZZ
@given(secret=st.text(min_size=6, max_size=20), noise=st.lists(st.text(max_size=8), max_size=4),
       forms=st.lists(st.sampled_from(["raw", "quoted", "plus", "b64", "json"]), min_size=1, max_size=4))
def test_no_form_of_an_injected_secret_survives_in_an_echo(secret: str, noise: list[str], forms: list[str]) -> None:
    encoded = {"raw": secret, "quoted": quote(secret, safe=""), "plus": quote_plus(secret),
               "b64": base64.b64encode(secret.encode()).decode(), "json": json.dumps(secret)[1:-1]}
    body = "|".join([*noise, *(encoded[form] for form in forms)])
    compiled = compile_rest_binding("t", {"requestTemplate": {"url": "/x"}}, [], {"type": "object"})

    result = compiled.map_response(500, {}, body.encode(), has_output_schema=False, secrets=secret_forms([secret]))

    text = result.content[0]["text"].replace(REDACTED, "|")  # a secret may be a word of the placeholder itself
    assert all(encoded[form] not in text for form in forms)
