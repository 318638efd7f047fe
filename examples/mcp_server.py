"""An MCP server (the official ``mcp`` SDK, streamable HTTP at /mcp) protected by jwt_middleware.

    JWT_ISSUER=... JWT_AUDIENCE=... JWT_RESOURCE=https://mcp.example.com/mcp \
        uvicorn --app-dir examples mcp_server:app

JWT_RESOURCE is this server's resource identifier, its URL as clients call it: the middleware
serves its RFC 9728 metadata, and tokens issued for it (``aud``) are accepted. Two tools:
``whoami`` (any valid token; the token's ``sub``) and ``admin_report`` (scope ``admin``). A
``tools/call`` of ``admin_report`` without ``admin`` is an HTTP 403 naming the scope, before the
tool runs.
"""

from __future__ import annotations

import os

from mcp.server.auth.middleware.auth_context import get_access_token
from mcp.server.mcpserver import MCPServer
from settings_from_env import settings_from_env

from jwt_middleware.mcp import MCPMiddleware

server = MCPServer("jwt-middleware example")


@server.tool()
def whoami() -> str:
    """The subject of the caller's token."""
    token = get_access_token()
    return token.subject or "" if token is not None else ""


@server.tool()
def admin_report() -> str:
    """A report only tokens with the admin scope may read."""
    return "all systems nominal"


resource = os.environ.get("JWT_RESOURCE")
if not resource:
    raise SystemExit("set JWT_RESOURCE (this server's URL, e.g. https://mcp.example.com/mcp)")

app = MCPMiddleware(
    server.streamable_http_app(),
    settings=settings_from_env(resource=resource, scopes_supported=["admin"]),
    tool_scopes={"admin_report": ["admin"]},
)
