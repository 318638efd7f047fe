"""The WSGI middleware: ``app.wsgi_app = JWTWSGIMiddleware(app.wsgi_app, ...)`` for Flask, or
around any WSGI app. Same settings, token locations, rules and RFC 6750 answers as the ASGI
middleware, from the same verifier core; only the key fetching is synchronous.

Per process: the key cache, its HTTP client and its lock belong to one middleware instance in
one process. Under gunicorn each worker fetches keys for itself; threads of a worker share one
cache, and concurrent requests that need a refresh cause one fetch between them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from ._cors import Cors
from ._errors import AuthError, NotInstalled, render
from ._extract import COOKIE, HEADER, plain_token
from ._flow import VerifiedToken, token_digest
from ._gate import SCOPE_GATE, Gate
from ._logs import show_refusals_by_default
from ._resource import Metadata
from ._sender import Request
from ._settings import Options, Settings, settings_from
from ._verify import SyncVerifier

if TYPE_CHECKING:
    from _typeshed.wsgi import StartResponse, WSGIApplication, WSGIEnvironment
    from typing_extensions import Unpack
else:
    StartResponse = WSGIApplication = WSGIEnvironment = Any

__all__ = [
    "ENVIRON_GATE",
    "ENVIRON_LOCATION",
    "ENVIRON_RAW_TOKEN",
    "ENVIRON_TOKEN",
    "JWTWSGIMiddleware",
    "get_token",
]

#: ``environ`` keys the middleware sets on every request it lets through.
ENVIRON_TOKEN = "jwt_middleware.token"  # VerifiedToken, or None when unauthenticated
ENVIRON_LOCATION = "jwt_middleware.location"  # "header" / "cookie" / None
ENVIRON_RAW_TOKEN = "jwt_middleware.raw_token"  # the token as sent (a secret), or None
ENVIRON_GATE = SCOPE_GATE  # settings + reporting, for the per-route decorators

_CSRF_ENVIRON = (
    ("HTTP_ORIGIN", b"origin"),
    ("HTTP_SEC_FETCH_SITE", b"sec-fetch-site"),
    ("HTTP_HOST", b"host"),
)

_BEARER = ("Bearer ", "bearer ")

#: The headers the sender checks read (the client certificate's is added when configured).
_SENDER_ENVIRON = (
    ("HTTP_DPOP", b"dpop"),
    ("HTTP_HOST", b"host"),
    ("HTTP_X_FORWARDED_PROTO", b"x-forwarded-proto"),
    ("HTTP_X_FORWARDED_HOST", b"x-forwarded-host"),
)
#: Those whose comma-joined value is several headers (the forwarded ones are lists by design).
_SPLIT = frozenset({b"dpop", b"host"})

_STATUS = {
    200: "200 OK",
    204: "204 No Content",
    400: "400 Bad Request",
    401: "401 Unauthorized",
    403: "403 Forbidden",
    405: "405 Method Not Allowed",
    503: "503 Service Unavailable",
}


class JWTWSGIMiddleware:
    """Verify the bearer token of every request before the wrapped WSGI app sees it.

    Pass a :class:`Settings` as ``settings=``, or its fields as keyword arguments. With
    ``warm_up=True`` (default) the keys are fetched here, at construction, so the first request
    does not wait for them; a failure is logged and retried on the first request.
    """

    def __init__(
        self,
        app: WSGIApplication,
        *,
        settings: Settings | Sequence[Settings] | None = None,
        **options: Unpack[Options],
    ) -> None:
        self.app = app
        self.verifier = SyncVerifier(settings_from(settings, options))
        self.settings = self.verifier.settings
        self.gate = Gate(self.settings)
        show_refusals_by_default()
        self._plain = self.verifier.caches and self.settings.header
        self._passthrough = self.settings.preflight_passthrough
        self._cors = Cors(self.settings) if self.settings.cors_origins else None
        self._metadata = (
            Metadata(self.settings, self.verifier.issuers) if self.settings.resource else None
        )
        cert = self.settings.client_cert_header
        self._sender_environ = [*_SENDER_ENVIRON] + (
            [("HTTP_" + cert.upper().replace("-", "_"), cert.encode("latin-1"))] if cert else []
        )
        if self.settings.warm_up:
            self.verifier.warm_up()

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        gate = self.gate
        path = environ.get("PATH_INFO", "")
        method = environ.get("REQUEST_METHOD")
        if self._metadata is not None and (
            environ.get("SCRIPT_NAME", "") + path in self._metadata.paths
        ):
            status, headers, body = self._metadata.answer(method)
            start_response(_STATUS[status], headers)
            return [body]
        environ[ENVIRON_GATE] = gate
        environ[ENVIRON_TOKEN] = environ[ENVIRON_LOCATION] = environ[ENVIRON_RAW_TOKEN] = None
        if self._cors is not None and "HTTP_ORIGIN" in environ:
            with_cors = self._cors_layer(environ, method, start_response)
            if with_cors is None:
                return []
            start_response = with_cors
        # The hot path, as in the ASGI middleware: a plain Bearer token is looked up by digest
        # and, when new and well formed, verified without a second extraction pass.
        raw = self._plain_token(environ) if self._plain else None
        extra: list[tuple[bytes, bytes]] | None = None  # headers the checks add to the answer
        try:
            verified = None
            if raw is not None and not self._unchecked(method, path):
                plain = raw.encode("ascii")
                digest = token_digest(plain)
                verified = self.verifier.cached(digest)
                if verified is None and (token := plain_token(plain)) is not None:
                    extra = []
                    request = self._request(environ, extra)
                    verified = self.verifier.verify(token, digest, request=request)
                if verified is not None:
                    environ[ENVIRON_TOKEN] = verified
                    environ[ENVIRON_LOCATION] = HEADER
                    environ[ENVIRON_RAW_TOKEN] = raw
            if verified is None:
                extra = []
                self._full(environ, method, path, extra)
        except AuthError as exc:
            gate.report(exc, "http", path)
            return refusal(exc, self.settings, start_response)
        if extra:
            return self.app(environ, _adding(start_response, extra))
        return self.app(environ, start_response)

    def _cors_layer(
        self, environ: WSGIEnvironment, method: str | None, start_response: StartResponse
    ) -> StartResponse | None:
        """As ``JWTMiddleware._cors_layer``: None when the request was a preflight, answered."""
        cors = self._cors
        assert cors is not None
        # A server joins repeated Origin headers with commas: no allowed origin matches that.
        allow = cors.allow(environ["HTTP_ORIGIN"].encode("latin-1"))
        if method == "OPTIONS" and "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
            status, answer = cors.preflight(allow)
            headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in answer]
            start_response(_STATUS[status], headers)
            return None
        if allow is None:
            return start_response
        extra = cors.response_headers_str(allow)

        def with_cors(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
            return start_response(status, [*headers, *extra], exc_info)

        return with_cors

    def _full(
        self,
        environ: WSGIEnvironment,
        method: str | None,
        path: str,
        extra: list[tuple[bytes, bytes]],
    ) -> None:
        """Every extraction rule, the verifier and (for a cookie) the CSRF checks; ``extra``
        collects the headers the checks add to the answer."""
        gate = self.gate
        headers = _headers(environ)
        if gate.unchecked(method, path, headers):
            return
        found = gate.token(headers)
        if found is None:
            return
        token, location = found
        request = self._request(environ, extra)
        verified = self.verifier.verify(token, location=location, request=request)
        if location == COOKIE:
            gate.check_csrf(method, _csrf_headers(environ), verified)
        environ[ENVIRON_TOKEN] = verified
        environ[ENVIRON_LOCATION] = location
        environ[ENVIRON_RAW_TOKEN] = token

    def _plain_token(self, environ: WSGIEnvironment) -> str | None:
        """The token as sent, whose ASCII bytes are the token cache's key: see
        ``extract.plain_bearer``. WSGI servers join repeated headers with commas, and a token
        never holds one, so a comma means "not plain"."""
        value: str | None = environ.get("HTTP_AUTHORIZATION")
        if value is None or not value.startswith(_BEARER) or "," in value or "HTTP_DPOP" in environ:
            return None
        if self.gate.cookie is not None and "HTTP_COOKIE" in environ:
            return None
        token = value[7:]
        return token if token.isascii() else None

    def _request(self, environ: WSGIEnvironment, answer: list[tuple[bytes, bytes]]) -> Request:
        """What the sender checks (DPoP, client certificates) read of this request; ``answer``
        collects the headers they add to the response."""
        # PEP 3333: the path is bytes as latin-1 text; clients sign it as UTF-8.
        raw = environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", "")
        path = raw.encode("latin-1", "replace").decode("utf-8", "replace")
        headers: list[tuple[bytes, bytes]] = []
        for key, name in self._sender_environ:
            value = environ.get(key)
            if value is not None:
                # Servers join repeated headers with commas; a DPoP proof (a JWS) and these
                # single-valued headers never hold one, so each part was a header of its own.
                for part in value.split(",") if name in _SPLIT else (value,):
                    headers.append((name, part.strip(" \t").encode("latin-1", "replace")))
        return Request(
            method=environ.get("REQUEST_METHOD") or "GET",
            scheme=environ.get("wsgi.url_scheme") or "http",
            path=path,
            headers=headers,
            peer=environ.get("REMOTE_ADDR"),
            answer=answer,
        )

    def _unchecked(self, method: str | None, path: str) -> bool:
        """Whether the general path might let the request through unchecked: a public path, or
        (with preflight_passthrough) an OPTIONS request, a preflight by its headers there."""
        return (self._passthrough and method == "OPTIONS") or self.gate.unchecked(None, path, ())

    def close(self) -> None:
        """Close the key fetcher's HTTP client."""
        self.verifier.close()


