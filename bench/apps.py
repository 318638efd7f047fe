"""The apps under test, as factories (``uvicorn --factory apps:starlette_protected``,
``gunicorn 'apps:flask_bare()'``). Configured from the environment by bench/run.py:

BENCH_ISSUER        issuer to trust; keys come from its OIDC discovery (a LocalIssuer)
BENCH_AUDIENCE      audience
BENCH_JWKS_URL      the issuer's JWKS URL (PyJWKClient pattern only; it has no discovery)
BENCH_WARM_UP       "0" disables the middleware's key warm-up (cold-path runs)
BENCH_JWKS_COOLDOWN seconds between unknown-kid fetches (rotation burst; default 30)
BENCH_TOKEN_CACHE   token_cache_size (default: the library's default)

Each app serves ``GET /health`` (public) and ``GET /me``. A bare app answers /me with the same
shape of JSON as its protected twin, so the difference is the cost of authentication.

The ``*_ceiling`` apps are yardsticks, not authentication: a bare app behind a middleware that
does only what a row cannot avoid, and nothing else: the RSA signature check of a new token;
the digest and dict lookup of a cached one; a cache hit with the checks the issue asks of one
(HitOnly); a new token with the checks a verifier must make, in one tight function
(VerifyOnly). A target above their ratio is out of reach on the machine measured.
"""

# No "from __future__ import annotations": FastAPI must see the Annotated[...] dependencies of
# the path functions defined inside the factories as objects, not as strings.
import binascii
import hashlib
import json
import math
import os
import time
from typing import TYPE_CHECKING, Annotated, Any

import httpx
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from starlette.applications import Starlette
from starlette.authentication import AuthCredentials, BaseUser
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from jwt_middleware import JWTMiddleware, Settings, VerifiedToken, requires_scopes

if TYPE_CHECKING:
    from fastapi import FastAPI

PUBLIC = {"/health"}


def settings() -> Settings:
    size = os.environ.get("BENCH_TOKEN_CACHE")
    cache = {"token_cache_size": int(size)} if size else {}
    return Settings(
        issuer=os.environ["BENCH_ISSUER"],
        audience=os.environ["BENCH_AUDIENCE"],
        public_paths=PUBLIC,
        warm_up=os.environ.get("BENCH_WARM_UP", "1") != "0",
        jwks_cooldown=float(os.environ.get("BENCH_JWKS_COOLDOWN", "30")),
        **cache,
    )


# -- Starlette ---------------------------------------------------------------------------------


async def _health(request: Request) -> JSONResponse:
    return JSONResponse({"status": "ok"})


async def _me_bare(request: Request) -> JSONResponse:
    return JSONResponse({"sub": "anonymous"})


@requires_scopes()
async def _me_protected(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity})


def starlette_bare() -> Starlette:
    return Starlette(routes=[Route("/health", _health), Route("/me", _me_bare)])


async def _me_user(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity})


def starlette_protected() -> Starlette:
    """JWTMiddleware, and ``@requires_scopes()`` on the endpoint (as in anonymous mode)."""
    return Starlette(
        routes=[Route("/health", _health), Route("/me", _me_protected)],
        middleware=[Middleware(JWTMiddleware, settings=settings())],
    )


def starlette_middleware_only() -> Starlette:
    """JWTMiddleware alone: outside anonymous mode it refuses every request to /me without a
    valid token, and the endpoint reads the identity from the request."""
    return Starlette(
        routes=[Route("/health", _health), Route("/me", _me_user)],
        middleware=[Middleware(JWTMiddleware, settings=settings())],
    )


# -- ceilings ----------------------------------------------------------------------------------

_B64URL = bytes.maketrans(b"-_", b"+/")


def _authorization(scope: Scope) -> bytes:
    for name, value in scope["headers"]:
        if name == b"authorization":
            return bytes(value)
    return b""


async def _refuse(send: Send) -> None:
    await send({"type": "http.response.start", "status": 401, "headers": []})
    await send({"type": "http.response.body", "body": b""})


class SignatureOnly:
    """The ceiling for unique tokens: split the token at its last dot, decode the signature and
    check it with the issuer's RSA key, loaded once at start. No header, no claims, no kid."""

    def __init__(self, app: ASGIApp) -> None:
        import jwt

        self.app = app
        jwks = httpx.get(os.environ["BENCH_JWKS_URL"]).json()
        key = jwt.PyJWK(jwks["keys"][0]).key
        assert isinstance(key, rsa.RSAPublicKey)
        self.key, self.padding, self.hash = key, padding.PKCS1v15(), hashes.SHA256()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            value = _authorization(scope)
            signing_input, _, signature = value[7:].rpartition(b".")
            try:
                padded = signature.translate(_B64URL) + b"=" * (-len(signature) % 4)
                raw = binascii.a2b_base64(padded)
                self.key.verify(raw, signing_input, self.padding, self.hash)
            except (InvalidSignature, binascii.Error):
                return await _refuse(send)
        await self.app(scope, receive, send)


