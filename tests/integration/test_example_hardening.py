"""The browser example's login service under hostile use: bad JSON, login floods, endless
refresh rotation, a full revocation store. Every answer is a 4xx or a 503, never a 500; every
store stays bounded; a logout never reports success without revoking.

The app is examples/browser_app.py's own ``build_app`` under a real uvicorn (in a thread), with
small limits so the tests reach them in a few requests.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import ModuleType
from typing import Any

import httpx
import pytest

from jwt_middleware.revocation import GRACE, MemoryRevocationStore
from jwt_middleware.testing import generate_key
from tests.support.clock import FakeClock
from tests.support.servers import ROOT, serve_asgi

__all__ = ["serve_asgi"]  # a fixture, used by name

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def examples() -> Iterator[tuple[ModuleType, ModuleType]]:
    """``(browser_app, login_service)``, imported as uvicorn --app-dir examples would."""
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(ROOT / "examples"))
        patch.setenv("DEMO_PASSWORD", PASSWORD)
        patch.delenv("REDIS_URL", raising=False)
        yield importlib.import_module("browser_app"), importlib.import_module("login_service")


@dataclass
class Site:
    """One running browser app, driven like its page does (cookies by hand: they are Secure)."""

    url: str
    origin: str
    login: Any  # login_service.LoginService

    def log_in(self, username: str = "alice", password: str = PASSWORD) -> httpx.Response:
        return httpx.post(
            f"{self.url}/auth/login",
            json={"username": username, "password": password},
            headers={"origin": self.origin},
            timeout=10,
        )

    def post(self, path: str, session: httpx.Response, body: bytes | None = None) -> httpx.Response:
        """POST with the cookies ``session`` (a login or refresh answer) set, and its CSRF
        value; ``body`` is sent as JSON."""
        headers = {"cookie": cookie_header(session), "origin": self.origin}
        headers["x-csrf-token"] = session.json()["csrf"]
        if body is not None:
            headers["content-type"] = "application/json"
        return httpx.post(f"{self.url}{path}", content=body, headers=headers, timeout=10)

    def me(self, session: httpx.Response) -> httpx.Response:
        return httpx.get(
            f"{self.url}/api/me", headers={"cookie": cookie_header(session)}, timeout=10
        )


@dataclass
class _Cookie:
    name: str
    value: str


def cookie_list(response: httpx.Response) -> list[_Cookie]:
    """The cookies ``response`` sets (name and value; attributes dropped)."""
    found = []
    for line in response.headers.get_list("set-cookie"):
        name, _, value = line.split(";", 1)[0].partition("=")
        found.append(_Cookie(name.strip(), value.strip()))
    return found


def cleared(response: httpx.Response, name: str) -> bool:
    return any(c.name == name and c.value in ("", '""') for c in cookie_list(response))


@pytest.fixture
def site(
    examples: tuple[ModuleType, ModuleType], serve_asgi: Callable[[Any], int]
) -> Callable[..., Site]:
    """``site(revocation=..., **limits)``: the browser app with its stores bounded by ``limits``
    (RefreshTokens' max_sessions, per_user, remembered), under uvicorn."""
    browser_app, login_service = examples

    def start(revocation: Any = None, **limits: int) -> Site:
        key = generate_key("ES256")
        revocation = MemoryRevocationStore() if revocation is None else revocation
        users = login_service.Users()
        users.add("alice", PASSWORD, scopes=("profile", "notes:write"))
        users.add("bob", PASSWORD, scopes=("profile",))
        login = login_service.LoginService(
            key=key,
            issuer=browser_app.ISSUER,
            audience=browser_app.AUDIENCE,
            revocation=revocation,
            allowed_origins=[browser_app.APP_ORIGIN],
            users=users,
            refresh_tokens=login_service.RefreshTokens(**limits),
        )
        app = browser_app.build_app(login, key=key, revocation=revocation)
        return Site(f"http://127.0.0.1:{serve_asgi(app)}", browser_app.APP_ORIGIN, login)

    return start


def nested(depth: int) -> bytes:
    return b'{"username": ' + b"[" * depth + b"]" * depth + b', "password": "x"}'


def test_deeply_nested_json_is_a_400(site: Callable[..., Site]) -> None:
    """JSON nested past the parser's stack (within the size limit) is refused 400, not 500."""
    running = site()
    for body in (b"[" * 4000, nested(2000), b'{"text": ' + b"[" * 3000):
        assert len(body) <= 4096
        response = httpx.post(
            f"{running.url}/auth/login",
            content=body,
            headers={"content-type": "application/json", "origin": running.origin},
            timeout=10,
        )
        assert response.status_code == 400, body[:20]
        assert response.json() == {"error": "invalid_request"}
    session = running.log_in()
    assert running.post("/api/notes", session, b'{"text": "hello"}').status_code == 201
    assert running.post("/api/notes", session, b'{"text": ' + b"[" * 3000).status_code == 400


def test_a_login_flood_by_one_user_keeps_logins_working(site: Callable[..., Site]) -> None:
    """Logging in again and again ends the user's oldest logins: later logins still get 200."""
    running = site(max_sessions=3, per_user=2)
    first = running.log_in()
    answers = [running.log_in().status_code for _ in range(5)]
    assert first.status_code == 200
    assert answers == [200] * 5
    assert running.login.refresh_tokens.sizes() == (2, 2)
    # The first login was ended to make room: its refresh token is now unknown.
    refreshed = running.post("/auth/refresh", first)
    assert refreshed.status_code == 401
    assert refreshed.json() == {"error": "invalid_refresh_token"}


def test_a_full_session_store_answers_503_and_ends_no_other_login(
    site: Callable[..., Site],
) -> None:
    """All users together at the cap: a new login is 503 with Retry-After; others keep theirs."""
    running = site(max_sessions=2, per_user=2)
    alice = [running.log_in("alice") for _ in range(2)]
    refused = running.log_in("bob")
    assert refused.status_code == 503
    assert refused.headers["retry-after"].isdigit()
    assert refused.json() == {"error": "temporarily_unavailable"}
    assert not cookie_list(refused)
    assert [running.post("/auth/refresh", s).status_code for s in alice] == [200, 200]


def test_refresh_rotation_state_stays_bounded(examples: tuple[ModuleType, ModuleType]) -> None:
    """Endless rotation keeps ``remembered`` tokens per login, and an ended login keeps none."""
    _, login_service = examples
    clock = FakeClock()
    tokens = login_service.RefreshTokens(clock, remembered=4)
    _, token = tokens.start("alice", ("profile",))
    used = []
    for _ in range(100):
        used.append(token)
        _, token = tokens.rotate(token)
        clock.advance(60)
    assert tokens.sizes() == (1, 4)
    with pytest.raises(login_service.RefreshRejected) as old:
        tokens.rotate(used[0])  # forgotten: unknown, not reuse
    assert type(old.value) is login_service.RefreshRejected
    with pytest.raises(login_service.RefreshReused):
        tokens.rotate(used[-1])  # remembered: reuse, and the family ends
    assert tokens.sizes() == (0, 0)
    tokens.start("alice", ())
    clock.advance(login_service.SESSION_TTL)
    assert tokens.sizes() == (0, 0)  # an expired login is forgotten with its tokens


def test_logout_with_a_full_revocation_store_is_a_503_not_a_silent_no_op(
    site: Callable[..., Site], caplog: pytest.LogCaptureFixture
) -> None:
    """A logout the store cannot record answers 503, keeps the access cookie for a retry, and
    logs why; once the store has room the retry revokes the token."""
    clock = FakeClock(time.time())  # the store's clock; the middleware checks exp on its own
    store = MemoryRevocationStore(max_entries=1, clock=clock)
    store.revoke_token("filler", clock.now + 10)  # the store is full
    running = site(revocation=store)
    session = running.log_in()
    with caplog.at_level(logging.ERROR, logger="login_service"):
        failed = running.post("/auth/logout", session)
    assert failed.status_code == 503
    assert failed.headers["retry-after"].isdigit()
    assert failed.json() == {"error": "logout_failed"}
    assert not cleared(failed, "__Host-access_token")
    assert any("logout" in r.getMessage() and "full" in r.getMessage() for r in caplog.records)
    assert running.me(session).status_code == 200  # not revoked, and not claimed to be
    assert running.post("/auth/refresh", session).status_code == 401  # the session is ended
    clock.advance(10 + GRACE)  # the filler is forgotten: room for the retry
    retried = running.post("/auth/logout", session)
    assert retried.status_code == 200
    assert cleared(retried, "__Host-access_token")
    assert running.me(session).status_code == 401


def test_refresh_reuse_with_a_full_revocation_store_is_a_503(
    site: Callable[..., Site], caplog: pytest.LogCaptureFixture
) -> None:
    """Reuse detected while the store is full: 503 (the subject's tokens were not revoked)."""
    store = MemoryRevocationStore(max_entries=1)
    running = site(revocation=store)
    other = running.log_in("bob")
    assert running.post("/auth/logout", other).status_code == 200  # the store is now full
    session = running.log_in()
    assert running.post("/auth/refresh", session).status_code == 200
    with caplog.at_level(logging.ERROR, logger="login_service"):
        reused = running.post("/auth/refresh", session)
    assert reused.status_code == 503
    assert reused.json() == {"error": "revocation_unavailable"}
    assert cleared(reused, "__Secure-refresh_token")
    assert any("reuse" in r.getMessage() for r in caplog.records)


def cookie_header(session: httpx.Response) -> str:
    return "; ".join(f"{c.name}={c.value}" for c in cookie_list(session))
