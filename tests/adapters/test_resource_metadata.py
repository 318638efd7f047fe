"""RFC 9728 protected-resource metadata and the challenges that point clients at it: the
document served by both adapters, ``resource_metadata`` and ``scope`` in every challenge, the
resource identifier as an accepted audience (RFC 8707), and scope hierarchies in every
per-route check."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.authentication import requires
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from jwt_middleware import (
    ConfigurationError,
    Issuer,
    JWTMiddleware,
    Settings,
    VerifiedToken,
    requires_scopes,
)
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.fastapi import RequireScopes
from jwt_middleware.flask import require_scopes
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import Answer, InProcess, bearer

RESOURCE = "https://api.example.com/mcp"
METADATA_URL = "https://api.example.com/.well-known/oauth-protected-resource/mcp"
PATH_FORM = "/.well-known/oauth-protected-resource/mcp"
ROOT_FORM = "/.well-known/oauth-protected-resource"
Build = Callable[..., InProcess]


def _me(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "scopes": list(request.auth.scopes)})


def _wsgi_me(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    token = get_token(environ)
    body = json.dumps({"sub": token.subject if token else None}).encode()
    start_response("200 OK", [("content-type", "application/json")])
    return [body]


@pytest.fixture
def serve(issuer: LocalIssuer, in_process: Build) -> Callable[..., InProcess]:
    """``serve(**settings)``: a /me app behind the adapter under test, trusting ``issuer``."""

    def build(**options: Any) -> InProcess:
        options.setdefault("issuer", issuer.issuer)
        options.setdefault("jwks_url", issuer.jwks_url)
        return in_process(Settings(**options), routes=[Route("/me", _me)], wsgi_app=_wsgi_me)

    return build


def challenge_params(answer: Answer) -> dict[str, str]:
    """The auth-params of a ``Bearer`` challenge (our own, so simply quoted, no commas inside)."""
    scheme, _, rest = answer.headers["www-authenticate"].partition(" ")
    assert scheme == "Bearer"
    params = {}
    for part in rest.split(", "):
        name, _, value = part.partition("=")
        params[name] = value.strip('"')
    return params


@pytest.mark.parametrize("path", [PATH_FORM, ROOT_FORM])
def test_the_metadata_document_is_served_without_a_token(
    serve: Callable[..., InProcess], issuer: LocalIssuer, path: str
) -> None:
    """Both well-known forms answer 200 with exactly the RFC 9728 fields, readable anywhere."""
    app = serve(resource=RESOURCE, scopes_supported=["files:read", "admin"], resource_name="Files")
    answer = app.request("GET", path, {"origin": "https://elsewhere.example"})
    assert answer.status == 200
    assert answer.headers["content-type"] == "application/json"
    assert answer.headers["access-control-allow-origin"] == "*"
    assert answer.headers["cache-control"].startswith("public")
    assert answer.json() == {
        "resource": RESOURCE,
        "authorization_servers": [issuer.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["files:read", "admin"],
        "resource_name": "Files",
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "PS256", "RS256"],
    }


def test_the_metadata_document_ignores_the_host_header(serve: Callable[..., InProcess]) -> None:
    """The document names the configured resource, whatever Host the request claims."""
    app = serve(resource=RESOURCE)
    answer = app.request("GET", PATH_FORM, {"host": "attacker.example"})
    assert answer.json()["resource"] == RESOURCE
    assert b"attacker" not in answer.body


def test_the_metadata_answers_head_options_and_refuses_other_methods(
    serve: Callable[..., InProcess],
) -> None:
    """HEAD: headers only; OPTIONS: a 204 CORS preflight answer; POST: 405 with Allow."""
    app = serve(resource=RESOURCE)
    head = app.request("HEAD", PATH_FORM, {})
    assert head.status == 200 and head.body == b""
    preflight = app.request(
        "OPTIONS",
        PATH_FORM,
        {"origin": "https://client.example", "access-control-request-method": "GET"},
    )
    assert preflight.status == 204
    assert preflight.headers["access-control-allow-origin"] == "*"
    assert "GET" in preflight.headers["access-control-allow-methods"]
    post = app.request("POST", PATH_FORM, {})
    assert post.status == 405
    assert post.headers["allow"] == "GET, HEAD, OPTIONS"


def test_without_a_resource_nothing_is_served_at_the_well_known_path(
    serve: Callable[..., InProcess], issuer: LocalIssuer
) -> None:
    """Without ``resource`` the well-known path is an ordinary protected path: 401."""
    app = serve(audience=issuer.audience)
    answer = app.request("GET", ROOT_FORM, {})
    assert answer.status == 401
    assert "resource_metadata" not in answer.headers["www-authenticate"]


def test_the_metadata_carries_its_own_cors_header_once_with_cors_origins(
    serve: Callable[..., InProcess],
) -> None:
    """With the middleware as CORS layer too, the document still has one Allow-Origin: ``*``."""
    app = serve(resource=RESOURCE, cors_origins=["https://app.example"])
    answer = app.request("GET", PATH_FORM, {"origin": "https://app.example"})
    assert answer.status == 200
    assert answer.headers["access-control-allow-origin"] == "*"


def test_several_issuers_are_all_listed_unless_authorization_servers_is_set(
    issuer: LocalIssuer, in_process: Build
) -> None:
    """``authorization_servers`` defaults to the trusted issuers, in order; set, it is used."""
    with LocalIssuer(audience=issuer.audience) as other:
        trust = [
            Issuer(issuer=issuer.issuer, audience="api://a", jwks_url=issuer.jwks_url),
            Issuer(issuer=other.issuer, audience="api://b", jwks_url=other.jwks_url),
        ]
        listed = in_process(
            Settings(trust=trust, resource=RESOURCE), routes=[], wsgi_app=_wsgi_me
        ).request("GET", PATH_FORM, {})
        assert listed.json()["authorization_servers"] == [issuer.issuer, other.issuer]
        chosen = in_process(
            Settings(trust=trust, resource=RESOURCE, authorization_servers=["https://as.example"]),
            routes=[],
            wsgi_app=_wsgi_me,
        ).request("GET", PATH_FORM, {})
        assert chosen.json()["authorization_servers"] == ["https://as.example"]


def test_a_cookie_only_api_lists_no_bearer_method(serve: Callable[..., InProcess]) -> None:
    """A cookie is no RFC 6750 method: cookie-only means ``bearer_methods_supported: []``."""
    app = serve(resource=RESOURCE, header=False, cookie="access_token")
    assert app.request("GET", ROOT_FORM, {}).json()["bearer_methods_supported"] == []


def test_every_refusal_challenge_points_at_the_metadata(
    serve: Callable[..., InProcess], issuer: LocalIssuer
) -> None:
    """Missing, invalid and malformed-request refusals all carry ``resource_metadata``."""
    app = serve(resource=RESOURCE)
    missing = app.request("GET", "/me", {})
    invalid = app.request("GET", "/me", bearer(issuer.mint(audience="https://other.example")))
    twice = app.request(
        "GET", "/me", [("authorization", "Bearer a"), ("authorization", "Bearer b")]
    )
    for answer, status in ((missing, 401), (invalid, 401), (twice, 400)):
        assert answer.status == status
        assert challenge_params(answer)["resource_metadata"] == METADATA_URL


def test_a_401_names_the_challenge_scopes(serve: Callable[..., InProcess]) -> None:
    """``challenge_scopes`` become the ``scope`` of the middleware's own 401 challenge."""
    app = serve(resource=RESOURCE, challenge_scopes=["files:read", "profile"])
    assert challenge_params(app.request("GET", "/me", {}))["scope"] == "files:read profile"
    bare = serve(resource=RESOURCE)
    assert "scope" not in challenge_params(bare.request("GET", "/me", {}))


