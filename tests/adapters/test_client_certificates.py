"""Certificate-bound tokens (RFC 8705 ``cnf.x5t#S256``) through both middlewares, under real
servers: the certificate a TLS-terminating proxy forwards in ``client-cert`` must be the one the
token names, and is believed only from a trusted proxy's address.

The parsing of the header's forms is pinned in ``tests/unit/test_certs.py``; here the point is
what a request gets: 200, 401 ``certificate_mismatch`` or 400 ``malformed_client_certificate``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import httpx
import pytest

from jwt_middleware import ConfigurationError, Settings
from jwt_middleware.testing import (
    ClientCertificate,
    LocalIssuer,
    client_certificate,
    dpop_proof,
    generate_key,
)
from tests.support.orders import serve_orders

CERT_HEADER = "client-cert"
PROXY_SETTINGS: dict[str, Any] = {
    "client_cert_header": CERT_HEADER,
    "trusted_proxies": ["127.0.0.1"],
    "expose_error_details": True,
}

Headers = Sequence[tuple[str, str]]


class Api:
    """``/orders`` behind one adapter under a real server in a thread, with httpx."""

    def __init__(self, base: str) -> None:
        self.base = base

    def url(self, path: str = "/orders") -> str:
        return self.base + path

    def get(self, headers: Headers = (), path: str = "/orders") -> httpx.Response:
        return httpx.get(self.url(path), headers=list(headers), timeout=10)


@pytest.fixture
def serve(adapter: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    """``serve(**settings) -> Api``: ``/orders`` behind the adapter under test, under uvicorn
    or werkzeug in a thread; stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> Api:
            settings = make_settings(**overrides)
            port = serve_orders(stack, adapter, settings)
            return Api(f"http://127.0.0.1:{port}")

        yield start


@pytest.fixture(scope="module")
def certificate() -> ClientCertificate:
    return client_certificate("alice")


@pytest.fixture(scope="module")
def other_certificate() -> ClientCertificate:
    return client_certificate("mallory")


def _bearer(token: str, *headers: tuple[str, str]) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}"), *headers]


def _refused(answer: httpx.Response, status: int, reason: str) -> None:
    assert answer.status_code == status, answer.text
    assert answer.json()["reason"] == reason, answer.text


def _mismatch(answer: httpx.Response) -> None:
    """401 with an ``invalid_token`` challenge: the token is fine, the request does not prove it."""
    _refused(answer, 401, "certificate_mismatch")
    assert answer.json()["error"] == "invalid_token"
    assert 'error="invalid_token"' in answer.headers["www-authenticate"]


# -- the certificate the token names ---------------------------------------------------------


@pytest.mark.parametrize("form", ["rfc9440", "nginx"])
def test_the_bound_certificate_from_the_proxy_lets_the_token_in(
    serve: Callable[..., Api], issuer: LocalIssuer, certificate: ClientCertificate, form: str
) -> None:
    """A cert-bound token with its certificate in client-cert (RFC 9440 or nginx form) is 200."""
    api = serve(**PROXY_SETTINGS)
    token = issuer.mint(certificate=certificate, subject="alice")
    answer = api.get(_bearer(token, (CERT_HEADER, certificate.header(form))))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sub": "alice", "location": "header"}


def test_another_certificate_is_a_mismatch(
    serve: Callable[..., Api],
    issuer: LocalIssuer,
    certificate: ClientCertificate,
    other_certificate: ClientCertificate,
) -> None:
    """Another well-formed certificate than the bound one: 401 certificate_mismatch."""
    api = serve(**PROXY_SETTINGS)
    token = issuer.mint(certificate=certificate)
    _mismatch(api.get(_bearer(token, (CERT_HEADER, other_certificate.header()))))


def test_no_certificate_header_is_a_mismatch(
    serve: Callable[..., Api], issuer: LocalIssuer, certificate: ClientCertificate
) -> None:
    """A cert-bound token sent without any client-cert header: 401 certificate_mismatch."""
    api = serve(**PROXY_SETTINGS)
    _mismatch(api.get(_bearer(issuer.mint(certificate=certificate))))


def test_two_certificate_headers_are_refused(
    adapter: str,
    serve: Callable[..., Api],
    issuer: LocalIssuer,
    certificate: ClientCertificate,
    other_certificate: ClientCertificate,
) -> None:
    """Two client-cert headers (the bound one among them) are refused, never guessed between:
    400 malformed_client_certificate on both adapters (a WSGI server joins them with a comma,
    which is no certificate form; ASGI sees two headers)."""
    api = serve(**PROXY_SETTINGS)
    token = issuer.mint(certificate=certificate)
    for pair in ((certificate, other_certificate), (certificate, certificate)):
        answer = api.get(_bearer(token, *((CERT_HEADER, c.header()) for c in pair)))
        _refused(answer, 400, "malformed_client_certificate")


