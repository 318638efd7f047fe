"""Key parsing (JWK / PEM / secret), the algorithms each key is bound to, and KeySet lookup."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import logging
import secrets
from collections.abc import Callable
from collections.abc import Set as AbstractSet
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    get_default_algorithms,
)

from jwt_middleware import (
    ConfigurationError,
    InvalidToken,
    Key,
    KeySet,
    Reason,
    Settings,
    SyncVerifier,
    UnusableKey,
    _keys,
)
from jwt_middleware.testing import LocalIssuer

WYCHEPROOF = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"  # vendored
RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})


# -- helpers ----------------------------------------------------------------------------------


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def uint(value: int, length: int | None = None) -> str:
    length = length or (value.bit_length() + 7) // 8
    return b64e(value.to_bytes(length, "big"))


def rsa_jwk(private_key: rsa.RSAPrivateKey, **extra: Any) -> dict[str, Any]:
    numbers = private_key.public_key().public_numbers()
    return {"kty": "RSA", "n": uint(numbers.n), "e": uint(numbers.e), **extra}


def rsa_private_jwk(private_key: rsa.RSAPrivateKey) -> dict[str, Any]:
    p = private_key.private_numbers()
    return {
        **rsa_jwk(private_key),
        "d": uint(p.d),
        "p": uint(p.p),
        "q": uint(p.q),
        "dp": uint(p.dmp1),
        "dq": uint(p.dmq1),
        "qi": uint(p.iqmp),
    }


CURVES = {"P-256": (ec.SECP256R1, 32), "P-384": (ec.SECP384R1, 48), "P-521": (ec.SECP521R1, 66)}


def ec_jwk(private_key: ec.EllipticCurvePrivateKey, **extra: Any) -> dict[str, Any]:
    numbers = private_key.public_key().public_numbers()
    crv = {256: "P-256", 384: "P-384", 521: "P-521"}[private_key.curve.key_size]
    size = CURVES[crv][1]
    return {
        "kty": "EC",
        "crv": crv,
        "x": uint(numbers.x, size),
        "y": uint(numbers.y, size),
        **extra,
    }


def raw_public(private_key: Any) -> bytes:
    raw: bytes = private_key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    return raw


def public_pem(private_key: Any, fmt: Any = None) -> bytes:
    fmt = fmt or serialization.PublicFormat.SubjectPublicKeyInfo
    pem: bytes = private_key.public_key().public_bytes(serialization.Encoding.PEM, fmt)
    return pem


def verifies(key: Key, private_key: Any, alg: str) -> bool:
    token = jwt.encode({"sub": "x"}, private_key, algorithm=alg)
    head, body, sig = token.split(".")
    signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
    return key.verify(alg, f"{head}.{body}".encode(), signature)


@pytest.fixture(scope="module")
def rsa_priv() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def rsa_1024() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=1024)


@pytest.fixture(scope="module", params=list(CURVES))
def ec_pair(request: pytest.FixtureRequest) -> tuple[str, ec.EllipticCurvePrivateKey]:
    return request.param, ec.generate_private_key(CURVES[request.param][0]())


# == from_jwk: parsing =======================================================================


def test_rsa_jwk(rsa_priv: rsa.RSAPrivateKey) -> None:
    """An RSA public JWK gives a 2048-bit key for all RS*/PS* algorithms and nothing else."""
    key = Key.from_jwk(rsa_jwk(rsa_priv, kid="r1", use="sig"))
    assert (key.kid, key.kty, key.size, key.crv) == ("r1", "RSA", 2048, None)
    assert key.algorithms == RSA_ALGS
    assert verifies(key, rsa_priv, "RS256") and verifies(key, rsa_priv, "PS512")
    assert not key.verify("HS256", b"a.b", b"x" * 32)
    assert not key.verify("ES256", b"a.b", b"x" * 64)


def test_rsa_jwk_with_alg_is_bound(rsa_priv: rsa.RSAPrivateKey) -> None:
    """An RSA JWK with alg=PS384 verifies PS384 only, not RS256."""
    key = Key.from_jwk(rsa_jwk(rsa_priv, alg="PS384"))
    assert key.algorithms == {"PS384"}
    assert verifies(key, rsa_priv, "PS384")
    assert not verifies(key, rsa_priv, "RS256")


def test_ec_jwk(ec_pair: tuple[str, ec.EllipticCurvePrivateKey]) -> None:
    """An EC JWK on P-256/384/521 is bound to ES256/384/512, the algorithm of its curve."""
    crv, private_key = ec_pair
    alg = {"P-256": "ES256", "P-384": "ES384", "P-521": "ES512"}[crv]
    key = Key.from_jwk(ec_jwk(private_key, kid="e"))
    assert (key.kty, key.crv, key.algorithms) == ("EC", crv, frozenset({alg}))
    assert verifies(key, private_key, alg)


def test_ec_secp256k1_jwk() -> None:
    """An EC JWK on secp256k1 is bound to ES256K."""
    private_key = ec.generate_private_key(ec.SECP256K1())
    n = private_key.public_key().public_numbers()
    key = Key.from_jwk({"kty": "EC", "crv": "secp256k1", "x": uint(n.x, 32), "y": uint(n.y, 32)})
    assert key.algorithms == {"ES256K"}


def test_okp_ed25519_and_ed448() -> None:
    """OKP JWKs on Ed25519 and Ed448 are EdDSA keys that verify their own signatures only."""
    priv25519 = ed25519.Ed25519PrivateKey.generate()
    key = Key.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64e(raw_public(priv25519))})
    assert (key.kty, key.crv, key.algorithms) == ("OKP", "Ed25519", frozenset({"EdDSA"}))
    assert verifies(key, priv25519, "EdDSA")
    priv448 = ed448.Ed448PrivateKey.generate()
    key448 = Key.from_jwk({"kty": "OKP", "crv": "Ed448", "x": b64e(raw_public(priv448))})
    assert key448.algorithms == {"EdDSA"}
    message = b"head.body"
    assert key448.verify("EdDSA", message, priv448.sign(message))
    assert not key448.verify("EdDSA", message, priv25519.sign(message))


@pytest.mark.parametrize(
    ("length", "algs"),
    [
        (32, {"HS256"}),
        (47, {"HS256"}),
        (48, {"HS256", "HS384"}),
        (64, {"HS256", "HS384", "HS512"}),
        (100, {"HS256", "HS384", "HS512"}),
    ],
)
def test_oct_jwk_allowed_when_symmetric(length: int, algs: AbstractSet[str]) -> None:
    """With allow_symmetric an oct JWK is accepted for each HS* whose minimum length it meets."""
    secret = bytes(range(length))
    key = Key.from_jwk({"kty": "oct", "k": b64e(secret), "kid": "h"}, allow_symmetric=True)
    assert (key.kty, key.algorithms, key.size) == ("oct", algs, length * 8)
    token = jwt.encode({"a": 1}, secret, algorithm="HS256")
    head, body, sig = token.split(".")
    assert key.verify("HS256", f"{head}.{body}".encode(), base64.urlsafe_b64decode(sig + "="))


def test_oct_jwk_refused_by_default() -> None:
    """An oct JWK is refused as symmetric unless allow_symmetric is given."""
    with pytest.raises(UnusableKey, match="symmetric"):
        Key.from_jwk({"kty": "oct", "k": b64e(b"k" * 32)})


# == from_jwk: refusals ======================================================================


@pytest.mark.parametrize("member", ["d", "p", "q", "dp", "dq", "qi", "oth"])
def test_rsa_private_member_refused(member: str, rsa_priv: rsa.RSAPrivateKey) -> None:
    """An RSA JWK holding any private member (d, p, q, dp, dq, qi, oth) is refused as private."""
    full = rsa_private_jwk(rsa_priv)
    jwk = {**rsa_jwk(rsa_priv), member: full.get(member, [{"r": "AQ", "d": "AQ", "t": "AQ"}])}
    with pytest.raises(UnusableKey, match="private"):
        Key.from_jwk(jwk)


def test_full_rsa_private_jwk_refused(rsa_priv: rsa.RSAPrivateKey) -> None:
    """A complete RSA private JWK is refused as private."""
    with pytest.raises(UnusableKey, match="private"):
        Key.from_jwk(rsa_private_jwk(rsa_priv))


def test_ec_and_okp_private_refused(ec_pair: tuple[str, ec.EllipticCurvePrivateKey]) -> None:
    """EC and OKP JWKs holding the private member d are refused as private."""
    _, private_key = ec_pair
    d = private_key.private_numbers().private_value
    with pytest.raises(UnusableKey, match="private"):
        Key.from_jwk({**ec_jwk(private_key), "d": uint(d)})
    ed_priv = ed25519.Ed25519PrivateKey.generate()
    d_raw = ed_priv.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    with pytest.raises(UnusableKey, match="private"):
        Key.from_jwk(
            {"kty": "OKP", "crv": "Ed25519", "x": b64e(raw_public(ed_priv)), "d": b64e(d_raw)}
        )


@pytest.mark.parametrize("use", ["enc", "SIG", "", 1])
def test_use_other_than_sig_refused(use: Any, rsa_priv: rsa.RSAPrivateKey) -> None:
    """A JWK whose use is not exactly "sig" (enc, SIG, empty, a number) is refused."""
    with pytest.raises(UnusableKey, match="use"):
        Key.from_jwk(rsa_jwk(rsa_priv, use=use))


@pytest.mark.parametrize(
    ("key_ops", "ok"),
    [
        (["verify"], True),
        (["sign", "verify"], True),
        (["sign"], False),
        (["encrypt", "decrypt"], False),
        ([], False),
        ("verify", False),  # must be an array
        ({"verify": True}, False),
    ],
)
def test_key_ops(key_ops: Any, ok: bool, rsa_priv: rsa.RSAPrivateKey) -> None:
    """key_ops must be a list holding "verify"; anything else is refused."""
    jwk = rsa_jwk(rsa_priv, key_ops=key_ops)
    if ok:
        assert Key.from_jwk(jwk).algorithms == RSA_ALGS
    else:
        with pytest.raises(UnusableKey, match="key_ops"):
            Key.from_jwk(jwk)


def test_key_ops_on_oct_keys_checked_too() -> None:
    """An oct JWK with key_ops ["encrypt"] is refused too."""
    jwk = {"kty": "oct", "k": b64e(b"k" * 32), "key_ops": ["encrypt"]}
    with pytest.raises(UnusableKey, match="key_ops"):
        Key.from_jwk(jwk, allow_symmetric=True)


@pytest.mark.parametrize(
    ("crv", "alg"),
    [
        ("P-384", "ES256"),
        ("P-256", "ES384"),
        ("P-256", "ES224"),
        ("P-256", "ES512"),
        ("P-256", "ES256K"),
        ("P-256", "RS256"),
        ("P-256", "HS256"),
        ("P-256", "EdDSA"),
        ("P-256", "ES521"),  # the alias only fits P-521
        ("P-521", "ES256"),
    ],
)
def test_ec_jwk_alg_must_fit_curve(crv: str, alg: str) -> None:
    """An EC JWK whose alg does not fit its curve is refused (ES521 only fits P-521)."""
    private_key = ec.generate_private_key(CURVES[crv][0]())
    with pytest.raises(UnusableKey, match="fit"):
        Key.from_jwk(ec_jwk(private_key, alg=alg))


@pytest.mark.parametrize("alg", ["HS256", "ES256", "EdDSA", "none", "RS1024", "rs256"])
def test_rsa_jwk_alg_must_fit(alg: str, rsa_priv: rsa.RSAPrivateKey) -> None:
    """An RSA JWK whose alg is not an RS*/PS* name (exact case) is refused."""
    with pytest.raises(UnusableKey, match="fit"):
        Key.from_jwk(rsa_jwk(rsa_priv, alg=alg))


@pytest.mark.parametrize("alg", [256, ["RS256"], {"a": 1}])
def test_jwk_alg_not_a_string(alg: Any, rsa_priv: rsa.RSAPrivateKey) -> None:
    """A JWK whose alg is not a string is refused."""
    with pytest.raises(UnusableKey, match="alg"):
        Key.from_jwk(rsa_jwk(rsa_priv, alg=alg))


def test_okp_alg_must_be_eddsa() -> None:
    """An Ed25519 JWK is accepted with alg EdDSA and refused with ES256."""
    x = b64e(raw_public(ed25519.Ed25519PrivateKey.generate()))
    assert Key.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "EdDSA"})
    with pytest.raises(UnusableKey):
        Key.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": x, "alg": "ES256"})


def test_oct_alg_must_be_hs() -> None:
    """An oct JWK with alg RS256 is refused."""
    with pytest.raises(UnusableKey):
        Key.from_jwk({"kty": "oct", "k": b64e(b"k" * 32), "alg": "RS256"}, allow_symmetric=True)


def test_alias_es521_means_es512_on_p521() -> None:
    """alg ES521 on a P-521 JWK is read as ES512."""
    private_key = ec.generate_private_key(ec.SECP521R1())
    key = Key.from_jwk(ec_jwk(private_key, alg="ES521"))
    assert key.algorithms == {"ES512"}
    assert verifies(key, private_key, "ES512")
    assert Key.from_jwk(ec_jwk(private_key, alg="ES512")).algorithms == {"ES512"}


def test_rsa_1024_refused(rsa_1024: rsa.RSAPrivateKey) -> None:
    """A 1024-bit RSA key is refused from a JWK, a PEM and a key object alike (2048 minimum)."""
    with pytest.raises(UnusableKey, match="2048"):
        Key.from_jwk(rsa_jwk(rsa_1024))
    with pytest.raises(UnusableKey, match="2048"):
        Key.from_pem(public_pem(rsa_1024))
    with pytest.raises(UnusableKey, match="2048"):
        Key.from_public_key(rsa_1024.public_key())


@pytest.mark.parametrize("e", [1, 2, 4, 65536, 65538])
def test_rsa_bad_exponent_refused(e: int, rsa_priv: rsa.RSAPrivateKey) -> None:
    """RSA exponents 1, 2, 4, 65536 and 65538 are refused."""
    jwk = {**rsa_jwk(rsa_priv), "e": uint(e)}
    with pytest.raises(UnusableKey, match="exponent"):
        Key.from_jwk(jwk)


def test_rsa_exponent_3_accepted(rsa_priv: rsa.RSAPrivateKey) -> None:
    """The RSA exponent 3 is accepted."""
    assert Key.from_jwk({**rsa_jwk(rsa_priv), "e": uint(3)}).algorithms == RSA_ALGS


def test_rsa_zero_length_members_refused(rsa_priv: rsa.RSAPrivateKey) -> None:
    """An RSA JWK with an empty n or e is refused."""
    with pytest.raises(UnusableKey):
        Key.from_jwk({**rsa_jwk(rsa_priv), "e": ""})
    with pytest.raises(UnusableKey):
        Key.from_jwk({**rsa_jwk(rsa_priv), "n": ""})


def test_ec_point_not_on_curve_refused(ec_pair: tuple[str, ec.EllipticCurvePrivateKey]) -> None:
    """An EC JWK whose point is not on its curve is refused."""
    crv, private_key = ec_pair
    numbers = private_key.public_key().public_numbers()
    size = CURVES[crv][1]
    jwk = {**ec_jwk(private_key), "y": uint(numbers.y ^ 1, size)}
    with pytest.raises(UnusableKey):
        Key.from_jwk(jwk)


def test_ec_coordinate_wrong_length_refused(
    ec_pair: tuple[str, ec.EllipticCurvePrivateKey],
) -> None:
    """EC coordinates must have exactly the curve's length: a leading zero byte or a short
    encoding is refused."""
    crv, private_key = ec_pair
    numbers = private_key.public_key().public_numbers()
    size = CURVES[crv][1]
    good = ec_jwk(private_key)
    assert Key.from_jwk(good)
    for member, value in (("x", numbers.x), ("y", numbers.y)):
        with pytest.raises(UnusableKey, match="length"):
            Key.from_jwk({**good, member: uint(value, size + 1)})  # leading zero byte
    # a short (minimal) encoding is refused too, whenever the top byte is zero
    short = private_key
    while short.public_key().public_numbers().x.bit_length() > (size - 1) * 8:
        short = ec.generate_private_key(CURVES[crv][0]())
    x = short.public_key().public_numbers().x
    with pytest.raises(UnusableKey, match="length"):
        Key.from_jwk({**ec_jwk(short), "x": uint(x)})


@pytest.mark.parametrize("crv", ["P-192", "P-224", "X25519", "Ed25519", None, ["P-256"]])
def test_ec_unsupported_curve_refused(crv: Any) -> None:
    """An EC JWK whose crv is P-192, P-224, X25519, Ed25519, None or a list is refused."""
    private_key = ec.generate_private_key(ec.SECP256R1())
    with pytest.raises(UnusableKey):
        Key.from_jwk({**ec_jwk(private_key), "crv": crv})


@pytest.mark.parametrize("crv", ["X25519", "X448", "P-256", None])
def test_okp_unsupported_curve_refused(crv: Any) -> None:
    """An OKP JWK on X25519, X448, P-256 or no curve is refused."""
    x = b64e(raw_public(ed25519.Ed25519PrivateKey.generate()))
    with pytest.raises(UnusableKey):
        Key.from_jwk({"kty": "OKP", "crv": crv, "x": x})


def test_okp_wrong_length_refused() -> None:
    """An Ed25519 public key one byte short or long is refused."""
    x = raw_public(ed25519.Ed25519PrivateKey.generate())
    for bad in (x[:-1], x + b"\x00"):
        with pytest.raises(UnusableKey):
            Key.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64e(bad)})


def _corrupt(value: str, how: str) -> str:
    """Spellings a lax base64 decoder would still accept (standard alphabet, padding, junk)."""
    i = len(value) // 2
    return {
        "plus": value[:i] + "+" + value[i + 1 :],
        "slash": value[:i] + "/" + value[i + 1 :],
        "padding": value + "=" * (-len(value) % 4 or 4),
        "space": value[:i] + " " + value[i:],
        "question": value[:i] + "?" + value[i:],
    }[how]


@pytest.mark.parametrize("how", ["plus", "slash", "padding", "space", "question"])
@pytest.mark.parametrize("member", ["n", "e"])
def test_rsa_non_base64url_members_refused(
    how: str, member: str, rsa_priv: rsa.RSAPrivateKey
) -> None:
    """RSA n or e in standard base64, padded, or with a space or '?' inside is refused."""
    jwk = rsa_jwk(rsa_priv)
    assert jwk["e"] == "AQAB"  # "AQ+B" (69505), "AQ?AB" etc. would be fine to a lax decoder
    with pytest.raises(UnusableKey):
        Key.from_jwk({**jwk, member: _corrupt(jwk[member], how)})


@pytest.mark.parametrize("how", ["plus", "slash", "padding", "space", "question"])
@pytest.mark.parametrize("member", ["x", "y"])
def test_ec_non_base64url_members_refused(how: str, member: str) -> None:
    """EC x or y in standard base64, padded, or with a space or '?' inside is refused."""
    jwk = ec_jwk(ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(UnusableKey):
        Key.from_jwk({**jwk, member: _corrupt(jwk[member], how)})


@pytest.mark.parametrize("how", ["plus", "slash", "padding", "space", "question"])
def test_oct_non_base64url_refused(how: str) -> None:
    """An oct k in standard base64, padded, or with a space or '?' inside is refused."""
    with pytest.raises(UnusableKey):
        Key.from_jwk({"kty": "oct", "k": _corrupt(b64e(b"k" * 40), how)}, allow_symmetric=True)


@pytest.mark.parametrize("member", ["n", "e"])
@pytest.mark.parametrize("value", [None, 65537, ["AQAB"]])
def test_rsa_missing_or_non_string_member_refused(
    member: str, value: Any, rsa_priv: rsa.RSAPrivateKey
) -> None:
    """An RSA JWK with n or e missing or not a string is refused, naming the member."""
    jwk = rsa_jwk(rsa_priv)
    if value is None:
        del jwk[member]
    else:
        jwk[member] = value
    with pytest.raises(UnusableKey, match=member):
        Key.from_jwk(jwk)


@pytest.mark.parametrize("jwk", [[], "RSA", None, 1])
def test_jwk_not_an_object(jwk: Any) -> None:
    """A JWK that is not a JSON object is refused."""
    with pytest.raises(UnusableKey):
        Key.from_jwk(jwk)


@pytest.mark.parametrize("kty", ["rsa", "ec", "OCT", None, "", "AKP"])
def test_unsupported_kty(kty: Any, rsa_priv: rsa.RSAPrivateKey) -> None:
    """kty values other than RSA, EC, OKP, oct (exact case) are refused."""
    with pytest.raises(UnusableKey):
        Key.from_jwk({**rsa_jwk(rsa_priv), "kty": kty}, allow_symmetric=True)


@pytest.mark.parametrize("kid", [1, ["a"], {"a": 1}])
def test_kid_must_be_a_string(kid: Any, rsa_priv: rsa.RSAPrivateKey) -> None:
    """A JWK whose kid is not a string is refused."""
    with pytest.raises(UnusableKey, match="kid"):
        Key.from_jwk(rsa_jwk(rsa_priv, kid=kid))


# == the policy on top of PyJWT's from_jwk =================================================


def _lax_jwks(rsa_priv: rsa.RSAPrivateKey, rsa_1024: rsa.RSAPrivateKey) -> dict[str, Any]:
    """JWKs PyJWT's from_jwk loads but our policy refuses: (jwk, what the refusal says)."""
    ec_priv = ec.generate_private_key(ec.SECP256R1())
    ed_priv = ed25519.Ed25519PrivateKey.generate()
    ed_jwk = {"kty": "OKP", "crv": "Ed25519", "x": b64e(raw_public(ed_priv))}
    d_raw = ed_priv.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    n = rsa_priv.public_key().public_numbers().n
    rsa_good, ec_good = rsa_jwk(rsa_priv), ec_jwk(ec_priv)

    def stray(value: str) -> str:  # four, so PyJWT's padding arithmetic still comes out right
        return value[:8] + "?!*~" + value[8:]

    return {
        "rsa-n-padded": ({**rsa_good, "n": _corrupt(rsa_good["n"], "padding")}, "base64url"),
        "rsa-n-stray-char": ({**rsa_good, "n": stray(rsa_good["n"])}, "base64url"),
        "ec-x-padded": ({**ec_good, "x": _corrupt(ec_good["x"], "padding")}, "base64url"),
        "ec-y-stray-char": ({**ec_good, "y": stray(ec_good["y"])}, "base64url"),
        "okp-x-padded": ({**ed_jwk, "x": _corrupt(ed_jwk["x"], "padding")}, "base64url"),
        "rsa-private": (rsa_private_jwk(rsa_priv), "private"),
        "ec-private": (
            {**ec_good, "d": uint(ec_priv.private_numbers().private_value, 32)},
            "private",
        ),
        "okp-private": ({**ed_jwk, "d": b64e(d_raw)}, "private"),
        "rsa-1024": (rsa_jwk(rsa_1024), "at least 2048"),
        "rsa-65-bit-exponent": ({**rsa_good, "e": uint(2**64 + 1)}, "exponent"),
        "rsa-roca": (_roca_jwk(), "ROCA"),
        "rsa-too-large": ({**rsa_good, "n": uint(n << 15000 | 1)}, "at most 16384"),
        "use-enc": ({**rsa_good, "use": "enc"}, "use"),
        "key-ops-encrypt": ({**rsa_good, "key_ops": ["encrypt"]}, "key_ops"),
        "rsa-alg-hs256": ({**rsa_good, "alg": "HS256"}, "does not fit"),
        "ec-alg-of-another-curve": ({**ec_good, "alg": "ES384"}, "does not fit"),
    }


