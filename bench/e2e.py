"""End to end: wrk against real servers on 127.0.0.1, the server pinned to one core, wrk to
another; interleaved rounds with fresh servers, medians over rounds."""

from __future__ import annotations

import contextlib
import re
import subprocess
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from common import BENCH, Server, gunicorn, issuer_env, median, taskset, uvicorn

from jwt_middleware.testing import LocalIssuer

CONNECTIONS = 32
EXAMPLES = BENCH.parent / "examples"


class App(NamedTuple):
    framework: str
    label: str
    target: str  # a factory in apps.py (uvicorn), or "module:app" with a folder (gunicorn)
    mixes: tuple[str, ...] = ("unique", "repeated")
    folder: Path | None = None  # set for gunicorn apps

    @property
    def bare(self) -> bool:
        return self.mixes == ("n/a",)


BARE = ("n/a",)
APPS = (
    App("Starlette", "bare", "starlette_bare", BARE),
    App(
        "Starlette",
        "JWTMiddleware (endpoint reads request.user)",
        "starlette_protected",
        ("unique", "repeated", "dpop"),
    ),
    App("Starlette", "ceiling: raw RSA check only", "starlette_signature_ceiling", ("unique",)),
    App(
        "Starlette",
        "ceiling: digest + lookup + exp check + identity",
        "starlette_hit_ceiling",
        ("repeated",),
    ),
    App("FastAPI", "bare", "fastapi_bare", BARE),
    App("FastAPI", "JWTMiddleware + RequireScopes", "fastapi_protected"),
    App("FastAPI", "PyJWKClient + jwt.decode, def dependency", "fastapi_pyjwt"),
    App("FastAPI", "PyJWKClient + jwt.decode, async def dependency", "fastapi_pyjwt_async"),
    App("Flask", "bare (gunicorn gthread)", "apps:flask_bare()", BARE, BENCH),
    App("Flask", "JWTWSGIMiddleware (examples/flask_app.py)", "flask_app:app", folder=EXAMPLES),
)


def write_tokens(issuer: LocalIssuer, folder: Path, unique: int, repeated: int) -> dict[str, Path]:
    """One token file per mix. ``unique`` cycles more tokens than the cache admits, so every
    request checks a signature; the warm-up runs get tokens of their own, since a measured run
    re-sending the warm-up's tokens would see them admitted on that second sighting and hit."""
    files = {}
    for mix, count in (("unique", unique), ("warm-up", unique), ("repeated", repeated)):
        files[mix] = folder / f"tokens-{mix}.txt"
        minted = [issuer.mint(subject=f"{mix}{i}", expires_in=3600) for i in range(count)]
        files[mix].write_text("\n".join(minted) + "\n")
    files["n/a"] = files["repeated"]  # bare apps get the same headers
    return files


#: DPoP proofs written per second of a run: each is good once, and a wrapped file would send
#: replays (401s, counted as errors). Far above what one worker verifies (each needs a signature).
PROOFS_PER_SECOND = 8000
DPOP_CLIENTS = 16


class DpopClients:
    """DPoP clients, each a key and an access token bound to it (cached by the server after
    the warm-up). Proofs name the URL wrk calls, so a file is made per server and per run,
    just before it: each proof has its own jti, and all are fresh (iat within 300 s)."""

    def __init__(self, issuer: LocalIssuer) -> None:
        from jwt_middleware.testing import generate_key

        self.clients = []
        for i in range(DPOP_CLIENTS):
            key = generate_key("ES256")
            token = issuer.mint(subject=f"dpop{i}", expires_in=3600, dpop_key=key)
            self.clients.append((key, token))

    def write(self, path: Path, url: str, count: int) -> Path:
        from jwt_middleware.testing import dpop_proof

        lines = []
        for i in range(count):
            key, token = self.clients[i % len(self.clients)]
            lines.append(f"{token} {dpop_proof(key, 'GET', url, access_token=token)}")
        path.write_text("\n".join(lines) + "\n")
        return path

    def headers(self, url: str) -> dict[str, str]:
        from jwt_middleware.testing import dpop_headers

        key, token = self.clients[0]
        return dpop_headers(token, key, "GET", url)


