"""The OpenAPI document of a FastAPI app guarded by ``RequireScopes``: the plain bearer scheme by
default; with ``openapi_login`` an OAuth 2.0 authorization-code scheme built from the issuer's
discovery document (read when the document is first built, bounded, never at startup), each
operation naming its guards' scopes, and Swagger UI set up as a public PKCE client. Then the
LocalIssuer's authorization endpoint that the browser test logs in at: its refusals, PKCE,
single-use codes and CORS, over real HTTP."""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import time
from collections.abc import Callable, Iterator
from typing import Annotated, Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI
from starlette.responses import JSONResponse
from starlette.testclient import TestClient

from jwt_middleware import (
    ConfigurationError,
    JWTMiddleware,
    Settings,
    SyncVerifier,
    VerifiedToken,
    _openapi,
)
from jwt_middleware.fastapi import RequireScopes, openapi_login
from jwt_middleware.testing import LocalIssuer
from tests.support.forking import wait_child
from tests.support.servers import uvicorn_in_thread

CLIENT = "docs"
REDIRECT = "http://127.0.0.1:9/docs/oauth2-redirect"
DOCS_ORIGIN = "http://127.0.0.1:9"


def orders_app(settings: Settings | None = None) -> FastAPI:
    """Operations guarded in each way the document must express."""
    app = FastAPI()
    if settings is not None:
        app.add_middleware(JWTMiddleware, settings=settings)
    admin = APIRouter(dependencies=[Depends(RequireScopes("admin"))])

    @app.get("/me")
    async def me(token: Annotated[VerifiedToken, Depends(RequireScopes())]) -> str:
        return token.subject or ""

    @app.get("/orders")
    async def orders(_: Annotated[VerifiedToken, Depends(RequireScopes("read", "list"))]) -> int:
        return 1

    @app.get("/either")
    async def either(
        _: Annotated[VerifiedToken, Depends(RequireScopes("read", "admin", any_of=True))],
    ) -> int:
        return 2

    @admin.post("/orders/purge")
    async def purge(
        _: Annotated[VerifiedToken, Depends(RequireScopes("write", "delete", any_of=True))],
    ) -> int:
        return 3

    @app.get("/health")
    async def health() -> str:
        return "ok"

    app.include_router(admin)
    return app


def security(document: dict[str, Any], path: str, method: str = "get") -> Any:
    return document["paths"][path][method].get("security")


@pytest.fixture
def login_issuer() -> Iterator[LocalIssuer]:
    with LocalIssuer(audience="api://orders") as issuer:
        yield issuer


def test_default_is_the_bearer_scheme() -> None:
    """Without openapi_login every guarded operation asks for the HTTP bearer scheme, no
    scopes, and the app's Swagger UI has no OAuth setup."""
    app = orders_app()
    document = app.openapi()
    assert document["components"]["securitySchemes"] == {
        "bearerAuth": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}
    }
    for path, method in [("/me", "get"), ("/orders", "get"), ("/orders/purge", "post")]:
        assert security(document, path, method) == [{"bearerAuth": []}]
    assert security(document, "/health") is None
    assert app.swagger_ui_init_oauth is None


def test_login_scheme_comes_from_discovery(login_issuer: LocalIssuer) -> None:
    """With a client id the bearer scheme is replaced by an authorization-code scheme whose
    URLs are the discovery document's, offering every scope the operations require."""
    app = orders_app()
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    schemes = app.openapi()["components"]["securitySchemes"]
    assert schemes == {
        "oauth2": {
            "type": "oauth2",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": login_issuer.authorization_url,
                    "tokenUrl": login_issuer.token_url,
                    "scopes": {"admin": "", "delete": "", "list": "", "read": "", "write": ""},
                }
            },
        }
    }


def test_each_operation_names_its_scopes(login_issuer: LocalIssuer) -> None:
    """Each operation's security requirement names the scopes its guards require: all of them
    in one requirement, one requirement per choice for any_of, and a router's guard combined
    with the route's (a requirement for each way to satisfy both)."""
    app = orders_app()
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    document = app.openapi()
    assert security(document, "/me") == [{"oauth2": []}]
    assert security(document, "/orders") == [{"oauth2": ["read", "list"]}]
    assert security(document, "/either") == [{"oauth2": ["read"]}, {"oauth2": ["admin"]}]
    assert sorted(security(document, "/orders/purge", "post"), key=str) == [
        {"oauth2": ["admin", "delete"]},
        {"oauth2": ["admin", "write"]},
    ]
    assert security(document, "/health") is None


