"""RFC 9728 protected-resource metadata: the document through which a client (an MCP client, an
OAuth 2.1 client) that met a 401 learns which authorization servers issue tokens for this
resource and how to present them. Built once per middleware, served without a token by both
adapters; every challenge points at it (``resource_metadata``, set in the settings)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

from ._settings import WELL_KNOWN, Issuer, Settings

__all__ = ["Metadata"]

Headers = list[tuple[str, str]]

_ALLOW = "GET, HEAD, OPTIONS"


class Metadata:
    """The metadata document of ``settings.resource`` and the answers that serve it."""

    __slots__ = ("_headers", "body", "document", "paths")

    def __init__(
        self, settings: Settings, issuers: Sequence[Issuer], *, requests: bool = True
    ) -> None:
        """``requests``: whether the verifier sees each request (the middlewares), so that it
        can check DPoP proofs and client certificates; a verifier that sees only the token
        (the SDKs' hooks) advertises neither."""
        resource = settings.resource
        url = settings.challenge.resource_metadata
        assert resource is not None and url is not None  # checked by the caller
        #: The paths it is served at: RFC 9728 §3.1's (the well-known prefix inserted before
        #: the resource's path) and the host's root form, which clients also try.
        # Servers hand the app the path percent-decoded (ASGI "path", WSGI PATH_INFO).
        self.paths = frozenset({unquote(urlsplit(url).path), WELL_KNOWN})
        servers = settings.authorization_servers
        if servers is None:
            servers = tuple(dict.fromkeys(iss for i in issuers for iss in _named(i.issuer)))
        document: dict[str, Any] = {"resource": resource}
        if servers:
            document["authorization_servers"] = list(servers)
        # RFC 6750 §2 methods only: a cookie is not one, so a cookie-only API lists none.
        document["bearer_methods_supported"] = ["header"] if settings.header else []
        if settings.scopes_supported:
            document["scopes_supported"] = list(settings.scopes_supported)
        if settings.resource_name is not None:
            document["resource_name"] = settings.resource_name
        if settings.resource_documentation is not None:
            document["resource_documentation"] = settings.resource_documentation
        # RFC 9728 §2: what sender constraints this resource understands.
        # The two flags are false when left out (RFC 9728 §2): only a true one is written.
        if requests and settings.header and settings.dpop != "off":
            document["dpop_signing_alg_values_supported"] = list(settings.dpop_algorithms)
            if settings.dpop == "required":
                document["dpop_bound_access_tokens_required"] = True
        if requests and settings.client_cert_header is not None:
            document["tls_client_certificate_bound_access_tokens"] = True
        #: The document: the RFC 9728 fields from the settings, nothing else.
        self.document = document
        self.body = json.dumps(document, separators=(",", ":")).encode()
        # Public and the same for everyone: any origin may read it (no credentials involved),
        # and caches may keep it for a while.
        self._headers: Headers = [
            ("content-type", "application/json"),
            ("cache-control", "public, max-age=3600"),
            ("access-control-allow-origin", "*"),
        ]

    def answer(self, method: str | None) -> tuple[int, Headers, bytes]:
        """``(status, headers, body)`` for a request to one of :attr:`paths`."""
        if method == "GET" or method == "HEAD":
            headers = [*self._headers, ("content-length", str(len(self.body)))]
            return 200, headers, self.body if method == "GET" else b""
        if method == "OPTIONS":  # a CORS preflight, or a client asking what is allowed
            return (
                204,
                [
                    ("allow", _ALLOW),
                    ("access-control-allow-origin", "*"),
                    ("access-control-allow-methods", _ALLOW),
                    ("access-control-allow-headers", "*"),
                    ("access-control-max-age", "86400"),
                ],
                b"",
            )
        return 405, [("allow", _ALLOW), ("content-length", "0")], b""


def _named(issuer: str | Sequence[str] | None) -> Sequence[str]:
    if issuer is None:
        return ()
    return (issuer,) if isinstance(issuer, str) else issuer
