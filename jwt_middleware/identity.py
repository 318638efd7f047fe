"""What a verified request carries: Starlette's authentication contract (``scope["user"]`` and
``scope["auth"]``), so ``request.user``, ``request.auth.scopes`` and Starlette's own
``@requires(...)`` work unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from starlette.authentication import AuthCredentials, BaseUser

from .verify import VerifiedToken

if TYPE_CHECKING:
    from .gate import Gate

__all__ = ["JWTCredentials", "JWTUser"]


class JWTUser(BaseUser):
    """The subject of a verified token (``request.user``)."""

    # Plain attributes rather than BaseUser's properties: they are read on every request
    # (Starlette's @requires, our scope checks, the endpoint), and a property is a call each time.
    __slots__ = ("display_name", "identity", "token")

    is_authenticated = True
    identity: str
    display_name: str

    def __init__(self, token: VerifiedToken) -> None:
        self.token = token
        self.identity = self.display_name = token.subject or ""

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.token.claims

    def __repr__(self) -> str:
        return f"JWTUser(sub={self.token.subject!r})"


class JWTCredentials(AuthCredentials):
    """``request.auth``: the scopes, the verified token and where it was found."""

    def __init__(self, token: VerifiedToken, location: str, _gate: Gate | None = None) -> None:
        # AuthCredentials.__init__ only copies the scopes into a list; doing it here saves a
        # call and a second copy on every request. A fresh list each time: an app that edits
        # request.auth.scopes must not change what other requests with this token see.
        self.scopes = list(token.scopes)
        self.token = token
        self.location = location
        self._gate = _gate

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.token.claims


class AnonymousCredentials(AuthCredentials):
    """``request.auth`` of a request let in without a token (public path, anonymous mode)."""

    def __init__(self, _gate: Gate | None = None) -> None:
        self.scopes = []
        self._gate = _gate


def gate_of(scope: Mapping[str, Any]) -> Gate | None:
    """The Gate of the JWTMiddleware that authenticated this ASGI scope, if one did.

    It rides on ``scope["auth"]`` rather than in a scope key of its own: one key more makes
    CPython grow a plain Starlette request's scope dict on every request (measured: 0.5 µs).
    """
    gate: Gate | None = getattr(scope.get("auth"), "_gate", None)
    return gate
