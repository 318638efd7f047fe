"""Verification keys: JWK/PEM/secret → a :class:`Key` bound to the algorithms it may verify,
and :class:`KeySet`, the lookup by ``kid``.

Each key is parsed once. The algorithms a key accepts are fixed at parse time from its ``kty``
(and ``crv``), narrowed by the JWK's own ``alg``; ``use`` and ``key_ops`` must allow
verification. This binding is what defeats algorithm confusion (RFC 8725 §2.1, §3.1): an RSA
public key can never be used as an HMAC secret, because ``HS256`` is not in its algorithm set.

PyJWT's algorithm objects turn a JWK into a key object, prepare it for its algorithm and check
RS, EdDSA and HMAC signatures (PS and ES: see ``_make_verifier``). Our policy runs first,
because PyJWT is laxer on purpose (it signs too): its ``from_jwk`` decodes base64url
leniently (padding, stray characters), builds private keys from private members, and bounds
no RSA key. So a JWK reaches PyJWT only once its members are strict base64url, it holds no
private member, its curve and sizes fit, and an RSA key is within bounds and not ROCA.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from jwt.algorithms import (
    Algorithm,
    ECAlgorithm,
    OKPAlgorithm,
    RSAAlgorithm,
    RSAPSSAlgorithm,
    get_default_algorithms,
)
from jwt.exceptions import InvalidKeyError

from . import _b64 as b64
from ._errors import InvalidToken, Reason, UnusableKey

__all__ = [
    "ASYMMETRIC_ALGORITHMS",
    "DEFAULT_RSA_MAX_BITS",
    "DEFAULT_RSA_MAX_EXPONENT",
    "HMAC_ALGORITHMS",
    "Key",
    "KeySet",
]

logger = logging.getLogger("jwt_middleware")

MIN_RSA_BITS = 2048
# Hard ceilings, whatever the settings say: OpenSSL verifies with no larger modulus, nor (for
# moduli over 3072 bits) with a larger exponent.
MAX_RSA_BITS = 16384
MAX_RSA_EXPONENT_BITS = 64
# The defaults of Settings.rsa_max_bits / rsa_max_exponent. A forged token naming a key costs
# its public-key operation; relative to a 2048-bit key with e = 65537 that is about 12x at 8192
# bits, 50x at 16384 bits and 150x at 16384 bits with a 64-bit exponent. Issuers publish 2048 to
# 4096 bits and e = 65537 (rarely 3), so these bounds refuse nothing in use.
DEFAULT_RSA_MAX_BITS = 8192
DEFAULT_RSA_MAX_EXPONENT = 65537
# alg -> minimum secret length in bytes (RFC 7518 §3.2)
HMAC_ALGORITHMS = {"HS256": 32, "HS384": 48, "HS512": 64}
_RSA_ALGS = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES: dict[str, tuple[type[ec.EllipticCurve], int, str]] = {
    # crv -> (curve, coordinate bytes, the one alg it may verify)
    "P-256": (ec.SECP256R1, 32, "ES256"),
    "P-384": (ec.SECP384R1, 48, "ES384"),
    "P-521": (ec.SECP521R1, 66, "ES512"),
    "secp256k1": (ec.SECP256K1, 32, "ES256K"),
}
_OKP_CURVES = {"Ed25519": 32, "Ed448": 57}
ASYMMETRIC_ALGORITHMS = frozenset(_RSA_ALGS | {"ES256", "ES384", "ES512", "ES256K", "EdDSA"})
# Spellings some issuers put in a JWK's "alg" that mean a standard algorithm.
_JWK_ALG_ALIASES = {"ES521": "ES512"}
_PRIVATE_MEMBERS = ("d", "p", "q", "dp", "dq", "qi", "oth")

# PyJWT's algorithm objects hold nothing but their hash (and curve): one read-only table serves
# every key. "none" is left out, and so is PyJWT's "ES521" (a header alg we do not accept).
_ALGORITHMS: Mapping[str, Algorithm] = MappingProxyType(
    {
        alg: algorithm
        for alg, algorithm in get_default_algorithms().items()
        if alg in HMAC_ALGORITHMS or alg in ASYMMETRIC_ALGORITHMS
    }
)
# kty -> PyJWT's JWK loader (oct is not here: its strict base64url decoding is all there is).
_FROM_JWK: dict[str, Callable[[dict[str, Any]], Any]] = {
    "RSA": RSAAlgorithm.from_jwk,
    "EC": ECAlgorithm.from_jwk,
    "OKP": OKPAlgorithm.from_jwk,
}

Verify = Callable[[bytes, bytes], bool]


class Key:
    """A public (or HMAC) key, parsed once, with the algorithms it may verify.

    Build one with :meth:`from_jwk`, :meth:`from_pem` or :meth:`from_secret`. They refuse RSA
    keys outside what can be verified at all (2048 to 16384 bits, a 64-bit exponent); the tighter
    bounds of :meth:`check_rsa_bounds` (``Settings.rsa_max_bits`` / ``rsa_max_exponent``) are
    applied where keys are trusted: :meth:`KeySet.from_jwks` and ``Settings``.
    """

    __slots__ = ("_verifiers", "algorithms", "crv", "kid", "kty", "public_key", "size")

    def __init__(
        self,
        *,
        kid: str | None,
        kty: str,
        crv: str | None,
        size: int,
        algorithms: frozenset[str],
        public_key: Any,
    ) -> None:
        if not algorithms:
            raise UnusableKey("the key fits no supported algorithm")
        self.kid = kid
        self.kty = kty
        self.crv = crv
        self.size = size
        self.algorithms = algorithms
        self.public_key = public_key
        self._verifiers: dict[str, Verify] = {a: _make_verifier(a, public_key) for a in algorithms}

    def __repr__(self) -> str:  # never shows key material
        algs = ",".join(sorted(self.algorithms))
        return f"Key(kid={self.kid!r}, kty={self.kty}, size={self.size}, algorithms={algs})"

    def check_rsa_bounds(
        self,
        max_bits: int = DEFAULT_RSA_MAX_BITS,
        max_exponent: int = DEFAULT_RSA_MAX_EXPONENT,
    ) -> None:
        """UnusableKey when this is an RSA key with a modulus over ``max_bits`` bits or a public
        exponent over ``max_exponent``; other keys always pass."""
        if self.kty != "RSA":
            return
        numbers = self.public_key.public_numbers()
        if numbers.n.bit_length() > max_bits:
            raise UnusableKey(
                f"RSA key of {numbers.n.bit_length()} bits; at most {max_bits} "
                "(rsa_max_bits allows larger keys)"
            )
        if numbers.e > max_exponent:
            raise UnusableKey(
                f"RSA public exponent {numbers.e} is over {max_exponent} "
                "(rsa_max_exponent allows larger ones)"
            )

    def verify(self, alg: str, signing_input: bytes, signature: bytes) -> bool:
        """True when ``signature`` is a valid ``alg`` signature of ``signing_input`` by this key."""
        verifier = self._verifiers.get(alg)
        return verifier is not None and verifier(signing_input, signature)

    # -- constructors ------------------------------------------------------------------------

    @classmethod
    def from_jwk(cls, jwk: Mapping[str, Any], *, allow_symmetric: bool = False) -> Key:
        """Parse one JWK (RFC 7517). Private members are refused: a verifier needs none."""
        if not isinstance(jwk, Mapping):
            raise UnusableKey("a JWK must be a JSON object")
        kty = jwk.get("kty")
        kid = jwk.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise UnusableKey("kid must be a string")
        _check_use(jwk)
        if kty == "oct":
            if not allow_symmetric:
                raise UnusableKey("symmetric (oct) keys are not accepted from this source")
            return cls.from_secret(_member(jwk, "k"), kid=kid, alg=_jwk_alg(jwk))
        if any(m in jwk for m in _PRIVATE_MEMBERS):
            # PyJWT would build a private key from them.
            raise UnusableKey("the JWK holds private key material; publish public keys only")
        if not isinstance(kty, str) or kty not in _FROM_JWK:
            raise UnusableKey(f"unsupported key type {kty!r}")
        try:
            _check_public_members(kty, jwk)
            public_key = _FROM_JWK[kty](dict(jwk))
        except UnusableKey:
            raise
        except (InvalidKeyError, ValueError, TypeError, OverflowError) as exc:
            raise UnusableKey(f"invalid {kty} key: {exc}") from None
        return cls.from_public_key(public_key, kid=kid, alg=_jwk_alg(jwk))

    @classmethod
    def from_pem(cls, pem: str | bytes, *, kid: str | None = None, alg: str | None = None) -> Key:
        """A public key in PEM (SubjectPublicKeyInfo or PKCS#1) form.

        A private key is refused rather than silently reduced to its public half: it means a
        signing secret was copied into the verifying service.
        """
        data = pem.encode() if isinstance(pem, str) else pem
        if b"PRIVATE KEY" in data:
            raise UnusableKey("a private key was given; pass the public key (PEM) instead")
        try:
            public_key = serialization.load_pem_public_key(data)
        except (ValueError, TypeError) as exc:
            raise UnusableKey(f"not a PEM public key: {exc}") from None
        return cls.from_public_key(public_key, kid=kid, alg=alg)

    @classmethod
    def from_public_key(
        cls, public_key: Any, *, kid: str | None = None, alg: str | None = None
    ) -> Key:
        """A ``cryptography`` public key object."""
        if isinstance(public_key, rsa.RSAPublicKey):
            numbers = public_key.public_numbers()
            _check_rsa_numbers(numbers.n, numbers.e)
            kty, crv, size, algs = "RSA", None, public_key.key_size, _RSA_ALGS
        elif isinstance(public_key, ec.EllipticCurvePublicKey):
            crv = next(
                (c for c, v in _EC_CURVES.items() if isinstance(public_key.curve, v[0])), None
            )
            if crv is None:
                raise UnusableKey(f"unsupported EC curve {public_key.curve.name}")
            kty, size, algs = "EC", public_key.curve.key_size, frozenset({_EC_CURVES[crv][2]})
        elif isinstance(public_key, (ed25519.Ed25519PublicKey, ed448.Ed448PublicKey)):
            crv = "Ed25519" if isinstance(public_key, ed25519.Ed25519PublicKey) else "Ed448"
            kty, size, algs = "OKP", _OKP_CURVES[crv] * 8, frozenset({"EdDSA"})
        else:
            raise UnusableKey(f"unsupported key object {type(public_key).__name__}")
        return cls(
            kid=kid,
            kty=kty,
            crv=crv,
            size=size,
            algorithms=_narrow(algs, alg),
            public_key=public_key,
        )

    @classmethod
    def from_secret(
        cls, secret: str | bytes, *, kid: str | None = None, alg: str | None = "HS256"
    ) -> Key:
        """An HMAC secret. It must be at least as long as the hash output (RFC 7518 §3.2)."""
        raw = secret.encode() if isinstance(secret, str) else bytes(secret)
        fitting = frozenset(a for a, need in HMAC_ALGORITHMS.items() if len(raw) >= need)
        if alg is not None and alg in HMAC_ALGORITHMS and alg not in fitting:
            raise UnusableKey(
                f"{alg} needs a secret of at least {HMAC_ALGORITHMS[alg]} bytes, got {len(raw)}"
            )
        return cls(
            kid=kid,
            kty="oct",
            crv=None,
            size=len(raw) * 8,
            algorithms=_narrow(fitting, alg),
            public_key=raw,
        )


class KeySet:
    """Keys looked up by ``kid``.

    Rule for tokens without ``kid``: the token is accepted only when exactly one key in the set
    can verify its ``alg``. Trying keys in turn would multiply the cost of every forged token and
    make "which key signed this?" ambiguous, so it is never done.
    A ``kid`` that appears twice is ambiguous and both keys are dropped.
    """

    __slots__ = ("by_kid", "keys")

    def __init__(self, keys: Iterable[Key] = ()) -> None:
        self.keys: tuple[Key, ...] = tuple(keys)
        by_kid: dict[str, Key] = {}
        duplicated: set[str] = set()
        for key in self.keys:
            if key.kid is None:
                continue
            if key.kid in by_kid:
                duplicated.add(key.kid)
            by_kid[key.kid] = key
        for kid in duplicated:
            logger.warning("jwt_middleware: kid %r appears more than once; keys ignored", kid[:64])
            del by_kid[kid]
        if duplicated:
            self.keys = tuple(k for k in self.keys if k.kid not in duplicated)
        self.by_kid = by_kid

    def __len__(self) -> int:
        return len(self.keys)

    def __contains__(self, kid: object) -> bool:
        return kid in self.by_kid

    @property
    def kids(self) -> list[str]:
        return [k.kid for k in self.keys if k.kid is not None]

    def find(self, kid: str | None, alg: str) -> Key:
        """The key for ``kid`` that may verify ``alg``, or InvalidToken saying why not."""
        if kid is not None:
            key = self.by_kid.get(kid)
            if key is None:
                raise InvalidToken(Reason.KID_UNKNOWN, f"kid {kid[:64]!r}")
            if alg not in key.algorithms:
                raise InvalidToken(Reason.KEY_ALG_MISMATCH, f"{alg} with a {key.kty} key")
            return key
        candidates = [k for k in self.keys if alg in k.algorithms]
        if len(candidates) == 1:
            return candidates[0]
        if not candidates:
            raise InvalidToken(Reason.KID_UNKNOWN, f"no kid, and no key for {alg}")
        raise InvalidToken(Reason.KID_AMBIGUOUS, f"no kid, and {len(candidates)} keys fit {alg}")

    def merged(self, other: KeySet) -> KeySet:
        return KeySet(self.keys + other.keys)

    @classmethod
    def from_jwks(
        cls,
        document: Any,
        *,
        allow_symmetric: bool = False,
        source: str = "JWKS",
        rsa_max_bits: int = DEFAULT_RSA_MAX_BITS,
        rsa_max_exponent: int = DEFAULT_RSA_MAX_EXPONENT,
    ) -> tuple[KeySet, list[str]]:
        """Parse a JWKS document. Unusable keys are skipped; their problems are returned.
        RSA keys outside the bounds (see :meth:`Key.check_rsa_bounds`) are unusable.

        Raises UnusableKey when the document itself is unusable: not a JWKS, or — where secrets are
        allowed at all — mixing symmetric and asymmetric keys, a sign of secrets kept where
        public keys are published.
        """
        if not isinstance(document, Mapping) or not isinstance(document.get("keys"), list):
            raise UnusableKey(f"{source} is not a JWK Set (a JSON object with a 'keys' array)")
        entries: Sequence[Any] = document["keys"]
        ktys = {
            e.get("kty")
            for e in entries
            if isinstance(e, Mapping) and isinstance(e.get("kty"), str)
        }
        if allow_symmetric and "oct" in ktys and len(ktys) > 1:
            raise UnusableKey(f"{source} mixes symmetric and asymmetric keys")
        keys: list[Key] = []
        problems: list[str] = []
        for index, entry in enumerate(entries):
            try:
                key = Key.from_jwk(entry, allow_symmetric=allow_symmetric)
                key.check_rsa_bounds(rsa_max_bits, rsa_max_exponent)
                keys.append(key)
            except UnusableKey as exc:
                kid = entry.get("kid") if isinstance(entry, Mapping) else None
                name = repr(kid[:64]) if isinstance(kid, str) else f"#{index}"
                problems.append(f"key {name}: {exc}")
        return cls(keys), problems


# -- helpers -----------------------------------------------------------------------------------


def _member(jwk: Mapping[str, Any], name: str) -> bytes:
    try:
        return b64.decode(_str_member(jwk, name))
    except ValueError:
        raise UnusableKey(f"JWK member {name!r} is not base64url") from None


def _str_member(jwk: Mapping[str, Any], name: str) -> str:
    value = jwk.get(name)
    if not isinstance(value, str):
        raise UnusableKey(f"JWK member {name!r} is missing or not a string")
    return value


def _jwk_alg(jwk: Mapping[str, Any]) -> str | None:
    alg = jwk.get("alg")
    if alg is None:
        return None
    if not isinstance(alg, str):
        raise UnusableKey("JWK alg must be a string")
    return _JWK_ALG_ALIASES.get(alg, alg)


def _check_use(jwk: Mapping[str, Any]) -> None:
    use = jwk.get("use")
    if use is not None and use != "sig":
        raise UnusableKey(f"key use is {use!r}, not 'sig'")
    ops = jwk.get("key_ops")
    if ops is not None and (not isinstance(ops, list) or "verify" not in ops):
        raise UnusableKey("key_ops does not allow 'verify'")


def _narrow(possible: frozenset[str], alg: str | None) -> frozenset[str]:
    if alg is None:
        return possible
    if alg not in possible:
        raise UnusableKey(f"the key's alg {alg!r} does not fit its type")
    return frozenset({alg})


def _check_public_members(kty: str, jwk: Mapping[str, Any]) -> None:
    """Our policy on the members PyJWT's from_jwk reads, which it decodes leniently and
    bounds not at all. Raises UnusableKey (ValueError from the strict base64url decoder)."""
    if kty == "RSA":
        n = b64.decode_uint(_str_member(jwk, "n"))
        e = b64.decode_uint(_str_member(jwk, "e"))
        _check_rsa_numbers(n, e)
    elif kty == "EC":
        crv = jwk.get("crv")
        if crv not in _EC_CURVES:
            raise UnusableKey(f"unsupported EC curve {crv!r}")
        length = _EC_CURVES[crv][1]
        if len(_member(jwk, "x")) != length or len(_member(jwk, "y")) != length:
            raise UnusableKey("EC coordinates have the wrong length for the curve")
    else:  # OKP
        crv = jwk.get("crv")
        x = _member(jwk, "x")
        if crv not in _OKP_CURVES or len(x) != _OKP_CURVES[crv]:
            raise UnusableKey(f"unsupported or malformed OKP key (crv {crv!r})")


def _check_rsa_numbers(n: int, e: int) -> None:
    if n.bit_length() < MIN_RSA_BITS:
        raise UnusableKey(f"RSA key of {n.bit_length()} bits; at least {MIN_RSA_BITS} needed")
    if n.bit_length() > MAX_RSA_BITS:
        # OpenSSL cannot verify with larger moduli anyway; refuse instead of keeping a dead key.
        raise UnusableKey(f"RSA key of {n.bit_length()} bits; at most {MAX_RSA_BITS}")
    if e < 3 or e % 2 == 0:
        raise UnusableKey("RSA public exponent must be odd and at least 3")
    if e.bit_length() > MAX_RSA_EXPONENT_BITS:
        # A huge exponent makes every verification (of any forged token naming the kid)
        # orders of magnitude slower: a denial of service on the event loop.
        raise UnusableKey(f"RSA public exponent over {MAX_RSA_EXPONENT_BITS} bits")
    if _roca_fingerprint(n):
        raise UnusableKey("RSA key has the ROCA weakness (CVE-2017-15361); it can be factored")


# ROCA (CVE-2017-15361): moduli generated by the affected Infineon library satisfy, for each
# small prime p below, n mod p ∈ <65537> (the subgroup 65537 generates mod p). A random modulus
# passes all these tests with negligible probability.
_ROCA_PRIMES = (
    3,
    5,
    7,
    11,
    13,
    17,
    19,
    23,
    29,
    31,
    37,
    41,
    43,
    47,
    53,
    59,
    61,
    67,
    71,
    73,
    79,
    83,
    89,
    97,
    101,
    103,
    107,
    109,
    113,
    127,
    131,
    137,
    139,
    149,
    151,
    157,
    163,
    167,
)


def _subgroup(generator: int, p: int) -> frozenset[int]:
    seen, value = set(), 1
    while value not in seen:
        seen.add(value)
        value = value * generator % p
    return frozenset(seen)


_ROCA_SUBGROUPS = tuple((p, _subgroup(65537 % p, p)) for p in _ROCA_PRIMES)


def _roca_fingerprint(n: int) -> bool:
    return all(n % p in group for p, group in _ROCA_SUBGROUPS)


def _make_verifier(alg: str, key: Any) -> Verify:
    """``alg``'s PyJWT algorithm bound to ``key``, prepared once here, never per token."""
    algorithm = _ALGORITHMS[alg]
    # HMACAlgorithm.prepare_key refuses secrets that look like PEM, SSH or JSON: PyJWT's guard
    # against algorithm confusion, which the key's algorithm set already rules out here.
    prepared = key if alg in HMAC_ALGORITHMS else algorithm.prepare_key(key)
    if isinstance(algorithm, RSAPSSAlgorithm):
        # PyJWT's verify builds its padding per call: 23.6 vs 22.4 µs per PS256 check (+5 %).
        return _pss_verifier(prepared, algorithm.hash_alg())
    if isinstance(algorithm, ECAlgorithm):
        # PyJWT's verify converts r‖s via hex per call: 65.1 vs 62.9 µs per ES256 check (+3.5 %).
        return _ecdsa_verifier(prepared, algorithm.hash_alg())
    check = algorithm.verify
    if isinstance(algorithm, RSAAlgorithm):
        size = _signature_size(prepared)

        def verify_rsa(msg: bytes, sig: bytes) -> bool:
            return len(sig) == size and check(msg, prepared, sig)

        return verify_rsa

    def verify(msg: bytes, sig: bytes) -> bool:
        return check(msg, prepared, sig)

    return verify


def _signature_size(key: rsa.RSAPublicKey) -> int:
    # RFC 8017 §8.2.2: a signature of any other length is invalid. Refused before the
    # public-key operation, whatever the OpenSSL build would make of it.
    return (key.key_size + 7) // 8


def _pss_verifier(key: rsa.RSAPublicKey, hash_alg: hashes.HashAlgorithm) -> Verify:
    # RFC 7518 §3.5: the salt is exactly as long as the hash output.
    pss = padding.PSS(mgf=padding.MGF1(hash_alg), salt_length=hash_alg.digest_size)
    size = _signature_size(key)

    def verify_pss(msg: bytes, sig: bytes) -> bool:
        if len(sig) != size:
            return False
        try:
            key.verify(sig, msg, pss, hash_alg)
        except InvalidSignature:
            return False
        return True

    return verify_pss


def _ecdsa_verifier(key: ec.EllipticCurvePublicKey, hash_alg: hashes.HashAlgorithm) -> Verify:
    # JWS carries the raw r‖s of fixed width (RFC 7518 §3.4), never DER.
    width = (key.curve.key_size + 7) // 8
    ecdsa = ec.ECDSA(hash_alg)

    def verify_ecdsa(msg: bytes, sig: bytes) -> bool:
        if len(sig) != 2 * width:
            return False
        r = int.from_bytes(sig[:width], "big")
        s = int.from_bytes(sig[width:], "big")
        try:
            key.verify(encode_dss_signature(r, s), msg, ecdsa)
        except (InvalidSignature, ValueError):
            return False
        return True

    return verify_ecdsa
