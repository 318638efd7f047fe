"""The RFC 7662 introspection clients (SyncIntrospector, AsyncIntrospector) against real
endpoints on 127.0.0.1: the LocalIssuer's /introspect (its faults for the outages) and a small
recording server where the request itself, or an answer the LocalIssuer cannot give, matters.
Every behaviour runs on both clients."""

from __future__ import annotations

import asyncio
import base64
import http.server
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import pytest

from jwt_middleware import IntrospectionUnavailable, InvalidToken, Reason
from jwt_middleware._introspect import AsyncIntrospector, SyncIntrospector
from jwt_middleware.introspection import Introspection
from jwt_middleware.testing import LocalIssuer
from tests.support.clock import FakeClock
from tests.support.forking import wait_child
from tests.support.servers import Blocking

CLIENT = ("orders-api", "s:e cr+t%2F-never-logged")  # characters Basic must form-encode


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A LocalIssuer whose introspection endpoint accepts CLIENT."""
    with LocalIssuer(introspection_client=CLIENT) as local:
        yield local


@pytest.fixture
def clock() -> FakeClock:
    """The introspector's clock, starting now (the LocalIssuer checks exp on the real clock)."""
    return FakeClock(time.time())


class Driver(Blocking):
    """One introspector of either kind behind a synchronous ``introspect``."""

    def __init__(self, kind: str, config: Introspection, clock: Callable[[], float]) -> None:
        super().__init__(kind)
        self.client: Any = (
            AsyncIntrospector(config, clock) if kind == "async" else SyncIntrospector(config, clock)
        )

    def introspect(self, token: str) -> dict[str, Any]:
        result: dict[str, Any] = self.run(self.client.introspect(token))
        return result

    def inactive(self, token: str) -> None:
        with pytest.raises(InvalidToken) as refused:
            self.introspect(token)
        assert refused.value.reason == Reason.TOKEN_INACTIVE

    def unavailable(self, token: str) -> IntrospectionUnavailable:
        with pytest.raises(IntrospectionUnavailable) as refused:
            self.introspect(token)
        assert refused.value.reason == Reason.INTROSPECTION_UNAVAILABLE
        return refused.value

    def close(self) -> None:
        if self.runner is not None:
            self.run(self.client.aclose())
        else:
            self.client.close()
        super().close()


Make = Callable[..., Driver]


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    """Which client: AsyncIntrospector or SyncIntrospector."""
    return str(request.param)


@pytest.fixture
def make(kind: str, issuer: LocalIssuer, clock: FakeClock) -> Iterator[Make]:
    """Builds a driver for ``issuer`` (keywords override the Introspection), closed at the end."""
    made: list[Driver] = []

    def build(**overrides: Any) -> Driver:
        options: dict[str, Any] = {
            "url": issuer.introspection_url,
            "client_id": CLIENT[0],
            "client_secret": CLIENT[1],
            "timeout": 1.0,
            "deadline": 2.0,
        }
        options.update(overrides)
        driver = Driver(kind, Introspection(**options), clock)
        made.append(driver)
        return driver

    yield build
    for driver in made:
        driver.close()


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every jwt_middleware record from INFO up."""
    caplog.set_level(logging.INFO, logger="jwt_middleware")
    return caplog


# -- answers ----------------------------------------------------------------------------------


def test_an_active_token_gives_its_members(make: Make, issuer: LocalIssuer) -> None:
    """An active token's answer members come back: sub, scope, client_id, aud, exp, iss."""
    token = issuer.opaque_token(subject="alice", scope="orders:read", client_id="web")
    claims = make().introspect(token)
    assert claims["active"] is True
    assert (claims["sub"], claims["scope"], claims["client_id"]) == ("alice", "orders:read", "web")
    assert claims["iss"] == issuer.issuer and claims["aud"] == issuer.audience
    assert isinstance(claims["exp"], int)


