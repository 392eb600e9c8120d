"""The front door: who may call which tool, and how much.

Every HTTP request passes ``FrontDoor`` (an ASGI middleware around the whole
app) before anything else sees it. It sorts the path into one of four kinds:

- open: ``/healthz``, ``/readyz`` and the OAuth protected-resource metadata
  (``/.well-known/oauth-protected-resource[/…]``, RFC 9728): never refused;
- MCP: ``/mcp``, ``/mcp/{server}``, ``/sse…`` and ``/messages…``;
- admin: ``/admin/*``, ``/metrics``, ``/ui…``;
- connect: the connect API (``/api/mcp/servers…``), which keeps its own guard
  (``connect_token`` or loopback) and also accepts the admin credential.

Then, in order:

1. **Origin** (the MCP transport specification, against DNS rebinding): a
   request that carries an ``Origin`` header is refused with 403 unless the
   origin is listed in ``auth.allowed_origins`` or is one of the gateway's
   own loopback origins (``http://127.0.0.1:<its port>``, ``localhost``,
   ``[::1]``). Requests without ``Origin`` (every non-browser client) pass.
2. **Admin surfaces** need the admin credential when one is configured
   (``auth.admin_token_sha256``): ``Authorization: Bearer <token>``, or HTTP
   Basic with the token as password so a browser can open ``/ui``. Without
   one, they answer loopback callers only.
3. **MCP paths** with authentication configured (API keys and/or JWT) need
   a credential: ``Authorization: Bearer <key or JWT>`` or ``X-API-Key``. No
   credential, or one that does not verify, is answered 401 with
   ``WWW-Authenticate: Bearer resource_metadata="…"`` so that MCP clients can
   discover the authorization server (the MCP authorization specification's
   resource-server role). Without authentication configured only loopback
   callers are served, unless ``auth.allow_unauthenticated_remote`` says
   otherwise (logged as a warning at start).

The identity found (``Identity``) rides in the ASGI scope; the MCP layer
asks it which tools may be listed and called (``Identity.may_call``), so a
tool the caller may not call is neither listed nor callable and answers
exactly like an unknown one.

API keys are compared by SHA-256 digest (a dictionary lookup of the
presented key's digest: the time taken does not depend on how much of a key
matched). JWTs are verified with PyJWT against keys from the configured
JWKS URL, fetched asynchronously, cached, and fetched again when a token
names an unknown ``kid`` (at most once per ``JWKS_MIN_REFRESH_S``, so a
stream of made-up ``kid`` s cannot hammer the identity provider). A verified
token is remembered until it expires (bounded LRU), so a client that sends
the same token on every call pays the signature check once.

Rate limits (``RateLimiter``) are token buckets per identity and per tool;
an exceeded limit names the limit and when to retry.
"""

from __future__ import annotations

import asyncio
import base64
import collections
import fnmatch
import hashlib
import hmac
import ipaddress
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import httpx
import jwt
import structlog
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from starlette.types import ASGIApp, Receive, Scope, Send

log = structlog.get_logger(__name__)

IDENTITY_SCOPE_KEY: Final = "mcpgw.identity"
"""Where the request's ``Identity`` rides in the ASGI scope."""
ADMIN_SCOPE_KEY: Final = "mcpgw.admin"
"""Set (True) in the scope when the request carried a valid admin credential."""

JWKS_MIN_REFRESH_S: Final = 10.0
JWKS_MAX_BYTES: Final = 256 * 1024
VERIFIED_TOKENS: Final = 10_000
"""Verified JWTs remembered (until they expire)."""
MAX_CREDENTIAL_BYTES: Final = 16 * 1024

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")
_NEVER_FORWARDED = frozenset({
    "host", "content-length", "content-type", "connection", "keep-alive", "transfer-encoding", "te", "trailer",
    "upgrade", "proxy-authorization", "proxy-authenticate", "mcp-session-id", "mcp-protocol-version", "cookie",
    "x-api-key",
})
"""Headers a forwarding rule may not name: transport-level, the MCP session's own, or the gateway's key header."""


