"""The remote key cache against a real key server on 127.0.0.1 (async and sync transports).

Fetches are counted where they land: on the key server.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import jwt_middleware
from jwt_middleware import (
    AsyncVerifier,
    InvalidToken,
    KeysUnavailable,
    Reason,
    Settings,
    SyncVerifier,
)
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.testing import LocalIssuer, generate_key
from tests.support.clock import FakeClock
from tests.support.servers import VerifierDriver as Both
from tests.support.servers import closing


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.fixture(params=["async", "sync"])
def make(
    request: pytest.FixtureRequest, make_settings: Any, clock: FakeClock
) -> Iterator[Callable[..., Both]]:
    def build(**overrides: Any) -> Both:
        overrides.setdefault("clock", clock)
        return Both(request.param, make_settings(**overrides))

    yield from closing(build)


def test_keys_are_fetched_once_then_served_from_cache(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """The JWKS is fetched once; twenty verifications afterwards use the cached keys."""
    v = make()
    for _ in range(20):
        assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 1


def test_discovery_finds_the_jwks_and_is_done_once(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """Without jwks_url the JWKS is found by OIDC discovery, and discovery runs only once."""
    v = make(jwks_url=None)  # no key source given: OIDC discovery from the issuer
    for _ in range(3):
        v.verify(issuer.mint(now=clock.now))
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)


def test_discovery_document_naming_another_issuer_is_refused(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A discovery document naming another issuer gives 503 (keys unavailable); no JWKS fetch."""
    # Same discovery URL, but the document says the issuer is issuer.url, not issuer.url + "/".
    v = make(jwks_url=None, issuer=issuer.issuer + "/")
    token = issuer.mint(now=clock.now, claims={"iss": issuer.issuer + "/"})
    with pytest.raises(KeysUnavailable):
        v.verify(token)
    assert issuer.jwks_requests == 0


def test_discovery_is_retried_after_the_jwks_uri_fails(
    issuer: LocalIssuer, clock: FakeClock
) -> None:
    """When the discovered jwks_uri fails, discovery is redone later and finds a fixed document."""
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
    """The WSGI middleware's warm-up does not raise when discovery names an unparseable jwks_uri."""
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
    """A discovered jwks_uri that httpx cannot parse makes verification 503, not a crash."""
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