def test_the_answer_is_read_only_and_shared(make: Make, issuer: LocalIssuer) -> None:
    """The answer is one read-only object (it becomes the shared VerifiedToken.claims): a
    caller cannot change what the next caller gets, and a cache hit hands out that object."""
    driver = make()
    token = issuer.opaque_token(subject="alice", aud=["api://a", "api://b"])
    first = driver.introspect(token)
    with pytest.raises(TypeError):
        first["sub"] = "mallory"
    with pytest.raises(TypeError):
        first["aud"].append("api://evil")
    assert driver.introspect(token) is first
    assert issuer.introspection_requests == 1


@pytest.mark.parametrize("how", ["unknown", "revoked", "expired"])
def test_inactive_tokens_are_invalid(make: Make, issuer: LocalIssuer, how: str) -> None:
    """An unknown, revoked or expired token is InvalidToken token_inactive (a 401)."""
    if how == "unknown":
        token = "never-issued-token"
    elif how == "revoked":
        token = issuer.opaque_token()
        issuer.revoke_opaque(token)
    else:
        token = issuer.opaque_token(expires_in=-5)
    make().inactive(token)


@pytest.mark.parametrize("active", ["true", 1, None, False, [True]])
def test_active_must_be_json_true(make: Make, issuer: LocalIssuer, active: Any) -> None:
    """Only "active": true is active: "true", 1, null, false, [true] are all inactive."""
    issuer.set_fault("wrong_shape", paths=["introspection"], body={"active": active, "sub": "x"})
    make().inactive(issuer.opaque_token())


def test_an_answer_without_active_is_inactive(make: Make, issuer: LocalIssuer) -> None:
    """An answer object with no "active" member is inactive."""
    issuer.set_fault("wrong_shape", paths=["introspection"], body={"sub": "x"})
    make().inactive(issuer.opaque_token())


@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post"])
def test_both_client_auth_methods(make: Make, issuer: LocalIssuer, auth: str) -> None:
    """Basic and post client authentication both work, with a secret that needs encoding."""
    assert make(auth=auth).introspect(issuer.opaque_token())["active"] is True


@pytest.mark.parametrize("auth", ["client_secret_basic", "client_secret_post"])
def test_wrong_credentials_are_an_outage_logged_without_the_secret(
    make: Make, issuer: LocalIssuer, logs: pytest.LogCaptureFixture, auth: str
) -> None:
    """Credentials the endpoint refuses (401) give 503s, one ERROR line for many requests, and
    neither the secret nor the token is in any log line."""
    wrong = "wrong-secret-never-logged"
    driver = make(auth=auth, client_secret=wrong)
    tokens = [issuer.opaque_token() for _ in range(3)]
    for token in tokens:
        error = driver.unavailable(token)
        assert error.retry_after == 5
        assert wrong not in str(error)
    errors = [r for r in logs.records if r.levelno == logging.ERROR]
    assert len(errors) == 1
    assert "client credentials" in errors[0].getMessage()
    assert issuer.introspection_requests == 3  # outages are not cached
    for secret in (wrong, *tokens):
        assert secret not in logs.text


# -- the request ------------------------------------------------------------------------------


@dataclass
class Recording:
    """A server on 127.0.0.1 that answers every POST with ``answer`` and keeps each request."""

    url: str = ""
    answer: tuple[int, dict[str, str], bytes] = (200, {}, b"")
    #: Seconds between the body's bytes (0: all at once).
    drip: float = 0.0
    #: Also drip the status line and headers, a byte every ``drip`` seconds.
    drip_head: bool = False
    requests: list[tuple[dict[str, str], bytes]] = field(default_factory=list)
    #: Each request's target: the path, or the absolute URL a proxy is sent.
    targets: list[str] = field(default_factory=list)


