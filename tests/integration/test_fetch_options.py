"""The key-fetch client options (jwks_ca_bundle, jwks_proxy, jwks_trust_env) against real servers
on 127.0.0.1: an HTTPS key server whose certificate a private CA made here signs, and recording
proxies (plain and TLS). Every fetch test runs on both transports (async and sync)."""

from __future__ import annotations

import base64
import http.server
import ipaddress
import json
import logging
import ssl
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from jwt_middleware import ConfigurationError, Issuer, KeysUnavailable, Settings
from jwt_middleware.testing import LocalIssuer
from tests.support.clock import FakeClock
from tests.support.servers import VerifierDriver, closing

PROXY_ENV = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")
CERT_ENV = ("SSL_CERT_FILE", "SSL_CERT_DIR")
PROXY_USER, PROXY_PASSWORD = "svc", "proxy-password-77"


@dataclass(frozen=True)
class PrivateCA:
    """A CA made for this module, and a server certificate it signed for 127.0.0.1."""

    ca_pem: Path
    server_cert: Path
    server_key: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.server_cert, self.server_key)
        return context


def _certificate(
    subject: x509.Name,
    key: ec.EllipticCurvePrivateKey,
    signer: ec.EllipticCurvePrivateKey,
    issuer: x509.Name,
    *,
    ca: bool,
) -> x509.Certificate:
    now = datetime.now(timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(signer.public_key()), False
        )
    )
    if ca:
        usage = x509.KeyUsage(
            digital_signature=True, content_commitment=False, key_encipherment=False,
            data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
            encipher_only=False, decipher_only=False,
        )  # fmt: skip
        builder = builder.add_extension(usage, critical=True)
    else:
        san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
        eku = x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH])
        builder = builder.add_extension(san, critical=False).add_extension(eku, critical=False)
    return builder.sign(signer, hashes.SHA256())


@pytest.fixture(scope="module")
def private_ca(tmp_path_factory: pytest.TempPathFactory) -> PrivateCA:
    folder = tmp_path_factory.mktemp("private-ca")
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "jwt-middleware test CA")])
    ca_cert = _certificate(ca_name, ca_key, ca_key, ca_name, ca=True)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    cert = _certificate(name, key, ca_key, ca_name, ca=False)
    pem = serialization.Encoding.PEM
    (folder / "ca.pem").write_bytes(ca_cert.public_bytes(pem))
    (folder / "server.pem").write_bytes(cert.public_bytes(pem))
    (folder / "server.key").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return PrivateCA(folder / "ca.pem", folder / "server.pem", folder / "server.key")


class Serving(http.server.BaseHTTPRequestHandler):
    """Answers every GET with the server's JWKS and records its request line and
    Proxy-Authorization: a key server, or (absolute-form request lines) a proxy."""

    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server: Any = self.server
        server.seen.append((self.path, self.headers.get("proxy-authorization")))
        body = server.body
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def serve(issuer: LocalIssuer) -> Iterator[Any]:
    """Starts a recording server with ``issuer``'s JWKS (TLS when given a context); its port
    and what it saw are ``server.server_address[1]`` and ``server.seen``."""
    started: list[tuple[Any, threading.Thread]] = []

    def start(tls: ssl.SSLContext | None = None) -> Any:
        server: Any = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Serving)
        if tls is not None:
            server.socket = tls.wrap_socket(server.socket, server_side=True)
        server.seen = []
        server.body = json.dumps(issuer.jwks()).encode()
        thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
        thread.start()
        started.append((server, thread))
        return server

    try:
        yield start
    finally:
        for server, thread in started:
            server.shutdown()
            server.server_close()
            thread.join(5)


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make(kind: str, make_settings: Any, clock: FakeClock) -> Iterator[Any]:
    def build(**overrides: Any) -> VerifierDriver:
        overrides.setdefault("clock", clock)
        overrides.setdefault("jwks_timeout", 2.0)
        return VerifierDriver(kind, make_settings(**overrides))

    yield from closing(build)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No proxy and no trust-store variables, whatever the machine running the tests sets."""
    for name in (*PROXY_ENV, "no_proxy", "NO_PROXY", *CERT_ENV):
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def https_url(server: Any) -> str:
    return f"https://127.0.0.1:{server.server_address[1]}/jwks"


def last_error(v: VerifierDriver) -> str:
    return str(v.verifier.remote.policy.last_error)


# -- the trust store ---------------------------------------------------------------------------


@pytest.mark.usefixtures("clean_env")
def test_a_key_server_signed_by_a_private_ca_needs_jwks_ca_bundle(
    issuer: LocalIssuer, make: Any, clock: FakeClock, serve: Any, private_ca: PrivateCA
) -> None:
    """Against the default trust store the private CA's server is refused (503, no keys), and
    with jwks_ca_bundle naming the CA's PEM file the same fetch works."""
    server = serve(private_ca.server_context())
    plain = make(jwks_url=https_url(server))
    with pytest.raises(KeysUnavailable):
        plain.verify(issuer.mint(now=clock.now))
    assert "unreachable" in last_error(plain)
    trusting = make(jwks_url=https_url(server), jwks_ca_bundle=str(private_ca.ca_pem))
    assert trusting.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert [path for path, _ in server.seen] == ["/jwks"]  # the refused one never got a request


