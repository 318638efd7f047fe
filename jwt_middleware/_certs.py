"""Client certificates forwarded by a TLS-terminating proxy, for certificate-bound tokens
(RFC 8705), without I/O.

The proxy checks the client's certificate during the TLS handshake and hands it on in a request
header; the token names it in ``cnf["x5t#S256"]``. The header comes in one of these forms:

* RFC 9440 ``Client-Cert``: a Structured Field Byte Sequence, ``:<base64 of the DER>:``;
* a URL-encoded PEM (nginx ``$ssl_client_escaped_cert``; AWS ALB leaves ``+/=`` unescaped);
* a PEM whose line breaks the proxy turned into spaces or tabs, or kept as they are.

Anything else is refused rather than guessed at: this value decides whose token is accepted.
Only the header's value is handled here; trusting it at all (only from the proxy, which must
overwrite whatever the client sent) is the deployment's business.
"""

from __future__ import annotations

import binascii
import hashlib
import re
from typing import Final
from urllib.parse import unquote_to_bytes

from cryptography import x509

from . import _b64 as b64
from ._errors import InvalidRequest, Reason

__all__ = ["MAX_HEADER_BYTES", "certificate_thumbprint", "forwarded_certificate"]

#: A client certificate is 0.5-2 KiB of DER, about 4/3 of that in base64 (plus escapes for the
#: URL-encoded PEM); a longer value is someone making us decode. Proxies cap it alike.
MAX_HEADER_BYTES: Final = 16 * 1024

_MALFORMED: Final = Reason.MALFORMED_CLIENT_CERTIFICATE

# Header values may carry optional whitespace around them (RFC 9110 §5.5, RFC 8941 §4.2).
_OWS: Final = b" \t"
# RFC 8941 §3.3.5. Client-Cert is a single Item (RFC 9440 §2.2 forbids a list), so nothing may
# follow the closing colon. Padding may be left out: §4.2.7 tells parsers to synthesize it.
_BYTE_SEQUENCE: Final = re.compile(rb":([A-Za-z0-9+/=]*):")
# RFC 7468 textual encoding. Whitespace anywhere in the body: proxies fold the line breaks
# into spaces or tabs, and the base64 is checked once it is removed.
_PEM: Final = re.compile(
    rb"-----BEGIN CERTIFICATE-----([A-Za-z0-9+/=\s]*)-----END CERTIFICATE-----"
)
_PEM_BEGIN: Final = b"-----BEGIN"
# What a URL-encoded PEM starts with; "%20" is the space of "BEGIN CERTIFICATE".
_ESCAPED_PEM_BEGIN: Final = b"-----BEGIN%20"
_PADDED_BASE64: Final = re.compile(
    rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?"
)
_WHITESPACE: Final = b" \t\r\n\v\f"


def forwarded_certificate(value: bytes) -> bytes:
    """The DER of the one client certificate in a forwarded header ``value``.

    Raises :class:`InvalidRequest` (``malformed_client_certificate``) for a value over
    :data:`MAX_HEADER_BYTES`, an empty one, one in no known form, bad base64, more than one
    certificate, or bytes that are not an X.509 certificate. The detail never holds the value.
    """
    if len(value) > MAX_HEADER_BYTES:
        raise InvalidRequest(_MALFORMED, f"client certificate header over {MAX_HEADER_BYTES} bytes")
    text = value.strip(_OWS)
    if not text:
        raise InvalidRequest(_MALFORMED, "empty client certificate header")
    if text.startswith(b":"):
        der = _byte_sequence(text)
    elif text.startswith(_ESCAPED_PEM_BEGIN):
        der = _pem(unquote_to_bytes(text))
    elif text.startswith(_PEM_BEGIN):
        der = _pem(text)
    else:
        raise InvalidRequest(_MALFORMED, "client certificate in no known form")
    try:
        x509.load_der_x509_certificate(der)
    except ValueError:
        # cryptography's message is about the ASN.1 structure; it adds nothing worth logging.
        raise InvalidRequest(_MALFORMED, "not an X.509 certificate") from None
    return der


def certificate_thumbprint(der: bytes) -> str:
    """RFC 8705 §3.1 ``x5t#S256``: base64url (no padding) SHA-256 of the certificate's DER."""
    return b64.encode(hashlib.sha256(der).digest())


def _byte_sequence(text: bytes) -> bytes:
    match = _BYTE_SEQUENCE.fullmatch(text)
    if match is None:
        raise InvalidRequest(_MALFORMED, "Client-Cert is not one byte sequence")
    encoded = match.group(1)
    if not encoded.endswith(b"="):
        encoded += b"=" * (-len(encoded) % 4)
    if not _PADDED_BASE64.fullmatch(encoded):
        raise InvalidRequest(_MALFORMED, "bad base64 in Client-Cert")
    return _decode(encoded)


def _pem(text: bytes) -> bytes:
    if text.count(_PEM_BEGIN) > 1:
        # A chain: which one the token is bound to would be our guess. RFC 9440 sends the
        # end-entity certificate alone (Client-Cert), the chain in a separate field.
        raise InvalidRequest(_MALFORMED, "more than one PEM block")
    match = _PEM.fullmatch(text.strip(_WHITESPACE))
    if match is None:
        raise InvalidRequest(_MALFORMED, "not a PEM certificate")
    encoded = match.group(1).translate(None, _WHITESPACE)
    if not _PADDED_BASE64.fullmatch(encoded):
        raise InvalidRequest(_MALFORMED, "bad base64 in PEM")
    return _decode(encoded)


def _decode(encoded: bytes) -> bytes:
    """``encoded``, already checked to be padded standard base64, as bytes."""
    try:
        return binascii.a2b_base64(encoded)
    except binascii.Error:  # pragma: no cover - the patterns above admit only valid input
        raise InvalidRequest(_MALFORMED, "bad base64") from None
