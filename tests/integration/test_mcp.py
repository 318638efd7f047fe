"""examples/mcp_server.py end to end: the official ``mcp`` SDK's server under a real uvicorn
behind ``MCPMiddleware``, the official ``mcp`` client over real HTTP, and a LocalIssuer as the
authorization server. A client finds its way from a 401 to the metadata to the issuer, gets a
token for the resource, and calls tools; a tool its token may not use is an HTTP 403."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import anyio
import httpx
import httpx2
import pytest
from mcp import Client
from mcp.client.streamable_http import streamable_http_client

from jwt_middleware.testing import LocalIssuer
from tests.support.servers import AppServer, free_port, jwt_env, uvicorn_argv

# The client's protocol modes: the 2026-07-28 single-exchange wire (which mirrors the method
# and tool name into headers) and the legacy initialize handshake (which does not).
MODES = ["2026-07-28", "legacy"]


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """The authorization server, for the whole module."""
    with LocalIssuer(audience="api://mcp-other") as local:
        yield local


@pytest.fixture(scope="module")
def server(issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AppServer]:
    """examples/mcp_server.py under uvicorn, configured from the environment like a deployment."""
    port = free_port()
    resource = f"http://127.0.0.1:{port}/mcp"
    env = jwt_env(issuer, jwks_url=False, JWT_RESOURCE=resource)
    with AppServer(
        "mcp_server",
        lambda port: uvicorn_argv("mcp_server:app", port, app_dir="examples"),
        env=env,
        log=tmp_path_factory.mktemp("mcp") / "uvicorn.log",
        port=port,
        health="/.well-known/oauth-protected-resource/mcp",
    ) as app:
        app.wait_ready()
        yield app


def _challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def _discover(server: AppServer) -> tuple[dict[str, Any], dict[str, Any]]:
    """What a client does after a 401: follow resource_metadata, then the issuer's discovery."""
    refused = httpx.post(server.url + "/mcp", json={}, timeout=10)
    assert refused.status_code == 401
    metadata = httpx.get(_challenge(refused)["resource_metadata"], timeout=10).json()
    issuer_url = metadata["authorization_servers"][0]
    discovery = httpx.get(issuer_url + "/.well-known/openid-configuration", timeout=10).json()
    return metadata, discovery


def _token(discovery: dict[str, Any], resource: str, scope: str | None = None) -> str:
    params = {"sub": "alice", "resource": resource}
    if scope is not None:
        params["scope"] = scope
    answer = httpx.get(discovery["token_endpoint"], params=params, timeout=10)
    token: str = answer.json()["access_token"]
    return token


async def _call(
    server: AppServer, token: str, mode: str, tool: str, seen: list[Any] | None = None
) -> Any:
    """Call ``tool`` with the official client; ``seen`` collects every HTTP answer it got."""

    async def record(response: Any) -> None:
        if seen is not None:
            seen.append((response.status_code, response.headers.get("www-authenticate")))

    http = httpx2.AsyncClient(
        headers={"authorization": f"Bearer {token}"},
        timeout=10,
        event_hooks={"response": [record]},
    )
    async with (
        http,
        Client(streamable_http_client(server.url + "/mcp", http_client=http), mode=mode) as client,
    ):
        return await client.call_tool(tool, {})


def _text(result: Any) -> str:
    return "".join(getattr(block, "text", "") for block in result.content)


