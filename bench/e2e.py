"""End to end: wrk against real servers on 127.0.0.1 (uvicorn for Starlette/FastAPI, gunicorn
for Flask), server pinned to one core and wrk to another."""

from __future__ import annotations

import contextlib
import importlib.util
import itertools
import math
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from common import (
    AUDIENCE,
    BENCH,
    EXAMPLES,
    Server,
    free_port,
    group_cpu_seconds,
    median,
    python,
    run_bounded,
    server_env,
    taskset,
)

from jwt_middleware.testing import LocalIssuer

LUA = BENCH / "tokens.lua"
CONNECTIONS = 32


def ensure_wrk() -> str | None:
    """wrk's path; installs it with apt-get when missing (as root on Debian). None if that fails."""
    found = shutil.which("wrk")
    if found:
        return found
    if not shutil.which("apt-get") or os.geteuid() != 0:
        print("   wrk is missing and cannot be installed here (needs root and apt-get):")
        print("   the end-to-end part is skipped")
        return None
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    # install; if that fails (stale package lists on a fresh machine), update and install again
    for argv in (
        ["apt-get", "install", "-y", "wrk"],
        ["apt-get", "update"],
        ["apt-get", "install", "-y", "wrk"],
    ):
        if shutil.which("wrk"):
            break
        print(f"   wrk is missing: {' '.join(argv)}", flush=True)
        try:
            subprocess.run(  # noqa: S603 - fixed argv
                argv, check=False, timeout=300, capture_output=True, env=env
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            print(f"   {' '.join(argv)} failed: {exc}")
    found = shutil.which("wrk")
    if not found:
        print("   could not install wrk: the end-to-end part is skipped")
    return found


def fast_server_options() -> tuple[list[str], str]:
    """uvicorn's --loop uvloop --http httptools; pip-installs them into this venv if missing."""
    missing = [m for m in ("uvloop", "httptools") if importlib.util.find_spec(m) is None]
    note = "uvloop + httptools"
    if missing:
        print(f"   pip install {' '.join(missing)} (into {sys.prefix}) for uvicorn", flush=True)
        done = subprocess.run(  # noqa: S603 - fixed argv
            [python(), "-m", "pip", "install", "-q", *missing],
            check=False,
            timeout=300,
            capture_output=True,
            text=True,
        )
        importlib.invalidate_caches()
        still = [m for m in missing if importlib.util.find_spec(m) is None]
        if done.returncode != 0 or still:
            print(f"   could not install {' '.join(still)}; uvicorn uses its default loop/http")
            return [], "uvicorn defaults (uvloop/httptools unavailable)"
        note += " (installed by the bench)"
    return ["--loop", "uvloop", "--http", "httptools"], note


# -- servers -----------------------------------------------------------------------------------


def issuer_env(issuer: LocalIssuer, **extra: str) -> dict[str, str]:
    return server_env(
        {
            "BENCH_ISSUER": issuer.issuer,
            "BENCH_AUDIENCE": AUDIENCE,
            "BENCH_JWKS_URL": issuer.jwks_url,
            # examples/flask_app.py reads these (OIDC discovery, as the other apps)
            "JWT_ISSUER": issuer.issuer,
            "JWT_AUDIENCE": AUDIENCE,
            **extra,
        }
    )


def uvicorn(
    factory: str,
    env: dict[str, str],
    core: int | None,
    options: list[str],
    log_level: str = "warning",
) -> Server:
    port = free_port()
    argv = [
        *taskset(core),
        python(),
        "-m",
        "uvicorn",
        "--factory",
        f"apps:{factory}",
        "--app-dir",
        str(BENCH),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        log_level,
        "--no-access-log",
        "--lifespan",
        "on",
        *options,
    ]
    return Server(factory, argv, env, port)


def gunicorn(target: str, chdir: Path, env: dict[str, str], core: int | None) -> Server:
    port = free_port()
    argv = [
        *taskset(core),
        python(),
        "-m",
        "gunicorn",
        "-w",
        "1",
        "--threads",
        "4",
        "-b",
        f"127.0.0.1:{port}",
        "--chdir",
        str(chdir),
        "--log-level",
        "warning",
        target,
    ]
    return Server(target, argv, env, port)


# -- wrk ---------------------------------------------------------------------------------------

_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(value: str, unit: str) -> float:
    return float(value) * _UNITS[unit]


def parse_wrk(output: str) -> dict[str, Any]:
    def grab(pattern: str) -> re.Match[str] | None:
        return re.search(pattern, output, re.MULTILINE)

    rps = grab(r"^Requests/sec:\s+([\d.]+)")
    total = grab(r"^\s*(\d+) requests in")
    result: dict[str, Any] = {
        "rps": float(rps.group(1)) if rps else float("nan"),
        "requests": int(total.group(1)) if total else 0,
        "non_2xx": 0,
        "socket_errors": 0,
    }
    for pct in ("50", "99"):
        found = grab(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$")
        result[f"p{pct}_ms"] = _ms(*found.groups()) if found else float("nan")
    non2xx = grab(r"Non-2xx or 3xx responses:\s+(\d+)")
    if non2xx:
        result["non_2xx"] = int(non2xx.group(1))
    errors = grab(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)")
    if errors:
        result["socket_errors"] = sum(int(g) for g in errors.groups())
    return result


def wrk(
    wrk_path: str,
    url: str,
    token_file: Path,
    duration: float,
    core: int | None,
    server: Server | None = None,
) -> dict[str, Any]:
    """One wrk run. With ``server``, also the server's CPU time per request (all processes of
    its group), which unlike req/s does not drop when other load on the machine steals its core.
    """
    argv = [
        *taskset(core),
        wrk_path,
        "-t1",
        f"-c{CONNECTIONS}",
        f"-d{max(1, round(duration))}s",
        "--timeout",
        "5s",
        "--latency",
        "-s",
        str(LUA),
        url,
        "--",
        str(token_file),
    ]
    group = server.proc.pid if server is not None and server.proc is not None else None
    cpu_before = group_cpu_seconds(group) if group is not None else 0.0
    done = run_bounded(argv, timeout=duration + 30)
    cpu = group_cpu_seconds(group) - cpu_before if group is not None else float("nan")
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed ({done.returncode}): {done.stderr.strip()[:500]}")
    result = parse_wrk(done.stdout)
    result["cpu_us_per_req"] = cpu / result["requests"] * 1e6 if result["requests"] else math.nan
    return result


# -- the scenarios -----------------------------------------------------------------------------


@dataclass(frozen=True)
class App:
    framework: str
    label: str
    protected: bool
    server: str  # "uvicorn" or "gunicorn"
    target: str  # uvicorn factory in bench/apps.py, or a gunicorn app spec
    chdir: Path = BENCH
    #: token mixes to run; default: both for protected apps, one (tokens ignored) for bare ones
    mixes: tuple[str, ...] = ()

    def scenarios(self) -> tuple[str, ...]:
        return self.mixes or (("unique", "repeated") if self.protected else ("unique",))


APPS = (
    App("Starlette", "bare", False, "uvicorn", "starlette_bare"),
    App(
        "Starlette",
        "JWTMiddleware alone (endpoint reads request.user)",
        True,
        "uvicorn",
        "starlette_middleware_only",
    ),
    App("Starlette", "JWTMiddleware + @requires_scopes()", True, "uvicorn", "starlette_protected"),
    App(
        "Starlette",
        "ceiling: raw RSA signature check only",
        True,
        "uvicorn",
        "starlette_signature_ceiling",
        mixes=("unique",),
    ),
    App(
        "Starlette",
        "ceiling: BLAKE2b digest + dict lookup only",
        True,
        "uvicorn",
        "starlette_digest_ceiling",
        mixes=("repeated",),
    ),
    App(
        "Starlette",
        "ceiling: digest + lookup + time and key-set checks + request.user/auth",
        True,
        "uvicorn",
        "starlette_hit_ceiling",
        mixes=("repeated",),
    ),
    App("FastAPI", "bare", False, "uvicorn", "fastapi_bare"),
    App("FastAPI", "JWTMiddleware + RequireScopes", True, "uvicorn", "fastapi_protected"),
    App(
        "FastAPI",
        "JWTMiddleware alone (endpoint reads request.user)",
        True,
        "uvicorn",
        "fastapi_middleware_only",
    ),
    App(
        "FastAPI",
        "ceiling: raw RSA signature check only",
        True,
        "uvicorn",
        "fastapi_signature_ceiling",
        mixes=("unique",),
    ),
    App(
        "FastAPI",
        "ceiling: one tight function doing the issue's checks + request.user/auth",
        True,
        "uvicorn",
        "fastapi_verify_ceiling",
        mixes=("unique",),
    ),
    App("FastAPI", "PyJWKClient + jwt.decode, def dependency", True, "uvicorn", "fastapi_pyjwt"),
    App(
        "FastAPI",
        "PyJWKClient + jwt.decode, async def dependency",
        True,
        "uvicorn",
        "fastapi_pyjwt_async",
    ),
    App("Flask", "bare (gunicorn gthread)", False, "gunicorn", "apps:flask_bare()"),
    App(
        "Flask",
        "JWTWSGIMiddleware (examples/flask_app.py)",
        True,
        "gunicorn",
        "flask_app:app",
        EXAMPLES,
    ),
)


def write_tokens(
    issuer: LocalIssuer, directory: Path, unique: int, repeated: int
) -> dict[str, Path]:
    """Token files by mix, plus ``warm-up``: unique tokens of their own for the warm-up runs.

    The unique mix must never hit the token cache. Cycling more tokens than the cache's
    admission window (a token is cached on its second verification while still remembered)
    guarantees that within one wrk run; but a warm-up run over the *same* file, followed by a
    measured run that starts again at its first line, would re-send tokens the server saw
    moments before. They would be admitted on that second sighting and, with no further
    admissions to evict them, hit on every later cycle: measured here, 60 % of a "unique" run
    at Starlette's speed were cache hits that way."""
    started = time.perf_counter()
    files = {}
    for mix, count in (("unique", unique), ("warm-up", unique), ("repeated", repeated)):
        path = directory / f"tokens-{mix}.txt"
        tokens = (
            issuer.mint(subject=f"{mix}-{i}", scope="read", expires_in=3600) for i in range(count)
        )
        path.write_text("\n".join(tokens) + "\n")
        files[mix] = path
    print(
        f"   minted {2 * unique} unique (half for warm-ups) + {repeated} repeated RS256 tokens "
        f"in {time.perf_counter() - started:.1f}s",
        flush=True,
    )
    return files


def _sanity(server: Server, app: App, token: str) -> None:
    with httpx.Client(timeout=10) as client:
        ok = client.get(server.url + "/me", headers={"authorization": f"Bearer {token}"})
        if ok.status_code != 200:
            raise RuntimeError(f"{app.target}: /me with a valid token gave {ok.status_code}")
        if app.protected:
            refused = client.get(server.url + "/me")
            if refused.status_code not in (401, 403):
                raise RuntimeError(f"{app.target}: /me without a token gave {refused.status_code}")


def run(
    *,
    issuer: LocalIssuer,
    wrk_path: str,
    token_files: dict[str, Path],
    duration: float,
    warmup: float,
    rounds: int,
    cores: tuple[int | None, int | None],
    uvicorn_options: list[str],
) -> dict[str, Any]:
    """The scenarios run in ``rounds`` interleaved rounds, so a slow spell of the machine is
    spread over all of them instead of landing on one; each row reports medians over the rounds.

    Every round starts every server anew (idle servers cost nothing while another is measured):
    one process's memory layout can make it a few per cent faster or slower than the next start
    of the same app, for as long as it lives, and the ratios here are smaller than that bias
    would be if each app were measured in one process only."""
    server_core, client_core = cores
    sample = token_files["repeated"].read_text().split("\n", 1)[0]
    scenarios = [(app, mix) for app in APPS for mix in app.scenarios()]
    samples: dict[int, list[dict[str, Any]]] = {}
    env = issuer_env(issuer)
    for round_ in range(1, rounds + 1):
        with contextlib.ExitStack() as stack:
            servers: dict[str, Server] = {}
            for app in APPS:
                server = (
                    uvicorn(app.target, env, server_core, uvicorn_options)
                    if app.server == "uvicorn"
                    else gunicorn(app.target, app.chdir, env, server_core)
                )
                servers[app.target] = stack.enter_context(server)
            for app in APPS:
                servers[app.target].wait_ready()
                _sanity(servers[app.target], app, sample)
            for app, mix in scenarios:  # warm-up, discarded (fills caches, opens pools)
                warm = token_files["warm-up" if mix == "unique" else mix]
                wrk(wrk_path, servers[app.target].url + "/me", warm, warmup, client_core)
            for index, (app, mix) in enumerate(scenarios):
                server = servers[app.target]
                result = wrk(
                    wrk_path, server.url + "/me", token_files[mix], duration, client_core, server
                )
                samples.setdefault(index, []).append(result)
                bad = f", {result['non_2xx']} non-2xx" if result["non_2xx"] else ""
                if result["socket_errors"]:
                    bad += f", {result['socket_errors']} socket errors"
                shown = mix if app.protected else "n/a"
                print(
                    f"   [{round_}/{rounds}] {app.framework:9} {app.label:42} {shown:8} "
                    f"{result['rps']:9,.0f} req/s  p50 {result['p50_ms']:6.2f} ms  "
                    f"p99 {result['p99_ms']:6.2f} ms  server CPU "
                    f"{result['cpu_us_per_req']:5.0f} us/req{bad}",
                    flush=True,
                )
    rows: list[dict[str, Any]] = []
    for index, (app, mix) in enumerate(scenarios):
        runs = samples[index]
        rps = [r["rps"] for r in runs]
        rows.append(
            {
                "framework": app.framework,
                "app": app.label,
                "target": app.target,
                "protected": app.protected,
                "mix": mix if app.protected else "n/a",
                "rps": median(rps),
                "rps_min": min(rps),
                "rps_max": max(rps),
                "p50_ms": median([r["p50_ms"] for r in runs]),
                "p99_ms": median([r["p99_ms"] for r in runs]),
                "cpu_us_per_req": median([r["cpu_us_per_req"] for r in runs]),
                "requests": sum(r["requests"] for r in runs),
                "non_2xx": sum(r["non_2xx"] for r in runs),
                "socket_errors": sum(r["socket_errors"] for r in runs),
                "rounds": runs,
            }
        )
    _ratios(rows)
    return {
        "config": {
            "duration_s": duration,
            "warmup_s": warmup,
            "rounds": rounds,
            "connections": CONNECTIONS,
            "wrk_threads": 1,
            "server_core": server_core,
            "client_core": client_core,
            "unique_tokens": sum(1 for _ in token_files["unique"].open()),
            "repeated_tokens": sum(1 for _ in token_files["repeated"].open()),
        },
        "rows": rows,
        "targets": _targets(rows),
    }


def _ratios(rows: list[dict[str, Any]]) -> None:
    bare = {r["framework"]: r for r in rows if not r["protected"]}
    for row in rows:
        base = bare.get(row["framework"])
        row["ratio_to_bare"] = row["rps"] / base["rps"] if base else math.nan
        # The same ratio from server CPU per request: what the throughput ratio would be with
        # the server's core to itself.
        row["cpu_ratio_to_bare"] = (
            base["cpu_us_per_req"] / row["cpu_us_per_req"] if base else math.nan
        )


def _find(rows: list[dict[str, Any]], target: str, mix: str) -> dict[str, Any] | None:
    return next((r for r in rows if r["target"] == target and r["mix"] == mix), None)


def _targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each target with its ``ceiling``: the same ratio for the yardstick app that does only
    the row's unavoidable operation (None where the run has none). A target above its
    ceiling cannot be met by any verifier on this machine."""
    targets = []
    # A cached request's ceiling is the hit row, not the digest row: the issue itself asks a
    # hit to check exp/nbf and the key set, and the app needs request.user and request.auth.
    ceilings = {"unique": "starlette_signature_ceiling", "repeated": "starlette_hit_ceiling"}
    starlette = (("starlette_middleware_only", " alone"), ("starlette_protected", "+decorator"))
    for (ours, how), (mix, minimum) in itertools.product(
        starlette, (("repeated", 0.85), ("unique", 0.6))
    ):
        row = _find(rows, ours, mix)
        if row is not None:
            ceiling = _find(rows, ceilings[mix], mix)
            targets.append(
                {
                    "name": f"e2e Starlette+JWTMiddleware{how} {mix} >= {minimum:g}x bare",
                    "row": [ours, mix],
                    "versus": "bare",
                    "ratio": row["ratio_to_bare"],
                    "cpu_ratio": row["cpu_ratio_to_bare"],
                    "target": minimum,
                    "pass": row["ratio_to_bare"] >= minimum,
                    "ceiling": ceiling["ratio_to_bare"] if ceiling else None,
                }
            )
    fastapi = (("fastapi_protected", "+RequireScopes"), ("fastapi_middleware_only", " alone"))
    for ours_target, how in fastapi:
        for pattern, what in (("fastapi_pyjwt", "def"), ("fastapi_pyjwt_async", "async def")):
            for mix in ("unique", "repeated"):
                targets += _versus_pyjwt(rows, ours_target, how, pattern, what, mix)
    return targets


def _versus_pyjwt(
    rows: list[dict[str, Any]], target: str, how: str, pattern: str, what: str, mix: str
) -> list[dict[str, Any]]:
    ours, theirs = _find(rows, target, mix), _find(rows, pattern, mix)
    if ours is None or theirs is None:
        return []
    ratio = ours["rps"] / theirs["rps"]
    # A new token's ceiling is the tight verifier, not the bare RSA check: the issue asks for
    # the claims, header and base64 rules too, and the app needs request.user.
    ceiling = _find(rows, "fastapi_verify_ceiling", mix)
    return [
        {
            "name": f"e2e FastAPI+JWTMiddleware{how} {mix} >= 2x PyJWKClient, {what} dep.",
            "row": [target, mix],
            "versus": f"PyJWKClient {what}",
            "ratio": ratio,
            "cpu_ratio": theirs["cpu_us_per_req"] / ours["cpu_us_per_req"],
            "target": 2.0,
            "pass": ratio >= 2.0,
            "ceiling": ceiling["rps"] / theirs["rps"] if ceiling else None,
        }
    ]
