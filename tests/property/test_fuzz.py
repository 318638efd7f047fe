"""Property-based fuzzing of the middlewares and the JWKS parser (hypothesis).

In-process and keyless (static keys, a frozen clock), so each example costs well under a
millisecond of framework time: the ASGI app is driven through ``httpx.ASGITransport`` on one
module event loop, the WSGI app (Flask behind ``JWTWSGIMiddleware``) through
``werkzeug.test.run_wsgi_app`` with raw environs (so header bytes reach the middleware unchanged).

Properties:

1. Arbitrary ``Authorization`` / ``Cookie`` header bytes and token strings (free text, and three
   base64url segments of random JSON) → the answer is one of 200/400/401/403, never >= 500, no
   exception escapes, and the verifier's own fail-closed bug net (reason ``verifier_error``) is
   never what refused the request.
2. Accepted ⇒ genuine: a strategy mixes tokens genuinely signed by a trusted key (random
   ``aud``/``iss``/``exp``/``nbf``/``iat``/``scope``/``kid``/header choices, each labelled valid
   or invalid by construction) with mutations of them (bit flips, segment swaps and splices,
   header/payload edits re-encoded without re-signing, re-signing with an untrusted key). Every
   token that was signed by a trusted key with all-valid choices is recorded; every 200 must be
   for a recorded token — and every recorded, unmutated token must get a 200, so the property
   cannot hold vacuously.
3. Arbitrary JWKS documents (hypothesis JSON, and structured JWK-like dicts with random
   ``kty``/``crv``/``alg``/``use``/``key_ops``/``n``/``e``/``x``/``y``/``k``) make
   ``KeySet.from_jwks`` raise nothing but ``UnusableKey``; served by a real LocalIssuer
   (``set_fault("wrong_shape", body=doc)``) to a ``SyncVerifier`` they produce nothing but
   ``InvalidToken``/``KeysUnavailable`` (a small example count: each costs an HTTP fetch).

Budget: ``JWT_FUZZ_EXAMPLES`` (default 150) examples per property, e.g.
``JWT_FUZZ_EXAMPLES=5000 python -m pytest tests/property/test_fuzz.py`` for a long run.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from flask import Flask
from hypothesis import HealthCheck, assume, event, given, settings
from hypothesis import strategies as st
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from werkzeug.test import EnvironBuilder, run_wsgi_app

from jwt_middleware import (
    AuthError,
    InvalidToken,
    JWTMiddleware,
    Key,
    KeySet,
    KeysUnavailable,
    Reason,
    Settings,
    SyncVerifier,
    UnusableKey,
    VerifiedToken,
    requires_scopes,
)
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.flask import current_token, require_scopes, require_token
from jwt_middleware.testing import LocalIssuer, SigningKey, generate_key

EXAMPLES = int(os.environ.get("JWT_FUZZ_EXAMPLES", "150"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
HTTP_FUZZ = settings(FUZZ, max_examples=max(5, min(EXAMPLES, 25)))

NOW = 1_800_000_000
ISS = "https://issuer.fuzz.example"
AUD = "api://fuzz"
COOKIE = "access_token"
ALLOWED_STATUS = {200, 400, 401, 403}
B64URL = string.ascii_letters + string.digits + "-_"

# Trusted keys (static: no network) and untrusted look-alikes.
RSA = generate_key("RS256", kid="rsa-1")
EC = generate_key("ES256", kid="ec-1")
EVIL_RSA = generate_key("RS256", kid="rsa-1")  # same kid as the trusted key
EVIL_EC = generate_key("ES256", kid="ec-evil")
TRUSTED = {"rsa": RSA, "ec": EC}
UNTRUSTED = {"evil-rsa": EVIL_RSA, "evil-ec": EVIL_EC}
_SIGNERS: dict[str, Any] = {}

#: Every token signed by a trusted key whose every choice was valid (property 2's oracle).
GENUINE: set[str] = set()


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def sign(key: SigningKey, header: dict[str, Any], claims: dict[str, Any]) -> str:
    """Sign exactly this header (whatever its "alg" says) and these claims with ``key``."""
    from jwt.algorithms import get_default_algorithms

    algorithm = get_default_algorithms()[key.alg]
    head = b64e(json.dumps(header, separators=(",", ":")).encode())
    body = b64e(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = f"{head}.{body}".encode()
    signature = algorithm.sign(signing_input, algorithm.prepare_key(key.private_key))
    return f"{head}.{body}.{b64e(signature)}"


def make_settings(**extra: Any) -> Settings:
    return Settings(
        issuer=ISS,
        audience=AUD,
        keys=[
            Key.from_pem(RSA.public_pem(), kid=RSA.kid, alg="RS256"),
            Key.from_pem(EC.public_pem(), kid=EC.kid),
        ],
        cookie=COOKIE,
        clock=lambda: NOW,
        **extra,
    )


# == the apps under test =======================================================================

REASONS: list[str] = []


def _record(error: AuthError) -> None:
    REASONS.append(error.reason)


def asgi_app() -> Starlette:
    @requires_scopes()
    async def me(request: Request) -> JSONResponse:
        return JSONResponse({"sub": request.user.identity})

    @requires_scopes("admin")
    async def admin(request: Request) -> JSONResponse:
        return JSONResponse({"admin": True})

    return Starlette(
        routes=[Route("/me", me), Route("/admin", admin)],
        middleware=[Middleware(JWTMiddleware, settings=make_settings(on_error=_record))],
    )


def wsgi_app() -> Flask:
    app = Flask("fuzz")
    app.testing = True  # exceptions propagate instead of becoming a 500 page
    app.wsgi_app = JWTWSGIMiddleware(app.wsgi_app, settings=make_settings(on_error=_record))  # type: ignore[method-assign]

    @app.get("/me")
    @require_token
    def me() -> dict[str, Any]:
        token = current_token()
        assert token is not None
        return {"sub": token.subject}

    @app.get("/admin")
    @require_scopes("admin")
    def admin() -> dict[str, Any]:
        return {"admin": True}

    return app


class Apps:
    """Both middlewares, in process; one request through each per call."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.http = httpx.AsyncClient(
            transport=httpx.ASGITransport(asgi_app()), base_url="http://fuzz"
        )
        self.wsgi_app = wsgi_app()

    def asgi(self, path: str, headers: list[tuple[bytes, bytes]]) -> int:
        response = self.loop.run_until_complete(self.http.get(path, headers=headers))
        return response.status_code

    def wsgi_status(self, path: str, headers: list[tuple[bytes, bytes]]) -> int:
        environ = EnvironBuilder(path=path).get_environ()
        for name, value in headers:
            # As a WSGI server would: latin-1 text, repeated headers joined with commas.
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            environ[key] = f"{environ[key]},{text}" if key in environ else text
        # Straight into the app: werkzeug's Client would rebuild the environ and refuse values
        # (a newline, say) before our middleware ever saw them.
        body, status, _ = run_wsgi_app(self.wsgi_app, environ)
        b"".join(body)  # run the app to the end
        return int(status.split(" ", 1)[0])

    def both(self, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
        REASONS.clear()
        statuses = self.asgi(path, headers), self.wsgi_status(path, headers)
        assert Reason.VERIFIER_ERROR not in REASONS, REASONS
        return statuses

    def close(self) -> None:
        self.loop.run_until_complete(self.http.aclose())
        self.loop.close()


@pytest.fixture(scope="module")
def apps() -> Iterator[Apps]:
    both = Apps()
    yield both
    both.close()


# == property 1: arbitrary requests ============================================================

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=20),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
header_objects = st.fixed_dictionaries(
    {},
    optional={
        "alg": st.sampled_from(["RS256", "ES256", "PS256", "EdDSA", "HS256", "none"]) | json_values,
        "kid": st.sampled_from(["rsa-1", "ec-1", ""]) | json_values,
        "typ": st.sampled_from(["JWT", "at+jwt"]) | json_values,
        "crit": json_values,
        "cty": json_values,
        "b64": json_values,
    },
)
claim_objects = st.fixed_dictionaries(
    {},
    optional={
        "iss": st.just(ISS) | json_values,
        "aud": st.just(AUD) | st.just([AUD]) | json_values,
        "exp": st.integers(NOW - 10**6, NOW + 10**6) | json_values,
        "nbf": st.integers(NOW - 10**6, NOW + 10**6) | json_values,
        "iat": st.integers(NOW - 10**6, NOW + 10**6) | json_values,
        "sub": json_values,
        "scope": st.just("admin") | json_values,
    },
)
segments = st.text(B64URL, max_size=60)
structured_tokens = st.builds(
    lambda h, p, s: f"{b64e(json.dumps(h).encode())}.{b64e(json.dumps(p).encode())}.{s}",
    header_objects | json_values,
    claim_objects | json_values,
    segments,
)
random_tokens = st.text(max_size=120) | st.lists(segments, max_size=6).map(".".join)
tokens = structured_tokens | random_tokens
token_bytes = tokens.map(lambda t: t.encode("utf-8", "surrogatepass"))
auth_values = (
    st.binary(max_size=200)
    | token_bytes.map(lambda t: b"Bearer " + t)
    | st.tuples(
        st.sampled_from([b"bearer ", b"Bearer  ", b"BEARER\t", b"Basic ", b""]), token_bytes
    ).map(b"".join)
)
cookie_values = (
    st.binary(max_size=200)
    | token_bytes.map(lambda t: COOKIE.encode() + b"=" + t)
    | st.lists(
        st.tuples(
            st.sampled_from([COOKIE.encode(), b"theme", b" access_token ", b""]), token_bytes
        ).map(lambda kv: kv[0] + b"=" + kv[1]),
        max_size=3,
    ).map(b"; ".join)
)
header_sets = st.lists(
    st.tuples(st.sampled_from([b"authorization", b"cookie"]), st.binary(max_size=10))
    | st.tuples(st.just(b"authorization"), auth_values)
    | st.tuples(st.just(b"cookie"), cookie_values),
    max_size=3,
)


