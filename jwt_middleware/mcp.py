"""MCP servers built on the official ``mcp`` SDK (``pip install 'jwt-resource-server[mcp]'``).

Two ways in, both on the shared verifier (the same checks, key cache and reason codes as the
middleware):

* :class:`TokenVerifier` plugs into the SDK's own auth (``MCPServer(token_verifier=...,
  auth=AuthSettings(...))``). The SDK then answers every refusal with its own 401, a key-server
  outage included; the reason is logged and counted here, so an outage still shows as
  ``keys_unavailable`` in logs and metrics.
* :class:`FastMCPVerifier` is the same for FastMCP's auth (``FastMCP(auth=...)``, the
  ``[fastmcp]`` extra).
* :class:`MCPMiddleware` wraps the SDK's ASGI app instead, for HTTP-level answers: RFC 9728
  metadata, 401/403/503 with RFC 6750 challenges, and per-tool scopes, so a ``tools/call`` of a
  tool its token may not use gets a real 403 ``insufficient_scope`` naming the scopes (not a
  JSON-RPC error inside a 200). It puts the SDK's ``AuthenticatedUser`` on the scope, so the
  SDK's session-to-user binding and ``get_access_token()`` keep working.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any

from cachetools import LRUCache
from pydantic import ConfigDict

from ._asgi import JWTMiddleware
from ._errors import (
    AuthError,
    ConfigurationError,
    InsufficientScope,
    InvalidRequest,
    MissingToken,
    Reason,
    scope_names,
    scopes_granted,
)
from ._flow import VerifiedToken
from ._gate import Gate
from ._identity import JWTUser
from ._jws import FrozenList
from ._settings import REQUEST_FIELDS, Options, Settings, settings_from
from ._verify import AsyncVerifier

try:
    from mcp.server.auth.middleware.auth_context import auth_context_var
    from mcp.server.auth.middleware.bearer_auth import AuthenticatedUser
    from mcp.server.auth.provider import AccessToken
except ImportError as exc:  # pragma: no cover - the extra is part of the test environment
    raise ImportError(
        "jwt_middleware.mcp needs the mcp SDK: pip install 'jwt-resource-server[mcp]'"
    ) from exc

if TYPE_CHECKING:
    from starlette.types import ASGIApp, Message, Receive, Scope, Send
    from typing_extensions import Self, Unpack

    from ._fastmcp import FastMCPVerifier

__all__ = ["FastMCPVerifier", "MCPMiddleware", "MCPUser", "TokenVerifier", "access_token"]


def __getattr__(name: str) -> Any:
    # FastMCP (the [fastmcp] extra, Python 3.11+) is imported only by those who use it.
    if name == "FastMCPVerifier":
        from ._fastmcp import FastMCPVerifier

        return FastMCPVerifier
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

logger = logging.getLogger("jwt_middleware")

#: Per-request header names of the 2026-07-28 streamable HTTP transport.
MCP_METHOD = b"mcp-method"
MCP_NAME = b"mcp-name"
#: A key URL for a Settings built only to read the request-level defaults (never fetched).
_NO_KEYS = "https://keys.invalid/jwks"
#: The SDK's own bound on a request body (``DEFAULT_MAX_REQUEST_BODY_SIZE``).
DEFAULT_MAX_BODY = 4 * 1024 * 1024


class _SharedAccessToken(AccessToken):
    """An ``AccessToken`` that may be shared by every request carrying the same token: frozen,
    its claims and scopes as read-only as the verified token's own."""

    model_config = ConfigDict(frozen=True)


def access_token(token: VerifiedToken, raw: str, resource: str | None = None) -> AccessToken:
    """The SDK's ``AccessToken`` for a verified token, filled completely: ``client_id`` from
    ``client_id`` or ``azp`` (else ``sub``), ``resource`` when ``aud`` names ``resource``.
    Read-only, like the verified token's claims (a tool that edits it gets TypeError)."""
    claims = token.claims
    client_id = claims.get("client_id", claims.get("azp"))
    if not isinstance(client_id, str):
        client_id = token.subject or ""
    aud = claims.get("aud")
    named = aud == resource if isinstance(aud, str) else isinstance(aud, list) and resource in aud
    exp = claims.get("exp")
    expires = int(exp) if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
    # Built from values the verifier has checked already: no second validation, and the
    # claims stay the verifier's read-only mapping rather than a copy per request.
    return _SharedAccessToken.model_construct(
        token=raw,
        client_id=client_id,
        scopes=FrozenList(token.scopes),
        expires_at=expires,
        resource=resource if resource is not None and named else None,
        subject=token.subject,
        claims=claims,
    )


