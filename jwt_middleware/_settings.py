"""One frozen settings object, validated when constructed: mistakes fail at startup, with a
message that says how to fix them, never on the first request."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from ._errors import AuthError, ConfigurationError, UnusableKey, redact
from ._keys import (
    ASYMMETRIC_ALGORITHMS,
    DEFAULT_RSA_MAX_BITS,
    DEFAULT_RSA_MAX_EXPONENT,
    HMAC_ALGORITHMS,
    MAX_RSA_BITS,
    MAX_RSA_EXPONENT_BITS,
    MIN_RSA_BITS,
    Key,
    KeySet,
    )
from .revocation import GRACE

__all__ = ["DEFAULT_ALGORITHMS", "Settings", "Validator", "check_key_url"]

DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")

#: A custom check on verified claims. Return False (or raise ``InvalidToken``) to refuse the
#: token; ``None``/True accepts. May be ``async`` on the ASGI side.
Validator = Callable[[Mapping[str, Any]], "bool | Awaitable[bool | None] | None"]

_CSRF_MODES = frozenset({"both", "double_submit", "origin", "off"})
logger = logging.getLogger("jwt_middleware")

_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Everything the verifier and the middlewares need. Every field is keyword-only.

    ``issuer`` and ``audience`` are required: a token minted by the same identity provider for
    another API must not open this one (RFC 8725 §3.9). Waive them only with
    ``allow_any_issuer`` / ``allow_any_audience``.
    """

    # -- who we trust --------------------------------------------------------------------------
    issuer: str | Sequence[str] | None = None
    audience: str | Sequence[str] | None = None
    allow_any_issuer: bool = False
    allow_any_audience: bool = False
    # -- where keys come from (any combination) --------------------------------------------
    jwks_url: str | None = field(default=None, repr=False)  # may carry credentials
    discovery: bool | None = None
    """OIDC discovery from ``{issuer}/.well-known/openid-configuration``. ``None`` (default):
    used when no other key source is given."""
    jwks: Mapping[str, Any] | None = field(default=None, repr=False)  # may hold HMAC secrets
    keys: Sequence[Key] = ()
    rsa_max_bits: int = DEFAULT_RSA_MAX_BITS
    """Largest RSA modulus trusted, in bits (2048 to 16384; default 8192), for remote and static
    keys alike. A larger JWKS key is ignored (logged); a larger configured key is an error. Every
    forged token naming a key costs its signature check: about 12x a 2048-bit one at 8192 bits,
    50x at 16384."""
    rsa_max_exponent: int = DEFAULT_RSA_MAX_EXPONENT
    """Largest RSA public exponent trusted (3 to 2**64 - 1; default 65537, the exponent issuers
    use, which also admits 3 and 17). A signature check costs more the longer the exponent."""
    # -- token rules -------------------------------------------------------------------------
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS
    leeway: float = 60.0
    require_exp: bool = True
    required_claims: Sequence[str] = ()
    typ: str | None = None
    max_lifetime: float | None = None
    max_token_bytes: int = 8192
    validators: Sequence[Validator] = ()
    scope_claims: Sequence[str] = ("scope", "scp")
    # -- remote key cache ----------------------------------------------------------------------
    jwks_max_age: float = 600.0
    jwks_cooldown: float = 30.0
    jwks_timeout: float = 5.0
    jwks_max_bytes: int = 50 * 1024
    jwks_max_stale: float = 24 * 3600.0
    # -- verified-token cache ------------------------------------------------------------------
    token_cache_size: int = 4096
    """Verified tokens remembered (by a BLAKE2b-256 digest), so a reused token skips parsing
    and the signature check.
    ``exp``/``nbf`` and validators are still checked on every use; 0 disables the cache."""
    # -- revocation ----------------------------------------------------------------------------
    revocation: Any = None
    """A revocation store (``jwt_middleware.revocation``), consulted after the signature holds
    and on every use of a cached token. Async stores work on the ASGI side only."""
    revocation_fail_open: bool = False
    """When the store cannot answer: refuse with 503 (default), or let the token in (logged)."""
    # -- requests ------------------------------------------------------------------------------
    header: bool = True
    cookie: str | None = None
    public_paths: Collection[str] = ()
    anonymous: bool = False
    realm: str = "api"
    expose_error_details: bool = False
    csrf: str | None = None
    """For tokens from the cookie on state-changing methods: ``"both"`` (default when ``cookie``
    is set), ``"double_submit"``, ``"origin"``, or ``"off"``."""
    csrf_header: str = "x-csrf-token"
    csrf_claim: str = "csrf"
    allowed_origins: Collection[str] = ()
    cors_origins: Collection[str] = ()
    """Exact origins (``https://host[:port]``, or ``"*"`` without credentials) for which the
    middleware is the CORS layer: it answers their preflights itself (204, never calling the
    app; other origins' preflights get 403), and adds ``Access-Control-Allow-Origin``,
    ``Vary: Origin`` and ``Access-Control-Expose-Headers: WWW-Authenticate`` to every response
    to them, refusals included. Default: none (OPTIONS needs a token like any method)."""
    cors_methods: Sequence[str] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    """``Access-Control-Allow-Methods`` of a preflight answer."""
    cors_headers: Sequence[str] | None = None
    """``Access-Control-Allow-Headers`` of a preflight answer. ``None`` (default):
    authorization, content-type, dpop and ``csrf_header``."""
    cors_credentials: bool = False
    """Send ``Access-Control-Allow-Credentials: true`` (browsers then send cookies)."""
    cors_max_age: int = 600
    """``Access-Control-Max-Age`` of a preflight answer, in seconds."""
    preflight_passthrough: bool = False
    """Let OPTIONS requests with ``Origin`` and ``Access-Control-Request-Method`` reach the app
    without a token, for a CORS layer inside this middleware. Dangerous (logged at startup):
    anything that does not dispatch on the method serves such a request unauthenticated."""
    websocket_expiry: str = "close"
    """``"close"`` (default): end an authenticated WebSocket with 1008 when its token expires
    (``exp`` + ``leeway``); ``"off"``: the app decides (``websocket.auth.expires_at``)."""
    on_error: Callable[[AuthError], None] | None = None
    events: Any = None
    """Counters for decisions (``jwt_middleware.observe.Counters`` / ``PrometheusEvents``)."""
    warm_up: bool = True
    clock: Callable[[], float] = field(default=time.time, repr=False)

    # derived, filled in __post_init__
    issuers: frozenset[str] = field(init=False, repr=False)
    audiences: frozenset[str] = field(init=False, repr=False)
    static_keys: KeySet = field(init=False, repr=False)
    discovery_issuer: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_types()
        put = object.__setattr__
        put(self, "issuers", _names("issuer", self.issuer, self.allow_any_issuer))
        put(self, "audiences", _names("audience", self.audience, self.allow_any_audience))
        put(self, "algorithms", tuple(self.algorithms))
        put(self, "public_paths", frozenset(self.public_paths))
        put(self, "required_claims", tuple(self.required_claims))
        put(self, "scope_claims", tuple(self.scope_claims))
        put(self, "validators", tuple(self.validators))
        put(self, "keys", tuple(self.keys))
        put(self, "allowed_origins", frozenset(o.rstrip("/").lower() for o in self.allowed_origins))
        if self.csrf is None:
            put(self, "csrf", "both" if self.cookie is not None else "off")
        put(self, "csrf_header", self.csrf_header.lower())
        self._check_algorithms()
        self._check_numbers()
        self._check_requests()
        self._check_cors()
        put(self, "static_keys", self._static_keys())
        put(self, "discovery_issuer", self._discovery())
        if self.jwks_url is not None:
            check_key_url(self.jwks_url, "jwks_url")
        if not self.remote and not self.static_keys.keys:
            raise ConfigurationError(
                "no key source: set jwks_url, keys or jwks, or leave discovery on"
            )
        symmetric = any(k.kty == "oct" for k in self.static_keys.keys)
        hs_allowed = sorted(a for a in self.algorithms if a in HMAC_ALGORITHMS)
        if hs_allowed and not symmetric:
            raise ConfigurationError(
                f"algorithms include {', '.join(hs_allowed)} but no HMAC secret is configured "
                "(remote JWKS never supply secrets): add keys=[Key.from_secret(...)] or remove them"
            )
        if symmetric and not hs_allowed:
            raise ConfigurationError(
                "an HMAC secret is configured but no HS* algorithm is allowed: "
                "add e.g. algorithms=[..., 'HS256']"
            )

    @property
    def remote(self) -> bool:
        return self.jwks_url is not None or self.discovery_issuer is not None

    def _check_algorithms(self) -> None:
        if not self.algorithms:
            raise ConfigurationError("algorithms must not be empty")
        for alg in self.algorithms:
            if not isinstance(alg, str):
                raise ConfigurationError(f"algorithm names are strings, got {alg!r}")
            if alg.lower() == "none":
                raise ConfigurationError("'none' is never accepted (RFC 8725 §3.1)")
            if alg not in ASYMMETRIC_ALGORITHMS and alg not in HMAC_ALGORITHMS:
                supported = ", ".join(sorted(ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS.keys()))
                raise ConfigurationError(f"unsupported algorithm {alg!r}; supported: {supported}")

    def _check_numbers(self) -> None:
        positive = {
            "jwks_max_age": self.jwks_max_age,
            "jwks_cooldown": self.jwks_cooldown,
            "jwks_timeout": self.jwks_timeout,
            "jwks_max_bytes": self.jwks_max_bytes,
            "max_token_bytes": self.max_token_bytes,
        }
        if self.max_lifetime is not None:
            positive["max_lifetime"] = self.max_lifetime
        for name, value in positive.items():
            if not _finite(value) or not value > 0:
                raise ConfigurationError(f"{name} must be a positive number, got {value!r}")
        size = self.token_cache_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigurationError(f"token_cache_size must be an integer >= 0, got {size!r}")
        for name, value in {"leeway": self.leeway, "jwks_max_stale": self.jwks_max_stale}.items():
            if not _finite(value) or not value >= 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if self.leeway > MAX_LEEWAY:
            raise ConfigurationError(
                f"leeway {self.leeway}s is over {MAX_LEEWAY}s: not clock skew; fix the clocks"
            )
        if self.jwks_cooldown > self.jwks_max_age:
            raise ConfigurationError("jwks_cooldown must not exceed jwks_max_age")

    def _check_types(self) -> None:
        # Settings often come from environment strings: "false" is truthy, and "scope" is a
        # sequence of one-letter names. Refuse both rather than guess.
        for f in dataclasses.fields(self):
            if f.init and f.type == "bool" and type(getattr(self, f.name)) is not bool:
                raise ConfigurationError(
                    f"{f.name} must be True or False, got {getattr(self, f.name)!r}"
                )
        for name in ("algorithms", "required_claims", "scope_claims", "public_paths",
                     "allowed_origins", "cors_origins", "cors_methods", "cors_headers",
                     "validators", "keys"):  # fmt: skip
            if isinstance(getattr(self, name), (str, bytes)):
                raise ConfigurationError(f"{name} must be a list, not a single string")
        if not isinstance(self.realm, str):
            raise ConfigurationError(f"realm must be a string, got {self.realm!r}")
        if not callable(self.clock):
            raise ConfigurationError("clock must be a callable returning the time in seconds")

    def _check_requests(self) -> None:
        if not self.header and self.cookie is None:
            raise ConfigurationError("no token location: keep header=True or set cookie='name'")
        if self.cookie is not None and not _COOKIE_NAME.fullmatch(self.cookie):
            raise ConfigurationError(f"cookie {self.cookie!r} is not a valid cookie name")
        for path in self.public_paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"public path {path!r} must be a string starting with '/'")
        for claim in (*self.required_claims, *self.scope_claims):
            if not isinstance(claim, str) or not claim:
                raise ConfigurationError(f"claim names are non-empty strings, got {claim!r}")
        for validator in self.validators:
            if not callable(validator):
                raise ConfigurationError(f"validators must be callables, got {validator!r}")
        if self.events is not None:
            for method in ("verified", "rejected", "key_fetch"):
                if not callable(getattr(self.events, method, None)):
                    raise ConfigurationError(f"events must have a {method}() method")
        if self.on_error is not None and not callable(self.on_error):
            raise ConfigurationError("on_error must be a callable")
        if self.csrf not in _CSRF_MODES:
            raise ConfigurationError(
                f"csrf must be one of {sorted(_CSRF_MODES)}, got {self.csrf!r}"
            )
        if self.cookie is not None and self.csrf == "off":
            logger.warning("jwt_middleware: cookie tokens without CSRF protection (csrf='off')")
        if self.csrf == "origin" and not self.allowed_origins:
            raise ConfigurationError("csrf='origin' needs allowed_origins=['https://app.example']")
        for origin in self.allowed_origins:
            parts = urlsplit(origin)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.path:
                raise ConfigurationError(
                    f"allowed origin {origin!r} must look like https://host[:port]"
                )
        if self.revocation is not None:
            if not callable(getattr(self.revocation, "is_revoked", None)):
                raise ConfigurationError("revocation must be a store with an is_revoked() method")
            if self.leeway > GRACE:
                raise ConfigurationError(
                    f"leeway {self.leeway}s exceeds the revocation grace of {GRACE}s: a revoked "
                    "token could outlive its revocation entry"
                )
        if self.typ is not None and (not isinstance(self.typ, str) or not self.typ.strip()):
            raise ConfigurationError("typ must be a non-empty string such as 'at+jwt'")

    def _check_cors(self) -> None:
        put = object.__setattr__
        origins = frozenset(
            o.rstrip("/").lower() if isinstance(o, str) else o for o in self.cors_origins
        )
        for origin in origins:
            parts = urlsplit(origin) if isinstance(origin, str) else None
            if origin != "*" and (
                parts is None or not origin.isascii() or parts.scheme not in ("http", "https")
                or not parts.hostname or "@" in parts.netloc
                or parts.path or parts.query or parts.fragment
            ):  # fmt: skip
                raise ConfigurationError(
                    f"cors origin {origin!r} must look like https://host[:port] (or be '*')"
                )
        if "*" in origins and len(origins) > 1:
            raise ConfigurationError("cors_origins: '*' stands alone (it already means any)")
        if "*" in origins and self.cors_credentials:
            raise ConfigurationError(
                "cors_origins='*' with cors_credentials=True would let every site read "
                "credentialed answers; list the origins"
            )
        if self.cors_credentials and not origins:
            raise ConfigurationError("cors_credentials=True needs cors_origins")
        if origins and self.preflight_passthrough:
            raise ConfigurationError(
                "cors_origins makes this middleware the CORS layer; preflight_passthrough is for "
                "a CORS layer inside it: choose one"
            )
        headers = self.cors_headers
        if headers is None:
            headers = ("authorization", "content-type", "dpop", self.csrf_header)
        for name, values in (("cors_methods", self.cors_methods), ("cors_headers", headers)):
            for value in values:
                if not isinstance(value, str) or not _COOKIE_NAME.fullmatch(value):  # a token
                    raise ConfigurationError(f"{name}: {value!r} is not an HTTP token")
        age = self.cors_max_age
        if isinstance(age, bool) or not isinstance(age, int) or age < 0:
            raise ConfigurationError(f"cors_max_age must be an integer >= 0, got {age!r}")
        if self.websocket_expiry not in ("close", "off"):
            raise ConfigurationError(
                f"websocket_expiry must be 'close' or 'off', got {self.websocket_expiry!r}"
            )
        put(self, "cors_origins", origins)
        put(self, "cors_methods", tuple(dict.fromkeys(m.upper() for m in self.cors_methods)))
        put(self, "cors_headers", tuple(dict.fromkeys(h.lower() for h in headers)))
        if self.preflight_passthrough:
            logger.warning(
                "jwt_middleware: preflight_passthrough=True: OPTIONS requests with Origin and "
                "Access-Control-Request-Method reach the app WITHOUT a token; any endpoint that "
                "does not dispatch on the method (a Mount, a plain ASGI/WSGI app, a route that "
                "accepts OPTIONS) serves them unauthenticated. Prefer cors_origins, or put "
                "CORSMiddleware outside JWTMiddleware"
            )

    def _static_keys(self) -> KeySet:
        self._check_rsa_bounds()
        for key in self.keys:
            if not isinstance(key, Key):
                raise ConfigurationError(
                    f"keys must be Key objects (Key.from_pem / Key.from_secret / Key.from_jwk), "
                    f"got {type(key).__name__}"
                )
            try:
                key.check_rsa_bounds(self.rsa_max_bits, self.rsa_max_exponent)
            except UnusableKey as exc:
                raise ConfigurationError(f"key {key.kid!r} in keys: {exc}") from None
        keys = list(self.keys)
        if self.jwks is not None:
            try:
                keyset, problems = KeySet.from_jwks(
                    self.jwks,
                    allow_symmetric=True,
                    source="jwks",
                    rsa_max_bits=self.rsa_max_bits,
                    rsa_max_exponent=self.rsa_max_exponent,
                )
            except UnusableKey as exc:
                raise ConfigurationError(str(exc)) from None
            if problems:
                raise ConfigurationError("unusable keys in jwks: " + "; ".join(problems))
            keys.extend(keyset.keys)
        kids = [k.kid for k in keys if k.kid is not None]
        dupes = sorted({k for k in kids if kids.count(k) > 1})
        if dupes:
            raise ConfigurationError(f"kid used by more than one configured key: {dupes}")
        return KeySet(keys)

    def _check_rsa_bounds(self) -> None:
        bits, exponent = self.rsa_max_bits, self.rsa_max_exponent
        if (
            isinstance(bits, bool)
            or not isinstance(bits, int)
            or not MIN_RSA_BITS <= bits <= MAX_RSA_BITS
        ):
            raise ConfigurationError(
                f"rsa_max_bits must be an integer from {MIN_RSA_BITS} to {MAX_RSA_BITS}, "
                f"got {bits!r}"
            )
        if (
            isinstance(exponent, bool)
            or not isinstance(exponent, int)
            or exponent < 3
            or exponent.bit_length() > MAX_RSA_EXPONENT_BITS
        ):
            raise ConfigurationError(
                f"rsa_max_exponent must be an integer from 3 to 2**{MAX_RSA_EXPONENT_BITS} - 1 "
                f"(65537 covers the issuers in use), got {exponent!r}"
            )

    def _discovery(self) -> str | None:
        wanted = self.discovery
        if wanted is None:
            wanted = self.jwks_url is None and self.jwks is None and not self.keys
        if not wanted:
            return None
        if len(self.issuers) != 1:
            raise ConfigurationError(
                "OIDC discovery needs exactly one issuer; set jwks_url (or keys/jwks) instead"
            )
        (issuer,) = self.issuers
        check_key_url(issuer, "issuer (for discovery)")
        return issuer


