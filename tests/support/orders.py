"""An ``/orders`` app (GET and POST: the token's ``sub`` and where it was found) behind either
middleware under a real server in a thread, for the sender-constraint tests of both adapters."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._wsgi import ENVIRON_LOCATION, JWTWSGIMiddleware, get_token
from tests.support.servers import uvicorn_in_thread, werkzeug_in_thread

__all__ = ["serve_orders"]


async def _orders(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "location": request.auth.location})


def _wsgi_orders(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    token = get_token(environ)
    body = {"sub": token.subject if token else None, "location": environ[ENVIRON_LOCATION]}
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps(body).encode()]


def serve_orders(stack: contextlib.ExitStack, adapter: str, settings: Settings) -> int:
    """Serve /orders behind ``adapter``'s middleware ("asgi": uvicorn, "wsgi": werkzeug) until
    ``stack`` closes; the port."""
    if adapter == "asgi":
        app = Starlette(routes=[Route("/orders", _orders, methods=["GET", "POST"])])
        app.add_middleware(JWTMiddleware, settings=settings)
        return stack.enter_context(uvicorn_in_thread(app))
    middleware = JWTWSGIMiddleware(_wsgi_orders, settings=settings)
    stack.callback(middleware.close)
    return stack.enter_context(werkzeug_in_thread(middleware))
