"""Shared helpers: statistics, CPU pinning, free ports, and servers that are always stopped."""

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
from collections.abc import Iterator, Sequence
from pathlib import Path
from types import TracebackType

import httpx

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
EXAMPLES = ROOT / "examples"
AUDIENCE = "api://bench"

# Every process this run starts, so an interrupted run can still stop them (see stop_all).
_LIVE: set[subprocess.Popen[bytes]] = set()


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def cores() -> tuple[int | None, int | None]:
    """(server core, client core): the first two usable CPUs; no pinning with fewer CPUs or
    without taskset."""
    try:
        usable = sorted(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return None, None
    if len(usable) < 2 or shutil.which("taskset") is None:
        return None, None
    return usable[0], usable[1]


def pin_self(core: int | None) -> None:
    if core is not None:
        with contextlib.suppress(AttributeError, OSError):
            os.sched_setaffinity(0, {core})


def taskset(core: int | None) -> list[str]:
    return ["taskset", "-c", str(core)] if core is not None else []


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def raise_fd_limit(wanted: int = 8192) -> None:
    with contextlib.suppress(ImportError, ValueError, OSError):
        import resource

        soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        if soft < wanted:
            resource.setrlimit(resource.RLIMIT_NOFILE, (min(wanted, hard), hard))


class Server:
    """A server subprocess on 127.0.0.1, in its own process group, always stopped on exit.

    Stopping: SIGTERM to the group (gunicorn's master then stops its worker), wait, then SIGKILL
    after ``grace`` seconds. Output goes to a temporary log file, read back on failure.
    """

    def __init__(self, name: str, argv: list[str], env: dict[str, str], port: int) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log = tempfile.NamedTemporaryFile(
            prefix=f"bench-{name}-", suffix=".log", delete=False
        )
        self.started_at = 0.0

    def start(self) -> Server:
        self.started_at = time.perf_counter()
        self.proc = subprocess.Popen(  # noqa: S603 - fixed argv built by this script
            self.argv,
            env=self.env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            start_new_session=True,
        )
        _LIVE.add(self.proc)
        return self

    def log(self) -> str:
        self._log.flush()
        return Path(self._log.name).read_text(errors="replace")

    def wait_for_log(self, marker: str, timeout: float = 30.0) -> float:
        """Wait until ``marker`` appears in the output; returns perf_counter() when seen."""
        path = Path(self._log.name)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if marker in path.read_text(errors="replace"):
                return time.perf_counter()
            self._check_alive()
            time.sleep(0.002)
        raise RuntimeError(f"{self.name}: no {marker!r} within {timeout}s\n{self.log()[-3000:]}")

    def wait_ready(self, path: str = "/health", timeout: float = 30.0) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                self._check_alive()
                try:
                    if client.get(self.url + path).status_code == 200:
                        return
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)
        raise RuntimeError(f"{self.name}: not ready within {timeout}s\n{self.log()[-3000:]}")

    def _check_alive(self) -> None:
        if self.proc is not None and self.proc.poll() is not None:
            raise RuntimeError(
                f"{self.name} exited with {self.proc.returncode}\n{self.log()[-3000:]}"
            )

    def stop(self, grace: float = 10.0) -> None:
        proc, self.proc = self.proc, None
        if proc is not None:
            _stop(proc, grace)
        self._log.close()
        with contextlib.suppress(OSError):
            os.unlink(self._log.name)

    def __enter__(self) -> Server:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def group_cpu_seconds(pgid: int) -> float:
    """User + system CPU time of every live process in process group ``pgid`` (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    # The group is the one start_new_session made for this very process (its id is proc.pid).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def _stop(proc: subprocess.Popen[bytes], grace: float) -> None:
    try:
        if proc.poll() is None:
            _signal_group(proc, signal.SIGTERM)
            try:
                proc.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
    finally:
        _LIVE.discard(proc)


def stop_all() -> None:
    for proc in list(_LIVE):
        _stop(proc, 5.0)


def run_bounded(argv: list[str], timeout: float) -> subprocess.CompletedProcess[str]:
    """Run a client (wrk) to completion; killed if it outlives ``timeout``."""
    return subprocess.run(  # noqa: S603 - fixed argv built by this script
        argv, capture_output=True, text=True, timeout=timeout, check=False, cwd=ROOT
    )


@contextlib.contextmanager
def section(title: str) -> Iterator[None]:
    print(f"\n== {title} ==", flush=True)
    started = time.perf_counter()
    yield
    print(f"   ({title}: {time.perf_counter() - started:.1f}s)", flush=True)


def server_env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    env.update(extra)
    env["PYTHONUNBUFFERED"] = "1"
    env.pop("PYTHONPATH", None)
    return env


def python() -> str:
    return sys.executable
