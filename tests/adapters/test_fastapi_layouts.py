"""Every documented way of putting JWTMiddleware in front of a FastAPI app gives the same
refusals: 401 without a token, 403 ``insufficient_scope`` with the scope in the challenge, 200
with it, never a 5xx, and each refusal reported once.

The layouts: ``app.add_middleware``; JWTMiddleware wrapping the FastAPI app object; a parent
Starlette app with JWTMiddleware mounting the FastAPI app; JWTMiddleware added to a FastAPI app
mounted under a parent. They run under a real uvicorn and in process (Starlette's TestClient
with ``raise_server_exceptions=False``, so a 500 is seen as a 500).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import httpx
import pytest
from fastapi import Depends, FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount
from starlette.testclient import TestClient

from jwt_middleware import AuthError, JWTMiddleware, Settings, VerifiedToken, requires_scopes
from jwt_middleware.fastapi import AuthHTTPException, RequireScopes
from jwt_middleware.testing import LocalIssuer
from tests.support.challenges import with_dpop
from tests.support.servers import bearer, serve_asgi

__all__ = ["serve_asgi"]  # a fixture, used by name

LAYOUTS = [
    "add_middleware",
    "wrapping_the_app",
    "parent_with_middleware",
    "mounted_with_middleware",
]

FORBIDDEN = {
    "error": "insufficient_scope",
    "error_description": "The access token does not grant the required scope.",
}
UNAUTHORIZED = {"error": "unauthorized", "error_description": "An access token is required."}


def fastapi_app() -> FastAPI:
    app = FastAPI()

    @app.get("/me")
    async def me(token: Annotated[VerifiedToken, Depends(RequireScopes())]) -> dict[str, Any]:
        return {"sub": token.subject}

    @app.get("/admin")
    async def admin(
        token: Annotated[VerifiedToken, Depends(RequireScopes("admin"))],
    ) -> dict[str, Any]:
        return {"sub": token.subject, "admin": True}

    @app.get("/decorated")
    @requires_scopes("admin")
    async def decorated(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.user.identity})

    return app


def build(layout: str, settings: Settings) -> tuple[Any, str]:
    """``(asgi_app, prefix)`` for one layout: the FastAPI routes are at ``prefix + path``."""
    if layout == "add_middleware":
        app = fastapi_app()
        app.add_middleware(JWTMiddleware, settings=settings)
        return app, ""
    if layout == "wrapping_the_app":
        return JWTMiddleware(fastapi_app(), settings=settings), ""
    if layout == "parent_with_middleware":
        parent = Starlette(
            routes=[Mount("/api", fastapi_app())],
            middleware=[Middleware(JWTMiddleware, settings=settings)],
        )
        return parent, "/api"
    assert layout == "mounted_with_middleware"
    child = fastapi_app()
    child.add_middleware(JWTMiddleware, settings=settings)
    return Starlette(routes=[Mount("/api", child)]), "/api"


@pytest.fixture
def in_process() -> Iterator[Callable[[Any], TestClient]]:
    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(TestClient(app, raise_server_exceptions=False))


@pytest.mark.parametrize("layout", LAYOUTS)
def test_refusals_are_rfc6750_answers_under_uvicorn(
    layout: str,
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    serve_asgi: Callable[[Any], int],
) -> None:
    """Under a real server every layout answers 401, 403 with the scope challenge, then 200."""
    app, prefix = build(layout, make_settings())
    base = f"http://127.0.0.1:{serve_asgi(app)}{prefix}"
    reader = bearer(issuer.mint(scope="read"))
    admin = bearer(issuer.mint(subject="root", scope="read admin"))
    with httpx.Client(base_url=base, timeout=10) as http:
        missing = http.get("/admin")
        refused = http.get("/admin", headers=reader)
        allowed = http.get("/admin", headers=admin)
        decorated_refused = http.get("/decorated", headers=reader)
        decorated_allowed = http.get("/decorated", headers=admin)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == with_dpop('Bearer realm="api"')
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"].startswith(
        'Bearer realm="api", error="insufficient_scope"'
    )
    assert refused.headers["www-authenticate"].endswith(', scope="admin"')
    assert refused.headers["cache-control"] == "no-store"
    assert refused.json() == {"detail": FORBIDDEN}
    assert allowed.status_code == 200
    assert allowed.json() == {"sub": "root", "admin": True}
    assert decorated_refused.status_code == 403
    assert 'scope="admin"' in decorated_refused.headers["www-authenticate"]
    assert decorated_refused.json() == FORBIDDEN
    assert decorated_allowed.status_code == 200


@pytest.mark.parametrize("layout", LAYOUTS)
def test_dependency_refusals_are_the_same_in_every_layout(
    layout: str,
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    in_process: Callable[[Any], TestClient],
) -> None:
    """RequireScopes answers 401/403 with one status, challenge and body whatever the layout."""
    app, prefix = build(layout, make_settings(anonymous=True))
    http = in_process(app)
    anonymous = http.get(f"{prefix}/me")
    refused = http.get(f"{prefix}/admin", headers=bearer(issuer.mint(scope="read")))
    either = http.get(f"{prefix}/me", headers=bearer(issuer.mint(subject="ann")))
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == with_dpop('Bearer realm="api"')
    assert anonymous.headers["cache-control"] == "no-store"
    assert anonymous.json() == {"detail": UNAUTHORIZED}
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", '
        f'error_description="{FORBIDDEN["error_description"]}", scope="admin"'
    )
    assert refused.headers["content-type"] == "application/json"
    assert refused.json() == {"detail": FORBIDDEN}
    assert either.status_code == 200
    assert either.json() == {"sub": "ann"}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_a_dependency_refusal_is_reported_once(
    layout: str,
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    in_process: Callable[[Any], TestClient],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """One refused request: one on_error call and one "refused" log record, in every layout."""
    seen: list[AuthError] = []
    app, prefix = build(layout, make_settings(on_error=seen.append))
    http = in_process(app)
    with caplog.at_level("INFO", logger="jwt_middleware"):
        response = http.get(f"{prefix}/admin", headers=bearer(issuer.mint(scope="read")))
    assert response.status_code == 403
    assert [error.reason for error in seen] == ["insufficient_scope"]
    refused = [r for r in caplog.records if getattr(r, "jwt_event", None) == "refused"]
    assert len(refused) == 1
    assert f"{prefix}/admin" in refused[0].getMessage()


def test_exposed_details_reach_the_detail_body(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    in_process: Callable[[Any], TestClient],
) -> None:
    """With expose_error_details the reason code is in detail, as in the middleware's bodies."""
    app, _ = build("wrapping_the_app", make_settings(expose_error_details=True))
    response = in_process(app).get("/admin", headers=bearer(issuer.mint(scope="read")))
    assert response.status_code == 403
    assert response.json()["detail"]["reason"] == "insufficient_scope"
    assert "(insufficient_scope)" in response.headers["www-authenticate"]


def test_an_exception_handler_replaces_the_refusal_body(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    in_process: Callable[[Any], TestClient],
) -> None:
    """AuthHTTPException is FastAPI's to handle: a registered handler shapes the answer."""
    inner = fastapi_app()

    @inner.exception_handler(AuthHTTPException)
    async def custom(request: Request, exc: AuthHTTPException) -> JSONResponse:
        return JSONResponse(
            {"refused": exc.error.reason}, status_code=exc.status_code, headers=exc.headers
        )

    app = JWTMiddleware(inner, settings=make_settings())
    response = in_process(app).get("/admin", headers=bearer(issuer.mint(scope="read")))
    assert response.status_code == 403
    assert response.json() == {"refused": "insufficient_scope"}
    assert 'scope="admin"' in response.headers["www-authenticate"]
