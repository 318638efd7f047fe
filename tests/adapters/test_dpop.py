"""DPoP (RFC 9449) at the resource server, through both middlewares under real servers (uvicorn
and werkzeug in a thread, httpx as the client): what a request with a bound token and its proof
gets, and what each lying proof, replay, scheme mix-up, nonce, replay-store failure and request
URL gets instead.

The proof checks themselves are pinned one by one in ``tests/unit/test_dpop.py`` and the sender
pieces in ``tests/unit/test_sender.py``; here the point is the answer on the wire: status, the
body's ``reason`` (``expose_error_details``) and the ``WWW-Authenticate`` challenge.
"""

from __future__ import annotations

import base64
import contextlib
import json
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from jwt_middleware import ReplayStoreError, Settings
from jwt_middleware.testing import LocalIssuer, SigningKey, dpop_proof, generate_key
from tests.support.challenges import DPOP_ALGS
from tests.support.orders import serve_orders
from tests.support.servers import raw_request

Headers = Sequence[tuple[str, str]]
DPOP_CHALLENGE = f'DPoP realm="api", algs="{DPOP_ALGS}"'


@dataclass
class Api:
    """``/orders`` (GET and POST) behind one adapter under a real server, called with httpx."""

    port: int

    def url(self, path: str = "/orders") -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def proof(self, key: SigningKey, token: str, method: str = "GET", **options: Any) -> str:
        """A proof by ``key`` for ``method`` on this server's /orders, bound to ``token``."""
        return dpop_proof(key, method, self.url(), access_token=token, **options)

    def call(
        self,
        token: str,
        proof: str | None = None,
        *,
        method: str = "GET",
        scheme: str = "DPoP",
        path: str = "/orders",
        headers: Headers = (),
    ) -> httpx.Response:
        sent = [("authorization", f"{scheme} {token}"), *headers]
        if proof is not None:
            sent.append(("dpop", proof))
        return httpx.request(method, self.url(path), headers=sent, timeout=10)


@pytest.fixture
def serve(adapter: str, make_settings: Callable[..., Settings]) -> Iterator[Callable[..., Api]]:
    """``serve(**settings) -> Api``: /orders behind the adapter under test (reasons exposed
    unless overridden), under uvicorn or werkzeug in a thread; stopped at teardown."""
    with contextlib.ExitStack() as stack:

        def start(**overrides: Any) -> Api:
            settings = make_settings(**{"expose_error_details": True, **overrides})
            port = serve_orders(stack, adapter, settings)
            return Api(port)

        yield start


@pytest.fixture(scope="module")
def key() -> SigningKey:
    """The client's DPoP key, the one its tokens are bound to."""
    return generate_key("ES256")


@pytest.fixture(scope="module")
def other_key() -> SigningKey:
    """Another client's (or the attacker's) DPoP key."""
    return generate_key("ES256")


def _ok(answer: httpx.Response, sub: str = "user-1") -> None:
    assert answer.status_code == 200, answer.text
    assert answer.json() == {"sub": sub, "location": "dpop"}


def _refused(answer: httpx.Response, status: int, error: str, reason: str) -> str:
    """Assert the refusal; its WWW-Authenticate value ('' when absent)."""
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert (body["error"], body["reason"]) == (error, reason), answer.text
    challenge: str = answer.headers.get("www-authenticate", "")
    return challenge


def _bad_proof(answer: httpx.Response, reason: str = "dpop_invalid") -> None:
    """401 invalid_dpop_proof, carried by the DPoP challenge (the scheme the request used)."""
    challenge = _refused(answer, 401, "invalid_dpop_proof", reason)
    assert challenge.startswith('DPoP realm="api", error="invalid_dpop_proof"'), challenge
    assert f'algs="{DPOP_ALGS}"' in challenge


# -- the accepted request, and replay ----------------------------------------------------------


@pytest.mark.parametrize("alg", ["ES256", "EdDSA"])
def test_a_bound_token_with_its_proof_is_accepted(
    serve: Callable[..., Api], issuer: LocalIssuer, alg: str
) -> None:
    """A cnf.jkt-bound token under Authorization: DPoP with a valid proof by that key (ES256 or
    EdDSA), on GET and POST: 200, location "dpop"."""
    api = serve()
    holder = generate_key(alg)
    token = issuer.mint(dpop_key=holder, subject="alice")
    _ok(api.call(token, api.proof(holder, token)), "alice")
    _ok(api.call(token, api.proof(holder, token, "POST"), method="POST"), "alice")


