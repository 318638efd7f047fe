"""The Redis DPoP replay stores against a real ``redis-server``: a proof's first use wins once,
its record expires by the verifier's clock, records are kept apart by ``(jkt, jti)`` and by
prefix, racing workers (threads, tasks, processes) get exactly one winner, and a Redis that
cannot answer is a ReplayStoreError. MemoryReplayStore is tested in ``test_dpop.py``.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import inspect
import multiprocessing
import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import redis
import redis.asyncio

from jwt_middleware._errors import UsageError
from jwt_middleware.replay import (
    AsyncRedisReplayStore,
    AsyncReplayStore,
    RedisReplayStore,
    ReplayStore,
    ReplayStoreError,
)
from tests.support.redis_server import (
    RedisServer,
    redis_clean,
    redis_server,
    redis_url,
    spare_redis,
)
from tests.support.servers import free_port

__all__ = ["redis_clean", "redis_server", "redis_url", "spare_redis"]  # fixtures, used by name

Store = RedisReplayStore | AsyncRedisReplayStore


def _thumbprint(seed: bytes) -> str:
    """A jkt as the verifier computes it: base64url SHA-256, 43 characters."""
    return base64.urlsafe_b64encode(hashlib.sha256(seed).digest()).rstrip(b"=").decode()


JKT = _thumbprint(b"key one")
OTHER_JKT = _thumbprint(b"key two")
NOW = 1_800_000_000.0
# Far from the real time either way: the record's lifetime must not depend on Redis's clock.
CLOCKS = pytest.mark.parametrize("now", [1_000_000_000.0, 4_000_000_000.0], ids=["past", "future"])


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(params=["sync", "async"])
def kind(request: pytest.FixtureRequest) -> str:
    """Each test runs on RedisReplayStore ("sync") and AsyncRedisReplayStore ("async")."""
    return str(request.param)


@pytest.fixture
def raw(redis_clean: str) -> Iterator[redis.Redis]:
    """A plain client on the emptied test database, to look at what the stores wrote."""
    client = redis.Redis.from_url(redis_clean, socket_timeout=5)
    yield client
    client.close()


@asynccontextmanager
async def opened(kind: str, url: str, **options: Any) -> AsyncIterator[Store]:
    """A store of ``kind`` from ``url``, its client closed afterwards."""
    store: Store = (RedisReplayStore if kind == "sync" else AsyncRedisReplayStore).from_url(
        url, **options
    )
    try:
        yield store
    finally:
        if isinstance(store, AsyncRedisReplayStore):
            await store.client.aclose()
        else:
            store.client.close()


async def first_use(
    store: Store, jti: str, *, jkt: str = JKT, ttl: float = 60.0, now: float = NOW
) -> bool:
    """``store.first_use`` for a proof valid ``ttl`` seconds after ``now``, awaited if async."""
    if isinstance(store, AsyncRedisReplayStore):
        return await store.first_use(jkt, jti, now + ttl, now)
    return store.first_use(jkt, jti, now + ttl, now)


# -- one store -------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_first_use_wins_and_every_later_use_is_a_replay(kind: str, redis_clean: str) -> None:
    """The first first_use of a (jkt, jti) is True; each later one, until it expires, False."""
    async with opened(kind, redis_clean) as store:
        assert await first_use(store, "j1") is True
        assert await first_use(store, "j1") is False
        assert await first_use(store, "j1") is False


@pytest.mark.anyio
@CLOCKS
async def test_record_expires_after_until_minus_now_whatever_redis_clock_says(
    kind: str, redis_clean: str, raw: redis.Redis, now: float
) -> None:
    """A record lives until - now (by the verifier's clock, far from Redis's), then is forgotten."""
    async with opened(kind, redis_clean) as store:
        assert await first_use(store, "short", ttl=0.3, now=now) is True
        assert 0 < raw.pttl(f"jwt_middleware:dpop:{JKT}:short") <= 300
        assert await first_use(store, "short", ttl=0.3, now=now) is False
        await asyncio.sleep(0.45)
        assert raw.exists(f"jwt_middleware:dpop:{JKT}:short") == 0
        assert await first_use(store, "short", ttl=0.3, now=now) is True


@pytest.mark.anyio
async def test_until_at_or_before_now_is_recorded_for_one_millisecond(
    kind: str, redis_clean: str
) -> None:
    """until <= now still counts as a first use (1 ms record, no Redis error), then is gone."""
    async with opened(kind, redis_clean) as store:
        assert await first_use(store, "late", ttl=-5.0) is True
        assert await first_use(store, "now", ttl=0.0) is True
        await asyncio.sleep(0.05)
        assert await first_use(store, "late", ttl=-5.0) is True


@pytest.mark.anyio
@pytest.mark.parametrize("bad", [float("inf"), float("nan")], ids=["inf", "nan"])
async def test_non_finite_until_is_a_usage_error_before_any_io(kind: str, bad: float) -> None:
    """A non-finite until raises UsageError without contacting Redis (here: a closed port)."""
    async with opened(kind, f"redis://127.0.0.1:{free_port()}/0") as store:
        with pytest.raises(UsageError, match="finite"):
            await first_use(store, "j", ttl=bad)


@pytest.mark.anyio
async def test_different_jti_or_jkt_are_independent(kind: str, redis_clean: str) -> None:
    """A record for one (jkt, jti) does not make any other pair, however its jti looks, a replay."""
    jtis = ["a", "b", "a:", ":a", f"{JKT}:a", "ü" * 256]
    async with opened(kind, redis_clean) as store:
        for jti in jtis:
            assert await first_use(store, jti) is True
            assert await first_use(store, jti, jkt=OTHER_JKT) is True
        for jti in jtis:
            assert await first_use(store, jti) is False
            assert await first_use(store, jti, jkt=OTHER_JKT) is False


@pytest.mark.anyio
async def test_key_layout_is_prefix_dpop_jkt_jti(
    kind: str, redis_clean: str, raw: redis.Redis
) -> None:
    """One proof writes exactly one key, jwt_middleware:dpop:<jkt>:<jti>, expiring in the ttl."""
    async with opened(kind, redis_clean) as store:
        assert await first_use(store, "ab:c", ttl=30.0) is True
    assert raw.keys("*") == [f"jwt_middleware:dpop:{JKT}:ab:c".encode()]
    assert 29_000 < raw.pttl(f"jwt_middleware:dpop:{JKT}:ab:c") <= 30_000


@pytest.mark.anyio
async def test_prefix_keeps_stores_apart(kind: str, redis_clean: str, raw: redis.Redis) -> None:
    """A store with another prefix does not see the first one's records, and writes its own key."""
    async with (
        opened(kind, redis_clean) as default,
        opened(kind, redis_clean, prefix="app2:") as other,
    ):
        assert await first_use(default, "shared") is True
        assert await first_use(other, "shared") is True
        assert await first_use(other, "shared") is False
    assert sorted(raw.keys("*")) == [
        f"app2:dpop:{JKT}:shared".encode(),
        f"jwt_middleware:dpop:{JKT}:shared".encode(),
    ]


