"""A key cache shared by many workers and hosts: the fetched JWKS and discovery documents, each
with the time it was fetched, kept in a store every key cache of a cluster reads before fetching.

Set ``Settings(key_store=...)``. Before a fetch, the key cache reads the store: a document
another process fetched within its freshness is used as if fetched then (no request), and a
process that starts finds the keys there. Otherwise one process at a time fetches (a lock in
the store, bounded by the fetch's deadline), and the others wait, bounded, for it to fill the
store. The cache's policy (cooldown, stale-if-error, single-flight, 503) does not change.

Stores: :class:`MemoryKeyStore` (one process: several middlewares or issuers, and tests),
:class:`RedisKeyStore` (sync, for WSGI) and :class:`AsyncRedisKeyStore` (for ASGI); any object
with the four methods of :class:`KeyStore` / :class:`AsyncKeyStore` works. A sync store given to
the ASGI side runs in a worker thread, so it never blocks the event loop.

Whoever can write the store can hand the cache keys. Documents read back go through the same
parsing and limits as fetched ones (size, key rules, the discovery issuer check), and
``RedisKeyStore(secret=...)`` signs each entry (HMAC-SHA256, bound to the entry's name), so
write access to Redis alone cannot inject a key. A store that fails (timeout, refused, an entry
that is junk or fails its HMAC) is logged and the keys are fetched directly: never a 5xx by
itself.
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import math
import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from ._errors import ConfigurationError, JWTMiddlewareError
from ._redis import DEFAULT_PREFIX, RedisClientStore, failures_as

__all__ = [
    "AsyncKeyStore",
    "AsyncRedisKeyStore",
    "CorruptEntry",
    "KeyStore",
    "KeyStoreError",
    "MemoryKeyStore",
    "RedisKeyStore",
    "StoredDocument",
    "check_key_store",
]

_METHODS = ("load", "save", "acquire", "release")
#: Room for the envelope around a document (magic, HMAC, times) on top of ``jwks_max_bytes``.
OVERHEAD = 512
_MAGIC = b"jwtm-keys/1"
_MIN_SECRET = 16


class KeyStoreError(JWTMiddlewareError):
    """The key store could not answer (network, timeout, ...); keys are then fetched directly."""


class CorruptEntry(KeyStoreError):
    """An entry in the key store is not one this library wrote (junk, too big, bad HMAC)."""


@dataclass(frozen=True)
class StoredDocument:
    """One document as the key cache shares it: the body as fetched (parsed again, with every
    limit, whenever it is read back), when it was fetched (the verifier's clock, seconds since
    the epoch) and the ``max-age`` the key server gave (None: none)."""

    body: bytes
    fetched_at: float
    max_age: float | None = None


@runtime_checkable
class KeyStore(Protocol):
    def load(self, name: str, max_bytes: int) -> StoredDocument | None:
        """The document stored under ``name`` (None: none); CorruptEntry for junk or one whose
        body is over ``max_bytes``, KeyStoreError when the store cannot answer."""
        ...

    def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        """Store ``document`` under ``name``, forgotten after ``ttl`` seconds."""
        ...

    def acquire(self, name: str, ttl: float) -> str | None:
        """Take the lock ``name`` for ``ttl`` seconds unless it is held: its token, or None."""
        ...

    def release(self, name: str, token: str) -> None:
        """Release the lock ``name`` if ``token`` still holds it."""
        ...


@runtime_checkable
class AsyncKeyStore(Protocol):
    async def load(self, name: str, max_bytes: int) -> StoredDocument | None: ...
    async def save(self, name: str, document: StoredDocument, ttl: float) -> None: ...
    async def acquire(self, name: str, ttl: float) -> str | None: ...
    async def release(self, name: str, token: str) -> None: ...


def is_async(store: Any) -> bool:
    """True for a store whose methods are coroutine functions (ASGI only)."""
    return inspect.iscoroutinefunction(store.load)


def check_key_store(store: Any) -> None:
    """Raise ConfigurationError unless ``store`` has the four methods of a key store, all sync
    or all async."""
    missing = [m for m in _METHODS if not callable(getattr(store, m, None))]
    if missing:
        raise ConfigurationError(
            f"key_store must be a key store (jwt_middleware.keystore: MemoryKeyStore, "
            f"RedisKeyStore, AsyncRedisKeyStore), got {type(store).__name__} without "
            f"{', '.join(missing)}()"
        )
    kinds = {inspect.iscoroutinefunction(getattr(store, m)) for m in _METHODS}
    if len(kinds) > 1:
        raise ConfigurationError(
            f"key_store {type(store).__name__} mixes sync and async methods: make "
            f"{', '.join(_METHODS)} all plain or all async"
        )


def _check_ttl(ttl: float) -> float:
    if not (isinstance(ttl, (int, float)) and math.isfinite(ttl)):
        raise ValueError(f"ttl must be a finite number of seconds, got {ttl!r}")
    return max(ttl, 0.001)


class MemoryKeyStore:
    """Documents and locks in this process: one store shared by several middlewares, issuers
    or key caches (ASGI and WSGI alike), and for tests. Thread-safe, never blocks for long (it
    is called on the event loop directly); at most ``max_entries`` documents (an expired one,
    then the oldest, makes room: losing an entry costs one fetch)."""

    def __init__(self, *, max_entries: int = 10_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._documents: dict[str, tuple[StoredDocument, float]] = {}  # name -> (doc, until)
        self._locks: dict[str, tuple[str, float]] = {}  # name -> (token, until)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._documents)

    def load(self, name: str, max_bytes: int) -> StoredDocument | None:
        with self._lock:
            held = self._documents.get(name)
            if held is None or time.monotonic() >= held[1]:
                return None
        if len(held[0].body) > max_bytes:
            raise CorruptEntry("stored document over the size limit")
        return held[0]

    def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        until = time.monotonic() + _check_ttl(ttl)
        with self._lock:
            if name not in self._documents and len(self._documents) >= self.max_entries:
                self._make_room()
            self._documents[name] = (document, until)

    def _make_room(self) -> None:
        now = time.monotonic()
        self._documents = {k: v for k, v in self._documents.items() if now < v[1]}
        if len(self._documents) >= self.max_entries:
            del self._documents[next(iter(self._documents))]  # the oldest inserted
        self._locks = {k: v for k, v in self._locks.items() if now < v[1]}

    def acquire(self, name: str, ttl: float) -> str | None:
        until = time.monotonic() + _check_ttl(ttl)
        with self._lock:
            held = self._locks.get(name)
            if held is not None and time.monotonic() < held[1]:
                return None
            token = secrets.token_hex(16)
            self._locks[name] = (token, until)
            return token

    def release(self, name: str, token: str) -> None:
        with self._lock:
            held = self._locks.get(name)
            if held is not None and held[0] == token:
                del self._locks[name]


# -- the Redis stores ---------------------------------------------------------------------------

# Delete the lock only if it is still ours: after it expired, another process may hold it.
_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end"


class _RedisKeys(RedisClientStore):
    """The key layout and the entry format both Redis key stores share.

    An entry is ``jwtm-keys/1 <hmac hex or ->\\n<{"fetched_at", "max_age"}>\\n<body>``; the HMAC
    (with ``secret``) covers the entry's name, header and body, so a valid entry cannot be moved
    to another name (another issuer's keys) either. Keys: ``<prefix>keys:<name>`` and
    ``<prefix>keys-lock:<name>``."""

    def __init__(
        self, client: Any, *, prefix: str = DEFAULT_PREFIX, secret: bytes | str | None = None
    ) -> None:
        super().__init__(client, prefix=prefix)
        if isinstance(secret, str):
            secret = secret.encode()
        if secret is not None and (not isinstance(secret, bytes) or len(secret) < _MIN_SECRET):
            raise ConfigurationError(
                f"secret must be at least {_MIN_SECRET} bytes (e.g. secrets.token_hex(32)), "
                "shared by every process using the store"
            )
        self._secret = secret
        self._head = f"{prefix}keys:"
        self._lock_head = f"{prefix}keys-lock:"

    def _mac(self, name: str, header: bytes, body: bytes) -> bytes:
        assert self._secret is not None
        message = b"\0".join((name.encode(), header, body))
        return hmac.new(self._secret, message, hashlib.sha256).hexdigest().encode()

    def _encode(self, name: str, document: StoredDocument) -> bytes:
        header = json.dumps(
            {"fetched_at": document.fetched_at, "max_age": document.max_age}, allow_nan=False
        ).encode()
        mac = b"-" if self._secret is None else self._mac(name, header, document.body)
        return b"%s %s\n%s\n%s" % (_MAGIC, mac, header, document.body)

    def _decode(self, name: str, raw: Any, max_bytes: int) -> StoredDocument | None:
        if raw is None or raw == b"" or raw == "":
            return None
        if isinstance(raw, str):  # a client made with decode_responses=True
            raw = raw.encode()
        if not isinstance(raw, bytes):
            raise CorruptEntry(f"stored entry is a {type(raw).__name__}")
        try:
            first, header, body = raw.split(b"\n", 2)
            magic, mac = first.split(b" ")
        except ValueError:
            raise CorruptEntry("stored entry is not in the key store's format") from None
        if magic != _MAGIC:
            raise CorruptEntry("stored entry is not in the key store's format")
        if len(body) > max_bytes:
            raise CorruptEntry("stored document over the size limit")
        if self._secret is not None and not hmac.compare_digest(mac, self._mac(name, header, body)):
            raise CorruptEntry("stored entry fails its HMAC check")
        return StoredDocument(body, *_times(header))

    @staticmethod
    def _ms(ttl: float) -> int:
        return max(1, math.ceil(_check_ttl(ttl) * 1000))


def _times(header: bytes) -> tuple[float, float | None]:
    try:
        fields = json.loads(header)
        fetched_at, max_age = fields["fetched_at"], fields["max_age"]
    except (ValueError, TypeError, KeyError):
        raise CorruptEntry("stored entry has no valid header") from None
    numbers = [fetched_at] if max_age is None else [fetched_at, max_age]
    for number in numbers:
        if isinstance(number, bool) or not isinstance(number, (int, float)):
            raise CorruptEntry("stored entry has no valid header")
        if not math.isfinite(number) or number < 0:
            raise CorruptEntry("stored entry has no valid header")
    return float(fetched_at), None if max_age is None else float(max_age)


class RedisKeyStore(_RedisKeys):
    """Key documents in Redis, shared by every process and host using it (sync client, WSGI).

    A read is one ``GETRANGE`` (never more than the size limit comes back), a write one ``SET``
    with an expiry, the lock ``SET NX PX`` (released by compare-and-delete). ``secret``: sign
    the entries (recommended; every process needs the same one). Failures raise
    :class:`KeyStoreError`, entries that are not ours :class:`CorruptEntry`.
    """

    def load(self, name: str, max_bytes: int) -> StoredDocument | None:
        with failures_as(KeyStoreError):
            raw = self.client.getrange(self._head + name, 0, max_bytes + OVERHEAD)
        return self._decode(name, raw, max_bytes)

    def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        value = self._encode(name, document)
        with failures_as(KeyStoreError):
            self.client.set(self._head + name, value, px=self._ms(ttl))

    def acquire(self, name: str, ttl: float) -> str | None:
        token = secrets.token_hex(16)
        with failures_as(KeyStoreError):
            taken = self.client.set(self._lock_head + name, token, nx=True, px=self._ms(ttl))
        return token if taken else None

    def release(self, name: str, token: str) -> None:
        with failures_as(KeyStoreError):
            self.client.eval(_RELEASE, 1, self._lock_head + name, token)


class AsyncRedisKeyStore(_RedisKeys):
    """:class:`RedisKeyStore` for the event loop (``redis.asyncio``, for ASGI)."""

    _client_class = "redis.asyncio.Redis"

    async def load(self, name: str, max_bytes: int) -> StoredDocument | None:
        with failures_as(KeyStoreError):
            raw = await self.client.getrange(self._head + name, 0, max_bytes + OVERHEAD)
        return self._decode(name, raw, max_bytes)

    async def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        value = self._encode(name, document)
        with failures_as(KeyStoreError):
            await self.client.set(self._head + name, value, px=self._ms(ttl))

    async def acquire(self, name: str, ttl: float) -> str | None:
        token = secrets.token_hex(16)
        with failures_as(KeyStoreError):
            taken = await self.client.set(self._lock_head + name, token, nx=True, px=self._ms(ttl))
        return token if taken else None

    async def release(self, name: str, token: str) -> None:
        with failures_as(KeyStoreError):
            await self.client.eval(_RELEASE, 1, self._lock_head + name, token)
