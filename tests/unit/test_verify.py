"""The verification pipeline end to end: token string in, VerifiedToken or a Reason out.

Self-contained (no conftest fixtures). Tokens are minted with PyJWT where PyJWT can express them,
and hand-assembled (with real signatures over the exact signing input) where it cannot, so a
rejection is always caused by the defect under test and never by a broken signature.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import string
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import (
    decode_dss_signature,
    encode_dss_signature,
)

from jwt_middleware import (
    AsyncVerifier,
    ConfigurationError,
    InvalidToken,
    Key,
    KeysUnavailable,
    Reason,
    Settings,
    SyncVerifier,
    VerifiedToken,
)

NOW = 1_800_000_000
ISS = "https://issuer.example"
AUD = "api://orders"
KID = "rsa-1"
SECRET = b"0123456789abcdef0123456789abcdef-hmac"  # 37 bytes: HS256 only
DROP = object()  # claims(x=DROP) removes the claim
B64_ALPHABET = string.ascii_uppercase + string.ascii_lowercase + string.digits + "-_"


class FakeClock:
    def __init__(self, now: float = NOW) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


# -- keys -------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rsa_priv() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_priv2() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ec256() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec384() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP384R1())


@pytest.fixture(scope="module")
def ec521() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP521R1())


@pytest.fixture(scope="module")
def ed() -> ed25519.Ed25519PrivateKey:
    return ed25519.Ed25519PrivateKey.generate()


def pem(private_key: Any) -> bytes:
    data: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return data


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64d(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def uint(value: int, length: int | None = None) -> str:
    length = length or (value.bit_length() + 7) // 8
    return b64e(value.to_bytes(length, "big"))


def rsa_jwk(private_key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    numbers = private_key.public_key().public_numbers()
    return {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e), **extra}


def ec_jwk(private_key: ec.EllipticCurvePrivateKey, **extra: Any) -> dict[str, Any]:
    numbers = private_key.public_key().public_numbers()
    size = (private_key.curve.key_size + 7) // 8
    crv = {256: "P-256", 384: "P-384", 521: "P-521"}[private_key.curve.key_size]
    return {
        "kty": "EC",
        "crv": crv,
        "x": uint(numbers.x, size),
        "y": uint(numbers.y, size),
        **extra,
    }


# -- tokens -----------------------------------------------------------------------------------


def claims(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "iss": ISS,
        "aud": AUD,
        "sub": "user-1",
        "iat": NOW - 10,
        "exp": NOW + 300,
        "scope": "read write",
    }
    base.update(overrides)
    return {k: v for k, v in base.items() if v is not DROP}


def mint(
    key: Any,
    payload: dict[str, Any] | None = None,
    alg: str = "RS256",
    kid: str | None = KID,
    **headers: Any,
) -> str:
    """A token minted by PyJWT."""
    if kid is not None:
        headers["kid"] = kid
    return jwt.encode(
        claims() if payload is None else payload, key, algorithm=alg, headers=headers or None
    )


def sign(alg: str, key: Any, message: bytes) -> bytes:
    """A real JWS signature (raw r||s for ECDSA) over exactly ``message``."""
    if alg.startswith("HS"):
        return hmac.new(key, message, getattr(hashlib, "sha" + alg[2:])).digest()
    signature: bytes
    if alg == "EdDSA":
        signature = key.sign(message)
        return signature
    digests: dict[str, hashes.HashAlgorithm] = {
        "256": hashes.SHA256(),
        "384": hashes.SHA384(),
        "512": hashes.SHA512(),
    }
    digest = digests[alg[2:]]
    if alg.startswith("RS"):
        signature = key.sign(message, padding.PKCS1v15(), digest)
        return signature
    if alg.startswith("PS"):
        pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=digest.digest_size)
        signature = key.sign(message, pss, digest)
        return signature
    r, s = decode_dss_signature(key.sign(message, ec.ECDSA(digest)))
    width = (key.curve.key_size + 7) // 8
    return r.to_bytes(width, "big") + s.to_bytes(width, "big")


def segment(part: Any) -> str:
    if isinstance(part, (dict, list)):
        part = json.dumps(part, separators=(",", ":"))
    if isinstance(part, str):
        part = part.encode()
    return b64e(part)


def assemble(head: str, body: str, key: Any, alg: str = "RS256") -> str:
    signing_input = f"{head}.{body}"
    return f"{signing_input}.{b64e(sign(alg, key, signing_input.encode()))}"


def forge(header: Any, payload: Any, key: Any, alg: str = "RS256") -> str:
    """A hand-made token: any header/payload (dict, str or bytes), validly signed with ``alg``."""
    return assemble(segment(header), segment(payload), key, alg)


def rs_header(**extra: Any) -> dict[str, Any]:
    return {"alg": "RS256", "kid": KID, **extra}


# -- settings and verification ----------------------------------------------------------------


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make(rsa_priv: rsa.RSAPrivateKey, clock: FakeClock) -> Any:
    """Settings trusting the module RSA key under KID; keyword arguments override."""

    def build(**overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "issuer": ISS,
            "audience": AUD,
            "keys": [Key.from_pem(pem(rsa_priv), kid=KID)],
            "clock": clock,
        }
        options.update(overrides)
        return Settings(**options)

    return build


def accept(settings: Settings, token: str) -> VerifiedToken:
    return SyncVerifier(settings).verify(token)


def refuse(settings: Settings, token: str, reason: str) -> InvalidToken:
    with pytest.raises(InvalidToken) as info:
        SyncVerifier(settings).verify(token)
    assert info.value.reason == reason, info.value
    return info.value


# == happy path ===============================================================================

SIGNERS = {
    # alg -> (private key fixture, algorithms setting or None for the default allow-list)
    "RS256": ("rsa_priv", None),
    "PS256": ("rsa_priv", None),
    "ES256": ("ec256", None),
    "EdDSA": ("ed", None),
    "RS384": ("rsa_priv", ["RS384"]),
    "RS512": ("rsa_priv", ["RS512"]),
    "PS384": ("rsa_priv", ["PS384"]),
    "PS512": ("rsa_priv", ["PS512"]),
    "ES384": ("ec384", ["ES384"]),
    "ES512": ("ec521", ["ES512"]),
}


@pytest.mark.parametrize("alg", list(SIGNERS))
def test_valid_asymmetric_token_accepted(
    alg: str, request: pytest.FixtureRequest, make: Any
) -> None:
    """Tokens signed with each allowed RSA, PSS, ECDSA and EdDSA algorithm verify, claims intact."""
    fixture, algorithms = SIGNERS[alg]
    private_key = request.getfixturevalue(fixture)
    options: dict[str, Any] = {"keys": [Key.from_pem(pem(private_key), kid="k")]}
    if algorithms is not None:
        options["algorithms"] = algorithms
    token = mint(private_key, alg=alg, kid="k")
    verified = accept(make(**options), token)
    assert isinstance(verified, VerifiedToken)
    assert verified.claims == claims()
    assert verified.subject == "user-1"
    assert verified.scopes == ("read", "write")
    assert verified.header["alg"] == alg
    assert verified.header["kid"] == "k"


def test_valid_hs256_token_accepted_when_allowed_with_a_secret(make: Any) -> None:
    """An HS256 token verifies when HS256 is allowed and the key is a shared secret."""
    settings = make(algorithms=["HS256"], keys=[Key.from_secret(SECRET, kid="h")])
    verified = accept(settings, mint(SECRET, alg="HS256", kid="h"))
    assert verified.claims["sub"] == "user-1"
    assert verified.scopes == ("read", "write")


def test_hs256_refused_by_default_allow_list(make: Any, rsa_priv: Any) -> None:
    """HS256 is outside the default allow-list: refused as alg_not_allowed."""
    token = forge({"alg": "HS256", "kid": KID}, claims(), SECRET, alg="HS256")
    refuse(make(), token, Reason.ALG_NOT_ALLOWED)


def test_subject_is_none_without_sub(make: Any, rsa_priv: Any) -> None:
    """A token without a sub claim verifies, with subject None."""
    verified = accept(make(), mint(rsa_priv, claims(sub=DROP)))
    assert verified.subject is None


# == size cap ================================================================================


def test_size_cap_before_parsing(make: Any, rsa_priv: Any) -> None:
    """A token over the 8192-byte default cap is token_too_large; a larger cap accepts it."""
    big = mint(rsa_priv, claims(pad="x" * 6500))
    assert len(big) > 8192
    refuse(make(), big, Reason.TOKEN_TOO_LARGE)
    # the same token is fine under a larger cap: the cap alone refused it
    assert accept(make(max_token_bytes=20_000), big).claims["pad"] == "x" * 6500


def test_size_cap_applies_to_junk_before_structure(make: Any) -> None:
    """8193 bytes of junk are token_too_large; 8192 bytes are malformed_token."""
    refuse(make(), "a" * 8193, Reason.TOKEN_TOO_LARGE)
    refuse(make(), "a" * 8192, Reason.MALFORMED_TOKEN)


def test_size_cap_configurable(make: Any, rsa_priv: Any) -> None:
    """max_token_bytes is inclusive: a token of exactly that length passes, one byte over not."""
    token = mint(rsa_priv)
    refuse(make(max_token_bytes=len(token) - 1), token, Reason.TOKEN_TOO_LARGE)
    assert accept(make(max_token_bytes=len(token)), token)


# == structure ===============================================================================


@pytest.fixture
def good(rsa_priv: Any) -> str:
    return mint(rsa_priv)


@pytest.mark.parametrize(
    ("shape", "reason"),
    [
        ("one", Reason.MALFORMED_TOKEN),
        ("two", Reason.MALFORMED_TOKEN),
        ("four", Reason.MALFORMED_TOKEN),
        ("five_jwe", Reason.MALFORMED_TOKEN),
        ("empty_signature", Reason.MALFORMED_TOKEN),
        ("trailing_newline", Reason.MALFORMED_TOKEN),
        ("leading_space", Reason.MALFORMED_HEADER),
        ("empty", Reason.MALFORMED_TOKEN),
        ("dots", Reason.MALFORMED_TOKEN),
    ],
)
def test_structure(shape: str, reason: str, good: str, make: Any) -> None:
    """A token that is not three non-empty dot-separated segments is refused as malformed."""
    h, p, s = good.split(".")
    token = {
        "one": h,
        "two": f"{h}.{p}",
        "four": f"{good}.{s}",
        "five_jwe": f"{h}.{p}.{s}.{s}.{s}",
        "empty_signature": f"{h}.{p}.",
        "trailing_newline": good + "\n",
        "leading_space": " " + good,
        "empty": "",
        "dots": "..",
    }[shape]
    refuse(make(), token, reason)


def test_control_good_token_accepted(good: str, make: Any) -> None:
    """The unaltered token the structure tests mangle verifies."""
    assert accept(make(), good).subject == "user-1"


def _unaligned(build: Any) -> str:
    """build(filler) -> segment; find a filler making len(segment) % 4 == 2 or 3."""
    for n in range(8):
        seg: str = build("a" * n)
        if len(seg) % 4 in (2, 3):
            return seg
    raise AssertionError("no filler fits")


def noncanonical(seg: str) -> str:
    """Same bytes under a lax decoder, but with unused low bits of the last char set."""
    assert len(seg) % 4 in (2, 3)
    out = seg[:-1] + B64_ALPHABET[B64_ALPHABET.index(seg[-1]) ^ 1]
    assert out != seg and b64d(out) == b64d(seg)
    return out


@pytest.mark.parametrize("where", ["header", "payload", "signature"])
def test_non_canonical_last_character(where: str, rsa_priv: Any, make: Any) -> None:
    """A segment whose last base64url character has unused bits set is refused as malformed."""
    head = _unaligned(lambda f: segment(rs_header(x=f)))
    body = _unaligned(lambda f: segment(claims(x=f)))
    canonical = assemble(head, body, rsa_priv)
    assert accept(make(), canonical)  # control
    if where == "header":
        token = assemble(noncanonical(head), body, rsa_priv)  # signed over what is sent
        reason = Reason.MALFORMED_HEADER
    elif where == "payload":
        token = assemble(head, noncanonical(body), rsa_priv)
        reason = Reason.MALFORMED_TOKEN
    else:
        h, p, s = canonical.split(".")
        assert len(s) % 4 == 2  # 256-byte RSA signature
        token = f"{h}.{p}.{noncanonical(s)}"
        reason = Reason.MALFORMED_TOKEN
    refuse(make(), token, reason)


@pytest.mark.parametrize("where", ["header", "payload", "signature"])
@pytest.mark.parametrize("junk", ["?", "=", "==", " ", "+", "/", "\n", "%3D"])
def test_non_base64url_characters(where: str, junk: str, rsa_priv: Any, make: Any) -> None:
    """Any character outside base64url (padding, +, /, space, %) in a segment is malformed."""
    head, body = segment(rs_header()), segment(claims())
    if where == "header":
        token = assemble(head[:10] + junk + head[10:], body, rsa_priv)
        reason = Reason.MALFORMED_HEADER
    elif where == "payload":
        token = assemble(head, body[:10] + junk + body[10:], rsa_priv)
        reason = Reason.MALFORMED_TOKEN
    else:
        h, p, s = assemble(head, body, rsa_priv).split(".")
        token = f"{h}.{p}.{s[:10]}{junk}{s[10:]}"
        reason = Reason.MALFORMED_TOKEN
    refuse(make(), token, reason)


@pytest.mark.parametrize("where", ["header", "payload", "signature"])
def test_padding_refused(where: str, rsa_priv: Any, make: Any) -> None:
    """A segment with '=' padding is refused as malformed, even though it decodes the same."""
    head = _unaligned(lambda f: segment(rs_header(x=f)))
    body = _unaligned(lambda f: segment(claims(x=f)))

    def pad(seg: str) -> str:
        return seg + "=" * (-len(seg) % 4)

    if where == "header":
        token, reason = assemble(pad(head), body, rsa_priv), Reason.MALFORMED_HEADER
    elif where == "payload":
        token, reason = assemble(head, pad(body), rsa_priv), Reason.MALFORMED_TOKEN
    else:
        h, p, s = assemble(head, body, rsa_priv).split(".")
        token, reason = f"{h}.{p}.{pad(s)}", Reason.MALFORMED_TOKEN
    refuse(make(), token, reason)


def test_standard_alphabet_header_refused(rsa_priv: Any, make: Any) -> None:
    # "???" encodes to "Pz8/" in the standard alphabet; a lax decoder would accept '+' and '/'.
    """A header in the standard base64 alphabet ('+' or '/') is malformed_header."""
    header = json.dumps(rs_header(x="???>>>")).encode()
    head = base64.b64encode(header).rstrip(b"=").decode()
    assert "/" in head or "+" in head
    refuse(make(), assemble(head, segment(claims()), rsa_priv), Reason.MALFORMED_HEADER)


# == header JSON =============================================================================


@pytest.mark.parametrize(
    "header",
    [
        b"{not json",
        b"",
        b'"RS256"',
        b"[]",
        b"null",
        b"42",
        b'{"alg":"RS256","kid":"rsa-1","kid":"rsa-1"}',
        b'{"alg":"RS256","alg":"RS256","kid":"rsa-1"}',
        b'{"alg":"RS256","kid":"rsa-1","x":NaN}',
        b'{"alg":"RS256","kid":"rsa-1","x":Infinity}',
        b'{"alg":"RS256","kid":"rsa-1","x":-Infinity}',
        b'{"alg":"RS256","kid":"rsa-1","x":"\xff\xfe"}',
        b'\xef\xbb\xbf{"alg":"RS256","kid":"rsa-1"}',
        b'{"alg":"RS256","kid":"rsa-1"} x',
    ],
    ids=[
        "not-json",
        "empty",
        "string",
        "array",
        "null",
        "number",
        "dup-kid",
        "dup-alg",
        "nan",
        "infinity",
        "minus-infinity",
        "bad-utf8",
        "bom",
        "trailing-junk",
    ],
)
def test_malformed_header(header: bytes, rsa_priv: Any, make: Any) -> None:
    """A header that is not a strict JSON object (dup keys, NaN, bad UTF-8, BOM) is malformed."""
    refuse(make(), forge(header, claims(), rsa_priv), Reason.MALFORMED_HEADER)


def test_deeply_nested_header(rsa_priv: Any, make: Any) -> None:
    """A header nested 100000 arrays deep is malformed_header, not a recursion error."""
    header = b'{"alg":"RS256","kid":"rsa-1","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    refuse(
        make(max_token_bytes=1_000_000), forge(header, claims(), rsa_priv), Reason.MALFORMED_HEADER
    )


# == payload JSON ============================================================================

_CLAIMS_JSON = json.dumps(claims(), separators=(",", ":"))[1:-1].encode()


@pytest.mark.parametrize(
    "payload",
    [
        b"{not json",
        b"",
        b"[" + json.dumps(claims()).encode() + b"]",
        b'"a string"',
        b"null",
        b"1",
        b"{" + _CLAIMS_JSON + b',"sub":"admin"}',
        b"{" + _CLAIMS_JSON + b',"exp":' + str(NOW + 10**6).encode() + b"}",
        b"{" + _CLAIMS_JSON + b',"x":NaN}',
        b"{" + _CLAIMS_JSON + b',"x":Infinity}',
        b"{" + _CLAIMS_JSON + b',"x":"\xc3\x28"}',
        b"{" + _CLAIMS_JSON + b"}}",
        b"{" + _CLAIMS_JSON + b"} x",
        b" \n\t",
        b"\xef\xbb\xbf{" + _CLAIMS_JSON + b"}",
        b"\xc2\xa0{" + _CLAIMS_JSON + b"}",
    ],
    ids=[
        "not-json",
        "empty",
        "array",
        "string",
        "null",
        "number",
        "dup-sub",
        "dup-exp",
        "nan",
        "infinity",
        "bad-utf8",
        "trailing-junk",
        "junk-after-whitespace",
        "only-whitespace",
        "utf8-bom",
        "non-json-whitespace",
    ],
)
def test_malformed_payload(payload: bytes, rsa_priv: Any, make: Any) -> None:
    """A payload that is not a strict JSON object (dup claims, NaN, BOM, junk) is malformed."""
    refuse(make(), forge(rs_header(), payload, rsa_priv), Reason.MALFORMED_PAYLOAD)


def test_json_whitespace_around_payload_accepted(rsa_priv: Any, make: Any) -> None:
    # RFC 8259 §2: insignificant whitespace may surround the value.
    """JSON whitespace around the payload object is allowed (RFC 8259): the token verifies."""
    payload = b" \r\n{" + _CLAIMS_JSON + b"}\t\n "
    assert accept(make(), forge(rs_header(), payload, rsa_priv)).claims["sub"] == "user-1"


@pytest.mark.parametrize(
    "payload",
    [
        b"[" * 100_000,
        b"{" + _CLAIMS_JSON + b',"x":' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        b"{" + _CLAIMS_JSON + b',"x":' + b'{"a":' * 50_000 + b"1" + b"}" * 50_000 + b"}",
    ],
    ids=["unclosed-arrays", "nested-arrays", "nested-objects"],
)
def test_deeply_nested_payload_is_malformed_not_recursion_error(
    payload: bytes, rsa_priv: Any, make: Any
) -> None:
    """A payload nested 50000+ levels deep is malformed_payload, not a recursion error."""
    token = forge(rs_header(), payload, rsa_priv)
    assert len(token) < 1_000_000
    refuse(make(max_token_bytes=1_000_000), token, Reason.MALFORMED_PAYLOAD)


# == alg =====================================================================================


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_with_signature(alg: str, rsa_priv: Any, make: Any) -> None:
    """alg none, in any case, is refused as alg_not_allowed even with a signature present."""
    token = forge({"alg": alg, "kid": KID}, claims(), rsa_priv)
    refuse(make(), token, Reason.ALG_NOT_ALLOWED)


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_alg_none_without_signature(alg: str, make: Any) -> None:
    """An unsigned alg=none token is malformed_token; with a junk signature, alg_not_allowed."""
    token = f"{segment({'alg': alg})}.{segment(claims())}."
    # An empty signature segment is refused structurally, before the header is even read.
    refuse(make(), token, Reason.MALFORMED_TOKEN)
    # ... and with a junk signature the alg check refuses it.
    refuse(make(), token + "AAAA", Reason.ALG_NOT_ALLOWED)


def test_alg_outside_allow_list(rsa_priv: Any, make: Any) -> None:
    """A valid RS512 token is refused as alg_not_allowed unless RS512 is in algorithms."""
    token = mint(rsa_priv, alg="RS512")
    settings = make(algorithms=["RS256"])
    refuse(settings, token, Reason.ALG_NOT_ALLOWED)
    assert accept(make(algorithms=["RS256", "RS512"]), token)  # control: the key fits RS512


@pytest.mark.parametrize("alg", [256, None, ["RS256"], {"RS256": 1}, True, "rs256", "RS256 "])
def test_alg_not_an_allowed_string(alg: Any, rsa_priv: Any, make: Any) -> None:
    """An alg that is not exactly an allowed string (number, list, lower case, space) is refused."""
    refuse(make(), forge({"alg": alg, "kid": KID}, claims(), rsa_priv), Reason.ALG_NOT_ALLOWED)


def test_alg_missing(rsa_priv: Any, make: Any) -> None:
    """A header without alg is refused as alg_not_allowed."""
    refuse(make(), forge({"kid": KID}, claims(), rsa_priv), Reason.ALG_NOT_ALLOWED)


# == algorithm confusion =====================================================================


def _rsa_secrets(rsa_priv: rsa.RSAPrivateKey) -> dict[str, bytes]:
    public_pem = pem(rsa_priv)
    public = rsa_priv.public_key()
    return {
        "pem": public_pem,
        "pem-stripped": public_pem.strip(),
        "pkcs1-pem": public.public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.PKCS1
        ),
        "der": public.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        ),
        "jwk-json": json.dumps(rsa_jwk(rsa_priv, kid=KID)).encode(),
        "jwk-json-compact": json.dumps(rsa_jwk(rsa_priv), separators=(",", ":")).encode(),
    }


@pytest.mark.parametrize(
    "secret_kind", ["pem", "pem-stripped", "pkcs1-pem", "der", "jwk-json", "jwk-json-compact"]
)
@pytest.mark.parametrize("token_kid", [KID, None, "hmac"])
@pytest.mark.parametrize("rsa_source", ["pem", "jwk"])
def test_algorithm_confusion_hs256_with_rsa_public_key(
    secret_kind: str, token_kid: str | None, rsa_source: str, rsa_priv: Any, make: Any
) -> None:
    """HS256 signed with any form of the RSA public key is refused: key_alg_mismatch for the
    RSA kid, signature_invalid otherwise; both keys still verify their own tokens."""
    rsa_key = (
        Key.from_pem(pem(rsa_priv), kid=KID)
        if rsa_source == "pem"
        else Key.from_jwk(rsa_jwk(rsa_priv, kid=KID))
    )
    settings = make(
        algorithms=["RS256", "HS256"],
        keys=[rsa_key, Key.from_secret(SECRET, kid="hmac")],
    )
    secret = _rsa_secrets(rsa_priv)[secret_kind]
    header = {"alg": "HS256", **({"kid": token_kid} if token_kid else {})}
    token = forge(header, claims(), secret, alg="HS256")
    with pytest.raises(InvalidToken) as info:
        accept(settings, token)
    expected = Reason.KEY_ALG_MISMATCH if token_kid == KID else Reason.SIGNATURE_INVALID
    assert info.value.reason == expected
    # control: the RSA key still verifies RS256, and the HMAC key its own tokens
    assert accept(settings, mint(rsa_priv))
    assert accept(settings, mint(SECRET, alg="HS256", kid="hmac"))


def test_algorithm_confusion_with_only_asymmetric_algorithms(rsa_priv: Any, make: Any) -> None:
    """HS256 signed with the RSA public PEM is alg_not_allowed under the default list."""
    token = forge({"alg": "HS256", "kid": KID}, claims(), pem(rsa_priv), alg="HS256")
    refuse(make(), token, Reason.ALG_NOT_ALLOWED)


# == JWK alg binding =========================================================================


def test_jwk_alg_binds_key_to_one_algorithm(rsa_priv: Any, make: Any) -> None:
    """A JWK with alg RS256 refuses PS256 as key_alg_mismatch; without alg it verifies both."""
    settings = make(
        algorithms=["RS256", "PS256"], keys=[Key.from_jwk(rsa_jwk(rsa_priv, kid=KID, alg="RS256"))]
    )
    refuse(settings, mint(rsa_priv, alg="PS256"), Reason.KEY_ALG_MISMATCH)
    assert accept(settings, mint(rsa_priv, alg="RS256"))
    # without the JWK alg the same key verifies both
    unbound = make(algorithms=["RS256", "PS256"], keys=[Key.from_jwk(rsa_jwk(rsa_priv, kid=KID))])
    assert accept(unbound, mint(rsa_priv, alg="PS256"))


def test_ec_p256_key_refuses_es384(ec256: Any, make: Any) -> None:
    """A P-256 key refuses an ES384 token as key_alg_mismatch and verifies ES256."""
    settings = make(algorithms=["ES256", "ES384"], keys=[Key.from_jwk(ec_jwk(ec256, kid="ec"))])
    token = forge({"alg": "ES384", "kid": "ec"}, claims(), ec256, alg="ES384")
    refuse(settings, token, Reason.KEY_ALG_MISMATCH)
    assert accept(settings, mint(ec256, alg="ES256", kid="ec"))


# == header members ==========================================================================


@pytest.mark.parametrize("crit", [["exp"], [], "b64", ["x-custom"], None])
def test_crit_refused(crit: Any, rsa_priv: Any, make: Any) -> None:
    """Any crit header, even empty or null, is refused as crit_unsupported."""
    token = forge(
        rs_header(crit=crit, **({"x-custom": 1} if crit == ["x-custom"] else {})),
        claims(),
        rsa_priv,
    )
    refuse(make(), token, Reason.CRIT_UNSUPPORTED)


@pytest.mark.parametrize("b64", [False, True])
def test_b64_header_refused(b64: bool, rsa_priv: Any, make: Any) -> None:
    """A b64 header member, true or false, is refused as unsupported_header."""
    refuse(make(), forge(rs_header(b64=b64), claims(), rsa_priv), Reason.UNSUPPORTED_HEADER)


@pytest.mark.parametrize("cty", ["JWT", "jwt", "application/jwt", "Application/JWT", " JWT ", 1])
def test_nested_jwt_cty_refused(cty: Any, rsa_priv: Any, make: Any) -> None:
    """A cty naming a nested JWT (any case or spacing) or not a string is unsupported_header."""
    refuse(make(), forge(rs_header(cty=cty), claims(), rsa_priv), Reason.UNSUPPORTED_HEADER)


def test_other_cty_accepted(rsa_priv: Any, make: Any) -> None:
    """A cty that is not JWT, such as application/example, is accepted."""
    assert accept(make(), forge(rs_header(cty="application/example"), claims(), rsa_priv))


@pytest.mark.parametrize("kid", [1, ["rsa-1"], {"k": "rsa-1"}, True])
def test_kid_not_a_string(kid: Any, rsa_priv: Any, make: Any) -> None:
    """A kid that is not a string is refused as malformed_header."""
    refuse(make(), forge({"alg": "RS256", "kid": kid}, claims(), rsa_priv), Reason.MALFORMED_HEADER)


@pytest.mark.parametrize("member", ["jwk", "jku", "x5u", "x5c"])
@pytest.mark.parametrize("attacker_kid", [None, "attacker"])
def test_embedded_attacker_key_ignored(
    member: str, attacker_kid: str | None, ec256: Any, make: Any
) -> None:
    """Keys offered in jwk, jku, x5u or x5c are ignored: an attacker's token is kid_unknown or
    signature_invalid, and our key with the same header verifies."""
    attacker = ec.generate_private_key(ec.SECP256R1())
    jwk = ec_jwk(attacker, **({"kid": attacker_kid} if attacker_kid else {}))
    value: Any = {
        "jwk": jwk,
        "jku": "https://attacker.example/jwks.json",
        "x5u": "https://attacker.example/cert.pem",
        "x5c": [b64e(b"not really a certificate")],
    }[member]
    header = {"alg": "ES256", member: value, **({"kid": attacker_kid} if attacker_kid else {})}
    settings = make(keys=[Key.from_pem(pem(ec256))])  # our one key, no kid
    token = forge(header, claims(), attacker, alg="ES256")
    expected = Reason.KID_UNKNOWN if attacker_kid else Reason.SIGNATURE_INVALID
    refuse(settings, token, expected)
    # control: our own key with the same header shape is fine
    assert accept(settings, forge({"alg": "ES256", member: value}, claims(), ec256, alg="ES256"))


def test_embedded_rsa_jwk_ignored(rsa_priv: Any, rsa_priv2: Any, make: Any) -> None:
    """An embedded RSA jwk under our kid is ignored: the token is signature_invalid."""
    header = {"alg": "RS256", "kid": KID, "jwk": rsa_jwk(rsa_priv2, kid=KID)}
    refuse(make(), forge(header, claims(), rsa_priv2), Reason.SIGNATURE_INVALID)


# == typ =====================================================================================


@pytest.mark.parametrize("typ", ["at+jwt", "AT+JWT", "application/at+jwt", "Application/At+JWT"])
def test_typ_accepted(typ: str, rsa_priv: Any, make: Any) -> None:
    """With typ=at+jwt, at+jwt and application/at+jwt match in any case."""
    assert accept(make(typ="at+jwt"), mint(rsa_priv, typ=typ))


@pytest.mark.parametrize("typ", ["JWT", "jwt", None, "at+jwt2", "application/jwt", 1, ["at+jwt"]])
def test_typ_refused(typ: Any, rsa_priv: Any, make: Any) -> None:
    """With typ=at+jwt, a missing, different or non-string typ is refused as typ_mismatch."""
    header = rs_header() if typ is None else rs_header(typ=typ)
    refuse(make(typ="at+jwt"), forge(header, claims(), rsa_priv), Reason.TYP_MISMATCH)


@pytest.mark.parametrize("typ", ["JWT", "at+jwt", "whatever", None])
def test_typ_unchecked_without_setting(typ: Any, rsa_priv: Any, make: Any) -> None:
    """Without a typ setting any typ, or none, is accepted."""
    header = rs_header() if typ is None else rs_header(typ=typ)
    assert accept(make(), forge(header, claims(), rsa_priv))


# == kid rules ===============================================================================


def test_unknown_kid(rsa_priv: Any, make: Any) -> None:
    """A kid not among the keys is refused as kid_unknown."""
    refuse(make(), mint(rsa_priv, kid="other"), Reason.KID_UNKNOWN)


def test_no_kid_one_fitting_key_accepted(rsa_priv: Any, make: Any) -> None:
    """A token without kid verifies against the one key that fits."""
    assert accept(make(), mint(rsa_priv, kid=None)).subject == "user-1"


def test_no_kid_two_rsa_keys_ambiguous(rsa_priv: Any, rsa_priv2: Any, make: Any) -> None:
    """Without a kid, two RSA keys make the token kid_ambiguous; with the kid it verifies."""
    settings = make(keys=[Key.from_pem(pem(rsa_priv), kid="a"), Key.from_pem(pem(rsa_priv2))])
    refuse(settings, mint(rsa_priv, kid=None), Reason.KID_AMBIGUOUS)
    assert accept(settings, mint(rsa_priv, kid="a"))  # with kid it is fine


def test_no_kid_only_one_key_fits_alg(rsa_priv: Any, ec256: Any, make: Any) -> None:
    """Without a kid, the one key of the token's key type is used: RSA and EC tokens verify."""
    settings = make(keys=[Key.from_pem(pem(rsa_priv)), Key.from_pem(pem(ec256))])
    assert accept(settings, mint(ec256, alg="ES256", kid=None))
    assert accept(settings, mint(rsa_priv, alg="RS256", kid=None))


