"""In-process verification throughput per algorithm: the raw signature check (the floor), this
library's SyncVerifier (unique tokens without and with the token cache, one repeated token), and
PyJWT's jwt.decode with equivalent checks."""

from __future__ import annotations

import gc
import hashlib
import hmac
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass, fields
from typing import Any

import jwt
from common import AUDIENCE, median
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from jwt_middleware import Key, Settings, SyncVerifier
from jwt_middleware import _b64 as b64
from jwt_middleware._flow import token_digest
from jwt_middleware.testing import LocalIssuer

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA", "HS256")
ISSUER = "https://issuer.bench.example/"

VARIANTS = (
    ("floor", "raw signature check (floor)"),
    ("verifier_nocache", "SyncVerifier, unique tokens, token_cache_size=0"),
    ("verifier_cache", "SyncVerifier, unique tokens, default cache (full: each miss evicts)"),
    ("verifier_hit", "SyncVerifier, one repeated token (cache hits)"),
    ("adapter_hit", "the middlewares' hot path: token_digest + cached() on the header bytes"),
    ("pyjwt", "PyJWT jwt.decode, unique tokens"),
)

# (variant, algorithms it applies to, minimum ratio, what it is compared with)
TARGETS = (
    ("verifier_nocache", ("RS256",), 0.6, "floor"),
    ("verifier_cache", ("RS256",), 0.6, "floor"),
    ("verifier_nocache", ("ES256", "EdDSA"), 0.8, "floor"),
    ("verifier_cache", ("ES256", "EdDSA"), 0.8, "floor"),
    ("verifier_hit", ALGORITHMS, 5.0, "RS256 floor"),
    ("adapter_hit", ALGORITHMS, 5.0, "RS256 floor"),
)


@dataclass
class Fixture:
    alg: str
    tokens: list[str]
    pairs: list[tuple[bytes, bytes]]  # (signing input, signature as the raw API wants it)
    floor: Callable[[bytes, bytes], Any]
    key: Key
    pyjwt_key: Any
    filler: list[str]  # more unique tokens, so the cache can be measured full


def default_cache_size() -> int:
    return int(next(f.default for f in fields(Settings) if f.name == "token_cache_size"))


def _floor(
    alg: str, private: Any
) -> tuple[Callable[[bytes, bytes], Any], Callable[[bytes], bytes]]:
    """The cheapest correct check of one signature, and how a JWS signature is turned into the
    form it takes (done outside the timed loop: the floor is the cryptographic operation)."""
    if alg == "HS256":
        secret: bytes = private

        def check_hmac(msg: bytes, sig: bytes) -> bool:
            return hmac.compare_digest(hmac.new(secret, msg, hashlib.sha256).digest(), sig)

        return check_hmac, bytes
    public = private.public_key()
    sha256 = hashes.SHA256()
    if alg == "EdDSA":

        def check_eddsa(msg: bytes, sig: bytes) -> None:
            public.verify(sig, msg)

        return check_eddsa, bytes
    if alg in ("RS256", "PS256"):
        pad: padding.AsymmetricPadding = (
            padding.PKCS1v15()
            if alg == "RS256"
            else padding.PSS(mgf=padding.MGF1(sha256), salt_length=sha256.digest_size)
        )

        def check_rsa(msg: bytes, sig: bytes) -> None:
            public.verify(sig, msg, pad, sha256)

        return check_rsa, bytes
    ecdsa = ec.ECDSA(sha256)

    def check_ecdsa(msg: bytes, sig: bytes) -> None:
        public.verify(sig, msg, ecdsa)

    def to_der(raw: bytes) -> bytes:
        half = len(raw) // 2
        return encode_dss_signature(
            int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
        )

    return check_ecdsa, to_der


def fixture(alg: str, count: int) -> Fixture:
    issuer = LocalIssuer(algorithm=alg, issuer=ISSUER, audience=AUDIENCE)  # minting only
    signer = issuer.current_key
    tokens = [
        issuer.mint(subject=f"user-{i}", scope="read write", expires_in=3600) for i in range(count)
    ]
    check, convert = _floor(alg, signer.private_key)
    pairs = []
    for token in tokens:
        head, body, sig = token.split(".")
        pairs.append((f"{head}.{body}".encode("ascii"), convert(b64.decode(sig))))
    extra = max(0, default_cache_size() + 1 - count)
    filler = [issuer.mint(subject=f"filler-{i}", expires_in=3600) for i in range(extra)]
    if alg == "HS256":
        key = Key.from_secret(signer.private_key, kid=signer.kid, alg="HS256")
        pyjwt_key: Any = signer.private_key
    else:
        key = Key.from_pem(signer.public_pem(), kid=signer.kid)
        pyjwt_key = signer.public_key()
    return Fixture(alg, tokens, pairs, check, key, pyjwt_key, filler)


