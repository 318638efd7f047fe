"""JWTMiddleware in Starlette and FastAPI apps built here, against a real key server.

Behaviour is checked in process (httpx.ASGITransport); what depends on the server itself
(lifespan warm-up, streaming, the WebSocket handshake refusal) runs under a real uvicorn.
"""

import base64
import contextlib
import contextvars
import inspect
import json
import logging
import socket
import threading
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any

import anyio
import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, SimpleUser, requires
from starlette.background import BackgroundTask
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, StreamingResponse
from starlette.routing import Route, WebSocketRoute
from starlette.testclient import TestClient
from starlette.types import ASGIApp, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect

from jwt_middleware import (
    AuthError,
    InsufficientScope,
    JWTMiddleware,
    Reason,
    Settings,
    VerifiedToken,
    requires_scopes,
)
from jwt_middleware._gate import SCOPE_GATE
from jwt_middleware.fastapi import RequireScopes
from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key
from tests.support.challenges import with_dpop
from tests.support.clock import FakeClock
from tests.support.servers import bearer, serve_asgi

__all__ = ["serve_asgi"]  # a fixture, used by name


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
def stranger_key() -> SigningKey:
    """A key nobody trusts: tokens signed with it under a trusted kid fail the signature."""
    return generate_key("RS256")


# -- apps and clients -------------------------------------------------------------------------


def describe(request: Request) -> dict[str, Any]:
    user, auth = request.user, request.auth
    authenticated = user.is_authenticated
    return {
        "authenticated": authenticated,
        "user_class": type(user).__name__,
        "identity": user.identity if authenticated else None,
        "claims": dict(user.claims) if authenticated else None,
        "scopes": list(auth.scopes),
        "location": getattr(auth, "location", None),
    }


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse(describe(request))


def whoami_sync(request: Request) -> JSONResponse:
    return JSONResponse(describe(request))


@requires_scopes("admin")
async def admin_async(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "sub": request.user.identity})


@requires_scopes("admin")
def admin_sync(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True, "sub": request.user.identity})


