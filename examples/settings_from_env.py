"""Shared by the examples: middleware settings from the environment.

JWT_ISSUER    the issuer to trust (required)
JWT_AUDIENCE  this API's audience (required)
JWT_JWKS_URL  the issuer's JWKS URL (optional; OIDC discovery from JWT_ISSUER otherwise)
"""

from __future__ import annotations

import os
from typing import Any

from jwt_middleware import Settings

# No /metrics: the refusal counters tell which check a forged token failed (fastapi_app.py).
PUBLIC_PATHS = {"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"}


def settings_from_env(**extra: Any) -> Settings:
    missing = [name for name in ("JWT_ISSUER", "JWT_AUDIENCE") if not os.environ.get(name)]
    if missing:
        raise SystemExit(
            f"set {' and '.join(missing)} (and optionally JWT_JWKS_URL) before starting the example"
        )
    return Settings(
        issuer=os.environ["JWT_ISSUER"],
        audience=os.environ["JWT_AUDIENCE"],
        jwks_url=os.environ.get("JWT_JWKS_URL") or None,
        public_paths=PUBLIC_PATHS,
        scope_claims=("scope", "scp", "permissions"),
        **extra,
    )
