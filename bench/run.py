"""Benchmarks for jwt_middleware (not part of the tests); the method is in bench/README.md.

    bash dev.sh bench                     # everything, about 10 minutes
    bash dev.sh bench --quick             # shorter runs, about 90 s
    bash dev.sh bench --only inprocess    # or e2e, or cold (repeatable)
    bash dev.sh bench --against REV       # the cached-token hot path, this checkout vs REV

Results are printed and written to bench/results/ (git-ignored): results.md and results.json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import against
import cold
import common
import e2e
import inprocess

from jwt_middleware.testing import LocalIssuer

PARTS = ("inprocess", "e2e", "cold")
PACKAGES = ("cryptography", "pyjwt", "starlette", "fastapi", "uvicorn", "flask", "gunicorn")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="shorter runs (about 90 s)")
    parser.add_argument("--only", action="append", choices=PARTS, help="this part only")
    parser.add_argument("--output", type=Path, default=common.BENCH / "results")
    parser.add_argument(
        "--against", metavar="REV", help="only compare the hot path with git revision REV"
    )
    parser.add_argument("--rounds", type=int, default=11, help="rounds per tree for --against")
    args = parser.parse_args()
    if args.against is not None:
        if args.only or args.quick:
            parser.error("--against runs alone: no --only or --quick with it")
        if args.rounds < 3:
            parser.error("--rounds must be 3 or more: a median of fewer says nothing")
        against.run(args.against, args.rounds)
        return 0
    parts, quick = args.only or PARTS, args.quick
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the servers are stopped
    cores = common.cores()
    if cores[1] is not None:
        os.sched_setaffinity(0, {cores[1]})  # the client side never competes with the server
    started = time.perf_counter()
    results: dict[str, Any] = {"machine": _machine(cores), "quick": quick, "notes": []}
    print(f"jwt_middleware benchmarks; server core {cores[0]}, client core {cores[1]}")
    try:
        if "inprocess" in parts:
            print("\n== in-process ==", flush=True)
            n, repeats, hits = (1000, 5, 10_000) if quick else (2000, 7, 20_000)
            results["inprocess"] = inprocess.run(tokens=n, repeats=repeats, hit_ops=hits)
        with LocalIssuer(audience=common.AUDIENCE) as issuer, tempfile.TemporaryDirectory() as tmp:
            if "e2e" in parts and shutil.which("wrk") is None:
                results["notes"].append("wrk is not installed: end-to-end part skipped")
            elif "e2e" in parts:
                print("\n== end to end (wrk) ==", flush=True)
                files = e2e.write_tokens(issuer, Path(tmp), unique=6000, repeated=64)
                seconds, rounds = (2, 1) if quick else (5, 5)
                results["e2e"] = e2e.run(issuer, files, seconds=seconds, rounds=rounds, cores=cores)
            if "cold" in parts:
                print("\n== cold paths ==", flush=True)
                runs, bursts = (3, 1) if quick else (5, 3)
                results["first_request"] = cold.first_request(issuer, runs, cores[0])
                results["burst"] = cold.rotation_burst(issuer, 500, bursts, cores[0])
    except KeyboardInterrupt:
        print("\ninterrupted: stopping servers", file=sys.stderr)
        return 130
    finally:
        common.stop_all()
    results["elapsed_s"] = round(time.perf_counter() - started)
    report = markdown(results)
    print("\n" + report)
    args.output.mkdir(parents=True, exist_ok=True)
    (args.output / "results.md").write_text(report)
    (args.output / "results.json").write_text(json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.output}/results.md and results.json ({results['elapsed_s']} s)")
    return 0


def _machine(cores: tuple[int | None, int | None]) -> dict[str, Any]:
    versions = {}
    for name in PACKAGES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            versions[name] = "-"
    return {
        "date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "cpus": os.cpu_count(),
        "cores": {"server": cores[0], "client": cores[1]},
        "python": platform.python_version(),
        "platform": platform.platform(),
        "uvicorn_options": common.uvicorn_options(),
        "packages": versions,
    }


def _table(rows: list[dict[str, Any]], columns: dict[str, str]) -> list[str]:
    """A Markdown table of ``rows``: ``columns`` maps each key to its heading."""

    def cell(value: Any) -> str:
        if isinstance(value, float):
            return f"{value:,.2f}" if value < 100 else f"{value:,.0f}"
        if isinstance(value, list):
            return "-".join(cell(v) for v in value)
        return "" if value is None else str(value)

    lines = ["| " + " | ".join(columns.values()) + " |", "|" + "---|" * len(columns)]
    return lines + ["| " + " | ".join(cell(r.get(k)) for k in columns) + " |" for r in rows]


def verdicts(results: dict[str, Any]) -> list[str]:
    """The few claims a run checks (see bench/README.md, "Targets")."""
    out = []
    rows = {(r["alg"], r["variant"]): r for r in results.get("inprocess", [])}
    if rows:
        hot = rows["RS256", "hot_path"]["vs_floor"]
        out.append(f"{_ok(hot >= 5)} RS256 hot path {hot:.1f}x the RS256 floor (target ≥ 5x)")
    if ("ES256", "dpop_request") in rows:
        cost = rows["ES256", "dpop_request"]["cost_vs_proof"]
        out.append(
            f"{_ok(cost <= 1.3)} DPoP request (ES256 proof, token cached) costs {cost:.2f}x one "
            "ES256 proof check (target ≤ 1.3x)"
        )
    for row in results.get("e2e", []):
        if row["target"] == "starlette_protected" and row["tokens"] == "repeated":
            r = row["vs_bare"]
            out.append(f"{_ok(r >= 0.85)} Starlette repeated tokens {r:.2f}x bare (target ≥ 0.85x)")
    rotated = [r for r in results.get("burst", []) if r["burst"].startswith("new kid")]
    if rotated:
        one = all(r["fetches"] == 1 and r["all_200"] for r in rotated)
        out.append(f"{_ok(one)} every rotation burst: exactly 1 key fetch, all 200")
    return out


def _ok(passed: bool) -> str:
    return "PASS" if passed else "FAIL"


def markdown(results: dict[str, Any]) -> str:
    m = results["machine"]
    packages = ", ".join(f"{k} {v}" for k, v in m["packages"].items())
    out = [
        "# jwt_middleware benchmark results",
        "",
        f"`bash dev.sh bench{' --quick' if results['quick'] else ''}` on {m['date']}, "
        f"{results['elapsed_s']} s. {m['cpus']} CPUs, server core {m['cores']['server']}, "
        f"client core {m['cores']['client']}; Python {m['python']}, {m['platform']}; {packages}; "
        f"uvicorn {' '.join(m['uvicorn_options']) or 'defaults'}. Method: bench/README.md.",
    ]
    out += [f"\nnote: {n}" for n in results["notes"]]
    if "inprocess" in results:
        out += ["", "## In-process (median ops per CPU-second)", ""]
        columns = {"alg": "alg", "what": "what", "ops_per_s": "ops/s", "us_per_op": "us/op"}
        columns |= {"vs_floor": "vs floor", "cost_vs_proof": "cost vs 1 proof check"}
        out += _table(results["inprocess"], columns)
    if "e2e" in results:
        out += ["", "## End to end (wrk; median over rounds)", ""]
        columns = {"framework": "framework", "app": "app", "tokens": "tokens", "rps": "req/s"}
        columns |= {"rps_range": "range", "p50_ms": "p50 ms", "p99_ms": "p99 ms"}
        columns |= {"vs_bare": "vs bare", "cpu_us_per_req": "server CPU us/req"}
        columns |= {"vs_bare_by_cpu": "vs bare by CPU", "vs_pyjwt_def": "vs PyJWKClient def"}
        columns |= {"vs_pyjwt_async": "vs async", "vs_bearer": "vs Bearer repeated"}
        out += _table(results["e2e"], columns | {"errors": "errors"})
    if "first_request" in results:
        out += ["", "## Cold paths (Starlette + JWTMiddleware)", ""]
        columns = {"warm_up": "warm_up", "first_ms": "first 200 ms", "next_ms": "next ms"}
        columns |= {"fetches": "key fetches in 1st", "start_to_ready_ms": "start → ready ms"}
        out += _table(results["first_request"], columns)
        out += [""]
        columns = {"burst": "burst of 500", "fetches": "key fetches", "all_200": "all 200"}
        out += _table(results["burst"], columns | {"total_ms": "total ms", "p50_ms": "p50 ms"})
    if checks := verdicts(results):
        out += ["", "## Targets", "", *(f"- {line}" for line in checks)]
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