def test_discovery_is_read_once_and_not_at_startup(login_issuer: LocalIssuer) -> None:
    """The app starts and serves guarded routes without reaching the issuer for the login;
    the discovery document is read when the OpenAPI document is first asked for, then kept."""
    settings = Settings(
        issuer=login_issuer.issuer,
        audience=login_issuer.audience,
        jwks_url=login_issuer.jwks_url,
        public_paths={"/openapi.json"},
    )
    app = orders_app(settings)
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    token = login_issuer.mint(scope="read list")
    with TestClient(app) as client:
        answer = client.get("/orders", headers={"authorization": f"Bearer {token}"})
        assert answer.status_code == 200
        assert login_issuer.discovery_requests == 0
        first = client.get("/openapi.json").json()
        second = client.get("/openapi.json").json()
    assert login_issuer.discovery_requests == 1
    assert first == second
    assert "oauth2" in first["components"]["securitySchemes"]


def test_an_unreachable_issuer_fails_the_document_clearly_then_recovers(
    login_issuer: LocalIssuer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the issuer down, building the document raises a ConfigurationError naming the
    discovery URL; for RETRY_AFTER_FAILURE seconds that error is answered again without a
    fetch (each one would block the event loop), and the first build after that succeeds."""
    now = [1000.0]
    monkeypatch.setattr(_openapi, "clock", lambda: now[0])
    app = orders_app()
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    login_issuer.set_fault("down")
    with pytest.raises(ConfigurationError, match="openapi_login could not read") as caught:
        app.openapi()
    assert login_issuer.discovery_url in str(caught.value)
    login_issuer.set_fault(None)
    served = login_issuer.discovery_requests
    now[0] += _openapi.RETRY_AFTER_FAILURE - 1
    with pytest.raises(ConfigurationError, match="not fetched again"):
        app.openapi()
    assert login_issuer.discovery_requests == served
    now[0] += 1
    assert "oauth2" in app.openapi()["components"]["securitySchemes"]
    assert login_issuer.discovery_requests == served + 1


def test_a_slow_issuer_never_stalls_the_app(login_issuer: LocalIssuer) -> None:
    """Under uvicorn, with discovery taking 3 s: the first /openapi.json waits FIRST_WAIT at
    most and is a 503 with Retry-After (the fetch goes on in a thread); asking again meanwhile
    costs no wait and no second fetch; a request to a guarded route sent during all of this is
    answered at once; once the fetch ends, the document has the login."""
    settings = Settings(
        issuer=login_issuer.issuer,
        audience=login_issuer.audience,
        jwks_url=login_issuer.jwks_url,
        public_paths={"/openapi.json"},
        warm_up=True,
    )
    app = orders_app(settings)
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    token = {"authorization": f"Bearer {login_issuer.mint(scope='read list')}"}
    login_issuer.set_fault("slow", paths=("discovery",), delay=3.0)
    with uvicorn_in_thread(app) as port, httpx.Client(base_url=f"http://127.0.0.1:{port}") as c:
        assert c.get("/orders", headers=token).status_code == 200
        started = time.monotonic()
        first = c.get("/openapi.json")
        assert time.monotonic() - started < _openapi.FIRST_WAIT + 0.5
        assert first.status_code == 503, first.text
        assert first.headers["retry-after"] == str(int(_openapi.READING_RETRY_AFTER))
        assert "still reading the discovery document" in first.json()["detail"]
        started = time.monotonic()
        assert c.get("/openapi.json").status_code == 503
        assert c.get("/orders", headers=token).status_code == 200
        assert time.monotonic() - started < 0.5
        deadline = time.monotonic() + 10
        while (answer := c.get("/openapi.json")).status_code == 503:
            assert time.monotonic() < deadline
            time.sleep(0.1)
    assert "oauth2" in answer.json()["components"]["securitySchemes"]
    assert login_issuer.discovery_requests == 1  # one fetch, however often it was asked


def test_a_read_that_breaks_unexpectedly_is_a_failure_not_a_read_forever(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A discovery read that raises something unforeseen ends like any failed read: the build
    says what, the next one within RETRY_AFTER_FAILURE says so without reading, and the one
    after that reads again (it would otherwise wait on a read that never ends)."""
    now = [1000.0]
    monkeypatch.setattr(_openapi, "clock", lambda: now[0])
    reads: list[str] = []

    def fetch(url: str) -> Any:
        reads.append(url)
        raise ValueError("unforeseen")

    login = _openapi.Login(
        issuer="https://login.example.com/",
        authorization_url=None,
        token_url=None,
        scheme_name="oauth2",
        descriptions={},
        fetch=fetch,
    )
    with pytest.raises(ConfigurationError, match="ValueError"):
        login.endpoints()
    with pytest.raises(ConfigurationError, match="not fetched again"):
        login.endpoints()
    now[0] += _openapi.RETRY_AFTER_FAILURE
    with pytest.raises(ConfigurationError, match="ValueError"):
        login.endpoints()
    assert len(reads) == 2


def test_an_apps_value_error_handler_does_not_answer_for_the_login(
    login_issuer: LocalIssuer,
) -> None:
    """An app with a handler for ValueError (which a ConfigurationError is): /openapi.json with
    the issuer down is still the login's 503 with Retry-After, not that handler's answer."""
    app = orders_app()

    @app.exception_handler(ValueError)
    async def bad_input(request: Any, exc: ValueError) -> JSONResponse:
        return JSONResponse({"error": "bad input"}, status_code=400)

    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    login_issuer.set_fault("down")
    with TestClient(app) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 503, answer.text
    assert answer.headers["retry-after"] == str(int(_openapi.RETRY_AFTER_FAILURE))


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_child_forked_during_a_read_reads_for_itself(login_issuer: LocalIssuer) -> None:
    """Forked while the parent's discovery read is in flight (gunicorn --preload): the child,
    which lacks the reading thread, starts its own read instead of "still reading" for good."""
    app = orders_app()
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    login_issuer.set_fault("slow", paths=("discovery",), delay=1.5)
    with pytest.raises(ConfigurationError, match="still reading"):
        app.openapi()
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child
        code = 1
        try:
            deadline = time.monotonic() + 8
            while time.monotonic() < deadline:
                try:
                    schemes = app.openapi()["components"]["securitySchemes"]
                except ConfigurationError:
                    time.sleep(0.1)
                    continue
                code = 0 if "oauth2" in schemes else 2
                break
        finally:
            os._exit(code)
    assert wait_child(pid) == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"authorization_endpoint": None}, "has no authorization_endpoint"),
        ({"token_endpoint": None}, "has no token_endpoint"),
        ({"issuer": "https://other.example"}, "names another issuer"),
        ({"code_challenge_methods_supported": ["plain"]}, "does not support PKCE with S256"),
        ({"authorization_endpoint": "http://idp.example/authorize"}, "must be an https:// URL"),
    ],
)
def test_discovery_that_cannot_log_in_is_refused(
    login_issuer: LocalIssuer, change: dict[str, Any], message: str
) -> None:
    """A discovery document lacking an endpoint, naming another issuer, refusing S256, or
    pointing at a plain-http endpoint elsewhere than loopback is a ConfigurationError."""
    body = {k: v for k, v in {**login_issuer.discovery(), **change}.items() if v is not None}
    login_issuer.set_fault("wrong_shape", paths=("discovery",), body=body)
    app = orders_app()
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    with pytest.raises(ConfigurationError, match=message):
        app.openapi()


