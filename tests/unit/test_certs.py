"""jwt_middleware._certs: the client certificate a TLS-terminating proxy forwards (RFC 9440
``Client-Cert``, nginx's URL-encoded PEM, a PEM with folded line breaks), its RFC 8705
``x5t#S256`` thumbprint, the refusals, and the testing helpers that mint bound tokens."""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Callable
from urllib.parse import quote

import jwt
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from jwt_middleware import InvalidRequest, Reason
from jwt_middleware._certs import MAX_HEADER_BYTES, certificate_thumbprint, forwarded_certificate
from jwt_middleware._errors import ConfigurationError
from jwt_middleware.testing import (
    ClientCertificate,
    LocalIssuer,
    client_certificate,
    generate_key,
)

MALFORMED = Reason.MALFORMED_CLIENT_CERTIFICATE

# Made with the openssl command line, not with this package: `openssl req -x509 -newkey ec
# -pkeyopt ec_paramgen_curve:P-256 -subj /CN=vector`, and its thumbprint with `openssl x509
# -outform der | openssl dgst -sha256 -binary | openssl base64 -A`, made base64url by hand.
# (RFC 8705 §3.1 shows an x5t#S256 value but not the certificate it was taken from.)
VECTOR_PEM = """-----BEGIN CERTIFICATE-----
MIIBdjCCAR2gAwIBAgIUdUz48Pr9jlDOzDKDvRw6Yr+dRvcwCgYIKoZIzj0EAwIw
ETEPMA0GA1UEAwwGdmVjdG9yMB4XDTI2MTIwMzA2MTA0OFoXDTM2MTEzMDA2MTA0
OFowETEPMA0GA1UEAwwGdmVjdG9yMFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAE
ASPCNhaQYHmZvYMcVhINbMl0j81R/XjFxduJR6xp3h2DTgcuj8SH34mgMH1FZ49R
lDxQjEwIK/aQj1aE4k5p+aNTMFEwHQYDVR0OBBYEFGfDWbzy6T6FPr5aAuSbcdQw
wOjRMB8GA1UdIwQYMBaAFGfDWbzy6T6FPr5aAuSbcdQwwOjRMA8GA1UdEwEB/wQF
MAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgNmKGGBQRsDeQV9K0Gkqr75Qm/ASfvzNz
T4eF5g5E0FQCIEEVlz1qVZgISZR4uWSAwt+PwDG0a7u2sQDPI7/lLzVI
-----END CERTIFICATE-----
"""
VECTOR_THUMBPRINT = "8ofF6wUQm3Gppf3jFxs8Bw19fZadeboRfuiumHZ8DuI"


@pytest.fixture(scope="module")
def cert() -> ClientCertificate:
    """A client certificate whose DER length is not a multiple of 3, so its base64 is padded
    (a form that drops the padding then differs from the padded one)."""
    for length in range(1, 10):
        made = client_certificate("c" * length)
        if len(made.der) % 3:
            return made
    raise AssertionError("no certificate with padded base64")  # pragma: no cover


def refused(value: bytes, detail: str) -> InvalidRequest:
    with pytest.raises(InvalidRequest) as caught:
        forwarded_certificate(value)
    error = caught.value
    assert error.reason == MALFORMED == "malformed_client_certificate"
    assert error.status_code == 400
    assert detail in error.detail, error.detail
    return error


def by_hand(der: bytes) -> str:
    """x5t#S256 computed without the package: SHA-256, base64, then the URL-safe alphabet."""
    digest = base64.b64encode(hashlib.sha256(der).digest()).decode("ascii")
    return digest.replace("+", "-").replace("/", "_").rstrip("=")


FORMS: dict[str, Callable[[ClientCertificate], str]] = {
    "rfc9440": lambda c: c.header("rfc9440"),
    "rfc9440-surrounding-space-and-tab": lambda c: " \t" + c.header("rfc9440") + "\t ",
    # RFC 8941 §4.2.7: a parser synthesizes padding that is left out.
    "rfc9440-unpadded": lambda c: c.header("rfc9440").replace("=", ""),
    "nginx": lambda c: c.header("nginx"),
    "nginx-lowercase-escapes": lambda c: c.header("nginx").replace("%2F", "%2f"),
    # AWS ALB leaves +, / and = unescaped: still a URL-encoded PEM.
    "url-encoded-keeping-plus-slash-equals": lambda c: quote(c.pem, safe="+/="),
    "pem-lines-as-spaces": lambda c: c.header("pem"),
    "pem-lines-as-tabs": lambda c: c.pem.strip().replace("\n", "\t"),
    "pem-as-is": lambda c: c.pem,
    "pem-crlf": lambda c: c.pem.replace("\n", "\r\n"),
    "pem-one-base64-line": lambda c: (
        "-----BEGIN CERTIFICATE-----"
        + base64.b64encode(c.der).decode("ascii")
        + "-----END CERTIFICATE-----"
    ),
}


