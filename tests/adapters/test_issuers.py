"""Several trusted issuers, each with its own keys, audience and rules (ASGI and WSGI)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.test import Client

from jwt_middleware import (
    ConfigurationError,
    Issuer,
    JWTMiddleware,
    JWTWSGIMiddleware,
    Settings,
    get_token,
)
from jwt_middleware.testing import LocalIssuer


@pytest.fixture
def tenants() -> Iterator[tuple[LocalIssuer, LocalIssuer]]:
    with (
        LocalIssuer(audience="api://a") as a,
        LocalIssuer(algorithm="ES256", audience="api://b") as b,
    ):
        yield a, b


@pytest.fixture(params=["trust", "list"])
def form(request: pytest.FixtureRequest) -> str:
    """``Settings(trust=[Issuer, ...])``, or the older list of Settings."""
    param: str = request.param
    return param


def configured(form: str, a: LocalIssuer, b: LocalIssuer, **common: Any) -> Any:
    if form == "list":
        return entries(a, b, **common)
    return Settings(
        trust=[
            Issuer(issuer=a.issuer, audience=a.audience, jwks_url=a.jwks_url),
            Issuer(issuer=b.issuer, audience=b.audience, jwks_url=b.jwks_url, algorithms=["ES256"]),
        ],
        **common,
    )


def entries(a: LocalIssuer, b: LocalIssuer, **common: Any) -> list[Settings]:
    return [
        Settings(issuer=a.issuer, audience=a.audience, jwks_url=a.jwks_url, **common),
        Settings(
            issuer=b.issuer,
            audience=b.audience,
            jwks_url=b.jwks_url,
            algorithms=["ES256"],
            **common,
        ),
    ]


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "iss": request.user.claims["iss"]})


def wsgi_whoami(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    token = get_token(environ)
    assert token is not None
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [f"{token.subject}@{token.claims['iss']}".encode()]


class Apps:
    """The same calls against the ASGI and the WSGI middleware."""

    def __init__(self, kind: str, settings: Settings | list[Settings]) -> None:
        self.kind = kind
        if kind == "asgi":
            app = Starlette(
                routes=[Route("/me", whoami)],
                middleware=[Middleware(JWTMiddleware, settings=settings)],
            )
            self.transport = httpx.ASGITransport(app=app)
        else:
            self.wsgi = Client(JWTWSGIMiddleware(wsgi_whoami, settings=settings))

    def get(self, token: str) -> tuple[int, str]:
        headers = {"authorization": f"Bearer {token}"}
        if self.kind == "asgi":

            async def go() -> tuple[int, str]:
                async with httpx.AsyncClient(transport=self.transport, base_url="http://t") as c:
                    r = await c.get("/me", headers=headers)
                    return r.status_code, r.text

            return asyncio.run(go())
        r = self.wsgi.get("/me", headers=headers)
        return r.status_code, r.get_data(as_text=True)


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_each_issuer_is_verified_with_its_own_keys_and_audience(
    tenants: tuple[LocalIssuer, LocalIssuer], kind: str, form: str
) -> None:
    a, b = tenants
    apps = Apps(kind, configured(form, a, b))
    status, body = apps.get(a.mint(subject="alice"))
    assert status == 200 and "alice" in body and a.issuer in body
    status, body = apps.get(b.mint(subject="bob"))
    assert status == 200 and "bob" in body and b.issuer in body
    # b's audience is not valid for a's tokens: rules are per issuer
    assert apps.get(a.mint(audience=b.audience))[0] == 401


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_only_the_named_issuers_keys_are_tried(
    tenants: tuple[LocalIssuer, LocalIssuer], kind: str, form: str
) -> None:
    a, b = tenants
    apps = Apps(kind, configured(form, a, b, warm_up=False))
    # Claims iss=a but is signed by b's key (with b's kid): a's keys do not have it.
    forged = b.mint(claims={"iss": a.issuer}, audience=a.audience)
    assert apps.get(forged)[0] == 401
    assert b.jwks_requests == 0  # b's key server was never asked
    assert a.jwks_requests == 1


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_an_unknown_issuer_is_refused_before_any_key_lookup(
    tenants: tuple[LocalIssuer, LocalIssuer], kind: str, form: str
) -> None:
    a, b = tenants
    apps = Apps(kind, configured(form, a, b, warm_up=False))
    assert apps.get(a.mint(claims={"iss": "https://stranger.example"}))[0] == 401
    assert apps.get("not.a.token")[0] == 401
    assert (a.jwks_requests, b.jwks_requests) == (0, 0)


def test_multi_issuer_configuration_is_validated(tenants: tuple[LocalIssuer, LocalIssuer]) -> None:
    a, b = tenants
    one, _ = entries(a, b)
    with pytest.raises(ConfigurationError, match=r"is in settings\[0\] and settings\[1\]"):
        JWTMiddleware(Starlette(), settings=[one, one])
    differing = Settings(
        issuer=b.issuer, audience=b.audience, jwks_url=b.jwks_url, algorithms=["ES256"], realm="x"
    )
    with pytest.raises(ConfigurationError, match="request-level options"):
        JWTMiddleware(Starlette(), settings=[one, differing])
    anyone = Settings(allow_any_issuer=True, audience="x", jwks_url=b.jwks_url)
    with pytest.raises(ConfigurationError, match=r"settings\[1\] must name its issuer"):
        JWTWSGIMiddleware(wsgi_whoami, settings=[one, anyone])
    with pytest.raises(ConfigurationError, match="non-empty list"):
        JWTMiddleware(Starlette(), settings=[])


def test_trust_is_validated(tenants: tuple[LocalIssuer, LocalIssuer]) -> None:
    """Issuer options beside trust, an issuer twice, a nameless Issuer or a Settings in trust
    are refused at startup, each with a message naming the fix."""
    a, b = tenants
    one = Issuer(issuer=a.issuer, audience=a.audience, jwks_url=a.jwks_url)
    with pytest.raises(ConfigurationError, match="set algorithms, leeway on each Issuer"):
        Settings(trust=[one], leeway=5, algorithms=["ES256"])
    with pytest.raises(ConfigurationError, match=r"is in trust\[0\] and trust\[1\]"):
        Settings(trust=[one, one])
    anyone = Issuer(allow_any_issuer=True, audience="x", jwks_url=b.jwks_url)
    with pytest.raises(ConfigurationError, match=r"trust\[1\] must name its issuer"):
        Settings(trust=[one, anyone])
    with pytest.raises(ConfigurationError, match="list of Issuer"):
        Settings(trust=[Settings(issuer=b.issuer, audience="x", jwks_url=b.jwks_url)])
    with pytest.raises(ConfigurationError, match="list of Issuer"):
        Settings(trust=one)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="cannot hold trust"):
        JWTMiddleware(Starlette(), settings=[Settings(trust=[one])])


def test_trusted_issuers_take_the_settings_clock_unless_they_set_their_own(
    tenants: tuple[LocalIssuer, LocalIssuer],
) -> None:
    """An Issuer in trust that leaves clock unset runs on the settings' clock (the one tests
    inject); one that sets its own while the settings do too is refused."""
    a, _ = tenants
    now = [time.time() + 10_000.0]
    settings = Settings(
        trust=[Issuer(issuer=a.issuer, audience=a.audience, jwks_url=a.jwks_url)],
        clock=lambda: now[0],
    )
    assert settings.trusted[0].clock() == now[0]
    token = a.mint(expires_in=60)  # expired by the settings' clock
    from jwt_middleware import InvalidToken, SyncVerifier

    with pytest.raises(InvalidToken) as info:
        SyncVerifier(settings).verify(token)
    assert info.value.reason == "token_expired"
    with pytest.raises(ConfigurationError, match="sets its own clock"):
        Settings(
            trust=[Issuer(issuer=a.issuer, audience="x", jwks_url=a.jwks_url, clock=lambda: 0.0)],
            clock=lambda: 1.0,
        )
