"""Starlette protected by jwt_middleware.

JWT_ISSUER=... JWT_AUDIENCE=... uvicorn --app-dir examples starlette_app:app
"""

from __future__ import annotations

from settings_from_env import settings_from_env
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware, requires_scopes


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@requires_scopes()
async def me(request: Request) -> JSONResponse:
    claims = request.user.claims
    return JSONResponse(
        {"sub": request.user.identity, "iss": claims.get("iss"), "claims": dict(claims)}
    )


@requires_scopes("admin")
async def admin(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "admin": True})


app = Starlette(
    routes=[Route("/health", health), Route("/me", me), Route("/admin", admin)],
    middleware=[Middleware(JWTMiddleware, settings=settings_from_env())],
)
