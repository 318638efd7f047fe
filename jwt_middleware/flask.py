"""Flask integration: per-view decorators, the current token, and an ``init_app`` extension.

    from jwt_middleware.flask import JWT, current_token, require_scopes, require_token

    jwt = JWT(app)                       # reads JWT_ISSUER, JWT_AUDIENCE, … from app.config

    @app.get("/admin")
    @require_scopes("admin")
    def admin(): return {"sub": current_token().subject}

Refusals raised in views are ``werkzeug`` HTTP exceptions (:class:`AuthHTTPException`, a
subclass per status: 401/403), rendered as the same JSON + ``WWW-Authenticate`` as the
middleware's own answers. Override them the Flask way: ``@app.errorhandler(AuthHTTPException)``
or ``@app.errorhandler(403)``.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

from flask import Flask, request
from werkzeug.exceptions import Forbidden, HTTPException, ServiceUnavailable, Unauthorized
from werkzeug.wrappers import Response

from ._errors import (
    AuthError,
    ConfigurationError,
    InsufficientScope,
    JWTMiddlewareError,
    MissingToken,
    render,
    scope_names,
    scopes_granted,
)
from ._settings import Options, Settings
from ._stepup import step_up
from ._verify import VerifiedToken
from ._wsgi import JWTWSGIMiddleware, get_token, lookup

if TYPE_CHECKING:
    from typing_extensions import Unpack  # typing.Unpack is Python 3.11+

__all__ = ["JWT", "AuthHTTPException", "current_token", "require_scopes", "require_token"]

F = TypeVar("F", bound=Callable[..., Any])


class AuthHTTPException(HTTPException, JWTMiddlewareError):
    """A refusal raised in a Flask view, carrying the :class:`AuthError` as ``.error``."""

    def __init__(self, error: AuthError, settings: Settings) -> None:
        self.error = error
        self.settings = settings
        super().__init__(description=error.public_description)

    @staticmethod
    def for_error(error: AuthError, settings: Settings) -> AuthHTTPException:
        """The exception to raise: also werkzeug's Unauthorized/Forbidden/ServiceUnavailable, so
        ``@app.errorhandler(401)`` (403, 503) catches it as Flask users expect."""
        raised = _BY_STATUS.get(error.status_code, AuthHTTPException)(error, settings)
        raised.code = error.status_code
        return raised

    def get_response(self, environ: Any = None, scope: Any = None) -> Response:
        settings = self.settings
        refusal = render(self.error, settings.challenge)
        response = Response(refusal.body, status=refusal.status)
        # Set one by one, not passed to Response(): Content-Type then replaces werkzeug's
        # default in place, so the header order stays what it has always been.
        for name, value in refusal.headers:
            response.headers[name] = value
        return response


class _Unauthorized(AuthHTTPException, Unauthorized):
    code = 401


class _Forbidden(AuthHTTPException, Forbidden):
    code = 403


class _ServiceUnavailable(AuthHTTPException, ServiceUnavailable):
    code = 503


_BY_STATUS: dict[int, type[AuthHTTPException]] = {
    401: _Unauthorized,
    403: _Forbidden,
    503: _ServiceUnavailable,
}


def current_token() -> VerifiedToken | None:
    """The current request's verified token (None when unauthenticated)."""
    return get_token(request.environ)


def require_scopes(
    *scopes: str, any_of: bool = False, acr_values: Iterable[str] = (), max_age: float | None = None
) -> Callable[[F], F]:
    """The view needs a valid token granting ``scopes`` (all of them, or one with ``any_of``),
    and with ``acr_values``/``max_age`` a strong or recent enough login (RFC 9470). Without a
    token: 401; a login too weak or too old: 401 ``insufficient_user_authentication``; without
    the scopes: 403 ``insufficient_scope``."""
    required = scope_names(scopes)
    login = step_up(acr_values, max_age)

    def decorator(view: F) -> F:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            environ = request.environ
            token, gate = lookup(environ)
            error: AuthError | None = None
            if token is None:
                error = MissingToken(scopes=required)
            else:
                try:
                    login.check(token.claims, gate.settings.clock(), gate.settings.leeway)
                except AuthError as exc:
                    error = exc
            if (
                error is None
                and required
                and not scopes_granted(
                    token.scopes if token is not None else (), required, any_of=any_of
                )
            ):
                error = InsufficientScope(required, any_of=any_of)
            if error is not None:
                gate.report(error, "http", environ.get("PATH_INFO", ""))
                raise AuthHTTPException.for_error(error, gate.settings)
            return view(*args, **kwargs)

        return guarded  # type: ignore[return-value]

    return decorator


#: The view needs a valid token (for apps that run the middleware with ``anonymous=True``).
require_token: Callable[[F], F] = require_scopes()

_FIELDS = {f.name for f in dataclasses.fields(Settings) if f.init}


class JWT:
    """Flask extension: wraps ``app.wsgi_app`` in :class:`JWTWSGIMiddleware`.

    Settings come from ``app.config`` keys ``JWT_<FIELD>`` (``JWT_ISSUER``, ``JWT_AUDIENCE``,
    ``JWT_JWKS_URL``, ``JWT_PUBLIC_PATHS``, …; any :class:`Settings` field), overridden by
    keyword arguments. A ``JWT_*`` key that names no setting is an error, not ignored.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        config_prefix: str = "JWT_",
        **options: Unpack[Options],
    ) -> None:
        self.config_prefix = config_prefix
        self.options = options
        self.middleware: JWTWSGIMiddleware | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        settings = Settings(
            **{**settings_from_config(app.config, self.config_prefix), **self.options}
        )
        self.middleware = JWTWSGIMiddleware(app.wsgi_app, settings=settings)
        app.wsgi_app = self.middleware  # type: ignore[method-assign]
        app.extensions["jwt_middleware"] = self


def settings_from_config(config: Mapping[str, Any], prefix: str = "JWT_") -> dict[str, Any]:
    options: dict[str, Any] = {}
    for key, value in config.items():
        if not key.startswith(prefix):
            continue
        name = key[len(prefix) :].lower()
        if name not in _FIELDS:
            known = ", ".join(sorted(prefix + f.upper() for f in _FIELDS))
            raise ConfigurationError(f"{key} is not a jwt_middleware setting; known: {known}")
        options[name] = value
    return options
