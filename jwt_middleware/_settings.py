"""One frozen settings object, validated when constructed: mistakes fail at startup, with a
message that says how to fix them, never on the first request."""

from __future__ import annotations

import dataclasses
import ipaddress
import logging
import math
import re
import ssl
import time
from collections.abc import Awaitable, Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypedDict
from urllib.parse import urlsplit

import httpx

from ._dpop import DEFAULT_PROOF_ALGORITHMS
from ._errors import AuthError, Challenge, ConfigurationError, UnusableKey, redact, scope_names
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

__all__ = [
    "DEFAULT_ALGORITHMS",
    "Issuer",
    "Options",
    "Settings",
    "Validator",
    "check_key_url",
    "issuer_entries",
    "settings_from",
]

DEFAULT_ALGORITHMS = ("RS256", "ES256", "PS256", "EdDSA")

#: A custom check on verified claims. Return False (or raise ``InvalidToken``) to refuse the
#: token; ``None``/True accepts. May be ``async`` on the ASGI side.
Validator = Callable[[Mapping[str, Any]], "bool | Awaitable[bool | None] | None"]

_CSRF_MODES = frozenset({"both", "double_submit", "origin", "off"})
#: RFC 9068 §2.2: the claims a JWT access token must carry.
_RFC9068 = ("iss", "exp", "aud", "sub", "client_id", "iat", "jti")
_AT_JWT = frozenset({"at+jwt", "application/at+jwt"})
#: The authentication schemes each ``dpop`` mode accepts, in challenge order.
_SCHEMES = {"off": ("Bearer",), "allowed": ("Bearer", "DPoP"), "required": ("DPoP",)}
logger = logging.getLogger("jwt_middleware")

_COOKIE_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