@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_accepted_form_gives_the_certificate_and_its_thumbprint(
    form: str, cert: ClientCertificate
) -> None:
    """Each forwarded form decodes to the certificate's exact DER and the same thumbprint."""
    value = FORMS[form](cert)
    der = forwarded_certificate(value.encode("latin-1"))
    assert der == cert.der
    assert certificate_thumbprint(der) == cert.thumbprint == by_hand(cert.der)


def test_the_unpadded_form_really_drops_padding(cert: ClientCertificate) -> None:
    """The fixture's certificate has padded base64, so the unpadded case tests something."""
    assert cert.header().endswith("=:")
    assert not FORMS["rfc9440-unpadded"](cert).endswith("=:")


def test_the_thumbprint_matches_one_computed_by_openssl() -> None:
    """A certificate made and hashed by the openssl CLI: PEM, RFC 9440 and nginx forms agree."""
    der = x509.load_pem_x509_certificate(VECTOR_PEM.encode()).public_bytes(
        serialization.Encoding.DER
    )
    rfc9440 = ":" + base64.b64encode(der).decode("ascii") + ":"
    for value in (VECTOR_PEM, rfc9440, quote(VECTOR_PEM, safe="")):
        assert certificate_thumbprint(forwarded_certificate(value.encode())) == VECTOR_THUMBPRINT
    assert by_hand(der) == VECTOR_THUMBPRINT


def _two_blocks(c: ClientCertificate) -> str:
    return c.pem + c.pem


def _not_a_certificate(c: ClientCertificate) -> str:
    # Well-formed DER, just not a certificate: the certificate's public key (SPKI).
    spki = (
        x509.load_der_x509_certificate(c.der)
        .public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    )
    return ":" + base64.b64encode(spki).decode("ascii") + ":"


def _b64(der: bytes) -> str:
    return base64.b64encode(der).decode("ascii")


REFUSALS: dict[str, tuple[Callable[[ClientCertificate], str], str]] = {
    "empty": (lambda c: "", "empty"),
    "only-whitespace": (lambda c: " \t ", "empty"),
    "junk": (lambda c: "hello there", "no known form"),
    "bare-base64-der": (lambda c: _b64(c.der), "no known form"),
    "not-a-certificate-der": (_not_a_certificate, "not an X.509 certificate"),
    "empty-byte-sequence": (lambda c: "::", "not an X.509 certificate"),
    "truncated-der": (lambda c: ":" + _b64(c.der[:-1]) + ":", "not an X.509 certificate"),
    "der-with-trailing-byte": (
        lambda c: ":" + _b64(c.der + b"\x00") + ":",
        "not an X.509 certificate",
    ),
    "base64url-alphabet": (
        lambda c: ":" + base64.urlsafe_b64encode(c.der).decode() + ":",
        "one byte sequence",
    ),
    "space-inside-byte-sequence": (
        lambda c: ":" + _b64(c.der)[:8] + " " + _b64(c.der)[8:] + ":",
        "one byte sequence",
    ),
    "padding-in-the-middle": (lambda c: ":QQ==" + _b64(c.der) + ":", "bad base64"),
    "one-leftover-character": (lambda c: ":QUFBQ:", "bad base64"),  # 5 characters
    "unclosed-byte-sequence": (lambda c: ":" + _b64(c.der), "one byte sequence"),
    "a-list-of-certificates": (
        lambda c: c.header() + ", " + c.header(),
        "one byte sequence",
    ),
    "parameters-after-the-item": (lambda c: c.header() + ";a=1", "one byte sequence"),
    "two-pem-blocks": (_two_blocks, "more than one PEM block"),
    "two-url-encoded-pem-blocks": (lambda c: quote(_two_blocks(c), safe=""), "more than one"),
    "pem-of-a-public-key": (
        lambda c: c.pem.replace("CERTIFICATE", "PUBLIC KEY"),
        "not a PEM certificate",
    ),
    "pem-with-trailing-text": (lambda c: c.pem + "extra", "not a PEM certificate"),
    "pem-without-end-line": (lambda c: c.pem.split("-----END")[0], "not a PEM certificate"),
    "pem-bad-base64": (lambda c: c.pem.replace("M", "*", 1), "not a PEM certificate"),
    "pem-missing-padding": (
        lambda c: (
            "-----BEGIN CERTIFICATE-----" + _b64(c.der).rstrip("=") + "-----END CERTIFICATE-----"
        ),
        "bad base64 in PEM",
    ),
    "pem-non-ascii": (lambda c: c.pem.replace("M", "\xe9", 1), "not a PEM certificate"),
    "url-encoded-garbage": (lambda c: "-----BEGIN%20CERTIFICATE-----%ZZ", "not a PEM"),
    "url-encoded-twice": (lambda c: quote(c.header("nginx"), safe=""), "not a PEM"),
}


