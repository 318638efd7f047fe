"""The ASGI middleware for Starlette and FastAPI: ``app.add_middleware(JWTMiddleware, ...)``.

A pure ASGI middleware (not ``BaseHTTPMiddleware``): it reads ``scope["headers"]`` directly, and
for HTTP wraps only ``send``, in one small function that notes when the response has started
(and, for an allowed CORS origin, adds the CORS headers), so streaming responses, background
tasks and contextvars pass through untouched. An authenticated WebSocket whose token expires is
closed then (``websocket_expiry``); only those connections pay for that wrapping.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Awaitable, Sequence
from typing import TYPE_CHECKING, Any

import anyio
from starlette.authentication import AuthCredentials, UnauthenticatedUser
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ._cors import Cors, scan
from ._errors import AuthError, JWTMiddlewareError, Unavailable, render
from ._extract import COOKIE, HEADER, plain_bearer, plain_token
from ._flow import VerifiedToken, token_digest
from ._gate import SCOPE_GATE, Gate
from ._identity import JWTCredentials, JWTUser
from ._logs import show_refusals_by_default
from ._resource import Metadata
from ._sender import Request
from ._settings import Options, Settings, settings_from
from ._verify import AsyncVerifier

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["JWTMiddleware", "route_path", "send_refusal"]

logger = logging.getLogger("jwt_middleware")

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
    FastAPI dependencies do this) is answered the same way; raised after, it is logged and
    re-raised, so the server ends the connection (a second response start is never sent).
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: Settings | Sequence[Settings] | None = None,
        **options: Unpack[Options],
    ) -> None:
        self.app = app
        self.verifier = AsyncVerifier(settings_from(settings, options))
        self.settings = self.verifier.settings
        self.gate = Gate(self.settings)
        show_refusals_by_default()
        # The hot path needs a token cache, and a header token (cookies need CSRF checks).
        self._plain = self.verifier.caches and self.settings.header
        self._cookie = self.gate.cookie
        # Whether any path skips verification, and whether a CORS preflight can.
        self._public = bool(self.settings.public_paths)
        self._passthrough = self.settings.preflight_passthrough
        self._cors = Cors(self.settings) if self.settings.cors_origins else None
        self._ws_expiry = self.settings.websocket_expiry == "close"
        self._metadata = (
            Metadata(self.settings, self.verifier.issuers) if self.settings.resource else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http" and kind != "websocket":
            if kind == "lifespan":
                receive = self._lifespan_receive(receive)
            await self.app(scope, receive, send)
            return
        method = scope.get("method")
        if self._metadata is not None and kind == "http" and scope["path"] in self._metadata.paths:
            # Before the CORS layer: the document carries its own (public) CORS headers.
            status, answer, body = self._metadata.answer(method)
            await send({"type": "http.response.start", "status": status, "headers": [
                (k.encode("latin-1"), v.encode("latin-1")) for k, v in answer
            ]})  # fmt: skip
            await send({"type": "http.response.body", "body": body})
            return
        gate = self.gate
        scope[SCOPE_GATE] = gate
        headers = scope["headers"]
        if self._cors is not None and kind == "http":
            with_cors = await self._cors_layer(method, headers, send)
            if with_cors is None:
                return
            send = with_cors
        verified = None
        extra: list[tuple[bytes, bytes]] | None = None  # headers the checks add to the answer
        try:
            if (self._public or (self._passthrough and method == "OPTIONS")) and gate.unchecked(
                method, route_path(scope), headers
            ):
                _anonymous(scope)
            else:
                # The hot path: a plain "Bearer <token>" header is looked up by the digest of
                # the token as sent (a hit means these exact bytes were verified before), and a
                # well-formed one that misses is verified without a second extraction pass.
                # Everything else (a cookie, two headers, odd spacing) takes gate.token().
                location = HEADER
                raw: str | bytes = ""
                plain = plain_bearer(headers, self._cookie) if self._plain else None
                if plain is not None:
                    raw = plain
                    digest = token_digest(plain)
                    verified = self.verifier.cached(digest)
                    if verified is None and (token := plain_token(plain)) is not None:
                        extra = []
                        verified = await self.verifier.verify(
                            token, digest, request=_request(scope, kind, extra)
                        )
                if verified is None and (found := gate.token(headers)) is not None:
                    raw, location = found
                    extra = []
                    verified = await self.verifier.verify(
                        raw, location=location, request=_request(scope, kind, extra)
                    )
                    if location == COOKIE:
                        gate.check_csrf(method, headers, verified, websocket=kind == "websocket")
                if verified is None:
                    _anonymous(scope)
                else:
                    scope["user"] = JWTUser(verified)
                    scope["auth"] = JWTCredentials(verified, location, raw)
        except AuthError as exc:
            await self._refuse(exc, scope, send)
            return
        if kind != "http":
            await self._websocket(scope, receive, send, verified)
            return
        started = False

        # A plain function handing back send()'s awaitable: no coroutine of its own per message.
        def tracked(message: Message) -> Awaitable[None]:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                if extra:
                    message = {**message, "headers": [*message.get("headers", ()), *extra]}
            return send(message)

        try:
            await self.app(scope, receive, tracked)
        except AuthError as exc:
            if not started:
                await self._refuse(exc, scope, send)
                return
            # Too late for an answer: a second response start would be a protocol error (or,
            # under a lax server, a second status line). Let the server end the connection.
            logger.error(
                "jwt_middleware: the app raised AuthError (%s) after starting its response to "
                "%r; the connection is closed without a refusal",
                exc.reason,
                scope["path"][:200],
            )
            raise

    async def _cors_layer(self, method: str | None, headers: Any, send: Send) -> Send | None:
        """``send`` with the CORS headers added for an allowed origin (``send`` itself for any
        other request); None when this was a preflight, answered here."""
        cors = self._cors
        assert cors is not None
        origin, preflight = scan(headers)
        allow = cors.allow(origin)
        if preflight and method == "OPTIONS":
            status, answer = cors.preflight(allow)
            if allow is None:
                logger.debug("jwt_middleware: CORS preflight from an origin not allowed: 403")
            await send({"type": "http.response.start", "status": status, "headers": answer})
            await send({"type": "http.response.body", "body": b""})
            return None
        if allow is None:
            return send
        extra = cors.response_headers(allow)

        async def with_cors(message: Message) -> None:
            if message["type"] == "http.response.start":
                message = {**message, "headers": [*message.get("headers", ()), *extra]}
            await send(message)

        return with_cors

    async def _websocket(
        self, scope: Scope, receive: Receive, send: Send, verified: VerifiedToken | None
    ) -> None:
        # The connection lives as long as a new handshake with the same token would succeed.
        deadline = verified.valid_until if verified is not None and self._ws_expiry else None
        if deadline is None:
            try:
                await self.app(scope, receive, send)
            except AuthError as exc:
                await self._refuse(exc, scope, send)
            return
        link = _Expiring(receive, send, anyio.current_time() + deadline - self.settings.clock())
        try:
            try:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(link.watch)
                    try:
                        await self.app(scope, link.receive, link.send)
                    finally:
                        tasks.cancel_scope.cancel()
            except BaseExceptionGroup as group:  # anyio wraps the app's own exception
                if len(group.exceptions) != 1:
                    raise
                raise group.exceptions[0] from None
        except AuthError as exc:
            await self._refuse(exc, scope, link.send)

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
    refusal = render(exc, settings.challenge)
    body = refusal.body
    # The values are latin-1 by construction (errors._quote).
    headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in refusal.headers]
    headers.append((b"content-length", b"%d" % len(body)))
    await send({"type": "http.response.start", "status": refusal.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class ConnectionClosed(JWTMiddlewareError, OSError):
    """The app sent on a WebSocket this middleware closed because its token expired (what the
    ASGI spec has servers raise for a send on a closed connection; Starlette's ``WebSocket``
    turns it into ``WebSocketDisconnect``)."""


class _Expiring:
    """One WebSocket held to its token's lifetime: at ``deadline`` (``anyio.current_time()``
    units) the client gets close 1008, the app's next (or pending) receive() gets
    ``websocket.disconnect``, and its later sends never reach the wire (a close is dropped,
    data raises ConnectionClosed, so a loop that only sends ends too). One lock orders every
    send, so the close is never interleaved with a message of the app's."""

    __slots__ = ("_done", "_expired", "_lock", "_receive", "_send", "deadline")

    def __init__(self, receive: Receive, send: Send, deadline: float) -> None:
        self._receive = receive
        self._send = send
        self.deadline = deadline
        self._lock = anyio.Lock()
        self._expired = False  # we closed it
        self._done = False  # closed already (by the app or the client): nothing for us to do

    async def receive(self) -> Message:
        if not self._expired:
            with anyio.CancelScope(deadline=self.deadline):
                message = await self._receive()
                if message["type"] == "websocket.disconnect":
                    self._done = True
                return message
            await self.expire()  # cancelled by the deadline, not from outside
        return {"type": "websocket.disconnect", "code": _WS_POLICY_VIOLATION}

    async def send(self, message: Message) -> None:
        async with self._lock:
            if self._expired:
                if message["type"] == "websocket.close":
                    return
                raise ConnectionClosed("the WebSocket was closed: its token expired")
            if message["type"] in ("websocket.close", "websocket.http.response.start"):
                self._done = True
            await self._send(message)

    async def watch(self) -> None:
        await anyio.sleep_until(self.deadline)
        await self.expire()

    async def expire(self) -> None:
        async with self._lock:
            if self._expired or self._done:
                return
            self._expired = True
            try:
                await self._send(
                    {"type": "websocket.close", "code": _WS_POLICY_VIOLATION, "reason": "expired"}
                )
            except OSError:  # the client went away meanwhile
                logger.debug("jwt_middleware: WebSocket gone before its expiry close")


