"""The ASGI middleware for Starlette and FastAPI: ``app.add_middleware(JWTMiddleware, ...)``.

A pure ASGI middleware (not ``BaseHTTPMiddleware``): it reads ``scope["headers"]`` directly and
never wraps ``receive``/``send`` for HTTP, so streaming responses, background tasks and
contextvars pass through untouched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import AuthError, Unavailable
from .extract import COOKIE, HEADER, plain_bearer, plain_token
from .gate import Gate
from .identity import JWTCredentials, JWTUser
from .issuers import async_verifier
from .settings import Settings
from .verify import token_digest

__all__ = ["SCOPE_GATE", "JWTMiddleware", "send_refusal"]

#: The scope key holding the middleware's Gate (settings + reporting) for per-route decorators.
SCOPE_GATE = "jwt_middleware.gate"

# RFC 6455 §7.4.1: 1008 policy violation; 1013 try again later.
_WS_POLICY_VIOLATION = 1008
_WS_TRY_AGAIN_LATER = 1013


class JWTMiddleware:
    """Verify the bearer token of every HTTP request and WebSocket handshake.

    Pass a :class:`Settings` as ``settings=`` (a list of them for several issuers), or its fields
    as keyword arguments.
    On success ``scope["user"]`` is a :class:`JWTUser` and ``scope["auth"]`` a
    :class:`JWTCredentials`. On failure the app is never called: the client gets the RFC 6750
    answer (400/401/503, JSON body, ``WWW-Authenticate``), or a WebSocket close before accept.

    ``AuthError`` raised by the app before it starts its response (the scope decorators and
    FastAPI dependencies do this) is answered the same way.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | Sequence[Settings] | None = None,
        **options: Any,
    ) -> None:
        self.app = app
        self.settings, self.verifier = async_verifier(settings, options)
        self.gate = Gate(self.settings)
        # The hot path needs a token cache, and a header token (cookies need CSRF checks).
        self._plain = self.verifier.caches and self.settings.header
        self._cookie = self.gate.cookie
        # Whether any path skips verification (else only a CORS preflight can).
        self._public = bool(self.settings.public_paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = self._lifespan_receive(receive)
            await self.app(scope, receive, send)
            return
        gate = self.gate
        scope[SCOPE_GATE] = gate
        headers = scope["headers"]
        method = scope.get("method")
        try:
            if (method == "OPTIONS" or self._public) and gate.unchecked(
                method, scope["path"], headers
            ):
                _anonymous(scope)
            else:
                # The hot path: a plain "Bearer <token>" header is looked up by the digest of
                # the token as sent (a hit means these exact bytes were verified before), and a
                # well-formed one that misses is verified without a second extraction pass.
                # Everything else (a cookie, two headers, odd spacing) takes gate.token().
                verified = None
                location = HEADER
                plain = plain_bearer(headers, self._cookie) if self._plain else None
                if plain is not None:
                    digest = token_digest(plain)
                    verified = self.verifier.cached(digest)
                    if verified is None and (token := plain_token(plain)) is not None:
                        verified = await self.verifier.verify(token, digest)
                if verified is None and (found := gate.token(headers)) is not None:
                    token, location = found
                    verified = await self.verifier.verify(token)
                    if location == COOKIE:
                        gate.check_csrf(method, headers, verified, websocket=kind == "websocket")
                if verified is None:
                    _anonymous(scope)
                else:
                    scope["user"] = JWTUser(verified)
                    scope["auth"] = JWTCredentials(verified, location)
        except AuthError as exc:
            await self._refuse(exc, scope, send)
            return
        try:
            await self.app(scope, receive, send)
        except AuthError as exc:
            await self._refuse(exc, scope, send)

    async def _refuse(self, exc: AuthError, scope: Scope, send: Send) -> None:
        self.gate.report(exc, scope["type"], scope["path"])
        await send_refusal(exc, self.settings, scope, send)

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self.settings.warm_up:
                await self.verifier.warm_up()
            elif message["type"] == "lifespan.shutdown":
                await self.verifier.aclose()
            return message

        return wrapped


async def send_refusal(exc: AuthError, settings: Settings, scope: Scope, send: Send) -> None:
    """The RFC 6750 answer to ``exc`` (or a WebSocket close before accept)."""
    if scope["type"] == "websocket":
        code = _WS_TRY_AGAIN_LATER if isinstance(exc, Unavailable) else _WS_POLICY_VIOLATION
        await send({"type": "websocket.close", "code": code, "reason": exc.error or "unauthorized"})
        return
    expose = settings.expose_error_details
    body = exc.body(expose=expose)
    headers = exc.headers(settings.realm, expose=expose)
    headers.append((b"content-length", str(len(body)).encode()))
    await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _anonymous(scope: Scope) -> None:
    scope["user"] = UnauthenticatedUser()
    scope["auth"] = AuthCredentials()
