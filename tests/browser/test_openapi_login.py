"""The OpenAPI login end to end, in a real headless Chromium: a FastAPI app under uvicorn whose
routes are guarded by ``RequireScopes`` and set up with ``openapi_login``, its Swagger UI served
from local assets (the fastapi-offline package's copy; no CDN is reachable), and a LocalIssuer
with an authorization endpoint. Authorize opens the issuer's login page, its button sends the
browser back with a code, Swagger redeems it with PKCE, and "Try it out" sends the token: 200
where the login granted the scope, 403 where it did not."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import pytest
from fastapi import Depends, FastAPI
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles

from jwt_middleware import JWTMiddleware, Settings, VerifiedToken
from jwt_middleware.fastapi import RequireScopes, openapi_login
from jwt_middleware.testing import LocalIssuer
from tests.support.servers import uvicorn_in_thread

CLIENT_ID = "orders-docs"
UI_TIMEOUT_MS = 15_000


def swagger_assets() -> Path:
    try:
        import fastapi_offline
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail("fastapi-offline (Swagger UI's assets) is not installed")
    return Path(fastapi_offline.__file__).parent / "static"


def docs_app(issuer: LocalIssuer) -> FastAPI:
    """Orders behind RequireScopes, its docs page on local assets, logging in at ``issuer``."""
    app = FastAPI(title="Orders", docs_url=None, redoc_url=None)
    app.mount("/docs/static", StaticFiles(directory=swagger_assets()), name="swagger")
    app.add_middleware(
        JWTMiddleware,
        settings=Settings(
            issuer=issuer.issuer,
            audience=issuer.audience,
            jwks_url=issuer.jwks_url,
            public_paths={"/docs*", "/openapi.json"},
        ),
    )

    @app.get("/docs", include_in_schema=False)
    async def docs() -> HTMLResponse:
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="Orders",
            swagger_js_url="/docs/static/swagger-ui-bundle.js",
            swagger_css_url="/docs/static/swagger-ui.css",
            oauth2_redirect_url="/docs/oauth2-redirect",
            init_oauth=app.swagger_ui_init_oauth,
        )

    @app.get("/docs/oauth2-redirect", include_in_schema=False)
    async def redirect() -> HTMLResponse:
        return get_swagger_ui_oauth2_redirect_html()

    @app.get("/orders")
    async def orders(
        token: Annotated[VerifiedToken, Depends(RequireScopes("orders:read"))],
    ) -> dict[str, Any]:
        return {"sub": token.subject, "scopes": sorted(token.scopes)}

    @app.delete("/orders")
    async def purge(
        token: Annotated[VerifiedToken, Depends(RequireScopes("orders:admin"))],
    ) -> dict[str, Any]:
        return {"purged": True}

    openapi_login(app, client_id=CLIENT_ID, issuer=issuer.issuer, scopes=["orders:read"])
    return app


@pytest.fixture(scope="module")
def login_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(audience="api://orders") as issuer:
        yield issuer


@pytest.fixture(scope="module")
def docs_url(login_issuer: LocalIssuer) -> Iterator[str]:
    with uvicorn_in_thread(docs_app(login_issuer)) as port:
        base = f"http://127.0.0.1:{port}"
        login_issuer.register_client(CLIENT_ID, [base + "/docs/oauth2-redirect"])
        yield base


@pytest.fixture(scope="module")
def logged_in(browser: Any, docs_url: str) -> Iterator[tuple[Any, dict[str, list[str]]]]:
    """A docs page after Authorize and the issuer's login, with the authorization request's
    query (one login for the module: each test then tries an operation)."""
    context = browser.new_context(base_url=docs_url)
    context.set_default_timeout(UI_TIMEOUT_MS)
    try:
        page = context.new_page()
        page.goto("/docs")
        page.click("button.authorize")
        dialog = page.locator(".modal-ux")
        with page.expect_popup() as popup_info:
            dialog.locator("button.modal-btn.authorize").click()
        popup = popup_info.value
        popup.wait_for_selector("#login-button")
        query = parse_qs(urlsplit(popup.url).query)
        popup.fill("#login-subject", "alice")
        with page.expect_response(lambda r: r.url.endswith("/token")) as token_info:
            popup.click("#login-button")
        assert token_info.value.status == 200
        dialog.get_by_role("button", name="Remove authorization").wait_for()  # "Logout"
        dialog.locator("button.btn-done").click()
        yield page, query
    finally:
        context.close()


def try_it_out(page: Any, operation: str) -> tuple[int, Any, str | None]:
    """Run one operation from the docs page: ``(status, JSON body, Authorization sent)``."""
    block = page.locator(f"#{operation}")
    block.locator(".opblock-summary").click()
    block.locator("button.try-out__btn").click()
    with page.expect_response(lambda r: "/orders" in r.url) as answer_info:
        block.locator("button.execute").click()
    answer = answer_info.value
    shown = block.locator(".live-responses-table tr.response .response-col_status").inner_text()
    status = int(shown.split()[0])  # "403" may be followed by "Undocumented"
    assert status == answer.status  # what the page shows is what the server said
    return answer.status, answer.json(), answer.request.headers.get("authorization")


def claims(token: str) -> dict[str, Any]:
    payload = token.split(".")[1]
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(payload + "=" * 3))
    return decoded


def test_authorize_asks_the_issuer_for_a_pkce_code(
    logged_in: tuple[Any, dict[str, list[str]]],
) -> None:
    """Authorize sends the browser to the issuer's authorization endpoint for a code, as the
    public client, with an S256 challenge and the scopes ticked beforehand (initOAuth)."""
    _, query = logged_in
    assert query["response_type"] == ["code"]
    assert query["client_id"] == [CLIENT_ID]
    assert query["code_challenge_method"] == ["S256"]
    assert len(query["code_challenge"][0]) == 43
    assert query["scope"] == ["orders:read"]
    assert query["redirect_uri"][0].endswith("/docs/oauth2-redirect")
    assert "client_secret" not in query


def test_try_it_out_sends_the_login_token(
    logged_in: tuple[Any, dict[str, list[str]]], login_issuer: LocalIssuer
) -> None:
    """After the login, "Try it out" on an operation whose scope was granted answers 200 with
    the logged-in user's claims: Swagger sent the token the issuer minted for the code."""
    page, _ = logged_in
    status, body, authorization = try_it_out(page, "operations-default-orders_orders_get")
    assert status == 200
    assert body == {"sub": "alice", "scopes": ["orders:read"]}
    assert authorization is not None and authorization.startswith("Bearer ")
    token = claims(authorization.removeprefix("Bearer "))
    assert token["iss"] == login_issuer.issuer
    assert token["aud"] == "api://orders"
    assert token["client_id"] == CLIENT_ID


def test_an_operation_needing_an_ungranted_scope_is_forbidden(
    logged_in: tuple[Any, dict[str, list[str]]],
) -> None:
    """An operation whose scope the login did not grant answers 403 insufficient_scope, though
    Swagger sends the same token: the scope check is the server's."""
    page, _ = logged_in
    status, body, authorization = try_it_out(page, "operations-default-purge_orders_delete")
    assert status == 403
    assert body["detail"]["error"] == "insufficient_scope"
    assert authorization is not None and authorization.startswith("Bearer ")


def test_docs_page_holds_no_secret(docs_url: str, browser: Any) -> None:
    """The docs page configures a public client with PKCE: the client id, no secret."""
    context = browser.new_context(base_url=docs_url)
    try:
        page = context.new_page()
        page.goto("/docs")
        html = page.content()
    finally:
        context.close()
    assert f'"clientId": "{CLIENT_ID}"' in html
    assert '"usePkceWithAuthorizationCodeGrant": true' in html
    assert "clientSecret" not in html
