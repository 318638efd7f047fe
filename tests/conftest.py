"""Shared fixtures: a real key server on loopback, a settable clock, and settings builders."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from typing import Any

import pytest

from jwt_middleware import Key, Settings
from jwt_middleware.testing import LocalIssuer


class FakeClock:
    """A clock tests move by hand: expiry, cooldowns and staleness without sleeping."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``alg`` of every public-key operation from here on (Key.verify is spied on, not
    replaced), so a test can tell a cache hit from a full verification."""
    calls: list[str] = []
    real = Key.verify

    def spy(self: Key, alg: str, signing_input: bytes, signature: bytes) -> bool:
        calls.append(alg)
        return real(self, alg, signing_input, signature)

    monkeypatch.setattr(Key, "verify", spy)
    return calls


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A real OIDC issuer + JWKS server on 127.0.0.1 (RS256 by default)."""
    with LocalIssuer() as local:
        yield local


@pytest.fixture
def make_settings(issuer: LocalIssuer):
    """Settings trusting ``issuer`` through its JWKS URL; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "issuer": issuer.issuer,
            "audience": issuer.audience,
            "jwks_url": issuer.jwks_url,
        }
        options.update(overrides)
        return Settings(**options)

    return build


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])
