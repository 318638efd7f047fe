"""RFC 7662 introspection clients: one sans-I/O core (request, answer, caches, logs) under a
sync transport (WSGI side) and an async one (ASGI side), both httpx.

What each call promises: the members of an ACTIVE answer (``active`` is JSON ``true``, nothing
else), as ONE shared read-only object (``_jws.FrozenDict``, strict JSON: no duplicate names, no
NaN), the very one cached and handed to every later caller: it becomes ``VerifiedToken.claims``;
:class:`InvalidToken` ``token_inactive`` for any other answer; :class:`IntrospectionUnavailable`
for every way the endpoint can fail to answer. Nothing else is raised.

Caches are keyed by ``token_digest`` (no raw token is kept), and concurrent calls for one
uncached token share ONE request (single-flight). Outages are never cached.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote_plus, urlencode

import httpcore
import httpx
from cachetools import TLRUCache, TTLCache

from . import _flow  # the module: _flow may import this one
from ._errors import IntrospectionUnavailable, InvalidToken, Reason, redact
from ._jwks import (
    _NETWORK_ERRORS,
    _Budget,
    _ClampedBackend,
    _Limits,
    _wire_url,
    reset_after_fork,
)
from ._jws import loads_strict
from .introspection import Introspection

__all__ = ["AsyncIntrospector", "SyncIntrospector"]

logger = logging.getLogger("jwt_middleware")

#: An endpoint's own Retry-After is believed up to this many seconds.
_MAX_RETRY_AFTER = 60.0
#: Least seconds between two log lines about the same kind of trouble: an outage under load
#: must not write one line per request.
_WARN_EVERY = 10.0
_ERROR_EVERY = 60.0
_INACTIVE = "the introspection endpoint says the token is not active"
#: exp values past this (year 5138) are not dates; as for a JWT's claims.
_MAX_EXP = 10**11
#: The sync client's connection pool, as httpx.Client's defaults.
_MAX_CONNECTIONS = 100
_MAX_KEEPALIVE = 20
_KEEPALIVE_EXPIRY = 5.0


class _Throttle:
    """Lets one log line per kind through per interval (monotonic time)."""

    def __init__(self) -> None:
        self._last: dict[str, float] = {}
        self._lock = threading.Lock()

    def allows(self, kind: str, every: float) -> bool:
        now = time.monotonic()
        with self._lock:
            last = self._last.get(kind)
            if last is not None and now - last < every:
                return False
            self._last[kind] = now
            return True


@dataclass(frozen=True)
class _Entry:
    until: float  # clock time the answer stops being believed
    claims: dict[str, Any]


class _Core:
    """Everything but the I/O: the request to send, what an answer means, the caches."""

    def __init__(self, config: Introspection, clock: Callable[[], float]) -> None:
        if not isinstance(config, Introspection):
            raise TypeError("config must be an Introspection(...)")
        self.config = config
        self.clock = clock
        self.shown = redact(config.url)
        self._lock = threading.Lock()  # cachetools caches are not thread-safe
        self._active: TLRUCache[bytes, _Entry] | None = None
        if config.cache_size:
            self._active = TLRUCache(
                config.cache_size, ttu=lambda _k, entry, _now: entry.until, timer=clock
            )
        self._inactive: TTLCache[bytes, bool] | None = None
        if config.negative_cache_size:
            self._inactive = TTLCache(
                config.negative_cache_size, ttl=config.negative_ttl, timer=clock
            )
        self.headers = {
            "accept": "application/json",
            "accept-encoding": "identity",
            "content-type": "application/x-www-form-urlencoded",
        }
        self._form: list[tuple[str, str]] = []
        if config.token_type_hint is not None:
            self._form.append(("token_type_hint", config.token_type_hint))
        if config.auth == "client_secret_basic":
            # RFC 6749 §2.3.1: each part form-encoded, then joined and base64-encoded.
            pair = f"{quote_plus(config.client_id)}:{quote_plus(config.client_secret)}"
            self.headers["authorization"] = "Basic " + base64.b64encode(pair.encode()).decode()
        else:
            self._form += [("client_id", config.client_id), ("client_secret", config.client_secret)]
        self._throttle = _Throttle()

    def forked(self) -> None:
        """New locks in a forked child (the caches are kept: they hold no sockets)."""
        self._lock = threading.Lock()
        self._throttle = _Throttle()

    # -- caches --------------------------------------------------------------------------------

    def cached(self, digest: bytes) -> dict[str, Any] | None:
        """The remembered active answer, or None; raises InvalidToken for a remembered inactive
        one."""
        with self._lock:
            entry = self._active.get(digest) if self._active is not None else None
            inactive = entry is None and self._inactive is not None and digest in self._inactive
        if entry is not None:
            return entry.claims
        if inactive:
            raise InvalidToken(Reason.TOKEN_INACTIVE, _INACTIVE + " (cached)")
        return None

    # -- the exchange --------------------------------------------------------------------------

    def body(self, token: str) -> bytes:
        return urlencode([("token", token), *self._form]).encode("ascii")

    def check_head(self, status: int, headers: httpx.Headers) -> None:
        """Refuse an answer by its status line and headers, before any body is read."""
        if status == 200:
            encoding = headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise self.outage(
                    f"answered with Content-Encoding {encoding[:30]!r} (refused)", kind="coding"
                )
            media = headers.get("content-type", "").split(";", 1)[0].strip().lower()
            if media != "application/json":
                raise self.outage(
                    f"answered with Content-Type {media[:60]!r}, not JSON", kind="type"
                )
            return
        if status in (401, 403):
            if self._throttle.allows("credentials", _ERROR_EVERY):
                logger.error(
                    "jwt_middleware: the introspection endpoint %s refused our client "
                    "credentials (%d): check client_id and client_secret",
                    self.shown,
                    status,
                )
            raise IntrospectionUnavailable(
                f"the introspection endpoint refused our client credentials ({status})",
                retry_after=self.config.retry_after,
            )
        if 300 <= status < 400:
            raise self.outage(
                f"answered with a redirect ({status}), which is never followed", kind="redirect"
            )
        raise self.outage(f"answered {status}", kind="status", retry_after=_retry_after(headers))

    def settle(self, digest: bytes, body: bytes) -> dict[str, Any]:
        """What a 200 answer's body means: the active members (cached), or InvalidToken."""
        try:
            answer = loads_strict(body, frozen=True)
        except (ValueError, RecursionError):
            raise self.outage("answered with a body that is not JSON") from None
        if not isinstance(answer, dict):
            raise self.outage("answered with JSON that is not an object")
        if answer.get("active") is not True:
            with self._lock:
                if self._inactive is not None:
                    self._inactive[digest] = True
            raise InvalidToken(Reason.TOKEN_INACTIVE, _INACTIVE)
        now = self.clock()
        until = now + self.config.cache_ttl
        exp = answer.get("exp")
        # The range first: math.isfinite(10**400) raises OverflowError. An exp out of range
        # bounds nothing here; the claim checks refuse it.
        if isinstance(exp, int | float) and not isinstance(exp, bool) and 0 <= exp <= _MAX_EXP:
            until = min(until, float(exp))
        # An answer already past its exp is handed on uncached: the claim checks refuse it.
        if until > now and self._active is not None:
            with self._lock:
                self._active[digest] = _Entry(until, answer)
        return answer

    def outage(
        self, problem: str, *, kind: str | None = None, retry_after: float | None = None
    ) -> IntrospectionUnavailable:
        """The 503 for an endpoint that gave no usable answer, logged (throttled per ``kind``)
        without the token, the secret or URL credentials. ``kind`` must be given, fixed, when
        ``problem`` holds text the endpoint chose: each distinct kind gets its own line."""
        if kind is None:
            kind = problem.split(" (")[0][:40]
        if self._throttle.allows(kind, _WARN_EVERY):
            logger.warning("jwt_middleware: introspection endpoint %s %s", self.shown, problem)
        wait = self.config.retry_after if retry_after is None else retry_after
        return IntrospectionUnavailable(f"the introspection endpoint {problem}", retry_after=wait)

    def network_error(self, exc: Exception) -> IntrospectionUnavailable:
        if isinstance(exc, httpx.TimeoutException | httpcore.TimeoutException):
            return self.outage(f"timed out ({type(exc).__name__})")
        return self.outage(f"unreachable ({type(exc).__name__})")

    def client_options(self) -> dict[str, Any]:
        config = self.config
        return {
            "verify": config.ssl_context(),
            "trust_env": config.trust_env,
            "follow_redirects": False,
            "timeout": httpx.Timeout(min(config.timeout, config.deadline)),
        }


