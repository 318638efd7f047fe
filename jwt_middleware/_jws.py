"""Compact JWS parsing (RFC 7515 §7.1) with the header rules of RFC 8725.

Pure functions over strings: no keys, no I/O. The header of a token is checked once per distinct
header segment; tokens from one issuer repeat the same header, so the result is cached.
"""

from __future__ import annotations

import copy
import json
import re
import threading
from collections.abc import Callable, Collection, Mapping
from typing import Any, NamedTuple, NoReturn

from cachetools import LRUCache

from . import _b64 as b64
from ._errors import InvalidToken, Reason

__all__ = [
    "FrozenDict",
    "FrozenList",
    "Header",
    "HeaderRules",
    "ParsedToken",
    "loads_strict",
    "parse",
]


class Header(NamedTuple):
    alg: str
    kid: str | None
    fields: Mapping[str, Any]


class ParsedToken(NamedTuple):
    header: Header
    payload: bytes
    signing_input: bytes
    signature: bytes


def _read_only(self: object, *args: object, **kwargs: object) -> NoReturn:
    raise TypeError(f"{type(self).__name__} is read-only: verified claims and headers are shared")


class FrozenDict(dict[str, Any]):
    """A JSON object that cannot be changed, still a ``dict`` for ``json.dumps``, ``==`` and
    ``isinstance``. ``dict(x)``, ``x.copy()`` and ``copy.copy`` give mutable shallow copies,
    ``copy.deepcopy`` a mutable deep one."""

    __slots__ = ()
    __setitem__ = __delitem__ = __ior__ = clear = pop = popitem = setdefault = update = _read_only

    def __copy__(self) -> dict[str, Any]:
        return dict(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> dict[str, Any]:
        return copy.deepcopy(dict(self), memo)

    def __reduce__(self) -> tuple[type[FrozenDict], tuple[dict[str, Any]]]:
        # dict's own pickling refills the object item by item, which __setitem__ refuses.
        return FrozenDict, (dict(self),)


class FrozenList(list[Any]):
    """A JSON array that cannot be changed, still a ``list`` (see :class:`FrozenDict`)."""

    __slots__ = ()
    __setitem__ = __delitem__ = __iadd__ = __imul__ = _read_only
    append = extend = insert = pop = remove = clear = sort = reverse = _read_only

    def __copy__(self) -> list[Any]:
        return list(self)

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        return copy.deepcopy(list(self), memo)

    def __reduce__(self) -> tuple[type[FrozenList], tuple[list[Any]]]:
        return FrozenList, (list(self),)


_set_member = dict.__setitem__  # the base class's: the one way past _read_only
_set_element = list.__setitem__


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _unique_object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # RFC 7515 §4 / RFC 7519 §4: names MUST be unique. Two parsers that keep different
    # duplicates see different tokens, so duplicates are refused outright.
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    return obj


def _frozen_object(pairs: list[tuple[str, Any]]) -> FrozenDict:
    # The decoder calls this innermost object first, so member objects are frozen already;
    # only arrays are left (the C scanner builds them itself, with no hook).
    obj = FrozenDict(pairs)
    if len(obj) != len(pairs):
        raise ValueError("duplicate member name")
    for name, value in pairs:
        if type(value) is list:
            _set_member(obj, name, _frozen_array(value))
    return obj


def _frozen_array(value: list[Any]) -> FrozenList:
    array = FrozenList(value)
    for index, item in enumerate(value):
        if type(item) is list:
            # Recursion only through arrays directly inside arrays; too deep a nesting raises
            # RecursionError, which every caller of loads_strict refuses like bad JSON.
            _set_element(array, index, _frozen_array(item))
    return array


def _scanner(object_hook: Callable[[list[tuple[str, Any]]], Any]) -> Callable[[str, int], Any]:
    decoder = json.JSONDecoder(object_pairs_hook=object_hook, parse_constant=_reject_constant)
    # The scanner JSONDecoder.raw_decode calls (an attribute since Python 2.6; typeshed omits it).
    scan: Callable[[str, int], tuple[Any, int]] = decoder.scan_once  # type: ignore[attr-defined]
    return scan


_scan = _scanner(_unique_object)
_scan_frozen = _scanner(_frozen_object)
_WHITESPACE = " \t\n\r"  # RFC 8259 §2: the only insignificant whitespace
_SURROGATE = re.compile(r"[\ud800-\udfff]")


def loads_strict(data: bytes, *, frozen: bool = False) -> Any:
    """JSON as RFC 8259 defines it: UTF-8 Unicode text, no NaN/Infinity, no duplicate member
    names. ``frozen``: objects and arrays come as the read-only :class:`FrozenDict` and
    :class:`FrozenList` (for claims and headers, which are cached and shared by every request
    carrying the token). Building them while parsing costs a fraction of a walk afterwards."""
    text = data.decode("utf-8")
    # The decoder's scanner directly: JSONDecoder.decode adds two Python-level calls and two
    # regex matches per document, a third of the cost for a token-sized one. Same rules: the
    # whitespace RFC 8259 allows around the value, nothing else.
    start = len(text) - len(text.lstrip(_WHITESPACE)) if text[:1] in _WHITESPACE else 0
    try:
        value, end = (_scan_frozen if frozen else _scan)(text, start)
    except StopIteration:
        raise ValueError("not JSON") from None
    if end != len(text) and text[end:].strip(_WHITESPACE):
        raise ValueError("extra data after the JSON value")
    # RFC 8259 §8.1: strings are Unicode text. The decoder turns an unpaired \ud800 escape into
    # a lone surrogate, which no UTF-8 encoder accepts: an app echoing such a claim answers 500.
    # Strict UTF-8 decoding refuses surrogates in raw bytes, so only a document with a \u
    # escape can hold one (a correctly paired escape decodes to one code point, and passes).
    if b"\\u" in data and _holds_lone_surrogate(value):
        raise ValueError("a string holds an unpaired UTF-16 surrogate")
    if frozen and type(value) is list:  # a top-level array: no object hook froze it
        value = _frozen_array(value)
    return value


def _holds_lone_surrogate(value: Any) -> bool:
    # A loop, not recursion: the document may be nested as deep as the decoder allowed.
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and _SURROGATE.search(item):
                return True
        elif isinstance(item, dict):
            stack.extend(item)
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
    return False


class HeaderRules:
    """What a JOSE header must look like to be accepted; caches the verdict per header segment
    (only accepted headers: a refusal raises before anything is stored)."""

    __slots__ = ("_cache", "_lock", "algorithms", "typ")

    def __init__(self, algorithms: Collection[str], typ: str | None, cache_size: int = 256) -> None:
        if cache_size < 1:
            raise ValueError(f"cache_size must be at least 1, got {cache_size!r}")
        self.algorithms = frozenset(algorithms)
        self.typ = _media_type(typ) if typ is not None else None
        # Bounded, least recently used out first: a flood of distinct headers (a kid per forged
        # token) evicts its own entries, never grows memory, and leaves the issuer's own header,
        # which every genuine token refreshes, in place.
        self._cache: LRUCache[bytes, Header] = LRUCache(maxsize=cache_size)
        # cachetools caches are not thread-safe (a get racing an eviction raises KeyError, and
        # the size count can drift past the bound), and WSGI servers call this from many
        # threads. The lock is held only for the lookup or the store, never for the check.
        self._lock = threading.Lock()

    def header(self, segment: bytes) -> Header:
        with self._lock:
            cached = self._cache.get(segment)
        if cached is not None:
            return cached
        # Outside the lock: two threads meeting a new header both check it, and the second
        # store replaces an equal verdict.
        header = self._check(segment)
        with self._lock:
            self._cache[segment] = header
        return header

    def _check(self, segment: bytes) -> Header:
        try:
            fields = loads_strict(b64.decode_bytes(segment), frozen=True)
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
        # Read-only (frozen=True above): the same header object is shared by every token with
        # this header segment.
        return Header(alg, kid, fields)


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
