"""In-process verifications per CPU-second and algorithm, against the raw signature check."""

from __future__ import annotations

import base64
import dataclasses
import gc
import hashlib
import hmac
import itertools
import time
from collections.abc import Callable
from typing import Any

import jwt
from common import AUDIENCE, median
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from jwt_middleware import Key, Settings, SyncVerifier
from jwt_middleware._flow import token_digest
from jwt_middleware.testing import LocalIssuer

ALGORITHMS = ("RS256", "PS256", "ES256", "EdDSA", "HS256")
ISSUER = "https://issuer.bench.example/"
LABELS = {
    "floor": "raw signature check (floor)",
    "nocache": "SyncVerifier, unique tokens, token_cache_size=0",
    "cache": "SyncVerifier, unique tokens, default cache (full: each miss evicts)",
    "hit": "SyncVerifier, one repeated token",
    "hot_path": "middlewares' hot path: token_digest + verifier.cached",
    "pyjwt": "PyJWT jwt.decode, unique tokens",
}


Check = Callable[[bytes, bytes], Any]
Run = Callable[[], int]


def _floor(alg: str, private: Any) -> tuple[Check, Callable[[bytes], bytes]]:
    """The cheapest correct check of one signature, and the conversion of a JWS signature to
    what it takes (done before timing: the floor is the cryptographic operation alone)."""
    if alg == "HS256":
        def check_hmac(msg: bytes, sig: bytes) -> bool:
            return hmac.compare_digest(hmac.new(private, msg, hashlib.sha256).digest(), sig)

        return check_hmac, bytes
    public, sha256 = private.public_key(), hashes.SHA256()
    if alg == "EdDSA":
        return lambda msg, sig: public.verify(sig, msg), bytes
    if alg == "ES256":
        ecdsa = ec.ECDSA(sha256)

        def to_der(raw: bytes) -> bytes:
            r, s = raw[:32], raw[32:]
            return encode_dss_signature(int.from_bytes(r, "big"), int.from_bytes(s, "big"))

        return lambda msg, sig: public.verify(sig, msg, ecdsa), to_der
    pad: padding.AsymmetricPadding = padding.PKCS1v15()
    if alg == "PS256":
        pad = padding.PSS(mgf=padding.MGF1(sha256), salt_length=sha256.digest_size)
    return lambda msg, sig: public.verify(sig, msg, pad, sha256), bytes


def _cpu_rate(run: Callable[[], int]) -> float:
    """Operations per CPU-second of this thread: time the scheduler gives to other processes
    on a shared machine is not counted against whichever variant it fell on."""
    gc.collect()
    started = time.thread_time()
    ops = run()
    return ops / (time.thread_time() - started)


def measure(alg: str, count: int, repeats: int, hit_ops: int) -> dict[str, float]:
    """Median ops/s of each variant, the variants interleaved within each repeat."""
    issuer = LocalIssuer(algorithm=alg, issuer=ISSUER, audience=AUDIENCE)  # minting only
    signer = issuer.current_key
    tokens = [issuer.mint(subject=f"u{i}", scope="read", expires_in=3600) for i in range(count)]
    check, convert = _floor(alg, signer.private_key)
    pairs = []
    for token in tokens:
        signing_input, _, sig = token.rpartition(".")
        raw = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        pairs.append((signing_input.encode(), convert(raw)))
    if alg == "HS256":
        pyjwt_key = signer.private_key
        key = Key.from_secret(pyjwt_key, kid=signer.kid, alg=alg)
    else:
        key, pyjwt_key = Key.from_pem(signer.public_pem(), kid=signer.kid), signer.public_key()

    def verifier(**overrides: Any) -> SyncVerifier:
        settings = Settings(issuer=ISSUER, audience=AUDIENCE, keys=[key], algorithms=[alg])
        return SyncVerifier(dataclasses.replace(settings, **overrides))

    nocache, full, hitter = verifier(token_cache_size=0), verifier(), verifier()

    # A busy service seeing new tokens: more distinct tokens than the cache holds, so every
    # verification misses and evicts; the untimed first pass fills the cache.
    size = full.settings.token_cache_size
    cycled = tokens + [issuer.mint(subject=f"f{i}", expires_in=3600) for i in range(size + 1)]
    for token in cycled:
        full.verify(token)
    cycle = itertools.cycle(cycled)
    one = tokens[0]
    hitter.verify(one)
    hitter.verify(one)  # the second sighting admits it to the cache
    sent = one.encode()

    def hot_path() -> int:
        for _ in range(hit_ops):
            if hitter.cached(token_digest(sent)) is None:
                raise RuntimeError("the hot path missed a cached token")
        return hit_ops

    def floor() -> int:
        for msg, sig in pairs:
            if check(msg, sig) is False:
                raise RuntimeError("the floor refused a valid token")
        return count

    def each(verify: Callable[[str], Any], source: Any = tokens, n: int = count) -> Run:
        def run() -> int:
            for token in itertools.islice(source, n):
                verify(token)
            return n

        return run

    def pyjwt(token: str) -> Any:
        return jwt.decode(token, pyjwt_key, algorithms=[alg], audience=AUDIENCE, issuer=ISSUER)

    runs: dict[str, Run] = {
        "floor": floor,
        "nocache": each(nocache.verify),
        "cache": each(full.verify, cycle),
        "hit": each(hitter.verify, itertools.repeat(one), hit_ops),
        "hot_path": hot_path,
        "pyjwt": each(pyjwt),
    }
    for run in runs.values():  # every path accepts every token first: a refusal would look fast
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(_cpu_rate(run))
    return {name: median(values) for name, values in samples.items()}


def run(*, tokens: int, repeats: int, hit_ops: int) -> list[dict[str, Any]]:
    rows = []
    for alg in ALGORITHMS:
        started = time.perf_counter()
        rates = measure(alg, tokens, repeats, hit_ops)
        shown = ", ".join(f"{n} {r / rates['floor']:.2f}x" for n, r in rates.items())
        took = time.perf_counter() - started
        print(f"   {alg}: floor {rates['floor']:,.0f}/s; {shown} [{took:.0f}s]", flush=True)
        for name, rate in rates.items():
            row = {"alg": alg, "what": LABELS[name], "variant": name, "ops_per_s": rate}
            rows.append(row | {"us_per_op": 1e6 / rate, "vs_floor": rate / rates["floor"]})
    return rows
