"""CORS and authentication, on both adapters over real servers (uvicorn, werkzeug).

A preflight carries no credentials, so it must not be how a request gets past authentication:
by default OPTIONS needs a token like every method; with ``cors_origins`` the middleware is the
CORS layer and answers preflights itself (the app never sees them); the old pass-through is an
explicit, logged opt-in (``preflight_passthrough``); and the documented layout with Starlette's
``CORSMiddleware`` outside ``JWTMiddleware`` works.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Mount
from starlette.types import Receive, Scope, Send

from jwt_middleware import ConfigurationError, JWTMiddleware, Settings
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import bearer, serve_asgi, serve_wsgi

__all__ = ["serve_asgi", "serve_wsgi"]  # fixtures, used by name

APP = "https://app.example"
EVIL = "https://evil.example"
PREFLIGHT = {"origin": APP, "access-control-request-method": "GET"}
SECRET = b"protected data"


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module (overrides conftest's): these tests never change it."""
    with LocalIssuer() as local:
        yield local


# -- method-agnostic protected endpoints, recording every call ----------------------------------


class Calls(list[str]):
    """The methods the protected endpoint was called with."""


def raw_asgi(calls: Calls) -> Callable[[Scope, Receive, Send], Any]:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        calls.append(scope["method"])
        headers = [(b"content-type", b"text/plain"), (b"content-length", b"%d" % len(SECRET))]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        await send({"type": "http.response.body", "body": SECRET})

    return app


def raw_wsgi(calls: Calls) -> Callable[..., list[bytes]]:
    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        calls.append(environ["REQUEST_METHOD"])
        start_response("200 OK", [("Content-Type", "text/plain")])
        return [SECRET]

    return app


def mounted(calls: Calls, settings: Settings) -> Starlette:
    return Starlette(
        routes=[Mount("/files", app=raw_asgi(calls))],
        middleware=[Middleware(JWTMiddleware, settings=settings)],
    )


def fastapi_route(calls: Calls, settings: Settings) -> FastAPI:
    api = FastAPI()
    api.add_middleware(JWTMiddleware, settings=settings)

    @api.api_route("/files/report", methods=["GET", "OPTIONS"])
    async def report(request: Request) -> PlainTextResponse:
        calls.append(request.method)
        return PlainTextResponse(SECRET.decode())

    return api


Served = tuple[int, Calls]


@pytest.fixture(params=["wsgi", "mount", "fastapi"])
def serve(
    request: pytest.FixtureRequest,
    serve_asgi: Callable[[Any], int],
    serve_wsgi: Callable[[Any], int],
) -> Callable[[Settings], Served]:
    """``serve(settings) -> (port, calls)``: an endpoint that answers any method, under a real
    server: a plain WSGI app (werkzeug), a Starlette Mount, a FastAPI api_route with OPTIONS
    (uvicorn); its path is /files/report."""

    def build(settings: Settings) -> Served:
        calls = Calls()
        if request.param == "wsgi":
            return serve_wsgi(JWTWSGIMiddleware(raw_wsgi(calls), settings=settings)), calls
        if request.param == "mount":
            return serve_asgi(mounted(calls, settings)), calls
        return serve_asgi(fastapi_route(calls, settings)), calls

    return build


def call(port: int, method: str, headers: dict[str, str]) -> httpx.Response:
    return httpx.request(
        method, f"http://127.0.0.1:{port}/files/report", headers=headers, timeout=10
    )


def cors_headers(response: httpx.Response) -> dict[str, str]:
    return {k: v for k, v in response.headers.items() if k.startswith("access-control-")}


# -- by default a preflight is a request like any other ---------------------------------------


def test_fake_preflight_to_a_method_agnostic_endpoint_is_401(
    serve: Callable[[Settings], Served], make_settings: Callable[..., Settings]
) -> None:
    """OPTIONS with Origin and Access-Control-Request-Method and no token gets 401; the app is
    never called (it would have served its data to anyone)."""
    port, calls = serve(make_settings())
    response = call(port, "OPTIONS", PREFLIGHT)
    assert response.status_code == 401
    assert response.headers["www-authenticate"].startswith("Bearer")
    assert SECRET not in response.content
    assert calls == []
    assert cors_headers(response) == {}  # no cors_origins: no CORS headers either


