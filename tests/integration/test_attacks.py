"""The attack corpus, end to end: every case is sent over real HTTP (raw sockets, so nothing is
normalised on the way) to the example apps as users run them, ASGI and WSGI, all trusting one
LocalIssuer:

* ``examples/fastapi_app.py`` and ``examples/starlette_app.py`` under uvicorn,
* ``examples/flask_app.py`` under gunicorn (``-w 1 --threads 4``),

plus, for the cookie cases, a small Starlette app (uvicorn) and Flask app (gunicorn) built by
:func:`cookie_starlette_app` / :func:`cookie_flask_app` with ``cookie="access_token"``.

Each case states the answer it expects: the status (400 or 401) and the RFC 6750 error
(``invalid_request``, ``invalid_token``, or none for a request that carries no bearer
credentials). Whatever the case, nothing is accepted (never 200) and nothing is a server error
(never >= 500). One sanity case per app proves a genuinely valid token *is* accepted, so the
harness can fail.

Tokens whose defect is in a claim or a header are genuinely signed by the trusted key over the
exact bytes sent, so a refusal is caused by the defect under test, never by a broken signature.

The servers' own header limits are raised (gunicorn ``--limit-request-field_size``, uvicorn
``--h11-max-incomplete-event-size``) so that oversized tokens reach the middleware's size cap
instead of being refused by the HTTP server.
"""

from __future__ import annotations

import base64
import contextlib
import datetime
import hashlib
import hmac
import json
import os
import socket
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.x509.oid import NameOID
from jwt.algorithms import get_default_algorithms

from jwt_middleware.testing import OMIT, LocalIssuer, SigningKey, dpop_proof, generate_key
from tests.support.challenges import with_dpop
from tests.support.servers import AppServer, gunicorn_argv, jwt_env, uvicorn_argv, wait_all_ready

AUDIENCE = "api://attacks"
COOKIE = "access_token"
APPS = ("fastapi", "starlette", "flask")
COOKIE_APPS = ("starlette-cookie", "flask-cookie")
P256_ORDER = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551
_ALGS = get_default_algorithms()


# == the cookie apps (imported by the uvicorn / gunicorn subprocesses) ==========================


def _cookie_settings() -> Any:
    from jwt_middleware import Settings

    return Settings(
        issuer=os.environ["JWT_ISSUER"],
        audience=os.environ["JWT_AUDIENCE"],
        jwks_url=os.environ["JWT_JWKS_URL"],
        cookie=COOKIE,
        public_paths={"/health"},
    )


def cookie_starlette_app() -> Any:
    """Starlette, token from the Authorization header or the ``access_token`` cookie."""
    from starlette.applications import Starlette
    from starlette.middleware import Middleware
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from jwt_middleware import JWTMiddleware, requires_scopes

    async def health(request: Any) -> JSONResponse:
        return JSONResponse({"status": "ok"})

    @requires_scopes()
    async def me(request: Any) -> JSONResponse:
        return JSONResponse({"sub": request.user.identity, "location": request.auth.location})

    return Starlette(
        routes=[Route("/health", health), Route("/me", me)],
        middleware=[Middleware(JWTMiddleware, settings=_cookie_settings())],
    )


def cookie_flask_app() -> Any:
    """Flask behind JWTWSGIMiddleware, token from the header or the ``access_token`` cookie."""
    from flask import Flask

    from jwt_middleware._wsgi import JWTWSGIMiddleware
    from jwt_middleware.flask import current_token, require_token

    app = Flask(__name__)
    app.wsgi_app = JWTWSGIMiddleware(app.wsgi_app, settings=_cookie_settings())  # type: ignore[method-assign]

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/me")
    @require_token
    def me() -> dict[str, Any]:
        token = current_token()
        assert token is not None
        return {"sub": token.subject}

    return app


# == servers ===================================================================================


@dataclass
class Reply:
    status: int
    headers: dict[str, list[str]]
    body: bytes

    def header(self, name: str) -> str | None:
        values = self.headers.get(name.lower())
        return values[0] if values else None

    def json(self) -> Any:
        return json.loads(self.body)


def raw_get(port: int, headers: list[tuple[bytes, bytes]], path: bytes = b"/me") -> Reply:
    """One HTTP/1.1 GET, header bytes sent exactly as given (duplicates, odd bytes and all)."""
    # The Host a real client sends (with the port): the URL a DPoP proof names is built from it.
    host = b"Host: 127.0.0.1:" + str(port).encode()
    lines = [b"GET " + path + b" HTTP/1.1", host, b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    request = b"\r\n".join(lines) + b"\r\n\r\n"
    chunks: list[bytes] = []
    with socket.create_connection(("127.0.0.1", port), timeout=15) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    data = b"".join(chunks)
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    parsed: dict[str, list[str]] = {}
    for line in header_lines:
        name, _, value = line.partition(":")
        parsed.setdefault(name.strip().lower(), []).append(value.strip())
    return Reply(int(status_line.split()[1]), parsed, body)


class Server(AppServer):
    """One app in a subprocess on 127.0.0.1, asked with raw sockets."""

    def get(self, headers: list[tuple[bytes, bytes]], path: bytes = b"/me") -> Reply:  # type: ignore[override]
        return raw_get(self.port, headers, path)


# Header limits raised so that oversized tokens reach the middleware's size cap.
UVICORN_OPTIONS = ["--log-level", "warning", "--h11-max-incomplete-event-size", "65536"]
GUNICORN_OPTIONS = ["-w", "1", "--threads", "4", "--limit-request-field_size", "32768"]
GUNICORN_OPTIONS += ["--log-level", "warning"]


def _uvicorn(target: str, port: int, *, factory: bool = False, app_dir: str = ".") -> list[str]:
    options = [*UVICORN_OPTIONS, "--factory"] if factory else UVICORN_OPTIONS
    return uvicorn_argv(target, port, app_dir=app_dir, options=options)


def _gunicorn(target: str, port: int, *, chdir: str = ".") -> list[str]:
    return gunicorn_argv(target, port, chdir=chdir, options=GUNICORN_OPTIONS)


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """The trusted issuer: an RS256 key (current) and a published ES256 key."""
    with LocalIssuer(audience=AUDIENCE) as local:
        local.add_key(generate_key("ES256", kid="ec-1"), publish=True)
        yield local


@pytest.fixture(scope="module")
def attacker() -> Iterator[LocalIssuer]:
    """A key server the attacker controls, on loopback: it must never be contacted."""
    with LocalIssuer(audience=AUDIENCE) as local:
        yield local


@pytest.fixture(scope="module")
def servers(
    issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Server]]:
    env = jwt_env(issuer)
    plans: dict[str, Callable[[int], list[str]]] = {
        "fastapi": lambda p: _uvicorn("fastapi_app:app", p, app_dir="examples"),
        "starlette": lambda p: _uvicorn("starlette_app:app", p, app_dir="examples"),
        "flask": lambda p: _gunicorn("flask_app:app", p, chdir="examples"),
        "starlette-cookie": lambda p: _uvicorn(
            "tests.integration.test_attacks:cookie_starlette_app", p, factory=True
        ),
        "flask-cookie": lambda p: _gunicorn("tests.integration.test_attacks:cookie_flask_app()", p),
    }
    with contextlib.ExitStack() as stack:
        started = {  # start all, then wait: they boot in parallel
            name: stack.enter_context(
                Server(name, plan, env=env, log=tmp_path_factory.mktemp(name) / "server.log")
            )
            for name, plan in plans.items()
        }
        wait_all_ready(started.values())
        yield started


# == token building ============================================================================


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def enc(part: dict[str, Any] | list[Any] | bytes | str) -> str:
    if isinstance(part, bytes):
        return b64e(part)
    if isinstance(part, str):
        return b64e(part.encode())
    return b64e(json.dumps(part, separators=(",", ":")).encode())


def sign_raw(key: SigningKey, header: Any, payload: Any) -> str:
    """A compact JWS over exactly these header/payload bytes, genuinely signed by ``key``."""
    signing_input = f"{enc(header)}.{enc(payload)}"
    algorithm = _ALGS[key.alg]
    signature = algorithm.sign(signing_input.encode(), algorithm.prepare_key(key.private_key))
    return f"{signing_input}.{b64e(signature)}"


def hmac_token(secret: bytes, header: dict[str, Any], payload: dict[str, Any]) -> str:
    signing_input = f"{enc(header)}.{enc(payload)}"
    signature = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64e(signature)}"


