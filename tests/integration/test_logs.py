"""Refusal reasons reach the server's console with no logging configured (a default uvicorn
or gunicorn start), never with the token; configured logging takes over."""

from __future__ import annotations

import io
import logging
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest

from jwt_middleware import _logs
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import AppServer, gunicorn_argv, jwt_env, uvicorn_argv

STARTS: dict[str, Callable[[int], list[str]]] = {
    "uvicorn": lambda port: uvicorn_argv("fastapi_app:app", port, app_dir="examples"),
    "gunicorn": lambda port: gunicorn_argv("flask_app:app", port, chdir="examples"),
}


@pytest.mark.parametrize("server", sorted(STARTS))
def test_a_default_server_start_shows_why_a_token_was_refused(
    issuer: LocalIssuer, tmp_path: Path, server: str
) -> None:
    """uvicorn/gunicorn with no logging options: an expired token's reason is on the console,
    the token is not."""
    token = issuer.mint(expires_in=-3600)
    with AppServer(server, STARTS[server], env=jwt_env(issuer), log=tmp_path / "log") as app:
        app.wait_ready()
        reply = httpx.get(f"{app.url}/me", headers={"authorization": f"Bearer {token}"})
        assert reply.status_code == 401
        deadline = time.monotonic() + 10
        while "token_expired" not in app.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        output = app.output()
    assert "jwt_middleware: refused http '/me': token_expired" in output
    assert token not in output and token.split(".")[2] not in output


def unconfigure(monkeypatch: pytest.MonkeyPatch) -> logging.Logger:
    """The logging of a process that configured none: pytest's own root handlers removed (in
    the test body: pytest adds its capture handler after the fixtures ran)."""
    package = logging.getLogger("jwt_middleware")
    monkeypatch.setattr(logging.getLogger(), "handlers", [])
    monkeypatch.setattr(package, "handlers", [])
    monkeypatch.setattr(package, "level", logging.NOTSET)
    return package


def test_the_fallback_handler_steps_aside_once_logging_is_configured(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Installed once, at INFO, it writes until the root logger gets a handler of its own."""
    unconfigured = unconfigure(monkeypatch)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)  # the sys module _logs writes through
    _logs.show_refusals_by_default()
    _logs.show_refusals_by_default()
    assert len(unconfigured.handlers) == 1 and unconfigured.level == logging.INFO
    unconfigured.info("jwt_middleware: refused http '/me': token_expired")
    assert stream.getvalue() == "INFO:  jwt_middleware: refused http '/me': token_expired\n"
    theirs = io.StringIO()
    logging.getLogger().addHandler(logging.StreamHandler(theirs))
    unconfigured.info("jwt_middleware: refused http '/me': token_revoked")
    assert "token_revoked" in theirs.getvalue() and "token_revoked" not in stream.getvalue()


@pytest.mark.parametrize("configured", ["root handler", "package handler", "package level"])
def test_configured_logging_is_left_alone(monkeypatch: pytest.MonkeyPatch, configured: str) -> None:
    """Any handler on the root or package logger, or a level on the package logger, means the
    app configured logging: no handler is added."""
    unconfigured = unconfigure(monkeypatch)
    if configured == "root handler":
        logging.getLogger().addHandler(logging.NullHandler())
    elif configured == "package handler":
        unconfigured.addHandler(logging.NullHandler())
    else:
        unconfigured.setLevel(logging.WARNING)
    before = list(unconfigured.handlers)
    _logs.show_refusals_by_default()
    assert unconfigured.handlers == before