def test_a_huge_discovery_document_is_refused(login_issuer: LocalIssuer) -> None:
    """The discovery fetch has the key fetches' size limit: a 2 MB document is refused."""
    login_issuer.set_fault("huge", paths=("discovery",), size=2 << 20)
    app = orders_app()
    openapi_login(app, client_id=CLIENT, issuer=login_issuer.issuer)
    with pytest.raises(ConfigurationError, match="openapi_login could not read"):
        app.openapi()


def test_explicit_endpoints_need_no_discovery(login_issuer: LocalIssuer) -> None:
    """Given authorization_url and token_url, nothing is fetched and the scheme uses them."""
    app = orders_app()
    openapi_login(
        app,
        client_id=CLIENT,
        authorization_url="https://idp.example/authorize",
        token_url="https://idp.example/token",
        scheme_name="idp",
    )
    document = app.openapi()
    flow = document["components"]["securitySchemes"]["idp"]["flows"]["authorizationCode"]
    assert flow["authorizationUrl"] == "https://idp.example/authorize"
    assert flow["tokenUrl"] == "https://idp.example/token"
    assert security(document, "/orders") == [{"idp": ["read", "list"]}]
    assert login_issuer.discovery_requests == 0


@pytest.mark.parametrize("client_id", ["", "   ", "docs\n", "dö", 42, None])
def test_a_bad_client_id_is_refused(client_id: Any) -> None:
    """A client id must be printable ASCII, not empty (RFC 6749 §A.1): refused at setup."""
    with pytest.raises(ConfigurationError, match="client_id"):
        openapi_login(orders_app(), client_id=client_id, issuer="https://idp.example")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({}, "give issuer="),
        (
            {"issuer": "https://idp.example", "authorization_url": "https://idp.example/a"},
            "give both",
        ),
        (
            {
                "issuer": "https://idp.example",
                "authorization_url": "https://idp.example/a",
                "token_url": "https://idp.example/t",
            },
            "not both",
        ),
        ({"issuer": "http://idp.example"}, "must be an https:// URL"),
        ({"issuer": "https://idp.example", "scheme_name": "bearerAuth"}, "scheme_name"),
        ({"issuer": "https://idp.example", "scopes": ["two words"]}, "without spaces"),
    ],
)
def test_inconsistent_options_are_refused(options: dict[str, Any], message: str) -> None:
    """Issuer and explicit endpoints exclude each other, both endpoints go together, URLs are
    https (http on loopback), the scheme keeps its own name, and scopes are scope names."""
    with pytest.raises(ConfigurationError, match=message):
        openapi_login(orders_app(), client_id=CLIENT, **options)


