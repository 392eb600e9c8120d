"""Credentials the gateway injected into a request never come back to the client.

The gateway adds credentials the client never sees (an API key header, a
bearer token, a key in the query).  A backend that echoes its request (many
do in their error pages: "invalid request GET /x?key=…", or a debug echo)
would hand them to the client through the tool result.  So every text the
client gets from a call (content, structured content, error messages) is
scrubbed of every credential value injected into that call, in each form it
was sent or could plausibly be echoed: as is, percent-encoded (query),
base64 (HTTP basic) and JSON-escaped.

Secrets are matched as exact substrings; the scrub is a no-op when none
occurs, which is what almost every answer costs (one substring search per
form).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote, quote_plus

REDACTED = "[credential removed by mcpgw]"


def secret_forms(secrets: Iterable[str]) -> frozenset[str]:
    """Each secret as sent and as an echo may show it."""
    forms: set[str] = set()
    for secret in secrets:
        if not secret:
            continue
        forms.update(
            {
                secret,
                quote(secret, safe=""),
                quote_plus(secret),
                json.dumps(secret)[1:-1],
                json.dumps(secret, ensure_ascii=False)[1:-1],
                base64.b64encode(secret.encode()).decode("ascii"),
            }
        )
    forms.discard("")
    return frozenset(forms)


def credential_values(config: Mapping[str, Any]) -> list[str]:
    """Every text inside the server's ``.config.credentials`` (a referenced config, parsed or not)."""
    found: list[str] = []
    stack: list[Any] = [config.get("credentials") or {}]
    while stack:
        value = stack.pop()
        if isinstance(value, str):
            found.append(value)
        elif isinstance(value, Mapping):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
    return found


def scrub_text(text: str, forms: frozenset[str]) -> str:
    """``text`` with every form of every secret replaced (longest first, so no fragment survives)."""
    if not forms or not any(form in text for form in forms):
        return text
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def scrub_value(value: Any, forms: frozenset[str]) -> Any:
    """A JSON value with every string (keys too) scrubbed."""
    if not forms:
        return value
    if isinstance(value, str):
        return scrub_text(value, forms)
    if isinstance(value, Mapping):
        return {scrub_text(str(k), forms): scrub_value(v, forms) for k, v in value.items()}
    if isinstance(value, list):
        return [scrub_value(item, forms) for item in value]
    return value
