"""Several trusted issuers, each with its own keys, audience and rules (ASGI and WSGI)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import (
    ConfigurationError,
    Issuer,
    JWTMiddleware,
    JWTWSGIMiddleware,
    Settings,
    get_token,
)
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import InProcess, bearer


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


@pytest.fixture
def apps(in_process: Callable[..., InProcess]) -> Callable[[Settings | list[Settings]], Apps]:
    """``apps(settings)``: ``/me`` behind the ``adapter`` under test."""

    def build(settings: Settings | list[Settings]) -> Apps:
        return Apps(in_process(settings, routes=[Route("/me", whoami)], wsgi_app=wsgi_whoami))

    return build


class Apps:
    """``GET /me`` with a bearer token, answering (status, body text)."""

    def __init__(self, app: InProcess) -> None:
        self.app = app

    def get(self, token: str) -> tuple[int, str]:
        answer = self.app.request("GET", "/me", bearer(token))
        return answer.status, answer.body.decode()


def test_each_issuer_is_verified_with_its_own_keys_and_audience(
    tenants: tuple[LocalIssuer, LocalIssuer], apps: Callable[..., Apps], form: str
) -> None:
    """Each trusted issuer's tokens pass with its own keys and audience; another issuer's
    audience is 401."""
    a, b = tenants
    served = apps(configured(form, a, b))
    status, body = served.get(a.mint(subject="alice"))
    assert status == 200 and "alice" in body and a.issuer in body
    status, body = served.get(b.mint(subject="bob"))
    assert status == 200 and "bob" in body and b.issuer in body
    # b's audience is not valid for a's tokens: rules are per issuer
    assert served.get(a.mint(audience=b.audience))[0] == 401


def test_only_the_named_issuers_keys_are_tried(
    tenants: tuple[LocalIssuer, LocalIssuer], apps: Callable[..., Apps], form: str
) -> None:
    """A token naming issuer a but signed with b's key is a 401, and only a's JWKS is fetched."""
    a, b = tenants
    served = apps(configured(form, a, b, warm_up=False))
    # Claims iss=a but is signed by b's key (with b's kid): a's keys do not have it.
    forged = b.mint(claims={"iss": a.issuer}, audience=a.audience)
    assert served.get(forged)[0] == 401
    assert b.jwks_requests == 0  # b's key server was never asked
    assert a.jwks_requests == 1


def test_an_unknown_issuer_is_refused_before_any_key_lookup(
    tenants: tuple[LocalIssuer, LocalIssuer], apps: Callable[..., Apps], form: str
) -> None:
    """An untrusted iss or an unparseable token is a 401 with no JWKS fetched from any issuer."""
    a, b = tenants
    served = apps(configured(form, a, b, warm_up=False))
    assert served.get(a.mint(claims={"iss": "https://stranger.example"}))[0] == 401
    assert served.get("not.a.token")[0] == 401
    assert (a.jwks_requests, b.jwks_requests) == (0, 0)


def test_multi_issuer_configuration_is_validated(tenants: tuple[LocalIssuer, LocalIssuer]) -> None:
    """A list of Settings with a repeated issuer, differing request-level options, a nameless entry
    or no entries is a ConfigurationError."""
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