def _settings(fx: Fixture, **overrides: Any) -> Settings:
    return Settings(
        issuer=ISSUER, audience=AUDIENCE, keys=[fx.key], algorithms=[fx.alg], **overrides
    )


def _timed(run: Callable[[], int]) -> float:
    """ops per CPU-second of one run (run returns how many operations it made).

    CPU time of this thread, not wall time: on a shared machine, time the scheduler gives to
    other processes would otherwise be counted against whichever variant it fell on.
    """
    gc.collect()
    started = time.thread_time()
    ops = run()
    return ops / (time.thread_time() - started)


def measure(fx: Fixture, repeats: int, hit_ops: int) -> dict[str, float]:
    """Median ops/s of each variant; variants are interleaved within each repeat."""
    alg, tokens, pairs, check = fx.alg, fx.tokens, fx.pairs, fx.floor
    nocache = SyncVerifier(_settings(fx, token_cache_size=0))
    one = tokens[0]

    def floor() -> int:
        for msg, sig in pairs:
            check(msg, sig)
        return len(pairs)

    def verifier_nocache() -> int:
        verify = nocache.verify
        for token in tokens:
            verify(token)
        return len(tokens)

    # Steady state of a busy service seeing new tokens: one verifier cycles through more
    # distinct tokens than its cache holds, so every verification is a miss that evicts the
    # oldest entry (FIFO). The first pass, untimed, fills the cache.
    steady = SyncVerifier(_settings(fx))
    cycle = itertools.cycle(tokens + fx.filler)
    for token in tokens + fx.filler:
        steady.verify(token)

    def verifier_cache() -> int:
        verify = steady.verify
        for token in itertools.islice(cycle, len(tokens)):
            verify(token)
        return len(tokens)

    hitter = SyncVerifier(_settings(fx))
    hitter.verify(one)

    def verifier_hit() -> int:
        verify = hitter.verify
        for _ in range(hit_ops):
            verify(one)
        return hit_ops

    hitter.verify(one)  # the second use admits it
    sent = one.encode()

    def adapter_hit() -> int:
        cached = hitter.cached
        for _ in range(hit_ops):
            if cached(token_digest(sent)) is None:
                raise RuntimeError("the hot path missed a cached token")
        return hit_ops

    key = fx.pyjwt_key

    def pyjwt() -> int:
        decode = jwt.decode
        for token in tokens:
            decode(token, key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER)
        return len(tokens)

    runs: dict[str, Callable[[], int]] = {
        "floor": floor,
        "verifier_nocache": verifier_nocache,
        "verifier_cache": verifier_cache,
        "verifier_hit": verifier_hit,
        "adapter_hit": adapter_hit,
        "pyjwt": pyjwt,
    }
    # Sanity first: every path accepts every token (a refusal would be measured as "fast").
    for run in runs.values():
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(_timed(run))
    return {name: median(values) for name, values in samples.items()}


def run(*, tokens: int, repeats: int, hit_ops: int) -> dict[str, Any]:
    results: dict[str, dict[str, float]] = {}
    for alg in ALGORITHMS:
        started = time.perf_counter()
        fx = fixture(alg, tokens)
        results[alg] = measure(fx, repeats, hit_ops)
        floor = results[alg]["floor"]
        shown = ", ".join(
            f"{name} {ops:,.0f}/s ({ops / floor:.2f}x)" for name, ops in results[alg].items()
        )
        print(f"   {alg}: {shown}  [{time.perf_counter() - started:.1f}s]", flush=True)
    rows = []
    for alg in ALGORITHMS:
        floor = results[alg]["floor"]
        for name, label in VARIANTS:
            ops = results[alg][name]
            rows.append(
                {
                    "alg": alg,
                    "variant": name,
                    "label": label,
                    "ops_per_s": ops,
                    "us_per_op": 1e6 / ops,
                    "ratio_to_floor": ops / floor,
                }
            )
    targets = []
    for variant, algs, minimum, against in TARGETS:
        for alg in algs:
            base = results["RS256"]["floor"] if against == "RS256 floor" else results[alg]["floor"]
            ratio = results[alg][variant] / base
            targets.append(
                {
                    "name": f"in-process {alg} {variant} >= {minimum:g}x {against}",
                    "alg": alg,
                    "variant": variant,
                    "ratio": ratio,
                    "target": minimum,
                    "pass": ratio >= minimum,
                }
            )
    return {
        "config": {"tokens": tokens, "repeats": repeats, "hit_ops": hit_ops},
        "rows": rows,
        "targets": targets,
    }