LAX_CASES = [
    "rsa-n-padded",
    "rsa-n-stray-char",
    "ec-x-padded",
    "ec-y-stray-char",
    "okp-x-padded",
    "rsa-private",
    "ec-private",
    "okp-private",
    "rsa-1024",
    "rsa-65-bit-exponent",
    "rsa-roca",
    "rsa-too-large",
    "use-enc",
    "key-ops-encrypt",
    "rsa-alg-hs256",
    "ec-alg-of-another-curve",
]


@pytest.mark.parametrize("case", LAX_CASES)
def test_jwks_pyjwt_would_load_are_refused_by_our_policy(
    case: str, rsa_priv: rsa.RSAPrivateKey, rsa_1024: rsa.RSAPrivateKey
) -> None:
    """PyJWT's from_jwk loads each of these (lenient base64url, private keys, no RSA bounds,
    use/key_ops/alg unread); Key.from_jwk, which hands JWKs to it, refuses them first."""
    jwk, refusal = _lax_jwks(rsa_priv, rsa_1024)[case]
    loaders: dict[str, type[Algorithm]] = {
        "RSA": RSAAlgorithm,
        "EC": ECAlgorithm,
        "OKP": OKPAlgorithm,
    }
    loader = loaders[jwk["kty"]]
    assert loader.from_jwk(dict(jwk)) is not None  # PyJWT alone: loaded, no complaint
    with pytest.raises(UnusableKey, match=refusal):
        Key.from_jwk(jwk)