@dataclass(frozen=True, kw_only=True)
class Issuer:
    """One trusted issuer: who it is, where its keys are, what its tokens must look like and how
    long its keys are cached. Every field is keyword-only; the object is checked when built.

    ``issuer`` and ``audience`` are required: a token minted by the same identity provider for
    another API must not open this one (RFC 8725 §3.9). Waive them only with
    ``allow_any_issuer`` / ``allow_any_audience``.
    """

    # -- who we trust --------------------------------------------------------------------------
    issuer: str | Sequence[str] | None = None
    """The trusted ``iss`` value(s), compared exactly. Required, or ``allow_any_issuer=True``."""
    audience: str | Sequence[str] | None = None
    """This API's audience value(s): the token's ``aud`` must name one. Required (on
    ``Settings``, ``resource`` stands in when it is unset), or ``allow_any_audience=True``:
    without it a token the same identity provider minted for another API opens this one."""
    allow_any_issuer: bool = False
    """Waive the issuer check, explicitly (for a key source only one issuer controls)."""
    allow_any_audience: bool = False
    """Waive the audience check, explicitly."""
    # -- where keys come from (any combination) --------------------------------------------
    jwks_url: str | None = field(default=None, repr=False)
    """The issuer's JWKS URL: https, or plain http on a loopback host only (keys sent in the
    clear can be swapped). Credentials in it are sent as HTTP Basic and never logged."""
    discovery: bool | None = None
    """OIDC discovery of the JWKS URL from ``{issuer}/.well-known/openid-configuration``.
    ``None``: used when no other key source is given."""
    jwks: Mapping[str, Any] | None = field(default=None, repr=False)
    """A static JWKS document. May hold HMAC secrets, so it never appears in ``repr``."""
    keys: Sequence[Key] = ()
    """Static keys (``Key.from_pem``, ``Key.from_secret``, ``Key.from_jwk``), used with any
    remote keys."""
    rsa_max_bits: int = DEFAULT_RSA_MAX_BITS
    """Largest RSA modulus trusted, in bits (2048 to 16384), for remote and static keys alike.
    A larger JWKS key is ignored (logged); a larger configured key is an error. Every forged
    token naming a key costs its signature check: about 12x a 2048-bit one at 8192 bits, 50x
    at 16384."""
    rsa_max_exponent: int = DEFAULT_RSA_MAX_EXPONENT
    """Largest RSA public exponent trusted (3 to 2**64 - 1). 65537 is what issuers use, and
    also admits 3 and 17; a signature check costs more the longer the exponent."""
    # -- token rules -------------------------------------------------------------------------
    algorithms: Sequence[str] = DEFAULT_ALGORITHMS
    """Allowed ``alg`` values. ``none`` is never accepted (RFC 8725 §3.1); an HS* algorithm
    needs an HMAC secret in ``keys``, and a secret needs an HS* algorithm."""
    leeway: float = 60.0
    """Seconds of clock skew allowed on ``exp``, ``nbf`` and ``iat`` (0 to 3600): a minute
    covers hosts whose clocks are synchronised; beyond an hour it is not skew."""
    require_exp: bool = True
    """Refuse tokens without ``exp``: a token that never expires cannot be taken back."""
    required_claims: Sequence[str] = ()
    """Claims that must be present and not null, e.g. ``["sub", "jti"]``."""
    typ: str | None = None
    """The ``typ`` header tokens must carry, compared as a media type, e.g. ``"at+jwt"``
    (RFC 9068), which keeps the issuer's ID tokens out. ``None``: not checked."""
    profile: str | None = None
    """``"rfc9068"``: the JWT access-token profile in one word: ``typ`` ``at+jwt`` (so the
    issuer's ID and refresh tokens are refused) and ``iss``, ``exp``, ``aud``, ``sub``,
    ``client_id``, ``iat`` and ``jti`` required (RFC 9068 §2.2). ``None``: what the other
    fields say."""
    allowed_clients: Collection[str] | None = None
    """The clients whose tokens this API takes: the token's ``client_id`` (RFC 9068), or its
    ``azp`` (OIDC, Keycloak, Entra) when it has none, must be one of these; a token naming no
    client is refused. ``None``: any client."""
    max_lifetime: float | None = None
    """Seconds: refuse tokens whose ``exp - iat`` is longer (``iat`` is then required).
    ``None``: no limit."""
    max_token_bytes: int = 8192
    """Largest token accepted, in bytes, checked before any parsing: a bound on the work a
    request can cause. 8 KiB holds every real access token."""
    validators: Sequence[Validator] = ()
    """Extra checks on the verified claims, run in order on every use: return False or raise
    ``InvalidToken`` to refuse. ``async`` ones work on the ASGI side only."""
    scope_claims: Sequence[str] = ("scope", "scp")
    """Claims read as the token's scopes, each a space-separated string or a list of strings:
    ``scope`` (RFC 9068) and ``scp`` (Entra ID, Okta)."""
    # -- remote key cache ----------------------------------------------------------------------
    jwks_max_age: float = 600.0
    """Seconds fetched keys stay fresh (a shorter ``Cache-Control: max-age`` wins, never below
    ``jwks_cooldown``): ten minutes picks a rotation up soon without fetching per request."""
    jwks_cooldown: float = 30.0
    """Least seconds between fetches caused by unknown ``kid`` values or failures: a flood of
    made-up kids costs one fetch per cooldown."""
    jwks_timeout: float = 5.0
    """Seconds for each phase of a key fetch (connect, TLS, send, each read). A whole fetch,
    discovery and JWKS together, ends within twice that; a request waiting for it gets a 503
    by then."""
    jwks_max_bytes: int = 50 * 1024
    """Largest JWKS or discovery body, in bytes, counted on the wire and after decoding (at
    most one gzip or deflate layer; stacked or other encodings are refused)."""
    jwks_max_stale: float = 24 * 3600.0
    """Seconds held keys keep serving past their freshness while refreshes fail, so an outage
    of the key server is not one of this API. 0: never serve stale keys."""
    jwks_ca_bundle: str | ssl.SSLContext | None = None
    """The CA certificates (a PEM file) to trust for key fetches, e.g. a private CA's, instead
    of the default trust store; they also apply to an ``https://`` proxy. An ``ssl.SSLContext``
    gives full control. ``None``: certifi's bundle, or ``SSL_CERT_FILE`` / ``SSL_CERT_DIR`` while
    ``jwks_trust_env`` holds."""
    jwks_proxy: str | None = field(default=None, repr=False)
    """The proxy (``http://`` or ``https://``; credentials allowed, never logged) every key fetch
    of this issuer goes through, whatever the environment says. ``None``: the environment's
    proxy, while ``jwks_trust_env`` holds."""
    jwks_trust_env: bool = True
    """Let the environment shape key fetches as it would httpx's: ``http_proxy`` /
    ``https_proxy`` / ``all_proxy`` / ``no_proxy``, and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``.
    False: ignore them all (direct connections, certifi's bundle)."""
    key_store: Any = None
    """A store the fetched JWKS and discovery documents are shared through
    (``jwt_middleware.keystore``), with their fetch time: a worker that starts finds the keys
    there, and the workers of a cluster fetch once per ``jwks_max_age`` between them, one at a
    time. When the store cannot answer, keys are fetched directly. ``None``: each key cache
    fetches for itself."""
    # -- opaque tokens (RFC 7662) --------------------------------------------------------------
    introspection: Any = None
    """An ``jwt_middleware.introspection.Introspection``: tokens that are not JWTs are asked
    about at the issuer's introspection endpoint (RFC 7662), and then checked like the claims
    of a JWT (``iss``, ``aud``, ``exp``, scopes, clients...). At most one trusted issuer has
    one. ``None``: a token that is not a JWT is refused."""
    # -- revocation ----------------------------------------------------------------------------
    revocation: Any = None
    """A revocation store (``jwt_middleware.revocation``), consulted after the signature holds
    and on every use of a cached token. Async stores work on the ASGI side only."""
    revocation_fail_open: bool = False
    """When the store cannot answer: refuse with 503 (default), or let the token in (logged)."""
    # -- shared with the request handling --------------------------------------------------------
    events: Any = None
    """Counters for decisions (``jwt_middleware.observe.Counters`` / ``PrometheusEvents``).
    Left unset on an :class:`Issuer` in ``Settings.trust``, the settings' own apply."""
    clock: Callable[[], float] = field(default=time.time, repr=False)
    """The time source, in seconds since the epoch (tests inject a fake one). Left unset on an
    :class:`Issuer` in ``Settings.trust``, the settings' own applies."""

    # derived, filled in __post_init__
    issuers: frozenset[str] = field(init=False, repr=False)
    audiences: frozenset[str] = field(init=False, repr=False)
    static_keys: KeySet = field(init=False, repr=False)
    discovery_issuer: str | None = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._check_issuer()

    def _check_issuer(self) -> None:
        _check_types(self, ISSUER_FIELDS)
        put = object.__setattr__
        put(self, "issuers", _names("issuer", self.issuer, self.allow_any_issuer))
        put(self, "audiences", _names("audience", self.audience, self.allow_any_audience))
        put(self, "algorithms", tuple(self.algorithms))
        put(self, "required_claims", tuple(self.required_claims))
        put(self, "scope_claims", tuple(self.scope_claims))
        put(self, "validators", tuple(self.validators))
        put(self, "keys", tuple(self.keys))
        self._check_algorithms()
        self._check_numbers()
        self._check_profile()
        self._check_rules()
        self._check_fetch_client()
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
        """Whether keys are fetched (a JWKS URL, or discovery)."""
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

    def _check_profile(self) -> None:
        put = object.__setattr__
        if self.allowed_clients is not None:
            clients = frozenset(self.allowed_clients)
            if not clients or not all(isinstance(c, str) and c for c in clients):
                raise ConfigurationError(
                    "allowed_clients must be a non-empty list of client ids (None: any client)"
                )
            put(self, "allowed_clients", clients)
        if self.profile is None:
            return
        if self.profile != "rfc9068":
            raise ConfigurationError(f"profile must be 'rfc9068' or None, got {self.profile!r}")
        if self.typ is None:
            put(self, "typ", "at+jwt")
        elif not isinstance(self.typ, str) or self.typ.strip().lower() not in _AT_JWT:
            raise ConfigurationError(f"profile='rfc9068' means typ 'at+jwt', not {self.typ!r}")
        if not self.require_exp:
            raise ConfigurationError("profile='rfc9068' requires exp: leave require_exp=True")
        put(self, "required_claims", tuple(dict.fromkeys((*self.required_claims, *_RFC9068))))

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
        for name, value in {"leeway": self.leeway, "jwks_max_stale": self.jwks_max_stale}.items():
            if not _finite(value) or not value >= 0:
                raise ConfigurationError(f"{name} must be a number >= 0, got {value!r}")
        if self.leeway > MAX_LEEWAY:
            raise ConfigurationError(
                f"leeway {self.leeway}s is over {MAX_LEEWAY}s: not clock skew; fix the clocks"
            )
        if self.jwks_cooldown > self.jwks_max_age:
            raise ConfigurationError("jwks_cooldown must not exceed jwks_max_age")

    def _check_rules(self) -> None:
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
        if not callable(self.clock):
            raise ConfigurationError("clock must be a callable returning the time in seconds")

    def _check_fetch_client(self) -> None:
        check_ca_bundle(self.jwks_ca_bundle, "jwks_ca_bundle")
        if self.jwks_proxy is not None:
            check_proxy_url(self.jwks_proxy, "jwks_proxy")
        if self.key_store is not None:
            from .keystore import check_key_store  # here: most settings never need it

            check_key_store(self.key_store)
        if self.introspection is not None:
            from .introspection import Introspection

            if not isinstance(self.introspection, Introspection):
                raise ConfigurationError(
                    "introspection must be an Introspection(url=..., client_id=..., ...), "
                    f"got {type(self.introspection).__name__}"
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


@dataclass(frozen=True, kw_only=True)
class Settings(Issuer):
    """Everything a middleware or verifier needs: the trusted issuer's fields (those of
    :class:`Issuer`, for the usual single issuer) and how requests are handled.

    For several issuers, list them in ``trust`` and leave the issuer fields unset here.
    """

    trust: Sequence[Issuer] = ()
    """Several trusted issuers, each with its own keys, audience and rules; a token's
    (unverified) ``iss`` chooses the one whose checks then apply, with its keys only."""
    issuer_resolver: Callable[[str], Any] | None = None
    """Issuers found at run time, for multi-tenant providers: called (sync, or async on the
    ASGI side) with the unverified ``iss`` of a token that no configured issuer names, before
    any key fetch; returns that issuer's :class:`Issuer` (naming that ``iss``), or None to
    refuse the token. :class:`~jwt_middleware.IssuerPattern` covers tenant URL templates.
    Answers are kept in bounded caches; see ``new_issuers_per_minute``."""
    issuer_cache_size: int = 1000
    """Resolved issuers kept, those whose tokens verified (least recently used go first).
    Issuers admitted whose tokens have not verified yet have a small cache of their own, so
    made-up issuers never push real ones out."""
    new_issuers_per_minute: int = 10
    """How many new issuers ``issuer_resolver`` may admit per minute (each may cost a discovery
    and a key fetch): beyond that, a token of a not yet admitted issuer is answered 503
    (``issuer_rate_limited``, with Retry-After). Issuers already admitted are never slowed."""
    # -- the verified-token cache --------------------------------------------------------------
    token_cache_size: int = 4096
    """Verified tokens remembered (by a BLAKE2b-256 digest of the whole token), so a reused
    token skips parsing and the signature check; ``exp``/``nbf``, validators and revocation are
    still checked on every use. 0 disables the cache."""
    # -- where the token is --------------------------------------------------------------------
    header: bool = True
    """Read the token from ``Authorization: Bearer``."""
    cookie: str | None = None
    """The name of the (HttpOnly) cookie holding the token; ``None``: no cookie is read."""
    public_paths: Collection[str] = ()
    """Paths that need no token: exact (``/health``) or a prefix (``/docs*``), as the app
    routes them (under a ``root_path`` or a Mount, relative to it)."""
    anonymous: bool = False
    """Let requests without a token through, unauthenticated (a token that is present must
    still be valid)."""
    # -- the answers ---------------------------------------------------------------------------
    realm: str = "api"
    """The ``realm`` of the ``WWW-Authenticate`` challenge."""
    expose_error_details: bool = False
    """Put the reason code in refusals (development only: it helps an attacker tune a
    forgery)."""
    on_error: Callable[[AuthError], None] | None = None
    """Called with every refusal (an :class:`AuthError`); what it raises is logged, not sent."""
    challenge_scopes: Sequence[str] = ()
    """Scopes a 401 challenge names (``scope="..."``) when the check that refused knows none of
    its own, as when the middleware refuses before any route runs: what a client should ask for
    to use this API at all. A per-route check names its route's scopes instead."""
    implied_scopes: Mapping[str, Sequence[str]] | None = None
    """A scope hierarchy: each broader scope and the narrower ones it grants too, followed
    transitively, e.g. ``{"files:write": ["files:read"], "admin": ["files:write"]}``. A token's
    ``scopes`` then include what its own scopes imply, so every per-route check (and Starlette's
    ``requires``) lets ``admin`` in where ``files:read`` is needed."""
    # -- this resource (RFC 9728 protected-resource metadata) -------------------------------
    resource: str | None = None
    """This API's resource identifier (RFC 9728, RFC 8707): its canonical URL as clients name it,
    e.g. ``https://api.example.com/mcp`` (plain http on a loopback host only), taken from here and
    never from the Host header. Set, the middleware serves the protected-resource metadata at the
    RFC 9728 well-known path, every challenge carries ``resource_metadata``, and a token whose
    ``aud`` names the resource is accepted (it is the audience when ``audience`` is unset)."""
    authorization_servers: Sequence[str] | None = None
    """The metadata's ``authorization_servers``: issuer identifiers clients get tokens from.
    ``None``: the trusted issuers."""
    scopes_supported: Sequence[str] = ()
    """The metadata's ``scopes_supported`` (left out when empty)."""
    resource_name: str | None = None
    """The metadata's ``resource_name``: this API's name, for people."""
    resource_documentation: str | None = None
    """The metadata's ``resource_documentation``: the URL of this API's documentation."""
    # -- sender-constrained tokens (RFC 9449 DPoP, RFC 8705 certificate-bound) --------------
    dpop: str = "allowed"
    """``"allowed"``: Bearer tokens work as before, and a DPoP-bound token (``cnf.jkt``) is
    accepted only under ``Authorization: DPoP`` with a valid proof (RFC 9449); ``"required"``:
    only DPoP-bound tokens, with their proofs; ``"off"``: the DPoP scheme is not read, and a
    DPoP-bound token is refused, since it must not be used without its proof."""
    dpop_algorithms: Sequence[str] = DEFAULT_PROOF_ALGORITHMS
    """The signature algorithms accepted for DPoP proofs (asymmetric only), advertised in the
    ``DPoP`` challenge's ``algs`` and the metadata's ``dpop_signing_alg_values_supported``."""
    dpop_max_age: float = 300.0
    """How many seconds after its ``iat`` a proof is accepted (RFC 9449 §11.1): also how long
    each proof's ``jti`` is remembered against replay."""
    dpop_leeway: float = 5.0
    """How many seconds ahead of this server's clock a proof's ``iat`` may be."""
    dpop_replay: Any = None
    """Where accepted proofs are remembered (``jwt_middleware.replay``): ``None`` for one
    bounded in-memory store per middleware; a Redis store when several processes or hosts serve
    this resource (a proof replayed to another worker is refused only if they share it)."""
    dpop_replay_fail_open: bool = False
    """Accept a proof when the replay store cannot answer (logged), instead of 503."""
    dpop_nonce_secret: str | bytes | None = field(default=None, repr=False)
    """Set (32 bytes or more, the same on every instance), proofs must carry a server nonce
    (RFC 9449 §9): an HMAC of the current time step, so every instance agrees without shared
    state. A proof without it, or with a stale one, is answered ``use_dpop_nonce`` with the
    current nonce in ``DPoP-Nonce``."""
    dpop_nonce_lifetime: float = 300.0
    """The nonce's time step, in seconds: a nonce is accepted during its step and the next."""
    public_url: str | None = None
    """This API's external base URL as clients call it (``https://api.example.com``, with the
    path prefix a proxy strips, if any), which DPoP proofs' ``htu`` must name. Unset: the
    origin of ``resource``; without either, the request's scheme and Host header (forwarded
    ones from a ``trusted_proxies`` peer)."""
    trusted_proxies: Collection[str] = ()
    """Addresses or networks (``10.0.0.0/8``) of the reverse proxies in front of this app: only
    from these peers are ``X-Forwarded-Proto``/``X-Forwarded-Host`` and the forwarded client
    certificate believed."""
    client_cert_header: str | None = None
    """The header a trusted proxy forwards the client's TLS certificate in (RFC 9440
    ``client-cert``, or nginx's URL-encoded PEM), for certificate-bound tokens (RFC 8705
    ``cnf.x5t#S256``). Unset, a certificate-bound token is refused."""
    # -- cookies and browsers ------------------------------------------------------------------
    csrf: str | None = None
    """CSRF defence for cookie tokens on state-changing methods: ``"both"`` (default when
    ``cookie`` is set), ``"double_submit"``, ``"origin"``, or ``"off"``."""
    csrf_header: str = "x-csrf-token"
    """The double-submit header, which must equal the token's ``csrf_claim``."""
    csrf_claim: str = "csrf"
    """The token claim the ``csrf_header`` must equal."""
    allowed_origins: Collection[str] = ()
    """Origins (``https://host[:port]``) allowed to send cookie-authenticated unsafe requests."""
    cors_origins: Collection[str] = ()
    """Exact origins (``https://host[:port]``, or ``"*"`` without credentials) for which the
    middleware is the CORS layer: it answers their preflights itself (204, never calling the
    app; other origins' preflights get 403), and adds ``Access-Control-Allow-Origin``,
    ``Vary: Origin`` and ``Access-Control-Expose-Headers: WWW-Authenticate, DPoP-Nonce`` to every
    response to them, refusals included. Default: none (OPTIONS needs a token like any method)."""
    cors_methods: Sequence[str] = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
    """``Access-Control-Allow-Methods`` of a preflight answer."""
    cors_headers: Sequence[str] | None = None
    """``Access-Control-Allow-Headers`` of a preflight answer. ``None``: authorization,
    content-type, dpop and ``csrf_header``."""
    cors_credentials: bool = False
    """Send ``Access-Control-Allow-Credentials: true`` (browsers then send cookies)."""
    cors_max_age: int = 600
    """``Access-Control-Max-Age`` of a preflight answer, in seconds."""
    preflight_passthrough: bool = False
    """Let OPTIONS requests with ``Origin`` and ``Access-Control-Request-Method`` reach the app
    without a token, for a CORS layer inside this middleware. Dangerous (logged at startup):
    anything that does not dispatch on the method serves such a request unauthenticated."""
    # -- lifetime ------------------------------------------------------------------------------
    websocket_expiry: str = "close"
    """``"close"``: end an authenticated WebSocket with 1008 when its token expires (``exp`` +
    ``leeway``); ``"off"``: the app decides (``websocket.auth.expires_at``)."""
    warm_up: bool = True
    """Fetch the keys at startup (ASGI lifespan; WSGI construction), so the first request does
    not wait for them; a failure is logged and retried on the first request."""

    #: The trusted issuers: ``trust``, or these settings themselves for a single issuer.
    trusted: tuple[Issuer, ...] = field(init=False, repr=False)
    #: Each scope and every scope it implies (``implied_scopes``, closed transitively).
    implied: Mapping[str, tuple[str, ...]] = field(init=False, repr=False)
    #: What every refusal's challenge carries (realm, resource_metadata, default scope).
    challenge: Challenge = field(init=False, repr=False)
    #: ``trusted_proxies`` as networks.
    proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        init=False, repr=False
    )

    def __post_init__(self) -> None:
        put = object.__setattr__
        _check_types(self, REQUEST_FIELDS)
        check_resource(self.resource)
        self._check_resolver()
        if self.trust:
            put(self, "trusted", self._trusted())
        elif self.issuer_resolver is not None and self.issuer is None:
            self._no_own_issuer(
                "with issuer_resolver and no issuer",
                "the Issuers it returns (IssuerPattern keywords)",
            )
            put(self, "trusted", ())
        else:
            if self.resource is not None and self.audience is None and not self.allow_any_audience:
                # RFC 8707: a token requested for this resource names it in aud.
                put(self, "audience", self.resource)
            self._check_issuer()
            put(self, "trusted", (self,))
        put(self, "public_paths", frozenset(self.public_paths))
        put(self, "allowed_origins", frozenset(o.rstrip("/").lower() for o in self.allowed_origins))
        if self.csrf is None:
            put(self, "csrf", "both" if self.cookie is not None else "off")
        put(self, "csrf_header", self.csrf_header.lower())
        size = self.token_cache_size
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise ConfigurationError(f"token_cache_size must be an integer >= 0, got {size!r}")
        if not isinstance(self.realm, str):
            raise ConfigurationError(f"realm must be a string, got {self.realm!r}")
        self._check_requests()
        self._check_cors()
        self._check_sender()
        self._check_resource_metadata()

    def _check_resource_metadata(self) -> None:
        put = object.__setattr__
        put(self, "challenge_scopes", _scope_list("challenge_scopes", self.challenge_scopes))
        put(self, "scopes_supported", _scope_list("scopes_supported", self.scopes_supported))
        put(self, "implied", _closure(self.implied_scopes))
        if self.authorization_servers is not None:
            servers = tuple(self.authorization_servers)
            for server in servers:
                _check_url(server, "authorization_servers")
            put(self, "authorization_servers", servers)
        if self.resource_name is not None and not isinstance(self.resource_name, str):
            raise ConfigurationError(f"resource_name must be a string, got {self.resource_name!r}")
        if self.resource_documentation is not None:
            _check_url(self.resource_documentation, "resource_documentation")
        extras = [n for n in _METADATA_FIELDS if getattr(self, n) not in (None, ())]
        if extras and self.resource is None:
            raise ConfigurationError(
                f"{', '.join(extras)} describe this resource's metadata: set "
                "resource='https://...' (its identifier) too"
            )
        put(self, "challenge", Challenge(
            realm=self.realm,
            expose=self.expose_error_details,
            resource_metadata=metadata_url(self.resource) if self.resource is not None else None,
            scope=tuple(self.challenge_scopes),
            schemes=_SCHEMES[self.dpop] if self.header else ("Bearer",),
            dpop_algs=tuple(self.dpop_algorithms),
        ))  # fmt: skip

    def _check_sender(self) -> None:
        put = object.__setattr__
        if self.dpop not in _SCHEMES:
            raise ConfigurationError(
                f"dpop must be 'off', 'allowed' or 'required', got {self.dpop!r}"
            )
        if self.dpop == "required" and not self.header:
            raise ConfigurationError("dpop='required' needs header=True (proofs come in headers)")
        algs = tuple(dict.fromkeys(self.dpop_algorithms))
        unsupported = [a for a in algs if a not in ASYMMETRIC_ALGORITHMS]
        if not algs or unsupported:
            raise ConfigurationError(
                f"dpop_algorithms must be asymmetric algorithms ({', '.join(ASYMMETRIC_ALGORITHMS)}"
                f"), got {unsupported or 'none'}"
            )
        put(self, "dpop_algorithms", algs)
        for name in ("dpop_max_age", "dpop_leeway", "dpop_nonce_lifetime"):
            value = getattr(self, name)
            if not _finite(value) or value < 0 or (name == "dpop_nonce_lifetime" and value == 0):
                raise ConfigurationError(f"{name} must be a number of seconds, got {value!r}")
        if self.dpop_replay is not None and not callable(
            getattr(self.dpop_replay, "first_use", None)
        ):
            raise ConfigurationError("dpop_replay must be a store with a first_use() method")
        secret = self.dpop_nonce_secret
        if secret is not None:
            raw = secret.encode("utf-8") if isinstance(secret, str) else secret
            if not isinstance(raw, bytes) or len(raw) < 32:
                raise ConfigurationError("dpop_nonce_secret must be a secret of 32 bytes or more")
        if self.public_url is not None:
            _check_url(self.public_url, "public_url")
            parts = urlsplit(self.public_url)
            if parts.query or parts.fragment or "?" in self.public_url or "#" in self.public_url:
                raise ConfigurationError("public_url must have no query or fragment")
            put(self, "public_url", self.public_url.rstrip("/"))
        proxies = []
        for proxy in self.trusted_proxies:
            try:
                proxies.append(ipaddress.ip_network(proxy, strict=False))
            except (TypeError, ValueError):
                raise ConfigurationError(
                    f"trusted_proxies: {proxy!r} is not an IP address or network"
                ) from None
        put(self, "proxies", tuple(proxies))
        header = self.client_cert_header
        if header is not None:
            if not isinstance(header, str) or not _COOKIE_NAME.fullmatch(header):
                raise ConfigurationError(f"client_cert_header {header!r} is not a header name")
            if not proxies:
                raise ConfigurationError(
                    "client_cert_header: a forwarded certificate is believed only from a "
                    "trusted proxy; set trusted_proxies=[...] (the proxy's addresses)"
                )
            put(self, "client_cert_header", header.lower())

    def _check_resolver(self) -> None:
        resolver = self.issuer_resolver
        if resolver is not None and not callable(resolver):
            raise ConfigurationError(
                "issuer_resolver must be a callable (iss) -> Issuer | None, or an IssuerPattern"
            )
        for name in ("issuer_cache_size", "new_issuers_per_minute"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")

    def _no_own_issuer(self, where: str, whom: str = "each Issuer") -> None:
        """The settings name no issuer of their own (``trust`` or a resolver does)."""
        mine = [f.name for f in _ISSUER_INIT if f.name not in ("clock", "events")
                and getattr(self, f.name) != _default(f)]  # fmt: skip
        if mine:
            raise ConfigurationError(
                f"{where}, set {', '.join(mine)} on {whom}, not on the settings"
            )
        for name in ("issuers", "audiences", "discovery_issuer"):
            object.__setattr__(self, name, frozenset() if name != "discovery_issuer" else None)
        object.__setattr__(self, "static_keys", KeySet())
        _check_types(self, ("clock", "events"))
        if not callable(self.clock):
            raise ConfigurationError("clock must be a callable returning the time in seconds")

    def _trusted(self) -> tuple[Issuer, ...]:
        if isinstance(self.trust, (str, bytes, Issuer)) or not all(
            type(i) is Issuer for i in self.trust
        ):
            raise ConfigurationError("trust must be a list of Issuer(...) objects")
        trust = tuple(self.trust)
        self._no_own_issuer("with trust=[...]")
        _check_distinct(trust, "trust")
        shared = []
        for index, issuer in enumerate(trust):
            changes = {}
            for name in ("clock", "events"):
                own, ours = getattr(issuer, name), getattr(self, name)
                if own is _default_of(name):
                    changes[name] = ours
                elif ours is not _default_of(name) and own is not ours:
                    raise ConfigurationError(
                        f"trust[{index}] sets its own {name}, and so do the settings: set one"
                    )
            shared.append(dataclasses.replace(issuer, **changes) if changes else issuer)
        return tuple(shared)

    def _check_requests(self) -> None:
        if not self.header and self.cookie is None:
            raise ConfigurationError("no token location: keep header=True or set cookie='name'")
        if self.cookie is not None and not _COOKIE_NAME.fullmatch(self.cookie):
            raise ConfigurationError(f"cookie {self.cookie!r} is not a valid cookie name")
        for path in self.public_paths:
            if not isinstance(path, str) or not path.startswith("/"):
                raise ConfigurationError(f"public path {path!r} must be a string starting with '/'")
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


MAX_LEEWAY = 3600.0


class Options(TypedDict, total=False):
    """The keyword arguments of the middlewares: the fields of :class:`Settings`, each
    optional, so that ``app.add_middleware(JWTMiddleware, leewya=30)`` fails in mypy (through
    Starlette's typed ``add_middleware``) and not only at startup. tests/unit/test_api.py keeps this
    equal to the fields of Settings."""

    issuer: str | Sequence[str] | None
    audience: str | Sequence[str] | None
    allow_any_issuer: bool
    allow_any_audience: bool
    jwks_url: str | None
    discovery: bool | None
    jwks: Mapping[str, Any] | None
    keys: Sequence[Key]
    rsa_max_bits: int
    rsa_max_exponent: int
    algorithms: Sequence[str]
    leeway: float
    require_exp: bool
    required_claims: Sequence[str]
    typ: str | None
    profile: str | None
    allowed_clients: Collection[str] | None
    max_lifetime: float | None
    max_token_bytes: int
    validators: Sequence[Validator]
    scope_claims: Sequence[str]
    jwks_max_age: float
    jwks_cooldown: float
    jwks_timeout: float
    jwks_max_bytes: int
    jwks_max_stale: float
    jwks_ca_bundle: str | ssl.SSLContext | None
    jwks_proxy: str | None
    jwks_trust_env: bool
    key_store: Any
    introspection: Any
    revocation: Any
    revocation_fail_open: bool
    events: Any
    clock: Callable[[], float]
    trust: Sequence[Issuer]
    issuer_resolver: Callable[[str], Any] | None
    issuer_cache_size: int
    new_issuers_per_minute: int
    token_cache_size: int
    header: bool
    cookie: str | None
    public_paths: Collection[str]
    anonymous: bool
    realm: str
    expose_error_details: bool
    on_error: Callable[[AuthError], None] | None
    challenge_scopes: Sequence[str]
    implied_scopes: Mapping[str, Sequence[str]] | None
    resource: str | None
    authorization_servers: Sequence[str] | None
    scopes_supported: Sequence[str]
    resource_name: str | None
    resource_documentation: str | None
    dpop: str
    dpop_algorithms: Sequence[str]
    dpop_max_age: float
    dpop_leeway: float
    dpop_replay: Any
    dpop_replay_fail_open: bool
    dpop_nonce_secret: str | bytes | None
    dpop_nonce_lifetime: float
    public_url: str | None
    trusted_proxies: Collection[str]
    client_cert_header: str | None
    csrf: str | None
    csrf_header: str
    csrf_claim: str
    allowed_origins: Collection[str]
    cors_origins: Collection[str]
    cors_methods: Sequence[str]
    cors_headers: Sequence[str] | None
    cors_credentials: bool
    cors_max_age: int
    preflight_passthrough: bool
    websocket_expiry: str
    warm_up: bool


_ISSUER_INIT = tuple(f for f in dataclasses.fields(Issuer) if f.init)
#: What belongs to one trusted issuer (the fields of Issuer).
ISSUER_FIELDS = tuple(f.name for f in _ISSUER_INIT)
#: What belongs to the request handling and the verifier as a whole (Settings' own fields).
REQUEST_FIELDS = tuple(
    f.name for f in dataclasses.fields(Settings) if f.init and f.name not in ISSUER_FIELDS
)
#: With a list of Settings (the older form of several issuers), these must be equal in all.
SHARED_FIELDS = (*(f for f in REQUEST_FIELDS if f != "trust"), "clock")
_LISTS = frozenset({
    "algorithms", "required_claims", "scope_claims", "public_paths", "allowed_origins",
    "cors_origins", "cors_methods", "cors_headers", "validators", "keys", "trust",
    "challenge_scopes", "authorization_servers", "scopes_supported", "dpop_algorithms",
    "trusted_proxies", "allowed_clients",
})  # fmt: skip
_METADATA_FIELDS = (
    "authorization_servers", "scopes_supported", "resource_name", "resource_documentation"
)  # fmt: skip
_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}


