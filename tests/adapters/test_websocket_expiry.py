"""An authenticated WebSocket does not outlive its token (``websocket_expiry``, default "close").

When ``exp`` + ``leeway`` passes, the middleware sends close 1008 to the client, the app's next
(or pending) receive() gets ``websocket.disconnect``, and the app's later sends never reach the
wire (a close is dropped, data raises, so a loop that only sends ends). With "off" the app
decides, from ``websocket.auth.expires_at``. HTTP requests, and WebSockets with no ``exp`` or
with "off", get the server's own receive/send: only connections that are bounded pay for it.
Timing is checked only as "arrived before a generous limit".
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import anyio
import pytest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import WebSocketRoute
from starlette.types import Message, Receive, Scope, Send
from starlette.websockets import WebSocket, WebSocketDisconnect
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from jwt_middleware import ConfigurationError, Issuer, JWTMiddleware, Key, Settings
from jwt_middleware._asgi import ConnectionClosed as ClosedByExpiry
from jwt_middleware.testing import LocalIssuer
from tests.support.clock import FakeClock
from tests.support.servers import serve_asgi

__all__ = ["serve_asgi"]  # a fixture, used by name

LIMIT = 10.0  # generous: the close is due after about 2 s


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module (overrides conftest's): these tests never change it."""
    with LocalIssuer() as local:
        yield local


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


class Seen(list[Any]):
    """What the app saw: received messages, or how its loop ended."""


def protected(endpoint: Callable[[WebSocket], Any], settings: Settings) -> Starlette:
    return Starlette(
        routes=[WebSocketRoute("/ws", endpoint)],
        middleware=[Middleware(JWTMiddleware, settings=settings)],
    )


def idle_app(seen: Seen, settings: Settings) -> Starlette:
    """Accepts, says hello, then waits in receive() (a chat app between messages)."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"expires_at": websocket.auth.expires_at})
        seen.append(await websocket.receive())

    return protected(endpoint, settings)


def ticker_app(seen: Seen, settings: Settings) -> Starlette:
    """Accepts, then only sends, never receives (a feed)."""

    async def endpoint(websocket: WebSocket) -> None:
        await websocket.accept()
        try:
            while True:
                await websocket.send_text("tick")
                await anyio.sleep(0.05)
        except WebSocketDisconnect as exc:
            seen.append(("disconnect", exc.code))

    return protected(endpoint, settings)


def closed_code(port: int, token: str, *, read: Callable[[Any], None]) -> tuple[int, float]:
    """Connect with ``token``, ``read`` until the server closes; (close code, seconds open)."""
    headers = {"Authorization": f"Bearer {token}"}
    started = time.monotonic()
    with connect(f"ws://127.0.0.1:{port}/ws", additional_headers=headers) as ws:
        with pytest.raises(ConnectionClosed) as closed:
            while time.monotonic() - started < LIMIT:
                read(ws)
        assert closed.value.rcvd is not None, "closed without a close frame"
        return closed.value.rcvd.code, time.monotonic() - started


def test_idle_websocket_is_closed_1008_when_its_token_expires(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], serve_asgi: Callable[[Any], int]
) -> None:
    """An app waiting in receive(): the client gets close 1008 at expiry, the app's receive()
    returns websocket.disconnect with 1008."""
    seen = Seen()
    port = serve_asgi(idle_app(seen, make_settings(leeway=0)))
    token = issuer.mint(expires_in=2)
    hello: list[Any] = []
    code, open_for = closed_code(port, token, read=lambda ws: hello.append(ws.recv(timeout=LIMIT)))
    assert code == 1008
    assert open_for < LIMIT
    assert hello and '"expires_at":' in hello[0]
    assert seen == [{"type": "websocket.disconnect", "code": 1008}]


def test_with_several_issuers_the_tokens_own_issuer_sets_the_deadline(
    issuer: LocalIssuer, serve_asgi: Callable[[Any], int]
) -> None:
    """The close comes at exp + the leeway of the issuer that verified the token, not of the
    first issuer or of the settings (60 s here: the connection would outlive LIMIT)."""
    settings = Settings(
        trust=[
            Issuer(
                issuer="https://other.example/",
                audience="api://other",
                keys=[Key.from_secret(b"k" * 32)],
                algorithms=["HS256"],
            ),
            Issuer(
                issuer=issuer.issuer, audience=issuer.audience, jwks_url=issuer.jwks_url, leeway=0
            ),
        ]
    )
    port = serve_asgi(idle_app(Seen(), settings))
    hello: list[Any] = []
    code, open_for = closed_code(
        port, issuer.mint(expires_in=2), read=lambda ws: hello.append(ws.recv(timeout=LIMIT))
    )
    assert code == 1008 and open_for < LIMIT


def test_sending_websocket_is_closed_1008_and_the_app_loop_ends(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], serve_asgi: Callable[[Any], int]
) -> None:
    """An app that only sends: the client gets close 1008 at expiry (after some ticks), and the
    app's next send ends its loop as a disconnect does."""
    seen = Seen()
    port = serve_asgi(ticker_app(seen, make_settings(leeway=0)))
    ticks: list[Any] = []
    code, open_for = closed_code(
        port, issuer.mint(expires_in=2), read=lambda ws: ticks.append(ws.recv(timeout=LIMIT))
    )
    assert code == 1008
    assert open_for < LIMIT
    assert ticks and set(ticks) == {"tick"}
    deadline = time.monotonic() + LIMIT
    while not seen and time.monotonic() < deadline:
        time.sleep(0.02)
    assert seen == [("disconnect", 1006)]  # Starlette's code for a send that failed


