"""RFC 9449 DPoP proofs, checked at the resource server (§4.3, §7.1), without I/O.

A proof is a small JWS the client signs for each request with a key it holds; the access token
names that key (``cnf.jkt``, the key's RFC 7638 thumbprint). :class:`ProofRules` checks one
proof against the request and the access token and returns what the replay check needs; the
drivers record ``(jkt, jti)`` only once everything else has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Collection, Mapping
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from . import _b64 as b64
from ._errors import ConfigurationError, InvalidProof, InvalidToken, Reason, UnusableKey
from ._jws import Header, HeaderRules, loads_strict, parse
from ._keys import ASYMMETRIC_ALGORITHMS, DEFAULT_RSA_MAX_EXPONENT, Key

__all__ = [
    "DEFAULT_PROOF_ALGORITHMS",
    "Proof",
    "ProofRules",
    "jwk_thumbprint",
    "token_hash",
]

#: The proof algorithms accepted by default: asymmetric only (RFC 9449 §4.3 forbids none and
#: MAC algorithms, whose "key" the resource server would have to hold).
DEFAULT_PROOF_ALGORITHMS = ("ES256", "EdDSA", "PS256", "RS256")

#: A proof with its public JWK is a few hundred bytes (an RSA-4096 key about 1 KiB); anything
#: much larger is someone making us parse.
MAX_PROOF_BYTES = 4096
#: Numeric dates beyond this (year 5138) are mistakes or attacks, as for tokens.
_MAX_DATE = 10**11
#: RSA proof keys are bounded tighter than issuer keys: any client can send one, and an 8192-bit
#: verification costs about 3x a 4096-bit one.
MAX_PROOF_RSA_BITS = 4096
#: jti is a nonce: 96 bits of randomness need 16-22 characters; allow generous client formats.
MAX_JTI_CHARS = 256

# RFC 7638 §3.2: the members of each key type that its thumbprint covers, in order.
_THUMBPRINT_MEMBERS = {
    "EC": ("crv", "kty", "x", "y"),
    "RSA": ("e", "kty", "n"),
    "OKP": ("crv", "kty", "x"),
}
_DEFAULT_PORTS = {"http": 80, "https": 443}


class Proof(NamedTuple):
    """What a checked proof tells the replay check and the token binding."""

    #: The RFC 7638 SHA-256 thumbprint of the proof key (base64url), as ``cnf.jkt`` names it.
    jkt: str
    jti: str
    #: The proof's ``iat``: a replay record must outlive ``iat + max_age + leeway``.
    iat: float
    #: The server nonce the proof carries (RFC 9449 §9), if any; the caller checks it.
    nonce: object = None


class _ProofKey(NamedTuple):
    header: Header
    key: Key
    jkt: str


def token_hash(access_token: str) -> str:
    """RFC 9449 §4.2 ``ath``: base64url(SHA-256(the access token's ASCII bytes)). A token that
    is not ASCII is no token: InvalidToken, never an encoding error."""
    try:
        raw = access_token.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidToken(Reason.MALFORMED_TOKEN, "token is not ASCII") from None
    return b64.encode(hashlib.sha256(raw).digest())


def jwk_thumbprint(jwk: Mapping[str, Any]) -> str:
    """The RFC 7638 SHA-256 thumbprint of a public JWK (EC, RSA or OKP), base64url."""
    members = _THUMBPRINT_MEMBERS.get(str(jwk.get("kty")))
    if members is None or not all(isinstance(jwk.get(m), str) for m in members):
        raise UnusableKey("the JWK is not an EC, RSA or OKP public key with string members")
    canonical = json.dumps({m: jwk[m] for m in members}, separators=(",", ":"), sort_keys=True)
    return b64.encode(hashlib.sha256(canonical.encode("utf-8")).digest())


def normalized_url(url: str, *, dots: bool = True) -> str | None:
    """``url`` as RFC 9449 §4.3 compares ``htu``: scheme and host lower-cased, a default port
    dropped, query and fragment removed (RFC 3986 §6.2.2-6.2.3); None when it is not an
    absolute http(s) URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    host = parts.hostname
    if scheme not in _DEFAULT_PORTS or not host or parts.username is not None:
        return None
    if ":" in host:  # an IPv6 literal keeps its brackets
        host = f"[{host}]"
    netloc = host if port is None or port == _DEFAULT_PORTS[scheme] else f"{host}:{port}"
    return f"{scheme}://{netloc}{_normal_path(parts.path, dots=dots)}"


_ESCAPE = re.compile(r"%([0-9A-Fa-f]{2})")
_UNRESERVED = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def _normal_path(path: str, *, dots: bool = True) -> str:
    """RFC 3986 §6.2.2: escapes in upper case, unreserved characters unescaped, dot segments
    removed (§5.2.4; kept with ``dots=False``); an empty path is ``/``."""

    def escape(match: re.Match[str]) -> str:
        char = chr(int(match.group(1), 16))
        return char if char in _UNRESERVED else f"%{match.group(1).upper()}"

    escaped = _ESCAPE.sub(escape, path)
    if not dots:
        return escaped or "/"
    out: list[str] = []
    for segment in escaped.split("/")[1:]:
        if segment == "..":
            if out:
                out.pop()
        elif segment != ".":
            out.append(segment)
    last = path.rsplit("/", 1)[-1]
    trailing = "/" if last in (".", "..") and out else ""
    return "/" + "/".join(out) + trailing


class ProofRules:
    """How a DPoP proof must look: its algorithms, how old it may be, and the clock leeway.

    ``max_age``: how long after its ``iat`` a proof is accepted (and so how long its ``jti``
    must be remembered); ``leeway``: how far ahead of our clock ``iat`` may be.
    """

    __slots__ = ("_keys", "_size", "algorithms", "leeway", "max_age", "rules")

    def __init__(
        self,
        algorithms: Collection[str] = DEFAULT_PROOF_ALGORITHMS,
        *,
        max_age: float = 300.0,
        leeway: float = 5.0,
        cache_size: int = 256,
    ) -> None:
        algs = frozenset(algorithms)
        unsupported = sorted(a for a in algs if a not in ASYMMETRIC_ALGORITHMS)
        if not algs or unsupported:
            raise ConfigurationError(
                f"DPoP proof algorithms must be asymmetric ones we support, got {unsupported}"
            )
        for name, value in (("max_age", max_age), ("leeway", leeway)):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (math.isfinite(value) and value >= 0)
            ):
                raise ConfigurationError(f"DPoP {name} must be a finite number >= 0, got {value!r}")
        self.algorithms = algs
        self.max_age = float(max_age)
        self.leeway = float(leeway)
        self.rules = HeaderRules(algs, "dpop+jwt", cache_size=cache_size)
        # A client signs every proof with the same key, so the header (and its jwk) repeats:
        # parse the key and work out its thumbprint once per distinct header. A plain dict,
        # emptied when full: a hit (every request) is one atomic get, safe for WSGI threads
        # without a lock, where an LRUCache get under a lock costs about 1 us; a flood of
        # distinct keys only costs itself re-parsing.
        self._keys: dict[bytes, _ProofKey] = {}
        self._size = cache_size

    def check(
        self,
        proof: str,
        *,
        method: str,
        url: str,
        access_token: str | None,
        now: float,
        ath: str | None = None,
        jkt: str | None = None,
    ) -> Proof:
        """Every check of RFC 9449 §4.3 but replay: InvalidProof (reason ``dpop_invalid``)
        when one fails. ``url`` is the request URL the client used; ``access_token`` the token
        the proof must be bound to (its ``ath``: :func:`token_hash`, unless the caller passes
        it as ``ath``), or None for a proof without one; ``jkt``: the thumbprint the proof key
        must have (``cnf.jkt``), checked before the signature (``dpop_key_mismatch``)."""
        if len(proof) > MAX_PROOF_BYTES:
            raise _invalid(f"proof of {len(proof)} bytes")
        try:
            parsed = parse(proof, self.rules)
        except InvalidToken as exc:
            raise _invalid(f"{exc.reason}: {exc.detail}") from None
        head = parsed.signing_input.split(b".", 1)[0]
        proof_key = self._proof_key(head, parsed.header)
        if jkt is not None and not hmac.compare_digest(proof_key.jkt, jkt):
            # Before the signature: a proof by any other key is refused without its cost.
            raise InvalidProof(Reason.DPOP_KEY_MISMATCH, "the proof key is not cnf.jkt")
        if not proof_key.key.verify(parsed.header.alg, parsed.signing_input, parsed.signature):
            raise _invalid("signature does not verify with the header's jwk")
        try:
            claims = loads_strict(parsed.payload)
        except (ValueError, RecursionError):
            raise _invalid("payload is not JSON") from None
        if not isinstance(claims, dict):
            raise _invalid("payload is not a JSON object")
        jti, htm, htu, iat = (
            claims.get("jti"),
            claims.get("htm"),
            claims.get("htu"),
            claims.get("iat"),
        )
        if not isinstance(jti, str) or not 0 < len(jti) <= MAX_JTI_CHARS:
            raise _invalid("jti missing or not a short string")
        if not isinstance(htm, str) or htm != method:
            raise _invalid(f"htm {str(htm)[:16]!r} is not the request method")
        # Clients mostly sign the URL exactly as we rebuild it: equal strings need no
        # normalising (url is built from checked parts, so it is an absolute http(s) URL).
        if htu != url:
            # The request's own dot segments stay: the app routes on the path as sent, so a
            # proof for /admin must not pass on /public/../admin.
            wanted = normalized_url(url, dots=False)
            if not isinstance(htu, str) or wanted is None or normalized_url(htu) != wanted:
                raise _invalid(f"htu {str(htu)[:100]!r} is not the request URL")
        # The range first: math.isfinite(10**400) raises OverflowError.
        if isinstance(iat, bool) or not isinstance(iat, (int, float)) or not 0 <= iat <= _MAX_DATE:
            raise _invalid("iat missing, not a number or out of range")
        if iat > now + self.leeway:
            raise _invalid(f"iat {iat - now:.0f}s ahead")
        if iat < now - self.max_age:
            raise _invalid(f"proof {now - iat:.0f}s old")
        if access_token is not None:
            sent = claims.get("ath")
            if not isinstance(sent, str) or sent != (ath or token_hash(access_token)):
                raise _invalid("ath does not hash the access token")
        return Proof(proof_key.jkt, jti, float(iat), claims.get("nonce"))

    def _proof_key(self, head: bytes, header: Header) -> _ProofKey:
        known = self._keys.get(head)
        if known is not None:
            return known
        jwk = header.fields.get("jwk")
        if not isinstance(jwk, Mapping):
            raise _invalid("no jwk header")
        try:
            key = Key.from_jwk(jwk)  # refuses private members and oct keys
            key.check_rsa_bounds(MAX_PROOF_RSA_BITS, DEFAULT_RSA_MAX_EXPONENT)
            jkt = jwk_thumbprint(jwk)
        except UnusableKey as exc:
            raise _invalid(f"jwk: {exc}") from None
        if header.alg not in key.algorithms:
            raise _invalid(f"alg {header.alg!r} does not fit the jwk")
        made = _ProofKey(header, key, jkt)
        if len(self._keys) >= self._size:
            self._keys.clear()
        self._keys[head] = made
        return made


def _invalid(detail: str) -> InvalidProof:
    return InvalidProof(Reason.DPOP_INVALID, detail)
