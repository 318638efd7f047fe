"""``set_token_cookie`` / ``clear_token_cookie`` on real Starlette and Flask responses, and the
cookie they set accepted by the middleware."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from email.utils import parsedate_to_datetime
from typing import Any

import flask
import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from werkzeug.test import Client

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.cookies import clear_token_cookie, set_token_cookie
from jwt_middleware.testing import LocalIssuer

NAME = "__Host-access_token"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2lnbmF0dXJl"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module (overrides conftest's): these tests never change it."""
    with LocalIssuer() as local:
        yield local


# -- reading Set-Cookie -------------------------------------------------------------------------


class SetCookie:
    """One Set-Cookie header, parsed: attribute names lower-cased, flags map to None."""

    def __init__(self, header: str) -> None:
        first, *rest = (part.strip() for part in header.split(";"))
        self.name, _, self.value = first.partition("=")
        self.attributes: dict[str, str | None] = {}
        for attribute in rest:
            key, sep, value = attribute.partition("=")
            assert key.lower() not in self.attributes, f"{key} twice in {header!r}"
            self.attributes[key.strip().lower()] = value.strip() if sep else None

    def __getitem__(self, name: str) -> str | None:
        return self.attributes[name]

    def __contains__(self, name: str) -> bool:
        return name in self.attributes


def starlette_response() -> Any:
    return Response()


def flask_response() -> Any:
    return flask.Response()


RESPONSES = [starlette_response, flask_response]


@pytest.fixture(params=RESPONSES, ids=["starlette", "flask"])
def new_response(request: pytest.FixtureRequest) -> Callable[[], Any]:
    factory: Callable[[], Any] = request.param
    return factory


def set_cookies(response: Any) -> list[SetCookie]:
    return [SetCookie(h) for h in response.headers.getlist("set-cookie")]


def only_cookie(response: Any) -> SetCookie:
    cookies = set_cookies(response)
    assert len(cookies) == 1, [c.name for c in cookies]
    return cookies[0]


def assert_hardened(cookie: SetCookie, samesite: str = "strict") -> None:
    assert "httponly" in cookie and cookie["httponly"] is None
    assert "secure" in cookie and cookie["secure"] is None
    assert (cookie["samesite"] or "").lower() == samesite
    assert cookie["path"] == "/"
    assert "domain" not in cookie  # __Host-: the browser refuses the cookie if a Domain is set


# -- set -----------------------------------------------------------------------------------------


def test_set_token_cookie_defaults(new_response: Callable[[], Any]) -> None:
    """set_token_cookie writes __Host-access_token with the token, the given Max-Age and the
    hardened flags."""
    response = new_response()
    set_token_cookie(response, TOKEN, max_age=300)
    cookie = only_cookie(response)
    assert cookie.name == NAME
    assert cookie.value == TOKEN
    assert cookie["max-age"] == "300"
    assert_hardened(cookie)


def test_set_token_cookie_lax_when_asked(new_response: Callable[[], Any]) -> None:
    """samesite="lax" writes SameSite=Lax and keeps every other hardened attribute."""
    response = new_response()
    set_token_cookie(response, TOKEN, max_age=60, samesite="lax")
    cookie = only_cookie(response)
    assert cookie["max-age"] == "60"
    assert_hardened(cookie, samesite="lax")


def test_set_token_cookie_other_name_and_path(new_response: Callable[[], Any]) -> None:
    """A non-prefixed name may take another path; HttpOnly and Secure stay on."""
    response = new_response()
    set_token_cookie(response, TOKEN, max_age=60, name="access_token", path="/api")
    cookie = only_cookie(response)
    assert (cookie.name, cookie["path"]) == ("access_token", "/api")
    assert "httponly" in cookie and "secure" in cookie


def test_non_prefixed_cookie_may_drop_secure(new_response: Callable[[], Any]) -> None:
    """A cookie without a __Host-/__Secure- prefix may drop Secure; HttpOnly is never dropped."""
    response = new_response()
    set_token_cookie(response, TOKEN, max_age=60, name="access_token", secure=False)
    cookie = only_cookie(response)
    assert "secure" not in cookie
    assert "httponly" in cookie  # never optional


# -- clear -----------------------------------------------------------------------------------------


def test_clear_token_cookie_expires_it_with_the_same_attributes(
    new_response: Callable[[], Any],
) -> None:
    """clear_token_cookie writes an empty value with Max-Age=0 (any Expires in the past) and the
    hardened flags."""
    response = new_response()
    clear_token_cookie(response)
    cookie = only_cookie(response)
    assert cookie.name == NAME
    assert cookie.value in ("", '""')  # Starlette quotes the empty value
    assert cookie["max-age"] == "0"
    if "expires" in cookie:  # for clients that ignore Max-Age: not in the future either
        expires = parsedate_to_datetime(cookie["expires"] or "")
        assert expires.timestamp() <= time.time() + 1
    assert_hardened(cookie)


def test_clear_matches_what_set_wrote(new_response: Callable[[], Any]) -> None:
    """Browsers only replace a cookie with the same name, path (and domain): compare both."""
    for samesite in ("strict", "lax"):
        set_response, clear_response = new_response(), new_response()
        set_token_cookie(set_response, TOKEN, max_age=60, samesite=samesite)
        clear_token_cookie(clear_response, samesite=samesite)
        written, cleared = only_cookie(set_response), only_cookie(clear_response)
        assert cleared.name == written.name
        ignore = {"max-age", "expires"}
        assert {k: v for k, v in cleared.attributes.items() if k not in ignore} == {
            k: v for k, v in written.attributes.items() if k not in ignore
        }


