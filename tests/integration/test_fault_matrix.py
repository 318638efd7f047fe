"""Key-server faults, as a matrix: a real misbehaving key server (LocalIssuer on 127.0.0.1)
against both verifiers (AsyncVerifier and SyncVerifier), driven by a fake clock — nothing here
sleeps except the slow server itself.

Settings: ``jwks_max_age=600``, ``jwks_cooldown=30``, ``jwks_timeout=0.3``, ``jwks_max_stale``
24 h. The script, for every fault:

    t=0     known-kid token                 → fetch #1, accepted (keys held from now on)
            -- the fault is switched on --
    t=601   known-kid token                 → keys are stale: answered from them (accepted),
                                              refresh in the background (fetch #2)
    (a)     known-kid token again           → what the fault left us holding
    (b)     unknown-kid token, same instant → inside the cooldown: no fetch
    t=631   unknown-kid token               → cooldown over: fetch #3, then the verdict
    (c)     50 unknown-kid + 50 known-kid tokens over t=631..660 (one cooldown window)
                                            → no further fetch

Cells (``503`` is KeysUnavailable with Retry-After; ``401 kid`` is InvalidToken kid_unknown;
"received" counts requests that reached the key server's JWKS path over the whole script,
"attempts" the fetches the verifier started; every answer, 503s included, arrives within 3x the
documented bound of one fetch, ``2 * jwks_timeout``):

    fault                 | (a) known kid     | (b) unknown kid   | (b) after the   | received /
                          | after the refresh | in the cooldown   | cooldown        | attempts
    ----------------------+-------------------+-------------------+-----------------+-----------
    down (listener shut)  | accepted (stale)  | 503               | 503             | 1 / 3
    refused (no listener, | 503 (never had    | 503               | 503             | 0 / 2
      cold start)         |   any key)        |                   |                 |
    slow (1 s > 0.3 s)    | accepted (stale)  | 503               | 503             | 3 / 3
    HTTP 500              | accepted (stale)  | 503               | 503             | 3 / 3
    HTTP 404              | accepted (stale)  | 503               | 503             | 3 / 3
    invalid JSON          | accepted (stale)  | 503               | 503             | 3 / 3
    wrong shape           | accepted (stale)  | 503               | 503             | 3 / 3
    truncated body        | accepted (stale)  | 503               | 503             | 3 / 3
    oversized body        | accepted (stale)  | 503               | 503             | 3 / 3
    redirect (other host) | accepted (stale)  | 503               | 503             | 3 / 3 (*)
    header drip (0.1 s/B) | accepted (stale)  | 503               | 503             | 3 / 3
    body drip (0.1 s/B)   | accepted (stale)  | 503               | 503             | 3 / 3
    gzip bomb (10 MB)     | accepted (stale)  | 503               | 503             | 3 / 3
    gzip, gzip (stacked)  | accepted (stale)  | 503               | 503             | 3 / 3
    text/html JWKS        | accepted (stale)  | 503               | 503             | 3 / 3
    unsupported + good    | accepted (fresh)  | 401 kid           | 401 kid         | 3 / 3
    duplicate kids        | 401 kid (dropped) | 401 kid           | 401 kid         | 3 / 3
    rotate_each           | 401 kid (gone)    | 401 kid           | 401 kid         | 3 / 3
    raising events hook   | accepted (fresh)  | 401 kid           | 401 kid         | 3 / 3

    (*) the redirect target, another LocalIssuer, receives nothing.

"refused" never had keys, so its script is: t=0 known kid → 503 (attempt #1); unknown kid at
once → 503, no attempt; 50 more tokens in the window → no attempt; t=30 → attempt #2, 503.
The rows from "unsupported + good" on are the faults after which a *valid* new document arrives:
the server answered, so an unknown kid is a plain 401, never 503, and the held keys are replaced
by what it sent (a kid that appears twice is ambiguous and dropped: fail closed). The raising
``events.key_fetch`` hook is the application's fault, not the server's: it is logged and ignored.
The drips never trip the 0.3 s read timeout (a byte every 0.1 s); only the total deadline ends
them. The bomb is 10 MB of valid JSON gzipped into ~10 KB, under ``jwks_max_bytes`` on the wire.

Resource bounds: floods of 2,000 tokens with random kids and of 2,000 tokens with random
signatures cost at most one fetch per cooldown window (checked on the fake clock) and keep the
verifier's caches bounded (``_flow.tokens`` <= ``token_cache_size``; header rules' cache <= 256).
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import secrets
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from jwt_middleware import (
    InvalidToken,
    KeysUnavailable,
    Reason,
    Settings,
)
from jwt_middleware.observe import Counters
from jwt_middleware.testing import LocalIssuer, generate_key
from tests.support.clock import FakeClock
from tests.support.servers import VerifierDriver, closing, free_port

COOLDOWN = 30.0
MAX_AGE = 600.0
TIMEOUT = 0.3
LIMIT = 3 * 2 * TIMEOUT  # generous: 3x the documented bound of one fetch (and of a wait for it)

ACCEPTED = "accepted"
UNAVAILABLE = "503"
KID_UNKNOWN = "401 kid"


class Driver(VerifierDriver):
    """One verifier (async on its own loop, or sync) behind one call interface."""

    slowest = 0.0  # seconds, the longest any outcome() took to answer

    def outcome(self, token: str) -> str:
        """ACCEPTED, UNAVAILABLE or KID_UNKNOWN; anything else fails the test."""
        started = time.monotonic()
        try:
            self.verify(token)
        except KeysUnavailable as exc:
            assert exc.status_code == 503
            assert exc.retry_after >= 1
            return UNAVAILABLE
        except InvalidToken as exc:
            assert exc.reason == Reason.KID_UNKNOWN, exc.reason
            return KID_UNKNOWN
        finally:
            self.slowest = max(self.slowest, time.monotonic() - started)
        return ACCEPTED

    @property
    def attempts(self) -> int:
        return int(self.verifier.remote.policy.fetches)


@pytest.fixture(params=["async", "sync"])
def kind(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def drivers(kind: str) -> Iterator[Callable[..., Driver]]:
    yield from closing(lambda settings: Driver(kind, settings))


@pytest.fixture
def elsewhere() -> Iterator[LocalIssuer]:
    """Another host: the target of the redirect fault. It must never be asked anything."""
    with LocalIssuer() as other:
        yield other


class Hook(Counters):
    """The application's events hook: counts, and raises from key_fetch() once ``broken``."""

    broken = False

    def key_fetch(self, *, ok: bool) -> None:
        super().key_fetch(ok=ok)
        if self.broken:
            raise RuntimeError("the application's hook is broken")

    def fetches(self) -> int:
        counts = self.snapshot()
        return counts.get("key_fetch_ok", 0) + counts.get("key_fetch_failed", 0)


