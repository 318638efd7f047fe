"""Running apps for the tests, in one place.

* :class:`AppServer`: an app under uvicorn or gunicorn in a subprocess (argv from
  :func:`uvicorn_argv` / :func:`gunicorn_argv`, environment from :func:`jwt_env`), its output in a
  log file; :meth:`AppServer.wait_ready` polls a health path and fails the test with the log's
  tail when the process exits or never answers; stopping is terminate, wait, kill.
* :func:`uvicorn_in_thread` / :func:`werkzeug_in_thread` and the fixtures :func:`serve_asgi` /
  :func:`serve_wsgi`: an app under a real server in a thread of the test process.
* :class:`InProcess`: one app behind JWTMiddleware (Starlette ``TestClient``) or
  JWTWSGIMiddleware (werkzeug test client), answering :class:`Answer`.
* :class:`VerifierDriver`: the AsyncVerifier or the SyncVerifier behind one synchronous call.
* :func:`bearer`, :func:`raw_request`, :func:`closing`.

Fixtures defined here are imported by name into the test modules that use them.
"""

from __future__ import annotations

import asyncio
import contextlib
import http.client
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

import httpx
import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import BaseRoute
from werkzeug.serving import make_server
from werkzeug.test import Client, TestResponse

from jwt_middleware import AsyncVerifier, InvalidToken, JWTMiddleware, Settings, SyncVerifier
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.testing import LocalIssuer

__all__ = [
    "ROOT",
    "STARTUP_TIMEOUT",
    "Answer",
    "AppServer",
    "Blocking",
    "InProcess",
    "VerifierDriver",
    "bearer",
    "closing",
    "free_port",
    "gunicorn_argv",
    "json_body",
    "jwt_env",
    "raw_request",
    "serve_asgi",
    "serve_wsgi",
    "stop_process",
    "uvicorn_argv",
    "uvicorn_in_thread",
    "wait_all_ready",
    "werkzeug_in_thread",
]

ROOT = Path(__file__).resolve().parents[2]
STARTUP_TIMEOUT = 20.0
LOG_TAIL = 4000

T = TypeVar("T")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def bearer(token: str) -> dict[str, str]:
    """The ``Authorization`` header carrying ``token``."""
    return {"authorization": f"Bearer {token}"}


def json_body(response: TestResponse) -> Any:
    """A werkzeug test response's JSON body (``.json`` is typed as possibly None)."""
    body = response.json
    assert body is not None, response.get_data()
    return body


def closing(build: Callable[..., T]) -> Iterator[Callable[..., T]]:
    """A factory fixture's body (``yield from closing(build)``): hands out ``build``, and
    closes everything it built at teardown."""
    made: list[Any] = []

    def factory(*args: Any, **kwargs: Any) -> T:
        thing = build(*args, **kwargs)
        made.append(thing)
        return thing

    try:
        yield factory
    finally:
        for thing in made:
            thing.close()


# -- servers in a subprocess ------------------------------------------------------------------


def uvicorn_argv(
    target: str, port: int, *, app_dir: str | None = None, options: Sequence[str] = ()
) -> list[str]:
    """``python -m uvicorn [--app-dir DIR] module:app`` on 127.0.0.1:``port``."""
    argv = [sys.executable, "-m", "uvicorn"]
    if app_dir is not None:
        argv += ["--app-dir", app_dir]
    return [*argv, target, "--host", "127.0.0.1", "--port", str(port), *options]


def gunicorn_argv(
    target: str, port: int, *, chdir: str | None = None, options: Sequence[str] = ()
) -> list[str]:
    """``python -m gunicorn [--chdir DIR] module:app`` bound to 127.0.0.1:``port``."""
    argv = [sys.executable, "-m", "gunicorn"]
    if chdir is not None:
        argv += ["--chdir", chdir]
    return [*argv, "-b", f"127.0.0.1:{port}", *options, target]


