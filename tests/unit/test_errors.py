"""The error tree, the one refusal renderer and the one scope-name check (jwt_middleware._errors).

Every adapter's answer to the same refusal is compared header by header, in wire order, with
the RFC 6750 answer written out here: the JWTMiddleware answering an AuthError its app raised,
the Starlette decorators' response, the WSGI middleware's refusal, FastAPI's AuthHTTPException
and Flask's AuthHTTPException.
"""

from __future__ import annotations

import enum
import importlib
import inspect
import json
import logging
import pkgutil
from collections.abc import Callable
from typing import Any, NoReturn

import pytest
from fastapi import FastAPI, HTTPException
from flask import Flask
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.responses import Response as StarletteResponse
from starlette.routing import Route
from starlette.testclient import TestClient
from werkzeug.exceptions import HTTPException as WerkzeugHTTPException
from werkzeug.test import Client

import jwt_middleware
from jwt_middleware import (
    AuthError,
    ConfigurationError,
    CSRFRejected,
    InsufficientScope,
    InvalidRequest,
    InvalidToken,
    JWTMiddleware,
    JWTMiddlewareError,
    Key,
    KeysUnavailable,
    MissingToken,
    Reason,
    RevocationStoreError,
    Settings,
    UnusableKey,
    requires_scopes,
    revocation,
)
from jwt_middleware import fastapi as jwt_fastapi
from jwt_middleware import flask as jwt_flask
from jwt_middleware._authz import _response, check_scopes
from jwt_middleware._errors import Challenge, NotInstalled, UsageError, redact, render
from jwt_middleware._gate import SCOPE_GATE
from jwt_middleware._wsgi import refusal
from jwt_middleware.cookies import set_token_cookie
from jwt_middleware.testing import LocalIssuer, generate_key
from tests.support.challenges import with_dpop

Headers = list[tuple[str, str]]

# -- Reason -----------------------------------------------------------------------------------

#: The wire values: dashboards and log queries key on them, so none may change.
REASON_CODES = {
    "TOKEN_MISSING": "token_missing",
    "MULTIPLE_TOKENS": "multiple_tokens",
    "MALFORMED_AUTHORIZATION": "malformed_authorization",
    "MALFORMED_COOKIE": "malformed_cookie",
    "TOKEN_TOO_LARGE": "token_too_large",
    "MALFORMED_TOKEN": "malformed_token",
    "MALFORMED_HEADER": "malformed_header",
    "MALFORMED_PAYLOAD": "malformed_payload",
    "ALG_NOT_ALLOWED": "alg_not_allowed",
    "CRIT_UNSUPPORTED": "crit_unsupported",
    "UNSUPPORTED_HEADER": "unsupported_header",
    "TYP_MISMATCH": "typ_mismatch",
    "ISSUER_MISMATCH": "issuer_mismatch",
    "AUDIENCE_MISMATCH": "audience_mismatch",
    "EXPIRED": "token_expired",
    "NOT_YET_VALID": "token_not_yet_valid",
    "ISSUED_IN_FUTURE": "issued_in_future",
    "LIFETIME_TOO_LONG": "lifetime_too_long",
    "CLAIM_MISSING": "claim_missing",
    "CLAIM_INVALID": "claim_invalid",
    "CLIENT_NOT_ALLOWED": "client_not_allowed",
    "VALIDATOR_REJECTED": "validator_rejected",
    "VALIDATOR_FAILED": "validator_failed",
    "KID_UNKNOWN": "kid_unknown",
    "KID_AMBIGUOUS": "kid_ambiguous",
    "KEY_ALG_MISMATCH": "key_alg_mismatch",
    "SIGNATURE_INVALID": "signature_invalid",
    "KEYS_UNAVAILABLE": "keys_unavailable",
    "REVOCATION_UNAVAILABLE": "revocation_unavailable",
    "TOKEN_REVOKED": "token_revoked",
    "TOKEN_INACTIVE": "token_inactive",
    "INTROSPECTION_UNAVAILABLE": "introspection_unavailable",
    "ISSUER_RATE_LIMITED": "issuer_rate_limited",
    "CSRF_FAILED": "csrf_failed",
    "DPOP_INVALID": "dpop_invalid",
    "DPOP_REPLAYED": "dpop_replayed",
    "DPOP_KEY_MISMATCH": "dpop_key_mismatch",
    "DPOP_NONCE": "dpop_nonce",
    "DPOP_REQUIRED": "dpop_required",
    "TOKEN_BOUND": "token_bound",
    "TOKEN_NOT_BOUND": "token_not_bound",
    "CERTIFICATE_MISMATCH": "certificate_mismatch",
    "MALFORMED_CLIENT_CERTIFICATE": "malformed_client_certificate",
    "MALFORMED_HOST": "malformed_host",
    "REPLAY_UNAVAILABLE": "replay_unavailable",
    "VERIFIER_ERROR": "verifier_error",
    "INSUFFICIENT_SCOPE": "insufficient_scope",
    "INSUFFICIENT_AUTHENTICATION": "insufficient_user_authentication",
    "MCP_REQUEST_INVALID": "mcp_request_invalid",
}


