"""JWTWSGIMiddleware around a plain WSGI app (no Flask), against a real key server.

Behaviour is checked in process (``werkzeug.test.Client``); what depends on the server itself
(repeated headers joined by the server, thread concurrency, fork) runs under a real threaded
werkzeug server or a real ``os.fork``.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from werkzeug.test import Client

from jwt_middleware import Settings, VerifiedToken
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key
from tests.support.challenges import with_dpop
from tests.support.clock import FakeClock
from tests.support.forking import wait_child
from tests.support.servers import bearer, closing, json_body, raw_request, serve_wsgi

__all__ = ["serve_wsgi"]  # a fixture, used by name

GENERIC_INVALID = "The access token is invalid."

# -- the wrapped app, builders and clients ----------------------------------------------------


class WhoAmI:
    """A plain WSGI app answering with what the middleware put in ``environ``; records calls."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        token = get_token(environ)
        self.calls.append(environ)
        body = json.dumps(
            {
                "verified": isinstance(environ["jwt_middleware.token"], VerifiedToken),
                "same": token is environ["jwt_middleware.token"],
                "sub": token.subject if token is not None else None,
                "scopes": list(token.scopes) if token is not None else [],
                "location": environ["jwt_middleware.location"],
                "method": environ["REQUEST_METHOD"],
            }
        ).encode()
        start_response(
            "200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        return [body]


@pytest.fixture
def app() -> WhoAmI:
    return WhoAmI()


@pytest.fixture
def make_mw(
    make_settings: Callable[..., Settings], clock: FakeClock, app: WhoAmI
) -> Iterator[Callable[..., JWTWSGIMiddleware]]:
    """Build the middleware around ``app`` with the test's clock; closed at teardown."""

    def build(**overrides: Any) -> JWTWSGIMiddleware:
        overrides.setdefault("clock", clock)
        return JWTWSGIMiddleware(app, settings=make_settings(**overrides))

    yield from closing(build)


@pytest.fixture(scope="module")
def stranger_key() -> SigningKey:
    return generate_key("RS256")


def assert_refusal_shape(headers: Any, body: bytes) -> dict[str, Any]:
    assert headers["Content-Type"] == "application/json"
    assert headers["Cache-Control"] == "no-store"
    assert int(headers["Content-Length"]) == len(body)
    payload: dict[str, Any] = json.loads(body)
    return payload


# -- verified requests ---------------------------------------------------------------------------


def test_valid_header_token_reaches_the_app(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], app: WhoAmI, clock: FakeClock
) -> None:
    """A valid header token reaches the app with its subject, scopes and location in the environ."""
    client = Client(make_mw())
    response = client.get("/x", headers=bearer(issuer.mint(now=clock.now, scope="read write")))
    assert response.status_code == 200
    assert response.json == {
        "verified": True,
        "same": True,
        "sub": "user-1",
        "scopes": ["read", "write"],
        "location": "header",
        "method": "GET",
    }
    (environ,) = app.calls
    assert environ["jwt_middleware.token"].claims["iss"] == issuer.issuer