def test_pyjwt_prepares_a_key_once_not_per_verification(
    monkeypatch: pytest.MonkeyPatch, rsa_priv: rsa.RSAPrivateKey
) -> None:
    """PyJWT's prepare_key runs when the Key is built; verifying a token never repeats it."""
    prepared: list[object] = []
    algorithms = get_default_algorithms()
    for alg in ("RS256", "EdDSA", "HS256"):
        algorithm = _keys._ALGORITHMS[alg]
        real = algorithm.prepare_key

        def spy(key: Any, real: Callable[[Any], Any] = real) -> Any:
            prepared.append(key)
            return real(key)

        monkeypatch.setattr(algorithm, "prepare_key", spy)
        assert type(algorithm) is type(algorithms[alg])  # PyJWT's own algorithm object
    ed_priv = ed25519.Ed25519PrivateKey.generate()
    rsa_key = Key.from_jwk(rsa_jwk(rsa_priv, alg="RS256"))
    ed_key = Key.from_jwk({"kty": "OKP", "crv": "Ed25519", "x": b64e(raw_public(ed_priv))})
    assert len(prepared) == 2  # the HMAC secret needs no preparing (see _make_verifier)
    for _ in range(20):
        assert verifies(rsa_key, rsa_priv, "RS256")
        assert verifies(ed_key, ed_priv, "EdDSA")
    assert len(prepared) == 2


