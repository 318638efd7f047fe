"""The shared key cache (jwt_middleware.keystore) with the in-process store, on both transports:
several key caches (standing in for workers) share one MemoryKeyStore in front of a real key
server, which counts the fetches that reach it. The Redis stores and real worker processes are
in tests/integration/test_key_store.py.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jwt_middleware import ConfigurationError, KeysUnavailable, Settings, SyncVerifier
from jwt_middleware._jwks import _store_name
from jwt_middleware.keystore import (
    CorruptEntry,
    MemoryKeyStore,
    StoredDocument,
    check_key_store,
)
from jwt_middleware.testing import LocalIssuer, generate_key
from tests.support.clock import FakeClock
from tests.support.servers import VerifierDriver as Both
from tests.support.servers import closing, free_port

MAX_AGE = 60.0


@pytest.fixture(params=["async", "sync"])
def make(
    request: pytest.FixtureRequest, make_settings: Any, clock: FakeClock
) -> Iterator[Callable[..., Both]]:
    """``make(store, **settings)``: a verifier (one "worker") whose key cache uses ``store``."""

    def build(store: Any, **overrides: Any) -> Both:
        overrides.setdefault("clock", clock)
        overrides.setdefault("jwks_max_age", MAX_AGE)
        return Both(request.param, make_settings(key_store=store, **overrides))

    yield from closing(build)


def jwks_entry(issuer: LocalIssuer, store: MemoryKeyStore) -> StoredDocument:
    entry = store.load(_store_name("jwks", issuer.jwks_url), 1 << 20)
    assert entry is not None
    return entry


def test_a_second_worker_starts_warm_from_the_store(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A key cache that starts after another filled the store fetches nothing: its warm-up and
    its first token are answered from the stored document."""
    store = MemoryKeyStore()
    first = make(store)
    first.run(first.verifier.warm_up())
    second = make(store)
    second.run(second.verifier.warm_up())
    assert second.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 1
    assert second.verifier.remote.policy.keyset is not None


