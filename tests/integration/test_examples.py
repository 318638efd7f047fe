"""The example apps and the demo, as users run them: real processes, real HTTP.

The same cases run against every example: the FastAPI and Starlette apps under
``python -m uvicorn --app-dir examples``, the Flask app under ``gunicorn --chdir examples``
(two workers, four threads each), each in a subprocess against a LocalIssuer on 127.0.0.1, once
with JWT_JWKS_URL and once through OIDC discovery.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key
from tests.support.challenges import with_dpop
from tests.support.servers import ROOT, AppServer, free_port, gunicorn_argv, jwt_env, uvicorn_argv

APPS = ["fastapi_app", "starlette_app", "flask_app"]
ASGI_APPS = ["fastapi_app", "starlette_app"]


WORKERS = {"flask_app": 2}  # processes per example; each warms up (fetches keys) on its own


def warmed_up(issuer: LocalIssuer, module: str) -> int:
    """Wait (bounded) until every worker's start-up fetch has reached the key server."""
    deadline = time.monotonic() + 20
    while issuer.jwks_requests < WORKERS.get(module, 1) and time.monotonic() < deadline:
        time.sleep(0.05)
    return issuer.jwks_requests


def _argv(module: str, port: int) -> list[str]:
    if module == "flask_app":  # WSGI: as its docstring says, gunicorn --chdir examples
        options = ["-w", "2", "--threads", "4"]
        return gunicorn_argv(f"{module}:app", port, chdir="examples", options=options)
    return uvicorn_argv(f"{module}:app", port, app_dir="examples")


class Example(AppServer):
    """One example app in a subprocess: uvicorn for ASGI apps, gunicorn for Flask."""

    def __init__(self, module: str, env: dict[str, str], log: Path) -> None:
        super().__init__(module, lambda port: _argv(module, port), env=env, log=log)


@pytest.fixture
def launch(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Callable[..., Example]]:
    with contextlib.ExitStack() as started:

        def start(module: str, env: dict[str, str]) -> Example:
            log = tmp_path_factory.mktemp("example") / "uvicorn.log"
            example = started.enter_context(Example(module, env, log))
            example.wait_ready()
            return example

        yield start


@pytest.fixture(scope="module")
def shared_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(audience="api://examples") as issuer:
        yield issuer


@pytest.fixture(scope="module")
def stranger_key() -> SigningKey:
    return generate_key("RS256")


