"""The hot path: a token verified before is looked up by the digest of the header's bytes, before
any extraction or parsing. These cases hold a token in the cache first, then send it in every
way the full path would refuse, on both adapters (ASGI under Starlette's TestClient, WSGI under
werkzeug's test client) against a real key server."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import AuthError, Reason, Settings, requires_scopes
from jwt_middleware._wsgi import get_token
from jwt_middleware.observe import Counters
from jwt_middleware.revocation import MemoryRevocationStore
from jwt_middleware.testing import LocalIssuer
from tests.support.clock import FakeClock
from tests.support.servers import Answer, InProcess

Headers = list[tuple[str, str]]


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


ROUTES = [Route("/me", _me, methods=["GET", "POST"]), Route("/admin", _admin)]


class Caller:
    """``call(headers, method="GET", path="/me")`` on ``app``: the headers are sent as given
    (cookies as a header, names may repeat)."""

    def __init__(self, app: InProcess) -> None:
        self.app = app

    def __call__(self, headers: Headers, method: str = "GET", path: str = "/me") -> Answer:
        return self.app.request(method, path, headers)


@pytest.fixture
def open_caller(
    in_process: Callable[..., InProcess], make_settings: Callable[..., Settings], clock: FakeClock
) -> Callable[..., Caller]:
    """``open_caller(**settings)``: a caller for the ``adapter`` under test; closed at teardown."""

    def build(**overrides: Any) -> Caller:
        overrides.setdefault("clock", clock)
        overrides.setdefault("expose_error_details", True)
        settings = make_settings(**overrides)
        return Caller(in_process(settings, routes=ROUTES, wsgi_app=_wsgi_me, use_cookies=False))

    return build


def warm(call: Caller, token: str, headers: Headers | None = None) -> None:
    """Send ``token`` until the cache holds it (it is admitted on its second verification)."""
    for _ in range(2):
        answer = call(headers if headers is not None else [("authorization", f"Bearer {token}")])
        assert answer.status == 200, answer.body


def test_a_cached_token_skips_the_signature_check(
    open_caller: Callable[..., Caller],
    issuer: LocalIssuer,
    clock: FakeClock,
    signature_checks: list[str],
) -> None:
    """After two full verifications a token is cached: further requests skip the signature check and
    count as verified_cached."""
    events = Counters()
    call = open_caller(events=events)
    token = issuer.mint(now=clock.now, subject="alice")
    warm(call, token)
    for _ in range(5):
        answer = call([("authorization", f"Bearer {token}")])
        assert answer.status == 200
        assert answer.json() == {"sub": "alice", "location": "header"}
    assert signature_checks == ["RS256", "RS256"]
    assert events.snapshot()["verified_cached"] == 5


@pytest.mark.parametrize(
    "spelling",
    ["bearer {}", "BEARER {}", "Bearer  {}", "Bearer {} ", " Bearer {}"],
    ids=["lower", "upper", "two-spaces", "trailing-space", "leading-space"],
)
def test_other_spellings_of_the_scheme_find_the_cached_token_too(
    spelling: str,
    open_caller: Callable[..., Caller],
    issuer: LocalIssuer,
    clock: FakeClock,
    signature_checks: list[str],
) -> None:
    """Another case or spacing of the Bearer scheme reaches the same cache entry, with no new
    signature check."""
    call = open_caller()
    token = issuer.mint(now=clock.now, subject="alice")
    warm(call, token)
    answer = call([("authorization", spelling.format(token))])
    assert answer.status == 200
    assert answer.json()["sub"] == "alice"
    assert len(signature_checks) == 2  # the full path found the same cache entry


def test_two_authorization_headers_with_a_cached_token_are_400(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """Two Authorization headers carrying a cached token are still a 400 multiple_tokens."""
    call = open_caller()
    token = issuer.mint(now=clock.now)
    warm(call, token)
    answer = call([("authorization", f"Bearer {token}"), ("authorization", f"Bearer {token}")])
    assert answer.status == 400
    assert answer.json()["reason"] == Reason.MULTIPLE_TOKENS


def test_a_cached_token_in_header_and_cookie_is_400(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """A cached token in both the header and the cookie is still a 400 multiple_tokens."""
    call = open_caller(cookie="access_token")
    token = issuer.mint(now=clock.now)
    warm(call, token)
    answer = call([("authorization", f"Bearer {token}"), ("cookie", f"access_token={token}")])
    assert answer.status == 400
    assert answer.json()["reason"] == Reason.MULTIPLE_TOKENS


def test_a_token_cached_from_the_cookie_is_not_taken_from_the_header_when_header_is_off(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """With header=False, a token cached from the cookie sent in the header is a 401
    token_missing."""
    call = open_caller(cookie="access_token", header=False)
    token = issuer.mint(now=clock.now)
    warm(call, token, headers=[("cookie", f"access_token={token}")])
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json()["reason"] == Reason.TOKEN_MISSING


def test_a_cached_cookie_token_still_gets_the_csrf_checks(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """A cached cookie token on a cross-site POST is still a 403 csrf_failed."""
    call = open_caller(cookie="access_token")
    token = issuer.mint(now=clock.now, claims={"csrf": "c" * 32})
    warm(call, token, headers=[("cookie", f"access_token={token}")])
    answer = call(
        [("cookie", f"access_token={token}"), ("sec-fetch-site", "cross-site")], method="POST"
    )
    assert answer.status == 403
    assert answer.json()["reason"] == Reason.CSRF_FAILED


def test_a_cached_token_expires(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """A cached token past exp plus the 60 s leeway is a 401 token_expired."""
    call = open_caller()
    token = issuer.mint(now=clock.now, expires_in=300)
    warm(call, token)
    clock.advance(300 + 61)  # past exp and the 60 s leeway
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json()["reason"] == Reason.EXPIRED


def test_a_cached_token_is_not_valid_before_nbf(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """A cached token is a 401 not_yet_valid once the clock steps back before its nbf."""
    call = open_caller(clock=lambda: clock.now)
    token = issuer.mint(now=clock.now, claims={"nbf": clock.now - 30})
    warm(call, token)
    clock.advance(-120)  # a clock stepped back: nbf is ahead again, beyond the leeway
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json()["reason"] == Reason.NOT_YET_VALID


def test_a_revoked_cached_token_is_refused(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """A cached token whose jti is revoked afterwards is a 401 token_revoked."""
    store = MemoryRevocationStore(clock=clock)
    call = open_caller(revocation=store)
    token = issuer.mint(now=clock.now, claims={"jti": "j-1"})
    warm(call, token)
    store.revoke_token("j-1", expires_at=clock.now + 3600)
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json()["reason"] == Reason.TOKEN_REVOKED


def test_a_token_one_character_away_from_a_cached_one_is_verified_in_full(
    open_caller: Callable[..., Caller],
    issuer: LocalIssuer,
    clock: FakeClock,
    signature_checks: list[str],
) -> None:
    """A token one signature character away from a cached one is verified in full: 401
    signature_invalid."""
    call = open_caller()
    token = issuer.mint(now=clock.now)
    warm(call, token)
    head, body, sig = token.split(".")
    middle = len(sig) // 2
    flipped = "A" if sig[middle] != "A" else "B"
    forged = f"{head}.{body}.{sig[:middle]}{flipped}{sig[middle + 1 :]}"
    answer = call([("authorization", f"Bearer {forged}")])
    assert answer.status == 401
    assert answer.json()["reason"] == Reason.SIGNATURE_INVALID
    assert len(signature_checks) == 3


def test_a_cached_token_is_refused_once_its_key_leaves_the_jwks(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """Once the key set is stale and the refetched JWKS drops its key, a cached token is a 401
    kid_unknown after one refetch."""
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
    assert answer.json()["reason"] == Reason.KID_UNKNOWN
    assert issuer.jwks_requests == 2


def test_a_public_path_does_not_authenticate_a_cached_token(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """On a public path a valid (even repeated) token authenticates no one: the app sees no user."""
    call = open_caller(public_paths=["/me"])
    token = issuer.mint(now=clock.now, subject="alice")
    for _ in range(3):
        answer = call([("authorization", f"Bearer {token}")])
        assert answer.status == 200
        assert answer.json() == {"sub": None, "location": None}


def test_scope_checks_apply_to_cached_tokens(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """requires_scopes refuses a cached token lacking the scope with 403 every time (ASGI only)."""
    errors: list[AuthError] = []
    settings = make_settings(clock=clock, on_error=errors.append)
    with InProcess("asgi", settings, routes=ROUTES, wsgi_app=_wsgi_me) as app:
        call = Caller(app)
        reader = issuer.mint(now=clock.now, scope="read")
        admin = issuer.mint(now=clock.now, scope="admin", subject="root")
        for _ in range(3):
            assert call([("authorization", f"Bearer {reader}")], path="/admin").status == 403
            ok = call([("authorization", f"Bearer {admin}")], path="/admin")
            assert ok.status == 200 and ok.json()["sub"] == "root"
    assert [e.reason for e in errors] == [Reason.INSUFFICIENT_SCOPE] * 3


class _BrokenOnHits(Counters):
    def verified(self, *, cached: bool) -> None:
        if cached:
            raise RuntimeError("metrics backend down")
        super().verified(cached=cached)


def test_a_raising_events_hook_on_a_hit_is_a_logged_401_not_a_500(
    open_caller: Callable[..., Caller], issuer: LocalIssuer, clock: FakeClock
) -> None:
    """An events hook that raises on a cache hit turns the request into a 401 verifier_error, not
    a 500."""
    call = open_caller(events=_BrokenOnHits())
    token = issuer.mint(now=clock.now)
    warm(call, token)
    answer = call([("authorization", f"Bearer {token}")])
    assert answer.status == 401
    assert answer.json()["reason"] == Reason.VERIFIER_ERROR
