"""JWT verification middleware for Starlette, FastAPI and WSGI apps.

Keys from a remote JWKS (or OIDC discovery), cached by kid and refreshed safely; claims checked
per RFC 7519 / RFC 8725; refusals answered per RFC 6750.

Everything public is importable from here; the ``_``-prefixed modules are private. The ASGI
names are imported on first use, so ``from jwt_middleware import JWTWSGIMiddleware`` in a Flask
app does not import Starlette or asyncio.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from ._errors import (
    AuthError,
    ConfigurationError,
    CSRFRejected,
    InsufficientAuthentication,
    InsufficientScope,
    IntrospectionUnavailable,
    InvalidProof,
    InvalidRequest,
    InvalidToken,
    JWTMiddlewareError,
    KeyFetchError,
    KeysUnavailable,
    MissingToken,
    NotInstalled,
    Reason,
    ReplayStoreError,
    ReplayUnavailable,
    RevocationStoreError,
    RevocationUnavailable,
    Unavailable,
    UnusableKey,
    UsageError,
    UseDPoPNonce,
)
from ._flow import VerifiedToken
from ._keys import Key, KeySet
from ._resolve import IssuerPattern
from ._settings import DEFAULT_ALGORITHMS, Issuer, Settings
from ._verify import AsyncVerifier, SyncVerifier
from ._wsgi import JWTWSGIMiddleware, get_token

if TYPE_CHECKING:
    from ._asgi import JWTMiddleware
    from ._authz import check_scopes, requires_scopes
    from ._identity import JWTCredentials, JWTUser

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_ALGORITHMS",
    "AsyncVerifier",
    "AuthError",
    "CSRFRejected",
    "ConfigurationError",
    "InsufficientAuthentication",
    "InsufficientScope",
    "IntrospectionUnavailable",
    "InvalidProof",
    "InvalidRequest",
    "InvalidToken",
    "Issuer",
    "IssuerPattern",
    "JWTCredentials",
    "JWTMiddleware",
    "JWTMiddlewareError",
    "JWTUser",
    "JWTWSGIMiddleware",
    "Key",
    "KeyFetchError",
    "KeySet",
    "KeysUnavailable",
    "MissingToken",
    "NotInstalled",
    "Reason",
    "ReplayStoreError",
    "ReplayUnavailable",
    "RevocationStoreError",
    "RevocationUnavailable",
    "Settings",
    "SyncVerifier",
    "Unavailable",
    "UnusableKey",
    "UsageError",
    "UseDPoPNonce",
    "VerifiedToken",
    "__version__",
    "check_scopes",
    "get_token",
    "requires_scopes",
]

# The names that need Starlette, and the private module each lives in.
_ASGI = {
    "JWTMiddleware": "._asgi",
    "check_scopes": "._authz",
    "requires_scopes": "._authz",
    "JWTCredentials": "._identity",
    "JWTUser": "._identity",
}


def __getattr__(name: str) -> Any:
    module = _ASGI.get(name)
    if module is None:
        raise AttributeError(f"module 'jwt_middleware' has no attribute {name!r}")
    value = getattr(importlib.import_module(module, __name__), name)
    globals()[name] = value  # the next lookup is a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
