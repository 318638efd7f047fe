"""Observability: counters for every decision, and an optional Prometheus exporter.

Pass ``events=Counters()`` (or ``PrometheusEvents()``, or your own object with the same three
methods) in the settings. The middleware reports:

* ``verified(cached)`` — a token was accepted (``cached``: from the verified-token cache);
* ``rejected(reason)`` — a request was refused, with its stable :class:`Reason` code;
* ``key_fetch(ok)`` — a JWKS (or discovery) fetch finished.

Every refusal is also a log record on the ``jwt_middleware`` logger whose ``extra`` carries
``jwt_event`` and ``jwt_reason`` (for JSON log formatters). Nothing here ever sees the token.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Protocol

__all__ = ["Counters", "Events", "PrometheusEvents"]


class Events(Protocol):
    def verified(self, *, cached: bool) -> None: ...
    def rejected(self, reason: str) -> None: ...
    def key_fetch(self, *, ok: bool) -> None: ...


class Counters:
    """In-process counters; ``snapshot()`` returns them as a plain dict. Thread-safe."""

    def __init__(self) -> None:
        self._counts: Counter[str] = Counter()
        self._lock = threading.Lock()

    def _add(self, name: str) -> None:
        with self._lock:
            self._counts[name] += 1

    def verified(self, *, cached: bool) -> None:
        self._add("verified_cached" if cached else "verified")

    def rejected(self, reason: str) -> None:
        self._add(f"rejected:{reason}")

    def key_fetch(self, *, ok: bool) -> None:
        self._add("key_fetch_ok" if ok else "key_fetch_failed")

    def snapshot(self) -> dict[str, int]:
        with self._lock:
            return dict(self._counts)


class PrometheusEvents:
    """The same events as Prometheus counters (``pip install prometheus-client``).

    ``jwt_middleware_verified_total{cached}``, ``jwt_middleware_rejected_total{reason}``,
    ``jwt_middleware_key_fetches_total{outcome}``.
    """

    def __init__(self, registry: Any = None, *, prefix: str = "jwt_middleware") -> None:
        try:
            from prometheus_client import REGISTRY
            from prometheus_client import Counter as PromCounter
        except ImportError:  # pragma: no cover - depends on the environment
            raise ImportError("PrometheusEvents needs prometheus-client installed") from None
        registry = registry if registry is not None else REGISTRY
        self._verified = PromCounter(
            f"{prefix}_verified", "Tokens accepted", ["cached"], registry=registry
        )
        self._rejected = PromCounter(
            f"{prefix}_rejected", "Requests refused, by reason", ["reason"], registry=registry
        )
        self._fetches = PromCounter(
            f"{prefix}_key_fetches", "JWKS fetches, by outcome", ["outcome"], registry=registry
        )

    def verified(self, *, cached: bool) -> None:
        self._verified.labels(cached="true" if cached else "false").inc()

    def rejected(self, reason: str) -> None:
        self._rejected.labels(reason=reason).inc()

    def key_fetch(self, *, ok: bool) -> None:
        self._fetches.labels(outcome="ok" if ok else "failed").inc()
