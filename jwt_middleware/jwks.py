"""The remote JWKS cache: one policy (sans-I/O), two transports (async for ASGI, sync for WSGI).

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
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Callable, Generator
from dataclasses import dataclass
from enum import Enum
from typing import Any

import httpx

from .errors import KeysUnavailable
from .jws import loads_strict
from .keys import KeyError_, KeySet
from .settings import Settings, check_key_url

__all__ = ["AsyncJWKS", "FetchError", "JWKSPolicy", "Plan", "SyncJWKS"]

logger = logging.getLogger("jwt_middleware")

_MAX_AGE = re.compile(r"(?:^|,)\s*max-age\s*=\s*\"?(\d{1,10})\"?\s*(?:,|$)", re.IGNORECASE)
_NO_CACHE = re.compile(r"(?:^|,)\s*(?:no-cache|no-store)\s*(?:,|$)", re.IGNORECASE)
_ACCEPT = "application/jwk-set+json, application/json"


_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]*@")


def _redact(text: str) -> str:
    """Drop ``user:password@`` from URLs: messages about key servers end up in logs."""
    return _USERINFO.sub(r"\1***@", text)


class FetchError(Exception):
    """The key server did not give us a usable document. The message is safe to log."""

    def __init__(self, message: str) -> None:
        super().__init__(_redact(message))


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

    def succeeded(self, keyset: KeySet, now: float, max_age: float | None) -> None:
        ttl = self.max_age if max_age is None else min(max(max_age, self.cooldown), self.max_age)
        self.keyset = keyset
        self.fresh_until = now + ttl
        self.stale_until = now + ttl + self.max_stale
        self.last_error = None
        self.in_flight = False

    def failed(self, error: str) -> None:
        self.last_error = error
        self.in_flight = False

    def unavailable(self, now: float) -> KeysUnavailable:
        wait = (
            self.cooldown if self.last_attempt is None else self.last_attempt + self.cooldown - now
        )
        return KeysUnavailable(self.last_error or "no keys fetched yet", retry_after=max(wait, 1.0))

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


def _check_response(response: httpx.Response, url: str, max_bytes: int) -> None:
    if response.status_code != 200:
        # Redirects are not followed: a key URL that moves is a configuration change, not
        # something an attacker who controls a redirect should be able to make for us.
        raise FetchError(f"{url} answered HTTP {response.status_code}")
    length = response.headers.get("content-length")
    if length is not None and (not length.isdigit() or int(length) > max_bytes):
        raise FetchError(f"{url} sent a body over {max_bytes} bytes")


def _decode_json(body: bytes, url: str) -> Any:
    try:
        return loads_strict(body)
    except (ValueError, RecursionError):
        raise FetchError(f"{url} did not send valid JSON") from None


def _keyset_from(document: Any, url: str) -> KeySet:
    try:
        keyset, problems = KeySet.from_jwks(document, allow_symmetric=False, source=url)
    except KeyError_ as exc:
        raise FetchError(str(exc)) from None
    for problem in problems[:10]:  # bounded: a hostile document must not flood the logs
        logger.warning("jwt_middleware: ignoring a key from %s: %s", _redact(url), problem)
    if len(problems) > 10:
        logger.warning("jwt_middleware: ... and %d more unusable keys", len(problems) - 10)
    if not keyset.keys:
        raise FetchError(f"{url} holds no usable signing key")
    return keyset


def _jwks_uri_from(document: Any, url: str, issuer: str) -> str:
    if not isinstance(document, dict):
        raise FetchError(f"{url} is not an OpenID configuration document")
    # OIDC Discovery §4.3: the issuer in the document must be exactly the one we trust, or a
    # document served elsewhere could point us at someone else's keys.
    if document.get("issuer") != issuer:
        raise FetchError(
            f"{url} names issuer {str(document.get('issuer'))[:100]!r}, not {issuer!r}"
        )
    jwks_uri = document.get("jwks_uri")
    if not isinstance(jwks_uri, str):
        raise FetchError(f"{url} has no jwks_uri")
    try:
        check_key_url(jwks_uri, "jwks_uri")
        httpx.URL(jwks_uri)  # e.g. control characters, bad IDNA: refuse here, not mid-fetch
    except (ValueError, httpx.InvalidURL) as exc:
        raise FetchError(str(exc)) from None
    return jwks_uri


def discovery_url(issuer: str) -> str:
    return issuer.rstrip("/") + "/.well-known/openid-configuration"


class _Remote:
    """What both transports share: settings, the policy, the jwks_uri once discovered."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.clock: Callable[[], float] = settings.clock
        self.policy = JWKSPolicy(
            max_age=settings.jwks_max_age,
            cooldown=settings.jwks_cooldown,
            max_stale=settings.jwks_max_stale,
        )
        self.jwks_uri: str | None = settings.jwks_url
        self.issuer = settings.discovery_issuer
        self.timeout = httpx.Timeout(settings.jwks_timeout)
        self.max_bytes = settings.jwks_max_bytes
        self._document: Any = None

    def _keyset(self, document: Any, url: str) -> KeySet:
        # An unchanged document keeps the same KeySet object: no re-parsing of keys, and the
        # verified-token cache (bound to the KeySet) survives a routine refresh.
        held = self.policy.keyset
        if held is not None and document == self._document:
            return held
        keyset = _keyset_from(document, url)
        self._document = document
        return keyset

    def _record(self, result: tuple[KeySet, float | None] | FetchError) -> None:
        now = self.clock()
        events = self.settings.events
        if events is not None:
            events.key_fetch(ok=not isinstance(result, FetchError))
        if isinstance(result, FetchError):
            logger.warning(
                "jwt_middleware: JWKS fetch failed: %s",
                result,
                extra={"jwt_event": "key_fetch_failed"},
            )
            self.policy.failed(str(result))
        else:
            keyset, max_age = result
            logger.info("jwt_middleware: fetched %d keys: %s", len(keyset), keyset.kids[:20])
            self.policy.succeeded(keyset, now, max_age)

    def _failed(self, exc: Exception) -> FetchError:
        if self.issuer is not None and self.settings.jwks_url is None:
            # Discovered, not configured: look the jwks_uri up again next time, in case the
            # provider fixed or moved it.
            self.jwks_uri = None
        if isinstance(exc, FetchError):
            return exc
        logger.error("jwt_middleware: unexpected error while fetching keys", exc_info=exc)
        return FetchError(f"key fetch failed: {type(exc).__name__}")

    def _steps(self) -> Generator[str, tuple[Any, float | None], tuple[KeySet, float | None]]:
        """One fetch, sans I/O: yields each URL to GET and is sent back ``(JSON, max_age)``;
        returns the key set and its max age. Both transports drive this same sequence."""
        url = self.jwks_uri
        if url is None:
            assert self.issuer is not None
            url = discovery_url(self.issuer)
            document, _ = yield url
            url = self.jwks_uri = _jwks_uri_from(document, url, self.issuer)
        document, max_age = yield url
        return self._keyset(document, url), max_age