def test_no_kid_no_key_fits_alg(ec256: Any, rsa_priv: Any, make: Any) -> None:
    """Without a kid and no key of the token's type, the token is refused as kid_unknown."""
    settings = make(keys=[Key.from_pem(pem(ec256))])
    token = mint(rsa_priv, kid=None)
    refuse(settings, token, Reason.KID_UNKNOWN)


# == iss =====================================================================================


@pytest.mark.parametrize(
    "iss",
    [
        DROP,
        "https://other.example",
        "HTTPS://ISSUER.EXAMPLE",
        ISS + "/",
        ISS + " ",
        "",
        None,
        1,
        True,
    ],
    ids=[
        "missing",
        "different",
        "case",
        "trailing-slash",
        "trailing-space",
        "empty",
        "null",
        "number",
        "bool",
    ],
)
def test_issuer_mismatch(iss: Any, rsa_priv: Any, make: Any) -> None:
    # forge, not mint: PyJWT refuses to encode a non-string iss
    """An iss that is missing or not exactly the configured string is refused as issuer_mismatch."""
    refuse(make(), forge(rs_header(), claims(iss=iss), rsa_priv), Reason.ISSUER_MISMATCH)


@pytest.mark.parametrize("iss", [[ISS], {"iss": ISS}], ids=["list", "object"])
def test_issuer_unhashable_is_mismatch(iss: Any, rsa_priv: Any, make: Any) -> None:
    """An iss that is a list or an object is issuer_mismatch, not a crash."""
    token = forge(rs_header(), claims(iss=iss), rsa_priv)  # PyJWT would refuse to mint it
    refuse(make(), token, Reason.ISSUER_MISMATCH)