class _Verifying:
    """What the MCP SDKs' verifiers share: the verifier, refusal reporting, the lifecycle."""

    verifier: AsyncVerifier
    settings: Settings

    #: The request-level settings a verifier honours; the SDK answers HTTP itself, so the
    #: others (public_paths, cors_*, csrf, realm, ...) would be silently dropped: refused.
    _honoured = frozenset(
        {"trust", "token_cache_size", "on_error", "resource", "implied_scopes", "warm_up"}
    )

    def _set_up(self, settings: Settings | Sequence[Settings] | None, options: Any) -> None:
        self.verifier = AsyncVerifier(settings_from(settings, options))
        self.settings = self.verifier.settings
        # Settings normalise some fields (csrf None -> "off", lists -> frozensets): compare with
        # a Settings left at its defaults, not with the declared defaults.
        plain = Settings(allow_any_issuer=True, allow_any_audience=True, jwks_url=_NO_KEYS)
        ignored = [
            name
            for name in REQUEST_FIELDS
            if name not in self._honoured and getattr(self.settings, name) != getattr(plain, name)
        ]
        if ignored:
            raise ConfigurationError(
                f"{type(self).__name__} cannot apply {', '.join(ignored)}: the SDK answers the "
                "requests itself (MCPMiddleware applies every option)"
            )
        self._gate = Gate(self.settings)

    async def _verified(self, token: str, sdk: str) -> VerifiedToken | None:
        try:
            return await self.verifier.verify(token)
        except AuthError as exc:
            # The SDK turns None into a 401 whatever the reason: the log line (WARNING for an
            # outage) and the events hook are where keys_unavailable stays visible.
            self._gate.report(exc, sdk, "verify_token")
            return None

    async def warm_up(self) -> None:
        await self.verifier.warm_up()

    async def aclose(self) -> None:
        await self.verifier.aclose()

    async def __aenter__(self) -> Self:
        if self.settings.warm_up:
            await self.warm_up()
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()


class TokenVerifier(_Verifying):
    """The ``mcp`` SDK's ``TokenVerifier`` protocol over jwt_middleware's verifier.

    Takes a :class:`Settings` or its fields as keyword arguments, like the middlewares. Use it
    as an async context manager in the server's lifespan (keys fetched at startup, the key
    fetcher closed at shutdown); without that, keys are fetched on the first token.
    """

    def __init__(
        self,
        *,
        settings: Settings | Sequence[Settings] | None = None,
        **options: Unpack[Options],
    ) -> None:
        self._set_up(settings, options)

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's ``AccessToken``, or None (logged and counted with its reason code)."""
        verified = await self._verified(token, "mcp")
        return None if verified is None else access_token(verified, token, self.settings.resource)


class MCPUser(AuthenticatedUser):
    """``scope["user"]`` behind :class:`MCPMiddleware`: the SDK's ``AuthenticatedUser`` (its
    session binding and ``get_access_token()`` need that type), carrying the verified token
    like :class:`~jwt_middleware.JWTUser`."""

    def __init__(self, token: VerifiedToken, access: AccessToken) -> None:
        super().__init__(access)
        self.token = token

    @property
    def identity(self) -> str:
        return self.token.subject or ""

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.token.claims