def test_swagger_ui_is_a_public_pkce_client() -> None:
    """Swagger UI's initOAuth gets the client id, PKCE and the scopes ticked beforehand (and
    the extra authorization parameters); a client secret set before is dropped, and FastAPI's
    own docs page carries the setup."""
    app = FastAPI(swagger_ui_init_oauth={"clientSecret": "s3cret", "appName": "Orders"})
    openapi_login(
        app,
        client_id=CLIENT,
        issuer="https://idp.example",
        scopes=["read"],
        authorize_params={"audience": "api://orders"},
    )
    assert app.swagger_ui_init_oauth == {
        "appName": "Orders",
        "clientId": CLIENT,
        "usePkceWithAuthorizationCodeGrant": True,
        "scopes": ["read"],
        "additionalQueryStringParams": {"audience": "api://orders"},
    }
    page = TestClient(app).get("/docs").text
    assert '"usePkceWithAuthorizationCodeGrant": true' in page
    assert "s3cret" not in page


def test_descriptions_label_and_add_scopes() -> None:
    """scope_descriptions label the scopes offered and add ones no route requires."""
    app = orders_app()
    openapi_login(
        app,
        client_id=CLIENT,
        authorization_url="https://idp.example/authorize",
        token_url="https://idp.example/token",
        scope_descriptions={"read": "Read orders", "openid": "Sign in"},
    )
    scopes = app.openapi()["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"][
        "scopes"
    ]
    assert scopes["read"] == "Read orders"
    assert scopes["openid"] == "Sign in"
    assert scopes["write"] == ""


def test_routes_added_later_are_documented() -> None:
    """The document follows the app: a route added after the first build is in the next one,
    with its scopes."""
    app = orders_app()
    openapi_login(
        app,
        client_id=CLIENT,
        authorization_url="https://idp.example/authorize",
        token_url="https://idp.example/token",
    )
    assert "/late" not in app.openapi()["paths"]

    @app.get("/late")
    async def late(_: Annotated[VerifiedToken, Depends(RequireScopes("late"))]) -> int:
        return 4

    document = app.openapi()
    assert security(document, "/late") == [{"oauth2": ["late"]}]
    assert (
        "late"
        in document["components"]["securitySchemes"]["oauth2"]["flows"]["authorizationCode"][
            "scopes"
        ]
    )


# -- the LocalIssuer's authorization endpoint --------------------------------------------------