# ---------------------------------------------------------------- settings


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", use_attribute_docstrings=True)


def _check_globs(patterns: Sequence[str]) -> tuple[str, ...]:
    for pattern in patterns:
        if not pattern or len(pattern) > 256 or any(c.isspace() for c in pattern):
            raise ValueError(f"{pattern!r} is not a tool pattern: write 'server/tool' globs such as 'weather/*' "
                             "or '*'")
    return tuple(patterns)


class ApiKeySettings(_Section):
    """One static API key."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._@-]+$")
    """Who the key belongs to: the identity in logs, the audit line and rate limits."""
    key_sha256: str | None = None
    """The key's SHA-256 digest, in hex (``printf %s "$KEY" | sha256sum``)."""
    key: str | None = Field(default=None, min_length=16, repr=False)
    """The key in plain text (a warning is logged: prefer ``key_sha256``)."""
    allow: tuple[str, ...] = ("*",)
    """The tools it may list and call: ``server/tool`` globs (``weather/*``, ``gateway-info/greet``, ``*``)."""

    @field_validator("key_sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _HEX64.match(value.lower()):
            raise ValueError("must be 64 hex digits (the SHA-256 of the key)")
        return None if value is None else value.lower()

    @field_validator("allow")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_globs(value)

    @model_validator(mode="after")
    def _one_key(self) -> ApiKeySettings:
        if (self.key is None) == (self.key_sha256 is None):
            raise ValueError(f"API key {self.name!r}: give exactly one of key_sha256 (preferred) or key")
        return self

    def digest(self) -> str:
        return self.key_sha256 or hashlib.sha256((self.key or "").encode()).hexdigest()


class JwtRule(_Section):
    """Tools a token may call when one of its claims has a value: ``{claim: scope, value: weather.read, allow: …}``."""

    claim: str = Field(min_length=1, max_length=64)
    """The claim to look at (``scope`` and ``scp`` are split on spaces; lists are taken as they are)."""
    value: str = Field(min_length=1, max_length=256)
    """The value the claim must have (or contain, for a list or a space-separated scope)."""
    allow: tuple[str, ...]
    """The tools such a token may call, besides ``jwt.allow`` (``server/tool`` globs)."""

    @field_validator("allow")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_globs(value)


class JwtSettings(_Section):
    """Bearer JWTs from an identity provider, verified against its JWKS."""

    jwks_url: str = Field(pattern=r"^https?://")
    """Where the provider publishes its signing keys (JSON Web Key Set)."""
    issuer: str = Field(min_length=1)
    """The ``iss`` a token must carry."""
    audience: str = Field(min_length=1)
    """The ``aud`` a token must carry (this gateway's name at the provider)."""
    algorithms: tuple[Literal["RS256", "RS384", "RS512", "PS256", "ES256", "ES384", "EdDSA"], ...] = (
        "RS256", "ES256", "EdDSA")
    """Signature algorithms accepted (never ``none`` nor a shared-secret HS*)."""
    leeway_s: float = Field(default=30.0, ge=0, le=600)
    """Clock skew allowed on ``exp`` and ``nbf``."""
    jwks_cache_s: float = Field(default=300.0, gt=0)
    """How long fetched keys are used before they are fetched again."""
    allow: tuple[str, ...] = ()
    """Tools every valid token may call, whatever its claims (``server/tool`` globs)."""
    rules: tuple[JwtRule, ...] = ()
    """More tools for tokens whose claims match (``sub``, ``scope``, ``groups``…)."""

    @field_validator("allow")
    @classmethod
    def _globs(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _check_globs(value)


class AuthSettings(_Section):
    """The ``auth`` section: who may call the MCP endpoints and the admin surfaces (README "Securing the gateway")."""

    api_keys: tuple[ApiKeySettings, ...] = ()
    jwt: JwtSettings | None = None
    admin_token_sha256: str | None = None
    """SHA-256 (hex) of the token for ``/admin/*``, ``/metrics``, ``/ui`` and the connect API."""
    admin_token: str | None = Field(default=None, min_length=16, repr=False)
    """The admin token in plain text (warned; prefer ``admin_token_sha256``)."""
    allowed_origins: tuple[str, ...] = ()
    """Browser origins allowed besides the gateway's own loopback ones (``https://app.example.com``)."""
    allow_unauthenticated_remote: bool = False
    """Without API keys or JWT: serve MCP to callers on other hosts too (logged as a warning at start)."""
    public_url: str | None = Field(default=None, pattern=r"^https?://[^/?#]+$")
    """This gateway's external base URL (``https://mcp.example.com``) for the protected-resource metadata."""
    authorization_servers: tuple[str, ...] = ()
    """Issuers MCP clients get tokens from (RFC 9728 ``authorization_servers``)."""
    scopes_supported: tuple[str, ...] = ()
    """Scopes clients may ask for (RFC 9728 ``scopes_supported``)."""

    @field_validator("admin_token_sha256")
    @classmethod
    def _digest(cls, value: str | None) -> str | None:
        if value is not None and not _HEX64.match(value.lower()):
            raise ValueError("must be 64 hex digits (the SHA-256 of the token)")
        return None if value is None else value.lower()

    @field_validator("allowed_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if not re.match(r"^https?://[^/?#\s]+$", origin):
                raise ValueError(f"{origin!r} is not an origin: scheme and host (and port), e.g. "
                                 "'https://app.example.com', no path")
        return tuple(o.lower() for o in value)

    @model_validator(mode="after")
    def _unique(self) -> AuthSettings:
        names = [k.name for k in self.api_keys]
        twice = sorted({n for n in names if names.count(n) > 1})
        if twice:
            raise ValueError(f"API key names must be unique: {', '.join(twice)}")
        digests = [k.digest() for k in self.api_keys]
        if len(set(digests)) != len(digests):
            raise ValueError("two API keys have the same key")
        if self.admin_token is not None and self.admin_token_sha256 is not None:
            raise ValueError("give admin_token_sha256 or admin_token, not both")
        if self.admin_digest() in digests:
            raise ValueError("the admin token must differ from every API key")
        return self

    @property
    def authenticates(self) -> bool:
        """Whether MCP callers must present a credential."""
        return bool(self.api_keys) or self.jwt is not None

    def admin_digest(self) -> str | None:
        if self.admin_token is not None:
            return hashlib.sha256(self.admin_token.encode()).hexdigest()
        return self.admin_token_sha256

    def plain_secrets(self) -> list[str]:
        """Where a secret is written in plain text (to warn about)."""
        found = [f"auth.api_keys[{k.name}].key" for k in self.api_keys if k.key is not None]
        return found + (["auth.admin_token"] if self.admin_token is not None else [])


class RateLimit(_Section):
    """A token bucket: ``per_second`` on average, ``burst`` at once."""

    per_second: float = Field(gt=0, allow_inf_nan=False)
    """Calls per second allowed on average."""
    burst: int = Field(default=1, ge=1)
    """Calls allowed at once after a quiet time."""


class RateLimitSettings(_Section):
    """The ``rate_limits`` section: token buckets per caller identity and per tool."""

    per_identity: RateLimit | None = None
    """Every caller (API key name, JWT subject, or client address without authentication) gets its own bucket."""
    per_tool: dict[str, RateLimit] = Field(default_factory=dict)
    """Per ``server/tool`` glob, shared by all callers; the first matching glob applies."""

    @field_validator("per_tool")
    @classmethod
    def _globs(cls, value: dict[str, RateLimit]) -> dict[str, RateLimit]:
        _check_globs(list(value))
        return value


class AuditSettings(_Section):
    """The ``audit`` section: one structured ``audit.call`` line per tool call."""

    enabled: bool = False
    """Log ``audit.call`` (identity, server, tool, outcome, duration) for every call; never results."""
    include_arguments: bool = False
    """Also log the call's arguments (they may hold personal data: off unless needed)."""


def check_forward_headers(value: Mapping[str, Sequence[str]]) -> dict[str, tuple[str, ...]]:
    """``forward_headers``: ``server`` or ``server/tool`` → header names forwarded from the caller."""
    checked: dict[str, tuple[str, ...]] = {}
    for where, names in value.items():
        if not where or where.count("/") > 1:
            raise ValueError(f"{where!r}: key a forwarding rule by 'server' or 'server/tool'")
        for name in names:
            if not _HEADER_NAME.match(name):
                raise ValueError(f"{where}: {name!r} is not a header name")
            if name.lower() in _NEVER_FORWARDED:
                raise ValueError(f"{where}: header {name!r} is never forwarded (it belongs to the transport or to "
                                 "the gateway)")
        checked[where] = tuple(n.lower() for n in names)
    return checked


# ---------------------------------------------------------------- identities


def _allowed(patterns: Sequence[str], server: str, tool: str) -> bool:
    target = f"{server}/{tool}"
    for pattern in patterns:
        if pattern == "*" or fnmatch.fnmatchcase(target, pattern if "/" in pattern else pattern + "/*"):
            return True
    return False


@dataclass(frozen=True, slots=True)
class Identity:
    """Who is calling: an API key's name, a JWT's subject, or (without authentication) an address."""

    kind: Literal["anonymous", "api_key", "jwt"]
    name: str
    allow: tuple[str, ...] = ("*",)
    expires_at: float | None = None
    headers: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False)
    """The caller's request headers (lower-case names), for forwarding rules; never logged."""

    @property
    def key(self) -> str:
        return f"{self.kind}:{self.name}"

    def may_call(self, server: str, tool: str) -> bool:
        return _allowed(self.allow, server, tool)

    def with_headers(self, headers: Mapping[str, str]) -> Identity:
        return Identity(self.kind, self.name, self.allow, self.expires_at, headers)


def identity_of(scope: Mapping[str, Any]) -> Identity | None:
    found = scope.get(IDENTITY_SCOPE_KEY)
    return found if isinstance(found, Identity) else None


class CredentialError(Exception):
    """A presented credential that does not verify; the message is safe to show (no secret in it)."""


class JwksCache:
    """The provider's signing keys, fetched with httpx, cached for ``jwks_cache_s``, refetched on an unknown kid."""

    def __init__(self, settings: JwtSettings, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._settings = settings
        self._http = http
        self._clock = clock
        self._keys: dict[str, jwt.PyJWK] = {}
        self._anonymous: list[jwt.PyJWK] = []
        self._fetched_at: float | None = None
        self._lock = asyncio.Lock()
        self.fetches = 0

    async def key_for(self, kid: str | None) -> jwt.PyJWK:
        now = self._clock()
        stale = self._fetched_at is None or now - self._fetched_at > self._settings.jwks_cache_s
        found = self._lookup(kid)
        if found is not None and not stale:
            return found
        may_refresh = self._fetched_at is None or stale or now - self._fetched_at >= JWKS_MIN_REFRESH_S
        if may_refresh:
            async with self._lock:
                if self._fetched_at is None or self._fetched_at <= now:
                    await self._fetch()
            found = self._lookup(kid)
        if found is None:
            raise CredentialError("the token's signing key is not among the identity provider's keys")
        return found

    def _lookup(self, kid: str | None) -> jwt.PyJWK | None:
        if kid is not None:
            return self._keys.get(kid)
        return self._anonymous[0] if len(self._anonymous) == 1 and not self._keys else None

    async def _fetch(self) -> None:
        self.fetches += 1
        url = self._settings.jwks_url
        try:
            client = self._http or httpx.AsyncClient(timeout=5.0, trust_env=False)
            try:
                async with client.stream("GET", url, headers={"accept": "application/json"}) as response:
                    if response.status_code != 200:
                        raise CredentialError(f"the identity provider's key set answered {response.status_code}")
                    body = b""
                    async for chunk in response.aiter_bytes():
                        body += chunk
                        if len(body) > JWKS_MAX_BYTES:
                            raise CredentialError("the identity provider's key set is too large")
            finally:
                if self._http is None:
                    await client.aclose()
            document = json.loads(body)
            keys: dict[str, jwt.PyJWK] = {}
            anonymous: list[jwt.PyJWK] = []
            for entry in document.get("keys", []) if isinstance(document, dict) else []:
                if not isinstance(entry, dict) or entry.get("use", "sig") != "sig":
                    continue
                try:
                    key = jwt.PyJWK.from_dict(entry)
                except (jwt.PyJWKError, jwt.InvalidKeyError):
                    continue  # a key type this gateway cannot use (or a malformed one): skip it, keep the rest
                kid = entry.get("kid")
                if isinstance(kid, str):
                    keys[kid] = key
                else:
                    anonymous.append(key)
        except CredentialError:
            log.warning("auth.jwks_unusable", url=url)
            raise
        except (httpx.HTTPError, ValueError) as exc:
            log.warning("auth.jwks_unreachable", url=url, error=type(exc).__name__)
            if self._keys or self._anonymous:
                return  # keep using the keys we have
            raise CredentialError("the identity provider's key set cannot be fetched") from exc
        self._keys, self._anonymous = keys, anonymous
        self._fetched_at = self._clock()
        log.info("auth.jwks_fetched", url=url, keys=len(keys) + len(anonymous))


class Authenticator:
    """Turns a request's credential into an ``Identity``, or says why not."""

    def __init__(self, settings: AuthSettings, *, http: httpx.AsyncClient | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self._keys = {key.digest(): Identity("api_key", key.name, key.allow) for key in settings.api_keys}
        self._admin = settings.admin_digest()
        self._jwt = settings.jwt
        self._jwks = JwksCache(settings.jwt, http) if settings.jwt is not None else None
        self._verified: collections.OrderedDict[str, Identity] = collections.OrderedDict()
        self._clock = clock

    @property
    def jwks(self) -> JwksCache | None:
        return self._jwks

    def is_admin(self, credential: str | None) -> bool:
        if self._admin is None or not credential:
            return False
        return hmac.compare_digest(hashlib.sha256(credential.encode()).hexdigest(), self._admin)

    async def identify(self, credential: str) -> Identity:
        if len(credential) > MAX_CREDENTIAL_BYTES:
            raise CredentialError("the credential is too long")
        found = self._keys.get(hashlib.sha256(credential.encode()).hexdigest())
        if found is not None:
            return found
        if self._jwt is None or credential.count(".") != 2:
            raise CredentialError("the credential is not a valid API key" + (" or JWT" if self._jwt else ""))
        cached = self._verified.get(credential)
        now = self._clock()
        if cached is not None:
            if cached.expires_at is None or cached.expires_at + self._jwt.leeway_s > now:
                self._verified.move_to_end(credential)
                return cached
            del self._verified[credential]
        identity = await self._verify(credential)
        self._verified[credential] = identity
        if len(self._verified) > VERIFIED_TOKENS:
            self._verified.popitem(last=False)
        return identity

    async def _verify(self, token: str) -> Identity:
        settings = self._jwt
        assert settings is not None and self._jwks is not None
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError as exc:
            raise CredentialError("the bearer token is not a well-formed JWT") from exc
        algorithm = header.get("alg")
        if algorithm not in settings.algorithms:
            raise CredentialError(f"the token's algorithm {str(algorithm)[:16]!r} is not accepted")
        kid = header.get("kid")
        key = await self._jwks.key_for(kid if isinstance(kid, str) else None)
        try:
            claims = jwt.decode(
                token, key=key.key, algorithms=[algorithm], audience=settings.audience, issuer=settings.issuer,
                leeway=settings.leeway_s, options={"require": ["exp", "iss", "aud"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise CredentialError("the token has expired") from exc
        except jwt.ImmatureSignatureError as exc:
            raise CredentialError("the token is not valid yet (nbf)") from exc
        except jwt.InvalidAudienceError as exc:
            raise CredentialError("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise CredentialError("the token is from another issuer") from exc
        except jwt.PyJWTError as exc:
            raise CredentialError(f"the token does not verify ({type(exc).__name__})") from exc
        subject = claims.get("sub")
        name = subject if isinstance(subject, str) and subject else "(no subject)"
        allow = list(settings.allow)
        for rule in settings.rules:
            if rule.value in _claim_values(claims, rule.claim):
                allow.extend(rule.allow)
        expires = claims.get("exp")
        return Identity("jwt", name[:128], tuple(dict.fromkeys(allow)),
                        float(expires) if isinstance(expires, int | float) else None)


def _claim_values(claims: Mapping[str, Any], claim: str) -> set[str]:
    value = claims.get(claim)
    if isinstance(value, str):
        return set(value.split()) if claim in ("scope", "scp") else {value}
    if isinstance(value, list):
        return {v for v in value if isinstance(v, str)}
    return set()


# ---------------------------------------------------------------- rate limits


@dataclass(slots=True)
class _Bucket:
    tokens: float
    updated: float


class RateLimited(Exception):
    def __init__(self, limit: str, retry_after: float) -> None:
        self.limit = limit
        self.retry_after = retry_after
        super().__init__(f"rate limit exceeded: {limit}; retry in {retry_after:.1f} s")


class RateLimiter:
    """Token buckets per identity and per tool glob (the first matching glob's bucket is shared by all callers)."""

    def __init__(self, settings: RateLimitSettings, clock: Callable[[], float] = time.monotonic,
                 max_identities: int = 100_000) -> None:
        self._settings = settings
        self.clock = clock
        self._identities: collections.OrderedDict[str, _Bucket] = collections.OrderedDict()
        self._tools: dict[str, _Bucket] = {}
        self._max_identities = max_identities

    @property
    def active(self) -> bool:
        return self._settings.per_identity is not None or bool(self._settings.per_tool)

    def admit(self, identity: Identity | None, server: str, tool: str) -> None:
        """Take one token from each bucket that applies, or raise ``RateLimited`` taking none."""
        now = self.clock()
        taken: list[tuple[_Bucket, RateLimit, str]] = []
        per_identity = self._settings.per_identity
        if per_identity is not None:
            key = identity.key if identity is not None else "anonymous"
            bucket = self._identities.get(key)
            if bucket is None:
                bucket = self._identities[key] = _Bucket(float(per_identity.burst), now)
                if len(self._identities) > self._max_identities:
                    self._identities.popitem(last=False)
            self._identities.move_to_end(key)
            taken.append((bucket, per_identity, f"{per_identity.per_second:g}/s per caller ({key})"))
        for pattern, limit in self._settings.per_tool.items():
            if _allowed((pattern,), server, tool):
                bucket = self._tools.get(pattern)
                if bucket is None:
                    bucket = self._tools[pattern] = _Bucket(float(limit.burst), now)
                taken.append((bucket, limit, f"{limit.per_second:g}/s for {pattern}"))
                break
        for bucket, limit, _ in taken:
            bucket.tokens = min(float(limit.burst), bucket.tokens + (now - bucket.updated) * limit.per_second)
            bucket.updated = now
        for bucket, limit, label in taken:
            if bucket.tokens < 1.0:
                raise RateLimited(label, (1.0 - bucket.tokens) / limit.per_second)
        for bucket, _, _ in taken:
            bucket.tokens -= 1.0


# ---------------------------------------------------------------- the middleware


PathKind = Literal["open", "metadata", "mcp", "admin", "connect", "other"]

METADATA_PATH: Final = "/.well-known/oauth-protected-resource"


def path_kind(path: str) -> PathKind:
    if path in ("/healthz", "/readyz"):
        return "open"
    if path == METADATA_PATH or path.startswith(METADATA_PATH + "/"):
        return "metadata"
    for prefix in ("/mcp", "/sse", "/messages"):
        if path == prefix or path.startswith(prefix + "/"):
            return "mcp"
    if path in ("/admin", "/metrics", "/ui") or path.startswith(("/admin/", "/ui/")):
        return "admin"
    if path == "/api/mcp/servers" or path.startswith("/api/mcp/servers/"):
        return "connect"
    return "other"


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host.split("%", 1)[0]).is_loopback
    except ValueError:
        return host == "localhost"


def _header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1")
    return None


def _bearer(scope: Scope) -> tuple[str | None, str | None]:
    """(bearer-or-API-key credential, basic password) of the request."""
    authorization = _header(scope, b"authorization") or ""
    scheme, _, value = authorization.partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value:
        return value, None
    if scheme.lower() == "basic" and value:
        try:
            decoded = base64.b64decode(value, validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            return None, None
        return None, decoded.partition(":")[2] or None
    key = _header(scope, b"x-api-key")
    return (key.strip() or None) if key else None, None


async def _answer(send: Send, status: int, message: str, headers: Sequence[tuple[bytes, bytes]] = (),
                  *, jsonrpc: bool = False) -> None:
    document: dict[str, Any] = (
        {"jsonrpc": "2.0", "id": None, "error": {"code": -32001 if status in (401, 403) else -32000,
                                                  "message": message}}
        if jsonrpc else {"error": message}
    )
    body = json.dumps(document).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                            *headers]})
    await send({"type": "http.response.body", "body": body})


def startup_warnings(settings: AuthSettings, host: str) -> list[tuple[str, dict[str, Any]]]:
    """What ``serve`` says at start about how it is guarded (event, fields)."""
    said: list[tuple[str, dict[str, Any]]] = []
    for where in settings.plain_secrets():
        said.append(("auth.plain_secret", {"setting": where, "hint": "store its SHA-256 instead (*_sha256)"}))
    if not settings.authenticates:
        if settings.allow_unauthenticated_remote:
            said.append(("auth.unauthenticated_remote", {
                "hint": "anyone who can reach this gateway can list and call every tool "
                        "(auth.allow_unauthenticated_remote)"}))
        else:
            said.append(("auth.loopback_only", {
                "hint": "no authentication configured: MCP answers callers on this host only; configure "
                        "auth.api_keys or auth.jwt (README 'Securing the gateway')",
                "listening_on": host}))
    if settings.admin_digest() is None:
        said.append(("auth.admin_loopback_only", {
            "hint": "no admin token: /admin, /metrics, /ui answer callers on this host only"}))
    return said


class FrontDoor:
    """ASGI middleware: origin, admin credential, MCP authentication (see the module docstring)."""

    def __init__(self, app: ASGIApp, settings: AuthSettings | None, *, http: httpx.AsyncClient | None = None,
                 on_denied: Callable[[str], None] | None = None) -> None:
        self._app = app
        self.settings = settings or AuthSettings()
        self.authenticator = Authenticator(self.settings, http=http)
        self._origins = frozenset(self.settings.allowed_origins)
        self._on_denied = on_denied or (lambda _reason: None)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        kind = path_kind(scope["path"])
        if kind in ("open", "other"):
            await self._app(scope, receive, send)
            return
        if kind == "metadata":
            await self._metadata(scope, send)
            return
        origin = _header(scope, b"origin")
        if origin is not None and not self._origin_allowed(origin, scope):
            self._on_denied("origin")
            log.warning("auth.origin_refused", origin=origin[:200], path=scope["path"])
            await _answer(send, 403, f"origin {origin[:200]!r} is not allowed: add it to auth.allowed_origins",
                          jsonrpc=kind == "mcp")
            return
        client = scope.get("client")
        host = str(client[0]) if client else None
        bearer, basic = _bearer(scope)
        if kind == "connect":
            if self.authenticator.is_admin(bearer or basic):
                scope[ADMIN_SCOPE_KEY] = True
            await self._app(scope, receive, send)
            return
        if kind == "admin":
            if self.settings.admin_digest() is not None:
                if not self.authenticator.is_admin(bearer or basic):
                    self._on_denied("admin")
                    await _answer(send, 401, "this surface needs the gateway's admin token (auth.admin_token_sha256):"
                                  " send 'Authorization: Bearer <token>'",
                                  [(b"www-authenticate", b'Basic realm="mcpgw admin", charset="UTF-8"')])
                    return
                scope[ADMIN_SCOPE_KEY] = True
            elif not is_loopback(host):
                self._on_denied("admin_remote")
                await _answer(send, 403, "the admin surfaces answer callers on the gateway's host only unless an "
                              "admin token is configured (auth.admin_token_sha256)")
                return
            await self._app(scope, receive, send)
            return
        # MCP
        identity = await self._mcp_identity(scope, send, host, bearer)
        if identity is None:
            return
        scope[IDENTITY_SCOPE_KEY] = identity.with_headers(
            {bytes(k).decode("latin-1").lower(): bytes(v).decode("latin-1") for k, v in scope.get("headers", ())})
        await self._app(scope, receive, send)

    async def _mcp_identity(self, scope: Scope, send: Send, host: str | None, credential: str | None
                            ) -> Identity | None:
        settings = self.settings
        if not settings.authenticates:
            if settings.allow_unauthenticated_remote or is_loopback(host):
                return Identity("anonymous", host or "unknown")
            self._on_denied("remote_without_auth")
            await _answer(send, 403, "this gateway answers MCP callers on its own host only: its operator has "
                          "configured no authentication (auth.api_keys or auth.jwt)", jsonrpc=True)
            return None
        challenge = f'Bearer resource_metadata="{self._metadata_url(scope)}"'
        if credential is None:
            self._on_denied("no_credential")
            await _answer(send, 401, "authentication required: send 'Authorization: Bearer <token>' (an API key "
                          "or a JWT) or 'X-API-Key: <key>'", [(b"www-authenticate", challenge.encode())], jsonrpc=True)
            return None
        try:
            return await self.authenticator.identify(credential)
        except CredentialError as exc:
            self._on_denied("invalid_credential")
            log.info("auth.refused", client=host, reason=str(exc))
            shown = f'{challenge}, error="invalid_token", error_description="{exc}"'
            await _answer(send, 401, f"invalid credential: {exc}", [(b"www-authenticate", shown.encode())],
                          jsonrpc=True)
            return None

    def _origin_allowed(self, origin: str, scope: Scope) -> bool:
        lowered = origin.lower()
        if lowered in self._origins:
            return True
        match = re.match(r"^https?://(\[[^\]]+\]|[^:/]+)(?::(\d+))?$", lowered)
        if match is None:
            return False
        host, port = match.group(1).strip("[]"), match.group(2)
        server = scope.get("server")
        own_port = str(server[1]) if server and len(server) > 1 else None
        return (host == "localhost" or is_loopback(host)) and (port or "80") == own_port

    def _base_url(self, scope: Scope) -> str:
        if self.settings.public_url:
            return self.settings.public_url
        host = _header(scope, b"host")
        if host is None or not re.match(r"^[A-Za-z0-9.\-:\[\]]{1,255}$", host):
            server = scope.get("server") or ("127.0.0.1", 80)
            host = f"{server[0]}:{server[1]}"
        return f"{scope.get('scheme', 'http')}://{host}"

    def _metadata_url(self, scope: Scope) -> str:
        return self._base_url(scope) + METADATA_PATH + str(scope["path"])

    async def _metadata(self, scope: Scope, send: Send) -> None:
        resource_path = scope["path"][len(METADATA_PATH):] or "/mcp"
        if path_kind(resource_path) != "mcp":
            await _answer(send, 404, f"no protected resource at {resource_path!r}: MCP endpoints are /mcp, "
                          "/mcp/{server} and /sse")
            return
        document: dict[str, Any] = {
            "resource": self._base_url(scope) + resource_path,
            "authorization_servers": list(self.settings.authorization_servers)
            or ([self.settings.jwt.issuer] if self.settings.jwt else []),
            "bearer_methods_supported": ["header"],
            "resource_name": "mcpgw",
        }
        if self.settings.scopes_supported:
            document["scopes_supported"] = list(self.settings.scopes_supported)
        body = json.dumps(document).encode()
        await send({"type": "http.response.start", "status": 200,
                    "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                                (b"cache-control", b"max-age=300")]})
        await send({"type": "http.response.body", "body": body})
