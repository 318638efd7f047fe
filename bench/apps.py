"""The apps under test, as uvicorn factories (``apps:starlette_bare``) or gunicorn targets.

Configured from the environment that common.issuer_env builds: BENCH_ISSUER, BENCH_AUDIENCE,
BENCH_JWKS_URL (for the apps that have no OIDC discovery), BENCH_WARM_UP ("0" turns the key
warm-up off) and BENCH_JWKS_COOLDOWN. Every app serves a public ``GET /health`` and ``GET /me``;
a bare app answers /me with the same shape of JSON as its protected twin.

The ceilings are yardsticks, not authentication: the bare app behind a middleware that does
only what a row cannot avoid (see bench/README.md).
"""

# No "from __future__ import annotations": FastAPI must see the Annotated dependencies of the
# path functions defined in the factories as objects.
import binascii
import hashlib
import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import httpx
import jwt
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, BaseUser
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jwt_middleware import JWTMiddleware, Settings, VerifiedToken

if TYPE_CHECKING:
    from fastapi import FastAPI


def settings() -> Settings:
    return Settings(
        issuer=os.environ["BENCH_ISSUER"],
        audience=os.environ["BENCH_AUDIENCE"],
        public_paths={"/health"},
        warm_up=os.environ.get("BENCH_WARM_UP", "1") != "0",
        jwks_cooldown=float(os.environ.get("BENCH_JWKS_COOLDOWN", "30")),
    )


# -- Starlette ---------------------------------------------------------------------------------


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _me_bare(request: Request) -> JSONResponse:
    return JSONResponse({"sub": "anonymous"})


async def _me(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity})


def _starlette(me: Any, *middleware: Middleware) -> Starlette:
    return Starlette(routes=[Route("/health", _health), Route("/me", me)], middleware=middleware)


def starlette_bare() -> Starlette:
    return _starlette(_me_bare)


def starlette_protected() -> Starlette:
    """JWTMiddleware alone: it refuses /me without a valid token; the endpoint reads the user."""
    return _starlette(_me, Middleware(JWTMiddleware, settings=settings()))


def _bearer(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value[7:])
    return b""


async def _refuse(send: Send) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class SignatureOnly:
    """Ceiling for new tokens: the RSA check of the signature with a key loaded at start; no
    header, no claims, no kid."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.key = jwt.PyJWK(httpx.get(os.environ["BENCH_JWKS_URL"]).json()["keys"][0]).key

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            signing_input, _, signature = _bearer(scope).rpartition(b".")
            try:
                padded = signature.translate(_B64URL) + b"=" * (-len(signature) % 4)
                raw = binascii.a2b_base64(padded)
                self.key.verify(raw, signing_input, padding.PKCS1v15(), hashes.SHA256())
            except (InvalidSignature, binascii.Error):
                return await _refuse(send)
        await self.app(scope, receive, send)


_B64URL = bytes.maketrans(b"-_", b"+/")


class _User(BaseUser):
    __slots__ = ("identity",)  # a slot, not BaseUser's property: one attribute read

    def __init__(self, identity: str) -> None:
        self.identity = identity  # type: ignore[misc]


class HitOnly:
    """Ceiling for cached tokens: a BLAKE2b digest and dict lookup, the time window checked on
    every hit, and a fresh request.user / request.auth pair that the endpoint reads."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: dict[bytes, tuple[str, float]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            token = _bearer(scope)
            if not token:
                return await _refuse(send)
            digest = hashlib.blake2b(token, digest_size=32).digest()
            now = time.time()
            subject, expires = self.seen.get(digest) or self.seen.setdefault(
                digest, ("user-1", now + 3600)
            )
            if now >= expires:
                return await _refuse(send)
            scope["user"], scope["auth"] = _User(subject), AuthCredentials(["read"])
        await self.app(scope, receive, send)


def starlette_signature_ceiling() -> Starlette:
    return _starlette(_me_bare, Middleware(SignatureOnly))


def starlette_hit_ceiling() -> Starlette:
    return _starlette(_me, Middleware(HitOnly))


# -- FastAPI -----------------------------------------------------------------------------------


def _fastapi() -> "FastAPI":
    from fastapi import FastAPI

    app = FastAPI()

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def fastapi_bare() -> Any:
    app = _fastapi()

    @app.get("/me")
    async def me() -> dict[str, Any]:
        return {"sub": "anonymous"}

    return app


def fastapi_protected() -> Any:
    """JWTMiddleware + the RequireScopes dependency, as in examples/fastapi_app.py."""
    from fastapi import Depends

    from jwt_middleware.fastapi import RequireScopes

    app = _fastapi()
    app.add_middleware(JWTMiddleware, settings=settings())

    @app.get("/me")
    async def me(token: Annotated[VerifiedToken, Depends(RequireScopes())]) -> dict[str, Any]:
        return {"sub": token.subject}

    return app


def _pyjwt(threaded: bool) -> Any:
    """The common hand-written pattern: an HTTPBearer dependency asks PyJWKClient (which caches
    the JWKS) for the key and calls jwt.decode. A ``def`` dependency runs in FastAPI's thread
    pool; an ``async def`` one (as in Auth0's sample) runs on the event loop."""
    from fastapi import Depends, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    issuer, audience = os.environ["BENCH_ISSUER"], os.environ["BENCH_AUDIENCE"]
    client = jwt.PyJWKClient(os.environ["BENCH_JWKS_URL"], cache_keys=True)
    Bearer = Annotated[HTTPAuthorizationCredentials, Depends(HTTPBearer())]

    def decode(credentials: HTTPAuthorizationCredentials) -> dict[str, Any]:
        token = credentials.credentials
        try:
            key = client.get_signing_key_from_jwt(token).key
            return jwt.decode(
                token,
                key,
                algorithms=["RS256", "ES256", "PS256", "EdDSA"],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError:
            headers = {"WWW-Authenticate": "Bearer"}
            raise HTTPException(401, "invalid token", headers) from None

    def claims_def(credentials: Bearer) -> dict[str, Any]:
        return decode(credentials)

    async def claims_async(credentials: Bearer) -> dict[str, Any]:
        return decode(credentials)

    app = _fastapi()
    Claims = Annotated[dict[str, Any], Depends(claims_def if threaded else claims_async)]

    @app.get("/me")
    async def me(claims: Claims) -> dict[str, Any]:
        return {"sub": claims.get("sub")}

    return app


def fastapi_pyjwt() -> Any:
    return _pyjwt(threaded=True)


def fastapi_pyjwt_async() -> Any:
    return _pyjwt(threaded=False)


# -- Flask: the protected app is examples/flask_app.py itself ----------------------------------


def flask_bare() -> Any:
    """examples/flask_app.py without the middleware, answering /me with the same JSON shape."""
    from flask import Flask

    app = Flask(__name__)
    claims: dict[str, Any] = {"iss": os.environ.get("BENCH_ISSUER", ""), "sub": "user-1"}
    claims |= {"aud": os.environ.get("BENCH_AUDIENCE", ""), "iat": 1_800_000_000}
    claims |= {"exp": 1_800_003_600, "jti": "0" * 32, "scope": "read"}

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"sub": claims["sub"], "iss": claims["iss"], "claims": dict(claims)}

    return app
