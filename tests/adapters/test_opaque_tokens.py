"""Opaque access tokens (RFC 7662 introspection) through both middlewares under real servers
(uvicorn for JWTMiddleware, werkzeug for JWTWSGIMiddleware behind Flask), against the
LocalIssuer's introspection endpoint and its faults: the same answers as for JWTs."""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jwt_middleware import JWTMiddleware, JWTWSGIMiddleware, Settings, requires_scopes
from jwt_middleware.flask import current_token, require_scopes
from jwt_middleware.introspection import Introspection
from jwt_middleware.testing import OMIT, LocalIssuer
from tests.support.servers import bearer, uvicorn_in_thread, werkzeug_in_thread

CLIENT = ("orders-api", "adapter-secret-never-logged")
AUDIENCE = "api://orders"


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A LocalIssuer (audience api://orders) whose introspection endpoint accepts CLIENT."""
    with LocalIssuer(audience=AUDIENCE, introspection_client=CLIENT) as local:
        yield local


def _asgi_app(settings: Settings) -> Any:
    async def me(request: Request) -> JSONResponse:
        claims = request.user.claims
        return JSONResponse(
            {
                "sub": request.user.identity,
                "scopes": list(request.auth.token.scopes),
                "client_id": claims.get("client_id"),
                "location": request.auth.location,
            }
        )

    @requires_scopes("orders:read")
    async def orders(request: Request) -> JSONResponse:
        return JSONResponse({"orders": [], "sub": request.user.identity})

    app = Starlette(routes=[Route("/me", me), Route("/orders", orders)])
    app.add_middleware(JWTMiddleware, settings=settings)
    return app


def _wsgi_app(settings: Settings) -> Any:
    app = Flask(__name__)

    @app.get("/me")
    def me() -> dict[str, Any]:
        token = current_token()
        assert token is not None
        return {
            "sub": token.subject,
            "scopes": list(token.scopes),
            "client_id": token.claims.get("client_id"),
        }

    @app.get("/orders")
    @require_scopes("orders:read")
    def orders() -> dict[str, Any]:
        token = current_token()
        assert token is not None
        return {"orders": [], "sub": token.subject}

    middleware = JWTWSGIMiddleware(app.wsgi_app, settings=settings)
    app.wsgi_app = middleware  # type: ignore[method-assign]
    return middleware


Serve = Callable[..., str]


@pytest.fixture(params=["asgi", "wsgi"])
def serve(request: pytest.FixtureRequest, issuer: LocalIssuer) -> Iterator[Serve]:
    """``serve(**introspection_overrides) -> base URL``: /me and /orders (orders:read) behind the
    adapter's middleware under a real server, trusting ``issuer`` with introspection."""
    with contextlib.ExitStack() as stack:

        def build(**overrides: Any) -> str:
            options: dict[str, Any] = {
                "url": issuer.introspection_url,
                "client_id": CLIENT[0],
                "client_secret": CLIENT[1],
                "timeout": 1.0,
                "deadline": 2.0,
            }
            options.update(overrides)
            settings = Settings(
                issuer=issuer.issuer,
                audience=AUDIENCE,
                jwks_url=issuer.jwks_url,
                introspection=Introspection(**options),
                expose_error_details=True,
            )
            if request.param == "asgi":
                port = stack.enter_context(uvicorn_in_thread(_asgi_app(settings)))
            else:
                middleware = _wsgi_app(settings)
                stack.callback(middleware.close)
                port = stack.enter_context(werkzeug_in_thread(middleware))
            return f"http://127.0.0.1:{port}"

        yield build


def test_an_opaque_token_is_accepted_with_its_claims(serve: Serve, issuer: LocalIssuer) -> None:
    """An active opaque token gets in: its sub, scopes and client_id reach the app."""
    base = serve()
    token = issuer.opaque_token(subject="alice", scope="orders:read files:read", client_id="web")
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["sub"], body["client_id"]) == ("alice", "web")
    assert body["scopes"] == ["orders:read", "files:read"]


