"""FastAPI protected by jwt_middleware.

JWT_ISSUER=... JWT_AUDIENCE=... uvicorn --app-dir examples fastapi_app:app

METRICS_PORT  serve the Prometheus counters on 127.0.0.1:METRICS_PORT (optional; needs
              prometheus-client). They are never served on the API's own port.

Why not a public ``/metrics``: ``jwt_middleware_rejected_total{reason}`` counts refusals by
reason, so anyone who can send a forged token and then read the counters learns which check
it failed (``issuer_mismatch``, ``audience_mismatch``, ``kid_unknown``, ...), the very details
the middleware keeps out of its answers. Keep the counters where only the scraper reaches them:
a loopback or private port (as here), or behind authentication.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI
from settings_from_env import settings_from_env

from jwt_middleware import JWTMiddleware, VerifiedToken
from jwt_middleware.fastapi import RequireScopes

METRICS_PORT = os.environ.get("METRICS_PORT")


@contextlib.asynccontextmanager
async def metrics_server(app: FastAPI) -> AsyncIterator[None]:
    """The Prometheus counters on their own loopback port, for the life of the app."""
    from prometheus_client import start_http_server

    server, thread = start_http_server(int(METRICS_PORT or 0), addr="127.0.0.1")
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


if METRICS_PORT:
    try:
        from jwt_middleware.observe import PrometheusEvents

        events = PrometheusEvents()
    except ImportError:
        raise SystemExit(
            "METRICS_PORT needs prometheus-client: pip install prometheus-client"
        ) from None
    app = FastAPI(title="jwt_middleware example (FastAPI)", lifespan=metrics_server)
    app.add_middleware(JWTMiddleware, settings=settings_from_env(events=events))
else:
    app = FastAPI(title="jwt_middleware example (FastAPI)")
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
