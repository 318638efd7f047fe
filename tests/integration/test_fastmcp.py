"""A FastMCP server with ``auth=FastMCPVerifier(...)`` under a real uvicorn (in a thread), the
FastMCP client over real streamable HTTP, and a LocalIssuer as the authorization server: a token
minted for the resource calls a tool that sees FastMCP's AccessToken; a bad, expired or
other-resource token is FastMCP's 401, counted with its reason; the metadata is served; the keys
are fetched once, at startup, through the server's lifespan.

The resource is the public URL of a deployment behind a proxy (the metadata names it, tokens are
minted for it); the client talks to the loopback port directly."""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import Generator, Iterator
from dataclasses import dataclass

import anyio
import httpx
import httpx2
import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.dependencies import get_access_token
from mcp.shared.exceptions import MCPError

from jwt_middleware import Reason
from jwt_middleware.mcp import FastMCPVerifier
from jwt_middleware.observe import Counters
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import uvicorn_in_thread

PUBLIC = "https://mcp.example.com"
RESOURCE = PUBLIC + "/mcp"
METADATA_PATH = "/.well-known/oauth-protected-resource/mcp"


@dataclass
class Served:
    url: str
    issuer: LocalIssuer
    counters: Counters
    fetched_at_startup: int


@contextlib.contextmanager
def _serve(issuer: LocalIssuer) -> Iterator[Served]:
    """A FastMCP server with a ``whoami`` tool needing scope ``mcp``, under uvicorn."""
    counters = Counters()
    verifier = FastMCPVerifier(
        issuer=issuer.issuer,
        jwks_url=issuer.jwks_url,
        resource=RESOURCE,
        scopes_supported=["mcp", "admin"],
        required_scopes=["mcp"],
        events=counters,
    )
    server = FastMCP("demo", auth=verifier, lifespan=verifier.lifespan)

    @server.tool
    def whoami() -> str:
        """Who the token says the caller is."""
        token = get_access_token()
        assert token is not None
        return f"{token.subject} {token.client_id} {token.resource} {token.claims['iss']}"

    with uvicorn_in_thread(server.http_app(path="/mcp")) as port:
        yield Served(f"http://127.0.0.1:{port}", issuer, counters, issuer.jwks_requests)


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """The server and its LocalIssuer, for the whole module."""
    with LocalIssuer() as issuer, _serve(issuer) as running:
        yield running


def _token(served: Served, resource: str = RESOURCE, **params: str) -> str:
    """A token from the issuer's ``/token`` endpoint (RFC 8707: aud is ``resource``)."""
    query = {"sub": "alice", "resource": resource, "scope": "mcp", **params}
    answer = httpx.get(served.issuer.token_url, params=query, timeout=10)
    token: str = answer.json()["access_token"]
    return token


class _Bearer(httpx2.Auth):
    """The FastMCP client's bearer auth, recording the status of every answer it gets."""

    def __init__(self, token: str) -> None:
        self.token = token
        self.statuses: list[int] = []

    def auth_flow(
        self, request: httpx2.Request
    ) -> Generator[httpx2.Request, httpx2.Response, None]:
        request.headers["authorization"] = f"Bearer {self.token}"
        response = yield request
        self.statuses.append(response.status_code)


async def _whoami(served: Served, token: str | _Bearer) -> str:
    async with Client(served.url + "/mcp", auth=token, timeout=10) as client:
        result = await client.call_tool("whoami", {})
    return "".join(getattr(block, "text", "") for block in result.content)


def _post(served: Served, token: str | None) -> httpx.Response:
    headers = {"accept": "application/json, text/event-stream"}
    if token is not None:
        headers["authorization"] = f"Bearer {token}"
    return httpx.post(served.url + "/mcp", json={}, headers=headers, timeout=10)


def _challenge(response: httpx.Response) -> dict[str, str]:
    header = response.headers["www-authenticate"]
    assert header.startswith("Bearer ")
    return dict(re.findall(r'(\w+)="([^"]*)"', header))


