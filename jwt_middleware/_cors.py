"""The middleware as the CORS layer, for the exact origins in ``cors_origins``.

A preflight (``OPTIONS`` with ``Origin`` and ``Access-Control-Request-Method``) carries no
credentials by design (Fetch standard), so it cannot be authenticated; and a request must never
reach an endpoint unauthenticated because of how it looks (anything that does not dispatch on
the method would serve it). So the preflight is answered here and never reaches the app: 204
with the CORS headers for an allowed origin, 403 without them for any other. Every other
response to an allowed origin (the app's, and this middleware's refusals) gets
``Access-Control-Allow-Origin``, ``Vary: Origin`` and ``Access-Control-Expose-Headers:
WWW-Authenticate, DPoP-Nonce``, so a browser client can read the challenge and the nonce.
Requests without an allowed ``Origin`` get nothing added.

Without ``cors_origins``, OPTIONS needs a token like every method: put Starlette's
``CORSMiddleware`` outside ``JWTMiddleware`` (it then answers preflights before they get here).
"""

from __future__ import annotations

from collections.abc import Iterable

from ._settings import Settings

__all__ = ["Cors", "scan"]

#: What a page's script may read of our answers: the challenge, and the DPoP nonce a retry
#: must carry (RFC 9449 §8-9).
_EXPOSED = b"WWW-Authenticate, DPoP-Nonce"

Headers = list[tuple[bytes, bytes]]


class Cors:
    """The CORS answers for one configuration, built once."""

    __slots__ = ("_any", "_origins", "_preflight", "_response", "_response_str")

    def __init__(self, settings: Settings) -> None:
        self._any = "*" in settings.cors_origins
        self._origins = frozenset(o.encode("ascii") for o in settings.cors_origins if o != "*")
        common: Headers = [(b"vary", b"Origin")]
        if settings.cors_credentials:
            common.append((b"access-control-allow-credentials", b"true"))
        self._preflight: Headers = [
            *common,
            (b"access-control-allow-methods", ", ".join(settings.cors_methods).encode()),
            # Settings fills in the default list: never None here.
            (b"access-control-allow-headers", ", ".join(settings.cors_headers or ()).encode()),
            (b"access-control-max-age", str(settings.cors_max_age).encode()),
        ]
        self._response: Headers = [*common, (b"access-control-expose-headers", _EXPOSED)]
        self._response_str = [(k.decode(), v.decode()) for k, v in self._response]

    def allow(self, origin: bytes | None) -> bytes | None:
        """The ``Access-Control-Allow-Origin`` value for a request's ``Origin``; None when that
        origin is not allowed (or the request had none, or several)."""
        if origin is None:
            return None
        if origin in self._origins:
            return origin
        return b"*" if self._any else None

    def preflight(self, allow: bytes | None) -> tuple[int, Headers]:
        """``(status, headers)`` of the answer to a preflight (``allow`` from :meth:`allow`)."""
        if allow is None:
            return 403, [(b"content-length", b"0")]
        return 204, [(b"access-control-allow-origin", allow), *self._preflight]

    def response_headers(self, allow: bytes) -> Headers:
        """The headers every other response to an allowed origin carries."""
        return [(b"access-control-allow-origin", allow), *self._response]

    def response_headers_str(self, allow: bytes) -> list[tuple[str, str]]:
        """:meth:`response_headers` as WSGI ``start_response`` takes them."""
        return [("Access-Control-Allow-Origin", allow.decode("latin-1")), *self._response_str]


def scan(headers: Iterable[tuple[bytes, bytes]]) -> tuple[bytes | None, bool]:
    """``(origin, preflight)`` from ASGI header pairs: the ``Origin`` value when there is
    exactly one (two are nobody's origin), and whether the request has the headers of a
    preflight (an ``Origin``, any number, and ``Access-Control-Request-Method``)."""
    origin = None
    origins = 0
    method = False
    for name, value in headers:
        if name == b"origin":
            origin = value
            origins += 1
        elif name == b"access-control-request-method":
            method = True
    return (origin if origins == 1 else None), method and origins > 0