def _after_fork(ref: weakref.ReferenceType[SyncJWKS]) -> None:
    remote = ref()
    if remote is not None:
        remote._forked()


class AsyncJWKS(_Remote):
    """Remote keys for the ASGI side: ``httpx.AsyncClient``, never blocking the event loop."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._flight: asyncio.Future[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    def keyset_now(self, kid: str | None) -> KeySet | None:
        """Keys to look ``kid`` up in when no fetch needs waiting for (a refresh may start in
        the background); None: await :meth:`keyset_for`. Synchronous, because it is the usual
        case of every new token and an await costs more than the lookup."""
        policy = self.policy
        now = self.clock()
        plan = policy.plan(kid, now)
        if plan is Plan.USE:
            return policy.usable_keyset(kid, now)
        if plan is Plan.USE_AND_REFRESH:
            self._start()
            return policy.usable_keyset(kid, now)
        return None

    async def keyset_for(self, kid: str | None) -> KeySet:
        """Keys to look ``kid`` up in, fetching first when the policy says so."""
        keyset = self.keyset_now(kid)
        if keyset is not None:
            return keyset
        if self.policy.plan(kid, self.clock()) is Plan.FETCH:
            await self.refresh()
        return self.policy.usable_keyset(kid, self.clock())

    async def refresh(self, *, rate_limited: bool = True) -> None:
        """Fetch now, or join the fetch in flight. Never raises: failures go to the policy."""
        if self._flight is None:
            if not self.policy.may_fetch(self.clock()):
                return
            self._start(rate_limited=rate_limited)
        assert self._flight is not None
        # The fetch runs in its own task and the waiters are shielded from it: a client that
        # disconnects cancels its own wait, never the fetch everyone else is waiting for.
        await asyncio.shield(self._flight)

    def _start(self, *, rate_limited: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self.policy.begin(self.clock(), rate_limited=rate_limited)
        flight: asyncio.Future[None] = loop.create_future()
        self._flight = flight
        task = loop.create_task(self._run(flight))
        self._tasks.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _run(self, flight: asyncio.Future[None]) -> None:
        result: tuple[KeySet, float | None] | FetchError = FetchError("fetch cancelled")
        try:
            result = await asyncio.wait_for(self._fetch(), timeout=self.settings.jwks_timeout * 2)
        except asyncio.TimeoutError:
            result = FetchError("key server too slow (total time limit)")
        finally:
            self._record(result)
            self._flight = None
            if not flight.done():
                flight.set_result(None)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            # A client's pooled connections belong to the loop that opened them.
            self._client = httpx.AsyncClient(timeout=self.timeout, follow_redirects=False)
            self._client_loop = loop
        return self._client

    async def _fetch(self) -> tuple[KeySet, float | None] | FetchError:
        steps = self._steps()
        try:
            url = next(steps)
            while True:
                url = steps.send(await self._get(url))
        except StopIteration as done:
            result: tuple[KeySet, float | None] = done.value
            return result
        except Exception as exc:  # FetchError, and anything a hostile document provokes
            return self._failed(exc)

    async def _get(self, url: str) -> tuple[Any, float | None]:
        try:
            async with self._http().stream("GET", url, headers={"accept": _ACCEPT}) as response:
                _check_response(response, url, self.max_bytes)
                chunks: list[bytes] = []
                size = 0
                async for chunk in response.aiter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchError(f"{url} sent a body over {self.max_bytes} bytes")
                    chunks.append(chunk)
                body = b"".join(chunks)
                max_age = _parse_max_age(response.headers.get("cache-control"))
        except httpx.HTTPError as exc:
            raise FetchError(f"{url} unreachable: {type(exc).__name__}") from None
        return _decode_json(body, url), max_age


class SyncJWKS(_Remote):
    """Remote keys for the WSGI side (``httpx.Client``): thread-safe, single-flight."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self._pid = -1
        self._forked()
        # Also reset right at fork (not only on the next refresh): a child forked while a
        # refresh was in flight would otherwise never start another one.
        ref = weakref.ref(self)
        os.register_at_fork(after_in_child=lambda: _after_fork(ref))

    def _forked(self) -> None:
        # gunicorn --preload builds the app before forking workers: a child must not share the
        # parent's sockets, nor inherit a lock or an "in flight" mark whose thread it lacks.
        self._pid = os.getpid()
        self._client = httpx.Client(timeout=self.timeout, follow_redirects=False)
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self.policy.in_flight = False

    def keyset_for(self, kid: str | None) -> KeySet:
        policy = self.policy
        now = self.clock()
        plan = policy.plan(kid, now)
        if plan is Plan.USE:
            return policy.usable_keyset(kid, now)
        if plan is Plan.USE_AND_REFRESH:
            self.refresh(wait=False)
            return policy.usable_keyset(kid, now)
        if plan is Plan.FETCH:
            self.refresh()
        return policy.usable_keyset(kid, self.clock())

    def refresh(self, *, wait: bool = True, rate_limited: bool = True) -> None:
        """Fetch now, or join the fetch in flight (``wait=False``: start it in the background)."""
        if os.getpid() != self._pid:
            self._forked()
        with self._lock:
            starting = not self.policy.in_flight and self.policy.may_fetch(self.clock())
            if starting:
                self.policy.begin(self.clock(), rate_limited=rate_limited)
            elif wait:
                while self.policy.in_flight:
                    self._done.wait()
                return
        if not starting:
            return
        if wait:
            self._run()
        else:
            threading.Thread(target=self._run, name="jwks-refresh", daemon=True).start()

    def _run(self) -> None:
        result: tuple[KeySet, float | None] | FetchError = FetchError("fetch aborted")
        try:
            result = self._fetch()
        finally:
            with self._lock:
                self._record(result)
                self._done.notify_all()

    def close(self) -> None:
        self._client.close()

    def _fetch(self) -> tuple[KeySet, float | None] | FetchError:
        steps = self._steps()
        try:
            url = next(steps)
            while True:
                url = steps.send(self._get(url))
        except StopIteration as done:
            result: tuple[KeySet, float | None] = done.value
            return result
        except Exception as exc:  # FetchError, and anything a hostile document provokes
            return self._failed(exc)

    def _get(self, url: str) -> tuple[Any, float | None]:
        deadline = time.monotonic() + self.settings.jwks_timeout * 2
        try:
            with self._client.stream("GET", url, headers={"accept": _ACCEPT}) as response:
                _check_response(response, url, self.max_bytes)
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise FetchError(f"{url} sent a body over {self.max_bytes} bytes")
                    if time.monotonic() > deadline:
                        # A server dripping bytes never trips the per-read timeout.
                        raise FetchError("key server too slow (total time limit)")
                    chunks.append(chunk)
                body = b"".join(chunks)
                max_age = _parse_max_age(response.headers.get("cache-control"))
        except httpx.HTTPError as exc:
            raise FetchError(f"{url} unreachable: {type(exc).__name__}") from None
        return _decode_json(body, url), max_age