def _wsgi_safe(headers: list[tuple[bytes, bytes]]) -> bool:
    # A WSGI server never hands the app a header value with CR/LF in it.
    return not any(b"\r" in v or b"\n" in v for _, v in headers)


@FUZZ
@given(headers=header_sets, path=st.sampled_from(["/me", "/admin"]))
def test_arbitrary_headers_never_yield_a_server_error(
    apps: Apps, headers: list[tuple[bytes, bytes]], path: str
) -> None:
    """Arbitrary request headers get only 200, 400, 401 or 403 from both adapters, never a 5xx."""
    assume(_wsgi_safe(headers))
    for status in apps.both(path, headers):
        assert status in ALLOWED_STATUS


@FUZZ
@given(token=tokens)
def test_arbitrary_token_strings_are_refused_cleanly(apps: Apps, token: str) -> None:
    """A random token string, as bearer or cookie, is refused with 400 or 401 by both adapters."""
    raw = token.encode("utf-8", "surrogatepass")
    assume(b"\r" not in raw and b"\n" not in raw)
    for headers in (
        [(b"authorization", b"Bearer " + raw)],
        [(b"cookie", COOKIE.encode() + b"=" + raw)],
    ):
        for status in apps.both("/me", headers):
            assert status in {400, 401}  # random junk is never a valid token