@pytest.fixture
def recording() -> Iterator[Recording]:
    """A recording endpoint answering ``{"active": true}`` unless told otherwise."""
    record = Recording(answer=(200, {"content-type": "application/json"}, b'{"active":true}'))

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", "0")))
            record.requests.append(({k.lower(): v for k, v in self.headers.items()}, body))
            record.targets.append(self.path)
            status, headers, answer = record.answer
            lines = [f"HTTP/1.1 {status} Whatever", *(f"{k}: {v}" for k, v in headers.items())]
            lines += [f"content-length: {len(answer)}", "", ""]
            head = "\r\n".join(lines).encode("latin-1")
            if not record.drip:
                self.wfile.write(head + answer)
                return
            if not record.drip_head:
                self.wfile.write(head)
                head = b""
            dripped = head + answer
            for index in range(len(dripped)):
                if stopping.wait(record.drip):
                    return
                self.wfile.write(dripped[index : index + 1])
                self.wfile.flush()

    stopping = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    record.url = f"http://127.0.0.1:{server.server_address[1]}/introspect"
    try:
        yield record
    finally:
        stopping.set()
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_basic_request_shape(make: Make, recording: Recording) -> None:
    """A Basic request POSTs token and token_type_hint only, with Basic credentials made of the
    form-encoded id and secret (RFC 6749 §2.3.1), Accept-Encoding identity and a form type."""
    make(url=recording.url).introspect("opaque-1")
    ((headers, body),) = recording.requests
    assert parse_qs(body.decode()) == {"token": ["opaque-1"], "token_type_hint": ["access_token"]}
    scheme, _, encoded = headers["authorization"].partition(" ")
    assert scheme == "Basic"
    assert base64.b64decode(encoded).decode() == "orders-api:s%3Ae+cr%2Bt%252F-never-logged"
    assert headers["accept-encoding"] == "identity"
    assert headers["content-type"] == "application/x-www-form-urlencoded"


def test_post_request_shape(make: Make, recording: Recording) -> None:
    """A post request carries the credentials in the form and no Authorization header; a None
    hint sends no token_type_hint."""
    make(url=recording.url, auth="client_secret_post", token_type_hint=None).introspect("op-2")
    ((headers, body),) = recording.requests
    assert "authorization" not in headers
    assert parse_qs(body.decode()) == {
        "token": ["op-2"],
        "client_id": [CLIENT[0]],
        "client_secret": [CLIENT[1]],
    }


def test_the_endpoints_retry_after_is_used_within_bounds(make: Make, recording: Recording) -> None:
    """A 503/429 with Retry-After: that many seconds in our 503 (capped at a minute)."""
    driver = make(url=recording.url)
    recording.answer = (503, {"retry-after": "12"}, b"")
    assert driver.unavailable("a").retry_after == 12
    recording.answer = (429, {"retry-after": "86400"}, b"")
    assert driver.unavailable("b").retry_after == 60
    recording.answer = (503, {"retry-after": "soon"}, b"")
    assert driver.unavailable("c").retry_after == 5


def test_json_with_a_charset_is_json(make: Make, recording: Recording) -> None:
    """application/json; charset=utf-8 is accepted as JSON."""
    recording.answer = (
        200,
        {"content-type": "Application/JSON; charset=utf-8"},
        b'{"active":true}',
    )
    assert make(url=recording.url).introspect("t")["active"] is True


@pytest.mark.parametrize(
    "body",
    [
        b"[true]",
        b'{"active": NaN}',
        b'{"active": false, "active": true}',  # duplicate names: strict JSON refuses them
        b"\xff\xfe",
        b"[" * 5000 + b"]" * 5000,
    ],
)
def test_answers_that_are_not_a_json_object(make: Make, recording: Recording, body: bytes) -> None:
    """A JSON array, a NaN, duplicate member names, bytes that are not UTF-8, or nesting too
    deep: an outage, never an admission."""
    recording.answer = (200, {"content-type": "application/json"}, body)
    make(url=recording.url).unavailable("t")


# -- caches ------------------------------------------------------------------------------------


