"""Sender-constrained tokens, checked at the resource server without I/O: DPoP (RFC 9449) and
certificate-bound tokens (RFC 8705).

A token names the key its holder must prove (``cnf.jkt``, ``cnf.x5t#S256``); :class:`Sender`
decides, for one verified token and one request, whether the request proves it. The replay
record comes last and is I/O (the store may be Redis), so :meth:`Sender.check` only returns
the proof to record and the flow yields the store's call to its driver.

The request is read through :class:`Request`, which each adapter builds from its own shape
(the ASGI scope, the WSGI environ) and which reads lazily: the checks look only at what the
token's binding needs.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import math
import re
from collections.abc import Sequence
from typing import Any, NamedTuple
from urllib.parse import quote, urlsplit

from . import _b64 as b64
from ._dpop import Proof, ProofRules, token_hash
from ._errors import (
    InvalidProof,
    InvalidRequest,
    InvalidToken,
    Reason,
    ReplayStoreError,
    ReplayUnavailable,
    UseDPoPNonce,
)
from ._extract import DPOP
from ._settings import Settings
from .replay import MemoryReplayStore, ReplayFull

__all__ = ["UNBOUND", "Nonces", "Request", "Sender", "binding"]

logger = logging.getLogger("jwt_middleware")

# RFC 3986 host: a reg-name (letters, digits, - . _ ~ and escapes are not accepted here: a
# Host header carries a DNS name or an address), an IPv4 address, or a bracketed IPv6 one;
# then an optional port.
_HOST = re.compile(
    r"(?:[A-Za-z0-9](?:[A-Za-z0-9._-]{0,252})|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)
# What quote() must leave as it is in a path: RFC 3986 pchar minus the unreserved characters
# (always kept) and "%" (a literal % in a decoded path is an escaped one on the wire).
_PATH_SAFE = "/:@!$&'()*+,;="
_WS_SCHEMES = {"ws": "http", "wss": "https"}
#: Access tokens whose ``ath`` is remembered (by digest; a dict emptied when full).
_ATHS = 4096


class Request(NamedTuple):
    """What the sender checks read from one request, in a transport-neutral shape (a tuple:
    one is built per verified request, and a frozen dataclass costs several times more).

    ``path``: the full path as the client sent it, decoded (the ASGI ``path``; the WSGI
    ``SCRIPT_NAME + PATH_INFO``, as text); ``headers``: lower-case byte pairs, each repeated
    header once per value (the WSGI side splits comma-joined DPoP values back); ``peer``: the
    client address the connection came from, or None; ``answer``: a list, made for this
    request, where the checks put headers the response must carry if the request goes on (a
    fresh ``DPoP-Nonce``), or None where the caller cannot add any."""

    method: str
    scheme: str
    path: str
    headers: Sequence[tuple[bytes, bytes]]
    peer: str | None = None
    answer: list[tuple[bytes, bytes]] | None = None

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.headers if key == name]


class Nonces:
    """Stateless server nonces (RFC 9449 §8-9): the nonce of a time step is an HMAC of the step
    number under a secret every instance shares, so instances agree without talking. A nonce
    is accepted during its step and the next one."""

    __slots__ = ("_cache", "_secret", "lifetime")

    def __init__(self, secret: bytes, lifetime: float) -> None:
        self._secret = secret
        self.lifetime = lifetime
        self._cache: dict[int, str] = {}

    def _nonce(self, step: int) -> str:
        nonce = self._cache.get(step)
        if nonce is None:
            mac = hmac.new(self._secret, b"jwt_middleware dpop nonce %d" % step, hashlib.sha256)
            nonce = b64.encode(mac.digest()[:18])
            if len(self._cache) > 4:
                self._cache.clear()
            self._cache[step] = nonce
        return nonce

    def current(self, now: float) -> str:
        return self._nonce(math.floor(now / self.lifetime))

    def accepts(self, nonce: object, now: float) -> bool:
        return self.age(nonce, now) is not None

    def age(self, nonce: object, now: float) -> int | None:
        """0 for the current step's nonce, 1 for the previous step's (accepted, but gone at the
        end of this step), None for anything else."""
        if not isinstance(nonce, str):
            return None
        step = math.floor(now / self.lifetime)
        given = nonce.encode("utf-8", "replace")
        # compare_digest on both, always: which one matched must not show in the timing.
        now_ok = hmac.compare_digest(given, self._nonce(step).encode())
        before_ok = hmac.compare_digest(given, self._nonce(step - 1).encode())
        return 0 if now_ok else 1 if before_ok else None


class Sender:
    """The sender-constraint rules of one middleware (from its :class:`Settings`)."""

    def __init__(self, settings: Settings) -> None:
        self.mode = settings.dpop
        self.rules = ProofRules(
            settings.dpop_algorithms, max_age=settings.dpop_max_age, leeway=settings.dpop_leeway
        )
        #: Where accepted proofs are recorded (``first_use``), sync or async.
        self.replay: Any = (
            settings.dpop_replay if settings.dpop_replay is not None else MemoryReplayStore()
        )
        self.fail_open = settings.dpop_replay_fail_open
        secret = settings.dpop_nonce_secret
        if isinstance(secret, str):
            secret = secret.encode("utf-8")
        self.nonces = Nonces(secret, settings.dpop_nonce_lifetime) if secret is not None else None
        self._proxies = settings.proxies
        header = settings.client_cert_header
        self._cert_header = header.encode("latin-1") if header is not None else None
        base = settings.public_url
        if base is None and settings.resource is not None:
            parts = urlsplit(settings.resource)
            base = f"{parts.scheme}://{parts.netloc}"
        #: The external base URL proofs name, when configured; else worked out per request.
        self.base = base
        self._warned = False
        self._aths: dict[bytes, str] = {}

    def check(
        self, binding: tuple[str | None, str | None], token: str, location: str,
        request: Request | None, now: float, digest: bytes | None = None,
    ) -> Proof | None:  # fmt: skip
        """Refuse the request unless it proves what the token is bound to (``binding``:
        its ``cnf.jkt`` and ``cnf.x5t#S256``); the proof to record against replay, if any.
        ``digest``: the token's cache digest, if known (its ``ath`` is then kept)."""
        jkt, x5t = binding
        proof = None
        if location == DPOP:
            if jkt is None:
                raise _under_dpop(InvalidToken(Reason.TOKEN_NOT_BOUND, "no cnf.jkt"))
            proof = self._proof(jkt, token, request, now, digest)
        elif jkt is not None:
            # RFC 9449 §7.2: the proof is the point of a bound token; without it, refuse.
            raise InvalidToken(Reason.TOKEN_BOUND, "a DPoP-bound token sent as a bearer token")
        elif self.mode == "required":
            raise _under_dpop(InvalidToken(Reason.DPOP_REQUIRED, "not a DPoP-bound token"))
        elif self.mode != "off" and request is not None and request.values(b"dpop"):
            raise InvalidRequest(Reason.DPOP_INVALID, "a DPoP proof with a Bearer token")
        if x5t is not None:
            self._certificate(x5t, request)
        return proof

    def _proof(
        self, jkt: str, token: str, request: Request | None, now: float, digest: bytes | None
    ) -> Proof:
        proofs = request.values(b"dpop") if request is not None else []
        if len(proofs) != 1:
            raise InvalidProof(Reason.DPOP_INVALID, f"{len(proofs)} DPoP headers, not one")
        assert request is not None
        try:
            value = proofs[0].decode("ascii").strip(" \t")
        except UnicodeDecodeError:
            raise InvalidProof(Reason.DPOP_INVALID, "the DPoP header is not ASCII") from None
        method = request.method.upper() if request.method else "GET"
        proof = self.rules.check(
            value, method=method, url=self.url(request), access_token=token, now=now,
            ath=self._ath(token, digest), jkt=jkt,
        )  # fmt: skip
        nonces = self.nonces
        if nonces is not None:
            age = nonces.age(proof.nonce, now)
            if age is None:
                stale = "no nonce" if proof.nonce is None else "stale"
                raise UseDPoPNonce(nonces.current(now), stale)
            if age and request.answer is not None:
                # RFC 9449 §8.2, §9: the next nonce on a success, before the client's one
                # lapses at the end of this step, saves it a use_dpop_nonce round trip.
                request.answer.append((b"dpop-nonce", nonces.current(now).encode("ascii")))
        return proof

    def _ath(self, token: str, digest: bytes | None) -> str:
        """The token's ``ath``, worked out once per token (by its cache digest): a client sends
        the same token with every proof."""
        if digest is None:
            return token_hash(token)
        ath = self._aths.get(digest)
        if ath is None:
            ath = token_hash(token)
            if len(self._aths) >= _ATHS:
                self._aths.clear()
            self._aths[digest] = ath
        return ath

    def url(self, request: Request) -> str:
        """The URL the client used, as its proof's ``htu`` must name it (query left out)."""
        path = quote(request.path, safe=_PATH_SAFE)
        if self.base is not None:
            return self.base + path
        scheme = _WS_SCHEMES.get(request.scheme, request.scheme)
        host = None
        if self._trusted(request):
            forwarded_proto = _last(request.values(b"x-forwarded-proto"))
            forwarded_host = _last(request.values(b"x-forwarded-host"))
            if forwarded_proto is not None:
                scheme = forwarded_proto.lower()
            host = forwarded_host
        if host is None:
            hosts = request.values(b"host")
            if len(hosts) != 1:
                raise InvalidRequest(Reason.MALFORMED_HOST, f"{len(hosts)} Host headers")
            host = hosts[0].decode("latin-1").strip(" \t")
        if not _HOST.fullmatch(host) or scheme not in ("http", "https"):
            raise InvalidRequest(Reason.MALFORMED_HOST, f"{host[:100]!r} over {scheme[:10]!r}")
        if not self._warned:
            self._warned = True
            logger.warning(
                "jwt_middleware: DPoP proofs are checked against the request's Host header; set "
                "public_url='https://...' (or resource=) to pin the URL clients must sign"
            )
        return f"{scheme}://{host}{path}"

    def _trusted(self, request: Request) -> bool:
        if not self._proxies or request.peer is None:
            return False
        try:
            peer = ipaddress.ip_address(request.peer)
        except ValueError:
            return False
        return any(peer in network for network in self._proxies)

    def _certificate(self, x5t: str, request: Request | None) -> None:
        from ._certs import certificate_thumbprint, forwarded_certificate

        header = self._cert_header
        if header is None or request is None or not self._trusted(request):
            raise InvalidToken(Reason.CERTIFICATE_MISMATCH, "no client certificate")
        values = request.values(header)
        if not values:
            raise InvalidToken(Reason.CERTIFICATE_MISMATCH, "no client certificate")
        if len(values) > 1:
            # Ambiguous, as a WSGI server's comma-joined value is: a 400 on both sides.
            raise InvalidRequest(Reason.MALFORMED_CLIENT_CERTIFICATE, "several certificate headers")
        thumbprint = certificate_thumbprint(forwarded_certificate(values[0]))
        if not hmac.compare_digest(thumbprint, x5t):
            raise InvalidToken(Reason.CERTIFICATE_MISMATCH, "another certificate")

    def replay_failed(self, exc: Exception) -> bool:
        """Fail closed (raise 503) unless configured to fail open; logged either way."""
        if not isinstance(exc, ReplayStoreError):
            logger.error("jwt_middleware: the DPoP replay store raised", exc_info=exc)
        if self.fail_open and not isinstance(exc, ReplayFull):
            # Never for a full store: it answered, and recording nothing while letting proofs
            # in would make every unrecorded proof replayable for as long as it stays full.
            logger.warning("jwt_middleware: DPoP replay unknown (%s); letting the proof in", exc)
            return True
        logger.warning("jwt_middleware: DPoP replay unknown (%s); refusing", exc)
        raise ReplayUnavailable(type(exc).__name__)

    def until(self, proof: Proof) -> float:
        """How long a proof must be remembered: while it could still be accepted, by any
        instance whose clock is within the leeway of ours."""
        return proof.iat + self.rules.max_age + self.rules.leeway


#: The binding of a token bound to nothing: one object, so the hot path tests it with ``is``.
UNBOUND: tuple[str | None, str | None] = (None, None)


def binding(claims: Any) -> tuple[str | None, str | None]:
    """``(cnf.jkt, cnf.x5t#S256)`` of verified claims (:data:`UNBOUND` for neither);
    InvalidToken when ``cnf`` is there but unreadable (a binding we cannot read must not become
    no binding)."""
    cnf = claims.get("cnf")
    if cnf is None:
        return UNBOUND
    if not isinstance(cnf, dict):
        raise InvalidToken(Reason.CLAIM_INVALID, "cnf is not an object")
    jkt, x5t = cnf.get("jkt"), cnf.get("x5t#S256")
    for name, value in (("jkt", jkt), ("x5t#S256", x5t)):
        # Thumbprints are base64url: ASCII (compare_digest refuses other text with TypeError).
        if value is not None and (not isinstance(value, str) or not value or not value.isascii()):
            raise InvalidToken(Reason.CLAIM_INVALID, f"cnf.{name} is not a thumbprint")
    return UNBOUND if jkt is None and x5t is None else (jkt, x5t)


def _last(values: list[bytes]) -> str | None:
    """The value the nearest proxy set: the last of the last header (proxies append)."""
    if not values:
        return None
    return values[-1].decode("latin-1").rsplit(",", 1)[-1].strip(" \t")


def _under_dpop(exc: InvalidToken) -> InvalidToken:
    exc.scheme = "DPoP"
    return exc
