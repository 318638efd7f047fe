"""A real Redis for the tests: one ``redis-server`` per test session on a free loopback port.

Import the fixtures into a test module::

    from tests.support.redis_server import redis_clean, redis_url  # noqa: F401

``redis_url`` (session) is ``redis://127.0.0.1:PORT/0``; ``redis_clean`` (function) empties the
database before the test and returns the URL. ``spare_redis`` starts a second, short-lived
server the test may stop (``.stop()``) to make the store unreachable.

Without ``redis-server`` on PATH the tests are skipped — unless ``CI=true``, where a missing
server is a failure: CI must never silently skip the revocation tests.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import IO

import pytest

from tests.support.servers import free_port, stop_process

__all__ = ["RedisServer", "redis_clean", "redis_url", "require_redis_server", "spare_redis"]

STARTUP_TIMEOUT = 10.0


def require_redis_server() -> str:
    """The path of ``redis-server``; skip (fail under ``CI=true``) when it is not installed."""
    path = shutil.which("redis-server")
    if path is None:
        message = "redis-server is not installed (apt-get install redis-server)"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI must run the Redis tests", pytrace=False)
        pytest.skip(message)
    return path


def _ping(port: int) -> bool:
    """One raw RESP PING (no client library needed to decide readiness)."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"*1\r\n$4\r\nPING\r\n")
            return sock.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """One ``redis-server`` process: no persistence, loopback only, stopped by its own PID."""

    def __init__(self, executable: str) -> None:
        self.executable = executable
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.log: IO[bytes] | None = None  # the server's output, for error messages

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> RedisServer:
        """Start on a free port (the same port again after :meth:`stop`, if still free)."""
        if self.running:
            return self
        for _attempt in range(3):  # a free port can be taken between probe and bind
            self.port = self.port or free_port()
            command = [self.executable, "--port", str(self.port), "--bind", "127.0.0.1"]
            command += ["--save", "", "--appendonly", "no", "--loglevel", "warning"]
            self.log = tempfile.TemporaryFile()
            self.process = subprocess.Popen(command, stdout=self.log, stderr=subprocess.STDOUT)
            deadline = time.monotonic() + STARTUP_TIMEOUT
            while time.monotonic() < deadline and self.process.poll() is None:
                if _ping(self.port):
                    return self
                time.sleep(0.02)
            output = self._reap()
            self.port = 0
        raise RuntimeError(f"redis-server did not answer PING within {STARTUP_TIMEOUT}s:\n{output}")

    def stop(self) -> None:
        """Terminate the server (SIGTERM, then SIGKILL after 5 s) and wait for it."""
        if self.process is not None:
            self._reap()

    def _reap(self) -> str:
        process = self.process
        assert process is not None
        stop_process(process, timeout=5)
        self.process = None
        output = ""
        if self.log is not None:
            self.log.seek(0)
            output = self.log.read().decode(errors="replace")
            self.log.close()
            self.log = None
        return output[-2000:]


@pytest.fixture(scope="session")
def redis_server() -> Iterator[RedisServer]:
    server = RedisServer(require_redis_server()).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="session")
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the session's server."""
    return redis_server.url


@pytest.fixture
def redis_clean(redis_url: str) -> str:
    """The session server's URL, its database emptied (FLUSHDB) before the test."""
    import redis

    with redis.Redis.from_url(redis_url, socket_timeout=5) as client:
        client.flushdb()
    return redis_url


@pytest.fixture
def spare_redis() -> Iterator[RedisServer]:
    """A second server of the test's own, which it may stop (and start again)."""
    server = RedisServer(require_redis_server()).start()
    try:
        yield server
    finally:
        server.stop()
