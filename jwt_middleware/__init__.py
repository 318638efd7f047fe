"""JWT verification middleware for Starlette, FastAPI and WSGI apps.

Keys from a remote JWKS (or OIDC discovery), cached by kid and refreshed safely; claims checked
per RFC 7519 / RFC 8725; refusals answered per RFC 6750.
"""

from .asgi import JWTMiddleware
from .authz import check_scopes, requires_scopes
from .errors import (
    AuthError,
    ConfigurationError,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    JWTMiddlewareError,
    KeysUnavailable,
    MissingToken,
    Reason,
)
from .identity import JWTCredentials, JWTUser
from .keys import Key, KeySet
from .settings import DEFAULT_ALGORITHMS, Settings
from .verify import AsyncVerifier, SyncVerifier, VerifiedToken

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ALGORITHMS",
    "AsyncVerifier",
    "AuthError",
    "ConfigurationError",
    "InsufficientScope",
    "InvalidRequest",
    "InvalidToken",
    "JWTCredentials",
    "JWTMiddleware",
    "JWTMiddlewareError",
    "JWTUser",
    "Key",
    "KeySet",
    "KeysUnavailable",
    "MissingToken",
    "Reason",
    "Settings",
    "SyncVerifier",
    "VerifiedToken",
    "__version__",
    "check_scopes",
    "requires_scopes",
]