class MCPMiddleware:
    """:class:`~jwt_middleware.JWTMiddleware` for an MCP server's ASGI app, with per-tool scopes.

    ``tool_scopes`` maps a tool name to the scopes a ``tools/call`` of it needs (on top of a
    valid token). Which tool a POST calls is read from its JSON-RPC body (at most
    ``max_body_bytes``; a batch is checked message by message); when the request also carries
    the ``Mcp-Method``/``Mcp-Name`` headers, they must agree with the body (400 otherwise).
    The body is read because clients of earlier protocol revisions may send those headers
    without the SDK ever comparing them with the body: trusting them alone would let a client
    name a harmless method in the header and call any tool in the body.

    Every other keyword is a :class:`Settings` field, as for ``JWTMiddleware``.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        tool_scopes: Mapping[str, Sequence[str]] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY,
        settings: Settings | Sequence[Settings] | None = None,
        **options: Unpack[Options],
    ) -> None:
        size = max_body_bytes
        if isinstance(size, bool) or not isinstance(size, int) or size < 1:
            raise ConfigurationError(f"max_body_bytes must be a positive integer, got {size!r}")
        tools: dict[str, tuple[str, ...]] = {}
        for name, scopes in (tool_scopes or {}).items():
            if not isinstance(name, str) or not name:
                raise ConfigurationError(f"tool_scopes: a tool name is a string, got {name!r}")
            if isinstance(scopes, str):
                raise ConfigurationError(f"tool_scopes[{name!r}] must be a list, not a string")
            tools[name] = scope_names(scopes)
        self._guard = _ToolGuard(app, tools, max_body_bytes)
        self.middleware = JWTMiddleware(self._guard, settings=settings, **options)
        self.settings = self.middleware.settings
        self._guard.resource = self.settings.resource

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.middleware(scope, receive, send)


class _ToolGuard:
    """Inside JWTMiddleware: the token is verified; check the tool's scopes, then hand the SDK
    its user type. An AuthError raised here is answered by JWTMiddleware (the response has not
    started), with the same challenge as every other refusal."""

    def __init__(self, app: ASGIApp, tools: dict[str, tuple[str, ...]], max_body: int) -> None:
        self.app = app
        self.tools = tools
        self.max_body = max_body
        self.resource: str | None = None
        # The SDK's AccessToken of each recent verified token (a pydantic model costs several
        # µs to build; a cached token is the same object on every request). The entry keeps
        # its token alive, so an id is never reused while it is here.
        self._access: LRUCache[int, tuple[VerifiedToken, AccessToken]] = LRUCache(maxsize=4096)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        kind = scope["type"]
        if kind != "http":
            if kind == "websocket" and self.tools:
                # The MCP transports are HTTP; a tool called over anything else is unchecked.
                raise InvalidRequest(Reason.MCP_REQUEST_INVALID, "tool scopes cover HTTP only")
            await self.app(scope, receive, send)
            return
        user = scope.get("user")
        if self.tools and scope.get("method") == "POST":
            receive = await self._check_tools(scope, receive, user)
        if type(user) is not JWTUser:  # anonymous mode, or a public path
            await self.app(scope, receive, send)
            return
        verified = user.token
        entry = self._access.get(id(verified))
        if entry is None or entry[0] is not verified:
            entry = (verified, access_token(verified, scope["auth"].raw_token, self.resource))
            self._access[id(verified)] = entry
        mcp_user = MCPUser(verified, entry[1])
        scope["user"] = mcp_user
        reset = auth_context_var.set(mcp_user)
        try:
            await self.app(scope, receive, send)
        finally:
            auth_context_var.reset(reset)

    async def _check_tools(self, scope: Scope, receive: Receive, user: Any) -> Receive:
        body = await _read_body(receive, self.max_body)
        called = _called_tools(body)
        _check_headers(scope["headers"], called)
        required = tuple(dict.fromkeys(s for tool in called for s in self.tools.get(tool, ())))
        if required:
            if type(user) is not JWTUser:
                raise MissingToken(scopes=required)
            if not scopes_granted(scope["auth"].scopes, required):
                raise InsufficientScope(required)
        return _replay(body, receive)


async def _read_body(receive: Receive, limit: int) -> bytes:
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise InvalidRequest(Reason.MCP_REQUEST_INVALID, "the client went away mid-body")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise InvalidRequest(Reason.MCP_REQUEST_INVALID, f"body over {limit} bytes")
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replay(body: bytes, receive: Receive) -> Receive:
    sent = False

    async def replay() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


def _called_tools(body: bytes) -> list[str]:
    """The tools a JSON-RPC body calls (``tools/call`` requests, one per message of a batch).

    A body that is not JSON is refused rather than passed on: were the SDK's parser ever more
    lenient than this one, a body only it could read would carry a call nobody checked."""
    try:
        parsed = json.loads(body)
    except (ValueError, RecursionError):
        raise InvalidRequest(Reason.MCP_REQUEST_INVALID, "body is not JSON") from None
    messages = parsed if isinstance(parsed, list) else [parsed]
    called = []
    for message in messages:
        if isinstance(message, dict) and message.get("method") == "tools/call":
            params = message.get("params")
            name = params.get("name") if isinstance(params, dict) else None
            if not isinstance(name, str):
                raise InvalidRequest(Reason.MCP_REQUEST_INVALID, "tools/call without a tool name")
            called.append(name)
    return called


def _check_headers(headers: Sequence[tuple[bytes, bytes]], called: list[str]) -> None:
    """``Mcp-Method``/``Mcp-Name``, when sent, must say what the body says."""
    method = name = None
    for key, value in headers:
        if key == MCP_METHOD:
            method = value.decode("latin-1").strip()
        elif key == MCP_NAME:
            name = _header_value(value)
    if method is not None and (method == "tools/call") != bool(called):
        raise InvalidRequest(Reason.MCP_REQUEST_INVALID, "Mcp-Method does not match the body")
    if name is not None and called and (len(called) != 1 or name != called[0]):
        raise InvalidRequest(Reason.MCP_REQUEST_INVALID, "Mcp-Name does not match the body")


def _header_value(raw: bytes) -> str | None:
    """An ``Mcp-Name`` value: plain ASCII, or ``=?base64?...?=`` for names that are not."""
    text = raw.decode("latin-1").strip()
    if text.startswith("=?base64?") and text.endswith("?="):
        try:
            return base64.b64decode(text[9:-2], validate=True).decode("utf-8")
        except (binascii.Error, UnicodeDecodeError):
            return None
    return text
