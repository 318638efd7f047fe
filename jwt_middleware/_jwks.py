"""The remote JWKS cache: one policy (sans-I/O), one fetch flow, two transports.

This module holds the policy (:class:`JWKSPolicy`), the fetch flow both transports drive
(:meth:`_Remote._flow`) and the sync transport (:class:`SyncJWKS`, for WSGI). The async transport
(:class:`~jwt_middleware._jwks_async.AsyncJWKS`, for ASGI) lives in ``_jwks_async``, so that a
WSGI application never imports asyncio.

Policy, in the order it is applied (``now`` from the injected clock):

* **fresh** (``now < fresh_until``) and the ``kid`` is known → use the keys; no I/O.
* **expired but within the stale bound** and the ``kid`` is known → use the keys, and refresh in
  the background (at most once per cooldown). A key server outage never blocks requests whose
  key we already hold (stale-if-error).
* **unknown kid** → fetch now and wait, but at most once per ``cooldown`` window: a flood of
  tokens with random kids costs the key server one request per window, not one per token.
  Inside the window the answer is "kid unknown" (401), or 503 when the last fetch failed (the
  key may well exist; we just cannot see it).
* **no keys, or past the stale bound** → fetch and wait (same cooldown); 503 when that fails.
* Concurrent requests that need a fetch share one (single-flight).

Fresh for ``Cache-Control: max-age`` when the server sends it, clamped to
``[cooldown, jwks_max_age]``; otherwise ``jwks_max_age``.

Transport limits (every key server is hostile):

* **Time.** One fetch (discovery and JWKS together) ends within ``2 * jwks_timeout`` of its
  start, and each socket operation in it (connect, TLS, write, each read) waits at most
  ``jwks_timeout``. A request waiting for a fetch gives up at that same deadline (503). Async:
  ``asyncio.wait_for`` around the fetch. Sync: each socket operation's timeout is cut to the
  time the fetch has left (:class:`_ClampedBackend`; we resolve the name and try each address
  ourselves, so every connect gets only what is left), and the fetch runs in its own thread, so
  no request thread waits past the deadline whatever the fetch is stuck on (a resolver too).
* **Size.** At most ``jwks_max_bytes`` read from the wire, and at most ``jwks_max_bytes`` after
  decoding: we ask for ``Accept-Encoding: identity``; one ``gzip`` or ``deflate`` layer is still
  decoded (a server may compress anyway), inflating never more than the cap plus one byte.
  Stacked or other codings are refused.
* **Type.** The JWKS must be ``application/json`` or ``application/jwk-set+json``, discovery
  ``application/json`` (parameters allowed; case-insensitive); no Content-Type is refused.
* **Secrets.** Credentials in a key URL go out as a Basic ``Authorization`` header, never in the
  request line; the requests are driven through httpcore directly, whose log records name no URL
  (httpx's client logs every request's full URL at INFO). Our own messages show key URLs without
  userinfo or query (:func:`_redact`).

:func:`fetch_jwks` is one bounded GET of a JWKS with these limits, for the CLI.
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import logging
import os
import re
import socket
import ssl
import threading
import time
import urllib.request
import weakref
import zlib
from collections.abc import Callable, Generator, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpcore
import httpx

from ._errors import ConfigurationError, KeyFetchError, KeysUnavailable, UnusableKey
from ._errors import redact as _redact
from ._jws import loads_strict
from ._keys import KeySet
from ._settings import Issuer, check_key_url
from .keystore import CorruptEntry, KeyStoreError, StoredDocument, is_async

__all__ = ["JWKSPolicy", "KeyFetchError", "Plan", "SyncJWKS", "fetch_jwks"]

logger = logging.getLogger("jwt_middleware")

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)
_JWKS_TYPES = frozenset({"application/jwk-set+json", "application/json"})
_DISCOVERY_TYPES = frozenset({"application/json"})
# Identity: a JWKS is a few KiB, and every coding we accept is one more way for a small response
# to cost us a lot. zlib's wbits for the one layer we still decode if a server compresses anyway.
_ACCEPT_ENCODING = b"identity"
_CODINGS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
_TOO_SLOW = "key server too slow (total time limit)"
_NETWORK_ERRORS = (
    httpcore.TimeoutException,
    httpcore.NetworkError,
    httpcore.ProtocolError,
    httpcore.UnsupportedProtocol,
    httpcore.ProxyError,
    ssl.SSLError,
)


class Plan(Enum):
    USE = "use"  # answer from the keys held now
    USE_AND_REFRESH = "use_and_refresh"  # answer now; refresh in the background
    FETCH = "fetch"  # fetch (or join the fetch in flight) and wait for it
    UNAVAILABLE = "unavailable"  # no usable keys, and not allowed to fetch yet


@dataclass
class JWKSPolicy:
    """The cache's state and decisions. No I/O: transports call :meth:`plan` and report back."""

    max_age: float
    cooldown: float
    max_stale: float
    keyset: KeySet | None = None
    fresh_until: float = float("-inf")
    stale_until: float = float("-inf")
    last_attempt: float | None = None
    last_error: str | None = None
    in_flight: bool = False
    fetches: int = 0

    def plan(self, kid: str | None, now: float) -> Plan:
        keyset = self.keyset
        usable = keyset is not None and now < self.stale_until
        # by_kid, not `kid in keyset`: KeySet.__contains__ is a Python call, and this runs
        # (with usable_keyset) for every new token.
        if usable and (kid is None or kid in keyset.by_kid):  # type: ignore[union-attr]
            if now < self.fresh_until:
                return Plan.USE
            return Plan.USE_AND_REFRESH if self.may_fetch(now) else Plan.USE
        if self.in_flight or self.may_fetch(now):
            return Plan.FETCH
        if usable and self.last_error is None:
            return Plan.USE  # the kid is unknown to a key server that answered recently
        return Plan.UNAVAILABLE

    def may_fetch(self, now: float) -> bool:
        return not self.in_flight and (
            self.last_attempt is None or now - self.last_attempt >= self.cooldown
        )

    def begin(self, now: float, *, rate_limited: bool = True) -> None:
        """A fetch starts. The start-up warm-up is not rate limited: it is not a *re*fetch, and
        a key published just after start must not wait out a cooldown the app never used."""
        self.in_flight = True
        if rate_limited:
            self.last_attempt = now
        self.fetches += 1

    def ttl(self, max_age: float | None) -> float:
        """How long a document the server gave ``max_age`` (None: none) stays fresh."""
        return self.max_age if max_age is None else min(max(max_age, self.cooldown), self.max_age)

    def succeeded(self, keyset: KeySet, now: float, max_age: float | None) -> None:
        """Keys fetched at ``now`` (a shared document: when it was fetched, not when read)."""
        ttl = self.ttl(max_age)
        self.keyset = keyset
        self.fresh_until = now + ttl
        self.stale_until = now + ttl + self.max_stale
        self.last_error = None
        self.in_flight = False

    def failed(self, error: str) -> None:
        self.last_error = error
        self.in_flight = False

    def unavailable(self, now: float, error: str | None = None) -> KeysUnavailable:
        """The 503 to answer with (``error``: why, when it is not the last fetch's failure)."""
        wait = (
            self.cooldown if self.last_attempt is None else self.last_attempt + self.cooldown - now
        )
        detail = error or self.last_error or "no keys fetched yet"
        return KeysUnavailable(detail, retry_after=max(wait, 1.0))

    def usable_keyset(self, kid: str | None, now: float) -> KeySet:
        """The keys to answer from after any fetch; raises KeysUnavailable when there are none."""
        keyset = self.keyset
        if keyset is None or now >= self.stale_until:
            raise self.unavailable(now)
        if kid is not None and kid not in keyset.by_kid and self.last_error is not None:
            # We could not refresh, so "unknown kid" may just mean "not seen yet".
            raise self.unavailable(now)
        return keyset