def test_websocket_expiry_off_leaves_the_connection_to_the_app(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    serve_asgi: Callable[[Any], int],
    clock: FakeClock,
) -> None:
    """websocket_expiry="off": the connection stays open past exp; the app has expires_at."""

    async def echo(websocket: WebSocket) -> None:
        await websocket.accept()
        await websocket.send_json({"expires_at": websocket.auth.expires_at})
        while True:
            await websocket.send_text(await websocket.receive_text())

    settings = make_settings(leeway=0, websocket_expiry="off", clock=clock)
    port = serve_asgi(protected(echo, settings))
    token = issuer.mint(now=clock.now, expires_in=0.3)  # would be closed after 0.3 s
    headers = {"Authorization": f"Bearer {token}"}
    with connect(f"ws://127.0.0.1:{port}/ws", additional_headers=headers) as ws:
        assert ws.recv(timeout=LIMIT) == '{"expires_at":%s}' % (clock.now + 0.3)
        time.sleep(1.0)
        ws.send("still here")
        assert ws.recv(timeout=LIMIT) == "still here"


# -- in process: the order of messages, and who pays ----------------------------------------------


class Wire:
    """A server's side of one connection, in process: what the middleware sent, in order."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.incoming: list[Message] = [{"type": "websocket.connect"}]
        self.receive_calls = 0

    async def receive(self) -> Message:
        self.receive_calls += 1
        if self.incoming:
            return self.incoming.pop(0)
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async def send(self, message: Message) -> None:
        self.sent.append(message)
        await anyio.sleep(0)


def ws_scope(token: str | None) -> Scope:
    headers = [(b"authorization", f"Bearer {token}".encode())] if token is not None else []
    return {"type": "websocket", "path": "/ws", "root_path": "", "headers": headers}


async def run(middleware: JWTMiddleware, scope: Scope, wire: Wire) -> None:
    try:
        with anyio.fail_after(LIMIT):
            await middleware(scope, wire.receive, wire.send)
    finally:
        await middleware.verifier.aclose()


@pytest.mark.anyio
async def test_expiry_close_is_never_interleaved_with_app_sends(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """The close goes out once, between two whole app messages; every send after it raises,
    and nothing of the app's reaches the wire after the close."""
    outcome: list[str] = []

    async def chatty(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        try:
            while True:
                await send({"type": "websocket.send", "text": "x" * 1000})
        except ClosedByExpiry:
            outcome.append("send raised")
        await send({"type": "websocket.close", "code": 1000})  # dropped, no error
        outcome.append("closed")

    wire = Wire()
    settings = make_settings(leeway=0, clock=clock)
    token = issuer.mint(now=clock.now, expires_in=0.2)
    await run(JWTMiddleware(chatty, settings=settings), ws_scope(token), wire)
    kinds = [m["type"] for m in wire.sent]
    assert kinds[0] == "websocket.accept"
    assert kinds.count("websocket.close") == 1
    assert kinds[-1] == "websocket.close"
    assert wire.sent[-1]["code"] == 1008
    assert set(kinds[1:-1]) == {"websocket.send"}
    assert outcome == ["send raised", "closed"]


@pytest.mark.anyio
async def test_an_app_that_closed_first_gets_no_second_close(
    issuer: LocalIssuer, make_settings: Callable[..., Settings], clock: FakeClock
) -> None:
    """When the app closes before expiry, the expiry sends nothing more."""

    async def brief(scope: Scope, receive: Receive, send: Send) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await send({"type": "websocket.close", "code": 1000})
        await anyio.sleep(0.4)  # past the token's expiry

    wire = Wire()
    token = issuer.mint(now=clock.now, expires_in=0.1)
    settings = make_settings(leeway=0, clock=clock)
    await run(JWTMiddleware(brief, settings=settings), ws_scope(token), wire)
    assert [(m["type"], m.get("code")) for m in wire.sent] == [
        ("websocket.accept", None),
        ("websocket.close", 1000),
    ]


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("kind", "options", "expires_in", "wrapped"),
    [
        ("http", {}, 300, False),
        ("websocket", {"websocket_expiry": "off"}, 300, False),
        ("websocket", {"require_exp": False}, None, False),
        ("websocket", {}, 300, True),
    ],
    ids=["http", "ws-off", "ws-no-exp", "ws-bounded"],
)
async def test_only_bounded_websockets_get_a_wrapped_receive(
    issuer: LocalIssuer,
    make_settings: Callable[..., Settings],
    kind: str,
    options: dict[str, Any],
    expires_in: float | None,
    wrapped: bool,
) -> None:
    """HTTP requests, and WebSockets with expiry off or no exp, get the server's own receive."""
    got: list[Receive] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        got.append(receive)

    wire = Wire()
    scope = ws_scope(issuer.mint(expires_in=expires_in))
    if kind == "http":
        scope = {**scope, "type": "http", "method": "GET"}
    await run(JWTMiddleware(app, settings=make_settings(**options)), scope, wire)
    assert (got[0] != wire.receive) is wrapped


@pytest.mark.parametrize("value", ["on", "CLOSE", "", None])
def test_bad_websocket_expiry_is_a_configuration_error(
    make_settings: Callable[..., Settings], value: Any
) -> None:
    """websocket_expiry is "close" or "off"."""
    with pytest.raises(ConfigurationError, match="websocket_expiry"):
        make_settings(websocket_expiry=value)
