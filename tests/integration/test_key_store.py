"""The shared key cache on a real Redis: the Redis key stores themselves, the key caches of
several verifiers sharing one (rotation, a store that is down, junk or forged entries, a lock
whose holder died), and a fleet of real worker processes, counting fetches at the key server.

The fleet is two servers of two worker processes each, as on two hosts: uvicorn ``--workers 2``
(:func:`asgi_app`, AsyncRedisKeyStore) and gunicorn ``--workers 2`` (:func:`wsgi_app`,
RedisKeyStore), each worker a key cache of its own, run with and without the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._jwks import _store_name
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.keystore import (
    AsyncRedisKeyStore,
    CorruptEntry,
    MemoryKeyStore,
    RedisKeyStore,
    StoredDocument,
)
from jwt_middleware.testing import LocalIssuer, generate_key
from tests.support.clock import FakeClock
from tests.support.redis_server import (
    RedisServer,
    redis_clean,
    redis_server,
    redis_url,
    spare_redis,
)
from tests.support.servers import (
    AppServer,
    gunicorn_argv,
    jwt_env,
    uvicorn_argv,
    wait_all_ready,
)
from tests.support.servers import VerifierDriver as Both

__all__ = ["redis_clean", "redis_server", "redis_url", "spare_redis"]  # fixtures, used by name

SECRET = "a-secret-every-worker-shares-0123456789"
PREFIX = "jwt_middleware:keys:"


# -- the worker app (run by uvicorn/gunicorn as a factory) --------------------------------------


def _worker_settings(store: Any) -> Settings:
    return Settings(
        issuer=os.environ["JWT_ISSUER"],
        audience=os.environ["JWT_AUDIENCE"],
        jwks_url=os.environ["JWT_JWKS_URL"],
        jwks_max_age=float(os.environ["JWKS_MAX_AGE"]),
        jwks_cooldown=float(os.environ["JWKS_MAX_AGE"]) / 2,
        key_store=store,
        public_paths={"/health"},
        expose_error_details=True,
    )


def _store_url() -> str | None:
    return os.environ.get("KEY_STORE_URL") or None


async def _whoami(request: Request) -> JSONResponse:
    return JSONResponse({"pid": os.getpid()})


def asgi_app() -> Any:
    """The worker app behind JWTMiddleware, with AsyncRedisKeyStore when KEY_STORE_URL is set."""
    url = _store_url()
    store = None if url is None else AsyncRedisKeyStore.from_url(url, secret=SECRET)
    app = Starlette(routes=[Route("/health", _whoami), Route("/orders", _whoami)])
    app.add_middleware(JWTMiddleware, settings=_worker_settings(store))
    return app


def _wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps({"pid": os.getpid()}).encode()]


def wsgi_app() -> Any:
    """The worker app behind JWTWSGIMiddleware, with RedisKeyStore when KEY_STORE_URL is set."""
    url = _store_url()
    store = None if url is None else RedisKeyStore.from_url(url, secret=SECRET)
    return JWTWSGIMiddleware(_wsgi, settings=_worker_settings(store))


# -- the Redis stores themselves ---------------------------------------------------------------


def _stores(url: str, **options: Any) -> list[Any]:
    return [RedisKeyStore.from_url(url, **options), AsyncRedisKeyStore.from_url(url, **options)]


def _call(store: Any, method: str, *args: Any) -> Any:
    result = getattr(store, method)(*args)
    if asyncio.iscoroutine(result):

        async def run() -> Any:
            try:
                return await result
            finally:
                await store.client.aclose()

        return asyncio.run(run())
    return result


@pytest.fixture
def raw(redis_clean: str) -> Iterator[redis.Redis]:
    """A plain client on the emptied session Redis, to look at and tamper with the entries."""
    client = redis.Redis.from_url(redis_clean)
    yield client
    client.close()


@pytest.mark.parametrize("kind", [0, 1], ids=["sync", "async"])
def test_a_saved_document_loads_back_with_its_times_and_expires(
    redis_clean: str, raw: redis.Redis, kind: int
) -> None:
    """save() then load() gives the body, fetch time and max age back; the entry carries a
    Redis expiry of ttl; a missing name loads as None."""
    doc = StoredDocument(b'{"keys": []}', 1_800_000_000.5, 300.0)
    _call(_stores(redis_clean, secret=SECRET)[kind], "save", "jwks:x", doc, 60)
    assert _call(_stores(redis_clean, secret=SECRET)[kind], "load", "jwks:x", 100) == doc
    assert 59_000 < raw.pttl(PREFIX + "jwks:x") <= 60_000
    assert _call(_stores(redis_clean)[kind], "load", "jwks:y", 100) is None


@pytest.mark.parametrize("kind", [0, 1], ids=["sync", "async"])
def test_the_lock_is_exclusive_expires_and_is_released_only_by_its_holder(
    redis_clean: str, raw: redis.Redis, kind: int
) -> None:
    """acquire() is SET NX PX: a second acquire fails while it is held; release() with another
    token leaves it; with its own token frees it; an unreleased lock expires by itself."""
    token = _call(_stores(redis_clean)[kind], "acquire", "l", 30)
    assert isinstance(token, str)
    assert _call(_stores(redis_clean)[kind], "acquire", "l", 30) is None
    _call(_stores(redis_clean)[kind], "release", "l", "someone-else")
    assert _call(_stores(redis_clean)[kind], "acquire", "l", 30) is None
    _call(_stores(redis_clean)[kind], "release", "l", token)
    assert _call(_stores(redis_clean)[kind], "acquire", "l", 0.05) is not None
    time.sleep(0.1)
    assert _call(_stores(redis_clean)[kind], "acquire", "l", 30) is not None


TAMPERED = {
    "junk": lambda value: b"garbage",
    "body changed": lambda value: value.replace(b"[]", b"[{}]"),
    "no hmac": lambda value: value.split(b" ", 1)[0] + b" -\n" + value.split(b"\n", 1)[1],
    "bad header": lambda value: value.replace(b'"fetched_at"', b'"fetched"'),
    "too big": lambda value: value + b" " * 5000,
}


@pytest.mark.parametrize("change", TAMPERED.values(), ids=TAMPERED.keys())
@pytest.mark.parametrize("kind", [0, 1], ids=["sync", "async"])
def test_an_entry_not_written_by_a_holder_of_the_secret_is_corrupt(
    redis_clean: str, raw: redis.Redis, kind: int, change: Callable[[bytes], bytes]
) -> None:
    """With a secret, an entry that is junk, was changed, lacks its HMAC, has a bad header or
    is over the size limit raises CorruptEntry (the read itself is bounded: GETRANGE)."""
    _call(
        _stores(redis_clean, secret=SECRET)[kind], "save", "jwks:x", StoredDocument(b"[]", 1.0), 60
    )
    value = raw.get(PREFIX + "jwks:x")
    assert isinstance(value, bytes)
    raw.set(PREFIX + "jwks:x", change(value))
    with pytest.raises(CorruptEntry):
        _call(_stores(redis_clean, secret=SECRET)[kind], "load", "jwks:x", 1000)


def test_a_signed_entry_moved_to_another_name_is_corrupt(
    redis_clean: str, raw: redis.Redis
) -> None:
    """The HMAC covers the entry's name: issuer A's signed keys copied under issuer B's name are
    refused, so one issuer's keys cannot be made to vouch for another's tokens."""
    store = RedisKeyStore.from_url(redis_clean, secret=SECRET)
    store.save("jwks:a", StoredDocument(b"[]", 1.0), 60)
    value = raw.get(PREFIX + "jwks:a")
    assert isinstance(value, bytes)
    raw.set(PREFIX + "jwks:b", value)
    with pytest.raises(CorruptEntry, match="HMAC"):
        store.load("jwks:b", 1000)
    assert store.load("jwks:a", 1000) == StoredDocument(b"[]", 1.0)


def test_a_short_secret_is_refused(redis_url: str) -> None:
    """A secret under 16 bytes is a ConfigurationError (it would be guessable)."""
    from jwt_middleware import ConfigurationError

    with pytest.raises(ConfigurationError, match="16 bytes"):
        RedisKeyStore.from_url(redis_url, secret="short")


# -- key caches sharing a Redis ----------------------------------------------------------------


@pytest.fixture
def pair(
    make_settings: Any, clock: FakeClock, redis_clean: str
) -> Iterator[Callable[..., tuple[Both, Both]]]:
    """``pair(**settings)``: an async and a sync verifier (two "workers") on one Redis."""
    made: list[Both] = []

    def build(**overrides: Any) -> tuple[Both, Both]:
        overrides.setdefault("clock", clock)
        overrides.setdefault("key_store", None)
        url = overrides.pop("store_url", redis_clean)
        secret = overrides.pop("secret", SECRET)
        a = Both("async", make_settings(**{**overrides, "key_store": _async_store(url, secret)}))
        s = Both("sync", make_settings(**{**overrides, "key_store": _sync_store(url, secret)}))
        made.extend((a, s))
        return a, s

    yield build
    for driver in made:
        if driver.kind == "async":
            driver.run(driver.verifier._flow.issuers[0].settings.key_store.client.aclose())
        driver.close()


def _async_store(url: str, secret: str | None) -> AsyncRedisKeyStore:
    return AsyncRedisKeyStore.from_url(url, secret=secret)


def _sync_store(url: str, secret: str | None) -> RedisKeyStore:
    return RedisKeyStore.from_url(url, secret=secret)


def test_an_asgi_and_a_wsgi_worker_share_one_fetch_and_a_rotation(
    issuer: LocalIssuer, pair: Any, clock: FakeClock
) -> None:
    """The sync and the async key cache on one Redis: one fetch for both at start, and after a
    rotation the second to see the new kid takes the first one's fetch from the store."""
    a, s = pair()
    a.verify(issuer.mint(now=clock.now))
    s.verify(issuer.mint(now=clock.now))
    assert issuer.jwks_requests == 1
    issuer.rotate()
    clock.advance(31)
    token = issuer.mint(now=clock.now)
    assert s.verify(token).subject == "user-1"
    assert a.verify(token).subject == "user-1"
    assert issuer.jwks_requests == 2