@pytest.mark.parametrize(
    "value",
    [":not base64!:", "-----BEGIN CERTIFICATE-----AAAA-----END CERTIFICATE-----", "alice"],
    ids=["bad-base64", "not-x509", "no-form"],
)
def test_a_malformed_certificate_header_is_a_bad_request(
    serve: Callable[..., Api], issuer: LocalIssuer, certificate: ClientCertificate, value: str
) -> None:
    """An unreadable client-cert value with a cert-bound token: 400 malformed_client_certificate,
    and the value is not echoed back."""
    api = serve(**PROXY_SETTINGS)
    answer = api.get(_bearer(issuer.mint(certificate=certificate), (CERT_HEADER, value)))
    _refused(answer, 400, "malformed_client_certificate")
    assert value not in answer.text


def test_a_certificate_from_an_untrusted_peer_is_not_believed(
    serve: Callable[..., Api], issuer: LocalIssuer, certificate: ClientCertificate
) -> None:
    """The right certificate from a peer outside trusted_proxies: 401 certificate_mismatch."""
    api = serve(**{**PROXY_SETTINGS, "trusted_proxies": ["10.0.0.0/8"]})
    token = issuer.mint(certificate=certificate)
    _mismatch(api.get(_bearer(token, (CERT_HEADER, certificate.header()))))


# -- without certificate binding configured --------------------------------------------------


def test_without_client_cert_header_a_bound_token_is_refused(
    serve: Callable[..., Api], issuer: LocalIssuer, certificate: ClientCertificate
) -> None:
    """With no client_cert_header set, a cert-bound token is refused even with its certificate
    in client-cert: 401 certificate_mismatch."""
    api = serve(trusted_proxies=["127.0.0.1"], expose_error_details=True)
    token = issuer.mint(certificate=certificate)
    _mismatch(api.get(_bearer(token, (CERT_HEADER, certificate.header()))))


@pytest.mark.parametrize("configured", [True, False], ids=["configured", "unconfigured"])
def test_an_unbound_token_ignores_a_stray_certificate_header(
    serve: Callable[..., Api],
    issuer: LocalIssuer,
    certificate: ClientCertificate,
    configured: bool,
) -> None:
    """An unbound token passes whatever client-cert says, garbage included (200)."""
    api = serve(**PROXY_SETTINGS) if configured else serve(expose_error_details=True)
    token = issuer.mint(subject="bob")
    for value in (certificate.header(), certificate.header("nginx"), ":garbage:"):
        answer = api.get(_bearer(token, (CERT_HEADER, value)))
        assert answer.status_code == 200, answer.text
        assert answer.json()["sub"] == "bob"


# -- bound to a DPoP key and a certificate ---------------------------------------------------


def test_a_token_bound_to_a_key_and_a_certificate_needs_both(
    serve: Callable[..., Api], issuer: LocalIssuer, certificate: ClientCertificate
) -> None:
    """cnf with jkt and x5t#S256: proof + certificate is 200; the proof alone is
    certificate_mismatch; the certificate under Bearer without a proof is token_bound."""
    api = serve(**PROXY_SETTINGS)
    key = generate_key("ES256")
    token = issuer.mint(dpop_key=key, certificate=certificate, subject="carol")
    cert = (CERT_HEADER, certificate.header())

    def dpop(*extra: tuple[str, str]) -> list[tuple[str, str]]:
        proof = dpop_proof(key, "GET", api.url(), access_token=token)
        return [("authorization", f"DPoP {token}"), ("dpop", proof), *extra]

    answer = api.get(dpop(cert))
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sub": "carol", "location": "dpop"}
    _mismatch(api.get(dpop()))
    _refused(api.get(_bearer(token, cert)), 401, "token_bound")
    # The proof alone was refused, so its jti was not used up: a fresh request still passes.
    assert api.get(dpop(cert)).status_code == 200


# -- configuration and metadata --------------------------------------------------------------


def test_client_cert_header_without_trusted_proxies_is_a_configuration_error(
    issuer: LocalIssuer,
) -> None:
    """Settings(client_cert_header=...) with no trusted_proxies raises ConfigurationError."""
    with pytest.raises(ConfigurationError, match="trusted_proxies"):
        Settings(
            issuer=issuer.issuer,
            audience=issuer.audience,
            jwks_url=issuer.jwks_url,
            client_cert_header=CERT_HEADER,
        )


@pytest.mark.parametrize("configured", [True, False], ids=["configured", "unconfigured"])
def test_metadata_advertises_certificate_bound_tokens(
    serve: Callable[..., Api],
    issuer: LocalIssuer,
    certificate: ClientCertificate,
    configured: bool,
) -> None:
    """The RFC 9728 document says tls_client_certificate_bound_access_tokens: true exactly when
    client_cert_header is set (left out, i.e. false, otherwise)."""
    resource = "http://127.0.0.1:8443/orders"  # loopback: plain http is allowed
    options = PROXY_SETTINGS if configured else {"expose_error_details": True}
    api = serve(resource=resource, **options)
    answer = api.get(path="/.well-known/oauth-protected-resource/orders")
    assert answer.status_code == 200, answer.text
    document = answer.json()
    assert document["resource"] == resource
    if configured:
        assert document["tls_client_certificate_bound_access_tokens"] is True
        token = issuer.mint(certificate=certificate)
        assert api.get(_bearer(token, (CERT_HEADER, certificate.header()))).status_code == 200
    else:
        assert "tls_client_certificate_bound_access_tokens" not in document
