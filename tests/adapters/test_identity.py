"""What a verified request carries: Starlette's ``@requires("authenticated")`` contract and the
token as sent, on both adapters (ASGI through a real uvicorn, WSGI through a real werkzeug)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._wsgi import ENVIRON_RAW_TOKEN, JWTWSGIMiddleware
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import bearer, serve_asgi, serve_wsgi

__all__ = ["serve_asgi", "serve_wsgi"]  # fixtures, used by name


def _starlette(settings: Settings) -> Starlette:
    @requires("authenticated")
    async def me(request: Request) -> JSONResponse:
        return JSONResponse(
            {
                "scopes": list(request.auth.scopes),
                "token_scopes": list(request.auth.token.scopes),
                "raw": request.auth.raw_token,
            }
        )

    return Starlette(
        routes=[Route("/me", me)], middleware=[Middleware(JWTMiddleware, settings=settings)]
    )


def test_starlette_requires_authenticated_admits_a_verified_token(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], serve_asgi: Any
) -> None:
    """@requires("authenticated") answers 200 to a valid token (the middleware grants the
    pseudo-scope as Starlette's backends do) and still refuses a request without one."""
    port = serve_asgi(_starlette(make_settings()))
    token = issuer.mint(scope="read")
    for _ in range(2):  # the second request is a token-cache hit
        answer = httpx.get(f"http://127.0.0.1:{port}/me", headers=bearer(token))
        assert answer.status_code == 200
        assert answer.json()["scopes"] == ["authenticated", "read"]
        assert answer.json()["token_scopes"] == ["read"]
    assert httpx.get(f"http://127.0.0.1:{port}/me").status_code == 401


@pytest.mark.parametrize("spacing", ["Bearer ", "Bearer   "])
def test_request_auth_raw_token_is_the_token_as_sent_asgi(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    serve_asgi: Any,
    spacing: str,
) -> None:
    """request.auth.raw_token is the token the client sent, on the hot path (plain header,
    first and cached use) and on the full extraction path (extra spaces)."""
    port = serve_asgi(_starlette(make_settings()))
    token = issuer.mint()
    for _ in range(2):
        answer = httpx.get(
            f"http://127.0.0.1:{port}/me", headers={"authorization": spacing + token}
        )
        assert answer.status_code == 200
        assert answer.json()["raw"] == token


def test_wsgi_environ_carries_the_raw_token(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], serve_wsgi: Any
) -> None:
    """The WSGI middleware puts the token as sent in environ["jwt_middleware.raw_token"]
    (None on a public path), on the hot path and on the full path."""

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"raw": environ[ENVIRON_RAW_TOKEN]}).encode()]

    middleware = JWTWSGIMiddleware(app, settings=make_settings(public_paths={"/health"}))
    try:
        port = serve_wsgi(middleware)
        token = issuer.mint()
        for header in ("Bearer " + token, "Bearer " + token, "Bearer   " + token):
            answer = httpx.get(f"http://127.0.0.1:{port}/me", headers={"authorization": header})
            assert answer.status_code == 200 and answer.json()["raw"] == token
        assert httpx.get(f"http://127.0.0.1:{port}/health").json()["raw"] is None
    finally:
        middleware.close()
