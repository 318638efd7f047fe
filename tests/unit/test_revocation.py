"""Revocation without Redis: MemoryRevocationStore, the verifier's use of a store, fail-closed
and fail-open, the settings checks, and both in-process adapters in front of a memory store.

The Redis stores and the cross-process tests are in ``tests/integration/test_revocation.py``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.testclient import TestClient

from jwt_middleware import (
    AsyncVerifier,
    ConfigurationError,
    InvalidToken,
    JWTMiddleware,
    Key,
    Reason,
    Settings,
    SyncVerifier,
)
from jwt_middleware._errors import RevocationUnavailable
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.revocation import (
    GRACE,
    AsyncRedisRevocationStore,
    MemoryRevocationStore,
    RevocationStoreError,
)
from jwt_middleware.testing import OMIT, LocalIssuer, SigningKey, generate_key
from tests.support.clock import FakeClock
from tests.support.servers import VerifierDriver as Verify
from tests.support.servers import (
    closing,
    free_port,
)
from tests.support.whoami import HTTP, assert_revocation_503, claims_of, wsgi_whoami


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module (overrides conftest's)."""
    with LocalIssuer(audience="api://revocation") as local:
        yield local


# -- helpers ---------------------------------------------------------------------------------


@pytest.fixture(params=["sync", "async"])
def make_verify(
    request: pytest.FixtureRequest, make_settings: Callable[..., Settings], clock: FakeClock
) -> Iterator[Callable[..., Verify]]:
    def build(**overrides: Any) -> Verify:
        overrides.setdefault("clock", clock)
        return Verify(request.param, make_settings(**overrides))

    yield from closing(build)


class CountingStore:
    """A MemoryRevocationStore that counts the checks it answers."""

    def __init__(self, inner: MemoryRevocationStore) -> None:
        self.inner = inner
        self.checks: list[tuple[Any, ...]] = []

    def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        self.checks.append((jti, sub, iat))
        return self.inner.is_revoked(jti, sub, iat)

    def revoke_token(self, jti: str, expires_at: float) -> None:
        self.inner.revoke_token(jti, expires_at)

    def revoke_subject(self, sub: str, before: float) -> None:
        self.inner.revoke_subject(sub, before)


class BrokenStore:
    """A store whose checks raise ``error`` (sync)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        raise self.error

    def revoke_token(self, jti: str, expires_at: float) -> None:
        raise self.error

    def revoke_subject(self, sub: str, before: float) -> None:
        raise self.error


class AsyncBrokenStore:
    """A store whose checks raise ``error`` (async)."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        raise self.error

    async def revoke_token(self, jti: str, expires_at: float) -> None:
        raise self.error

    async def revoke_subject(self, sub: str, before: float) -> None:
        raise self.error


@pytest.fixture
def make_http(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., HTTP]]:
    yield from closing(lambda kind, **overrides: HTTP(kind, make_settings(**overrides)))


# -- MemoryRevocationStore ------------------------------------------------------------------


def test_memory_revoked_jti_is_refused_other_jtis_pass(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    """A revoked jti is refused as token_revoked; a token with another jti still verifies."""
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store)
    revoked = issuer.mint(now=clock.now, claims={"jti": "revoked-1"})
    other = issuer.mint(now=clock.now, claims={"jti": "other-1"})
    store.revoke_token("revoked-1", clock.now + 300)
    code: str = Reason.TOKEN_REVOKED  # a str: mypy would call the literal comparison impossible
    assert verify.refused(revoked) == code == "token_revoked"
    assert verify(other).claims["jti"] == "other-1"


def test_memory_jti_entry_is_forgotten_after_exp_plus_grace(clock: FakeClock) -> None:
    """A revoked jti is kept until exp + GRACE, then forgotten and its slot reused."""
    store = MemoryRevocationStore(clock=clock, max_entries=1)
    exp = clock.now + 100
    store.revoke_token("j", exp)
    clock.advance(100 + GRACE - 1)
    assert store.is_revoked("j", None, None)  # past exp, still inside the grace
    clock.advance(1)
    assert not store.is_revoked("j", None, None)
    # ... and its slot is reclaimed: the store (max 1 entry) takes a new revocation.
    store.revoke_token("k", clock.now + 100)
    assert len(store) == 1
    assert store.is_revoked("k", None, None)


def test_memory_revoked_jti_outlives_the_verifiers_leeway(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    """A token accepted within the leeway after its exp is still refused as revoked."""
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store, leeway=GRACE)
    token = issuer.mint(now=clock.now, expires_in=60, claims={"jti": "late"})
    store.revoke_token("late", clock.now + 60)
    clock.advance(60 + GRACE - 1)  # expired, but within the leeway
    assert verify.refused(token) == Reason.TOKEN_REVOKED


