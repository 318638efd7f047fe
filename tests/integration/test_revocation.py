"""Revocation: the stores, the verifier's use of them, fail-closed, and sharing across processes.

The Redis stores run against a real ``redis-server`` (``tests/support/redis_server.py``); the
cross-process tests run the same small Starlette app twice under uvicorn and a WSGI app under
gunicorn, all sharing that Redis, and log out through one to be refused by the others.
"""

from __future__ import annotations

# -- verify.py: the verified-token cache -------------------------------------------------------
import contextlib
import json
import logging
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
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
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.revocation import (
    GRACE,
    AsyncRedisRevocationStore,
    MemoryRevocationStore,
    RedisRevocationStore,
    RevocationStoreError,
)
from jwt_middleware.testing import OMIT, LocalIssuer, SigningKey, generate_key
from tests.support.clock import FakeClock
from tests.support.redis_server import (
    RedisServer,
    redis_clean,
    redis_server,
    redis_url,
    spare_redis,
)
from tests.support.servers import (
    Answer,
    AppServer,
    Blocking,
    InProcess,
    bearer,
    closing,
    free_port,
    gunicorn_argv,
    jwt_env,
    uvicorn_argv,
    wait_all_ready,
)
from tests.support.servers import VerifierDriver as Verify

__all__ = ["redis_clean", "redis_server", "redis_url", "spare_redis"]  # fixtures, used by name


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module and its app processes (overrides conftest's)."""
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


def claims_of(token: str) -> dict[str, Any]:
    import base64

    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


# -- HTTP: the same request through the ASGI and the WSGI middleware --------------------------


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity})


def wsgi_whoami(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    token = get_token(environ)
    body = json.dumps({"sub": token.subject if token is not None else None}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class HTTP(InProcess):
    """An app protected by JWTMiddleware (ASGI, TestClient) or JWTWSGIMiddleware (werkzeug)."""

    def __init__(self, kind: str, settings: Settings) -> None:
        super().__init__(kind, settings, routes=[Route("/whoami", whoami)], wsgi_app=wsgi_whoami)

    def get(self, token: str, path: str = "/whoami") -> Answer:
        return self.request("GET", path, bearer(token))

    def close(self) -> None:
        store = self.settings.revocation
        if self.kind == "asgi" and isinstance(store, AsyncRedisRevocationStore):
            portal = self.test_client.portal  # on the loop its sockets live on
            assert portal is not None
            portal.call(store.client.aclose)
        super().close()
        if isinstance(store, RedisRevocationStore):
            store.client.close()


@pytest.fixture
def make_http(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., HTTP]]:
    yield from closing(lambda kind, **overrides: HTTP(kind, make_settings(**overrides)))


def assert_revocation_503(answer: Answer) -> None:
    assert answer.status == 503
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["retry-after"]) >= 1
    assert "www-authenticate" not in answer.headers
    assert answer.json()["error"] == "temporarily_unavailable"


# -- the Redis test server itself -------------------------------------------------------------


def test_missing_redis_server_skips_locally_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import shutil

    from tests.support import redis_server as helper

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        helper.require_redis_server()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI"):
        helper.require_redis_server()


# -- MemoryRevocationStore ------------------------------------------------------------------


def test_memory_revoked_jti_is_refused_other_jtis_pass(
    issuer: LocalIssuer, clock: FakeClock, make_verify: Callable[..., Verify]
) -> None:
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store)
    revoked = issuer.mint(now=clock.now, claims={"jti": "revoked-1"})
    other = issuer.mint(now=clock.now, claims={"jti": "other-1"})
    store.revoke_token("revoked-1", clock.now + 300)
    assert verify.refused(revoked) == Reason.TOKEN_REVOKED == "token_revoked"
    assert verify(other).claims["jti"] == "other-1"


def test_memory_jti_entry_is_forgotten_after_exp_plus_grace(clock: FakeClock) -> None:
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
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store)
    no_iat = issuer.mint(now=clock.now, subject="alice", claims={"iat": OMIT})
    assert "iat" not in claims_of(no_iat)
    assert verify(no_iat).subject == "alice"  # not revoked yet
    store.revoke_subject("alice", clock.now - 3600)
    assert verify.refused(no_iat) == Reason.TOKEN_REVOKED


