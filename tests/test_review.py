"""Findings of a security review of the library, one test each: every test reproduced a
confirmed problem (and failed) before the fix it now guards."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
from collections import OrderedDict
from typing import Any

import pytest

from jwt_middleware import (
    AsyncVerifier,
    ConfigurationError,
    InvalidToken,
    Key,
    KeysUnavailable,
    Reason,
    Settings,
    SyncVerifier,
    UnusableKey,
)
from jwt_middleware import _b64 as b64
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.revocation import MemoryRevocationStore
from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key

from .conftest import FakeClock, free_port

# -- verify.py: the verified-token cache -------------------------------------------------------


def test_cache_entry_is_bound_to_the_key_set_that_verified_it_sync(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    # The validator stands in for another thread refreshing the keys between this request's key
    # lookup and remember() (e.g. the background USE_AND_REFRESH thread, or a new-kid fetch).
    state: dict[str, Any] = {"armed": False, "verifier": None}

    def rotation_happens_meanwhile(claims: Any) -> bool:
        if state["armed"]:
            state["armed"] = False
            issuer.rotate(retire_old=True)  # the key that signed the token leaves the JWKS
            clock.advance(31)
            state["verifier"].remote.refresh()
        return True

    verifier = SyncVerifier(make_settings(clock=clock, validators=[rotation_happens_meanwhile]))
    state["verifier"] = verifier
    old_kid = issuer.current_key.kid
    token = issuer.mint(now=clock.now, expires_in=3600)
    verifier.verify(token)  # seen once
    state["armed"] = True
    verifier.verify(token)  # verified with the old key set, remembered under the new one
    assert old_kid not in verifier.remote.policy.keyset  # type: ignore[union-attr]
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)  # must not be a cache hit: its key is gone
    assert refused.value.reason == Reason.KID_UNKNOWN


def test_cache_entry_is_bound_to_the_key_set_that_verified_it_async(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    state: dict[str, Any] = {"armed": False, "verifier": None}

    async def db_lookup(claims: Any) -> bool:
        if state["armed"]:
            state["armed"] = False
            issuer.rotate(retire_old=True)
            clock.advance(31)
            # another request with the new kid triggers the fetch while we are suspended here
            await state["verifier"].remote.refresh()
        return True

    verifier = AsyncVerifier(make_settings(clock=clock, validators=[db_lookup]))
    state["verifier"] = verifier
    token = issuer.mint(now=clock.now, expires_in=3600)

    async def scenario() -> None:
        try:
            await verifier.verify(token)
            state["armed"] = True
            await verifier.verify(token)
            with pytest.raises(InvalidToken):
                await verifier.verify(token)
        finally:
            await verifier.aclose()

    asyncio.run(scenario())


class _ContendedOrderedDict(OrderedDict):  # type: ignore[type-arg]
    """Holds each of two threads at its first membership step on the digest (``pop`` in
    today's TokenCache.remember, ``in`` in a check-then-delete version) until both are there, so the
    two second uses of a token really interleave at the step that must be atomic."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties)
        self.met = 0  # threads released by the barrier: proves the race was run

    def _meet(self, key: object) -> bool:
        found = super().__contains__(key)
        if found and threading.current_thread() is not threading.main_thread():
            self.barrier.wait(5)
            self.met += 1
        return found

    def __contains__(self, key: object) -> bool:
        return self._meet(key)  # both threads have read True before either acts on it

    def pop(self, key: Any, *default: Any) -> Any:
        self._meet(key)
        return super().pop(key, *default)


def _second_use_race(verifier: SyncVerifier, token: str) -> tuple[list[BaseException], int]:
    """Two threads make the second use of ``token`` at once; their errors and barrier count."""
    verifier.verify(token)  # first use: the digest goes into _seen
    contended = _ContendedOrderedDict(2)
    contended.update(verifier._flow.tokens._seen)
    verifier._flow.tokens._seen = contended
    errors: list[BaseException] = []

    def use() -> None:
        try:
            verifier.verify(token)
        except Exception as exc:
            errors.append(exc)

    threads = [threading.Thread(target=use) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    return errors, contended.met


def _es256_verifier(clock: FakeClock, **options: Any) -> tuple[SyncVerifier, SigningKey]:
    """A SyncVerifier trusting one static ES256 key (kid k1), and the key that signs for it."""
    signer = generate_key("ES256", kid="k1")
    settings = Settings(
        issuer="https://iss.example",
        audience="api://x",
        keys=[Key.from_pem(signer.public_pem(), kid="k1")],
        algorithms=["ES256"],
        clock=clock,
        **options,
    )
    return SyncVerifier(settings), signer


def _race_verifier(clock: FakeClock) -> tuple[SyncVerifier, str]:
    verifier, signer = _es256_verifier(clock)
    token = signer.sign(
        {"iss": "https://iss.example", "aud": "api://x", "sub": "u", "exp": clock.now + 300}
    )
    return verifier, token


def test_concurrent_second_use_of_a_token_is_not_refused(clock: FakeClock) -> None:
    """Two threads making a token's second use at the same instant both get it verified."""
    verifier, token = _race_verifier(clock)
    errors, met = _second_use_race(verifier, token)
    assert met == 2, "the two threads never met inside remember(): the race was not exercised"
    assert errors == []


def test_the_race_harness_catches_a_check_then_delete_remember(
    clock: FakeClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The harness above fails a remember() whose 'seen before?' step is not atomic."""
    from jwt_middleware import _flow

    def racy_remember(self: Any, digest: bytes, verified: Any, issuer: Any, keys: object) -> None:
        seen = self._seen
        if digest in seen:  # check, then act: another thread can delete in between
            del seen[digest]
            return
        seen[digest] = None

    monkeypatch.setattr(_flow.TokenCache, "remember", racy_remember)
    verifier, token = _race_verifier(clock)
    errors, met = _second_use_race(verifier, token)
    assert met == 2
    assert [getattr(e, "reason", None) for e in errors] == [Reason.VERIFIER_ERROR]


# -- keys.py: RSA bounds -----------------------------------------------------------------------


def _rsa_jwk(n_bits: int, e_bits: int) -> dict[str, str]:
    n = secrets.randbits(n_bits) | (1 << (n_bits - 1)) | 1
    e = secrets.randbits(e_bits) | (1 << (e_bits - 1)) | 1
    return {
        "kty": "RSA",
        "kid": "big",
        "n": b64.encode(n.to_bytes((n_bits + 7) // 8, "big")),
        "e": b64.encode(e.to_bytes((e_bits + 7) // 8, "big")),
    }


def test_rsa_public_exponent_has_an_upper_bound() -> None:
    """Key.from_jwk refuses an exponent over 64 bits, whatever the settings allow."""
    with pytest.raises(UnusableKey):
        Key.from_jwk(_rsa_jwk(3072, 3071))


def test_rsa_modulus_has_an_upper_bound() -> None:
    """Key.from_jwk refuses a modulus over 16384 bits, whatever the settings allow."""
    with pytest.raises(UnusableKey):
        Key.from_jwk(_rsa_jwk(16392, 17))


# -- jwks.py: discovery ------------------------------------------------------------------------


def test_discovery_is_retried_after_the_jwks_uri_fails(
    issuer: LocalIssuer, clock: FakeClock
) -> None:
    issuer.set_fault(
        "wrong_shape",
        paths=("discovery",),
        body={"issuer": issuer.issuer, "jwks_uri": issuer.url + "/nope"},
    )
    verifier = SyncVerifier(Settings(issuer=issuer.issuer, audience=issuer.audience, clock=clock))
    token = issuer.mint(now=clock.now, expires_in=100_000)
    with pytest.raises(KeysUnavailable):
        verifier.verify(token)
    issuer.set_fault(None)  # the identity provider fixes its discovery document
    clock.advance(3600)
    try:
        assert verifier.verify(token).subject == "user-1"
    finally:
        verifier.close()


_UNPARSEABLE_JWKS_URI = "https://ex\x00ample.com/jwks"  # passes check_key_url; httpx.InvalidURL


def test_wsgi_warm_up_survives_an_unparseable_jwks_uri(issuer: LocalIssuer) -> None:
    issuer.set_fault(
        "wrong_shape",
        paths=("discovery",),
        body={"issuer": issuer.issuer, "jwks_uri": _UNPARSEABLE_JWKS_URI},
    )
    middleware = JWTWSGIMiddleware(
        lambda environ, start_response: [],
        settings=Settings(issuer=issuer.issuer, audience=issuer.audience),
    )
    middleware.close()


def test_unparseable_jwks_uri_is_a_key_server_failure(issuer: LocalIssuer) -> None:
    issuer.set_fault(
        "wrong_shape",
        paths=("discovery",),
        body={"issuer": issuer.issuer, "jwks_uri": _UNPARSEABLE_JWKS_URI},
    )
    verifier = SyncVerifier(Settings(issuer=issuer.issuer, audience=issuer.audience))
    try:
        with pytest.raises(KeysUnavailable):
            verifier.verify(issuer.mint())
    finally:
        verifier.close()


# -- secrets in logs and reprs -----------------------------------------------------------------


def test_settings_repr_does_not_show_hmac_secrets() -> None:
    secret = b"do-not-log-this-hmac-secret-0123456789"
    k = b64.encode(secret)
    settings = Settings(
        issuer="https://iss.example",
        audience="api://x",
        algorithms=["HS256"],
        jwks={"keys": [{"kty": "oct", "k": k, "kid": "s1"}]},
    )
    assert k not in repr(settings)


def test_jwks_url_credentials_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    url = f"http://svc:hunter2-password@127.0.0.1:{free_port()}/jwks"  # nothing listens there
    settings = Settings(issuer="https://iss.example", audience="api://x", jwks_url=url)
    verifier = SyncVerifier(settings)
    caplog.set_level(logging.DEBUG, logger="jwt_middleware")
    claims = {"iss": "https://iss.example", "aud": "api://x", "exp": 4_000_000_000}
    try:
        with pytest.raises(KeysUnavailable) as refused:
            verifier.verify(generate_key("RS256").sign(claims))
    finally:
        verifier.close()
    assert "hunter2" not in caplog.text
    assert "hunter2" not in refused.value.detail


# -- settings.py: configuration that should fail at construction --------------------------------

_BASE = {"issuer": "https://iss.example", "audience": "api://x", "jwks_url": "https://k.example/j"}


@pytest.mark.parametrize(
    "overrides",
    [
        {"anonymous": "false"},
        {"revocation_fail_open": "false", "revocation": MemoryRevocationStore()},
        {"audience": None, "allow_any_audience": "false"},
        {"expose_error_details": "false"},
    ],
    ids=["anonymous", "revocation_fail_open", "allow_any_audience", "expose_error_details"],
)
def test_boolean_settings_must_be_bools(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**{**_BASE, **overrides})


@pytest.mark.parametrize(
    "overrides",
    [
        {"leeway": float("inf")},
        {"jwks_max_age": float("inf"), "jwks_cooldown": float("inf")},
        {"jwks_timeout": float("inf")},
        {"max_token_bytes": float("inf")},
    ],
    ids=["leeway", "jwks_max_age", "jwks_timeout", "max_token_bytes"],
)
def test_infinite_numbers_are_refused(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**{**_BASE, **overrides})


@pytest.mark.parametrize("name", ["scope_claims", "required_claims"])
def test_claim_name_lists_refuse_a_bare_string(name: str) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**{**_BASE, name: "scope"})


@pytest.mark.parametrize("overrides", [{"realm": None}, {"clock": None}], ids=["realm", "clock"])
def test_realm_and_clock_are_validated(overrides: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        Settings(**{**_BASE, **overrides})


# -- revocation.py --------------------------------------------------------------------------


def test_revoking_a_token_with_a_numeric_jti_takes_effect(clock: FakeClock) -> None:
    store = MemoryRevocationStore(clock=clock)
    verifier, signer = _es256_verifier(clock, revocation=store)
    claims = {"iss": "https://iss.example", "aud": "api://x", "exp": clock.now + 300, "jti": 42}
    token = signer.sign(claims)
    verified = verifier.verify(token)
    store.revoke_token(verified.claims["jti"], verified.claims["exp"])  # as the README shows
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    assert refused.value.reason == Reason.TOKEN_REVOKED