def test_issuer_list(rsa_priv: Any, make: Any) -> None:
    """With a list of issuers each one verifies and any other is issuer_mismatch."""
    issuers = [ISS, "https://second.example"]
    settings = make(issuer=issuers)
    for iss in issuers:
        assert accept(settings, mint(rsa_priv, claims(iss=iss))).claims["iss"] == iss
    refuse(settings, mint(rsa_priv, claims(iss="https://third.example")), Reason.ISSUER_MISMATCH)


def test_allow_any_issuer(rsa_priv: Any, make: Any) -> None:
    """With allow_any_issuer, any iss, or none at all, is accepted."""
    settings = make(issuer=None, allow_any_issuer=True)
    assert accept(settings, mint(rsa_priv, claims(iss="https://anyone.example")))
    assert accept(settings, mint(rsa_priv, claims(iss=DROP)))


# == aud =====================================================================================


@pytest.mark.parametrize(
    "aud", [AUD, [AUD], ["other", AUD], [AUD, "other"]], ids=["string", "list", "list2", "list3"]
)
def test_audience_accepted(aud: Any, rsa_priv: Any, make: Any) -> None:
    """An aud equal to the audience, or a list containing it, verifies."""
    assert accept(make(), mint(rsa_priv, claims(aud=aud))).claims["aud"] == aud


