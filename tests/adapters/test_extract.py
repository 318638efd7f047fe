"""Finding the token in raw header pairs: jwt_middleware._extract (pure functions, no I/O),
then the cookie cases end to end through both adapters over real servers (uvicorn, werkzeug):
the WSGI side gets the Cookie header as one string and must parse it exactly as the ASGI side.

The query string is out of reach here by construction (extract_token only sees headers); the
middleware tests check that ``?access_token=`` is ignored end to end.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._errors import InvalidRequest, Reason
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import raw_request, serve_asgi, serve_wsgi

__all__ = ["serve_asgi", "serve_wsgi"]  # fixtures, used by name
from jwt_middleware._extract import (
    COOKIE,
    HEADER,
    cookie_values,
    credentials,
    extract_token,
    plain_bearer,
)

TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJ4In0.c2ln"


def auth(value: bytes | str) -> list[tuple[bytes, bytes]]:
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return [(b"authorization", raw)]


# -- Bearer header --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        f"Bearer {TOKEN}",
        f"bearer {TOKEN}",
        f"BEARER {TOKEN}",
        f"BeArEr {TOKEN}",
        f"Bearer     {TOKEN}",
        f"  Bearer {TOKEN}  ",
    ],
)
def test_bearer_scheme_is_case_insensitive_and_spaces_are_tolerated(value: str) -> None:
    """The Bearer scheme matches in any case, with extra spaces after it and around the value."""
    assert extract_token(auth(value)) == (TOKEN, HEADER)


@pytest.mark.parametrize(
    "token",
    [
        "abc",
        "a-b.c_d~e+f/g",
        "abc=",
        "abc==",
        "A1.B2.C3",
        "mF_9.B5f-4.1JqM",  # RFC 6750 §2.1 example
    ],
)
def test_every_b64token_character_is_accepted(token: str) -> None:
    """Every RFC 6750 b64token character (- . _ ~ + / and trailing =) is kept in the token."""
    assert credentials(f"Bearer {token}".encode()) == (token, HEADER)


@pytest.mark.parametrize(
    "value",
    [
        b"Bearer",
        b"Bearer ",
        b"bearer   ",
        b"Bearer a b",
        b"Bearer\ttoken",
        b"Bearer \xff\xfe",
        b"Bearer caf\xc3\xa9",
        b"Bearer " + TOKEN.encode() + b",",
        b"Bearer a=b",  # "=" only as trailing padding
        b"Bearer =abc",
        b"Bearer tok\x00en",
        b'Bearer "token"',
    ],
)
def test_malformed_bearer_credentials_are_invalid_request(value: bytes) -> None:
    """An empty, spaced, non-ASCII, quoted or badly padded Bearer value is a 400
    malformed_authorization."""
    with pytest.raises(InvalidRequest) as caught:
        extract_token(auth(value))
    assert caught.value.reason == Reason.MALFORMED_AUTHORIZATION
    assert caught.value.status_code == 400
    assert caught.value.error == "invalid_request"


@pytest.mark.parametrize("value", [b"Basic dXNlcjpwYXNz", b"Digest username=x", b"Token abc", b""])
def test_other_schemes_are_not_ours(value: bytes) -> None:
    """Basic, Digest, other schemes and an empty value yield no token rather than an error."""
    assert credentials(value) is None
    assert extract_token(auth(value)) is None


def test_no_headers_means_no_token() -> None:
    """No Authorization header and no configured cookie means no token, not an error."""
    assert extract_token([]) is None
    assert extract_token([(b"x-token", TOKEN.encode())], cookie=b"access_token") is None


def test_two_authorization_headers_are_ambiguous() -> None:
    """Two Authorization headers are refused as multiple_tokens."""
    headers = [(b"authorization", f"Bearer {TOKEN}".encode())] * 2
    with pytest.raises(InvalidRequest) as caught:
        extract_token(headers)
    assert caught.value.reason == Reason.MULTIPLE_TOKENS


def test_two_authorization_headers_are_refused_even_if_one_is_not_bearer() -> None:
    """Two Authorization headers are multiple_tokens even when one of them is Basic."""
    headers = [(b"authorization", b"Basic eDp5"), (b"authorization", f"Bearer {TOKEN}".encode())]
    with pytest.raises(InvalidRequest) as caught:
        extract_token(headers)
    assert caught.value.reason == Reason.MULTIPLE_TOKENS


# -- cookie ---------------------------------------------------------------------------------


def test_cookie_found_among_others() -> None:
    """The token cookie is found among other cookies in one Cookie header."""
    headers = [(b"cookie", f"theme=dark; access_token={TOKEN}; lang=fr".encode())]
    assert extract_token(headers, cookie=b"access_token") == (TOKEN, COOKIE)


def test_cookie_found_in_second_cookie_header() -> None:
    """The token cookie is found in a second Cookie header."""
    headers = [(b"cookie", b"theme=dark"), (b"cookie", f"access_token={TOKEN}".encode())]
    assert extract_token(headers, cookie=b"access_token") == (TOKEN, COOKIE)


def test_quoted_cookie_value_is_unquoted() -> None:
    """A double-quoted cookie value yields the token without the quotes."""
    headers = [(b"cookie", f'access_token="{TOKEN}"'.encode())]
    assert extract_token(headers, cookie=b"access_token") == (TOKEN, COOKIE)


@pytest.mark.parametrize("value", [b"access_token=", b'access_token=""', b"access_token=  "])
def test_empty_cookie_is_absent(value: bytes) -> None:
    """An empty, quoted-empty or blank token cookie counts as no cookie at all."""
    assert extract_token([(b"cookie", value)], cookie=b"access_token") is None
    assert cookie_values([value], b"access_token") == []


def test_cookie_name_must_match_exactly() -> None:
    """Only a cookie named exactly as configured counts: no prefix, suffix or case variants."""
    headers = [(b"cookie", f"xaccess_token={TOKEN}; access_token_2={TOKEN}".encode())]
    assert extract_token(headers, cookie=b"access_token") is None
    headers = [(b"cookie", f"Access_Token={TOKEN}".encode())]
    assert extract_token(headers, cookie=b"access_token") is None


@pytest.mark.parametrize(
    "value",
    [
        f"theme=dark,access_token={TOKEN}",
        f"theme=dark, access_token={TOKEN}",
        f"theme=dark,access_token={TOKEN},lang=fr",
    ],
)
def test_a_comma_does_not_separate_cookies(value: str) -> None:
    """Only ";" separates cookie pairs (RFC 6265 §4.2.1): a token after a comma is part of
    another cookie's value, not the token cookie."""
    headers = [(b"cookie", value.encode())]
    assert extract_token(headers, cookie=b"access_token") is None
    assert cookie_values([value.encode()], b"theme") == [value[len("theme=") :]]


