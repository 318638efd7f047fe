"""A real token issuer on loopback, for tests and demos.

:class:`LocalIssuer` holds signing keys, mints tokens, and serves OIDC discovery and a JWKS over
real HTTP on ``127.0.0.1``. It can rotate keys and make its key server misbehave on demand
(refuse connections, hang, drip bytes, answer with errors, garbage, huge, compressed or truncated
bodies, wrong media types, redirects), so tests exercise the same network paths a real identity
provider would.

Example::

    with LocalIssuer(audience="api://orders") as issuer:
        token = issuer.mint(subject="alice", scope="orders:read")
        ...  # point the middleware at issuer.issuer / issuer.jwks_url
        issuer.set_fault("status", status=503)

This module is for tests and local demos only. The ``/token`` endpoint hands a valid token to
anyone who can reach the port.
"""

from __future__ import annotations

import base64
import enum
import errno
import hashlib
import html
import json
import secrets
import socket
import sys
import threading
import time
import uuid
import zlib
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from socketserver import TCPServer
from typing import Any, Final, cast
from urllib.parse import parse_qs, quote, unquote_plus, urlencode, urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed448, ed25519, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from jwt.algorithms import Algorithm, get_default_algorithms

from ._certs import certificate_thumbprint
from ._errors import ConfigurationError, UsageError

__all__ = [
    "FAULT_MODES",
    "OMIT",
    "ClientCertificate",
    "LocalIssuer",
    "SigningKey",
    "client_certificate",
    "dpop_headers",
    "dpop_proof",
    "generate_key",
]

JWKS_PATH: Final = "/.well-known/jwks.json"
DISCOVERY_PATH: Final = "/.well-known/openid-configuration"
TOKEN_PATH: Final = "/token"
INTROSPECTION_PATH: Final = "/introspect"
AUTHORIZE_PATH: Final = "/authorize"
# Redirect faults point here by default: a different URL on the same server that answers with
# the normal, fault-free document, so a client that wrongly follows redirects visibly succeeds.
MOVED_PREFIX: Final = "/moved"


class _Omit(enum.Enum):
    OMIT = "OMIT"


class _Default(enum.Enum):
    DEFAULT = "DEFAULT"


OMIT: Final = _Omit.OMIT
"""Give this as a claim (or header) value to remove a claim (or header) that is set by default."""

_DEFAULT: Final = _Default.DEFAULT

