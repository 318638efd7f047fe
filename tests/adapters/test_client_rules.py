"""Client allow-lists (``allowed_clients``) and the RFC 9068 profile (``profile="rfc9068"``),
through both middlewares: which tokens get in, and the reason each other one is refused."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from jwt_middleware import ConfigurationError, Issuer, Settings
from jwt_middleware.testing import OMIT, LocalIssuer
from tests.support.servers import InProcess
from tests.support.whoami import HTTP

__all__: list[str] = []


@pytest.fixture
def api(adapter: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., HTTP]]:
    """``api(**settings)``: /whoami behind the adapter under test, reasons exposed."""
    made: list[InProcess] = []

    def build(**overrides: Any) -> HTTP:
        app = HTTP(adapter, make_settings(expose_error_details=True, **overrides))
        made.append(app)
        return app

    yield build
    for app in made:
        app.close()


def _reason(answer: Any) -> str | None:
    return None if answer.status == 200 else str(answer.json()["reason"])


@pytest.mark.parametrize(
    ("claims", "reason"),
    [
        ({"client_id": "web"}, None),
        ({"azp": "mobile"}, None),
        ({"client_id": "web", "azp": "intruder"}, None),  # client_id wins: RFC 9068
        ({"client_id": "intruder", "azp": "web"}, "client_not_allowed"),
        ({"azp": "intruder"}, "client_not_allowed"),
        ({}, "client_not_allowed"),
        ({"client_id": ["web"]}, "client_not_allowed"),
        ({"client_id": None, "azp": "web"}, "client_not_allowed"),  # null does not hand over
    ],
)
def test_only_the_allowed_clients_get_in(
    api: Callable[..., HTTP], issuer: LocalIssuer, claims: dict[str, Any], reason: str | None
) -> None:
    """client_id, else azp, must be in allowed_clients; a token naming none is refused."""
    app = api(allowed_clients=["web", "mobile"])
    answer = app.get(issuer.mint(claims))
    assert _reason(answer) == reason, answer.body
    if reason is not None:
        assert answer.status == 401
        assert answer.json()["error"] == "invalid_token"


def test_a_keycloak_token_with_aud_account_and_an_azp(
    api: Callable[..., HTTP], issuer: LocalIssuer
) -> None:
    """The Keycloak recipe: audience "account" alone would let every client of the realm in;
    with allowed_clients only this API's front end does."""
    app = api(audience="account", allowed_clients=["orders-web"])
    ours = issuer.mint({"azp": "orders-web"}, audience="account")
    theirs = issuer.mint({"azp": "billing-web"}, audience="account")
    assert app.get(ours).status == 200
    assert _reason(app.get(theirs)) == "client_not_allowed"


def test_a_token_without_aud_is_let_in_only_by_an_explicit_waiver_and_the_client_list(
    api: Callable[..., HTTP], issuer: LocalIssuer
) -> None:
    """Providers that put no aud in access tokens: allow_any_audience plus allowed_clients."""
    app = api(audience=None, allow_any_audience=True, allowed_clients=["cli"])
    assert app.get(issuer.mint({"azp": "cli"}, audience=None)).status == 200
    assert _reason(app.get(issuer.mint({"azp": "other"}, audience=None))) == "client_not_allowed"


def _rfc9068_token(issuer: LocalIssuer, **changes: Any) -> str:
    claims = {"client_id": "web", **changes.pop("claims", {})}
    headers = {"typ": "at+jwt", **changes.pop("headers", {})}
    return issuer.mint(claims, headers=headers, **changes)


@pytest.mark.parametrize(
    ("changes", "reason"),
    [
        ({}, None),
        ({"headers": {"typ": "application/at+jwt"}}, None),
        ({"headers": {"typ": "JWT"}}, "typ_mismatch"),  # an ID token, say
        ({"headers": {"typ": OMIT}}, "typ_mismatch"),
        ({"claims": {"client_id": OMIT}}, "claim_missing"),
        ({"claims": {"sub": OMIT}}, "claim_missing"),
        ({"jti": False}, "claim_missing"),
        ({"claims": {"iat": OMIT}}, "claim_missing"),
        ({"audience": None, "claims": {}}, "audience_mismatch"),
        ({"claims": {"jti": 5}}, "claim_invalid"),
        ({"claims": {"client_id": {"x": 1}}}, "claim_invalid"),
    ],
)
def test_the_rfc9068_profile_in_one_word(
    api: Callable[..., HTTP], issuer: LocalIssuer, changes: dict[str, Any], reason: str | None
) -> None:
    """profile="rfc9068": typ at+jwt and the seven claims of RFC 9068 §2.2 required."""
    app = api(profile="rfc9068")
    answer = app.get(_rfc9068_token(issuer, **changes))
    assert _reason(answer) == reason, answer.body


def test_the_profile_keeps_the_claims_the_settings_require_too() -> None:
    """profile adds to required_claims, and sets typ only when it is unset."""
    settings = Issuer(
        issuer="https://i.example", audience="a", jwks_url="https://i.example/jwks",
        profile="rfc9068", required_claims=["tenant"],
    )  # fmt: skip
    assert settings.typ == "at+jwt"
    assert settings.required_claims == (
        "tenant", "iss", "exp", "aud", "sub", "client_id", "iat", "jti",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"profile": "oauth"}, "profile must be"),
        ({"profile": "rfc9068", "typ": "JWT"}, "typ 'at\\+jwt'"),
        ({"profile": "rfc9068", "require_exp": False}, "requires exp"),
        ({"allowed_clients": []}, "non-empty"),
        ({"allowed_clients": "web"}, "must be a list"),
        ({"allowed_clients": ["web", ""]}, "non-empty"),
    ],
)
def test_bad_client_rules_fail_at_construction(options: dict[str, Any], message: str) -> None:
    """Each mistake is a ConfigurationError at startup."""
    with pytest.raises(ConfigurationError, match=message):
        Issuer(issuer="https://i.example", audience="a", jwks_url="https://i.example/j", **options)
