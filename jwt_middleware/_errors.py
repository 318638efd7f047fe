"""Errors raised by jwt_middleware, and how each becomes an HTTP answer.

    JWTMiddlewareError
     ├── ConfigurationError (ValueError)   bad settings or scope names; raised at construction
     ├── UsageError (TypeError)            an API called with the wrong kind of argument
     ├── NotInstalled (RuntimeError)       a per-route helper ran with no middleware in front
     ├── UnusableKey (ValueError)          a key (JWK, PEM, secret) that cannot be used, and why
     ├── KeyFetchError                     the key server gave no usable document (safe to log)
     ├── RevocationStoreError              the revocation store could not answer
     ├── ReplayStoreError                  the DPoP replay store could not answer (or is full)
     ├── ConnectionClosed (OSError)        the client went away (WebSocket expiry; ASGI only)
     ├── AuthError                         a request is refused; carries a stable ``reason``
     │    ├── InvalidRequest          400  error="invalid_request"   (RFC 6750 §3.1)
     │    ├── MissingToken            401  no error code              (RFC 6750 §3.1)
     │    ├── InvalidToken            401  error="invalid_token"
     │    │    └── InvalidProof       401  error="invalid_dpop_proof"  (RFC 9449 §7.1)
     │    │         └── UseDPoPNonce  401  error="use_dpop_nonce" + DPoP-Nonce  (§9)
     │    ├── InsufficientScope       403  error="insufficient_scope"
     │    ├── InsufficientAuthentication  401  error="insufficient_user_authentication" (RFC 9470)
     │    ├── CSRFRejected            403  error="csrf_failed" (cookie token, no CSRF proof)
     │    └── Unavailable             503  Retry-After; the request cannot be checked right now
     │         ├── KeysUnavailable         no usable key could be fetched
     │         ├── RevocationUnavailable   the revocation store did not answer (fail closed)
     │         ├── ReplayUnavailable       the DPoP replay store did not answer (fail closed)
     │         └── IntrospectionUnavailable  the introspection endpoint did not answer (RFC 7662)
     ├── flask.AuthHTTPException (werkzeug HTTPException)    an AuthError raised in a view,
     └── fastapi.AuthHTTPException (FastAPI HTTPException)   for the framework to answer

A builtin or framework class in parentheses is a second base: code that caught it still does.

``reason`` is for logs, metrics and the error hook. The client only sees the generic RFC 6750
code unless ``expose_error_details`` is set, because telling an attacker *which* check failed
helps them tune a forgery.

Every adapter (ASGI, WSGI, the Starlette decorators, FastAPI, Flask) sends what :func:`render`
gives; each only frames it for its transport.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import Enum
from typing import ClassVar

__all__ = [
    "AuthError",
    "CSRFRejected",
    "Challenge",
    "ConfigurationError",
    "InsufficientAuthentication",
    "InsufficientScope",
    "IntrospectionUnavailable",
    "InvalidProof",
    "InvalidRequest",
    "InvalidToken",
    "JWTMiddlewareError",
    "KeyFetchError",
    "KeysUnavailable",
    "MissingToken",
    "NotInstalled",
    "Reason",
    "ReplayStoreError",
    "ReplayUnavailable",
    "RevocationStoreError",
    "RevocationUnavailable",
    "Unavailable",
    "UnusableKey",
    "UsageError",
    "UseDPoPNonce",
]


class Reason(str, Enum):
    """Stable reason codes. They are part of the public API: logs and dashboards key on them.

    Each member *is* its code (a ``str``): it compares equal to it, hashes like it, and
    formats, logs and serializes to JSON as the plain code.
    """

    # request shape
    TOKEN_MISSING = "token_missing"
    MULTIPLE_TOKENS = "multiple_tokens"
    MALFORMED_AUTHORIZATION = "malformed_authorization"
    MALFORMED_COOKIE = "malformed_cookie"
    # token shape
    TOKEN_TOO_LARGE = "token_too_large"
    MALFORMED_TOKEN = "malformed_token"
    MALFORMED_HEADER = "malformed_header"
    MALFORMED_PAYLOAD = "malformed_payload"
    ALG_NOT_ALLOWED = "alg_not_allowed"
    CRIT_UNSUPPORTED = "crit_unsupported"
    UNSUPPORTED_HEADER = "unsupported_header"
    TYP_MISMATCH = "typ_mismatch"
    # claims
    ISSUER_MISMATCH = "issuer_mismatch"
    AUDIENCE_MISMATCH = "audience_mismatch"
    EXPIRED = "token_expired"
    NOT_YET_VALID = "token_not_yet_valid"
    ISSUED_IN_FUTURE = "issued_in_future"
    LIFETIME_TOO_LONG = "lifetime_too_long"
    CLAIM_MISSING = "claim_missing"
    CLAIM_INVALID = "claim_invalid"
    #: The token's client (``client_id``, else ``azp``) is not in ``allowed_clients``.
    CLIENT_NOT_ALLOWED = "client_not_allowed"
    VALIDATOR_REJECTED = "validator_rejected"
    VALIDATOR_FAILED = "validator_failed"
    # keys and signature
    KID_UNKNOWN = "kid_unknown"
    KID_AMBIGUOUS = "kid_ambiguous"
    KEY_ALG_MISMATCH = "key_alg_mismatch"
    SIGNATURE_INVALID = "signature_invalid"
    KEYS_UNAVAILABLE = "keys_unavailable"
    REVOCATION_UNAVAILABLE = "revocation_unavailable"
    TOKEN_REVOKED = "token_revoked"
    #: The introspection endpoint says the (opaque) token is not active (RFC 7662 §2.2).
    TOKEN_INACTIVE = "token_inactive"
    #: The introspection endpoint could not be asked, or gave no usable answer.
    INTROSPECTION_UNAVAILABLE = "introspection_unavailable"
    #: The token names an issuer that ``issuer_resolver`` would accept but that cannot be
    #: admitted now: too many new issuers were admitted in the last minute (a flood bound).
    ISSUER_RATE_LIMITED = "issuer_rate_limited"
    CSRF_FAILED = "csrf_failed"
    # sender-constrained tokens (RFC 9449 DPoP, RFC 8705 certificate-bound)
    #: A DPoP proof failed one of its checks (missing, several, shape, key, signature, htm,
    #: htu, iat, ath, or sent beside a Bearer token); the detail says which.
    DPOP_INVALID = "dpop_invalid"
    #: The proof's ``(jkt, jti)`` was accepted before: a replayed proof.
    DPOP_REPLAYED = "dpop_replayed"
    #: The proof is not signed by the key the token is bound to (``cnf.jkt``).
    DPOP_KEY_MISMATCH = "dpop_key_mismatch"
    #: The proof carries no server nonce, or a stale one (``use_dpop_nonce``, RFC 9449 §9).
    DPOP_NONCE = "dpop_nonce"
    #: Only DPoP-bound tokens are accepted here (``dpop="required"``).
    DPOP_REQUIRED = "dpop_required"
    #: A DPoP-bound token presented as a bearer token (RFC 9449 §7.2).
    TOKEN_BOUND = "token_bound"
    #: A token under the ``DPoP`` scheme that names no key (``cnf.jkt``).
    TOKEN_NOT_BOUND = "token_not_bound"
    #: A certificate-bound token (``cnf.x5t#S256``, RFC 8705) without that client certificate.
    CERTIFICATE_MISMATCH = "certificate_mismatch"
    #: A forwarded client certificate that cannot be read.
    MALFORMED_CLIENT_CERTIFICATE = "malformed_client_certificate"
    #: A Host (or forwarded host) that is not a host, where the request URL must be known.
    MALFORMED_HOST = "malformed_host"
    #: The DPoP replay store could not record the proof (fail closed).
    REPLAY_UNAVAILABLE = "replay_unavailable"
    VERIFIER_ERROR = "verifier_error"  # a bug of ours; the request is refused, never let in
    # authorization
    INSUFFICIENT_SCOPE = "insufficient_scope"
    #: The route needs a stronger (``acr``) or more recent (``auth_time``) login (RFC 9470).
    INSUFFICIENT_AUTHENTICATION = "insufficient_user_authentication"
    #: An MCP request whose tool cannot be told (headers disagree with the body, a body over
    #: the limit, a ``tools/call`` without a name): refused before any tool runs.
    MCP_REQUEST_INVALID = "mcp_request_invalid"

    # Python 3.10 has no StrEnum, and a (str, Enum) member formats as "Reason.EXPIRED" on
    # some versions: the code itself is what logs, f-strings and metric labels must show.
    def __str__(self) -> str:
        return self.value


class JWTMiddlewareError(Exception):
    """Base class of every error this package raises."""


class ConfigurationError(JWTMiddlewareError, ValueError):
    """The settings (or a route's scope names) are wrong. The message says how to fix them."""


class UsageError(JWTMiddlewareError, TypeError):
    """A function of this package was given the wrong kind of argument (a decorated endpoint
    without a ``Request``, a ``jti`` that is not a string)."""


class NotInstalled(JWTMiddlewareError, RuntimeError):
    """A per-route helper (scope decorator, dependency, ``current_token``) ran on a request
    that no JWTMiddleware / JWTWSGIMiddleware has seen."""


class UnusableKey(JWTMiddlewareError, ValueError):
    """A key document or PEM that cannot be used, with the reason why."""


class KeyFetchError(JWTMiddlewareError):
    """The key server did not give us a usable document. The message is safe to log."""

    def __init__(self, message: str) -> None:
        super().__init__(redact(message))


class RevocationStoreError(JWTMiddlewareError):
    """The revocation store could not answer (network, timeout, full, …)."""


class ReplayStoreError(JWTMiddlewareError):
    """The DPoP replay store could not record a proof (network, timeout, full, …)."""


class AuthError(JWTMiddlewareError):
    """A request was refused. ``reason`` is a :class:`Reason` code; ``detail`` is for logs only.

    ``detail`` never contains the token; it may contain attacker-chosen header values, which the
    logger escapes with ``%r``.
    """

    status_code: ClassVar[int] = 401
    error: ClassVar[str | None] = None
    public_description: ClassVar[str] = "Authentication required."

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(str(reason) if not detail else f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail

    #: Scopes this refusal names in its challenge's ``scope`` (RFC 6750 §3), when the check
    #: that refused knows them (a route's required scopes); empty: the settings' default.
    scopes: tuple[str, ...] = ()

    #: The authentication scheme the refused request used (``"Bearer"``, or ``"DPoP"`` for
    #: ``Authorization: DPoP``): its challenge carries the error (RFC 9449 §7.1).
    scheme: str = "Bearer"

    def www_authenticate(self, challenge: Challenge) -> str:
        """The ``WWW-Authenticate`` value (RFC 6750 §3, with RFC 9728's ``resource_metadata``):
        the challenge of the request's scheme, carrying the error, and on a 401 the other
        accepted scheme's bare one after it (RFC 9449 §7.2: with both Bearer and DPoP accepted,
        the client learns it may use either). One field value, so that frameworks holding
        headers in a dict keep both."""
        schemes = challenge.schemes
        own = self.scheme if self.scheme in schemes else schemes[0]
        value = self._challenge(own, challenge)
        if self.status_code == 401:
            for other in schemes:
                if other != own:
                    value += f', {other} realm="{_quote(challenge.realm)}"' + (
                        _algs(challenge) if other == "DPoP" else ""
                    )
        return value

    def _challenge(self, scheme: str, challenge: Challenge) -> str:
        params = [f'realm="{_quote(challenge.realm)}"']
        if self.error is not None:
            params.append(f'error="{self.error}"')
            params.append(f'error_description="{_quote(self.description(challenge.expose))}"')
        scopes = self.scopes or (challenge.scope if self.status_code == 401 else ())
        if scopes:
            # Scope names are not secret: RFC 6750 §3 puts them in the challenge so the client
            # knows what to ask the authorization server for.
            params.append(f'scope="{_quote(" ".join(scopes))}"')
        if challenge.resource_metadata is not None:
            params.append(f'resource_metadata="{_quote(challenge.resource_metadata)}"')
        params.extend(f'{name}="{_quote(value)}"' for name, value in self.challenge_params())
        return f"{scheme} " + ", ".join(params) + (_algs(challenge) if scheme == "DPoP" else "")

    def challenge_params(self) -> list[tuple[str, str]]:
        """Parameters this kind of refusal adds to its challenge (RFC 9470's, say)."""
        return []

    def description(self, expose: bool = False) -> str:
        return f"{self.public_description} ({self.reason})" if expose else self.public_description

    def payload(self, *, expose: bool = False) -> dict[str, str]:
        """The JSON body as a dict: ``error``, ``error_description`` (and ``reason`` when
        exposed)."""
        payload = {"error": self.error or "unauthorized"}
        payload["error_description"] = self.description(expose)
        if expose:
            payload["reason"] = str(self.reason)
        return payload

    def body(self, *, expose: bool = False) -> bytes:
        return _compact(self.payload(expose=expose))

    def headers(self, challenge: Challenge) -> list[tuple[str, str]]:
        """The answer's headers in wire order, without the framing (``Content-Length``)."""
        return [
            ("content-type", "application/json"),
            ("www-authenticate", self.www_authenticate(challenge)),
            ("cache-control", "no-store"),
        ]


@dataclass(frozen=True)
class Challenge:
    """What every refusal's ``WWW-Authenticate`` carries besides the error itself; one per
    middleware, built from its settings."""

    realm: str = "api"
    #: Put the reason code in the description (``expose_error_details``).
    expose: bool = False
    #: RFC 9728 §5.1: where this resource's protected-resource metadata is served.
    resource_metadata: str | None = None
    #: Scopes a 401 names when the refusing check knows none of its own (``challenge_scopes``).
    scope: tuple[str, ...] = ()
    #: The accepted authentication schemes, in challenge order (``Bearer`` and/or ``DPoP``).
    schemes: tuple[str, ...] = ("Bearer",)
    #: The DPoP proof algorithms accepted, for the ``DPoP`` challenge's ``algs``.
    dpop_algs: tuple[str, ...] = ()


class InvalidRequest(AuthError):
    status_code = 400
    error = "invalid_request"
    public_description = "The request is malformed."


class MissingToken(AuthError):
    status_code = 401
    error = None
    public_description = "An access token is required."

    def __init__(
        self, reason: str = Reason.TOKEN_MISSING, detail: str = "", *, scopes: Sequence[str] = ()
    ) -> None:
        super().__init__(reason, detail)
        self.scopes = tuple(scopes)


class InvalidToken(AuthError):
    status_code = 401
    error = "invalid_token"
    public_description = "The access token is invalid."


class InvalidProof(InvalidToken):
    """The DPoP proof (RFC 9449) is missing, malformed, or does not fit the request or the
    token; or it was seen before."""

    error = "invalid_dpop_proof"
    public_description = "The DPoP proof is invalid."
    scheme = "DPoP"


class UseDPoPNonce(InvalidProof):
    """The proof must carry the server's current nonce (RFC 9449 §9), sent in ``DPoP-Nonce``."""

    error = "use_dpop_nonce"
    public_description = "Resend the request with a DPoP proof carrying the DPoP-Nonce."

    def __init__(self, nonce: str, detail: str = "") -> None:
        super().__init__(Reason.DPOP_NONCE, detail)
        self.nonce = nonce

    def headers(self, challenge: Challenge) -> list[tuple[str, str]]:
        return [*super().headers(challenge), ("dpop-nonce", self.nonce)]


class InsufficientScope(AuthError):
    status_code = 403
    error = "insufficient_scope"
    public_description = "The access token does not grant the required scope."

    def __init__(self, required: Sequence[str], *, any_of: bool = False) -> None:
        self.required = tuple(required)
        self.any_of = any_of
        kind = "any of" if any_of else "all of"
        super().__init__(Reason.INSUFFICIENT_SCOPE, f"needs {kind}: {' '.join(self.required)}")
        # All the scopes the operation needs, in one challenge: the client asks for them (on
        # top of what it holds) in one go, rather than one denial per missing scope.
        self.scopes = self.required


class InsufficientAuthentication(AuthError):
    """The token is valid, but the route needs a stronger or more recent login (RFC 9470 §3):
    the challenge names the ``acr_values`` and/or ``max_age`` to ask the authorization server
    for (a new token from a new login)."""

    status_code = 401
    error = "insufficient_user_authentication"
    public_description = "A stronger or more recent authentication is required."

    def __init__(
        self, acr_values: Sequence[str] = (), max_age: int | None = None, detail: str = ""
    ) -> None:
        super().__init__(Reason.INSUFFICIENT_AUTHENTICATION, detail)
        self.acr_values = tuple(acr_values)
        self.max_age = max_age

    def challenge_params(self) -> list[tuple[str, str]]:
        params = []
        if self.acr_values:
            params.append(("acr_values", " ".join(self.acr_values)))
        if self.max_age is not None:
            params.append(("max_age", str(self.max_age)))
        return params


class CSRFRejected(AuthError):
    """A state-changing request authenticated by a cookie came without CSRF proof."""

    status_code = 403
    error = "csrf_failed"
    public_description = "Cross-site request refused: the CSRF check failed."

    def headers(self, challenge: Challenge) -> list[tuple[str, str]]:
        # Not an authentication challenge: the credentials are fine, the request's origin is not.
        return [("content-type", "application/json"), ("cache-control", "no-store")]


class Unavailable(AuthError):
    """The request cannot be checked right now (503 with Retry-After)."""

    status_code = 503
    error = "temporarily_unavailable"
    public_description = "The token cannot be verified right now; try again later."

    def __init__(self, reason: str, detail: str = "", *, retry_after: float = 30.0) -> None:
        super().__init__(reason, detail)
        self.retry_after = max(1, int(retry_after + 0.999))

    def headers(self, challenge: Challenge) -> list[tuple[str, str]]:
        # Not a challenge: the credentials may be fine, the server cannot check them yet.
        return [
            ("content-type", "application/json"),
            ("retry-after", str(self.retry_after)),
            ("cache-control", "no-store"),
        ]


class KeysUnavailable(Unavailable):
    """No usable key could be had because the key server is unreachable or broken."""

    def __init__(self, detail: str = "", *, retry_after: float = 30.0) -> None:
        super().__init__(Reason.KEYS_UNAVAILABLE, detail, retry_after=retry_after)


class RevocationUnavailable(Unavailable):
    """The revocation store could not say whether the token was revoked; refused (fail closed)."""

    def __init__(self, detail: str = "", *, retry_after: float = 5.0) -> None:
        super().__init__(Reason.REVOCATION_UNAVAILABLE, detail, retry_after=retry_after)


class ReplayUnavailable(Unavailable):
    """The DPoP replay store could not record the proof; refused (fail closed)."""

    def __init__(self, detail: str = "", *, retry_after: float = 5.0) -> None:
        super().__init__(Reason.REPLAY_UNAVAILABLE, detail, retry_after=retry_after)


class IntrospectionUnavailable(Unavailable):
    """The introspection endpoint could not say whether the token is active; refused."""

    def __init__(self, detail: str = "", *, retry_after: float = 5.0) -> None:
        super().__init__(Reason.INTROSPECTION_UNAVAILABLE, detail, retry_after=retry_after)


@dataclass(frozen=True)
class Refusal:
    """One refusal, as every adapter sends it: each adds only its transport's framing
    (``Content-Length``, or FastAPI's ``{"detail": payload}`` body)."""

    status: int
    headers: list[tuple[str, str]]  # wire order, latin-1-safe (see _quote)
    payload: dict[str, str]
    body: bytes  # the payload as compact JSON


def render(error: AuthError, challenge: Challenge) -> Refusal:
    """The RFC 6750 answer to ``error``: status, headers, JSON body."""
    payload = error.payload(expose=challenge.expose)
    return Refusal(
        status=error.status_code,
        headers=error.headers(challenge),
        payload=payload,
        body=_compact(payload),
    )


def scope_names(scopes: Iterable[str]) -> tuple[str, ...]:
    """``scopes`` checked to be scope names (RFC 6749 §3.3: non-empty, no space), for the
    per-route decorators and dependencies to refuse a typo where it is written."""
    names = tuple(scopes)
    for scope in names:
        if not isinstance(scope, str) or not scope or " " in scope:
            raise ConfigurationError(f"a scope is a non-empty string without spaces, got {scope!r}")
    return names


def scopes_granted(
    granted: Iterable[str], required: Iterable[str], *, any_of: bool = False
) -> bool:
    """Whether ``granted`` holds every scope in ``required`` (one of them with ``any_of``)."""
    have = set(granted)
    return any(s in have for s in required) if any_of else all(s in have for s in required)


# A URL in free text: scheme, optional userinfo, host and path, optional query. The userinfo
# runs to the LAST "@" before a quote or line end: a password may itself hold "@", "/" or a
# space, and over-redacting a message is harmless where under-redacting leaks the password.
_URL = re.compile(
    r"(?i)\b([a-z][a-z0-9+.-]*://)([^'\"\n]*@)?([^?#\s'\"]*)"
    # Query and fragment (either may carry a secret), without punctuation that ends the
    # sentence: "…?***: connection refused", not "…?*** connection refused".
    r"([?#](?:[^\s'\"]*[^\s'\".,:;)])?)?"
)


def redact(text: str) -> str:
    """URLs in ``text`` without ``user:password@`` and without their query and fragment (all
    may hold secrets): messages about key servers end up in logs, 503 details and startup errors."""

    def clean(match: re.Match[str]) -> str:
        scheme, userinfo, rest, query = match.groups()
        hidden = "" if not query else "?***" if query[0] == "?" else "#***"
        return f"{scheme}{'***@' if userinfo else ''}{rest}{hidden}"

    return _URL.sub(clean, text)


def _algs(challenge: Challenge) -> str:
    return f', algs="{" ".join(challenge.dpop_algs)}"'


def _compact(payload: dict[str, str]) -> bytes:
    return json.dumps(payload, separators=(",", ":")).encode()


def _quote(value: str) -> str:
    """Make a value safe inside an RFC 7230 quoted-string (and within latin-1)."""
    cleaned = "".join(ch if 0x20 <= ord(ch) < 0x7F else "?" for ch in value)
    return cleaned.replace("\\", "\\\\").replace('"', '\\"')
