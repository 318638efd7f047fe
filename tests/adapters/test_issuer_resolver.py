"""Issuers found at run time (``issuer_resolver``, ``IssuerPattern``), through both middlewares,
against real key servers: a Keycloak-shaped provider with a realm per tenant, and an Entra-shaped
one whose tenants share one JWKS. What gets in, what is refused before any network request, and
what a flood of made-up issuers costs."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jwt_middleware import ConfigurationError, Issuer, IssuerPattern, JWTWSGIMiddleware, Settings
from jwt_middleware.testing import LocalIssuer
from tests.support.realms import Realms, realms
from tests.support.whoami import HTTP, wsgi_whoami

__all__: list[str] = []


@pytest.fixture
def provider() -> Iterator[Realms]:
    """A multi-realm provider with realms "acme" and "globex"."""
    yield from realms("acme", "globex")


@pytest.fixture
def api(adapter: str) -> Iterator[Callable[..., HTTP]]:
    """``api(**settings)``: /whoami behind the adapter under test, reasons exposed."""
    made: list[HTTP] = []

    def build(**options: Any) -> HTTP:
        app = HTTP(adapter, Settings(expose_error_details=True, warm_up=False, **options))
        made.append(app)
        return app

    yield build
    for app in made:
        app.close()


def _realm_pattern(provider: Realms, **fields: Any) -> IssuerPattern:
    return IssuerPattern(provider.url + "/realms/{realm}", audience="api", **fields)


def _reason(answer: Any) -> str | None:
    return None if answer.status == 200 else str(answer.json().get("reason"))


def test_each_realm_is_trusted_with_its_own_keys(
    api: Callable[..., HTTP], provider: Realms
) -> None:
    """A token of each realm gets in, its realm's discovery and JWKS fetched once."""
    app = api(issuer_resolver=_realm_pattern(provider))
    for _ in range(3):
        for realm in ("acme", "globex"):
            answer = app.get(provider.mint(realm, sub=f"{realm}-user"))
            assert answer.status == 200, answer.body
            assert answer.json() == {"sub": f"{realm}-user"}
    for realm in ("acme", "globex"):
        assert provider.requests(f"/realms/{realm}/.well-known") == 1
        assert provider.requests(f"/realms/{realm}/protocol") == 1


def test_a_token_signed_with_another_realms_key_is_refused(
    api: Callable[..., HTTP], provider: Realms
) -> None:
    """Realm globex's key cannot sign for acme: each tenant is checked with its keys alone."""
    app = api(issuer_resolver=_realm_pattern(provider))
    forged = provider.mint("acme", key=provider.keys["globex"])
    answer = app.get(forged)
    assert answer.status == 401
    assert _reason(answer) == "kid_unknown"


@pytest.mark.parametrize(
    "iss",
    [
        "https://evil.example.com/realms/acme",  # another host
        "{url}/realms/acme/extra",  # more path
        "{url}/realms/",  # empty value
        "{url}/realms/..",  # no dot segments
        "{url}/realms/a%2Fb",  # no escapes
        "{url}/realms/" + "a" * 129,  # too long
    ],
)
def test_an_iss_that_does_not_fit_is_refused_before_any_request(
    api: Callable[..., HTTP], provider: Realms, iss: str
) -> None:
    """What the template does not match is a 401 issuer_mismatch, and nothing is fetched."""
    app = api(issuer_resolver=_realm_pattern(provider))
    answer = app.get(provider.mint("acme", iss=iss.format(url=provider.url)))
    assert answer.status == 401
    assert _reason(answer) == "issuer_mismatch"
    assert provider.requests() == 0


def test_allow_limits_the_tenants(api: Callable[..., HTTP], provider: Realms) -> None:
    """allow= lets only the listed realms in; another is refused without a request."""
    app = api(issuer_resolver=_realm_pattern(provider, allow=["acme"]))
    assert app.get(provider.mint("acme")).status == 200
    assert _reason(app.get(provider.mint("globex"))) == "issuer_mismatch"
    assert provider.requests("/realms/globex") == 0