@requires_scopes("read", "write")
async def read_and_write(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@requires_scopes("read", "write", any_of=True)
async def read_or_write(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@requires_scopes()
async def any_token(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@requires("admin")
async def starlette_admin(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


async def ws_echo(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_json({"sub": websocket.user.identity, "location": websocket.auth.location})
    while True:
        try:
            text = await websocket.receive_text()
        except WebSocketDisconnect:
            return
        await websocket.send_text(text)


@requires_scopes("admin")
async def ws_admin(websocket: WebSocket) -> None:
    await websocket.accept()
    await websocket.send_text("admin")
    await websocket.close()


ROUTES = [
    Route("/whoami", whoami),
    Route("/whoami-sync", whoami_sync),
    Route("/health", whoami),
    Route("/healthz", whoami),
    Route("/static/{rest:path}", whoami),
    Route("/staticfiles", whoami),
    Route("/admin", admin_async),
    Route("/admin-sync", admin_sync),
    Route("/read-and-write", read_and_write),
    Route("/read-or-write", read_or_write),
    Route("/any-token", any_token),
    Route("/starlette-admin", starlette_admin),
    WebSocketRoute("/ws", ws_echo),
    WebSocketRoute("/ws-admin", ws_admin),
]


class Collecting(logging.Handler):
    """A log handler that appends every record to ``records``."""

    def __init__(self, records: list[logging.LogRecord]) -> None:
        super().__init__()
        self.records = records

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def starlette_app(
    settings: Settings, *, routes: list[Any] | None = None, outer: Sequence[Middleware] = ()
) -> Starlette:
    return Starlette(
        routes=routes if routes is not None else ROUTES,
        middleware=[*outer, Middleware(JWTMiddleware, settings=settings)],
    )


def jwt_middlewares(app: Any) -> list[JWTMiddleware]:
    found = []
    node = getattr(app, "middleware_stack", None)
    while node is not None:
        if isinstance(node, JWTMiddleware):
            found.append(node)
        node = getattr(node, "app", None)
    return found


@contextlib.asynccontextmanager
async def client(
    app: Any, *, raise_app_exceptions: bool = True
) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=raise_app_exceptions)
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            yield http
    finally:
        for middleware in jwt_middlewares(app):  # no lifespan in process: close the JWKS client
            await middleware.verifier.aclose()


def challenge(response: httpx.Response) -> str:
    return str(response.headers.get("www-authenticate", ""))


# -- authenticated requests ---------------------------------------------------------------------


@pytest.mark.anyio
async def test_valid_header_token_reaches_the_endpoint_as_user_and_auth(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A valid header token reaches the endpoint as request.user (JWTUser, claims) and request.auth
    (scopes, location "header")."""
    token = issuer.mint({"tenant": "t-9"}, subject="alice", scope="read write")
    async with client(starlette_app(make_settings())) as http:
        response = await http.get("/whoami", headers=bearer(token))
    assert response.status_code == 200
    seen = response.json()
    assert seen["authenticated"] is True
    assert seen["user_class"] == "JWTUser"
    assert seen["identity"] == "alice"
    assert seen["claims"]["sub"] == "alice"
    assert seen["claims"]["tenant"] == "t-9"
    assert seen["claims"]["iss"] == issuer.issuer
    assert seen["scopes"] == ["authenticated", "read", "write"]
    assert seen["location"] == "header"


@pytest.mark.anyio
async def test_sync_endpoint_sees_the_user_too(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A sync endpoint sees the verified user as an async one does."""
    async with client(starlette_app(make_settings())) as http:
        response = await http.get("/whoami-sync", headers=bearer(issuer.mint(subject="bob")))
    assert response.status_code == 200
    assert response.json()["identity"] == "bob"


@pytest.mark.anyio
async def test_valid_cookie_token(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A token in the configured cookie, among other cookies, is accepted (location "cookie"); a
    header token still works beside it."""
    token = issuer.mint(subject="carol")
    async with client(starlette_app(make_settings(cookie="access_token"))) as http:
        response = await http.get(
            "/whoami", headers={"cookie": f"theme=dark; access_token={token}"}
        )
        by_header = await http.get("/whoami", headers=bearer(token))
    assert response.status_code == 200
    assert response.json()["identity"] == "carol"
    assert response.json()["location"] == "cookie"
    # header=True (default) still works next to the cookie
    assert by_header.status_code == 200
    assert by_header.json()["location"] == "header"


@pytest.mark.anyio
async def test_header_false_refuses_header_tokens(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """With header=False a header token is a bare 401 challenge and the cookie token is accepted."""
    token = issuer.mint()
    settings = make_settings(cookie="access_token", header=False)
    async with client(starlette_app(settings)) as http:
        refused = await http.get("/whoami", headers=bearer(token))
        accepted = await http.get("/whoami", headers={"cookie": f"access_token={token}"})
    assert refused.status_code == 401
    assert challenge(refused) == 'Bearer realm="api"'
    assert accepted.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("claims", "settings_options", "expected"),
    [
        ({"scp": ["orders:read", "orders:write"]}, {}, ["orders:read", "orders:write"]),
        ({"scope": "a b", "scp": ["b", "c"]}, {}, ["a", "b", "c"]),
        ({"permissions": ["p:1"]}, {}, []),
        (
            {"scope": "a", "permissions": ["p:1", "p:2"]},
            {"scope_claims": ("scope", "scp", "permissions")},
            ["a", "p:1", "p:2"],
        ),
        ({"roles": ["admin"]}, {"scope_claims": ("roles",)}, ["admin"]),
    ],
)
async def test_scope_claims_reach_request_auth_scopes(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    claims: dict[str, Any],
    settings_options: dict[str, Any],
    expected: list[str],
) -> None:
    """request.auth.scopes merges the scope and scp claims by default, and the scope_claims setting
    chooses others (permissions, roles)."""
    async with client(starlette_app(make_settings(**settings_options))) as http:
        response = await http.get("/whoami", headers=bearer(issuer.mint(claims)))
    assert response.status_code == 200
    assert response.json()["scopes"] == ["authenticated", *expected]


# -- refusals -------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_missing_token_is_401_with_a_bare_challenge(
    make_settings: Callable[..., Settings],
) -> None:
    """No token is a no-store JSON 401 unauthorized: bare challenge, no reason, exact length."""
    async with client(starlette_app(make_settings())) as http:
        response = await http.get("/whoami")
    assert response.status_code == 401
    assert challenge(response) == with_dpop('Bearer realm="api"')
    assert response.headers["content-type"] == "application/json"
    assert response.headers["cache-control"] == "no-store"
    body = response.json()
    assert body["error"] == "unauthorized"
    assert "reason" not in body
    assert int(response.headers["content-length"]) == len(response.content)


@pytest.mark.anyio
async def test_custom_realm(make_settings: Callable[..., Settings], issuer: LocalIssuer) -> None:
    """The realm setting names the realm in both the bare and the invalid_token challenge."""
    async with client(starlette_app(make_settings(realm="orders"))) as http:
        missing = await http.get("/whoami")
        invalid = await http.get("/whoami", headers=bearer(issuer.mint(audience="api://x")))
    assert challenge(missing) == with_dpop('Bearer realm="orders"', "orders")
    assert challenge(invalid).startswith('Bearer realm="orders", error="invalid_token"')


def _bad_tokens(issuer: LocalIssuer, stranger: SigningKey, clock: FakeClock) -> dict[str, str]:
    return {
        Reason.SIGNATURE_INVALID: issuer.mint(
            now=clock.now, key=stranger, kid=issuer.current_key.kid
        ),
        Reason.AUDIENCE_MISMATCH: issuer.mint(now=clock.now, audience="api://someone-else"),
        Reason.ISSUER_MISMATCH: issuer.mint({"iss": "https://evil.example/"}, now=clock.now),
        Reason.KID_UNKNOWN: issuer.mint(now=clock.now, key=stranger),
    }


INVALID_REASONS = [
    Reason.SIGNATURE_INVALID,
    Reason.AUDIENCE_MISMATCH,
    Reason.ISSUER_MISMATCH,
    Reason.KID_UNKNOWN,
]


@pytest.mark.anyio
@pytest.mark.parametrize("reason", INVALID_REASONS)
async def test_invalid_token_is_401_invalid_token_without_the_reason(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    stranger_key: SigningKey,
    reason: str,
) -> None:
    """Every invalid token is a generic 401 invalid_token; neither body nor challenge names why."""
    token = _bad_tokens(issuer, stranger_key, clock)[reason]
    async with client(starlette_app(make_settings(clock=clock))) as http:
        response = await http.get("/whoami", headers=bearer(token))
    assert response.status_code == 401
    assert challenge(response).startswith('Bearer realm="api", error="invalid_token"')
    body = response.json()
    assert body["error"] == "invalid_token"
    assert body["error_description"] == "The access token is invalid."
    assert "reason" not in body
    assert reason not in response.text
    assert reason not in challenge(response)


@pytest.mark.anyio
@pytest.mark.parametrize("reason", INVALID_REASONS)
async def test_expose_error_details_puts_the_reason_in_the_answer(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    stranger_key: SigningKey,
    reason: str,
) -> None:
    """With expose_error_details the reason is in the 401 body and in the challenge."""
    token = _bad_tokens(issuer, stranger_key, clock)[reason]
    settings = make_settings(clock=clock, expose_error_details=True)
    async with client(starlette_app(settings)) as http:
        response = await http.get("/whoami", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["reason"] == reason
    assert reason in challenge(response)


@pytest.mark.anyio
async def test_the_same_token_expires_when_the_clock_moves(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """A token passes until exp + 60 s leeway, then is a generic 401 (on_error: token_expired)."""
    token = issuer.mint(now=clock.now, expires_in=300)
    errors: list[AuthError] = []
    settings = make_settings(clock=clock, on_error=errors.append)
    async with client(starlette_app(settings)) as http:
        before = await http.get("/whoami", headers=bearer(token))
        clock.advance(300 + 59)  # inside the 60 s leeway
        within_leeway = await http.get("/whoami", headers=bearer(token))
        clock.advance(2)
        after = await http.get("/whoami", headers=bearer(token))
    assert before.status_code == 200
    assert within_leeway.status_code == 200
    assert after.status_code == 401
    assert challenge(after).startswith('Bearer realm="api", error="invalid_token"')
    assert after.json()["error"] == "invalid_token"
    assert "expire" not in after.text.lower() and "expire" not in challenge(after).lower()
    assert [e.reason for e in errors] == [Reason.EXPIRED]


@pytest.mark.anyio
async def test_token_in_the_query_string_is_ignored(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A token in the query string is never read: 401 by default, anonymous in anonymous mode."""
    token = issuer.mint()
    settings = make_settings(cookie="access_token")
    async with client(starlette_app(settings)) as http:
        response = await http.get("/whoami", params={"access_token": token})
        anonymous = starlette_app(make_settings(anonymous=True))
    assert response.status_code == 401
    assert challenge(response) == with_dpop('Bearer realm="api"')
    async with client(anonymous) as http:
        seen = await http.get("/whoami", params={"access_token": token})
    assert seen.status_code == 200
    assert seen.json()["authenticated"] is False


@pytest.mark.anyio
async def test_two_authorization_headers_are_400(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """Two Authorization headers are a 400 invalid_request (on_error: multiple_tokens)."""
    token = issuer.mint()
    called: list[str] = []
    settings = make_settings(on_error=lambda exc: called.append(exc.reason))
    async with client(starlette_app(settings)) as http:
        response = await http.get(
            "/whoami",
            headers=[("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")],
        )
    assert response.status_code == 400
    assert challenge(response).startswith('Bearer realm="api", error="invalid_request"')
    assert response.json()["error"] == "invalid_request"
    assert called == [Reason.MULTIPLE_TOKENS]


@pytest.mark.anyio
async def test_header_and_cookie_together_are_400(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A token in the header and the cookie, or the token cookie twice, is a 400 invalid_request."""
    token = issuer.mint()
    async with client(starlette_app(make_settings(cookie="access_token"))) as http:
        both = await http.get(
            "/whoami", headers={**bearer(token), "cookie": f"access_token={token}"}
        )
        twice = await http.get(
            "/whoami", headers=[("cookie", f"access_token={token}"), ("cookie", "access_token=x")]
        )
    assert both.status_code == 400
    assert both.json()["error"] == "invalid_request"
    assert twice.status_code == 400


@pytest.mark.anyio
async def test_malformed_authorization_is_400(make_settings: Callable[..., Settings]) -> None:
    """A malformed Bearer value is a 400 invalid_request; another scheme is no token, a bare 401."""
    async with client(starlette_app(make_settings())) as http:
        response = await http.get("/whoami", headers={"authorization": "Bearer a b"})
        basic = await http.get("/whoami", headers={"authorization": "Basic eDp5"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_request"
    assert basic.status_code == 401  # another scheme: no bearer token at all
    assert challenge(basic) == with_dpop('Bearer realm="api"')


# -- paths that skip verification --------------------------------------------------------------


@pytest.mark.anyio
async def test_public_paths_exact_and_prefix(make_settings: Callable[..., Settings]) -> None:
    """Public paths match exactly or under a "/x/*" prefix and are served unauthenticated, even with
    a junk token; near misses are 401."""
    settings = make_settings(public_paths={"/health", "/static/*"})
    async with client(starlette_app(settings)) as http:
        health = await http.get("/health")
        static = await http.get("/static/css/site.css")
        with_junk = await http.get("/static/x", headers={"authorization": "Bearer junk.junk.junk"})
        healthz = await http.get("/healthz")
        staticfiles = await http.get("/staticfiles")
        whoami_ = await http.get("/whoami")
    for response in (health, static, with_junk):
        assert response.status_code == 200
        assert response.json()["authenticated"] is False
        assert response.json()["user_class"] == "UnauthenticatedUser"
        assert response.json()["scopes"] == []
    for response in (healthz, staticfiles, whoami_):
        assert response.status_code == 401


@pytest.mark.anyio
async def test_anonymous_mode(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], stranger_key: SigningKey
) -> None:
    """Anonymous mode serves no-token requests unauthenticated but refuses bad tokens;
    requires_scopes then answers 401, naming the route's scopes."""
    async with client(starlette_app(make_settings(anonymous=True))) as http:
        none = await http.get("/whoami")
        good = await http.get("/whoami", headers=bearer(issuer.mint(subject="dan")))
        bad = await http.get(
            "/whoami", headers=bearer(issuer.mint(key=stranger_key, kid=issuer.current_key.kid))
        )
        malformed = await http.get("/whoami", headers={"authorization": "Bearer"})
        protected = await http.get("/any-token")
        protected_sync = await http.get("/admin-sync")
    assert none.status_code == 200
    assert none.json()["authenticated"] is False
    assert good.status_code == 200
    assert good.json()["identity"] == "dan"
    assert bad.status_code == 401
    assert bad.json()["error"] == "invalid_token"
    assert malformed.status_code == 400
    # requires_scopes on an anonymous request: 401 (not 403), naming the route's scopes if any
    for response, named in ((protected, ""), (protected_sync, ', scope="admin"')):
        assert response.status_code == 401
        assert challenge(response) == with_dpop('Bearer realm="api"' + named)
        assert response.json()["error"] == "unauthorized"


# -- authorization ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_starlette_requires_works_with_our_scopes(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """Starlette's @requires sees the token's scopes: 403 without the scope, 200 with it."""
    async with client(starlette_app(make_settings())) as http:
        without = await http.get("/starlette-admin", headers=bearer(issuer.mint(scope="read")))
        with_ = await http.get("/starlette-admin", headers=bearer(issuer.mint(scope="admin")))
    assert without.status_code == 403
    assert with_.status_code == 200


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/admin", "/admin-sync"])
async def test_requires_scopes_sync_and_async(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], path: str
) -> None:
    """requires_scopes on sync and async endpoints: 403 insufficient_scope naming the scope, 200
    with it, 401 without a token."""
    async with client(starlette_app(make_settings())) as http:
        refused = await http.get(path, headers=bearer(issuer.mint(scope="read")))
        allowed = await http.get(path, headers=bearer(issuer.mint(subject="eve", scope="admin x")))
        missing = await http.get(path)
    assert refused.status_code == 403
    header = challenge(refused)
    assert header.startswith('Bearer realm="api", error="insufficient_scope"')
    assert header.endswith('scope="admin"')
    assert refused.headers["content-type"] == "application/json"
    assert refused.json()["error"] == "insufficient_scope"
    assert allowed.status_code == 200
    assert allowed.json() == {"ok": True, "sub": "eve"}
    assert missing.status_code == 401


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("scope", "all_of", "any_of"),
    [
        ("read write", 200, 200),
        ("write read other", 200, 200),
        ("read", 403, 200),
        ("write", 403, 200),
        ("other", 403, 403),
        (None, 403, 403),
    ],
)
async def test_requires_scopes_all_of_and_any_of(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    scope: str | None,
    all_of: int,
    any_of: int,
) -> None:
    """requires_scopes needs all listed scopes, or one with any_of; a 403 names them all."""
    token = issuer.mint(scope=scope)
    async with client(starlette_app(make_settings())) as http:
        both = await http.get("/read-and-write", headers=bearer(token))
        either = await http.get("/read-or-write", headers=bearer(token))
    assert (both.status_code, either.status_code) == (all_of, any_of)
    if both.status_code == 403:
        assert challenge(both).endswith('scope="read write"')


def test_requires_scopes_refuses_bad_scope_names() -> None:
    """requires_scopes and RequireScopes raise ValueError for an empty scope or one with a space."""
    for bad in ("", "a b"):
        with pytest.raises(ValueError):
            requires_scopes(bad)
        with pytest.raises(ValueError):
            RequireScopes(bad)


async def scope_keys(request: Request) -> JSONResponse:
    auth = request.scope.get("auth")
    return JSONResponse({"keys": sorted(request.scope), "scopes": getattr(auth, "scopes", None)})


@pytest.mark.anyio
async def test_the_middleware_adds_only_user_auth_and_its_gate_to_the_scope(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """The middleware adds only user, auth and its scope gate to the ASGI scope, on verified, public
    and anonymous requests."""
    # Nothing else: a request's scope is the app's namespace, and every key costs every request.
    routes = [Route("/keys", scope_keys), Route("/public", scope_keys)]
    async with client(Starlette(routes=routes)) as http:
        bare = set((await http.get("/keys")).json()["keys"])
    app = starlette_app(make_settings(public_paths={"/public"}, anonymous=True), routes=routes)
    async with client(app) as http:
        verified = (await http.get("/keys", headers=bearer(issuer.mint(scope="a b")))).json()
        public = (await http.get("/public")).json()
        anonymous = (await http.get("/keys")).json()
    for seen, scopes in ((verified, ["authenticated", "a", "b"]), (public, []), (anonymous, [])):
        assert set(seen["keys"]) - bare == {"user", "auth", SCOPE_GATE}
        assert seen["scopes"] == scopes


class ReplaceIdentity:
    """An app's own middleware inside JWTMiddleware that swaps request.user and request.auth
    for its own (as Starlette's AuthenticationMiddleware would)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            scope["user"] = SimpleUser("someone")
            scope["auth"] = AuthCredentials(["read"])
        await self.app(scope, receive, send)


@pytest.mark.anyio
@pytest.mark.parametrize("layout", ["middleware list", "wrapping the app"])
@pytest.mark.parametrize("path", ["/admin", "/admin-sync"])
async def test_decorator_refusals_keep_the_middlewares_answer_when_the_identity_is_replaced(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], layout: str, path: str
) -> None:
    """With the identity replaced by an inner middleware, decorator refusals are still the
    middleware's 403 (its realm), in either layout."""
    # The decorators answer with JWTMiddleware's settings (realm) whatever sits between them,
    # whether JWTMiddleware is in Starlette's middleware list (outside its error handling) or
    # wraps the app object (inside it, so a raise would become Starlette's 500).
    settings = make_settings(realm="shop")
    if layout == "middleware list":
        app: Any = Starlette(
            routes=ROUTES,
            middleware=[Middleware(JWTMiddleware, settings=settings), Middleware(ReplaceIdentity)],
        )
    else:
        inner = Starlette(routes=ROUTES, middleware=[Middleware(ReplaceIdentity)])
        app = JWTMiddleware(inner, settings=settings)
    async with client(app) as http:
        refused = await http.get(path, headers=bearer(issuer.mint(scope="admin")))
        allowed = await http.get("/read-or-write", headers=bearer(issuer.mint()))
    assert refused.status_code == 403
    assert challenge(refused).startswith('Bearer realm="shop", error="insufficient_scope"')
    assert refused.json()["error"] == "insufficient_scope"
    assert allowed.status_code == 200


def test_a_websocket_decorator_refusal_with_the_identity_replaced_closes_before_accept(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A decorated WebSocket endpoint whose identity was replaced closes the handshake with 1008."""
    inner = Starlette(routes=ROUTES, middleware=[Middleware(ReplaceIdentity)])
    app = JWTMiddleware(inner, settings=make_settings())
    with TestClient(app) as http:
        with pytest.raises(WebSocketDisconnect) as closed:
            with http.websocket_connect(
                "/ws-admin", headers=bearer(issuer.mint(scope="admin"))
            ) as ws:
                ws.receive_text()
    assert closed.value.code == 1008


# -- AuthError from the app after its response started -----------------------------------------


async def raises_after_start(scope: Scope, receive: Receive, send: Send) -> None:
    """A raw ASGI app that starts a 200 and then refuses (too late to answer)."""
    headers = [(b"content-type", b"text/plain"), (b"content-length", b"100")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": b"partial", "more_body": True})
    raise InsufficientScope(["admin"])


@pytest.mark.anyio
async def test_auth_error_after_the_response_started_never_sends_a_second_start(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """AuthError raised after http.response.start is logged and re-raised (the server ends the
    connection); no second response start is sent."""
    middleware = JWTMiddleware(raises_after_start, settings=make_settings())
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}

    async def send(message: Any) -> None:
        sent.append(message)

    scope = {
        "type": "http",
        "method": "GET",
        "path": "/x",
        "root_path": "",
        "headers": [(b"authorization", f"Bearer {issuer.mint()}".encode())],
    }
    try:
        with caplog.at_level(logging.ERROR, logger="jwt_middleware"):
            with pytest.raises(AuthError):
                await middleware(scope, receive, send)
    finally:
        await middleware.verifier.aclose()
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 200
    assert any("after starting its response" in r.getMessage() for r in caplog.records)


def test_auth_error_after_the_response_started_over_uvicorn(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], serve_asgi: Callable[[Any], int]
) -> None:
    """Under uvicorn the client sees the one 200 status line, then the connection closes; the
    server's log shows the app's AuthError (not a protocol error from a second start)."""
    port = serve_asgi(JWTMiddleware(raises_after_start, settings=make_settings()))
    errors: list[logging.LogRecord] = []
    handler = Collecting(errors)
    server_log = logging.getLogger("uvicorn.error")
    server_log.addHandler(handler)
    request = (
        f"GET /x HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        f"Authorization: Bearer {issuer.mint()}\r\n\r\n"
    )
    received = b""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
            sock.sendall(request.encode())
            while chunk := sock.recv(65536):  # until uvicorn closes the connection
                received += chunk
    finally:
        server_log.removeHandler(handler)
    assert received.startswith(b"HTTP/1.1 200 ")
    assert received.count(b"HTTP/1.1 ") == 1
    raised = [r.exc_info[0] for r in errors if r.exc_info]
    assert raised == [InsufficientScope]


@pytest.mark.anyio
async def test_request_auth_exposes_the_token_expiry(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """request.auth.expires_at is the token's exp (None for a token without one)."""

    async def expiry(request: Request) -> JSONResponse:
        return JSONResponse({"expires_at": request.auth.expires_at})

    routes = [Route("/expiry", expiry)]
    app = starlette_app(make_settings(require_exp=False), routes=routes)
    now = int(time.time())
    async with client(app) as http:
        with_exp = await http.get("/expiry", headers=bearer(issuer.mint(now=now, expires_in=300)))
        without = await http.get("/expiry", headers=bearer(issuer.mint(expires_in=None)))
    assert with_exp.json() == {"expires_at": now + 300}
    assert without.json() == {"expires_at": None}


# -- FastAPI ------------------------------------------------------------------------------------


def fastapi_app(settings: Settings) -> FastAPI:
    app = FastAPI()
    app.add_middleware(JWTMiddleware, settings=settings)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    async def me(token: VerifiedToken = Depends(RequireScopes())) -> dict[str, Any]:  # noqa: B008
        return {"type": type(token).__name__, "sub": token.subject, "scopes": list(token.scopes)}

    @app.get("/admin")
    def admin(token: VerifiedToken = Depends(RequireScopes("admin"))) -> dict[str, Any]:  # noqa: B008
        return {"sub": token.subject}

    @app.get("/either")
    async def either(
        token: VerifiedToken = Depends(RequireScopes("a", "b", any_of=True)),  # noqa: B008
    ) -> dict[str, Any]:
        return {"sub": token.subject}

    @app.get("/both")
    async def both(
        token: VerifiedToken = Depends(RequireScopes("a", "b")),  # noqa: B008
    ) -> dict[str, Any]:
        return {"sub": token.subject}

    @app.get("/decorated-admin")
    @requires_scopes("admin")
    async def decorated_admin(request: Request) -> dict[str, Any]:
        return {"sub": request.user.identity}

    return app


@pytest.mark.anyio
async def test_requires_scopes_decorates_a_fastapi_path_operation(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """requires_scopes on a FastAPI route: 200 with the scope, 403 without, 401 with no token."""
    async with client(fastapi_app(make_settings())) as http:
        admin = await http.get("/decorated-admin", headers=bearer(issuer.mint(scope="admin")))
        reader = await http.get("/decorated-admin", headers=bearer(issuer.mint(scope="read")))
        anonymous = await http.get("/decorated-admin")
    assert admin.status_code == 200
    assert admin.json() == {"sub": "user-1"}
    assert reader.status_code == 403
    assert 'error="insufficient_scope"' in challenge(reader)
    assert anonymous.status_code == 401


@pytest.mark.anyio
async def test_fastapi_require_scopes(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """The FastAPI RequireScopes dependency yields the VerifiedToken, refuses with 401/403 (detail
    holds the error) and honours any_of."""
    app = fastapi_app(make_settings(public_paths={"/health", "/openapi.json"}))
    plain = issuer.mint(subject="frank", scope="a")
    admin = issuer.mint(subject="root", scope="admin b")
    async with client(app) as http:
        me = await http.get("/me", headers=bearer(plain))
        me_missing = await http.get("/me")
        admin_refused = await http.get("/admin", headers=bearer(plain))
        admin_ok = await http.get("/admin", headers=bearer(admin))
        either_a = await http.get("/either", headers=bearer(plain))
        either_b = await http.get("/either", headers=bearer(admin))
        both_refused = await http.get("/both", headers=bearer(plain))
        both_ok = await http.get("/both", headers=bearer(issuer.mint(scope="b a")))
        health = await http.get("/health")
    assert me.status_code == 200
    assert me.json() == {"type": "VerifiedToken", "sub": "frank", "scopes": ["a"]}
    assert me_missing.status_code == 401
    assert challenge(me_missing) == with_dpop('Bearer realm="api"')
    assert admin_refused.status_code == 403
    assert challenge(admin_refused).startswith('Bearer realm="api", error="insufficient_scope"')
    assert challenge(admin_refused).endswith('scope="admin"')
    assert admin_refused.json()["detail"]["error"] == "insufficient_scope"
    assert admin_ok.status_code == 200
    assert admin_ok.json() == {"sub": "root"}
    assert (either_a.status_code, either_b.status_code) == (200, 200)
    assert (both_refused.status_code, both_ok.status_code) == (403, 200)
    assert health.status_code == 200


@pytest.mark.anyio
async def test_fastapi_require_scopes_in_anonymous_mode_is_401(
    make_settings: Callable[..., Settings],
) -> None:
    """RequireScopes in anonymous mode answers a request without a token with 401 unauthorized."""
    async with client(fastapi_app(make_settings(anonymous=True))) as http:
        response = await http.get("/me")
    assert response.status_code == 401
    assert challenge(response) == with_dpop('Bearer realm="api"')
    assert response.json()["detail"]["error"] == "unauthorized"


@pytest.mark.anyio
async def test_fastapi_openapi_declares_the_bearer_scheme(
    make_settings: Callable[..., Settings],
) -> None:
    """The OpenAPI document puts a bearer JWT scheme on protected paths and none on public ones."""
    app = fastapi_app(make_settings(public_paths={"/health", "/openapi.json"}))
    async with client(app) as http:
        response = await http.get("/openapi.json")
    assert response.status_code == 200
    document = response.json()
    scheme = document["components"]["securitySchemes"]["bearerAuth"]
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    assert scheme.get("bearerFormat") == "JWT"
    for path in ("/me", "/admin", "/either", "/both"):
        assert document["paths"][path]["get"]["security"] == [{"bearerAuth": []}]
    assert "security" not in document["paths"]["/health"]["get"]


def test_fastapi_dependency_is_async() -> None:
    """RequireScopes.__call__ is a coroutine function, so FastAPI does not run it in a thread."""
    assert inspect.iscoroutinefunction(RequireScopes().__call__)
    assert inspect.iscoroutinefunction(RequireScopes("admin", any_of=True).__call__)


# -- hooks and logs -----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_on_error_hook_gets_the_auth_error(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], stranger_key: SigningKey
) -> None:
    """on_error gets an AuthError per refusal (missing, audience, signature, scope), none on 200."""
    errors: list[AuthError] = []
    settings = make_settings(on_error=errors.append)
    async with client(starlette_app(settings)) as http:
        await http.get("/whoami")
        await http.get("/whoami", headers=bearer(issuer.mint(audience="api://x")))
        await http.get(
            "/whoami", headers=bearer(issuer.mint(key=stranger_key, kid=issuer.current_key.kid))
        )
        await http.get("/admin", headers=bearer(issuer.mint(scope="read")))
        await http.get("/whoami", headers=bearer(issuer.mint()))  # success: no call
    assert all(isinstance(e, AuthError) for e in errors)
    assert [e.reason for e in errors] == [
        Reason.TOKEN_MISSING,
        Reason.AUDIENCE_MISMATCH,
        Reason.SIGNATURE_INVALID,
        Reason.INSUFFICIENT_SCOPE,
    ]


@pytest.mark.anyio
async def test_a_raising_on_error_hook_does_not_break_the_answer(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], caplog: pytest.LogCaptureFixture
) -> None:
    """An on_error hook that raises leaves the 401/403 answers intact and is logged."""

    def hook(exc: AuthError) -> None:
        raise RuntimeError("metrics backend down")

    caplog.set_level(logging.DEBUG, logger="jwt_middleware")
    async with client(starlette_app(make_settings(on_error=hook))) as http:
        missing = await http.get("/whoami")
        invalid = await http.get("/whoami", headers=bearer(issuer.mint(audience="api://x")))
        forbidden = await http.get("/admin", headers=bearer(issuer.mint()))
    assert missing.status_code == 401
    assert invalid.status_code == 401
    assert invalid.json()["error"] == "invalid_token"
    assert forbidden.status_code == 403
    assert any("on_error" in r.getMessage() for r in caplog.records)


@pytest.mark.anyio
async def test_tokens_never_appear_in_logs(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    clock: FakeClock,
    stranger_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Refusals are logged with their reasons; no token or signature ever appears in the logs."""
    caplog.set_level(logging.DEBUG, logger="jwt_middleware")
    tokens = {
        "ok": issuer.mint(now=clock.now, subject="gina"),
        "expired": issuer.mint(now=clock.now - 3600, expires_in=300),
        "not_yet": issuer.mint(now=clock.now, not_before=clock.now + 3600),
        **_bad_tokens(issuer, stranger_key, clock),
        "hs256": issuer.mint(now=clock.now, key=generate_key("HS256")),
        "forbidden": issuer.mint(now=clock.now, scope="read"),
    }
    statuses = {}
    async with client(starlette_app(make_settings(clock=clock))) as http:
        for name, token in tokens.items():
            path = "/admin" if name == "forbidden" else "/whoami"
            statuses[name] = (await http.get(path, headers=bearer(token))).status_code
        cookie_app = starlette_app(make_settings(clock=clock, cookie="session"))
    async with client(cookie_app) as http:
        for token in (tokens["ok"], tokens["expired"]):
            await http.get("/whoami", headers={"cookie": f"session={token}"})
    assert statuses["ok"] == 200
    assert statuses["forbidden"] == 403
    refused = {name: status for name, status in statuses.items() if name not in ("ok", "forbidden")}
    assert set(refused.values()) == {401}
    logged = "\n".join(
        f"{r.getMessage()} {r.exc_text or ''} {r.stack_info or ''}" for r in caplog.records
    )
    assert Reason.EXPIRED in logged  # the refusals were logged, with their reason
    assert Reason.SIGNATURE_INVALID in logged
    for token in tokens.values():
        signature = token.rsplit(".", 1)[1]
        assert token not in logged
        assert signature not in logged


# -- key server trouble: 503, never 500 ----------------------------------------------------------


@pytest.mark.anyio
async def test_key_server_down_before_any_fetch_is_503_then_recovers(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """With the key server down before any fetch, requests are 503 with Retry-After until the
    cooldown ends; a request without a token stays 401."""
    token = issuer.mint(now=clock.now, expires_in=3600)
    settings = make_settings(clock=clock, jwks_cooldown=30)
    issuer.set_fault("down")
    async with client(starlette_app(settings)) as http:
        down = await http.get("/whoami", headers=bearer(token))
        still_down = await http.get("/whoami", headers=bearer(token))
        issuer.set_fault(None)
        within_cooldown = await http.get("/whoami", headers=bearer(token))
        clock.advance(31)
        back = await http.get("/whoami", headers=bearer(token))
        missing = await http.get("/whoami")
    for response in (down, still_down, within_cooldown):
        assert response.status_code == 503
        assert response.headers["content-type"] == "application/json"
        assert int(response.headers["retry-after"]) >= 1
        assert response.json()["error"]
        assert "www-authenticate" not in response.headers
    assert int(down.headers["retry-after"]) <= 30
    assert back.status_code == 200
    assert back.json()["authenticated"] is True
    assert missing.status_code == 401  # no token needs no key: never 503
    assert issuer.jwks_requests == 1  # the down attempts never reached it; one after recovery


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "params"), [("status", {"status": 500}), ("garbage", {}), ("truncated", {})]
)
async def test_broken_key_server_is_503_never_500(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    mode: str,
    params: dict[str, Any],
) -> None:
    """A key server answering 500, garbage or a truncated body gives 503 + Retry-After."""
    issuer.set_fault(mode, **params)
    async with client(starlette_app(make_settings())) as http:
        response = await http.get("/whoami", headers=bearer(issuer.mint()))
    assert response.status_code == 503
    assert int(response.headers["retry-after"]) >= 1


@pytest.mark.anyio
async def test_rotation_is_picked_up_on_an_unknown_kid_after_the_cooldown(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """A token with a new kid is 401 inside the refetch cooldown, and accepted after one refetch
    once it has passed."""
    async with client(starlette_app(make_settings(clock=clock))) as http:
        first = await http.get("/whoami", headers=bearer(issuer.mint(now=clock.now)))
        assert issuer.jwks_requests == 1
        issuer.rotate()
        rotated = issuer.mint(now=clock.now, expires_in=3600)
        # Inside the cooldown of the last fetch: refused (README "Rotation"), no new fetch.
        early = await http.get("/whoami", headers=bearer(rotated))
        assert issuer.jwks_requests == 1
        clock.advance(30)
        late = await http.get("/whoami", headers=bearer(rotated))
        assert issuer.jwks_requests == 2
        again = await http.get("/whoami", headers=bearer(rotated))
        assert issuer.jwks_requests == 2
    assert first.status_code == 200
    assert early.status_code == 401
    assert late.status_code == 200
    assert again.status_code == 200


# -- pass-through: streaming, background tasks, contextvars, other scopes --------------------------

REQUEST_ID: contextvars.ContextVar[str] = contextvars.ContextVar("request_id", default="unset")


class SetRequestId:
    """An outer pure ASGI middleware that sets a contextvar."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            REQUEST_ID.set(scope["path"] + "#42")
        await self.app(scope, receive, send)


@pytest.mark.anyio
async def test_contextvar_from_an_outer_middleware_is_visible(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A contextvar set by an outer middleware is visible in sync and async endpoints."""

    async def show(request: Request) -> PlainTextResponse:
        return PlainTextResponse(REQUEST_ID.get())

    def show_sync(request: Request) -> PlainTextResponse:
        return PlainTextResponse(REQUEST_ID.get())

    app = starlette_app(
        make_settings(),
        routes=[Route("/ctx", show), Route("/ctx-sync", show_sync)],
        outer=[Middleware(SetRequestId)],
    )
    async with client(app) as http:
        response = await http.get("/ctx", headers=bearer(issuer.mint()))
        response_sync = await http.get("/ctx-sync", headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert response.text == "/ctx#42"
    assert response_sync.text == "/ctx-sync#42"


@pytest.mark.anyio
async def test_background_task_runs_after_the_response(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A background task runs after the response body is complete, with the request's user."""
    events: list[str] = []

    def after(sub: str) -> None:
        events.append(f"background:{sub}")

    async def endpoint(request: Request) -> PlainTextResponse:
        events.append("endpoint")
        return PlainTextResponse("done", background=BackgroundTask(after, request.user.identity))

    inner = starlette_app(make_settings(), routes=[Route("/bg", endpoint)])

    async def recording(scope: Scope, receive: Receive, send: Send) -> None:
        async def spy(message: Any) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body"):
                events.append("response-complete")
            await send(message)

        await inner(scope, receive, spy)

    async with client(recording) as http:
        response = await http.get("/bg", headers=bearer(issuer.mint(subject="hank")))
    for middleware in jwt_middlewares(inner):
        await middleware.verifier.aclose()
    assert response.status_code == 200
    assert response.text == "done"
    assert events == ["endpoint", "response-complete", "background:hank"]


@pytest.mark.anyio
async def test_streaming_response_passes_every_chunk(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A streaming response passes through the middleware with every chunk in order."""

    async def chunks() -> AsyncIterator[bytes]:
        for i in range(50):
            yield f"chunk-{i};".encode()

    async def endpoint(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    app = starlette_app(make_settings(), routes=[Route("/stream", endpoint)])
    async with client(app) as http:
        response = await http.get("/stream", headers=bearer(issuer.mint()))
    assert response.status_code == 200
    assert response.text == "".join(f"chunk-{i};" for i in range(50))


# -- real uvicorn ------------------------------------------------------------------------------


@pytest.mark.parametrize("warm_up", [True, False])
def test_lifespan_reaches_the_app_and_warm_up_fetches_keys(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    serve_asgi: Callable[[ASGIApp], int],
    warm_up: bool,
) -> None:
    """Lifespan reaches the app; warm_up=True fetches the JWKS at startup; one fetch either way."""
    started: list[str] = []

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        started.append("startup")
        yield
        started.append("shutdown")

    app = Starlette(
        routes=ROUTES,
        middleware=[Middleware(JWTMiddleware, settings=make_settings(warm_up=warm_up))],
        lifespan=lifespan,
    )
    port = serve_asgi(app)
    assert started == ["startup"]
    assert issuer.jwks_requests == (1 if warm_up else 0)
    response = httpx.get(
        f"http://127.0.0.1:{port}/whoami", headers=bearer(issuer.mint()), timeout=10
    )
    assert response.status_code == 200
    assert issuer.jwks_requests == 1


def test_streaming_is_not_buffered_under_uvicorn(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    serve_asgi: Callable[[ASGIApp], int],
) -> None:
    """Under uvicorn the middleware does not buffer a stream: the client gets the first chunk before
    the second is produced."""
    first_chunk_seen = threading.Event()

    async def chunks() -> AsyncIterator[bytes]:
        yield b"first;"
        # The client sets the event only once it has *received* the first chunk: if anything
        # between the endpoint and the socket buffered the body, this would time out.
        seen = await anyio.to_thread.run_sync(first_chunk_seen.wait, 15)
        yield b"second;" if seen else b"BUFFERED;"
        for i in range(20):
            yield f"more-{i};".encode()

    async def endpoint(request: Request) -> StreamingResponse:
        return StreamingResponse(chunks(), media_type="text/plain")

    port = serve_asgi(starlette_app(make_settings(), routes=[Route("/stream", endpoint)]))
    received = b""
    with httpx.stream(
        "GET", f"http://127.0.0.1:{port}/stream", headers=bearer(issuer.mint()), timeout=30
    ) as response:
        assert response.status_code == 200
        for piece in response.iter_raw():
            received += piece
            if received.startswith(b"first;"):
                first_chunk_seen.set()
    assert received == b"first;second;" + b"".join(f"more-{i};".encode() for i in range(20))


# -- WebSocket ------------------------------------------------------------------------------------


def test_websocket_with_a_valid_token_is_accepted(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A WebSocket handshake with a valid token is accepted and the endpoint sees the user."""
    app = starlette_app(make_settings())
    with TestClient(app) as test_client:
        with test_client.websocket_connect("/ws", headers=bearer(issuer.mint(subject="ivy"))) as ws:
            assert ws.receive_json() == {"sub": "ivy", "location": "header"}
            ws.send_text("ping")
            assert ws.receive_text() == "ping"


@pytest.mark.parametrize("kind", ["missing", "invalid", "malformed", "insufficient_scope"])
def test_websocket_refusal_closes_before_accept_with_1008(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    stranger_key: SigningKey,
    kind: str,
) -> None:
    """A missing, invalid, malformed or under-scoped WebSocket handshake is closed with 1008."""
    headers = {
        "missing": {},
        "invalid": bearer(issuer.mint(key=stranger_key, kid=issuer.current_key.kid)),
        "malformed": {"authorization": "Bearer"},
        "insufficient_scope": bearer(issuer.mint(scope="read")),
    }[kind]
    path = "/ws-admin" if kind == "insufficient_scope" else "/ws"
    app = starlette_app(make_settings())
    with TestClient(app) as test_client:
        with pytest.raises(WebSocketDisconnect) as closed:
            with test_client.websocket_connect(path, headers=headers):
                pass
    assert closed.value.code == 1008


def test_websocket_when_keys_are_unavailable_closes_with_1013(
    issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """A WebSocket handshake while keys are unavailable is closed with 1013 (try again later)."""
    issuer.set_fault("down")
    app = starlette_app(make_settings(warm_up=False))
    token = issuer.mint()
    with TestClient(app) as test_client:
        with pytest.raises(WebSocketDisconnect) as closed:
            with test_client.websocket_connect("/ws", headers=bearer(token)):
                pass
    assert closed.value.code == 1013


def _handshake(port: int, path: str, extra: str = "") -> bytes:
    request = (
        f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
        f"Sec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(4096)
            if not chunk:
                break
            data += chunk
    return data.split(b"\r\n", 1)[0]


def test_websocket_handshake_refused_with_403_by_uvicorn(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    serve_asgi: Callable[[ASGIApp], int],
    stranger_key: SigningKey,
) -> None:
    """Under uvicorn a refused WebSocket handshake is an HTTP 403; a valid token gets 101."""
    port = serve_asgi(starlette_app(make_settings()))
    bad = issuer.mint(key=stranger_key, kid=issuer.current_key.kid)
    assert _handshake(port, "/ws").startswith(b"HTTP/1.1 403")
    assert _handshake(port, "/ws", f"Authorization: Bearer {bad}\r\n").startswith(b"HTTP/1.1 403")
    good = issuer.mint()
    assert _handshake(port, "/ws", f"Authorization: Bearer {good}\r\n").startswith(b"HTTP/1.1 101")


VERIFIER_ERROR = getattr(Reason, "VERIFIER_ERROR", "verifier_error")

# -- hostile input never yields 5xx ---------------------------------------------------------------

HOSTILE: list[tuple[str, bytes]] = [
    ("authorization", b"Bearer \xff\xfe\xfd"),
    ("authorization", b"\xc3\xa9\xc3\xa9 token"),
    ("authorization", b"Bearer " + b"\x00" * 10),
    ("authorization", b"Bearer abc\x00def"),
    ("authorization", b"Bearer " + b"a" * 20000),
    ("authorization", b"Bearer " + b"A" * 100 * 1024),
    ("authorization", b"x" * 100 * 1024),
    ("authorization", b"Bearer ...."),
    ("authorization", b"Bearer ..."),
    ("authorization", b"Bearer e30.e30."),
    ("authorization", b"Bearer e30.e30.e30"),
    ("authorization", b"Bearer e30.e30.e30.e30.e30"),
    ("authorization", b"Bearer eyJhbGciOiJub25lIn0.e30."),
    ("authorization", b"Bearer W10.W10.AAAA"),
    ("authorization", b"Bearer bnVsbA.bnVsbA.AAAA"),
    ("authorization", b"Bearer ===="),
    ("authorization", b"bearer\t\t"),
    ("cookie", b"access_token=\xff\xfe.\x80\x81.\x00"),
    ("cookie", b"access_token=" + b"B" * 100 * 1024),
    ("cookie", b'access_token="'),
    ("cookie", b"access_token=e30.e30.e30; access_token"),
    ("cookie", b"\x00\x01\x02=\xff; ;;;=; access_token=\xc3\xa9.\xc3\xa9.\xc3\xa9"),
]


@pytest.mark.anyio
@pytest.mark.parametrize(("name", "value"), HOSTILE, ids=[f"{i}" for i in range(len(HOSTILE))])
async def test_hostile_header_values_never_yield_5xx(
    make_settings: Callable[..., Settings], name: str, value: bytes
) -> None:
    """Hostile Authorization or Cookie values are 400/401 with one reason, never verifier_error."""
    reasons: list[str] = []
    settings = make_settings(cookie="access_token", on_error=lambda e: reasons.append(e.reason))
    async with client(starlette_app(settings), raise_app_exceptions=False) as http:
        response = await http.get("/whoami", headers=[(name.encode(), value)])
    assert response.status_code in (400, 401)
    assert response.json()["error"] in ("invalid_request", "invalid_token", "unauthorized")
    # The verifier fails closed on its own bugs (reason verifier_error): that must not be needed.
    assert len(reasons) == 1
    assert reasons[0] != VERIFIER_ERROR


def _unsigned(header: dict[str, Any], payload: bytes) -> str:
    def b64(data: bytes) -> str:
        return base64.urlsafe_b64encode(data).rstrip(b"=").decode()

    return f"{b64(json.dumps(header).encode())}.{b64(payload)}.AAAA"


@pytest.mark.anyio
@pytest.mark.parametrize(
    "payload",
    [
        pytest.param(b'{"iss": "ISS", "aud": {}, "exp": 1}', id="aud-object"),
        pytest.param(b'{"iss": "ISS", "exp": "tomorrow"}', id="exp-string"),
        pytest.param(b'{"iss": "ISS", "exp": 1e400}', id="exp-float-inf"),
        pytest.param(b'{"iss": "ISS", "exp": 4102444800, "aud": [[]]}', id="aud-nested"),
        pytest.param(b'{"iss": "ISS", "iss": "ISS"}', id="duplicate-iss"),
        pytest.param(b'{"iss": []}', id="iss-list"),
        pytest.param(b'{"iss": {"a": 1}}', id="iss-object"),
        pytest.param(b'{"iss": "ISS", "exp": 1' + b"0" * 400 + b"}", id="exp-huge-int"),
        pytest.param(
            b'{"iss": "ISS", "exp": 4102444800, "nbf": 1' + b"0" * 400 + b"}", id="nbf-huge-int"
        ),
        pytest.param(b'{"iss": "ISS", "exp": -1' + b"0" * 400 + b"}", id="exp-huge-negative"),
        pytest.param(b'{"iss": "ISS", "exp": 1' + b"0" * 5000 + b"}", id="exp-over-int-limit"),
        pytest.param(b'{"iss": "ISS", "exp": 4102444800, "sub": ["x"]}', id="sub-list"),
        pytest.param(b"[" * 5000 + b"]" * 5000, id="deep-nesting"),
        pytest.param(b'"just a string"', id="payload-string"),
        pytest.param(b"\xff\xfe", id="payload-not-utf8"),
    ],
)
async def test_crafted_unsigned_claims_never_yield_5xx(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], payload: bytes
) -> None:
    """Crafted unsigned claims are a 401 invalid_token with no key fetch, never verifier_error."""
    # Claims are checked before the signature, so anyone can reach these paths unsigned.
    token = _unsigned(
        {"alg": "RS256", "kid": issuer.current_key.kid},
        payload.replace(b'"ISS"', json.dumps(issuer.issuer).encode()),
    )
    reasons: list[str] = []
    settings = make_settings(on_error=lambda e: reasons.append(e.reason))
    async with client(starlette_app(settings), raise_app_exceptions=False) as http:
        response = await http.get("/whoami", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_token"
    assert len(reasons) == 1
    assert reasons[0] != VERIFIER_ERROR
    assert issuer.jwks_requests == 0  # refused before any key was needed
