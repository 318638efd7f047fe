"""A multi-realm identity provider on 127.0.0.1, Keycloak-shaped: each realm is an issuer
``{url}/realms/{name}`` with its own keys, discovery document and JWKS, over real HTTP. It counts
the requests each path receives, so tests see which tenant lookups reached the network."""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from jwt_middleware.testing import SigningKey, generate_key


class Realms:
    """``Realms("a", "b")``: a provider with realms a and b; ``mint(realm, ...)`` signs a token
    of that realm. A path of an unknown realm answers 404 (and is counted)."""

    def __init__(self, *names: str) -> None:
        self.keys: dict[str, SigningKey] = {n: generate_key("ES256", kid=f"{n}-1") for n in names}
        self.hits: Counter[str] = Counter()
        self._lock = threading.Lock()
        realms = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, format: str, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                realms._serve(self)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def issuer(self, realm: str) -> str:
        return f"{self.url}/realms/{realm}"

    def add(self, realm: str) -> None:
        with self._lock:
            self.keys[realm] = generate_key("ES256", kid=f"{realm}-1")

    def mint(self, realm: str, *, key: SigningKey | None = None, **claims: Any) -> str:
        now = int(time.time())
        body = {"iss": self.issuer(realm), "sub": "user-1", "aud": "api", "iat": now}
        body["exp"] = now + 300
        body.update(claims)
        return (key or self.keys[realm]).sign(body)

    def requests(self, prefix: str = "") -> int:
        """Requests so far whose path starts with ``prefix``."""
        with self._lock:
            return sum(n for path, n in self.hits.items() if path.startswith(prefix))

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        path = handler.path.split("?", 1)[0]
        with self._lock:
            self.hits[path] += 1
        parts = path.split("/")  # "", "realms", name, rest...
        key = None
        if len(parts) >= 4 and parts[1] == "realms":
            with self._lock:
                key = self.keys.get(parts[2])
        rest = "/".join(parts[3:])
        if key is None:
            body, status = b'{"error":"realm not found"}', 404
        elif rest == ".well-known/openid-configuration":
            issuer = self.issuer(parts[2])
            document = {"issuer": issuer, "jwks_uri": issuer + "/protocol/openid-connect/certs"}
            body, status = json.dumps(document).encode(), 200
        elif rest == "protocol/openid-connect/certs":
            body, status = json.dumps({"keys": [key.public_jwk()]}).encode(), 200
        else:
            body, status = b'{"error":"not found"}', 404
        handler.send_response(status)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)


def realms(*names: str) -> Iterator[Realms]:
    """A generator for a pytest fixture: the provider, closed at teardown."""
    provider = Realms(*names)
    try:
        yield provider
    finally:
        provider.close()