def test_a_client_discovers_the_issuer_from_the_401(server: AppServer, issuer: LocalIssuer) -> None:
    """The 401 names the metadata URL; the metadata names the resource and the issuer."""
    metadata, discovery = _discover(server)
    assert metadata == {
        "resource": server.url + "/mcp",
        "authorization_servers": [issuer.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["admin"],
        "dpop_signing_alg_values_supported": ["ES256", "EdDSA", "PS256", "RS256"],
    }
    assert discovery["issuer"] == issuer.issuer


@pytest.mark.parametrize("mode", MODES)
def test_any_valid_token_for_the_resource_calls_whoami(server: AppServer, mode: str) -> None:
    """A token issued for the resource (RFC 8707) calls ``whoami``, which sees its subject."""
    metadata, discovery = _discover(server)
    token = _token(discovery, metadata["resource"])
    result = anyio.run(_call, server, token, mode, "whoami")
    assert not result.is_error
    assert _text(result) == "alice"


@pytest.mark.parametrize("mode", MODES)
def test_a_tool_needing_admin_is_an_http_403_without_it(server: AppServer, mode: str) -> None:
    """``admin_report`` without ``admin``: the client's call fails on an HTTP 403, in both modes."""
    metadata, discovery = _discover(server)
    plain = _token(discovery, metadata["resource"])
    seen: list[Any] = []
    with pytest.raises(Exception, match=r"error response|TaskGroup"):
        anyio.run(_call, server, plain, mode, "admin_report", seen)
    refused = [challenge for status, challenge in seen if status == 403]
    assert len(refused) == 1, seen
    assert 'error="insufficient_scope"' in refused[0] and 'scope="admin"' in refused[0]
    admin = _token(discovery, metadata["resource"], scope="admin")
    assert _text(anyio.run(_call, server, admin, mode, "admin_report")) == "all systems nominal"


def test_the_403_names_the_scope_and_the_metadata(server: AppServer) -> None:
    """The 403 as sent: ``insufficient_scope``, ``scope="admin"``, the metadata URL."""
    metadata, discovery = _discover(server)
    token = _token(discovery, metadata["resource"])
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "admin_report"}}
    answer = httpx.post(
        server.url + "/mcp",
        json=body,
        headers={
            "authorization": f"Bearer {token}",
            "mcp-method": "tools/call",
            "mcp-name": "admin_report",
        },
        timeout=10,
    )
    assert answer.status_code == 403
    assert _challenge(answer) == {
        "realm": "api",
        "error": "insufficient_scope",
        "error_description": "The access token does not grant the required scope.",
        "scope": "admin",
        "resource_metadata": server.url + "/.well-known/oauth-protected-resource/mcp",
    }


def test_headers_that_disagree_with_the_body_are_refused(server: AppServer) -> None:
    """A harmless ``Mcp-Method`` over a ``tools/call`` body is a 400, never a call."""
    metadata, discovery = _discover(server)
    token = _token(discovery, metadata["resource"])
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": {"name": "admin_report"}}
    answer = httpx.post(
        server.url + "/mcp",
        content=json.dumps(body),
        headers={
            "authorization": f"Bearer {token}",
            "mcp-method": "tools/list",
            "content-type": "application/json",
        },
        timeout=10,
    )
    assert answer.status_code == 400
    assert _challenge(answer)["error"] == "invalid_request"


def test_a_token_for_another_resource_is_a_401(server: AppServer) -> None:
    """A token whose ``aud`` names another resource never reaches the MCP server."""
    _, discovery = _discover(server)
    token = _token(discovery, "https://elsewhere.example/mcp")
    answer = httpx.post(
        server.url + "/mcp", json={}, headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert answer.status_code == 401
    assert _challenge(answer)["error"] == "invalid_token"


def test_the_server_log_shows_reasons_and_no_token(server: AppServer) -> None:
    """The refusals above are in the server's log with their reason codes, never a token."""
    _, discovery = _discover(server)
    token = _token(discovery, "https://elsewhere.example/mcp")
    httpx.post(server.url + "/mcp", json={}, headers={"authorization": f"Bearer {token}"})
    log = server.output()
    assert "audience_mismatch" in log
    assert token not in log and token.split(".")[2] not in log


def _legacy_post(server: AppServer, token: str, body: dict[str, Any], session: str | None) -> Any:
    headers = {
        "authorization": f"Bearer {token}",
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18",
    }
    if session is not None:
        headers["mcp-session-id"] = session
    return httpx.post(server.url + "/mcp", json=body, headers=headers, timeout=10)


def test_a_session_stays_bound_to_the_user_who_opened_it(server: AppServer) -> None:
    """The SDK's session binding sees our user: another user's token cannot use the session."""
    metadata, discovery = _discover(server)
    alice = _token(discovery, metadata["resource"])
    params = {"sub": "bob", "resource": metadata["resource"]}
    bob = httpx.get(discovery["token_endpoint"], params=params, timeout=10).json()["access_token"]
    opened = _legacy_post(server, alice, {
        "jsonrpc": "2.0", "id": 1, "method": "initialize",
        "params": {"protocolVersion": "2025-06-18", "capabilities": {},
                   "clientInfo": {"name": "test", "version": "1"}},
    }, None)  # fmt: skip
    assert opened.status_code == 200
    session = opened.headers["mcp-session-id"]
    listing = {"jsonrpc": "2.0", "id": 2, "method": "tools/list"}
    assert _legacy_post(server, alice, listing, session).status_code == 200
    hijack = _legacy_post(server, bob, listing, session)
    assert hijack.status_code in (403, 404), hijack.text