# == HMAC secrets ============================================================================


@pytest.mark.parametrize(("alg", "need"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_hmac_minimum_length(alg: str, need: int) -> None:
    """HS256/384/512 secrets need 32/48/64 bytes, from from_secret and oct JWKs alike."""
    short, enough = bytes(need - 1), b"s" * need
    with pytest.raises(UnusableKey, match=str(need)):
        Key.from_secret(short, alg=alg)
    with pytest.raises(UnusableKey):
        Key.from_jwk({"kty": "oct", "k": b64e(short), "alg": alg}, allow_symmetric=True)
    assert Key.from_secret(enough, alg=alg).algorithms == {alg}
    assert Key.from_jwk(
        {"kty": "oct", "k": b64e(enough), "alg": alg}, allow_symmetric=True
    ).algorithms == {alg}


def test_from_secret_defaults_to_hs256() -> None:
    """from_secret binds to HS256 by default and refuses secrets under 32 bytes."""
    assert Key.from_secret("s" * 64).algorithms == {"HS256"}
    with pytest.raises(UnusableKey):
        Key.from_secret("s" * 31)
    with pytest.raises(UnusableKey):
        Key.from_secret(b"")


@pytest.mark.parametrize(
    ("length", "algs"),
    [
        (32, {"HS256"}),
        (48, {"HS256", "HS384"}),
        (63, {"HS256", "HS384"}),
        (64, {"HS256", "HS384", "HS512"}),
    ],
)
def test_from_secret_alg_none_picks_fitting(length: int, algs: set[str]) -> None:
    """from_secret with alg=None allows every HS* the secret's length is enough for."""
    assert Key.from_secret(b"s" * length, alg=None).algorithms == algs


def test_from_secret_alg_none_too_short() -> None:
    """from_secret with alg=None refuses a 31-byte secret."""
    with pytest.raises(UnusableKey):
        Key.from_secret(b"s" * 31, alg=None)


def test_from_secret_asymmetric_alg_refused() -> None:
    """from_secret refuses an asymmetric alg such as RS256."""
    with pytest.raises(UnusableKey):
        Key.from_secret(b"s" * 64, alg="RS256")


def test_from_secret_counts_utf8_bytes() -> None:
    """A str secret is measured in UTF-8 bytes: 16 'é' are 32 bytes, enough for HS256."""
    secret = "é" * 16  # 16 characters, 32 bytes
    key = Key.from_secret(secret)
    message = b"h.p"
    assert key.verify("HS256", message, hmac.new(secret.encode(), message, hashlib.sha256).digest())


def test_hmac_verify_checks_the_mac() -> None:
    """An HMAC key verifies only the right MAC for the right message and algorithm."""
    key = Key.from_secret(b"s" * 64, alg=None)
    mac = hmac.new(b"s" * 64, b"h.p", hashlib.sha384).digest()
    assert key.verify("HS384", b"h.p", mac)
    assert not key.verify("HS384", b"h.q", mac)
    assert not key.verify("HS256", b"h.p", mac)
    assert not key.verify("HS384", b"h.p", mac[:-1])


# == from_pem ================================================================================


def test_from_pem_public_keys(rsa_priv: rsa.RSAPrivateKey) -> None:
    """from_pem reads SPKI and PKCS#1 RSA, EC and Ed25519 public keys, bound to their algorithms."""
    spki = Key.from_pem(public_pem(rsa_priv), kid="a")
    pkcs1 = Key.from_pem(public_pem(rsa_priv, serialization.PublicFormat.PKCS1).decode())
    assert spki.algorithms == pkcs1.algorithms == RSA_ALGS
    assert spki.kid == "a" and pkcs1.kid is None
    assert verifies(spki, rsa_priv, "RS256") and verifies(pkcs1, rsa_priv, "PS256")
    ec_priv = ec.generate_private_key(ec.SECP384R1())
    assert Key.from_pem(public_pem(ec_priv)).algorithms == {"ES384"}
    ed_priv = ed25519.Ed25519PrivateKey.generate()
    assert Key.from_pem(public_pem(ed_priv)).algorithms == {"EdDSA"}


def test_from_pem_alg_narrows(rsa_priv: rsa.RSAPrivateKey) -> None:
    """from_pem with alg narrows the key to it; an alg that does not fit is refused."""
    assert Key.from_pem(public_pem(rsa_priv), alg="RS384").algorithms == {"RS384"}
    with pytest.raises(UnusableKey):
        Key.from_pem(public_pem(rsa_priv), alg="HS256")


@pytest.mark.parametrize(
    "fmt", [serialization.PrivateFormat.PKCS8, serialization.PrivateFormat.TraditionalOpenSSL]
)
def test_from_pem_private_refused(fmt: Any, rsa_priv: rsa.RSAPrivateKey) -> None:
    """from_pem refuses RSA and EC private keys in PKCS#8 and traditional PEM, str or bytes."""
    for private_key in (rsa_priv, ec.generate_private_key(ec.SECP256R1())):
        data = private_key.private_bytes(
            serialization.Encoding.PEM, fmt, serialization.NoEncryption()
        )
        for form in (data, data.decode()):
            with pytest.raises(UnusableKey, match="private"):
                Key.from_pem(form)


def test_from_pem_encrypted_private_refused(rsa_priv: rsa.RSAPrivateKey) -> None:
    """from_pem refuses an encrypted private key as private."""
    data = rsa_priv.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.BestAvailableEncryption(b"pw"),
    )
    with pytest.raises(UnusableKey, match="private"):
        Key.from_pem(data)


@pytest.mark.parametrize(
    "data", [b"", b"not a pem", b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n"]
)
def test_from_pem_garbage(data: bytes) -> None:
    """from_pem refuses empty data, text that is not PEM and a PEM holding no key."""
    with pytest.raises(UnusableKey):
        Key.from_pem(data)


def test_from_public_key_unsupported() -> None:
    """from_public_key refuses X25519, P-224 and objects that are not keys."""
    from cryptography.hazmat.primitives.asymmetric import x25519

    with pytest.raises(UnusableKey):
        Key.from_public_key(x25519.X25519PrivateKey.generate().public_key())
    with pytest.raises(UnusableKey):
        Key.from_public_key(ec.generate_private_key(ec.SECP224R1()).public_key())
    with pytest.raises(UnusableKey):
        Key.from_public_key("not a key")


# == repr ====================================================================================


def test_repr_has_no_key_material(rsa_priv: rsa.RSAPrivateKey) -> None:
    """A Key's repr shows type, size and kid but no modulus or secret bytes in any encoding."""
    n = rsa_priv.public_key().public_numbers().n
    for key in (Key.from_pem(public_pem(rsa_priv), kid="r"), Key.from_jwk(rsa_jwk(rsa_priv))):
        text = repr(key)
        assert "RSA" in text and "2048" in text
        assert str(n)[:12] not in text
        assert format(n, "x")[:12] not in text
        assert rsa_jwk(rsa_priv)["n"][:12] not in text
    secret = "correct-horse-battery-staple-0123456789"
    text = repr(Key.from_secret(secret, kid="h"))
    assert secret not in text and secret[:8] not in text
    assert b64e(secret.encode())[:8] not in text
    assert "'h'" in text


# == KeySet ==================================================================================


def test_keyset_duplicate_kid_drops_both(
    rsa_priv: rsa.RSAPrivateKey, caplog: pytest.LogCaptureFixture
) -> None:
    """A KeySet drops both keys sharing a kid, with a warning; neither is found, with or
    without a kid."""
    ec_key = Key.from_jwk(ec_jwk(ec.generate_private_key(ec.SECP256R1()), kid="e"))
    with caplog.at_level(logging.WARNING, logger="jwt_middleware"):
        ks = KeySet(
            [
                Key.from_jwk(rsa_jwk(rsa_priv, kid="dup")),
                Key.from_jwk(ec_jwk(ec.generate_private_key(ec.SECP384R1()), kid="dup")),
                ec_key,
            ]
        )
    assert "dup" in caplog.text
    assert len(ks) == 1 and ks.kids == ["e"]
    assert "dup" not in ks and "e" in ks
    for kid, alg in (("dup", "RS256"), ("dup", "ES384"), (None, "RS256"), (None, "ES384")):
        with pytest.raises(InvalidToken) as info:
            ks.find(kid, alg)  # neither duplicate is reachable, with or without kid
        assert info.value.reason == Reason.KID_UNKNOWN
    assert ks.find("e", "ES256") is ec_key


def test_keyset_find(rsa_priv: rsa.RSAPrivateKey) -> None:
    """KeySet.find matches kid and alg: a kid's key of another alg is key_alg_mismatch,
    no key at all kid_unknown."""
    rsa_key = Key.from_jwk(rsa_jwk(rsa_priv, kid="r"))
    ec_key = Key.from_jwk(ec_jwk(ec.generate_private_key(ec.SECP256R1())))  # no kid
    ks = KeySet([rsa_key, ec_key])
    assert ks.find("r", "PS256") is rsa_key
    assert ks.find(None, "ES256") is ec_key
    assert ks.find(None, "RS256") is rsa_key
    cases = [
        (("r", "ES256"), Reason.KEY_ALG_MISMATCH),
        (("r", "HS256"), Reason.KEY_ALG_MISMATCH),
        (("x", "RS256"), Reason.KID_UNKNOWN),
        ((None, "EdDSA"), Reason.KID_UNKNOWN),
    ]
    for (kid, alg), reason in cases:
        with pytest.raises(InvalidToken) as info:
            ks.find(kid, alg)
        assert info.value.reason == reason


def test_keyset_find_ambiguous_without_kid(rsa_priv: rsa.RSAPrivateKey) -> None:
    """Without a kid, two keys fitting the algorithm make the lookup kid_ambiguous."""
    ks = KeySet([Key.from_jwk(rsa_jwk(rsa_priv, kid="a")), Key.from_jwk(rsa_jwk(rsa_priv))])
    with pytest.raises(InvalidToken) as info:
        ks.find(None, "RS256")
    assert info.value.reason == Reason.KID_AMBIGUOUS


def test_keyset_merged(rsa_priv: rsa.RSAPrivateKey) -> None:
    """merged() returns a new KeySet holding both sets' keys; the original is unchanged."""
    a = KeySet([Key.from_jwk(rsa_jwk(rsa_priv, kid="a"))])
    b = KeySet([Key.from_jwk(ec_jwk(ec.generate_private_key(ec.SECP256R1()), kid="b"))])
    merged = a.merged(b)
    assert sorted(merged.kids) == ["a", "b"] and len(a) == 1


@pytest.mark.parametrize(
    "document", [[], "keys", None, 1, {}, {"keys": {}}, {"keys": "a"}, {"keys": None}]
)
def test_from_jwks_not_a_jwks(document: Any) -> None:
    """from_jwks refuses a document that is not an object with a 'keys' list."""
    with pytest.raises(UnusableKey, match="JWK Set"):
        KeySet.from_jwks(document)


def test_from_jwks_mixing_symmetric_and_asymmetric(rsa_priv: rsa.RSAPrivateKey) -> None:
    """With allow_symmetric a JWKS mixing a secret and public keys is refused; without it, the
    secret is one problem and the public keys are kept."""
    doc = {"keys": [rsa_jwk(rsa_priv, kid="r"), {"kty": "oct", "k": b64e(b"k" * 32)}]}
    # where secrets are allowed, a set mixing them with public keys is refused outright
    with pytest.raises(UnusableKey, match="mixes"):
        KeySet.from_jwks(doc, allow_symmetric=True)
    # where they are not (remote JWKS), the secret is just an unusable key
    ks, problems = KeySet.from_jwks(doc, allow_symmetric=False)
    assert ks.kids == ["r"]
    assert len(problems) == 1 and "symmetric" in problems[0]


def test_from_jwks_keeps_good_keys_and_lists_problems(
    rsa_priv: rsa.RSAPrivateKey, rsa_1024: rsa.RSAPrivateKey
) -> None:
    """from_jwks keeps the usable keys and lists one problem per other entry (by kid or #index)."""
    doc = {
        "keys": [
            rsa_jwk(rsa_priv, kid="good"),
            {"kty": "AKP", "kid": "pq", "alg": "ML-DSA-44", "pub": "AAAA"},
            rsa_jwk(rsa_1024, kid="small"),
            rsa_jwk(rsa_priv, kid="enc", use="enc"),
            "not an object",
            {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"},
        ]
    }
    ks, problems = KeySet.from_jwks(doc)
    assert ks.kids == ["good"]
    assert len(problems) == 5
    text = "\n".join(problems)
    for marker in ("'pq'", "'small'", "'enc'", "#4", "#5"):
        assert marker in text


def test_from_jwks_symmetric_only_when_allowed() -> None:
    """from_jwks keeps an oct key only with allow_symmetric; else it is a problem."""
    doc = {"keys": [{"kty": "oct", "k": b64e(b"k" * 32), "kid": "h"}]}
    ks, problems = KeySet.from_jwks(doc)
    assert len(ks) == 0 and len(problems) == 1 and "symmetric" in problems[0]
    ks, problems = KeySet.from_jwks(doc, allow_symmetric=True)
    assert ks.kids == ["h"] and problems == []


def test_from_jwks_empty_keys() -> None:
    """An empty 'keys' list is an empty KeySet with no problems."""
    ks, problems = KeySet.from_jwks({"keys": []})
    assert len(ks) == 0 and problems == []


@pytest.mark.parametrize("kty", [["RSA"], {"kty": "RSA"}])
def test_from_jwks_unhashable_kty_is_a_problem(kty: Any, rsa_priv: rsa.RSAPrivateKey) -> None:
    """A JWK whose kty is a list or an object is one problem; the good keys are kept."""
    doc = {"keys": [rsa_jwk(rsa_priv, kid="good"), {"kty": kty, "kid": "odd"}]}
    ks, problems = KeySet.from_jwks(doc)
    assert ks.kids == ["good"] and len(problems) == 1


# == ROCA ====================================================================================


def _roca_jwk() -> dict[str, Any]:
    path = WYCHEPROOF / "json_web_key_test.json"
    data = json.loads(path.read_text())
    (group,) = [g for g in data["testGroups"] if g.get("comment") == "jws_rsa_roca_key"]
    document = group["public"]
    jwk: dict[str, Any] = document["keys"][0] if "keys" in document else document
    return jwk


def test_roca_key_refused() -> None:
    """A ROCA-vulnerable RSA key of 2048+ bits is refused from a JWK, a key object and a JWKS."""
    jwk = _roca_jwk()
    n = int.from_bytes(base64.urlsafe_b64decode(jwk["n"] + "=" * (-len(jwk["n"]) % 4)), "big")
    assert n.bit_length() >= 2048  # not refused for its size
    with pytest.raises(UnusableKey, match="ROCA"):
        Key.from_jwk(jwk)
    with pytest.raises(UnusableKey, match="ROCA"):
        Key.from_public_key(rsa.RSAPublicNumbers(65537, n).public_key())
    ks, problems = KeySet.from_jwks({"keys": [jwk]})
    assert len(ks) == 0 and "ROCA" in problems[0]


def test_fresh_keys_are_not_roca(rsa_priv: rsa.RSAPrivateKey) -> None:
    """Freshly generated RSA keys pass the ROCA check."""
    keys = [rsa_priv] + [rsa.generate_private_key(65537, 2048) for _ in range(2)]
    for private_key in keys:
        assert Key.from_jwk(rsa_jwk(private_key)).algorithms == RSA_ALGS


# == RSA bounds (Settings.rsa_max_bits / rsa_max_exponent) ====================================
# Moduli are fabricated (random, odd, top bit set): parsing needs no real key, and generating
# 8192- or 16384-bit keys takes seconds.


def fabricated_rsa_jwk(bits: int, e: int = 65537, kid: str = "big") -> dict[str, Any]:
    n = secrets.randbits(bits) | (1 << (bits - 1)) | 1
    return {"kty": "RSA", "kid": kid, "n": uint(n), "e": uint(e)}


E_64_BITS = (1 << 63) | 1


@pytest.mark.parametrize(
    ("jwk", "option", "problem"),
    [
        (fabricated_rsa_jwk(16384), {"rsa_max_bits": 16384}, "16384 bits; at most 8192"),
        (fabricated_rsa_jwk(8193), {"rsa_max_bits": 8193}, "8193 bits; at most 8192"),
        (fabricated_rsa_jwk(2048, E_64_BITS), {"rsa_max_exponent": E_64_BITS}, "over 65537"),
        (fabricated_rsa_jwk(4096, 65539), {"rsa_max_exponent": 65539}, "over 65537"),
    ],
    ids=["16384-bit-modulus", "8193-bit-modulus", "64-bit-exponent", "exponent-65539"],
)
def test_jwks_rsa_key_over_the_bounds_is_dropped_unless_allowed(
    jwk: dict[str, Any], option: dict[str, Any], problem: str, rsa_priv: rsa.RSAPrivateKey
) -> None:
    """A JWKS RSA key over 8192 bits or with e > 65537 is skipped as a problem by default, and
    kept when rsa_max_bits / rsa_max_exponent allow it."""
    document = {"keys": [rsa_jwk(rsa_priv, kid="good"), jwk]}
    keyset, problems = KeySet.from_jwks(document)
    assert keyset.kids == ["good"]
    assert len(problems) == 1 and problem in problems[0] and "'big'" in problems[0]
    keyset, problems = KeySet.from_jwks(document, **option)
    assert keyset.kids == ["good", "big"] and problems == []


@pytest.mark.parametrize(
    ("bits", "e"), [(8192, 65537), (8192, 3), (4096, 17), (2048, 65537), (2049, 3)]
)
def test_jwks_rsa_keys_issuers_use_are_within_the_default_bounds(bits: int, e: int) -> None:
    """Moduli up to 8192 bits with e = 3, 17 or 65537 are accepted by default."""
    keyset, problems = KeySet.from_jwks({"keys": [fabricated_rsa_jwk(bits, e)]})
    assert problems == [] and keyset.by_kid["big"].size == bits


def test_rsa_bounds_leave_other_key_types_alone(
    ec_pair: tuple[str, ec.EllipticCurvePrivateKey],
) -> None:
    """check_rsa_bounds applies to RSA keys only, even with the tightest bounds."""
    private_key = ec_pair[1]
    Key.from_jwk(ec_jwk(private_key)).check_rsa_bounds(2048, 3)
    Key.from_secret(b"s" * 32).check_rsa_bounds(2048, 3)


def _settings(**options: Any) -> Settings:
    return Settings(issuer="https://issuer.example", audience="api://x", **options)


@pytest.mark.parametrize(
    ("jwk", "option"),
    [
        (fabricated_rsa_jwk(16384), {"rsa_max_bits": 16384}),
        (fabricated_rsa_jwk(3072, E_64_BITS), {"rsa_max_exponent": E_64_BITS}),
    ],
    ids=["16384-bit-modulus", "64-bit-exponent"],
)
def test_static_rsa_key_over_the_bounds_fails_at_startup_unless_allowed(
    jwk: dict[str, Any], option: dict[str, int]
) -> None:
    """keys=[...] and jwks={...} are held to the same bounds as remote keys: ConfigurationError
    by default, accepted when the option allows the key."""
    key = Key.from_jwk(jwk)  # within what can be verified at all
    with pytest.raises(ConfigurationError, match=r"'big' in keys: RSA .*\(rsa_max_"):
        _settings(keys=[key])
    with pytest.raises(ConfigurationError, match="unusable keys in jwks: key 'big'"):
        _settings(jwks={"keys": [jwk]})
    assert _settings(keys=[key], **option).static_keys.kids == ["big"]
    assert _settings(jwks={"keys": [jwk]}, **option).static_keys.kids == ["big"]


def test_static_rsa_keys_within_the_bounds_are_accepted() -> None:
    """An 8192-bit static key with e = 65537 or 3 needs no option."""
    keys = [Key.from_jwk(fabricated_rsa_jwk(8192, e, kid=str(e))) for e in (65537, 3)]
    assert _settings(keys=keys).static_keys.kids == ["65537", "3"]


@pytest.mark.parametrize(
    "option",
    [
        {"rsa_max_bits": 2047},
        {"rsa_max_bits": 16385},
        {"rsa_max_bits": True},
        {"rsa_max_bits": "8192"},
        {"rsa_max_bits": 8192.0},
        {"rsa_max_exponent": 2},
        {"rsa_max_exponent": 1 << 64},
        {"rsa_max_exponent": 65537.0},
        {"rsa_max_exponent": None},
    ],
    ids=str,
)
def test_rsa_bound_options_are_checked(option: dict[str, Any], rsa_priv: rsa.RSAPrivateKey) -> None:
    """rsa_max_bits must be an int in 2048..16384 and rsa_max_exponent an int in 3..2**64-1:
    beyond them no key can be verified anyway."""
    with pytest.raises(ConfigurationError, match=next(iter(option))):
        _settings(keys=[Key.from_jwk(rsa_jwk(rsa_priv))], **option)


def test_rsa_public_exponent_has_an_upper_bound() -> None:
    """Key.from_jwk refuses an exponent over 64 bits, whatever the settings allow."""
    with pytest.raises(UnusableKey):
        Key.from_jwk(fabricated_rsa_jwk(3072, (1 << 3070) | 1))  # a 3071-bit exponent


def test_rsa_modulus_has_an_upper_bound() -> None:
    """Key.from_jwk refuses a modulus over 16384 bits, whatever the settings allow."""
    with pytest.raises(UnusableKey):
        Key.from_jwk(fabricated_rsa_jwk(16392))


def test_remote_jwks_key_over_the_bounds_is_ignored_and_logged(
    issuer: LocalIssuer,
    make_settings: Any,
    caplog: pytest.LogCaptureFixture,
    signature_checks: list[str],
) -> None:
    """A served JWKS with a 16384-bit key and a 64-bit-exponent key: both are dropped with the
    "ignoring a key" line, the issuer's real key still works, and a token naming a dropped
    key is refused without any signature check."""
    issuer.set_fault(
        "wrong_shape",
        body={
            "keys": [
                issuer.current_key.public_jwk(),
                fabricated_rsa_jwk(16384),
                fabricated_rsa_jwk(2048, E_64_BITS, kid="e64"),
            ]
        },
    )
    verifier = SyncVerifier(make_settings())
    with caplog.at_level(logging.WARNING, logger="jwt_middleware"):
        assert verifier.verify(issuer.mint()).subject == "user-1"
    ignored = [r.getMessage() for r in caplog.records if "ignoring a key" in r.getMessage()]
    assert len(ignored) == 2
    assert "'big': RSA key of 16384 bits; at most 8192" in ignored[0]
    assert "'e64': RSA public exponent" in ignored[1]
    checks = len(signature_checks)
    for kid in ("big", "e64"):
        forged = issuer.mint(kid=kid)  # signed by the real key, naming the dropped one
        with pytest.raises(InvalidToken) as refused:
            verifier.verify(forged)
        assert refused.value.reason == Reason.KID_UNKNOWN
    assert len(signature_checks) == checks
    verifier.close()


def test_remote_jwks_keys_follow_the_rsa_bound_options(
    issuer: LocalIssuer, make_settings: Any
) -> None:
    """rsa_max_bits/rsa_max_exponent reach the remote key set: raised, the large key is kept."""
    issuer.set_fault(
        "wrong_shape",
        body={"keys": [issuer.current_key.public_jwk(), fabricated_rsa_jwk(16384)]},
    )
    for option, kept in (({}, False), ({"rsa_max_bits": 16384}, True)):
        verifier = SyncVerifier(make_settings(**option))
        try:
            assert verifier.verify(issuer.mint()).subject == "user-1"
            assert verifier.remote is not None and verifier.remote.policy.keyset is not None
            assert ("big" in verifier.remote.policy.keyset.by_kid) is kept
        finally:
            verifier.close()
