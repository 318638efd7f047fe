"""Where the time goes: cProfile of the two hot paths, top functions by own time.

    .venv-test/bin/python bench/profiling.py                 # both
    .venv-test/bin/python bench/profiling.py --only verifier # SyncVerifier, unique RS256 tokens
    .venv-test/bin/python bench/profiling.py --only server   # Starlette + JWTMiddleware under wrk

``server`` runs uvicorn under cProfile (pinned to core 0) while wrk (core 1) sends unique-token
traffic for ``--duration`` seconds, then stops uvicorn with SIGINT so the profile is written.
cProfile inflates per-call overhead, so read the shares, not the absolute times.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import os
import pstats
import signal
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import common
import e2e
import inprocess

from jwt_middleware import Settings, SyncVerifier
from jwt_middleware.testing import LocalIssuer


def top(stats: pstats.Stats, count: int, title: str) -> str:
    out = io.StringIO()
    stats.stream = out  # type: ignore[attr-defined]
    stats.sort_stats("tottime").print_stats(count)
    text = out.getvalue()
    body = text[text.find("   ncalls") :] if "   ncalls" in text else text
    return f"--- {title}: top {count} by own time ---\n{body.rstrip()}\n"


def profile_verifier(count: int, tokens: int) -> str:
    fx = inprocess.fixture("RS256", tokens)
    settings = Settings(
        issuer=inprocess.ISSUER, audience=common.AUDIENCE, keys=[fx.key], algorithms=["RS256"]
    )
    profiler = cProfile.Profile()
    verifier = SyncVerifier(settings)  # default token cache; every token is new to it
    profiler.enable()
    for token in fx.tokens:
        verifier.verify(token)
    profiler.disable()
    return top(pstats.Stats(profiler), count, f"SyncVerifier.verify, {tokens} unique RS256 tokens")


def profile_server(count: int, duration: float, mix: str) -> str:
    wrk_path = e2e.ensure_wrk()
    if wrk_path is None:
        return "wrk unavailable: server profile skipped\n"
    server_core, client_core = common.cores()
    options, _ = e2e.fast_server_options()
    with LocalIssuer(audience=common.AUDIENCE) as issuer, tempfile.TemporaryDirectory() as tmp:
        files = e2e.write_tokens(issuer, Path(tmp), unique=6000, repeated=64)
        out = Path(tmp) / "server.prof"
        server = e2e.uvicorn("starlette_protected", e2e.issuer_env(issuer), server_core, options)
        # python -m cProfile -o OUT -m uvicorn ...: same argv, profiled
        at = server.argv.index("-m")
        server.argv[at:at] = ["-m", "cProfile", "-o", str(out)]
        with server:
            server.wait_ready()
            e2e.wrk(wrk_path, server.url + "/me", files[mix], duration, client_core)
            assert server.proc is not None
            os.killpg(server.proc.pid, signal.SIGINT)  # graceful: cProfile writes its file
            deadline = time.monotonic() + 15
            while server.proc.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
        if not out.exists():
            return "uvicorn did not write its profile\n"
        stats = pstats.Stats(str(out))
        return top(stats, count, f"uvicorn Starlette+JWTMiddleware under wrk, {mix} tokens")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", choices=("verifier", "server"))
    parser.add_argument("--top", type=int, default=15)
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--mix", choices=("unique", "repeated"), default="unique")
    args = parser.parse_args()
    try:
        if args.only in (None, "verifier"):
            print(profile_verifier(args.top, 5000))
        if args.only in (None, "server"):
            print(profile_server(args.top, args.duration, args.mix))
    finally:
        common.stop_all()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