def test_scope_decorators_apply(serve: Serve, issuer: LocalIssuer) -> None:
    """requires_scopes / require_scopes: 200 with the scope, 403 insufficient_scope without."""
    base = serve()
    granted = issuer.opaque_token(subject="alice", scope="orders:read")
    lacking = issuer.opaque_token(subject="bob", scope="files:read")
    assert httpx.get(base + "/orders", headers=bearer(granted)).json()["sub"] == "alice"
    refused = httpx.get(base + "/orders", headers=bearer(lacking))
    assert refused.status_code == 403
    assert 'error="insufficient_scope"' in refused.headers["www-authenticate"]


@pytest.mark.parametrize("how", ["unknown", "revoked", "expired"])
def test_inactive_tokens_are_401_invalid_token(serve: Serve, issuer: LocalIssuer, how: str) -> None:
    """Unknown, revoked or expired opaque tokens: 401 invalid_token, reason token_inactive."""
    base = serve()
    if how == "unknown":
        token = "not-a-token-anyone-issued"
    else:
        token = issuer.opaque_token(expires_in=-10 if how == "expired" else 300)
        if how == "revoked":
            issuer.revoke_opaque(token)
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 401
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]
    assert answer.json()["reason"] == "token_inactive"


def test_an_audience_mismatch_is_401(serve: Serve, issuer: LocalIssuer) -> None:
    """An active token for another audience is refused like such a JWT: audience_mismatch."""
    base = serve()
    token = issuer.opaque_token(audience="api://billing")
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 401
    assert answer.json()["reason"] == "audience_mismatch"