def _retry_after(headers: httpx.Headers) -> float | None:
    """The endpoint's ``Retry-After`` in seconds (the delta form only), bounded."""
    value = headers.get("retry-after", "").strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 6:  # "²".isdigit() holds
        return None
    return min(max(1.0, float(value)), _MAX_RETRY_AFTER)


def _copy(error: InvalidToken | IntrospectionUnavailable) -> Exception:
    """A fresh exception like ``error``: one shared by several waiters would collect each
    one's traceback."""
    if isinstance(error, IntrospectionUnavailable):
        return IntrospectionUnavailable(error.detail, retry_after=error.retry_after)
    return InvalidToken(error.reason, error.detail)


class _Read:
    """A body read up to max_bytes and the deadline: an outage past either."""

    def __init__(self, core: _Core, deadline: float) -> None:
        self.core = core
        self.deadline = deadline
        self.chunks: list[bytes] = []
        self.size = 0

    def feed(self, chunk: bytes) -> None:
        self.size += len(chunk)
        if self.size > self.core.config.max_bytes:
            raise self.core.outage(f"answered more than {self.core.config.max_bytes} bytes")
        if time.monotonic() > self.deadline:
            raise self.core.outage("took longer than the deadline")
        self.chunks.append(chunk)

    def body(self) -> bytes:
        return b"".join(self.chunks)