# == property 2: accepted ⇒ genuinely signed by a trusted key, with valid claims ===============

# (value, valid?) choices; _DROP removes the member.
_DROP = object()
ISS_CHOICES = [
    (ISS, True),
    (ISS + "/", False),
    (ISS.upper(), False),
    (_DROP, False),
    (5, False),
    ([ISS], False),
]
AUD_CHOICES = [
    (AUD, True),
    ([AUD], True),
    (["other", AUD], True),
    ("other", False),
    ([], False),
    ([[AUD]], False),
    (_DROP, False),
    (5, False),
    ([AUD, 5], False),
]
EXP_CHOICES = [
    (NOW + 300, True),
    (NOW + 10**6, True),
    (NOW - 30, True),
    (NOW + 300.5, True),
    (NOW - 120, False),
    (_DROP, False),
    (str(NOW + 300), False),
    (True, False),
    (1e300, False),
    (-1, False),
    (None, False),
]
NBF_CHOICES = [
    (_DROP, True),
    (NOW - 100, True),
    (NOW + 30, True),
    (NOW + 3600, False),
    ("x", False),
    (-1, False),
    (10**12, False),
]
IAT_CHOICES = [
    (_DROP, True),
    (NOW, True),
    (NOW + 30, True),
    (NOW + 3600, False),
    (True, False),
    (float(NOW) + 0.25, True),
]
SUB_CHOICES = [("alice", True), (_DROP, True), (5, False), (["alice"], False)]
SCOPE_CHOICES = [
    (_DROP, True),
    ("read admin", True),
    (["a", "b"], True),
    (5, False),
    (["a", 1], False),
]
HEADER_EXTRAS = [
    ({}, True),
    ({"typ": "JWT"}, True),
    ({"typ": "at+jwt"}, True),
    ({"cty": "json"}, True),
    ({"jku": "https://evil.example/jwks"}, True),
    ({"jwk": EVIL_RSA.public_jwk()}, True),
    ({"crit": ["exp"]}, False),
    ({"b64": False}, False),
    ({"cty": "JWT"}, False),
    ({"x5u": "http://evil"}, True),
]
REGISTERED = {"iss", "aud", "exp", "nbf", "iat", "sub", "scope", "scp"}
CLAIM_CHOICES = (
    ("iss", ISS_CHOICES),
    ("aud", AUD_CHOICES),
    ("exp", EXP_CHOICES),
    ("nbf", NBF_CHOICES),
    ("iat", IAT_CHOICES),
    ("sub", SUB_CHOICES),
    ("scope", SCOPE_CHOICES),
)


