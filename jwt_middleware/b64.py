"""Strict base64url (RFC 7515 §2): the URL-safe alphabet, no padding, no stray characters, and
canonical encodings only.

Python's own decoder skips characters outside the alphabet and ignores the unused low bits of
the last character, so ``eyJ?hbGc`` and a token with flipped padding bits would decode to the
same bytes as the original. Two spellings of one token defeat caches, deny-lists and audit trails,
hence the strictness here.
"""

from __future__ import annotations

import base64
import re

_ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
_SEGMENT = re.compile(r"[A-Za-z0-9_-]*")
# Characters allowed last when 4 (len % 4 == 2) or 2 (len % 4 == 3) low bits are unused.
_LAST_IF_REM2 = frozenset(c for i, c in enumerate(_ALPHABET) if i & 0x0F == 0)
_LAST_IF_REM3 = frozenset(c for i, c in enumerate(_ALPHABET) if i & 0x03 == 0)
_PAD = ("", "", "==", "=")


def decode(segment: str) -> bytes:
    """Decode one base64url segment, raising ValueError for anything non-canonical."""
    rem = len(segment) % 4
    if rem == 1 or _SEGMENT.fullmatch(segment) is None:
        raise ValueError("not base64url")
    if rem == 2 and segment[-1] not in _LAST_IF_REM2:
        raise ValueError("non-canonical base64url")
    if rem == 3 and segment[-1] not in _LAST_IF_REM3:
        raise ValueError("non-canonical base64url")
    return base64.urlsafe_b64decode(segment + _PAD[rem])


def encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def decode_uint(segment: str) -> int:
    """Decode a JWK integer member (RFC 7518 §2 Base64urlUInt)."""
    raw = decode(segment)
    if not raw:
        raise ValueError("empty integer")
    return int.from_bytes(raw, "big")
