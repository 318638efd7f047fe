"""A small login service for the browser example: passwords, token cookies, refresh rotation.

This is example code, not part of ``jwt_middleware``: the library only *verifies* tokens. A real
deployment gets its tokens from an identity provider; this file shows what such a provider (or
a first-party login endpoint) has to do so that the middleware's cookie mode is safe.

* Passwords: ``hashlib.scrypt`` (n=2**14, r=8, p=1, 16-byte random salt, 64-byte key), compared
  with ``hmac.compare_digest``. Unknown users cost the same scrypt run (against a dummy hash),
  so response time does not tell which usernames exist.
* ``POST /auth/login`` (JSON ``{"username", "password"}``) sets two cookies and answers
  ``{"csrf": …}``:

  - ``__Host-access_token``: a 5-minute ES256 JWT (iss, aud, sub, iat, exp, jti, scope, csrf,
    sid), HttpOnly, Secure, SameSite=Strict, Path=/. Its ``csrf`` claim holds the same random
    value as the JSON answer: the page sends it back in ``X-CSRF-Token`` (double submit, bound
    to the token; the middleware compares them).
  - ``__Secure-refresh_token``: an opaque random string (not a JWT: only this service reads
    it), Path=/auth/refresh so the browser sends it nowhere else. ``__Host-`` would demand
    Path=/, hence ``__Secure-``. The server keeps only its SHA-256.

* ``POST /auth/refresh``: rotation. Each refresh token works once and yields a new access +
  refresh pair (and a new csrf value). Presenting an already-used one means two parties hold
  the token (theft): the whole family (every refresh token descended from that login) is
  revoked, and so are the subject's access tokens (``revoke_subject(sub, now)``), answer 401.
* ``POST /auth/logout`` (behind the middleware: needs the access cookie and the CSRF header):
  revokes the access token's ``jti`` until its ``exp``, revokes the refresh family (found by the
  token's ``sid`` claim, since the refresh cookie is not sent to this path), clears both cookies.

Every store is bounded, and a full one answers 503, never 500 and never a silent no-op:

* a user holds at most ``MAX_SESSIONS_PER_USER`` logins: the next login ends their oldest, so
  one account cannot fill the service; all users together at most ``MAX_FAMILIES`` live ones
  (a login beyond answers 503 rather than end another user's session); ended and expired
  logins are forgotten with their refresh tokens;
* a login remembers its last ``MAX_REFRESH_REMEMBERED`` refresh tokens; an older one, presented
  again, is merely unknown (401) instead of revoking the family as reuse;
* logout ends the refresh family first, then revokes the access token; when the revocation
  store cannot take it (full, or Redis down) the answer is 503 with Retry-After and the access
  cookie is kept, so the client can retry; the failure is logged;
* bodies above ``MAX_BODY`` bytes, JSON that is not an object or nests too deeply: 400.

Limits, on purpose (it is an example): users, refresh families and notes live in memory, in
one process (run one uvicorn worker); access-token revocations go to the middleware's store
(Redis when REDIS_URL is set, so several API processes could share them). There is no login
rate limiting or lockout; add it in front of ``/auth/login`` in a real service. Two tabs that
refresh at the same moment look like reuse and end the session (no grace window).
"""

from __future__ import annotations

import hashlib
import hmac
import inspect
import json
import logging
import os
import secrets
import sys
import time
import uuid
from collections import deque
from collections.abc import Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, NoReturn

from cachetools import TTLCache
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from jwt_middleware import requires_scopes
from jwt_middleware.cookies import clear_token_cookie, set_token_cookie
from jwt_middleware.revocation import RevocationStoreError
from jwt_middleware.testing import SigningKey

__all__ = [
    "ACCESS_COOKIE",
    "REFRESH_COOKIE",
    "REFRESH_PATH",
    "LoginService",
    "PasswordHash",
    "RefreshTokens",
    "SessionsFull",
    "Users",
    "demo_users",
    "hash_password",
    "read_json",
    "verify_password",
]

ACCESS_COOKIE = "__Host-access_token"
REFRESH_COOKIE = "__Secure-refresh_token"
REFRESH_PATH = "/auth/refresh"
ACCESS_TTL = 5 * 60  # seconds; the access cookie lives exactly as long as the token
REFRESH_TTL = 8 * 3600  # one refresh token, unused, expires after this
SESSION_TTL = 24 * 3600  # a login (refresh family) ends after this, however often refreshed
MAX_BODY = 4096
MAX_FAMILIES = 10_000  # live logins, all users together
MAX_SESSIONS_PER_USER = 10  # a user's next login ends their oldest
MAX_REFRESH_REMEMBERED = 16  # refresh tokens kept per login (the current one and used ones)
RETRY_AFTER = "30"  # seconds, on a 503

