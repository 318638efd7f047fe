"""The ASGI middleware for Starlette and FastAPI: ``app.add_middleware(JWTMiddleware, ...)``.

A pure ASGI middleware (not ``BaseHTTPMiddleware``): it reads ``scope["headers"]`` directly and
never wraps ``receive``/``send`` for HTTP, so streaming responses, background tasks and
contextvars pass through untouched.
"""

from __future__ import annotations

import logging
from typing import Any

from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .errors import AuthError, ConfigurationError, KeysUnavailable, MissingToken
from .extract import extract_token
from .identity import JWTCredentials, JWTUser
from .settings import Settings
from .verify import AsyncVerifier

__all__ = ["JWTMiddleware"]

logger = logging.getLogger("jwt_middleware")

# RFC 6455 §7.4.1: 1008 policy violation; 1013 try again later.
_WS_POLICY_VIOLATION = 1008
_WS_TRY_AGAIN_LATER = 1013


class JWTMiddleware:
    """Verify the bearer token of every HTTP request and WebSocket handshake.

    Pass a :class:`Settings` as ``settings=``, or its fields as keyword arguments.
    On success ``scope["user"]`` is a :class:`JWTUser` and ``scope["auth"]`` a
    :class:`JWTCredentials`. On failure the app is never called: the client gets the RFC 6750
    answer (400/401/503, JSON body, ``WWW-Authenticate``), or a WebSocket close before accept.

    ``AuthError`` raised by the app before it starts its response (the scope decorators and
    FastAPI dependencies do this) is answered the same way.
    """

    def __init__(self, app: ASGIApp, *, settings: Settings | None = None, **options: Any) -> None:
        if settings is not None and options:
            raise ConfigurationError("pass either settings= or keyword options, not both")
        self.app = app
        self.settings = settings if settings is not None else Settings(**options)
        self.verifier = AsyncVerifier(self.settings)
        s = self.settings
        self._public = frozenset(p for p in s.public_paths if not p.endswith("*"))
        self._public_prefixes = tuple(p[:-1] for p in s.public_paths if p.endswith("*"))
        self._cookie = s.cookie.encode("ascii") if s.cookie is not None else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind == "lifespan":
            await self.app(scope, self._lifespan_receive(receive), send)
            return
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        if self._passes_unchecked(scope):
            _anonymous(scope)
            await self.app(scope, receive, send)
            return
        s = self.settings
        try:
            found = extract_token(scope["headers"], header=s.header, cookie=self._cookie)
            if found is None:
                if not s.anonymous:
                    raise MissingToken()
                _anonymous(scope)
            else:
                token, location = found
                verified = await self.verifier.verify(token)
                scope["user"] = JWTUser(verified)
                scope["auth"] = JWTCredentials(verified, location)
        except AuthError as exc:
            await self._refuse(exc, scope, send)
            return
        try:
            await self.app(scope, receive, send)
        except AuthError as exc:
            await self._refuse(exc, scope, send)

    def _passes_unchecked(self, scope: Scope) -> bool:
        path = scope["path"]
        if path in self._public or (
            self._public_prefixes and path.startswith(self._public_prefixes)
        ):
            return True
        if scope["type"] == "http" and scope["method"] == "OPTIONS":
            # CORS preflight carries no credentials by design (Fetch standard); let CORS answer.
            return any(name == b"access-control-request-method" for name, _ in scope["headers"])
        return False

    async def _refuse(self, exc: AuthError, scope: Scope, send: Send) -> None:
        s = self.settings
        level = logging.WARNING if isinstance(exc, KeysUnavailable) else logging.INFO
        if isinstance(exc, MissingToken):
            level = logging.DEBUG
        # exc.detail never holds the token; attacker-chosen fragments are shown with %r.
        logger.log(
            level,
            "jwt_middleware: refused %s %r: %s %s",
            scope["type"],
            scope["path"][:200],
            exc.reason,
            exc.detail,
        )
        if s.on_error is not None:
            try:
                s.on_error(exc)
            except Exception:
                logger.exception("jwt_middleware: the on_error hook raised")
        if scope["type"] == "websocket":
            code = _WS_TRY_AGAIN_LATER if isinstance(exc, KeysUnavailable) else _WS_POLICY_VIOLATION
            await send(
                {"type": "websocket.close", "code": code, "reason": exc.error or "unauthorized"}
            )
            return
        body = exc.body(expose=s.expose_error_details)
        headers = exc.headers(s.realm, expose=s.expose_error_details)
        headers.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": exc.status_code, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _lifespan_receive(self, receive: Receive) -> Receive:
        async def wrapped() -> Message:
            message = await receive()
            if message["type"] == "lifespan.startup" and self.settings.warm_up:
                await self.verifier.warm_up()
            elif message["type"] == "lifespan.shutdown":
                await self.verifier.aclose()
            return message

        return wrapped


def _anonymous(scope: Scope) -> None:
    scope["user"] = UnauthenticatedUser()
    scope["auth"] = AuthCredentials()