@pytest.mark.parametrize(
    "headers",
    [
        [(b"cookie", b"access_token=one; access_token=two")],
        [(b"cookie", b"access_token=one"), (b"cookie", b"access_token=two")],
        [(b"cookie", b"access_token=same; access_token=same")],
        [(b"cookie", b"access_token=one,access_token=two")],  # two headers joined by WSGI
        [(b"cookie", b"access_token=one, access_token=two; theme=dark")],
    ],
)
def test_cookie_twice_is_invalid_request(headers: list[tuple[bytes, bytes]]) -> None:
    """The token cookie twice, in one header or two, is ambiguous: 400."""
    with pytest.raises(InvalidRequest) as caught:
        extract_token(headers, cookie=b"access_token")
    assert caught.value.status_code == 400
    assert caught.value.reason == Reason.MALFORMED_COOKIE


def test_header_and_cookie_together_are_ambiguous() -> None:
    """A Bearer header and a token cookie together are refused as multiple_tokens."""
    headers = [
        (b"authorization", f"Bearer {TOKEN}".encode()),
        (b"cookie", f"access_token={TOKEN}".encode()),
    ]
    with pytest.raises(InvalidRequest) as caught:
        extract_token(headers, cookie=b"access_token")
    assert caught.value.reason == Reason.MULTIPLE_TOKENS


def test_basic_header_does_not_conflict_with_the_cookie() -> None:
    """A Basic Authorization header beside the token cookie is ignored: the cookie token is used."""
    headers = [(b"authorization", b"Basic eDp5"), (b"cookie", f"access_token={TOKEN}".encode())]
    assert extract_token(headers, cookie=b"access_token") == (TOKEN, COOKIE)


def test_header_found_when_cookie_configured_but_absent() -> None:
    """With a cookie configured but not sent, the Bearer header's token is used."""
    headers = [(b"authorization", f"Bearer {TOKEN}".encode()), (b"cookie", b"theme=dark")]
    assert extract_token(headers, cookie=b"access_token") == (TOKEN, HEADER)


# -- locations switched off -------------------------------------------------------------------


def test_header_false_ignores_authorization() -> None:
    """With header=False, Authorization headers (even malformed or repeated) are ignored; the
    cookie counts."""
    headers = [(b"authorization", f"Bearer {TOKEN}".encode())]
    assert extract_token(headers, header=False, cookie=b"access_token") is None
    # Not even malformed or repeated Authorization headers matter then.
    headers = [(b"authorization", b"Bearer"), (b"authorization", b"Bearer a b")]
    assert extract_token(headers, header=False, cookie=b"access_token") is None
    headers.append((b"cookie", f"access_token={TOKEN}".encode()))
    assert extract_token(headers, header=False, cookie=b"access_token") == (TOKEN, COOKIE)


def test_cookie_none_ignores_cookies() -> None:
    """With no cookie configured, Cookie headers (even repeated tokens) are ignored; the header
    counts."""
    headers = [(b"cookie", f"access_token={TOKEN}; access_token=other".encode())]
    assert extract_token(headers) is None
    headers.append((b"authorization", f"Bearer {TOKEN}".encode()))
    assert extract_token(headers) == (TOKEN, HEADER)


