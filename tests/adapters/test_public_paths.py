"""public_paths match the path the app routes on, behind a prefix too: uvicorn's --root-path,
a Starlette Mount around an app with its own JWTMiddleware, a WSGI app under a SCRIPT_NAME.

Starlette routes on ``path`` relative to ``root_path`` (``starlette._utils.get_route_path``);
WSGI's PATH_INFO is already relative to SCRIPT_NAME. A path that does not start with root_path
is matched as it stands, never made public by stripping a prefix it does not have.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from starlette._utils import get_route_path
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Mount, Route
from werkzeug.exceptions import NotFound
from werkzeug.middleware.dispatcher import DispatcherMiddleware

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._asgi import route_path
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import bearer, serve_asgi, serve_wsgi, uvicorn_in_thread

__all__ = ["serve_asgi", "serve_wsgi"]  # fixtures, used by name

PUBLIC = {"/health", "/static/*"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module (overrides conftest's): these tests never change it."""
    with LocalIssuer() as local:
        yield local


async def whoami(request: Request) -> JSONResponse:
    user = request.user
    return JSONResponse({"sub": user.identity if user.is_authenticated else None})


ROUTES = [Route("/health", whoami), Route("/static/{rest:path}", whoami), Route("/me", whoami)]


def protected_app(settings: Settings) -> Starlette:
    return Starlette(routes=ROUTES, middleware=[Middleware(JWTMiddleware, settings=settings)])


def uvicorn_with_root_path(app: Any, root_path: str) -> contextlib.AbstractContextManager[int]:
    """A real uvicorn started with ``root_path`` (``--root-path``) in a thread; the port."""
    return uvicorn_in_thread(app, root_path=root_path)


def get(port: int, path: str, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.get(f"http://127.0.0.1:{port}{path}", headers=headers, timeout=10)


def assert_public(response: httpx.Response) -> None:
    assert response.status_code == 200, response.text
    assert response.json() == {"sub": None}


def test_public_paths_behind_uvicorn_root_path(
    make_settings: Callable[..., Settings], issuer: LocalIssuer
) -> None:
    """Under ``uvicorn --root-path /api`` (scope path /api/health, root_path /api) the public
    paths still match, and everything else still needs a token."""
    app = protected_app(make_settings(public_paths=PUBLIC))
    with uvicorn_with_root_path(app, "/api") as port:
        assert_public(get(port, "/health"))
        assert_public(get(port, "/static/app.css"))
        assert get(port, "/me").status_code == 401
        me = get(port, "/me", bearer(issuer.mint(subject="ann")))
        assert me.json() == {"sub": "ann"}


def test_public_paths_of_a_mounted_sub_app(
    make_settings: Callable[..., Settings], serve_asgi: Callable[[Any], int]
) -> None:
    """A sub-app with its own JWTMiddleware, Mounted at /v1, matches its public paths relative
    to the mount; the outer app's paths are not its business."""
    inner = protected_app(make_settings(public_paths=PUBLIC))
    outer = Starlette(routes=[Mount("/v1", app=inner)])
    port = serve_asgi(outer)
    assert_public(get(port, "/v1/health"))
    assert_public(get(port, "/v1/static/x.js"))
    assert get(port, "/v1/me").status_code == 401
    assert get(port, "/health").status_code == 404  # the outer app has no such route


def test_public_paths_of_a_wsgi_app_under_a_script_name(
    make_settings: Callable[..., Settings], serve_wsgi: Callable[[Any], int]
) -> None:
    """A WSGI app mounted under /v1 (SCRIPT_NAME) matches its public paths on PATH_INFO."""

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        token = get_token(environ)
        start_response("200 OK", [("Content-Type", "application/json")])
        return [json.dumps({"sub": token.subject if token else None}).encode()]

    middleware = JWTWSGIMiddleware(app, settings=make_settings(public_paths=PUBLIC))
    port = serve_wsgi(DispatcherMiddleware(NotFound(), {"/v1": middleware}))
    try:
        assert_public(get(port, "/v1/health"))
        assert_public(get(port, "/v1/static/x.js"))
        assert get(port, "/v1/me").status_code == 401
    finally:
        middleware.close()


async def whoami_app(scope: Any, receive: Any, send: Any) -> None:
    body = b'{"sub": null}'
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})


ROUTE_CASES = [
    ("/api/health", "/api"),
    ("/api", "/api"),
    ("/api/", "/api"),
    ("/apihealth", "/api"),  # not under /api at a "/" boundary
    ("/xyz/health", "/api"),  # not under /api at all: stripping 4 characters would give /health
    ("/health", "/api"),  # a server that left root_path out of path
    ("/health", ""),
    ("/v1/static/a", "/v1"),
    ("/a/b/health", "/a/b"),
]


@pytest.mark.parametrize(("path", "root_path"), ROUTE_CASES)
def test_route_path_is_the_path_starlette_routes_on(path: str, root_path: str) -> None:
    """route_path() agrees with Starlette's own get_route_path on every case."""
    scope = {"type": "http", "path": path, "root_path": root_path}
    assert route_path(scope) == get_route_path(scope)


@pytest.mark.anyio
@pytest.mark.parametrize("path", ["/xyz/health", "/apihealth", "/api"])
async def test_a_path_outside_root_path_is_not_made_public(
    make_settings: Callable[..., Settings], path: str
) -> None:
    """With root_path /api, a path that does not start with it (at a "/" boundary) is matched
    as it is: not public, so refused."""
    middleware = JWTMiddleware(whoami_app, settings=make_settings(public_paths=PUBLIC))
    transport = httpx.ASGITransport(app=middleware, root_path="/api")
    try:
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as http:
            assert (await http.get(path)).status_code == 401
            assert (await http.get("/api/health")).status_code == 200
    finally:
        await middleware.verifier.aclose()


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