def test_an_outage_is_503_with_retry_after(
    serve: Serve, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """The endpoint answering 500: 503 with the configured Retry-After, and the token and the
    secret appear in no log line; once it recovers, the same token gets in."""
    caplog.set_level(logging.INFO, logger="jwt_middleware")
    base = serve(retry_after=9)
    token = issuer.opaque_token(scope="orders:read")
    issuer.set_fault("status", paths=["introspection"], status=500)
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 503
    assert answer.headers["retry-after"] == "9"
    assert token not in caplog.text and CLIENT[1] not in caplog.text
    issuer.set_fault(None)
    assert httpx.get(base + "/me", headers=bearer(token)).status_code == 200


def test_the_endpoint_down_is_503(serve: Serve, issuer: LocalIssuer) -> None:
    """Connections refused at the endpoint: 503, never 401 (the token may be fine)."""
    base = serve()
    token = issuer.opaque_token()
    issuer.set_fault("down")
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 503
    assert "retry-after" in answer.headers


def test_jwts_true_refuses_a_revoked_jwt(serve: Serve, issuer: LocalIssuer) -> None:
    """jwts=True: a valid JWT is asked about too, and refused once the issuer revoked it; with
    the default (False) it is not asked about."""
    base = serve(jwts=True, cache_ttl=1)
    token = issuer.mint(subject="carol")
    assert httpx.get(base + "/me", headers=bearer(token)).json()["sub"] == "carol"
    assert issuer.introspection_requests == 1
    revoked = issuer.mint(subject="dave")
    issuer.revoke_opaque(revoked)
    answer = httpx.get(base + "/me", headers=bearer(revoked))
    assert answer.status_code == 401
    assert answer.json()["reason"] == "token_inactive"


def test_jwts_are_not_introspected_by_default(serve: Serve, issuer: LocalIssuer) -> None:
    """jwts=False (default): a JWT is verified by its signature alone, no request is made."""
    base = serve()
    revoked = issuer.mint(subject="dave")
    issuer.revoke_opaque(revoked)
    assert httpx.get(base + "/me", headers=bearer(revoked)).status_code == 200
    assert issuer.introspection_requests == 0


def test_cache_hit_ratio_of_a_short_run(serve: Serve, issuer: LocalIssuer) -> None:
    """200 requests over 20 opaque tokens make 20 introspection requests: a 90% hit ratio."""
    base = serve()
    tokens = [issuer.opaque_token(subject=f"user-{n}", scope="orders:read") for n in range(20)]
    with httpx.Client(base_url=base) as client:
        for n in range(200):
            answer = client.get("/orders", headers=bearer(tokens[n % 20]))
            assert answer.status_code == 200
    asked = issuer.introspection_requests
    ratio = 1 - asked / 200
    print(f"introspection cache: {asked} requests for 200 calls, hit ratio {ratio:.0%}")
    assert asked == 20


def test_an_answer_without_iss_is_the_issuers_own(serve: Serve, issuer: LocalIssuer) -> None:
    """RFC 7662 makes iss optional: an answer without it is taken as the one issuer's own."""
    base = serve()
    answer = httpx.get(base + "/me", headers=bearer(issuer.opaque_token(subject="erin", iss=OMIT)))
    assert answer.status_code == 200, answer.text
    assert answer.json()["sub"] == "erin"


def test_an_answer_naming_another_issuer_is_401(serve: Serve, issuer: LocalIssuer) -> None:
    """An answer whose iss is not the trusted issuer is refused: issuer_mismatch."""
    base = serve()
    token = issuer.opaque_token(iss="https://elsewhere.example/")
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 401
    assert answer.json()["reason"] == "issuer_mismatch"


@pytest.mark.parametrize("token", ["one.dot", "three.dots.in.it"])
def test_tokens_without_exactly_two_dots_are_introspected(
    serve: Serve, issuer: LocalIssuer, token: str
) -> None:
    """Only a three-segment token is taken for a JWT: one with one dot or three is asked
    about (here unknown: token_inactive), not refused as a malformed JWT."""
    base = serve()
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 401
    assert answer.json()["reason"] == "token_inactive"
    assert issuer.introspection_requests == 1


def test_an_oversized_opaque_token_is_refused_unasked(serve: Serve, issuer: LocalIssuer) -> None:
    """An opaque token over max_token_bytes is refused before any request to the endpoint."""
    base = serve()
    answer = httpx.get(base + "/me", headers=bearer("x" * 8193))
    assert answer.status_code == 401
    assert answer.json()["reason"] == "token_too_large"
    assert issuer.introspection_requests == 0


def test_jwts_true_asks_again_for_a_cached_jwt(serve: Serve, issuer: LocalIssuer) -> None:
    """jwts=True: a JWT in the token cache (it gets in on its second use) is still asked about
    on every request, and refused once revoked (the introspection cache is off here)."""
    base = serve(jwts=True, cache_size=0)
    token = issuer.mint(subject="carol")
    for _ in range(2):
        assert httpx.get(base + "/me", headers=bearer(token)).status_code == 200
    issuer.revoke_opaque(token)
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 401
    assert answer.json()["reason"] == "token_inactive"
    assert issuer.introspection_requests == 3


def test_a_websocket_on_an_opaque_token_closes_at_its_exp(issuer: LocalIssuer) -> None:
    """A WebSocket admitted on an opaque token is closed 1008 once the answer's exp passes, as
    one on a JWT is: the answer's exp bounds the connection."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_text("hello")
        await websocket.receive()

    settings = Settings(
        issuer=issuer.issuer,
        audience=AUDIENCE,
        jwks_url=issuer.jwks_url,
        leeway=0,
        introspection=Introspection(
            url=issuer.introspection_url, client_id=CLIENT[0], client_secret=CLIENT[1]
        ),
    )
    app = Starlette(routes=[WebSocketRoute("/ws", endpoint)])
    app.add_middleware(JWTMiddleware, settings=settings)
    limit = 10.0  # generous: the close is due within about 2 s
    with uvicorn_in_thread(app) as port:
        started = time.monotonic()
        with connect(
            f"ws://127.0.0.1:{port}/ws",
            additional_headers=bearer(issuer.opaque_token(expires_in=2)),
        ) as ws:
            assert ws.recv(timeout=limit) == "hello"
            with pytest.raises(ConnectionClosed) as closed:
                ws.recv(timeout=limit)
    assert closed.value.rcvd is not None and closed.value.rcvd.code == 1008
    assert time.monotonic() - started < limit


def test_an_exp_too_large_for_a_float_is_a_401_not_an_error(
    serve: Serve, issuer: LocalIssuer
) -> None:
    """An active answer whose exp is a 400-digit integer (no float holds it): the cache bound
    ignores it, the claim checks refuse it, 401 invalid_token, never a verifier error."""
    base = serve()
    token = issuer.opaque_token(exp=10**400)
    answer = httpx.get(base + "/me", headers=bearer(token))
    assert answer.status_code == 401, answer.text
    challenge = answer.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge and "verifier_error" not in challenge
