"""jwt_middleware.mcp: the SDK-path ``TokenVerifier`` (the ``AccessToken`` it fills, refusals
logged and counted with their reason, the outage told apart, its lifecycle, the SDK's own auth
answering with it) and ``MCPMiddleware``'s options and body rules."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest
from mcp.server.auth.settings import AuthSettings
from mcp.server.mcpserver import MCPServer
from pydantic import AnyHttpUrl
from starlette.testclient import TestClient

from jwt_middleware import ConfigurationError, Reason, Settings
from jwt_middleware.mcp import MCPMiddleware, TokenVerifier, _check_headers, _header_value
from jwt_middleware.observe import Counters
from jwt_middleware.testing import LocalIssuer

RESOURCE = "https://mcp.example.com/mcp"


def _verifier(issuer: LocalIssuer, **options: Any) -> TokenVerifier:
    return TokenVerifier(
        issuer=issuer.issuer, jwks_url=issuer.jwks_url, resource=RESOURCE, **options
    )


def test_the_access_token_is_filled_from_the_claims(issuer: LocalIssuer) -> None:
    """client_id, scopes, expiry, subject, claims and (aud naming us) resource are all set."""
    verifier = _verifier(issuer)
    raw = issuer.mint({"client_id": "cli-1", "azp": "other"}, audience=RESOURCE, scope="a b")
    token = anyio.run(verifier.verify_token, raw)
    assert token is not None
    assert (token.token, token.client_id, token.scopes) == (raw, "cli-1", ["a", "b"])
    assert token.resource == RESOURCE and token.subject == "user-1"
    assert token.claims is not None and token.expires_at == token.claims["exp"]
    with pytest.raises((TypeError, ValueError)):  # shared by requests: read-only
        token.claims["sub"] = "changed"
    with pytest.raises((TypeError, ValueError)):
        token.scopes.append("admin")


def test_client_id_falls_back_to_azp_then_sub_and_resource_needs_aud(issuer: LocalIssuer) -> None:
    """Without ``client_id`` it is ``azp``, then ``sub``; ``resource`` only when aud names us."""
    verifier = _verifier(issuer, audience="api://mcp")
    by_azp = anyio.run(verifier.verify_token, issuer.mint({"azp": "spa"}, audience="api://mcp"))
    by_sub = anyio.run(verifier.verify_token, issuer.mint(subject="bob", audience=[RESOURCE]))
    assert by_azp is not None and (by_azp.client_id, by_azp.resource) == ("spa", None)
    assert by_sub is not None and (by_sub.client_id, by_sub.resource) == ("bob", RESOURCE)


def test_a_refusal_is_none_logged_and_counted_with_its_reason(
    issuer: LocalIssuer, caplog: pytest.LogCaptureFixture
) -> None:
    """An expired token: None for the SDK, ``token_expired`` in the log and the counters."""
    counters = Counters()
    verifier = _verifier(issuer, events=counters)
    expired = issuer.mint(audience=RESOURCE, expires_in=-3600)
    with caplog.at_level(logging.INFO, logger="jwt_middleware"):
        assert anyio.run(verifier.verify_token, expired) is None
    assert [r.jwt_reason for r in caplog.records if hasattr(r, "jwt_reason")] == [Reason.EXPIRED]
    assert expired not in caplog.text
    assert counters.snapshot()["rejected:token_expired"] == 1


def test_a_key_server_outage_is_told_apart_from_a_bad_token(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The SDK answers both with 401; our log says keys_unavailable, at WARNING."""
    with LocalIssuer() as issuer:
        verifier = _verifier(issuer, warm_up=False)
        token = issuer.mint(audience=RESOURCE)
        issuer.set_fault("status", status=500)
        with caplog.at_level(logging.INFO, logger="jwt_middleware"):
            assert anyio.run(verifier.verify_token, token) is None
    outage = [r for r in caplog.records if getattr(r, "jwt_reason", None) == "keys_unavailable"]
    assert outage and outage[0].levelno == logging.WARNING


def test_as_a_context_manager_it_warms_up_and_closes(issuer: LocalIssuer) -> None:
    """``async with`` fetches the keys at entry (no fetch on the first token) and closes."""

    async def run() -> tuple[int, int]:
        async with _verifier(issuer) as verifier:
            fetched = issuer.jwks_requests
            await verifier.verify_token(issuer.mint(audience=RESOURCE))
            return fetched, issuer.jwks_requests

    at_entry, after_token = anyio.run(run)
    assert at_entry == 1 and after_token == 1