MAX_LEEWAY = 3600.0


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _names(what: str, value: str | Sequence[str] | None, waived: bool) -> frozenset[str]:
    if value is None:
        if waived:
            return frozenset()
        raise ConfigurationError(
            f"{what} is required: pass {what}='...' (or a list). To accept any {what} — which "
            f"lets in tokens meant for other services — pass allow_any_{what}=True."
        )
    if waived:
        raise ConfigurationError(f"{what} is set and allow_any_{what}=True; choose one")
    values = [value] if isinstance(value, str) else list(value)
    if not values or not all(isinstance(v, str) and v for v in values):
        raise ConfigurationError(f"{what} must be a non-empty string or a list of them")
    return frozenset(values)


_LOOPBACK_NAMES = {"localhost"}


def check_key_url(url: str, what: str) -> None:
    """Key URLs must be https, except on loopback: keys sent over plain http can be swapped."""
    if not isinstance(url, str):
        raise ConfigurationError(f"{what} must be a URL string")
    # Parsed by httpx, which fetches it: a second parser could see another host (a loopback
    # exception granted to a URL httpx sends elsewhere) or accept what httpx refuses per fetch.
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        raise ConfigurationError(f"{what} {redact(url)!r} is not a valid URL") from None
    host = parts.host
    if parts.scheme == "https" and host:
        return
    if parts.scheme == "http" and host and _is_loopback(host):
        return
    raise ConfigurationError(
        f"{what} {redact(url)!r} must be an https:// URL "
        "(plain http is allowed for loopback hosts only)"
    )


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