def settings_for(
    issuer: LocalIssuer,
    clock: FakeClock,
    jwks_url: str | None = None,
    events: Hook | None = None,
) -> Settings:
    return Settings(
        issuer=issuer.issuer,
        audience=issuer.audience,
        jwks_url=jwks_url or issuer.jwks_url,
        jwks_max_age=MAX_AGE,
        jwks_cooldown=COOLDOWN,
        jwks_timeout=TIMEOUT,
        events=events,
        clock=clock,
    )


# == the matrix ================================================================================


@dataclass(frozen=True)
class Cell:
    """A fault and what it must do to (a) the known kid, (b) an unknown kid, (c) fetch counts."""

    fault: str
    known_after_refresh: str
    unknown_in_cooldown: str
    unknown_after_cooldown: str
    received: int
    attempts: int = 3
    params: dict[str, Any] = field(default_factory=dict)


def _apply(cell: Cell, issuer: LocalIssuer, elsewhere: LocalIssuer, hook: Hook) -> None:
    good = issuer.current_key.public_jwk()
    if cell.fault == "down":
        issuer.set_fault("down")
    elif cell.fault == "slow":
        issuer.set_fault("slow", delay=1.0)
    elif cell.fault.startswith("status-"):
        issuer.set_fault("status", status=int(cell.fault.split("-")[1]))
    elif cell.fault == "garbage":
        issuer.set_fault("garbage")
    elif cell.fault == "wrong-shape":
        issuer.set_fault("wrong_shape", body={"keys": "nope"})
    elif cell.fault == "truncated":
        issuer.set_fault("truncated")
    elif cell.fault == "huge":
        issuer.set_fault("huge", size=200_000)
    elif cell.fault == "redirect":
        issuer.set_fault("redirect", location=elsewhere.jwks_url)
    elif cell.fault == "drip-headers":
        issuer.set_fault("drip_headers", interval=0.1)
    elif cell.fault == "drip-body":
        issuer.set_fault("drip_body", interval=0.1)
    elif cell.fault == "gzip-bomb":
        issuer.set_fault("encoding", encoding="gzip", size=10_000_000)
    elif cell.fault == "stacked-gzip":
        issuer.set_fault("encoding", encoding="gzip, gzip", size=10_000_000)
    elif cell.fault == "html":
        issuer.set_fault("content_type", content_type="text/html; charset=utf-8")
    elif cell.fault == "raising-hook":
        hook.broken = True
    elif cell.fault == "unsupported-mixed":
        weird = [
            {"kty": "XYZ", "kid": "strange"},
            {"kty": "oct", "kid": "secret", "k": base64.urlsafe_b64encode(b"s" * 32).decode()},
            {"kty": "EC", "kid": "bad-point", "crv": "P-256", "x": "AA", "y": "AA"},
            {"kty": "RSA", "kid": "short", "n": "AQAB", "e": "AQAB"},
            {"kty": "OKP", "kid": "x25519", "crv": "X25519", "x": "A" * 43},
            {**good, "kid": "encryption", "use": "enc"},
            "not an object",
        ]
        issuer.set_fault("wrong_shape", body={"keys": [*weird, good]})
    elif cell.fault == "duplicate-kids":
        impostor = {**generate_key("RS256").public_jwk(), "kid": good["kid"]}
        other = generate_key("ES256").public_jwk()
        issuer.set_fault("wrong_shape", body={"keys": [good, impostor, other]})
    elif cell.fault == "rotate_each":
        issuer.set_fault("rotate_each")
    else:  # pragma: no cover
        raise AssertionError(cell.fault)