@pytest.mark.anyio
async def test_one_check_is_one_set_and_no_other_command(
    kind: str, redis_clean: str, raw: redis.Redis
) -> None:
    """Each first_use costs one Redis SET (NX PX) and no other command, first use or replay."""
    async with opened(kind, redis_clean) as store:
        await first_use(store, "warm-the-connection")
        raw.config_resetstat()
        await first_use(store, "j")
        await first_use(store, "j")
        stats = raw.info("commandstats")
    used = {
        name.removeprefix("cmdstat_"): value["calls"]
        for name, value in stats.items()
        if name not in ("cmdstat_config|resetstat", "cmdstat_info")
    }
    assert used == {"set": 2}


# -- Redis cannot answer ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_stopped_redis_raises_store_error_quickly_and_without_secrets(
    kind: str, spare_redis: RedisServer
) -> None:
    """With Redis stopped first_use raises ReplayStoreError within seconds, naming only the
    failure's type: no URL credentials, no chained cause."""
    credentialed = spare_redis.url.replace("redis://", "redis://user:s3cret-pw@")
    async with (
        opened(kind, spare_redis.url, socket_timeout=0.5) as store,
        opened(kind, credentialed, socket_timeout=0.5) as with_password,
    ):
        assert await first_use(store, "before") is True
        spare_redis.stop()
        started = time.monotonic()
        for each in (store, with_password):
            with pytest.raises(ReplayStoreError) as failed:
                await first_use(each, "after")
            assert "s3cret-pw" not in repr(failed.value)
            assert "127.0.0.1" not in str(failed.value)
            assert failed.value.__cause__ is None and failed.value.__suppress_context__
        assert time.monotonic() - started < 5


@pytest.mark.anyio
async def test_silent_redis_times_out_as_store_error(kind: str) -> None:
    """A server that accepts but never answers gives ReplayStoreError after socket_timeout."""
    with socket.socket() as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        url = f"redis://127.0.0.1:{silent.getsockname()[1]}/0"
        async with opened(kind, url, socket_timeout=0.3) as store:
            started = time.monotonic()
            with pytest.raises(ReplayStoreError, match="Timeout"):
                await first_use(store, "j")
            assert time.monotonic() - started < 3


