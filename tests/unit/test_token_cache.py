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
from jwt_middleware._flow import TokenCache, token_digest
from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key
from tests.support.clock import FakeClock

ISS, AUD = "https://issuer.example", "api://cache"


@pytest.fixture(scope="module")
def signer() -> SigningKey:
    return generate_key("ES256", kid="k1")


def settings(signer: SigningKey, clock: FakeClock, **overrides: Any) -> Settings:
    options: dict[str, Any] = {
        "issuer": ISS,
        "audience": AUD,
        "keys": [Key.from_pem(signer.public_pem(), kid="k1")],
        "clock": clock,
        "algorithms": ["ES256"],
    }
    options.update(overrides)
    return Settings(**options)


def token(signer: SigningKey, clock: FakeClock, **claims: Any) -> str:
    base = {"iss": ISS, "aud": AUD, "sub": "u", "exp": clock.now + 300, "jti": "one"}
    base.update(claims)
    return str(signer.sign(base))


def cache_of(verifier: SyncVerifier) -> TokenCache:
    """The verifier's token cache (these tests build it with a non-zero size)."""
    tokens = verifier._flow.tokens
    assert tokens is not None
    return tokens


def test_a_reused_token_skips_the_signature_check(
    signer: SigningKey, clock: FakeClock, signature_checks: list[str]
) -> None:
    """A token is cached on its second verification; later uses skip the signature check."""
    calls = signature_checks
    verifier = SyncVerifier(settings(signer, clock))
    t = token(signer, clock)
    verifier.verify(t)  # seen once: not admitted yet (one-off tokens never churn the cache)
    second = verifier.verify(t)  # verified again, now remembered
    for _ in range(10):
        assert verifier.verify(t) is second
    assert calls == ["ES256", "ES256"]


def test_one_off_tokens_are_not_admitted(signer: SigningKey, clock: FakeClock) -> None:
    """Tokens used once are never cached; the record of once-seen digests is bounded too."""
    verifier = SyncVerifier(settings(signer, clock, token_cache_size=16))
    for i in range(100):
        verifier.verify(token(signer, clock, jti=f"once{i}"))
    assert len(cache_of(verifier)._entries) == 0
    assert len(cache_of(verifier)._seen) == 16  # bounded too


def test_disabled_cache_checks_every_time(
    signer: SigningKey, clock: FakeClock, signature_checks: list[str]
) -> None:
    """With token_cache_size=0 every use of a token runs the signature check."""
    calls = signature_checks
    verifier = SyncVerifier(settings(signer, clock, token_cache_size=0))
    t = token(signer, clock)
    for _ in range(3):
        verifier.verify(t)
    assert len(calls) == 3


def test_expiry_is_checked_on_every_hit(signer: SigningKey, clock: FakeClock) -> None:
    """A cached token is refused as expired once its exp passes (leeway 0)."""
    verifier = SyncVerifier(settings(signer, clock, leeway=0))
    t = token(signer, clock, exp=clock.now + 10)
    verifier.verify(t)
    clock.advance(9)
    verifier.verify(t)
    clock.advance(1)
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(t)
    assert excinfo.value.reason == Reason.EXPIRED


def test_not_before_is_checked_on_every_hit(
    signer: SigningKey, clock: FakeClock, signature_checks: list[str]
) -> None:
    """A cached token valid only by nbf leeway is refused from the cache as the clock steps back."""
    verifier = SyncVerifier(settings(signer, clock, leeway=5))
    t = token(signer, clock, nbf=clock.now + 5)  # valid now thanks to the leeway
    verifier.verify(t)
    verifier.verify(t)  # the second use admits it to the cache
    assert verifier.cached(token_digest(t.encode())) is not None
    checks = len(signature_checks)
    clock.now -= 1  # a clock stepping back must not let a cached token in early
    with pytest.raises(InvalidToken) as excinfo:
        verifier.verify(t)
    assert excinfo.value.reason == Reason.NOT_YET_VALID
    assert len(signature_checks) == checks  # refused by the cache's own check


def test_a_different_token_never_hits_another_tokens_entry(
    signer: SigningKey, clock: FakeClock
) -> None:
    """A token differing from a verified one in its signature or its shape is refused."""
    verifier = SyncVerifier(settings(signer, clock))
    good = token(signer, clock)
    verifier.verify(good)
    verifier.verify(good)  # the second use admits it to the cache
    assert verifier.cached(token_digest(good.encode())) is not None
    head, body, sig = good.split(".")
    forged_sig = sig[:-2] + ("AA" if sig[-2:] != "AA" else "BA")
    for forged in (f"{head}.{body}.{forged_sig}", f"{head}.{body}.{sig}x", f"{head}.{body}"):
        with pytest.raises(InvalidToken):
            verifier.verify(forged)