def pkce() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    digest = hashlib.sha256(verifier.encode()).digest()
    return verifier, base64.urlsafe_b64encode(digest).rstrip(b"=").decode()


@pytest.fixture
def authorize(login_issuer: LocalIssuer) -> Iterator[Callable[..., httpx.Response]]:
    """``authorize(challenge, **overrides)``: the login page's button pressed (POST), for the
    registered client unless overridden."""
    login_issuer.register_client(CLIENT, [REDIRECT])
    with httpx.Client(timeout=10) as http:

        def press(challenge: str, **overrides: str) -> httpx.Response:
            form = {
                "response_type": "code",
                "client_id": CLIENT,
                "redirect_uri": REDIRECT,
                "scope": "orders:read",
                "state": "xyz",
                "code_challenge": challenge,
                "code_challenge_method": "S256",
                "subject": "alice",
                **overrides,
            }
            return http.post(login_issuer.authorization_url, data=form)

        yield press


def code_of(answer: httpx.Response) -> str:
    assert answer.status_code == 303
    location = answer.headers["location"]
    assert location.startswith(REDIRECT + "?")
    query = parse_qs(urlsplit(location).query)
    assert query["state"] == ["xyz"]
    return query["code"][0]


def redeem(issuer: LocalIssuer, code: str, verifier: str, **overrides: str) -> httpx.Response:
    form = {
        "grant_type": "authorization_code",
        "code": code,
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "code_verifier": verifier,
        **overrides,
    }
    return httpx.post(issuer.token_url, data=form, headers={"origin": DOCS_ORIGIN}, timeout=10)


def test_discovery_names_the_authorization_endpoint(login_issuer: LocalIssuer) -> None:
    """The LocalIssuer's discovery names its authorization endpoint, the token endpoint and
    S256 PKCE: what openapi_login reads."""
    document = httpx.get(login_issuer.discovery_url, timeout=10).json()
    assert document["authorization_endpoint"] == login_issuer.authorization_url
    assert document["token_endpoint"] == login_issuer.token_url
    assert document["code_challenge_methods_supported"] == ["S256"]


def test_login_page_for_a_valid_request(
    login_issuer: LocalIssuer, authorize: Callable[..., httpx.Response]
) -> None:
    """A valid authorization request gets the login page, carrying the request (escaped)."""
    _, challenge = pkce()
    query = {
        "response_type": "code",
        "client_id": CLIENT,
        "redirect_uri": REDIRECT,
        "state": '"><script>',
        "code_challenge": challenge,
        "code_challenge_method": "S256",
    }
    answer = httpx.get(login_issuer.authorization_url, params=query, timeout=10)
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert 'id="login-button"' in answer.text
    assert challenge in answer.text
    assert "<script>" not in answer.text


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"client_id": "stranger"}, "unauthorized_client"),
        ({"redirect_uri": "http://127.0.0.1:9/evil"}, "invalid_request"),
        ({"redirect_uri": REDIRECT + "/"}, "invalid_request"),
    ],
)
def test_unknown_client_or_redirect_is_never_redirected_to(
    authorize: Callable[..., httpx.Response], overrides: dict[str, str], error: str
) -> None:
    """An unregistered client, or a redirect URI not exactly a registered one, is told to
    the user (400 page), never sent a code or an error by redirect."""
    _, challenge = pkce()
    answer = authorize(challenge, **overrides)
    assert answer.status_code == 400
    assert "location" not in answer.headers
    assert error in answer.text


@pytest.mark.parametrize(
    ("overrides", "error"),
    [
        ({"response_type": "token"}, "unsupported_response_type"),
        ({"code_challenge_method": "plain"}, "invalid_request"),
        ({"code_challenge": "short"}, "invalid_request"),
        ({"state": ""}, "invalid_request"),
    ],
)
def test_bad_requests_are_sent_back_as_errors(
    authorize: Callable[..., httpx.Response], overrides: dict[str, str], error: str
) -> None:
    """For a registered redirect URI, a request without code, S256 PKCE or state is sent back
    with the error (RFC 6749 §4.1.2.1), never a code."""
    _, challenge = pkce()
    answer = authorize(challenge, **overrides)
    assert answer.status_code == 303
    query = parse_qs(urlsplit(answer.headers["location"]).query)
    assert query["error"] == [error]
    assert "code" not in query