logger = logging.getLogger("login_service")

SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
SALT_BYTES, KEY_BYTES = 16, 64


# -- passwords ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class PasswordHash:
    salt: bytes = field(repr=False)
    key: bytes = field(repr=False)


def _scrypt(password: str, salt: bytes) -> bytes:
    return hashlib.scrypt(
        password.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=KEY_BYTES
    )


def hash_password(password: str) -> PasswordHash:
    salt = secrets.token_bytes(SALT_BYTES)
    return PasswordHash(salt, _scrypt(password, salt))


def verify_password(password: str, stored: PasswordHash) -> bool:
    return hmac.compare_digest(_scrypt(password, stored.salt), stored.key)


class Users:
    """Username → (password hash, scopes). In memory; a real service uses its database."""

    def __init__(self) -> None:
        self._users: dict[str, tuple[PasswordHash, tuple[str, ...]]] = {}
        # Unknown usernames are checked against this, so they cost one scrypt run too.
        self._dummy = hash_password(secrets.token_urlsafe(16))

    def add(self, username: str, password: str, scopes: Iterable[str] = ()) -> None:
        self._users[username] = (hash_password(password), tuple(scopes))

    def authenticate(self, username: str, password: str) -> tuple[str, ...] | None:
        """The user's scopes, or None. Same work whether or not the user exists."""
        entry = self._users.get(username)
        stored = entry[0] if entry is not None else self._dummy
        ok = verify_password(password, stored)
        return entry[1] if ok and entry is not None else None


def demo_users() -> Users:
    """One demo user, ``alice``, with the password from DEMO_PASSWORD (or a random one, printed).

    A demo account: never ship a default password. The random default is printed on stderr.
    """
    password = os.environ.get("DEMO_PASSWORD")
    if not password:
        password = secrets.token_urlsafe(12)
        print(
            f"login_service: demo user 'alice', password {password!r} "
            "(set DEMO_PASSWORD to choose it)",
            file=sys.stderr,
            flush=True,
        )
    users = Users()
    users.add("alice", password, scopes=("profile", "notes:write"))
    return users


# -- refresh tokens ----------------------------------------------------------------------------


class RefreshRejected(Exception):
    """The refresh token is unknown, expired, or its family was revoked."""


class RefreshReused(RefreshRejected):
    """An already-used refresh token came back: its family has just been revoked."""

    def __init__(self, sub: str) -> None:
        super().__init__(sub)
        self.sub = sub


class SessionsFull(Exception):
    """The store holds its maximum of live logins: a new one is refused (503), none forgotten."""


@dataclass
class Family:
    """One login: every refresh token rotated from it shares the family."""

    id: str
    sub: str
    scopes: tuple[str, ...]
    ends_at: float
    hashes: deque[bytes] = field(default_factory=deque)  # oldest first


@dataclass
class _Refresh:
    family: Family
    expires_at: float
    used: bool = False


def _digest(token: str) -> bytes:
    # The tokens are 256 random bits: a plain SHA-256 suffices (no salt or stretching needed).
    return hashlib.sha256(token.encode("utf-8")).digest()


class _Families(TTLCache[str, Family]):
    """Live logins, each dropped SESSION_TTL after it began (``forget`` then drops its tokens).
    Full means full: a cache would evict the least recently used login to make room, which
    would let anyone with an account log other users out by logging in often."""

    def __init__(
        self, maxsize: int, clock: Callable[[], float], forget: Callable[[Family], None]
    ) -> None:
        super().__init__(maxsize, SESSION_TTL, timer=clock)
        self._forget = forget

    def expire(self, time: float | None = None) -> list[tuple[str, Family]]:
        expired = list(super().expire(time))
        for _, family in expired:
            self._forget(family)
        return expired

    def popitem(self) -> NoReturn:
        raise SessionsFull(f"{self.maxsize} live sessions")