def test_header_names_are_matched_lower_case_as_asgi_delivers_them() -> None:
    """Only the lower-case authorization header is read; x-authorization and proxy-authorization
    are not."""
    # ASGI lower-cases header names; other names (x-authorization, etc.) are never read.
    headers = [(b"x-authorization", f"Bearer {TOKEN}".encode()), (b"proxy-authorization", b"x")]
    assert extract_token(headers) is None


# -- the token cache's key (plain_bearer) -----------------------------------------------------


@pytest.mark.parametrize("scheme", ["Bearer ", "bearer "])
def test_plain_bearer_is_the_token_as_sent(scheme: str) -> None:
    """plain_bearer returns the raw token for one "Bearer " header, ignoring cookies when none is
    configured."""
    headers = [(b"host", b"x"), *auth(scheme + TOKEN)]
    assert plain_bearer(headers) == TOKEN.encode()
    # a Cookie header matters only when a token cookie is configured
    assert plain_bearer([*headers, (b"cookie", b"a=b")]) == TOKEN.encode()


@pytest.mark.parametrize(
    "headers",
    [
        [],
        auth("Basic eDp5"),
        auth("BEARER " + TOKEN),  # not plain: extract_token decides
        auth(" Bearer " + TOKEN),
        auth("Bearer" + TOKEN),
        [*auth("Bearer " + TOKEN), *auth("Bearer " + TOKEN)],
        [*auth("Bearer " + TOKEN), (b"cookie", b"a=b")],
    ],
    ids=["none", "basic", "upper", "leading-space", "no-space", "two-headers", "cookie"],
)
def test_plain_bearer_leaves_anything_else_to_extract_token(
    headers: list[tuple[bytes, bytes]],
) -> None:
    """plain_bearer returns None for anything but one exact "Bearer <token>" header and no Cookie
    header."""
    assert plain_bearer(headers, b"access_token") is None


# -- the cookie through both adapters, over real servers ------------------------------------------

COOKIE_NAME = "__Host-access_token"


async def _whoami(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse({"sub": user.identity if user.is_authenticated else None})


def _wsgi_whoami(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    token = get_token(environ)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [json.dumps({"sub": token.subject if token else None}).encode()]


@pytest.fixture
def cookie_server(
    adapter: str,
    make_settings: Callable[..., Settings],
    serve_asgi: Callable[[Any], int],
    serve_wsgi: Callable[[Any], int],
) -> int:
    """The port of a real server (uvicorn / werkzeug) whose middleware reads the token from the
    ``__Host-access_token`` cookie; one per ``adapter``."""
    settings = make_settings(cookie=COOKIE_NAME)
    if adapter == "asgi":
        app = Starlette(
            routes=[Route("/whoami", _whoami)],
            middleware=[Middleware(JWTMiddleware, settings=settings)],
        )
        return serve_asgi(app)
    return serve_wsgi(JWTWSGIMiddleware(_wsgi_whoami, settings=settings))


def _cookie_get(port: int, cookie: str) -> tuple[int, Any]:
    status, _, body = raw_request(port, "/whoami", [f"Cookie: {cookie}".encode()])
    return status, json.loads(body)


def test_token_after_a_comma_in_another_cookie_is_not_a_login(
    cookie_server: int, issuer: LocalIssuer
) -> None:
    """``theme=dark,__Host-access_token=<attacker's token>`` (a cookie a sibling subdomain can
    set) is no token: 401, never the attacker's identity (login CSRF)."""
    attacker = issuer.mint(subject="attacker")
    status, body = _cookie_get(cookie_server, f"theme=dark,{COOKIE_NAME}={attacker}")
    assert status == 401
    assert "sub" not in body


def test_planted_comma_cookie_next_to_the_real_one_does_not_lock_the_user_out(
    cookie_server: int, issuer: LocalIssuer
) -> None:
    """Next to the victim's real cookie, the planted one is just another cookie's value: the
    victim stays themselves (no 400 for a "second" token cookie)."""
    attacker = issuer.mint(subject="attacker")
    victim = issuer.mint(subject="victim")
    planted = f"theme=dark,{COOKIE_NAME}={attacker}"
    real = f"{COOKIE_NAME}={victim}"
    assert _cookie_get(cookie_server, f"{planted}; {real}") == (200, {"sub": "victim"})
    assert _cookie_get(cookie_server, f"{real}; {planted}") == (200, {"sub": "victim"})


def test_real_token_cookie_twice_is_still_refused(cookie_server: int, issuer: LocalIssuer) -> None:
    """Two genuine token cookies (cookie tossing), in one Cookie header or two (which WSGI
    servers join with a comma), stay a 400 on both adapters."""
    one, two = issuer.mint(subject="a"), issuer.mint(subject="b")
    status, body = _cookie_get(cookie_server, f"{COOKIE_NAME}={one}; {COOKIE_NAME}={two}")
    assert (status, body["error"]) == (400, "invalid_request")
    lines = [f"Cookie: {COOKIE_NAME}={one}".encode(), f"Cookie: {COOKIE_NAME}={two}".encode()]
    status, _, raw = raw_request(cookie_server, "/whoami", lines)
    assert (status, json.loads(raw)["error"]) == (400, "invalid_request")