@pytest.mark.parametrize(
    "aud",
    [
        DROP,
        None,
        "other",
        AUD.upper(),
        AUD + "/",
        ["other"],
        [],
        [[AUD]],
        [AUD, 1],
        1,
        {"aud": AUD},
        True,
        "",
    ],
    ids=[
        "missing",
        "null",
        "other",
        "case",
        "slash",
        "list-without",
        "empty-list",
        "nested",
        "list-non-string",
        "number",
        "object",
        "bool",
        "empty-string",
    ],
)
def test_audience_mismatch(aud: Any, rsa_priv: Any, make: Any) -> None:
    """An aud missing, different, or not a string or list of strings is audience_mismatch."""
    refuse(make(), mint(rsa_priv, claims(aud=aud)), Reason.AUDIENCE_MISMATCH)


def test_multiple_configured_audiences(rsa_priv: Any, make: Any) -> None:
    """With several audiences, a token naming any one of them verifies."""
    settings = make(audience=[AUD, "api://billing"])
    assert accept(settings, mint(rsa_priv, claims(aud="api://billing")))
    assert accept(settings, mint(rsa_priv, claims(aud=AUD)))
    assert accept(settings, mint(rsa_priv, claims(aud=["x", "api://billing"])))
    refuse(settings, mint(rsa_priv, claims(aud="api://other")), Reason.AUDIENCE_MISMATCH)


