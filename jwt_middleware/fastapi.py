"""FastAPI integration: a dependency that requires a valid token (and scopes), and declares the
bearer security scheme in the OpenAPI document so the docs' Authorize button works.

    from jwt_middleware.fastapi import RequireScopes

    @app.get("/admin")
    def admin(token: Annotated[VerifiedToken, Depends(RequireScopes("admin"))]): ...
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from .authz import check_scopes
from .identity import JWTUser
from .verify import VerifiedToken

__all__ = ["RequireScopes", "bearer_scheme"]

#: Declares ``bearerAuth`` (HTTP bearer, JWT) in OpenAPI. It never refuses by itself: the
#: middleware has already verified the token, and the answer must be the RFC 6750 one.
bearer_scheme = HTTPBearer(auto_error=False, bearerFormat="JWT", scheme_name="bearerAuth")


class RequireScopes:
    """Dependency: the request's verified token, which must grant ``scopes``.

    ``RequireScopes()`` requires just a valid token; ``RequireScopes("a", "b")`` all of them;
    ``RequireScopes("a", "b", any_of=True)`` one of them.
    """

    def __init__(self, *scopes: str, any_of: bool = False) -> None:
        for scope in scopes:
            if not isinstance(scope, str) or not scope or " " in scope:
                raise ValueError(f"a scope is a non-empty string without spaces, got {scope!r}")
        self.scopes = scopes
        self.any_of = any_of

    async def __call__(
        self,
        request: Request,
        _declared: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    ) -> VerifiedToken:
        # async on purpose: FastAPI would run a plain function in a worker thread.
        check_scopes(request, self.scopes, any_of=self.any_of)
        user = request.user
        assert isinstance(user, JWTUser)
        return user.token