_MS = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def wrk(url: str, tokens: Path, seconds: float, core: int | None, server: Server) -> dict[str, Any]:
    """One wrk run: req/s, p50/p99, errors, and the server's CPU time per request, which, unlike
    req/s, does not drop when other load on the machine steals the server's core."""
    argv = [*taskset(core), "wrk", "-t1", f"-c{CONNECTIONS}", f"-d{round(seconds)}s"]
    argv += ["--timeout", "5s", "--latency", "-s", str(BENCH / "tokens.lua"), url, "--"]
    cpu = server.cpu_seconds()
    done = subprocess.run(  # noqa: S603 - argv built here
        [*argv, str(tokens)], capture_output=True, text=True, timeout=seconds + 30, check=True
    )
    cpu = server.cpu_seconds() - cpu
    out = done.stdout

    def number(pattern: str) -> list[str]:
        found = re.search(pattern, out, re.MULTILINE)
        return list(found.groups()) if found else []

    requests = int(number(r"^\s*(\d+) requests in")[0])
    p50, p99 = (number(rf"^\s+{p}%\s+([\d.]+)(us|ms|s)\s*$") for p in (50, 99))
    errors = number(r"Non-2xx or 3xx responses:\s+(\d+)")
    errors += number(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    return {
        "rps": float(number(r"^Requests/sec:\s+([\d.]+)")[0]),
        "p50_ms": float(p50[0]) * _MS[p50[1]],
        "p99_ms": float(p99[0]) * _MS[p99[1]],
        "cpu_us_per_req": cpu / requests * 1e6,
        "errors": sum(int(e) for e in errors),
        "requests": requests,
    }


def pattern_of(rows: list[dict[str, Any]], target: str, tokens: str) -> float:
    return float(next(r["rps"] for r in rows if r["target"] == target and r["tokens"] == tokens))


def _server(app: App, env: dict[str, str], core: int | None) -> Server:
    if app.folder is None:
        return uvicorn(app.target, env, core)
    return gunicorn(app.target, app.folder, env, core)


def _sanity(server: Server, app: App, token: str, dpop: DpopClients) -> None:
    with httpx.Client(timeout=10) as client:
        got = client.get(server.url + "/me", headers={"authorization": f"Bearer {token}"})
        refused = 401 if app.bare else client.get(server.url + "/me").status_code
        if got.status_code != 200 or refused not in (401, 403):
            raise RuntimeError(f"{app.target}: /me gave {got.status_code}, no token {refused}")
        if "dpop" in app.mixes:
            headers = dpop.headers(server.url + "/me")
            first = client.get(server.url + "/me", headers=headers).status_code
            again = client.get(server.url + "/me", headers=headers).status_code
            if (first, again) != (200, 401):
                raise RuntimeError(f"{app.target}: DPoP gave {first}, its replay {again}")


def _load(mix: str, files: dict[str, Path], dpop: DpopClients, url: str, seconds: float) -> Path:
    """The request file of one wrk run: the mix's tokens, or fresh proofs for this server."""
    if mix != "dpop":
        return files[mix]
    count = int(seconds * PROOFS_PER_SECOND) + 1000
    return dpop.write(files["unique"].with_name("dpop-run.txt"), url, count)


def run(
    issuer: LocalIssuer,
    files: dict[str, Path],
    *,
    seconds: float,
    rounds: int,
    cores: tuple[int | None, int | None],
) -> list[dict[str, Any]]:
    """Every round starts every server anew: one process's memory layout can bias it by a few
    per cent for as long as it lives, more than some of the differences measured here."""
    scenarios = [(app, mix) for app in APPS for mix in app.mixes]
    samples: list[list[dict[str, Any]]] = [[] for _ in scenarios]
    sample_token = files["repeated"].read_text().split("\n", 1)[0]
    dpop = DpopClients(issuer)
    env = issuer_env(issuer)
    for round_ in range(1, rounds + 1):
        with contextlib.ExitStack() as stack:
            servers = [stack.enter_context(_server(app, env, cores[0])) for app in APPS]
            by_app = dict(zip(APPS, servers, strict=True))
            for app, server in by_app.items():
                server.wait_ready()
                _sanity(server, app, sample_token, dpop)
            for app, mix in scenarios:  # discarded: fills caches, opens pools
                url = by_app[app].url + "/me"
                warm = _load("warm-up" if mix == "unique" else mix, files, dpop, url, 1)
                wrk(url, warm, 1, cores[1], by_app[app])
            for index, (app, mix) in enumerate(scenarios):
                url = by_app[app].url + "/me"
                load = _load(mix, files, dpop, url, seconds)
                r = wrk(url, load, seconds, cores[1], by_app[app])
                if mix == "dpop" and r["requests"] > seconds * PROOFS_PER_SECOND + 1000:
                    print("   (DPoP: more requests than proofs; replays counted as errors)")
                samples[index].append(r)
                print(
                    f"   [{round_}/{rounds}] {app.framework:9} {app.label[:46]:46} {mix:8} "
                    f"{r['rps']:8,.0f} req/s  p99 {r['p99_ms']:6.2f} ms  "
                    f"{r['cpu_us_per_req']:4.0f} us CPU/req  errors {r['errors']}",
                    flush=True,
                )
    rows = []
    for (app, mix), runs in zip(scenarios, samples, strict=True):
        row: dict[str, Any] = {"framework": app.framework, "app": app.label, "tokens": mix}
        for key in ("rps", "p50_ms", "p99_ms", "cpu_us_per_req"):
            row[key] = median([r[key] for r in runs])
        row |= {"rps_range": [min(r["rps"] for r in runs), max(r["rps"] for r in runs)]}
        rows.append(row | {"errors": sum(r["errors"] for r in runs), "target": app.target})
    bare = {r["framework"]: r for r in rows if r["tokens"] == "n/a"}
    for row in rows:
        base = bare[row["framework"]]
        row["vs_bare"] = row["rps"] / base["rps"]
        row["vs_bare_by_cpu"] = base["cpu_us_per_req"] / row["cpu_us_per_req"]
    # DPoP against Bearer on the same app, both with the access token cached.
    for row in rows:
        if row["tokens"] == "dpop":
            row["vs_bearer"] = row["rps"] / pattern_of(rows, row["target"], "repeated")
    # The FastAPI claim is relative to the hand-written pattern, for the same token mix.
    pattern = {(r["target"], r["tokens"]): r["rps"] for r in rows}
    for row in rows:
        if row["target"] == "fastapi_protected":
            for other, name in (("fastapi_pyjwt", "def"), ("fastapi_pyjwt_async", "async")):
                row[f"vs_pyjwt_{name}"] = row["rps"] / pattern[other, row["tokens"]]
    return rows