def test_options_with_a_valid_token_reaches_the_app(
    serve: Callable[[Settings], Served], make_settings: Callable[..., Settings], issuer: LocalIssuer
) -> None:
    """A token opens OPTIONS like any method."""
    port, calls = serve(make_settings())
    response = call(port, "OPTIONS", {**PREFLIGHT, **bearer(issuer.mint())})
    assert response.status_code == 200
    assert calls == ["OPTIONS"]


# -- cors_origins: the middleware is the CORS layer -----------------------------------------------


def test_preflight_from_an_allowed_origin_is_answered_without_the_app(
    serve: Callable[[Settings], Served], make_settings: Callable[..., Settings]
) -> None:
    """With cors_origins, a preflight from one of them gets 204 and the CORS headers from the
    middleware; the app never sees it."""
    port, calls = serve(make_settings(cors_origins=[APP]))
    response = call(
        port, "OPTIONS", {**PREFLIGHT, "access-control-request-headers": "authorization"}
    )
    assert response.status_code == 204
    assert response.content == b""
    assert cors_headers(response) == {
        "access-control-allow-origin": APP,
        "access-control-allow-methods": "GET, HEAD, POST, PUT, PATCH, DELETE",
        "access-control-allow-headers": "authorization, content-type, dpop, x-csrf-token",
        "access-control-max-age": "600",
    }
    assert response.headers["vary"] == "Origin"
    assert calls == []


def test_preflight_from_another_origin_is_refused_without_cors_headers(
    serve: Callable[[Settings], Served], make_settings: Callable[..., Settings]
) -> None:
    """A preflight from an origin not in cors_origins gets 403, no CORS headers, no app."""
    port, calls = serve(make_settings(cors_origins=[APP]))
    for origin in (EVIL, APP + ".evil.example", "null", APP.upper() + "/x"):
        response = call(port, "OPTIONS", {**PREFLIGHT, "origin": origin})
        assert response.status_code == 403, origin
        assert cors_headers(response) == {}, origin
        assert SECRET not in response.content
    assert calls == []


def test_refusal_to_an_allowed_origin_carries_the_cors_headers(
    serve: Callable[[Settings], Served], make_settings: Callable[..., Settings]
) -> None:
    """A 401 to an allowed origin has Access-Control-Allow-Origin, Vary: Origin and exposes
    WWW-Authenticate, so the browser client can read the challenge."""
    port, calls = serve(make_settings(cors_origins=[APP]))
    for method in ("GET", "OPTIONS"):  # OPTIONS without Access-Control-Request-Method
        response = call(port, method, {"origin": APP})
        assert response.status_code == 401
        assert cors_headers(response) == {
            "access-control-allow-origin": APP,
            "access-control-expose-headers": "WWW-Authenticate, DPoP-Nonce",
        }
        assert "Origin" in response.headers["vary"]
        assert response.headers["www-authenticate"].startswith("Bearer")
    assert calls == []


def test_app_answer_to_an_allowed_origin_carries_the_cors_headers(
    serve: Callable[[Settings], Served], make_settings: Callable[..., Settings], issuer: LocalIssuer
) -> None:
    """The app's own response to an allowed origin gets the CORS headers (and credentials when
    configured); other origins and requests without Origin get none."""
    port, calls = serve(make_settings(cors_origins=[APP], cors_credentials=True))
    token = bearer(issuer.mint())
    allowed = call(port, "GET", {"origin": APP, **token})
    assert allowed.status_code == 200
    assert allowed.content == SECRET
    assert cors_headers(allowed) == {
        "access-control-allow-origin": APP,
        "access-control-allow-credentials": "true",
        "access-control-expose-headers": "WWW-Authenticate, DPoP-Nonce",
    }
    for headers in ({"origin": EVIL, **token}, token):
        plain = call(port, "GET", headers)
        assert plain.status_code == 200
        assert cors_headers(plain) == {}
        assert "vary" not in plain.headers
    assert calls == ["GET"] * 3


def test_any_origin_without_credentials(
    serve: Callable[[Settings], Served], make_settings: Callable[..., Settings]
) -> None:
    """cors_origins=["*"] answers every origin's preflight with Access-Control-Allow-Origin *."""
    port, calls = serve(make_settings(cors_origins=["*"], cors_methods=["get", "post"]))
    response = call(port, "OPTIONS", {**PREFLIGHT, "origin": EVIL})
    assert response.status_code == 204
    assert response.headers["access-control-allow-origin"] == "*"
    assert response.headers["access-control-allow-methods"] == "GET, POST"
    assert "access-control-allow-credentials" not in response.headers
    assert calls == []