class _Flight:
    """One request in progress, that other threads asking about the same token wait for."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.claims: dict[str, Any] | None = None
        self.error: InvalidToken | IntrospectionUnavailable | None = None


class _ThreadBudget(_Budget):
    """One deadline per calling thread: the sync pool is shared by every request thread, and a
    pooled connection reused by another thread is clamped to that thread's deadline."""

    def __init__(self) -> None:
        self._local = threading.local()
        super().__init__(0.0)

    @property
    def deadline(self) -> float:
        # Unset means spent: only a request that set its deadline may touch a socket.
        deadline: float = getattr(self._local, "deadline", 0.0)
        return deadline

    @deadline.setter
    def deadline(self, value: float) -> None:
        self._local.deadline = value


class SyncIntrospector:
    """Introspection for the WSGI side, thread-safe, on one httpcore connection pool.

    Not ``httpx.Client``: its timeouts are per socket operation, so a peer that drips the status
    line and headers a byte at a time (each byte inside ``timeout``) would hold a request thread
    far past ``deadline``. Every socket operation here waits at most what the request has left
    (the key fetches' clamped backend), and the environment's proxy is chosen as httpx would."""

    def __init__(self, config: Introspection, clock: Callable[[], float] = time.time) -> None:
        self._core = _Core(config, clock)
        url = httpx.URL(config.url)
        self._limits = _Limits.of(
            min(config.timeout, config.deadline),
            config.max_bytes,
            ca_bundle=config.ca_bundle,
            trust_env=config.trust_env,
        )
        self._proxy = self._limits.proxy_for(url)
        self._url = _wire_url(url, url.raw_path)
        self._headers = [(b"host", url.netloc), (b"user-agent", b"jwt-middleware")] + [
            (name.encode(), value.encode()) for name, value in self._core.headers.items()
        ]
        self._budget = _ThreadBudget()
        self._pool = self._new_pool()
        self._flights: dict[bytes, _Flight] = {}
        self._lock = threading.Lock()
        reset_after_fork(self)

    def _new_pool(self) -> httpcore.ConnectionPool:
        pool_class = httpcore.ConnectionPool if self._proxy is None else httpcore.HTTPProxy
        return pool_class(
            network_backend=_ClampedBackend(self._budget),
            # httpx.Client's limits: httpcore's own default (10) would make the 11th request
            # thread wait for a connection, and time out, behind ten slow answers.
            max_connections=_MAX_CONNECTIONS,
            max_keepalive_connections=_MAX_KEEPALIVE,
            keepalive_expiry=_KEEPALIVE_EXPIRY,
            **self._limits.pool_options(self._proxy),
        )

    def _forked(self) -> None:
        # A child must not share its parent's sockets, wait on a parent thread's flight, or
        # inherit a lock some parent thread held at the fork (nothing would release it).
        self._pool = self._new_pool()
        self._flights = {}
        self._lock = threading.Lock()
        self._core.forked()

    def introspect(self, token: str) -> dict[str, Any]:
        """The active token's members (read-only, shared); raises InvalidToken (token_inactive) or
        IntrospectionUnavailable."""
        digest = _flow.token_digest(token.encode())
        claims = self._core.cached(digest)
        if claims is not None:
            return claims
        with self._lock:
            flight = self._flights.get(digest)
            leader = flight is None
            if flight is None:
                flight = self._flights[digest] = _Flight()
        if not leader:
            if not flight.done.wait(self._core.config.deadline):
                raise self._core.outage("took longer than the deadline (waiting)")
            if flight.error is not None:
                raise _copy(flight.error)
            if flight.claims is None:  # the leader met something it does not know (a bug)
                raise self._core.outage("failed (the request waited for ended in error)")
            return flight.claims
        try:
            flight.claims = self._ask(token, digest)
            return flight.claims
        except (InvalidToken, IntrospectionUnavailable) as error:
            flight.error = error
            raise
        finally:
            # The answer is in the cache before the flight ends, so a later call finds it.
            with self._lock:
                self._flights.pop(digest, None)
            flight.done.set()

    def _ask(self, token: str, digest: bytes) -> dict[str, Any]:
        core = self._core
        deadline = time.monotonic() + core.config.deadline
        self._budget.deadline = deadline
        read = _Read(core, deadline)
        body = core.body(token)
        headers = [*self._headers, (b"content-length", str(len(body)).encode())]
        try:
            with self._pool.stream(
                "POST", self._url, headers=headers, content=body, extensions=self._limits.extensions
            ) as response:
                core.check_head(response.status, httpx.Headers(response.headers))
                for chunk in response.iter_stream():
                    read.feed(chunk)
        except (InvalidToken, IntrospectionUnavailable):
            raise
        except (*_NETWORK_ERRORS, OSError, ValueError) as exc:
            if self._budget.spent:
                raise core.outage("took longer than the deadline") from None
            raise core.network_error(exc) from None
        return core.settle(digest, read.body())

    def close(self) -> None:
        self._pool.close()


