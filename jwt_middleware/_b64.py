"""Strict base64url (RFC 7515 §2): the URL-safe alphabet, no padding, no stray characters, and
canonical encodings only.

Python's own decoder skips characters outside the alphabet and ignores the unused low bits of
the last character, so ``eyJ?hbGc`` and a token with flipped padding bits would decode to the
same bytes as the original. Two spellings of one token defeat caches, deny-lists and audit trails,
hence the strictness here.

The work is done on bytes with ``bytes.translate`` and ``binascii``: this runs on every new token
(three segments), and a regex or ``base64.urlsafe_b64decode`` over ``str`` costs about twice as
much for the same checks.
"""

from __future__ import annotations

import base64
import binascii

_ALPHABET = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
# Maps the URL-safe alphabet onto the standard one binascii decodes.
_TO_STANDARD = bytes.maketrans(b"-_", b"+/")
# Characters allowed last when 4 (len % 4 == 2) or 2 (len % 4 == 3) low bits are unused.
_LAST_IF_REM2 = frozenset(c for i, c in enumerate(_ALPHABET) if i & 0x0F == 0)
_LAST_IF_REM3 = frozenset(c for i, c in enumerate(_ALPHABET) if i & 0x03 == 0)
_PAD = (b"", b"", b"==", b"=")


def decode_bytes(segment: bytes) -> bytes:
    """Decode one base64url segment, raising ValueError for anything non-canonical."""
    rem = len(segment) % 4
    # translate(None, alphabet) deletes every allowed byte: anything left is a stray character.
    if rem == 1 or segment.translate(None, _ALPHABET):
        raise ValueError("not base64url")
    if (rem == 2 and segment[-1] not in _LAST_IF_REM2) or (
        rem == 3 and segment[-1] not in _LAST_IF_REM3
    ):
        raise ValueError("non-canonical base64url")
    return binascii.a2b_base64(segment.translate(_TO_STANDARD) + _PAD[rem])


def decode(segment: str) -> bytes:
    """:func:`decode_bytes` for text; non-ASCII text is not base64url (ValueError)."""
    return decode_bytes(segment.encode("ascii"))


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_uint(segment: str) -> int:
    """Decode a JWK integer member (RFC 7518 §2 Base64urlUInt)."""
    raw = decode(segment)
    if not raw:
        raise ValueError("empty integer")
    return int.from_bytes(raw, "big")