def test_allow_any_audience(rsa_priv: Any, make: Any) -> None:
    """With allow_any_audience, any aud, or none at all, is accepted."""
    settings = make(audience=None, allow_any_audience=True)
    assert accept(settings, mint(rsa_priv, claims(aud="anything")))
    assert accept(settings, mint(rsa_priv, claims(aud=DROP)))


# == exp =====================================================================================


def test_exp_missing_required_by_default(rsa_priv: Any, make: Any) -> None:
    """A token without exp is refused as claim_missing by default."""
    refuse(make(), mint(rsa_priv, claims(exp=DROP)), Reason.CLAIM_MISSING)


def test_exp_null_is_missing(rsa_priv: Any, make: Any) -> None:
    """An exp of null counts as missing: claim_missing."""
    refuse(make(), mint(rsa_priv, claims(exp=None)), Reason.CLAIM_MISSING)


def test_exp_optional_when_not_required(rsa_priv: Any, make: Any) -> None:
    """With require_exp=False a token without exp verifies, but a past exp is still expired."""
    assert accept(make(require_exp=False), mint(rsa_priv, claims(exp=DROP)))
    # still checked when present
    refuse(make(require_exp=False), mint(rsa_priv, claims(exp=NOW - 3600)), Reason.EXPIRED)


@pytest.mark.parametrize(
    ("exp", "ok"),
    [
        (NOW - 3600, False),
        (NOW - 61, False),
        (NOW - 60, False),  # now == exp + leeway
        (NOW - 59, True),  # now == exp + leeway - 1
        (NOW, True),
        (NOW + 3600, True),
        (NOW - 59.5, True),  # floats are fine
        (NOW - 60.0, False),
    ],
)
def test_exp_boundaries_default_leeway(exp: float, ok: bool, rsa_priv: Any, make: Any) -> None:
    """With the default 60 s leeway a token is expired from exp + 60 on; floats count exactly."""
    token = mint(rsa_priv, claims(exp=exp))
    if ok:
        assert accept(make(), token).claims["exp"] == exp
    else:
        refuse(make(), token, Reason.EXPIRED)


@pytest.mark.parametrize(
    "exp",
    ["1900000000", True, False, -1, 1e300, 10**12, [NOW + 60], {"t": NOW}],
    ids=["string", "true", "false", "negative", "1e300", "year-33658", "list", "object"],
)
def test_exp_invalid(exp: Any, rsa_priv: Any, make: Any) -> None:
    """An exp that is not a plausible number (string, bool, negative, huge) is claim_invalid."""
    refuse(make(), mint(rsa_priv, claims(exp=exp)), Reason.CLAIM_INVALID)


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_time_claim_float_overflow_is_invalid(name: str, rsa_priv: Any, make: Any) -> None:
    # 1e400 in JSON parses to float('inf')
    """An exp, nbf or iat of 1e400 (infinity once parsed) is claim_invalid."""
    payload = json.dumps(claims(**{name: "HUGE"})).replace('"HUGE"', "1e400")
    refuse(make(), forge(rs_header(), payload, rsa_priv), Reason.CLAIM_INVALID)


@pytest.mark.parametrize("name", ["exp", "nbf", "iat"])
def test_time_claim_huge_integer_is_invalid(name: str, rsa_priv: Any, make: Any) -> None:
    """An exp, nbf or iat of 10**400 is claim_invalid."""
    token = forge(rs_header(), claims(**{name: 10**400}), rsa_priv)
    refuse(make(), token, Reason.CLAIM_INVALID)


# == nbf / iat / leeway ======================================================================


@pytest.mark.parametrize(
    ("nbf", "ok"),
    [(NOW + 61, False), (NOW + 60, True), (NOW, True), (NOW + 3600, False), (NOW - 3600, True)],
)
def test_nbf(nbf: int, ok: bool, rsa_priv: Any, make: Any) -> None:
    """A token is not_yet_valid while nbf is more than the 60 s leeway ahead."""
    token = mint(rsa_priv, claims(nbf=nbf))
    if ok:
        assert accept(make(), token)
    else:
        refuse(make(), token, Reason.NOT_YET_VALID)


@pytest.mark.parametrize(
    ("iat", "ok"),
    [(NOW + 61, False), (NOW + 60, True), (NOW, True), (NOW + 3600, False), (NOW - 86400, True)],
)
def test_iat_in_future(iat: int, ok: bool, rsa_priv: Any, make: Any) -> None:
    """A token is issued_in_future when iat is more than the 60 s leeway ahead."""
    token = mint(rsa_priv, claims(iat=iat, exp=NOW + 7200))
    if ok:
        assert accept(make(), token)
    else:
        refuse(make(), token, Reason.ISSUED_IN_FUTURE)


