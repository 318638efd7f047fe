"""Revocation with Redis: the Redis stores, fail-closed over HTTP, and sharing across processes.

The store logic without Redis is in ``tests/unit/test_revocation.py``. The Redis stores run
against a real ``redis-server`` (``tests/support/redis_server.py``); the cross-process tests run
the same small Starlette app twice under uvicorn and a WSGI app under gunicorn, all sharing that
Redis, and log out through one to be refused by the others.
"""

from __future__ import annotations

import contextlib
import os
import textwrap
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
import redis

from jwt_middleware import Settings
from jwt_middleware.revocation import (
    GRACE,
    AsyncRedisRevocationStore,
    RedisRevocationStore,
    RevocationStoreError,
)
from jwt_middleware.testing import LocalIssuer
from tests.support.redis_server import (
    RedisServer,
    redis_clean,
    redis_server,
    redis_url,
    spare_redis,
)
from tests.support.servers import (
    AppServer,
    Blocking,
    closing,
    free_port,
    gunicorn_argv,
    jwt_env,
    uvicorn_argv,
    wait_all_ready,
)
from tests.support.whoami import HTTP, assert_revocation_503, claims_of

__all__ = ["redis_clean", "redis_server", "redis_url", "spare_redis"]  # fixtures, used by name


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module and its app processes (overrides conftest's)."""
    with LocalIssuer(audience="api://revocation") as local:
        yield local


# -- helpers ---------------------------------------------------------------------------------


class RedisHTTP(HTTP):
    """``/whoami`` on either adapter, closing the Redis client of its store on the right loop."""

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
def make_http(make_settings: Callable[..., Settings]) -> Iterator[Callable[..., RedisHTTP]]:
    yield from closing(lambda kind, **overrides: RedisHTTP(kind, make_settings(**overrides)))


# -- the Redis test server itself -------------------------------------------------------------


def test_missing_redis_server_skips_locally_but_fails_under_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without redis-server on PATH the Redis tests skip locally and fail when CI is set."""
    import shutil

    from tests.support import redis_server as helper

    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(pytest.skip.Exception):
        helper.require_redis_server()
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI"):
        helper.require_redis_server()


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
    """A revoked jti's Redis key expires at exp + GRACE; only that jti is reported revoked."""
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
    """A Redis subject revocation lives subject_ttl and refuses iat <= the cut-off, or no iat."""
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
    """Stores with different key prefixes on one Redis do not see each other's revocations."""
    one = make_redis_store(redis_clean, prefix="app1:")
    two = make_redis_store(redis_clean, prefix="app2:")
    one.revoke_token("shared-jti", time.time() + 300)
    assert one.is_revoked("shared-jti", None, None)
    assert not two.is_revoked("shared-jti", None, None)


def test_redis_is_revoked_is_one_mget(
    redis_clean: str, redis_client: redis.Redis, make_redis_store: Callable[..., RedisStore]
) -> None:
    """One is_revoked check costs a single Redis MGET and no other command."""
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
    """An older subject revocation in Redis does not move the cut-off back."""
    store = make_redis_store(redis_clean)
    now = 1_800_000_000.0
    store.revoke_subject("alice", now)  # "log out everywhere"
    store.revoke_subject("alice", now - 100)  # a delayed/retried, older revocation
    assert store.is_revoked(None, "alice", now - 50)  # issued before the first cut-off


def test_redis_unreachable_raises_store_error(
    make_redis_store: Callable[..., RedisStore], spare_redis: RedisServer
) -> None:
    """With Redis stopped every store call raises RevocationStoreError, all within 5 seconds."""
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
    """A jti revoked in Redis by another client is refused on the next request, cached or not."""
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
    """With Redis down every request gets a 503 (200 if fail-open), cached tokens too; answers
    resume once Redis is back on the same port.
    """
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
    """A Redis URL on a closed port gives a 503, or a 200 with revocation_fail_open."""
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
    """A logout in one uvicorn process is refused at once by the other and by every gunicorn
    worker; the user's other tokens still pass.
    """
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
    """A logout via gunicorn is refused by both uvicorn apps; a revoked token cannot log out."""
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