@pytest.fixture(
    scope="module",
    params=[(app, mode) for app in APPS for mode in ("jwks_url", "discovery")],
    ids=lambda p: f"{p[0]}-{p[1]}",
)
def example(
    request: pytest.FixtureRequest,
    shared_issuer: LocalIssuer,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[Example]:
    module, mode = request.param
    log = tmp_path_factory.mktemp(f"{module}-{mode}") / "uvicorn.log"
    discovery_before = shared_issuer.discovery_requests
    with Example(module, jwt_env(shared_issuer, jwks_url=mode == "jwks_url"), log) as running:
        running.wait_ready()
        # Discovery (and only discovery) reads the OpenID configuration at warm-up.
        used_discovery = shared_issuer.discovery_requests > discovery_before
        assert used_discovery == (mode == "discovery")
        yield running


def test_health_is_public(example: Example) -> None:
    """Each example app answers /health without a token: 200 {"status": "ok"}."""
    response = example.get("/health")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_fastapi_example_docs_pages_are_public(
    launch: Callable[..., Example], shared_issuer: LocalIssuer
) -> None:
    """The FastAPI example's /docs, /redoc and /openapi.json answer without a token."""
    running = launch("fastapi_app", jwt_env(shared_issuer))
    for path in ("/docs", "/redoc", "/openapi.json"):
        assert running.get(path).status_code == 200, path


def test_me_with_a_token(example: Example, shared_issuer: LocalIssuer) -> None:
    """Each example's /me returns the token's sub, iss and claims for a valid token."""
    response = example.get("/me", shared_issuer.mint(subject="alice", scope="read"))
    assert response.status_code == 200
    body = response.json()
    assert body["sub"] == "alice"
    assert body["iss"] == shared_issuer.issuer
    assert body["claims"]["aud"] == shared_issuer.audience


def test_me_without_a_token(example: Example) -> None:
    """Each example's /me without a token is a 401 with a bare Bearer realm="api" challenge."""
    response = example.get("/me")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == with_dpop('Bearer realm="api"')
    assert response.json()["error"] == "unauthorized"


def test_me_with_an_invalid_token(
    example: Example, shared_issuer: LocalIssuer, stranger_key: SigningKey
) -> None:
    """Each example's /me refuses a forged, wrong-audience or junk token with 401 invalid_token."""
    forged = shared_issuer.mint(key=stranger_key, kid=shared_issuer.current_key.kid)
    wrong_audience = shared_issuer.mint(audience="api://another")
    for token in (forged, wrong_audience, "not.a.jwt"):
        response = example.get("/me", token)
        assert response.status_code == 401
        assert 'error="invalid_token"' in response.headers["www-authenticate"]
        assert response.json()["error"] == "invalid_token"


def test_admin_needs_the_admin_scope(example: Example, shared_issuer: LocalIssuer) -> None:
    """Each example's /admin is a 403 insufficient_scope naming scope admin, and 200 with it."""
    refused = example.get("/admin", shared_issuer.mint(scope="read write"))
    assert refused.status_code == 403
    challenge = refused.headers["www-authenticate"]
    assert 'error="insufficient_scope"' in challenge
    assert 'scope="admin"' in challenge
    body = refused.json()
    if example.name == "fastapi_app":  # RequireScopes refuses with FastAPI's {"detail": ...}
        body = body["detail"]
    assert body["error"] == "insufficient_scope"
    allowed = example.get("/admin", shared_issuer.mint(subject="root", scope="read admin"))
    assert allowed.status_code == 200
    assert allowed.json() == {"sub": "root", "admin": True}


def test_permissions_claim_counts_as_scopes(example: Example, shared_issuer: LocalIssuer) -> None:
    """A permissions claim holding admin opens /admin in each example (read as scopes)."""
    # settings_from_env reads scopes from "scope", "scp" and "permissions".
    response = example.get("/admin", shared_issuer.mint({"permissions": ["admin"]}))
    assert response.status_code == 200


def test_metrics_are_not_served_on_the_api_port(
    example: Example, shared_issuer: LocalIssuer
) -> None:
    """/metrics is no public path: the refusal counters would tell which check a forgery failed."""
    assert example.get("/metrics").status_code == 401
    authenticated = example.get("/metrics", shared_issuer.mint(scope="read admin"))
    assert authenticated.status_code == 404
    assert b"jwt_middleware_" not in authenticated.content


def test_fastapi_example_serves_metrics_on_its_own_loopback_port(
    launch: Callable[..., Example],
) -> None:
    """With METRICS_PORT the counters are on 127.0.0.1:METRICS_PORT, and only there."""
    metrics_port = free_port()
    with LocalIssuer(audience="api://metrics") as issuer:
        running = launch("fastapi_app", jwt_env(issuer, METRICS_PORT=str(metrics_port)))
        assert running.get("/me", issuer.mint(audience="api://another")).status_code == 401
        assert running.get("/metrics").status_code == 401
        scraped = httpx.get(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10)
    assert scraped.status_code == 200
    assert 'jwt_middleware_rejected_total{reason="audience_mismatch"} 1.0' in scraped.text


@pytest.mark.parametrize("module", APPS)
def test_key_rotation_is_picked_up_on_the_first_request(
    module: str, launch: Callable[..., Example]
) -> None:
    """After a key rotation each example accepts the new key's token with one more JWKS fetch."""
    with LocalIssuer(audience="api://rotation") as issuer:
        running = launch(module, jwt_env(issuer))
        warmed_up(issuer, module)
        assert running.get("/me", issuer.mint()).status_code == 200
        fetches = issuer.jwks_requests
        issuer.rotate()
        response = running.get("/me", issuer.mint(subject="after-rotation"))
        assert response.status_code == 200  # the start-up fetch does not start a cooldown
        assert response.json()["sub"] == "after-rotation"
        assert issuer.jwks_requests == fetches + 1


@pytest.mark.parametrize("module", APPS)
def test_key_published_ahead_of_use_works_without_a_refetch(
    module: str, launch: Callable[..., Example]
) -> None:
    """A key in the JWKS before its first use is trusted without a refetch after warm-up."""
    # How IdPs rotate in practice: the next key is in the JWKS before anything is signed with it.
    with LocalIssuer(audience="api://rotation") as issuer:
        upcoming = generate_key("ES256")
        issuer.add_key(upcoming, publish=True)
        running = launch(module, jwt_env(issuer))
        fetches = warmed_up(issuer, module)
        assert fetches == WORKERS.get(module, 1)  # one warm-up per worker process
        issuer.add_key(upcoming, make_current=True)
        response = running.get("/me", issuer.mint(subject="next-key"))
        assert response.status_code == 200
        assert response.json()["sub"] == "next-key"
        assert issuer.jwks_requests == fetches


@pytest.mark.parametrize("module", ASGI_APPS)
@pytest.mark.parametrize("missing", ["JWT_ISSUER", "JWT_AUDIENCE"])
def test_example_refuses_to_start_without_its_settings(module: str, missing: str) -> None:
    """An ASGI example missing JWT_ISSUER or JWT_AUDIENCE exits naming it, without a traceback."""
    env: dict[str, Any] = {k: v for k, v in os.environ.items() if not k.startswith("JWT_")}
    env.update(JWT_ISSUER="http://127.0.0.1:9", JWT_AUDIENCE="api://x")
    del env[missing]
    result = subprocess.run(
        uvicorn_argv(f"{module}:app", free_port(), app_dir="examples"),
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode != 0
    assert missing in result.stderr
    assert "Traceback" not in result.stderr  # a clear message, not a crash


@pytest.mark.parametrize("app", [None, "starlette_app"])
def test_demo_check(app: str | None) -> None:
    """demo.py --check runs its four curl calls (three with a token) and gets 200, 401 and 403."""
    command = [sys.executable, "examples/demo.py", "--check", "--port", "0"]
    if app is not None:
        command += ["--app", app]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all answers as expected" in result.stdout
    curls = [line for line in result.stdout.splitlines() if line.startswith("curl -i ")]
    assert len(curls) == 4
    assert sum("Authorization: Bearer " in line for line in curls) == 3
    assert any(line.endswith("/me") and "Authorization" not in line for line in curls)
    for status in ("-> 200", "-> 401", "-> 403"):
        assert status in result.stdout
