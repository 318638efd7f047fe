"""Step-up authentication (RFC 9470) on every per-route check: the Starlette decorator and
``check_scopes``, FastAPI's ``RequireScopes`` and Flask's ``require_scopes``. A login too weak
(``acr``) or too old (``auth_time``) is a 401 ``insufficient_user_authentication`` whose
challenge names ``acr_values`` and ``max_age``; a good one gets in."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any

import pytest
from fastapi import Depends, FastAPI
from flask import Flask
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from jwt_middleware import (
    ConfigurationError,
    JWTMiddleware,
    JWTWSGIMiddleware,
    Settings,
    VerifiedToken,
    check_scopes,
    requires_scopes,
)
from jwt_middleware import flask as jwt_flask
from jwt_middleware.fastapi import RequireScopes
from jwt_middleware.testing import LocalIssuer

STRONG: dict[str, Any] = {"acr_values": ["urn:mace:incommon:iap:silver", "mfa"], "max_age": 300}
CHALLENGE_TAIL = 'acr_values="urn:mace:incommon:iap:silver mfa", max_age="300"'


def _starlette(settings: Settings) -> Any:
    @requires_scopes("read", **STRONG)
    async def decorated(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.user.identity})

    async def checked(request: Request) -> JSONResponse:
        check_scopes(request, ["read"], **STRONG)
        return JSONResponse({"sub": request.user.identity})

    app = Starlette(routes=[Route("/decorated", decorated), Route("/checked", checked)])
    app.add_middleware(JWTMiddleware, settings=settings)
    return app


def _fastapi(settings: Settings) -> Any:
    app = FastAPI()
    app.add_middleware(JWTMiddleware, settings=settings)

    @app.get("/strong")
    async def strong(
        token: Annotated[VerifiedToken, Depends(RequireScopes("read", **STRONG))],
    ) -> dict[str, Any]:
        return {"sub": token.subject}

    return app


def _flask(settings: Settings) -> Any:
    app = Flask(__name__)

    @app.get("/strong")
    @jwt_flask.require_scopes("read", **STRONG)
    def strong() -> dict[str, Any]:
        token = jwt_flask.current_token()
        return {"sub": token.subject if token else None}

    app.wsgi_app = JWTWSGIMiddleware(app.wsgi_app, settings=settings)  # type: ignore[method-assign]
    return app


#: (framework, path): every per-route helper with step-up.
ROUTES = [("starlette", "/decorated"), ("starlette", "/checked"), ("fastapi", "/strong"),
          ("flask", "/strong")]  # fmt: skip


@pytest.fixture
def call(
    make_settings: Callable[..., Settings],
) -> Iterator[Callable[[str, str, str], tuple[int, dict[str, str], Any]]]:
    """``call(framework, path, token) -> (status, lower-cased headers, JSON body)``."""
    settings = make_settings(expose_error_details=True)
    clients: dict[str, Any] = {}

    def run(framework: str, path: str, token: str) -> tuple[int, dict[str, str], Any]:
        headers = {"authorization": f"Bearer {token}"}
        if framework == "flask":
            client = clients.setdefault("flask", _flask(settings).test_client())
            answer = client.get(path, headers=headers)
            return answer.status_code, {k.lower(): v for k, v in answer.headers}, answer.json
        if framework not in clients:
            build = _starlette if framework == "starlette" else _fastapi
            clients[framework] = TestClient(build(settings)).__enter__()
        response = clients[framework].get(path, headers=headers)
        return response.status_code, dict(response.headers), response.json()

    yield run
    for name, client in clients.items():
        if name != "flask":
            client.__exit__(None, None, None)


def _reason(body: Any) -> str:
    body = body.get("detail", body)  # FastAPI wraps the error object in "detail"
    return str(body["reason"])


@pytest.mark.parametrize(("framework", "path"), ROUTES)
@pytest.mark.parametrize(
    ("claims", "accepted"),
    [
        ({"acr": "mfa", "auth_time": -10}, True),
        ({"acr": "urn:mace:incommon:iap:silver", "auth_time": -299}, True),
        ({"acr": "pwd", "auth_time": -10}, False),  # too weak
        ({"auth_time": -10}, False),  # no acr
        ({"acr": "mfa", "auth_time": -301}, False),  # too old
        ({"acr": "mfa"}, False),  # no auth_time
        ({"acr": "mfa", "auth_time": "yesterday"}, False),
        ({"acr": ["mfa"], "auth_time": -10}, False),
        ({"acr": "mfa", "auth_time": 30}, True),  # ahead, within the 60 s leeway
        ({"acr": "mfa", "auth_time": 10**9}, False),  # "logged in" in 2058: no proof at all
    ],
)
def test_a_login_too_weak_or_too_old_is_told_how_to_step_up(
    call: Callable[[str, str, str], tuple[int, dict[str, str], Any]],
    issuer: LocalIssuer,
    framework: str,
    path: str,
    claims: dict[str, Any],
    accepted: bool,
) -> None:
    """acr must be one of acr_values and auth_time within max_age; otherwise 401
    insufficient_user_authentication naming both in the challenge (RFC 9470 §3)."""
    now = time.time()
    if isinstance(claims.get("auth_time"), int) and claims["auth_time"] < 10**9:
        claims = {**claims, "auth_time": now + claims["auth_time"]}
    elif claims.get("auth_time") == 10**9:
        claims = {**claims, "auth_time": now + 10**9}
    status, headers, body = call(framework, path, issuer.mint(claims, scope="read"))
    if accepted:
        assert status == 200, body
        return
    assert status == 401, body
    assert _reason(body) == "insufficient_user_authentication"
    challenge = headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="api", error="insufficient_user_authentication"')
    assert CHALLENGE_TAIL in challenge


@pytest.mark.parametrize(("framework", "path"), ROUTES)
def test_the_scopes_are_still_checked_after_a_strong_login(
    call: Callable[[str, str, str], tuple[int, dict[str, str], Any]],
    issuer: LocalIssuer,
    framework: str,
    path: str,
) -> None:
    """A strong, recent login without the scope is still a 403 insufficient_scope."""
    token = issuer.mint({"acr": "mfa", "auth_time": time.time()}, scope="write")
    status, _, body = call(framework, path, token)
    assert (status, _reason(body)) == (403, "insufficient_scope")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"acr_values": "mfa"}, "a list"),
        ({"acr_values": ["two words"]}, "without spaces"),
        ({"acr_values": [""]}, "without spaces"),
        ({"max_age": -1}, "max_age"),
        ({"max_age": float("inf")}, "max_age"),
        ({"max_age": True}, "max_age"),
        ({"acr_values": ["naïve"]}, "visible ASCII"),
        ({"acr_values": ['a"b']}, "visible ASCII"),
    ],
)
def test_bad_step_up_rules_fail_where_they_are_written(
    options: dict[str, Any], message: str
) -> None:
    """Each helper refuses a bad requirement when the route is declared, not per request."""
    with pytest.raises(ConfigurationError, match=message):
        requires_scopes(**options)
    with pytest.raises(ConfigurationError, match=message):
        RequireScopes(**options)
    with pytest.raises(ConfigurationError, match=message):
        jwt_flask.require_scopes(**options)


def test_step_up_for_a_user_authenticated_another_way_is_a_401_not_a_500(
    make_settings: Callable[..., Settings],
) -> None:
    """An anonymous-mode middleware with a session backend inside: a non-JWT user has no claims
    to prove a login with, so a step-up route answers 401 (the plain route lets it in)."""
    from starlette.authentication import AuthCredentials, AuthenticationBackend, SimpleUser
    from starlette.middleware.authentication import AuthenticationMiddleware

    class Session(AuthenticationBackend):
        async def authenticate(self, conn: Any) -> tuple[AuthCredentials, SimpleUser]:
            return AuthCredentials(["read"]), SimpleUser("bob")

    @requires_scopes("read")
    async def plain(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @requires_scopes("read", acr_values=["mfa"])
    async def strong(request: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    app = Starlette(routes=[Route("/plain", plain), Route("/strong", strong)])
    app.add_middleware(AuthenticationMiddleware, backend=Session())
    app.add_middleware(JWTMiddleware, settings=make_settings(anonymous=True))
    with TestClient(app) as client:
        assert client.get("/plain").status_code == 200
        refused = client.get("/strong")
    assert refused.status_code == 401
    assert refused.json()["error"] == "unauthorized"


def test_the_refusal_can_be_raised_by_hand() -> None:
    """InsufficientAuthentication takes its acr_values and max_age as keywords, as an app's own
    check would raise it, and renders them in the challenge."""
    from jwt_middleware import InsufficientAuthentication
    from jwt_middleware._errors import Challenge, render

    error = InsufficientAuthentication(acr_values=["mfa"], max_age=60)
    value = dict(render(error, Challenge()).headers)["www-authenticate"]
    assert value.endswith('acr_values="mfa", max_age="60"')
