"""What a browser-based OAuth client (an MCP client in a web page, a single-page app) can read
across origins, in a real headless Chromium: with ``cors_origins`` the middleware's own refusals
expose their ``WWW-Authenticate`` challenge to the page, on both adapters, and the RFC 9728
metadata document is readable from any origin. Without ``cors_origins`` the browser hides the
refusal from the page, which is the failure these tests guard against."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from jwt_middleware import JWTMiddleware, Settings
from jwt_middleware._wsgi import JWTWSGIMiddleware, get_token
from jwt_middleware.testing import LocalIssuer
from tests.support.challenges import with_dpop
from tests.support.servers import uvicorn_in_thread, werkzeug_in_thread

RESOURCE = "http://127.0.0.1/api"
METADATA = "http://127.0.0.1/.well-known/oauth-protected-resource/api"

# Runs in the page: fetch the URL (with a bearer token when given) and report what the page
# may see. A CORS failure is a TypeError, with nothing of the answer visible.
FETCH = """async ([url, token]) => {
  const headers = token ? {authorization: `Bearer ${token}`} : {};
  try {
    const r = await fetch(url, {headers});
    return {status: r.status, challenge: r.headers.get("www-authenticate"), body: await r.text()};
  } catch (e) {
    return {error: e.name};
  }
}"""


async def _page(request: Request) -> HTMLResponse:
    return HTMLResponse("<!doctype html><title>client</title>")


@pytest.fixture
def page_origin() -> Iterator[str]:
    """A page on its own origin (another port of 127.0.0.1), as a web client's would be."""
    with uvicorn_in_thread(Starlette(routes=[Route("/", _page)])) as port:
        yield f"http://127.0.0.1:{port}"


async def _me(request: Request) -> JSONResponse:
    return JSONResponse({"sub": request.user.identity})


def _wsgi_me(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
    token = get_token(environ)
    start_response("200 OK", [("content-type", "application/json")])
    return [b'{"sub": "%s"}' % (token.subject or "").encode() if token else b"{}"]


@pytest.fixture
def api(adapter: str, issuer: LocalIssuer) -> Iterator[Callable[..., str]]:
    """``api(**settings) -> base URL``: /me behind the adapter under test, under a real server."""
    with contextlib.ExitStack() as stack:

        def start(**options: Any) -> str:
            settings = Settings(
                issuer=issuer.issuer, jwks_url=issuer.jwks_url, resource=RESOURCE, **options
            )
            if adapter == "asgi":
                app: Any = Starlette(routes=[Route("/me", _me)])
                app.add_middleware(JWTMiddleware, settings=settings)
                port = stack.enter_context(uvicorn_in_thread(app))
            else:
                middleware = JWTWSGIMiddleware(_wsgi_me, settings=settings)
                stack.callback(middleware.close)
                port = stack.enter_context(werkzeug_in_thread(middleware))
            return f"http://127.0.0.1:{port}"

        yield start


def _fetch(browser: Any, origin: str, url: str, token: str | None = None) -> dict[str, Any]:
    context = browser.new_context()
    try:
        page = context.new_page()
        page.goto(origin + "/")
        result: dict[str, Any] = page.evaluate(FETCH, [url, token])
        return result
    finally:
        context.close()


def test_a_cross_origin_page_reads_the_challenge_of_a_refusal(
    browser: Any, page_origin: str, api: Callable[..., str], issuer: LocalIssuer
) -> None:
    """With the page's origin in ``cors_origins``, the page sees 401 and the whole challenge."""
    base = api(cors_origins=[page_origin], challenge_scopes=["files:read"])
    missing = _fetch(browser, page_origin, base + "/me")
    assert missing["status"] == 401
    assert missing["challenge"] == with_dpop(
        f'Bearer realm="api", scope="files:read", resource_metadata="{METADATA}"'
    )
    wrong = _fetch(browser, page_origin, base + "/me", issuer.mint(audience="api://other"))
    assert wrong["status"] == 401
    assert 'error="invalid_token"' in wrong["challenge"]
    good = _fetch(browser, page_origin, base + "/me", issuer.mint(audience=RESOURCE))
    assert good["status"] == 200


def test_without_cors_origins_the_browser_hides_the_refusal(
    browser: Any, page_origin: str, api: Callable[..., str]
) -> None:
    """The control: an API that does not list the page's origin leaves the page a TypeError."""
    base = api()
    assert _fetch(browser, page_origin, base + "/me") == {"error": "TypeError"}


def test_any_origin_reads_the_metadata_document(
    browser: Any, page_origin: str, api: Callable[..., str]
) -> None:
    """The metadata document is public: a page of an origin the API does not list can read it."""
    base = api()
    answer = _fetch(browser, page_origin, base + "/.well-known/oauth-protected-resource/api")
    assert answer["status"] == 200
    assert '"resource":"http://127.0.0.1/api"' in answer["body"]