class RefreshTokens:
    """Opaque one-time refresh tokens, stored as SHA-256 digests (a leaked table is useless).

    Bounded: at most ``max_sessions`` live logins, ``per_user`` of them per user (a new login
    ends the user's oldest), ``remembered`` refresh tokens per login. Not thread-safe and not
    awaited in between: every method runs to completion on the event loop, so a token cannot
    be used twice concurrently.
    """

    def __init__(
        self,
        clock: Callable[[], float] = time.time,
        *,
        max_sessions: int = MAX_FAMILIES,
        per_user: int = MAX_SESSIONS_PER_USER,
        remembered: int = MAX_REFRESH_REMEMBERED,
    ) -> None:
        if min(max_sessions, per_user, remembered) < 1:
            raise ValueError("max_sessions, per_user and remembered must be >= 1")
        self.clock = clock
        self.per_user = per_user
        self.remembered = remembered
        self._tokens: dict[bytes, _Refresh] = {}
        self._by_user: dict[str, list[str]] = {}  # sub -> family ids, oldest first
        self._families = _Families(max_sessions, clock, self._forget)

    def sizes(self) -> tuple[int, int]:
        """``(live logins, refresh tokens)`` held."""
        self._families.expire()
        return len(self._families), len(self._tokens)

    def start(self, sub: str, scopes: tuple[str, ...]) -> tuple[Family, str]:
        """A new family for a fresh login, with its first refresh token. Raises SessionsFull."""
        now = self.clock()
        self._families.expire(now)
        mine = self._by_user.get(sub, [])
        while len(mine) >= self.per_user:
            self.revoke(mine[0])
        family = Family(uuid.uuid4().hex, sub, scopes, now + SESSION_TTL)
        self._families[family.id] = family
        self._by_user.setdefault(sub, []).append(family.id)
        return family, self._issue(family, now)

    def rotate(self, token: str) -> tuple[Family, str]:
        """Use ``token`` once: its family and the next refresh token. Raises RefreshRejected,
        or RefreshReused (after revoking the family) when the token was used before."""
        now = self.clock()
        self._families.expire(now)
        entry = self._tokens.get(_digest(token))
        if entry is None:
            raise RefreshRejected("unknown")
        family = entry.family
        if now >= family.ends_at or now >= entry.expires_at:
            raise RefreshRejected("expired")
        if entry.used:
            self.revoke(family.id)
            raise RefreshReused(family.sub)
        entry.used = True
        return family, self._issue(family, now)

    def revoke(self, family_id: str) -> None:
        """End a login: its refresh tokens are forgotten, so any of them is unknown from now."""
        family = self._families.pop(family_id, None)
        if family is not None:
            self._forget(family)

    def _forget(self, family: Family) -> None:
        for digest in family.hashes:
            self._tokens.pop(digest, None)
        family.hashes.clear()
        mine = self._by_user.get(family.sub, [])
        if family.id in mine:
            mine.remove(family.id)
        if not mine:
            self._by_user.pop(family.sub, None)

    def _issue(self, family: Family, now: float) -> str:
        token = secrets.token_urlsafe(32)
        digest = _digest(token)
        family.hashes.append(digest)
        if len(family.hashes) > self.remembered:
            self._tokens.pop(family.hashes.popleft(), None)
        self._tokens[digest] = _Refresh(family, min(now + REFRESH_TTL, family.ends_at))
        return token


# -- the routes --------------------------------------------------------------------------------


async def _call(result: Any) -> None:
    """Revocation stores are sync (memory, Redis) or async (Redis on asyncio)."""
    if inspect.isawaitable(result):
        await result


async def read_json(request: Request, limit: int = MAX_BODY) -> Any:
    """The JSON body, read up to ``limit`` bytes (ValueError beyond, when not JSON, or when it
    nests too deeply to parse)."""
    body = b""
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise ValueError("body too large")
    try:
        return json.loads(body)
    except RecursionError:
        # "[[[[…" within the size limit exhausts the parser's stack: bad input, not a crash.
        raise ValueError("JSON nested too deeply") from None


def _error(status: int, error: str) -> JSONResponse:
    headers = {"cache-control": "no-store"}
    if status == 503:
        headers["retry-after"] = RETRY_AFTER
    return JSONResponse({"error": error}, status_code=status, headers=headers)