def test_memory_subject_cutoff_only_moves_forward(clock: FakeClock) -> None:
    store = MemoryRevocationStore(clock=clock)
    store.revoke_subject("alice", clock.now)
    store.revoke_subject("alice", clock.now - 100)  # a late, older revocation
    assert store.is_revoked(None, "alice", clock.now - 50)


def test_memory_subject_entry_expires_after_subject_ttl(clock: FakeClock) -> None:
    store = MemoryRevocationStore(clock=clock, subject_ttl=1000)
    store.revoke_subject("alice", clock.now)
    clock.advance(999)
    assert store.is_revoked(None, "alice", clock.now - 5000)
    clock.advance(1)
    assert not store.is_revoked(None, "alice", clock.now - 5000)


def test_memory_store_full_of_live_entries_refuses_new_ones(clock: FakeClock) -> None:
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
    verify = make_verify(revocation=BrokenStore(RevocationStoreError("down")))
    with pytest.raises(RevocationUnavailable) as refused:
        verify(issuer.mint(now=clock.now))
    assert refused.value.reason == Reason.REVOCATION_UNAVAILABLE == "revocation_unavailable"
    assert refused.value.status_code == 503


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_store_error_is_503_over_http(
    issuer: LocalIssuer, make_http: Callable[..., HTTP], kind: str
) -> None:
    http = make_http(kind, revocation=BrokenStore(RevocationStoreError("ConnectionError")))
    assert_revocation_503(http.get(issuer.mint()))


def test_async_store_error_is_503_over_asgi(
    issuer: LocalIssuer, make_http: Callable[..., HTTP]
) -> None:
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
    store = MemoryRevocationStore(clock=clock)
    verify = make_verify(revocation=store, revocation_fail_open=True)
    token = issuer.mint(now=clock.now, claims={"jti": "gone"})
    store.revoke_token("gone", clock.now + 300)
    assert verify.refused(token) == Reason.TOKEN_REVOKED


# -- settings --------------------------------------------------------------------------------


def test_leeway_beyond_the_grace_is_a_configuration_error(
    make_settings: Callable[..., Settings],
) -> None:
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
    with pytest.raises(ConfigurationError, match="is_revoked"):
        make_settings(revocation=store)


def test_async_store_under_a_sync_verifier_is_a_configuration_error(
    make_settings: Callable[..., Settings],
) -> None:
    store = AsyncRedisRevocationStore.from_url(f"redis://127.0.0.1:{free_port()}/0")
    settings = make_settings(revocation=store, warm_up=False)
    with pytest.raises(ConfigurationError, match="async revocation store"):
        SyncVerifier(settings)
    with pytest.raises(ConfigurationError, match="async revocation store"):
        JWTWSGIMiddleware(wsgi_whoami, settings=settings)
    AsyncVerifier(settings)  # fine on the event loop


# -- Redis (a real server) -------------------------------------------------------------------


class RedisStore(Blocking):
    """RedisRevocationStore or AsyncRedisRevocationStore behind one synchronous interface."""

    def __init__(self, kind: str, url: str, **options: Any) -> None:
        super().__init__(kind)
        cls: Any = RedisRevocationStore if kind == "sync" else AsyncRedisRevocationStore
        self.store = cls.from_url(url, **options)

    def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        return bool(self.run(self.store.is_revoked(jti, sub, iat)))

    def revoke_token(self, jti: str, expires_at: float) -> None:
        self.run(self.store.revoke_token(jti, expires_at))

    def revoke_subject(self, sub: str, before: float) -> None:
        self.run(self.store.revoke_subject(sub, before))

    def close(self) -> None:
        if self.kind == "sync":
            self.store.client.close()
        else:
            self.run(self.store.client.aclose())
        super().close()


@pytest.fixture(params=["sync", "async"])
def make_redis_store(request: pytest.FixtureRequest) -> Iterator[Callable[..., RedisStore]]:
    yield from closing(lambda url, **options: RedisStore(request.param, url, **options))