# -- document handling shared by both transports ----------------------------------------------


def _parse_max_age(cache_control: str | None) -> float | None:
    if not cache_control:
        return None
    if _NO_CACHE.search(cache_control):
        return 0.0
    match = _MAX_AGE.search(cache_control)
    return float(match.group(1)) if match else None


@dataclass(frozen=True)
class _Proxy:
    url: httpcore.URL
    auth: tuple[bytes, bytes] | None


def _proxy_for(url: httpx.URL) -> _Proxy | None:
    """The proxy the environment names for ``url`` (HTTP(S)_PROXY, ALL_PROXY, NO_PROXY), as
    httpx's client would have used it. Environment only: the platform variants may consult the
    system (and DNS, on macOS and Windows), which would block the event loop past any deadline."""
    proxies = urllib.request.getproxies_environment()
    proxy = proxies.get(url.scheme) or proxies.get("all")
    bypass = urllib.request.proxy_bypass_environment  # type: ignore[attr-defined]  # untyped
    if not proxy or bypass(url.host, proxies):
        return None
    return _proxy(proxy if "://" in proxy else f"http://{proxy}", "the environment")


def _proxy(url: str, where: str) -> _Proxy:
    try:
        parsed = httpx.URL(url)
    except httpx.InvalidURL:
        raise KeyFetchError(f"the proxy URL in {where} is not valid") from None
    if parsed.scheme not in ("http", "https"):
        raise KeyFetchError(f"proxy scheme {parsed.scheme[:20]!r} is not supported")
    auth = (parsed.username.encode(), parsed.password.encode()) if parsed.username else None
    return _Proxy(_wire_url(parsed, b"/"), auth)


def _wire_url(url: httpx.URL, target: bytes) -> httpcore.URL:
    """httpx parsed it (IDNA, validation); httpcore sends it, without userinfo."""
    return httpcore.URL(scheme=url.raw_scheme, host=url.raw_host, port=url.port, target=target)


@dataclass(frozen=True)
class _Target:
    """One GET, ready for httpcore: the URL without userinfo, the headers (credentials from the
    URL as Basic auth, as httpx would send them), the URL as it may be logged, the media types
    the answer may have, and the proxy to go through."""

    url: httpcore.URL
    headers: list[tuple[bytes, bytes]]
    shown: str
    media_types: frozenset[str]
    proxy: _Proxy | None

    @classmethod
    def of(
        cls,
        url: str,
        media_types: frozenset[str],
        proxy_for: Callable[[httpx.URL], _Proxy | None] = _proxy_for,
    ) -> _Target:
        shown = _redact(url)
        try:
            parsed = httpx.URL(url)
        except httpx.InvalidURL:
            raise KeyFetchError(f"{shown} is not a valid URL") from None
        headers = [
            (b"host", parsed.netloc),
            (b"accept", ", ".join(sorted(media_types)).encode()),
            (b"accept-encoding", _ACCEPT_ENCODING),
            (b"user-agent", b"jwt-middleware"),
        ]
        if parsed.username or parsed.password:
            userpass = f"{parsed.username}:{parsed.password}".encode()
            headers.append((b"authorization", b"Basic " + base64.b64encode(userpass)))
        wire = _wire_url(parsed, parsed.raw_path)
        return cls(wire, headers, shown, media_types, proxy_for(parsed))