class LoginService:
    """The login, refresh and logout routes, signing with ``key`` and revoking in ``revocation``
    (the same store the middleware checks)."""

    def __init__(
        self,
        *,
        key: SigningKey,
        issuer: str,
        audience: str,
        revocation: Any,
        allowed_origins: Collection[str],
        users: Users,
        clock: Callable[[], float] = time.time,
        refresh_tokens: RefreshTokens | None = None,
    ) -> None:
        self.key = key
        self.issuer = issuer
        self.audience = audience
        self.revocation = revocation
        self.allowed_origins = frozenset(o.rstrip("/").lower() for o in allowed_origins)
        self.users = users
        self.clock = clock
        self.refresh_tokens = RefreshTokens(clock) if refresh_tokens is None else refresh_tokens

    @property
    def routes(self) -> list[Route]:
        return [
            Route("/auth/login", self.login, methods=["POST"]),
            Route(REFRESH_PATH, self.refresh, methods=["POST"]),
            Route("/auth/logout", self.logout, methods=["POST"]),
        ]

    # login and refresh are public paths (no access token yet): they check the origin
    # themselves, so another site cannot log a visitor in (login CSRF) or rotate their tokens.
    def _cross_site(self, request: Request) -> bool:
        site = request.headers.get("sec-fetch-site")
        if site is not None and site not in ("same-origin", "none"):
            return True
        origin = request.headers.get("origin")
        return origin is not None and origin.rstrip("/").lower() not in self.allowed_origins

    async def login(self, request: Request) -> Response:
        if self._cross_site(request):
            return _error(403, "cross_site_request")
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            return _error(415, "json_expected")
        try:
            data = await read_json(request)
            username, password = data["username"], data["password"]
            if not isinstance(username, str) or not isinstance(password, str):
                raise ValueError("not strings")
        except (ValueError, KeyError, TypeError):
            return _error(400, "invalid_request")
        scopes = await run_in_threadpool(self.users.authenticate, username, password)
        if scopes is None:
            return _error(401, "invalid_credentials")
        try:
            family, refresh = self.refresh_tokens.start(username, scopes)
        except SessionsFull as full:
            logger.warning("login_service: login refused, session store full (%s)", full)
            return _error(503, "temporarily_unavailable")
        return self._session(family, refresh)

    async def refresh(self, request: Request) -> Response:
        if self._cross_site(request):
            return _error(403, "cross_site_request")
        token = request.cookies.get(REFRESH_COOKIE)
        if not token:
            return _error(401, "no_refresh_token")
        try:
            family, refresh = self.refresh_tokens.rotate(token)
        except RefreshReused as reused:
            # Theft: someone else holds (or held) this session. End it, and every access token
            # of the subject issued until now ("log out everywhere"; other logins can refresh).
            try:
                await _call(self.revocation.revoke_subject(reused.sub, self.clock()))
            except RevocationStoreError as exc:
                # The session is over (its family is gone), but its access tokens live until
                # they expire: say so rather than claim the subject was logged out.
                logger.error(
                    "login_service: refresh token reuse for %r; its access tokens could not be "
                    "revoked (%s) and stay valid until they expire",
                    reused.sub,
                    exc,
                )
                return self._cleared(_error(503, "revocation_unavailable"))
            return self._cleared(_error(401, "refresh_token_reused"))
        except RefreshRejected:
            return self._cleared(_error(401, "invalid_refresh_token"))
        return self._session(family, refresh)

    @requires_scopes()  # the middleware verified the access cookie and the CSRF header
    async def logout(self, request: Request) -> Response:
        claims = request.user.claims
        sid = claims.get("sid")
        if isinstance(sid, str):
            self.refresh_tokens.revoke(sid)  # first: nothing can renew the session from here on
        try:
            await _call(self.revocation.revoke_token(claims["jti"], float(claims["exp"])))
        except RevocationStoreError as exc:
            # Never answer "logged out" while the access token still works. The cookies stay,
            # so the client can try again (the session can no longer be refreshed).
            logger.error(
                "login_service: logout of %r failed, its access token could not be revoked (%s)",
                request.user.identity,
                exc,
            )
            return _error(503, "logout_failed")
        return self._cleared(JSONResponse({"ok": True}, headers={"cache-control": "no-store"}))

    def _session(self, family: Family, refresh: str) -> Response:
        csrf = secrets.token_urlsafe(32)
        now = self.clock()
        claims = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": family.sub,
            # A fractional iat (RFC 7519 allows it) so revoke_subject(sub, now) never catches a
            # token issued later in the same second.
            "iat": now,
            "exp": int(now) + ACCESS_TTL,
            "jti": secrets.token_urlsafe(16),
            "scope": " ".join(family.scopes),
            "csrf": csrf,
            "sid": family.id,
        }
        access = self.key.sign(claims)
        response = JSONResponse(
            {"csrf": csrf, "sub": family.sub, "expires_in": ACCESS_TTL},
            headers={"cache-control": "no-store"},
        )
        set_token_cookie(response, access, max_age=ACCESS_TTL, name=ACCESS_COOKIE)
        refresh_age = max(1, int(min(REFRESH_TTL, family.ends_at - now)))
        set_token_cookie(
            response, refresh, max_age=refresh_age, name=REFRESH_COOKIE, path=REFRESH_PATH
        )
        return response

    @staticmethod
    def _cleared(response: Response) -> Response:
        clear_token_cookie(response, name=ACCESS_COOKIE)
        clear_token_cookie(response, name=REFRESH_COOKIE, path=REFRESH_PATH)
        return response
