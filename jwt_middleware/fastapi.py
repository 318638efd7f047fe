"""FastAPI integration: a dependency that requires a valid token (and scopes), and declares the
bearer security scheme in the OpenAPI document so the docs' Authorize button works.

    from jwt_middleware.fastapi import RequireScopes

    @app.get("/admin")
    def admin(token: Annotated[VerifiedToken, Depends(RequireScopes("admin"))]): ...
"""

from __future__ import annotations

from fastapi import Request
from fastapi.security import HTTPBearer

from .authz import authorize
from .identity import JWTUser
from .verify import VerifiedToken

__all__ = ["RequireScopes"]


class RequireScopes(HTTPBearer):
    """Dependency: the request's verified token, which must grant ``scopes``.

    ``RequireScopes()`` requires just a valid token; ``RequireScopes("a", "b")`` all of them;
    ``RequireScopes("a", "b", any_of=True)`` one of them.

    It *is* the ``bearerAuth`` security scheme (an ``HTTPBearer``), so FastAPI lists it in the
    OpenAPI document without a second, per-request dependency: the middleware has already
    verified the token, and a nested scheme would cost every request for nothing.
    """

    def __init__(self, *scopes: str, any_of: bool = False) -> None:
        for scope in scopes:
            if not isinstance(scope, str) or not scope or " " in scope:
                raise ValueError(f"a scope is a non-empty string without spaces, got {scope!r}")
        super().__init__(auto_error=False, bearerFormat="JWT", scheme_name="bearerAuth")
        self.scopes = scopes
        self.any_of = any_of

    async def __call__(self, request: Request) -> VerifiedToken:  # type: ignore[override]
        # async on purpose: FastAPI would run a plain function in a worker thread.
        scope = request.scope
        authorize(scope, self.scopes, self.any_of)
        user = scope["user"]
        assert isinstance(user, JWTUser)
        return user.token