def test_without_a_store_each_worker_fetches(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """The baseline the store improves on: two key caches, no store, two fetches."""
    for _ in range(2):
        v = make(None)
        v.verify(issuer.mint(now=clock.now))
    assert issuer.jwks_requests == 2


def test_freshness_counts_from_the_real_fetch_not_from_the_read(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A stored document read 50 s after it was fetched is fresh for the 10 s it has left, not
    for a new max age: the cluster still refreshes once per max age."""
    store = MemoryKeyStore()
    first = make(store)
    first.verify(issuer.mint(now=clock.now))
    fetched = clock.now
    clock.advance(50)
    second = make(store)
    second.verify(issuer.mint(now=clock.now))
    assert issuer.jwks_requests == 1
    assert second.verifier.remote.policy.fresh_until == fetched + MAX_AGE
    assert jwks_entry(issuer, store).fetched_at == fetched


def test_an_expired_stored_document_is_not_used(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """Past its max age a stored document is not taken as fresh: the new worker fetches, and
    writes its fetch (with its own time) back."""
    store = MemoryKeyStore()
    make(store).verify(issuer.mint(now=clock.now))
    clock.advance(MAX_AGE + 1)
    make(store).verify(issuer.mint(now=clock.now))
    assert issuer.jwks_requests == 2
    assert jwks_entry(issuer, store).fetched_at == clock.now


def test_a_rotation_fetched_by_one_worker_reaches_the_other_without_a_fetch(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """After a rotation, the first worker to see the new kid fetches; the other finds the
    newer document in the store when it sees the kid: one fetch for the rotation, not two."""
    store = MemoryKeyStore()
    a, b = make(store), make(store)
    a.verify(issuer.mint(now=clock.now))
    b.verify(issuer.mint(now=clock.now))
    assert issuer.jwks_requests == 1
    issuer.rotate()
    clock.advance(31)  # past the cooldown of the first fetch
    token = issuer.mint(now=clock.now)
    assert a.verify(token).subject == "user-1"
    assert b.verify(token).subject == "user-1"
    assert issuer.jwks_requests == 2


def test_a_stored_document_without_the_wanted_kid_sends_the_fetch_to_the_key_server(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A newer stored document that still lacks the kid the fetch is for is no answer: the
    key server is asked (a key published since the other worker's fetch is found)."""
    store = MemoryKeyStore()
    a = make(store)
    a.verify(issuer.mint(now=clock.now))
    # Another worker stores a newer copy of the same document, then the issuer rotates.
    stored = jwks_entry(issuer, store)
    clock.advance(31)  # past the cooldown
    store.save(
        _store_name("jwks", issuer.jwks_url), StoredDocument(stored.body, clock.now - 1), 600
    )
    issuer.rotate()
    assert a.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 2


def test_discovery_is_shared_too(issuer: LocalIssuer, make: Any, clock: FakeClock) -> None:
    """With discovery, the second worker takes the jwks_uri and the keys from the store: one
    discovery and one JWKS request for both."""
    store = MemoryKeyStore()
    for _ in range(2):
        make(store, jwks_url=None).verify(issuer.mint(now=clock.now))
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)


def test_a_stored_discovery_document_naming_another_issuer_is_refused(
    issuer: LocalIssuer, make: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A discovery document in the store gets the same issuer check as a fetched one: one
    naming another issuer (and another jwks_uri) is ignored, and discovery is done for real."""
    store = MemoryKeyStore()
    forged = {"issuer": "https://evil.example", "jwks_uri": "https://evil.example/jwks"}
    name = _store_name("discovery", issuer.discovery_url)
    store.save(name, StoredDocument(json.dumps(forged).encode(), clock.now), 600)
    with caplog.at_level(logging.WARNING, "jwt_middleware"):
        make(store, jwks_url=None).verify(issuer.mint(now=clock.now))
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 1)
    assert "stored discovery document refused" in caplog.text


JUNK: dict[str, Callable[[LocalIssuer], bytes]] = {
    "not json": lambda issuer: b"{not json",
    "no usable key": lambda issuer: json.dumps(
        {"keys": [{"kty": "oct", "k": "c2VjcmV0", "kid": issuer.current_key.kid}]}
    ).encode(),
    # the issuer's real keys, but more bytes than jwks_max_bytes (50 KiB) allows
    "too big": lambda issuer: json.dumps(issuer.jwks()).encode() + b" " * (50 * 1024),
}


@pytest.mark.parametrize("junk", JUNK.values(), ids=JUNK.keys())
def test_a_junk_stored_document_is_fetched_over_and_replaced(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
    junk: Callable[[LocalIssuer], bytes],
) -> None:
    """A stored JWKS that the fetch limits would refuse (not JSON, only a symmetric key, over
    jwks_max_bytes) is ignored with a warning; the keys are fetched and the entry replaced."""
    store = MemoryKeyStore()
    name = _store_name("jwks", issuer.jwks_url)
    store.save(name, StoredDocument(junk(issuer), clock.now), 600)
    with caplog.at_level(logging.WARNING, "jwt_middleware"):
        assert make(store).verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 1
    assert "key store" in caplog.text
    assert json.loads(jwks_entry(issuer, store).body) == issuer.jwks()


def test_a_poisoned_stored_key_is_used_only_as_any_fetched_key_would_be(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """Without an HMAC (MemoryKeyStore has none: only this process writes it), a well-formed
    stored document is trusted: this pins why RedisKeyStore takes a secret. A token from the
    stored key verifies; the real issuer's token (its kid absent) makes the cache fetch."""
    store = MemoryKeyStore()
    intruder = generate_key("ES256", kid="intruder")
    body = json.dumps({"keys": [intruder.public_jwk()]}).encode()
    store.save(_store_name("jwks", issuer.jwks_url), StoredDocument(body, clock.now), 600)
    v = make(store)
    assert v.verify(issuer.mint(now=clock.now, key=intruder)).subject == "user-1"
    assert issuer.jwks_requests == 0
    clock.advance(31)
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 1


class BrokenStore:
    """A store whose every call fails as an unreachable server's would."""

    def __init__(self) -> None:
        self.calls: list[str] = []

    def load(self, name: str, max_bytes: int) -> StoredDocument | None:
        self.calls.append("load")
        raise ConnectionRefusedError("redis://:hunter2@10.0.0.1 refused")

    def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        self.calls.append("save")
        raise ConnectionRefusedError("refused")

    def acquire(self, name: str, ttl: float) -> str | None:
        self.calls.append("acquire")
        raise ConnectionRefusedError("refused")

    def release(self, name: str, token: str) -> None:
        self.calls.append("release")
        raise ConnectionRefusedError("refused")


def test_a_store_that_cannot_answer_falls_back_to_fetching_directly(
    issuer: LocalIssuer, make: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A store that fails is logged once per fetch (by its error's type, never its message)
    and not called again in that fetch; the keys are fetched and the token verifies."""
    store = BrokenStore()
    with caplog.at_level(logging.WARNING, "jwt_middleware"):
        assert make(store).verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 1
    assert store.calls == ["load"]
    assert "ConnectionRefusedError" in caplog.text
    assert "hunter2" not in caplog.text


class WrongAnswers(BrokenStore):
    def load(self, name: str, max_bytes: int) -> Any:
        return {"keys": []}  # not a StoredDocument

    def acquire(self, name: str, ttl: float) -> str | None:
        return "token"

    def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        self.calls.append("save")

    def release(self, name: str, token: str) -> None:
        self.calls.append("release")


def test_a_store_answering_something_else_than_a_document_is_ignored(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A custom store's load() returning anything but a StoredDocument is junk: fetched over,
    the fetch saved and the lock released."""
    store = WrongAnswers()
    assert make(store).verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert issuer.jwks_requests == 1
    assert store.calls == ["save", "release"]


def test_a_held_lock_makes_the_worker_wait_for_the_store_then_take_it(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """While another process holds the fetch lock, the key cache polls the store and takes
    the document that process stores: no fetch of its own."""
    store = MemoryKeyStore()
    assert store.acquire(_store_name("jwks", issuer.jwks_url), 30) is not None
    body = json.dumps(issuer.jwks()).encode()
    name = _store_name("jwks", issuer.jwks_url)
    filler = threading.Timer(0.3, store.save, (name, StoredDocument(body, clock.now), 600))
    filler.start()
    started = time.monotonic()
    try:
        assert make(store).verify(issuer.mint(now=clock.now)).subject == "user-1"
    finally:
        filler.join()
    assert 0.3 <= time.monotonic() - started < 2.5
    assert issuer.jwks_requests == 0


def test_a_lock_whose_holder_died_costs_half_the_deadline_then_the_worker_fetches(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """A lock left by a dead process (nothing ever stored): the key cache waits half the fetch
    deadline (jwks_timeout), then fetches itself; the token verifies, within the deadline."""
    store = MemoryKeyStore()
    store.acquire(_store_name("jwks", issuer.jwks_url), 30)
    started = time.monotonic()
    assert make(store, jwks_timeout=0.5).verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert 0.5 <= time.monotonic() - started < 1.0
    assert issuer.jwks_requests == 1


def test_the_lock_is_released_after_the_fetch(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """The fetching worker releases the lock once it stored the keys (whether the fetch worked
    or not), so the next fetch anywhere need not wait for it to expire."""
    store = MemoryKeyStore()
    name = _store_name("jwks", issuer.jwks_url)
    make(store).verify(issuer.mint(now=clock.now))
    assert store.acquire(name, 1) is not None
    dead_url = f"http://127.0.0.1:{free_port()}/jwks"  # nothing listens: the fetch fails
    v = make(store, jwks_url=dead_url)
    with pytest.raises(KeysUnavailable):
        v.verify(issuer.mint(now=clock.now))
    assert store.acquire(_store_name("jwks", dead_url), 1) is not None


class SyncRecorder:
    """A plain (sync) store that records the thread each call runs in."""

    def __init__(self) -> None:
        self.inner = MemoryKeyStore()
        self.threads: set[str] = set()

    def load(self, name: str, max_bytes: int) -> StoredDocument | None:
        self.threads.add(threading.current_thread().name)
        return self.inner.load(name, max_bytes)

    def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        self.threads.add(threading.current_thread().name)
        self.inner.save(name, document, ttl)

    def acquire(self, name: str, ttl: float) -> str | None:
        self.threads.add(threading.current_thread().name)
        return self.inner.acquire(name, ttl)

    def release(self, name: str, token: str) -> None:
        self.threads.add(threading.current_thread().name)
        self.inner.release(name, token)


def test_a_sync_store_on_the_asgi_side_runs_off_the_event_loop(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """The async key cache calls a sync store in worker threads, never on the loop's thread
    (a blocking Redis call there would stall every request)."""
    store = SyncRecorder()
    v = Both("async", make_settings(key_store=store, clock=clock))
    try:
        v.verify(issuer.mint(now=clock.now))
    finally:
        v.close()
    assert store.threads and threading.current_thread().name not in store.threads


class AsyncStore:
    async def load(self, name: str, max_bytes: int) -> StoredDocument | None:
        return None

    async def save(self, name: str, document: StoredDocument, ttl: float) -> None:
        pass

    async def acquire(self, name: str, ttl: float) -> str | None:
        return None

    async def release(self, name: str, token: str) -> None:
        pass


def test_an_async_store_on_the_wsgi_side_is_a_configuration_error(
    make_settings: Any,
) -> None:
    """An async store cannot be awaited under WSGI: refused when the verifier is built."""
    with pytest.raises(ConfigurationError, match="RedisKeyStore"):
        SyncVerifier(make_settings(key_store=AsyncStore()))


class Mixed(AsyncStore):
    def load(self, name: str, max_bytes: int) -> StoredDocument | None:  # type: ignore[override]
        return None


@pytest.mark.parametrize(
    ("store", "message"),
    [(object(), "without load, save, acquire, release"), (Mixed(), "mixes sync and async")],
    ids=["not a store", "mixed"],
)
def test_a_key_store_is_checked_in_the_settings(
    issuer: LocalIssuer, store: Any, message: str
) -> None:
    """Settings(key_store=...) refuses what is not a key store, saying what is missing."""
    with pytest.raises(ConfigurationError, match=message):
        Settings(issuer=issuer.issuer, audience=issuer.audience, key_store=store)
    with pytest.raises(ConfigurationError, match=message):
        check_key_store(store)


def test_the_memory_store_expires_bounds_and_locks() -> None:
    """MemoryKeyStore: an entry is gone after its ttl, the store holds at most max_entries, a
    lock is exclusive until released (by its token only) or expired, and a body over the
    reader's limit is CorruptEntry."""
    store = MemoryKeyStore(max_entries=2)
    doc = StoredDocument(b"{}", 1.0, None)
    store.save("a", doc, 0.05)
    assert store.load("a", 10) == doc
    time.sleep(0.06)
    assert store.load("a", 10) is None
    for name in ("b", "c", "d"):
        store.save(name, doc, 60)
    assert len(store) == 2 and store.load("b", 10) is None
    with pytest.raises(CorruptEntry):
        store.load("d", 1)
    token = store.acquire("l", 60)
    assert token is not None and store.acquire("l", 60) is None
    store.release("l", "not-the-token")
    assert store.acquire("l", 60) is None
    store.release("l", token)
    assert store.acquire("l", 0.05) is not None
    time.sleep(0.06)
    assert store.acquire("l", 60) is not None
