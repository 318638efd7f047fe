"""FastAPI integration: a dependency that requires a valid token (and scopes), and declares the
bearer security scheme in the OpenAPI document so the docs' Authorize button works.

    from jwt_middleware.fastapi import RequireScopes

    @app.get("/admin")
    def admin(token: Annotated[VerifiedToken, Depends(RequireScopes("admin"))]): ...

A refusal is raised as :class:`AuthHTTPException`, a FastAPI ``HTTPException`` with the RFC 6750
status and headers (``WWW-Authenticate``, ``Cache-Control: no-store``). FastAPI's own exception
handling answers it, so the answer is the same wherever ``JWTMiddleware`` sits (added with
``add_middleware``, wrapped around the app object, or on a parent app that mounts this one):
an ``AuthError`` raised inside FastAPI would reach FastAPI's ``ServerErrorMiddleware`` as a 500
before an outer middleware could answer it. The body is FastAPI's usual ``{"detail": ...}``
with the RFC 6750 error inside::

    {"detail": {"error": "insufficient_scope", "error_description": "..."}}

Replace it the FastAPI way: ``@app.exception_handler(AuthHTTPException)``.

:func:`openapi_login` turns the docs' Authorize button into a real login at the issuer
(authorization code with PKCE), each operation asking for the scopes its ``RequireScopes`` need.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, ClassVar

from fastapi import FastAPI, HTTPException, Request
from fastapi.security import HTTPBearer

from ._authz import authorize
from ._errors import AuthError, JWTMiddlewareError, render, scope_names
from ._gate import SCOPE_GATE, Gate
from ._identity import JWTUser
from ._openapi import BEARER, Login, bounded_fetch, check_client_id, init_oauth
from ._stepup import step_up
from ._verify import VerifiedToken

__all__ = ["AuthHTTPException", "RequireScopes", "openapi_login"]


class AuthHTTPException(HTTPException, JWTMiddlewareError):
    """A refusal raised by :class:`RequireScopes`, carrying the :class:`AuthError` as ``.error``.

    ``detail`` is the RFC 6750 error object (``error``, ``error_description``, and ``reason``
    with ``expose_error_details``); ``headers`` are the middleware's own for that refusal.
    """

    def __init__(self, error: AuthError, gate: Gate) -> None:
        settings = gate.settings
        refusal = render(error, settings.challenge)
        # FastAPI's JSONResponse sets its own Content-Type.
        headers = {name: value for name, value in refusal.headers if name != "content-type"}
        super().__init__(status_code=refusal.status, detail=refusal.payload, headers=headers)
        self.error = error


class RequireScopes(HTTPBearer):
    """Dependency: the request's verified token, which must grant ``scopes``.

    ``RequireScopes()`` requires just a valid token; ``RequireScopes("a", "b")`` all of them;
    ``RequireScopes("a", "b", any_of=True)`` one of them; ``acr_values=[...]``/``max_age=``
    a strong or recent enough login (RFC 9470). Refusals raise :class:`AuthHTTPException`
    (401 without a token, 401 ``insufficient_user_authentication``, 403 ``insufficient_scope``).

    It *is* the ``bearerAuth`` security scheme (an ``HTTPBearer``), so FastAPI lists it in the
    OpenAPI document without a second, per-request dependency: the middleware has already
    verified the token, and a nested scheme would cost every request for nothing.
    """

    # Every guard alive, so :func:`openapi_login` can tell FastAPI's document which one each
    # operation depends on (see _named_apart).
    _alive: ClassVar[weakref.WeakSet[RequireScopes]] = weakref.WeakSet()

    def __init__(
        self,
        *scopes: str,
        any_of: bool = False,
        acr_values: Iterable[str] = (),
        max_age: float | None = None,
    ) -> None:
        required = scope_names(scopes)
        super().__init__(auto_error=False, bearerFormat="JWT", scheme_name=BEARER)
        self.scopes = required
        self.any_of = any_of
        #: Step-up (RFC 9470): the ``acr``/``auth_time`` the token must show.
        self.login = step_up(acr_values, max_age)
        RequireScopes._alive.add(self)

    async def __call__(self, request: Request) -> VerifiedToken:  # type: ignore[override]
        # async on purpose: FastAPI would run a plain function in a worker thread.
        scope = request.scope
        try:
            authorize(scope, self.scopes, self.any_of, self.login)
        except AuthError as exc:
            # Reported here, once: FastAPI answers the HTTPException itself, so no middleware
            # outside ever sees this refusal.
            gate: Gate = scope[SCOPE_GATE]
            gate.report(exc, scope["type"], scope["path"])
            raise AuthHTTPException(exc, gate) from None
        user = scope["user"]
        assert isinstance(user, JWTUser)
        return user.token


def openapi_login(
    app: FastAPI,
    *,
    client_id: str,
    issuer: str | None = None,
    authorization_url: str | None = None,
    token_url: str | None = None,
    scopes: Iterable[str] = (),
    scope_descriptions: Mapping[str, str] | None = None,
    authorize_params: Mapping[str, str] | None = None,
    scheme_name: str = "oauth2",
) -> None:
    """Make the docs' Authorize button log in at the issuer: the operations guarded by
    :class:`RequireScopes` declare an OAuth 2.0 authorization-code scheme (``scheme_name``)
    instead of ``bearerAuth``, each naming the scopes its guards require, and Swagger UI is set
    up for ``client_id`` as a public client with PKCE (S256). No client secret is ever used.

    The endpoints come from ``issuer``'s discovery document (``authorization_endpoint``,
    ``token_endpoint``), read once, in a thread, when the OpenAPI document is first asked for
    (never at startup): until then, and for 30 s after a failed read, ``/openapi.json`` is a
    503 with ``Retry-After`` (``app.openapi()`` raises a ConfigurationError). Or give
    ``authorization_url`` and ``token_url`` and nothing is fetched. ``scopes`` are ticked
    beforehand in the Authorize dialog; every scope the routes require is offered.
    ``scope_descriptions`` labels scopes (and offers more, such as ``openid``).
    ``authorize_params`` go into the authorization request as is (e.g. ``{"audience": ...}``
    for providers that want one). The client must allow the docs' redirect URI, the
    ``/docs/oauth2-redirect`` page FastAPI serves, and the issuer must let the docs' origin
    call its token endpoint (CORS).
    """
    client = check_client_id(client_id)
    login = Login(
        issuer=issuer,
        authorization_url=authorization_url,
        token_url=token_url,
        scheme_name=scheme_name,
        descriptions=dict(scope_descriptions or {}),
        fetch=bounded_fetch,
    )
    app.swagger_ui_init_oauth = init_oauth(
        app.swagger_ui_init_oauth, client, scopes, authorize_params
    )
    build = app.openapi
    ours: list[dict[str, Any] | None] = [None]

    def openapi() -> dict[str, Any]:
        schema = build()  # FastAPI's, kept by FastAPI until its routes change
        if schema is ours[0]:
            return schema
        login.endpoints()  # the discovery fetch fails before any document is touched
        with _named_apart() as guards:
            app.openapi_schema = None
            try:
                tagged = build()
            finally:
                app.openapi_schema = None
        document = login.rewrite(tagged, guards)
        # FastAPI keeps ours now, and builds afresh (without the login) when its routes change.
        app.openapi_schema = ours[0] = document
        return document

    app.openapi = openapi  # type: ignore[method-assign]


_NAMING = threading.Lock()


@contextmanager
def _named_apart() -> Iterator[dict[str, RequireScopes]]:
    """Each guard declares its own scheme name while FastAPI builds a document, so the document
    says which guards each operation has (FastAPI finds them wherever they are declared: the
    route, its router, the app, nested dependencies). Yields name -> guard."""
    with _NAMING:
        guards = {f"{BEARER}#{n}": guard for n, guard in enumerate(list(RequireScopes._alive))}
        try:
            for name, guard in guards.items():
                guard.scheme_name = name
            yield guards
        finally:
            for guard in guards.values():
                guard.scheme_name = BEARER