def get_token(environ: WSGIEnvironment) -> VerifiedToken | None:
    """The request's verified token, or None when it came in unauthenticated.

    Also works for a WSGI app served through an ASGI server (a2wsgi) behind ``JWTMiddleware``:
    the identity is then read from the ASGI scope that a2wsgi passes as ``asgi.scope``.
    """
    return lookup(environ)[0]


def lookup(environ: WSGIEnvironment) -> tuple[VerifiedToken | None, Gate]:
    """``(token, gate)`` from either middleware; NotInstalled when neither is."""
    gate: Gate | None = environ.get(ENVIRON_GATE)
    if gate is not None:
        token: VerifiedToken | None = environ[ENVIRON_TOKEN]
        return token, gate
    scope = environ.get("asgi.scope")
    if isinstance(scope, dict) and SCOPE_GATE in scope:
        # JWTMiddleware's JWTUser, read without importing Starlette into a WSGI process.
        token = getattr(scope.get("user"), "token", None)
        return (token if isinstance(token, VerifiedToken) else None), scope[SCOPE_GATE]
    raise NotInstalled("no JWTWSGIMiddleware (nor JWTMiddleware) in front of this app")


def refusal(exc: AuthError, settings: Settings, start_response: StartResponse) -> list[bytes]:
    refusal = render(exc, settings.challenge)
    headers = [*refusal.headers, ("Content-Length", str(len(refusal.body)))]
    start_response(_STATUS.get(refusal.status, str(refusal.status)), headers)
    return [refusal.body]


