"""Shared by the parts: statistics, core pinning, and server processes that are always stopped."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

import httpx

from jwt_middleware.testing import LocalIssuer

BENCH = Path(__file__).resolve().parent
AUDIENCE = "api://bench"
_LIVE: set[subprocess.Popen[bytes]] = set()  # so an interrupted run still stops them


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile, q in 0..100."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered), round(q / 100 * len(ordered) + 0.5)) - 1)]


def cores() -> tuple[int | None, int | None]:
    """(server core, client core); no pinning with fewer than two CPUs or without taskset."""
    usable = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    if len(usable) < 2 or shutil.which("taskset") is None:
        return None, None
    return usable[0], usable[1]


def taskset(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


class Server:
    """A server on 127.0.0.1 in its own process group, output to a temporary log."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name, self.env, self.port = name, env, port
        self.url = f"http://127.0.0.1:{port}"
        self._log = tempfile.NamedTemporaryFile(prefix=f"bench-{name}-", suffix=".log")
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(  # noqa: S603 - argv built by this package
            argv, env=env, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True
        )
        _LIVE.add(self.proc)

    def log(self) -> str:
        return Path(self._log.name).read_text(errors="replace")[-3000:]

    def wait_for_log(self, marker: str, timeout: float = 30.0) -> float:
        """perf_counter() when ``marker`` first shows in the output."""
        deadline = time.monotonic() + timeout
        while marker not in self.log():
            self._check(deadline)
            time.sleep(0.002)
        return time.perf_counter()

    def wait_ready(self, timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while True:
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(self.url + "/health").status_code == 200:
                        return
                self._check(deadline)
                time.sleep(0.05)

    def _check(self, deadline: float) -> None:
        if self.proc.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"{self.name} did not start ({self.proc.poll()})\n{self.log()}")

    def cpu_seconds(self) -> float:
        """User + system CPU of every process in the server's group (gunicorn's workers too)."""
        total = 0
        for entry in Path("/proc").iterdir():
            with contextlib.suppress(OSError, ValueError):
                stat = (entry / "stat").read_text()
                fields = stat[stat.rfind(")") + 2 :].split()
                if int(fields[2]) == self.proc.pid:
                    total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def stop(self) -> None:
        _stop(self.proc)
        self._log.close()

    def __enter__(self) -> Server:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _stop(proc: subprocess.Popen[bytes]) -> None:
    # SIGTERM to the group, so gunicorn's master stops its worker; SIGKILL if it lingers.
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if proc.poll() is not None:
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    _LIVE.discard(proc)


def stop_all() -> None:
    for proc in list(_LIVE):
        _stop(proc)


def _port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def issuer_env(issuer: LocalIssuer, **extra: str) -> dict[str, str]:
    """The servers' environment; apps.py and examples/flask_app.py read it."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return env | {
        "PYTHONUNBUFFERED": "1",
        "BENCH_ISSUER": issuer.issuer,
        "BENCH_AUDIENCE": AUDIENCE,
        "BENCH_JWKS_URL": issuer.jwks_url,
        "JWT_ISSUER": issuer.issuer,
        "JWT_AUDIENCE": AUDIENCE,
        **extra,
    }


def uvicorn_options() -> list[str]:
    """uvloop + httptools when installed (the bench extra), as a production start would use."""
    import importlib.util

    if all(importlib.util.find_spec(m) for m in ("uvloop", "httptools")):
        return ["--loop", "uvloop", "--http", "httptools"]
    return []


def uvicorn(factory: str, env: dict[str, str], core: int | None, log: str = "warning") -> Server:
    port = _port()
    argv = [*taskset(core), sys.executable, "-m", "uvicorn", "--factory", f"apps:{factory}"]
    argv += ["--app-dir", str(BENCH), "--port", str(port), "--log-level", log, "--no-access-log"]
    argv += ["--lifespan", "on"]  # the key warm-up runs at lifespan startup
    return Server(factory, argv + uvicorn_options(), env, port)


def gunicorn(target: str, chdir: Path, env: dict[str, str], core: int | None) -> Server:
    port = _port()
    argv = [*taskset(core), sys.executable, "-m", "gunicorn", "-w", "1", "--threads", "4"]
    argv += ["-b", f"127.0.0.1:{port}", "--chdir", str(chdir), "--log-level", "warning", target]
    return Server(target, argv, env, port)
