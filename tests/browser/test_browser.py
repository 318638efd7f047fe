"""The browser example end to end, in a real headless Chromium (Debian's, at /usr/bin/chromium).

examples/browser_app.py runs under uvicorn in a subprocess; Playwright drives its page: login
sets HttpOnly/Secure/SameSite=Strict cookies the page cannot read, the CSRF header is required
on a state-changing call, logout revokes the token server-side, and refresh tokens rotate, with
reuse ending the whole session. Without Chromium the tests skip, except in CI (CI=true): fail.
"""

from __future__ import annotations

import base64
import json
import os
import secrets
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.servers import AppServer, free_port, uvicorn_argv

ACCESS = "__Host-access_token"
REFRESH = "__Secure-refresh_token"
PASSWORD = secrets.token_urlsafe(12)
UI_TIMEOUT_MS = 10_000


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update(APP_ORIGIN=url, DEMO_PASSWORD=PASSWORD)
    with AppServer(
        "browser_app",
        lambda port: uvicorn_argv("browser_app:app", port, app_dir="examples"),
        env=env,
        log=tmp_path_factory.mktemp("browser_app") / "uvicorn.log",
        port=port,
    ) as app:
        app.wait_ready()
        yield url


@pytest.fixture
def context(browser: Any, server: str) -> Iterator[Any]:
    ctx = browser.new_context(base_url=server)
    ctx.set_default_timeout(UI_TIMEOUT_MS)
    try:
        yield ctx
    finally:
        ctx.close()


def expect_text(page: Any, selector: str, text: str) -> None:
    from playwright.sync_api import expect

    expect(page.locator(selector)).to_have_text(text, timeout=UI_TIMEOUT_MS)


def cookies(context: Any) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in context.cookies()}


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(
        base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))
    )
    return decoded


def log_in(context: Any) -> Any:
    page = context.new_page()
    page.goto("/")
    page.fill("#username", "alice")
    page.fill("#password", PASSWORD)
    page.click("#login-button")
    expect_text(page, "#login-status", "200")
    return page


FETCH = """async ([path, method, headers, data]) => {
    const init = {method, headers, credentials: "same-origin"};
    if (data !== null) {
        init.body = JSON.stringify(data);
        headers["content-type"] = "application/json";
    }
    const r = await fetch(path, init);
    let body = null;
    try { body = await r.json(); } catch (e) {}
    return {status: r.status, body};
}"""


def fetch(
    page: Any,
    path: str,
    method: str = "GET",
    headers: dict[str, str] | None = None,
    json: Any = None,
) -> Any:
    """fetch() from inside the page: same origin, the browser attaches the cookies."""
    return page.evaluate(FETCH, [path, method, headers or {}, json])