def _headers(environ: WSGIEnvironment) -> list[tuple[bytes, bytes]]:
    """The request headers the gate looks at, as ASGI-style byte pairs.

    WSGI servers join repeated headers with commas (PEP 3333 leaves it to them). A bearer token
    never contains a comma, so a comma means several Authorization headers: split them back so
    the request is refused as ambiguous, exactly as on the ASGI side.
    """
    pairs: list[tuple[bytes, bytes]] = []
    authorization = environ.get("HTTP_AUTHORIZATION")
    if authorization is not None:
        parts = authorization.split(",")
        # Only a Bearer or DPoP credential proves the commas joined several headers: other schemes
        # (Digest, AWS4-HMAC-SHA256, …) carry commas in a single value.
        if len(parts) > 1 and any(
            p.strip()[:6].lower() == "bearer" or p.strip()[:5].lower() == "dpop " for p in parts
        ):
            pairs.extend((b"authorization", part.encode("latin-1")) for part in parts)
        else:
            pairs.append((b"authorization", authorization.encode("latin-1")))
    cookie = environ.get("HTTP_COOKIE")
    if cookie is not None:
        # One value, split on ";" only (RFC 6265 §4.2.1), as the ASGI side parses it. Browsers
        # do put commas in cookie values: splitting on them let "theme=dark,<name>=<token>", a
        # cookie any sibling subdomain can set, pass for the token cookie.
        pairs.append((b"cookie", cookie.encode("latin-1")))
    if "HTTP_ACCESS_CONTROL_REQUEST_METHOD" in environ:
        pairs.append((b"access-control-request-method", b"*"))
    if "HTTP_ORIGIN" in environ:
        pairs.append((b"origin", environ["HTTP_ORIGIN"].encode("latin-1")))
    return pairs


def _csrf_headers(environ: WSGIEnvironment) -> list[tuple[bytes, bytes]]:
    settings: Settings = environ[ENVIRON_GATE].settings
    named = (
        *_CSRF_ENVIRON,
        (
            "HTTP_" + settings.csrf_header.upper().replace("-", "_"),
            settings.csrf_header.encode("latin-1"),
        ),
    )
    return [(name, environ[key].encode("latin-1")) for key, name in named if key in environ]


def _adding(start_response: StartResponse, extra: list[tuple[bytes, bytes]]) -> StartResponse:
    """``start_response`` with ``extra`` added to the app's headers."""
    added = [(name.decode("latin-1"), value.decode("latin-1")) for name, value in extra]

    def with_extra(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        return start_response(status, [*headers, *added], exc_info)

    return with_extra