STALE_IF_ERROR = (ACCEPTED, UNAVAILABLE, UNAVAILABLE)
SERVER_ANSWERED = (KID_UNKNOWN, KID_UNKNOWN)
MATRIX = [
    Cell("down", *STALE_IF_ERROR, received=1),
    Cell("slow", *STALE_IF_ERROR, received=3),
    Cell("status-500", *STALE_IF_ERROR, received=3),
    Cell("status-404", *STALE_IF_ERROR, received=3),
    Cell("garbage", *STALE_IF_ERROR, received=3),
    Cell("wrong-shape", *STALE_IF_ERROR, received=3),
    Cell("truncated", *STALE_IF_ERROR, received=3),
    Cell("huge", *STALE_IF_ERROR, received=3),
    Cell("redirect", *STALE_IF_ERROR, received=3),
    Cell("drip-headers", *STALE_IF_ERROR, received=3),
    Cell("drip-body", *STALE_IF_ERROR, received=3),
    Cell("gzip-bomb", *STALE_IF_ERROR, received=3),
    Cell("stacked-gzip", *STALE_IF_ERROR, received=3),
    Cell("html", *STALE_IF_ERROR, received=3),
    Cell("unsupported-mixed", ACCEPTED, *SERVER_ANSWERED, received=3),
    Cell("duplicate-kids", KID_UNKNOWN, *SERVER_ANSWERED, received=3),
    Cell("rotate_each", KID_UNKNOWN, *SERVER_ANSWERED, received=3),
    Cell("raising-hook", ACCEPTED, *SERVER_ANSWERED, received=3),
]