_B64_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_CANONICAL_LAST = (
    None,
    None,
    frozenset(_B64_ALPHABET[::16]),  # 2 chars: the last one carries 4 unused bits
    frozenset(_B64_ALPHABET[::4]),  # 3 chars: 2 unused bits
)


def _b64url(segment: bytes) -> bytes:
    """Strict base64url: the alphabet only, no padding, canonical last character."""
    rem = len(segment) % 4
    allowed = _CANONICAL_LAST[rem]
    if rem == 1 or segment.translate(None, _B64_ALPHABET):
        raise ValueError("not base64url")
    if allowed is not None and segment[-1] not in allowed:
        raise ValueError("not canonical")
    return binascii.a2b_base64(segment.translate(_B64URL) + b"=" * (-rem % 4))


class VerifyOnly:
    """The ceiling for new tokens with what the issue asks of a verifier, written as one tight
    function: strict base64url, the header once per distinct header segment (alg allow-list,
    crit refused, kid), the payload's JSON, iss, aud, exp, nbf and iat with leeway, the key by
    kid, the RSA check, and request.user/request.auth for the endpoint. No duplicate-member
    check, no typ, size or scope rules, no error answers beyond a bare 401."""

    def __init__(self, app: ASGIApp) -> None:
        import jwt

        self.app = app
        jwks = httpx.get(os.environ["BENCH_JWKS_URL"]).json()
        self.keys = {jwk["kid"]: jwt.PyJWK(jwk).key for jwk in jwks["keys"]}
        self.issuer, self.audience = os.environ["BENCH_ISSUER"], os.environ["BENCH_AUDIENCE"]
        self.kids: dict[bytes, str] = {}
        self.padding, self.hash = padding.PKCS1v15(), hashes.SHA256()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            try:
                claims = self._verify(_authorization(scope)[7:])
            except (ValueError, KeyError, TypeError, AttributeError, InvalidSignature):
                return await _refuse(send)
            scope["user"] = _User(claims["sub"])
            scope["auth"] = AuthCredentials(claims.get("scope", "").split())
        await self.app(scope, receive, send)

    def _verify(self, token: bytes) -> dict[str, Any]:
        head, body, signature = token.split(b".")
        kid = self.kids.get(head)
        if kid is None:
            header = json.loads(_b64url(head))
            if header.get("alg") != "RS256" or "crit" in header:
                raise ValueError("header refused")
            kid = self.kids[head] = header["kid"]
        key = self.keys[kid]
        claims: dict[str, Any] = json.loads(_b64url(body))
        now, leeway = time.time(), 60
        aud = claims["aud"]
        if claims["iss"] != self.issuer or not (
            aud == self.audience or (isinstance(aud, list) and self.audience in aud)
        ):
            raise ValueError("iss or aud")
        if now >= claims["exp"] + leeway or now + leeway < claims.get("nbf", 0):
            raise ValueError("time window")
        if now + leeway < claims.get("iat", 0):
            raise ValueError("issued in the future")
        key.verify(_b64url(signature), token[: len(head) + 1 + len(body)], self.padding, self.hash)
        return claims


