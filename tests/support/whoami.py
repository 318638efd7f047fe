"""A ``/whoami`` app (the token's ``sub``) on either adapter, for tests that only need to see who
got in: the revocation tests of both layers share it."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import Settings
from jwt_middleware._wsgi import get_token
from tests.support.servers import Answer, InProcess, bearer


def claims_of(token: str) -> dict[str, Any]:
    """A token's payload, decoded without any check (to read what a test minted)."""
    payload = token.split(".")[1]
    return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))


async def whoami(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity})


def wsgi_whoami(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    token = get_token(environ)
    body = json.dumps({"sub": token.subject if token is not None else None}).encode()
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body]


class HTTP(InProcess):
    """``/whoami`` behind JWTMiddleware (ASGI, TestClient) or JWTWSGIMiddleware (werkzeug)."""

    def __init__(self, kind: str, settings: Settings) -> None:
        super().__init__(kind, settings, routes=[Route("/whoami", whoami)], wsgi_app=wsgi_whoami)

    def get(self, token: str, path: str = "/whoami") -> Answer:
        return self.request("GET", path, bearer(token))


def assert_revocation_503(answer: Answer) -> None:
    """The fail-closed answer when the revocation store cannot say: 503, Retry-After, no
    challenge (the credentials may be fine)."""
    assert answer.status == 503
    assert answer.headers["content-type"] == "application/json"
    assert int(answer.headers["retry-after"]) >= 1
    assert "www-authenticate" not in answer.headers
    assert answer.json()["error"] == "temporarily_unavailable"