@pytest.fixture
def redis_client(redis_clean: str) -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(redis_clean, socket_timeout=5)
    yield client
    client.close()


def test_redis_revoke_token_key_expires_at_exp_plus_grace(
    redis_clean: str, redis_client: redis.Redis, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store(redis_clean)
    now = time.time()
    exp = int(now) + 300
    store.revoke_token("jti-1", exp)
    key = "jwt_middleware:jti:jti-1"
    assert redis_client.expiretime(key) == exp + int(GRACE)
    assert 300 + GRACE - 5 <= redis_client.ttl(key) <= 300 + GRACE
    assert store.is_revoked("jti-1", "someone", now)
    assert not store.is_revoked("jti-2", "someone", now)
    assert not store.is_revoked(None, "someone", now)


def test_redis_revoke_subject_cuts_off_by_iat(
    redis_clean: str, redis_client: redis.Redis, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store(redis_clean, subject_ttl=3600)
    cut = 1_800_000_000.5
    store.revoke_subject("alice", cut)
    assert 3590 <= redis_client.ttl("jwt_middleware:sub:alice") <= 3600
    assert store.is_revoked("any-jti", "alice", cut - 1)
    assert store.is_revoked("any-jti", "alice", cut)  # iat <= before
    assert store.is_revoked("any-jti", "alice", None)  # no iat: cannot prove it is newer
    assert not store.is_revoked("any-jti", "alice", cut + 1)
    assert not store.is_revoked("any-jti", "bob", cut - 1)


def test_redis_prefix_keeps_stores_apart(
    redis_clean: str, make_redis_store: Callable[..., RedisStore]
) -> None:
    one = make_redis_store(redis_clean, prefix="app1:")
    two = make_redis_store(redis_clean, prefix="app2:")
    one.revoke_token("shared-jti", time.time() + 300)
    assert one.is_revoked("shared-jti", None, None)
    assert not two.is_revoked("shared-jti", None, None)


def test_redis_is_revoked_is_one_mget(
    redis_clean: str, redis_client: redis.Redis, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store(redis_clean)
    store.revoke_subject("alice", 1_800_000_000.0)
    store.is_revoked("warm-the-connection", None, None)
    redis_client.config_resetstat()
    assert store.is_revoked("jti-x", "alice", 1_700_000_000.0)
    stats = redis_client.info("commandstats")
    used = {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_info")
    }
    assert used == {"mget": 1}


def test_redis_subject_cutoff_only_moves_forward(
    redis_clean: str, make_redis_store: Callable[..., RedisStore]
) -> None:
    store = make_redis_store(redis_clean)
    now = 1_800_000_000.0
    store.revoke_subject("alice", now)  # "log out everywhere"
    store.revoke_subject("alice", now - 100)  # a delayed/retried, older revocation
    assert store.is_revoked(None, "alice", now - 50)  # issued before the first cut-off


def test_redis_unreachable_raises_store_error(
    make_redis_store: Callable[..., RedisStore], spare_redis: RedisServer
) -> None:
    store = make_redis_store(spare_redis.url, socket_timeout=0.5)
    assert not store.is_revoked("j", "s", 1.0)
    spare_redis.stop()
    started = time.monotonic()
    for call in (
        lambda: store.is_revoked("j", "s", 1.0),
        lambda: store.revoke_token("j", time.time() + 60),
        lambda: store.revoke_subject("s", time.time()),
    ):
        with pytest.raises(RevocationStoreError):
            call()
    assert time.monotonic() - started < 5


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_redis_revocation_over_http(
    issuer: LocalIssuer, make_http: Callable[..., HTTP], redis_clean: str, kind: str
) -> None:
    store: Any = (AsyncRedisRevocationStore if kind == "asgi" else RedisRevocationStore).from_url(
        redis_clean
    )
    http = make_http(kind, revocation=store, expose_error_details=True)
    token, other = issuer.mint(), issuer.mint()
    assert http.get(token).status == 200
    writer = RedisRevocationStore.from_url(redis_clean)  # revoked from "elsewhere"
    writer.revoke_token(claims_of(token)["jti"], claims_of(token)["exp"])
    writer.client.close()
    refused = http.get(token)  # a cache hit in the verifier: Redis is still asked
    assert refused.status == 401
    assert refused.json()["reason"] == "token_revoked"
    assert http.get(other).status == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_redis_down_fails_closed_over_http(
    issuer: LocalIssuer, make_http: Callable[..., HTTP], spare_redis: RedisServer, kind: str
) -> None:
    cls: Any = AsyncRedisRevocationStore if kind == "asgi" else RedisRevocationStore
    closed = make_http(kind, revocation=cls.from_url(spare_redis.url, socket_timeout=0.5))
    fail_open = make_http(
        kind,
        revocation=cls.from_url(spare_redis.url, socket_timeout=0.5),
        revocation_fail_open=True,
    )
    token = issuer.mint()
    assert closed.get(token).status == 200
    assert fail_open.get(token).status == 200
    spare_redis.stop()
    assert_revocation_503(closed.get(token))  # the cached token too
    assert_revocation_503(closed.get(issuer.mint()))
    assert fail_open.get(token).status == 200
    spare_redis.start()  # back on the same port: the next request is answered again
    assert closed.get(token).status == 200


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_redis_closed_port_fails_closed_over_http(
    issuer: LocalIssuer, make_http: Callable[..., HTTP], kind: str
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    cls: Any = AsyncRedisRevocationStore if kind == "asgi" else RedisRevocationStore
    closed = make_http(kind, revocation=cls.from_url(url, socket_timeout=0.3))
    fail_open = make_http(
        kind, revocation=cls.from_url(url, socket_timeout=0.3), revocation_fail_open=True
    )
    assert_revocation_503(closed.get(issuer.mint()))
    assert fail_open.get(issuer.mint()).status == 200


# -- across processes: uvicorn x2 and gunicorn, one Redis ------------------------------------

ASGI_APP = '''
"""Starlette app for the cross-process revocation test (configured by environment)."""
import os

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware
from jwt_middleware.revocation import AsyncRedisRevocationStore

store = AsyncRedisRevocationStore.from_url(os.environ["REDIS_URL"])


async def health(request):
    return JSONResponse({"status": "ok", "pid": os.getpid()})


async def me(request):
    return JSONResponse({"sub": request.user.identity, "pid": os.getpid()})


async def logout(request):
    claims = request.auth.claims
    await store.revoke_token(claims["jti"], claims["exp"])
    return JSONResponse({"revoked": claims["jti"], "pid": os.getpid()})


app = Starlette(
    routes=[Route("/health", health), Route("/me", me), Route("/logout", logout, methods=["POST"])],
    middleware=[
        Middleware(
            JWTMiddleware,
            issuer=os.environ["JWT_ISSUER"],
            audience=os.environ["JWT_AUDIENCE"],
            jwks_url=os.environ["JWT_JWKS_URL"],
            revocation=store,
            public_paths={"/health"},
            expose_error_details=True,
        )
    ],
)
'''

WSGI_APP = '''
"""Flask app for the cross-process revocation test (configured by environment)."""
import os

from flask import Flask

from jwt_middleware.revocation import RedisRevocationStore
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from flask import request

store = RedisRevocationStore.from_url(os.environ["REDIS_URL"])
app = Flask(__name__)
app.wsgi_app = JWTWSGIMiddleware(
    app.wsgi_app,
    issuer=os.environ["JWT_ISSUER"],
    audience=os.environ["JWT_AUDIENCE"],
    jwks_url=os.environ["JWT_JWKS_URL"],
    revocation=store,
    public_paths={"/health"},
    expose_error_details=True,
)


@app.get("/health")
def health():
    return {"status": "ok", "pid": os.getpid()}


@app.get("/me")
def me():
    return {"sub": get_token(request.environ).subject, "pid": os.getpid()}


@app.post("/logout")
def logout():
    claims = get_token(request.environ).claims
    store.revoke_token(claims["jti"], claims["exp"])
    return {"revoked": claims["jti"], "pid": os.getpid()}
'''


class Served(AppServer):
    """An app in a server subprocess on its own port; always terminated by its PID."""

    def get(self, token: str) -> httpx.Response:  # type: ignore[override]
        return self.request("GET", "/me", token)

    def logout(self, token: str) -> httpx.Response:
        return self.request("POST", "/logout", token)


@pytest.fixture(scope="module")
def fleet(
    issuer: LocalIssuer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Served]]:
    """Process A and B (the same Starlette app under uvicorn) and W (Flask under gunicorn,
    two workers), all on one Redis."""
    folder = tmp_path_factory.mktemp("revocation_apps")
    (folder / "revocation_asgi.py").write_text(textwrap.dedent(ASGI_APP))
    (folder / "revocation_wsgi.py").write_text(textwrap.dedent(WSGI_APP))
    pythonpath = os.pathsep.join([str(folder), os.environ.get("PYTHONPATH", "")])
    env = jwt_env(issuer, REDIS_URL=redis_url, PYTHONPATH=pythonpath.rstrip(os.pathsep))

    def uvicorn(port: int) -> list[str]:
        return uvicorn_argv("revocation_asgi:app", port, options=["--log-level", "warning"])

    def gunicorn(port: int) -> list[str]:
        options = ["--workers", "2", "--graceful-timeout", "3"]
        return gunicorn_argv("revocation_wsgi:app", port, options=options)

    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(Served(name, build, env=env, log=folder / f"{name}.log"))
            for name, build in (("A", uvicorn), ("B", uvicorn), ("W", gunicorn))
        ]
        wait_all_ready(started)
        yield {s.name: s for s in started}


@pytest.fixture
def fleet_clean(fleet: dict[str, Served], redis_clean: str) -> dict[str, Served]:
    return fleet


def test_logout_in_process_a_is_seen_by_process_b_at_once(
    fleet_clean: dict[str, Served], issuer: LocalIssuer
) -> None:
    a, b, w = fleet_clean["A"], fleet_clean["B"], fleet_clean["W"]
    token = issuer.mint(subject="erin")
    sibling = issuer.mint(subject="erin")  # another session of the same user
    pids = set()
    for served in (a, b, w):
        answer = served.get(token)
        assert answer.status_code == 200, (served.name, answer.text)
        assert answer.json()["sub"] == "erin"
        pids.add(answer.json()["pid"])
    assert len(pids) == 3  # three processes, not one
    out = a.logout(token)
    assert out.status_code == 200, out.text
    assert out.json()["revoked"] == claims_of(token)["jti"]
    # The very next request, in another process, with a token it had verified and cached:
    refused = b.get(token)
    assert refused.status_code == 401
    assert refused.json()["reason"] == "token_revoked"
    assert 'error="invalid_token"' in refused.headers["www-authenticate"]
    assert a.get(token).status_code == 401
    for _ in range(4):  # every gunicorn worker, whichever answers
        assert w.get(token).json()["reason"] == "token_revoked"
    for served in (a, b, w):
        assert served.get(sibling).status_code == 200


def test_logout_in_the_wsgi_process_is_seen_by_both_asgi_processes(
    fleet_clean: dict[str, Served], issuer: LocalIssuer
) -> None:
    a, b, w = fleet_clean["A"], fleet_clean["B"], fleet_clean["W"]
    token = issuer.mint(subject="frank")
    assert a.get(token).status_code == b.get(token).status_code == 200
    out = w.logout(token)
    assert out.status_code == 200, out.text
    for served in (a, b, w):
        refused = served.get(token)
        assert refused.status_code == 401, served.name
        assert refused.json()["reason"] == "token_revoked"
    assert b.logout(token).status_code == 401  # a revoked token cannot even log out


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
    store = MemoryRevocationStore(clock=clock)
    verifier, signer = _es256_verifier(clock, revocation=store)
    claims = {"iss": "https://iss.example", "aud": "api://x", "exp": clock.now + 300, "jti": 42}
    token = signer.sign(claims)
    verified = verifier.verify(token)
    store.revoke_token(verified.claims["jti"], verified.claims["exp"])  # as the README shows
    with pytest.raises(InvalidToken) as refused:
        verifier.verify(token)
    assert refused.value.reason == Reason.TOKEN_REVOKED
