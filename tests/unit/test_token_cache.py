"""The verified-token cache: reuse skips the signature, never the rules."""

from __future__ import annotations

import asyncio
import threading
from collections import OrderedDict
from typing import Any

import pytest

from jwt_middleware import (
    AsyncVerifier,
    InvalidToken,
    Key,
    Reason,
    Settings,
    SyncVerifier,
)
from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key
from tests.support.clock import FakeClock

# -- verify.py: the verified-token cache -------------------------------------------------------


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
    assert len(verifier._flow.tokens._entries) == 0
    assert len(verifier._flow.tokens._seen) == 16  # bounded too


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
    assert len(verifier._flow.tokens._entries) == 16


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


NESTED = {
    "roles": ["a", "b"],
    "org": {"id": 7, "teams": [{"name": "t", "ids": [1, 2]}]},
    "grid": [[1, 2], [3]],
}

MUTATIONS: dict[str, Any] = {
    "list[i]=": lambda c: c["roles"].__setitem__(0, "admin"),
    "list[:]=": lambda c: c["roles"].__setitem__(slice(None), ["admin"]),
    "del list[i]": lambda c: c["roles"].__delitem__(0),
    "append": lambda c: c["roles"].append("admin"),
    "extend": lambda c: c["roles"].extend(["admin"]),
    "insert": lambda c: c["roles"].insert(0, "admin"),
    "list.pop": lambda c: c["roles"].pop(),
    "remove": lambda c: c["roles"].remove("a"),
    "list.clear": lambda c: c["roles"].clear(),
    "sort": lambda c: c["roles"].sort(reverse=True),
    "reverse": lambda c: c["roles"].reverse(),
    "+=": lambda c: c["roles"].__iadd__(["admin"]),
    "*=": lambda c: c["roles"].__imul__(2),
    "dict[k]=": lambda c: c["org"].__setitem__("id", 1),
    "del dict[k]": lambda c: c["org"].__delitem__("id"),
    "setdefault": lambda c: c["org"].setdefault("admin", True),
    "update": lambda c: c["org"].update(admin=True),
    "dict.pop": lambda c: c["org"].pop("id"),
    "popitem": lambda c: c["org"].popitem(),
    "dict.clear": lambda c: c["org"].clear(),
    "|=": lambda c: c["org"].__ior__({"admin": True}),
    "deep list": lambda c: c["org"]["teams"][0]["ids"].append(3),
    "deep dict": lambda c: c["org"]["teams"][0].__setitem__("name", "admins"),
    "list in list": lambda c: c["grid"][0].append(9),
    "top level": lambda c: c.update(sub="admin"),
}


@pytest.mark.parametrize("mutate", list(MUTATIONS.values()), ids=list(MUTATIONS))
def test_nested_claims_of_a_cached_token_are_read_only(
    mutate: Any, signer: Any, clock: FakeClock
) -> None:
    """Every mutator on any nested claim of a cached token raises TypeError, and the next
    request with the token sees the original claims."""
    verifier = SyncVerifier(settings(signer, clock))
    t = token(signer, clock, **NESTED)
    verifier.verify(t)
    cached = verifier.verify(t)  # admitted: from here on every request shares this object
    with pytest.raises(TypeError, match="read-only"):
        mutate(cached.claims)
    again = verifier.verify(t)
    assert again is cached
    assert {k: again.claims[k] for k in NESTED} == NESTED and again.claims["sub"] == "u"


def test_nested_header_fields_are_read_only(signer: Any, clock: FakeClock) -> None:
    """A nested header member is shared by every token with that header: read-only too."""
    t = str(signer.sign({"iss": ISS, "aud": AUD, "exp": clock.now + 300}, {"ext": {"a": [1]}}))
    verified = SyncVerifier(settings(signer, clock)).verify(t)
    with pytest.raises(TypeError):
        verified.header["ext"]["a"].append(2)
    assert verified.header["ext"] == {"a": [1]}


def test_read_only_claims_still_behave_like_json(signer: Any, clock: FakeClock) -> None:
    """Frozen claims are still dicts and lists: json.dumps, ==, isinstance, iteration work, and
    copies (dict(), copy, deepcopy, |, +) are ordinary mutable values; pickling round-trips."""
    import copy
    import json
    import pickle

    claims = SyncVerifier(settings(signer, clock)).verify(token(signer, clock, **NESTED)).claims
    assert json.loads(json.dumps(claims)) == dict(claims)  # mappingproxy refused this before
    assert isinstance(claims, dict) and isinstance(claims["roles"], list)
    assert claims["roles"] == ["a", "b"] and list(claims["org"]) == ["id", "teams"]
    shallow, deep = copy.copy(claims), copy.deepcopy(claims)
    shallow["sub"] = deep["sub"] = "x"
    deep["org"]["teams"][0]["ids"].append(3)
    assert claims["sub"] == "u" and claims["org"]["teams"][0]["ids"] == [1, 2]
    (claims | {"x": 1})["y"] = 2
    (claims["roles"] + ["c"]).append("d")
    dict(claims)["z"] = 3
    restored = pickle.loads(pickle.dumps(claims))
    assert restored == claims
    with pytest.raises(TypeError):
        restored["roles"].append("admin")


def test_deeply_nested_claims_are_frozen_to_the_bottom(signer: Any, clock: FakeClock) -> None:
    """Arrays nested 200 deep (no recursion limit near) are accepted and read-only throughout."""
    deep: Any = ["bottom"]
    for _ in range(200):
        deep = [deep]
    claims = SyncVerifier(settings(signer, clock)).verify(token(signer, clock, deep=deep)).claims
    inner = claims["deep"]
    while isinstance(inner[0], list):
        inner = inner[0]
    with pytest.raises(TypeError):
        inner.append("more")


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
