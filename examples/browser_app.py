"""A browser app: a login page, token cookies, CSRF protection and refresh rotation.

    DEMO_PASSWORD=change-me uvicorn --app-dir examples browser_app:app --port 8001

then open http://127.0.0.1:8001/ and log in as ``alice`` (without DEMO_PASSWORD a random
password is printed at start). Open exactly APP_ORIGIN (default http://127.0.0.1:8001, set it
when you use another host or port): state-changing requests from any other origin are refused.

Environment:

APP_ORIGIN     this app's origin, as the browser sees it (default http://127.0.0.1:8001)
DEMO_PASSWORD  the demo user's password (default: random, printed)
REDIS_URL      keep access-token revocations in Redis (default: in this process's memory)

The page (examples/static/) keeps the CSRF value in a JavaScript variable; the tokens are in
HttpOnly cookies it cannot read. The login service (login_service.py) issues the tokens;
JWTMiddleware verifies them on every request outside ``PUBLIC_PATHS``. Cookies are ``Secure``:
browsers accept them over plain http only on loopback (127.0.0.1, localhost); anywhere else,
serve over https.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

from login_service import ACCESS_COOKIE, LoginService, demo_users, read_json
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from jwt_middleware import JWTMiddleware, Key, requires_scopes
from jwt_middleware.revocation import AsyncRedisRevocationStore, MemoryRevocationStore
from jwt_middleware.testing import SigningKey, generate_key

STATIC = Path(__file__).resolve().parent / "static"
APP_ORIGIN = os.environ.get("APP_ORIGIN", "http://127.0.0.1:8001").rstrip("/")
ISSUER = f"{APP_ORIGIN}/auth"
AUDIENCE = "api://browser-example"
PUBLIC_PATHS = {"/", "/auth/login", "/auth/refresh", "/static/*", "/health"}

# No inline script or style, nothing from other origins, no framing.
SECURITY_HEADERS = [
    (
        b"content-security-policy",
        b"default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
        b"connect-src 'self'; form-action 'self'; base-uri 'none'; frame-ancestors 'none'",
    ),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
]


class SecurityHeaders:
    """Adds SECURITY_HEADERS to every HTTP response, refusals from JWTMiddleware included."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", []), *SECURITY_HEADERS]}
            await send(message)

        await self.app(scope, receive, send_with_headers)


def revocation_store() -> Any:
    url = os.environ.get("REDIS_URL")
    return AsyncRedisRevocationStore.from_url(url) if url else MemoryRevocationStore()


async def index(request: Request) -> FileResponse:
    return FileResponse(STATIC / "index.html", headers={"cache-control": "no-cache"})


async def health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


@requires_scopes()
async def me(request: Request) -> JSONResponse:
    return JSONResponse(
        {"sub": request.user.identity, "scopes": list(request.auth.scopes)},
        headers={"cache-control": "no-store"},
    )


class Notes:
    """Each user's last MAX_NOTES notes, in memory (bounded by the users the service knows)."""

    MAX_NOTES = 100

    def __init__(self) -> None:
        self._notes: dict[str, list[dict[str, Any]]] = {}
        self._ids = itertools.count(1)

    @requires_scopes("notes:write")
    async def add(self, request: Request) -> JSONResponse:
        try:
            data = await read_json(request)
            text = data["text"]
            if not isinstance(text, str) or not 0 < len(text) <= 500:
                raise ValueError("text")
        except (ValueError, KeyError, TypeError):
            return JSONResponse({"error": "invalid_request"}, status_code=400)
        mine = self._notes.setdefault(request.user.identity, [])
        if len(mine) >= self.MAX_NOTES:
            del mine[0]
        note = {"id": next(self._ids), "text": text}
        mine.append(note)
        return JSONResponse(note, status_code=201, headers={"cache-control": "no-store"})


def build_app(login: LoginService, *, key: SigningKey, revocation: Any) -> Starlette:
    """The browser app around ``login`` (which signs with ``key`` and revokes in
    ``revocation``, the store the middleware checks)."""
    return Starlette(
        routes=[
            Route("/", index),
            Route("/health", health),
            Route("/api/me", me),
            Route("/api/notes", Notes().add, methods=["POST"]),
            *login.routes,
            Mount("/static", StaticFiles(directory=STATIC), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                JWTMiddleware,
                issuer=ISSUER,
                audience=AUDIENCE,
                keys=[Key.from_pem(key.public_pem(), kid=key.kid)],
                algorithms=["ES256"],
                required_claims=["sub", "jti", "iat", "csrf"],
                max_lifetime=3600,
                cookie=ACCESS_COOKIE,
                header=True,
                allowed_origins=[APP_ORIGIN],
                revocation=revocation,
                public_paths=PUBLIC_PATHS,
            ),
        ],
    )


# The login service's signing key, new at every start (restarting logs everyone out). A real
# service loads its key from a secret store and publishes the public half as a JWKS.
signing_key = generate_key("ES256")
revocation = revocation_store()
login = LoginService(
    key=signing_key,
    issuer=ISSUER,
    audience=AUDIENCE,
    revocation=revocation,
    allowed_origins=[APP_ORIGIN],
    users=demo_users(),
)
app = build_app(login, key=signing_key, revocation=revocation)