def test_reason_is_a_str_enum_with_the_same_wire_values() -> None:
    """Reason is a str Enum whose members are exactly the documented codes."""
    assert issubclass(Reason, str) and issubclass(Reason, enum.Enum)
    assert {member.name: member.value for member in Reason} == REASON_CODES


@pytest.mark.parametrize("name", REASON_CODES)
def test_a_reason_behaves_as_its_plain_code(name: str, caplog: pytest.LogCaptureFixture) -> None:
    """A Reason member formats, logs, compares, hashes and serializes as its plain code."""
    member, code = getattr(Reason, name), REASON_CODES[name]
    assert member == code and code == member and hash(member) == hash(code)
    assert str(member) == f"{member}" == format(member, "") == code
    assert f"{member:>40}" == code.rjust(40)
    assert {code: 1}[member] == 1 and {member: 1}[code] == 1
    assert json.dumps({member: [member]}) == json.dumps({code: [code]})
    with caplog.at_level(logging.INFO, logger="test_errors"):
        logging.getLogger("test_errors").info("refused: %s", member)
    assert caplog.records[-1].getMessage() == f"refused: {code}"
    error = InvalidToken(member)
    assert error.reason == code and str(error) == code and error.args == (code,)
    assert str(InvalidToken(member, "detail")) == f"{code}: detail"


def test_an_auth_error_still_takes_a_plain_string_reason() -> None:
    """AuthError keeps accepting (and comparing) plain-string reasons, as before the enum."""
    error = InvalidToken("token_expired")
    assert error.reason == Reason.EXPIRED
    assert render(error, Challenge(realm="api", expose=True)).payload["reason"] == "token_expired"


# -- the tree ---------------------------------------------------------------------------------

#: Every exception class of the package, with the builtin (or framework) base a caller may
#: already catch it by.
TREE: dict[type[BaseException], tuple[type[BaseException], ...]] = {
    ConfigurationError: (ValueError,),
    UsageError: (TypeError,),
    NotInstalled: (RuntimeError,),
    UnusableKey: (ValueError,),
    jwt_middleware.KeyFetchError: (),
    RevocationStoreError: (),
    AuthError: (),
    jwt_flask.AuthHTTPException: (WerkzeugHTTPException,),
    jwt_fastapi.AuthHTTPException: (HTTPException,),
}

# Classes that never reach a user. _cli.Failure: main() turns it into an exit code.
# _asgi.ConnectionClosed: still a bare OSError (not part of this change; see the report).
_OUTSIDE = {"jwt_middleware._cli.Failure"}


def _package_exceptions() -> list[type[BaseException]]:
    found = []
    for info in pkgutil.iter_modules(jwt_middleware.__path__, "jwt_middleware."):
        if info.name in ("jwt_middleware.__main__", "jwt_middleware.pytest_plugin"):
            continue
        module = importlib.import_module(info.name)
        for _, value in inspect.getmembers(module, inspect.isclass):
            if issubclass(value, BaseException) and value.__module__ == info.name:
                found.append(value)
    return found