def test_the_sdks_own_auth_answers_with_our_verifier(issuer: LocalIssuer) -> None:
    """Behind MCPServer(token_verifier=...), a good token reaches the server, a bad one is 401."""
    verifier = _verifier(issuer)
    server = MCPServer(
        "t",
        token_verifier=verifier,
        auth=AuthSettings(
            issuer_url=AnyHttpUrl(issuer.issuer),
            resource_server_url=AnyHttpUrl(RESOURCE),
            validate_token_resource=True,
        ),
    )
    body = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}
    headers = {
        "accept": "application/json, text/event-stream",
        "mcp-protocol-version": "2025-06-18",
    }
    with TestClient(server.streamable_http_app(), base_url="http://127.0.0.1:8000") as client:
        bad = client.post("/mcp", json=body, headers={**headers, **_bearer("x.y.z")})
        good = client.post(
            "/mcp", json=body, headers={**headers, **_bearer(issuer.mint(audience=RESOURCE))}
        )
        other = client.post(
            "/mcp", json=body, headers={**headers, **_bearer(issuer.mint(audience=None))}
        )
    assert bad.status_code == 401
    # Past auth: the SDK itself answers (it wants an initialize first).
    assert good.status_code == 400 and "session" in good.text.lower()
    assert other.status_code == 401


def _bearer(token: str) -> dict[str, str]:
    return {"authorization": f"Bearer {token}"}


# -- MCPMiddleware's rules ------------------------------------------------------------------


@pytest.mark.parametrize(
    "tool_scopes",
    [{"t": "admin"}, {"": ["admin"]}, {"t": ["two words"]}],
    ids=["string", "empty-name", "bad-scope"],
)
def test_malformed_tool_scopes_are_refused(tool_scopes: Any) -> None:
    """Tool names and their scope lists are checked when the middleware is built."""
    with pytest.raises(ConfigurationError):
        MCPMiddleware(_app, tool_scopes=tool_scopes, settings=_SETTINGS)


@pytest.mark.parametrize("size", [0, -1, True, 1.5])
def test_max_body_bytes_must_be_a_positive_integer(size: Any) -> None:
    """``max_body_bytes`` is a positive int (a bool or float is refused)."""
    with pytest.raises(ConfigurationError, match="max_body_bytes"):
        MCPMiddleware(_app, max_body_bytes=size, settings=_SETTINGS)


@pytest.mark.parametrize(
    ("headers", "called", "ok"),
    [
        ([], ["t"], True),
        ([(b"mcp-method", b"tools/call"), (b"mcp-name", b"t")], ["t"], True),
        ([(b"mcp-method", b"tools/list")], ["t"], False),
        ([(b"mcp-method", b"tools/call")], [], False),
        ([(b"mcp-method", b"tools/call"), (b"mcp-name", b"u")], ["t"], False),
        ([(b"mcp-name", b"t")], ["t", "u"], False),
        ([(b"mcp-method", b"ping")], [], True),
    ],
    ids=["no-headers", "agree", "method-lies", "no-call", "name-lies", "batch", "other-method"],
)
def test_routing_headers_must_agree_with_the_body(
    headers: list[tuple[bytes, bytes]], called: list[str], ok: bool
) -> None:
    """``Mcp-Method``/``Mcp-Name``, when present, must name what the body calls."""
    if ok:
        _check_headers(headers, called)
    else:
        with pytest.raises(Exception, match="does not match"):
            _check_headers(headers, called)


def test_non_ascii_tool_names_are_read_from_base64_headers() -> None:
    """``=?base64?...?=`` is how the SDK sends a name that is not ASCII; a bad one is None."""
    assert _header_value(b"=?base64?w6l0w6k=?=") == "été"
    assert _header_value(b"=?base64?***?=") is None
    assert _header_value(b"plain") == "plain"


async def _app(scope: Any, receive: Any, send: Any) -> None:
    raise AssertionError("not called")


_SETTINGS = Settings(
    issuer="https://id.example", jwks_url="https://id.example/jwks", resource=RESOURCE,
    warm_up=False,
)  # fmt: skip


@pytest.mark.parametrize(
    "option",
    [{"public_paths": ["/mcp"]}, {"cors_origins": ["https://a.example"]}, {"realm": "mcp"},
     {"challenge_scopes": ["a"]}, {"resource_name": "files"}],
    ids=lambda option: next(iter(option)),
)  # fmt: skip
def test_options_the_sdk_would_ignore_are_refused(issuer: LocalIssuer, option: Any) -> None:
    """The SDK answers HTTP itself: a request option the verifier cannot apply is an error."""
    with pytest.raises(ConfigurationError, match="cannot apply"):
        _verifier(issuer, **option)
