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
"""

from __future__ import annotations

from collections.abc import Iterable

from fastapi import HTTPException, Request
from fastapi.security import HTTPBearer

from ._authz import authorize
from ._errors import AuthError, JWTMiddlewareError, render, scope_names
from ._gate import SCOPE_GATE, Gate
from ._identity import JWTUser
from ._stepup import step_up
from ._verify import VerifiedToken

__all__ = ["AuthHTTPException", "RequireScopes"]


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

    def __init__(
        self,
        *scopes: str,
        any_of: bool = False,
        acr_values: Iterable[str] = (),
        max_age: float | None = None,
    ) -> None:
        required = scope_names(scopes)
        super().__init__(auto_error=False, bearerFormat="JWT", scheme_name="bearerAuth")
        self.scopes = required
        self.any_of = any_of
        #: Step-up (RFC 9470): the ``acr``/``auth_time`` the token must show.
        self.login = step_up(acr_values, max_age)

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
