"""Session ids every replica accepts: the handshake's outcome, signed into the id itself.

A handshake-era MCP session lives in the memory of the process that answered
``initialize``; behind a load balancer without affinity the next request
lands on another replica, which answers ``404 Session not found`` (the most
reported problem of MCP gateways behind balancers). With a ``session_secret``
shared by the replicas, the id a gateway mints carries what the session needs
to be rebuilt anywhere, with an HMAC-SHA256 over it:

    mcpgw1.<base64url(JSON claims)>.<base64url(HMAC)>

The claims: the endpoint the session belongs to, the negotiated protocol
version, the client's capabilities and info (bounded), a digest of the
caller's credential (so a stolen id is useless to another caller, as on the
replica that made it), a random nonce, and an expiry. A replica that meets an
id it does not hold checks the MAC (constant time), the endpoint, the expiry
and the credential, and then builds the session as the handshake left it,
without a new handshake. Anything else gets the specification's 404.

The key is derived once per process with one HMAC (no slow KDF: a minted id
costs microseconds, not the tens of milliseconds a password hash would add to
every new session). The claims are signed, not encrypted: they hold nothing
the client did not send itself.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from mcp_types.version import HANDSHAKE_PROTOCOL_VERSIONS, LATEST_HANDSHAKE_VERSION

PREFIX: Final = "mcpgw1"
MAX_CLAIMS_BYTES: Final = 2048
"""Client info and capabilities beyond this are left out of the id (it travels in every request's headers)."""
MAX_ID_CHARS: Final = 4096
MIN_SECRET_CHARS: Final = 16


@dataclass(frozen=True, slots=True)
class SessionClaims:
    endpoint: str
    protocol_version: str
    capabilities: Mapping[str, Any]
    client_info: Mapping[str, Any]
    caller: str | None
    """A digest of the credential that opened the session, or None without authentication."""
    expires: float


def negotiated_version(requested: Any) -> str:
    """The protocol version the SDK's handshake settles on for ``requested`` (the same rule)."""
    return requested if isinstance(requested, str) and requested in HANDSHAKE_PROTOCOL_VERSIONS \
        else LATEST_HANDSHAKE_VERSION


def caller_digest(identity_key: str | None) -> str | None:
    return None if identity_key is None else hashlib.sha256(identity_key.encode()).hexdigest()[:32]


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


class SessionIds:
    """Mints and checks session ids with one shared secret; thread-safe (no state but the key)."""

    def __init__(self, secret: str, *, max_age: float = 86_400.0, clock: Callable[[], float] = time.time) -> None:
        if len(secret) < MIN_SECRET_CHARS:
            raise ValueError(f"a session secret has at least {MIN_SECRET_CHARS} characters")
        self._key = hmac.new(secret.encode(), b"mcpgw session ids v1", hashlib.sha256).digest()
        self._max_age = max_age
        self._clock = clock

    def mint(self, endpoint: str, initialize: Mapping[str, Any] | None, caller: str | None) -> str:
        """A new session id for ``endpoint`` from the ``initialize`` request's params."""
        params = initialize if isinstance(initialize, Mapping) else {}
        capabilities = params.get("capabilities")
        client_info = params.get("clientInfo")
        claims: dict[str, Any] = {
            "e": endpoint,
            "v": negotiated_version(params.get("protocolVersion")),
            "c": capabilities if isinstance(capabilities, Mapping) else {},
            "i": client_info if isinstance(client_info, Mapping) else {},
            "u": caller,
            "n": secrets.token_hex(8),
            "x": int(self._clock() + self._max_age),
        }
        body = json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode()
        if len(body) > MAX_CLAIMS_BYTES:
            # An unusually verbose client: keep what the gateway relies on (its name), drop the rest.
            name = claims["i"].get("name") if isinstance(claims["i"], Mapping) else None
            claims["c"] = {}
            claims["i"] = {"name": str(name)[:200], "version": "?"} if name else {}
            body = json.dumps(claims, separators=(",", ":"), ensure_ascii=True).encode()
        payload = _b64(body)
        return f"{PREFIX}.{payload}.{self._mac(payload)}"

    def verify(self, session_id: str, endpoint: str) -> SessionClaims | None:
        """The claims of a genuine, unexpired id minted for ``endpoint``; None for anything else."""
        if len(session_id) > MAX_ID_CHARS:
            return None
        parts = session_id.split(".")
        if len(parts) != 3 or parts[0] != PREFIX:
            return None
        _, payload, mac = parts
        if not hmac.compare_digest(mac, self._mac(payload)):
            return None
        try:
            claims = json.loads(_unb64(payload))
        except (binascii.Error, ValueError):
            return None
        if not isinstance(claims, dict) or claims.get("e") != endpoint:
            return None
        expires = claims.get("x")
        if not isinstance(expires, int) or expires <= self._clock():
            return None
        version, capabilities, info, caller = claims.get("v"), claims.get("c"), claims.get("i"), claims.get("u")
        if not isinstance(version, str) or not isinstance(capabilities, dict) or not isinstance(info, dict):
            return None
        return SessionClaims(endpoint, version, capabilities, info, caller if isinstance(caller, str) else None,
                             float(expires))

    def _mac(self, payload: str) -> str:
        return _b64(hmac.new(self._key, payload.encode("ascii"), hashlib.sha256).digest())
