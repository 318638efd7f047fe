"""Flask protected by jwt_middleware's WSGI middleware.

JWT_ISSUER=... JWT_AUDIENCE=... gunicorn --chdir examples flask_app:app
"""

from __future__ import annotations

from typing import Any

from flask import Flask
from settings_from_env import settings_from_env

from jwt_middleware import JWTWSGIMiddleware
from jwt_middleware.flask import current_token, require_scopes, require_token

app = Flask(__name__)
app.wsgi_app = JWTWSGIMiddleware(app.wsgi_app, settings=settings_from_env())  # type: ignore[method-assign]


@app.get("/health")
def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/me")
@require_token
def me() -> dict[str, Any]:
    token = current_token()
    assert token is not None
    return {"sub": token.subject, "iss": token.claims.get("iss"), "claims": dict(token.claims)}


@app.get("/admin")
@require_scopes("admin")
def admin() -> dict[str, Any]:
    token = current_token()
    assert token is not None
    return {"sub": token.subject, "admin": True}
