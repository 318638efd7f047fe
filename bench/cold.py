"""Cold paths: the first request after start (with and without key warm-up), and a burst of
concurrent requests carrying a kid the server has never seen (a key rotation)."""

from __future__ import annotations

import asyncio
import http.client
import time
from typing import Any

from common import median, percentile
from e2e import issuer_env, uvicorn

from jwt_middleware.testing import LocalIssuer

READY = "Uvicorn running on"
APP = "starlette_protected"


def _get(port: int, token: str) -> tuple[int, float]:
    """One GET /me on a new connection: (status, milliseconds)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        started = time.perf_counter()
        conn.request("GET", "/me", headers={"Authorization": f"Bearer {token}"})
        response = conn.getresponse()
        response.read()
        return response.status, (time.perf_counter() - started) * 1e3
    finally:
        conn.close()


def first_request(
    issuer: LocalIssuer, *, runs: int, cores: tuple[int | None, int | None], options: list[str]
) -> dict[str, Any]:
    token = issuer.mint(subject="first", scope="read", expires_in=3600)
    out: dict[str, Any] = {}
    for warm in (True, False):
        samples: list[dict[str, float]] = []
        for _ in range(runs):
            env = issuer_env(issuer, BENCH_WARM_UP="1" if warm else "0")
            with uvicorn(APP, env, cores[0], options, log_level="info") as server:
                ready = server.wait_for_log(READY)
                fetches = issuer.jwks_requests + issuer.discovery_requests
                status, first_ms = _get(server.port, token)
                fetched = issuer.jwks_requests + issuer.discovery_requests - fetches
                if status != 200:
                    raise RuntimeError(f"first request answered {status}\n{server.log()[-2000:]}")
                steady = median([_get(server.port, token)[1] for _ in range(20)])
                samples.append(
                    {
                        "startup_ms": (ready - server.started_at) * 1e3,
                        "first_ms": first_ms,
                        "steady_ms": steady,
                        "fetches_during_first": fetched,
                    }
                )
        key = "with_warm_up" if warm else "without_warm_up"
        out[key] = {
            "runs": samples,
            "startup_ms": median([s["startup_ms"] for s in samples]),
            "first_ms": median([s["first_ms"] for s in samples]),
            "steady_ms": median([s["steady_ms"] for s in samples]),
            "fetches_during_first": median([s["fetches_during_first"] for s in samples]),
        }
        row = out[key]
        print(
            f"   first request {key.replace('_', ' '):16}: {row['first_ms']:7.2f} ms "
            f"(next requests {row['steady_ms']:.2f} ms, key fetches during it "
            f"{row['fetches_during_first']:g}, start to ready {row['startup_ms']:.0f} ms)",
            flush=True,
        )
    return out


# -- the burst ---------------------------------------------------------------------------------


async def _burst(port: int, tokens: list[str]) -> tuple[list[int], list[float], float]:
    """All connections opened first, then every request sent at once.

    Returns statuses, per-request latencies from the common start (ms), and the connect time.
    """
    connect_started = time.perf_counter()
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in tokens))
    connect_ms = (time.perf_counter() - connect_started) * 1e3
    go = asyncio.Event()
    host = f"127.0.0.1:{port}"

    async def one(
        reader: asyncio.StreamReader, writer: asyncio.StreamWriter, token: str
    ) -> tuple[int, float]:
        request = f"GET /me HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\n\r\n"
        await go.wait()
        writer.write(request.encode("ascii"))
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                length = int(value)
        await reader.readexactly(length)
        return status, time.perf_counter()

    tasks = [asyncio.create_task(one(r, w, t)) for (r, w), t in zip(conns, tokens, strict=True)]
    await asyncio.sleep(0.05)  # every task is parked on go.wait()
    started = time.perf_counter()
    go.set()
    try:
        done = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    finally:
        for _, writer in conns:
            writer.close()
    return [s for s, _ in done], [(t - started) * 1e3 for _, t in done], connect_ms


def _summary(statuses: list[int], latencies: list[float], connect_ms: float) -> dict[str, Any]:
    counts: dict[str, int] = {}
    for status in statuses:
        counts[str(status)] = counts.get(str(status), 0) + 1
    return {
        "statuses": counts,
        "total_ms": max(latencies),
        "p50_ms": percentile(latencies, 50),
        "p99_ms": percentile(latencies, 99),
        "connect_ms": connect_ms,
    }


def rotation_burst(
    issuer: LocalIssuer,
    *,
    size: int,
    rounds: int,
    cores: tuple[int | None, int | None],
    options: list[str],
) -> dict[str, Any]:
    cooldown = 1.0
    env = issuer_env(issuer, BENCH_JWKS_COOLDOWN=str(cooldown))
    results: dict[str, Any] = {
        "size": size,
        "jwks_cooldown_s": cooldown,
        "rotated": [],
        "known": [],
    }
    with uvicorn(APP, env, cores[0], options) as server:
        server.wait_ready()
        status, _ = _get(server.port, issuer.mint(subject="warm", expires_in=3600))
        if status != 200:
            raise RuntimeError(f"warm-up request answered {status}")
        for _ in range(rounds):
            # Baseline: the same burst with a kid the server already holds (no fetch).
            tokens = [issuer.mint(subject=f"k{i}", expires_in=3600) for i in range(size)]
            before = issuer.jwks_requests
            known = _summary(*asyncio.run(_burst(server.port, tokens)))
            known["key_fetches"] = issuer.jwks_requests - before
            results["known"].append(known)
            # The cooldown since the last fetch must have passed, or the new kid is refused.
            time.sleep(cooldown + 0.3)
            issuer.rotate()
            tokens = [issuer.mint(subject=f"r{i}", expires_in=3600) for i in range(size)]
            before = issuer.jwks_requests
            rotated = _summary(*asyncio.run(_burst(server.port, tokens)))
            time.sleep(0.2)  # a stray extra fetch would be counted too
            rotated["key_fetches"] = issuer.jwks_requests - before
            results["rotated"].append(rotated)
            print(
                f"   burst of {size}, new kid: {rotated['key_fetches']} key fetch(es), "
                f"statuses {rotated['statuses']}, total {rotated['total_ms']:.0f} ms, "
                f"p50 {rotated['p50_ms']:.0f} ms, p99 {rotated['p99_ms']:.0f} ms "
                f"| known kid: total {known['total_ms']:.0f} ms, p99 {known['p99_ms']:.0f} ms",
                flush=True,
            )
    for kind in ("rotated", "known"):
        bursts = results[kind]
        results[f"{kind}_median"] = {
            "total_ms": median([b["total_ms"] for b in bursts]),
            "p50_ms": median([b["p50_ms"] for b in bursts]),
            "p99_ms": median([b["p99_ms"] for b in bursts]),
            "key_fetches": [b["key_fetches"] for b in bursts],
        }
    return results


def run(
    issuer: LocalIssuer,
    *,
    runs: int,
    burst_size: int,
    bursts: int,
    cores: tuple[int | None, int | None],
    options: list[str],
) -> dict[str, Any]:
    first = first_request(issuer, runs=runs, cores=cores, options=options)
    burst = rotation_burst(issuer, size=burst_size, rounds=bursts, cores=cores, options=options)
    fetches = [b["key_fetches"] for b in burst["rotated"]]
    all_ok = all(b["statuses"] == {"200": burst_size} for b in burst["rotated"])
    targets = [
        {
            "name": f"cold: rotation burst of {burst_size} causes exactly 1 key fetch (all 200)",
            "ratio": max(fetches) if fetches else float("nan"),
            "target": 1,
            "pass": bool(fetches) and all(f == 1 for f in fetches) and all_ok,
        }
    ]
    return {
        "config": {"runs": runs, "burst_size": burst_size, "bursts": bursts},
        "first_request": first,
        "burst": burst,
        "targets": targets,
    }
