"""jwt_middleware._fastmcp: the FastMCP auth provider (the ``AccessToken`` it fills, refusals
logged and counted with their reason, the outage told apart, its lifecycle through the server's
lifespan, the resource URL it agrees on with FastMCP, and the metadata FastMCP serves with it)."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from fastmcp import Client, FastMCP
from fastmcp.server.auth import AccessToken
from starlette.testclient import TestClient

from jwt_middleware import ConfigurationError, Reason
from jwt_middleware.mcp import FastMCPVerifier
from jwt_middleware.observe import Counters
from jwt_middleware.testing import LocalIssuer

BASE = "https://mcp.example.com"
RESOURCE = BASE + "/mcp"


def _verifier(issuer: LocalIssuer, **options: Any) -> FastMCPVerifier:
    return FastMCPVerifier(
        issuer=issuer.issuer, jwks_url=issuer.jwks_url, resource=RESOURCE, **options
    )


def test_the_access_token_is_fastmcps_filled_from_the_claims(issuer: LocalIssuer) -> None:
    """FastMCP's AccessToken gets client_id, scopes, expiry, subject, claims and the resource."""
    verifier = _verifier(issuer)
    raw = issuer.mint({"client_id": "cli-1", "azp": "other"}, audience=RESOURCE, scope="a b")
    token = anyio.run(verifier.verify_token, raw)
    assert isinstance(token, AccessToken)
    assert (token.token, token.client_id, token.scopes) == (raw, "cli-1", ["a", "b"])
    assert token.resource == RESOURCE and token.subject == "user-1"
    assert token.claims["client_id"] == "cli-1" and token.expires_at == token.claims["exp"]
    token.claims["sub"] = "changed"  # FastMCP's copy is its own: our cached claims are frozen
    again = anyio.run(verifier.verify_token, raw)
    assert again is not None and again.claims["sub"] == "user-1"


def test_client_id_falls_back_to_azp_then_sub_and_resource_needs_aud(issuer: LocalIssuer) -> None:
    """Without client_id it is azp, then sub; resource is set only when aud names this server."""
    verifier = _verifier(issuer, audience="api://mcp")
    by_azp = anyio.run(verifier.verify_token, issuer.mint({"azp": "spa"}, audience="api://mcp"))
    by_sub = anyio.run(verifier.verify_token, issuer.mint(subject="bob", audience=[RESOURCE]))
    assert by_azp is not None and (by_azp.client_id, by_azp.resource) == ("spa", None)
    assert by_sub is not None and (by_sub.client_id, by_sub.resource) == ("bob", RESOURCE)


@pytest.mark.parametrize(
    ("mint", "reason"),
    [
        ({"audience": RESOURCE, "expires_in": -3600}, Reason.EXPIRED),
        ({"audience": "https://other.example.com/mcp"}, Reason.AUDIENCE_MISMATCH),
    ],
    ids=["expired", "other-resource"],
)
def test_a_refusal_is_none_logged_and_counted_with_its_reason(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture, mint: dict[str, Any], reason: str
) -> None:
    """A refused token is None for FastMCP, its reason code in the log and the counters."""
    counters = Counters()
    verifier = _verifier(issuer, events=counters)
    raw = issuer.mint(**mint)
    with caplog.at_level(logging.INFO, logger="jwt_middleware"):
        assert anyio.run(verifier.verify_token, raw) is None
    assert [r.jwt_reason for r in caplog.records if hasattr(r, "jwt_reason")] == [reason]
    assert raw not in caplog.text
    assert counters.snapshot()[f"rejected:{reason}"] == 1


def test_a_key_server_outage_is_told_apart_from_a_bad_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """FastMCP answers both with 401; the log says keys_unavailable at WARNING, and so do counts."""
    counters = Counters()
    with LocalIssuer() as issuer:
        verifier = _verifier(issuer, warm_up=False, events=counters)
        token = issuer.mint(audience=RESOURCE)
        issuer.set_fault("status", status=500)
        with caplog.at_level(logging.INFO, logger="jwt_middleware"):
            assert anyio.run(verifier.verify_token, token) is None
    outage = [r for r in caplog.records if getattr(r, "jwt_reason", None) == "keys_unavailable"]
    assert outage and outage[0].levelno == logging.WARNING
    assert counters.snapshot()["rejected:keys_unavailable"] == 1