class _Body:
    """A response's status and headers checked, then its body fed in as it comes off the wire:
    at most ``max_bytes`` read, at most ``max_bytes`` decoded, in at most one content coding."""

    def __init__(
        self,
        target: _Target,
        status: int,
        headers: Iterable[tuple[bytes, bytes]],
        max_bytes: int,
    ) -> None:
        shown = target.shown
        if status != 200:
            # Redirects are not followed: a key URL that moves is a configuration change, not
            # something an attacker who controls a redirect should be able to make for us.
            raise KeyFetchError(f"{shown} answered HTTP {status}")
        fields: dict[str, list[str]] = {}
        for name, value in headers:
            fields.setdefault(name.decode("latin-1").lower(), []).append(value.decode("latin-1"))
        _check_media_type(fields.get("content-type", []), target)
        for length in fields.get("content-length", []):
            if not (length.isascii() and length.isdigit()) or int(length) > max_bytes:
                raise KeyFetchError(f"{shown} sent a body over {max_bytes} bytes")
        self.max_age = _parse_max_age(", ".join(fields.get("cache-control", [])))
        self._coding = _coding(fields.get("content-encoding", []), shown)
        self._inflate = None if self._coding is None else zlib.decompressobj(_CODINGS[self._coding])
        self._shown = shown
        self._max = max_bytes
        self._wire = 0
        self._size = 0
        self._chunks: list[bytes] = []

    def feed(self, data: bytes) -> None:
        self._wire += len(data)
        if self._wire > self._max:
            raise KeyFetchError(f"{self._shown} sent a body over {self._max} bytes")
        if self._inflate is None:
            self._keep(data)
            return
        try:
            # Never more than one byte past the cap: the cap is then exceeded and we stop.
            inflated = self._inflate.decompress(data, self._max - self._size + 1)
        except zlib.error:
            if not (self._wire == len(data) and self._coding == "deflate"):
                raise KeyFetchError(f"{self._shown} sent a corrupt {self._coding} body") from None
            # "deflate" without its zlib wrapper, as some servers send it (httpx allows it too).
            self._inflate = zlib.decompressobj(-zlib.MAX_WBITS)
            self._coding = "raw deflate"
            self._wire = 0
            self.feed(data)
            return
        self._keep(inflated)
        if self._inflate.unused_data:
            raise KeyFetchError(f"{self._shown} sent data after the {self._coding} body")

    def _keep(self, data: bytes) -> None:
        self._size += len(data)
        if self._size > self._max:
            raise KeyFetchError(f"{self._shown} sent a body over {self._max} bytes once decoded")
        self._chunks.append(data)

    def result(self) -> tuple[Any, float | None]:
        """The document and its max age, once the whole body is in."""
        if self._inflate is not None and not self._inflate.eof:
            raise KeyFetchError(f"{self._shown} sent a truncated {self._coding} body")
        return _decode_json(self.data(), self._shown), self.max_age

    def data(self) -> bytes:
        """The body as read (decoded), for the key store."""
        return b"".join(self._chunks)


def _check_media_type(values: list[str], target: _Target) -> None:
    expected = " or ".join(sorted(target.media_types))
    if len(values) != 1:
        count = "no" if not values else "several"
        raise KeyFetchError(f"{target.shown} sent {count} Content-Type, expected {expected}")
    media_type = values[0].split(";", 1)[0].strip().lower()
    if media_type not in target.media_types:
        raise KeyFetchError(
            f"{target.shown} sent Content-Type {values[0][:80]!r}, expected {expected}"
        )


def _coding(values: list[str], shown: str) -> str | None:
    """The one content coding to undo (None: identity); anything else is refused."""
    codings = [c.strip().lower() for value in values for c in value.split(",")]
    codings = [c for c in codings if c and c != "identity"]
    if not codings:
        return None
    if len(codings) > 1:
        # Each layer multiplies what a few bytes inflate to ("gzip, gzip": KiB to GiB).
        raise KeyFetchError(f"{shown} sent stacked content codings {', '.join(codings)[:80]!r}")
    if codings[0] not in _CODINGS:
        raise KeyFetchError(f"{shown} sent content coding {codings[0][:40]!r}, not gzip or deflate")
    return codings[0]


def _decode_json(body: bytes, url: str) -> Any:
    try:
        return loads_strict(body)
    except (ValueError, RecursionError):
        raise KeyFetchError(f"{url} did not send valid JSON") from None


def _keyset_from(document: Any, url: str, settings: Issuer) -> KeySet:
    shown = _redact(url)
    try:
        keyset, problems = KeySet.from_jwks(
            document,
            allow_symmetric=False,
            source=shown,
            rsa_max_bits=settings.rsa_max_bits,
            rsa_max_exponent=settings.rsa_max_exponent,
        )
    except UnusableKey as exc:
        raise KeyFetchError(str(exc)) from None
    for problem in problems[:10]:  # bounded: a hostile document must not flood the logs
        logger.warning("jwt_middleware: ignoring a key from %s: %s", shown, problem)
    if len(problems) > 10:
        logger.warning("jwt_middleware: ... and %d more unusable keys", len(problems) - 10)
    if not keyset.keys:
        raise KeyFetchError(f"{url} holds no usable signing key")
    return keyset


def _jwks_uri_from(document: Any, url: str, issuer: str) -> str:
    if not isinstance(document, dict):
        raise KeyFetchError(f"{url} is not an OpenID configuration document")
    # OIDC Discovery §4.3: the issuer in the document must be exactly the one we trust, or a
    # document served elsewhere could point us at someone else's keys.
    if document.get("issuer") != issuer:
        raise KeyFetchError(
            f"{url} names issuer {str(document.get('issuer'))[:100]!r}, not {issuer!r}"
        )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise KeyFetchError(f"{url} has no jwks_uri")
    try:
        check_key_url(jwks_uri, "jwks_uri")
        httpx.URL(jwks_uri)  # e.g. control characters, bad IDNA: refuse here, not mid-fetch
    except (ValueError, httpx.InvalidURL) as exc:
        raise KeyFetchError(str(exc)) from None
    return jwks_uri


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


def _network_error(target: _Target, exc: Exception) -> KeyFetchError:
    return KeyFetchError(f"{target.shown} unreachable: {type(exc).__name__}")


