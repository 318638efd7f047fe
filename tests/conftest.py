"""Shared fixtures and the test layout.

The folder a test lives in says what it needs, and gives it a marker of the same name:

* ``unit/``: one module each (``test_<module>.py``); a LocalIssuer key server on loopback at most.
* ``adapters/``: request behaviour through the middlewares, most of it run on both adapters
  through the ``adapter`` fixture; real uvicorn/werkzeug where the server's handling matters.
* ``integration/``: subprocess servers (uvicorn, gunicorn), the examples, Redis, the attack
  corpus, the fault matrix, the CLI, the docs.
* ``property/``: generated inputs (Hypothesis) and the Wycheproof vectors.
* ``browser/``: headless Chromium.

``-m "not integration and not browser"`` is the quick loop; the README's command runs all.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from jwt_middleware import Key, Settings
from jwt_middleware.testing import LocalIssuer

from .support.clock import FakeClock
from .support.servers import InProcess

LAYERS = ("unit", "adapters", "integration", "property", "browser")
HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Mark each test with its folder's layer, so ``-m`` can pick layers."""
    for item in items:
        parts = item.path.resolve().relative_to(HERE).parts
        if parts and parts[0] in LAYERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


@pytest.fixture
def clock() -> FakeClock:
    """A clock that only moves when the test calls ``advance``."""
    return FakeClock()


@pytest.fixture
def signature_checks(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The ``alg`` of every public-key operation from here on (Key.verify is spied on, not
    replaced), so a test can tell a cache hit from a full verification."""
    calls: list[str] = []
    real = Key.verify

    def spy(self: Key, alg: str, signing_input: bytes, signature: bytes) -> bool:
        calls.append(alg)
        return real(self, alg, signing_input, signature)

    monkeypatch.setattr(Key, "verify", spy)
    return calls


@pytest.fixture
def issuer() -> Iterator[LocalIssuer]:
    """A real OIDC issuer + JWKS server on 127.0.0.1 (RS256 by default)."""
    with LocalIssuer() as local:
        yield local


@pytest.fixture
def make_settings(issuer: LocalIssuer) -> Callable[..., Settings]:
    """Settings trusting ``issuer`` through its JWKS URL; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "issuer": issuer.issuer,
            "audience": issuer.audience,
            "jwks_url": issuer.jwks_url,
        }
        options.update(overrides)
        return Settings(**options)

    return build


@pytest.fixture(params=["asgi", "wsgi"])
def adapter(request: pytest.FixtureRequest) -> str:
    """Runs the test once behind JWTMiddleware ("asgi") and once behind JWTWSGIMiddleware
    ("wsgi"): the one switch for behaviour both adapters must share."""
    return str(request.param)


@pytest.fixture
def in_process(adapter: str) -> Iterator[Callable[..., InProcess]]:
    """``in_process(settings, routes=..., wsgi_app=..., use_cookies=True)``: that app behind
    the ``adapter`` under test (``InProcess``), in process, closed at teardown."""
    made: list[InProcess] = []

    def build(settings: Settings | list[Settings], **kwargs: Any) -> InProcess:
        app = InProcess(adapter, settings, **kwargs)
        made.append(app)
        return app

    yield build
    for app in made:
        app.close()
