"""pytest fixtures for apps that use jwt_middleware (loaded automatically once installed).

    def test_me(jwt_issuer, jwt_settings):
        app = make_app(settings=jwt_settings)            # trusts jwt_issuer's real JWKS
        token = jwt_issuer.mint(subject="alice", scope="read")
        expired = jwt_issuer.mint(expires_in=-60)
        foreign = jwt_issuer.mint(key=generate_key("RS256"))   # signed by an unknown key

* ``jwt_issuer`` — a started :class:`~jwt_middleware.testing.LocalIssuer`: OIDC discovery and a
  JWKS served over real HTTP on 127.0.0.1; ``mint()``, ``rotate()``, ``set_fault()``.
* ``jwt_settings`` — :class:`~jwt_middleware.Settings` trusting ``jwt_issuer`` (issuer,
  audience, JWKS URL), to pass as ``settings=``.
* ``jwt_dpop_key`` — a fresh ES256 client key for DPoP: ``jwt_issuer.mint(dpop_key=jwt_dpop_key)``
  binds a token to it, and ``dpop_headers(token, jwt_dpop_key, "GET", url)`` (from
  ``jwt_middleware.testing``) gives one request's headers.
* ``jwt_client_certificate`` — a fresh self-signed client certificate:
  ``jwt_issuer.mint(certificate=jwt_client_certificate)`` binds a token to it (RFC 8705), and
  ``{"client-cert": jwt_client_certificate.header()}`` is what a TLS-terminating proxy forwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._settings import Settings
from .testing import ClientCertificate, LocalIssuer, SigningKey, client_certificate, generate_key


@pytest.fixture
def jwt_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def jwt_settings(jwt_issuer: LocalIssuer) -> Settings:
    return Settings(
        issuer=jwt_issuer.issuer, audience=jwt_issuer.audience, jwks_url=jwt_issuer.jwks_url
    )


@pytest.fixture
def jwt_dpop_key() -> SigningKey:
    return generate_key("ES256")


@pytest.fixture
def jwt_client_certificate() -> ClientCertificate:
    return client_certificate()
