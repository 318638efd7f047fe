"""What a verified request carries: Starlette's authentication contract (``scope["user"]`` and
``scope["auth"]``), so ``request.user``, ``request.auth.scopes`` and Starlette's own
``@requires(...)`` work unchanged."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.authentication import AuthCredentials, BaseUser

from ._flow import VerifiedToken

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


#: Starlette's backends grant this pseudo-scope to every authenticated request, and its
#: ``@requires("authenticated")`` checks for it.
AUTHENTICATED = "authenticated"


class JWTCredentials(AuthCredentials):
    """``request.auth``: the scopes, the verified token, where it was found (``location``:
    ``"header"``, ``"dpop"`` for ``Authorization: DPoP`` with its proof checked, or
    ``"cookie"``), and the token as sent (``raw_token``, for apps that forward it).

    ``scopes`` is ``"authenticated"`` followed by the token's scopes, as Starlette's own
    authentication backends do; ``token.scopes`` holds the token's scopes alone.
    """

    __slots__ = ("_raw", "location", "scopes", "token")

    def __init__(self, token: VerifiedToken, location: str, raw: str | bytes = "") -> None:
        # AuthCredentials.__init__ only copies the scopes into a list; doing it here saves a
        # call and a second copy on every request. A fresh list each time: an app that edits
        # request.auth.scopes must not change what other requests with this token see.
        self.scopes = [AUTHENTICATED, *token.scopes]
        self.token = token
        self.location = location
        self._raw = raw  # bytes on the hot path: decoded only if the app asks

    @property
    def raw_token(self) -> str:
        """The access token exactly as the client sent it (a secret: never log it)."""
        raw = self._raw
        return raw.decode("ascii") if isinstance(raw, bytes) else raw

    @property
    def claims(self) -> Mapping[str, Any]:
        return self.token.claims

    @property
    def expires_at(self) -> float | None:
        """The token's ``exp`` (seconds since the epoch), None when it has none. A WebSocket
        can outlive it: by default (``websocket_expiry="close"``) the middleware closes the
        connection with 1008 at ``exp`` + ``leeway``; with ``"off"`` the app uses this."""
        exp = self.token.claims.get("exp")
        return exp if isinstance(exp, (int, float)) and not isinstance(exp, bool) else None
