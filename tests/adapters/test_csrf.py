"""CSRF defences for tokens that come from a cookie, on the ASGI and the WSGI middleware.

The browser attaches cookies to cross-site requests on its own, so a cookie-authenticated
state-changing request must also prove it came from our pages: ``Sec-Fetch-Site``/``Origin``
checks, and/or the double-submit header (``X-CSRF-Token`` equal to the token's ``csrf`` claim,
which a page on another site cannot read). A token in the ``Authorization`` header needs
neither: a script of ours had to put it there.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.websockets import WebSocket, WebSocketDisconnect

from jwt_middleware import ConfigurationError, JWTMiddleware, Settings
from jwt_middleware._wsgi import get_token
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import Answer, InProcess

CSRF = "abc123"
APP_ORIGIN = "https://app.example"
EVIL_ORIGIN = "https://evil.example"
UNSAFE = ["POST", "PUT", "PATCH", "DELETE"]
METHODS = ["GET", "HEAD", "OPTIONS", *UNSAFE]

Headers = Sequence[tuple[str, str]]

# -- the same endpoint behind both middlewares -------------------------------------------------


async def echo(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "location": request.auth.location})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"sub": websocket.user.identity})
    await websocket.close()


def wsgi_echo(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    token = get_token(environ)
    body = json.dumps(
        {"sub": token.subject if token else None, "location": environ["jwt_middleware.location"]}
    ).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class Caller:
    """Requests to ``/echo`` on ``app`` (the adapter under test), the token in a cookie and/or
    the ``Authorization`` header."""

    def __init__(self, app: InProcess) -> None:
        self.app = app
        self.host = app.host
        self.own_origin = app.own_origin

    def __call__(
        self,
        method: str,
        *,
        cookie: str | None = None,
        bearer: str | None = None,
        headers: Headers = (),
    ) -> Answer:
        sent = list(headers)
        if cookie is not None:
            sent.append(("Cookie", f"access_token={cookie}"))
        if bearer is not None:
            sent.append(("Authorization", f"Bearer {bearer}"))
        return self.app.request(method, "/echo", sent)


@pytest.fixture
def make_caller(
    in_process: Callable[..., InProcess], make_settings: Callable[..., Settings]
) -> Callable[..., Caller]:
    """``make_caller(**settings)``: ``/echo`` behind the ``adapter`` under test (cookie on)."""

    def build(**overrides: Any) -> Caller:
        overrides.setdefault("cookie", "access_token")
        app = in_process(
            make_settings(**overrides),
            routes=[Route("/echo", echo, methods=METHODS), WebSocketRoute("/ws", ws_echo)],
            wsgi_app=wsgi_echo,
            use_cookies=False,  # send our Cookie header as is
        )
        return Caller(app)

    return build


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module (overrides conftest's): these tests never change it."""
    with LocalIssuer() as local:
        yield local


@pytest.fixture
def token(issuer: LocalIssuer) -> str:
    return issuer.mint(subject="alice", claims={"csrf": CSRF})


def assert_csrf_refusal(answer: Answer) -> None:
    assert answer.status == 403, answer.body
    assert answer.headers["content-type"] == "application/json"
    assert "www-authenticate" not in answer.headers  # not a challenge: the credentials are fine
    body = answer.json()
    assert body["error"] == "csrf_failed"
    assert body["error_description"]


def assert_ok(answer: Answer, location: str = "cookie") -> None:
    assert answer.status == 200, answer.body
    assert answer.json() == {"sub": "alice", "location": location}


# -- safe methods and the double-submit header ----------------------------------------------


@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_cookie_safe_methods_need_no_csrf_proof(
    make_caller: Callable[..., Caller], token: str, method: str
) -> None:
    """GET and HEAD with a cookie token pass with no CSRF proof, even marked Sec-Fetch-Site: cross-
    site."""
    caller = make_caller()
    answer = caller(method, cookie=token)
    assert answer.status == 200
    if method == "GET":
        assert_ok(answer)
    # A top-level navigation from another site's link is a safe method too.
    assert caller(method, cookie=token, headers=[("Sec-Fetch-Site", "cross-site")]).status == 200


@pytest.mark.parametrize("method", UNSAFE)
def test_cookie_unsafe_method_without_the_csrf_header_is_403(
    make_caller: Callable[..., Caller], token: str, method: str
) -> None:
    """An unsafe method with a cookie token and no X-CSRF-Token header is a 403 csrf_failed."""
    assert_csrf_refusal(make_caller()(method, cookie=token))