@pytest.mark.usefixtures("clean_env")
def test_an_ssl_context_as_jwks_ca_bundle_is_used_as_given(
    issuer: LocalIssuer, make: Any, clock: FakeClock, serve: Any, private_ca: PrivateCA
) -> None:
    """An ssl.SSLContext trusting the private CA carries the fetch; one trusting another CA
    (the system's defaults) does not."""
    server = serve(private_ca.server_context())
    mine = ssl.create_default_context(cafile=str(private_ca.ca_pem))
    v = make(jwks_url=https_url(server), jwks_ca_bundle=mine)
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    other = make(jwks_url=https_url(server), jwks_ca_bundle=ssl.create_default_context())
    with pytest.raises(KeysUnavailable):
        other.verify(issuer.mint(now=clock.now))


@pytest.mark.parametrize("trust_env", [True, False])
def test_ssl_cert_file_applies_only_while_jwks_trust_env_holds(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    serve: Any,
    private_ca: PrivateCA,
    clean_env: pytest.MonkeyPatch,
    trust_env: bool,
) -> None:
    """SSL_CERT_FILE naming the private CA makes its server trusted by default, as in httpx;
    jwks_trust_env=False ignores it (certifi's bundle, so the fetch fails)."""
    clean_env.setenv("SSL_CERT_FILE", str(private_ca.ca_pem))
    server = serve(private_ca.server_context())
    v = make(jwks_url=https_url(server), jwks_trust_env=trust_env)
    if trust_env:
        assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    else:
        with pytest.raises(KeysUnavailable):
            v.verify(issuer.mint(now=clock.now))


# -- the proxy ---------------------------------------------------------------------------------