@dataclass(frozen=True)
class _Limits:
    """What bounds and routes each GET of a fetch: every socket operation's timeout (httpcore's
    timeout extension), the body size, the trust store, and the proxy (``proxy``: the one
    configured; ``trust_env``: else the environment's)."""

    extensions: dict[str, Any]
    max_bytes: int
    ssl_context: ssl.SSLContext
    proxy: _Proxy | None = None
    trust_env: bool = True

    @classmethod
    def of(
        cls,
        timeout: float,
        max_bytes: int,
        *,
        ca_bundle: str | ssl.SSLContext | None = None,
        proxy: str | None = None,
        trust_env: bool = True,
    ) -> _Limits:
        phases = {"connect": timeout, "read": timeout, "write": timeout, "pool": timeout}
        if isinstance(ca_bundle, ssl.SSLContext):
            context = ca_bundle
        elif ca_bundle is not None:
            context = ssl.create_default_context(cafile=ca_bundle)
        else:
            # The trust store httpx would use (certifi, or SSL_CERT_FILE / SSL_CERT_DIR).
            context = httpx.create_ssl_context(trust_env=trust_env)
        chosen = None if proxy is None else _proxy(proxy, "jwks_proxy")
        return cls({"timeout": phases}, max_bytes, context, chosen, trust_env)

    @classmethod
    def for_issuer(cls, settings: Issuer) -> _Limits:
        return cls.of(
            settings.jwks_timeout,
            settings.jwks_max_bytes,
            ca_bundle=settings.jwks_ca_bundle,
            proxy=settings.jwks_proxy,
            trust_env=settings.jwks_trust_env,
        )

    def proxy_for(self, url: httpx.URL) -> _Proxy | None:
        """The proxy to reach ``url`` through, if any."""
        if self.proxy is not None:
            return self.proxy
        return _proxy_for(url) if self.trust_env else None

    def pool_options(self, proxy: _Proxy | None) -> dict[str, Any]:
        """Keywords for httpcore's connection pool, or for its proxy when there is one."""
        if proxy is None:
            return {"ssl_context": self.ssl_context}
        options = {
            "ssl_context": self.ssl_context,
            "proxy_url": proxy.url,
            "proxy_auth": proxy.auth,
        }
        if proxy.url.scheme == b"https":
            # The same trust store for the hop to the proxy (a private CA signs both, often);
            # httpcore refuses a context for a plain http proxy.
            options["proxy_ssl_context"] = self.ssl_context
        return options


# What a transport sends back to the flow for one request: the body it read, or the exception
# the request ended with (the flow turns it into the fetch's failure). For a store call: what
# the store returned, or the exception it raised.
_Answer = _Body | Exception
_Keys = tuple[KeySet, float | None, float | None]  # keys, max age, fetched at (None: just now)
_Outcome = _Keys | KeyFetchError


@dataclass(frozen=True)
class _StoreCall:
    """One call of the flow on the key store; the transport makes it (awaited, directly, or in
    a worker thread for a sync store on the event loop)."""

    method: str
    args: tuple[Any, ...]


@dataclass(frozen=True)
class _Pause:
    """Wait this long (real time), then carry on: polling the store for another's fetch."""

    seconds: float


_Step = _Target | _StoreCall | _Pause
_Flow = Generator[_Step, Any, _Outcome]


def _is_step(value: object) -> bool:
    return isinstance(value, (_Target, _StoreCall, _Pause))


def _request(target: _Target) -> Generator[_Step, Any, tuple[Any, float | None, bytes]]:
    """One GET, sans I/O: the document, its max age and its body, or the request's failure,
    raised."""
    answer = yield target
    if isinstance(answer, _NETWORK_ERRORS):
        raise _network_error(target, answer)
    if isinstance(answer, Exception):
        raise answer
    assert isinstance(answer, _Body)
    document, max_age = answer.result()
    return document, max_age, answer.data()


def _advance(flow: _Flow, answer: Any) -> Any:
    """Feed the flow ``answer`` (None: start it); its next step, or its outcome once done."""
    try:
        return flow.send(answer)
    except StopIteration as done:
        outcome: _Outcome = done.value
        return outcome


def _store_name(kind: str, url: str) -> str:
    # A digest, not the URL: key URLs may carry credentials, which must not become key names
    # that anyone listing the store sees. The whole URL, so two credentials stay two entries.
    return f"{kind}:{hashlib.sha256(url.encode()).hexdigest()[:40]}"


#: Polling the store for the fetch another process is making: first and longest wait.
_POLL_FIRST = 0.02
_POLL_MAX = 0.2
#: Longest wait for one key-store call; never more than half the time the fetch has left, so a
#: store that hangs (paused, or dripping its answer past its socket timeout) leaves the fetch
#: time to go to the key server itself: a store outage means fetching directly, never a 503.
_STORE_CALL_MAX = 1.0


def store_call_limit(left: float) -> float:
    """Seconds one key-store call may take when the fetch has ``left`` seconds."""
    return min(_STORE_CALL_MAX, left / 2)


def store_too_slow(limit: float) -> KeyStoreError:
    return KeyStoreError(f"the key store did not answer within {limit:.2g}s")


def late_release(step: _StoreCall, answer: Any) -> tuple[Any, ...] | None:
    """The release() arguments that undo a store call answered after the fetch gave up on it,
    if it needs undoing: a lock taken too late would hold every other process off until it
    expired, and nobody would be fetching."""
    if step.method == "acquire" and isinstance(answer, str):
        return (step.args[0], answer)
    return None


#: How far behind ours another host's clock may be when it stamps the document it fetched
#: while we wait. A host further behind only costs a fetch: we make our own after the wait.
_STORE_SKEW = 5.0


