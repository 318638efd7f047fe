"""The key fetch on the wire (jwks.py transports), against a real hostile key server on 127.0.0.1:
time bounds on every phase, bytes read and decoded, content codings, media types, a raising
events hook, and secrets in the key URL. Every test runs on both transports (async and sync).
"""

from __future__ import annotations

import asyncio
import base64
import http.server
import json
import logging
import secrets
import socket
import threading
import time
import tracemalloc
import zlib
from collections.abc import Iterator
from typing import Any

import pytest

from jwt_middleware import KeysUnavailable
from jwt_middleware._errors import redact as _redact  # what _jwks uses, under the same name
from jwt_middleware._jwks import KeyFetchError, _Body, _Target
from jwt_middleware.observe import Counters
from jwt_middleware.testing import LocalIssuer
from tests.support.clock import FakeClock
from tests.support.servers import VerifierDriver, closing, free_port

TIMEOUT = 0.3
BOUND = 2 * TIMEOUT  # the documented limit of one fetch, and of any wait for it
LIMIT = 3 * BOUND  # generous: this machine is shared and noisy


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str, make_settings: Any, clock: FakeClock) -> Iterator[Any]:
    def build(**overrides: Any) -> VerifierDriver:
        overrides.setdefault("clock", clock)
        overrides.setdefault("jwks_timeout", TIMEOUT)
        return VerifierDriver(kind, make_settings(**overrides))

    yield from closing(build)


def last_error(v: VerifierDriver) -> str:
    return str(v.verifier.remote.policy.last_error)


# -- time: every phase under the total, and every waiter too ----------------------------------


@pytest.mark.parametrize("mode", ["drip_headers", "drip_body"])
def test_a_dripping_key_server_is_cut_off_at_the_total_deadline(
    issuer: LocalIssuer, make: Any, clock: FakeClock, mode: str
) -> None:
    """A server sending a byte per 0.05 s (never tripping the 0.3 s read timeout) is given up on
    within 2 x jwks_timeout, in the header phase as in the body phase: 503."""
    issuer.set_fault(mode, interval=0.05)  # ~5 s for the whole answer
    v = make()
    started = time.monotonic()
    with pytest.raises(KeysUnavailable) as refused:
        v.verify(issuer.mint(now=clock.now))
    assert time.monotonic() - started < LIMIT
    assert "too slow" in refused.value.detail
    v.settle()
    assert "too slow" in last_error(v)  # the fetch itself ended, not only the wait for it


def test_requests_waiting_for_a_stuck_fetch_give_up_by_its_deadline(
    issuer: LocalIssuer, make: Any, clock: FakeClock, kind: str
) -> None:
    """Four requests with random kids waiting on one dripping fetch all get a 503 within the
    bound, and a request whose key is held is answered at once meanwhile (no pinned workers)."""
    v = make()
    known = issuer.mint(now=clock.now, expires_in=3600)
    v.verify(known)
    clock.advance(31)  # past the cooldown: an unknown kid may fetch
    issuer.set_fault("drip_headers", interval=0.05)
    tokens = [issuer.mint(now=clock.now, kid=f"random-{secrets.token_hex(4)}") for _ in range(4)]
    started = time.monotonic()
    if kind == "async":

        async def all_of_them() -> list[Any]:
            waits = [v.verifier.verify(t) for t in tokens]
            return await asyncio.gather(*waits, v.verifier.verify(known), return_exceptions=True)

        *waited, held = v.run(all_of_them())
    else:
        results: dict[int, Any] = {}

        def worker(i: int, token: str) -> None:
            try:
                results[i] = v.verify(token)
            except Exception as exc:
                results[i] = exc

        threads = [threading.Thread(target=worker, args=item) for item in enumerate(tokens)]
        for thread in threads:
            thread.start()
        time.sleep(0.05)  # let them block on the fetch
        held = v.verify(known)
        assert time.monotonic() - started < BOUND  # not queued behind the waiters
        for thread in threads:
            thread.join(LIMIT)
        waited = [results.get(i) for i in range(len(tokens))]
    assert time.monotonic() - started < LIMIT
    assert all(isinstance(r, KeysUnavailable) for r in waited), waited
    assert held.subject == "user-1"
    assert issuer.jwks_requests == 2  # single-flight: one fetch for all four