def test_a_redis_that_is_down_means_fetching_directly(
    issuer: LocalIssuer,
    pair: Any,
    clock: FakeClock,
    spare_redis: RedisServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With its Redis stopped, each key cache fetches for itself, logs why (by the error's type),
    and every token verifies: a store outage is never a 5xx by itself."""
    url = spare_redis.url
    spare_redis.stop()
    a, s = pair(store_url=url)
    with caplog.at_level(logging.WARNING, "jwt_middleware"):
        for driver in (a, s):
            assert driver.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 2
    failures = [r for r in caplog.records if getattr(r, "jwt_event", "") == "key_store_failed"]
    assert len(failures) == 2
    assert all("ConnectionError" in r.getMessage() for r in failures)


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_redis_that_stops_answering_means_fetching_directly(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock, spare_redis: RedisServer, kind: str
) -> None:
    """A Redis paused (CLIENT PAUSE) under a client with no socket timeout of its own: each
    store call is given at most half of what the fetch has left, so the key cache gives up on
    the store and fetches for itself within the fetch's deadline; the token verifies."""
    import redis.asyncio

    if kind == "async":
        store: Any = AsyncRedisKeyStore(
            redis.asyncio.Redis.from_url(spare_redis.url), secret=SECRET
        )
    else:
        store = RedisKeyStore(redis.Redis.from_url(spare_redis.url), secret=SECRET)
    driver = Both(kind, make_settings(clock=clock, key_store=store, jwks_timeout=1.0))
    admin = redis.Redis.from_url(spare_redis.url, socket_timeout=5)
    admin.client_pause(20_000, all=True)
    try:
        started = time.monotonic()
        assert driver.verify(issuer.mint(now=clock.now)).subject == "user-1"
        assert time.monotonic() - started < 2.0  # the fetch's deadline: 2 x jwks_timeout
        assert issuer.jwks_requests == 1
    finally:
        admin.close()
        spare_redis.stop()  # paused, it would keep every later command waiting (UNPAUSE too)
        driver.close()


class _SlowToLock:
    """A MemoryKeyStore shared with others, whose acquire() answers only after ``delay``."""

    def __init__(self, shared: MemoryKeyStore, delay: float) -> None:
        self.shared, self.delay = shared, delay

    def load(self, name: str, max_bytes: int) -> Any:
        return self.shared.load(name, max_bytes)

    def save(self, name: str, document: Any, ttl: float) -> None:
        self.shared.save(name, document, ttl)

    def acquire(self, name: str, ttl: float) -> str | None:
        time.sleep(self.delay)
        return self.shared.acquire(name, ttl)

    def release(self, name: str, token: str) -> None:
        self.shared.release(name, token)


@pytest.mark.parametrize("kind", ["async", "sync"])
def test_a_lock_taken_after_the_fetch_gave_up_on_it_is_released(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock, kind: str
) -> None:
    """One worker's acquire() answers at 1.5 s, past its 1 s bound: it fetches directly, and
    the lock its late call took is released, so the next worker needing keys takes the lock
    and fetches at once instead of waiting half its deadline for a fetch nobody is making."""
    shared = MemoryKeyStore()
    slow = Both(
        kind, make_settings(clock=clock, key_store=_SlowToLock(shared, 1.5), jwks_timeout=1.0)
    )
    quick = Both("sync", make_settings(clock=clock, key_store=shared))
    try:
        assert slow.verify(issuer.mint(now=clock.now)).subject == "user-1"
        # The late acquire lands and is undone (on the event loop, which a server keeps
        # running: here it runs only inside run()).
        if kind == "async":
            slow.run(asyncio.sleep(0.8))
        else:
            time.sleep(0.8)
        issuer.rotate()
        started = time.monotonic()
        assert quick.verify(issuer.mint(now=clock.now)).subject == "user-1"
        assert time.monotonic() - started < 1.0
    finally:
        slow.close()
        quick.close()


def test_junk_in_redis_is_fetched_over_and_replaced(
    issuer: LocalIssuer, pair: Any, clock: FakeClock, raw: redis.Redis
) -> None:
    """An entry that is not the store's format: the keys are fetched, the token verifies, and
    the entry is replaced by a good one the other worker then uses."""
    name = PREFIX + _store_name("jwks", issuer.jwks_url)
    raw.set(name, b"\x00\xffjunk")
    a, s = pair()
    assert s.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert a.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 1
    assert raw.get(name) != b"\x00\xffjunk"


def _forge(raw: redis.Redis, issuer: LocalIssuer, body: bytes, now: float) -> None:
    """An entry in the store's own format, signed with nothing (as anyone who can write Redis
    but does not know the secret could write it)."""
    header = json.dumps({"fetched_at": now, "max_age": None}).encode()
    raw.set(
        PREFIX + _store_name("jwks", issuer.jwks_url), b"jwtm-keys/1 -\n" + header + b"\n" + body
    )


def test_keys_injected_into_redis_without_the_secret_are_refused(
    issuer: LocalIssuer, pair: Any, clock: FakeClock, raw: redis.Redis
) -> None:
    """Someone who can write Redis stores a JWKS of their own key: with the secret, neither
    worker accepts a token signed by it (the entry fails its HMAC and the real keys are
    fetched); the genuine token verifies."""
    intruder = generate_key("ES256", kid="intruder")
    _forge(raw, issuer, json.dumps({"keys": [intruder.public_jwk()]}).encode(), clock.now)
    for driver in pair():
        assert driver.verify(issuer.mint(now=clock.now)).subject == "user-1"
        assert driver.refused(issuer.mint(now=clock.now, key=intruder)) == "kid_unknown"
    assert issuer.jwks_requests == 1


def test_without_a_secret_injected_keys_are_trusted(
    issuer: LocalIssuer, pair: Any, clock: FakeClock, raw: redis.Redis
) -> None:
    """Why the docs recommend the secret: without one, a well-formed entry in Redis is trusted,
    so a token signed by the injected key verifies (the key rules still apply: see the junk
    tests in tests/unit/test_key_store.py)."""
    intruder = generate_key("ES256", kid="intruder")
    _forge(raw, issuer, json.dumps({"keys": [intruder.public_jwk()]}).encode(), clock.now)
    _, s = pair(secret=None)
    assert s.verify(issuer.mint(now=clock.now, key=intruder)).subject == "user-1"
    assert issuer.jwks_requests == 0


def test_a_lock_left_by_a_dead_holder_delays_the_fetch_by_half_the_deadline_at_most(
    issuer: LocalIssuer, pair: Any, clock: FakeClock, raw: redis.Redis
) -> None:
    """A lock whose holder died (set here as it would have set it, never released): the next
    key cache waits half its fetch deadline for the store, then fetches itself; once the lock
    has expired, the next fetch takes it at once."""
    lock = "jwt_middleware:keys-lock:" + _store_name("jwks", issuer.jwks_url)
    raw.set(lock, b"dead-holder", px=1500)
    a, s = pair(jwks_timeout=0.5)
    started = time.monotonic()
    assert s.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert 0.5 <= time.monotonic() - started < 1.0
    assert issuer.jwks_requests == 1
    time.sleep(max(0.0, 1.6 - (time.monotonic() - started)))
    assert raw.get(lock) is None
    issuer.rotate()
    clock.advance(31)
    started = time.monotonic()
    assert a.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert time.monotonic() - started < 0.5
    assert issuer.jwks_requests == 2


@pytest.mark.parametrize("worker", [0, 1], ids=["async", "sync"])
def test_an_old_signed_entry_put_back_under_a_lock_is_not_taken(
    issuer: LocalIssuer, pair: Any, clock: FakeClock, raw: redis.Redis, worker: int
) -> None:
    """The lock is not signed: someone who can write Redis (but lacks the secret) holds it and
    puts back a genuine signed entry from two hours ago, holding a key since retired. A worker
    waiting on the lock takes only a document fetched after it asked, so it fetches the keys
    itself and a token signed by the retired key stays refused."""
    retired = issuer.current_key
    _, then = pair(clock=FakeClock(clock.now - 7200))
    then.verify(issuer.mint(now=clock.now - 7200))  # a worker two hours ago stores k1's JWKS
    name = _store_name("jwks", issuer.jwks_url)
    captured = raw.get(PREFIX + name)
    assert captured is not None and b"fetched_at" in captured
    issuer.rotate(retire_old=True)
    raw.delete(PREFIX + name)
    raw.set("jwt_middleware:keys-lock:" + name, b"intruder", px=60_000)
    replay = threading.Timer(0.2, lambda: raw.set(PREFIX + name, captured))
    replay.start()
    try:
        waiting = pair(jwks_timeout=1.0)[worker]
        assert waiting.refused(issuer.mint(now=clock.now, key=retired)) == "kid_unknown"
    finally:
        replay.join()
    assert issuer.jwks_requests == 2  # its own fetch, after half its deadline


# -- a fleet of worker processes ---------------------------------------------------------------

MAX_AGE = 2.0
PERIODS = 3


class Server(AppServer):
    """One server of two worker processes."""

    def pids(self, token: str, seconds: float) -> tuple[int, set[int]]:
        """Requests on fresh connections (spread over the workers) for ``seconds``: how many,
        and the PIDs that answered; fails the test on any refusal."""
        pids: set[int] = set()
        count = 0
        end = time.monotonic() + seconds
        while time.monotonic() < end:
            answer = self.get("/orders", token)
            assert answer.status_code == 200, answer.text
            pids.add(int(answer.json()["pid"]))
            count += 1
            time.sleep(0.02)
        return count, pids


def _command(kind: str) -> Callable[[int], list[str]]:
    """A server of two worker processes: uvicorn ("asgi") or gunicorn ("wsgi")."""

    def argv(port: int) -> list[str]:
        if kind == "asgi":
            options = ["--factory", "--workers", "2", "--log-level", "warning"]
            return uvicorn_argv("tests.integration.test_key_store:asgi_app", port, options=options)
        options = ["--workers", "2", "--graceful-timeout", "3"]
        return gunicorn_argv("tests.integration.test_key_store:wsgi_app()", port, options=options)

    return argv


@contextlib.contextmanager
def fleet(
    issuer: LocalIssuer,
    folder: Path,
    kinds: list[str],
    store_url: str | None,
    max_age: float = MAX_AGE,
) -> Iterator[list[Server]]:
    """Servers of two workers each, booted together; ``store_url``: they share that Redis."""
    folder.mkdir(parents=True, exist_ok=True)
    env = jwt_env(issuer, jwks_url=True, JWKS_MAX_AGE=str(max_age))
    if store_url is not None:
        env["KEY_STORE_URL"] = store_url
    with contextlib.ExitStack() as stack:
        servers = [
            stack.enter_context(
                Server(f"{kind}{i}", _command(kind), env=env, log=folder / f"{i}.log")
            )
            for i, kind in enumerate(kinds)
        ]
        wait_all_ready(servers)
        yield servers


def _run_fleet(
    issuer: LocalIssuer, folder: Path, store_url: str | None
) -> tuple[int, int, set[int]]:
    """Two servers of two workers for PERIODS max ages of traffic: (fetches at start-up,
    fetches in all, PIDs seen)."""
    issuer.reset_counts()
    token = issuer.mint(expires_in=600)
    with fleet(issuer, folder, ["asgi", "wsgi"], store_url) as servers:
        time.sleep(0.5)  # every worker's warm-up is over (readiness is one worker per server)
        at_start = issuer.jwks_requests
        pids: set[int] = set()
        end = time.monotonic() + PERIODS * MAX_AGE
        while time.monotonic() < end:
            for server in servers:
                pids |= server.pids(token, 0.1)[1]
        return at_start, issuer.jwks_requests, pids


@pytest.fixture
def fleet_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(audience="api://orders") as local:
        yield local


def test_two_servers_of_two_workers_fetch_once_per_max_age_with_the_store(
    fleet_issuer: LocalIssuer, redis_clean: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Four worker processes (uvicorn and gunicorn, two each) under steady traffic for three
    max ages: without a store each fetches for itself (four at start, then each per max age);
    with one Redis they fetch once at start and about once per max age between them; a fifth
    worker started afterwards fetches nothing."""
    alone = _run_fleet(fleet_issuer, tmp_path / "alone", None)
    shared = _run_fleet(fleet_issuer, tmp_path / "shared", redis_clean)
    with capsys.disabled():
        print(
            f"\nkey fetches, 2 servers x 2 workers, {PERIODS} x max-age {MAX_AGE:g}s: "
            f"without store {alone[1]} ({alone[0]} at start), "
            f"with Redis {shared[1]} ({shared[0]} at start)"
        )
    assert len(alone[2]) == 4 and len(shared[2]) == 4  # every worker answered
    assert alone[0] == 4
    assert alone[1] >= 4 * PERIODS
    assert shared[0] == 1
    assert shared[1] <= PERIODS + 2

    # A server started now (its max age a minute, so the stored fetch is fresh for it) finds
    # the keys in the store: its two workers start warm and answer without a fetch.
    fleet_issuer.reset_counts()
    with fleet(fleet_issuer, tmp_path / "late", ["asgi"], redis_clean, max_age=60) as (late,):
        time.sleep(0.5)
        assert late.pids(fleet_issuer.mint(), 0.5)[0] > 0
    assert fleet_issuer.jwks_requests == 0
