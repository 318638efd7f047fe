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
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ._settings import Settings
from .testing import LocalIssuer


@pytest.fixture
def jwt_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer() as issuer:
        yield issuer


@pytest.fixture
def jwt_settings(jwt_issuer: LocalIssuer) -> Settings:
    return Settings(
        issuer=jwt_issuer.issuer, audience=jwt_issuer.audience, jwks_url=jwt_issuer.jwks_url
    )
