"""One DPoP-protected API, configured by environment, for tests that run it as several server
processes: ``app`` (Starlette behind JWTMiddleware, for uvicorn) and ``wsgi_app`` (behind
JWTWSGIMiddleware, for gunicorn).

Environment: ``JWT_ISSUER``, ``JWT_AUDIENCE``, ``JWT_JWKS_URL`` (the trusted issuer),
``PUBLIC_URL`` (the base URL proofs must name: every process expects the same ``htu`` whatever
port it listens on) and ``REDIS_URL``: set, accepted proofs are recorded in that Redis, shared
by every process using it; unset, each process keeps its own in-memory record.

``GET /health`` is public; ``GET``/``POST /orders`` answer the token's ``sub`` and the
process's PID (so a test can tell which process let a request in).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.replay import AsyncRedisReplayStore, RedisReplayStore

__all__ = ["app", "wsgi_app"]


def _settings(replay: Any) -> Settings:
    return Settings(
        issuer=os.environ["JWT_ISSUER"],
        audience=os.environ["JWT_AUDIENCE"],
        jwks_url=os.environ["JWT_JWKS_URL"],
        public_url=os.environ["PUBLIC_URL"],
        dpop_replay=replay,
        public_paths={"/health"},
        expose_error_details=True,
    )


_REDIS_URL = os.environ.get("REDIS_URL")


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok", "pid": os.getpid()})


async def _orders(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "pid": os.getpid()})


app = Starlette(
    routes=[Route("/health", _health), Route("/orders", _orders, methods=["GET", "POST"])],
    middleware=[
        Middleware(
            JWTMiddleware,
            settings=_settings(AsyncRedisReplayStore.from_url(_REDIS_URL) if _REDIS_URL else None),
        )
    ],
)


def _wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    path = environ.get("PATH_INFO", "")
    token = get_token(environ)
    if path == "/health":
        body: dict[str, Any] = {"status": "ok", "pid": os.getpid()}
    elif path == "/orders" and token is not None:
        body = {"sub": token.subject, "pid": os.getpid()}
    else:
        start_response("404 Not Found", [("content-type", "application/json")])
        return [b"{}"]
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps(body).encode()]


# Built at import, like ``app``: gunicorn imports the module in each worker, after the fork, so
# each worker has its own Redis connections.
wsgi_app = JWTWSGIMiddleware(
    _wsgi, settings=_settings(RedisReplayStore.from_url(_REDIS_URL) if _REDIS_URL else None)
)