def test_memory_revoke_subject_cuts_off_by_iat(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    """Revoking a subject refuses its tokens with iat <= the cut-off; later ones and others pass."""
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store)
    before = issuer.mint(now=clock.now - 10, subject="alice")
    at = issuer.mint(now=clock.now, subject="alice")
    other_subject = issuer.mint(now=clock.now - 10, subject="bob")
    store.revoke_subject("alice", clock.now)
    after = issuer.mint(now=clock.now + 1, subject="alice")
    assert verify.refused(before) == Reason.TOKEN_REVOKED
    assert verify.refused(at) == Reason.TOKEN_REVOKED  # iat <= before
    assert verify(after).subject == "alice"  # iat > before: issued after the cut-off
    assert verify(other_subject).subject == "bob"


def test_memory_revoked_subject_without_iat_is_refused(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    """A token without iat is refused once its subject is revoked, whatever the cut-off."""
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store)
    no_iat = issuer.mint(now=clock.now, subject="alice", claims={"iat": OMIT})
    assert "iat" not in claims_of(no_iat)
    assert verify(no_iat).subject == "alice"  # not revoked yet
    store.revoke_subject("alice", clock.now - 3600)
    assert verify.refused(no_iat) == Reason.TOKEN_REVOKED


def test_memory_subject_cutoff_only_moves_forward(clock: FakeClock) -> None:
    """An older subject revocation after a newer one does not move the cut-off back."""
    store = MemoryRevocationStore(clock=clock)
    store.revoke_subject("alice", clock.now)
    store.revoke_subject("alice", clock.now - 100)  # a late, older revocation
    assert store.is_revoked(None, "alice", clock.now - 50)


def test_memory_subject_entry_expires_after_subject_ttl(clock: FakeClock) -> None:
    """A subject revocation is enforced for subject_ttl seconds, then forgotten."""
    store = MemoryRevocationStore(clock=clock, subject_ttl=1000)
    store.revoke_subject("alice", clock.now)
    clock.advance(999)
    assert store.is_revoked(None, "alice", clock.now - 5000)
    clock.advance(1)
    assert not store.is_revoked(None, "alice", clock.now - 5000)


def test_memory_store_full_of_live_entries_refuses_new_ones(clock: FakeClock) -> None:
    """A store full of live entries refuses new ones (RevocationStoreError) and keeps them all."""
    store = MemoryRevocationStore(clock=clock, max_entries=2)
    store.revoke_token("a", clock.now + 600)
    store.revoke_subject("alice", clock.now)
    with pytest.raises(RevocationStoreError, match="full"):
        store.revoke_token("c", clock.now + 600)
    with pytest.raises(RevocationStoreError, match="full"):
        store.revoke_subject("bob", clock.now)
    # Never silently forgetting: the live entries are all still enforced.
    assert store.is_revoked("a", None, None)
    assert store.is_revoked(None, "alice", clock.now - 1)
    assert not store.is_revoked("c", None, None)
    assert len(store) == 2


def test_memory_store_purges_expired_entries_to_make_room(clock: FakeClock) -> None:
    """A full store drops expired entries to take new ones, and refuses once live ones fill it."""
    store = MemoryRevocationStore(clock=clock, max_entries=3, subject_ttl=50)
    store.revoke_token("short", clock.now + 10)
    store.revoke_token("long", clock.now + 10_000)
    store.revoke_subject("alice", clock.now)
    clock.advance(10 + GRACE)  # "short" and the subject entry are past their lifetime
    store.revoke_token("new-1", clock.now + 600)
    store.revoke_token("new-2", clock.now + 600)
    assert len(store) == 3
    assert store.is_revoked("long", None, None)
    assert store.is_revoked("new-1", None, None) and store.is_revoked("new-2", None, None)
    with pytest.raises(RevocationStoreError):
        store.revoke_token("new-3", clock.now + 600)


def test_memory_full_store_refuses_a_flood_without_rescanning(clock: FakeClock) -> None:
    """While every entry is live, each refused revocation costs O(1), not a scan of the store."""
    store = MemoryRevocationStore(clock=clock, max_entries=20_000)
    for i in range(20_000):
        store.revoke_token(f"live-{i}", clock.now + 600)
    started = time.perf_counter()
    for i in range(2000):
        with pytest.raises(RevocationStoreError, match="full"):
            store.revoke_token(f"flood-{i}", clock.now + 600)
    assert time.perf_counter() - started < 1.0  # a scan per refusal takes seconds
    assert len(store) == 20_000
    assert store.is_revoked("live-0", None, None)


