"""Per-route authorization: scope checks for Starlette endpoints (and FastAPI path operations
that take a ``Request``). Unauthenticated → 401; authenticated without the scope → 403 with
``error="insufficient_scope"`` and the needed ``scope`` in the challenge (RFC 6750 §3.1)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any, TypeVar

from starlette.requests import HTTPConnection, Request
from starlette.responses import Response
from starlette.types import Scope
from starlette.websockets import WebSocket

from ._asgi import send_refusal
from ._errors import (
    AuthError,
    InsufficientScope,
    MissingToken,
    NotInstalled,
    UsageError,
    render,
    scope_names,
    scopes_granted,
)
from ._gate import SCOPE_GATE, Gate
from ._identity import JWTUser
from ._stepup import NONE as NO_STEP_UP
from ._stepup import StepUp, step_up

__all__ = ["check_scopes", "requires_scopes", "scopes_granted"]

F = TypeVar("F", bound=Callable[..., Any])


def check_scopes(
    conn: HTTPConnection,
    scopes: Iterable[str] = (),
    *,
    any_of: bool = False,
    acr_values: Iterable[str] = (),
    max_age: float | None = None,
) -> None:
    """Raise MissingToken/InsufficientScope unless the request's token grants ``scopes``.

    With ``any_of=True`` one of them suffices; otherwise all are needed. No scopes: any valid
    token passes (useful on routes of an app that runs the middleware in anonymous mode).
    ``acr_values``/``max_age``: step-up (RFC 9470): the token's ``acr`` must be one of
    ``acr_values``, its ``auth_time`` at most ``max_age`` seconds ago, or
    InsufficientAuthentication (401 ``insufficient_user_authentication``).

    The raise becomes the RFC 6750 answer only where JWTMiddleware runs inside the app's error
    handling (``app.add_middleware`` / ``Middleware(...)``). Where it wraps the app object or a
    parent app, Starlette's ``ServerErrorMiddleware`` meets the exception first and answers
    500; use :func:`requires_scopes` (or, in FastAPI, ``RequireScopes``) there, which answer
    the refusal themselves.
    """
    authorize(conn.scope, scope_names(scopes), any_of, step_up(acr_values, max_age))


def authorize(
    scope: Scope, required: tuple[str, ...], any_of: bool, login: StepUp = NO_STEP_UP
) -> None:
    # Straight from the ASGI scope: this runs on every request to a protected route, and the
    # HTTPConnection properties add an assert and a call per attribute.
    user = scope.get("user")
    auth = scope.get("auth")
    if user is None or auth is None:
        raise NotInstalled("JWTMiddleware is not installed in front of this route")
    if type(user) is not JWTUser and not user.is_authenticated:
        raise MissingToken(scopes=required)
    if login is not NO_STEP_UP:
        if type(user) is not JWTUser:
            # Authenticated some other way (a session backend inside an anonymous-mode
            # middleware): no token claims to prove the login with.
            raise MissingToken(scopes=required)
        # Before the scopes: the user logs in again once, and may grant more scopes then.
        settings = scope[SCOPE_GATE].settings
        login.check(user.token.claims, settings.clock(), settings.leeway)
    if required and not scopes_granted(auth.scopes, required, any_of=any_of):
        raise InsufficientScope(required, any_of=any_of)


# The decorators answer refusals themselves (rather than raise) so the answer is the RFC 6750
# one even where no JWTMiddleware sits outside Starlette's error handling to catch a raise.


def _response(exc: AuthError, conn: HTTPConnection) -> Response:
    gate: Gate = conn.scope[SCOPE_GATE]
    gate.report(exc, conn.scope["type"], conn.scope["path"])
    settings = gate.settings
    refusal = render(exc, settings.challenge)
    return Response(refusal.body, status_code=refusal.status, headers=dict(refusal.headers))


async def _refused(exc: AuthError, conn: HTTPConnection) -> Response | None:
    if isinstance(conn, WebSocket):
        gate: Gate = conn.scope[SCOPE_GATE]
        gate.report(exc, "websocket", conn.scope["path"])
        await send_refusal(exc, gate.settings, conn.scope, conn.send)
        return None
    return _response(exc, conn)


def requires_scopes(
    *scopes: str, any_of: bool = False, acr_values: Iterable[str] = (), max_age: float | None = None
) -> Callable[[F], F]:
    """Decorate a Starlette endpoint (sync or async; HTTP or WebSocket) to require scopes, and
    with ``acr_values``/``max_age`` a strong or recent enough login (see :func:`check_scopes`).

    A refusal is answered here with the same RFC 6750 response (or WebSocket close) the
    middleware gives, so every refusal in the app looks the same.
    """
    required = scope_names(scopes)
    login = step_up(acr_values, max_age)

    def decorator(func: F) -> F:
        # Classes seen to be HTTPConnections. isinstance() against it goes through ABCMeta (it
        # is a Mapping), a Python-level call on every request; a set lookup of the type is not.
        connections: set[type] = {Request, WebSocket}

        def connection(args: tuple[Any, ...], kwargs: dict[str, Any]) -> HTTPConnection:
            for value in (*args, *kwargs.values()):
                if isinstance(value, HTTPConnection):
                    connections.add(type(value))
                    return value
            raise UsageError(f"{func.__qualname__} needs a Request or WebSocket argument")

        def refusal(args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, AuthError | None]:
            # A plain endpoint gets the request first; methods and odd signatures search.
            conn = args[0] if args and type(args[0]) in connections else None
            if conn is None:
                conn = connection(args, kwargs)
            try:
                authorize(conn.scope, required, any_of, login)
            except AuthError as exc:
                return conn, exc
            return conn, None

        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def async_endpoint(*args: Any, **kwargs: Any) -> Any:
                conn, refused = refusal(args, kwargs)
                if refused is not None:
                    return await _refused(refused, conn)
                return await func(*args, **kwargs)

            return async_endpoint  # type: ignore[return-value]

        @functools.wraps(func)
        def endpoint(*args: Any, **kwargs: Any) -> Any:
            conn, refused = refusal(args, kwargs)
            if refused is not None:
                return _response(refused, conn)
            return func(*args, **kwargs)

        return endpoint  # type: ignore[return-value]

    return decorator