def test_every_exception_of_the_package_derives_from_the_root() -> None:
    """Each exception class defined in the package is a JWTMiddlewareError, with its builtin
    second base where callers caught the builtin before."""
    classes = _package_exceptions()
    assert len(classes) > len(TREE)
    strays = [
        f"{c.__module__}.{c.__qualname__}"
        for c in classes
        if not issubclass(c, JWTMiddlewareError)
        and f"{c.__module__}.{c.__qualname__}" not in _OUTSIDE
    ]
    assert not strays
    for cls, bases in TREE.items():
        expected: tuple[type[BaseException], ...] = (JWTMiddlewareError, *bases)
        assert all(issubclass(cls, base) for base in expected), cls
    refusals = [InvalidRequest, MissingToken, InvalidToken, InsufficientScope, CSRFRejected]
    assert all(issubclass(cls, AuthError) for cls in refusals)
    assert issubclass(KeysUnavailable, jwt_middleware.Unavailable)
    assert revocation.RevocationStoreError is RevocationStoreError


def test_misuse_raises_errors_of_the_tree() -> None:
    """No middleware, a decorated endpoint without a Request, a non-string jti, a bad store
    size: each raises its JWTMiddlewareError (still the builtin it used to be)."""
    scope = {"type": "http", "path": "/", "headers": [], "method": "GET"}
    with pytest.raises(NotInstalled, match="JWTMiddleware is not installed") as raised:
        check_scopes(Request(scope))
    assert isinstance(raised.value, RuntimeError)

    flask_app = Flask(__name__)
    with flask_app.test_request_context("/"), pytest.raises(NotInstalled, match="no JWTWSGI"):
        jwt_flask.current_token()

    def no_request() -> None:
        return None

    guarded = requires_scopes("read")(no_request)
    with pytest.raises(UsageError, match="needs a Request or WebSocket argument") as misused:
        guarded()
    assert isinstance(misused.value, TypeError)

    store = revocation.MemoryRevocationStore()
    with pytest.raises(UsageError, match="jti must be a string"):
        store.revoke_token(1.5, 2_000_000_000)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="max_entries must be >= 1"):
        revocation.MemoryRevocationStore(max_entries=0)

    # The cookie and test helpers raise from the tree too (still ValueError / TypeError).
    with pytest.raises(ConfigurationError, match="samesite"):
        set_token_cookie(StarletteResponse(), "t", max_age=60, samesite="none")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="unsupported algorithm"):
        generate_key("XX256")
    with LocalIssuer() as local:
        with pytest.raises(ConfigurationError, match="unknown fault mode"):
            local.set_fault("nope")
        with pytest.raises(UsageError, match="takes no parameter"):
            local.set_fault("down", delay=1)


# -- one scope-name check ---------------------------------------------------------------------

SCOPE_FACTORIES: dict[str, Callable[..., Any]] = {
    "starlette": requires_scopes,
    "flask": jwt_flask.require_scopes,
    "fastapi": jwt_fastapi.RequireScopes,
}


@pytest.mark.parametrize("factory", SCOPE_FACTORIES.values(), ids=SCOPE_FACTORIES.keys())
@pytest.mark.parametrize("bad", ["", "read write", 3, None])
def test_every_scope_requirement_checks_names_alike(factory: Callable[..., Any], bad: Any) -> None:
    """The Starlette, Flask and FastAPI scope requirements refuse a bad scope name where it is
    written, with one ConfigurationError (a ValueError) and one message."""
    with pytest.raises(ConfigurationError) as raised:
        factory("ok", bad)
    assert isinstance(raised.value, ValueError)
    assert str(raised.value) == f"a scope is a non-empty string without spaces, got {bad!r}"


# -- one renderer: the same answer from every adapter -----------------------------------------

REALM = "api"

