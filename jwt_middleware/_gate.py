"""What the ASGI and WSGI adapters share around the verifier: which requests skip checking,
where the token is looked for, and how a refusal is logged and reported."""

from __future__ import annotations

import hmac
import logging
from collections.abc import Iterable

from ._errors import AuthError, CSRFRejected, MissingToken, Reason, Unavailable
from ._extract import extract_token
from ._flow import VerifiedToken
from ._settings import Settings

__all__ = ["SCOPE_GATE", "Gate"]

#: The ASGI scope key holding the middleware's Gate (settings + reporting) for the per-route
#: decorators; the WSGI middleware uses the same key in ``environ``.
SCOPE_GATE = "jwt_middleware.gate"

logger = logging.getLogger("jwt_middleware")

_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})


class Gate:
    __slots__ = (
        "_csrf_name",
        "_dpop",
        "_passthrough",
        "_public",
        "_public_prefixes",
        "cookie",
        "settings",
    )

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._public = frozenset(p for p in settings.public_paths if not p.endswith("*"))
        self._public_prefixes = tuple(p[:-1] for p in settings.public_paths if p.endswith("*"))
        self._passthrough = settings.preflight_passthrough
        #: The token cookie's name as it appears in a Cookie header, or None.
        self.cookie = settings.cookie.encode("ascii") if settings.cookie is not None else None
        self._csrf_name = settings.csrf_header.encode("latin-1")
        self._dpop = settings.dpop != "off"

    def unchecked(
        self, method: str | None, path: str, headers: Iterable[tuple[bytes, bytes]]
    ) -> bool:
        """Public paths pass without a token; so do CORS preflights, with preflight_passthrough
        only. ``path`` is the one the app routes on (relative to the ASGI root_path / the WSGI
        SCRIPT_NAME), or a public path would not match behind a prefix."""
        if path in self._public or (
            self._public_prefixes and path.startswith(self._public_prefixes)
        ):
            return True
        if method == "OPTIONS" and self._passthrough:
            # The opt-in for a CORS layer inside this middleware (Settings warns about it).
            # Browsers always send both headers on a preflight; anything less is not one.
            names = {name for name, _ in headers}
            return b"access-control-request-method" in names and b"origin" in names
        return False

    def token(self, headers: Iterable[tuple[bytes, bytes]]) -> tuple[str, str] | None:
        """``(token, location)``, None (absent; allowed only in anonymous mode), or AuthError."""
        s = self.settings
        found = extract_token(headers, header=s.header, cookie=self.cookie, dpop=self._dpop)
        if found is None and not s.anonymous:
            raise MissingToken()
        return found

    def check_csrf(
        self,
        method: str | None,
        headers: Iterable[tuple[bytes, bytes]],
        token: VerifiedToken,
        *,
        websocket: bool = False,
    ) -> None:
        """CSRF defences for a token that came from the cookie (the browser attaches cookies to
        cross-site requests on its own; a header token proves the caller's script set it).

        * origin: ``Sec-Fetch-Site`` must not be ``cross-site`` (``same-site`` only from an
          allowed origin), and ``Origin``, when sent, must be allowed (or, with no
          ``allowed_origins``, the request's own host). Browsers send one or both on every
          state-changing request and on WebSocket handshakes.
        * double submit: a request header (``x-csrf-token``) must equal the token's ``csrf``
          claim, which a cross-site page cannot read.
        """
        mode = self.settings.csrf
        if mode == "off" or (not websocket and method in _SAFE_METHODS):
            return
        seen = self._csrf_headers(headers)
        if websocket or mode != "double_submit":
            self._check_origin(seen, required=websocket or mode == "origin")
        if not websocket and mode != "origin":
            claim = token.claims.get(self.settings.csrf_claim)
            sent = seen.get(self._csrf_name)
            if not isinstance(claim, str) or not claim:
                raise CSRFRejected(Reason.CSRF_FAILED, "token has no csrf claim")
            if sent is None or not hmac.compare_digest(sent, claim.encode("utf-8", "replace")):
                raise CSRFRejected(Reason.CSRF_FAILED, "csrf header missing or wrong")

    def _csrf_headers(self, headers: Iterable[tuple[bytes, bytes]]) -> dict[bytes, bytes]:
        wanted = (b"origin", b"sec-fetch-site", b"host", self._csrf_name)
        seen: dict[bytes, bytes] = {}
        for name, value in headers:
            if name in wanted:
                if name in seen:
                    raise CSRFRejected(Reason.CSRF_FAILED, f"several {name.decode()} headers")
                seen[name] = value.strip()
        return seen

    def _check_origin(self, seen: dict[bytes, bytes], *, required: bool) -> None:
        allowed = self.settings.allowed_origins
        site = seen.get(b"sec-fetch-site")
        origin = seen.get(b"origin")
        if site == b"cross-site":
            raise CSRFRejected(Reason.CSRF_FAILED, "Sec-Fetch-Site cross-site")
        if site == b"same-site" and (origin is None or not allowed):
            # A sibling subdomain is not us: it must prove it is one of the allowed origins.
            raise CSRFRejected(Reason.CSRF_FAILED, "Sec-Fetch-Site same-site, origin not allowed")
        if origin is not None:
            text = origin.decode("latin-1").rstrip("/").lower()
            if allowed:
                ok = text in allowed
            else:
                host = seen.get(b"host", b"").decode("latin-1").lower()
                ok = bool(host) and text.partition("://")[2] == host
            if not ok:
                raise CSRFRejected(Reason.CSRF_FAILED, f"Origin {text[:100]!r} not allowed")
        elif required and site is None:
            raise CSRFRejected(Reason.CSRF_FAILED, "no Origin or Sec-Fetch-Site header")

    def report(self, exc: AuthError, kind: str, path: str) -> None:
        level = logging.INFO
        if isinstance(exc, Unavailable):
            level = logging.WARNING
        elif isinstance(exc, MissingToken):
            level = logging.DEBUG
        # exc.detail never holds the token; attacker-chosen fragments are shown with %r.
        logger.log(
            level,
            "jwt_middleware: refused %s %r: %s %s",
            kind,
            path[:200],
            exc.reason,
            exc.detail,
            extra={"jwt_event": "refused", "jwt_reason": exc.reason},
        )
        if self.settings.events is not None:
            self.settings.events.rejected(exc.reason)
        hook = self.settings.on_error
        if hook is not None:
            try:
                hook(exc)
            except Exception:
                logger.exception("jwt_middleware: the on_error hook raised")