def _default(f: dataclasses.Field[Any]) -> Any:
    # Every field here has a plain default (none uses default_factory).
    return f.default


def _default_of(name: str) -> Any:
    return _default(_FIELDS[name])


def _check_types(settings: Issuer, names: Sequence[str]) -> None:
    # Settings often come from environment strings: "false" is truthy, and "scope" is a
    # sequence of one-letter names. Refuse both rather than guess.
    for name in names:
        value = getattr(settings, name)
        if _FIELDS[name].type == "bool" and type(value) is not bool:
            raise ConfigurationError(f"{name} must be True or False, got {value!r}")
        if name in _LISTS and isinstance(value, (str, bytes)):
            raise ConfigurationError(f"{name} must be a list, not a single string")


def settings_from(
    settings: Settings | Sequence[Settings] | None, options: Mapping[str, Any]
) -> Settings | Sequence[Settings]:
    """What a middleware's ``settings=`` or keyword options mean."""
    if settings is not None and options:
        raise ConfigurationError("pass either settings= or keyword options, not both")
    return settings if settings is not None else Settings(**options)


def issuer_entries(settings: Settings | Sequence[Settings]) -> tuple[Settings, list[Issuer]]:
    """``(shared settings, one entry per trusted issuer)``; validates several issuers.

    With several, each entry names its issuer(s), no issuer is in two entries, and the shared
    fields are equal in all (the first entry's apply)."""
    if isinstance(settings, Settings):
        return settings, list(settings.trusted)
    entries = list(settings)
    if not entries or not all(isinstance(s, Settings) for s in entries):
        raise ConfigurationError("settings must be a Settings or a non-empty list of them")
    first = entries[0]
    if any(entry.trust for entry in entries):
        raise ConfigurationError("a list of Settings cannot hold trust=[...]: use one")
    _check_distinct(entries, "settings")
    for index, entry in enumerate(entries):
        differing = [f for f in SHARED_FIELDS if getattr(entry, f) != getattr(first, f)]
        if differing:
            raise ConfigurationError(
                f"settings[{index}] differs from settings[0] in request-level options "
                f"{differing}; "
                "they apply to the request, so set them the same in every entry"
            )
    return first, list(entries)


