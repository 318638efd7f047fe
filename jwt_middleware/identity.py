"""What a verified request carries: Starlette's authentication contract (``scope["user"]`` and
``scope["auth"]``), so ``request.user``, ``request.auth.scopes`` and Starlette's own
``@requires(...)`` work unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.authentication import AuthCredentials, BaseUser

from .verify import VerifiedToken

__all__ = ["JWTCredentials", "JWTUser"]


class JWTUser(BaseUser):
    """The subject of a verified token (``request.user``)."""

    __slots__ = ("token",)

    def __init__(self, token: VerifiedToken) -> None:
        self.token = token

    @property
    def is_authenticated(self) -> bool:
        return True

    @property
    def display_name(self) -> str:
        return self.token.subject or ""

    @property
    def identity(self) -> str:
        return self.token.subject or ""

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.token.claims

    def __repr__(self) -> str:
        return f"JWTUser(sub={self.token.subject!r})"


class JWTCredentials(AuthCredentials):
    """``request.auth``: the scopes, the verified token and where it was found."""

    def __init__(self, token: VerifiedToken, location: str) -> None:
        # AuthCredentials.__init__ only copies the scopes into a list; doing it here saves a
        # call and a second copy on every request. A fresh list each time: an app that edits
        # request.auth.scopes must not change what other requests with this token see.
        self.scopes = list(token.scopes)
        self.token = token
        self.location = location

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.token.claims