_RSA_ALGS: Final = frozenset({"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"})
_EC_CURVES: Final[dict[str, ec.EllipticCurve]] = {
    "ES256": ec.SECP256R1(),
    "ES384": ec.SECP384R1(),
    "ES512": ec.SECP521R1(),
}
_HMAC_SIZES: Final = {"HS256": 32, "HS384": 48, "HS512": 64}
SUPPORTED_ALGORITHMS: Final = frozenset(
    {*_RSA_ALGS, *_EC_CURVES, *_HMAC_SIZES, "EdDSA"},
)
_EC_CRV_NAMES: Final = {"secp256r1": "P-256", "secp384r1": "P-384", "secp521r1": "P-521"}
_TIME_CLAIMS: Final = ("exp", "iat", "nbf")
_ALGORITHMS: Final[dict[str, Algorithm]] = get_default_algorithms()


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _uint(value: int, length: int | None = None) -> bytes:
    size = length if length is not None else max(1, (value.bit_length() + 7) // 8)
    return value.to_bytes(size, "big")


def _numeric(value: float) -> float:
    """A NumericDate as an int when it is whole, as IdPs write them (``"exp":1700000000``)."""
    return int(value) if float(value).is_integer() else value


def _strip_omitted(values: dict[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in values.items() if value is not OMIT}


@dataclass(frozen=True)
class SigningKey:
    """A private signing key with its JWS ``kid`` and ``alg``.

    ``private_key`` is a ``cryptography`` private key object, or ``bytes`` for ``HS*``. The key
    type is not checked against ``alg``, so a test can publish a JWK whose ``alg`` does not match
    its ``kty`` on purpose; signing with such a key raises.
    """

    kid: str
    alg: str
    private_key: Any = field(repr=False)

    def __post_init__(self) -> None:
        if self.alg not in SUPPORTED_ALGORITHMS:
            raise ConfigurationError(f"unsupported algorithm {self.alg!r}")

    @property
    def is_symmetric(self) -> bool:
        """True for ``HS*`` keys, which are never published."""
        return self.alg in _HMAC_SIZES

    def public_key(self) -> Any:
        """The ``cryptography`` public key object. ``HS*`` keys have none: raises ValueError."""
        if self.is_symmetric or isinstance(self.private_key, bytes | str):
            raise ConfigurationError("a symmetric key has no public part")
        return self.private_key.public_key()

    def public_jwk(self) -> dict[str, Any]:
        """The RFC 7517 public JWK with ``kid``, ``alg`` and ``use: "sig"``; no private members."""
        public = self.public_key()
        jwk: dict[str, Any]
        if isinstance(public, rsa.RSAPublicKey):
            numbers = public.public_numbers()
            jwk = {"kty": "RSA", "n": _b64url(_uint(numbers.n)), "e": _b64url(_uint(numbers.e))}
        elif isinstance(public, ec.EllipticCurvePublicKey):
            size = (public.curve.key_size + 7) // 8
            point = public.public_numbers()
            jwk = {
                "kty": "EC",
                "crv": _EC_CRV_NAMES[public.curve.name],
                "x": _b64url(_uint(point.x, size)),
                "y": _b64url(_uint(point.y, size)),
            }
        elif isinstance(public, ed25519.Ed25519PublicKey | ed448.Ed448PublicKey):
            raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            crv = "Ed25519" if isinstance(public, ed25519.Ed25519PublicKey) else "Ed448"
            jwk = {"kty": "OKP", "crv": crv, "x": _b64url(raw)}
        else:
            raise ConfigurationError(f"cannot express {type(public).__name__} as a JWK")
        jwk.update({"kid": self.kid, "alg": self.alg, "use": "sig"})
        return jwk

    @property
    def thumbprint(self) -> str:
        """The RFC 7638 SHA-256 thumbprint of the public key: what a DPoP-bound token names in
        ``cnf.jkt``. ``HS*`` keys: raises ValueError."""
        from ._dpop import jwk_thumbprint

        return jwk_thumbprint(self.public_jwk())

    def public_pem(self) -> str:
        """The public key as a SubjectPublicKeyInfo PEM. ``HS*`` keys: raises ValueError."""
        pem: bytes = self.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return pem.decode("ascii")

    def sign(
        self,
        claims: Mapping[str, Any],
        headers: Mapping[str, Any] | None = None,
        *,
        kid: str | _Default | None = _DEFAULT,
    ) -> str:
        """Sign ``claims`` as a compact JWS with this key and its algorithm.

        The header is ``{"alg": self.alg, "typ": "JWT", "kid": kid}`` (``kid`` defaults to
        ``self.kid``; ``kid=None`` leaves it out), then ``headers`` adds or overrides parameters;
        a value of :data:`OMIT` removes one. Overriding ``"alg"`` changes only what the header
        claims, never how the token is signed, and header values are not validated, so tests can
        build tokens that lie. ``datetime`` values of ``exp``/``iat``/``nbf`` become NumericDates.
        """
        header: dict[str, Any] = {"alg": self.alg, "typ": "JWT"}
        chosen_kid = self.kid if kid is _DEFAULT else kid
        if chosen_kid is not None:
            header["kid"] = chosen_kid
        header.update(headers or {})
        payload = dict(claims)
        for name in _TIME_CLAIMS:
            if isinstance(payload.get(name), datetime):
                payload[name] = int(payload[name].timestamp())
        segments = [
            _b64url(json.dumps(_strip_omitted(part), separators=(",", ":")).encode())
            for part in (header, payload)
        ]
        signing_input = ".".join(segments).encode("ascii")
        algorithm = _ALGORITHMS[self.alg]
        signature = algorithm.sign(signing_input, algorithm.prepare_key(self.private_key))
        return f"{signing_input.decode('ascii')}.{_b64url(signature)}"


def dpop_proof(
    key: SigningKey,
    method: str,
    url: str,
    *,
    access_token: str | None = None,
    nonce: str | None = None,
    now: float | None = None,
    claims: Mapping[str, Any] | None = None,
    headers: Mapping[str, Any] | None = None,
) -> str:
    """A DPoP proof (RFC 9449 §4) for one request, signed by ``key`` (asymmetric): ``typ``
    ``dpop+jwt``, the public ``jwk``, a fresh ``jti``, ``htm``/``htu``, ``iat`` (``now``,
    default the current time), ``ath`` of ``access_token`` and ``nonce`` when given. ``claims``
    and ``headers`` add or override (:data:`OMIT` removes), to build proofs that lie."""
    from ._dpop import token_hash

    body: dict[str, Any] = {
        "jti": uuid.uuid4().hex,
        "htm": method,
        "htu": url,
        "iat": int(time.time()) if now is None else now,
    }
    if access_token is not None:
        body["ath"] = token_hash(access_token)
    if nonce is not None:
        body["nonce"] = nonce
    body.update(claims or {})
    header = {"typ": "dpop+jwt", "jwk": key.public_jwk(), **(headers or {})}
    return key.sign(_strip_omitted(body), header, kid=None)


def dpop_headers(
    token: str, key: SigningKey, method: str, url: str, *, nonce: str | None = None
) -> dict[str, str]:
    """The headers of one DPoP request: ``Authorization: DPoP <token>`` and a fresh proof for
    ``method`` and ``url`` signed by ``key`` (the key ``token`` is bound to, as
    ``LocalIssuer.mint(dpop_key=key)`` binds it), e.g.
    ``client.get("/orders", headers=dpop_headers(token, key, "GET", "http://testserver/orders"))``."""
    proof = dpop_proof(key, method, url, access_token=token, nonce=nonce)
    return {"authorization": f"DPoP {token}", "dpop": proof}


def generate_key(alg: str = "RS256", *, kid: str | None = None, rsa_bits: int = 2048) -> SigningKey:
    """A new random key for ``alg`` (RS*/PS*: RSA ``rsa_bits``; ES256/384/512: P-256/384/521;
    EdDSA: Ed25519; HS256/384/512: 32/48/64 random bytes). ``kid`` defaults to a random id."""
    private_key: Any
    if alg in _RSA_ALGS:
        private_key = rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    elif alg in _EC_CURVES:
        private_key = ec.generate_private_key(_EC_CURVES[alg])
    elif alg == "EdDSA":
        private_key = ed25519.Ed25519PrivateKey.generate()
    elif alg in _HMAC_SIZES:
        private_key = secrets.token_bytes(_HMAC_SIZES[alg])
    else:
        raise ConfigurationError(f"unsupported algorithm {alg!r}")
    return SigningKey(
        kid=kid if kid is not None else secrets.token_urlsafe(8), alg=alg, private_key=private_key
    )


#: The header forms :meth:`ClientCertificate.header` writes.
CERTIFICATE_HEADER_FORMS: Final = ("rfc9440", "nginx", "pem")


@dataclass(frozen=True)
class ClientCertificate:
    """A client's X.509 certificate, as a TLS-terminating proxy would forward it, with the
    RFC 8705 ``x5t#S256`` thumbprint a token bound to it names in ``cnf``."""

    pem: str = field(repr=False)
    der: bytes = field(repr=False)
    thumbprint: str

    def header(self, form: str = "rfc9440") -> str:
        """The forwarded header value in ``form``:

        * ``"rfc9440"``: RFC 9440 ``Client-Cert``, ``:<base64 DER>:``;
        * ``"nginx"``: the URL-encoded PEM of nginx ``$ssl_client_escaped_cert``;
        * ``"pem"``: the PEM on one line, its line breaks as spaces (what some proxies send).
        """
        if form == "rfc9440":
            return ":" + base64.b64encode(self.der).decode("ascii") + ":"
        if form == "nginx":
            return quote(self.pem, safe="")
        if form == "pem":
            return " ".join(self.pem.split())
        raise ConfigurationError(
            f"unknown certificate header form {form!r}; expected one of {CERTIFICATE_HEADER_FORMS}"
        )


def client_certificate(common_name: str = "client") -> ClientCertificate:
    """A fresh self-signed EC P-256 client certificate for ``CN=<common_name>``, valid from a
    minute ago for a day (a proxy checks it; the resource server only compares thumbprints)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.now(timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .sign(key, hashes.SHA256())
    )
    der = certificate.public_bytes(serialization.Encoding.DER)
    pem = certificate.public_bytes(serialization.Encoding.PEM).decode("ascii")
    return ClientCertificate(pem=pem, der=der, thumbprint=certificate_thumbprint(der))


FAULT_MODES: Final[dict[str | None, frozenset[str]]] = {
    None: frozenset(),
    "down": frozenset(),
    "slow": frozenset({"delay"}),
    "status": frozenset({"status"}),
    "garbage": frozenset(),
    "wrong_shape": frozenset({"body"}),
    "huge": frozenset({"size"}),
    "redirect": frozenset({"status", "location"}),
    "rotate_each": frozenset(),
    "truncated": frozenset(),
    "drip_headers": frozenset({"interval"}),
    "drip_body": frozenset({"interval"}),
    "encoding": frozenset({"encoding", "size"}),
    "content_type": frozenset({"content_type"}),
}
"""Fault modes accepted by :meth:`LocalIssuer.set_fault`, each with the parameters it takes."""

_FAULT_TARGETS: Final = {"jwks": JWKS_PATH, "discovery": DISCOVERY_PATH}
# POST endpoints that faults can also target (the introspection endpoint), and the modes that
# make sense for an answer built per request.
_POST_FAULT_TARGETS: Final = {"introspection": INTROSPECTION_PATH}
_POST_FAULT_MODES: Final = frozenset(
    {"down", "slow", "status", "garbage", "wrong_shape", "huge", "redirect", "encoding"}
    | {"content_type", "truncated"}
)


@dataclass(frozen=True)
class _Fault:
    mode: str | None = None
    params: Mapping[str, Any] = field(default_factory=dict)
    paths: frozenset[str] = frozenset({JWKS_PATH})


_ZLIB_WBITS: Final = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def _encode(chunks: Iterable[bytes], encoding: str) -> bytes:
    """``chunks`` with each content coding of ``encoding`` applied in order (streamed, so a bomb
    never sits in memory decoded). Codings zlib cannot make are left as a label only."""
    names = [name.strip().lower() for name in encoding.split(",")]
    layers = [zlib.compressobj(9, zlib.DEFLATED, _ZLIB_WBITS[n]) for n in names if n in _ZLIB_WBITS]
    out: list[bytes] = []
    for chunk in chunks:
        for layer in layers:
            chunk = layer.compress(chunk)
        out.append(chunk)
    tail = b""
    for layer in layers:  # each layer's last bytes still go through the layers after it
        tail = layer.compress(tail) + layer.flush()
    out.append(tail)
    return b"".join(out)


def _basic_credentials(authorization: str) -> tuple[str, str] | None:
    """The (id, secret) of an HTTP Basic header, each form-decoded (RFC 6749 §2.3.1)."""
    scheme, _, encoded = authorization.partition(" ")
    if scheme.lower() != "basic":
        return None
    try:
        decoded = base64.b64decode(encoded.strip(), validate=True).decode("utf-8")
    except (ValueError, UnicodeDecodeError):
        return None
    client_id, colon, secret = decoded.partition(":")
    if not colon:
        return None
    return unquote_plus(client_id), unquote_plus(secret)


@dataclass(frozen=True)
class _CodeGrant:
    """What one authorization code stands for, until it is redeemed or expires."""

    client_id: str
    redirect_uri: str
    challenge: str
    subject: str
    scope: str | None
    resource: str | None
    expires: float  # time.monotonic()


class _Server(ThreadingHTTPServer):
    """One listening socket. "down" closes it; recovery binds a new one on the same port."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 64

    def __init__(self, address: tuple[str, int], issuer: LocalIssuer) -> None:
        if ":" in address[0]:
            self.address_family = socket.AF_INET6
        self.issuer = issuer
        # Set when this listener goes away, so handlers sleeping in a "slow" fault wake up.
        self.closing = threading.Event()
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind does a reverse DNS lookup (getfqdn), which can stall.
        TCPServer.server_bind(self)
        host, port = self.server_address[:2]
        self.server_name = str(host)
        self.server_port = int(port)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            self._connections.discard(request)
        super().shutdown_request(request)

    def drop_connections(self) -> None:
        """Cut open (keep-alive or in-flight) connections, as a dying server would."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        # Clients hanging up, timing out or being cut by "down" are expected, not bugs.
        if isinstance(sys.exc_info()[1], OSError):
            return
        super().handle_error(request, client_address)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "LocalIssuer/1"
    # Idle keep-alive connections are dropped after this, so handler threads do not pile up.
    timeout = 30

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet: the request line of /token and the like is nobody's business

    def handle(self) -> None:
        try:
            super().handle()
        except OSError:
            self.close_connection = True

    def do_GET(self) -> None:
        server = cast(_Server, self.server)
        server.issuer._serve(self, server)

    def _method_not_allowed(self) -> None:
        self.close_connection = True  # any request body is left unread
        self.send_response(405)
        self.send_header("Allow", "GET")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self) -> None:
        server = cast(_Server, self.server)
        server.issuer._serve_post(self, server)

    def do_OPTIONS(self) -> None:
        cast(_Server, self.server).issuer._serve_preflight(self)

    do_PUT = do_DELETE = do_PATCH = _method_not_allowed

    def read_form(self) -> dict[str, list[str]] | None:
        """The request's form body (``application/x-www-form-urlencoded``, at most 64 KiB), or
        None when it has none or is malformed."""
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            return None
        if not 0 <= length <= 65536:
            self.close_connection = True  # the body is left unread
            return None
        try:
            return parse_qs(self.rfile.read(length).decode("ascii"), strict_parsing=False)
        except UnicodeDecodeError:
            return None

    def send_body(
        self,
        status: int,
        body: bytes,
        content_type: str | None = "application/json",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        if content_type is not None:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


class LocalIssuer:
    """Signing keys, OIDC discovery and a JWKS served over real HTTP on 127.0.0.1, token minting,
    key rotation, and key-server faults on demand.

    Endpoints (GET only):

    * ``/.well-known/openid-configuration``: discovery (``issuer``, ``jwks_uri``, ...)
    * ``/.well-known/jwks.json``: the public JWKs of the published asymmetric keys
    * ``/token?sub=...&scope=...&resource=...``: a freshly minted access token (``aud`` is
      ``resource`` when given, RFC 8707, else :attr:`audience`). **For local demos only**: it
      gives a valid token to anyone who can reach the port.
    * ``/moved/<path>``: the fault-free document of ``<path>``; default target of ``redirect``.

    And ``POST /introspect``: RFC 7662 introspection of the tokens :meth:`opaque_token` made,
    for the client ``introspection_client`` (id, secret) authenticated by HTTP Basic or in the
    form (RFC 6749 §2.3.1); other credentials get 401 ``invalid_client``.

    All state changes are thread-safe and take effect for the next request.
    """

    def __init__(
        self,
        *,
        algorithm: str = "RS256",
        issuer: str | None = None,
        audience: str = "api://default",
        host: str = "127.0.0.1",
        port: int = 0,
        cache_control: str | None = None,
        introspection_client: tuple[str, str] = ("resource-server", "introspection-secret"),
    ) -> None:
        self.algorithm = algorithm
        self.introspection_client = introspection_client
        # Opaque tokens and their claims, server side as an authorization server keeps them.
        self._opaque: dict[str, dict[str, Any]] = {}
        self._revoked: set[str] = set()
        self._introspection_requests = 0
        self.audience = audience
        self.host = host
        self._configured_issuer = issuer
        self._port = port
        self._lock = threading.RLock()  # keys, fault, counters
        self._lifecycle = threading.RLock()  # start/stop/down/recover
        self._current = generate_key(algorithm)
        self._published: list[SigningKey] = [self._current]
        self._fault = _Fault()
        self._cache_control = cache_control
        self._jwks_requests = 0
        self._discovery_requests = 0
        self._request_log: list[tuple[str, float]] = []
        # The authorization-code clients (id -> redirect URIs) and the codes not yet redeemed.
        self._clients: dict[str, frozenset[str]] = {}
        self._codes: dict[str, _CodeGrant] = {}
        self._running = False
        self._bound = False
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ---------------------------------------------------------------------------

    def start(self) -> LocalIssuer:
        """Start listening (idempotent); returns ``self``. Honors a ``down`` fault set earlier."""
        with self._lifecycle:
            if self._running:
                return self
            self._listen()
            self._running = True
            if self.fault == "down":
                self._close_listener()
            return self

    def stop(self) -> None:
        """Stop listening and cut open connections (idempotent). ``start()`` reuses the port."""
        with self._lifecycle:
            self._running = False
            self._close_listener()

    def __enter__(self) -> LocalIssuer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def _listen(self) -> None:
        # Rebinding the same port right after closing it can briefly fail; SO_REUSEADDR covers
        # TIME_WAIT, the retry covers the rest.
        deadline = time.monotonic() + 3.0
        while True:
            try:
                server = _Server((self.host, self._port), self)
                break
            except OSError as error:
                if (
                    error.errno != errno.EADDRINUSE
                    or not self._bound
                    or (time.monotonic() > deadline)
                ):
                    raise
                time.sleep(0.02)
        self._port = server.server_port
        self._bound = True
        thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits at most this long for the loop
            name=f"LocalIssuer:{self._port}",
            daemon=True,
        )
        self._server, self._thread = server, thread
        thread.start()

    def _close_listener(self) -> None:
        server, thread = self._server, self._thread
        self._server = self._thread = None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        server.closing.set()
        server.drop_connections()
        if thread is not None:
            thread.join(timeout=5)

    # -- addresses ---------------------------------------------------------------------------

    @property
    def port(self) -> int:
        """The listening port (fixed at the first ``start()``; kept across ``down``/recovery)."""
        if not self._bound:
            raise RuntimeError(
                "LocalIssuer is not started: use it as a context manager "
                "(`with LocalIssuer() as issuer:`) or call start() first"
            )
        return self._port

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``; valid after ``start()``."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def issuer(self) -> str:
        """The ``iss`` of minted tokens and of discovery: as configured, else :attr:`url`."""
        return self._configured_issuer if self._configured_issuer is not None else self.url

    @property
    def jwks_url(self) -> str:
        return self.url + JWKS_PATH

    @property
    def discovery_url(self) -> str:
        return self.url + DISCOVERY_PATH

    @property
    def token_url(self) -> str:
        return self.url + TOKEN_PATH

    @property
    def authorization_url(self) -> str:
        """The authorization endpoint (GET: a login page; see :meth:`register_client`)."""
        return self.url + AUTHORIZE_PATH

    @property
    def introspection_url(self) -> str:
        """The RFC 7662 introspection endpoint (POST)."""
        return self.url + INTROSPECTION_PATH

    # -- keys --------------------------------------------------------------------------------

    @property
    def current_key(self) -> SigningKey:
        """The key new tokens are signed with."""
        with self._lock:
            return self._current

    @property
    def published_keys(self) -> list[SigningKey]:
        """The keys served in the JWKS (a copy; ``HS*`` keys in it are never actually served)."""
        with self._lock:
            return list(self._published)

    def rotate(self, algorithm: str | None = None, *, retire_old: bool = False) -> SigningKey:
        """Generate a key (``algorithm`` defaults to the current key's), publish it and sign with
        it from now on. Older keys stay published unless ``retire_old``. Returns the new key."""
        key = generate_key(algorithm or self.current_key.alg)
        with self._lock:
            if retire_old:
                self._published.clear()
            self._published.append(key)
            self._current = key
        return key

    def add_key(self, key: SigningKey, *, publish: bool = True, make_current: bool = False) -> None:
        """Add ``key``: publish it (unless ``publish=False``) and/or sign with it from now on.

        ``publish=False, make_current=True`` makes tokens whose ``kid`` the JWKS does not know.
        """
        with self._lock:
            if publish and key not in self._published:
                self._published.append(key)
            if make_current:
                self._current = key

    def unpublish(self, key: SigningKey) -> None:
        """Stop serving ``key`` in the JWKS (no-op if it is not published). If it is the current
        key, tokens are still signed with it."""
        with self._lock:
            self._published = [published for published in self._published if published != key]

    def jwks(self) -> dict[str, Any]:
        """The JWKS document currently served (without faults)."""
        with self._lock:
            keys = [key for key in self._published if not key.is_symmetric]
        return {"keys": [key.public_jwk() for key in keys]}

    def discovery(self) -> dict[str, Any]:
        """The OIDC discovery document currently served (without faults)."""
        with self._lock:
            algs = list(dict.fromkeys(k.alg for k in self._published if not k.is_symmetric))
        return {
            "issuer": self.issuer,
            "jwks_uri": self.jwks_url,
            "token_endpoint": self.token_url,
            "introspection_endpoint": self.introspection_url,
            "authorization_endpoint": self.authorization_url,
            "code_challenge_methods_supported": ["S256"],
            "grant_types_supported": ["authorization_code"],
            "response_types_supported": ["code", "token"],
            "subject_types_supported": ["public"],
            "id_token_signing_alg_values_supported": algs or [self.current_key.alg],
        }

    # -- tokens ------------------------------------------------------------------------------

    def mint(
        self,
        claims: Mapping[str, Any] | None = None,
        *,
        subject: str = "user-1",
        audience: str | list[str] | _Default | None = _DEFAULT,
        scope: str | None = None,
        expires_in: float | None = 300,
        not_before: float | None = None,
        issued_at: float | None = None,
        now: float | None = None,
        key: SigningKey | None = None,
        kid: str | _Default | None = _DEFAULT,
        headers: Mapping[str, Any] | None = None,
        jti: bool = True,
        dpop_key: SigningKey | None = None,
        certificate: ClientCertificate | None = None,
    ) -> str:
        """Mint a signed JWT.

        Default claims: ``iss``, ``sub``, ``aud`` (``audience``, default :attr:`audience`;
        ``None`` leaves it out), ``iat`` (``issued_at`` or ``now``), ``nbf`` (only if
        ``not_before``, absolute), ``exp`` (``now + expires_in``; ``None`` leaves it out),
        ``jti`` (random, unless ``jti=False``), ``scope`` (only if given). ``now`` defaults to
        the current time in whole seconds. ``claims`` then adds or overrides; a value of
        :data:`OMIT` removes a default claim. ``key`` defaults to :attr:`current_key`; ``kid``
        and ``headers`` are as in :meth:`SigningKey.sign`. ``dpop_key`` binds the token to that
        key (RFC 9449 ``cnf.jkt``): present it with :func:`dpop_proof` proofs signed by it.
        ``certificate`` binds it to that client certificate (RFC 8705 ``cnf["x5t#S256"]``):
        present it in the forwarded header, :meth:`ClientCertificate.header`. Both may be given:
        ``cnf`` then names both.
        """
        moment = int(time.time()) if now is None else now
        payload: dict[str, Any] = {"iss": self.issuer, "sub": subject}
        chosen_audience = self.audience if audience is _DEFAULT else audience
        if chosen_audience is not None:
            payload["aud"] = chosen_audience
        payload["iat"] = _numeric(issued_at if issued_at is not None else moment)
        if not_before is not None:
            payload["nbf"] = _numeric(not_before)
        if expires_in is not None:
            payload["exp"] = _numeric(moment + expires_in)
        if jti:
            payload["jti"] = uuid.uuid4().hex
        if scope is not None:
            payload["scope"] = scope
        confirmation: dict[str, str] = {}
        if dpop_key is not None:
            confirmation["jkt"] = dpop_key.thumbprint
        if certificate is not None:
            confirmation["x5t#S256"] = certificate.thumbprint
        if confirmation:
            payload["cnf"] = confirmation
        payload.update(claims or {})
        signer = key if key is not None else self.current_key
        return signer.sign(_strip_omitted(payload), headers, kid=kid)

    def opaque_token(
        self,
        *,
        subject: str = "user-1",
        scope: str | None = None,
        audience: str | list[str] | _Default | None = _DEFAULT,
        expires_in: float | None = 300,
        client_id: str = "client-1",
        now: float | None = None,
        **claims: Any,
    ) -> str:
        """A random opaque access token (no dots: never taken for a JWT) whose claims stay here
        and are told only to the introspection endpoint: ``iss``, ``sub``, ``aud`` (as in
        :meth:`mint`), ``iat``, ``exp`` (``None`` leaves it out), ``client_id``, ``jti``,
        ``scope`` (if given), ``token_type: "Bearer"``, then ``claims`` (:data:`OMIT` removes)."""
        moment = int(time.time()) if now is None else now
        chosen_audience = self.audience if audience is _DEFAULT else audience
        values: dict[str, Any] = {"iss": self.issuer, "sub": subject, "aud": chosen_audience}
        values.update(iat=_numeric(moment), client_id=client_id, jti=uuid.uuid4().hex)
        values["token_type"] = "Bearer"
        if expires_in is not None:
            values["exp"] = _numeric(moment + expires_in)
        if scope is not None:
            values["scope"] = scope
        values.update(claims)
        token = secrets.token_urlsafe(32)
        kept = _strip_omitted({name: value for name, value in values.items() if value is not None})
        with self._lock:
            self._opaque[token] = kept
        return token

    def revoke_opaque(self, token: str) -> None:
        """Revoke ``token``, an opaque one or a JWT this issuer signed: introspection answers
        ``active: false`` for it from now on."""
        with self._lock:
            self._opaque.pop(token, None)
            self._revoked.add(token)

    # -- accounting --------------------------------------------------------------------------

    @property
    def jwks_requests(self) -> int:
        """Requests that reached the JWKS path (faulty answers included)."""
        with self._lock:
            return self._jwks_requests

    @property
    def discovery_requests(self) -> int:
        """Requests that reached the discovery path (faulty answers included)."""
        with self._lock:
            return self._discovery_requests

    @property
    def request_log(self) -> list[tuple[str, float]]:
        """``(path, time.monotonic() at arrival)`` of every request, oldest first (a copy)."""
        with self._lock:
            return list(self._request_log)

    @property
    def introspection_requests(self) -> int:
        """Requests that reached the introspection path (faulty and refused ones included)."""
        with self._lock:
            return self._introspection_requests

    def reset_counts(self) -> None:
        """Zero the request counters and clear the request log."""
        with self._lock:
            self._jwks_requests = self._discovery_requests = 0
            self._introspection_requests = 0
            self._request_log.clear()

    # -- faults ------------------------------------------------------------------------------

    @property
    def cache_control(self) -> str | None:
        """When set, every response to the JWKS path carries this ``Cache-Control`` header."""
        with self._lock:
            return self._cache_control

    @cache_control.setter
    def cache_control(self, value: str | None) -> None:
        with self._lock:
            self._cache_control = value

    @property
    def fault(self) -> str | None:
        """The current fault mode (``None``: normal service)."""
        with self._lock:
            return self._fault.mode

    def set_fault(
        self, mode: str | None, *, paths: Iterable[str] = ("jwks",), **params: Any
    ) -> None:
        """Make the key server misbehave from the next request on (``None``: behave again).

        ``paths`` picks the endpoints affected, among ``"jwks"`` (default), ``"discovery"`` and
        ``"introspection"`` (not with ``rotate_each`` or the drip modes; ``redirect`` there points
        at ``/moved/introspect`` by default, which answers ``active: true`` for any token, so a
        client that follows it visibly fails); ``"down"`` affects the whole server. Modes and
        their parameters:

        * ``"down"``: close the listening socket and cut open connections (connections are
          refused); leaving this mode listens again on the same port.
        * ``"slow"``, ``delay=1.0``: wait ``delay`` seconds, then answer normally.
        * ``"status"``, ``status=500``: that status with a small JSON error body.
        * ``"garbage"``: 200, ``application/json``, a body that is not JSON.
        * ``"wrong_shape"``, ``body={"keys": "nope"}``: 200 with ``body`` as JSON.
        * ``"huge"``, ``size=1048576``: 200, the normal document padded with a ``"padding"``
          member to ``size`` bytes (at least the document), streamed with a Content-Length.
        * ``"redirect"``, ``status=302``, ``location=<url>/moved/<path>``: a redirect; the
          default target serves the normal document, so following it would succeed.
        * ``"rotate_each"``: each JWKS fetch returns one brand-new ES256 key that nothing signs
          with (JWKS path only).
        * ``"truncated"``: 200 with the normal body's Content-Length but only half the body,
          then the connection is closed.
        * ``"drip_headers"``, ``interval=0.1``: the normal answer, its status line and headers
          sent one byte every ``interval`` seconds (a read timeout longer than that never trips).
        * ``"drip_body"``, ``interval=0.1``: the normal headers at once, then the body one byte
          every ``interval`` seconds.
        * ``"encoding"``, ``encoding="gzip"``, ``size=0``: 200 with ``Content-Encoding:
          <encoding>`` and the normal document, padded with trailing spaces to ``size`` bytes
          (a compression bomb when large; still valid JSON once decoded), compressed with each
          listed coding in order (``gzip``/``x-gzip``, ``deflate`` (zlib); ``identity`` and any
          other name are only labelled, e.g. ``"br"``). ``"gzip, gzip"``: gzip twice.
        * ``"content_type"``, ``content_type=None``: 200, the normal document with that
          Content-Type (``None``: no Content-Type header at all).
        """
        if mode not in FAULT_MODES:
            raise ConfigurationError(
                f"unknown fault mode {mode!r}; expected one of {list(FAULT_MODES)}"
            )
        unknown = set(params) - FAULT_MODES[mode]
        if unknown:
            raise UsageError(f"fault {mode!r} takes no parameter(s) {sorted(unknown)}")
        targets = frozenset(paths)
        known = {**_FAULT_TARGETS, **_POST_FAULT_TARGETS}
        if not targets or not targets <= known.keys():
            raise ConfigurationError(f"paths must be among {sorted(known)}, got {sorted(targets)}")
        posted = targets & _POST_FAULT_TARGETS.keys()
        if mode is not None and posted and mode not in _POST_FAULT_MODES:
            raise ConfigurationError(f"fault {mode!r} does not apply to the introspection path")
        if mode == "rotate_each" and targets != {"jwks"}:
            raise ConfigurationError("rotate_each applies to the JWKS path only")
        fault = _Fault(mode, dict(params), frozenset(known[t] for t in targets))
        with self._lifecycle:
            with self._lock:
                was_down = self._fault.mode == "down"
                self._fault = fault
            if self._running and mode == "down" and not was_down:
                self._close_listener()
            elif self._running and mode != "down" and was_down:
                self._listen()

    # -- serving -----------------------------------------------------------------------------

    def _serve(self, handler: _Handler, server: _Server) -> None:
        path = urlsplit(handler.path).path
        with self._lock:
            self._request_log.append((path, time.monotonic()))
            if path == JWKS_PATH:
                self._jwks_requests += 1
            elif path == DISCOVERY_PATH:
                self._discovery_requests += 1
            fault = self._fault
            cache_control = self._cache_control
        headers = {"Cache-Control": cache_control} if path == JWKS_PATH and cache_control else {}

        if path.startswith(MOVED_PREFIX + "/"):
            target = path[len(MOVED_PREFIX) :]
            if target in _FAULT_TARGETS.values():
                handler.send_body(200, self._document(target), headers=headers)
                return
        if path == TOKEN_PATH:
            self._serve_token(handler)
            return
        if path == AUTHORIZE_PATH:
            self._serve_authorize(handler, parse_qs(urlsplit(handler.path).query))
            return
        if path not in _FAULT_TARGETS.values():
            handler.send_body(404, b'{"error":"not_found"}')
            return
        if fault.mode is None or path not in fault.paths:
            handler.send_body(200, self._document(path), headers=headers)
            return

        params = fault.params
        if fault.mode == "slow":
            if server.closing.wait(float(params.get("delay", 1.0))):
                handler.close_connection = True
                return
            handler.send_body(200, self._document(path), headers=headers)
        elif fault.mode == "status":
            status = int(params.get("status", 500))
            body = json.dumps({"error": f"injected status {status}"}).encode()
            handler.send_body(status, body, headers=headers)
        elif fault.mode == "garbage":
            handler.send_body(200, b"<html>this is not JSON {", headers=headers)
        elif fault.mode == "wrong_shape":
            body = json.dumps(params.get("body", {"keys": "nope"})).encode()
            handler.send_body(200, body, headers=headers)
        elif fault.mode == "huge":
            self._serve_huge(handler, path, int(params.get("size", 1 << 20)), headers)
        elif fault.mode == "redirect":
            location = str(params.get("location", self.url + MOVED_PREFIX + path))
            handler.send_body(
                int(params.get("status", 302)), b"", headers={**headers, "Location": location}
            )
        elif fault.mode == "rotate_each":
            # EC, not RSA: key generation happens on every fetch and must stay cheap.
            body = json.dumps({"keys": [generate_key("ES256").public_jwk()]}).encode()
            handler.send_body(200, body, headers=headers)
        elif fault.mode in ("drip_headers", "drip_body"):
            self._serve_drip(handler, server, path, fault.mode, float(params.get("interval", 0.1)))
        elif fault.mode == "encoding":
            encoding = str(params.get("encoding", "gzip"))
            body = _encode(self._padded(path, int(params.get("size", 0))), encoding)
            handler.send_body(200, body, headers={**headers, "Content-Encoding": encoding})
        elif fault.mode == "content_type":
            content_type = params.get("content_type")
            handler.send_body(
                200,
                self._document(path),
                None if content_type is None else str(content_type),
                headers=headers,
            )
        elif fault.mode == "truncated":
            body = self._document(path)
            handler.close_connection = True
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")
            for name, value in headers.items():
                handler.send_header(name, value)
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])
        else:  # pragma: no cover - set_fault validates modes; "down" never reaches a handler
            handler.send_body(500, b'{"error":"unexpected fault"}')

    def _document(self, path: str) -> bytes:
        document = self.jwks() if path == JWKS_PATH else self.discovery()
        return json.dumps(document).encode()

    def _padded(self, path: str, size: int) -> Iterator[bytes]:
        """The normal document, then spaces up to ``size`` bytes, in chunks."""
        document = self._document(path)
        yield document
        filler = max(0, size - len(document))
        chunk = b" " * 65536  # small: a bomb's padding never sits in the server's memory
        while filler > 0:
            yield chunk[:filler]
            filler -= len(chunk)

    def _serve_drip(
        self, handler: _Handler, server: _Server, path: str, mode: str, interval: float
    ) -> None:
        body = self._document(path)
        head = (
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        ).encode()
        handler.close_connection = True
        if mode == "drip_headers":
            slow, rest = head, body
        else:
            handler.wfile.write(head)
            slow, rest = body, b""
        for i in range(len(slow)):
            if server.closing.wait(interval):
                return
            handler.wfile.write(slow[i : i + 1])  # OSError once the client has hung up
        handler.wfile.write(rest)

    def _serve_huge(
        self, handler: _Handler, path: str, size: int, headers: Mapping[str, str]
    ) -> None:
        document = self.jwks() if path == JWKS_PATH else self.discovery()
        text = json.dumps({**document, "padding": ""}).encode()
        head, tail = text[:-2], text[-2:]  # split inside the empty "padding" string
        filler = max(0, size - len(text))
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(text) + filler))
        for name, value in headers.items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(head)
        chunk = b"A" * 65536
        while filler > 0:
            handler.wfile.write(chunk[:filler])
            filler -= len(chunk)
        handler.wfile.write(tail)

    def _serve_token(self, handler: _Handler) -> None:
        query = parse_qs(urlsplit(handler.path).query)
        subject = query.get("sub", ["user-1"])[0]
        scope = query.get("scope", [None])[0]
        # RFC 8707: a token requested for a resource names it in aud.
        resource = query.get("resource", [None])[0]
        audience = resource if resource is not None else _DEFAULT
        expires_in = 300
        token = self.mint(subject=subject, scope=scope, expires_in=expires_in, audience=audience)
        body = json.dumps(
            {"access_token": token, "token_type": "Bearer", "expires_in": expires_in}
        ).encode()
        handler.send_body(200, body, headers={"Cache-Control": "no-store"})

    # -- authorization code with PKCE (RFC 6749 §4.1, RFC 7636) -------------------------------

    #: How long an authorization code can be redeemed, in seconds.
    code_lifetime: float = 60.0
    _AUTHORIZE_PARAMS: Final = frozenset(
        {"response_type", "client_id", "redirect_uri", "scope", "state", "resource"}
        | {"code_challenge", "code_challenge_method"}
    )
    # RFC 7636 §4.1: the unreserved characters a code verifier (and an S256 challenge) is made of.
    _PKCE_CHARS: Final = frozenset(
        "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~"
    )

    def register_client(self, client_id: str, redirect_uris: Iterable[str]) -> None:
        """Let the public client ``client_id`` log users in, redirecting only to exactly these
        ``redirect_uris`` (a second call replaces them); the token endpoint then answers CORS
        requests from their origins, as the page of a single-page app or API docs needs.

        ``GET /authorize`` (``response_type=code``, ``client_id``, ``redirect_uri``, ``state``,
        ``code_challenge`` with ``code_challenge_method=S256``; ``scope``, ``resource``
        optional) answers with a login page whose button sends the browser back to the redirect
        URI with a ``code`` for the subject typed in (``user-1`` by default). ``POST /token``
        with ``grant_type=authorization_code`` redeems a code once, within
        :attr:`code_lifetime` seconds, given its ``client_id``, ``redirect_uri`` and PKCE
        ``code_verifier``: a token with the requested ``scope``, ``aud`` (``resource``, else
        :attr:`audience`) and ``client_id``. **For tests and demos**: the page logs anyone in.
        """
        if not isinstance(client_id, str) or not client_id:
            raise ConfigurationError("client_id must be a non-empty string")
        uris = frozenset(redirect_uris)
        for uri in uris:
            parts = urlsplit(uri)
            if parts.scheme not in ("http", "https") or not parts.netloc or parts.fragment:
                raise ConfigurationError(
                    f"redirect URI {uri!r} must be an absolute http(s) URL without a fragment"
                )
        with self._lock:
            self._clients[client_id] = uris

    def _authorization_request(
        self, form: Mapping[str, list[str]] | None
    ) -> tuple[dict[str, str], str | None, str | None]:
        """``(parameters, redirect URI errors may go to (None: none checked), error or None)``."""
        if form is None or any(len(form[n]) > 1 for n in self._AUTHORIZE_PARAMS & form.keys()):
            return {}, None, "invalid_request"  # RFC 6749 §3.1: no parameter twice
        params = {name: form[name][0] for name in self._AUTHORIZE_PARAMS & form.keys()}
        with self._lock:
            allowed = self._clients.get(params.get("client_id", ""))
        redirect_uri = params.get("redirect_uri")
        if allowed is None or redirect_uri not in allowed:
            # §4.1.2.1: an unknown client or redirect URI is told to the user, never redirected.
            return params, None, "unauthorized_client" if allowed is None else "invalid_request"
        if params.get("response_type") != "code":
            return params, redirect_uri, "unsupported_response_type"
        challenge = params.get("code_challenge", "")
        if (
            not params.get("state")
            or params.get("code_challenge_method") != "S256"
            or len(challenge) != 43
            or not self._PKCE_CHARS.issuperset(challenge)
        ):
            return params, redirect_uri, "invalid_request"
        return params, redirect_uri, None

    def _serve_authorize(self, handler: _Handler, query: Mapping[str, list[str]]) -> None:
        params, redirect_uri, error = self._authorization_request(query)
        if error is not None:
            self._refuse_authorization(handler, params, redirect_uri, error)
            return
        fields = "".join(
            f'<input type="hidden" name="{html.escape(n)}" value="{html.escape(v)}">'
            for n, v in sorted(params.items())
        )
        page = (
            "<!doctype html><title>LocalIssuer login</title>"
            f'<form method="post" action="{AUTHORIZE_PATH}">{fields}'
            '<label>User <input id="login-subject" name="subject" value="user-1"></label> '
            '<button id="login-button" type="submit">Log in</button></form>'
        )
        headers = {"Cache-Control": "no-store", "X-Frame-Options": "DENY"}
        handler.send_body(200, page.encode(), "text/html; charset=utf-8", headers=headers)

    def _approve(self, handler: _Handler, form: dict[str, list[str]] | None) -> None:
        """The login page's button: a code for the subject, sent to the redirect URI."""
        params, redirect_uri, error = self._authorization_request(form)
        if error is not None or redirect_uri is None:
            self._refuse_authorization(handler, params, redirect_uri, error or "invalid_request")
            return
        subject = ((form or {}).get("subject") or [""])[0] or "user-1"
        code = secrets.token_urlsafe(32)
        grant = _CodeGrant(
            client_id=params["client_id"],
            redirect_uri=redirect_uri,
            challenge=params["code_challenge"],
            subject=subject,
            scope=params.get("scope") or None,
            resource=params.get("resource") or None,
            expires=time.monotonic() + self.code_lifetime,
        )
        with self._lock:
            self._codes[code] = grant
        # RFC 9207: iss tells the client which issuer answered.
        self._redirect(handler, redirect_uri, code=code, state=params["state"], iss=self.issuer)

    def _refuse_authorization(
        self, handler: _Handler, params: Mapping[str, str], redirect_uri: str | None, error: str
    ) -> None:
        if redirect_uri is None:
            page = f"<!doctype html><title>Login refused</title><p id=error>{html.escape(error)}"
            handler.send_body(400, page.encode(), "text/html; charset=utf-8")
            return
        extra = {"state": params["state"]} if params.get("state") else {}
        self._redirect(handler, redirect_uri, error=error, **extra)

    def _redirect(self, handler: _Handler, uri: str, **values: str) -> None:
        location = uri + ("&" if urlsplit(uri).query else "?") + urlencode(values)
        headers = {"Location": location, "Cache-Control": "no-store"}
        handler.send_body(303, b"", None, headers=headers)

    def _serve_code_grant(self, handler: _Handler) -> None:
        status, answer = self._redeem(handler.read_form())
        headers = {"Cache-Control": "no-store", "Pragma": "no-cache", **self._cors(handler)}
        handler.send_body(status, json.dumps(answer).encode(), headers=headers)

    def _redeem(self, form: dict[str, list[str]] | None) -> tuple[int, dict[str, Any]]:
        if form is None or any(len(values) != 1 for values in form.values()):
            return 400, {"error": "invalid_request"}
        params = {name: values[0] for name, values in form.items()}
        if params.get("grant_type") != "authorization_code":
            return 400, {"error": "unsupported_grant_type"}
        with self._lock:
            # Single use: a code is gone once presented, whether or not the rest holds.
            grant = self._codes.pop(params.get("code", ""), None)
        verifier = params.get("code_verifier", "")
        if (
            grant is None
            or grant.expires <= time.monotonic()
            or params.get("client_id") != grant.client_id
            or params.get("redirect_uri") != grant.redirect_uri
            or not 43 <= len(verifier) <= 128
            or not self._PKCE_CHARS.issuperset(verifier)
            or not secrets.compare_digest(
                _b64url(hashlib.sha256(verifier.encode("ascii")).digest()), grant.challenge
            )
        ):
            return 400, {"error": "invalid_grant"}
        audience = grant.resource if grant.resource is not None else _DEFAULT
        expires_in = 300
        token = self.mint(
            {"client_id": grant.client_id},
            subject=grant.subject,
            scope=grant.scope,
            audience=audience,
            expires_in=expires_in,
        )
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "Bearer",
            "expires_in": expires_in,
        }
        if grant.scope is not None:
            answer["scope"] = grant.scope
        return 200, answer

    def _cors(self, handler: _Handler) -> dict[str, str]:
        """CORS headers for a request from the origin of a registered redirect URI, else none."""
        origin = handler.headers.get("Origin")
        with self._lock:
            uris = [uri for registered in self._clients.values() for uri in registered]
        origins = {f"{p.scheme}://{p.netloc}" for p in map(urlsplit, uris)}
        if origin is None or origin not in origins:
            return {"Vary": "Origin"}
        return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}

    def _serve_preflight(self, handler: _Handler) -> None:
        """OPTIONS: a CORS preflight of the token endpoint (the only cross-origin endpoint)."""
        if urlsplit(handler.path).path != TOKEN_PATH:
            handler._method_not_allowed()
            return
        headers = self._cors(handler)
        if "Access-Control-Allow-Origin" in headers:
            requested = handler.headers.get("Access-Control-Request-Headers", "")
            safe = {"accept", "content-type", "x-requested-with"}
            names = [n.strip().lower() for n in requested.split(",") if n.strip()]
            headers["Access-Control-Allow-Methods"] = "POST"
            headers["Access-Control-Allow-Headers"] = ", ".join(n for n in names if n in safe)
            headers["Access-Control-Max-Age"] = "600"
        handler.send_body(204, b"", None, headers=headers)

    # -- introspection (RFC 7662) ------------------------------------------------------------

    def _serve_post(self, handler: _Handler, server: _Server) -> None:
        path = urlsplit(handler.path).path
        if path == INTROSPECTION_PATH:
            self._serve_introspection(handler, server)
        elif path == MOVED_PREFIX + INTROSPECTION_PATH:
            # Where a redirect fault points: "active" for anything, so following it shows.
            handler.read_form()
            handler.send_body(200, b'{"active":true,"sub":"redirected"}')
        elif path == TOKEN_PATH:
            self._serve_code_grant(handler)
        elif path == AUTHORIZE_PATH:
            self._approve(handler, handler.read_form())
        else:
            handler._method_not_allowed()

    def _serve_introspection(self, handler: _Handler, server: _Server) -> None:
        with self._lock:
            self._request_log.append((INTROSPECTION_PATH, time.monotonic()))
            self._introspection_requests += 1
            fault = self._fault
        status, answer = self._introspect(handler)
        headers = {"Cache-Control": "no-store"}
        if status == 401:
            headers["WWW-Authenticate"] = 'Basic realm="introspection"'
        body = json.dumps(answer).encode()
        if fault.mode is None or INTROSPECTION_PATH not in fault.paths:
            handler.send_body(status, body, headers=headers)
            return
        params = fault.params
        if fault.mode == "slow":
            if server.closing.wait(float(params.get("delay", 1.0))):
                handler.close_connection = True
                return
            handler.send_body(status, body, headers=headers)
        elif fault.mode == "status":
            code = int(params.get("status", 500))
            handler.send_body(code, json.dumps({"error": f"injected status {code}"}).encode())
        elif fault.mode == "garbage":
            handler.send_body(200, b"<html>this is not JSON {", "text/html")
        elif fault.mode == "wrong_shape":
            handler.send_body(200, json.dumps(params.get("body", {"active": "true"})).encode())
        elif fault.mode == "huge":
            # Padded to exactly ``size`` bytes (or the bare answer, if that is longer).
            bare = len(json.dumps({**answer, "padding": ""}))
            padding = "A" * max(0, int(params.get("size", 1 << 20)) - bare)
            handler.send_body(200, json.dumps({**answer, "padding": padding}).encode())
        elif fault.mode == "redirect":
            location = str(params.get("location", self.url + MOVED_PREFIX + INTROSPECTION_PATH))
            handler.send_body(int(params.get("status", 307)), b"", headers={"Location": location})
        elif fault.mode == "encoding":
            encoding = str(params.get("encoding", "gzip"))
            filler = max(0, int(params.get("size", 0)) - len(body))
            encoded = _encode([body, b" " * filler], encoding)
            handler.send_body(200, encoded, headers={"Content-Encoding": encoding})
        elif fault.mode == "content_type":
            content_type = params.get("content_type")
            handler.send_body(200, body, None if content_type is None else str(content_type))
        else:  # "truncated"; set_fault admits no other mode here
            handler.close_connection = True
            handler.send_response(200)
            handler.send_header("Content-Type", "application/json")
            handler.send_header("Content-Length", str(len(body)))
            handler.send_header("Connection", "close")
            handler.end_headers()
            handler.wfile.write(body[: len(body) // 2])

    def _signed_claims(self, token: str) -> dict[str, Any] | None:
        """The claims of a JWT that a published asymmetric key of this issuer signed (as an
        authorization server introspects its own JWTs), or None."""
        try:
            head, body, signature = token.split(".")
            header = json.loads(_b64url_decode(head))
            claims = json.loads(_b64url_decode(body))
            key = next(k for k in self.published_keys if k.kid == header.get("kid"))
            algorithm = _ALGORITHMS[key.alg]
            public = algorithm.prepare_key(key.public_key())
            valid = algorithm.verify(f"{head}.{body}".encode(), public, _b64url_decode(signature))
        except (ValueError, TypeError, KeyError, StopIteration, ConfigurationError):
            return None
        return claims if valid and isinstance(claims, dict) else None

    def _introspect(self, handler: _Handler) -> tuple[int, dict[str, Any]]:
        """The status and JSON answer to one introspection request, faults aside."""
        form = handler.read_form()
        if form is None:
            return 400, {"error": "invalid_request"}
        authorization = handler.headers.get("Authorization")
        in_form = "client_id" in form or "client_secret" in form
        if authorization is not None and in_form:
            return 400, {"error": "invalid_request"}  # RFC 6749 §2.3: one method only
        if authorization is not None:
            credentials = _basic_credentials(authorization)
        else:
            credentials = (form.get("client_id", [""])[0], form.get("client_secret", [""])[0])
        expected = self.introspection_client
        if credentials is None or not all(
            secrets.compare_digest(given.encode(), wanted.encode())
            for given, wanted in zip(credentials, expected, strict=True)
        ):
            return 401, {"error": "invalid_client"}
        tokens = form.get("token", [])
        if len(tokens) != 1:
            return 400, {"error": "invalid_request"}
        with self._lock:
            revoked = tokens[0] in self._revoked
            claims = None if revoked else self._opaque.get(tokens[0])
        if claims is None and not revoked and tokens[0].count(".") == 2:
            claims = self._signed_claims(tokens[0])
        exp = None if claims is None else claims.get("exp")
        if claims is None or (isinstance(exp, int | float) and exp <= time.time()):
            return 200, {"active": False}
        return 200, {"active": True, **claims}