class _Shared:
    """The key store as one fetch sees it, each call a step of the flow. The first failure to
    reach the store ends its use for this fetch (each further call could cost its timeout
    again); an entry that is junk is only skipped (a fetch then overwrites it). Both are
    logged, neither fails the fetch."""

    def __init__(self, store: Any, max_bytes: int, lock_name: str) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.lock_name = lock_name
        self.down = False
        self.token: str | None = None

    def _call(self, method: str, *args: Any) -> Generator[_Step, Any, Any]:
        if self.down:
            return None
        answer = yield _StoreCall(method, args)
        if isinstance(answer, Exception):
            self._failed(method, answer)
            return None
        return answer

    def _failed(self, method: str, exc: Exception) -> None:
        # A store's own errors say what failed and are safe to log; anything else (a custom
        # store) by its type only, in case its message names a host or a password.
        why = str(exc) if isinstance(exc, KeyStoreError) else type(exc).__name__
        if isinstance(exc, CorruptEntry):
            logger.warning(
                "jwt_middleware: key store entry ignored (%s); fetching the keys instead",
                why,
                extra={"jwt_event": "key_store_failed"},
            )
            return
        self.down = True
        logger.warning(
            "jwt_middleware: key store %s() failed (%s); fetching the keys directly",
            method,
            why,
            extra={"jwt_event": "key_store_failed"},
        )

    def load(self, name: str) -> Generator[_Step, Any, StoredDocument | None]:
        entry = yield from self._call("load", name, self.max_bytes)
        if entry is None or isinstance(entry, StoredDocument):
            return entry
        self._failed("load", CorruptEntry(f"load() returned a {type(entry).__name__}"))
        return None

    def save(
        self, name: str, body: bytes, fetched_at: float, max_age: float | None, ttl: float
    ) -> Generator[_Step, Any, None]:
        yield from self._call("save", name, StoredDocument(body, fetched_at, max_age), ttl)

    def lock(self, ttl: float) -> Generator[_Step, Any, bool]:
        """True: fetch now (the lock is ours, or the store cannot lock); False: another process
        holds it."""
        token = yield from self._call("acquire", self.lock_name, ttl)
        self.token = token if isinstance(token, str) else None
        return self.token is not None or self.down

    def unlock(self) -> Generator[_Step, Any, None]:
        token, self.token = self.token, None
        if token is not None:
            yield from self._call("release", self.lock_name, token)