@pytest.mark.parametrize("name", ["nbf", "iat"])
@pytest.mark.parametrize("value", ["soon", True, -5, 1e300])
def test_nbf_iat_invalid(name: str, value: Any, rsa_priv: Any, make: Any) -> None:
    """An nbf or iat that is a string, bool, negative or 1e300 is claim_invalid."""
    refuse(make(), mint(rsa_priv, claims(**{name: value})), Reason.CLAIM_INVALID)


def test_leeway_zero(rsa_priv: Any, make: Any) -> None:
    """With leeway 0, exp == now is expired and nbf or iat one second ahead is refused."""
    settings = make(leeway=0)
    refuse(settings, mint(rsa_priv, claims(exp=NOW)), Reason.EXPIRED)
    assert accept(settings, mint(rsa_priv, claims(exp=NOW + 1)))
    refuse(settings, mint(rsa_priv, claims(nbf=NOW + 1)), Reason.NOT_YET_VALID)
    assert accept(settings, mint(rsa_priv, claims(nbf=NOW)))
    refuse(settings, mint(rsa_priv, claims(iat=NOW + 1)), Reason.ISSUED_IN_FUTURE)
    assert accept(settings, mint(rsa_priv, claims(iat=NOW)))


def test_leeway_300(rsa_priv: Any, make: Any) -> None:
    """A leeway of 300 s stretches exp, nbf and iat by exactly 300 s."""
    settings = make(leeway=300)
    assert accept(settings, mint(rsa_priv, claims(exp=NOW - 299)))
    refuse(settings, mint(rsa_priv, claims(exp=NOW - 300)), Reason.EXPIRED)
    assert accept(settings, mint(rsa_priv, claims(nbf=NOW + 300)))
    refuse(settings, mint(rsa_priv, claims(nbf=NOW + 301)), Reason.NOT_YET_VALID)
    assert accept(settings, mint(rsa_priv, claims(iat=NOW + 300, exp=NOW + 900)))
    refuse(settings, mint(rsa_priv, claims(iat=NOW + 301, exp=NOW + 900)), Reason.ISSUED_IN_FUTURE)


def test_clock_is_consulted_per_call(rsa_priv: Any, make: Any, clock: FakeClock) -> None:
    """The clock is read on each verify: a token accepted once is expired once time moves on."""
    verifier = SyncVerifier(make())
    token = mint(rsa_priv, claims(exp=NOW + 100))
    assert verifier.verify(token)
    clock.now = NOW + 160
    with pytest.raises(InvalidToken) as info:
        verifier.verify(token)
    assert info.value.reason == Reason.EXPIRED


# == max_lifetime / required claims / sub ====================================================


def test_max_lifetime(rsa_priv: Any, make: Any) -> None:
    """exp - iat over max_lifetime is lifetime_too_long; exactly max_lifetime passes."""
    settings = make(max_lifetime=3600)
    assert accept(settings, mint(rsa_priv, claims(iat=NOW - 10, exp=NOW - 10 + 3600)))
    refuse(
        settings,
        mint(rsa_priv, claims(iat=NOW - 10, exp=NOW - 10 + 3601)),
        Reason.LIFETIME_TOO_LONG,
    )


def test_max_lifetime_needs_iat(rsa_priv: Any, make: Any) -> None:
    """With max_lifetime a token without iat is claim_missing; without it iat is optional."""
    refuse(make(max_lifetime=3600), mint(rsa_priv, claims(iat=DROP)), Reason.CLAIM_MISSING)
    assert accept(make(), mint(rsa_priv, claims(iat=DROP)))  # iat optional otherwise


def test_max_lifetime_without_exp(rsa_priv: Any, make: Any) -> None:
    """With max_lifetime and require_exp=False, a token without exp is lifetime_too_long."""
    settings = make(max_lifetime=3600, require_exp=False)
    refuse(settings, mint(rsa_priv, claims(exp=DROP)), Reason.LIFETIME_TOO_LONG)


def test_required_claims(rsa_priv: Any, make: Any) -> None:
    """Each of required_claims must be present and non-null, otherwise claim_missing."""
    settings = make(required_claims=["jti", "tenant"])
    assert accept(settings, mint(rsa_priv, claims(jti="j1", tenant="t1")))
    refuse(settings, mint(rsa_priv, claims(jti="j1")), Reason.CLAIM_MISSING)
    refuse(settings, mint(rsa_priv, claims(tenant="t1")), Reason.CLAIM_MISSING)
    refuse(settings, mint(rsa_priv, claims(jti=None, tenant="t1")), Reason.CLAIM_MISSING)


@pytest.mark.parametrize("sub", [123, ["user-1"], {"id": 1}, True])
def test_sub_not_a_string(sub: Any, rsa_priv: Any, make: Any) -> None:
    """A sub that is not a string is refused as claim_invalid."""
    refuse(make(), mint(rsa_priv, claims(sub=sub)), Reason.CLAIM_INVALID)


# == scopes ==================================================================================


@pytest.mark.parametrize(
    ("extra", "scope_claims", "expected"),
    [
        ({"scope": "read write"}, None, ("read", "write")),
        ({"scope": "  read\twrite  read "}, None, ("read", "write")),
        ({"scope": ""}, None, ()),
        ({"scope": DROP}, None, ()),
        ({"scope": DROP, "scp": ["a", "b", "a"]}, None, ("a", "b")),
        ({"scope": DROP, "scp": "a b"}, None, ("a", "b")),
        ({"scope": "a b", "scp": ["b", "c"]}, None, ("a", "b", "c")),
        (
            {"scope": "ignored", "permissions": ["p:1", "p:2", "p:1"]},
            ("permissions",),
            ("p:1", "p:2"),
        ),
        ({"scope": DROP}, ("permissions",), ()),
    ],
)
def test_scopes(
    extra: dict[str, Any], scope_claims: Any, expected: tuple[str, ...], rsa_priv: Any, make: Any
) -> None:
    """Scopes come from scope (space separated) and scp (list or string), de-duplicated in order;
    scope_claims replaces the claims read."""
    settings = make(**({"scope_claims": scope_claims} if scope_claims else {}))
    assert accept(settings, mint(rsa_priv, claims(**extra))).scopes == expected


@pytest.mark.parametrize(
    ("extra", "scope_claims"),
    [
        ({"scope": 1}, None),
        ({"scope": ["read", 1]}, None),
        ({"scope": {"read": True}}, None),
        ({"scope": True}, None),
        ({"scp": [["read"]]}, None),
        ({"scp": 1.5}, None),
        ({"permissions": 7}, ("permissions",)),
        ({"permissions": ["a", None]}, ("permissions",)),
    ],
)
def test_malformed_scope_claims(
    extra: dict[str, Any], scope_claims: Any, rsa_priv: Any, make: Any
) -> None:
    """A scope claim that is not a string or a list of strings is claim_invalid."""
    settings = make(**({"scope_claims": scope_claims} if scope_claims else {}))
    refuse(settings, mint(rsa_priv, claims(**extra)), Reason.CLAIM_INVALID)


def test_unconfigured_scope_claim_ignored(rsa_priv: Any, make: Any) -> None:
    """A claim outside scope_claims is ignored, even when malformed."""
    token = mint(rsa_priv, claims(scope="x", permissions=7))
    assert accept(make(), token).scopes == ("x",)


# == cheap checks first ======================================================================


def test_expired_reported_before_unknown_kid(rsa_priv: Any, make: Any) -> None:
    """An expired token with an unknown kid is reported as expired."""
    refuse(make(), mint(rsa_priv, claims(exp=NOW - 3600), kid="nobody"), Reason.EXPIRED)


def test_audience_reported_before_bad_signature(rsa_priv2: Any, make: Any) -> None:
    """A wrong aud is reported before the signature is checked."""
    token = mint(rsa_priv2, claims(aud="api://other"))  # wrong key and wrong aud
    refuse(make(), token, Reason.AUDIENCE_MISMATCH)
    refuse(make(), mint(rsa_priv2), Reason.SIGNATURE_INVALID)  # control