@pytest.mark.parametrize("method", UNSAFE)
def test_cookie_unsafe_method_with_a_wrong_csrf_header_is_403(
    make_caller: Callable[..., Caller], token: str, method: str
) -> None:
    """An X-CSRF-Token that differs from the csrf claim by a character or by case is a 403."""
    caller = make_caller()
    for wrong in ("abc124", "abc12", "abc1234", "ABC123", "x"):
        assert_csrf_refusal(caller(method, cookie=token, headers=[("X-CSRF-Token", wrong)]))


@pytest.mark.parametrize("method", UNSAFE)
def test_cookie_unsafe_method_with_the_right_csrf_header_passes(
    make_caller: Callable[..., Caller], token: str, method: str
) -> None:
    """An unsafe method with a cookie token and X-CSRF-Token equal to its csrf claim reaches the
    app."""
    assert_ok(make_caller()(method, cookie=token, headers=[("X-CSRF-Token", CSRF)]))


@pytest.mark.parametrize("claims", [{}, {"csrf": ""}, {"csrf": 123}], ids=["none", "empty", "int"])
def test_token_without_a_csrf_claim_is_403_even_with_a_header(
    make_caller: Callable[..., Caller], issuer: LocalIssuer, claims: dict[str, Any]
) -> None:
    """A cookie token whose csrf claim is missing, empty or not a string is a 403 whatever header is
    sent."""
    no_claim = issuer.mint(subject="alice", claims=claims)
    caller = make_caller()
    for header in ("", "123", "None", CSRF):
        assert_csrf_refusal(caller("POST", cookie=no_claim, headers=[("X-CSRF-Token", header)]))


def test_custom_csrf_header_and_claim(
    make_caller: Callable[..., Caller], issuer: LocalIssuer
) -> None:
    """csrf_header and csrf_claim rename the header and the claim; the default header no longer
    counts."""
    caller = make_caller(csrf_header="X-XSRF-Token", csrf_claim="xsrf")
    token = issuer.mint(subject="alice", claims={"xsrf": "zzz"})
    assert_csrf_refusal(caller("POST", cookie=token, headers=[("X-CSRF-Token", "zzz")]))
    assert_ok(caller("POST", cookie=token, headers=[("x-xsrf-token", "zzz")]))


@pytest.mark.parametrize("method", ["POST", "DELETE"])
def test_header_token_is_not_subject_to_csrf(
    make_caller: Callable[..., Caller], token: str, method: str
) -> None:
    """An Authorization-header token passes unsafe methods with no CSRF proof, even from a cross-
    site origin."""
    caller = make_caller(allowed_origins=[APP_ORIGIN])
    assert_ok(caller(method, bearer=token), location="header")
    # Even "from another site": a cross-site page cannot set the Authorization header itself.
    cross = [("Sec-Fetch-Site", "cross-site"), ("Origin", EVIL_ORIGIN)]
    assert_ok(caller(method, bearer=token, headers=cross), location="header")


# -- Origin / Sec-Fetch-Site (csrf="both", the default with a cookie) ---------------------------


def with_csrf(*headers: tuple[str, str]) -> list[tuple[str, str]]:
    return [("X-CSRF-Token", CSRF), *headers]


def test_default_mode_with_a_cookie_is_both(make_settings: Callable[..., Settings]) -> None:
    """csrf defaults to "both" when a cookie is configured and to "off" for header-only tokens."""
    assert make_settings(cookie="access_token").csrf == "both"
    assert make_settings().csrf == "off"  # header tokens only: nothing to protect


def test_sec_fetch_site_cross_site_is_403_even_with_the_right_header(
    make_caller: Callable[..., Caller], token: str
) -> None:
    """Sec-Fetch-Site: cross-site is a 403 despite the right X-CSRF-Token, even with an allowed
    Origin."""
    caller = make_caller(allowed_origins=[APP_ORIGIN])
    cross = with_csrf(("Sec-Fetch-Site", "cross-site"))
    assert_csrf_refusal(caller("POST", cookie=token, headers=cross))
    cross_but_allowed_origin = with_csrf(("Sec-Fetch-Site", "cross-site"), ("Origin", APP_ORIGIN))
    assert_csrf_refusal(caller("POST", cookie=token, headers=cross_but_allowed_origin))