@pytest.mark.parametrize("case", sorted(REFUSALS))
def test_malformed_values_are_refused_without_echoing_them(
    case: str, cert: ClientCertificate
) -> None:
    """Each is a 400 malformed_client_certificate whose (logged) message omits the value."""
    make, detail = REFUSALS[case]
    value = make(cert)
    error = refused(value.encode("latin-1"), detail)
    message = str(error)
    assert "MII" not in message  # how the base64 of every certificate DER starts
    assert "%0A" not in message and "-----" not in message
    if len(value.strip()) >= 4:
        assert value.strip() not in message


def test_the_size_limit_is_on_the_raw_value(cert: ClientCertificate) -> None:
    """MAX_HEADER_BYTES passes, one byte more is refused, counted before any decoding."""
    header = cert.header()
    at_limit = header + " " * (MAX_HEADER_BYTES - len(header))
    assert forwarded_certificate(at_limit.encode()) == cert.der
    refused((at_limit + " ").encode(), f"over {MAX_HEADER_BYTES} bytes")
    # Escaped spaces that decoding would shrink below the limit (and stripping then remove).
    nginx = cert.header("nginx")
    padded = nginx + "%20" * ((MAX_HEADER_BYTES - len(nginx)) // 3 + 1)
    assert len(padded) > MAX_HEADER_BYTES
    refused(padded.encode(), "over")
    assert forwarded_certificate((nginx + "%20" * 10).encode()) == cert.der


# -- the testing helpers ------------------------------------------------------------------------


def test_client_certificate_is_a_fresh_self_signed_p256_certificate() -> None:
    """A new self-signed P-256 certificate for the CN; pem, der and thumbprint agree."""
    first, second = client_certificate("alice"), client_certificate("alice")
    assert first.thumbprint != second.thumbprint
    parsed = x509.load_der_x509_certificate(first.der)
    assert parsed.subject == parsed.issuer
    assert parsed.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == "alice"
    public = parsed.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey) and public.curve.name == "secp256r1"
    parsed.verify_directly_issued_by(parsed)  # raises if the self-signature is wrong
    assert x509.load_pem_x509_certificate(first.pem.encode()) == parsed
    assert first.thumbprint == by_hand(first.der)
    assert first.pem not in repr(first)


def test_the_header_forms_look_like_what_proxies_send(cert: ClientCertificate) -> None:
    """rfc9440 is ``:<base64>:``, nginx fully URL-encoded, pem one line; others: refused."""
    assert cert.header() == ":" + _b64(cert.der) + ":"
    nginx = cert.header("nginx")
    assert nginx.startswith("-----BEGIN%20CERTIFICATE-----%0A")
    assert nginx.endswith("-----END%20CERTIFICATE-----%0A")
    assert not set(nginx) & set("\n+/= ")
    pem = cert.header("pem")
    assert "\n" not in pem and pem.startswith("-----BEGIN CERTIFICATE----- MII")
    with pytest.raises(ConfigurationError, match="unknown certificate header form"):
        cert.header("envoy")


def _claims(issuer: LocalIssuer, token: str) -> dict[str, object]:
    claims: dict[str, object] = jwt.decode(
        token,
        issuer.current_key.public_pem(),
        algorithms=[issuer.current_key.alg],
        audience=issuer.audience,
    )
    return claims


def test_a_minted_token_names_the_certificate_in_cnf(cert: ClientCertificate) -> None:
    """``mint(certificate=)`` sets cnf.x5t#S256 (with ``dpop_key=``, cnf names both keys)."""
    issuer = LocalIssuer(algorithm="ES256", issuer="https://issuer.example")
    bound = _claims(issuer, issuer.mint(certificate=cert))
    forwarded = certificate_thumbprint(forwarded_certificate(cert.header("nginx").encode()))
    assert bound["cnf"] == {"x5t#S256": forwarded}
    dpop_key = generate_key("ES256")
    both = _claims(issuer, issuer.mint(certificate=cert, dpop_key=dpop_key))
    assert both["cnf"] == {"jkt": dpop_key.thumbprint, "x5t#S256": cert.thumbprint}
    assert "cnf" not in _claims(issuer, issuer.mint())
    # A cnf given in claims still replaces the computed one, as for every default claim.
    replaced = issuer.mint({"cnf": {"x5t#S256": "other"}}, certificate=cert)
    assert json.loads(base64.urlsafe_b64decode(replaced.split(".")[1] + "==="))["cnf"] == {
        "x5t#S256": "other"
    }
