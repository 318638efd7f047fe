"""The JWKS cache's decisions, with a hand-moved clock and no I/O (jwks.JWKSPolicy)."""

from __future__ import annotations

import pytest

from jwt_middleware import Key, KeysUnavailable
from jwt_middleware._jwks import JWKSPolicy, Plan, _parse_max_age
from jwt_middleware._keys import KeySet

T0 = 1_000_000.0


@pytest.fixture(scope="module")
def keyset() -> KeySet:
    return KeySet([Key.from_secret(b"k" * 32, kid="known")])


def policy(
    *, max_age: float = 600.0, cooldown: float = 30.0, max_stale: float = 3600.0
) -> JWKSPolicy:
    return JWKSPolicy(max_age=max_age, cooldown=cooldown, max_stale=max_stale)


def test_first_request_fetches_and_known_kid_then_uses_cache(keyset: KeySet) -> None:
    """The first request fetches; afterwards a known kid (or no kid) is answered from the cache."""
    p = policy()
    assert p.plan("known", T0) is Plan.FETCH
    p.begin(T0)
    p.succeeded(keyset, T0, None)
    assert p.plan("known", T0 + 1) is Plan.USE
    assert p.plan(None, T0 + 1) is Plan.USE
    assert p.usable_keyset("known", T0 + 1) is keyset


def test_unknown_kid_fetches_at_most_once_per_cooldown(keyset: KeySet) -> None:
    """An unknown kid refetches at most once per cooldown; inside it the healthy keyset is used."""
    p = policy()
    p.begin(T0)
    p.succeeded(keyset, T0, None)
    assert p.plan("new", T0 + 5) is Plan.USE  # inside the cooldown: answer "kid unknown"
    assert p.usable_keyset("new", T0 + 5) is keyset  # no 503: the key server is healthy
    assert p.plan("new", T0 + 30) is Plan.FETCH  # the cooldown has passed
    p.begin(T0 + 30)
    assert p.plan("other", T0 + 30) is Plan.FETCH  # joins the fetch in flight
    assert not p.may_fetch(T0 + 30)
    p.succeeded(keyset, T0 + 30, None)
    assert p.plan("other", T0 + 31) is Plan.USE
    assert p.fetches == 2


def test_expired_keys_keep_serving_while_one_background_refresh_runs(keyset: KeySet) -> None:
    """Expired keys keep serving during one background refresh; a failure waits out the cooldown."""
    p = policy()
    p.begin(T0)
    p.succeeded(keyset, T0, None)
    later = T0 + 601
    assert p.plan("known", later) is Plan.USE_AND_REFRESH
    p.begin(later)
    assert p.plan("known", later) is Plan.USE  # in flight: no second refresh
    p.failed("down")
    assert p.plan("known", later + 10) is Plan.USE  # failed recently: wait for the cooldown
    assert p.plan("known", later + 30) is Plan.USE_AND_REFRESH
    assert p.usable_keyset("known", later + 30) is keyset


def test_stale_bound_ends_stale_serving(keyset: KeySet) -> None:
    """With the key server down, stale keys serve until max_stale, then requests get 503."""
    p = policy(max_stale=100.0)
    p.begin(T0)
    p.succeeded(keyset, T0, None)
    p.begin(T0 + 650)
    p.failed("down")
    assert p.usable_keyset("known", T0 + 699) is keyset
    with pytest.raises(KeysUnavailable):
        p.usable_keyset("known", T0 + 700)
    assert p.plan("known", T0 + 700) is Plan.FETCH
    p.begin(T0 + 700)
    p.failed("down")
    assert p.plan("known", T0 + 710) is Plan.UNAVAILABLE


def test_never_fetched_and_failing_is_unavailable_with_retry_after() -> None:
    """Never fetched and failing: 503, with the rest of the cooldown as Retry-After."""
    p = policy()
    p.begin(T0)
    p.failed("connection refused")
    assert p.plan("known", T0 + 10) is Plan.UNAVAILABLE
    with pytest.raises(KeysUnavailable) as excinfo:
        p.usable_keyset("known", T0 + 10)
    assert excinfo.value.retry_after == 20
    assert excinfo.value.status_code == 503
    assert p.plan("known", T0 + 30) is Plan.FETCH


def test_unknown_kid_after_a_failed_refresh_is_unavailable_not_unknown(keyset: KeySet) -> None:
    """After a failed refresh an unknown kid gets 503, not 401; known kids still get the keyset."""
    p = policy()
    p.begin(T0)
    p.succeeded(keyset, T0, None)
    p.begin(T0 + 40)
    p.failed("500")
    # The new key may exist; we cannot see it. 503, not a misleading 401.
    with pytest.raises(KeysUnavailable):
        p.usable_keyset("new", T0 + 41)
    assert p.usable_keyset("known", T0 + 41) is keyset


@pytest.mark.parametrize(
    ("header", "fresh_for"),
    [
        (None, 600.0),
        ("max-age=120", 120.0),
        ("public, max-age=5", 30.0),  # never below the cooldown
        ("max-age=999999", 600.0),  # never above our own max age
        ("no-cache", 30.0),
        ("no-store, max-age=300", 30.0),
        ("max-age=abc", 600.0),
    ],
)
def test_cache_control_max_age_is_honoured_within_bounds(
    keyset: KeySet, header: str | None, fresh_for: float
) -> None:
    """Cache-Control max-age sets freshness, clamped to [cooldown, configured max_age]."""
    p = policy()
    p.begin(T0)
    p.succeeded(keyset, T0, _parse_max_age(header))
    assert p.plan("known", T0 + fresh_for - 0.5) is Plan.USE
    assert p.plan("known", T0 + fresh_for) is Plan.USE_AND_REFRESH


def test_unavailable_can_name_its_own_reason(keyset: KeySet) -> None:
    """A waiter that gave up answers 503 with why, not with an older fetch's error."""
    p = policy()
    p.begin(T0)
    p.failed("connection refused")
    assert p.unavailable(T0 + 10).detail == "connection refused"
    gave_up = p.unavailable(T0 + 10, "key server too slow (total time limit)")
    assert (gave_up.detail, gave_up.retry_after, gave_up.status_code) == (
        "key server too slow (total time limit)",
        20,
        503,
    )
