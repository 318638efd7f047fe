"""What the ASGI and WSGI adapters share around the verifier: which requests skip checking,
where the token is looked for, and how a refusal is logged and reported."""

from __future__ import annotations

import logging
from collections.abc import Iterable

from .errors import AuthError, KeysUnavailable, MissingToken
from .extract import extract_token
from .settings import Settings

__all__ = ["Gate"]

logger = logging.getLogger("jwt_middleware")


class Gate:
    __slots__ = ("_cookie", "_public", "_public_prefixes", "settings")

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._public = frozenset(p for p in settings.public_paths if not p.endswith("*"))
        self._public_prefixes = tuple(p[:-1] for p in settings.public_paths if p.endswith("*"))
        self._cookie = settings.cookie.encode("ascii") if settings.cookie is not None else None

    def unchecked(
        self, method: str | None, path: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> bool:
        """Public paths and CORS preflights pass without a token."""
        if path in self._public or (
            self._public_prefixes and path.startswith(self._public_prefixes)
        ):
            return True
        if method == "OPTIONS":
            # A CORS preflight carries no credentials by design (Fetch standard); CORS answers it.
            return any(name == b"access-control-request-method" for name, _ in headers)
        return False

    def token(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str] | None:
        """``(token, location)``, None (absent; allowed only in anonymous mode), or AuthError."""
        s = self.settings
        found = extract_token(headers, header=s.header, cookie=self._cookie)
        if found is None and not s.anonymous:
            raise MissingToken()
        return found

    def report(self, exc: AuthError, kind: str, path: str) -> None:
        level = logging.INFO
        if isinstance(exc, KeysUnavailable):
            level = logging.WARNING
        elif isinstance(exc, MissingToken):
            level = logging.DEBUG
        # exc.detail never holds the token; attacker-chosen fragments are shown with %r.
        logger.log(
            level, "jwt_middleware: refused %s %r: %s %s", kind, path[:200], exc.reason, exc.detail
        )
        hook = self.settings.on_error
        if hook is not None:
            try:
                hook(exc)
            except Exception:
                logger.exception("jwt_middleware: the on_error hook raised")