def test_the_servers_lifespan_warms_up_and_closes(
    issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With lifespan=verifier.lifespan, the keys are fetched at startup and closed at shutdown."""
    verifier = _verifier(issuer)
    closed: list[bool] = []
    real_aclose = verifier.verifier.aclose

    async def aclose() -> None:
        closed.append(True)
        await real_aclose()

    monkeypatch.setattr(verifier.verifier, "aclose", aclose)
    server = FastMCP("t", lifespan=verifier.lifespan)

    async def run() -> tuple[int, list[bool]]:
        assert issuer.jwks_requests == 0
        async with Client(server) as client:
            await client.list_tools()
            fetched = issuer.jwks_requests, list(closed)
        assert closed == [True]
        return fetched

    assert anyio.run(run) == (1, [])


def test_as_a_context_manager_it_warms_up_and_closes(issuer: LocalIssuer) -> None:
    """async with fetches the keys at entry, so the first token costs no fetch."""

    async def run() -> tuple[int, int]:
        async with _verifier(issuer) as verifier:
            fetched = issuer.jwks_requests
            assert await verifier.verify_token(issuer.mint(audience=RESOURCE)) is not None
            return fetched, issuer.jwks_requests

    assert anyio.run(run) == (1, 1)


def test_base_url_is_taken_from_the_resource(issuer: LocalIssuer) -> None:
    """Without base_url, FastMCP's resource URL for the MCP path is the resource setting."""
    verifier = _verifier(issuer)
    verifier.set_mcp_path("/mcp")
    assert str(verifier.base_url) == BASE + "/"
    assert str(verifier._get_resource_url("/mcp")) == RESOURCE


@pytest.mark.parametrize(
    ("base_url", "path"),
    [("https://elsewhere.example.com", "/mcp"), (None, "/other")],
    ids=["other-base", "other-path"],
)
def test_a_served_resource_that_is_not_the_resource_is_refused(
    issuer: LocalIssuer, base_url: str | None, path: str
) -> None:
    """FastMCP serving another resource URL than the resource setting is a ConfigurationError."""
    verifier = _verifier(issuer, base_url=base_url)
    with pytest.raises(ConfigurationError, match="resource"):
        verifier.get_routes(path)


def test_required_scopes_must_be_a_list(issuer: LocalIssuer) -> None:
    """required_scopes given as one string is refused rather than split into letters."""
    with pytest.raises(ConfigurationError, match="required_scopes"):
        _verifier(issuer, required_scopes="admin")


def test_fastmcp_serves_the_metadata_and_points_its_401_at_it(issuer: LocalIssuer) -> None:
    """The RFC 9728 document names the resource, the issuer and the scopes; the 401 links to it."""
    verifier = _verifier(issuer, required_scopes=["mcp"], resource_name="Demo")
    app = FastMCP("t", auth=verifier).http_app(path="/mcp")
    with TestClient(app, base_url=BASE) as client:
        document = client.get("/.well-known/oauth-protected-resource/mcp").json()
        refused = client.post("/mcp", json={}, headers={"authorization": "Bearer x.y.z"})
    assert document["resource"] == RESOURCE
    assert document["authorization_servers"] == [issuer.issuer]
    assert document["scopes_supported"] == ["mcp"] and document["resource_name"] == "Demo"
    assert refused.status_code == 401
    challenge = refused.headers["www-authenticate"]
    assert "resource_metadata=" in challenge
    assert BASE + "/.well-known/oauth-protected-resource/mcp" in challenge


def test_without_a_resource_no_metadata_is_served(issuer: LocalIssuer) -> None:
    """With no resource setting (an audience only), FastMCP gets no metadata routes."""
    verifier = FastMCPVerifier(
        issuer=issuer.issuer, jwks_url=issuer.jwks_url, audience="api://mcp", base_url=BASE
    )
    assert verifier.get_routes("/mcp") == []