@pytest.mark.timeout(60)  # a wedged key cache (the raising hook's old bug) blocks forever
@pytest.mark.parametrize("cell", MATRIX, ids=[c.fault for c in MATRIX])
def test_fault_matrix(
    cell: Cell,
    issuer: LocalIssuer,
    elsewhere: LocalIssuer,
    clock: FakeClock,
    drivers: Callable[..., Driver],
) -> None:
    """Under each key-server fault the known and unknown kids get the cell's verdicts, with the
    cell's fetch count, no redirect followed and every answer under LIMIT.
    """
    hook = Hook()
    v = drivers(settings_for(issuer, clock, events=hook))

    def known() -> str:
        return issuer.mint(now=clock.now, expires_in=7200)

    def unknown() -> str:
        return issuer.mint(now=clock.now, kid=f"unknown-{secrets.token_hex(4)}")

    assert v.outcome(known()) == ACCEPTED
    assert (issuer.jwks_requests, v.attempts) == (1, 1)

    _apply(cell, issuer, elsewhere, hook)
    clock.advance(MAX_AGE + 1)
    # keys are stale: the known kid is answered from them while a refresh runs in the background
    assert v.outcome(known()) == ACCEPTED
    v.settle()
    assert v.attempts == 2

    # (a) the known kid, once the refresh has succeeded or failed
    assert v.outcome(known()) == cell.known_after_refresh
    # (b) an unknown kid inside the cooldown: answered without a fetch
    assert v.outcome(unknown()) == cell.unknown_in_cooldown
    assert v.attempts == 2
    # (b) after the cooldown: one fetch, then the verdict
    clock.advance(COOLDOWN + 0.5)
    assert v.outcome(unknown()) == cell.unknown_after_cooldown
    assert v.attempts == 3

    # (c) a burst within one cooldown window costs nothing more
    for _ in range(50):
        clock.advance(0.5)
        assert v.outcome(unknown()) == cell.unknown_in_cooldown
        assert v.outcome(known()) == cell.known_after_refresh
    v.settle()
    assert v.attempts == cell.attempts
    assert issuer.jwks_requests == cell.received
    assert elsewhere.request_log == []  # nothing ever followed the redirect
    assert hook.fetches() == cell.attempts  # the hook heard of every fetch, raising or not
    assert v.slowest < LIMIT, v.slowest


def test_fault_matrix_connection_refused_cold_start(
    issuer: LocalIssuer, clock: FakeClock, drivers: Callable[..., Driver]
) -> None:
    """With no key server from the start every token is a 503, with one attempt per cooldown."""
    dead = f"http://127.0.0.1:{free_port()}/.well-known/jwks.json"  # nothing listens there
    v = drivers(settings_for(issuer, clock, jwks_url=dead))
    # (a) a kid the issuer really publishes: no key was ever fetched → 503
    assert v.outcome(issuer.mint(now=clock.now)) == UNAVAILABLE
    assert v.attempts == 1
    # (b) unknown kid, inside the cooldown: 503 without another attempt
    assert v.outcome(issuer.mint(now=clock.now, kid="unknown")) == UNAVAILABLE
    # (c) a burst inside the window: no attempt
    for _ in range(50):
        clock.advance(0.5)
        assert v.outcome(issuer.mint(now=clock.now, kid="unknown")) == UNAVAILABLE
        assert v.outcome(issuer.mint(now=clock.now)) == UNAVAILABLE
    assert v.attempts == 1
    clock.advance(COOLDOWN)
    assert v.outcome(issuer.mint(now=clock.now)) == UNAVAILABLE
    assert v.attempts == 2
    assert issuer.jwks_requests == 0


def test_fault_matrix_table_matches_the_docstring() -> None:
    """The table in the module docstring states the same verdicts and counts as MATRIX."""
    # The table in the module docstring is the documentation of MATRIX: keep them in step.
    doc = __doc__ or ""
    labels = {
        "down": "down (listener shut)",
        "slow": "slow (1 s > 0.3 s)",
        "status-500": "HTTP 500",
        "status-404": "HTTP 404",
        "garbage": "invalid JSON",
        "wrong-shape": "wrong shape",
        "truncated": "truncated body",
        "huge": "oversized body",
        "redirect": "redirect (other host)",
        "drip-headers": "header drip (0.1 s/B)",
        "drip-body": "body drip (0.1 s/B)",
        "gzip-bomb": "gzip bomb (10 MB)",
        "stacked-gzip": "gzip, gzip (stacked)",
        "html": "text/html JWKS",
        "raising-hook": "raising events hook",
        "unsupported-mixed": "unsupported + good",
        "duplicate-kids": "duplicate kids",
        "rotate_each": "rotate_each",
    }
    words = {ACCEPTED: "accepted", UNAVAILABLE: "503", KID_UNKNOWN: "401 kid"}
    for cell in MATRIX:
        row = next(line for line in doc.splitlines() if line.strip().startswith(labels[cell.fault]))
        columns = [c.strip() for c in row.split("|")]
        assert columns[1].startswith(words[cell.known_after_refresh]), row
        assert columns[2] == words[cell.unknown_in_cooldown], row
        assert columns[3] == words[cell.unknown_after_cooldown], row
        assert columns[4].startswith(f"{cell.received} / {cell.attempts}"), row