class _Remote:
    """What both transports share: settings, the policy, the jwks_uri once discovered, the key
    lookup the verifier calls, the fetch flow, and the recording of a fetch's outcome."""

    def __init__(self, settings: Issuer) -> None:
        self.settings = settings
        self.clock: Callable[[], float] = settings.clock
        self.policy = JWKSPolicy(
            max_age=settings.jwks_max_age,
            cooldown=settings.jwks_cooldown,
            max_stale=settings.jwks_max_stale,
        )
        self.jwks_uri: str | None = settings.jwks_url
        self.issuer = settings.discovery_issuer
        # Whole fetch, in real (monotonic) time: the injected clock is for tokens and cooldowns.
        self.total = settings.jwks_timeout * 2
        self.limits = _Limits.for_issuer(settings)
        self._document: Any = None
        self.store: Any = settings.key_store
        # When the document held was fetched (by us or another process), by the clock.
        self._fetched_at = float("-inf")
        # The jwks_uri came from the store: if it fails, discover it ourselves next time.
        self._uri_shared = False
        self._discover_directly = False

    # -- the lookup the verifier calls -----------------------------------------------------------

    def keyset_now(self, kid: str | None) -> KeySet | None:
        """The keys to look ``kid`` up in when no fetch must be waited for (a due refresh is
        started in the background); None: call ``keyset_for``. No I/O and never blocks: this is
        the usual case of every new token."""
        plan, now = self._plan(kid)
        if plan is Plan.FETCH or plan is Plan.UNAVAILABLE:
            return None
        return self.policy.usable_keyset(kid, now)

    def _plan(self, kid: str | None) -> tuple[Plan, float]:
        """The policy's plan for ``kid`` now, with the background refresh it may ask for begun."""
        now = self.clock()
        plan = self.policy.plan(kid, now)
        if plan is Plan.USE_AND_REFRESH:
            self._refresh_in_background()
        return plan, now

    def _refresh_in_background(self) -> None:
        raise NotImplementedError

    def _keys_after_fetch(self, kid: str | None, finished: bool) -> KeySet:
        """The keys once the fetch waited for is over (``finished`` False: not by its deadline)."""
        if not finished:
            raise self.policy.unavailable(self.clock(), _TOO_SLOW)
        return self.policy.usable_keyset(kid, self.clock())

    # -- one fetch, sans I/O -----------------------------------------------------------------

    def _flow(self, kid: str | None = None) -> _Flow:
        """One fetch, sans I/O: yields each step (a request, a store call, a pause), is sent
        back its answer, and returns the outcome. Both transports drive this (see
        :func:`_advance`). ``kid``: the unknown key id the fetch is for, if any."""
        try:
            if self.store is None:
                return (yield from self._steps())
            return (yield from self._shared_steps(kid))
        except Exception as exc:  # KeyFetchError, and anything a hostile document provokes
            return self._failed(exc)

    def _steps(self) -> Generator[_Step, Any, _Keys]:
        url = self.jwks_uri
        if url is None:
            url = yield from self._discover(None)
        target = _Target.of(url, _JWKS_TYPES, self.limits.proxy_for)
        document, max_age, _ = yield from _request(target)
        return self._keyset(document, url), max_age, None

    def _discover(self, shared: _Shared | None) -> Generator[_Step, Any, str]:
        assert self.issuer is not None
        url = discovery_url(self.issuer)
        discovery = _Target.of(url, _DISCOVERY_TYPES, self.limits.proxy_for)
        document, _, body = yield from _request(discovery)
        self.jwks_uri = _jwks_uri_from(document, url, self.issuer)
        self._uri_shared = self._discover_directly = False
        if shared is not None:
            ttl = self.policy.max_age + self.policy.max_stale
            yield from shared.save(self._discovery_name(), body, self.clock(), None, ttl)
        return self.jwks_uri

    def _discovery_name(self) -> str:
        assert self.issuer is not None
        return _store_name("discovery", discovery_url(self.issuer))

    # -- one fetch through the key store -----------------------------------------------------

    def _shared_steps(self, kid: str | None) -> Generator[_Step, Any, _Keys]:
        """The fetch with a key store: a document another process fetched recently enough is
        taken from the store; else one process at a time fetches and fills the store, while
        the others wait for it (bounded), then fetch themselves."""
        shared = _Shared(self.store, self.limits.max_bytes, self._lock_name())
        seen = self._fetched_at  # an entry newer than this is news
        if self.jwks_uri is None:
            yield from self._stored_uri(shared)
        if self.jwks_uri is not None:
            entry = yield from shared.load(_store_name("jwks", self.jwks_uri))
            if entry is not None:
                keys = self._stored_keys(entry, seen, kid)
                if keys is not None:
                    return keys
                seen = max(seen, entry.fetched_at)
        if not (yield from shared.lock(self.total)):
            keys = yield from self._wait_for_another(shared, seen)
            if keys is not None:
                return keys
        try:
            if self.jwks_uri is None:
                yield from self._discover(shared)
            url = self.jwks_uri
            assert url is not None
            target = _Target.of(url, _JWKS_TYPES, self.limits.proxy_for)
            document, max_age, body = yield from _request(target)
            keyset = self._keyset(document, url)
        except Exception:
            yield from shared.unlock()  # let the next one try now, not when the lock expires
            raise
        fetched_at = self.clock()
        ttl = self.policy.ttl(max_age) + self.policy.max_stale
        yield from shared.save(_store_name("jwks", url), body, fetched_at, max_age, ttl)
        yield from shared.unlock()
        return keyset, max_age, None

    def _lock_name(self) -> str:
        # One lock per key source (configured or discovered from the issuer), so discovery too
        # is made by one process at a time.
        if self.settings.jwks_url is not None:
            return _store_name("jwks", self.settings.jwks_url)
        return self._discovery_name()

    def _stored_uri(self, shared: _Shared) -> Generator[_Step, Any, None]:
        """The jwks_uri another process discovered, checked as a fetched discovery is."""
        if self._discover_directly:
            return
        entry = yield from shared.load(self._discovery_name())
        if entry is None or self.clock() - entry.fetched_at >= (
            self.policy.max_age + self.policy.max_stale
        ):
            return
        assert self.issuer is not None
        url = discovery_url(self.issuer)
        try:
            document = _decode_json(entry.body, _redact(url))
            self.jwks_uri = _jwks_uri_from(document, url, self.issuer)
        except KeyFetchError as exc:
            shared._failed("load", CorruptEntry(f"stored discovery document refused: {exc}"))
            return
        self._uri_shared = True

    def _stored_keys(self, entry: StoredDocument, seen: float, kid: str | None) -> _Keys | None:
        """The keys of a stored JWKS when it is fresh and newer than ours, and holds ``kid``
        (the key the fetch is for); parsed as a fetched one is."""
        now = self.clock()
        fetched_at = min(entry.fetched_at, now)  # a host whose clock runs ahead: from now
        if fetched_at <= seen or now >= fetched_at + self.policy.ttl(entry.max_age):
            return None
        keyset = self._stored_keyset(entry)
        if keyset is None or (kid is not None and kid not in keyset.by_kid):
            return None
        return keyset, entry.max_age, fetched_at

    def _stored_keyset(self, entry: StoredDocument) -> KeySet | None:
        url = self.jwks_uri
        assert url is not None
        try:
            return self._keyset(_decode_json(entry.body, _redact(url)), url)
        except KeyFetchError as exc:
            logger.warning(
                "jwt_middleware: key store JWKS refused (%s); fetching the keys instead",
                exc,
                extra={"jwt_event": "key_store_failed"},
            )
            return None

    def _wait_for_another(
        self, shared: _Shared, seen: float
    ) -> Generator[_Step, Any, _Keys | None]:
        """Another process holds the lock: poll the store for the document it fetches, for at
        most half the fetch's deadline (None: give up and fetch ourselves with the rest)."""
        give_up = time.monotonic() + self.total / 2
        # Only a document fetched after we asked counts: the lock is not signed, so whoever can
        # write the store could set it and put back an old signed entry (keys since retired).
        asked = self.clock() - _STORE_SKEW
        pause = _POLL_FIRST
        while time.monotonic() < give_up and not shared.down:
            yield _Pause(min(pause, max(0.0, give_up - time.monotonic())))
            pause = min(pause * 2, _POLL_MAX)
            if self.jwks_uri is None:
                yield from self._stored_uri(shared)
                if self.jwks_uri is None:
                    continue
            entry = yield from shared.load(_store_name("jwks", self.jwks_uri))
            if entry is None or entry.fetched_at <= seen or entry.fetched_at < asked:
                continue
            keyset = self._stored_keyset(entry)
            if keyset is not None:
                # Fetched after we asked: as good as our own fetch, whatever kid it holds.
                return keyset, entry.max_age, min(entry.fetched_at, self.clock())
            seen = entry.fetched_at
        return None

    def _keyset(self, document: Any, url: str) -> KeySet:
        # An unchanged document keeps the same KeySet object: no re-parsing of keys, and the
        # verified-token cache (bound to the KeySet) survives a routine refresh.
        held = self.policy.keyset
        if held is not None and document == self._document:
            return held
        keyset = _keyset_from(document, url, self.settings)
        self._document = document
        return keyset

    def _failed(self, exc: Exception) -> KeyFetchError:
        if self.issuer is not None and self.settings.jwks_url is None:
            # Discovered, not configured: look the jwks_uri up again next time, in case the
            # provider fixed or moved it (ourselves, if the store's was the one that failed).
            self.jwks_uri = None
            self._discover_directly = self._uri_shared
        if isinstance(exc, KeyFetchError):
            return exc
        logger.error("jwt_middleware: unexpected error while fetching keys", exc_info=exc)
        return KeyFetchError(f"key fetch failed: {type(exc).__name__}")

    # -- the outcome ---------------------------------------------------------------------------

    def _record(self, outcome: _Outcome) -> None:
        """Hand the outcome to the policy. Nothing else: the sync transport holds its lock."""
        if isinstance(outcome, KeyFetchError):
            self.policy.failed(str(outcome))
        else:
            keyset, max_age, fetched_at = outcome
            if fetched_at is None:
                fetched_at = self.clock()
            self._fetched_at = fetched_at
            self.policy.succeeded(keyset, fetched_at, max_age)

    def _report(self, outcome: _Outcome) -> None:
        """Log the outcome and call the user's ``events.key_fetch`` hook, once it is recorded
        and the waiters are released: neither a slow log handler nor a failing hook may stall
        the key cache."""
        ok = not isinstance(outcome, KeyFetchError)
        if isinstance(outcome, KeyFetchError):
            logger.warning(
                "jwt_middleware: JWKS fetch failed: %s",
                outcome,
                extra={"jwt_event": "key_fetch_failed"},
            )
        else:
            keyset, _, shared_at = outcome
            how = "fetched" if shared_at is None else "took from the key store"
            logger.info("jwt_middleware: %s %d keys: %s", how, len(keyset), keyset.kids[:20])
        events = self.settings.events
        if events is None:
            return
        try:
            events.key_fetch(ok=ok)
        except Exception:
            logger.exception("jwt_middleware: events.key_fetch() raised; ignored")