# -- preflight_passthrough: the old behaviour, only on request ---------------------------------


def test_preflight_passthrough_lets_preflights_reach_the_app_and_warns(
    serve: Callable[[Settings], Served],
    make_settings: Callable[..., Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """preflight_passthrough=True sends credential-less preflights on to the app (for a CORS
    layer inside), logs why that is dangerous at startup, and still checks plain OPTIONS."""
    with caplog.at_level(logging.WARNING, logger="jwt_middleware"):
        port, calls = serve(make_settings(preflight_passthrough=True))
    assert any("WITHOUT a token" in r.getMessage() for r in caplog.records)
    assert call(port, "OPTIONS", PREFLIGHT).status_code == 200
    assert call(port, "OPTIONS", {"origin": APP}).status_code == 401
    assert call(port, "GET", PREFLIGHT).status_code == 401
    assert calls == ["OPTIONS"]


# -- the documented layout: Starlette's CORSMiddleware outside ---------------------------------


@pytest.mark.parametrize("expose", [True, False])
def test_cors_middleware_outside_answers_preflights(
    make_settings: Callable[..., Settings], serve_asgi: Callable[[Any], int], expose: bool
) -> None:
    """CORSMiddleware outermost answers preflights before JWTMiddleware, and adds its headers to
    the 401; the challenge is readable only with expose_headers=["WWW-Authenticate"]."""
    calls = Calls()
    cors = Middleware(
        CORSMiddleware,
        allow_origins=[APP],
        allow_headers=["authorization"],
        expose_headers=["WWW-Authenticate"] if expose else [],
    )
    app = Starlette(
        routes=[Mount("/files", app=raw_asgi(calls))],
        middleware=[cors, Middleware(JWTMiddleware, settings=make_settings())],
    )
    port = serve_asgi(app)
    asked = {**PREFLIGHT, "access-control-request-headers": "authorization"}
    preflight = call(port, "OPTIONS", asked)
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == APP
    refused = call(port, "GET", {"origin": APP})
    assert refused.status_code == 401
    assert refused.headers["access-control-allow-origin"] == APP
    exposed = refused.headers.get("access-control-expose-headers", "")
    assert ("WWW-Authenticate" in exposed) is expose
    assert calls == []


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "match"),
    [
        ({"cors_origins": "https://app.example"}, "list"),
        ({"cors_origins": ["app.example"]}, "https://host"),
        ({"cors_origins": ["https://app.example/path"]}, "https://host"),
        ({"cors_origins": ["https://user@app.example"]}, "https://host"),
        ({"cors_origins": ["https://app.example?x=1"]}, "https://host"),
        ({"cors_origins": ["null"]}, "https://host"),
        ({"cors_origins": ["https://bücher.example"]}, "https://host"),
        ({"cors_origins": ["*", APP]}, "stands alone"),
        ({"cors_origins": ["*"], "cors_credentials": True}, "every site"),
        ({"cors_credentials": True}, "needs cors_origins"),
        ({"cors_origins": [APP], "preflight_passthrough": True}, "choose one"),
        ({"cors_origins": [APP], "cors_methods": ["GET POST"]}, "HTTP token"),
        ({"cors_origins": [APP], "cors_headers": ["x-a\r\nx-b"]}, "HTTP token"),
        ({"cors_max_age": -1}, "cors_max_age"),
        ({"cors_max_age": True}, "cors_max_age"),
        ({"preflight_passthrough": "false"}, "True or False"),
    ],
)
def test_bad_cors_settings_are_configuration_errors(
    make_settings: Callable[..., Settings], options: dict[str, Any], match: str
) -> None:
    """Wrong CORS options fail at construction with a message saying what is wrong."""
    with pytest.raises(ConfigurationError, match=match):
        make_settings(**options)


def test_cors_settings_are_normalised(make_settings: Callable[..., Settings]) -> None:
    """Origins lose case and a trailing slash; methods are upper-cased, header names lower-cased,
    and the default header list follows csrf_header."""
    settings = make_settings(
        cors_origins=["https://App.Example/", "http://localhost:3000"], csrf_header="X-Token"
    )
    assert settings.cors_origins == {"https://app.example", "http://localhost:3000"}
    assert settings.cors_headers == ("authorization", "content-type", "dpop", "x-token")
    custom = make_settings(cors_methods=["get", "GET", "Post"], cors_headers=["X-A"])
    assert custom.cors_methods == ("GET", "POST")
    assert custom.cors_headers == ("x-a",)