def test_a_replayed_proof_is_refused(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """The same proof twice: 200, then 401 invalid_dpop_proof dpop_replayed; a fresh proof for
    the same token is accepted after."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    proof = api.proof(key, token)
    _ok(api.call(token, proof))
    _bad_proof(api.call(token, proof), "dpop_replayed")
    _ok(api.call(token, api.proof(key, token)))


def test_a_request_refused_by_a_validator_does_not_use_up_its_proof(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """A request a validator refuses does not record its proof's jti: the same proof sent again
    once the validator agrees is accepted (and only then is it a replay)."""
    allowed = {"now": False}
    api = serve(validators=[lambda claims: allowed["now"]])
    token = issuer.mint(dpop_key=key)
    proof = api.proof(key, token)
    _refused(api.call(token, proof), 401, "invalid_token", "validator_rejected")
    allowed["now"] = True
    _ok(api.call(token, proof))
    _bad_proof(api.call(token, proof), "dpop_replayed")


class _Revoked:
    """A revocation store whose answer the test sets."""

    def __init__(self) -> None:
        self.revoked = True

    def is_revoked(self, jti: str | None, sub: str | None, iat: float | None) -> bool:
        return self.revoked


def test_a_request_refused_after_the_proof_check_does_not_use_up_its_proof(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """A request whose proof passed every check but whose token the revocation store (consulted
    after the proof) refuses does not record the jti: the same proof is accepted once the store
    says the token is fine."""
    store = _Revoked()
    api = serve(revocation=store)
    token = issuer.mint(dpop_key=key)
    proof = api.proof(key, token)
    _refused(api.call(token, proof), 401, "invalid_token", "token_revoked")
    store.revoked = False
    _ok(api.call(token, proof))


# -- the scheme and the binding ------------------------------------------------------------


def test_a_bound_token_as_bearer_is_refused(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """A bound token under Bearer (even with a valid proof beside it): 401 invalid_token
    token_bound, a Bearer challenge with the error, then the bare DPoP one with its algs."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    for proof in (None, api.proof(key, token)):
        challenge = _refused(
            api.call(token, proof, scheme="Bearer"), 401, "invalid_token", "token_bound"
        )
        assert challenge == (
            'Bearer realm="api", error="invalid_token", '
            'error_description="The access token is invalid. (token_bound)", ' + DPOP_CHALLENGE
        )


def test_an_unbound_token_under_dpop_is_refused(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """A token without cnf.jkt under Authorization: DPoP, with a proof: 401 token_not_bound, the
    error in the DPoP challenge, the bare Bearer one after it."""
    api = serve()
    token = issuer.mint()
    challenge = _refused(
        api.call(token, api.proof(key, token)), 401, "invalid_token", "token_not_bound"
    )
    assert challenge.startswith('DPoP realm="api", error="invalid_token"'), challenge
    assert challenge.endswith(f'algs="{DPOP_ALGS}", Bearer realm="api"'), challenge


def test_a_proof_beside_a_bearer_token_is_a_bad_request(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """An unbound token under Bearer with a DPoP header: 400 invalid_request dpop_invalid (the
    client mixed the schemes up); the same token without the header is 200."""
    api = serve()
    token = issuer.mint()
    challenge = _refused(
        api.call(token, api.proof(key, token), scheme="Bearer"), 400, "invalid_request",
        "dpop_invalid",
    )  # fmt: skip
    assert challenge.startswith('Bearer realm="api", error="invalid_request"'), challenge
    answer = api.call(token, scheme="Bearer")
    assert answer.status_code == 200, answer.text
    assert answer.json()["location"] == "header"


def test_the_dpop_scheme_needs_exactly_one_proof(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """Authorization: DPoP without a DPoP header, or with two (two header lines; werkzeug joins
    them with a comma): 401 invalid_dpop_proof dpop_invalid, even when both are valid."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    _bad_proof(api.call(token))
    first, second = api.proof(key, token), api.proof(key, token)
    _bad_proof(api.call(token, headers=[("dpop", first), ("dpop", second)]))
    _bad_proof(api.call(token, headers=[("dpop", first), ("dpop", first)]))
    _ok(api.call(token, second))  # neither was used up by the refusals


# -- proofs that lie -------------------------------------------------------------------------


def _private_jwk(key: SigningKey) -> dict[str, Any]:
    """The public JWK of an EC key with its private member ``d`` added."""
    private = key.private_key
    assert isinstance(private, ec.EllipticCurvePrivateKey)
    d = private.private_numbers().private_value.to_bytes(32, "big")
    return {**key.public_jwk(), "d": base64.urlsafe_b64encode(d).rstrip(b"=").decode()}


@dataclass
class Case:
    api: Api
    key: SigningKey
    other_key: SigningKey
    token: str


def _elsewhere(case: Case, url: str) -> str:
    return dpop_proof(case.key, "GET", url, access_token=case.token)


LYING_PROOFS: dict[str, tuple[Callable[[Case], str], str]] = {
    "htm-post-on-get": (lambda c: c.api.proof(c.key, c.token, "POST"), "dpop_invalid"),
    "htu-other-path": (lambda c: _elsewhere(c, c.api.url("/other")), "dpop_invalid"),
    "htu-other-port": (
        lambda c: _elsewhere(c, f"http://127.0.0.1:{c.api.port + 1}/orders"),
        "dpop_invalid",
    ),
    "htu-other-host": (
        lambda c: _elsewhere(c, f"http://localhost:{c.api.port}/orders"),
        "dpop_invalid",
    ),
    "htu-https": (
        lambda c: _elsewhere(c, f"https://127.0.0.1:{c.api.port}/orders"),
        "dpop_invalid",
    ),
    "ath-other-token": (
        lambda c: dpop_proof(c.key, "GET", c.api.url(), access_token=c.token + "x"),
        "dpop_invalid",
    ),
    "ath-missing": (lambda c: dpop_proof(c.key, "GET", c.api.url()), "dpop_invalid"),
    "other-key": (lambda c: c.api.proof(c.other_key, c.token), "dpop_key_mismatch"),
    "bound-jwk-other-signer": (
        lambda c: c.api.proof(c.other_key, c.token, headers={"jwk": c.key.public_jwk()}),
        "dpop_invalid",
    ),
    "alg-none": (lambda c: c.api.proof(c.key, c.token, headers={"alg": "none"}), "dpop_invalid"),
    "alg-hs256": (
        lambda c: c.api.proof(c.key, c.token, headers={"alg": "HS256"}),
        "dpop_invalid",
    ),
    "private-jwk": (
        lambda c: c.api.proof(c.key, c.token, headers={"jwk": _private_jwk(c.key)}),
        "dpop_invalid",
    ),
    "iat-stale": (
        lambda c: c.api.proof(c.key, c.token, now=int(time.time()) - 301),
        "dpop_invalid",
    ),
    "iat-future": (
        lambda c: c.api.proof(c.key, c.token, now=int(time.time()) + 60),
        "dpop_invalid",
    ),
    "typ-jwt": (lambda c: c.api.proof(c.key, c.token, headers={"typ": "JWT"}), "dpop_invalid"),
}


@pytest.mark.parametrize("name", list(LYING_PROOFS))
def test_a_lying_proof_is_refused(
    serve: Callable[..., Api],
    issuer: LocalIssuer,
    key: SigningKey,
    other_key: SigningKey,
    name: str,
) -> None:
    """Each proof that does not fit the request, the token or the key (method, URL, ath, signer,
    alg, private jwk, iat out of window, typ): 401 invalid_dpop_proof with its reason."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    build, reason = LYING_PROOFS[name]
    _bad_proof(api.call(token, build(Case(api, key, other_key, token))), reason)


def test_the_query_string_is_not_part_of_the_proof_url(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """A proof naming /orders is accepted for a request to /orders?x=1 (RFC 9449 §4.3: htu is
    compared without query)."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    _ok(api.call(token, api.proof(key, token), path="/orders?x=1"))


# -- dpop="required" and dpop="off" ----------------------------------------------------------


def test_required_refuses_bearer_tokens_with_a_dpop_challenge_only(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """dpop="required": an unbound Bearer token is 401 dpop_required with only a DPoP challenge
    (no Bearer scheme offered); a bound token with its proof is 200."""
    api = serve(dpop="required")
    token = issuer.mint()
    challenge = _refused(api.call(token, scheme="Bearer"), 401, "invalid_token", "dpop_required")
    assert challenge.startswith('DPoP realm="api", error="invalid_token"'), challenge
    assert challenge.endswith(f'algs="{DPOP_ALGS}"'), challenge
    assert "Bearer" not in challenge
    bound = issuer.mint(dpop_key=key)
    _ok(api.call(bound, api.proof(key, bound)))


def test_off_knows_no_dpop_scheme(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """dpop="off": Authorization: DPoP is no token at all (401 token_missing), a bound token as
    Bearer is still token_bound, and every challenge is Bearer only."""
    api = serve(dpop="off")
    token = issuer.mint(dpop_key=key)
    answer = api.call(token, api.proof(key, token))
    assert answer.status_code == 401, answer.text
    assert answer.json()["reason"] == "token_missing"
    assert answer.headers["www-authenticate"] == 'Bearer realm="api"'
    challenge = _refused(api.call(token, scheme="Bearer"), 401, "invalid_token", "token_bound")
    assert challenge.startswith('Bearer realm="api", error="invalid_token"'), challenge
    assert "DPoP" not in challenge


# -- the token cache -------------------------------------------------------------------------


def test_a_bound_token_is_cached_while_every_proof_is_checked(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey, signature_checks: list[str]
) -> None:
    """Three DPoP requests with one RS256 token and fresh ES256 proofs: the token's signature is
    verified at most twice (the cache admits it on its second verification), the proof's on
    every request; the third request checks only its proof."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    for _ in range(2):
        _ok(api.call(token, api.proof(key, token)))
    assert signature_checks.count("ES256") == 2, signature_checks
    assert 1 <= signature_checks.count("RS256") <= 2, signature_checks
    before = len(signature_checks)
    _ok(api.call(token, api.proof(key, token)))
    assert signature_checks[before:] == ["ES256"]


# -- server nonces ---------------------------------------------------------------------------


def test_a_nonce_is_asked_for_and_then_accepted(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """With dpop_nonce_secret: a proof without nonce is 401 use_dpop_nonce with a DPoP-Nonce
    header and the error in the DPoP challenge; the retry carrying that nonce is 200, and a
    made-up nonce is use_dpop_nonce again."""
    api = serve(dpop_nonce_secret="x" * 32)
    token = issuer.mint(dpop_key=key)
    answer = api.call(token, api.proof(key, token))
    challenge = _refused(answer, 401, "use_dpop_nonce", "dpop_nonce")
    assert challenge.startswith('DPoP realm="api", error="use_dpop_nonce"'), challenge
    nonce = answer.headers["dpop-nonce"]
    assert nonce
    _ok(api.call(token, api.proof(key, token, nonce=nonce)))
    made_up = api.call(token, api.proof(key, token, nonce="A" * len(nonce)))
    _refused(made_up, 401, "use_dpop_nonce", "dpop_nonce")
    assert made_up.headers["dpop-nonce"] == nonce


def test_a_nonce_about_to_lapse_is_answered_with_the_next_one(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """A proof carrying the previous step's nonce (still accepted) is 200 with the current
    nonce in DPoP-Nonce, so the client switches before its nonce lapses; a proof carrying the
    current nonce gets no DPoP-Nonce."""
    now = [time.time()]
    api = serve(dpop_nonce_secret="x" * 32, dpop_nonce_lifetime=60, clock=lambda: now[0])
    token = issuer.mint(dpop_key=key, expires_in=3600)
    first = api.call(token, api.proof(key, token)).headers["dpop-nonce"]
    current = api.call(token, api.proof(key, token, nonce=first))
    _ok(current)
    assert "dpop-nonce" not in current.headers
    now[0] += 60  # the next step: ``first`` is the previous step's nonce now
    lapsing = api.call(token, api.proof(key, token, nonce=first))
    _ok(lapsing)
    following = lapsing.headers["dpop-nonce"]
    assert following != first
    again = api.call(token, api.proof(key, token, nonce=following))
    _ok(again)
    assert "dpop-nonce" not in again.headers
    now[0] += 60  # ``first`` is two steps old: refused, with the current nonce
    stale = api.call(token, api.proof(key, token, nonce=first))
    _refused(stale, 401, "use_dpop_nonce", "dpop_nonce")
    assert stale.headers["dpop-nonce"] not in (first, following)


# -- the replay store ------------------------------------------------------------------------


class _BrokenReplay:
    """A replay store that cannot answer."""

    def first_use(self, jkt: str, jti: str, until: float, now: float) -> bool:
        raise ReplayStoreError("the replay store is down")


def test_a_broken_replay_store_fails_closed(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """A replay store that raises: 503 replay_unavailable with Retry-After and no challenge (the
    credentials may be fine)."""
    api = serve(dpop_replay=_BrokenReplay())
    token = issuer.mint(dpop_key=key)
    answer = api.call(token, api.proof(key, token))
    assert _refused(answer, 503, "temporarily_unavailable", "replay_unavailable") == ""
    assert int(answer.headers["retry-after"]) >= 1


def test_a_broken_replay_store_can_fail_open(
    serve: Callable[..., Api],
    issuer: LocalIssuer,
    key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With dpop_replay_fail_open=True a replay store that raises lets the proof in (200), with a
    WARNING saying so."""
    caplog.set_level(logging.WARNING, logger="jwt_middleware")
    api = serve(dpop_replay=_BrokenReplay(), dpop_replay_fail_open=True)
    token = issuer.mint(dpop_key=key)
    _ok(api.call(token, api.proof(key, token)))
    warnings = [
        r.getMessage()
        for r in caplog.records
        if r.name == "jwt_middleware" and r.levelno == logging.WARNING
    ]
    assert any("letting the proof in" in m for m in warnings), warnings


# -- the request URL -------------------------------------------------------------------------


@pytest.mark.parametrize("host", ["evil.example/orders", "user@evil.example", "a b", "[::1"])
def test_a_malformed_host_is_a_bad_request(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey, host: str
) -> None:
    """Without public_url (nor resource) the proof URL comes from Host: a Host that is no host
    is 400 malformed_host, not a URL built from it."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    answer = api.call(token, api.proof(key, token), headers=[("host", host)])
    _refused(answer, 400, "invalid_request", "malformed_host")


def test_two_host_headers_are_a_bad_request(
    adapter: str, serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """Two Host headers (a raw request: its own Host line and another) with a valid proof for
    the first: 400. Werkzeug joins them with a comma and the middleware answers malformed_host;
    uvicorn refuses the request itself before any app sees it."""
    api = serve()
    token = issuer.mint(dpop_key=key)
    lines = [
        b"Host: evil.example",
        f"Authorization: DPoP {token}".encode(),
        f"DPoP: {api.proof(key, token)}".encode(),
    ]
    status, _, body = raw_request(api.port, "/orders", lines)
    assert status == 400, body
    if adapter == "wsgi":
        assert json.loads(body)["reason"] == "malformed_host"
    else:
        assert body == b"Invalid HTTP request received."


def test_public_url_fixes_the_url_proofs_name(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """With public_url: a proof for https://api.example.com/orders is 200 whatever Host says;
    a proof for the Host-derived URL is refused."""
    api = serve(public_url="https://api.example.com")
    token = issuer.mint(dpop_key=key)
    public = "https://api.example.com/orders"
    _ok(api.call(token, dpop_proof(key, "GET", public, access_token=token)))
    for host in ("evil.example", "a b"):
        proof = dpop_proof(key, "GET", public, access_token=token)
        _ok(api.call(token, proof, headers=[("host", host)]))
    _bad_proof(api.call(token, api.proof(key, token)))


@pytest.mark.parametrize("proxies", [["127.0.0.1"], ["10.0.0.0/8"]])
def test_forwarded_headers_are_believed_only_from_a_trusted_proxy(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey, proxies: list[str]
) -> None:
    """X-Forwarded-Proto/Host from a trusted peer make the proof URL https://public.example/...;
    from a peer outside trusted_proxies they are ignored: that proof is refused, and one for the
    Host-derived URL is accepted despite an X-Forwarded-Host."""
    api = serve(trusted_proxies=proxies)
    token = issuer.mint(dpop_key=key)
    proof = dpop_proof(key, "GET", "https://public.example/orders", access_token=token)
    forwarded = [("x-forwarded-proto", "https"), ("x-forwarded-host", "public.example")]
    answer = api.call(token, proof, headers=forwarded)
    if proxies == ["127.0.0.1"]:
        _ok(answer)
    else:
        _bad_proof(answer)
        # Without X-Forwarded-Proto: uvicorn itself applies that one to the ASGI scheme for a
        # 127.0.0.1 peer (its own forwarded_allow_ips), before the middleware sees the request.
        host_only = [("x-forwarded-host", "public.example")]
        _ok(api.call(token, api.proof(key, token), headers=host_only))


# -- logs ------------------------------------------------------------------------------------


def test_no_token_or_proof_reaches_the_logs(
    serve: Callable[..., Api],
    issuer: LocalIssuer,
    key: SigningKey,
    other_key: SigningKey,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """At DEBUG, over accepted, replayed, key-mismatched and bearer-misused requests, no log
    record holds a token or a proof, nor the signature part of either."""
    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="jwt_middleware")
    api = serve()
    token = issuer.mint(dpop_key=key)
    proof, mismatched = api.proof(key, token), api.proof(other_key, token)
    _ok(api.call(token, proof))
    _bad_proof(api.call(token, proof), "dpop_replayed")
    _bad_proof(api.call(token, mismatched), "dpop_key_mismatch")
    _refused(api.call(token, proof, scheme="Bearer"), 401, "invalid_token", "token_bound")
    reasons = {getattr(r, "jwt_reason", None) for r in caplog.records}
    assert {"dpop_replayed", "dpop_key_mismatch", "token_bound"} <= reasons, reasons
    secrets = [token, proof, mismatched] + [s.rsplit(".", 1)[1] for s in (token, proof)]
    for record in caplog.records:
        text = record.getMessage() + repr(record.__dict__)
        for secret in secrets:
            assert secret not in text, record


# -- reviewer R's findings ------------------------------------------------------------------


def test_an_unbound_token_under_dpop_is_refused_even_once_cached(
    serve: Callable[..., Api], issuer: LocalIssuer
) -> None:
    """The token cache never answers for the DPoP scheme: an unbound token sent as ``DPoP``
    without a proof is token_not_bound on every request, never 200 with location "dpop"."""
    api, token = serve(), issuer.mint(subject="user-1")
    for _ in range(4):
        _refused(api.call(token), 401, "invalid_token", "token_not_bound")


def test_a_proof_beside_a_bearer_token_is_refused_even_once_cached(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """Bearer plus a DPoP header stays a 400 after the token is cached."""
    api, token = serve(), issuer.mint(subject="user-1")
    for _ in range(4):
        answer = api.call(token, api.proof(key, token), scheme="Bearer")
        _refused(answer, 400, "invalid_request", "dpop_invalid")


def test_a_proof_with_an_absurd_iat_is_an_invalid_proof(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """iat = 10**400 (which math.isfinite cannot even take) is dpop_invalid, not a bug."""
    api = serve()
    token = issuer.mint(subject="user-1", dpop_key=key)
    _bad_proof(api.call(token, api.proof(key, token, now=10**400)))


def test_validators_never_run_for_a_bound_token_without_its_proof(
    serve: Callable[..., Api], issuer: LocalIssuer, key: SigningKey
) -> None:
    """The sender check comes before the validators: a stolen bound token sent without its
    proof never reaches them (nor their I/O); with its proof, they run."""
    seen: list[str] = []

    def audit(claims: Any) -> bool:
        seen.append(str(claims["sub"]))
        return True

    api = serve(validators=[audit])
    token = issuer.mint(subject="user-1", dpop_key=key)
    _refused(api.call(token, scheme="Bearer"), 401, "invalid_token", "token_bound")
    _bad_proof(api.call(token))  # no proof at all
    assert seen == []
    _ok(api.call(token, api.proof(key, token)))
    assert seen == ["user-1"]