@pytest.mark.parametrize("site", ["same-origin", "none"])
def test_sec_fetch_site_same_origin_or_user_initiated_passes(
    make_caller: Callable[..., Caller], token: str, site: str
) -> None:
    """Sec-Fetch-Site same-origin or none, with the right X-CSRF-Token, reaches the app."""
    assert_ok(make_caller()("POST", cookie=token, headers=with_csrf(("Sec-Fetch-Site", site))))


def test_sec_fetch_site_same_site_needs_an_allowed_origin(
    make_caller: Callable[..., Caller], token: str
) -> None:
    """Sec-Fetch-Site: same-site passes only with an Origin in allowed_origins; without that list,
    never."""
    # Without allowed_origins, a sibling subdomain is never trusted.
    bare = make_caller()
    for origin in (None, bare.own_origin, APP_ORIGIN):
        headers = with_csrf(("Sec-Fetch-Site", "same-site"))
        if origin is not None:
            headers.append(("Origin", origin))
        assert_csrf_refusal(bare("POST", cookie=token, headers=headers))
    # With allowed_origins: only from one of them.
    caller = make_caller(allowed_origins=[APP_ORIGIN])
    sibling = with_csrf(("Sec-Fetch-Site", "same-site"), ("Origin", "https://blog.app.example"))
    assert_csrf_refusal(caller("POST", cookie=token, headers=sibling))
    allowed = with_csrf(("Sec-Fetch-Site", "same-site"), ("Origin", APP_ORIGIN))
    assert_ok(caller("POST", cookie=token, headers=allowed))


def test_sec_fetch_site_same_site_without_origin_is_refused_in_origin_mode(
    make_caller: Callable[..., Caller], token: str
) -> None:
    """In origin mode, Sec-Fetch-Site: same-site without an Origin header is a 403."""
    caller = make_caller(csrf="origin", allowed_origins=[APP_ORIGIN])
    assert_csrf_refusal(caller("POST", cookie=token, headers=[("Sec-Fetch-Site", "same-site")]))


def test_foreign_origin_is_403(make_caller: Callable[..., Caller], token: str) -> None:
    """An Origin outside allowed_origins (or, with none set, not this host) is a 403 despite the
    header."""
    for caller in (make_caller(allowed_origins=[APP_ORIGIN]), make_caller()):
        assert_csrf_refusal(
            caller("POST", cookie=token, headers=with_csrf(("Origin", EVIL_ORIGIN)))
        )


@pytest.mark.parametrize(
    "origin",
    [APP_ORIGIN, APP_ORIGIN + "/", "HTTPS://APP.EXAMPLE"],
    ids=["exact", "trailing-slash", "upper-case"],
)
def test_allowed_origin_passes(make_caller: Callable[..., Caller], token: str, origin: str) -> None:
    """An Origin in allowed_origins passes, compared case-insensitively and ignoring a trailing
    slash."""
    caller = make_caller(allowed_origins=[APP_ORIGIN, "http://localhost:5173"])
    assert_ok(caller("POST", cookie=token, headers=with_csrf(("Origin", origin))))
    assert_ok(caller("POST", cookie=token, headers=with_csrf(("Origin", "http://localhost:5173"))))


@pytest.mark.parametrize(
    "origin",
    ["https://app.example:8443", "http://app.example", "https://app.example.evil.example"],
    ids=["other-port", "other-scheme", "suffix"],
)
def test_near_miss_origins_are_403(
    make_caller: Callable[..., Caller], token: str, origin: str
) -> None:
    """An Origin that differs from an allowed one in port, scheme or by a suffix is a 403."""
    caller = make_caller(allowed_origins=[APP_ORIGIN])
    assert_csrf_refusal(caller("POST", cookie=token, headers=with_csrf(("Origin", origin))))


def test_without_allowed_origins_the_origin_must_match_the_host(
    make_caller: Callable[..., Caller], token: str
) -> None:
    """Without allowed_origins only the request's own scheme://host passes; another port or host is
    403."""
    caller = make_caller()
    assert_ok(caller("POST", cookie=token, headers=with_csrf(("Origin", caller.own_origin))))
    for mismatch in (
        f"http://{caller.host}:8080",
        f"http://{caller.host}.evil.example",
        APP_ORIGIN,
    ):
        assert_csrf_refusal(caller("POST", cookie=token, headers=with_csrf(("Origin", mismatch))))


def test_origin_null_is_403(make_caller: Callable[..., Caller], token: str) -> None:
    """Origin: null is a 403, with or without allowed_origins."""
    for caller in (make_caller(), make_caller(allowed_origins=[APP_ORIGIN])):
        assert_csrf_refusal(caller("POST", cookie=token, headers=with_csrf(("Origin", "null"))))