class DigestOnly:
    """The ceiling for cached tokens: a BLAKE2b-256 digest of the token and a dict lookup (a
    token is "verified" on first sight). No time checks, no identity objects."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.seen: dict[bytes, bool] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            value = _authorization(scope)
            if not value:
                return await _refuse(send)
            digest = hashlib.blake2b(value[7:], digest_size=32).digest()
            if digest not in self.seen:
                self.seen[digest] = True
        await self.app(scope, receive, send)


class _User(BaseUser):
    __slots__ = ("identity",)

    def __init__(self, identity: str) -> None:
        self.identity = identity


class HitOnly:
    """The ceiling for cached tokens with what the issue requires of a hit: the digest and
    dict lookup of DigestOnly, the time window and the key set checked against the clock on
    every hit, and a fresh ``request.user`` / ``request.auth`` pair for the endpoint, which
    reads the identity. No header rules, no public paths, no refusal answers.
    """

    # The header scan and digest repeat DigestOnly's on purpose: a yardstick is one tight
    # function, and a shared helper would add a call to every request it measures.

    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self.keys = object()  # stands for the current key set
        self.fresh_until = math.inf
        self.seen: dict[bytes, tuple[str, tuple[str, ...], float, float, object]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"] != "/health":
            value = _authorization(scope)
            if not value:
                return await _refuse(send)
            digest = hashlib.blake2b(value[7:], digest_size=32).digest()
            entry = self.seen.get(digest)
            now = time.time()
            if entry is None:
                entry = self.seen[digest] = ("user-1", ("read",), -math.inf, now + 3600, self.keys)
            subject, scopes, not_before, expires, keys = entry
            if not (keys is self.keys and now < self.fresh_until and not_before <= now < expires):
                return await _refuse(send)
            scope["user"] = _User(subject)
            scope["auth"] = AuthCredentials(scopes)
        await self.app(scope, receive, send)


def starlette_signature_ceiling() -> Starlette:
    return Starlette(
        routes=[Route("/health", _health), Route("/me", _me_bare)],
        middleware=[Middleware(SignatureOnly)],
    )


def starlette_digest_ceiling() -> Starlette:
    return Starlette(
        routes=[Route("/health", _health), Route("/me", _me_bare)],
        middleware=[Middleware(DigestOnly)],
    )


def starlette_hit_ceiling() -> Starlette:
    return Starlette(
        routes=[Route("/health", _health), Route("/me", _me_user)],
        middleware=[Middleware(HitOnly)],
    )


def fastapi_verify_ceiling() -> Any:
    app = _fastapi(protected=False)

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        return {"sub": request.user.identity}

    app.add_middleware(VerifyOnly)
    return app


def fastapi_signature_ceiling() -> Any:
    app = fastapi_bare()
    app.add_middleware(SignatureOnly)
    return app


# -- FastAPI -----------------------------------------------------------------------------------


def _fastapi(protected: bool) -> "FastAPI":
    """A FastAPI app with the public /health route, behind JWTMiddleware when ``protected``;
    the caller adds /me."""
    from fastapi import FastAPI

    app = FastAPI()
    if protected:
        app.add_middleware(JWTMiddleware, settings=settings())

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def fastapi_bare() -> Any:
    app = _fastapi(protected=False)

    @app.get("/me")
    async def me() -> dict[str, Any]:
        return {"sub": "anonymous"}

    return app


def fastapi_protected() -> Any:
    """JWTMiddleware + the RequireScopes dependency, as in examples/fastapi_app.py."""
    from fastapi import Depends

    from jwt_middleware.fastapi import RequireScopes

    app = _fastapi(protected=True)

    @app.get("/me")
    async def me(token: Annotated[VerifiedToken, Depends(RequireScopes())]) -> dict[str, Any]:
        return {"sub": token.subject}

    return app


def fastapi_middleware_only() -> Any:
    """JWTMiddleware alone: outside anonymous mode it refuses every request to /me without a
    valid token, and the endpoint reads the identity from the request (no dependency)."""
    app = _fastapi(protected=True)

    @app.get("/me")
    async def me(request: Request) -> dict[str, Any]:
        return {"sub": request.user.identity}

    return app


def _pyjwt_app(threaded: bool) -> Any:
    import jwt
    from fastapi import Depends, FastAPI, HTTPException
    from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

    issuer, audience = os.environ["BENCH_ISSUER"], os.environ["BENCH_AUDIENCE"]
    jwk_client = jwt.PyJWKClient(os.environ["BENCH_JWKS_URL"], cache_keys=True)
    bearer = HTTPBearer()
    app = FastAPI()

    def decode(credentials: HTTPAuthorizationCredentials) -> dict[str, Any]:
        token = credentials.credentials
        try:
            signing_key = jwk_client.get_signing_key_from_jwt(token)
            claims: dict[str, Any] = jwt.decode(
                token,
                signing_key.key,
                algorithms=["RS256", "ES256", "PS256", "EdDSA"],
                audience=audience,
                issuer=issuer,
                options={"require": ["exp"]},
            )
        except jwt.PyJWTError:
            raise HTTPException(
                status_code=401, detail="invalid token", headers={"WWW-Authenticate": "Bearer"}
            ) from None
        return claims

    if threaded:

        def claims_of(
            credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
        ) -> dict[str, Any]:
            return decode(credentials)

    else:

        async def claims_of(  # type: ignore[misc]
            credentials: Annotated[HTTPAuthorizationCredentials, Depends(bearer)],
        ) -> dict[str, Any]:
            return decode(credentials)

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    async def me(claims: Annotated[dict[str, Any], Depends(claims_of)]) -> dict[str, Any]:
        return {"sub": claims.get("sub")}

    return app


def fastapi_pyjwt() -> Any:
    """The common hand-written pattern: an HTTPBearer dependency that asks PyJWKClient for the
    signing key (PyJWKClient caches the JWKS and the keys itself) and calls jwt.decode.

    Here the dependency is a plain ``def`` (PyJWKClient does blocking I/O), which FastAPI runs
    in its thread pool.
    """
    return _pyjwt_app(threaded=True)


def fastapi_pyjwt_async() -> Any:
    """The same pattern with an ``async def`` dependency calling PyJWKClient directly (as in
    Auth0's FastAPI sample): no thread hop, but a key fetch would block the event loop."""
    return _pyjwt_app(threaded=False)


# -- Flask (the protected one is examples/flask_app.py itself) ---------------------------------


def flask_bare() -> Any:
    """examples/flask_app.py without the middleware: /me answers the same shape of JSON."""
    from flask import Flask

    app = Flask(__name__)
    claims = {
        "iss": os.environ.get("BENCH_ISSUER", ""),
        "sub": "user-1",
        "aud": os.environ.get("BENCH_AUDIENCE", ""),
        "iat": 1_800_000_000,
        "exp": 1_800_003_600,
        "jti": "0" * 32,
        "scope": "read",
    }

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    def me() -> dict[str, Any]:
        return {"sub": claims["sub"], "iss": claims["iss"], "claims": dict(claims)}

    return app