def test_a_flood_of_made_up_realms_costs_a_bounded_number_of_fetches(
    api: Callable[..., HTTP], provider: Realms
) -> None:
    """200 tokens naming 200 invented realms: at most new_issuers_per_minute reach the key
    server, the rest are 503 issuer_rate_limited with Retry-After, and a realm admitted before
    the flood keeps working without being fetched again."""
    app = api(issuer_resolver=_realm_pattern(provider), new_issuers_per_minute=5)
    assert app.get(provider.mint("acme")).status == 200
    before = provider.requests()
    reasons: dict[str | None, int] = {}
    for n in range(200):
        fake = provider.mint("acme", iss=provider.issuer(f"fake{n}"))
        answer = app.get(fake)
        reason = _reason(answer)
        reasons[reason] = reasons.get(reason, 0) + 1
        if reason == "issuer_rate_limited":
            assert answer.status == 503
            assert int(answer.headers["retry-after"]) >= 1
        assert app.get(provider.mint("acme")).status == 200
    # The bucket starts full (5: acme took one) and refills 5 a minute while the loop runs. An
    # admitted fake realm has no discovery document (404): its token is a 503 keys_unavailable.
    admitted = reasons.pop("keys_unavailable")
    assert 4 <= admitted <= 6
    assert reasons == {"issuer_rate_limited": 200 - admitted}
    assert provider.requests() - before == admitted  # one discovery (404) per admitted realm
    assert provider.requests("/realms/acme") == 2  # acme: still its first two fetches


def test_made_up_issuers_never_push_a_proven_one_out(
    api: Callable[..., HTTP], provider: Realms
) -> None:
    """With room for one proven issuer, a stream of admitted fakes (whose tokens never verify)
    does not evict it: the resolver is not asked about it again, nor its keys fetched."""
    pattern = _realm_pattern(provider)
    asked: list[str] = []

    def resolve(iss: str) -> Issuer | None:
        asked.append(iss)
        return pattern(iss)

    app = api(issuer_resolver=resolve, issuer_cache_size=1, new_issuers_per_minute=50)
    assert app.get(provider.mint("acme")).status == 200
    for n in range(40):
        app.get(provider.mint("acme", iss=provider.issuer(f"fake{n}")))
    assert app.get(provider.mint("acme")).status == 200
    assert asked.count(provider.issuer("acme")) == 1
    assert provider.requests("/realms/acme") == 2


def test_tenants_sharing_one_jwks_share_one_key_cache(
    api: Callable[..., HTTP], issuer: LocalIssuer
) -> None:
    """The Entra ID shape: every tenant's iss differs, the keys are common; ten tenants cost
    one JWKS fetch, and the tenant's iss is the one checked."""
    pattern = IssuerPattern(
        "https://login.microsoftonline.com/{tenant}/v2.0",
        audience=issuer.audience,
        jwks_url=issuer.jwks_url,
    )
    app = api(issuer_resolver=pattern)
    tenants = [f"0000000{n}-aaaa-bbbb-cccc-dddddddddddd" for n in range(10)]
    for tenant in tenants:
        iss = f"https://login.microsoftonline.com/{tenant}/v2.0"
        assert app.get(issuer.mint({"iss": iss, "tid": tenant})).status == 200
    assert issuer.jwks_requests == 1
    assert issuer.discovery_requests == 0


def test_a_callable_resolver_is_asked_once_per_issuer(
    api: Callable[..., HTTP], provider: Realms
) -> None:
    """A resolver (a tenant table, say) is asked about each new iss once, yes or no."""
    asked: list[str] = []

    def resolve(iss: str) -> Issuer | None:
        asked.append(iss)
        if iss == provider.issuer("acme"):
            return Issuer(issuer=iss, audience="api")
        return None

    app = api(issuer_resolver=resolve)
    for _ in range(3):
        assert app.get(provider.mint("acme")).status == 200
        assert _reason(app.get(provider.mint("globex"))) == "issuer_mismatch"
    assert asked == [provider.issuer("acme"), provider.issuer("globex")]
    assert provider.requests("/realms/globex") == 0


