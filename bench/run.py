"""Benchmarks for jwt_middleware (not part of the tests).

    bash dev.sh bench                     # everything, about 9-11 minutes
    bash dev.sh bench --quick             # shorter runs, about 90 s
    bash dev.sh bench --only inprocess    # or e2e, or cold (repeatable)
    bash dev.sh bench --duration 10       # seconds per end-to-end scenario (default 5)

1. in-process: tokens verified per second per algorithm: the raw ``cryptography`` check (the
   floor), SyncVerifier (unique tokens with and without the token cache, one repeated token),
   and PyJWT's jwt.decode.
2. e2e: wrk against Starlette / FastAPI under uvicorn and the Flask example under gunicorn,
   bare and protected, unique and repeated tokens. Needs wrk (apt-get installs it when missing;
   if it cannot, this part is skipped). Server pinned to one core, wrk to another.
3. cold: time to the first 200 after start, with and without key warm-up; a burst of concurrent
   requests with a freshly rotated kid (key fetches counted by the LocalIssuer).

All traffic stays on 127.0.0.1; every server is stopped when its scenario ends, including on
errors and Ctrl-C. Results: printed, and written to bench/results.md and bench/results.json.
Profiles of the hot paths: ``python bench/profiling.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cold
import common
import e2e
import inprocess

from jwt_middleware.testing import LocalIssuer

PARTS = ("inprocess", "e2e", "cold")
PACKAGES = (
    "jwt-middleware",
    "cryptography",
    "pyjwt",
    "starlette",
    "fastapi",
    "uvicorn",
    "uvloop",
    "httptools",
    "flask",
    "gunicorn",
    "httpx",
)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 90 s in all)")
    parser.add_argument(
        "--duration", type=float, help="seconds per end-to-end scenario (default 5; quick 2)"
    )
    parser.add_argument(
        "--rounds", type=int, help="interleaved rounds of the e2e scenarios (default 5; quick 1)"
    )
    parser.add_argument(
        "--only", action="append", choices=PARTS, help="run only this part (repeatable)"
    )
    parser.add_argument(
        "--output", type=Path, default=common.BENCH, help="where results.md/json go (bench/)"
    )
    args = parser.parse_args(argv)
    parts = tuple(args.only) if args.only else PARTS
    quick = args.quick
    duration = args.duration if args.duration is not None else (2.0 if quick else 5.0)
    if duration < 1:
        parser.error("--duration must be at least 1 second")
    rounds = args.rounds if args.rounds is not None else (1 if quick else 5)
    if rounds < 1:
        parser.error("--rounds must be at least 1")

    # Stop our servers on SIGTERM/SIGINT too (the finally blocks run on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    common.raise_fd_limit()
    cores = common.cores()
    common.pin_self(cores[1])
    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": machine(),
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "options": {"quick": quick, "duration": duration, "rounds": rounds, "parts": list(parts)},
        "notes": [],
    }
    if cores[0] is None:
        results["notes"].append("fewer than 2 usable CPUs: server and client are not pinned")
    print(
        f"jwt_middleware benchmarks ({'quick' if quick else 'full'}; parts: {', '.join(parts)}); "
        f"server core {cores[0]}, client core {cores[1]}",
        flush=True,
    )
    try:
        if "inprocess" in parts:
            with common.section("in-process verification"), _guard(results, "inprocess"):
                results["inprocess"] = inprocess.run(
                    tokens=1000 if quick else 2000,
                    repeats=5 if quick else 7,
                    hit_ops=10_000 if quick else 20_000,
                )
        if "e2e" in parts or "cold" in parts:
            with (
                LocalIssuer(audience=common.AUDIENCE) as issuer,
                tempfile.TemporaryDirectory(prefix="jwt-bench-") as tmp,
            ):
                options, server_note = e2e.fast_server_options()
                results["server"] = server_note
                print(f"   uvicorn runs with {server_note}", flush=True)
                if "e2e" in parts:
                    with common.section("end to end (wrk)"), _guard(results, "e2e"):
                        wrk_path = e2e.ensure_wrk()
                        if wrk_path is None:
                            results["notes"].append("wrk unavailable: end-to-end part skipped")
                        else:
                            files = e2e.write_tokens(issuer, Path(tmp), unique=6000, repeated=64)
                            results["e2e"] = e2e.run(
                                issuer=issuer,
                                wrk_path=wrk_path,
                                token_files=files,
                                duration=duration,
                                warmup=1.0,
                                rounds=rounds,
                                cores=cores,
                                uvicorn_options=options,
                            )
                if "cold" in parts:
                    with common.section("cold paths"), _guard(results, "cold"):
                        results["cold"] = cold.run(
                            issuer,
                            runs=3 if quick else 5,
                            burst_size=500,
                            bursts=1 if quick else 3,
                            cores=cores,
                            options=options,
                        )
    except KeyboardInterrupt:
        print("\ninterrupted: stopping servers", file=sys.stderr)
        return 130
    finally:
        common.stop_all()
    results["elapsed_s"] = time.perf_counter() - started
    report = markdown(results)
    print("\n" + summary(results))
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.md").write_text(report)
    (args.output / "results.json").write_text(json.dumps(_clean(results), indent=2) + "\n")
    print(
        f"\nwrote {args.output / 'results.md'} and results.json "
        f"({results['elapsed_s']:.0f} s in all)"
    )
    return 1 if results.get("failed") else 0


@contextlib.contextmanager
def _guard(results: dict[str, Any], part: str) -> Iterator[None]:
    """A part that fails is reported and the others still run (its servers are stopped by the
    context managers that started them)."""
    try:
        yield
    except Exception as exc:
        message = f"{part} failed: {type(exc).__name__}: {exc}"
        print("   " + message.replace("\n", "\n   "), file=sys.stderr, flush=True)
        results["notes"].append(message.splitlines()[0])
        results["failed"] = [*results.get("failed", []), part]


# -- machine -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "not installed"
    return {
        "nproc": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "packages": versions,
    }


# -- reporting ---------------------------------------------------------------------------------


def _fmt(value: float, digits: int = 0) -> str:
    return "n/a" if value is None or math.isnan(value) else f"{value:,.{digits}f}"


def _verdict(target: dict[str, Any]) -> str:
    if target["pass"]:
        return "PASS"
    ceiling = target.get("ceiling")
    if ceiling is not None and ceiling < target["target"]:
        return f"FAIL, out of reach (ceiling {ceiling:.2f}x)"
    return "FAIL" if ceiling is None else f"FAIL (ceiling {ceiling:.2f}x)"


def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def _inprocess_table(part: dict[str, Any]) -> str:
    notes = {}
    for target in part["targets"]:
        against = "RS256 floor" if target["variant"] in ("verifier_hit", "adapter_hit") else "floor"
        notes[(target["alg"], target["variant"])] = (
            f"{_verdict(target)} ({_fmt(target['ratio'], 2)}x {against}, "
            f"need ≥ {target['target']:g}x)"
        )
    rows = [
        [
            r["alg"],
            r["label"],
            _fmt(r["ops_per_s"]),
            _fmt(r["us_per_op"], 1),
            _fmt(r["ratio_to_floor"], 2) + "x",
            notes.get((r["alg"], r["variant"]), ""),
        ]
        for r in part["rows"]
    ]
    return _table(["alg", "what", "ops/s", "us/op", "vs floor", "target"], rows)


def _e2e_table(part: dict[str, Any]) -> str:
    notes: dict[tuple[str, str], list[str]] = {}
    for t in part["targets"]:
        notes.setdefault((t["row"][0], t["row"][1]), []).append(
            f"{_verdict(t)} ({_fmt(t['ratio'], 2)}x {t['versus']}, need ≥ {t['target']:g}x)"
        )
    rows = [
        [
            r["framework"],
            r["app"],
            r["mix"],
            _fmt(r["rps"]),
            f"{_fmt(r['rps_min'])}-{_fmt(r['rps_max'])}",
            _fmt(r["p50_ms"], 2),
            _fmt(r["p99_ms"], 2),
            _fmt(r["ratio_to_bare"], 2) + "x",
            _fmt(r["cpu_us_per_req"]),
            _fmt(r["cpu_ratio_to_bare"], 2) + "x",
            str(r["non_2xx"] + r["socket_errors"]),
            "; ".join(notes.get((r["target"], r["mix"]), [])),
        ]
        for r in part["rows"]
    ]
    return _table(
        [
            "framework",
            "app",
            "tokens",
            "req/s",
            "range",
            "p50 ms",
            "p99 ms",
            "vs bare",
            "server CPU us/req",
            "vs bare by CPU",
            "errors",
            "target",
        ],
        rows,
    )


def _cold_tables(part: dict[str, Any]) -> str:
    first = part["first_request"]
    rows = [
        [
            label,
            _fmt(first[key]["first_ms"], 2),
            _fmt(first[key]["steady_ms"], 2),
            _fmt(first[key]["fetches_during_first"]),
            _fmt(first[key]["startup_ms"]),
        ]
        for key, label in (("with_warm_up", "warm_up=True"), ("without_warm_up", "warm_up=False"))
    ]
    text = _table(
        [
            "Starlette + JWTMiddleware",
            "first 200 (ms)",
            "next requests (ms)",
            "key fetches in 1st",
            "start → ready (ms)",
        ],
        rows,
    )
    burst = part["burst"]
    rows = []
    for kind, label in (("rotated", "new kid (rotation)"), ("known", "known kid (baseline)")):
        for i, b in enumerate(burst[kind], 1):
            rows.append(
                [
                    f"{label} #{i}",
                    str(b["key_fetches"]),
                    ", ".join(f"{k}x{v}" for k, v in sorted(b["statuses"].items())),
                    _fmt(b["total_ms"], 1),
                    _fmt(b["p50_ms"], 1),
                    _fmt(b["p99_ms"], 1),
                ]
            )
    text += "\n\n" + _table(
        [
            f"burst of {burst['size']} concurrent requests",
            "key fetches",
            "statuses",
            "total ms",
            "p50 ms",
            "p99 ms",
        ],
        rows,
    )
    return text


def _targets(results: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for part in PARTS:
        if part in results:
            found += results[part]["targets"]
    return found


def _targets_table(results: dict[str, Any]) -> str:
    rows = [
        [
            t["name"],
            _fmt(t["ratio"], 2),
            _fmt(t["cpu_ratio"], 2) if "cpu_ratio" in t else "",
            _verdict(t),
        ]
        for t in _targets(results)
    ]
    return _table(["target", "measured", "by server CPU (e2e)", "verdict"], rows)


def summary(results: dict[str, Any]) -> str:
    blocks = ["== summary =="]
    if "inprocess" in results:
        blocks += [
            "\nIn-process (median ops per CPU-second)",
            _inprocess_table(results["inprocess"]),
        ]
    if "e2e" in results:
        blocks += ["\nEnd to end (wrk)", _e2e_table(results["e2e"])]
    if "cold" in results:
        blocks += ["\nCold paths", _cold_tables(results["cold"])]
    blocks += ["\nTargets", _targets_table(results)]
    blocks += [f"note: {n}" for n in results["notes"]]
    return "\n".join(blocks)


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    out = [
        "# jwt_middleware benchmark results",
        "",
        f"Generated by `bash dev.sh bench{' --quick' if results['options']['quick'] else ''}` "
        f"(bench/run.py) on {results['date']}, {results['elapsed_s']:.0f} s in all.",
        "",
        f"- machine: {m['nproc']} CPUs (`nproc`), {m['cpu']}; {m['platform']}",
        f"- Python {m['python']}",
        f"- packages: {packages}",
    ]
    if "server" in results:
        out.append(f"- uvicorn: one worker, {results['server']}")
    out += [f"- note: {n}" for n in results["notes"]]
    if "inprocess" in results:
        part = results["inprocess"]
        c = part["config"]
        out += [
            "",
            "## In-process verification",
            "",
            f"Median of {c['repeats']} repeats, variants interleaved, timed in CPU time of the "
            "benchmark thread (`time.thread_time`, so other load on the machine does not count); "
            f"{c['tokens']} pre-minted "
            f"unique tokens per algorithm, {c['hit_ops']:,} verifications of one token for cache "
            "hits; the default-cache variant cycles through more distinct tokens than the "
            "cache holds, so the cache is full and every miss evicts. Keys are static "
            "(`Key.from_pem` / `Key.from_secret`). The floor is the bare "
            "`cryptography` verify on the token's signing input (ECDSA signature converted to "
            "DER beforehand), or `hmac.compare_digest(hmac.new(...))` for HS256. PyJWT: "
            "`jwt.decode(token, key, algorithms=[alg], audience=..., issuer=...)` with a "
            "pre-loaded key object.",
            "",
            _inprocess_table(part),
        ]
    if "e2e" in results:
        part = results["e2e"]
        c = part["config"]
        out += [
            "",
            "## End to end (wrk)",
            "",
            f"`wrk -t{c['wrk_threads']} -c{c['connections']} -d{c['duration_s']:g}s --latency` "
            f"(after a {c['warmup_s']:g} s warm-up run) pinned to core {c['client_core']}; "
            f"server pinned to core {c['server_core']}: uvicorn (one worker) for "
            "Starlette/FastAPI, `gunicorn -w 1 --threads 4` for Flask. Keys from the "
            "LocalIssuer by OIDC discovery, warmed up at start. `unique`: "
            f"{c['unique_tokens']} RS256 tokens cycled (more than the 4096-entry token cache, "
            "so every request verifies a signature); `repeated`: "
            f"{c['repeated_tokens']} tokens cycled (cache hits). The warm-up runs of the "
            "unique mix send other tokens than the measured runs (a measured run that began by "
            "re-sending the warm-up's last tokens would get them admitted to the cache). Bare "
            "apps get the same headers. `ceiling` rows are yardsticks, not authentication: the "
            "bare app behind a middleware doing only the row's unavoidable operations: the RSA "
            "check of a new token with a pre-loaded key; the BLAKE2b digest and dict lookup of "
            "a cached one; and for a hit as the issue defines it, that lookup plus the exp/nbf "
            "and key-set checks and a fresh request.user/request.auth pair, the endpoint "
            "reading the identity; and for a new token in FastAPI, one tight function doing what "
            "the issue asks of a verifier (strict base64url, header rules once per header, "
            "iss/aud/exp/nbf/iat, key by kid, RSA check) and the identity objects. A target "
            "above its ceiling is out of reach here (cached requests are judged against the "
            "hit ceiling, FastAPI's new tokens against the tight verifier). Scenarios run in "
            f"{c['rounds']} interleaved round(s), every server started anew for each round (one "
            "process's memory layout biases it for as long as it lives); each row is the median "
            "over rounds (`range`: min-max req/s). `server CPU us/req`: user+system CPU of the "
            "server's processes during the run divided by requests served; `vs bare by CPU` is "
            "the throughput ratio that implies, unaffected by other load stealing the server's "
            "core. Targets are judged on req/s. `errors` = non-2xx responses + socket errors.",
            "",
            _e2e_table(part),
        ]
    if "cold" in results:
        part = results["cold"]
        c = part["config"]
        out += [
            "",
            "## Cold paths",
            "",
            f"First request: median of {c['runs']} server starts (Starlette + JWTMiddleware, "
            "keys by discovery from the LocalIssuer), timed by the client from the moment "
            "uvicorn logs that it is running, on a new connection. Burst: all "
            "connections opened first, then every request sent at once; latencies from that "
            "common start. The server's `jwks_cooldown` is 1 s so a new kid can be fetched "
            "right after the warm-up fetch; key fetches are the LocalIssuer's JWKS request "
            "count delta.",
            "",
            _cold_tables(part),
        ]
    out += ["", "## Targets", "", _targets_table(results), ""]
    return "\n".join(out)


def _clean(value: Any) -> Any:
    """JSON without NaN (not valid JSON): NaN becomes null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_clean(v) for v in value]
    return value


if __name__ == "__main__":
    raise SystemExit(main())