# == resource bounds ===========================================================================


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _with_kid(token: str, kid: str) -> str:
    """The same payload and signature under a header naming ``kid`` (no need to re-sign: the
    kid is unknown, so the signature is never checked)."""
    head, body, sig = token.split(".")
    header = json.loads(base64.urlsafe_b64decode(head + "=" * (-len(head) % 4)))
    header["kid"] = kid
    return f"{_b64(json.dumps(header).encode())}.{body}.{sig}"


def _fetch_times(v: Driver, clock: FakeClock, tokens: Iterator[str], step: float) -> list[float]:
    """Verify every token (each must be refused), advancing the clock; when fetches happened."""
    times: list[float] = []
    for token in tokens:
        before = v.attempts
        with pytest.raises(InvalidToken):
            v.verify(token)
        times += [clock.now] * (v.attempts - before)
        clock.advance(step)
    v.settle()
    return times


FLOOD = int(os.environ.get("JWT_FLOOD_TOKENS", "2000"))


def test_flood_of_random_kids_costs_one_fetch_per_cooldown(
    issuer: LocalIssuer, clock: FakeClock, drivers: Callable[..., Driver]
) -> None:
    """A flood of random kids costs at most one JWKS fetch per cooldown; the caches stay bounded."""
    v = drivers(settings_for(issuer, clock))
    template = issuer.mint(now=clock.now, expires_in=10**6)
    v.verify(template)
    start = clock.now
    step = 0.05  # 2,000 tokens over 100 s of fake time: four cooldown windows
    kids = (_with_kid(template, secrets.token_urlsafe(12)) for _ in range(FLOOD))
    times = _fetch_times(v, clock, kids, step)
    gaps = [b - a for a, b in itertools.pairwise([start, *times])]
    assert all(gap >= COOLDOWN for gap in gaps), times
    assert 1 <= len(times) <= int(FLOOD * step // COOLDOWN) + 1
    assert issuer.jwks_requests == 1 + len(times)
    assert len(v.verifier._flow.tokens._entries) <= v.verifier.settings.token_cache_size
    assert len(v.verifier._flow.issuers[0].rules._cache) <= 256


def test_flood_of_random_signatures_costs_no_fetch(
    issuer: LocalIssuer, clock: FakeClock, drivers: Callable[..., Driver]
) -> None:
    """A flood of forged signatures on a known kid costs no fetch; none enters the token cache."""
    v = drivers(settings_for(issuer, clock))
    template = issuer.mint(now=clock.now, expires_in=10**6)
    v.verify(template)
    v.verify(template)  # the cache admits a token on its second use
    head, body, sig = template.split(".")
    size = len(base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4)))
    forged = (f"{head}.{body}.{_b64(secrets.token_bytes(size))}" for _ in range(FLOOD))
    times = _fetch_times(v, clock, forged, 0.05)
    assert times == []  # the kid is known: a bad signature never costs a fetch
    assert issuer.jwks_requests == 1
    assert len(v.verifier._flow.tokens._entries) == 1  # only the genuine template was remembered


def test_caches_stay_bounded_under_many_valid_tokens_and_headers(
    clock: FakeClock, drivers: Callable[..., Driver]
) -> None:
    """600 distinct valid tokens and headers keep the token and header caches within bounds."""
    with LocalIssuer(algorithm="ES256") as issuer:  # ES256: cheap to mint thousands
        settings = Settings(
            issuer=issuer.issuer,
            audience=issuer.audience,
            jwks_url=issuer.jwks_url,
            token_cache_size=64,
            clock=clock,
        )
        v = drivers(settings)
        for i in range(600):
            # a distinct header each time (typ varies) and a distinct token
            token = issuer.mint(now=clock.now, headers={"typ": f"JWT-{i}"})
            assert v.verify(token).subject == "user-1"
            assert v.verify(token).subject == "user-1"  # second use: admitted to the cache
            assert len(v.verifier._flow.tokens._entries) <= 64
            assert len(v.verifier._flow.tokens._seen) <= 64
            assert len(v.verifier._flow.issuers[0].rules._cache) <= 256
        assert issuer.jwks_requests == 1
