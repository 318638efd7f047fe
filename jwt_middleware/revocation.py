"""Revocation: refuse tokens that verify but were withdrawn (logout, theft, password change).

Two kinds of entry:

* a revoked ``jti``: that one token, remembered until the token's own ``exp`` (then it would be
  refused anyway, so the entry is forgotten);
* a subject revoked *before* a time: every token of that ``sub`` issued (``iat``) at or before it
  — "log out everywhere", "password changed".

Stores: :class:`MemoryRevocationStore` (one process; the default for tests and single-process
apps), :class:`RedisRevocationStore` (sync, for WSGI) and :class:`AsyncRedisRevocationStore`
(for ASGI), which share revocations across processes and hosts. Any object with the same
methods works (:class:`RevocationStore` / :class:`AsyncRevocationStore` protocols).

A store that cannot be reached raises :class:`RevocationStoreError`; the verifier then refuses
with 503 (fail closed) unless ``revocation_fail_open=True``. Entries outlive ``exp`` by
:data:`GRACE` (300 s), which must cover the verifier's leeway.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol, runtime_checkable

from ._errors import ConfigurationError, RevocationStoreError, UsageError
from ._redis import DEFAULT_PREFIX, RedisClientStore, failures_as

__all__ = [
    "GRACE",
    "AsyncRedisRevocationStore",
    "AsyncRevocationStore",
    "MemoryRevocationStore",
    "RedisRevocationStore",
    "RevocationStore",
    "RevocationStoreError",
    "revocation_query",
]


#: Revocations outlive the token's ``exp`` by this much: a verifier's leeway lets a token live
#: past ``exp``, and a revocation forgotten too early would let it back in.
GRACE = 300.0


@runtime_checkable
class RevocationStore(Protocol):
    def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool: ...
    def revoke_token(self, jti: str, expires_at: float) -> None: ...
    def revoke_subject(self, sub: str, before: float) -> None: ...


@runtime_checkable
class AsyncRevocationStore(Protocol):
    async def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool: ...
    async def revoke_token(self, jti: str, expires_at: float) -> None: ...
    async def revoke_subject(self, sub: str, before: float) -> None: ...


def revocation_query(claims: Mapping[str, Any]) -> tuple[str | None, str | None, float | None]:
    """``(jti, sub, iat)`` from verified claims, each None when absent or not of its type."""
    jti, sub, iat = claims.get("jti"), claims.get("sub"), claims.get("iat")
    return (
        _jti(jti) if isinstance(jti, (str, int)) and not isinstance(jti, bool) else None,
        sub if isinstance(sub, str) else None,
        float(iat) if isinstance(iat, (int, float)) and not isinstance(iat, bool) else None,
    )


def _jti(jti: str | int) -> str:
    # RFC 7519 says jti is a string; some issuers send numbers. Both sides normalise alike.
    if isinstance(jti, bool) or not isinstance(jti, (str, int)):
        raise UsageError(f"jti must be a string (or an integer), got {type(jti).__name__}")
    return jti if isinstance(jti, str) else str(jti)


def _revoked_by_subject(before: float | None, iat: float | None) -> bool:
    # A token without iat cannot prove it was issued after the cut-off: refuse it.
    return before is not None and (iat is None or iat <= before)


class MemoryRevocationStore:
    """In-process revocations, bounded to ``max_entries`` (revoked jtis and subjects together).
    Thread-safe.

    When full: entries past their lifetime are dropped to make room; if every entry is still
    live, ``revoke_token`` / ``revoke_subject`` raise :class:`RevocationStoreError` and store
    nothing. No live entry is ever evicted, not even the one expiring soonest: forgetting a
    revocation lets that token back in, while a refused revocation is visible to the caller.
    A logout endpoint must therefore treat that error as "not logged out" (answer 503 and let
    the client retry; never report success). Checks keep working while the store is full, and
    a full store refuses new entries without rescanning until its earliest entry expires.

    Subject cut-offs are kept for ``subject_ttl`` seconds (set it to at least your longest token
    lifetime).
    """

    def __init__(
        self,
        *,
        max_entries: int = 100_000,
        subject_ttl: float = 7 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if max_entries < 1 or subject_ttl <= 0:
            raise ConfigurationError("max_entries must be >= 1 and subject_ttl > 0")
        self.max_entries = max_entries
        self.subject_ttl = subject_ttl
        self.clock = clock
        self._tokens: dict[str, float] = {}  # jti -> expires_at
        self._subjects: dict[str, tuple[float, float]] = {}  # sub -> (before, forget_at)
        # No entry is forgotten before this time: while it is ahead, a full store is still full
        # (a purge would find nothing), so a flood of revocations cannot make each one rescan.
        self._earliest = math.inf
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self._tokens) + len(self._subjects)

    def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        now = self.clock()
        if jti is not None:
            expires_at = self._tokens.get(jti)
            if expires_at is not None and now < expires_at:
                return True
        if sub is not None:
            entry = self._subjects.get(sub)
            if entry is not None and now < entry[1]:
                return _revoked_by_subject(entry[0], iat)
        return False

    def revoke_token(self, jti: str, expires_at: float) -> None:
        jti = _jti(jti)
        with self._lock:
            if jti not in self._tokens:
                self._make_room()
            until = expires_at + GRACE if math.isfinite(expires_at) else math.inf
            self._tokens[jti] = until = max(until, self._tokens.get(jti, until))
            self._earliest = min(self._earliest, until)

    def revoke_subject(self, sub: str, before: float) -> None:
        with self._lock:
            if sub not in self._subjects:
                self._make_room()
            previous = self._subjects.get(sub, (before, 0.0))[0]
            forget_at = self.clock() + self.subject_ttl
            self._subjects[sub] = (max(before, previous), forget_at)
            self._earliest = min(self._earliest, forget_at)

    def _make_room(self) -> None:
        if len(self) < self.max_entries:
            return
        now = self.clock()
        if now >= self._earliest:
            self._tokens = {j: e for j, e in self._tokens.items() if e > now}
            self._subjects = {s: v for s, v in self._subjects.items() if v[1] > now}
            self._earliest = min(
                min(self._tokens.values(), default=math.inf),
                min((v[1] for v in self._subjects.values()), default=math.inf),
            )
        if len(self) >= self.max_entries:
            raise RevocationStoreError(
                f"revocation store full ({self.max_entries} live entries); nothing was stored"
            )


class _RedisKeys:
    def __init__(self, prefix: str, subject_ttl: float) -> None:
        self.prefix = prefix
        self.subject_ttl = int(subject_ttl)

    def token(self, jti: str) -> str:
        return f"{self.prefix}jti:{jti}"

    def subject(self, sub: str) -> str:
        return f"{self.prefix}sub:{sub}"

    def keys(self, jti: str | None, sub: str | None) -> list[str]:
        return [self.token(jti or ""), self.subject(sub or "")]

    @staticmethod
    def verdict(values: list[Any], jti: str | None, sub: str | None, iat: float | None) -> bool:
        token_hit, before = values
        if jti is not None and token_hit is not None:
            return True
        if sub is not None and before is not None:
            return _revoked_by_subject(float(before), iat)
        return False


class _RedisStore(RedisClientStore):
    """The client and key layout both Redis stores share; only the I/O calls differ."""

    def __init__(
        self, client: Any, *, prefix: str = DEFAULT_PREFIX, subject_ttl: float = 7 * 24 * 3600.0
    ) -> None:
        super().__init__(client, prefix=prefix)
        self._keys = _RedisKeys(prefix, subject_ttl)


class RedisRevocationStore(_RedisStore):
    """Revocations in Redis, shared by every process and host using the same Redis (sync client).

    One round trip per check (``MGET``). Revoked ``jti`` keys expire with the token
    (``EXPIREAT``); subject cut-offs after ``subject_ttl``. Connection problems raise
    RevocationStoreError.
    """

    def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        with failures_as(RevocationStoreError):
            values = self.client.mget(self._keys.keys(jti, sub))
        return self._keys.verdict(values, jti, sub, iat)

    def revoke_token(self, jti: str, expires_at: float) -> None:
        with failures_as(RevocationStoreError):
            self.client.set(self._keys.token(_jti(jti)), b"1", exat=_exat(expires_at))

    def revoke_subject(self, sub: str, before: float) -> None:
        with failures_as(RevocationStoreError):
            self.client.eval(
                _RAISE_CUTOFF, 1, self._keys.subject(sub), repr(before), self._keys.subject_ttl
            )


class AsyncRedisRevocationStore(_RedisStore):
    """:class:`RedisRevocationStore` for the event loop (``redis.asyncio``)."""

    _client_class = "redis.asyncio.Redis"

    async def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        with failures_as(RevocationStoreError):
            values = await self.client.mget(self._keys.keys(jti, sub))
        return self._keys.verdict(values, jti, sub, iat)

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        with failures_as(RevocationStoreError):
            await self.client.set(self._keys.token(_jti(jti)), b"1", exat=_exat(expires_at))

    async def revoke_subject(self, sub: str, before: float) -> None:
        with failures_as(RevocationStoreError):
            await self.client.eval(
                _RAISE_CUTOFF, 1, self._keys.subject(sub), repr(before), self._keys.subject_ttl
            )


def _exat(expires_at: float) -> int:
    return math.ceil(min(expires_at, 4_000_000_000) + GRACE)


# A subject's cut-off only ever moves forward (atomically): an older revocation arriving late
# must not re-admit tokens that a newer one refused.
_RAISE_CUTOFF = """
local current = redis.call('GET', KEYS[1])
if (not current) or tonumber(current) < tonumber(ARGV[1]) then
  redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
end
return 1
"""