DIMENSIONS = ("signer", "alg", "kid", "header", *(name for name, _ in CLAIM_CHOICES))


def _choice(draw: Any, options: list[tuple[Any, bool]], want: bool | None) -> tuple[Any, bool]:
    """One labelled option: a valid one, an invalid one, or any (``want`` None)."""
    pool = options if want is None else [o for o in options if o[1] is want]
    chosen: tuple[Any, bool] = draw(st.sampled_from(pool))
    return chosen


@st.composite
def signed_tokens(draw: Any) -> tuple[str, bool]:
    """A token signed by some key with labelled choices, and whether it must be accepted.

    A third of the tokens have every choice valid, a third exactly one invalid choice (the
    interesting near misses), a third random choices.
    """
    mode = draw(st.sampled_from(["valid", "one-defect", "random"]))
    defect = draw(st.sampled_from(DIMENSIONS)) if mode == "one-defect" else None

    def want(dimension: str) -> bool | None:
        if mode == "random":
            return None
        return dimension != defect

    signers = [(key, True) for key in TRUSTED.values()] + [(k, False) for k in UNTRUSTED.values()]
    key, valid = _choice(draw, signers, want("signer"))
    algs = [(key.alg, True)] + [
        (a, False) for a in ("RS256", "ES256", "PS256", "HS256", "none", "EdDSA") if a != key.alg
    ]
    alg, alg_ok = _choice(draw, algs, want("alg"))
    other_kid = EC.kid if key.alg == "RS256" else RSA.kid
    kids = [
        (key.kid, True),
        (_DROP, True),
        (other_kid, False),
        ("unknown-kid", False),
        (1, False),
        ("", False),
    ]
    if key in UNTRUSTED.values():
        kids = [(k, True) for k, _ in kids]  # the signer is the defect; any kid will do
    kid, kid_ok = _choice(draw, kids, want("kid"))
    extra, extra_ok = _choice(draw, HEADER_EXTRAS, want("header"))
    header: dict[str, Any] = {"alg": alg, **extra}
    if kid is not _DROP:
        header["kid"] = kid
    valid = valid and alg_ok and kid_ok and extra_ok

    claims: dict[str, Any] = {}
    for name, options in CLAIM_CHOICES:
        value, ok = _choice(draw, options, want(name))
        valid = valid and ok
        if value is not _DROP:
            claims[name] = value
    extras = draw(
        st.dictionaries(
            st.text(max_size=6).filter(lambda k: k not in REGISTERED), json_values, max_size=3
        )
    )
    claims.update(extras)
    token = sign(key, header, claims)
    if valid:
        GENUINE.add(token)
    return token, valid