def test_junk_never_triggers_a_key_fetch(rsa_priv: Any, clock: FakeClock) -> None:
    """Tokens failing the cheap checks are refused without fetching keys; only a
    plausible token triggers a fetch (KeysUnavailable when the JWKS is down)."""
    settings = Settings(
        issuer=ISS,
        audience=AUD,
        jwks_url="http://127.0.0.1:9/jwks",  # nothing listens on the discard port
        jwks_timeout=2,
        clock=clock,
    )
    verifier = SyncVerifier(settings)
    try:
        junk = {
            Reason.EXPIRED: mint(rsa_priv, claims(exp=NOW - 3600), kid="r"),
            Reason.ISSUER_MISMATCH: mint(rsa_priv, claims(iss="https://evil.example"), kid="r"),
            Reason.AUDIENCE_MISMATCH: mint(rsa_priv, claims(aud="x"), kid="r"),
            Reason.ALG_NOT_ALLOWED: forge({"alg": "none", "kid": "r"}, claims(), rsa_priv),
            Reason.MALFORMED_PAYLOAD: forge({"alg": "RS256", "kid": "r"}, b"[]", rsa_priv),
            Reason.MALFORMED_TOKEN: "a.b",
            Reason.TOKEN_TOO_LARGE: "a" * 9000,
            Reason.CLAIM_MISSING: mint(rsa_priv, claims(exp=DROP), kid="r"),
            Reason.NOT_YET_VALID: mint(rsa_priv, claims(nbf=NOW + 3600), kid="r"),
        }
        for reason, token in junk.items():
            with pytest.raises(InvalidToken) as info:
                verifier.verify(token)
            assert info.value.reason == reason
        assert verifier.remote is not None
        assert verifier.remote.policy.fetches == 0
        # control: a token that passes the cheap checks does need the keys, which are down
        with pytest.raises(KeysUnavailable):
            verifier.verify(mint(rsa_priv, kid="r"))
        assert verifier.remote.policy.fetches == 1
    finally:
        verifier.close()


# == validators ==============================================================================


def test_validator_sees_claims_and_can_accept(rsa_priv: Any, make: Any) -> None:
    """Validators get the verified claims; returning None or True accepts the token."""
    seen: list[Any] = []

    def returns_none(c: Any) -> None:
        seen.append(dict(c))

    def returns_true(c: Any) -> bool:
        return True

    assert accept(make(validators=[returns_none, returns_true]), mint(rsa_priv))
    assert seen == [claims()]


def test_validator_returning_false(rsa_priv: Any, make: Any) -> None:
    """A validator returning False refuses the token as validator_rejected."""

    def tenant_is_acme(c: Any) -> bool:
        return bool(c.get("tenant") == "acme")

    settings = make(validators=[tenant_is_acme])
    refuse(settings, mint(rsa_priv), Reason.VALIDATOR_REJECTED)
    assert accept(settings, mint(rsa_priv, claims(tenant="acme")))


def test_validator_falsy_but_not_false_accepts(rsa_priv: Any, make: Any) -> None:
    """Only False rejects: a validator returning 0 or an empty string accepts the token."""
    assert accept(make(validators=[lambda c: 0, lambda c: ""]), mint(rsa_priv))


def test_validator_raising_invalid_token(rsa_priv: Any, make: Any) -> None:
    """An InvalidToken raised by a validator propagates as is, with its own reason."""
    custom = InvalidToken("custom", "no thanks")

    def raiser(c: Any) -> None:
        raise custom

    with pytest.raises(InvalidToken) as info:
        accept(make(validators=[raiser]), mint(rsa_priv))
    assert info.value is custom
    assert info.value.reason == "custom"