def test_duplicate_origin_headers_are_403(make_caller: Callable[..., Caller], token: str) -> None:
    """Two Origin headers are a 403, even when both carry an allowed origin."""
    caller = make_caller(allowed_origins=[APP_ORIGIN])
    twice = with_csrf(("Origin", APP_ORIGIN), ("Origin", APP_ORIGIN))
    assert_csrf_refusal(caller("POST", cookie=token, headers=twice))


def test_duplicate_csrf_headers_are_403(make_caller: Callable[..., Caller], token: str) -> None:
    """Two X-CSRF-Token headers are a 403, even when both carry the right value."""
    caller = make_caller()
    twice = [("X-CSRF-Token", CSRF), ("X-CSRF-Token", CSRF)]
    assert_csrf_refusal(caller("POST", cookie=token, headers=twice))


def test_both_mode_without_origin_headers_relies_on_the_double_submit_header(
    make_caller: Callable[..., Caller], token: str
) -> None:
    """Non-browser clients send neither Origin nor Sec-Fetch-Site: the header still decides."""
    caller = make_caller(allowed_origins=[APP_ORIGIN])
    assert_ok(caller("POST", cookie=token, headers=with_csrf()))
    assert_csrf_refusal(caller("POST", cookie=token))


# -- the other modes --------------------------------------------------------------------------


def test_origin_mode_needs_origin_or_sec_fetch_site(
    make_caller: Callable[..., Caller], token: str, issuer: LocalIssuer
) -> None:
    """Origin mode passes only on an allowed Origin or Sec-Fetch-Site: same-origin, the header
    alone is 403; with such proof no double-submit header or csrf claim is needed."""
    caller = make_caller(csrf="origin", allowed_origins=[APP_ORIGIN])
    assert_csrf_refusal(caller("POST", cookie=token))
    assert_csrf_refusal(caller("POST", cookie=token, headers=with_csrf()))  # header is not enough
    assert_csrf_refusal(caller("POST", cookie=token, headers=[("Origin", EVIL_ORIGIN)]))
    # An allowed Origin is proof enough: no double-submit header, no csrf claim needed.
    assert_ok(caller("POST", cookie=token, headers=[("Origin", APP_ORIGIN)]))
    no_claim = issuer.mint(subject="alice")
    assert_ok(caller("DELETE", cookie=no_claim, headers=[("Origin", APP_ORIGIN)]))
    assert_ok(caller("PUT", cookie=token, headers=[("Sec-Fetch-Site", "same-origin")]))


def test_double_submit_mode_checks_only_the_header(
    make_caller: Callable[..., Caller], token: str
) -> None:
    """csrf="double_submit" means: the header (equal to the token's csrf claim) is the only
    proof, and Origin / Sec-Fetch-Site are not looked at. A cross-site page cannot read the
    claim, so it cannot send the header; a cross-site request *with* the right value is
    therefore accepted in this mode, by design."""
    caller = make_caller(csrf="double_submit", allowed_origins=[APP_ORIGIN])
    cross = [("Sec-Fetch-Site", "cross-site"), ("Origin", EVIL_ORIGIN)]
    assert_ok(caller("POST", cookie=token, headers=with_csrf(*cross)))
    assert_csrf_refusal(caller("POST", cookie=token, headers=cross))
    assert_csrf_refusal(caller("POST", cookie=token, headers=[("Origin", APP_ORIGIN)]))


def test_off_mode_lets_cookie_posts_through_and_warns_at_construction(
    make_caller: Callable[..., Caller], token: str, caplog: pytest.LogCaptureFixture
) -> None:
    """csrf="off" lets a cross-site cookie POST through and logs one warning at construction
    only."""
    with caplog.at_level(logging.WARNING, logger="jwt_middleware"):
        caller = make_caller(csrf="off")
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("csrf='off'" in r.getMessage() for r in warnings)
    caplog.clear()
    cross = [("Sec-Fetch-Site", "cross-site"), ("Origin", EVIL_ORIGIN)]
    assert_ok(caller("POST", cookie=token, headers=cross))
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # once, not per request


# -- WebSocket handshakes (ASGI) ------------------------------------------------------------