def _flip_bit(data: bytes, index: int, bit: int) -> bytes:
    index %= len(data)
    return data[:index] + bytes([data[index] ^ (1 << bit)]) + data[index + 1 :]


@st.composite
def mutated(draw: Any, token: str) -> str:
    head, body, sig = token.split(".")
    how = draw(
        st.sampled_from(
            [
                "char-flip",
                "sig-bit",
                "swap",
                "header-edit",
                "payload-edit",
                "resign",
                "splice",
                "strip-sig",
                "truncate",
                "duplicate-segment",
            ]
        )
    )
    index = draw(st.integers(0, 10_000))
    bit = draw(st.integers(0, 7))
    if how == "char-flip":
        return _flip_bit(token.encode(), index, bit).decode("latin-1")
    if how == "sig-bit":
        return f"{head}.{body}.{b64e(_flip_bit(b64d(sig), index, bit))}"
    if how == "swap":
        order = draw(st.permutations([head, body, sig]))
        return ".".join(order)
    if how == "header-edit":
        fields = json.loads(b64d(head))
        field, value = draw(
            st.sampled_from(
                [
                    ("alg", "none"),
                    ("alg", "HS256"),
                    ("alg", "PS256"),
                    ("kid", EC.kid),
                    ("kid", RSA.kid),
                    ("kid", None),
                    ("typ", "at+jwt"),
                    ("jwk", EVIL_RSA.public_jwk()),
                    ("x", 1),
                ]
            )
        )
        fields[field] = value
        return f"{b64e(json.dumps(fields).encode())}.{body}.{sig}"
    if how == "payload-edit":
        claims = json.loads(b64d(body))
        field, value = draw(
            st.sampled_from(
                [
                    ("sub", "admin"),
                    ("exp", NOW + 10**6),
                    ("aud", AUD),
                    ("iss", ISS),
                    ("scope", "admin"),
                    ("nbf", NOW - 10),
                    ("x", 1),
                ]
            )
        )
        claims[field] = value
        return f"{head}.{b64e(json.dumps(claims, separators=(',', ':')).encode())}.{sig}"
    if how == "resign":
        evil = draw(st.sampled_from(list(UNTRUSTED.values())))
        return sign(evil, json.loads(b64d(head)), json.loads(b64d(body)))
    if how == "splice":
        other, _ = draw(signed_tokens())
        return f"{head}.{body}.{other.split('.')[2]}"
    if how == "strip-sig":
        return f"{head}.{body}."
    if how == "truncate":
        return token[: index % len(token)]
    return f"{head}.{body}.{body}"


@st.composite
def candidates(draw: Any) -> tuple[str, bool]:
    """(token, pristine): a signed token, or a mutation of one."""
    token, _ = draw(signed_tokens())
    if draw(st.booleans()):
        return token, True
    return draw(mutated(token)), False


@FUZZ
@given(candidate=candidates(), via_cookie=st.booleans())
def test_only_genuine_valid_tokens_are_accepted(
    apps: Apps, candidate: tuple[str, bool], via_cookie: bool
) -> None:
    """Only genuine tokens get a 200, others 400 or 401; a pristine genuine one is never refused."""
    token, pristine = candidate
    raw = token.encode("latin-1")
    headers = (
        [(b"cookie", COOKIE.encode() + b"=" + raw)]
        if via_cookie
        else [(b"authorization", b"Bearer " + raw)]
    )
    for status in apps.both("/me", headers):
        event(f"status {status}, {'pristine' if pristine else 'mutated'}")
        assert status in {200, 400, 401}
        if status == 200:
            assert token in GENUINE, f"accepted a token that is not genuine: {token}"
        elif pristine and token in GENUINE:
            pytest.fail(f"refused ({status}) a genuine valid token: {token}")


# == property 3: arbitrary JWKS documents ======================================================


def _b64_of(size: int) -> st.SearchStrategy[str]:
    return st.binary(min_size=0, max_size=size).map(b64e)