def test_the_resource_identifier_is_the_audience_when_none_is_set(
    serve: Callable[..., InProcess], issuer: LocalIssuer
) -> None:
    """With only ``resource``, a token for it gets in and one for another resource is 401."""
    app = serve(resource=RESOURCE)
    assert app.request("GET", "/me", bearer(issuer.mint(audience=RESOURCE))).status == 200
    other = app.request("GET", "/me", bearer(issuer.mint(audience="https://api.example.com/x")))
    assert other.status == 401
    assert challenge_params(other)["error"] == "invalid_token"


def test_the_resource_identifier_is_accepted_beside_the_audience(
    serve: Callable[..., InProcess], issuer: LocalIssuer, in_process: Build
) -> None:
    """A configured audience still works, and so does the resource (RFC 8707), for each issuer."""
    app = serve(resource=RESOURCE, audience="api://files")
    assert app.request("GET", "/me", bearer(issuer.mint(audience="api://files"))).status == 200
    assert app.request("GET", "/me", bearer(issuer.mint(audience=[RESOURCE]))).status == 200
    trusted = in_process(
        Settings(
            trust=[Issuer(issuer=issuer.issuer, audience="api://t", jwks_url=issuer.jwks_url)],
            resource=RESOURCE,
        ),
        routes=[Route("/me", _me)],
        wsgi_app=_wsgi_me,
    )
    assert trusted.request("GET", "/me", bearer(issuer.mint(audience=RESOURCE))).status == 200