def jwt_env(issuer: LocalIssuer, *, jwks_url: bool = True, **extra: str) -> dict[str, str]:
    """This process's environment without its ``JWT_*`` variables, configured for ``issuer``
    (``JWT_ISSUER``, ``JWT_AUDIENCE`` and, with ``jwks_url``, ``JWT_JWKS_URL``), plus ``extra``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("JWT_")}
    env["JWT_ISSUER"] = issuer.issuer
    env["JWT_AUDIENCE"] = issuer.audience
    if jwks_url:
        env["JWT_JWKS_URL"] = issuer.jwks_url
    env.update(extra)
    return env


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Terminate ``process`` and wait for it; kill it if it outlives ``timeout``."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=timeout)


class AppServer:
    """An app server in a subprocess on 127.0.0.1, started at once from the repository root;
    its output goes to ``log``. A context manager: stopped (by its PID) on exit."""

    def __init__(
        self,
        name: str,
        command: Callable[[int], list[str]],
        *,
        env: dict[str, str],
        log: Path,
        port: int | None = None,
        health: str = "/health",
    ) -> None:
        self.name = name
        self.port = free_port() if port is None else port
        self.url = f"http://127.0.0.1:{self.port}"
        self.health = health
        self.log = log.open("w+b")
        self.process = subprocess.Popen(
            command(self.port), cwd=ROOT, env=env, stdout=self.log, stderr=subprocess.STDOUT
        )

    def __enter__(self: T) -> T:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()

    def output(self) -> str:
        """The tail of the server's log."""
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-LOG_TAIL:]

    def wait_ready(self, deadline: float | None = None) -> None:
        """Poll the health path until it answers 200; fail the test (with the log) if the
        process exits first or ``deadline`` (default: STARTUP_TIMEOUT from now) passes."""
        started = time.monotonic()
        if deadline is None:
            deadline = started + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                pytest.fail(f"{self.name} exited with {self.process.returncode}:\n{self.output()}")
            try:
                if httpx.get(f"{self.url}{self.health}", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.05)
        waited = time.monotonic() - started
        pytest.fail(
            f"{self.name} did not answer {self.health} within {waited:.0f}s:\n{self.output()}"
        )

    def stop(self) -> None:
        stop_process(self.process)
        self.log.close()

    def request(self, method: str, path: str, token: str | None = None) -> httpx.Response:
        """One request on a fresh connection (so requests spread over workers)."""
        headers = bearer(token) if token is not None else {}
        return httpx.request(method, f"{self.url}{path}", headers=headers, timeout=10)

    def get(self, path: str, token: str | None = None) -> httpx.Response:
        return self.request("GET", path, token)


def wait_all_ready(servers: Iterable[AppServer], timeout: float = STARTUP_TIMEOUT) -> None:
    """Wait for servers started together (they boot in parallel), under one deadline."""
    deadline = time.monotonic() + timeout
    for server in servers:
        server.wait_ready(deadline)


def raw_request(
    port: int, path: str, header_lines: Iterable[bytes]
) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 GET written byte by byte on a socket (so headers can repeat)."""
    head = b"".join(
        [
            f"GET {path} HTTP/1.1\r\n".encode(),
            f"Host: 127.0.0.1:{port}\r\n".encode(),
            *(line + b"\r\n" for line in header_lines),
            b"Connection: close\r\n\r\n",
        ]
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head)
        response = http.client.HTTPResponse(sock)
        response.begin()
        body = response.read()
        headers = {k.lower(): v for k, v in response.getheaders()}
        return response.status, headers, body


# -- servers in a thread ----------------------------------------------------------------------


@contextlib.contextmanager
def uvicorn_in_thread(
    app: Any, timeout: float = STARTUP_TIMEOUT, **config_options: Any
) -> Iterator[int]:
    """Serve an ASGI app under a real uvicorn in a thread, on a free port (yielded);
    ``config_options`` go to ``uvicorn.Config`` (e.g. ``root_path``)."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config_options)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + timeout
        while not server.started:
            assert thread.is_alive(), "uvicorn stopped during startup"
            assert time.monotonic() < deadline, "uvicorn did not start"
            time.sleep(0.02)
        yield port
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextlib.contextmanager
def werkzeug_in_thread(app: Any) -> Iterator[int]:
    """Serve a WSGI app under a real threaded werkzeug server in a thread, on a free port."""
    server = make_server("127.0.0.1", free_port(), app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield server.port
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)


