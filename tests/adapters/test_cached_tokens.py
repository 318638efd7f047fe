"""The hot path: a token verified before is looked up by the digest of the header's bytes, before
any extraction or parsing. These cases hold a token in the cache first, then send it in every
way the full path would refuse, on both adapters (ASGI under Starlette's TestClient, WSGI under
werkzeug's test client) against a real key server."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.test import Client

from jwt_middleware import AuthError, JWTMiddleware, Reason, Settings, requires_scopes
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.observe import Counters
from jwt_middleware.revocation import MemoryRevocationStore
from jwt_middleware.testing import LocalIssuer
from tests.support.clock import FakeClock

Headers = list[tuple[str, str]]


class Answer:
    def __init__(self, status: int, body: bytes) -> None:
        self.status = status
        self.json: dict[str, Any] = json.loads(body) if body else {}


async def _me(request: Request) -> JSONResponse:
    user = request.user
    if not user.is_authenticated:
        return JSONResponse({"sub": None, "location": None})
    return JSONResponse({"sub": user.identity, "location": request.auth.location})


@requires_scopes("admin")
async def _admin(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity, "location": "admin"})


def _wsgi_me(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    token = get_token(environ)
    location = environ.get("jwt_middleware.location")
    body = json.dumps({"sub": token.subject if token else None, "location": location}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


@contextlib.contextmanager
def asgi_caller(settings: Settings) -> Iterator[Callable[..., Answer]]:
    app = Starlette(
        routes=[Route("/me", _me, methods=["GET", "POST"]), Route("/admin", _admin)],
        middleware=[Middleware(JWTMiddleware, settings=settings)],
    )
    with TestClient(app) as http:  # with: lifespan runs, so the key client is closed after

        def call(headers: Headers, method: str = "GET", path: str = "/me") -> Answer:
            response = http.request(method, path, headers=headers)
            return Answer(response.status_code, response.content)

        yield call


@contextlib.contextmanager
def wsgi_caller(settings: Settings) -> Iterator[Callable[..., Answer]]:
    middleware = JWTWSGIMiddleware(_wsgi_me, settings=settings)
    http = Client(middleware, use_cookies=False)  # cookies are sent as headers here
    try:

        def call(headers: Headers, method: str = "GET", path: str = "/me") -> Answer:
            # A WSGI server joins repeated headers with ", " (PEP 3333 leaves it to them).
            joined: dict[str, str] = {}
            for name, value in headers:
                key = name.lower()
                joined[key] = f"{joined[key]}, {value}" if key in joined else value
            response = http.open(path, method=method, headers=list(joined.items()))
            return Answer(response.status_code, response.data)

        yield call
    finally:
        middleware.close()


CALLERS = {"asgi": asgi_caller, "wsgi": wsgi_caller}


@pytest.fixture(params=sorted(CALLERS))
def adapter(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def open_caller(
    adapter: str, make_settings: Callable[..., Settings], clock: FakeClock
) -> Iterator[Callable[..., Callable[..., Answer]]]:
    """``open_caller(**settings)``: a caller for this adapter; closed at teardown."""
    with contextlib.ExitStack() as stack:

        def build(**overrides: Any) -> Callable[..., Answer]:
            overrides.setdefault("clock", clock)
            overrides.setdefault("expose_error_details", True)
            return stack.enter_context(CALLERS[adapter](make_settings(**overrides)))

        yield build


def warm(call: Callable[..., Answer], token: str, headers: Headers | None = None) -> None:
    """Send ``token`` until the cache holds it (it is admitted on its second verification)."""
    for _ in range(2):
        answer = call(headers if headers is not None else [("authorization", f"Bearer {token}")])
        assert answer.status == 200, answer.json


def test_a_cached_token_skips_the_signature_check(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock, signature_checks: list[str]
) -> None:
    events = Counters()
    call = open_caller(events=events)
    token = issuer.mint(now=clock.now, subject="alice")
    warm(call, token)
    for _ in range(5):
        answer = call([("authorization", f"Bearer {token}")])
        assert answer.status == 200
        assert answer.json == {"sub": "alice", "location": "header"}
    assert signature_checks == ["RS256", "RS256"]
    assert events.snapshot()["verified_cached"] == 5


@pytest.mark.parametrize(
    "spelling",
    ["bearer {}", "BEARER {}", "Bearer  {}", "Bearer {} ", " Bearer {}"],
    ids=["lower", "upper", "two-spaces", "trailing-space", "leading-space"],
)
def test_other_spellings_of_the_scheme_find_the_cached_token_too(
    spelling: str,
    open_caller: Any,
    issuer: LocalIssuer,
    clock: FakeClock,
    signature_checks: list[str],
) -> None:
    call = open_caller()
    token = issuer.mint(now=clock.now, subject="alice")
    warm(call, token)
    answer = call([("authorization", spelling.format(token))])
    assert answer.status == 200
    assert answer.json["sub"] == "alice"
    assert len(signature_checks) == 2  # the full path found the same cache entry


def test_two_authorization_headers_with_a_cached_token_are_400(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller()
    token = issuer.mint(now=clock.now)
    warm(call, token)
    answer = call([("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")])
    assert answer.status == 400
    assert answer.json["reason"] == Reason.MULTIPLE_TOKENS


def test_a_cached_token_in_header_and_cookie_is_400(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller(cookie="access_token")
    token = issuer.mint(now=clock.now)
    warm(call, token)
    answer = call([("authorization", f"Bearer {token}"), ("cookie", f"access_token={token}")])
    assert answer.status == 400
    assert answer.json["reason"] == Reason.MULTIPLE_TOKENS


def test_a_token_cached_from_the_cookie_is_not_taken_from_the_header_when_header_is_off(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller(cookie="access_token", header=False)
    token = issuer.mint(now=clock.now)
    warm(call, token, headers=[("cookie", f"access_token={token}")])
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json["reason"] == Reason.TOKEN_MISSING


def test_a_cached_cookie_token_still_gets_the_csrf_checks(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller(cookie="access_token")
    token = issuer.mint(now=clock.now, claims={"csrf": "c" * 32})
    warm(call, token, headers=[("cookie", f"access_token={token}")])
    answer = call(
        [("cookie", f"access_token={token}"), ("sec-fetch-site", "cross-site")], method="POST"
    )
    assert answer.status == 403
    assert answer.json["reason"] == Reason.CSRF_FAILED


def test_a_cached_token_expires(open_caller: Any, issuer: LocalIssuer, clock: FakeClock) -> None:
    call = open_caller()
    token = issuer.mint(now=clock.now, expires_in=300)
    warm(call, token)
    clock.advance(300 + 61)  # past exp and the 60 s leeway
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json["reason"] == Reason.EXPIRED


def test_a_cached_token_is_not_valid_before_nbf(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller(clock=lambda: clock.now)
    token = issuer.mint(now=clock.now, claims={"nbf": clock.now - 30})
    warm(call, token)
    clock.advance(-120)  # a clock stepped back: nbf is ahead again, beyond the leeway
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json["reason"] == Reason.NOT_YET_VALID


def test_a_revoked_cached_token_is_refused(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    store = MemoryRevocationStore(clock=clock)
    call = open_caller(revocation=store)
    token = issuer.mint(now=clock.now, claims={"jti": "j-1"})
    warm(call, token)
    store.revoke_token("j-1", expires_at=clock.now + 3600)
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json["reason"] == Reason.TOKEN_REVOKED


def test_a_token_one_character_away_from_a_cached_one_is_verified_in_full(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock, signature_checks: list[str]
) -> None:
    call = open_caller()
    token = issuer.mint(now=clock.now)
    warm(call, token)
    head, body, sig = token.split(".")
    middle = len(sig) // 2
    flipped = "A" if sig[middle] != "A" else "B"
    forged = f"{head}.{body}.{sig[:middle]}{flipped}{sig[middle + 1 :]}"
    answer = call([("authorization", f"Bearer {forged}")])
    assert answer.status == 401
    assert answer.json["reason"] == Reason.SIGNATURE_INVALID
    assert len(signature_checks) == 3


def test_a_cached_token_is_refused_once_its_key_leaves_the_jwks(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller(jwks_max_age=600)
    token = issuer.mint(now=clock.now, expires_in=7200)
    warm(call, token)
    issuer.rotate(retire_old=True)
    clock.advance(601)  # the cached key set is no longer fresh: the hot path stands aside
    # Stale keys are served while a background refresh runs; wait for it (bounded), then the
    # token whose key is gone is refused although its verification is still cached.
    deadline = time.monotonic() + 10
    seen: list[int] = []
    while time.monotonic() < deadline:
        answer = call([("authorization", f"Bearer {token}")])
        seen.append(answer.status)
        if answer.status != 200:
            break
        time.sleep(0.01)
    assert seen[-1] == 401, seen
    assert answer.json["reason"] == Reason.KID_UNKNOWN
    assert issuer.jwks_requests == 2


def test_a_public_path_does_not_authenticate_a_cached_token(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller(public_paths=["/me"])
    token = issuer.mint(now=clock.now, subject="alice")
    for _ in range(3):
        answer = call([("authorization", f"Bearer {token}")])
        assert answer.status == 200
        assert answer.json == {"sub": None, "location": None}


def test_scope_checks_apply_to_cached_tokens(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    errors: list[AuthError] = []
    settings = make_settings(clock=clock, on_error=errors.append)
    with asgi_caller(settings) as call:
        reader = issuer.mint(now=clock.now, scope="read")
        admin = issuer.mint(now=clock.now, scope="admin", subject="root")
        for _ in range(3):
            assert call([("authorization", f"Bearer {reader}")], path="/admin").status == 403
            ok = call([("authorization", f"Bearer {admin}")], path="/admin")
            assert ok.status == 200 and ok.json["sub"] == "root"
    assert [e.reason for e in errors] == [Reason.INSUFFICIENT_SCOPE] * 3


class _BrokenOnHits(Counters):
    def verified(self, *, cached: bool) -> None:
        if cached:
            raise RuntimeError("metrics backend down")
        super().verified(cached=cached)


def test_a_raising_events_hook_on_a_hit_is_a_logged_401_not_a_500(
    open_caller: Any, issuer: LocalIssuer, clock: FakeClock
) -> None:
    call = open_caller(events=_BrokenOnHits())
    token = issuer.mint(now=clock.now)
    warm(call, token)
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json["reason"] == Reason.VERIFIER_ERROR