def test_code_grant_mints_the_requested_token(
    login_issuer: LocalIssuer, authorize: Callable[..., httpx.Response]
) -> None:
    """The code and its verifier buy a token for the subject logged in, with the requested
    scope, the audience (resource when asked for) and the client id; CORS lets the docs
    origin read the answer."""
    verifier, challenge = pkce()
    answer = redeem(login_issuer, code_of(authorize(challenge, resource="api://x")), verifier)
    assert answer.status_code == 200
    assert answer.headers["access-control-allow-origin"] == DOCS_ORIGIN
    assert answer.headers["cache-control"] == "no-store"
    body = answer.json()
    assert body["scope"] == "orders:read"
    settings = Settings(
        issuer=login_issuer.issuer, audience="api://x", jwks_url=login_issuer.jwks_url
    )
    checker = SyncVerifier(settings)
    try:
        token = checker.verify(body["access_token"])
    finally:
        checker.close()
    assert token.subject == "alice"
    assert set(token.scopes) == {"orders:read"}
    assert token.claims["client_id"] == CLIENT


@pytest.mark.parametrize(
    "overrides",
    [
        {"code_verifier": "x" * 43},
        {"code_verifier": "short"},
        {"client_id": "other"},
        {"redirect_uri": "http://127.0.0.1:9/other"},
        {"grant_type": "client_credentials"},
    ],
)
def test_a_code_needs_its_verifier_client_and_redirect(
    login_issuer: LocalIssuer, authorize: Callable[..., httpx.Response], overrides: dict[str, str]
) -> None:
    """A wrong PKCE verifier, client id, redirect URI or grant type buys no token (400)."""
    verifier, challenge = pkce()
    answer = redeem(login_issuer, code_of(authorize(challenge)), verifier, **overrides)
    assert answer.status_code == 400
    assert answer.json()["error"] in {"invalid_grant", "unsupported_grant_type"}


def test_a_code_is_single_use(
    login_issuer: LocalIssuer, authorize: Callable[..., httpx.Response]
) -> None:
    """A code is redeemed once: the second try with the same verifier is invalid_grant, and a
    failed try burns it too."""
    verifier, challenge = pkce()
    code = code_of(authorize(challenge))
    assert redeem(login_issuer, code, verifier).status_code == 200
    assert redeem(login_issuer, code, verifier).json() == {"error": "invalid_grant"}
    other = code_of(authorize(challenge))
    assert redeem(login_issuer, other, "y" * 43).status_code == 400
    assert redeem(login_issuer, other, verifier).json() == {"error": "invalid_grant"}


def test_a_code_is_short_lived(
    login_issuer: LocalIssuer,
    authorize: Callable[..., httpx.Response],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A code older than code_lifetime buys no token."""
    monkeypatch.setattr(login_issuer, "code_lifetime", 0.0)
    verifier, challenge = pkce()
    answer = redeem(login_issuer, code_of(authorize(challenge)), verifier)
    assert answer.json() == {"error": "invalid_grant"}


def test_token_endpoint_preflight(
    login_issuer: LocalIssuer, authorize: Callable[..., httpx.Response]
) -> None:
    """The token endpoint's CORS preflight admits the registered redirect URIs' origin (POST,
    the headers Swagger sends) and no other origin."""
    request = {
        "access-control-request-method": "POST",
        "access-control-request-headers": "content-type, x-requested-with, x-evil",
    }
    allowed = httpx.options(
        login_issuer.token_url, headers={"origin": DOCS_ORIGIN, **request}, timeout=10
    )
    assert allowed.status_code == 204
    assert allowed.headers["access-control-allow-origin"] == DOCS_ORIGIN
    assert allowed.headers["access-control-allow-methods"] == "POST"
    assert allowed.headers["access-control-allow-headers"] == "content-type, x-requested-with"
    other = httpx.options(
        login_issuer.token_url, headers={"origin": "http://evil.example", **request}, timeout=10
    )
    assert "access-control-allow-origin" not in other.headers


def test_get_token_endpoint_still_mints(login_issuer: LocalIssuer) -> None:
    """The demo GET /token keeps working beside the code grant."""
    answer = httpx.get(login_issuer.token_url, params={"scope": "a"}, timeout=10)
    assert answer.status_code == 200
    assert answer.json()["token_type"] == "Bearer"