def test_the_keys_are_fetched_once_at_startup(served: Served) -> None:
    """The server's lifespan warms the verifier up: one JWKS fetch before any token, none after."""
    assert served.fetched_at_startup == 1
    anyio.run(_whoami, served, _token(served))
    assert served.issuer.jwks_requests == 1


def test_a_token_for_the_resource_calls_a_tool_that_sees_the_access_token(served: Served) -> None:
    """The FastMCP client's call runs whoami, whose AccessToken has sub, client_id, resource."""
    text = anyio.run(_whoami, served, _token(served))
    assert text == f"alice alice {RESOURCE} {served.issuer.issuer}"


def test_the_metadata_document_is_served_and_the_401_points_at_it(served: Served) -> None:
    """A request without a token is a 401 naming the metadata, which names resource and issuer."""
    refused = _post(served, None)
    assert refused.status_code == 401
    assert _challenge(refused)["resource_metadata"] == PUBLIC + METADATA_PATH
    document = httpx.get(served.url + METADATA_PATH, timeout=10)
    assert document.status_code == 200
    assert document.json() == {
        "resource": RESOURCE,
        "authorization_servers": [served.issuer.issuer],
        "bearer_methods_supported": ["header"],
        "scopes_supported": ["mcp", "admin"],
    }


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("garbage", Reason.MALFORMED_TOKEN),
        ("expired", Reason.EXPIRED),
        ("other-resource", Reason.AUDIENCE_MISMATCH),
    ],
)
def test_a_refused_token_is_a_401_counted_with_its_reason(
    served: Served, kind: str, reason: str
) -> None:
    """A malformed, expired or other-resource token is FastMCP's 401, and counted by reason."""
    if kind == "garbage":
        token = "not-a-jwt"
    elif kind == "expired":
        token = served.issuer.mint(audience=RESOURCE, expires_in=-3600)
    else:
        token = _token(served, resource="https://elsewhere.example.com/mcp")
    before = served.counters.snapshot().get(f"rejected:{reason}", 0)
    refused = _post(served, token)
    assert refused.status_code == 401
    assert _challenge(refused)["error"] == "invalid_token"
    assert served.counters.snapshot()[f"rejected:{reason}"] == before + 1


def test_the_fastmcp_client_fails_on_a_refused_token(served: Served) -> None:
    """The FastMCP client cannot open a session with a token for another resource."""
    auth = _Bearer(_token(served, resource="https://elsewhere.example.com/mcp"))
    with pytest.raises(MCPError):
        anyio.run(_whoami, served, auth)
    assert auth.statuses and set(auth.statuses) == {401}


def test_a_token_without_the_required_scope_is_fastmcps_403(served: Served) -> None:
    """FastMCP's own required_scopes check still applies: a valid token without mcp is a 403."""
    refused = _post(served, _token(served, scope="admin"))
    assert refused.status_code == 403
    assert _challenge(refused)["error"] == "insufficient_scope"


def test_a_key_server_outage_is_a_401_counted_as_keys_unavailable(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A new key's token while the JWKS answers 500: a 401, logged (WARNING) and counted as
    keys_unavailable."""
    with (
        caplog.at_level(logging.INFO, logger="jwt_middleware"),
        LocalIssuer() as issuer,
        _serve(issuer) as running,
    ):
        issuer.rotate()
        token = _token(running)
        issuer.set_fault("status", status=500)
        refused = _post(running, token)
        assert refused.status_code == 401
        counts = running.counters.snapshot()
    assert counts["rejected:keys_unavailable"] == 1 and counts["key_fetch_failed"] >= 1
    outage = [r for r in caplog.records if getattr(r, "jwt_reason", None) == "keys_unavailable"]
    assert [r.levelno for r in outage] == [logging.WARNING]
    assert token not in caplog.text