def test_validators_run_on_every_hit(signer: SigningKey, clock: FakeClock) -> None:
    """Validators run on every use, cache hits included: a newly revoked jti is refused at once."""
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


def test_the_cache_is_bounded(signer: SigningKey, clock: FakeClock) -> None:
    """The verified-token cache holds at most token_cache_size entries."""
    verifier = SyncVerifier(settings(signer, clock, token_cache_size=16))
    for i in range(100):
        reused = token(signer, clock, jti=f"t{i}")
        verifier.verify(reused)
        verifier.verify(reused)
    assert len(cache_of(verifier)._entries) == 16


class _ContendedOrderedDict(OrderedDict[bytes, None]):
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
    contended.update(cache_of(verifier)._seen)
    cache_of(verifier)._seen = contended
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


def test_concurrent_second_use_of_a_token_is_not_refused(
    signer: SigningKey, clock: FakeClock
) -> None:
    """Two threads making a token's second use at the same instant both get it verified."""
    verifier = SyncVerifier(settings(signer, clock))
    errors, met = _second_use_race(verifier, token(signer, clock))
    assert met == 2, "the two threads never met inside remember(): the race was not exercised"
    assert errors == []


def test_the_race_harness_catches_a_check_then_delete_remember(
    signer: SigningKey, clock: FakeClock, monkeypatch: pytest.MonkeyPatch
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
    verifier = SyncVerifier(settings(signer, clock))
    errors, met = _second_use_race(verifier, token(signer, clock))
    assert met == 2
    assert [getattr(e, "reason", None) for e in errors] == [Reason.VERIFIER_ERROR]


def test_claims_of_a_cached_token_are_read_only(signer: SigningKey, clock: FakeClock) -> None:
    """A verified token's claims, fresh or from the cache, refuse item assignment (TypeError)."""
    verifier = SyncVerifier(settings(signer, clock))
    t = token(signer, clock, scope="a")
    fresh = verifier.verify(t)
    cached = verifier.verify(t)  # the second use admits it to the cache
    assert verifier.cached(token_digest(t.encode())) is cached
    for verified in (fresh, cached):
        with pytest.raises(TypeError):
            verified.claims["scope"] = "admin"  # type: ignore[index]


def test_cached_tokens_are_dropped_when_the_remote_keys_change(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """A cached token whose key a refresh removed from the JWKS is refused as kid_unknown."""
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
    assert old.kid not in verifier.remote.policy.keyset


def test_async_verifier_uses_the_cache_too(
    signer: SigningKey, clock: FakeClock, signature_checks: list[str]
) -> None:
    """The AsyncVerifier caches too: three uses of one token cost two signature checks."""
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
    """A refresh that returns the same JWKS keeps the parsed KeySet, so cached tokens hit again."""
    calls = signature_checks
    verifier = SyncVerifier(make_settings(clock=clock))
    t = issuer.mint(now=clock.now, expires_in=3600)
    verifier.verify(t)
    verifier.verify(t)  # now in the cache
    keyset = verifier.remote.policy.keyset
    clock.advance(601)  # stale: served, refreshed (same document) in the background
    verifier.verify(t)
    verifier.remote.refresh()  # wait for it
    assert issuer.jwks_requests == 2
    assert verifier.remote.policy.keyset is keyset
    verifier.verify(t)  # a cache hit again: the entry is bound to the same KeySet
    assert len(calls) == 3  # two to get in, one while the keys were stale


def test_cache_entry_is_bound_to_the_key_set_that_verified_it_sync(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """A token whose key set is replaced during its verification is not cached under the new set;
    its next use is refused as kid_unknown."""
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
    assert old_kid not in verifier.remote.policy.keyset
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)  # must not be a cache hit: its key is gone
    assert refused.value.reason == Reason.KID_UNKNOWN


def test_cache_entry_is_bound_to_the_key_set_that_verified_it_async(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """AsyncVerifier: a token whose key set is replaced while a validator awaits is not cached;
    its next use is refused."""
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
    mutate: Any, signer: SigningKey, clock: FakeClock
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


def test_nested_header_fields_are_read_only(signer: SigningKey, clock: FakeClock) -> None:
    """A nested header member is shared by every token with that header: read-only too."""
    t = str(signer.sign({"iss": ISS, "aud": AUD, "exp": clock.now + 300}, {"ext": {"a": [1]}}))
    verified = SyncVerifier(settings(signer, clock)).verify(t)
    with pytest.raises(TypeError):
        verified.header["ext"]["a"].append(2)
    assert verified.header["ext"] == {"a": [1]}


def test_read_only_claims_still_behave_like_json(signer: SigningKey, clock: FakeClock) -> None:
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


def test_deeply_nested_claims_are_frozen_to_the_bottom(
    signer: SigningKey, clock: FakeClock
) -> None:
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