def _check_distinct(entries: Sequence[Issuer], where: str) -> None:
    """Each entry names its issuer(s), and no issuer is named twice: the token's iss must
    choose exactly one entry."""
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not entry.issuers:
            raise ConfigurationError(f"{where}[{index}] must name its issuer(s)")
        for iss in entry.issuers:
            if iss in seen:
                raise ConfigurationError(
                    f"issuer {iss!r} is in {where}[{seen[iss]}] and {where}[{index}]"
                )
            seen[iss] = index


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


def check_ca_bundle(bundle: object, what: str) -> None:
    """A CA bundle setting: None, an ``ssl.SSLContext``, or the path of a PEM file, loaded now
    so that a wrong path or a file that is no PEM fails at startup, not as a 503 on the first
    request that needs the peer."""
    if isinstance(bundle, str):
        try:
            ssl.create_default_context(cafile=bundle)
        except FileNotFoundError:
            raise ConfigurationError(f"{what}: no file {bundle!r}") from None
        except (OSError, ssl.SSLError, ValueError) as exc:
            raise ConfigurationError(
                f"{what} {bundle!r} holds no PEM CA certificate that loads "
                f"({type(exc).__name__})"
            ) from None
    elif bundle is not None and not isinstance(bundle, ssl.SSLContext):
        raise ConfigurationError(
            f"{what} must be the path of a PEM file or an ssl.SSLContext, "
            f"got {type(bundle).__name__}"
        )


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