def route_path(scope: Scope) -> str:
    """The path the app routes on: ``path`` relative to ``root_path`` (a Mount's prefix, or
    uvicorn's ``--root-path``), as ``starlette._utils.get_route_path`` works it out. A path
    that does not start with root_path (at a ``/`` boundary) stays as it is: nothing becomes
    public by stripping a prefix the request does not have."""
    path: str = scope["path"]
    root: str = scope.get("root_path", "")
    if root and path.startswith(root):
        if len(path) == len(root):
            return ""
        if path[len(root)] == "/":
            return path[len(root) :]
    return path


def _request(scope: Scope, kind: str, answer: list[tuple[bytes, bytes]]) -> Request:
    """What the sender checks (DPoP, client certificates) read of this request; ``answer``
    collects the headers they add to the response (HTTP only: a WebSocket handshake's
    acceptance is the app's)."""
    client = scope.get("client")
    return Request(
        method=scope.get("method") or "GET",  # a WebSocket handshake is a GET
        scheme=scope.get("scheme") or ("ws" if kind == "websocket" else "http"),
        path=scope["path"],
        headers=scope["headers"],
        peer=client[0] if client else None,
        answer=answer if kind == "http" else None,
    )


def _anonymous(scope: Scope) -> None:
    scope["user"] = UnauthenticatedUser()
    scope["auth"] = AuthCredentials()
