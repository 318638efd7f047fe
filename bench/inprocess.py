"""In-process verifications per CPU-second and algorithm, against the raw signature check."""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import gc
import hashlib
import hmac
import itertools
import time
from collections.abc import Callable, MutableMapping
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
    "proof_verify": "one proof check: Key.verify of a DPoP proof's signing input (floor)",
    "proof_rules": "ProofRules.check, fresh proofs, warm key cache (no replay record)",
    "bearer_request": "JWTMiddleware ASGI request, Bearer, access token cached",
    "dpop_request": "JWTMiddleware ASGI request, DPoP, access token cached, fresh proof",
}
#: The proof algorithms of the DPoP rows; the access token is RS256 (cached, so it hardly matters).
DPOP_ALGORITHMS = ("ES256", "EdDSA")
#: The external URL the middleware pins (public_url) and the proofs name.
PUBLIC_URL = "https://api.bench.example"


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


def _asgi_scope(headers: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """An HTTP scope shaped as uvicorn makes it, for GET /me."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "scheme": "http",
        "method": "GET",
        "path": "/me",
        "raw_path": b"/me",
        "root_path": "",
        "query_string": b"",
        "headers": [(b"host", b"api.bench.example"), *headers, (b"accept", b"*/*")],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }


def measure_dpop(alg: str, count: int, repeats: int) -> dict[str, float]:
    """The cost of DPoP on a request whose access token is already cached: one proof signature
    (the floor), the whole proof check, and a full JWTMiddleware request, Bearer and DPoP.

    Every proof is made before timing, each with its own jti, and the whole run (a few seconds)
    stays well inside the proofs' 300 s window. The replay store is sized for every proof the
    run records, so it never fills (a full one would refuse with 503, and look fast)."""
    from jwt_middleware import JWTMiddleware
    from jwt_middleware._dpop import ProofRules
    from jwt_middleware.replay import MemoryReplayStore
    from jwt_middleware.testing import dpop_proof, generate_key

    issuer = LocalIssuer(issuer=ISSUER, audience=AUDIENCE)  # RS256, minting only
    signer = issuer.current_key
    client_key = generate_key(alg)
    token = issuer.mint(subject="u1", scope="read", expires_in=3600, dpop_key=client_key)
    bearer = issuer.mint(subject="u2", scope="read", expires_in=3600)
    url = PUBLIC_URL + "/me"
    # ProofRules' batch (it records nothing), the warm-up, the acceptance pass, and one batch
    # per repeat: all distinct
    batches = [
        [dpop_proof(client_key, "GET", url, access_token=token) for _ in range(count)]
        for _ in range(repeats + 3)
    ]
    size = count * (repeats + 3)  # one client key: its bound too
    store = MemoryReplayStore(max_entries=size, max_per_key=size)
    settings = Settings(
        issuer=ISSUER,
        audience=AUDIENCE,
        keys=[Key.from_pem(signer.public_pem(), kid=signer.kid)],
        algorithms=["RS256"],
        public_url=PUBLIC_URL,
        dpop_replay=store,
    )
    statuses: list[int] = []

    async def endpoint(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b'{"sub":"u1"}'})

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: MutableMapping[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    middleware = JWTMiddleware(endpoint, settings=settings)
    dpop_auth = (b"authorization", b"DPoP " + token.encode())
    bearer_scope = _asgi_scope([(b"authorization", b"Bearer " + bearer.encode())])

    async def dpop_batch(proofs: list[str]) -> int:
        for proof in proofs:
            await middleware(_asgi_scope([dpop_auth, (b"dpop", proof.encode())]), receive, send)
        return len(proofs)

    async def bearer_batch(n: int) -> int:
        for _ in range(n):
            await middleware(dict(bearer_scope), receive, send)
        return n

    loop = asyncio.new_event_loop()
    # Warm-up: both tokens seen twice (the second sighting admits a token to the cache).
    loop.run_until_complete(dpop_batch(batches.pop()))
    loop.run_until_complete(bearer_batch(2))
    if statuses.count(200) != len(statuses):
        raise RuntimeError(f"the middleware refused the warm-up: {sorted(set(statuses))}")
    # verifier.cached() never answers for a bound token (its proof is checked every time):
    # ask the token cache itself.
    cache = middleware.verifier._flow.tokens
    for raw in (token, bearer):
        if cache is None or cache.hit(token_digest(raw.encode()), time.time()) is None:
            raise RuntimeError("the access token is not in the token cache")

    rules = ProofRules()
    key = Key.from_jwk(client_key.public_jwk())
    pairs = []
    for proof in batches[0]:
        signing_input, _, sig = proof.rpartition(".")
        signature = base64.urlsafe_b64decode(sig + "=" * (-len(sig) % 4))
        pairs.append((signing_input.encode(), signature))
    rules.check(batches[0][0], method="GET", url=url, access_token=token, now=time.time())  # warm
    now = time.time()
    # one ProofRules pass over the same batch is reused: it records nothing
    rule_proofs = batches[0]

    def proof_verify() -> int:
        for msg, sig in pairs:
            if not key.verify(alg, msg, sig):
                raise RuntimeError("Key.verify refused a valid proof")
        return count

    def proof_rules() -> int:
        for proof in rule_proofs:
            rules.check(proof, method="GET", url=url, access_token=token, now=now)
        return count

    fresh = iter(batches[1:])

    def dpop_request() -> int:
        return loop.run_until_complete(dpop_batch(next(fresh)))

    def bearer_request() -> int:
        return loop.run_until_complete(bearer_batch(count))

    runs: dict[str, Run] = {
        "proof_verify": proof_verify,
        "proof_rules": proof_rules,
        "bearer_request": bearer_request,
        "dpop_request": dpop_request,
    }
    statuses.clear()
    for run in runs.values():  # each accepts first: a refusal would look fast
        run()
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(repeats):
        for name, run in runs.items():
            samples[name].append(_cpu_rate(run))
    loop.close()
    if statuses.count(200) != len(statuses):
        raise RuntimeError(f"the middleware refused a timed request: {sorted(set(statuses))}")
    return {name: median(values) for name, values in samples.items()}


def run_dpop(*, proofs: int, repeats: int) -> list[dict[str, Any]]:
    rows = []
    for alg in DPOP_ALGORITHMS:
        started = time.perf_counter()
        rates = measure_dpop(alg, proofs, repeats)
        floor = rates["proof_verify"]
        shown = ", ".join(f"{n} {1e6 / r:.1f} us ({floor / r:.2f}x)" for n, r in rates.items())
        took = time.perf_counter() - started
        print(f"   DPoP {alg} proofs, cost vs one proof check: {shown} [{took:.0f}s]", flush=True)
        for name, rate in rates.items():
            row = {"alg": alg, "what": LABELS[name], "variant": name, "ops_per_s": rate}
            # cost_vs_proof: this row's time per operation over one proof signature check's
            rows.append(
                row
                | {"us_per_op": 1e6 / rate, "vs_floor": rate / floor, "cost_vs_proof": floor / rate}
            )
    return rows


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
    return rows + run_dpop(proofs=tokens, repeats=repeats)