class AsyncIntrospector:
    """Introspection for the ASGI side: a reused ``httpx.AsyncClient`` per event loop; calls
    for one token share one request, run in a task of its own that a cancelled caller does not
    cancel."""

    def __init__(self, config: Introspection, clock: Callable[[], float] = time.time) -> None:
        self._core = _Core(config, clock)
        self._client: httpx.AsyncClient | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._flights: dict[bytes, asyncio.Task[dict[str, Any]]] = {}

    async def introspect(self, token: str) -> dict[str, Any]:
        """The active token's members (read-only, shared); raises InvalidToken (token_inactive) or
        IntrospectionUnavailable."""
        digest = _flow.token_digest(token.encode())
        claims = self._core.cached(digest)
        if claims is not None:
            return claims
        task = self._flights.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._ask(token, digest))
            self._flights[digest] = task
            task.add_done_callback(lambda done: self._landed(digest, done))
        try:
            claims = await asyncio.shield(task)
        except (InvalidToken, IntrospectionUnavailable) as error:
            raise _copy(error) from None
        return claims

    def _landed(self, digest: bytes, task: asyncio.Task[dict[str, Any]]) -> None:
        if self._flights.get(digest) is task:
            del self._flights[digest]
        if not task.cancelled():
            task.exception()  # retrieved: no "never retrieved" noise when every waiter left

    def _http(self) -> httpx.AsyncClient:
        # A client's connections belong to the loop that opened them.
        loop = asyncio.get_running_loop()
        if self._client is None or self._loop is not loop:
            self._client = httpx.AsyncClient(**self._core.client_options())
            self._loop = loop
        return self._client

    async def _ask(self, token: str, digest: bytes) -> dict[str, Any]:
        core = self._core
        read = _Read(core, time.monotonic() + core.config.deadline)
        try:
            body = await asyncio.wait_for(self._exchange(token, read), core.config.deadline)
        except asyncio.TimeoutError:
            raise core.outage("took longer than the deadline") from None
        return core.settle(digest, body)

    async def _exchange(self, token: str, read: _Read) -> bytes:
        core = self._core
        try:
            async with self._http().stream(
                "POST", core.config.url, content=core.body(token), headers=core.headers
            ) as response:
                core.check_head(response.status_code, response.headers)
                async for chunk in response.aiter_raw():
                    read.feed(chunk)
        except (InvalidToken, IntrospectionUnavailable):
            raise
        except (httpx.HTTPError, httpx.StreamError, OSError, ValueError) as exc:
            raise core.network_error(exc) from None
        return read.body()

    async def aclose(self) -> None:
        tasks = list(self._flights.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()