@pytest.fixture
def ws_client(make_settings: Callable[..., Settings]) -> Callable[..., TestClient]:
    def build(**overrides: Any) -> TestClient:
        settings = make_settings(cookie="access_token", **overrides)
        app = Starlette(
            routes=[WebSocketRoute("/ws", ws_echo)],
            middleware=[Middleware(JWTMiddleware, settings=settings)],
        )
        return TestClient(app)

    return build


def ws_refused(client: TestClient, headers: dict[str, str]) -> int:
    with client, pytest.raises(WebSocketDisconnect) as closed:
        with client.websocket_connect("/ws", headers=headers):
            pass
    return closed.value.code


@pytest.mark.parametrize("mode", ["both", "double_submit"])
def test_websocket_cookie_handshake_from_another_site_is_closed_1008(
    ws_client: Callable[..., TestClient], token: str, mode: str
) -> None:
    """A cookie WebSocket handshake from a foreign Origin or marked cross-site is closed with 1008
    in both and double_submit modes."""
    cookie = {"cookie": f"access_token={token}"}
    client = ws_client(csrf=mode, allowed_origins=[APP_ORIGIN])
    assert ws_refused(client, {**cookie, "origin": EVIL_ORIGIN}) == 1008
    client = ws_client(csrf=mode, allowed_origins=[APP_ORIGIN])
    assert ws_refused(client, {**cookie, "sec-fetch-site": "cross-site"}) == 1008


@pytest.mark.parametrize("mode", ["both", "double_submit", "origin"])
def test_websocket_cookie_handshake_without_origin_is_closed_1008(
    ws_client: Callable[..., TestClient], token: str, mode: str
) -> None:
    """A cookie WebSocket handshake without an Origin header is closed with 1008 in every CSRF
    mode."""
    client = ws_client(csrf=mode, allowed_origins=[APP_ORIGIN])
    assert ws_refused(client, {"cookie": f"access_token={token}"}) == 1008


def test_websocket_cookie_handshake_from_an_allowed_origin_is_accepted(
    ws_client: Callable[..., TestClient], token: str
) -> None:
    """A cookie WebSocket handshake from an allowed Origin is accepted with no double-submit
    header."""
    # No double-submit header on a handshake: browsers cannot set headers on WebSocket().
    headers = {"cookie": f"access_token={token}", "origin": APP_ORIGIN}
    with ws_client(allowed_origins=[APP_ORIGIN]) as client:
        with client.websocket_connect("/ws", headers=headers) as ws:
            assert ws.receive_json() == {"sub": "alice"}


def test_websocket_header_token_needs_no_origin(
    ws_client: Callable[..., TestClient], token: str
) -> None:
    """A WebSocket handshake with an Authorization-header token is accepted without an Origin."""
    with ws_client(allowed_origins=[APP_ORIGIN]) as client:
        with client.websocket_connect("/ws", headers={"authorization": f"Bearer {token}"}) as ws:
            assert ws.receive_json() == {"sub": "alice"}


# -- settings ---------------------------------------------------------------------------------


def test_origin_mode_without_allowed_origins_is_a_configuration_error(
    make_settings: Callable[..., Settings],
) -> None:
    """csrf="origin" without allowed_origins is a ConfigurationError naming allowed_origins."""
    with pytest.raises(ConfigurationError, match="allowed_origins"):
        make_settings(cookie="access_token", csrf="origin")


@pytest.mark.parametrize(
    "origin",
    ["example.com", "https://x/path", "ftp://example.com", "https://", "*", "null"],
)
def test_bad_allowed_origin_is_a_configuration_error(
    make_settings: Callable[..., Settings], origin: str
) -> None:
    """An allowed origin without a scheme, with a path, not http(s), empty, "*" or "null" is
    refused."""
    with pytest.raises(ConfigurationError, match="origin"):
        make_settings(cookie="access_token", allowed_origins=[origin])


@pytest.mark.parametrize("mode", ["on", "BOTH", "strict", ""])
def test_unknown_csrf_mode_is_a_configuration_error(
    make_settings: Callable[..., Settings], mode: str
) -> None:
    """A csrf mode other than the known lower-case names is a ConfigurationError."""
    with pytest.raises(ConfigurationError, match="csrf"):
        make_settings(cookie="access_token", csrf=mode)


def test_allowed_origins_are_normalised(make_settings: Callable[..., Settings]) -> None:
    """allowed_origins are stored lower-cased and without a trailing slash."""
    settings = make_settings(cookie="access_token", allowed_origins=["HTTPS://App.Example/"])
    assert settings.allowed_origins == frozenset({APP_ORIGIN})