def test_an_active_answer_is_cached_until_exp(
    make: Make, issuer: LocalIssuer, clock: FakeClock
) -> None:
    """The second call makes no request; once the token's exp passes, the next call asks."""
    driver = make(cache_ttl=300)
    token = issuer.opaque_token(expires_in=60)
    driver.introspect(token)
    clock.advance(59)
    driver.introspect(token)
    assert issuer.introspection_requests == 1
    clock.advance(2)
    driver.introspect(token)  # the LocalIssuer's own clock: still active there
    assert issuer.introspection_requests == 2


def test_cache_ttl_bounds_a_long_lived_token(
    make: Make, issuer: LocalIssuer, clock: FakeClock
) -> None:
    """A token valid for an hour is believed for cache_ttl only: a revocation then shows."""
    driver = make(cache_ttl=100)
    token = issuer.opaque_token(expires_in=3600)
    driver.introspect(token)
    issuer.revoke_opaque(token)
    clock.advance(99)
    driver.introspect(token)
    clock.advance(2)
    driver.inactive(token)
    assert issuer.introspection_requests == 2


def test_an_answer_without_exp_is_kept_for_cache_ttl(
    make: Make, issuer: LocalIssuer, clock: FakeClock
) -> None:
    """No exp in the answer: cached for cache_ttl."""
    driver = make(cache_ttl=50)
    token = issuer.opaque_token(expires_in=None)
    driver.introspect(token)
    clock.advance(49)
    driver.introspect(token)
    assert issuer.introspection_requests == 1
    clock.advance(2)
    driver.introspect(token)
    assert issuer.introspection_requests == 2


def test_cache_size_zero_asks_every_time(make: Make, issuer: LocalIssuer) -> None:
    """cache_size=0: no active answer is kept."""
    driver = make(cache_size=0)
    token = issuer.opaque_token()
    driver.introspect(token)
    driver.introspect(token)
    assert issuer.introspection_requests == 2


def test_the_active_cache_is_bounded(make: Make, issuer: LocalIssuer) -> None:
    """cache_size bounds the active answers: the least recently used one is asked again."""
    driver = make(cache_size=2)
    first, second, third = (issuer.opaque_token() for _ in range(3))
    for token in (first, second, third, second, third):
        driver.introspect(token)
    assert issuer.introspection_requests == 3
    driver.introspect(first)
    assert issuer.introspection_requests == 4


def test_an_inactive_answer_is_cached_for_negative_ttl(
    make: Make, issuer: LocalIssuer, clock: FakeClock
) -> None:
    """A refused token replayed within negative_ttl costs no request; after it, one."""
    driver = make(negative_ttl=30)
    driver.inactive("junk-token")
    clock.advance(29)
    driver.inactive("junk-token")
    assert issuer.introspection_requests == 1
    clock.advance(2)
    driver.inactive("junk-token")
    assert issuer.introspection_requests == 2


def test_the_negative_cache_is_bounded(make: Make, issuer: LocalIssuer) -> None:
    """A flood of made-up tokens costs one request each and keeps at most negative_cache_size
    of them: the oldest is forgotten (asked again), the newest are not."""
    driver = make(negative_cache_size=3)
    flood = [f"junk-{n}" for n in range(50)]
    for token in flood:
        driver.inactive(token)
    assert issuer.introspection_requests == 50
    for token in flood[-3:]:
        driver.inactive(token)
    assert issuer.introspection_requests == 50
    driver.inactive(flood[0])
    assert issuer.introspection_requests == 51
    assert len(driver.client._core._inactive) == 3


def test_outages_are_not_cached_as_inactive(make: Make, issuer: LocalIssuer) -> None:
    """A 500 then a recovery: the same token is asked again and accepted."""
    driver = make()
    token = issuer.opaque_token()
    issuer.set_fault("status", paths=["introspection"], status=500)
    driver.unavailable(token)
    issuer.set_fault(None)
    assert driver.introspect(token)["active"] is True
    assert issuer.introspection_requests == 2