@pytest.fixture
def serve_asgi() -> Iterator[Callable[[Any], int]]:
    """``serve_asgi(app) -> port``: the app under uvicorn in a thread, stopped at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(uvicorn_in_thread(app))


@pytest.fixture
def serve_wsgi() -> Iterator[Callable[[Any], int]]:
    """``serve_wsgi(app) -> port``: the app under werkzeug in a thread, stopped at teardown."""
    with contextlib.ExitStack() as stack:
        yield lambda app: stack.enter_context(werkzeug_in_thread(app))


# -- apps in process --------------------------------------------------------------------------


@dataclass
class Answer:
    """A response from either test client: status, lower-cased headers, body."""

    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class InProcess:
    """An app behind JWTMiddleware (Starlette ``routes``, TestClient) when ``kind`` is "asgi",
    or ``wsgi_app`` behind JWTWSGIMiddleware (werkzeug test client) when it is "wsgi".

    ``host`` is the host name the test client sends (so ``own_origin`` is the Origin a page of
    this very app would send). With ``use_cookies=False`` the WSGI client keeps no cookie jar, so
    a ``Cookie`` header goes out as written (the ASGI client sends it as written either way).
    Repeated request headers reach a WSGI app joined with ", ", as a WSGI server joins them.
    A context manager: closed on exit."""

    def __init__(
        self,
        kind: str,
        settings: Settings | list[Settings],
        *,
        routes: Sequence[BaseRoute],
        wsgi_app: Any,
        use_cookies: bool = True,
    ) -> None:
        self.kind = kind
        # the settings (the first of a multi-issuer list), for subclasses that clean up after them
        self.settings = settings if isinstance(settings, Settings) else settings[0]
        self.host = "testserver" if kind == "asgi" else "localhost"
        if kind == "asgi":
            from starlette.testclient import TestClient  # imported on use: it warns on import

            app = Starlette(
                routes=routes, middleware=[Middleware(JWTMiddleware, settings=settings)]
            )
            self.test_client = TestClient(app)
            self.test_client.__enter__()
        else:
            self.mw = JWTWSGIMiddleware(wsgi_app, settings=settings)
            self.wsgi = Client(self.mw, use_cookies=use_cookies)

    @property
    def own_origin(self) -> str:
        """The Origin a page served by this very host would send."""
        return f"http://{self.host}"

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def request(self, method: str, path: str, headers: Any = ()) -> Answer:
        """``headers``: a mapping or a sequence of (name, value) pairs (names may repeat)."""
        if self.kind == "asgi":
            r = self.test_client.request(method, path, headers=headers)
            return Answer(r.status_code, {k.lower(): v for k, v in r.headers.items()}, r.content)
        w = self.wsgi.open(path, method=method, headers=headers)
        return Answer(w.status_code, {k.lower(): v for k, v in w.headers.items()}, w.get_data())

    def close(self) -> None:
        if self.kind == "asgi":
            self.test_client.__exit__(None, None, None)
        else:
            self.mw.close()


# -- async and sync behind one synchronous interface ------------------------------------------


class Blocking:
    """For parametrised tests over an async and a sync API: ``run`` completes the async one's
    coroutines on a private event loop ("async"), or passes the sync one's results ("sync")."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.runner = asyncio.Runner() if kind == "async" else None

    def run(self, result: Any) -> Any:
        return result if self.runner is None else self.runner.run(result)

    def close(self) -> None:
        if self.runner is not None:
            self.runner.close()


async def _gather(tasks: list[asyncio.Task[Any]]) -> None:
    await asyncio.gather(*tasks)


class VerifierDriver(Blocking):
    """The AsyncVerifier ("async", on its own event loop) or the SyncVerifier ("sync")."""

    def __init__(self, kind: str, settings: Settings) -> None:
        super().__init__(kind)
        self.verifier: Any = AsyncVerifier(settings) if kind == "async" else SyncVerifier(settings)

    def verify(self, token: str) -> Any:
        return self.run(self.verifier.verify(token))

    __call__ = verify

    def refused(self, token: str) -> str:
        """The reason the token is refused (fails the test if it is accepted)."""
        with pytest.raises(InvalidToken) as refused:
            self.verify(token)
        return refused.value.reason

    def settle(self) -> None:
        """Let background key refreshes finish."""
        if self.runner is not None:
            pending = list(self.verifier.remote._tasks)
            if pending:
                self.run(_gather(pending))
        else:
            for thread in threading.enumerate():
                if thread.name == "jwks-refresh":
                    thread.join(10)

    def close(self) -> None:
        if self.runner is not None:
            self.run(self.verifier.aclose())
        else:
            self.verifier.close()
        super().close()
