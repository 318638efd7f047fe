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
from typing import Protocol, runtime_checkable

from ._errors import ConfigurationError, ReplayStoreError

__all__ = [
    "AsyncReplayStore",
    "MemoryReplayStore",
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
    """

    __slots__ = ("_earliest", "_lock", "_seen", "max_entries")

    def __init__(self, *, max_entries: int = 100_000) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise ConfigurationError(f"max_entries must be an integer >= 1, got {max_entries!r}")
        self.max_entries = max_entries
        self._seen: dict[tuple[str, str], float] = {}  # (jkt, jti) -> forget after
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
            if known is None and len(self._seen) >= self.max_entries:
                self._make_room(now)
            self._seen[key] = until
            self._earliest = min(self._earliest, until)
            return True

    def _make_room(self, now: float) -> None:
        if now >= self._earliest:
            self._seen = {k: t for k, t in self._seen.items() if now < t}
            self._earliest = min(self._seen.values(), default=math.inf)
        if len(self._seen) >= self.max_entries:
            raise ReplayFull(f"{len(self._seen)} live DPoP proofs recorded")