#: Per refusal: the error, its status, the headers between Content-Type and Cache-Control,
#: and the body's members. ``{d}`` is the description, ``{r}`` the reason.
CASES: dict[str, tuple[Callable[[], AuthError], int, Headers, dict[str, str]]] = {
    "401-missing": (
        MissingToken,
        401,
        [("www-authenticate", 'Bearer realm="api"')],
        {"error": "unauthorized", "error_description": "An access token is required.{d}"},
    ),
    "401-invalid": (
        lambda: InvalidToken(Reason.SIGNATURE_INVALID, "kid 'k1'"),
        401,
        [
            (
                "www-authenticate",
                'Bearer realm="api", error="invalid_token", '
                'error_description="The access token is invalid.{d}"',
            )
        ],
        {"error": "invalid_token", "error_description": "The access token is invalid.{d}"},
    ),
    "403-scope": (
        lambda: InsufficientScope(["read", "write"]),
        403,
        [
            (
                "www-authenticate",
                'Bearer realm="api", error="insufficient_scope", error_description="The access '
                'token does not grant the required scope.{d}", scope="read write"',
            )
        ],
        {
            "error": "insufficient_scope",
            "error_description": "The access token does not grant the required scope.{d}",
        },
    ),
    "403-csrf": (
        lambda: CSRFRejected(Reason.CSRF_FAILED, "no CSRF header"),
        403,
        [],
        {
            "error": "csrf_failed",
            "error_description": "Cross-site request refused: the CSRF check failed.{d}",
        },
    ),
    "503-keys": (
        lambda: KeysUnavailable("key server down", retry_after=12.2),
        503,
        [("retry-after", "13")],
        {
            "error": "temporarily_unavailable",
            "error_description": "The token cannot be verified right now; try again later.{d}",
        },
    ),
    "400-request": (
        lambda: InvalidRequest(Reason.MULTIPLE_TOKENS, "2 Authorization headers"),
        400,
        [
            (
                "www-authenticate",
                'Bearer realm="api", error="invalid_request", '
                'error_description="The request is malformed.{d}"',
            )
        ],
        {"error": "invalid_request", "error_description": "The request is malformed.{d}"},
    ),
}


def _expected(case: str, expose: bool) -> tuple[AuthError, int, Headers, dict[str, str]]:
    make, status, middle, members = CASES[case]
    error = make()
    detail = f" ({error.reason})" if expose else ""
    headers = [
        ("content-type", "application/json"),
        *((name, value.replace("{d}", detail)) for name, value in middle),
        ("cache-control", "no-store"),
    ]
    payload = {name: value.replace("{d}", detail) for name, value in members.items()}
    if expose:
        payload["reason"] = str(error.reason)
    return error, status, headers, payload


def _compact(value: Any) -> bytes:
    return json.dumps(value, separators=(",", ":")).encode()


def _settings(expose: bool) -> Settings:
    signer = generate_key("ES256")
    return Settings(
        issuer="https://issuer.test",
        audience="api",
        keys=[Key.from_pem(signer.public_pem(), kid="k1")],
        anonymous=True,
        realm=REALM,
        expose_error_details=expose,
    )


Answer = tuple[int, Headers, bytes]


def _asgi_answer(app: Any) -> Answer:
    with TestClient(app) as client:
        response = client.get("/")
    raw = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in response.headers.raw]
    return response.status_code, raw, response.content


def _through_the_asgi_middleware(error: AuthError, settings: Settings) -> Answer:
    def endpoint(request: Request) -> Response:
        raise error

    middleware = [Middleware(JWTMiddleware, settings=settings)]
    return _asgi_answer(Starlette(routes=[Route("/", endpoint)], middleware=middleware))


def _through_the_starlette_decorator(error: AuthError, settings: Settings) -> Answer:
    def endpoint(request: Request) -> Response:
        return _response(error, request)  # what requires_scopes answers with

    middleware = [Middleware(JWTMiddleware, settings=settings)]
    return _asgi_answer(Starlette(routes=[Route("/", endpoint)], middleware=middleware))


def _through_fastapi(error: AuthError, settings: Settings) -> Answer:
    app = FastAPI()

    @app.get("/")
    async def endpoint(request: Request) -> None:
        raise jwt_fastapi.AuthHTTPException(error, request.scope[SCOPE_GATE])

    app.add_middleware(JWTMiddleware, settings=settings)
    return _asgi_answer(app)


def _wsgi_answer(client: Client) -> Answer:
    response = client.get("/")
    return response.status_code, response.headers.to_wsgi_list(), response.get_data()