@pytest.fixture
def blackholes() -> Iterator[list[tuple[str, int]]]:
    """Ten loopback addresses (127.0.0.2 to .11, one port) on which a connect gets no answer:
    each listens with its accept queue full and never accepts, so a new SYN is dropped."""
    for _ in range(20):  # the port must be free on all ten addresses
        sockets: list[socket.socket] = []
        try:
            first = socket.socket()
            sockets.append(first)
            first.bind(("127.0.0.2", 0))
            port = first.getsockname()[1]
            for i in range(3, 12):
                sockets.append(socket.socket())
                sockets[-1].bind((f"127.0.0.{i}", port))
        except OSError:
            for sock in sockets:
                sock.close()
            continue
        break
    for listener in list(sockets):
        listener.listen(0)
        for _ in range(3):  # fill the accept queue (and the SYN queue's room for it)
            filler = socket.socket()
            filler.setblocking(False)
            filler.connect_ex(listener.getsockname())
            sockets.append(filler)
    try:
        yield [(f"127.0.0.{i}", port) for i in range(2, 12)]
    finally:
        for sock in sockets:
            sock.close()


def test_a_host_with_many_unreachable_addresses_costs_one_deadline(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    blackholes: list[tuple[str, int]],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A key host whose name resolves to ten addresses that never answer a connect is given
    up on within 2 x jwks_timeout, the fetch included: the connect timeout is not spent once
    per address."""
    real = socket.getaddrinfo

    def resolve(host: Any, port: Any, *args: Any, **kwargs: Any) -> Any:
        # A stand-in for DNS (a real multi-address name cannot be had offline); anyio asks
        # with the name IDNA-encoded.
        if host not in ("localhost", b"localhost"):
            return real(host, port, *args, **kwargs)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", address) for address in blackholes]

    monkeypatch.setattr(socket, "getaddrinfo", resolve)
    v = make(jwks_url=f"http://localhost:{blackholes[0][1]}/jwks.json")
    started = time.monotonic()
    with pytest.raises(KeysUnavailable):
        v.verify(issuer.mint(now=clock.now))
    v.settle()
    assert time.monotonic() - started < LIMIT  # ten connect timeouts would take 3 s


def test_a_slow_log_handler_never_holds_up_the_requests_waiting_for_keys(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """Sync: the fetch's outcome is logged after the cache's lock is released, so a request
    waiting for the fetch is answered while a log handler is still busy with the record."""
    release = threading.Event()

    class Stuck(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "fetched" in record.getMessage():
                release.wait(10)

    library = logging.getLogger("jwt_middleware")
    handler, level = Stuck(), library.level
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    v = VerifierDriver("sync", make_settings(clock=clock, jwks_timeout=TIMEOUT))
    token = issuer.mint(now=clock.now)
    answers: list[Any] = []
    waiter = threading.Thread(target=lambda: answers.append(v.verify(token)))
    try:
        waiter.start()
        waiter.join(LIMIT)
        answered_while_logging = not waiter.is_alive() and not release.is_set()
    finally:
        release.set()
        waiter.join(10)
        library.removeHandler(handler)
        library.setLevel(level)
        v.close()
    assert answered_while_logging
    assert [a.subject for a in answers] == ["user-1"]


def test_closing_the_sync_key_cache_waits_for_the_fetch_to_finish_reporting(
    issuer: LocalIssuer, make_settings: Any, clock: FakeClock
) -> None:
    """close() returns only once a fetch in flight has logged its outcome (the CLI removes its
    log handler after close, and a record logged later reached stderr unredacted, twice)."""
    logged = threading.Event()

    class Slow(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if "fetched" in record.getMessage():
                time.sleep(0.3)
                logged.set()

    library = logging.getLogger("jwt_middleware")
    handler, level = Slow(), library.level
    library.addHandler(handler)
    library.setLevel(logging.INFO)
    try:
        v = VerifierDriver("sync", make_settings(clock=clock, jwks_timeout=TIMEOUT))
        v.verify(issuer.mint(now=clock.now))  # answered before the record is handled
        v.close()
        assert logged.is_set()
    finally:
        library.removeHandler(handler)
        library.setLevel(level)


# -- size: the wire and the decoded body are both bounded --------------------------------------


@pytest.mark.parametrize(("encoding", "why"), [("gzip", "once decoded"), ("gzip, gzip", "stacked")])
def test_compression_bombs_are_refused_without_being_inflated(
    issuer: LocalIssuer, make: Any, clock: FakeClock, encoding: str, why: str
) -> None:
    """A 40 MB document gzipped into ~40 KB (under jwks_max_bytes on the wire), or gzipped
    twice, is refused with at most about jwks_max_bytes ever inflated."""
    issuer.set_fault("encoding", encoding=encoding, size=40_000_000)
    v = make(jwks_timeout=5)
    tracemalloc.start()
    try:
        with pytest.raises(KeysUnavailable):
            v.verify(issuer.mint(now=clock.now))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # inflating the bomb would take 40 MB
    assert why in last_error(v)


@pytest.mark.parametrize("encoding", ["br", "zstd", "compress", "deflate, gzip", "gzip, br"])
def test_unknown_or_stacked_content_codings_are_refused(
    issuer: LocalIssuer, make: Any, clock: FakeClock, encoding: str
) -> None:
    """Only identity or exactly one gzip/deflate layer is accepted; other codings are refused."""
    issuer.set_fault("encoding", encoding=encoding)
    v = make()
    with pytest.raises(KeysUnavailable):
        v.verify(issuer.mint(now=clock.now))
    assert "content coding" in last_error(v)


@pytest.mark.parametrize("encoding", ["gzip", "x-gzip", "deflate", "identity", "GZip"])
def test_one_gzip_or_deflate_layer_is_decoded(
    issuer: LocalIssuer, make: Any, clock: FakeClock, encoding: str
) -> None:
    """A server that compresses although we ask for identity is still understood (one layer)."""
    issuer.set_fault("encoding", encoding=encoding)
    v = make()
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"


# -- media types --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content_type", ["text/html", None, "application/jsonp", "text/plain; x=application/json"]
)
def test_a_jwks_that_is_not_a_json_media_type_is_refused(
    issuer: LocalIssuer, make: Any, clock: FakeClock, content_type: str | None
) -> None:
    """The JWKS must be served as JSON; HTML, other types and no Content-Type are refused."""
    issuer.set_fault("content_type", content_type=content_type)
    v = make()
    with pytest.raises(KeysUnavailable):
        v.verify(issuer.mint(now=clock.now))
    assert "Content-Type" in last_error(v)


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "application/jwk-set+json", "Application/JSON; charset=UTF-8"],
)
def test_json_media_types_are_accepted_for_the_jwks(
    issuer: LocalIssuer, make: Any, clock: FakeClock, content_type: str
) -> None:
    """application/json and application/jwk-set+json, any case, parameters allowed."""
    issuer.set_fault("content_type", content_type=content_type)
    v = make()
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"


def test_discovery_must_be_application_json(
    issuer: LocalIssuer, make: Any, clock: FakeClock
) -> None:
    """The discovery document is application/json; a JWK Set type there is refused."""
    issuer.set_fault("content_type", content_type="application/jwk-set+json", paths=["discovery"])
    v = make(jwks_url=None)
    with pytest.raises(KeysUnavailable):
        v.verify(issuer.mint(now=clock.now))
    assert (issuer.discovery_requests, issuer.jwks_requests) == (1, 0)
    assert "Content-Type" in last_error(v)


# -- the events hook ------------------------------------------------------------------------------


class RaisingHook(Counters):
    """Counters whose key_fetch() raises every time (after counting)."""

    def key_fetch(self, *, ok: bool) -> None:
        super().key_fetch(ok=ok)
        raise RuntimeError("hook is broken")


@pytest.mark.timeout(20)  # the bug this pins blocked forever
def test_a_raising_key_fetch_hook_never_wedges_the_key_cache(
    issuer: LocalIssuer, make: Any, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    """A hook that raises is logged and ignored: warm-up returns, requests are answered, and
    later fetches happen as usual."""
    events = RaisingHook()
    v = make(events=events)
    v.run(v.verifier.warm_up())
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    clock.advance(31)
    issuer.rotate()
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"  # a second fetch
    assert issuer.jwks_requests == 2
    assert events.snapshot()["key_fetch_ok"] == 2
    assert "events.key_fetch() raised" in caplog.text


# -- secrets in the key URL --------------------------------------------------------------------

USER, PASSWORD, QUERY_SECRET = "svc", "hunter2-password", "query-secret-42"


class Recorder(http.server.BaseHTTPRequestHandler):
    """Serves a fixed JWKS (self.server.body) and records each request line and Authorization."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Any = self.server
        server.seen.append((self.path, self.headers.get("authorization")))
        status, body = server.answer
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def recorder(issuer: LocalIssuer) -> Iterator[Any]:
    server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    server.seen = []
    server.answer = (200, json.dumps(issuer.jwks()).encode())
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_url_credentials_and_query_never_reach_a_log_record(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    recorder: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With userinfo and a query secret in jwks_url, no log record of any logger (httpx's and
    httpcore's included, at DEBUG), on success or failure, shows either; the credentials go out
    as Basic auth and the query as sent."""
    caplog.set_level(logging.DEBUG)  # the root logger: every library's records
    port = recorder.server_address[1]
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{port}/jwks?api_key={QUERY_SECRET}"
    v = make(jwks_url=url)
    details: list[str] = []
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"  # success
    clock.advance(31)
    recorder.answer = (500, b'{"error": "x"}')  # failure: an HTTP error
    with pytest.raises(KeysUnavailable) as refused:
        v.verify(issuer.mint(now=clock.now, kid="new"))
    details.append(refused.value.detail)
    clock.advance(31)
    recorder.answer = (200, b"{not json")  # failure: a broken document
    with pytest.raises(KeysUnavailable) as refused:
        v.verify(issuer.mint(now=clock.now, kid="newer"))
    details.append(refused.value.detail)
    assert any(r.name.startswith("httpcore") for r in caplog.records)  # client records seen
    for text in [caplog.text, *(r.getMessage() for r in caplog.records), *details]:
        assert PASSWORD not in text
        assert QUERY_SECRET not in text
    basic = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    assert recorder.seen == [(f"/jwks?api_key={QUERY_SECRET}", basic)] * 3


def test_unreachable_url_with_secrets_is_not_logged(
    make: Any, clock: FakeClock, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """Connection refused: the failure's log lines and 503 detail show neither secret."""
    caplog.set_level(logging.DEBUG)
    url = f"http://{USER}:{PASSWORD}@127.0.0.1:{free_port()}/jwks?api_key={QUERY_SECRET}"
    v = make(jwks_url=url)
    with pytest.raises(KeysUnavailable) as refused:
        v.verify(issuer.mint(now=clock.now))
    assert "unreachable" in last_error(v)
    for text in [caplog.text, refused.value.detail]:
        assert PASSWORD not in text
        assert QUERY_SECRET not in text


@pytest.mark.parametrize("bypass", [False, True])
def test_the_environment_proxy_is_used_as_httpx_would(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    recorder: Any,
    monkeypatch: pytest.MonkeyPatch,
    bypass: bool,
) -> None:
    """http_proxy from the environment carries the fetch (absolute-form request line), unless
    no_proxy names the host."""
    for name in ("http_proxy", "HTTP_PROXY", "all_proxy", "ALL_PROXY", "no_proxy", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("http_proxy", f"http://127.0.0.1:{recorder.server_address[1]}")
    if bypass:
        monkeypatch.setenv("no_proxy", "127.0.0.1")
    v = make()
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    if bypass:
        assert (recorder.seen, issuer.jwks_requests) == ([], 1)
    else:
        assert [path for path, _ in recorder.seen] == [issuer.jwks_url]
        assert issuer.jwks_requests == 0  # the proxy answered


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("https://u:p@keys.example/jwks?key=s3cret", "https://***@keys.example/jwks?***"),
        ("see 'http://a@h:8080/x?q=1' now", "see 'http://***@h:8080/x?***' now"),
        ("https://keys.example/jwks", "https://keys.example/jwks"),
    ],
)
def test_redact_drops_userinfo_and_query(text: str, shown: str) -> None:
    """Key URLs in our own messages keep scheme, host and path only."""
    assert _redact(text) == shown


# -- the shared body reader, without I/O ------------------------------------------------------


def body(headers: dict[str, str], max_bytes: int = 1000) -> _Body:
    target = _Target.of("https://keys.example/jwks", frozenset({"application/json"}))
    fields = {"content-type": "application/json", **headers}
    raw = [(name.encode(), value.encode()) for name, value in fields.items()]
    return _Body(target, 200, raw, max_bytes)


def test_body_reader_inflates_at_most_one_byte_past_the_cap() -> None:
    """A deflate bomb fed at once inflates to the cap plus one byte, then is refused."""
    reader = body({"content-encoding": "deflate"}, max_bytes=20_000)
    bomb = zlib.compress(b" " * 10_000_000)  # about 10 KB
    with pytest.raises(KeyFetchError, match="once decoded"):
        reader.feed(bomb)
    assert reader._size == 20_001


def test_body_reader_accepts_raw_deflate_and_refuses_trailing_or_truncated_data() -> None:
    """deflate without the zlib wrapper is understood; bytes after the end, or a body cut
    short, are refused."""
    raw = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    reader = body({"content-encoding": "deflate"})
    reader.feed(raw.compress(b'{"keys": []}') + raw.flush())
    assert reader.result()[0] == {"keys": []}
    gz = zlib.compressobj(9, zlib.DEFLATED, 31)
    whole = gz.compress(b'{"keys": []}') + gz.flush()
    with pytest.raises(KeyFetchError, match="after the gzip body"):
        body({"content-encoding": "gzip"}).feed(whole + b"extra")
    cut = body({"content-encoding": "gzip"})
    cut.feed(whole[:-4])
    with pytest.raises(KeyFetchError, match="truncated"):
        cut.result()


def test_the_request_goes_out_as_identity_without_userinfo() -> None:
    """We ask for identity coding, and userinfo leaves the URL for a Basic header."""
    target = _Target.of("https://u%40x:p@keys.example:8443/j?x=1", frozenset({"application/json"}))
    headers = dict(target.headers)
    assert headers[b"accept-encoding"] == b"identity"
    assert headers[b"host"] == b"keys.example:8443"
    assert headers[b"authorization"] == b"Basic " + base64.b64encode(b"u@x:p")
    assert target.url.target == b"/j?x=1"
    assert target.shown == "https://***@keys.example:8443/j?***"