def check_proxy_url(url: object, what: str) -> None:
    """A proxy for key fetches: an absolute http(s) URL naming a host, as httpx parses it."""
    if not isinstance(url, str):
        raise ConfigurationError(f"{what} must be a URL string such as 'http://proxy:3128'")
    # The value is never echoed: a proxy URL often carries a password, and one malformed
    # enough to fail here may be too malformed for redact() to find it.
    try:
        parts = httpx.URL(url)
    except httpx.InvalidURL:
        raise ConfigurationError(f"{what} is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.host:
        # Without "://" the "scheme" httpx finds may be a user name ("user:pw@proxy:3128").
        scheme = f"scheme {parts.scheme[:20]!r}" if "://" in url else "no scheme"
        raise ConfigurationError(
            f"{what} must be an http:// or https:// URL with a host (it has {scheme})"
        )
    if parts.port is not None and not 0 < parts.port < 65536:
        raise ConfigurationError(f"{what} has port {parts.port}, not one from 1 to 65535")


def _is_loopback(host: str) -> bool:
    if host.lower() in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


#: RFC 9728 §3: the well-known URI suffix of protected-resource metadata.
WELL_KNOWN = "/.well-known/oauth-protected-resource"


def check_resource(resource: object) -> None:
    """A resource identifier (RFC 9728 §1.2): an absolute https URL (http on loopback) with no
    query, fragment or credentials. Clients compare it exactly, so it is kept as written."""
    if resource is None:
        return
    if not isinstance(resource, str):
        raise ConfigurationError(f"resource must be a URL string, got {resource!r}")
    _check_url(resource, "resource")
    parts = urlsplit(resource)
    if parts.query or parts.fragment or "?" in resource or "#" in resource:
        raise ConfigurationError(
            f"resource {resource!r} must have no query or fragment (RFC 9728 §1.2)"
        )


def metadata_url(resource: str) -> str:
    """Where RFC 9728 §3.1 puts the metadata of ``resource``: the well-known path inserted
    between the host and the resource's path (a lone ``/`` path is dropped first)."""
    parts = urlsplit(resource)
    path = "" if parts.path == "/" else parts.path
    return f"{parts.scheme}://{parts.netloc}{WELL_KNOWN}{path}"


def _check_url(url: object, what: str) -> None:
    """https (http on a loopback host), a host, no credentials."""
    if not isinstance(url, str) or not url.isascii():
        raise ConfigurationError(f"{what}: {url!r} is not a URL string")
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "https" or (parts.scheme == "http" and _is_loopback(host))
    if not host or not secure or "@" in parts.netloc or any(c.isspace() for c in url):
        raise ConfigurationError(
            f"{what}: {redact(url)!r} must be an https:// URL with a host and no credentials "
            "(plain http on a loopback host only)"
        )


def _scope_list(what: str, scopes: Sequence[str]) -> tuple[str, ...]:
    try:
        return tuple(dict.fromkeys(scope_names(scopes)))
    except ConfigurationError as exc:
        raise ConfigurationError(f"{what}: {exc}") from None


def _closure(implied: Mapping[str, Sequence[str]] | None) -> dict[str, tuple[str, ...]]:
    """Each scope of the hierarchy and everything it implies, directly or through others (a
    cycle just makes its members equivalent)."""
    if implied is None:
        return {}
    if not isinstance(implied, Mapping):
        raise ConfigurationError("implied_scopes must be a mapping: {broader: [narrower, ...]}")
    direct: dict[str, tuple[str, ...]] = {}
    for broad, narrower in implied.items():
        if isinstance(narrower, str):
            raise ConfigurationError(f"implied_scopes[{broad!r}] must be a list, not a string")
        direct[_scope_list("implied_scopes", [broad])[0]] = _scope_list(
            f"implied_scopes[{broad!r}]", narrower
        )
    closed: dict[str, tuple[str, ...]] = {}
    for broad in direct:
        seen: dict[str, None] = {}
        todo = list(direct[broad])
        while todo:
            scope = todo.pop(0)
            if scope != broad and scope not in seen:
                seen[scope] = None
                todo.extend(direct.get(scope, ()))
        closed[broad] = tuple(seen)
    return closed
