"""Compact JWS parsing: the header rules' verdict cache (bounded, least recently used out first,
safe to share between threads)."""

from __future__ import annotations

import base64
import json
import sys
import threading
from typing import Any

import pytest

from jwt_middleware import InvalidToken
from jwt_middleware._jws import HeaderRules


def segment(header: dict[str, Any]) -> bytes:
    return base64.urlsafe_b64encode(json.dumps(header).encode()).rstrip(b"=")


ISSUER_HEADER = segment({"alg": "RS256", "typ": "JWT", "kid": "issuer-key"})


def test_a_flood_of_distinct_headers_keeps_the_cache_bounded_and_the_issuers_header_cached() -> (
    None
):
    """Forged tokens with a new kid each: the cache never holds more than its size, the oldest
    junk is evicted, and the header genuine tokens keep using stays cached throughout."""
    rules = HeaderRules({"RS256"}, None, cache_size=16)
    issuers = rules.header(ISSUER_HEADER)
    first_junk = rules.header(segment({"alg": "RS256", "kid": "junk-0"}))
    for i in range(1, 2000):
        rules.header(segment({"alg": "RS256", "kid": f"junk-{i}"}))
        assert len(rules._cache) <= 16
        if i % 8 == 0:  # genuine traffic between the forgeries
            assert rules.header(ISSUER_HEADER) is issuers  # the cached verdict, not a new one
    assert rules.header(ISSUER_HEADER) is issuers
    assert rules.header(segment({"alg": "RS256", "kid": "junk-0"})) is not first_junk


def test_refused_headers_are_never_cached() -> None:
    """A flood of headers the rules refuse stores nothing: only accepted headers are cached."""
    rules = HeaderRules({"RS256"}, None, cache_size=16)
    rules.header(ISSUER_HEADER)
    for i in range(200):
        with pytest.raises(InvalidToken):
            rules.header(segment({"alg": "none", "kid": f"junk-{i}"}))
    assert len(rules._cache) == 1


def test_the_header_cache_survives_threads_racing_on_evictions() -> None:
    """Threads sharing one small cache (WSGI) never see an exception and never break its
    bound, even with a thread switch forced every microsecond."""
    rules = HeaderRules({"RS256"}, None, cache_size=4)
    segments = [segment({"alg": "RS256", "kid": f"k{i}"}) for i in range(64)]
    errors: list[BaseException] = []
    start = threading.Barrier(8)

    def hammer(offset: int) -> None:
        start.wait()
        try:
            for r in range(3000):
                assert rules.header(segments[(r * 7 + offset * 13) % 64]).kid is not None
        except BaseException as exc:
            errors.append(exc)

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # so the threads interleave inside the cache's own code
    try:
        threads = [threading.Thread(target=hammer, args=(t,)) for t in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []
    assert len(rules._cache) == rules._cache.currsize <= 4


@pytest.mark.parametrize("size", [0, -1])
def test_header_cache_size_must_be_positive(size: int) -> None:
    """A cache that could hold nothing is refused when the rules are built, not on a token."""
    with pytest.raises(ValueError, match="cache_size"):
        HeaderRules({"RS256"}, None, cache_size=size)