REAL_EC = EC.public_jwk()
REAL_RSA = RSA.public_jwk()
member_values = (
    _b64_of(70)
    | _b64_of(300)
    | st.sampled_from([REAL_EC["x"], REAL_EC["y"], REAL_RSA["n"], REAL_RSA["e"], "AQAB", "", "=="])
    | json_values
)
jwk_like = st.fixed_dictionaries(
    {
        "kty": st.sampled_from(["RSA", "EC", "OKP", "oct", "XYZ", "", "rsa"]) | json_values,
    },
    optional={
        "crv": st.sampled_from(
            ["P-256", "P-384", "P-521", "secp256k1", "Ed25519", "Ed448", "X25519"]
        )
        | json_values,
        "alg": st.sampled_from(
            ["RS256", "ES256", "ES521", "EdDSA", "HS256", "PS512", "none", "RSA-OAEP"]
        )
        | json_values,
        "use": st.sampled_from(["sig", "enc"]) | json_values,
        "key_ops": st.sampled_from([["verify"], ["sign"], [], "verify", [["verify"]]])
        | json_values,
        "kid": st.sampled_from(["rsa-1", "ec-1", "dup"]) | json_values,
        "n": member_values,
        "e": member_values,
        "x": member_values,
        "y": member_values,
        "k": member_values,
        "d": member_values,
    },
)
jwks_documents = (
    json_values
    | st.fixed_dictionaries({"keys": st.lists(jwk_like | json_values, max_size=5)})
    | st.fixed_dictionaries(
        {"keys": st.lists(jwk_like | st.sampled_from([REAL_EC, REAL_RSA]), max_size=5)},
        optional={"extra": json_values},
    )
)


def _parse(document: Any, allow_symmetric: bool) -> KeySet | None:
    try:
        keyset, problems = KeySet.from_jwks(document, allow_symmetric=allow_symmetric)
    except UnusableKey:
        return None
    assert all(isinstance(p, str) for p in problems)
    return keyset


@FUZZ
@given(document=jwks_documents, allow_symmetric=st.booleans())
def test_keyset_from_arbitrary_jwks_raises_only_key_errors(
    document: Any, allow_symmetric: bool
) -> None:
    """An arbitrary JWKS raises UnusableKey at most; parsed keys have unique kids, never raise."""
    keyset = _parse(document, allow_symmetric)
    if keyset is None:
        return
    kids = [k.kid for k in keyset.keys if k.kid is not None]
    assert len(kids) == len(set(kids))  # duplicated kids are dropped, never kept twice
    for key in keyset.keys:
        assert key.algorithms
        assert key.kid is None or isinstance(key.kid, str)
        if not allow_symmetric:
            assert key.kty != "oct"
        # a parsed key verifies or refuses; it never raises
        assert key.verify(next(iter(key.algorithms)), b"x.y", b"\x00" * 64) is False


@pytest.fixture(scope="module")
def jwks_server() -> Iterator[LocalIssuer]:
    with LocalIssuer(issuer=ISS, audience=AUD, algorithm="ES256") as local:
        local.add_key(EC, publish=True, make_current=True)  # documents may carry REAL_EC
        yield local


@HTTP_FUZZ
@given(document=jwks_documents)
def test_arbitrary_jwks_served_over_http_never_escapes(
    jwks_server: LocalIssuer, document: Any
) -> None:
    """A served arbitrary JWKS yields InvalidToken, KeysUnavailable, or acceptance only if it holds
    the real signing key under its kid.
    """
    jwks_server.set_fault("wrong_shape", body=document)
    verifier = SyncVerifier(
        Settings(issuer=ISS, audience=AUD, jwks_url=jwks_server.jwks_url, jwks_timeout=2)
    )
    try:
        token = jwks_server.mint()
        try:
            verified = verifier.verify(token)
        except (InvalidToken, KeysUnavailable):
            return
        # accepted only when the served document really holds the signing key, under its kid
        assert isinstance(verified, VerifiedToken)
        keys = document.get("keys") if isinstance(document, dict) else None
        assert isinstance(keys, list)
        assert any(
            isinstance(k, dict)
            and (k.get("kid"), k.get("x"), k.get("y")) == (EC.kid, REAL_EC["x"], REAL_EC["y"])
            for k in keys
        )
    finally:
        verifier.close()
        jwks_server.set_fault(None)
