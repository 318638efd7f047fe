"""Replay protection for DPoP proofs (RFC 9449 §11.1): each accepted proof's ``(jkt, jti)`` is
remembered until the proof could no longer be accepted anyway, so a captured proof cannot be
sent again.

Stores: :class:`MemoryReplayStore` (one process; the default), and, for several workers or
hosts behind one resource, the Redis stores (sync for WSGI, async for ASGI), in which one
atomic set-if-absent per request decides which of two racing requests was first. Any object
with the same method works (:class:`ReplayStore` / :class:`AsyncReplayStore`).

A proof is recorded only after every other check has passed: a refused request never uses up
a ``jti``. A store that cannot answer raises :class:`ReplayStoreError`; the request is then
refused with 503 and ``Retry-After`` (fail closed) unless ``dpop_replay_fail_open=True``.
"""

from __future__ import annotations

import math
import threading
from collections import deque
from typing import Any, Protocol, runtime_checkable

from ._errors import ConfigurationError, ReplayStoreError, UsageError
from ._redis import DEFAULT_PREFIX, RedisClientStore, failures_as

__all__ = [
    "AsyncRedisReplayStore",
    "AsyncReplayStore",
    "MemoryReplayStore",
    "RedisReplayStore",
    "ReplayFull",
    "ReplayStore",
    "ReplayStoreError",
]


@runtime_checkable
class ReplayStore(Protocol):
    def first_use(self, jkt: str, jti: str, until: float, now: float) -> bool:
        """Record ``(jkt, jti)`` until ``until`` (seconds since the epoch, by the verifier's
        clock ``now``); False when it is recorded already: a replay."""
        ...


@runtime_checkable
class AsyncReplayStore(Protocol):
    async def first_use(self, jkt: str, jti: str, until: float, now: float) -> bool: ...


class ReplayFull(ReplayStoreError):
    """The replay store holds as many live proofs as it may: the proof cannot be recorded, so
    it cannot be accepted (the request is refused as "try again", never let in)."""


class MemoryReplayStore:
    """The ``(jkt, jti)`` of accepted proofs, per process, each kept until its proof could no
    longer be accepted anyway. Thread-safe; bounded to ``max_entries``.

    When full, expired entries make room; if every entry is still live, :meth:`first_use`
    raises :class:`ReplayFull` and records nothing. No live entry is ever evicted: forgetting
    one would let its proof be replayed, while a refusal only costs the client a retry.

    One key (one client) holds at most ``max_per_key`` live entries (default a quarter of the
    store): a client sending proofs as fast as it can is refused itself (``ReplayFull``) before
    it fills the store for every other client.
    """

    __slots__ = ("_by_key", "_earliest", "_lock", "_seen", "max_entries", "max_per_key")

    def __init__(self, *, max_entries: int = 100_000, max_per_key: int | None = None) -> None:
        if max_per_key is None:
            max_per_key = max(1, max_entries // 4) if isinstance(max_entries, int) else 0
        for name, value in (("max_entries", max_entries), ("max_per_key", max_per_key)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigurationError(f"{name} must be an integer >= 1, got {value!r}")
        self.max_entries = max_entries
        self.max_per_key = max_per_key
        self._seen: dict[tuple[str, str], float] = {}  # (jkt, jti) -> forget after
        # Per key, when its entries expire, oldest first (proofs arrive roughly in iat order;
        # one out of order only delays a count going down, never lets one too many in).
        self._by_key: dict[str, deque[float]] = {}
        # Nothing expires before this: a full store stays full until then without a rescan, so
        # a flood of fresh proofs cannot make each one scan the whole store.
        self._earliest = math.inf
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._seen)

    def first_use(self, jkt: str, jti: str, until: float, now: float) -> bool:
        """Record ``(jkt, jti)`` until ``until``; False when it is already recorded (a replay)."""
        key = (jkt, jti)
        with self._lock:
            known = self._seen.get(key)
            if known is not None and now < known:
                return False
            times = self._by_key.get(jkt)
            if times is None:
                times = self._by_key[jkt] = deque()
            while times and times[0] <= now:
                times.popleft()
            if len(times) >= self.max_per_key:
                raise ReplayFull(f"one DPoP key holds {len(times)} live proofs")
            if known is None and len(self._seen) >= self.max_entries:
                self._make_room(now)
            self._seen[key] = until
            times.append(until)
            self._earliest = min(self._earliest, until)
            return True

    def _make_room(self, now: float) -> None:
        if now >= self._earliest:
            self._seen = {k: t for k, t in self._seen.items() if now < t}
            self._earliest = min(self._seen.values(), default=math.inf)
            by_key: dict[str, list[float]] = {}
            for (jkt, _), until in self._seen.items():
                by_key.setdefault(jkt, []).append(until)
            self._by_key = {jkt: deque(sorted(times)) for jkt, times in by_key.items()}
        if len(self._seen) >= self.max_entries:
            raise ReplayFull(f"{len(self._seen)} live DPoP proofs recorded")


class _RedisReplay(RedisClientStore):
    """The key layout and expiry both Redis replay stores share; only the I/O call differs."""

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        super().__init__(client, prefix=prefix)
        self._head = f"{prefix}dpop:"

    def _key(self, jkt: str, jti: str) -> str:
        # jkt is a base64url thumbprint, which has no ":", so the first ":" after the head ends
        # it: an attacker's jti (which may hold ":") cannot make two pairs share a key.
        return f"{self._head}{jkt}:{jti}"

    @staticmethod
    def _ttl_ms(until: float, now: float) -> int:
        # Relative, by the verifier's clock: the Redis server's clock never enters into it.
        if not (math.isfinite(until) and math.isfinite(now)):
            raise UsageError("until and now must be finite numbers of seconds")
        return max(1, math.ceil((until - now) * 1000))


class RedisReplayStore(_RedisReplay):
    """DPoP replay records in Redis, shared by every process and host using the same Redis
    (sync client, for WSGI).

    One round trip per proof: ``SET <key> 1 NX PX <ms>``, atomic, so of two requests racing
    with the same proof on any two workers exactly one is first. The record expires
    ``until - now`` after it is made (at least 1 ms), timed by the verifier's clock, not by
    Redis's. The hosts sharing a store must still agree with each other within the DPoP leeway:
    a host whose clock runs behind accepts a proof for longer than another host remembers it.
    Keys: ``<prefix>dpop:<jkt>:<jti>``. Any failure raises :class:`ReplayStoreError`.
    """

    def first_use(self, jkt: str, jti: str, until: float, now: float) -> bool:
        """Record ``(jkt, jti)`` until ``until``; False when it is already recorded (a replay)."""
        ttl = self._ttl_ms(until, now)
        with failures_as(ReplayStoreError):
            created = self.client.set(self._key(jkt, jti), b"1", nx=True, px=ttl)
        return bool(created)  # True when set, None when the key was there


class AsyncRedisReplayStore(_RedisReplay):
    """:class:`RedisReplayStore` for the event loop (``redis.asyncio``, for ASGI)."""

    _client_class = "redis.asyncio.Redis"

    async def first_use(self, jkt: str, jti: str, until: float, now: float) -> bool:
        """Record ``(jkt, jti)`` until ``until``; False when it is already recorded (a replay)."""
        ttl = self._ttl_ms(until, now)
        with failures_as(ReplayStoreError):
            created = await self.client.set(self._key(jkt, jti), b"1", nx=True, px=ttl)
        return bool(created)  # True when set, None when the key was there