def test_configured_issuers_come_before_the_resolver(
    api: Callable[..., HTTP], provider: Realms, issuer: LocalIssuer
) -> None:
    """A configured issuer is never handed to the resolver."""
    asked: list[str] = []

    def resolve(iss: str) -> Issuer | None:
        asked.append(iss)
        return None

    app = api(
        issuer=issuer.issuer,
        audience=issuer.audience,
        jwks_url=issuer.jwks_url,
        issuer_resolver=resolve,
    )
    assert app.get(issuer.mint()).status == 200
    assert _reason(app.get(provider.mint("acme"))) == "issuer_mismatch"
    assert asked == [provider.issuer("acme")]


def test_a_resolver_that_raises_is_a_503_and_logged(
    api: Callable[..., HTTP], provider: Realms, caplog: pytest.LogCaptureFixture
) -> None:
    """A resolver failing (its database down) cannot tell the keys: 503, logged, never a 500."""

    def resolve(iss: str) -> Issuer | None:
        raise RuntimeError("tenant database down")

    app = api(issuer_resolver=resolve)
    with caplog.at_level(logging.ERROR, logger="jwt_middleware"):
        answer = app.get(provider.mint("acme"))
    assert answer.status == 503
    assert _reason(answer) == "keys_unavailable"
    assert "issuer_resolver raised" in caplog.text


@pytest.mark.parametrize(
    "answer",
    [
        lambda iss: Issuer(issuer="https://other.example.com/", audience="api"),
        lambda iss: {"issuer": iss},
        lambda iss: Settings(issuer=iss, audience="api"),
    ],
    ids=["another iss", "not an Issuer", "Settings"],
)
def test_a_resolver_answer_that_does_not_name_the_iss_is_refused_and_logged(
    api: Callable[..., HTTP],
    provider: Realms,
    caplog: pytest.LogCaptureFixture,
    answer: Callable[[str], Any],
) -> None:
    """The resolver must answer an Issuer naming that very iss: anything else is a 401, and
    the mistake is logged for the operator."""
    app = api(issuer_resolver=answer)
    with caplog.at_level(logging.ERROR, logger="jwt_middleware"):
        refused = app.get(provider.mint("acme"))
    assert refused.status == 401
    assert _reason(refused) == "issuer_mismatch"
    assert "issuer_resolver answered" in caplog.text


def test_an_async_resolver_works_on_the_asgi_side(provider: Realms) -> None:
    """An async resolver is awaited by JWTMiddleware."""

    async def resolve(iss: str) -> Issuer | None:
        return Issuer(issuer=iss, audience="api") if iss.endswith("/acme") else None

    app = HTTP("asgi", Settings(issuer_resolver=resolve, warm_up=False))
    try:
        assert app.get(provider.mint("acme")).status == 200
        assert app.get(provider.mint("globex")).status == 401
    finally:
        app.close()


def test_an_async_resolver_is_refused_under_wsgi() -> None:
    """JWTWSGIMiddleware cannot await: an async resolver is a startup error."""

    async def resolve(iss: str) -> Issuer | None:
        return None

    with pytest.raises(ConfigurationError, match="async issuer_resolver"):
        JWTWSGIMiddleware(wsgi_whoami, issuer_resolver=resolve)


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"issuer_resolver": "https://x/{t}"}, "issuer_resolver must be a callable"),
        ({"issuer_resolver": len, "audience": "api"}, "set audience on the Issuers it returns"),
        ({"issuer_resolver": len, "issuer_cache_size": 0}, "issuer_cache_size must be"),
        ({"issuer_resolver": len, "new_issuers_per_minute": True}, "new_issuers_per_minute"),
    ],
)
def test_resolver_settings_are_checked(options: dict[str, Any], message: str) -> None:
    """Resolver settings mistakes fail at startup with a message that says what to do."""
    with pytest.raises(ConfigurationError, match=message):
        Settings(**options)
