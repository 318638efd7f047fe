"""Cold paths: the first request after a start, with and without the key warm-up, and a burst of
concurrent requests carrying a kid the server has never seen (a key rotation)."""

from __future__ import annotations

import asyncio
import http.client
import time
from typing import Any

from common import issuer_env, median, percentile, uvicorn

from jwt_middleware.testing import LocalIssuer

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


def first_request(issuer: LocalIssuer, runs: int, core: int | None) -> list[dict[str, Any]]:
    """Timed from the moment uvicorn says it is running; median over ``runs`` starts."""
    token = issuer.mint(subject="first", expires_in=3600)
    rows = []
    for warm in (True, False):
        samples = []
        for _ in range(runs):
            env = issuer_env(issuer, BENCH_WARM_UP=str(int(warm)))
            with uvicorn(APP, env, core, log="info") as server:
                ready = server.wait_for_log("Uvicorn running on")
                before = issuer.jwks_requests + issuer.discovery_requests
                status, first_ms = _get(server.port, token)
                fetches = issuer.jwks_requests + issuer.discovery_requests - before
                if status != 200:
                    raise RuntimeError(f"first request answered {status}\n{server.log()}")
                later = median([_get(server.port, token)[1] for _ in range(20)])
                samples.append((first_ms, later, fetches, (ready - server.started_at) * 1e3))
        medians = [median(column) for column in zip(*samples, strict=True)]
        keys = ("first_ms", "next_ms", "fetches", "start_to_ready_ms")
        rows.append({"warm_up": warm} | dict(zip(keys, medians, strict=True)))
        print(f"   warm_up={warm}: first 200 in {medians[0]:.1f} ms", flush=True)
    return rows


async def _burst(port: int, tokens: list[str]) -> tuple[list[int], list[float]]:
    """All connections opened first, then every request sent at once: statuses, and latencies
    in ms from that common start."""
    conns = await asyncio.gather(*(asyncio.open_connection("127.0.0.1", port) for _ in tokens))
    go = asyncio.Event()

    async def one(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], token: str) -> int:
        reader, writer = conn
        await go.wait()
        request = f"GET /me HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n"
        writer.write(request.encode())
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            name, _, value = line.partition(b":")
            length = int(value) if name.strip().lower() == b"content-length" else length
        await reader.readexactly(length)
        return status

    async def timed(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], token: str) -> Any:
        return await one(conn, token), time.perf_counter()

    tasks = [asyncio.create_task(timed(c, t)) for c, t in zip(conns, tokens, strict=True)]
    await asyncio.sleep(0.05)  # every task is now parked on go.wait()
    started = time.perf_counter()
    go.set()
    try:
        done = await asyncio.wait_for(asyncio.gather(*tasks), timeout=60)
    finally:
        for _, writer in conns:
            writer.close()
    return [s for s, _ in done], [(t - started) * 1e3 for _, t in done]


def rotation_burst(issuer: LocalIssuer, size: int, bursts: int, core: int | None) -> list[Any]:
    """Each burst: ``size`` requests with a known kid (baseline), then as many with a new kid."""
    cooldown = 1.0  # so a new kid may be fetched soon after the previous fetch
    rows = []
    with uvicorn(APP, issuer_env(issuer, BENCH_JWKS_COOLDOWN=str(cooldown)), core) as server:
        server.wait_ready()
        for i in range(1, bursts + 1):
            for kind in ("known kid", "new kid"):
                if kind == "new kid":
                    time.sleep(cooldown + 0.3)
                    issuer.rotate()
                tokens = [issuer.mint(subject=f"b{n}", expires_in=3600) for n in range(size)]
                before = issuer.jwks_requests
                statuses, latencies = asyncio.run(_burst(server.port, tokens))
                time.sleep(0.2)  # a stray extra fetch would be counted too
                row = {"burst": f"{kind} #{i}", "fetches": issuer.jwks_requests - before}
                row |= {"all_200": statuses.count(200) == size, "total_ms": max(latencies)}
                rows.append(row | {"p50_ms": percentile(latencies, 50)})
                print(f"   {size} requests, {kind}: {row['fetches']} key fetch(es)", flush=True)
    return rows
