"""The verified-token cache: reuse skips the signature, never the rules."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from jwt_middleware import InvalidToken, Key, Reason, Settings, SyncVerifier
from jwt_middleware.testing import LocalIssuer, generate_key

from .conftest import FakeClock

ISS, AUD = "https://issuer.example", "api://cache"


@pytest.fixture(scope="module")
def signer() -> Any:
    return generate_key("ES256", kid="k1")


def settings(signer: Any, clock: FakeClock, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "issuer": ISS,
        "audience": AUD,
        "keys": [Key.from_pem(signer.public_pem(), kid="k1")],
        "clock": clock,
        "algorithms": ["ES256"],
    }
    options.update(overrides)
    return Settings(**options)


def token(signer: Any, clock: FakeClock, **claims: Any) -> str:
    base = {"iss": ISS, "aud": AUD, "sub": "u", "exp": clock.now + 300, "jti": "one"}
    base.update(claims)
    return str(signer.sign(base))


def test_a_reused_token_skips_the_signature_check(
    signer: Any, clock: FakeClock, signature_checks: list[str]
) -> None:
    calls = signature_checks
    verifier = SyncVerifier(settings(signer, clock))
    t = token(signer, clock)
    verifier.verify(t)  # seen once: not admitted yet (one-off tokens never churn the cache)
    second = verifier.verify(t)  # verified again, now remembered
    for _ in range(10):
        assert verifier.verify(t) is second
    assert calls == ["ES256", "ES256"]


def test_one_off_tokens_are_not_admitted(signer: Any, clock: FakeClock) -> None:
    verifier = SyncVerifier(settings(signer, clock, token_cache_size=16))
    for i in range(100):
        verifier.verify(token(signer, clock, jti=f"once{i}"))
    assert len(verifier._core._cache) == 0
    assert len(verifier._core._seen) == 16  # bounded too


def test_disabled_cache_checks_every_time(
    signer: Any, clock: FakeClock, signature_checks: list[str]
) -> None:
    calls = signature_checks
    verifier = SyncVerifier(settings(signer, clock, token_cache_size=0))
    t = token(signer, clock)
    for _ in range(3):
        verifier.verify(t)
    assert len(calls) == 3


def test_expiry_is_checked_on_every_hit(signer: Any, clock: FakeClock) -> None:
    verifier = SyncVerifier(settings(signer, clock, leeway=0))
    t = token(signer, clock, exp=clock.now + 10)
    verifier.verify(t)
    clock.advance(9)
    verifier.verify(t)
    clock.advance(1)
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(t)
    assert excinfo.value.reason == Reason.EXPIRED


def test_not_before_is_checked_on_every_hit(signer: Any, clock: FakeClock) -> None:
    verifier = SyncVerifier(settings(signer, clock, leeway=5))
    t = token(signer, clock, nbf=clock.now + 5)  # valid now thanks to the leeway
    verifier.verify(t)
    clock.now -= 1  # a clock stepping back must not let a cached token in early
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(t)
    assert excinfo.value.reason == Reason.NOT_YET_VALID


def test_a_different_token_never_hits_another_tokens_entry(signer: Any, clock: FakeClock) -> None:
    verifier = SyncVerifier(settings(signer, clock))
    good = token(signer, clock)
    verifier.verify(good)
    head, body, sig = good.split(".")
    forged_sig = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BA")
    for forged in (f"{head}.{body}.{forged_sig}", f"{head}.{body}.{sig}x", f"{head}.{body}"):
        with pytest.raises(InvalidToken):
            verifier.verify(forged)


def test_validators_run_on_every_hit(signer: Any, clock: FakeClock) -> None:
    seen: list[str] = []
    revoked: set[str] = set()

    def not_revoked(claims: Any) -> bool:
        seen.append(claims["jti"])
        return claims["jti"] not in revoked

    verifier = SyncVerifier(settings(signer, clock, validators=[not_revoked]))
    t = token(signer, clock)
    verifier.verify(t)
    verifier.verify(t)
    revoked.add("one")
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(t)
    assert excinfo.value.reason == Reason.VALIDATOR_REJECTED
    assert seen == ["one", "one", "one"]


def test_the_cache_is_bounded(signer: Any, clock: FakeClock) -> None:
    verifier = SyncVerifier(settings(signer, clock, token_cache_size=16))
    for i in range(100):
        reused = token(signer, clock, jti=f"t{i}")
        verifier.verify(reused)
        verifier.verify(reused)
    assert len(verifier._core._cache) == 16


def test_claims_of_a_cached_token_are_read_only(signer: Any, clock: FakeClock) -> None:
    verified = SyncVerifier(settings(signer, clock)).verify(token(signer, clock, scope="a"))
    with pytest.raises(TypeError):
        verified.claims["scope"] = "admin"  # type: ignore[index]


def test_cached_tokens_are_dropped_when_the_remote_keys_change(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    verifier = SyncVerifier(make_settings(clock=clock))
    old = issuer.current_key
    t = issuer.mint(now=clock.now, expires_in=3600)
    verifier.verify(t)
    issuer.rotate(retire_old=True)  # the key that signed t disappears from the JWKS
    clock.advance(31)
    verifier.verify(issuer.mint(now=clock.now))  # a new kid: fetches the new key set
    assert issuer.jwks_requests == 2
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(t)
    assert excinfo.value.reason == Reason.KID_UNKNOWN
    assert old.kid not in verifier.remote.policy.keyset  # type: ignore[union-attr]


def test_async_verifier_uses_the_cache_too(
    signer: Any, clock: FakeClock, signature_checks: list[str]
) -> None:
    from jwt_middleware import AsyncVerifier

    calls = signature_checks
    verifier = AsyncVerifier(settings(signer, clock))
    t = token(signer, clock)

    async def thrice() -> None:
        for _ in range(3):
            await verifier.verify(t)

    asyncio.run(thrice())
    assert calls == ["ES256", "ES256"]


def test_an_unchanged_jwks_refresh_keeps_the_cache_and_the_parsed_keys(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock, signature_checks: list[str]
) -> None:
    calls = signature_checks
    verifier = SyncVerifier(make_settings(clock=clock))
    t = issuer.mint(now=clock.now, expires_in=3600)
    verifier.verify(t)
    verifier.verify(t)  # now in the cache
    keyset = verifier.remote.policy.keyset  # type: ignore[union-attr]
    clock.advance(601)  # stale: served, refreshed (same document) in the background
    verifier.verify(t)
    verifier.remote.refresh()  # type: ignore[union-attr]  # wait for it
    assert issuer.jwks_requests == 2
    assert verifier.remote.policy.keyset is keyset  # type: ignore[union-attr]
    verifier.verify(t)  # a cache hit again: the entry is bound to the same KeySet
    assert len(calls) == 3  # two to get in, one while the keys were stale
