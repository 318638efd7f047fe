"""Opaque access tokens, checked at the issuer's RFC 7662 introspection endpoint.

Give an :class:`Issuer` (or the :class:`Settings` of a single issuer) an ``introspection``::

    Issuer(
        issuer="https://login.example.com/",
        audience="api://orders",
        introspection=Introspection(
            url="https://login.example.com/oauth2/introspect",
            client_id="orders-api",
            client_secret=os.environ["INTROSPECTION_SECRET"],
        ),
    )

A token that is not a JWT is then sent to that endpoint (POST, with this resource server's
client credentials), and the members of an active answer are checked like a JWT's claims.
Answers are cached by a digest of the token (never the token itself): an active one until its
``exp`` or ``cache_ttl`` seconds, whichever comes first; an inactive one for ``negative_ttl``.
An endpoint that cannot answer makes the request a 503 with ``Retry-After``: never a 401 (the
token may be fine) and never an admission.
"""

from __future__ import annotations

import math
import ssl
from dataclasses import dataclass, field

import httpx

from ._errors import ConfigurationError
from ._settings import check_ca_bundle, check_key_url

__all__ = ["Introspection"]

#: The client authentication methods (RFC 6749 §2.3.1, as RFC 8414 names them).
AUTH_METHODS = ("client_secret_basic", "client_secret_post")


@dataclass(frozen=True, kw_only=True)
class Introspection:
    """Where and how to ask whether an opaque token is active (RFC 7662), and how long to
    believe the answer."""

    url: str
    """The introspection endpoint: ``https://``, or plain ``http://`` on a loopback host only
    (the answer decides who gets in, and the request carries the client secret)."""
    client_id: str
    """This resource server's client id at the authorization server."""
    client_secret: str = field(repr=False)
    """Its client secret. Never logged, never in ``repr``, never in an error."""
    auth: str = "client_secret_basic"
    """How the credentials are sent: ``"client_secret_basic"`` (HTTP Basic, each part
    form-encoded first as RFC 6749 §2.3.1 says) or ``"client_secret_post"`` (in the form)."""
    token_type_hint: str | None = "access_token"
    """The ``token_type_hint`` sent along (RFC 7662 §2.1); ``None`` sends none."""
    jwts: bool = False
    """False: only tokens that are not JWTs are introspected. True: every JWT whose signature
    and claims hold is asked about too, and refused unless the endpoint says it is active (an
    authoritative second opinion: revocation takes effect within ``cache_ttl``)."""
    cache_ttl: float = 300.0
    """Longest time, in seconds, an active answer is believed: until ``min(exp, now +
    cache_ttl)``; an answer without ``exp`` for ``cache_ttl``. A revocation at the
    authorization server takes effect here within that time."""
    cache_size: int = 10_000
    """Active answers kept (least recently used go first). 0: every request asks again."""
    negative_ttl: float = 30.0
    """Seconds an inactive answer is remembered, so a token replayed after it was refused costs
    no request."""
    negative_cache_size: int = 10_000
    """Inactive answers kept: a bound, so a flood of made-up tokens cannot grow memory (each
    costs one request at most while it is remembered). 0: no negative cache."""
    timeout: float = 5.0
    """Seconds for each phase of a request (connect, TLS, send, each read)."""
    deadline: float = 10.0
    """Seconds the whole request may take, waiting for a slow answer included; a request
    that needs the answer gets a 503 by then."""
    max_bytes: int = 64 * 1024
    """Largest answer body read, in bytes; a larger one is an outage (503), never truncated.
    Compressed answers are refused: the request asks for ``identity``."""
    retry_after: float = 5.0
    """The ``Retry-After`` (seconds) of the 503 sent while the endpoint cannot answer (an
    endpoint's own ``Retry-After``, up to a minute, wins)."""
    ca_bundle: str | ssl.SSLContext | None = None
    """The CA certificates (a PEM file) to trust for the endpoint, e.g. a private CA's, or an
    ``ssl.SSLContext`` for full control. ``None``: certifi's bundle, or ``SSL_CERT_FILE`` /
    ``SSL_CERT_DIR`` while ``trust_env`` holds."""
    trust_env: bool = True
    """Let the environment shape the requests as it does httpx's: ``http(s)_proxy`` /
    ``all_proxy`` / ``no_proxy`` and ``SSL_CERT_FILE`` / ``SSL_CERT_DIR``. False: ignore
    them (direct connections, certifi's bundle)."""

    def __post_init__(self) -> None:
        check_key_url(self.url, "introspection url")
        if httpx.URL(self.url).userinfo:
            raise ConfigurationError(
                "introspection url must not carry credentials: set client_id and client_secret"
            )
        for name in ("client_id", "client_secret"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value:
                # The secret's value is never echoed, not even its type's repr.
                raise ConfigurationError(f"introspection {name} must be a non-empty string")
        if self.auth not in AUTH_METHODS:
            raise ConfigurationError(
                f"introspection auth must be one of {', '.join(AUTH_METHODS)}, got {self.auth!r}"
            )
        hint = self.token_type_hint
        if hint is not None and (not isinstance(hint, str) or not hint):
            raise ConfigurationError(
                f"token_type_hint must be a non-empty string such as 'access_token', or None; "
                f"got {hint!r}"
            )
        for name in ("jwts", "trust_env"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigurationError(f"introspection {name} must be True or False")
        self._check_numbers()
        check_ca_bundle(self.ca_bundle, "introspection ca_bundle")

    def _check_numbers(self) -> None:
        for name in ("cache_ttl", "negative_ttl", "timeout", "deadline", "retry_after"):
            value = getattr(self, name)
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or not math.isfinite(value)
                or value <= 0
            ):
                raise ConfigurationError(
                    f"introspection {name} must be a positive number of seconds, got {value!r}"
                )
        for name in ("cache_size", "negative_cache_size", "max_bytes"):
            value = getattr(self, name)
            least = 1 if name == "max_bytes" else 0
            if isinstance(value, bool) or not isinstance(value, int) or value < least:
                raise ConfigurationError(
                    f"introspection {name} must be an integer >= {least}, got {value!r}"
                )

    def ssl_context(self) -> ssl.SSLContext:
        """The trust store requests to the endpoint use."""
        if isinstance(self.ca_bundle, ssl.SSLContext):
            return self.ca_bundle
        if self.ca_bundle is not None:
            return ssl.create_default_context(cafile=self.ca_bundle)
        # The trust store httpx would use (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
        return httpx.create_ssl_context(trust_env=self.trust_env)