# -- construction ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_from_url_builds_a_working_store_on_the_right_client(
    kind: str, redis_clean: str
) -> None:
    """from_url gives the store its own sync or asyncio client, socket_timeout 1 s unless given,
    and passes the other options (prefix) to the store."""
    client_class = redis.Redis if kind == "sync" else redis.asyncio.Redis
    async with (
        opened(kind, redis_clean) as plain,
        opened(kind, redis_clean, prefix="p:", socket_timeout=2.5) as tuned,
    ):
        assert isinstance(plain.client, client_class)
        assert plain.client.connection_pool.connection_kwargs["socket_timeout"] == 1.0
        assert tuned.client.connection_pool.connection_kwargs["socket_timeout"] == 2.5
        assert (plain.prefix, tuned.prefix) == ("jwt_middleware:", "p:")
        assert await first_use(plain, "j") is True
        assert await first_use(tuned, "j") is True


@pytest.mark.anyio
async def test_stores_satisfy_the_runtime_checkable_protocols(redis_clean: str) -> None:
    """RedisReplayStore is a ReplayStore with a plain first_use; AsyncRedisReplayStore an
    AsyncReplayStore with a coroutine one (how the verifier tells which to await)."""
    sync_client = redis.Redis.from_url(redis_clean)
    async_client = redis.asyncio.Redis.from_url(redis_clean)
    try:
        sync_store, async_store = RedisReplayStore(sync_client), AsyncRedisReplayStore(async_client)
        assert isinstance(sync_store, ReplayStore)
        assert isinstance(async_store, AsyncReplayStore)
        assert not inspect.iscoroutinefunction(sync_store.first_use)
        assert inspect.iscoroutinefunction(async_store.first_use)
        assert sync_store.first_use(JKT, "j", NOW + 60, NOW) is True
        assert await async_store.first_use(JKT, "j", NOW + 60, NOW) is False
    finally:
        sync_client.close()
        await async_client.aclose()


# -- racing ----------------------------------------------------------------------------------

RACERS = 16
ROUNDS = 20


def test_racing_threads_get_exactly_one_winner(redis_clean: str) -> None:
    """RACERS threads sharing one sync store race first_use on one proof: exactly one wins,
    every round."""
    store = RedisReplayStore.from_url(redis_clean, socket_timeout=5)
    barrier = threading.Barrier(RACERS, timeout=30)
    results: list[tuple[int, bool]] = []
    lock = threading.Lock()

    def race() -> None:
        for round_ in range(ROUNDS):
            barrier.wait()
            won = store.first_use(JKT, f"race-{round_}", NOW + 60, NOW)
            with lock:
                results.append((round_, won))

    threads = [threading.Thread(target=race) for _ in range(RACERS)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
    finally:
        store.client.close()
    assert len(results) == RACERS * ROUNDS
    assert [sum(won for r, won in results if r == round_) for round_ in range(ROUNDS)] == [
        1
    ] * ROUNDS


@pytest.mark.anyio
async def test_racing_tasks_get_exactly_one_winner(redis_clean: str) -> None:
    """RACERS tasks on one async store race first_use on one proof: exactly one wins."""
    async with opened("async", redis_clean, socket_timeout=5) as store:
        for round_ in range(ROUNDS):
            won = await asyncio.gather(*(first_use(store, f"r{round_}") for _ in range(RACERS)))
            assert sorted(won) == [False] * (RACERS - 1) + [True]


PROCESSES = 8


def _race_in_process(kind: str, url: str, barrier: Any, results: Any) -> None:
    """A worker process: its own store and client; ROUNDS races, each after the barrier."""

    async def race() -> None:
        async with opened(kind, url, socket_timeout=5) as store:
            for round_ in range(ROUNDS):
                barrier.wait()  # blocks the loop, which has nothing else to do
                results.put((round_, await first_use(store, f"race-{round_}")))

    asyncio.run(race())


def test_racing_processes_get_exactly_one_winner(redis_clean: str) -> None:
    """PROCESSES spawned processes, half on the sync and half on the async store, each with its
    own client, race first_use on one proof: exactly one wins, every round."""
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(PROCESSES, timeout=60)
    results = context.Queue()
    workers = [
        context.Process(
            target=_race_in_process, args=(("sync", "async")[i % 2], redis_clean, barrier, results)
        )
        for i in range(PROCESSES)
    ]
    for worker in workers:
        worker.start()
    try:
        got = [results.get(timeout=90) for _ in range(PROCESSES * ROUNDS)]
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    assert [worker.exitcode for worker in workers] == [0] * PROCESSES
    assert [sum(won for r, won in got if r == round_) for round_ in range(ROUNDS)] == [1] * ROUNDS