# -- refusals --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"samesite": "none"}, "samesite"),
        ({"samesite": "None"}, "samesite"),
        ({"samesite": ""}, "samesite"),
        ({"secure": False}, "secure"),
        ({"name": "__Secure-access_token", "secure": False}, "secure"),
        ({"path": "/api"}, "path"),
        ({"name": "access_token", "path": "api"}, "path"),
    ],
    ids=[
        "samesite-none",
        "samesite-None",
        "samesite-empty",
        "host-prefix-insecure",
        "secure-prefix-insecure",
        "host-prefix-other-path",
        "relative-path",
    ],
)
def test_unsafe_cookie_settings_are_refused(
    new_response: Callable[[], Any], options: dict[str, Any], match: str
) -> None:
    """SameSite None or empty, a prefixed cookie without Secure, a __Host- path other than /
    or a relative path is a ValueError from both helpers, with nothing written."""
    calls: list[Callable[[Any], None]] = [
        lambda r: set_token_cookie(r, TOKEN, max_age=60, **options),
        lambda r: clear_token_cookie(r, **options),
    ]
    for call in calls:
        response = new_response()
        with pytest.raises(ValueError, match=match):
            call(response)
        assert set_cookies(response) == []  # nothing half-written


@pytest.mark.parametrize("max_age", [0, -1, -300, 1.5, "300", None])
def test_max_age_must_be_a_positive_integer(new_response: Callable[[], Any], max_age: Any) -> None:
    """A max_age that is not a positive int (0, negative, float, str, None) is a ValueError;
    nothing is written."""
    response = new_response()
    with pytest.raises(ValueError, match="max_age"):
        set_token_cookie(response, TOKEN, max_age=max_age)
    assert set_cookies(response) == []


# -- round trip through the middleware -------------------------------------------------------------


async def login(request: Request) -> JSONResponse:
    body = await request.json()
    response = JSONResponse({"ok": True})
    set_token_cookie(response, body["token"], max_age=300)
    return response


async def logout(request: Request) -> JSONResponse:
    response = JSONResponse({"sub": request.user.identity})
    clear_token_cookie(response)
    return response


async def me(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "location": request.auth.location})


def cookie_app(settings: Settings) -> Starlette:
    return Starlette(
        routes=[
            Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/me", me),
        ],
        middleware=[Middleware(JWTMiddleware, settings=settings)],
    )


def cookie_header(cookie: SetCookie) -> dict[str, str]:
    return {"cookie": f"{cookie.name}={cookie.value}"}


@pytest.mark.anyio
async def test_cookie_set_by_the_helper_is_accepted_by_the_asgi_middleware(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A cookie set by the helper authenticates the next ASGI request (location cookie); no
    cookie, or the token under another cookie name, is a 401."""
    app = cookie_app(make_settings(cookie=NAME, header=False, public_paths={"/login"}))
    token = issuer.mint(subject="gina", claims={"csrf": "c1"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
        try:
            issued = await http.post("/login", json={"token": token})
            assert issued.status_code == 200
            (cookie,) = [SetCookie(h) for h in issued.headers.get_list("set-cookie")]
            assert (cookie.name, cookie.value) == (NAME, token)
            answer = await http.get("/me", headers=cookie_header(cookie))
            assert answer.status_code == 200, answer.text
            assert answer.json() == {"sub": "gina", "location": "cookie"}
            # Without the cookie (or under another name) there is no token at all.
            assert (await http.get("/me")).status_code == 401
            renamed = {"cookie": f"access_token={token}"}
            assert (await http.get("/me", headers=renamed)).status_code == 401
        finally:
            await app.middleware_stack.app.verifier.aclose()  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_browser_like_round_trip_with_a_cookie_jar(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """Set by /login, kept and sent back by the client's jar (over https, as Secure needs),
    then expired by /logout."""
    settings = make_settings(cookie=NAME, public_paths={"/login"}, allowed_origins=["https://test"])
    app = cookie_app(settings)
    token = issuer.mint(subject="gina", claims={"csrf": "c1"})
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="https://test") as http:
        try:
            assert (await http.post("/login", json={"token": token})).status_code == 200
            assert [c.name for c in http.cookies.jar] == [NAME]
            answer = await http.get("/me")
            assert answer.json() == {"sub": "gina", "location": "cookie"}
            refused = await http.post("/logout")  # cookie-authenticated POST: CSRF proof needed
            assert refused.status_code == 403
            out = await http.post(
                "/logout", headers={"x-csrf-token": "c1", "origin": "https://test"}
            )
            assert out.status_code == 200, out.text
            assert list(http.cookies.jar) == []  # Max-Age=0: the jar dropped it
            assert (await http.get("/me")).status_code == 401
        finally:
            await app.middleware_stack.app.verifier.aclose()  # type: ignore[union-attr]


def test_cookie_set_on_a_flask_response_is_accepted_by_the_wsgi_middleware(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A cookie set on a Flask response authenticates a request through JWTWSGIMiddleware."""
    token = issuer.mint(subject="gina")
    response = flask.Response()
    set_token_cookie(response, token, max_age=300)
    cookie = only_cookie(response)

    def whoami(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        verified = get_token(environ)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"sub": verified.subject if verified else None}).encode()]

    mw = JWTWSGIMiddleware(whoami, settings=make_settings(cookie=NAME))
    try:
        client = Client(mw, use_cookies=False)
        answer = client.get("/", headers={"Cookie": f"{cookie.name}={cookie.value}"})
        assert answer.status_code == 200
        assert answer.json == {"sub": "gina"}
    finally:
        mw.close()