def _through_the_wsgi_middleware(error: AuthError, settings: Settings) -> Answer:
    return _wsgi_answer(Client(lambda environ, start: refusal(error, settings, start)))


def _through_flask(error: AuthError, settings: Settings) -> Answer:
    app = Flask(__name__)

    @app.get("/")
    def view() -> NoReturn:
        raise jwt_flask.AuthHTTPException.for_error(error, settings)

    return _wsgi_answer(app.test_client())


def _with_length(headers: Headers, body: bytes, name: str = "content-length") -> Headers:
    return [*headers, (name, str(len(body)))]


def _flask_framing(status: int, headers: Headers, body: bytes) -> Answer:
    # werkzeug's Response sets Content-Length right after its own Content-Type.
    return status, [headers[0], ("Content-Length", str(len(body))), *headers[1:]], body


def _fastapi_framing(status: int, headers: Headers, body: bytes) -> Answer:
    # FastAPI's JSONResponse: {"detail": ...}, its Content-Length, its own Content-Type last.
    detail = b'{"detail":' + body + b"}"
    return status, [*_with_length(headers[1:], detail), headers[0]], detail


# Per adapter: how it answers, and the framing it adds to the rendered refusal.
ADAPTERS: dict[str, tuple[Callable[[AuthError, Settings], Answer], Callable[..., Answer]]] = {
    "asgi": (
        _through_the_asgi_middleware,
        lambda status, headers, body: (status, _with_length(headers, body), body),
    ),
    "starlette-decorator": (
        _through_the_starlette_decorator,
        lambda status, headers, body: (status, _with_length(headers, body), body),
    ),
    "wsgi": (
        _through_the_wsgi_middleware,
        lambda status, headers, body: (status, _with_length(headers, body, "Content-Length"), body),
    ),
    "flask": (_through_flask, _flask_framing),
    "fastapi": (_through_fastapi, _fastapi_framing),
}


@pytest.mark.parametrize("expose", [False, True], ids=["generic", "exposed"])
@pytest.mark.parametrize("case", CASES)
def test_render_is_the_rfc6750_answer(case: str, expose: bool) -> None:
    """render() gives the status, headers in wire order, payload and compact JSON body."""
    error, status, headers, payload = _expected(case, expose)
    rendered = render(error, Challenge(realm=REALM, expose=expose))
    assert (rendered.status, rendered.headers, rendered.payload) == (status, headers, payload)
    assert rendered.body == _compact(payload)
    assert list(rendered.payload) == list(payload)  # the body's member order


@pytest.mark.parametrize("expose", [False, True], ids=["generic", "exposed"])
@pytest.mark.parametrize("adapter", ADAPTERS)
@pytest.mark.parametrize("case", CASES)
def test_every_adapter_sends_the_same_refusal(case: str, adapter: str, expose: bool) -> None:
    """ASGI, the Starlette decorators, WSGI, FastAPI and Flask send the same refusal byte for
    byte: status, header names, order and values, and body (only framing differs)."""
    error, status, headers, payload = _expected(case, expose)
    answer, framing = ADAPTERS[adapter]
    # The middlewares accept DPoP too by default: a 401 names both schemes, in one field.
    headers = [
        (k, with_dpop(v, REALM) if status == 401 and k == "www-authenticate" else v)
        for k, v in headers
    ]
    assert answer(error, _settings(expose)) == framing(status, headers, _compact(payload))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("get http://u:p@host/jwks?key=s3cret: refused", "get http://***@host/jwks?***: refused"),
        ("see https://host/cb#access_token=abc, then", "see https://host/cb#***, then"),
        ("https://host/jwks?a=b&c=d", "https://host/jwks?***"),
        ("'https://host/jwks?sig=x'", "'https://host/jwks?***'"),
        ("https://host/.well-known/jwks.json.", "https://host/.well-known/jwks.json."),
    ],
)
def test_redact_hides_query_and_fragment_but_keeps_the_sentence(text: str, shown: str) -> None:
    """Queries and fragments may carry secrets (a token in a callback URL): both go; the
    punctuation that ends the sentence stays."""
    assert redact(text) == shown
