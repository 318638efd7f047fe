"""MCPMiddleware in process, in front of a real ``mcp`` SDK server (stateless, JSON answers):
which tool a request calls comes from its JSON-RPC body, the routing headers must agree with
it, and what the SDK sees on the scope. The end-to-end run with the real client is in
tests/integration/test_mcp.py."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from typing import Any

import pytest
from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from jwt_middleware.mcp import MCPMiddleware, MCPUser
from jwt_middleware.testing import LocalIssuer

RESOURCE = "http://127.0.0.1:8000/mcp"
ACCEPT = {"accept": "application/json, text/event-stream", "mcp-protocol-version": "2025-06-18"}


def _server() -> MCPServer:
    server = MCPServer("t")

    @server.tool()
    def whoami() -> str:
        """The caller's subject, read the SDK's way."""
        token = get_access_token()
        return token.subject or "" if token is not None else "nobody"

    @server.tool()
    def admin_report() -> str:
        """Needs admin."""
        return "report"

    return server


@pytest.fixture
def client(issuer: LocalIssuer) -> Iterator[Any]:
    """``client(**options)``: a TestClient on the MCP app behind MCPMiddleware."""
    made: list[TestClient] = []

    def build(**options: Any) -> TestClient:
        options.setdefault("tool_scopes", {"admin_report": ["admin"]})
        app = MCPMiddleware(
            _server().streamable_http_app(stateless_http=True, json_response=True),
            issuer=issuer.issuer,
            jwks_url=issuer.jwks_url,
            resource=RESOURCE,
            **options,
        )
        test_client = TestClient(app, base_url="http://127.0.0.1:8000")
        test_client.__enter__()
        made.append(test_client)
        return test_client

    yield build
    for test_client in made:
        test_client.__exit__(None, None, None)


def _recording(users: list[Any]) -> Any:
    """A stand-in app that records ``scope["user"]`` and answers 204."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        users.append(scope["user"])
        await send({"type": "http.response.start", "status": 204, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    return app


def _call(tool: str, ident: int = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": ident, "method": "tools/call", "params": {"name": tool}}


def _post(client: TestClient, body: Any, token: str | None = None, **headers: str) -> Any:
    sent = {**ACCEPT, **{k.replace("_", "-"): v for k, v in headers.items()}}
    if token is not None:
        sent["authorization"] = f"Bearer {token}"
    content = body if isinstance(body, bytes) else json.dumps(body).encode()
    return client.post(
        "/mcp", content=content, headers={**sent, "content-type": "application/json"}
    )


def test_a_tool_call_is_answered_by_the_sdk_with_the_users_token(
    client: Any, issuer: LocalIssuer
) -> None:
    """Past the middleware, the SDK runs the tool and ``get_access_token()`` names the caller."""
    answer = _post(client(), _call("whoami"), issuer.mint(subject="alice", audience=RESOURCE))
    assert answer.status_code == 200
    assert answer.json()["result"]["content"][0]["text"] == "alice"


def test_the_tool_is_read_from_the_body_when_no_header_names_it(
    client: Any, issuer: LocalIssuer
) -> None:
    """A legacy-wire call (no routing headers) of a tool needing admin is a 403 naming admin."""
    answer = _post(client(), _call("admin_report"), issuer.mint(audience=RESOURCE))
    assert answer.status_code == 403
    assert 'scope="admin"' in answer.headers["www-authenticate"]


def test_with_the_scope_the_tool_runs(client: Any, issuer: LocalIssuer) -> None:
    """The same call with a token granting admin reaches the tool."""
    token = issuer.mint(audience=RESOURCE, scope="admin")
    answer = _post(client(), _call("admin_report"), token)
    assert answer.json()["result"]["content"][0]["text"] == "report"


def test_every_call_of_a_batch_is_checked(client: Any, issuer: LocalIssuer) -> None:
    """A batch hiding an admin call behind a harmless one is refused as a whole."""
    batch = [_call("whoami", 1), _call("admin_report", 2)]
    assert _post(client(), batch, issuer.mint(audience=RESOURCE)).status_code == 403


@pytest.mark.parametrize(
    ("body", "headers"),
    [
        (_call("admin_report"), {"mcp_method": "tools/list"}),
        (_call("admin_report"), {"mcp_method": "tools/call", "mcp_name": "whoami"}),
        ({"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {}}, {}),
    ],
    ids=["method-lies", "name-lies", "no-tool-name"],
)
def test_a_call_whose_tool_cannot_be_told_is_a_400(
    client: Any, issuer: LocalIssuer, body: Any, headers: dict[str, str]
) -> None:
    """Headers that disagree with the body, or a call naming no tool: 400 mcp_request_invalid."""
    app = client(expose_error_details=True)
    answer = _post(app, body, issuer.mint(audience=RESOURCE, scope="admin"), **headers)
    assert answer.status_code == 400
    assert answer.json()["reason"] == "mcp_request_invalid"


def test_a_body_over_the_limit_is_a_400_before_any_tool_runs(
    client: Any, issuer: LocalIssuer
) -> None:
    """``max_body_bytes`` bounds what the middleware reads: a larger body is refused."""
    body = _call("whoami")
    body["params"]["arguments"] = {"pad": "x" * 2000}
    answer = _post(client(max_body_bytes=1000), body, issuer.mint(audience=RESOURCE))
    assert answer.status_code == 400


def test_a_body_that_is_not_json_is_refused(client: Any, issuer: LocalIssuer) -> None:
    """A body the middleware cannot read is a 400, never handed to a parser that might read it."""
    app = client(expose_error_details=True)
    answer = _post(app, b"{not json", issuer.mint(audience=RESOURCE))
    assert answer.status_code == 400
    assert answer.json()["reason"] == "mcp_request_invalid"


def test_a_body_that_is_not_json_reaches_the_sdk_without_tool_scopes(
    client: Any, issuer: LocalIssuer
) -> None:
    """Without ``tool_scopes`` nothing is read: the SDK answers its own parse error."""
    answer = _post(client(tool_scopes={}), b"{not json", issuer.mint(audience=RESOURCE))
    assert answer.status_code == 400
    assert answer.json()["error"]["code"] == -32700


def test_without_tool_scopes_the_body_is_not_read(client: Any, issuer: LocalIssuer) -> None:
    """No ``tool_scopes``: any valid token calls any tool (the body passes untouched)."""
    answer = _post(client(tool_scopes={}), _call("admin_report"), issuer.mint(audience=RESOURCE))
    assert answer.json()["result"]["content"][0]["text"] == "report"


def test_anonymous_callers_get_a_401_naming_the_tools_scopes(
    client: Any, issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """In anonymous mode a call of a scoped tool without a token is a 401 with its scopes."""
    app = client(anonymous=True)
    with caplog.at_level(logging.DEBUG, logger="jwt_middleware"):
        refused = _post(app, _call("admin_report"))
    assert refused.status_code == 401
    assert 'scope="admin"' in refused.headers["www-authenticate"]
    assert _post(app, _call("whoami")).json()["result"]["content"][0]["text"] == "nobody"


def test_the_sdk_sees_its_own_user_type_carrying_our_token(issuer: LocalIssuer) -> None:
    """``scope["user"]`` is an MCPUser: the SDK's AuthenticatedUser, with ``.token`` ours."""
    users: list[Any] = []
    app = _recording(users)
    middleware = MCPMiddleware(
        app, issuer=issuer.issuer, jwks_url=issuer.jwks_url, resource=RESOURCE
    )
    token = issuer.mint(subject="bob", audience=RESOURCE, scope="a")
    # No lifespan (this stand-in app speaks only HTTP): the keys are fetched on first use.
    TestClient(middleware).get("/mcp", headers={"authorization": f"Bearer {token}"})
    (user,) = users
    assert isinstance(user, MCPUser)
    assert user.identity == "bob" and user.claims["sub"] == "bob"
    assert user.access_token.resource == RESOURCE and user.scopes == ["a"]


def test_with_tool_scopes_a_websocket_is_refused(issuer: LocalIssuer) -> None:
    """Tool scopes are checked on HTTP; a WebSocket to the app would bypass them: closed."""
    middleware = MCPMiddleware(
        _server().streamable_http_app(stateless_http=True),
        issuer=issuer.issuer,
        jwks_url=issuer.jwks_url,
        resource=RESOURCE,
        tool_scopes={"admin_report": ["admin"]},
    )
    token = issuer.mint(audience=RESOURCE, scope="admin")
    with TestClient(middleware, base_url="http://127.0.0.1:8000") as test_client:
        with pytest.raises(WebSocketDisconnect) as closed:
            with test_client.websocket_connect(
                "/mcp", headers={"authorization": f"Bearer {token}"}
            ):
                pass
    assert closed.value.code == 1008


def test_the_sdks_access_token_is_built_once_per_verified_token(issuer: LocalIssuer) -> None:
    """Requests with the same (cached) token share one read-only AccessToken."""
    users: list[Any] = []
    app = _recording(users)
    middleware = MCPMiddleware(
        app, issuer=issuer.issuer, jwks_url=issuer.jwks_url, resource=RESOURCE
    )
    client = TestClient(middleware)
    token = issuer.mint(audience=RESOURCE)
    for _ in range(3):  # the second use admits the token to the cache
        client.get("/mcp", headers={"authorization": f"Bearer {token}"})
    assert users[1].access_token is users[2].access_token
    assert users[0] is not users[1]  # the user object itself is per request