def test_valid_cookie_token_reaches_the_app(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """A valid token in the configured cookie reaches the app with location "cookie"."""
    client = Client(make_mw(cookie="access_token"))
    client.set_cookie("access_token", issuer.mint(now=clock.now, subject="cookie-user"))
    response = client.get("/x")
    assert response.status_code == 200
    assert json_body(response)["location"] == "cookie"
    assert json_body(response)["sub"] == "cookie-user"


def test_bearer_scheme_is_case_insensitive(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """The Bearer scheme is matched in any letter case."""
    client = Client(make_mw())
    token = issuer.mint(now=clock.now)
    response = client.get("/x", headers={"Authorization": f"bEaReR {token}"})
    assert response.status_code == 200


def test_valid_token_over_a_real_server(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    serve_wsgi: Callable[[Any], int],
    clock: FakeClock,
) -> None:
    """Under a real werkzeug server a valid header token is a 200 with location "header"."""
    port = serve_wsgi(make_mw())
    response = httpx.get(
        f"http://127.0.0.1:{port}/x", headers=bearer(issuer.mint(now=clock.now)), timeout=10
    )
    assert response.status_code == 200
    assert response.json()["location"] == "header"


# -- refusals ------------------------------------------------------------------------------------


def test_missing_token_is_a_bare_challenge(
    make_mw: Callable[..., JWTWSGIMiddleware], app: WhoAmI
) -> None:
    """No token is a 401 with a bare Bearer realm challenge and an unauthorized body; the app
    never runs."""
    response = Client(make_mw()).get("/x")
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == with_dpop('Bearer realm="api"')
    payload = assert_refusal_shape(response.headers, response.get_data())
    assert payload == {"error": "unauthorized", "error_description": "An access token is required."}
    assert app.calls == []


def test_realm_setting_is_used_in_the_challenge(make_mw: Callable[..., JWTWSGIMiddleware]) -> None:
    """The realm setting is the realm in the WWW-Authenticate challenge."""
    response = Client(make_mw(realm="orders")).get("/x")
    assert response.headers["WWW-Authenticate"] == with_dpop('Bearer realm="orders"', "orders")


def _bad_signature(issuer: LocalIssuer, clock: FakeClock, stranger: SigningKey) -> str:
    return issuer.mint(now=clock.now, key=stranger, kid=issuer.current_key.kid)


def _expired(issuer: LocalIssuer, clock: FakeClock, stranger: SigningKey) -> str:
    token = issuer.mint(now=clock.now, expires_in=300)
    clock.advance(300 + 60 + 1)  # past exp and the 60 s leeway
    return token


def _wrong_audience(issuer: LocalIssuer, clock: FakeClock, stranger: SigningKey) -> str:
    return issuer.mint(now=clock.now, audience="api://someone-else")


INVALID = {
    "bad_signature": (_bad_signature, "signature_invalid"),
    "expired": (_expired, "token_expired"),
    "wrong_audience": (_wrong_audience, "audience_mismatch"),
}


@pytest.mark.parametrize("case", sorted(INVALID))
def test_invalid_token_is_refused_generically(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    app: WhoAmI,
    clock: FakeClock,
    stranger_key: SigningKey,
    case: str,
) -> None:
    """Every kind of invalid token is the same generic 401 invalid_token; the app never runs."""
    client = Client(make_mw())
    token = INVALID[case][0](issuer, clock, stranger_key)
    response = client.get("/x", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == (
        with_dpop(
            f'Bearer realm="api", error="invalid_token", error_description="{GENERIC_INVALID}"'
        )
    )
    payload = assert_refusal_shape(response.headers, response.get_data())
    assert payload == {"error": "invalid_token", "error_description": GENERIC_INVALID}
    assert app.calls == []


@pytest.mark.parametrize("case", sorted(INVALID))
def test_expose_error_details_names_the_reason(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    clock: FakeClock,
    stranger_key: SigningKey,
    case: str,
) -> None:
    """With expose_error_details the 401 body and the challenge name the refusal's reason."""
    client = Client(make_mw(expose_error_details=True))
    make, reason = INVALID[case]
    response = client.get("/x", headers=bearer(make(issuer, clock, stranger_key)))
    assert response.status_code == 401
    payload = assert_refusal_shape(response.headers, response.get_data())
    assert payload["error"] == "invalid_token"
    assert payload["reason"] == reason
    assert f"({reason})" in response.headers["WWW-Authenticate"]


def test_token_accepted_then_expired_by_the_clock(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """A token stays valid up to exp plus the 60 s leeway and is a 401 after that."""
    client = Client(make_mw())
    token = issuer.mint(now=clock.now, expires_in=120)
    assert client.get("/x", headers=bearer(token)).status_code == 200
    clock.advance(120 + 60 - 1)
    assert client.get("/x", headers=bearer(token)).status_code == 200
    clock.advance(2)
    assert client.get("/x", headers=bearer(token)).status_code == 401


def test_refusal_over_a_real_server_has_correct_length_and_headers(
    make_mw: Callable[..., JWTWSGIMiddleware], serve_wsgi: Callable[[Any], int]
) -> None:
    """A refusal under a real server has a matching Content-Length and Cache-Control: no-store."""
    port = serve_wsgi(make_mw())
    status, headers, body = raw_request(port, "/x", [b"Authorization: Bearer a.b.c"])
    assert status == 401
    assert int(headers["content-length"]) == len(body)
    assert headers["cache-control"] == "no-store"
    assert json.loads(body)["error"] == "invalid_token"


# -- where the token may (not) come from ------------------------------------------------------


def test_two_authorization_headers_over_a_real_server_are_refused(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    serve_wsgi: Callable[[Any], int],
    app: WhoAmI,
    clock: FakeClock,
) -> None:
    """Two Authorization headers under a real server are a 400 invalid_request; the same one
    alone is 200."""
    port = serve_wsgi(make_mw())
    token = issuer.mint(now=clock.now).encode()
    status, headers, body = raw_request(
        port, "/x", [b"Authorization: Bearer " + token, b"Authorization: Bearer " + token]
    )
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    assert 'error="invalid_request"' in headers["www-authenticate"]
    assert app.calls == []
    # The same token alone is fine: the refusal was about the repetition.
    status, _, _ = raw_request(port, "/x", [b"Authorization: Bearer " + token])
    assert status == 200


def test_header_and_cookie_together_are_refused(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """A token in both the header and the cookie is a 400 invalid_request."""
    client = Client(make_mw(cookie="access_token"))
    token = issuer.mint(now=clock.now)
    client.set_cookie("access_token", token)
    response = client.get("/x", headers=bearer(token))
    assert response.status_code == 400
    assert json_body(response)["error"] == "invalid_request"


def test_token_cookie_twice_is_refused(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """The token cookie twice in one Cookie header is a 400; once, it is a 200."""
    # use_cookies=False: werkzeug's cookie jar would otherwise replace an explicit Cookie header
    client = Client(make_mw(cookie="access_token"), use_cookies=False)
    token = issuer.mint(now=clock.now)
    response = client.get("/x", headers={"Cookie": f"access_token={token}"})
    assert response.status_code == 200
    response = client.get("/x", headers={"Cookie": f"access_token={token}; access_token={token}"})
    assert response.status_code == 400


def test_header_false_ignores_the_authorization_header(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """With header=False a header token is a bare 401, and a junk header beside the cookie is
    ignored."""
    client = Client(make_mw(header=False, cookie="access_token"))
    token = issuer.mint(now=clock.now)
    response = client.get("/x", headers=bearer(token))
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"] == 'Bearer realm="api"'
    # Header ignored, so header + cookie is not ambiguous here: the cookie wins.
    client.set_cookie("access_token", token)
    response = client.get("/x", headers={"Authorization": "Bearer junk"})
    assert response.status_code == 200
    assert json_body(response)["location"] == "cookie"


@pytest.mark.parametrize("name", ["access_token", "token", "jwt"])
def test_query_string_token_is_ignored(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    clock: FakeClock,
    name: str,
) -> None:
    """A token in the query string is never read: the request stays anonymous."""
    client = Client(make_mw(anonymous=True))
    response = client.get("/x", query_string={name: issuer.mint(now=clock.now)})
    assert response.status_code == 200
    assert json_body(response)["verified"] is False
    assert json_body(response)["sub"] is None


# -- requests that skip verification -------------------------------------------------------------


def test_public_paths_exact_and_prefix(
    make_mw: Callable[..., JWTWSGIMiddleware], app: WhoAmI
) -> None:
    """Public paths match exactly or under a "/x/*" prefix, and pass even a junk token
    unverified."""
    client = Client(make_mw(public_paths={"/health", "/static/*"}))
    assert client.get("/health").status_code == 200
    assert client.get("/static/app.css").status_code == 200
    assert client.get("/static/deep/er/x.js").status_code == 200
    # Exact means exact; the prefix is "/static/", not "/static".
    for path in ("/health/", "/healthz", "/health/x", "/static", "/staticx", "/x"):
        assert client.get(path).status_code == 401, path
    # A public path never verifies, so even a junk token passes and the app sees no token.
    response = client.get("/health", headers={"Authorization": "Bearer junk"})
    assert response.status_code == 200
    assert json_body(response)["verified"] is False


def test_anonymous_mode(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    app: WhoAmI,
    clock: FakeClock,
    stranger_key: SigningKey,
) -> None:
    """With anonymous=True no token reaches the app unauthenticated; an invalid token is still a
    401."""
    client = Client(make_mw(anonymous=True))
    response = client.get("/x")
    assert response.status_code == 200
    assert json_body(response)["sub"] is None
    assert get_token(app.calls[-1]) is None
    assert app.calls[-1]["jwt_middleware.location"] is None
    # An invalid token is refused, never downgraded to anonymous.
    response = client.get("/x", headers=bearer(_bad_signature(issuer, clock, stranger_key)))
    assert response.status_code == 401
    assert json_body(response)["error"] == "invalid_token"
    response = client.get("/x", headers=bearer(issuer.mint(now=clock.now)))
    assert response.status_code == 200
    assert json_body(response)["sub"] == "user-1"


def test_get_token_outside_the_middleware_raises() -> None:
    """get_token on an environ the middleware never saw raises RuntimeError naming
    JWTWSGIMiddleware."""
    with pytest.raises(RuntimeError, match="JWTWSGIMiddleware"):
        get_token({"REQUEST_METHOD": "GET", "PATH_INFO": "/"})


@pytest.mark.parametrize(
    "value",
    [
        'Digest username="u", realm="r", nonce="n", uri="/x", response="abc"',
        "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/s3/aws4_request, "
        "SignedHeaders=host, Signature=abc",
    ],
)
def test_other_scheme_with_commas_is_not_bearer_ambiguity(
    make_mw: Callable[..., JWTWSGIMiddleware], value: str
) -> None:
    """Another scheme whose value holds commas is not a token: the request stays anonymous (200)."""
    client = Client(make_mw(anonymous=True))
    response = client.get("/x", headers={"Authorization": value})
    assert response.status_code == 200  # what JWTMiddleware (ASGI) answers for the same header
    assert json_body(response)["verified"] is False


# -- the key server ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fault", [("down", {}), ("status", {"status": 500}), ("garbage", {})], ids=lambda f: f[0]
)
def test_key_server_broken_before_any_fetch_is_503_then_recovers(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    app: WhoAmI,
    clock: FakeClock,
    fault: tuple[str, dict[str, Any]],
) -> None:
    """A key server down, failing or answering garbage before any fetch is a 503 with Retry-After
    (no refetch in the cooldown); after it the token passes."""
    mode, params = fault
    issuer.set_fault(mode, **params)
    client = Client(make_mw(warm_up=False))
    token = issuer.mint(now=clock.now)
    for _ in range(2):  # the second one within the cooldown: no new fetch, still 503
        response = client.get("/x", headers=bearer(token))
        assert response.status_code == 503
        retry_after = response.headers["Retry-After"]
        assert retry_after.isdigit() and 1 <= int(retry_after) <= 30
        assert "WWW-Authenticate" not in response.headers
        payload = assert_refusal_shape(response.headers, response.get_data())
        assert payload["error"] == "temporarily_unavailable"
    assert app.calls == []
    assert issuer.jwks_requests == (0 if mode == "down" else 1)
    issuer.set_fault(None)
    assert client.get("/x", headers=bearer(token)).status_code == 503  # cooldown still running
    clock.advance(31)
    response = client.get("/x", headers=bearer(token))
    assert response.status_code == 200
    assert json_body(response)["sub"] == "user-1"


def test_warm_up_failure_does_not_break_construction(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """A failed warm-up leaves a working middleware: 503 while keys are missing, 200 once they
    load."""
    issuer.set_fault("down")
    client = Client(make_mw(warm_up=True))
    assert client.get("/x", headers=bearer(issuer.mint(now=clock.now))).status_code == 503
    issuer.set_fault(None)
    clock.advance(31)
    assert client.get("/x", headers=bearer(issuer.mint(now=clock.now))).status_code == 200


@pytest.mark.parametrize("warm_up", [True, False])
def test_warm_up_fetches_at_construction(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    clock: FakeClock,
    warm_up: bool,
) -> None:
    """warm_up=True fetches the JWKS at construction, otherwise on the first request; once either
    way."""
    mw = make_mw(warm_up=warm_up)
    assert issuer.jwks_requests == (1 if warm_up else 0)
    client = Client(mw)
    for _ in range(3):
        assert client.get("/x", headers=bearer(issuer.mint(now=clock.now))).status_code == 200
    assert issuer.jwks_requests == 1


def test_concurrent_requests_over_real_http_share_one_fetch(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    serve_wsgi: Callable[[Any], int],
    clock: FakeClock,
) -> None:
    """Thirty concurrent requests needing a new key under a real threaded server share one JWKS
    fetch."""
    port = serve_wsgi(make_mw())
    url = f"http://127.0.0.1:{port}/x"
    assert httpx.get(url, headers=bearer(issuer.mint(now=clock.now)), timeout=10).status_code == 200
    assert issuer.jwks_requests == 1
    clock.advance(31)  # past the cooldown
    issuer.rotate()
    issuer.set_fault("slow", delay=0.5)
    tokens = [issuer.mint(now=clock.now, subject=f"user-{i}") for i in range(30)]
    barrier = threading.Barrier(len(tokens))
    results: list[Any] = [None] * len(tokens)

    def worker(i: int) -> None:
        try:
            with httpx.Client(timeout=20) as http:
                barrier.wait(timeout=20)
                response = http.get(url, headers=bearer(tokens[i]))
                results[i] = (response.status_code, response.json().get("sub"))
        except Exception as exc:  # reported through results
            results[i] = exc

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(tokens))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert results == [(200, f"user-{i}") for i in range(len(tokens))]
    assert issuer.jwks_requests == 2


# -- fork ----------------------------------------------------------------------------------------


def _fork_and_request(mw: JWTWSGIMiddleware, token: str, before: Callable[[], None]) -> int:
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            before()
            response = Client(mw).get("/x", headers=bearer(token))
            code = 0 if response.status_code == 200 else 100 + response.status_code % 100
        finally:
            os._exit(code)
    return wait_child(pid)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_refreshes_keys_with_its_own_client(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """A forked child fetches keys with its own client, and the parent's cache stays its own."""
    mw = make_mw(warm_up=True)
    client = Client(mw)
    # The parent's client now holds a pooled keep-alive connection to the key server.
    assert client.get("/x", headers=bearer(issuer.mint(now=clock.now))).status_code == 200
    assert issuer.jwks_requests == 1
    clock.advance(31)
    issuer.rotate()
    token = issuer.mint(now=clock.now)
    assert _fork_and_request(mw, token, lambda: None) == 0
    assert issuer.jwks_requests == 2  # the child fetched
    # The parent's cache is its own: it fetches for itself and still works.
    assert client.get("/x", headers=bearer(token)).status_code == 200
    assert issuer.jwks_requests == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_fork_during_a_fetch_in_flight_does_not_deadlock_the_child(
    issuer: LocalIssuer, make_mw: Callable[..., JWTWSGIMiddleware], clock: FakeClock
) -> None:
    """A child forked while the parent's fetch is in flight fetches for itself instead of
    waiting."""
    mw = make_mw(warm_up=True)
    clock.advance(31)
    issuer.rotate()
    token = issuer.mint(now=clock.now)
    issuer.set_fault("slow", delay=2.0)
    outcome: list[int] = []
    thread = threading.Thread(
        target=lambda: outcome.append(Client(mw).get("/x", headers=bearer(token)).status_code)
    )
    thread.start()
    deadline = time.monotonic() + 10
    while issuer.jwks_requests < 2:  # the parent's fetch has reached the (slow) key server
        assert time.monotonic() < deadline
        time.sleep(0.01)
    assert mw.verifier.remote is not None and mw.verifier.remote.policy.in_flight
    issuer.set_fault(None)  # the child's own fetch is answered at once
    # In the child no thread will ever finish the parent's fetch: it must fetch for itself
    # (once its cooldown allows) rather than wait forever for the inherited "in flight".
    assert _fork_and_request(mw, token, lambda: clock.advance(31)) == 0
    thread.join(timeout=15)
    assert outcome == [200]


def test_fork_hooks_do_not_pile_up_as_key_caches_come_and_go(issuer: LocalIssuer) -> None:
    """Every sync key cache is reset in a forked child through one process-wide hook that holds
    it weakly: 200 caches made and dropped (as resolved issuers are) leave nothing behind."""
    from jwt_middleware import _jwks

    gc.collect()
    before = len(_jwks._FORK_RESETS)
    for _ in range(200):
        _jwks.SyncJWKS(Settings(issuer=issuer.issuer, audience="a", jwks_url=issuer.jwks_url))
    gc.collect()
    assert len(_jwks._FORK_RESETS) == before


# -- hostile input -------------------------------------------------------------------------------

HOSTILE_AUTHORIZATION = {
    "latin1": "Bearer \xe9\xe8\xff.\xe0.\xe7",
    "100KB": "x" * 100_000,
    "100KB_bearer": "Bearer " + "A" * 100_000,
    "20000": "Bearer " + "a" * 20000,
    "nul": "Bearer a\x00b",
    "only_nul": "\x00",
    "comma": "Bearer a,b",
    "empty_bearer": "Bearer ",
    "three_junk_segments": "Bearer a.b.c",
    "four_segments": "Bearer a.b.c.d",
}

HOSTILE_COOKIE = {
    "latin1": "access_token=\xe9\xe8\xff.\xe0.\xe7",
    "100KB": "access_token=" + "a" * 100_000,
    "nul": "access_token=a\x00b.c.d",
    "comma": "access_token=a,b",
    "twice": "access_token=a.b.c; access_token=d.e.f",
    "quoted_junk": 'access_token="\xff"',
    "many_pairs": "; ".join(f"c{i}=v" for i in range(5000)) + "; access_token=x.y.z",
}


@pytest.mark.parametrize("value", HOSTILE_AUTHORIZATION.values(), ids=HOSTILE_AUTHORIZATION.keys())
def test_hostile_authorization_is_refused_cleanly(
    make_mw: Callable[..., JWTWSGIMiddleware], app: WhoAmI, value: str
) -> None:
    """Each hostile Authorization value is a 400 or 401 with an RFC 6750 error; the app never
    runs."""
    response = Client(make_mw()).get("/x", headers={"Authorization": value})
    assert response.status_code in {400, 401}
    assert json_body(response)["error"] in {"invalid_request", "invalid_token", "unauthorized"}
    assert app.calls == []


@pytest.mark.parametrize("value", HOSTILE_COOKIE.values(), ids=HOSTILE_COOKIE.keys())
def test_hostile_cookie_is_refused_cleanly(
    make_mw: Callable[..., JWTWSGIMiddleware], app: WhoAmI, value: str
) -> None:
    """Each hostile token cookie is read and refused with a 400 or 401, never token_missing."""
    mw = make_mw(cookie="access_token", expose_error_details=True)
    response = Client(mw, use_cookies=False).get("/x", headers={"Cookie": value})
    assert response.status_code in {400, 401}
    assert json_body(response)["error"] in {"invalid_request", "invalid_token"}
    assert json_body(response)["reason"] != "token_missing"  # the cookie was read, then refused
    assert app.calls == []


@pytest.mark.parametrize(
    "line",
    [
        b"Authorization: Bearer \xe9\xe8\xff.\xe0.\xe7",
        b"Authorization: Bearer a\x00b",
        b"Authorization: Bearer a,b",
        b"Authorization: Bearer " + b"a" * 20000,
        b"Cookie: access_token=\xe9\xff.\x00.x",
    ],
    ids=["latin1", "nul", "comma", "20000", "cookie"],
)
def test_hostile_headers_over_a_real_server_never_5xx(
    make_mw: Callable[..., JWTWSGIMiddleware], serve_wsgi: Callable[[Any], int], line: bytes
) -> None:
    """Non-ASCII, NUL, comma or 20000-byte token headers under a real server are 400 or 401,
    never 5xx."""
    port = serve_wsgi(make_mw(cookie="access_token"))
    status, _, _ = raw_request(port, "/x", [line])
    assert status in {400, 401}


# -- logs ----------------------------------------------------------------------------------------


def test_logs_never_contain_the_token(
    issuer: LocalIssuer,
    make_mw: Callable[..., JWTWSGIMiddleware],
    clock: FakeClock,
    stranger_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refusals are logged with their reasons but never with a token, its payload or its
    signature."""
    caplog.set_level(logging.DEBUG, logger="jwt_middleware")
    client = Client(make_mw(cookie="access_token", expose_error_details=True))
    good = issuer.mint(now=clock.now)
    bad_signature = _bad_signature(issuer, clock, stranger_key)
    wrong_audience = _wrong_audience(issuer, clock, stranger_key)
    unknown_kid = issuer.mint(now=clock.now, kid="kid-nobody-knows")
    mangled = good[:-8] + "~~~~~~~~"  # a b64token character, but not base64url
    expiring = issuer.mint(now=clock.now, expires_in=10)
    assert client.get("/x", headers=bearer(good)).status_code == 200
    for token in (bad_signature, wrong_audience, unknown_kid, mangled):
        assert client.get("/x", headers=bearer(token)).status_code == 401
    client.set_cookie("access_token", good)
    assert client.get("/x", headers=bearer(good)).status_code == 400  # header + cookie
    client.delete_cookie("access_token")
    clock.advance(100)
    assert client.get("/x", headers=bearer(expiring)).status_code == 401
    text = caplog.text + "\n".join(str(r.args) for r in caplog.records)
    for reason in ("signature_invalid", "audience_mismatch", "kid_unknown", "token_expired"):
        assert reason in text  # the refusals were logged ...
    for token in (good, bad_signature, wrong_audience, unknown_kid, mangled, expiring):
        _, payload, signature = token.split(".")
        assert token not in text  # ... without the token
        assert payload not in text
        assert signature not in text