def test_the_cache_keeps_no_raw_token(make: Make, issuer: LocalIssuer) -> None:
    """Both caches are keyed by a 32-byte digest, never by the token."""
    driver = make()
    token = issuer.opaque_token()
    driver.introspect(token)
    driver.inactive("junk-token")
    core = driver.client._core
    keys = [*core._active.keys(), *core._inactive.keys()]
    assert len(keys) == 2
    assert all(isinstance(k, bytes) and len(k) == 32 for k in keys)
    assert all(token.encode() not in k and b"junk-token" not in k for k in keys)


# -- single flight -----------------------------------------------------------------------------


def test_concurrent_threads_share_one_request(issuer: LocalIssuer, clock: FakeClock) -> None:
    """Ten threads asking about one uncached token make ONE request and all get its members."""
    config = Introspection(
        url=issuer.introspection_url, client_id=CLIENT[0], client_secret=CLIENT[1]
    )
    client = SyncIntrospector(config, clock)
    token = issuer.opaque_token(subject="alice")
    issuer.set_fault("slow", paths=["introspection"], delay=0.5)
    results: list[Any] = []
    barrier = threading.Barrier(10)

    def ask() -> None:
        barrier.wait()
        try:
            results.append(client.introspect(token)["sub"])
        except Exception as exc:
            results.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    client.close()
    assert results == ["alice"] * 10
    assert issuer.introspection_requests == 1