def test_an_audience_waiver_is_not_narrowed_by_the_resource(
    serve: Callable[..., InProcess], issuer: LocalIssuer
) -> None:
    """``allow_any_audience`` still accepts any ``aud`` when a resource is set."""
    app = serve(resource=RESOURCE, allow_any_audience=True)
    assert app.request("GET", "/me", bearer(issuer.mint(audience="api://whatever"))).status == 200


# -- per-route checks: 403 names every scope, 401 names the route's, hierarchies apply --------


HIERARCHY = {"admin": ["files:write"], "files:write": ["files:read"]}


@requires_scopes("files:read", "reports")
async def _starlette_both(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@requires_scopes("files:read")
async def _starlette_read(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


@requires("files:read")
async def _starlette_requires(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def _starlette(settings: Settings) -> TestClient:
    routes = [
        Route("/both", _starlette_both),
        Route("/read", _starlette_read),
        Route("/requires", _starlette_requires),
    ]
    return TestClient(
        Starlette(routes=routes, middleware=[Middleware(JWTMiddleware, settings=settings)])
    )


BOTH = RequireScopes("files:read", "reports")
READ = RequireScopes("files:read")


def _fastapi(settings: Settings) -> TestClient:
    app = FastAPI()
    app.add_middleware(JWTMiddleware, settings=settings)

    @app.get("/both")
    def both(token: Annotated[VerifiedToken, Depends(BOTH)]) -> dict[str, bool]:
        return {"ok": True}

    @app.get("/read")
    def read(token: Annotated[VerifiedToken, Depends(READ)]) -> dict[str, bool]:
        return {"ok": True}

    return TestClient(app)


class _FlaskClient:
    """Flask behind JWTWSGIMiddleware, with the TestClient's ``get`` shape."""

    def __init__(self, settings: Settings) -> None:
        app = Flask(__name__)

        @app.get("/both")
        @require_scopes("files:read", "reports")
        def both() -> dict[str, bool]:
            return {"ok": True}

        @app.get("/read")
        @require_scopes("files:read")
        def read() -> dict[str, bool]:
            return {"ok": True}

        self.mw = JWTWSGIMiddleware(app.wsgi_app, settings=settings)
        app.wsgi_app = self.mw  # type: ignore[method-assign]
        self.client = app.test_client()

    def get(self, path: str, headers: dict[str, str] | None = None) -> Any:
        return self.client.get(path, headers=headers or {})


FRAMEWORKS: dict[str, Callable[[Settings], Any]] = {
    "starlette": _starlette,
    "fastapi": _fastapi,
    "flask": _FlaskClient,
}


@pytest.fixture(params=sorted(FRAMEWORKS))
def framework(request: pytest.FixtureRequest, issuer: LocalIssuer) -> Iterator[Callable[..., Any]]:
    """``framework(**settings)``: the /both and /read routes of one framework's per-route check."""
    made: list[Any] = []

    def build(**options: Any) -> Any:
        options.setdefault("issuer", issuer.issuer)
        options.setdefault("jwks_url", issuer.jwks_url)
        options.setdefault("resource", RESOURCE)
        client = FRAMEWORKS[request.param](Settings(**options))
        made.append(client)
        return client

    yield build
    for client in made:
        if isinstance(client, _FlaskClient):
            client.mw.close()
        else:
            client.close()


def _params(response: Any) -> dict[str, str]:
    headers = {k.lower(): v for k, v in response.headers.items()}
    return challenge_params(Answer(response.status_code, headers, b""))


def test_a_403_names_every_scope_the_route_needs_in_one_challenge(
    framework: Callable[..., Any], issuer: LocalIssuer
) -> None:
    """A token with one of two needed scopes gets one 403 naming both, and the metadata URL."""
    client = framework()
    response = client.get(
        "/both", headers=bearer(issuer.mint(audience=RESOURCE, scope="files:read"))
    )
    assert response.status_code == 403
    params = _params(response)
    assert params["error"] == "insufficient_scope"
    assert params["scope"] == "files:read reports"
    assert params["resource_metadata"] == METADATA_URL


def test_a_per_route_401_names_the_routes_scopes(framework: Callable[..., Any]) -> None:
    """In anonymous mode a route's own check answers 401 naming its scopes, not the default."""
    client = framework(anonymous=True, challenge_scopes=["profile"])
    response = client.get("/both")
    assert response.status_code == 401
    assert _params(response)["scope"] == "files:read reports"
    assert _params(response)["resource_metadata"] == METADATA_URL


@pytest.mark.parametrize("granted", ["admin", "files:write"])
def test_a_broader_scope_satisfies_a_route_needing_a_narrower_one(
    framework: Callable[..., Any], issuer: LocalIssuer, granted: str
) -> None:
    """With ``implied_scopes``, ``admin`` and ``files:write`` both open a ``files:read`` route."""
    client = framework(implied_scopes=HIERARCHY)
    token = issuer.mint(audience=RESOURCE, scope=granted)
    assert client.get("/read", headers=bearer(token)).status_code == 200
    plain = framework()
    assert plain.get("/read", headers=bearer(token)).status_code == 403


def test_implied_scopes_reach_starlettes_requires_and_request_auth(
    issuer: LocalIssuer,
) -> None:
    """``request.auth.scopes`` holds the token's scopes and what they imply: ``requires`` works."""
    settings = Settings(
        issuer=issuer.issuer, jwks_url=issuer.jwks_url, resource=RESOURCE, implied_scopes=HIERARCHY
    )
    routes = [Route("/me", _me), Route("/requires", _starlette_requires)]
    app = Starlette(routes=routes, middleware=[Middleware(JWTMiddleware, settings=settings)])
    with TestClient(app) as client:
        headers = bearer(issuer.mint(audience=RESOURCE, scope="admin"))
        assert client.get("/requires", headers=headers).status_code == 200
        scopes = client.get("/me", headers=headers).json()["scopes"]
    assert scopes == ["authenticated", "admin", "files:write", "files:read"]


# -- the settings ------------------------------------------------------------------------------


BASE: dict[str, Any] = {"issuer": "https://id.example", "jwks_url": "https://id.example/jwks"}


@pytest.mark.parametrize(
    "resource",
    [
        "http://api.example.com/mcp",
        "https://api.example.com/mcp?tenant=1",
        "https://api.example.com/mcp#part",
        "https://user:pw@api.example.com/",
        "api.example.com/mcp",
        "https:///mcp",
        42,
    ],
    ids=["plain-http", "query", "fragment", "credentials", "relative", "no-host", "not-a-string"],
)
def test_a_resource_that_is_not_a_canonical_https_url_is_refused(resource: Any) -> None:
    """The resource identifier must be an https URL with a host and no query, fragment or login."""
    with pytest.raises(ConfigurationError, match="resource"):
        Settings(**BASE, resource=resource)
    assert "pw" not in str(_refusal(resource))


def _refusal(resource: Any) -> ConfigurationError:
    try:
        Settings(**BASE, resource=resource)
    except ConfigurationError as exc:
        return exc
    raise AssertionError("accepted")


def test_a_loopback_resource_may_be_plain_http() -> None:
    """Like key URLs, plain http is allowed on a loopback host (local development, tests)."""
    settings = Settings(**BASE, resource="http://127.0.0.1:8000/")
    assert settings.challenge.resource_metadata == (
        "http://127.0.0.1:8000/.well-known/oauth-protected-resource"
    )


@pytest.mark.parametrize(
    "option",
    [
        {"scopes_supported": ["read"]},
        {"resource_name": "Files"},
        {"authorization_servers": ["https://as.example"]},
        {"resource_documentation": "https://docs.example"},
    ],
    ids=lambda option: next(iter(option)),
)
def test_metadata_fields_without_a_resource_are_refused(option: dict[str, Any]) -> None:
    """A metadata field is never silently dropped: without ``resource`` it is a startup error."""
    with pytest.raises(ConfigurationError, match="set resource="):
        Settings(**BASE, audience="api://x", **option)


@pytest.mark.parametrize(
    "option",
    [
        {"challenge_scopes": ["files read"]},
        {"scopes_supported": "read"},
        {"implied_scopes": {"admin": "read"}},
        {"implied_scopes": {"admin": ["read write"]}},
        {"implied_scopes": ["admin"]},
        {"authorization_servers": ["http://as.example"]},
        {"resource_documentation": "ftp://docs.example"},
    ],
    ids=[
        "space-in-scope",
        "scopes-string",
        "implied-string",
        "implied-space",
        "implied-list",
        "as-plain-http",
        "docs-ftp",
    ],
)
def test_malformed_resource_options_are_refused(option: dict[str, Any]) -> None:
    """Scope names, the hierarchy and the metadata URLs are checked at startup."""
    with pytest.raises(ConfigurationError):
        Settings(**BASE, resource=RESOURCE, **option)


def test_the_hierarchy_is_followed_transitively_and_tolerates_cycles() -> None:
    """Each scope implies its whole sub-tree; a cycle makes its members imply each other."""
    settings = Settings(
        **BASE,
        audience="api://x",
        implied_scopes={"a": ["b"], "b": ["c"], "c": ["a", "d"]},
    )
    assert settings.implied == {"a": ("b", "c", "d"), "b": ("c", "a", "d"), "c": ("a", "d", "b")}


def test_a_percent_encoded_resource_path_serves_its_metadata(
    serve: Callable[..., InProcess],
) -> None:
    """The challenge's metadata URL (escaped) answers 200, as servers decode the path."""
    app = serve(resource="https://api.example.com/my%20mcp")
    url = challenge_params(app.request("GET", "/me", {}))["resource_metadata"]
    assert url == "https://api.example.com/.well-known/oauth-protected-resource/my%20mcp"
    answer = app.request("GET", "/.well-known/oauth-protected-resource/my%20mcp", {})
    assert answer.status == 200
    assert answer.json()["resource"] == "https://api.example.com/my%20mcp"
