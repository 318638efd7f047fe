"""The pytest plugin users get: its fixtures work in a fresh pytest run (pytester)."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]

USER_TESTS = """
import httpx
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware
from jwt_middleware.testing import generate_key


async def me(request):
    return JSONResponse({"sub": request.user.identity})


def app(settings):
    return Starlette(routes=[Route("/me", me)],
                     middleware=[__import__("starlette.middleware").middleware.Middleware(
                         JWTMiddleware, settings=settings)])


async def call(settings, token):
    transport = httpx.ASGITransport(app=app(settings))
    async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
        return await client.get("/me", headers={"authorization": f"Bearer {token}"})


def test_valid(jwt_issuer, jwt_settings):
    import asyncio
    response = asyncio.run(call(jwt_settings, jwt_issuer.mint(subject="alice")))
    assert response.status_code == 200 and response.json() == {"sub": "alice"}
    assert jwt_issuer.jwks_requests == 1


def test_expired_and_foreign(jwt_issuer, jwt_settings):
    import asyncio
    assert asyncio.run(call(jwt_settings, jwt_issuer.mint(expires_in=-600))).status_code == 401
    foreign = jwt_issuer.mint(key=generate_key("RS256"))
    assert asyncio.run(call(jwt_settings, foreign)).status_code == 401


def test_dpop_bound(jwt_issuer, jwt_settings, jwt_dpop_key):
    import asyncio
    from jwt_middleware.testing import dpop_headers

    async def dpop_call(headers):
        transport = httpx.ASGITransport(app=app(jwt_settings))
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.get("/me", headers=headers)

    token = jwt_issuer.mint(subject="carol", dpop_key=jwt_dpop_key)
    ok = asyncio.run(dpop_call(dpop_headers(token, jwt_dpop_key, "GET", "http://t/me")))
    assert ok.status_code == 200 and ok.json() == {"sub": "carol"}
    as_bearer = asyncio.run(call(jwt_settings, token))
    assert as_bearer.status_code == 401


def test_certificate_bound(jwt_issuer, jwt_client_certificate):
    import base64, json
    token = jwt_issuer.mint(certificate=jwt_client_certificate)
    body = token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))
    assert claims["cnf"] == {"x5t#S256": jwt_client_certificate.thumbprint}
    assert jwt_client_certificate.header().startswith(":")


def test_fails_on_purpose(jwt_issuer):
    assert jwt_issuer.mint() == "not a token"
"""


def test_plugin_fixtures_work_in_a_users_test_suite(pytester: pytest.Pytester) -> None:
    """jwt_issuer, jwt_settings, jwt_dpop_key and jwt_client_certificate work in a fresh pytest
    run: 4 pass, the planted failure fails."""
    pytester.makepyfile(test_user=USER_TESTS)
    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider")
    result.assert_outcomes(passed=4, failed=1)


def test_plugin_is_registered_as_an_entry_point() -> None:
    """The pytest11 entry point jwt_middleware loads jwt_middleware.pytest_plugin."""
    from importlib.metadata import entry_points

    plugins = {e.name: e.value for e in entry_points(group="pytest11")}
    assert plugins.get("jwt_middleware") == "jwt_middleware.pytest_plugin"