# -- the sync transport ------------------------------------------------------------------------


class _Budget:
    """The deadline of one fetch: every socket operation in it waits at most the time left."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline

    def clamp(self, timeout: float | None, error: type[Exception]) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise error(_TOO_SLOW)
        return left if timeout is None else min(timeout, left)

    @property
    def spent(self) -> bool:
        return time.monotonic() >= self.deadline


class _ClampedStream(httpcore.NetworkStream):
    """A connection whose every operation (TLS upgrade included) waits at most the time left."""

    def __init__(self, stream: httpcore.NetworkStream, budget: _Budget) -> None:
        self._stream = stream
        self._budget = budget

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._stream.read(max_bytes, self._budget.clamp(timeout, httpcore.ReadTimeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._stream.write(buffer, self._budget.clamp(timeout, httpcore.WriteTimeout))

    def close(self) -> None:
        self._stream.close()

    def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.NetworkStream:
        timeout = self._budget.clamp(timeout, httpcore.ConnectTimeout)
        return _ClampedStream(
            self._stream.start_tls(ssl_context, server_hostname, timeout), self._budget
        )

    def get_extra_info(self, info: str) -> Any:
        return self._stream.get_extra_info(info)


class _ClampedBackend(httpcore.NetworkBackend):
    """httpcore's socket backend with each operation's timeout cut to what the fetch has left.
    A per-operation timeout alone never ends a server that sends a byte a second: each read
    returns in time, and the headers (or body) never end."""

    def __init__(self, budget: _Budget) -> None:
        self._backend = httpcore.SyncBackend()
        self._budget = budget

    def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.NetworkStream:
        # Not socket.create_connection's own loop: it gives every address the whole timeout
        # (n unreachable addresses cost n timeouts). The name is resolved here, in the fetch's
        # own thread, with no bound of its own, so the budget is checked again before each
        # connect, which then gets only what is left.
        try:
            addresses = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(exc) from exc
        error: Exception = httpcore.ConnectError(f"{host[:100]!r} has no address")
        for *_, address in addresses:
            timeout_left = self._budget.clamp(timeout, httpcore.ConnectTimeout)
            try:
                stream = self._backend.connect_tcp(
                    str(address[0]), port, timeout_left, local_address, socket_options
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
                continue
            return _ClampedStream(stream, self._budget)
        raise error


def _exchange(target: _Target, limits: _Limits, budget: _Budget) -> _Body:
    """One GET on httpcore's sync pool, each socket operation clamped to ``budget``; raises
    what the request ends with (httpcore's network errors as they are)."""
    pool_class = httpcore.ConnectionPool if target.proxy is None else httpcore.HTTPProxy
    pool = pool_class(network_backend=_ClampedBackend(budget), **limits.pool_options(target.proxy))
    with (
        pool,
        pool.stream(
            "GET", target.url, headers=target.headers, extensions=limits.extensions
        ) as response,
    ):
        body = _Body(target, response.status, response.headers, limits.max_bytes)
        for chunk in response.iter_stream():
            body.feed(chunk)
    return body


def _answer(target: _Target, limits: _Limits, budget: _Budget) -> _Answer:
    try:
        return _exchange(target, limits, budget)
    except _NETWORK_ERRORS as exc:
        # Whatever operation the deadline cut short, the fetch as a whole was too slow.
        return KeyFetchError(_TOO_SLOW) if budget.spent else exc
    except Exception as exc:
        return exc


def fetch_jwks(url: str, *, timeout: float, max_bytes: int) -> Any:
    """GET the JWKS at ``url`` in this thread, with every limit of a key fetch (above): the
    parsed JSON document, not yet checked as a key set.

    Raises KeyFetchError, whose message names the URL without its secrets; for a network
    failure it is chained (``__cause__``) to httpcore's exception, whose cause says what failed.
    """
    target = _Target.of(url, _JWKS_TYPES)
    total = 2 * timeout
    budget = _Budget(time.monotonic() + total)
    try:
        body = _exchange(target, _Limits.of(timeout, max_bytes), budget)
    except _NETWORK_ERRORS as exc:
        if budget.spent:
            raise KeyFetchError(
                f"{target.shown} sent no complete answer within {total:g}s (the total limit)"
            ) from None
        raise _network_error(target, exc) from exc
    return body.result()[0]


#: Objects whose ``_forked()`` runs in every child right after a fork. One hook for all: a
#: callback per object can never be removed, and would pile up as resolved issuers come and go.
_FORK_RESETS: weakref.WeakSet[Any] = weakref.WeakSet()


def reset_after_fork(obj: Any) -> None:
    """Call ``obj._forked()`` in every child forked from now on, for as long as ``obj`` lives."""
    _FORK_RESETS.add(obj)


def _reset_all() -> None:
    for obj in list(_FORK_RESETS):
        obj._forked()


os.register_at_fork(after_in_child=_reset_all)


class SyncJWKS(_Remote):
    """Remote keys for the WSGI side (httpcore, a thread per fetch): thread-safe, single-flight."""

    def __init__(self, settings: Issuer) -> None:
        super().__init__(settings)
        if self.store is not None and is_async(self.store):
            raise ConfigurationError(
                f"key_store {type(self.store).__name__} is async and cannot run under WSGI; "
                "use RedisKeyStore (or MemoryKeyStore)"
            )
        self._pid = -1
        self._forked()
        # Also reset right at fork (not only on the next refresh): a child forked while a
        # refresh was in flight would otherwise never start another one.
        reset_after_fork(self)

    def _forked(self) -> None:
        # gunicorn --preload builds the app before forking workers: a child must not inherit a
        # lock or an "in flight" mark whose thread it lacks.
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._deadline = 0.0
        self._thread: threading.Thread | None = None
        self.policy.in_flight = False

    def keyset_for(self, kid: str | None) -> KeySet:
        """The keys to look ``kid`` up in, fetching first (or joining the fetch in flight) when
        the policy says so; raises KeysUnavailable."""
        plan, now = self._plan(kid)
        if plan is Plan.FETCH:
            return self._keys_after_fetch(kid, self.refresh(kid=kid))
        return self.policy.usable_keyset(kid, now)

    def _refresh_in_background(self) -> None:
        self.refresh(wait=False)

    def refresh(
        self, *, wait: bool = True, rate_limited: bool = True, kid: str | None = None
    ) -> bool:
        """Fetch now, or join the fetch in flight (``wait=False``: do not wait for it). Never
        raises: failures go to the policy. False: the fetch was still running at its deadline.
        ``kid``: the unknown key the fetch is for (a shared document without it is no answer)."""
        if os.getpid() != self._pid:
            self._forked()
        with self._lock:
            if self.policy.may_fetch(self.clock()):
                self._start(rate_limited, kid)
            if not wait:
                return True
            # The fetch has its own thread, so every waiter (the request that started it too)
            # gives up at its deadline, whatever it is stuck on (a resolver, a hook).
            left = max(0.0, self._deadline - time.monotonic())
            return self._done.wait_for(lambda: not self.policy.in_flight, timeout=left)

    def _start(self, rate_limited: bool, kid: str | None = None) -> None:
        self.policy.begin(self.clock(), rate_limited=rate_limited)
        self._deadline = time.monotonic() + self.total
        budget = _Budget(self._deadline)
        thread = threading.Thread(
            target=self._run, args=(budget, kid), name="jwks-refresh", daemon=True
        )
        try:
            thread.start()
        except RuntimeError:  # no thread to be had: fail this fetch, do not wedge the cache
            self.policy.failed("could not start a key fetch thread")
            return
        self._thread = thread

    def _run(self, budget: _Budget, kid: str | None) -> None:
        outcome: _Outcome = KeyFetchError("fetch aborted")
        try:
            flow = self._flow(kid)
            step = _advance(flow, None)
            while _is_step(step):
                step = _advance(flow, self._make(step, budget))
            outcome = step
        finally:
            with self._lock:
                try:
                    self._record(outcome)
                finally:
                    self._done.notify_all()
        self._report(outcome)

    def _make(self, step: _Step, budget: _Budget) -> Any:
        """The answer to one step of the flow, made in the fetch's thread."""
        if isinstance(step, _Target):
            return _answer(step, self.limits, budget)
        if isinstance(step, _Pause):
            time.sleep(max(0.0, min(step.seconds, budget.deadline - time.monotonic())))
            return None
        left = budget.deadline - time.monotonic()
        if left <= 0:
            return KeyStoreError(_TOO_SLOW)
        # In a thread of its own, waited for a bounded time: the store client's socket timeout
        # bounds each read, not the call (a store that drips its answer), and it may have none.
        limit = store_call_limit(left)
        answers: list[Any] = []
        handoff = threading.Lock()  # the answer goes to the fetch, or (too late) is undone
        abandoned: list[bool] = []
        store = self.store

        def call() -> None:
            try:
                answer = getattr(store, step.method)(*step.args)
            except Exception as exc:
                answer = exc
            with handoff:
                undo = late_release(step, answer) if abandoned else None
                answers.append(answer)
            if undo is not None:
                with contextlib.suppress(Exception):  # it expires anyway
                    store.release(*undo)

        worker = threading.Thread(target=call, name="jwks-key-store", daemon=True)
        try:
            worker.start()
        except RuntimeError as exc:  # no thread to be had
            return KeyStoreError(f"could not start a key store call ({exc})")
        worker.join(limit)
        with handoff:
            if answers:
                return answers[0]
            abandoned.append(True)
        return store_too_slow(limit)

    def close(self) -> None:
        """Wait (until its deadline at most) for a fetch in flight to finish, its logging and
        ``events`` hook included: each fetch opens and closes its own connections, so that is
        all there is to release, and nothing then reports after its owner has shut down."""
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(max(0.0, self._deadline - time.monotonic()))