def test_jwks_proxy_carries_every_fetch_without_any_environment(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    serve: Any,
    clean_env: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With no proxy variable set (and no_proxy naming the host, which it overrides), the
    configured proxy gets the absolute-form request with its credentials as
    Proxy-Authorization, and no log record shows the proxy password."""
    caplog.set_level(logging.DEBUG)
    clean_env.setenv("no_proxy", "127.0.0.1")
    proxy = serve()
    port = proxy.server_address[1]
    v = make(jwks_proxy=f"http://{PROXY_USER}:{PROXY_PASSWORD}@127.0.0.1:{port}")
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    basic = "Basic " + base64.b64encode(f"{PROXY_USER}:{PROXY_PASSWORD}".encode()).decode()
    assert proxy.seen == [(issuer.jwks_url, basic)]
    assert issuer.jwks_requests == 0  # the proxy answered
    assert PROXY_PASSWORD not in caplog.text
    assert PROXY_PASSWORD not in repr(v.verifier.settings)


def test_a_tls_proxy_is_trusted_through_jwks_ca_bundle(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    serve: Any,
    private_ca: PrivateCA,
    clean_env: pytest.MonkeyPatch,
) -> None:
    """An https:// proxy whose certificate the private CA signed is reached when jwks_ca_bundle
    names that CA: the bundle is the trust store of the hop to the proxy too."""
    proxy = serve(private_ca.server_context())
    url = f"https://127.0.0.1:{proxy.server_address[1]}"
    v = make(jwks_proxy=url, jwks_ca_bundle=str(private_ca.ca_pem))
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    assert [path for path, _ in proxy.seen] == [issuer.jwks_url]


@pytest.mark.parametrize("trust_env", [True, False])
def test_jwks_trust_env_false_ignores_the_environment_proxy(
    issuer: LocalIssuer,
    make: Any,
    clock: FakeClock,
    serve: Any,
    clean_env: pytest.MonkeyPatch,
    trust_env: bool,
) -> None:
    """http_proxy carries the fetch by default; with jwks_trust_env=False it is ignored and
    the key server is asked directly."""
    proxy = serve()
    clean_env.setenv("http_proxy", f"http://127.0.0.1:{proxy.server_address[1]}")
    v = make(jwks_trust_env=trust_env)
    assert v.verify(issuer.mint(now=clock.now)).subject == "user-1"
    if trust_env:
        assert ([path for path, _ in proxy.seen], issuer.jwks_requests) == ([issuer.jwks_url], 0)
    else:
        assert (proxy.seen, issuer.jwks_requests) == ([], 1)


# -- checked when built ------------------------------------------------------------------------


def test_a_missing_or_non_pem_ca_bundle_fails_at_construction(
    make_settings: Any, tmp_path: Path
) -> None:
    """jwks_ca_bundle naming no file, a file that is no PEM, or something that is neither a
    path nor an SSLContext is a ConfigurationError that says which."""
    with pytest.raises(ConfigurationError, match="no file"):
        make_settings(jwks_ca_bundle=str(tmp_path / "missing.pem"))
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="no PEM CA certificate"):
        make_settings(jwks_ca_bundle=str(garbage))
    with pytest.raises(ConfigurationError, match="path of a PEM file or an ssl"):
        make_settings(jwks_ca_bundle=garbage.read_bytes())


@pytest.mark.parametrize(
    "proxy",
    [
        f"ftp://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:21",
        f"{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:3128",
        "http://",
        f"http://{PROXY_USER}:{PROXY_PASSWORD}@proxy.example:99999",
    ],
)
def test_a_bad_jwks_proxy_fails_at_construction_without_showing_it(
    make_settings: Any, proxy: str
) -> None:
    """A proxy that is not an http(s) URL with a host is a ConfigurationError whose message
    shows neither its password nor its user name."""
    with pytest.raises(ConfigurationError, match="jwks_proxy") as refused:
        make_settings(jwks_proxy=proxy)
    assert PROXY_PASSWORD not in str(refused.value)
    assert PROXY_USER not in str(refused.value)


def test_jwks_trust_env_must_be_a_bool(make_settings: Any) -> None:
    """jwks_trust_env="false" (an environment string) is refused rather than taken as true."""
    with pytest.raises(ConfigurationError, match="jwks_trust_env must be True or False"):
        make_settings(jwks_trust_env="false")


def test_good_fetch_options_build_settings(private_ca: PrivateCA) -> None:
    """The three options together build, on a Settings as on a trusted Issuer."""
    options: dict[str, Any] = {
        "issuer": "https://login.example/",
        "audience": "api://orders",
        "jwks_ca_bundle": str(private_ca.ca_pem),
        "jwks_proxy": "https://proxy.example:3128",
        "jwks_trust_env": False,
    }
    settings = Settings(**options)
    assert (settings.jwks_proxy, settings.jwks_trust_env) == ("https://proxy.example:3128", False)
    trusted = Settings(trust=[Issuer(**options)])
    assert trusted.trusted[0].jwks_ca_bundle == str(private_ca.ca_pem)
