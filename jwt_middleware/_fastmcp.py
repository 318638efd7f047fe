"""A FastMCP auth provider on the shared verifier (``pip install 'jwt-resource-server[fastmcp]'``).

:class:`FastMCPVerifier` is a FastMCP ``TokenVerifier``: ``FastMCP(auth=FastMCPVerifier(...))``.
It has the middleware's checks, key cache and reason codes; FastMCP keeps its own HTTP layer
(the 401 for any refusal, the 403 for ``required_scopes``) and serves, as its provider routes,
the middleware's RFC 9728 metadata document of ``resource``. A refusal is logged and counted
here with its reason code, so a key-server outage, which FastMCP can only answer with a 401,
still shows as ``keys_unavailable`` (at WARNING) in logs and metrics.

FastMCP 4.2 has no lifespan hook for auth providers: pass ``lifespan=verifier.lifespan`` (a
FastMCP ``Lifespan``, composable with ``|``) to fetch the keys at startup and close the key
fetcher at shutdown, or use the verifier as an async context manager.
"""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from fastmcp.server.auth import AccessToken, TokenVerifier
from fastmcp.server.lifespan import Lifespan
from pydantic import AnyHttpUrl
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from ._errors import ConfigurationError
from ._resource import Metadata
from ._settings import Options, Settings
from .mcp import _Verifying, access_token

if TYPE_CHECKING:
    from fastmcp import FastMCP
    from typing_extensions import Unpack

__all__ = ["FastMCPVerifier"]


class FastMCPVerifier(_Verifying, TokenVerifier):
    """FastMCP's ``TokenVerifier`` over jwt_middleware's verifier.

    Takes a :class:`Settings` or its fields as keyword arguments, like the middlewares, plus
    FastMCP's own ``base_url``, ``resource_base_url`` and ``required_scopes``. The resource
    FastMCP serves (``base_url`` + the MCP path) must be ``resource`` when both are known;
    with ``resource`` alone, ``base_url`` is what precedes the MCP path in it.
    """

    _honoured = _Verifying._honoured | {
        "scopes_supported", "authorization_servers", "resource_name", "resource_documentation"
    }  # fmt: skip

    def __init__(
        self,
        *,
        base_url: AnyHttpUrl | str | None = None,
        resource_base_url: AnyHttpUrl | str | None = None,
        required_scopes: Sequence[str] | None = None,
        settings: Settings | Sequence[Settings] | None = None,
        **options: Unpack[Options],
    ) -> None:
        if isinstance(required_scopes, str):
            raise ConfigurationError("required_scopes must be a list, not a string")
        self._set_up(settings, options)
        super().__init__(
            base_url=base_url,
            required_scopes=list(required_scopes) if required_scopes is not None else None,
            resource_base_url=resource_base_url,
        )
        #: Enter it with the server's lifespan (``FastMCP(..., lifespan=verifier.lifespan)``):
        #: keys fetched at startup (when ``warm_up``), the key fetcher closed at shutdown.
        self.lifespan = Lifespan(self._lifespan)

    # -- the TokenVerifier interface -----------------------------------------------------------

    async def verify_token(self, token: str) -> AccessToken | None:
        """The token's ``AccessToken``, or None (logged and counted with its reason code)."""
        verified = await self._verified(token, "fastmcp")
        if verified is None:
            return None
        return AccessToken(**access_token(verified, token, self._resource()).model_dump())

    @property
    def scopes_supported(self) -> list[str]:
        """The metadata's ``scopes_supported``: the settings', else ``required_scopes``."""
        return list(self.settings.scopes_supported) or self.required_scopes

    def set_mcp_path(self, mcp_path: str | None) -> None:
        """Learn the MCP path; without ``base_url``, take it from ``resource``, and refuse a
        served resource URL that is not ``resource``."""
        super().set_mcp_path(mcp_path)
        resource = self.settings.resource
        if resource is None:
            return
        wanted = str(AnyHttpUrl(resource))
        if self._get_resource_url(mcp_path) is None:
            suffix = "/" + (mcp_path or "").strip("/")
            path = urlsplit(resource).path.rstrip("/")
            if suffix != "/" and not path.endswith(suffix):
                raise ConfigurationError(
                    f"resource {resource!r} does not end with the MCP path {mcp_path!r}: "
                    "pass base_url"
                )
            base = resource.rstrip("/")
            self.base_url = AnyHttpUrl(base[: len(base) - len(suffix)] if suffix != "/" else base)
            super().set_mcp_path(mcp_path)
        served = str(self._get_resource_url(mcp_path))
        if served != wanted:
            raise ConfigurationError(
                f"FastMCP serves the resource {served!r}, but resource is {resource!r}"
            )

    def get_routes(self, mcp_path: str | None = None) -> list[Route]:
        """The RFC 9728 metadata routes of ``resource`` (none without it): the middleware's own
        document, naming the trusted issuers exactly as configured (the SDK's model would add a
        slash to a host-only issuer, which then no longer matches the issuer's own metadata)."""
        self.set_mcp_path(mcp_path)
        if self.settings.resource is None:
            return []
        settings = self.settings
        if not settings.scopes_supported and self.required_scopes:
            settings = dataclasses.replace(settings, scopes_supported=tuple(self.required_scopes))
        metadata = Metadata(settings, self.verifier.issuers, requests=False)

        async def serve(request: Request) -> Response:
            status, headers, body = metadata.answer(request.method)
            return Response(body, status_code=status, headers=dict(headers))

        methods = ["GET", "HEAD", "OPTIONS"]
        return [Route(path, serve, methods=methods) for path in sorted(metadata.paths)]

    # -- lifecycle -----------------------------------------------------------------------------

    async def _lifespan(self, server: FastMCP[Any]) -> AsyncIterator[dict[str, Any] | None]:
        async with self:
            yield {}

    # -- helpers -------------------------------------------------------------------------------

    def _resource(self) -> str | None:
        """This server's resource URL: ``resource``, else the one FastMCP serves (if any)."""
        if self.settings.resource is not None:
            return self.settings.resource
        url = self._resource_url
        return str(url) if url is not None else None