def test_login_csrf_and_logout(context: Any, server: str, tmp_path: Path) -> None:
    """Login sets HttpOnly Secure SameSite=Strict cookies, POSTs need the CSRF header, and logout
    revokes both tokens on the server.
    """
    page = log_in(context)

    # The tokens are HttpOnly: the page's scripts cannot see them, the browser holds them.
    assert "access_token" not in page.evaluate("document.cookie")
    assert "refresh_token" not in page.evaluate("document.cookie")
    jar = cookies(context)
    access = jar[ACCESS]
    assert (access["httpOnly"], access["secure"], access["sameSite"]) == (True, True, "Strict")
    assert access["path"] == "/"
    refresh = jar[REFRESH]
    assert (refresh["httpOnly"], refresh["secure"], refresh["sameSite"]) == (True, True, "Strict")
    assert refresh["path"] == "/auth/refresh"

    # Login loaded /api/me with the cookie.
    expect_text(page, "#me-status", "200")
    assert '"sub":"alice"' in page.text_content("#me-body")

    page.click("#post-nocsrf-button")
    expect_text(page, "#post-nocsrf-status", "403")
    page.click("#post-button")
    expect_text(page, "#post-status", "201")

    shot = tmp_path / "logged-in.png"
    page.screenshot(path=str(shot), full_page=True)
    data = shot.read_bytes()
    assert data.startswith(b"\x89PNG\r\n\x1a\n") and len(data) > 1000

    # Logout is behind the middleware: the cookie alone (no CSRF header) is refused.
    assert fetch(page, "/auth/logout", "POST")["status"] == 403
    page.click("#logout-button")
    expect_text(page, "#logout-status", "200")
    assert ACCESS not in cookies(context) and REFRESH not in cookies(context)
    page.click("#me-button")
    expect_text(page, "#me-status", "401")

    # Revoked on the server, not merely forgotten by the browser: a copy of the token is refused.
    stolen = {"cookie": f"{ACCESS}={access['value']}"}
    assert httpx.get(f"{server}/api/me", headers=stolen, timeout=10).status_code == 401
    bearer = {"authorization": f"Bearer {access['value']}"}
    assert httpx.get(f"{server}/api/me", headers=bearer, timeout=10).status_code == 401
    # ... and so is the refresh token of that login.
    old_refresh = {"cookie": f"{REFRESH}={refresh['value']}"}
    assert httpx.post(f"{server}/auth/refresh", headers=old_refresh, timeout=10).status_code == 401


def test_refresh_rotation_and_reuse(context: Any, server: str) -> None:
    """Refresh rotates both cookies and the CSRF value; replaying a used refresh token ends the
    session everywhere, and a new login works.
    """
    page = log_in(context)
    expect_text(page, "#me-status", "200")
    first = cookies(context)

    rotated = fetch(page, "/auth/refresh", "POST")
    assert rotated["status"] == 200
    csrf = rotated["body"]["csrf"]
    second = cookies(context)
    assert second[ACCESS]["value"] != first[ACCESS]["value"]
    assert second[REFRESH]["value"] != first[REFRESH]["value"]

    # The new access token works, with its new CSRF value.
    assert fetch(page, "/api/me")["status"] == 200
    note = {"text": "after refresh"}
    assert fetch(page, "/api/notes", "POST", {"x-csrf-token": csrf}, note)["status"] == 201
    old_csrf = {"x-csrf-token": claims(first[ACCESS]["value"])["csrf"]}
    assert old_csrf["x-csrf-token"] != csrf
    assert fetch(page, "/api/notes", "POST", old_csrf, note)["status"] == 403

    # Someone replays the first (already used) refresh token: the session ends everywhere.
    replay = {"cookie": f"{REFRESH}={first[REFRESH]['value']}"}
    reused = httpx.post(f"{server}/auth/refresh", headers=replay, timeout=10)
    assert reused.status_code == 401
    assert reused.json() == {"error": "refresh_token_reused"}
    assert fetch(page, "/auth/refresh", "POST")["status"] == 401  # the newer one is dead too
    assert fetch(page, "/api/me")["status"] == 401  # and so is the access token (revoke_subject)

    # A new login afterwards works (its iat is after the subject's cut-off).
    page.close()
    again = log_in(context)
    expect_text(again, "#me-status", "200")


def test_login_refusals(server: str) -> None:
    """Login refuses bad credentials (401), a missing field (400) and a cross-site origin (403)."""

    def login(body: dict[str, Any], **headers: str) -> httpx.Response:
        return httpx.post(f"{server}/auth/login", json=body, headers=headers, timeout=10)

    assert login({"username": "alice", "password": "wrong"}).status_code == 401
    assert login({"username": "nobody", "password": PASSWORD}).status_code == 401
    assert login({"username": "alice"}).status_code == 400
    ok = {"username": "alice", "password": PASSWORD}
    assert login(ok, origin="https://evil.example").status_code == 403
    assert login(ok, **{"sec-fetch-site": "cross-site"}).status_code == 403
    assert login(ok, origin=server).status_code == 200
    assert httpx.get(f"{server}/", timeout=10).status_code == 200  # the page is public
