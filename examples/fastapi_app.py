"""FastAPI protected by jwt_middleware.

JWT_ISSUER=... JWT_AUDIENCE=... uvicorn --app-dir examples fastapi_app:app
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Depends, FastAPI, Response
from settings_from_env import settings_from_env

from jwt_middleware import JWTMiddleware, VerifiedToken
from jwt_middleware.fastapi import RequireScopes

app = FastAPI(title="jwt_middleware example (FastAPI)")
try:  # Prometheus counters when prometheus-client is installed (the demo installs it)
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

    from jwt_middleware.observe import PrometheusEvents

    app.add_middleware(JWTMiddleware, settings=settings_from_env(events=PrometheusEvents()))

    @app.get("/metrics", include_in_schema=False)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

except ImportError:
    app.add_middleware(JWTMiddleware, settings=settings_from_env())


@app.get("/health")
async def health() -> dict[str, str]:
    return {"status": "ok"}


@app.get("/me")
async def me(token: Annotated[VerifiedToken, Depends(RequireScopes())]) -> dict[str, Any]:
    return {"sub": token.subject, "iss": token.claims.get("iss"), "claims": dict(token.claims)}


@app.get("/admin")
async def admin(token: Annotated[VerifiedToken, Depends(RequireScopes("admin"))]) -> dict[str, Any]:
    return {"sub": token.subject, "admin": True}
