"""Claims, headers and JWKS documents are Unicode text (RFC 8259 §8.1): an unpaired UTF-16
surrogate escape is refused wherever it appears; a correctly paired one is a character."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from jwt_middleware import InvalidToken, Key, Reason, Settings, SyncVerifier
from jwt_middleware._jws import loads_strict
from jwt_middleware._wsgi import ENVIRON_TOKEN
from jwt_middleware.testing import generate_key
from tests.support.servers import InProcess, bearer

ISS, AUD, NOW = "https://issuer.example", "api://text", 1_800_000_000

LONE = [
    rb'"\ud800"',
    rb'"\udc00"',
    rb'"abc\udbff"',
    rb'"\ude00\ud83d"',  # the pair reversed
    rb'"\ud800\u0041"',  # a high surrogate followed by no low one
    rb'{"\ud800":1}',
    rb'{"a":[1,{"b":["x","\udfff"]}]}',
]


@pytest.mark.parametrize("document", LONE, ids=[d.decode() for d in LONE])
@pytest.mark.parametrize("frozen", [False, True])
def test_a_lone_surrogate_anywhere_is_not_json(document: bytes, frozen: bool) -> None:
    """A string (member name or value, at any depth) holding an unpaired surrogate: ValueError."""
    with pytest.raises(ValueError, match="surrogate"):
        loads_strict(document, frozen=frozen)


@pytest.mark.parametrize(
    ("document", "value"),
    [
        (rb'"\ud83d\ude00"', "\U0001f600"),
        (rb'{"\ud83d\ude00":"\u00e9"}', {"\U0001f600": "\u00e9"}),
        (rb'"\\ud800"', "\\ud800"),  # an escaped backslash: the text \ud800, no escape
        ('"\U0001f600"'.encode(), "\U0001f600"),
    ],
)
def test_paired_surrogates_and_other_escapes_are_accepted(document: bytes, value: Any) -> None:
    """A paired escape decodes to one character; escaped backslashes are not escapes."""
    assert loads_strict(document) == value


def _signer_and_settings() -> tuple[Any, Settings]:
    signer = generate_key("ES256", kid="k1")
    settings = Settings(
        issuer=ISS,
        audience=AUD,
        keys=[Key.from_pem(signer.public_pem(), kid="k1")],
        algorithms=["ES256"],
        clock=lambda: NOW,
    )
    return signer, settings


CLAIMS: dict[str, Any] = {"iss": ISS, "aud": AUD, "exp": NOW + 300}
BAD_CLAIMS: dict[str, dict[str, Any]] = {
    "sub": {"sub": "\ud800"},
    "nested": {"sub": "u", "org": {"teams": ["a", "b\udc00"]}},
    "name": {"sub": "u", "x\ud800": 1},
}


@pytest.mark.parametrize("extra", list(BAD_CLAIMS.values()), ids=list(BAD_CLAIMS))
def test_signed_token_with_a_lone_surrogate_claim_is_malformed(extra: dict[str, Any]) -> None:
    """The signature holds, but claims that are not Unicode text are MALFORMED_PAYLOAD."""
    signer, settings = _signer_and_settings()
    with pytest.raises(InvalidToken) as refused:
        SyncVerifier(settings).verify(signer.sign({**CLAIMS, **extra}))
    assert refused.value.reason == Reason.MALFORMED_PAYLOAD


def test_signed_token_with_a_lone_surrogate_header_is_malformed() -> None:
    """A lone surrogate in the JOSE header is MALFORMED_HEADER."""
    signer, settings = _signer_and_settings()
    token = signer.sign({**CLAIMS, "sub": "u"}, {"x": "\ud800"})
    with pytest.raises(InvalidToken) as refused:
        SyncVerifier(settings).verify(token)
    assert refused.value.reason == Reason.MALFORMED_HEADER


async def _me(request: Request) -> JSONResponse:
    # As the FastAPI and Starlette examples do: echo the claims (Starlette encodes UTF-8).
    return JSONResponse({"sub": request.user.identity, "claims": dict(request.user.claims)})


def _wsgi_me(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    token = environ[ENVIRON_TOKEN]
    body = json.dumps({"sub": token.subject, "claims": dict(token.claims)}, ensure_ascii=False)
    start_response("200 OK", [("Content-Type", "application/json")])
    return [body.encode("utf-8")]


def test_apps_echoing_claims_get_401_never_500_for_lone_surrogates(
    in_process: Callable[..., InProcess],
) -> None:
    """Both adapters refuse such a token with 401 before the app runs; a paired escape still
    reaches the app and comes back as the character."""
    signer, settings = _signer_and_settings()
    app = in_process(settings, routes=[Route("/me", _me)], wsgi_app=_wsgi_me)
    for extra in BAD_CLAIMS.values():
        answer = app.request("GET", "/me", bearer(signer.sign({**CLAIMS, **extra})))
        assert answer.status == 401, (extra, answer.status, answer.body[:200])
        assert "invalid_token" in answer.headers["www-authenticate"]
    good = app.request("GET", "/me", bearer(signer.sign({**CLAIMS, "sub": "\U0001f600"})))
    assert good.status == 200 and good.json()["sub"] == "\U0001f600"