def test_memory_full_store_takes_new_entries_once_its_earliest_expires(clock: FakeClock) -> None:
    """Refusing without a rescan never outlasts the earliest entry, even one added after a purge."""
    store = MemoryRevocationStore(clock=clock, max_entries=2, subject_ttl=10_000)
    store.revoke_token("old", clock.now)  # forgotten at now + GRACE
    store.revoke_token("long", clock.now + 5000)
    clock.advance(GRACE)
    store.revoke_token("short", clock.now + 10)  # the purge made room; "short" goes first
    with pytest.raises(RevocationStoreError):
        store.revoke_subject("alice", clock.now)
    clock.advance(10 + GRACE)
    store.revoke_subject("alice", clock.now)  # "short" has expired: its slot is taken
    assert store.is_revoked("long", None, None)
    assert store.is_revoked(None, "alice", clock.now - 1)
    assert not store.is_revoked("short", None, None)


def test_memory_store_rejects_bad_bounds() -> None:
    """max_entries=0 or subject_ttl=0 is a ValueError."""
    with pytest.raises(ValueError):
        MemoryRevocationStore(max_entries=0)
    with pytest.raises(ValueError):
        MemoryRevocationStore(subject_ttl=0)


# -- the verifier consults the store ---------------------------------------------------------


def test_store_is_consulted_on_every_cache_hit(
    issuer: LocalIssuer,
    clock: FakeClock,
    make_verify: Callable[..., Verify],
    signature_checks: list[str],
) -> None:
    """The store is asked on every use, cache hits included; a cached token revoked later is
    refused from the cache without a new signature check.
    """
    signatures = signature_checks
    store = CountingStore(MemoryRevocationStore(clock=clock))
    verify = make_verify(revocation=store)
    verify(issuer.mint(now=clock.now))  # the keys are fetched (and fresh) from here on
    signatures.clear()
    store.checks.clear()
    token = issuer.mint(now=clock.now, subject="carol", claims={"jti": "cached"})
    verify(token)
    verify(token)  # the cache admits a token on its second use
    verify(token)
    assert len(signatures) == 2  # the third use was a cache hit...
    assert len(store.checks) == 3  # ...and the store was asked every time
    assert store.checks[0] == ("cached", "carol", clock.now)
    store.revoke_token("cached", clock.now + 300)
    assert verify.refused(token) == Reason.TOKEN_REVOKED
    assert len(signatures) == 2  # refused from the cache, not re-verified