def test_validator_crashing_is_logged_and_refused(
    rsa_priv: Any, make: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A validator raising anything else is validator_failed, named in the detail and logged."""

    def crashes(c: Any) -> bool:
        return bool(c["missing"])

    with caplog.at_level(logging.ERROR, logger="jwt_middleware"):
        exc = refuse(make(validators=[crashes]), mint(rsa_priv), Reason.VALIDATOR_FAILED)
    assert "KeyError" in exc.detail
    records = [r for r in caplog.records if r.name == "jwt_middleware" and r.exc_info]
    assert records and records[0].exc_info[0] is KeyError  # type: ignore[index]


def test_validators_not_run_before_signature(rsa_priv2: Any, make: Any) -> None:
    """Validators are not called for a token whose signature is invalid."""
    calls: list[Any] = []
    refuse(make(validators=[calls.append]), mint(rsa_priv2), Reason.SIGNATURE_INVALID)
    assert calls == []


def test_first_failing_validator_stops(rsa_priv: Any, make: Any) -> None:
    """Validators run in order and the first refusal skips the rest."""
    calls: list[str] = []

    def first(c: Any) -> bool:
        calls.append("first")
        return False

    def second(c: Any) -> None:
        calls.append("second")

    refuse(make(validators=[first, second]), mint(rsa_priv), Reason.VALIDATOR_REJECTED)
    assert calls == ["first"]


def test_async_validators(rsa_priv: Any, make: Any) -> None:
    """AsyncVerifier awaits async validators: admin passes, others are rejected, a crash fails."""

    async def needs_admin(c: Any) -> bool:
        await asyncio.sleep(0)
        return bool(c.get("role") == "admin")

    async def fine(c: Any) -> None:
        return None

    async def crashes(c: Any) -> None:
        raise ValueError("boom")

    async def run(settings: Settings, token: str) -> Any:
        verifier = AsyncVerifier(settings)
        try:
            return await verifier.verify(token)
        except InvalidToken as exc:
            return exc
        finally:
            await verifier.aclose()

    settings = make(validators=[fine, needs_admin, lambda c: True])
    ok = asyncio.run(run(settings, mint(rsa_priv, claims(role="admin"))))
    assert isinstance(ok, VerifiedToken) and ok.subject == "user-1"
    no = asyncio.run(run(settings, mint(rsa_priv, claims(role="user"))))
    assert isinstance(no, InvalidToken) and no.reason == Reason.VALIDATOR_REJECTED
    boom = asyncio.run(run(make(validators=[crashes]), mint(rsa_priv)))
    assert isinstance(boom, InvalidToken) and boom.reason == Reason.VALIDATOR_FAILED


def test_sync_verifier_refuses_async_validator(make: Any) -> None:
    """SyncVerifier refuses an async validator function at construction; AsyncVerifier takes it."""

    async def check(c: Any) -> bool:
        return True

    settings = make(validators=[check])
    with pytest.raises(ConfigurationError):
        SyncVerifier(settings)
    AsyncVerifier(settings)  # fine on the async side


def test_sync_verifier_refuses_an_async_check_its_construction_could_not_see(
    make: Any, rsa_priv: rsa.RSAPrivateKey, recwarn: pytest.WarningsRecorder
) -> None:
    """A callable object with an ``async __call__`` passes the construction-time check; under
    WSGI its never-computed answer must refuse the token (validator_failed), not count as a
    yes, and leave no un-awaited coroutine behind."""

    class AsyncCheck:
        async def __call__(self, claims: Any) -> bool:
            return False

    token = mint(rsa_priv)
    refuse(make(validators=[AsyncCheck()]), token, Reason.VALIDATOR_FAILED)
    assert not [w for w in recwarn if "never awaited" in str(w.message)]


# == signature tampering =====================================================================

TAMPER_SIGNERS = {
    "RS256": "rsa_priv",
    "PS256": "rsa_priv",
    "ES256": "ec256",
    "EdDSA": "ed",
    "HS256": None,
}


@pytest.fixture
def signed(request: pytest.FixtureRequest, make: Any) -> Any:
    def build(alg: str) -> tuple[Settings, str, Any]:
        fixture = TAMPER_SIGNERS[alg]
        if fixture is None:
            settings = make(algorithms=["HS256"], keys=[Key.from_secret(SECRET, kid="k")])
            return settings, mint(SECRET, alg=alg, kid="k"), SECRET
        private_key = request.getfixturevalue(fixture)
        settings = make(keys=[Key.from_pem(pem(private_key), kid="k")])
        return settings, mint(private_key, alg=alg, kid="k"), private_key

    return build


@pytest.mark.parametrize("alg", list(TAMPER_SIGNERS))
def test_modified_payload(alg: str, signed: Any) -> None:
    """A payload changed after signing is signature_invalid for every algorithm."""
    settings, token, _ = signed(alg)
    h, _, s = token.split(".")
    assert accept(settings, token)
    refuse(settings, f"{h}.{segment(claims(sub='admin'))}.{s}", Reason.SIGNATURE_INVALID)


@pytest.mark.parametrize("alg", list(TAMPER_SIGNERS))
def test_modified_header(alg: str, signed: Any) -> None:
    """A header changed after signing is signature_invalid; an unparsable one malformed_header."""
    settings, token, _ = signed(alg)
    _, p, s = token.split(".")
    header = {"alg": alg, "kid": "k", "typ": "JWT", "x": 1}
    refuse(settings, f"{segment(header)}.{p}.{s}", Reason.SIGNATURE_INVALID)
    refuse(settings, f"{segment(b'{oops')}.{p}.{s}", Reason.MALFORMED_HEADER)


@pytest.mark.parametrize("alg", list(TAMPER_SIGNERS))
@pytest.mark.parametrize(
    "how", ["flip-first", "flip-middle", "flip-last", "truncate", "extend", "zeros", "empty-ish"]
)
def test_modified_signature(alg: str, how: str, signed: Any) -> None:
    """A flipped, truncated, extended, zeroed or one-byte signature is signature_invalid."""
    settings, token, _ = signed(alg)
    h, p, s = token.split(".")
    sig = bytearray(b64d(s))
    if how == "flip-first":
        sig[0] ^= 0x01
    elif how == "flip-middle":
        sig[len(sig) // 2] ^= 0x80
    elif how == "flip-last":
        sig[-1] ^= 0x01
    elif how == "truncate":
        sig = sig[:-1]
    elif how == "extend":
        sig = sig + b"\x00"
    elif how == "zeros":
        sig = bytearray(len(sig))
    else:
        sig = bytearray(b"\x00")
    refuse(settings, f"{h}.{p}.{b64e(bytes(sig))}", Reason.SIGNATURE_INVALID)


def test_signature_by_other_key_same_kid(rsa_priv2: Any, make: Any) -> None:
    """A token signed by another RSA key under our kid is signature_invalid."""
    refuse(make(), mint(rsa_priv2), Reason.SIGNATURE_INVALID)


@pytest.mark.parametrize(
    ("fixture", "alg"), [("ec256", "ES256"), ("ec384", "ES384"), ("ec521", "ES512")]
)
def test_ecdsa_der_signature_refused(
    fixture: str, alg: str, request: pytest.FixtureRequest, make: Any
) -> None:
    """A genuine ECDSA signature in DER form instead of raw r||s is signature_invalid."""
    private_key = request.getfixturevalue(fixture)
    settings = make(algorithms=[alg], keys=[Key.from_pem(pem(private_key), kid="k")])
    token = mint(private_key, alg=alg, kid="k")
    h, p, s = token.split(".")
    raw = b64d(s)
    width = len(raw) // 2
    r, s_ = int.from_bytes(raw[:width], "big"), int.from_bytes(raw[width:], "big")
    der = encode_dss_signature(r, s_)
    digests: dict[str, hashes.HashAlgorithm] = {
        "ES256": hashes.SHA256(),
        "ES384": hashes.SHA384(),
        "ES512": hashes.SHA512(),
    }
    digest = digests[alg]
    private_key.public_key().verify(der, f"{h}.{p}".encode(), ec.ECDSA(digest))  # DER is genuine
    refuse(settings, f"{h}.{p}.{b64e(der)}", Reason.SIGNATURE_INVALID)


@pytest.mark.parametrize("which", ["r", "s", "both"])
def test_ecdsa_zero_r_or_s(which: str, ec256: Any, make: Any) -> None:
    """An ES256 signature with r, s or both zero is signature_invalid."""
    settings = make(keys=[Key.from_pem(pem(ec256), kid="k")])
    h, p, s = mint(ec256, alg="ES256", kid="k").split(".")
    raw = b64d(s)
    r_part, s_part = raw[:32], raw[32:]
    if which in ("r", "both"):
        r_part = bytes(32)
    if which in ("s", "both"):
        s_part = bytes(32)
    refuse(settings, f"{h}.{p}.{b64e(r_part + s_part)}", Reason.SIGNATURE_INVALID)


@pytest.mark.parametrize("which", ["r", "s"])
def test_ecdsa_component_equal_to_group_order(which: str, ec256: Any, make: Any) -> None:
    """An ES256 signature with r or s equal to the P-256 group order is signature_invalid."""
    order = 0xFFFFFFFF00000000FFFFFFFFFFFFFFFFBCE6FAADA7179E84F3B9CAC2FC632551  # P-256 n
    settings = make(keys=[Key.from_pem(pem(ec256), kid="k")])
    h, p, s = mint(ec256, alg="ES256", kid="k").split(".")
    raw = b64d(s)
    n = order.to_bytes(32, "big")
    sig = n + raw[32:] if which == "r" else raw[:32] + n
    refuse(settings, f"{h}.{p}.{b64e(sig)}", Reason.SIGNATURE_INVALID)


def test_rsa_signature_with_extra_leading_zero(rsa_priv: Any, make: Any) -> None:
    """An RSA signature with a leading zero byte added (or stripped) is signature_invalid."""
    h, p, s = mint(rsa_priv).split(".")
    raw = b64d(s)
    assert len(raw) == 256
    padded = b"\x00" + raw
    refuse(make(), f"{h}.{p}.{b64e(padded)}", Reason.SIGNATURE_INVALID)
    # same integer, stripped of its leading byte when it is zero, is also not the JWS form
    if raw[0] == 0:
        refuse(make(), f"{h}.{p}.{b64e(raw[1:])}", Reason.SIGNATURE_INVALID)


def test_signature_of_other_alg_same_key_refused(rsa_priv: Any, make: Any) -> None:
    # a PS256 signature presented as RS256 (header says RS256)
    """A PS256 signature under an RS256 header, same key, is signature_invalid."""
    head, body = segment(rs_header()), segment(claims())
    pss = sign("PS256", rsa_priv, f"{head}.{body}".encode())
    refuse(make(), f"{head}.{body}.{b64e(pss)}", Reason.SIGNATURE_INVALID)


# == error text hygiene ======================================================================


def test_error_text_never_contains_the_token(rsa_priv: Any, rsa_priv2: Any, make: Any) -> None:
    """No refusal's str, detail, repr or args contain the token, its payload or its signature."""
    cases = {
        Reason.SIGNATURE_INVALID: mint(rsa_priv2),
        Reason.EXPIRED: mint(rsa_priv, claims(exp=NOW - 3600)),
        Reason.AUDIENCE_MISMATCH: mint(rsa_priv, claims(aud="x")),
        Reason.ISSUER_MISMATCH: mint(rsa_priv, claims(iss="https://evil.example")),
        Reason.KID_UNKNOWN: mint(rsa_priv, kid="unknown"),
        Reason.MALFORMED_HEADER: forge(b"{oops", claims(), rsa_priv),
        Reason.MALFORMED_PAYLOAD: forge(rs_header(), b"[1]", rsa_priv),
        Reason.CLAIM_INVALID: mint(rsa_priv, claims(sub=1)),
        Reason.TOKEN_TOO_LARGE: mint(rsa_priv, claims(pad="p" * 9000)),
    }
    for reason, token in cases.items():
        exc = refuse(make(), token, reason)
        _, payload, signature = token.split(".")
        for text in (str(exc), exc.detail, repr(exc), *map(str, exc.args)):
            assert token not in text
            assert signature not in text
            assert payload not in text


# == defence in depth =========================================================================


def test_an_unexpected_error_inside_the_verifier_refuses_instead_of_escaping(
    make: Any, rsa_priv: rsa.RSAPrivateKey, monkeypatch: pytest.MonkeyPatch, caplog: Any
) -> None:
    # No known input triggers a bug today; simulate one to prove the request is refused
    # (fail closed) and the bug is logged, rather than a 500 with a traceback.
    """A bug inside the verifier refuses the token as verifier_error (sync and async) and is
    logged without the token."""
    from jwt_middleware import _flow

    def broken(self: Any, claims: Any, now: float) -> None:
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(_flow.Trusted, "check_claims", broken)
    token = jwt.encode(claims(), rsa_priv, algorithm="RS256", headers={"kid": KID})
    with caplog.at_level(logging.ERROR, logger="jwt_middleware"):
        refuse(make(), token, "verifier_error")
        with pytest.raises(InvalidToken) as info:
            asyncio.run(AsyncVerifier(make()).verify(token))
    assert info.value.reason == "verifier_error"
    assert any("unexpected error" in r.getMessage() for r in caplog.records)
    assert all(token not in r.getMessage() for r in caplog.records)
