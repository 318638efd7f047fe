"""Flask integration: the view decorators, the ``JWT`` extension, the example app under a real
gunicorn, and a Flask app served through an ASGI server (a2wsgi behind JWTMiddleware).

Views and the extension are checked in process (Flask's test client); what depends on the
server (repeated headers, worker processes, ``--preload`` forks) runs under real servers.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import a2wsgi
import httpx
import pytest
from fastapi import FastAPI
from flask import Flask, request
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Mount
from starlette.testclient import TestClient
from werkzeug.middleware.dispatcher import DispatcherMiddleware
from werkzeug.wrappers import Response

from jwt_middleware import AuthError, ConfigurationError, JWTMiddleware, Settings, VerifiedToken
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.flask import (
    JWT,
    AuthHTTPException,
    current_token,
    require_scopes,
    require_token,
)
from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key
from tests.support.challenges import with_dpop
from tests.support.clock import FakeClock
from tests.support.servers import (
    AppServer,
    bearer,
    gunicorn_argv,
    json_body,
    jwt_env,
    raw_request,
    serve_asgi,
)

__all__ = ["serve_asgi"]  # a fixture, used by name


def build_app() -> Flask:
    """A Flask app with one view per decorator use; no middleware yet."""
    app = Flask(__name__)

    @app.get("/me")
    @require_token
    def me() -> dict[str, Any]:
        token = current_token()
        assert isinstance(token, VerifiedToken)
        return {"sub": token.subject, "scopes": list(token.scopes)}

    @app.get("/admin")
    @require_scopes("admin")
    def admin() -> dict[str, Any]:
        return {"admin": True}

    @app.get("/either")
    @require_scopes("read", "write", any_of=True)
    def either() -> dict[str, Any]:
        return {"either": True}

    @app.get("/both")
    @require_scopes("read", "write")
    def both() -> dict[str, Any]:
        return {"both": True}

    @app.get("/open")
    def open_view() -> dict[str, Any]:
        return {"authenticated": current_token() is not None}

    @app.get("/health")
    def health() -> dict[str, Any]:
        return {"status": "ok"}

    return app


@pytest.fixture
def make_app(
    make_settings: Callable[..., Settings], clock: FakeClock
) -> Iterator[Callable[..., Flask]]:
    """``build_app()`` behind ``JWTWSGIMiddleware(anonymous=True)`` with the test's clock."""
    made: list[JWTWSGIMiddleware] = []

    def build(**overrides: Any) -> Flask:
        overrides.setdefault("clock", clock)
        overrides.setdefault("anonymous", True)
        app = build_app()
        middleware = JWTWSGIMiddleware(app.wsgi_app, settings=make_settings(**overrides))
        app.wsgi_app = middleware  # type: ignore[method-assign]
        made.append(middleware)
        return app

    yield build
    for middleware in made:
        middleware.close()


@pytest.fixture(scope="module")
def stranger_key() -> SigningKey:
    return generate_key("RS256")


# -- the decorators ----------------------------------------------------------------------------


def test_no_token_is_a_401_challenge(make_app: Callable[..., Flask]) -> None:
    """A decorated view without a token is a no-store JSON 401 naming the view's scopes in the
    challenge; an undecorated view is reached anonymously."""
    client = make_app(realm="orders").test_client()
    named = {"/me": "", "/admin": ', scope="admin"', "/either": ', scope="read write"'}
    for path, scope in named.items():
        response = client.get(path)
        assert response.status_code == 401, path
        expected = with_dpop('Bearer realm="orders"' + scope, "orders")
        assert response.headers["WWW-Authenticate"] == expected
        assert response.headers["Cache-Control"] == "no-store"
        assert response.headers["Content-Type"] == "application/json"
        assert response.json == {
            "error": "unauthorized",
            "error_description": "An access token is required.",
        }
    # The undecorated view is reached anonymously.
    assert client.get("/open").json == {"authenticated": False}