def test_store_is_consulted_only_after_the_signature_and_claims(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    """Forged and expired tokens are refused for those reasons without the store being asked."""
    store = CountingStore(MemoryRevocationStore(clock=clock))
    verify = make_verify(revocation=store)
    forged = issuer.mint(now=clock.now, key=generate_key("RS256"), kid=issuer.current_key.kid)
    expired = issuer.mint(now=clock.now - 10_000)
    assert verify.refused(forged) == Reason.SIGNATURE_INVALID
    assert verify.refused(expired) == Reason.EXPIRED
    assert store.checks == []


# -- fail closed -----------------------------------------------------------------------------


def test_store_error_is_revocation_unavailable(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    """A RevocationStoreError is raised as RevocationUnavailable (revocation_unavailable, 503)."""
    verify = make_verify(revocation=BrokenStore(RevocationStoreError("down")))
    with pytest.raises(RevocationUnavailable) as refused:
        verify(issuer.mint(now=clock.now))
    code: str = Reason.REVOCATION_UNAVAILABLE  # a str, compared with its code below
    assert refused.value.reason == code == "revocation_unavailable"
    assert refused.value.status_code == 503


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_store_error_is_503_over_http(
    issuer: LocalIssuer, make_http: Callable[..., HTTP], kind: str
) -> None:
    """A store raising RevocationStoreError gives a JSON 503 with Retry-After on both adapters."""
    http = make_http(kind, revocation=BrokenStore(RevocationStoreError("ConnectionError")))
    assert_revocation_503(http.get(issuer.mint()))


def test_async_store_error_is_503_over_asgi(
    issuer: LocalIssuer, make_http: Callable[..., HTTP]
) -> None:
    """An async store raising RevocationStoreError gives a JSON 503 with Retry-After over ASGI."""
    http = make_http("asgi", revocation=AsyncBrokenStore(RevocationStoreError("timeout")))
    assert_revocation_503(http.get(issuer.mint()))


@pytest.mark.parametrize(
    ("kind", "store"),
    [
        ("asgi", BrokenStore(RuntimeError("bug in the store"))),
        ("asgi", AsyncBrokenStore(KeyError("bug in the store"))),
        ("wsgi", BrokenStore(RuntimeError("bug in the store"))),
    ],
    ids=["asgi-sync-store", "asgi-async-store", "wsgi"],
)
def test_any_other_store_exception_is_503_and_logged_at_error(
    issuer: LocalIssuer,
    make_http: Callable[..., HTTP],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    store: Any,
) -> None:
    """Any other store exception is a 503 too, logged at ERROR with traceback, never the token."""
    http = make_http(kind, revocation=store)
    token = issuer.mint()
    with caplog.at_level(logging.INFO, logger="jwt_middleware"):
        answer = http.get(token)
    assert_revocation_503(answer)
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert errors and "revocation store raised" in errors[0].getMessage()
    assert errors[0].exc_info is not None
    assert token not in caplog.text


def test_websocket_handshake_revoked_is_1008_store_down_is_1013(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A WebSocket handshake closes 1008 for a revoked token and 1013 when the store is down."""
    from starlette.routing import WebSocketRoute
    from starlette.websockets import WebSocket, WebSocketDisconnect

    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.close()

    def close_code(store: Any, token: str) -> int:
        app = Starlette(
            routes=[WebSocketRoute("/ws", ws)],
            middleware=[Middleware(JWTMiddleware, settings=make_settings(revocation=store))],
        )
        with TestClient(app) as client, pytest.raises(WebSocketDisconnect) as closed:
            with client.websocket_connect("/ws", headers={"authorization": f"Bearer {token}"}):
                pass
        return closed.value.code

    store = MemoryRevocationStore()
    token = issuer.mint()
    store.revoke_token(claims_of(token)["jti"], claims_of(token)["exp"])
    assert close_code(store, token) == 1008
    assert close_code(AsyncBrokenStore(RevocationStoreError("down")), issuer.mint()) == 1013


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
@pytest.mark.parametrize("error", [RevocationStoreError("down"), RuntimeError("bug")])
def test_fail_open_lets_the_token_in_with_a_warning(
    issuer: LocalIssuer,
    make_http: Callable[..., HTTP],
    caplog: pytest.LogCaptureFixture,
    kind: str,
    error: Exception,
) -> None:
    """With revocation_fail_open a failing store lets the token in, with a warning logged."""
    http = make_http(kind, revocation=BrokenStore(error), revocation_fail_open=True)
    with caplog.at_level(logging.INFO, logger="jwt_middleware"):
        answer = http.get(issuer.mint(subject="dave"))
    assert answer.status == 200, answer.body
    assert answer.json() == {"sub": "dave"}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("letting the token in" in m for m in warnings), warnings


def test_fail_open_still_refuses_a_revoked_token(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    """With revocation_fail_open a token the store reports revoked is still refused."""
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store, revocation_fail_open=True)
    token = issuer.mint(now=clock.now, claims={"jti": "gone"})
    store.revoke_token("gone", clock.now + 300)
    assert verify.refused(token) == Reason.TOKEN_REVOKED


# -- settings --------------------------------------------------------------------------------


def test_leeway_beyond_the_grace_is_a_configuration_error(
    make_settings: Callable[..., Settings],
) -> None:
    """With a store, a leeway above GRACE is a ConfigurationError; GRACE, or no store, is fine."""
    with pytest.raises(ConfigurationError, match="leeway"):
        make_settings(revocation=MemoryRevocationStore(), leeway=GRACE + 1)
    make_settings(revocation=MemoryRevocationStore(), leeway=GRACE)  # the limit itself is fine
    make_settings(leeway=GRACE + 1)  # without a store there is nothing to outlive


@pytest.mark.parametrize(
    "store",
    [object(), "redis://127.0.0.1:6379/0", type("NotCallable", (), {"is_revoked": True})()],
    ids=["object", "url-string", "non-callable-attribute"],
)
def test_store_without_is_revoked_is_a_configuration_error(
    make_settings: Callable[..., Settings], store: Any
) -> None:
    """A revocation value without a callable is_revoked is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="is_revoked"):
        make_settings(revocation=store)


def test_async_store_under_a_sync_verifier_is_a_configuration_error(
    make_settings: Callable[..., Settings],
) -> None:
    """An async store is a ConfigurationError for SyncVerifier and WSGI; AsyncVerifier takes it."""
    store = AsyncRedisRevocationStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    settings = make_settings(revocation=store, warm_up=False)
    with pytest.raises(ConfigurationError, match="async revocation store"):
        SyncVerifier(settings)
    with pytest.raises(ConfigurationError, match="async revocation store"):
        JWTWSGIMiddleware(wsgi_whoami, settings=settings)
    AsyncVerifier(settings)  # fine on the event loop


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


def test_revoking_a_token_with_a_numeric_jti_takes_effect(clock: FakeClock) -> None:
    """Revoking a numeric jti (42) as the verified claims give it refuses that token as revoked."""
    store = MemoryRevocationStore(clock=clock)
    verifier, signer = _es256_verifier(clock, revocation=store)
    claims = {"iss": "https://iss.example", "aud": "api://x", "exp": clock.now + 300, "jti": 42}
    token = signer.sign(claims)
    verified = verifier.verify(token)
    store.revoke_token(verified.claims["jti"], verified.claims["exp"])  # as the README shows
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    assert refused.value.reason == Reason.TOKEN_REVOKED