def test_rotated_key_verifies_on_its_first_request(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A token signed by a newly rotated key verifies on its first use, after one refetch."""
    v = make()
    v.verify(issuer.mint(now=clock.now))
    clock.advance(31)  # past the cooldown since the last fetch
    issuer.rotate()
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 2


def test_rotated_key_within_the_cooldown_works_once_it_has_passed(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """In the cooldown a new kid is kid_unknown with no fetch; after the cooldown it verifies."""
    v = make()
    v.verify(issuer.mint(now=clock.now))
    issuer.rotate()
    token = issuer.mint(now=clock.now)
    with pytest.raises(InvalidToken) as excinfo:
        v.verify(token)
    assert excinfo.value.reason == Reason.KID_UNKNOWN
    assert issuer.jwks_requests == 1  # rate limited: no fetch inside the cooldown
    clock.advance(30)
    assert v.verify(token).subject == "user-1"
    assert issuer.jwks_requests == 2


def test_flood_of_random_kids_costs_one_fetch_per_cooldown(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """Tokens with hundreds of random kids cost one JWKS fetch per cooldown."""
    v = make()
    v.verify(issuer.mint(now=clock.now))
    clock.advance(30)
    for i in range(200):
        with pytest.raises(InvalidToken) as excinfo:
            v.verify(issuer.mint(now=clock.now, kid=f"random-{i}"))
        assert excinfo.value.reason == Reason.KID_UNKNOWN
    assert issuer.jwks_requests == 2
    clock.advance(30)
    for i in range(50):
        with pytest.raises(InvalidToken):
            v.verify(issuer.mint(now=clock.now, kid=f"again-{i}"))
    assert issuer.jwks_requests == 3


def test_concurrent_async_requests_with_a_new_kid_share_one_fetch(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """A hundred concurrent async requests with a new kid share one JWKS fetch and all verify."""
    verifier = AsyncVerifier(make_settings(clock=clock))

    async def scenario() -> list[Any]:
        await verifier.verify(issuer.mint(now=clock.now))
        clock.advance(31)
        issuer.rotate()
        issuer.set_fault("slow", delay=0.3)  # keep the fetch in flight while all requests arrive
        tokens = [issuer.mint(now=clock.now) for _ in range(100)]
        results = await asyncio.gather(*(verifier.verify(t) for t in tokens))
        await verifier.aclose()
        return results

    results = run(scenario())
    assert all(r.subject == "user-1" for r in results)
    assert issuer.jwks_requests == 2


def test_concurrent_threads_with_a_new_kid_share_one_fetch(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """Thirty threads verifying new-kid tokens at once share one JWKS fetch and all verify."""
    verifier = SyncVerifier(make_settings(clock=clock))
    verifier.verify(issuer.mint(now=clock.now))
    clock.advance(31)
    issuer.rotate()
    issuer.set_fault("slow", delay=0.3)
    tokens = [issuer.mint(now=clock.now) for _ in range(30)]
    results: list[Any] = []
    barrier = threading.Barrier(len(tokens))

    def worker(token: str) -> None:
        barrier.wait()
        results.append(verifier.verify(token).subject)

    threads = [threading.Thread(target=worker, args=(t,)) for t in tokens]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    verifier.close()
    assert results == ["user-1"] * len(tokens)
    assert issuer.jwks_requests == 2


def test_key_server_down_keeps_serving_held_keys_until_the_stale_bound(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """With the key server down, held keys keep verifying until max age plus max stale, then 503."""
    v = make(jwks_max_stale=3600)
    v.verify(issuer.mint(now=clock.now))
    issuer.set_fault("down")
    clock.advance(601)  # keys expired: served stale, refreshed in the background
    assert v.verify(issuer.mint(now=clock.now, expires_in=7200)).subject == "user-1"
    v.settle()
    assert v.verifier.remote.policy.last_error is not None
    clock.advance(3000)
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    v.settle()
    clock.advance(1000)  # past max age + max stale
    with pytest.raises(KeysUnavailable) as excinfo:
        v.verify(issuer.mint(now=clock.now))
    assert excinfo.value.retry_after >= 1


def test_key_server_recovers_after_an_outage(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """After an outage the keys are fetched again once the cooldown has passed; inside it, 503."""
    issuer.set_fault("down")
    v = make()
    with pytest.raises(KeysUnavailable):
        v.verify(issuer.mint(now=clock.now))
    issuer.set_fault(None)
    with pytest.raises(KeysUnavailable):  # inside the cooldown: not retried yet
        v.verify(issuer.mint(now=clock.now))
    clock.advance(30)
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"


def test_refresh_picks_up_a_retired_key_removal(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A key removed from the JWKS is dropped by the next refresh: its tokens become kid_unknown."""
    v = make()
    old = issuer.current_key
    v.verify(issuer.mint(now=clock.now))
    issuer.rotate(retire_old=True)
    clock.advance(601)
    v.verify(issuer.mint(now=clock.now + 0, key=old, expires_in=3600))  # stale serve + refresh
    v.settle()
    with pytest.raises(InvalidToken) as excinfo:
        v.verify(issuer.mint(now=clock.now, key=old))
    assert excinfo.value.reason == Reason.KID_UNKNOWN


@pytest.mark.parametrize(
    ("mode", "params"),
    [
        ("status", {"status": 500}),
        ("status", {"status": 404}),
        ("garbage", {}),
        ("wrong_shape", {}),
        ("wrong_shape", {"body": []}),
        ("wrong_shape", {"body": {"keys": [{"kty": "RSA"}]}}),
        ("huge", {"size": 200_000}),
        ("redirect", {}),
        ("truncated", {}),
        ("slow", {"delay": 1.5}),
    ],
)
def test_broken_key_server_gives_503_never_a_crash(
    issuer: LocalIssuer, make: Any, clock: FakeClock, mode: str, params: dict[str, Any]
) -> None:
    """Each kind of broken key server gives 503 after one request, and never wipes held keys."""
    issuer.set_fault(mode, **params)
    v = make(jwks_timeout=0.5)
    with pytest.raises(KeysUnavailable) as excinfo:
        v.verify(issuer.mint(now=clock.now))
    assert excinfo.value.status_code == 503
    assert issuer.jwks_requests == 1
    # and a broken answer does not wipe keys we already hold
    issuer.set_fault(None)
    clock.advance(30)
    v.verify(issuer.mint(now=clock.now))
    issuer.set_fault(mode, **params)
    clock.advance(601)
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"


def test_redirect_is_not_followed(issuer: LocalIssuer, make: Any, clock: FakeClock) -> None:
    """A redirect from the JWKS URL is not followed: 503, and the target is never requested."""
    issuer.set_fault("redirect", location=issuer.jwks_url + "?moved")
    v = make()
    with pytest.raises(KeysUnavailable):
        v.verify(issuer.mint(now=clock.now))
    assert issuer.jwks_requests == 1  # the redirect target was never requested


def test_unusable_keys_are_skipped_and_good_ones_kept(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """Unusable JWKS entries (unknown kty, secret, private, bad point, non-object) are skipped."""
    good = issuer.current_key.public_jwk()
    weird = [
        {"kty": "XYZ", "kid": "strange"},
        {"kty": "oct", "kid": "secret", "k": "c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0c2VjcmV0"},
        {**good, "kid": "with-private", "d": "AQAB"},
        {"kty": "EC", "kid": "bad-point", "crv": "P-256", "x": "AA", "y": "AA"},
        "not an object",
    ]
    issuer.set_fault("wrong_shape", body={"keys": [*weird, good]})
    v = make()
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"


def test_duplicate_kids_in_a_remote_jwks_are_ambiguous(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A kid shared by two keys of a remote JWKS is ambiguous: its token is kid_unknown."""
    good = issuer.current_key.public_jwk()
    other = generate_key("RS256", kid=good["kid"]).public_jwk()
    issuer.set_fault(
        "wrong_shape", body={"keys": [good, other, generate_key("ES256").public_jwk()]}
    )
    v = make()
    with pytest.raises(InvalidToken) as excinfo:
        v.verify(issuer.mint(now=clock.now))
    assert excinfo.value.reason == Reason.KID_UNKNOWN


def test_cache_control_max_age_shortens_freshness(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A JWKS answer's Cache-Control max-age=60 makes the keys refresh after 60 s, not 600."""
    issuer.cache_control = "public, max-age=60"
    v = make()
    v.verify(issuer.mint(now=clock.now))
    clock.advance(59)
    v.verify(issuer.mint(now=clock.now))
    v.settle()
    assert issuer.jwks_requests == 1
    clock.advance(2)
    v.verify(issuer.mint(now=clock.now))
    v.settle()
    assert issuer.jwks_requests == 2


def test_warm_up_fetches_before_the_first_request(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """warm_up() fetches the JWKS, so the first request needs no fetch."""
    v = make()
    if v.kind == "async":
        v.run(v.verifier.warm_up())
    else:
        v.verifier.warm_up()
    assert issuer.jwks_requests == 1
    v.verify(issuer.mint(now=clock.now))
    assert issuer.jwks_requests == 1


def test_junk_tokens_cost_no_fetch(issuer: LocalIssuer, make: Any, clock: FakeClock) -> None:
    """Malformed, expired, wrong-audience, wrong-issuer and alg=none tokens cause no JWKS fetch."""
    v = make()
    junk = [
        "not-a-token",
        issuer.mint(now=clock.now, expires_in=-3600),
        issuer.mint(now=clock.now, audience="someone-else"),
        issuer.mint(now=clock.now, claims={"iss": "https://evil.example"}),
        "eyJhbGciOiJub25lIn0." + issuer.mint(now=clock.now).split(".")[1] + ".",
    ]
    for token in junk:
        with pytest.raises(InvalidToken):
            v.verify(token)
    assert issuer.jwks_requests == 0


# -- the lookup the verifier calls ------------------------------------------------------------


def keyset_now(v: Both, kid: str | None) -> Any:
    """remote.keyset_now(kid), called on the driver's event loop for the async transport (a
    background refresh is a task on that loop)."""
    remote = v.verifier.remote
    if v.kind == "sync":
        return remote.keyset_now(kid)

    async def on_the_loop() -> Any:
        return remote.keyset_now(kid)

    return v.run(on_the_loop())


def test_keyset_now_never_waits_and_keyset_for_fetches(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """keyset_now answers from held keys only: None while a fetch must be waited for (starting
    none), then the keys, and the same keys at once when stale, with the refresh in flight
    behind them; keyset_for is what fetches."""
    v = make()
    remote, kid = v.verifier.remote, issuer.current_key.kid
    assert keyset_now(v, kid) is None
    assert (issuer.jwks_requests, remote.policy.in_flight) == (0, False)
    keys = v.run(remote.keyset_for(kid))
    assert kid in keys.kids and issuer.jwks_requests == 1
    assert keyset_now(v, kid) is keys
    assert keyset_now(v, "unknown") is keys  # in the cooldown: "kid unknown" from these keys
    clock.advance(601)
    issuer.set_fault("slow", delay=0.5)
    assert keyset_now(v, kid) is keys
    assert remote.policy.in_flight  # answered without waiting for the refresh it started
    v.settle()
    assert (issuer.jwks_requests, remote.policy.in_flight) == (2, False)


def test_each_lookup_consults_the_policy_once(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """keyset_for and keyset_now each take one decision (one plan() at one instant), whether
    they fetch or answer from held keys."""
    v = make()
    remote, kid = v.verifier.remote, issuer.current_key.kid
    plans: list[Any] = []
    plan = remote.policy.plan

    def counted(*args: Any) -> Any:
        plans.append(plan(*args))
        return plans[-1]

    remote.policy.plan = counted
    v.run(remote.keyset_for(kid))  # fetches
    v.run(remote.keyset_for(kid))  # held keys
    keyset_now(v, kid)
    assert len(plans) == 3


def test_the_sync_key_cache_does_not_import_asyncio() -> None:
    """Importing _jwks (policy, fetch flow, SyncJWKS) imports no asyncio, so a WSGI process
    need not; AsyncJWKS lives in _jwks_async."""
    package = Path(jwt_middleware.__file__).parent
    # The package's __init__ is left out: this pins _jwks' own imports, not the whole API's.
    script = f"""
import importlib, sys, types
package = types.ModuleType("jwt_middleware")
package.__path__ = [{str(package)!r}]
sys.modules["jwt_middleware"] = package
jwks = importlib.import_module("jwt_middleware._jwks")
assert "asyncio" not in sys.modules, "asyncio imported"
assert "jwt_middleware._jwks_async" not in sys.modules
"""
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