def test_token_without_the_scope_is_a_403(
    issuer: LocalIssuer, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """A token without the view's scope is a 403 insufficient_scope naming the scope in the
    challenge but not in the body's generic description."""
    client = make_app().test_client()
    response = client.get("/admin", headers=bearer(issuer.mint(now=clock.now, scope="read")))
    assert response.status_code == 403
    challenge = response.headers["WWW-Authenticate"]
    assert challenge.startswith('Bearer realm="api", error="insufficient_scope"')
    assert challenge.endswith(', scope="admin"')
    assert response.headers["Content-Type"] == "application/json"
    assert json_body(response)["error"] == "insufficient_scope"
    assert "admin" not in json_body(response)["error_description"]  # generic description


def test_token_with_the_scope_passes(
    issuer: LocalIssuer, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """A token with the required scope reaches the decorated view."""
    client = make_app().test_client()
    response = client.get("/admin", headers=bearer(issuer.mint(now=clock.now, scope="admin")))
    assert response.status_code == 200
    assert response.json == {"admin": True}


def test_current_token_is_the_verified_token(
    issuer: LocalIssuer, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """current_token() in a view is the verified token: its subject and scopes, or None when
    anonymous."""
    client = make_app().test_client()
    token = issuer.mint(now=clock.now, subject="alice", scope="read admin")
    response = client.get("/me", headers=bearer(token))
    assert response.status_code == 200
    assert response.json == {"sub": "alice", "scopes": ["read", "admin"]}
    assert client.get("/open", headers=bearer(token)).json == {"authenticated": True}


@pytest.mark.parametrize(
    ("scope", "either", "both"),
    [
        ("read", 200, 403),
        ("write", 200, 403),
        ("read write", 200, 200),
        ("admin", 403, 403),
        ("", 403, 403),
    ],
)
def test_all_of_and_any_of(
    issuer: LocalIssuer,
    make_app: Callable[..., Flask],
    clock: FakeClock,
    scope: str,
    either: int,
    both: int,
) -> None:
    """require_scopes(any_of=True) passes on one listed scope, by default only on all; else 403."""
    client = make_app().test_client()
    headers = bearer(issuer.mint(now=clock.now, scope=scope))
    response = client.get("/either", headers=headers)
    assert response.status_code == either
    if either == 403:
        assert response.headers["WWW-Authenticate"].endswith(', scope="read write"')
    assert client.get("/both", headers=headers).status_code == both


def test_invalid_token_is_refused_by_the_middleware_before_the_view(
    issuer: LocalIssuer,
    make_app: Callable[..., Flask],
    clock: FakeClock,
    stranger_key: SigningKey,
) -> None:
    """A badly signed token is a 401 invalid_token on every path, the undecorated one included."""
    client = make_app().test_client()
    token = issuer.mint(now=clock.now, key=stranger_key, kid=issuer.current_key.kid)
    for path in ("/me", "/open"):  # anonymous mode never downgrades an invalid token
        response = client.get(path, headers=bearer(token))
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["WWW-Authenticate"]


def test_scope_names_are_validated_at_decoration() -> None:
    """require_scopes raises ValueError at decoration for an empty scope or one containing a
    space."""
    for bad in ("", "two words"):
        with pytest.raises(ValueError):
            require_scopes(bad)


def test_decorator_refusals_reach_on_error(
    issuer: LocalIssuer, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """Refusals by the Flask decorators reach the settings' on_error hook with their reasons."""
    seen: list[AuthError] = []
    client = make_app(on_error=seen.append).test_client()
    client.get("/admin", headers=bearer(issuer.mint(now=clock.now, scope="read")))
    client.get("/me")
    assert [e.reason for e in seen] == ["insufficient_scope", "token_missing"]


# -- customising the refusal the Flask way -----------------------------------------------------


def test_errorhandler_for_auth_http_exception_replaces_the_body(
    issuer: LocalIssuer, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """A Flask errorhandler for AuthHTTPException replaces the 401/403 body; the status is kept."""
    app = make_app()

    @app.errorhandler(AuthHTTPException)
    def custom(error: AuthHTTPException) -> tuple[dict[str, Any], int]:
        return {"custom": error.error.reason, "code": error.code}, error.code or 500

    client = app.test_client()
    response = client.get("/admin", headers=bearer(issuer.mint(now=clock.now, scope="read")))
    assert response.status_code == 403
    assert response.json == {"custom": "insufficient_scope", "code": 403}
    response = client.get("/me")
    assert response.status_code == 401
    assert response.json == {"custom": "token_missing", "code": 401}


@pytest.mark.parametrize("status", [401, 403])
def test_errorhandler_for_the_status_code_replaces_the_body(
    issuer: LocalIssuer, make_app: Callable[..., Flask], clock: FakeClock, status: int
) -> None:
    """A Flask errorhandler registered for 401 or 403 replaces the decorator's refusal body."""
    app = make_app()

    @app.errorhandler(status)
    def custom(error: Exception) -> tuple[dict[str, Any], int]:
        return {"custom": status}, status

    client = app.test_client()
    headers = bearer(issuer.mint(now=clock.now, scope="read")) if status == 403 else {}
    response = client.get("/admin", headers=headers)
    assert response.status_code == status
    assert response.json == {"custom": status}


def test_default_handler_keeps_the_rfc6750_header(
    issuer: LocalIssuer, make_app: Callable[..., Flask], clock: FakeClock
) -> None:
    """With only an unrelated errorhandler, a 403 keeps its full RFC 6750 WWW-Authenticate
    header."""
    app = make_app()

    @app.errorhandler(404)  # an unrelated handler changes nothing for auth refusals
    def not_found(error: Exception) -> tuple[dict[str, Any], int]:
        return {"missing": True}, 404

    client = app.test_client()
    response = client.get("/admin", headers=bearer(issuer.mint(now=clock.now)))
    assert response.status_code == 403
    assert response.headers["WWW-Authenticate"] == (
        'Bearer realm="api", error="insufficient_scope", error_description='
        '"The access token does not grant the required scope.", scope="admin"'
    )
    assert client.get("/nowhere", headers=bearer(issuer.mint(now=clock.now))).json == {
        "missing": True
    }


# -- the JWT extension -------------------------------------------------------------------------


def installed(jwt: JWT) -> JWTWSGIMiddleware:
    """The middleware the extension put on the app (set once ``init_app`` has run)."""
    assert jwt.middleware is not None
    return jwt.middleware


def _config(issuer: LocalIssuer, prefix: str = "JWT_") -> dict[str, Any]:
    return {
        f"{prefix}ISSUER": issuer.issuer,
        f"{prefix}AUDIENCE": issuer.audience,
        f"{prefix}JWKS_URL": issuer.jwks_url,
    }


@pytest.mark.parametrize("anonymous", [True, False])
def test_extension_reads_app_config(issuer: LocalIssuer, clock: FakeClock, anonymous: bool) -> None:
    """JWT(app) builds its settings from JWT_* config keys, warms up the keys once and wraps
    wsgi_app."""
    app = build_app()
    app.config.update(
        _config(issuer),
        JWT_PUBLIC_PATHS=["/health"],
        JWT_ANONYMOUS=anonymous,
        JWT_CLOCK=clock,
    )
    jwt = JWT(app)
    assert app.extensions["jwt_middleware"] is jwt
    assert app.wsgi_app is jwt.middleware
    assert issuer.jwks_requests == 1  # warm-up at init_app
    settings = installed(jwt).settings
    assert (settings.issuer, settings.audience) == (issuer.issuer, issuer.audience)
    client = app.test_client()
    assert client.get("/health").status_code == 200
    assert client.get("/open").status_code == (200 if anonymous else 401)
    assert client.get("/me").status_code == 401
    response = client.get("/me", headers=bearer(issuer.mint(now=clock.now)))
    assert response.status_code == 200
    assert json_body(response)["sub"] == "user-1"
    installed(jwt).close()


@pytest.mark.parametrize("key", ["JWT_SOMETHING", "JWT_ISSUERS", "JWT_SECRET_KEY"])
def test_extension_refuses_unknown_config_keys(issuer: LocalIssuer, key: str) -> None:
    """An unknown JWT_* config key is a ConfigurationError; the app is left unwrapped and
    unregistered."""
    app = build_app()
    original = app.wsgi_app
    app.config.update(_config(issuer), **{key: "x"})
    with pytest.raises(ConfigurationError, match=key):
        JWT(app)
    assert app.wsgi_app == original
    assert "jwt_middleware" not in app.extensions


def test_extension_config_prefix(issuer: LocalIssuer, clock: FakeClock) -> None:
    """config_prefix makes the extension read only those keys: other JWT_* keys are ignored, unknown
    ones under the prefix are refused."""
    app = build_app()
    # Another extension's JWT_* keys are not ours once the prefix is changed.
    app.config.update(_config(issuer, "AUTH_"), AUTH_CLOCK=clock, JWT_SECRET_KEY="not ours")
    jwt = JWT(app, config_prefix="AUTH_")
    client = app.test_client()
    assert client.get("/me").status_code == 401
    assert client.get("/me", headers=bearer(issuer.mint(now=clock.now))).status_code == 200
    installed(jwt).close()

    app = build_app()
    app.config.update(_config(issuer, "AUTH_"), AUTH_SOMETHING=1)
    with pytest.raises(ConfigurationError, match="AUTH_SOMETHING"):
        JWT(app, config_prefix="AUTH_")


def test_extension_keyword_options_override_config(issuer: LocalIssuer, clock: FakeClock) -> None:
    """Keyword options given to JWT() override the same keys in app.config."""
    app = build_app()
    app.config.update(
        _config(issuer), JWT_AUDIENCE="api://wrong", JWT_ANONYMOUS=True, JWT_CLOCK=clock
    )
    jwt = JWT(app, audience=issuer.audience, anonymous=False)
    client = app.test_client()
    assert client.get("/open").status_code == 401  # anonymous=False won
    assert client.get("/me", headers=bearer(issuer.mint(now=clock.now))).status_code == 200
    installed(jwt).close()


def test_extension_init_app_pattern(issuer: LocalIssuer, clock: FakeClock) -> None:
    """JWT() made before the app installs on init_app, reading JWT_WARM_UP=False: no key fetch until
    the first request."""
    jwt = JWT(clock=clock)  # created before any app exists
    assert jwt.middleware is None
    assert issuer.jwks_requests == 0

    def create_app() -> Flask:
        app = build_app()
        app.config.update(_config(issuer), JWT_WARM_UP=False)
        jwt.init_app(app)
        return app

    app = create_app()
    assert app.extensions["jwt_middleware"] is jwt
    assert issuer.jwks_requests == 0  # JWT_WARM_UP=False read from config
    client = app.test_client()
    assert client.get("/me").status_code == 401
    assert client.get("/me", headers=bearer(issuer.mint(now=clock.now))).status_code == 200
    assert issuer.jwks_requests == 1
    assert jwt.middleware is not None
    jwt.middleware.close()


# -- the example app under a real gunicorn -----------------------------------------------------


class Gunicorn(AppServer):
    """``examples/flask_app.py`` under gunicorn (2 workers x 4 threads) in a subprocess."""

    def __init__(self, issuer: LocalIssuer, log: Path, *, jwks_url: bool, preload: bool):
        options = ["-w", "2", "--threads", "4", *(["--preload"] if preload else [])]
        super().__init__(
            "gunicorn",
            lambda port: gunicorn_argv("flask_app:app", port, chdir="examples", options=options),
            env=jwt_env(issuer, jwks_url=jwks_url),
            log=log,
        )


@pytest.fixture(scope="module")
def gunicorn_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(audience="api://flask-example") as local:
        yield local


@pytest.fixture(scope="module")
def gunicorn(
    gunicorn_issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Gunicorn]:
    log = tmp_path_factory.mktemp("gunicorn") / "gunicorn.log"
    with Gunicorn(gunicorn_issuer, log, jwks_url=True, preload=False) as server:
        server.wait_ready()
        yield server


def test_gunicorn_health_is_public(gunicorn: Gunicorn) -> None:
    """Under gunicorn, the public /health answers 200 without a token."""
    response = gunicorn.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_gunicorn_me_with_a_token(gunicorn: Gunicorn, gunicorn_issuer: LocalIssuer) -> None:
    """Under gunicorn, a valid token reaches /me with its subject and issuer."""
    response = gunicorn.get("/me", gunicorn_issuer.mint(subject="bob"))
    assert response.status_code == 200
    body = response.json()
    assert (body["sub"], body["iss"]) == ("bob", gunicorn_issuer.issuer)


def test_gunicorn_me_without_a_token(gunicorn: Gunicorn) -> None:
    """Under gunicorn, /me without a token is a 401 with a bare Bearer realm challenge."""
    response = gunicorn.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == with_dpop('Bearer realm="api"')


def test_gunicorn_me_with_an_invalid_token(
    gunicorn: Gunicorn, gunicorn_issuer: LocalIssuer, stranger_key: SigningKey
) -> None:
    """Under gunicorn, a badly signed or malformed token is a 401 invalid_token."""
    # Signed by a stranger under the trusted kid: no key fetch, just a bad signature.
    token = gunicorn_issuer.mint(key=stranger_key, kid=gunicorn_issuer.current_key.kid)
    for candidate in (token, "a.b.c"):
        response = gunicorn.get("/me", candidate)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.json()["error"] == "invalid_token"


def test_gunicorn_admin_needs_the_admin_scope(
    gunicorn: Gunicorn, gunicorn_issuer: LocalIssuer
) -> None:
    """Under gunicorn, /admin is a 403 naming the admin scope without it, and 200 with it."""
    response = gunicorn.get("/admin", gunicorn_issuer.mint(scope="read"))
    assert response.status_code == 403
    assert response.headers["www-authenticate"].endswith(', scope="admin"')
    assert response.json()["error"] == "insufficient_scope"
    response = gunicorn.get("/admin", gunicorn_issuer.mint(scope="read admin"))
    assert response.status_code == 200
    assert response.json()["admin"] is True


def test_gunicorn_two_authorization_headers_are_refused(
    gunicorn: Gunicorn, gunicorn_issuer: LocalIssuer
) -> None:
    """Under gunicorn, two Authorization headers are a 400 invalid_request; one is a 200."""
    line = b"Authorization: Bearer " + gunicorn_issuer.mint().encode()
    status, _, body = raw_request(gunicorn.port, "/me", [line, line])
    assert status == 400
    assert json.loads(body)["error"] == "invalid_request"
    status, _, _ = raw_request(gunicorn.port, "/me", [line])
    assert status == 200


def test_gunicorn_key_rotation_works_on_the_first_request_to_each_worker(
    gunicorn: Gunicorn, gunicorn_issuer: LocalIssuer
) -> None:
    """Under gunicorn, a token signed with a rotated-in key passes at once, with at most one JWKS
    fetch per worker."""
    # Last in this module: it changes the issuer's signing key.
    before = gunicorn_issuer.jwks_requests
    gunicorn_issuer.rotate()
    token = gunicorn_issuer.mint()
    statuses = [gunicorn.get("/me", token).status_code for _ in range(16)]
    assert statuses == [200] * 16, gunicorn.output()
    assert 1 <= gunicorn_issuer.jwks_requests - before <= 2  # at most one fetch per worker


def test_gunicorn_preload_discovery_and_rotation(tmp_path_factory: pytest.TempPathFactory) -> None:
    """``--preload``: the app (and its key warm-up) is built in the master, then forked."""
    with LocalIssuer(audience="api://flask-preload") as local:
        log = tmp_path_factory.mktemp("gunicorn-preload") / "gunicorn.log"
        with Gunicorn(local, log, jwks_url=False, preload=True) as server:
            server.wait_ready()
            # Only the master warmed up: discovery + JWKS once, inherited by both workers.
            assert (local.discovery_requests, local.jwks_requests) == (1, 1)
            token = local.mint(subject="carol", scope="admin")
            for _ in range(8):
                response = server.get("/admin", token)
                assert response.status_code == 200, server.output()
            assert server.get("/me").status_code == 401
            assert (local.discovery_requests, local.jwks_requests) == (1, 1)
            # A new key makes each worker fetch, with its own HTTP client (not the master's).
            local.rotate()
            token = local.mint()
            statuses = [server.get("/me", token).status_code for _ in range(16)]
            assert statuses == [200] * 16, server.output()
            assert 2 <= local.jwks_requests <= 3
            assert local.discovery_requests == 1  # the jwks_uri found by the master is kept


# -- Flask served by an ASGI server: a2wsgi behind JWTMiddleware -------------------------------


def test_flask_behind_a2wsgi_and_the_asgi_middleware(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    serve_asgi: Callable[[Any], int],
) -> None:
    """Flask behind a2wsgi under JWTMiddleware sees the identity in asgi.scope, and the Flask
    decorators and current_token() work there."""
    flask_app = Flask(__name__)

    @flask_app.get("/me")
    def me() -> dict[str, Any]:
        # a2wsgi hands the ASGI scope to the WSGI app; JWTMiddleware put the identity in it.
        scope = request.environ["asgi.scope"]
        return {
            "sub": scope["user"].identity,
            "scopes": list(scope["auth"].scopes),
            "location": scope["auth"].location,
        }

    @flask_app.get("/admin")
    @require_scopes("admin")
    def admin() -> dict[str, Any]:
        # The Flask helpers find JWTMiddleware's verdict through a2wsgi's asgi.scope.
        token = current_token()
        return {"sub": token.subject if token is not None else None}

    @flask_app.get("/health")
    def health() -> dict[str, Any]:
        return {"token": current_token() is not None}

    settings = make_settings(public_paths={"/health"}, realm="shop")
    asgi_app = JWTMiddleware(as_asgi(flask_app), settings=settings)
    port = serve_asgi(asgi_app)
    assert issuer.jwks_requests == 1  # warm-up at lifespan startup, through a2wsgi
    url = f"http://127.0.0.1:{port}"
    response = httpx.get(f"{url}/me", headers=bearer(issuer.mint(scope="read")), timeout=10)
    assert response.status_code == 200
    assert response.json() == {
        "sub": "user-1",
        "scopes": ["authenticated", "read"],
        "location": "header",
    }
    response = httpx.get(f"{url}/me", timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == with_dpop('Bearer realm="shop"', "shop")
    admin_token = issuer.mint(subject="root", scope="admin")
    response = httpx.get(f"{url}/admin", headers=bearer(admin_token), timeout=10)
    assert response.status_code == 200
    assert response.json() == {"sub": "root"}
    response = httpx.get(f"{url}/admin", headers=bearer(issuer.mint(scope="read")), timeout=10)
    assert response.status_code == 403
    assert response.headers["www-authenticate"].startswith(
        'Bearer realm="shop", error="insufficient_scope"'
    )
    response = httpx.get(f"{url}/health", timeout=10)
    assert response.status_code == 200
    assert response.json() == {"token": False}


# -- the same refusals in every layout ---------------------------------------------------------

FLASK_LAYOUTS = [
    "wsgi_app",
    "wrapping_the_app",
    "dispatcher_parent",
    "a2wsgi_mount",
    "a2wsgi_mount_in_fastapi",
]


def as_asgi(wsgi_app: Any) -> Any:
    """``wsgi_app`` behind a2wsgi (whose WSGI/ASGI types match neither Flask's nor Starlette's)."""
    return a2wsgi.WSGIMiddleware(wsgi_app)


def flask_layout(layout: str, settings: Settings) -> tuple[Any, str]:
    """``(app, prefix)``: build_app() behind the middleware as ``layout`` puts it; WSGI apps
    are served through a2wsgi so one ASGI test client drives every layout."""
    app = build_app()
    if layout == "wsgi_app":
        app.wsgi_app = JWTWSGIMiddleware(app.wsgi_app, settings=settings)  # type: ignore[method-assign]
        return as_asgi(app), ""
    if layout == "wrapping_the_app":
        return as_asgi(JWTWSGIMiddleware(app, settings=settings)), ""
    if layout == "dispatcher_parent":
        parent = DispatcherMiddleware(Response("root", status=404), {"/api": app})
        return as_asgi(JWTWSGIMiddleware(parent, settings=settings)), "/api"
    mounted = Mount("/api", as_asgi(app))
    if layout == "a2wsgi_mount":
        parent_app: Any = Starlette(
            routes=[mounted], middleware=[Middleware(JWTMiddleware, settings=settings)]
        )
        return parent_app, "/api"
    assert layout == "a2wsgi_mount_in_fastapi"
    parent_app = FastAPI()
    parent_app.router.routes.append(mounted)
    return JWTMiddleware(parent_app, settings=settings), "/api"


@pytest.mark.parametrize("layout", FLASK_LAYOUTS)
def test_flask_refusals_are_the_same_in_every_layout(
    layout: str, issuer: LocalIssuer, make_settings: Callable[..., Settings]
) -> None:
    """require_token/require_scopes answer 401, 403 with the scope challenge, 200, never 5xx,
    however the middleware is put in front of the Flask app."""
    seen: list[AuthError] = []
    app, prefix = flask_layout(layout, make_settings(anonymous=True, on_error=seen.append))
    with TestClient(app, raise_server_exceptions=False) as http:
        anonymous = http.get(f"{prefix}/me")
        refused = http.get(f"{prefix}/admin", headers=bearer(issuer.mint(scope="read")))
        allowed = http.get(f"{prefix}/admin", headers=bearer(issuer.mint(scope="admin")))
    assert anonymous.status_code == 401
    assert anonymous.headers["www-authenticate"] == with_dpop('Bearer realm="api"')
    assert anonymous.json() == {
        "error": "unauthorized",
        "error_description": "An access token is required.",
    }
    assert refused.status_code == 403
    assert refused.headers["www-authenticate"].endswith(', scope="admin"')
    assert refused.headers["cache-control"] == "no-store"
    assert refused.json()["error"] == "insufficient_scope"
    assert allowed.status_code == 200
    assert allowed.json() == {"admin": True}
    assert [error.reason for error in seen] == ["token_missing", "insufficient_scope"]


def test_importing_the_flask_integration_does_not_import_starlette() -> None:
    """``import jwt_middleware.flask`` leaves Starlette unimported (a Flask app need not have
    it, and should not pay for it)."""
    probe = (
        "import sys, jwt_middleware.flask; "
        "print(sorted(m for m in sys.modules if m.startswith('starlette')))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=30, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
