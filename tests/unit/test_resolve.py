"""IssuerPattern (which iss values fit a tenant template, and the Issuer each becomes) and the
admission budget of resolved issuers."""

from __future__ import annotations

from typing import Any

import pytest

from jwt_middleware import ConfigurationError, Issuer, IssuerPattern
from jwt_middleware._resolve import _Budget

__all__: list[str] = []

ENTRA = "https://login.microsoftonline.com/{tenant}/v2.0"
TENANT = "9188040d-6c67-4c5b-b112-36a304b66dad"


def _pattern(template: str = ENTRA, **fields: Any) -> IssuerPattern:
    return IssuerPattern(template, audience="api://orders", **fields)


@pytest.mark.parametrize(
    ("iss", "fits"),
    [
        (f"https://login.microsoftonline.com/{TENANT}/v2.0", True),
        ("https://login.microsoftonline.com/common/v2.0", True),
        (f"https://login.microsoftonline.com/{TENANT}/v2.0/", False),
        (f"http://login.microsoftonline.com/{TENANT}/v2.0", False),
        (f"https://login.microsoftonline.com.evil.com/{TENANT}/v2.0", False),
        ("https://login.microsoftonline.com/a/b/v2.0", False),
        ("https://login.microsoftonline.com/../v2.0", False),
        ("https://login.microsoftonline.com/a.b/v2.0", False),
        ("https://login.microsoftonline.com//v2.0", False),
        ("https://login.microsoftonline.com/%2e%2e/v2.0", False),
        ("https://login.microsoftonline.com/" + "a" * 129 + "/v2.0", False),
        (f"HTTPS://login.microsoftonline.com/{TENANT}/v2.0", False),  # iss compares exactly
        (f"https://login.microsoftonline.com/{TENANT}/v2.0\n", False),
    ],
)
def test_a_path_placeholder_matches_one_plain_segment(iss: str, fits: bool) -> None:
    """The placeholder stands for one segment of letters, digits, _ and -; the rest must be
    exactly the template's."""
    found = _pattern()(iss)
    assert (found is not None) is fits
    if found is not None:
        assert found.issuers == frozenset({iss})
        assert found.audiences == frozenset({"api://orders"})


@pytest.mark.parametrize(
    ("iss", "fits"),
    [
        ("https://acme.auth0.com/", True),
        ("https://acme-eu.auth0.com/", True),
        ("https://ACME.auth0.com/", False),
        ("https://a.b.auth0.com/", False),
        ("https://-acme.auth0.com/", False),
        ("https://acme.auth0.com.evil.com/", False),
        ("https://evil.com/.auth0.com/", False),
    ],
)
def test_a_host_placeholder_matches_one_dns_label(iss: str, fits: bool) -> None:
    """In the host, the placeholder is one lowercase DNS label, never a dot or a path."""
    assert (_pattern("https://{tenant}.auth0.com/")(iss) is not None) is fits


def test_the_tenant_value_goes_into_string_fields() -> None:
    """{realm} in jwks_url (or any string field) becomes the tenant's value."""
    pattern = IssuerPattern(
        "https://kc.example.com/realms/{realm}",
        audience="orders",
        jwks_url="https://kc.example.com/realms/{realm}/protocol/openid-connect/certs",
    )
    found = pattern("https://kc.example.com/realms/acme")
    assert found is not None
    assert found.jwks_url == "https://kc.example.com/realms/acme/protocol/openid-connect/certs"
    assert found.audiences == frozenset({"orders"})


def test_without_a_jwks_url_each_tenant_discovers_its_own_keys() -> None:
    """No jwks_url: the tenant's own discovery document says where its keys are."""
    found = _pattern()(f"https://login.microsoftonline.com/{TENANT}/v2.0")
    assert found is not None
    assert found.discovery_issuer == f"https://login.microsoftonline.com/{TENANT}/v2.0"


@pytest.mark.parametrize(
    "allow", [["acme"], frozenset({"acme"}), lambda value: value == "acme"], ids=type
)
def test_allow_takes_a_collection_or_a_callable(allow: Any) -> None:
    """allow= admits only the tenant values it names (or approves)."""
    pattern = IssuerPattern("https://kc.example.com/realms/{realm}", audience="a", allow=allow)
    assert pattern("https://kc.example.com/realms/acme") is not None
    assert pattern("https://kc.example.com/realms/globex") is None


@pytest.mark.parametrize(
    ("template", "fields", "message"),
    [
        ("https://login.example.com/v2.0", {}, "exactly one placeholder"),
        ("https://login.example.com/{a}/{b}", {}, "exactly one placeholder"),
        (42, {}, "must be a string"),
        ("http://login.example.com/{tenant}", {}, "must be an https URL"),
        ("https://x{tenant}.example.com/", {}, "whole DNS label"),
        ("https://login.example.com/{tenant}", {"issuer": "x"}, "comes from the template"),
        ("https://login.example.com/{tenant}", {"allow_any_issuer": True}, "from the template"),
        ("https://login.example.com/{tenant}", {"audiance": "x"}, "unknown Issuer fields"),
        ("https://login.example.com/{tenant}", {"allow": "acme"}, "collection of tenant values"),
        ("https://login.example.com/{tenant}", {"leeway": -1}, "leeway"),
    ],
)
def test_pattern_mistakes_fail_at_construction(
    template: Any, fields: dict[str, Any], message: str
) -> None:
    """A wrong template or field is a ConfigurationError when the pattern is built."""
    fields.setdefault("audience", "api")
    with pytest.raises(ConfigurationError, match=message):
        IssuerPattern(template, **fields)


def test_a_loopback_http_template_is_allowed_for_tests() -> None:
    """Plain http only on a loopback host, as for key URLs."""
    pattern = IssuerPattern("http://127.0.0.1:8080/realms/{realm}", audience="a")
    assert isinstance(pattern("http://127.0.0.1:8080/realms/acme"), Issuer)
    assert repr(pattern) == "IssuerPattern('http://127.0.0.1:8080/realms/{realm}')"


def test_the_admission_budget_refills_over_a_minute() -> None:
    """per_minute admissions at once, then one each 60/per_minute seconds; the wait until the
    next is what a refusal's Retry-After says."""
    budget = _Budget(3)
    assert [budget.take(1000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.take(1000.0) == pytest.approx(20.0)
    assert budget.take(1010.0) == pytest.approx(10.0)
    assert budget.take(1020.0) == 0.0
    assert budget.take(1020.0) > 0
    assert [budget.take(2000.0) for _ in range(4)][:3] == [0.0, 0.0, 0.0]  # capped at 3


def test_a_clock_stepped_back_neither_refills_nor_drains_the_budget() -> None:
    """An hour back (NTP): no admissions are taken back, so one is due in 20 s as before,
    not in an hour's worth of refill."""
    budget = _Budget(3)
    assert [budget.take(5000.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert budget.take(1400.0) == pytest.approx(20.0)
    assert budget.take(1420.0) == 0.0