class Ctx:
    """What case builders need: the trusted issuer, the attacker's server and keys."""

    def __init__(self, issuer: LocalIssuer, attacker: LocalIssuer) -> None:
        self.issuer = issuer
        self.attacker = attacker
        self.rsa = issuer.current_key
        self.ec = next(k for k in issuer.published_keys if k.alg == "ES256")
        self.evil = attacker.current_key
        # DPoP client keys: the one tokens are bound to, an EdDSA one, and a thief's
        self.dpop = generate_key("ES256")
        self.dpop_ed = generate_key("EdDSA")
        self.thief = generate_key("ES256")

    def claims(self, **overrides: Any) -> dict[str, Any]:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": self.issuer.issuer,
            "sub": "mallory",
            "aud": AUDIENCE,
            "iat": now,
            "exp": now + 300,
        }
        for name, value in overrides.items():
            if value is _DROP:
                claims.pop(name, None)
            else:
                claims[name] = value
        return claims

    def header(self, key: SigningKey | None = None, **extra: Any) -> dict[str, Any]:
        key = key or self.rsa
        return {"alg": key.alg, "typ": "JWT", "kid": key.kid, **extra}

    def signed(self, key: SigningKey | None = None, header: Any = None, payload: Any = None) -> str:
        """Genuinely signed by ``key`` (default: the trusted RSA key)."""
        key = key or self.rsa
        return sign_raw(
            key,
            self.header(key) if header is None else header,
            self.claims() if payload is None else payload,
        )

    def valid(self) -> str:
        return self.issuer.mint(subject="alice")

    def x5c_chain(self) -> list[str]:
        """A self-signed certificate for the attacker's key, as an x5c value (std base64 DER)."""
        private = self.evil.private_key
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "login.example.com")])
        now = datetime.datetime.now(datetime.timezone.utc)
        cert = (
            x509.CertificateBuilder()
            .subject_name(name)
            .issuer_name(name)
            .public_key(private.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(days=1))
            .not_valid_after(now + datetime.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(private, hashes.SHA256())
        )
        return [base64.b64encode(cert.public_bytes(serialization.Encoding.DER)).decode()]


_DROP = object()

# == the corpus ================================================================================

MISSING = None  # no error code: the request carries no bearer credentials (RFC 6750 §3.1)
INVALID_REQUEST = "invalid_request"
INVALID_TOKEN = "invalid_token"

Headers = list[tuple[bytes, bytes]]


@dataclass(frozen=True)
class Case:
    id: str
    build: Callable[[Ctx], Headers]
    status: int
    error: str | None
    # where the answer legitimately differs by server (e.g. gunicorn joining repeated headers)
    overrides: tuple[tuple[str, int, str | None], ...] = ()

    def expected(self, app: str) -> tuple[int, str | None]:
        for name, status, error in self.overrides:
            if name == app:
                return status, error
        return self.status, self.error


HEADER_CASES: list[Case] = []
COOKIE_CASES: list[Case] = []


def bearer(token: str | bytes) -> Headers:
    raw = token.encode("latin-1") if isinstance(token, str) else token
    return [(b"authorization", b"Bearer " + raw)]


def add_tokens(
    prefix: str,
    builders: Mapping[str, Callable[[Ctx], str | bytes]],
    status: int = 401,
    error: str | None = INVALID_TOKEN,
) -> None:
    for name, build in builders.items():
        HEADER_CASES.append(Case(f"{prefix}-{name}", _as_bearer(build), status, error))


def _as_bearer(build: Callable[[Ctx], str | bytes]) -> Callable[[Ctx], Headers]:
    """The Authorization header carrying the token ``build`` makes."""
    return lambda ctx: bearer(build(ctx))


def add_headers(
    prefix: str,
    builders: dict[str, Callable[[Ctx], Headers]],
    status: int,
    error: str | None,
    target: list[Case] = HEADER_CASES,
    overrides: tuple[tuple[str, int, str | None], ...] = (),
) -> None:
    for name, build in builders.items():
        target.append(Case(f"{prefix}-{name}", build, status, error, overrides))


# -- alg "none", every spelling, with and without a signature -----------------------------------


def _add_alg_none(a: str) -> None:
    add_tokens(
        f"alg-{a}",
        {
            "unsigned": lambda ctx: f"{enc(ctx.header(alg=a))}.{enc(ctx.claims())}.",
            "unsigned-no-kid": lambda ctx: f"{enc({'alg': a, 'typ': 'JWT'})}.{enc(ctx.claims())}.",
            "signed": lambda ctx: ctx.signed(header=ctx.header(alg=a)),
            "junk-signature": lambda ctx: f"{enc(ctx.header(alg=a))}.{enc(ctx.claims())}.AAAA",
        },
    )


for _spelling in ("none", "None", "NONE", "nOnE"):
    _add_alg_none(_spelling)

# -- HS256 signed with the RSA public key as the secret (algorithm confusion) -------------------


def _pem(ctx: Ctx, fmt: serialization.PublicFormat) -> bytes:
    public: rsa.RSAPublicKey = ctx.rsa.public_key()
    return public.public_bytes(serialization.Encoding.PEM, fmt)


add_tokens(
    "hs256-confusion",
    {
        "spki-pem": lambda ctx: hmac_token(
            _pem(ctx, serialization.PublicFormat.SubjectPublicKeyInfo),
            ctx.header(alg="HS256"),
            ctx.claims(),
        ),
        "pkcs1-pem": lambda ctx: hmac_token(
            _pem(ctx, serialization.PublicFormat.PKCS1), ctx.header(alg="HS256"), ctx.claims()
        ),
        "pem-no-kid": lambda ctx: hmac_token(
            _pem(ctx, serialization.PublicFormat.SubjectPublicKeyInfo),
            {"alg": "HS256", "typ": "JWT"},
            ctx.claims(),
        ),
        "jwk-json": lambda ctx: hmac_token(
            json.dumps(ctx.rsa.public_jwk()).encode(), ctx.header(alg="HS256"), ctx.claims()
        ),
        "jwk-json-compact": lambda ctx: hmac_token(
            json.dumps(ctx.rsa.public_jwk(), separators=(",", ":")).encode(),
            ctx.header(alg="HS256"),
            ctx.claims(),
        ),
        "ec-pem-hs256": lambda ctx: hmac_token(
            ctx.ec.public_pem().encode(), ctx.header(ctx.ec, alg="HS256"), ctx.claims()
        ),
    },
)

# -- keys carried by the token: jwk, jku, x5u, x5c ---------------------------------------------

add_tokens(
    "embedded-jwk",
    {
        "attacker-kid": lambda ctx: ctx.signed(
            ctx.evil, ctx.header(ctx.evil, jwk=ctx.evil.public_jwk())
        ),
        "trusted-kid": lambda ctx: ctx.signed(
            ctx.evil, {**ctx.header(ctx.rsa), "jwk": ctx.evil.public_jwk()}
        ),
        "no-kid": lambda ctx: ctx.signed(
            ctx.evil, {"alg": "RS256", "typ": "JWT", "jwk": ctx.evil.public_jwk()}
        ),
    },
)


def _x5c(ctx: Ctx, **extra: Any) -> str:
    return ctx.signed(ctx.evil, {"alg": "RS256", "typ": "JWT", "x5c": ctx.x5c_chain(), **extra})


add_tokens(
    "x5c-self-signed",
    {
        "no-kid": lambda ctx: _x5c(ctx),
        "trusted-kid": lambda ctx: _x5c(ctx, kid=ctx.rsa.kid),
        "attacker-kid": lambda ctx: _x5c(ctx, kid=ctx.evil.kid),
        "with-x5t": lambda ctx: _x5c(ctx, kid=ctx.rsa.kid, x5t="AAAA"),
    },
)

# jku / x5u: checked in test_key_urls_in_the_token_are_never_fetched as well
URL_CASES: dict[str, Callable[[Ctx], str]] = {
    "jku-attacker-kid": lambda ctx: ctx.signed(
        ctx.evil, ctx.header(ctx.evil, jku=ctx.attacker.jwks_url)
    ),
    "jku-trusted-kid": lambda ctx: ctx.signed(
        ctx.evil, {**ctx.header(ctx.rsa), "jku": ctx.attacker.jwks_url}
    ),
    "jku-no-kid": lambda ctx: ctx.signed(ctx.evil, {"alg": "RS256", "jku": ctx.attacker.jwks_url}),
    "jku-issuer-lookalike": lambda ctx: ctx.signed(
        ctx.evil,
        ctx.header(
            ctx.evil, jku=ctx.attacker.url + "/.well-known/jwks.json?x=" + ctx.issuer.jwks_url
        ),
    ),
    "x5u-attacker-kid": lambda ctx: ctx.signed(
        ctx.evil, ctx.header(ctx.evil, x5u=ctx.attacker.url + "/cert.pem")
    ),
    "x5u-trusted-kid": lambda ctx: ctx.signed(
        ctx.evil, {**ctx.header(ctx.rsa), "x5u": ctx.attacker.url + "/cert.pem"}
    ),
    "jku-and-x5u-and-jwk": lambda ctx: ctx.signed(
        ctx.evil,
        ctx.header(
            ctx.evil,
            jku=ctx.attacker.jwks_url,
            x5u=ctx.attacker.url + "/x5u",
            jwk=ctx.evil.public_jwk(),
        ),
    ),
}
add_tokens("key-url", URL_CASES)

# -- kid: hostile strings and non-strings, on genuinely signed tokens --------------------------

add_tokens(
    "kid",
    {
        "path-traversal": lambda ctx: ctx.signed(header=ctx.header(kid="../../etc/passwd")),
        "path-traversal-null": lambda ctx: ctx.signed(
            header=ctx.header(kid="../../../dev/null\u0000")
        ),
        "sql": lambda ctx: ctx.signed(header=ctx.header(kid="' OR 1=1 --")),
        "sql-union": lambda ctx: ctx.signed(
            header=ctx.header(kid=f"{ctx.rsa.kid}' UNION SELECT 'secret' --")
        ),
        "10kb": lambda ctx: ctx.signed(header=ctx.header(kid="k" * 10 * 1024)),
        "int": lambda ctx: ctx.signed(header=ctx.header(kid=1)),
        "zero": lambda ctx: ctx.signed(header=ctx.header(kid=0)),
        "bool": lambda ctx: ctx.signed(header=ctx.header(kid=True)),
        "list": lambda ctx: ctx.signed(header=ctx.header(kid=[ctx.rsa.kid])),
        "object": lambda ctx: ctx.signed(header=ctx.header(kid={"kid": ctx.rsa.kid})),
        "empty-string": lambda ctx: ctx.signed(header=ctx.header(kid="")),
        "whitespace-variant": lambda ctx: ctx.signed(header=ctx.header(kid=ctx.rsa.kid + " ")),
        "case-variant": lambda ctx: ctx.signed(header=ctx.header(kid=ctx.rsa.kid.swapcase())),
        "ec-kid-for-rsa-alg": lambda ctx: ctx.signed(header=ctx.header(kid=ctx.ec.kid)),
    },
)

# -- header parameters that must be understood, or are refused -----------------------------------

_UNKNOWN_PARAMETER: dict[str, Any] = {"urn:example:unknown": True}  # a header name, not a kwarg

add_tokens(
    "header",
    {
        "crit-unknown": lambda ctx: ctx.signed(
            header=ctx.header(crit=["urn:example:unknown"], **_UNKNOWN_PARAMETER)
        ),
        "crit-exp": lambda ctx: ctx.signed(header=ctx.header(crit=["exp"], exp=1)),
        "crit-empty": lambda ctx: ctx.signed(header=ctx.header(crit=[])),
        "crit-not-a-list": lambda ctx: ctx.signed(header=ctx.header(crit="b64")),
        "b64-false": lambda ctx: ctx.signed(header=ctx.header(b64=False, crit=["b64"])),
        "b64-false-no-crit": lambda ctx: ctx.signed(header=ctx.header(b64=False)),
        "b64-true": lambda ctx: ctx.signed(header=ctx.header(b64=True)),
        "cty-JWT-nested": lambda ctx: ctx.signed(
            header=ctx.header(cty="JWT"), payload=ctx.valid().encode()
        ),
        "cty-jwt-lower": lambda ctx: ctx.signed(
            header=ctx.header(cty="jwt"), payload=ctx.valid().encode()
        ),
        "cty-application-jwt": lambda ctx: ctx.signed(
            header=ctx.header(cty="application/JWT"), payload=ctx.valid().encode()
        ),
        "cty-JWT-object-payload": lambda ctx: ctx.signed(header=ctx.header(cty="JWT")),
        "cty-not-a-string": lambda ctx: ctx.signed(header=ctx.header(cty=["JWT"])),
        "alg-missing": lambda ctx: ctx.signed(header={"typ": "JWT", "kid": ctx.rsa.kid}),
        "alg-lowercase": lambda ctx: ctx.signed(header=ctx.header(alg="rs256")),
        "alg-not-allowed-RS512": lambda ctx: ctx.signed(header=ctx.header(alg="RS512")),
        "alg-list": lambda ctx: ctx.signed(header=ctx.header(alg=["RS256"])),
        "alg-ES256-on-rsa-key": lambda ctx: ctx.signed(header=ctx.header(alg="ES256")),
        "alg-PS256-with-pkcs1-sig": lambda ctx: ctx.signed(header=ctx.header(alg="PS256")),
        "alg-EdDSA-on-ec-key": lambda ctx: ctx.signed(
            ctx.ec, header=ctx.header(ctx.ec, alg="EdDSA")
        ),
    },
)

# -- JWE, JWS JSON serialization ------------------------------------------------------------

_JWE_HEADER = {"alg": "RSA-OAEP-256", "enc": "A256GCM", "kid": "k"}
add_tokens(
    "jwe",
    {
        "five-parts": lambda ctx: ".".join(
            [enc(_JWE_HEADER), enc(b"k" * 256), enc(b"iv" * 6), enc(b"ct" * 20), enc(b"t" * 16)]
        ),
        "five-parts-dir": lambda ctx: ".".join(
            [enc({"alg": "dir", "enc": "A128GCM"}), "", enc(b"iv" * 6), enc(b"ct"), enc(b"t" * 16)]
        ),
        "five-parts-from-valid": lambda ctx: ctx.valid() + ".AAAA.AAAA",
    },
)


def _json_serialization(ctx: Ctx) -> dict[str, Any]:
    head, body, sig = ctx.valid().split(".")
    return {"payload": body, "signatures": [{"protected": head, "signature": sig}]}


add_tokens(
    "jws-json",
    {
        "base64url-of-general": lambda ctx: enc(_json_serialization(ctx)),
        "base64url-of-flattened": lambda ctx: enc(
            {
                "payload": ctx.valid().split(".")[1],
                "protected": ctx.valid().split(".")[0],
                "signature": ctx.valid().split(".")[2],
            }
        ),
    },
)
add_headers(
    "jws-json",
    {
        "raw-object-as-token": lambda ctx: bearer(json.dumps(_json_serialization(ctx))),
        "raw-compact-object": lambda ctx: bearer(
            json.dumps(_json_serialization(ctx), separators=(",", ":"))
        ),
    },
    400,
    INVALID_REQUEST,
)

# -- ECDSA: zero, out-of-range and DER signatures (ES256 key published by the issuer) ----------


def _es_parts(ctx: Ctx) -> tuple[str, bytes, bytes]:
    head, body, sig = ctx.signed(ctx.ec).split(".")
    raw = b64d(sig)
    return f"{head}.{body}", raw[:32], raw[32:]


def _es(ctx: Ctx, fix: Callable[[bytes, bytes], bytes]) -> str:
    signing_input, r, s = _es_parts(ctx)
    return f"{signing_input}.{b64e(fix(r, s))}"


def _n(k: int = 0) -> bytes:
    return (P256_ORDER + k).to_bytes(32, "big")


add_tokens(
    "ecdsa",
    {
        "r-zero": lambda ctx: _es(ctx, lambda r, s: bytes(32) + s),
        "s-zero": lambda ctx: _es(ctx, lambda r, s: r + bytes(32)),
        "r-s-zero": lambda ctx: _es(ctx, lambda r, s: bytes(64)),
        "r-equals-n": lambda ctx: _es(ctx, lambda r, s: _n() + s),
        "s-equals-n": lambda ctx: _es(ctx, lambda r, s: r + _n()),
        "r-plus-n": lambda ctx: _es(
            ctx,
            lambda r, s: (
                (int.from_bytes(r, "big") + P256_ORDER).to_bytes(33, "big")[-32:] + s
                if int.from_bytes(r, "big") + P256_ORDER < 2**256
                else _n(1) + s
            ),
        ),
        "s-above-n": lambda ctx: _es(ctx, lambda r, s: r + _n(7)),
        "r-s-all-ones": lambda ctx: _es(ctx, lambda r, s: b"\xff" * 64),
        "der-encoded": lambda ctx: _es(
            ctx,
            lambda r, s: encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big")),
        ),
        "short-63-bytes": lambda ctx: _es(ctx, lambda r, s: (r + s)[:63]),
        "long-65-bytes": lambda ctx: _es(ctx, lambda r, s: b"\x00" + r + s),
        "r-s-swapped": lambda ctx: _es(ctx, lambda r, s: s + r),
        "no-kid-r-s-zero": lambda ctx: ".".join(
            [enc({"alg": "ES256"}), enc(ctx.claims()), b64e(bytes(64))]
        ),
    },
)

# -- structure and base64url ---------------------------------------------------------------


def _noncanonical(segment: str) -> str:
    """The same bytes with different unused low bits in the last character."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
    index = alphabet.index(segment[-1])
    flip = {2: 0x01, 3: 0x01}[len(segment) % 4]
    return segment[:-1] + alphabet[index ^ flip]


def _noncanonical_token(ctx: Ctx, index: int) -> str:
    """A genuinely signed token with one segment re-spelt non-canonically (same bytes)."""
    for filler in range(8):
        parts = ctx.signed(
            header={**ctx.header(), "x": "x" * filler}, payload=ctx.claims(pad="p" * filler)
        ).split(".")
        if len(parts[index]) % 4 in (2, 3):
            parts[index] = _noncanonical(parts[index])
            return ".".join(parts)
    raise AssertionError("no filler gave a segment with unused bits")


def _std_alphabet(token: str) -> str:
    """The token in the standard base64 alphabet ('+', '/'): the same bytes, the wrong encoding."""
    changed = token.replace("-", "+").replace("_", "/")
    return changed if changed != token else token[:-1] + "+"


def _parts(ctx: Ctx) -> list[str]:
    return ctx.valid().split(".")


add_tokens(
    "structure",
    {
        "one-segment": lambda ctx: _parts(ctx)[0],
        "two-segments": lambda ctx: ".".join(_parts(ctx)[:2]),
        "no-signature": lambda ctx: ".".join(_parts(ctx)[:2]) + ".",
        "truncated-signature": lambda ctx: ctx.valid()[:-8],
        "truncated-one-char": lambda ctx: ctx.valid()[:-1],
        "extra-dot-end": lambda ctx: ctx.valid() + ".",
        "extra-dot-middle": lambda ctx: ctx.valid().replace(".", "..", 1),
        "leading-dot": lambda ctx: "." + ctx.valid(),
        "four-segments": lambda ctx: ctx.valid() + ".AAAA",
        "only-dots": lambda ctx: "..",
        "padded-signature": lambda ctx: ctx.valid() + "==",
        "padded-one": lambda ctx: ctx.valid() + "=",
        "std-alphabet-plus": lambda ctx: (lambda p: f"{p[0]}.{p[1]}.+{p[2][1:]}")(_parts(ctx)),
        "std-alphabet-slash": lambda ctx: (lambda p: f"{p[0]}.{p[1]}/.{p[2]}")(_parts(ctx)),
        "std-alphabet-everywhere": lambda ctx: _std_alphabet(ctx.valid()),
        "noncanonical-signature": lambda ctx: _noncanonical_token(ctx, 2),
        "noncanonical-header": lambda ctx: _noncanonical_token(ctx, 0),
        "noncanonical-payload": lambda ctx: _noncanonical_token(ctx, 1),
        "segment-len-mod-4-is-1": lambda ctx: (lambda p: f"{p[0]}.{p[1]}A.{p[2]}")(_parts(ctx)),
        "empty-header": lambda ctx: (lambda p: f".{p[1]}.{p[2]}")(_parts(ctx)),
        "empty-payload": lambda ctx: (lambda p: f"{p[0]}..{p[2]}")(_parts(ctx)),
        "signed-empty-payload": lambda ctx: ctx.signed(payload=b""),
    },
)
add_headers(
    "structure",
    {
        "padded-header-middle": lambda ctx: bearer(
            (lambda p: f"{p[0]}==.{p[1]}.{p[2]}")(_parts(ctx))
        ),
        "padded-payload-middle": lambda ctx: bearer(
            (lambda p: f"{p[0]}.{p[1]}=.{p[2]}")(_parts(ctx))
        ),
        "non-b64token-char": lambda ctx: bearer((lambda p: f"{p[0]}.{p[1]}!.{p[2]}")(_parts(ctx))),
        "percent-encoded-dot": lambda ctx: bearer(ctx.valid().replace(".", "%2E")),
        "space-inside": lambda ctx: bearer(ctx.valid().replace(".", ". ", 1)),
    },
    400,
    INVALID_REQUEST,
)

# -- header and payload JSON ---------------------------------------------------------------


def _raw(ctx: Ctx, header: bytes | None = None, payload: bytes | None = None) -> str:
    """Genuinely signed by the trusted RSA key over exactly these header/payload bytes."""
    h = header if header is not None else json.dumps(ctx.header()).encode()
    p = payload if payload is not None else json.dumps(ctx.claims()).encode()
    return sign_raw(ctx.rsa, h, p)


def _claims_json(ctx: Ctx, **overrides: Any) -> bytes:
    """The claims as JSON without the closing brace, to append raw members to."""
    return json.dumps(ctx.claims(**overrides))[:-1].encode()


def _header_json(ctx: Ctx) -> bytes:
    return json.dumps(ctx.header())[:-1].encode()


add_tokens(
    "json",
    {
        "header-array": lambda ctx: _raw(ctx, header=json.dumps([ctx.header()]).encode()),
        "header-string": lambda ctx: _raw(ctx, header=b'"RS256"'),
        "header-null": lambda ctx: _raw(ctx, header=b"null"),
        "header-number": lambda ctx: _raw(ctx, header=b"1"),
        "header-not-utf8": lambda ctx: _raw(ctx, header=_header_json(ctx) + b',"x":"\xff"}'),
        "header-bom": lambda ctx: _raw(
            ctx, header=b"\xef\xbb\xbf" + json.dumps(ctx.header()).encode()
        ),
        "header-trailing-junk": lambda ctx: _raw(
            ctx, header=json.dumps(ctx.header()).encode() + b"x"
        ),
        "header-dup-alg": lambda ctx: _raw(ctx, header=_header_json(ctx) + b',"alg":"none"}'),
        "header-dup-alg-none-first": lambda ctx: _raw(
            ctx,
            header=b'{"alg":"none","alg":"RS256","kid":' + json.dumps(ctx.rsa.kid).encode() + b"}",
        ),
        "header-dup-kid": lambda ctx: _raw(ctx, header=_header_json(ctx) + b',"kid":"other"}'),
        "header-deep-nesting": lambda ctx: _raw(
            ctx, header=_header_json(ctx) + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}"
        ),
        "header-nan": lambda ctx: _raw(ctx, header=_header_json(ctx) + b',"x":NaN}'),
        "header-5000-digit-number": lambda ctx: _raw(
            ctx, header=_header_json(ctx) + b',"x":' + b"9" * 5000 + b"}"
        ),
        "payload-array": lambda ctx: _raw(ctx, payload=json.dumps([ctx.claims()]).encode()),
        "payload-string": lambda ctx: _raw(ctx, payload=b'"alice"'),
        "payload-null": lambda ctx: _raw(ctx, payload=b"null"),
        "payload-not-utf8": lambda ctx: _raw(ctx, payload=_claims_json(ctx) + b',"x":"\xc3\x28"}'),
        "payload-utf16": lambda ctx: _raw(ctx, payload=json.dumps(ctx.claims()).encode("utf-16")),
        "payload-dup-sub": lambda ctx: _raw(ctx, payload=_claims_json(ctx) + b',"sub":"admin"}'),
        "payload-dup-exp": lambda ctx: _raw(
            ctx,
            payload=_claims_json(ctx) + b',"exp":' + str(int(time.time()) + 10**6).encode() + b"}",
        ),
        "payload-dup-aud": lambda ctx: _raw(
            ctx, payload=_claims_json(ctx) + b',"aud":"api://other"}'
        ),
        "payload-dup-scope": lambda ctx: _raw(
            ctx, payload=_claims_json(ctx, scope="read") + b',"scope":"admin"}'
        ),
        "payload-deep-nesting": lambda ctx: _raw(
            ctx, payload=_claims_json(ctx) + b',"x":' + b"[" * 2000 + b"]" * 2000 + b"}"
        ),
        "payload-deep-objects": lambda ctx: _raw(
            ctx, payload=_claims_json(ctx) + b',"x":' + b'{"a":' * 1100 + b"1" + b"}" * 1100 + b"}"
        ),
        "payload-nan": lambda ctx: _raw(ctx, payload=_claims_json(ctx) + b',"x":NaN}'),
        "payload-infinity": lambda ctx: _raw(ctx, payload=_claims_json(ctx) + b',"x":-Infinity}'),
        "payload-5000-digit-number": lambda ctx: _raw(
            ctx, payload=_claims_json(ctx) + b',"x":' + b"9" * 5000 + b"}"
        ),
        "payload-trailing-junk": lambda ctx: _raw(
            ctx, payload=json.dumps(ctx.claims()).encode() + b"}"
        ),
        "payload-single-quotes": lambda ctx: _raw(
            ctx, payload=json.dumps(ctx.claims()).replace('"', "'").encode()
        ),
    },
)

# -- claims, on genuinely signed tokens --------------------------------------------------------


def _claim(ctx: Ctx, **overrides: Any) -> str:
    return ctx.signed(payload=ctx.claims(**overrides))


def _raw_exp(ctx: Ctx, name: str, literal: bytes) -> str:
    """A time claim written as a raw JSON literal (1e400, 10**400, ...)."""
    return _raw(
        ctx,
        payload=_claims_json(ctx, **{name: _DROP}) + b',"' + name.encode() + b'":' + literal + b"}",
    )


_NOW = int(time.time())


def _add_time_claim(n: str) -> None:
    add_tokens(
        f"claim-{n}",
        {
            "string": lambda ctx: _claim(ctx, **{n: str(_NOW + 100)}),
            "iso-string": lambda ctx: _claim(ctx, **{n: "2099-01-01T00:00:00Z"}),
            "negative": lambda ctx: _claim(ctx, **{n: -1}),
            "1e300": lambda ctx: _claim(ctx, **{n: 1e300}),
            "true": lambda ctx: _claim(ctx, **{n: True}),
            "false": lambda ctx: _claim(ctx, **{n: False}),
            "list": lambda ctx: _claim(ctx, **{n: [_NOW + 100]}),
            "object": lambda ctx: _claim(ctx, **{n: {"$date": _NOW}}),
            "10**400": lambda ctx: _raw_exp(ctx, n, b"1" + b"0" * 400),
            "1e400-inf": lambda ctx: _raw_exp(ctx, n, b"1e400"),
            "minus-1e400": lambda ctx: _raw_exp(ctx, n, b"-1e400"),
            "over-year-5138": lambda ctx: _claim(ctx, **{n: 10**11 + 0.5}),
        },
    )


for _name in ("exp", "nbf", "iat"):
    _add_time_claim(_name)

add_tokens(
    "claim-time",
    {
        "exp-float-1970": lambda ctx: _claim(ctx, exp=1.5),
        "exp-float-past": lambda ctx: _claim(ctx, exp=time.time() - 86400.25),
        "exp-missing": lambda ctx: _claim(ctx, exp=_DROP),
        "exp-null": lambda ctx: _claim(ctx, exp=None),
        "exp-zero": lambda ctx: _claim(ctx, exp=0),
        "nbf-far-future-float": lambda ctx: _claim(ctx, nbf=time.time() + 10**9 + 0.5),
        "nbf-future-beyond-leeway": lambda ctx: _claim(ctx, nbf=int(time.time()) + 3600),
        "iat-far-future-float": lambda ctx: _claim(ctx, iat=time.time() + 10**9 + 0.5),
        "iat-future-beyond-leeway": lambda ctx: _claim(ctx, iat=int(time.time()) + 3600),
    },
)
add_tokens(
    "claim-aud",
    {
        "empty-list": lambda ctx: _claim(ctx, aud=[]),
        "nested-list": lambda ctx: _claim(ctx, aud=[[AUDIENCE]]),
        "mixed-list": lambda ctx: _claim(ctx, aud=[AUDIENCE, 5]),
        "int": lambda ctx: _claim(ctx, aud=5),
        "object": lambda ctx: _claim(ctx, aud={"aud": AUDIENCE}),
        "true": lambda ctx: _claim(ctx, aud=True),
        "null": lambda ctx: _claim(ctx, aud=None),
        "missing": lambda ctx: _claim(ctx, aud=_DROP),
        "empty-string": lambda ctx: _claim(ctx, aud=""),
        "other-service": lambda ctx: _claim(ctx, aud="api://other"),
        "case-variant": lambda ctx: _claim(ctx, aud=AUDIENCE.upper()),
        "trailing-slash": lambda ctx: _claim(ctx, aud=AUDIENCE + "/"),
        "whitespace": lambda ctx: _claim(ctx, aud=" " + AUDIENCE),
        "space-joined": lambda ctx: _claim(ctx, aud=f"api://other {AUDIENCE}"),
    },
)
add_tokens(
    "claim-iss",
    {
        "trailing-slash": lambda ctx: _claim(ctx, iss=ctx.issuer.issuer + "/"),
        "upper-case": lambda ctx: _claim(ctx, iss=ctx.issuer.issuer.upper()),
        "scheme-case": lambda ctx: _claim(ctx, iss=ctx.issuer.issuer.replace("http", "HTTP", 1)),
        "whitespace": lambda ctx: _claim(ctx, iss=ctx.issuer.issuer + " "),
        "list": lambda ctx: _claim(ctx, iss=[ctx.issuer.issuer]),
        "null": lambda ctx: _claim(ctx, iss=None),
        "missing": lambda ctx: _claim(ctx, iss=_DROP),
        "attacker": lambda ctx: _claim(ctx, iss=ctx.attacker.issuer),
        "localhost-alias": lambda ctx: _claim(
            ctx, iss=ctx.issuer.issuer.replace("127.0.0.1", "localhost")
        ),
    },
)
add_tokens(
    "claim-other",
    {
        "sub-int": lambda ctx: _claim(ctx, sub=1),
        "sub-list": lambda ctx: _claim(ctx, sub=["admin"]),
        "scope-int": lambda ctx: _claim(ctx, scope=1),
        "scope-object": lambda ctx: _claim(ctx, scope={"admin": True}),
        "permissions-mixed-list": lambda ctx: _claim(ctx, permissions=["admin", 1]),
    },
)

# -- size cap ----------------------------------------------------------------------------


def _sized(ctx: Ctx, length: int) -> str:
    """A genuinely signed token of at least ``length`` characters."""
    token = ctx.signed(payload=ctx.claims(pad=""))
    pad = "p" * ((length - len(token)) * 3 // 4 + 4)
    token = ctx.signed(payload=ctx.claims(pad=pad))
    assert len(token) >= length
    return token


add_tokens(
    "size",
    {
        "signed-8193": lambda ctx: _sized(ctx, 8193),
        "signed-16k": lambda ctx: _sized(ctx, 16 * 1024),
        "junk-20k": lambda ctx: "A" * 20_000,
        "junk-segments-12k": lambda ctx: ".".join(["A" * 4000] * 3),
    },
)

# -- the Authorization header itself (raw) --------------------------------------------------

add_headers(
    "authorization-several",
    {
        "two-valid": lambda ctx: bearer(ctx.valid()) + bearer(ctx.valid()),
        "same-twice": lambda ctx: (lambda t: bearer(t) + bearer(t))(ctx.valid()),
        "valid-then-junk": lambda ctx: bearer(ctx.valid()) + bearer("junk"),
        "junk-then-valid": lambda ctx: bearer("junk") + bearer(ctx.valid()),
        "valid-and-basic": lambda ctx: [*bearer(ctx.valid()), (b"authorization", b"Basic YTpi")],
        "basic-and-valid": lambda ctx: [(b"authorization", b"Basic YTpi"), *bearer(ctx.valid())],
        "valid-and-empty": lambda ctx: [*bearer(ctx.valid()), (b"authorization", b"")],
        "case-variant-name": lambda ctx: [*bearer(ctx.valid()), (b"AUTHORIZATION", b"Bearer x")],
        "comma-list": lambda ctx: [
            (b"authorization", f"Bearer {ctx.valid()}, Bearer {ctx.valid()}".encode())
        ],
    },
    400,
    INVALID_REQUEST,
)
add_headers(
    "authorization-several",
    {
        # gunicorn joins the two into "Basic YTpi,Bearer\t<token>"; a part naming the Bearer
        # scheme tells the WSGI side they were several headers: 400 there too, as on ASGI.
        "basic-and-tab-bearer": lambda ctx: [
            (b"authorization", b"Basic YTpi"),
            (b"authorization", b"Bearer\t" + ctx.valid().encode()),
        ],
    },
    400,
    INVALID_REQUEST,
)
add_headers(
    "bearer-syntax",
    {
        "scheme-only": lambda ctx: [(b"authorization", b"Bearer")],
        "tab-separator": lambda ctx: [(b"authorization", b"Bearer\t" + ctx.valid().encode())],
        "trailing-word": lambda ctx: [(b"authorization", f"Bearer {ctx.valid()} x".encode())],
        "trailing-comma": lambda ctx: [(b"authorization", f"Bearer {ctx.valid()},".encode())],
        "quoted-token": lambda ctx: [(b"authorization", f'Bearer "{ctx.valid()}"'.encode())],
        "auth-param-style": lambda ctx: [
            (b"authorization", f'Bearer token="{ctx.valid()}"'.encode())
        ],
        "two-tokens": lambda ctx: [
            (b"authorization", f"Bearer {ctx.valid()} {ctx.valid()}".encode())
        ],
        "bearer-bearer": lambda ctx: [(b"authorization", f"Bearer Bearer {ctx.valid()}".encode())],
        "non-ascii-token": lambda ctx: [
            (b"authorization", b"Bearer " + ctx.valid().encode() + b"\xff")
        ],
        "utf8-token": lambda ctx: [
            (b"authorization", "Bearer \u00e9\u00e9.\u00e9.\u00e9".encode())
        ],
        "latin1-in-segment": lambda ctx: [
            (b"authorization", b"Bearer " + ctx.valid().encode().replace(b".", b".\xe9", 1))
        ],
    },
    400,
    INVALID_REQUEST,
)
add_headers(
    "bearer-absent",  # no Bearer credentials at all: 401 with a bare challenge
    {
        "no-scheme": lambda ctx: [(b"authorization", ctx.valid().encode())],
        "basic": lambda ctx: [(b"authorization", b"Basic dXNlcjpwYXNz")],
        "token-scheme": lambda ctx: [(b"authorization", f"Token {ctx.valid()}".encode())],
        "bearer-colon": lambda ctx: [(b"authorization", f"Bearer:{ctx.valid()}".encode())],
        "bearer-glued": lambda ctx: [(b"authorization", f"Bearer{ctx.valid()}".encode())],
        "bearer-equals": lambda ctx: [(b"authorization", f"Bearer={ctx.valid()}".encode())],
        "empty-value": lambda ctx: [(b"authorization", b"")],
        "cyrillic-scheme": lambda ctx: [
            (b"authorization", "\u0412earer ".encode() + ctx.valid().encode())
        ],
        "latin1-scheme": lambda ctx: [(b"authorization", b"B\xe9arer " + ctx.valid().encode())],
        "token-in-other-header": lambda ctx: [
            (b"x-authorization", b"Bearer " + ctx.valid().encode())
        ],
        "proxy-authorization": lambda ctx: [
            (b"proxy-authorization", b"Bearer " + ctx.valid().encode())
        ],
    },
    401,
    MISSING,
)

# -- cookies (cookie apps only) -----------------------------------------------------------------


def cookie(value: bytes | str) -> Headers:
    raw = value.encode("latin-1") if isinstance(value, str) else value
    return [(b"cookie", raw)]


add_headers(
    "cookie-ambiguous",
    {
        "duplicate": lambda ctx: cookie(f"{COOKIE}={ctx.valid()}; {COOKIE}={ctx.valid()}"),
        "tossed-junk-first": lambda ctx: cookie(f"{COOKIE}=junk; {COOKIE}={ctx.valid()}"),
        "tossed-junk-last": lambda ctx: cookie(f"{COOKIE}={ctx.valid()}; {COOKIE}=junk"),
        "quoted-and-plain": lambda ctx: cookie(f'{COOKIE}="{ctx.valid()}"; {COOKIE}=x'),
        "header-and-cookie": lambda ctx: bearer(ctx.valid()) + cookie(f"{COOKIE}={ctx.valid()}"),
        "header-and-bad-cookie": lambda ctx: bearer(ctx.valid()) + cookie(f"{COOKIE}=x.y.z"),
        "bad-header-and-cookie": lambda ctx: bearer("x.y.z") + cookie(f"{COOKIE}={ctx.valid()}"),
        "spaced-duplicate": lambda ctx: cookie(f"{COOKIE} = {ctx.valid()};{COOKIE}={ctx.valid()}"),
    },
    400,
    INVALID_REQUEST,
    target=COOKIE_CASES,
)
add_headers(
    "cookie-invalid",
    {
        "junk": lambda ctx: cookie(f"{COOKIE}=junk"),
        "open-quote": lambda ctx: cookie(f'{COOKIE}="{ctx.valid()}'),
        "close-quote": lambda ctx: cookie(f'{COOKIE}={ctx.valid()}"'),
        "single-quoted": lambda ctx: cookie(f"{COOKIE}='{ctx.valid()}'"),
        "double-quoted-twice": lambda ctx: cookie(f'{COOKIE}=""{ctx.valid()}""'),
        "bearer-prefix": lambda ctx: cookie(f"{COOKIE}=Bearer {ctx.valid()}"),
        "percent-encoded": lambda ctx: cookie(f"{COOKIE}={ctx.valid().replace('.', '%2E')}"),
        "non-ascii": lambda ctx: cookie(f"{COOKIE}=".encode() + b"\xe9\xff.\xfe.\x80"),
        "non-ascii-suffix": lambda ctx: cookie(f"{COOKIE}={ctx.valid()}".encode() + b"\xff"),
        "alg-none": lambda ctx: cookie(f"{COOKIE}={enc({'alg': 'none'})}.{enc(ctx.claims())}."),
        "forged": lambda ctx: cookie(f"{COOKIE}={ctx.signed(ctx.evil, ctx.header(ctx.rsa))}"),
        "jws-json-object": lambda ctx: cookie(
            f"{COOKIE}={json.dumps(_json_serialization(ctx), separators=(',', ':'))}"
        ),
        "oversized": lambda ctx: cookie(f"{COOKIE}={_sized(ctx, 8193)}"),
    },
    401,
    INVALID_TOKEN,
    target=COOKIE_CASES,
)
add_headers(
    "cookie-absent",
    {
        "empty": lambda ctx: cookie(f"{COOKIE}="),
        "empty-quoted": lambda ctx: cookie(f'{COOKIE}=""'),
        "name-only": lambda ctx: cookie(COOKIE),
        "name-case-variant": lambda ctx: cookie(f"{COOKIE.upper()}={ctx.valid()}"),
        "name-prefix": lambda ctx: cookie(f"x{COOKIE}={ctx.valid()}"),
        "name-suffix": lambda ctx: cookie(f"{COOKIE}_2={ctx.valid()}"),
        "host-prefix-name": lambda ctx: cookie(f"__Host-{COOKIE}={ctx.valid()}"),
        "only-separators": lambda ctx: cookie(";;; ;"),
        "empty-and-other": lambda ctx: cookie(f"{COOKIE}=; theme=dark"),
        "non-ascii-name": lambda ctx: cookie(
            b"\xe9" + COOKIE.encode() + b"=" + ctx.valid().encode()
        ),
    },
    401,
    MISSING,
    target=COOKIE_CASES,
)


# -- DPoP (RFC 9449), against the header-reading apps -------------------------------------------
#
# The example apps set no public_url, so each derives the URL a proof must name from the
# request's scheme and Host header (docs/sender-constrained.md, "The URL the proof names"):
# http://127.0.0.1:<port>/me, the server's real URL, as raw_get's Host says it.


class Dpop:
    """What a DPoP case builds from: the server (the URL its proofs name) and a token bound to
    ``ctx.dpop``, with fresh proofs for it."""

    def __init__(self, ctx: Ctx, server: Server) -> None:
        self.ctx = ctx
        self.server = server
        self.token = ctx.issuer.mint(subject="alice", dpop_key=ctx.dpop)

    def url(self, path: str = "/me", *, host: str | None = None, scheme: str = "http") -> str:
        return f"{scheme}://{host or f'127.0.0.1:{self.server.port}'}{path}"

    def proof(
        self,
        key: SigningKey | None = None,
        *,
        method: str = "GET",
        url: str | None = None,
        token: str | None = None,
        claims: dict[str, Any] | None = None,
        headers: dict[str, Any] | None = None,
    ) -> str:
        """A fresh proof by ``key`` (default the bound one) for GET /me and this token, with
        whatever the case overrides."""
        return dpop_proof(
            key or self.ctx.dpop,
            method,
            url or self.url(),
            access_token=token or self.token,
            claims=claims,
            headers=headers,
        )

    def send(self, proof: str | bytes | None, token: str | None = None) -> Headers:
        """``Authorization: DPoP <token>`` (default the bound one) and the proof, if any."""
        headers: Headers = [(b"authorization", b"DPoP " + (token or self.token).encode())]
        if proof is not None:
            headers.append((b"dpop", proof.encode() if isinstance(proof, str) else proof))
        return headers


@dataclass(frozen=True)
class DpopCase:
    id: str
    build: Callable[[Dpop], Headers]
    status: int
    error: str
    scheme: str = "DPoP"  # the challenge that carries the error: the scheme the request used
    path: Callable[[Dpop], bytes] = lambda d: b"/me"


INVALID_PROOF = "invalid_dpop_proof"
DPOP_CASES: list[DpopCase] = []


def add_dpop(
    prefix: str,
    builders: dict[str, Callable[[Dpop], Headers]],
    status: int = 401,
    error: str = INVALID_PROOF,
    scheme: str = "DPoP",
) -> None:
    for name, build in builders.items():
        DPOP_CASES.append(DpopCase(f"dpop-{prefix}-{name}", build, status, error, scheme))


def _replayed(d: Dpop) -> Headers:
    """A proof the server has just accepted, sent again."""
    headers = d.send(d.proof())
    first = d.server.get(headers)
    assert first.status == 200, first.body  # the first use is genuine: the second is the attack
    return headers


def _respelt(d: Dpop, **header: Any) -> tuple[str, dict[str, Any]]:
    """A genuine proof's payload segment and its header, changed by ``header``."""
    head, payload, _ = d.proof().split(".")
    fields = {**json.loads(b64d(head)), **header}
    return payload, {n: v for n, v in fields.items() if v is not OMIT}


def _unsigned(d: Dpop, alg: str) -> str:
    payload, header = _respelt(d, alg=alg)
    return f"{enc(header)}.{payload}."


def _mac_proof(d: Dpop, secret: bytes, **header: Any) -> str:
    """A "proof" MACed with ``secret`` (HS256), whose header says so."""
    payload, fields = _respelt(d, alg="HS256", **header)
    signing_input = f"{enc(fields)}.{payload}"
    mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
    return f"{signing_input}.{b64e(mac)}"


def _private_jwk(key: SigningKey) -> dict[str, Any]:
    """The key's public JWK plus its private scalar ``d`` (RFC 7518 §6.2.2.1)."""
    d = key.private_key.private_numbers().private_value.to_bytes(32, "big")
    return {**key.public_jwk(), "d": b64e(d)}


def _rsa_jwk(n_bytes: int) -> dict[str, Any]:
    """An RSA public JWK whose modulus is ``n_bytes`` long (odd, top bit set: shaped right)."""
    n = b"\xc1" + os.urandom(n_bytes - 2) + b"\x01"
    return {"kty": "RSA", "n": b64e(n), "e": "AQAB"}


def _oversized(d: Dpop) -> str:
    proof = d.proof(claims={"pad": "p" * 4200})
    assert len(proof) > 4096
    return proof


add_dpop(
    "replay",
    {
        "accepted-proof-again": _replayed,
    },
)
add_dpop(
    "htu",
    {
        "other-path": lambda d: d.send(d.proof(url=d.url("/admin"))),
        "other-host": lambda d: d.send(d.proof(url=d.url(host=f"localhost:{d.server.port}"))),
        "other-port": lambda d: d.send(d.proof(url=d.url(host=f"127.0.0.1:{d.server.port + 1}"))),
        "no-port": lambda d: d.send(d.proof(url=d.url(host="127.0.0.1"))),
        "https": lambda d: d.send(d.proof(url=d.url(scheme="https"))),
        "relative": lambda d: d.send(d.proof(url="/me")),
        "missing": lambda d: d.send(d.proof(claims={"htu": OMIT})),
    },
)
add_dpop(
    "htm",
    {
        "post": lambda d: d.send(d.proof(method="POST")),
        "lower-case": lambda d: d.send(d.proof(method="get")),
        "missing": lambda d: d.send(d.proof(claims={"htm": OMIT})),
    },
)
add_dpop(
    "ath",
    {
        "other-token": lambda d: d.send(
            d.proof(token=d.ctx.issuer.mint(subject="alice", dpop_key=d.ctx.dpop))
        ),
        "missing": lambda d: d.send(d.proof(claims={"ath": OMIT})),
    },
)
add_dpop(
    "key",
    {
        # the thief's own key and jwk: the proof holds up, but not for cnf.jkt
        "thief-key": lambda d: d.send(d.proof(d.ctx.thief)),
        # the bound key's jwk in the header, signed by the thief: the signature fails
        "thief-signs-bound-jwk": lambda d: d.send(
            d.proof(d.ctx.thief, headers={"jwk": d.ctx.dpop.public_jwk()})
        ),
        "jwk-missing": lambda d: d.send(d.proof(headers={"jwk": OMIT})),
        "jwk-with-private-d": lambda d: d.send(d.proof(headers={"jwk": _private_jwk(d.ctx.dpop)})),
        "jwk-oct": lambda d: d.send(d.proof(headers={"jwk": {"kty": "oct", "k": b64e(b"k" * 32)}})),
        "jwk-rsa-16384-bit": lambda d: d.send(
            d.proof(headers={"alg": "RS256", "jwk": _rsa_jwk(2048)})
        ),
        "jwk-8-kib-n": lambda d: d.send(d.proof(headers={"alg": "RS256", "jwk": _rsa_jwk(8192)})),
        "kid-instead-of-jwk": lambda d: d.send(d.proof(headers={"jwk": OMIT, "kid": d.ctx.ec.kid})),
    },
)
add_dpop(
    "alg",
    {
        "none": lambda d: d.send(_unsigned(d, "none")),
        "None": lambda d: d.send(_unsigned(d, "None")),
        "hs256-oct-jwk": lambda d: d.send(
            _mac_proof(d, b"s" * 32, jwk={"kty": "oct", "k": b64e(b"s" * 32)})
        ),
        "hs256-public-jwk-as-secret": lambda d: d.send(
            _mac_proof(d, json.dumps(d.ctx.dpop.public_jwk()).encode())
        ),
        "EdDSA-on-ec-jwk": lambda d: d.send(d.proof(headers={"alg": "EdDSA"})),
    },
)
add_dpop(
    "size",
    {
        "oversized-claims": lambda d: d.send(_oversized(d)),
    },
)
add_dpop(
    "iat",
    {
        "stale-400s": lambda d: d.send(d.proof(claims={"iat": int(time.time()) - 400})),
        "future-120s": lambda d: d.send(d.proof(claims={"iat": int(time.time()) + 120})),
        "missing": lambda d: d.send(d.proof(claims={"iat": OMIT})),
        "string": lambda d: d.send(d.proof(claims={"iat": str(int(time.time()))})),
    },
)
add_dpop(
    "typ",
    {
        "missing": lambda d: d.send(d.proof(headers={"typ": OMIT})),
        "JWT": lambda d: d.send(d.proof(headers={"typ": "JWT"})),
        "at+jwt": lambda d: d.send(d.proof(headers={"typ": "at+jwt"})),
    },
)
add_dpop(
    "jti",
    {
        "missing": lambda d: d.send(d.proof(claims={"jti": OMIT})),
        "empty": lambda d: d.send(d.proof(claims={"jti": ""})),
        "not-a-string": lambda d: d.send(d.proof(claims={"jti": 7})),
        "257-chars": lambda d: d.send(d.proof(claims={"jti": "j" * 257})),
    },
)
add_dpop(
    "header",
    {
        "missing": lambda d: d.send(None),
        "empty": lambda d: d.send(b""),
        "two-proofs": lambda d: [*d.send(d.proof()), (b"dpop", d.proof().encode())],
        "same-proof-twice": lambda d: (lambda p: [*d.send(p), (b"dpop", p.encode())])(d.proof()),
        "comma-joined": lambda d: d.send(f"{d.proof()},{d.proof()}"),
        "not-ascii": lambda d: d.send(d.proof().encode() + b"\xff"),
        "junk": lambda d: d.send("x.y.z"),
        "the-access-token": lambda d: d.send(d.token),
    },
)


def _in_query(name: bytes) -> Callable[[Dpop], bytes]:
    return lambda d: b"/me?" + name + b"=" + d.proof().encode()


# the proof in the query string: never read, so the request carries no proof at all
DPOP_CASES += [
    DpopCase(f"dpop-query-{name.decode()}", lambda d: d.send(None), 401, INVALID_PROOF, path=q)
    for name, q in ((n, _in_query(n)) for n in (b"dpop", b"DPoP", b"proof"))
]
# the bound token sent as a bearer token: refused whatever comes with it (RFC 9449 §7.2)
add_dpop(
    "downgrade",
    {
        "bearer-without-proof": lambda d: bearer(d.token),
        "bearer-with-proof": lambda d: [*bearer(d.token), (b"dpop", d.proof().encode())],
    },
    error=INVALID_TOKEN,
    scheme="Bearer",
)
add_dpop(
    "unbound",
    {
        # a token naming no key under DPoP, with a proof that is otherwise right for it
        "token-under-dpop": lambda d: (lambda t: d.send(d.proof(token=t), token=t))(d.ctx.valid()),
    },
    error=INVALID_TOKEN,
)
add_dpop(
    "unbound",
    {
        # a proof beside a bearer token: one request, two ways to authenticate
        "bearer-with-proof": lambda d: (
            lambda t: [*bearer(t), (b"dpop", d.proof(token=t).encode())]
        )(d.ctx.valid()),
    },
    status=400,
    error=INVALID_REQUEST,
    scheme="Bearer",
)


# == the tests =================================================================================


@pytest.fixture(scope="module")
def ctx(issuer: LocalIssuer, attacker: LocalIssuer) -> Ctx:
    return Ctx(issuer, attacker)


def check(reply: Reply, status: int, error: str | None, scheme: str = "Bearer") -> None:
    """``scheme``: the challenge that must carry the error (RFC 9449 §7.1: the request's)."""
    assert reply.status != 200, "ACCEPTED"
    assert reply.status < 500, f"server error {reply.status}: {reply.body[:300]!r}"
    assert reply.status == status, (reply.status, reply.body[:300])
    challenge = reply.header("www-authenticate")
    assert challenge is not None
    body = reply.json()
    if error is None:
        assert challenge == with_dpop('Bearer realm="api"')
        assert body["error"] == "unauthorized"
    else:
        assert challenge.startswith(f'{scheme} realm="api", ')
        assert f'error="{error}"' in challenge
        assert body["error"] == error
    assert reply.header("cache-control") == "no-store"


@pytest.mark.parametrize("app", APPS)
def test_sanity_a_valid_token_is_accepted(
    app: str, servers: dict[str, Server], ctx: Ctx, issuer: LocalIssuer
) -> None:
    """Genuine RS256/ES256 tokens, raw-signed ones and one just under the 8 KiB cap are accepted."""
    for key in (ctx.rsa, ctx.ec):
        reply = servers[app].get(bearer(issuer.mint(subject="alice", key=key)))
        assert reply.status == 200, (key.alg, reply.body)
        assert reply.json()["sub"] == "alice"
    # the raw signer builds tokens the apps accept: refusals below are due to the defect
    assert servers[app].get(bearer(ctx.signed())).status == 200
    assert servers[app].get(bearer(ctx.signed(ctx.ec))).status == 200
    assert servers[app].get(bearer(_raw(ctx))).status == 200
    # and a token just under the size cap is accepted: the size cases test the cap, not HTTP
    under = ctx.signed(payload=ctx.claims(pad="p" * 5500))
    assert 7000 < len(under) <= 8192
    assert servers[app].get(bearer(under)).status == 200


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("case", HEADER_CASES, ids=[c.id for c in HEADER_CASES])
def test_attack_is_refused(app: str, case: Case, servers: dict[str, Server], ctx: Ctx) -> None:
    """Each hostile token or header gets its case's status and error code, never a 200 or a 5xx."""
    status, error = case.expected(app)
    check(servers[app].get(case.build(ctx)), status, error)


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("name", list(URL_CASES))
def test_key_urls_in_the_token_are_never_fetched(
    app: str, name: str, servers: dict[str, Server], ctx: Ctx, attacker: LocalIssuer
) -> None:
    """A token naming jku, x5u or jwk URLs is refused as invalid_token and no URL is fetched."""
    before = attacker.request_log
    check(servers[app].get(bearer(URL_CASES[name](ctx))), 401, INVALID_TOKEN)
    time.sleep(0.05)  # a background fetch, were there one, would have landed by now
    assert attacker.request_log == before == []


@pytest.mark.parametrize("app", (*APPS, *COOKIE_APPS))
def test_token_in_the_query_string_is_never_read(
    app: str, servers: dict[str, Server], ctx: Ctx
) -> None:
    """A valid token in ?access_token=, ?token= or ?jwt= is ignored: 401 with no error code."""
    token = ctx.valid().encode()
    for name in (b"access_token", b"token", b"jwt"):
        check(servers[app].get([], b"/me?" + name + b"=" + token), 401, MISSING)


@pytest.mark.parametrize("app", COOKIE_APPS)
def test_sanity_a_valid_cookie_is_accepted(app: str, servers: dict[str, Server], ctx: Ctx) -> None:
    """A valid token cookie, among others or DQUOTEd (RFC 6265), and a bearer token are accepted."""
    reply = servers[app].get(cookie(f"theme=dark; {COOKIE}={ctx.valid()}; lang=en"))
    assert reply.status == 200, reply.body
    assert reply.json()["sub"] == "alice"
    # RFC 6265 §4.1.1: a cookie-value may be DQUOTEd; the quotes are not part of the value
    assert servers[app].get(cookie(f'{COOKIE}="{ctx.valid()}"')).status == 200
    assert servers[app].get(bearer(ctx.valid())).status == 200


@pytest.mark.parametrize("app", COOKIE_APPS)
@pytest.mark.parametrize("case", COOKIE_CASES, ids=[c.id for c in COOKIE_CASES])
def test_cookie_attack_is_refused(
    app: str, case: Case, servers: dict[str, Server], ctx: Ctx
) -> None:
    """Each hostile cookie gets its case's status and error code, never a 200 or a 5xx."""
    status, error = case.expected(app)
    check(servers[app].get(case.build(ctx)), status, error)


@pytest.mark.parametrize("app", ["starlette-cookie", "flask-cookie"])
def test_token_cookie_in_two_cookie_headers_is_400(
    app: str, servers: dict[str, Server], ctx: Ctx
) -> None:
    """A token cookie sent in two Cookie headers is refused with 400 invalid_request."""
    headers = cookie(f"{COOKIE}={ctx.valid()}") + cookie(f"{COOKIE}={ctx.valid()}")
    check(servers[app].get(headers), 400, INVALID_REQUEST)


@pytest.mark.parametrize("app", (*APPS, *COOKIE_APPS))
def test_public_path_variants_do_not_open_protected_routes(
    app: str, servers: dict[str, Server]
) -> None:
    """Public-path look-alikes (query, fragment, %6D, //, /..) never open /me, nor give a 5xx."""
    for path in (b"/me?/health", b"/me#/health", b"/%6De", b"//me", b"/me/", b"/health/../me"):
        reply = servers[app].get([], path)
        assert reply.status != 200 or b"sub" not in reply.body, (path, reply.status)
        assert reply.status < 500, (path, reply.status)


@pytest.mark.parametrize("app", APPS)
def test_sanity_a_valid_dpop_request_is_accepted(
    app: str, servers: dict[str, Server], ctx: Ctx, issuer: LocalIssuer
) -> None:
    """A DPoP-bound token with a fresh proof (ES256 or EdDSA key) for the server's URL is accepted,
    again with another fresh proof, and with a query the proof's htu leaves out."""
    d = Dpop(ctx, servers[app])
    for _ in range(2):  # the token cached after the first: the proof is checked each time
        reply = d.server.get(d.send(d.proof()))
        assert reply.status == 200, reply.body
        assert reply.json()["sub"] == "alice"
    assert d.server.get(d.send(d.proof()), b"/me?page=2").status == 200
    token = issuer.mint(subject="alice", dpop_key=ctx.dpop_ed)
    assert d.server.get(d.send(d.proof(ctx.dpop_ed, token=token), token=token)).status == 200


@pytest.mark.parametrize("app", APPS)
@pytest.mark.parametrize("case", DPOP_CASES, ids=[c.id for c in DPOP_CASES])
def test_dpop_attack_is_refused(
    app: str, case: DpopCase, servers: dict[str, Server], ctx: Ctx
) -> None:
    """Each hostile DPoP request gets its case's status and error, in the challenge of the scheme
    it used, never a 200 or a 5xx."""
    d = Dpop(ctx, servers[app])
    check(d.server.get(case.build(d), case.path(d)), case.status, case.error, case.scheme)


def test_the_attacker_key_server_was_never_contacted(attacker: LocalIssuer) -> None:
    """Over the whole module, the attacker's key server gets no request at all."""
    # Runs last in this module: no case above made any app fetch from a URL in a token.
    assert attacker.request_log == []
    assert attacker.jwks_requests == 0
