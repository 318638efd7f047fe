"""Compact JWS parsing (RFC 7515 §7.1) with the header rules of RFC 8725.

Pure functions over strings: no keys, no I/O. The header of a token is checked once per distinct
header segment; tokens from one issuer repeat the same header, so the result is cached.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

from . import b64
from .errors import InvalidToken, Reason

__all__ = ["Header", "HeaderRules", "ParsedToken", "loads_strict", "parse"]


class Header(NamedTuple):
    alg: str
    kid: str | None
    fields: Mapping[str, Any]


class ParsedToken(NamedTuple):
    header: Header
    payload: bytes
    signing_input: bytes
    signature: bytes


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §4 / RFC 7519 §4: names MUST be unique. Two parsers that keep different
    # duplicates see different tokens, so duplicates are refused outright.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


_decoder = json.JSONDecoder(object_pairs_hook=_unique_object, parse_constant=_reject_constant)
# The scanner JSONDecoder.raw_decode calls (an attribute since Python 2.6; typeshed omits it).
_scan: Callable[[str, int], tuple[Any, int]] = _decoder.scan_once  # type: ignore[attr-defined]
_WHITESPACE = " \t\n\r"  # RFC 8259 §2: the only insignificant whitespace


def loads_strict(data: bytes) -> Any:
    """JSON as RFC 8259 defines it: UTF-8, no NaN/Infinity, no duplicate member names."""
    text = data.decode("utf-8")
    # The decoder's scanner directly: JSONDecoder.decode adds two Python-level calls and two
    # regex matches per document, a third of the cost for a token-sized one. Same rules: the
    # whitespace RFC 8259 allows around the value, nothing else.
    start = len(text) - len(text.lstrip(_WHITESPACE)) if text[:1] in _WHITESPACE else 0
    try:
        value, end = _scan(text, start)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text) and text[end:].strip(_WHITESPACE):
        raise ValueError("extra data after the JSON value")
    return value


class HeaderRules:
    """What a JOSE header must look like to be accepted; caches the verdict per header segment."""

    __slots__ = ("_cache", "_cache_size", "algorithms", "typ")

    def __init__(self, algorithms: Collection[str], typ: str | None, cache_size: int = 256) -> None:
        self.algorithms = frozenset(algorithms)
        self.typ = _media_type(typ) if typ is not None else None
        self._cache: dict[bytes, Header] = {}
        self._cache_size = cache_size

    def header(self, segment: bytes) -> Header:
        cached = self._cache.get(segment)
        if cached is not None:
            return cached
        header = self._check(segment)
        if len(self._cache) >= self._cache_size:
            # Bounded: junk headers can only evict, never grow memory.
            self._cache.clear()
        self._cache[segment] = header
        return header

    def _check(self, segment: bytes) -> Header:
        try:
            fields = loads_strict(b64.decode_bytes(segment))
        except (ValueError, RecursionError):
            raise InvalidToken(Reason.MALFORMED_HEADER, "header is not base64url JSON") from None
        if not isinstance(fields, dict):
            raise InvalidToken(Reason.MALFORMED_HEADER, "header is not a JSON object")
        alg = fields.get("alg")
        # "none" can never be in self.algorithms (settings refuse it), in any spelling.
        if not isinstance(alg, str) or alg not in self.algorithms:
            shown = alg[:20] if isinstance(alg, str) else type(alg).__name__
            raise InvalidToken(Reason.ALG_NOT_ALLOWED, f"alg {shown!r}")
        if "crit" in fields:
            # RFC 7515 §4.1.11: extensions listed in crit must be understood; we support none.
            raise InvalidToken(Reason.CRIT_UNSUPPORTED, "crit header present")
        if "b64" in fields:
            raise InvalidToken(Reason.UNSUPPORTED_HEADER, "b64 (RFC 7797) is not supported")
        cty = fields.get("cty")
        if cty is not None and (not isinstance(cty, str) or _media_type(cty) == "jwt"):
            # Nested JWTs would need the inner token verified too; refuse rather than half-do it.
            raise InvalidToken(Reason.UNSUPPORTED_HEADER, "nested JWT (cty) is not supported")
        kid = fields.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise InvalidToken(Reason.MALFORMED_HEADER, "kid is not a string")
        if self.typ is not None:
            typ = fields.get("typ")
            if not isinstance(typ, str) or _media_type(typ) != self.typ:
                raise InvalidToken(Reason.TYP_MISMATCH, f"typ {str(typ)[:40]!r}")
        # jku, x5u, jwk and x5c are deliberately never read: keys come only from configuration.
        # Read-only: the same header object is shared by every token with this header segment.
        return Header(alg, kid, MappingProxyType(fields))


def _media_type(value: str) -> str:
    # RFC 7515 §4.1.9: compare case-insensitively; "application/" may be omitted.
    value = value.strip().lower()
    return value[12:] if value.startswith("application/") else value


def parse(token: str, rules: HeaderRules) -> ParsedToken:
    """Split and decode a compact JWS; checks the header. The signature is NOT checked here."""
    try:
        raw = token.encode("ascii")
    except UnicodeEncodeError:
        raise InvalidToken(Reason.MALFORMED_TOKEN, "token is not ASCII") from None
    parts = raw.split(b".")
    if len(parts) != 3:
        # 5 parts is JWE, 1 is JSON serialization or junk; neither is a signed JWT for us.
        raise InvalidToken(Reason.MALFORMED_TOKEN, f"{len(parts)} segments")
    head, body, sig = parts
    if not sig:
        raise InvalidToken(Reason.MALFORMED_TOKEN, "no signature")
    header = rules.header(head)
    try:
        payload = b64.decode_bytes(body)
        signature = b64.decode_bytes(sig)
    except ValueError:
        raise InvalidToken(Reason.MALFORMED_TOKEN, "segment is not base64url") from None
    return ParsedToken(header, payload, raw[: len(head) + 1 + len(body)], signature)