def test_concurrent_threads_share_an_inactive_answer(issuer: LocalIssuer, clock: FakeClock) -> None:
    """Waiting threads get the leader's refusal too, each as its own exception."""
    config = Introspection(
        url=issuer.introspection_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        negative_cache_size=0,
    )
    client = SyncIntrospector(config, clock)
    issuer.set_fault("slow", paths=["introspection"], delay=0.5)
    errors: list[BaseException] = []
    barrier = threading.Barrier(5)

    def ask() -> None:
        barrier.wait()
        try:
            client.introspect("junk")
        except InvalidToken as exc:
            errors.append(exc)

    threads = [threading.Thread(target=ask) for _ in range(5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    client.close()
    assert [e.reason for e in errors] == [Reason.TOKEN_INACTIVE] * 5  # type: ignore[attr-defined]
    assert len({id(e) for e in errors}) == 5
    assert issuer.introspection_requests == 1


def test_concurrent_tasks_share_one_request_and_survive_a_cancelled_waiter(
    issuer: LocalIssuer, clock: FakeClock
) -> None:
    """Ten tasks asking about one token make ONE request; cancelling the task that started it
    cancels neither the request nor the others' wait."""
    config = Introspection(
        url=issuer.introspection_url, client_id=CLIENT[0], client_secret=CLIENT[1]
    )
    token = issuer.opaque_token(subject="alice")
    issuer.set_fault("slow", paths=["introspection"], delay=0.5)

    async def scenario() -> list[Any]:
        client = AsyncIntrospector(config, clock)
        first = asyncio.create_task(client.introspect(token))
        await asyncio.sleep(0.1)
        others = [asyncio.create_task(client.introspect(token)) for _ in range(9)]
        first.cancel()
        results = await asyncio.gather(*others, return_exceptions=True)
        assert first.cancelled()
        await client.aclose()
        return [r["sub"] if isinstance(r, dict) else r for r in results]

    assert asyncio.run(scenario()) == ["alice"] * 9
    assert issuer.introspection_requests == 1


# -- outages -----------------------------------------------------------------------------------

#: Each fault, its parameters, and what the 503's detail says about it.
OUTAGES: dict[str, tuple[dict[str, Any], str]] = {
    "down": ({}, "unreachable (ConnectError)"),
    "slow": ({"delay": 3.0}, "timed out"),
    "status": ({"status": 500}, "answered 500"),
    "garbage": ({}, "Content-Type 'text/html'"),
    "huge": ({"size": 200_000}, "more than 65536 bytes"),
    "redirect": ({}, "redirect (307), which is never followed"),
    "encoding": ({"encoding": "gzip"}, "Content-Encoding 'gzip'"),
    "content_type": ({"content_type": "text/plain"}, "Content-Type 'text/plain'"),
    "truncated": ({}, "unreachable (RemoteProtocolError)"),
}


@pytest.mark.parametrize("mode", list(OUTAGES))
def test_outages_are_unavailable_with_retry_after(
    make: Make, issuer: LocalIssuer, logs: pytest.LogCaptureFixture, mode: str
) -> None:
    """Down, slow, 500, HTML, huge, redirect (never followed), gzip, wrong type, truncated: each
    is IntrospectionUnavailable with the configured Retry-After, a warning without the token
    or secret, and no request more than one."""
    driver = make(retry_after=7)
    token = issuer.opaque_token()
    params, problem = OUTAGES[mode]
    issuer.set_fault(mode, paths=["introspection"], **params)
    started = time.monotonic()
    error = driver.unavailable(token)
    assert problem in error.detail
    assert time.monotonic() - started < 2.5  # the 2 s deadline, with room
    assert error.retry_after == 7
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert warnings and all("introspection endpoint" in r.getMessage() for r in warnings)
    assert token not in logs.text and CLIENT[1] not in logs.text
    assert issuer.introspection_requests == (0 if mode == "down" else 1)


def test_the_deadline_bounds_the_whole_call(make: Make, issuer: LocalIssuer) -> None:
    """With a phase timeout longer than the deadline, the deadline still ends the call."""
    driver = make(timeout=5.0, deadline=0.5)
    issuer.set_fault("slow", paths=["introspection"], delay=3.0)
    started = time.monotonic()
    driver.unavailable(issuer.opaque_token())
    assert time.monotonic() - started < 1.5


def test_the_deadline_ends_a_dripping_answer(make: Make, recording: Recording) -> None:
    """A body sent a byte every 0.2 s (each read well within the 1 s timeout) is cut at the
    deadline, not read for the 20 s it would take."""
    recording.answer = (200, {"content-type": "application/json"}, b" " * 90 + b'{"active":true}')
    recording.drip = 0.2
    driver = make(url=recording.url, timeout=1.0, deadline=1.0)
    started = time.monotonic()
    error = driver.unavailable("t")
    assert time.monotonic() - started < 2.0
    assert "deadline" in error.detail


def test_the_deadline_ends_dripping_headers(make: Make, recording: Recording) -> None:
    """Status line and headers sent a byte every 0.2 s (each read within the 1 s timeout, the
    head alone taking about 20 s) are cut at the 1 s deadline too."""
    recording.drip = 0.2
    recording.drip_head = True
    driver = make(url=recording.url, timeout=1.0, deadline=1.0)
    started = time.monotonic()
    error = driver.unavailable("t")
    assert time.monotonic() - started < 2.0
    assert "deadline" in error.detail


@pytest.mark.parametrize("trust_env", [True, False])
def test_the_environment_proxy_carries_the_request_unless_trust_env_is_false(
    make: Make, recording: Recording, monkeypatch: pytest.MonkeyPatch, trust_env: bool
) -> None:
    """http_proxy (the recording server, answering as a proxy would) gets the absolute-form
    POST by default; with trust_env=False it is ignored and the endpoint (nothing listening
    there) is unreachable."""
    for name in ("no_proxy", "NO_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", recording.url.rsplit("/", 1)[0])
    url = "http://127.0.0.1:9/introspect"  # discard: refused, or dropped by a firewall
    driver = make(url=url, trust_env=trust_env, timeout=0.5, deadline=1.0)
    if trust_env:
        assert driver.introspect("t")["active"] is True
        assert recording.targets == [url]
    else:
        driver.unavailable("t")
        assert recording.targets == []


def test_an_answer_over_max_bytes_is_refused(make: Make, issuer: LocalIssuer) -> None:
    """A body one byte over max_bytes is an outage, at the limit it is read."""
    driver = make(max_bytes=1000)
    issuer.set_fault("huge", paths=["introspection"], size=1000)
    assert driver.introspect(issuer.opaque_token())["active"] is True
    issuer.set_fault("huge", paths=["introspection"], size=1001)
    driver.unavailable(issuer.opaque_token())


def test_recovery_after_an_outage(make: Make, issuer: LocalIssuer) -> None:
    """The endpoint back up: the next call succeeds (no cooldown keeps it failing)."""
    driver = make()
    token = issuer.opaque_token()
    issuer.set_fault("down")
    driver.unavailable(token)
    issuer.set_fault(None)
    assert driver.introspect(token)["active"] is True


def test_outage_warnings_are_throttled(
    make: Make, issuer: LocalIssuer, logs: pytest.LogCaptureFixture
) -> None:
    """Twenty requests during an outage write one warning, not twenty."""
    driver = make()
    issuer.set_fault("status", paths=["introspection"], status=502)
    for n in range(20):
        driver.unavailable(f"token-{n}")
    assert len([r for r in logs.records if r.levelno == logging.WARNING]) == 1
    assert issuer.introspection_requests == 20


# -- gaps found by mutation testing ------------------------------------------------------------


def test_a_403_is_a_credentials_refusal_too(
    make: Make, recording: Recording, logs: pytest.LogCaptureFixture
) -> None:
    """A 403 (as some servers answer bad client credentials) is the same refusal as a 401: the
    configured Retry-After and an ERROR line about the credentials."""
    recording.answer = (403, {}, b"")
    error = make(url=recording.url, retry_after=7).unavailable("t")
    assert "refused our client credentials (403)" in error.detail
    assert error.retry_after == 7
    errors = [r for r in logs.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "client credentials" in errors[0].getMessage()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("0", 1),
        ("1", 1),
        ("60", 60),
        ("61", 60),
        ("-5", 7),
        ("1.5", 7),
        ("1e3", 7),
        ("", 7),
        ("\u00b2", 7),  # "²".isdigit() holds
    ],
)
def test_retry_after_values(make: Make, recording: Recording, value: str, seconds: float) -> None:
    """Retry-After in delta seconds is held within 1..60; any other form is ignored (the
    configured retry_after) and the 503 still says what the endpoint answered."""
    recording.answer = (503, {"retry-after": value} if value else {}, b"")
    error = make(url=recording.url, retry_after=7).unavailable("t")
    assert error.retry_after == seconds
    assert "answered 503" in error.detail


def test_concurrent_tasks_share_an_inactive_answer(issuer: LocalIssuer, clock: FakeClock) -> None:
    """Waiting tasks get the one request's refusal too, each as its own exception."""
    config = Introspection(
        url=issuer.introspection_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        negative_cache_size=0,
    )
    issuer.set_fault("slow", paths=["introspection"], delay=0.5)

    async def scenario() -> list[BaseException]:
        client = AsyncIntrospector(config, clock)
        tasks = [asyncio.create_task(client.introspect("junk")) for _ in range(5)]
        results = await asyncio.gather(*tasks, return_exceptions=True)
        await client.aclose()
        return [r for r in results if isinstance(r, BaseException)]

    errors = asyncio.run(scenario())
    assert [getattr(e, "reason", e) for e in errors] == [Reason.TOKEN_INACTIVE] * 5
    assert len({id(e) for e in errors}) == 5
    assert issuer.introspection_requests == 1


def test_waiters_of_an_outage_keep_its_retry_after(kind: str, issuer: LocalIssuer) -> None:
    """Callers that waited on one failing request each get a 503 with the configured
    Retry-After, not a default one."""
    config = Introspection(
        url=issuer.introspection_url,
        client_id=CLIENT[0],
        client_secret="not-the-secret",  # a slow 401: an outage every waiter shares
        retry_after=7,
    )
    issuer.set_fault("slow", paths=["introspection"], delay=0.5)
    if kind == "async":

        async def scenario() -> list[Any]:
            client = AsyncIntrospector(config)
            tasks = [asyncio.create_task(client.introspect("t")) for _ in range(5)]
            results = await asyncio.gather(*tasks, return_exceptions=True)
            await client.aclose()
            return results

        results = asyncio.run(scenario())
    else:
        client = SyncIntrospector(config)
        results = []
        barrier = threading.Barrier(5)

        def ask() -> None:
            barrier.wait()
            try:
                results.append(client.introspect("t"))
            except Exception as exc:
                results.append(exc)

        threads = [threading.Thread(target=ask) for _ in range(5)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(10)
        client.close()
    assert len(results) == 5
    assert all(isinstance(r, IntrospectionUnavailable) for r in results)
    assert [r.retry_after for r in results] == [7] * 5
    assert issuer.introspection_requests == 1


def test_a_boolean_exp_does_not_bound_the_cache(make: Make, recording: Recording) -> None:
    """ "exp": true is no time (JSON true is not a number): the answer is kept for cache_ttl,
    not taken as expired in 1970."""
    recording.answer = (200, {"content-type": "application/json"}, b'{"active":true,"exp":true}')
    driver = make(url=recording.url)
    driver.introspect("t")
    driver.introspect("t")
    assert len(recording.requests) == 1


def test_endpoint_chosen_text_cannot_multiply_warnings(
    make: Make, recording: Recording, logs: pytest.LogCaptureFixture
) -> None:
    """Answers whose Content-Type changes every time (text the endpoint chooses) are one kind
    of trouble: one warning per interval, not one per answer."""
    driver = make(url=recording.url)
    for n in range(20):
        recording.answer = (200, {"content-type": f"text/x-{n}"}, b"{}")
        driver.unavailable(f"t{n}")
    warnings = [r for r in logs.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1, [r.getMessage() for r in warnings]


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_while_a_lock_is_held_does_not_deadlock(
    issuer: LocalIssuer, clock: FakeClock
) -> None:
    """Forked while another thread holds the cache lock (as gunicorn --preload may fork): the
    child's introspector has locks of its own, and answers."""
    config = Introspection(
        url=issuer.introspection_url, client_id=CLIENT[0], client_secret=CLIENT[1]
    )
    client = SyncIntrospector(config, clock)
    token = issuer.opaque_token()
    with client._core._lock:
        pid = os.fork()
        if pid == 0:  # pragma: no cover - runs in the child
            code = 1
            try:
                code = 0 if client.introspect(token)["active"] is True else 2
            finally:
                os._exit(code)
    assert wait_child(pid, timeout=10) == 0
    client.close()


def test_twenty_threads_get_twenty_slow_answers_in_time(
    issuer: LocalIssuer, clock: FakeClock
) -> None:
    """The sync client's pool lets as many requests out at once as httpx.Client would: twenty
    threads asking about twenty tokens an endpoint answers in 1 s all get their answer within
    the 1.8 s deadline (with ten connections, ten would wait and time out)."""
    config = Introspection(
        url=issuer.introspection_url,
        client_id=CLIENT[0],
        client_secret=CLIENT[1],
        timeout=1.8,
        deadline=1.8,
    )
    client = SyncIntrospector(config, clock)
    tokens = [issuer.opaque_token() for _ in range(20)]
    issuer.set_fault("slow", paths=["introspection"], delay=1.0)
    outcomes: list[str] = []

    def ask(token: str) -> None:
        try:
            outcomes.append("active" if client.introspect(token)["active"] else "?")
        except IntrospectionUnavailable:
            outcomes.append("unavailable")

    threads = [threading.Thread(target=ask, args=(token,)) for token in tokens]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    client.close()
    assert outcomes == ["active"] * 20
