"""jwt_middleware._sender and its settings: the binding a token names, stateless nonces, the
DPoP scheme in the Authorization header, the RFC 9449 challenges, and the configuration checks
of sender-constrained tokens."""

from __future__ import annotations

from typing import Any

import pytest

from jwt_middleware import (
    ConfigurationError,
    InvalidProof,
    InvalidRequest,
    InvalidToken,
    MissingToken,
    Reason,
    Settings,
    SyncVerifier,
    UseDPoPNonce,
)
from jwt_middleware._errors import Challenge, render
from jwt_middleware._extract import DPOP, HEADER, credentials, extract_token
from jwt_middleware._sender import UNBOUND, Nonces, Request, Sender, binding
from jwt_middleware.testing import generate_key

KEYS = {"keys": [generate_key("ES256", kid="k1").public_jwk()]}
BASE: dict[str, Any] = {"issuer": "https://issuer.example", "audience": "api", "jwks": KEYS}
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"


def settings(**overrides: Any) -> Settings:
    return Settings(**{**BASE, **overrides})


# -- binding -------------------------------------------------------------------------------


def test_a_token_without_cnf_is_unbound_and_shares_the_one_unbound_value() -> None:
    """No cnf (or a cnf with other members only) is UNBOUND itself, so the hot path tests ``is``."""
    assert binding({}) is UNBOUND
    assert binding({"cnf": {"kid": "other"}}) is UNBOUND


def test_the_binding_names_jkt_and_the_certificate_thumbprint() -> None:
    """cnf.jkt and cnf.x5t#S256 are read; extra members are fine."""
    assert binding({"cnf": {"jkt": "abc", "extra": 1}}) == ("abc", None)
    assert binding({"cnf": {"x5t#S256": "xyz"}}) == (None, "xyz")
    assert binding({"cnf": {"jkt": "abc", "x5t#S256": "xyz"}}) == ("abc", "xyz")


@pytest.mark.parametrize(
    "cnf",
    ["jkt", ["jkt"], {"jkt": 5}, {"jkt": ""}, {"x5t#S256": None, "jkt": {"a": 1}}, {"jkt": "é"}],
)
def test_an_unreadable_cnf_is_refused_not_read_as_unbound(cnf: Any) -> None:
    """A binding we cannot read must not become no binding: claim_invalid."""
    with pytest.raises(InvalidToken) as refused:
        binding({"cnf": cnf})
    assert refused.value.reason == Reason.CLAIM_INVALID


# -- nonces --------------------------------------------------------------------------------


def test_a_nonce_is_accepted_in_its_step_and_the_next_only() -> None:
    """The nonce of step n passes during n and n+1, not n+2; a made-up one never."""
    nonces = Nonces(b"s" * 32, 60.0)
    nonce = nonces.current(600.0)
    assert nonces.accepts(nonce, 600.0) and nonces.accepts(nonce, 659.9)
    assert nonces.accepts(nonce, 719.9)
    assert not nonces.accepts(nonce, 720.0)
    assert not nonces.accepts("made-up", 600.0)
    assert not nonces.accepts(None, 600.0)
    assert nonces.current(660.0) != nonce


def test_a_nonces_age_is_its_step_count_back() -> None:
    """age(): 0 in the nonce's own step, 1 in the next (about to lapse), None after or unknown."""
    nonces = Nonces(b"s" * 32, 60.0)
    nonce = nonces.current(600.0)
    assert [nonces.age(nonce, t) for t in (600.0, 659.9, 660.0, 719.9, 720.0)] == [
        0, 0, 1, 1, None,
    ]  # fmt: skip
    assert nonces.age("made-up", 600.0) is None and nonces.age(7, 600.0) is None


def test_instances_with_the_same_secret_agree_and_other_secrets_do_not() -> None:
    """Stateless: another instance with the secret accepts the nonce; another secret does not."""
    nonce = Nonces(b"s" * 32, 60.0).current(1000.0)
    assert Nonces(b"s" * 32, 60.0).accepts(nonce, 1000.0)
    assert not Nonces(b"t" * 32, 60.0).accepts(nonce, 1000.0)


def test_a_proof_without_the_nonce_is_told_the_nonce_to_use() -> None:
    """With nonces on, a proof lacking one gets UseDPoPNonce carrying the current nonce."""
    key = generate_key("ES256")
    from jwt_middleware.testing import dpop_proof

    sender = Sender(settings(dpop_nonce_secret="n" * 32, public_url="https://api.example"))
    url = "https://api.example/orders"
    request = Request("GET", "http", "/orders", [(b"dpop", dpop_proof(key, "GET", url,
                      access_token=TOKEN, now=1000).encode())])  # fmt: skip
    with pytest.raises(UseDPoPNonce) as told:
        sender.check((key.thumbprint, None), TOKEN, DPOP, request, 1000.0)
    assert told.value.nonce == sender.nonces.current(1000.0)  # type: ignore[union-attr]
    answered = dpop_proof(key, "GET", url, access_token=TOKEN, now=1000, nonce=told.value.nonce)
    good = Request("GET", "http", "/orders", [(b"dpop", answered.encode())])
    proof = sender.check((key.thumbprint, None), TOKEN, DPOP, good, 1000.0)
    assert proof is not None and proof.jkt == key.thumbprint


# -- the request URL -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "request_", "url"),
    [
        ({"public_url": "https://api.example/base/"}, ("http", "/a b", "evil"), "https://api.example/base/a%20b"),
        ({"resource": "https://r.example/mcp"}, ("http", "/mcp", "evil"), "https://r.example/mcp"),
        ({}, ("http", "/x/%", "Api.Example:8080"), "http://Api.Example:8080/x/%25"),
        ({}, ("wss", "/ws", "h.example"), "https://h.example/ws"),
    ],
)  # fmt: skip
def test_the_url_proofs_name_comes_from_the_settings_before_the_host(
    options: dict[str, Any], request_: tuple[str, str, str], url: str
) -> None:
    """public_url, then resource's origin, then the request's scheme and Host; paths quoted."""
    scheme, path, host = request_
    request = Request("GET", scheme, path, [(b"host", host.encode())])
    assert Sender(settings(**options)).url(request) == url


@pytest.mark.parametrize(
    "hosts", [[], [b"a.example", b"b.example"], [b"a.example/x"], [b"a b"], [b"@x"], [b"x:99999x"]]
)
def test_a_missing_doubled_or_malformed_host_is_a_400(hosts: list[bytes]) -> None:
    """Without a configured URL, the Host must be one valid host[:port]: malformed_host."""
    request = Request("GET", "http", "/", [(b"host", h) for h in hosts])
    with pytest.raises(InvalidRequest) as refused:
        Sender(settings()).url(request)
    assert refused.value.reason == Reason.MALFORMED_HOST


def test_forwarded_scheme_and_host_are_read_from_trusted_peers_only() -> None:
    """X-Forwarded-Proto/Host (the nearest proxy's, last) replace the request's own only when
    the peer is in trusted_proxies."""
    headers = [
        (b"host", b"internal:8000"),
        (b"x-forwarded-proto", b"http, HTTPS"),
        (b"x-forwarded-host", b"spoofed.example, public.example"),
    ]
    trusting = Sender(settings(trusted_proxies=["10.0.0.0/8"]))
    assert trusting.url(Request("GET", "http", "/o", headers, "10.1.2.3")) == (
        "https://public.example/o"
    )
    assert trusting.url(Request("GET", "http", "/o", headers, "192.0.2.1")) == (
        "http://internal:8000/o"
    )
    assert trusting.url(Request("GET", "http", "/o", headers, None)) == "http://internal:8000/o"


# -- the Authorization header -----------------------------------------------------------------


@pytest.mark.parametrize("value", [f"DPoP {TOKEN}", f"dpop {TOKEN}", f"  DPOP   {TOKEN} "])
def test_the_dpop_scheme_is_read_case_insensitively_when_enabled(value: str) -> None:
    """``Authorization: DPoP`` gives the token at location "dpop"; off, it is not a token."""
    assert credentials(value.encode(), dpop=True) == (TOKEN, DPOP)
    assert credentials(value.encode()) is None
    assert extract_token([(b"authorization", value.encode())], dpop=True) == (TOKEN, DPOP)


@pytest.mark.parametrize("value", [b"DPoP", b"DPoP ", b"DPoP\tabc", b"DPoP a b", b"DPoP %%%"])
def test_malformed_dpop_credentials_are_a_400(value: bytes) -> None:
    """A DPoP scheme with no b64token after it is malformed_authorization, as for Bearer."""
    with pytest.raises(InvalidRequest) as refused:
        credentials(value, dpop=True)
    assert refused.value.reason == Reason.MALFORMED_AUTHORIZATION


def test_bearer_is_still_read_beside_dpop() -> None:
    """Enabling DPoP changes nothing for Bearer."""
    assert credentials(f"Bearer {TOKEN}".encode(), dpop=True) == (TOKEN, HEADER)


# -- challenges ------------------------------------------------------------------------------

ALGS = 'algs="ES256 EdDSA"'


@pytest.mark.parametrize(
    ("schemes", "error", "expected"),
    [
        (("Bearer", "DPoP"), MissingToken(), f'Bearer realm="r", DPoP realm="r", {ALGS}'),
        (("DPoP",), MissingToken(), f'DPoP realm="r", {ALGS}'),
        (("Bearer",), MissingToken(), 'Bearer realm="r"'),
        (
            ("Bearer", "DPoP"),
            InvalidProof(Reason.DPOP_INVALID),
            'DPoP realm="r", error="invalid_dpop_proof", error_description="The DPoP proof is '
            f'invalid.", {ALGS}, Bearer realm="r"',
        ),
        (
            ("DPoP",),
            InvalidToken(Reason.DPOP_REQUIRED),
            'DPoP realm="r", error="invalid_token", error_description="The access token is '
            f'invalid.", {ALGS}',
        ),
    ],
)
def test_a_401_carries_the_error_on_its_scheme_and_names_the_other(
    schemes: tuple[str, ...], error: Any, expected: str
) -> None:
    """RFC 9449 §7.1-7.2: the request's scheme carries the error; a 401 lists the other
    accepted scheme after it, in one field value; a scheme not accepted is never named."""
    challenge = Challenge(realm="r", schemes=schemes, dpop_algs=("ES256", "EdDSA"))
    headers = dict(render(error, challenge).headers)
    assert headers["www-authenticate"] == expected


def test_a_403_names_only_its_own_scheme() -> None:
    """Not a 401: no second challenge (the client authenticated fine)."""
    from jwt_middleware import InsufficientScope

    challenge = Challenge(schemes=("Bearer", "DPoP"), dpop_algs=("ES256",))
    value = dict(render(InsufficientScope(["a"]), challenge).headers)["www-authenticate"]
    assert value.startswith("Bearer ") and "DPoP" not in value


def test_use_dpop_nonce_sends_the_nonce_header() -> None:
    """use_dpop_nonce: 401, its error on the DPoP challenge, the nonce in DPoP-Nonce."""
    rendered = render(UseDPoPNonce("n-1"), Challenge(schemes=("Bearer", "DPoP")))
    assert rendered.status == 401
    headers = dict(rendered.headers)
    assert headers["dpop-nonce"] == "n-1"
    assert headers["www-authenticate"].startswith('DPoP realm="api", error="use_dpop_nonce"')


# -- configuration -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"dpop": "yes"}, "dpop must be"),
        ({"dpop": "required", "header": False, "cookie": "t"}, "needs header=True"),
        ({"dpop_algorithms": ["HS256"]}, "asymmetric"),
        ({"dpop_algorithms": []}, "asymmetric"),
        ({"dpop_algorithms": "ES256"}, "must be a list"),
        ({"dpop_max_age": -1}, "dpop_max_age"),
        ({"dpop_leeway": float("nan")}, "dpop_leeway"),
        ({"dpop_nonce_lifetime": 0}, "dpop_nonce_lifetime"),
        ({"dpop_replay": object()}, "first_use"),
        ({"dpop_nonce_secret": "short"}, "32 bytes"),
        ({"dpop_replay_fail_open": "false"}, "True or False"),
        ({"public_url": "http://api.example"}, "https"),
        ({"public_url": "https://api.example/?a=1"}, "no query"),
        ({"trusted_proxies": ["not an ip"]}, "not an IP"),
        ({"trusted_proxies": "10.0.0.1"}, "must be a list"),
        ({"client_cert_header": "client-cert"}, "trusted_proxies"),
        ({"client_cert_header": "bad header", "trusted_proxies": ["10.0.0.1"]}, "header name"),
    ],
)
def test_bad_sender_settings_fail_at_construction(options: dict[str, Any], message: str) -> None:
    """Each mistake is a ConfigurationError naming the option, never a surprise per request."""
    with pytest.raises(ConfigurationError, match=message):
        settings(**options)


def test_an_async_replay_store_is_refused_under_wsgi() -> None:
    """The WSGI verifier cannot await a store: refused at construction."""

    class AsyncStore:
        async def first_use(self, jkt: str, jti: str, until: float, now: float) -> bool:
            return True

    with pytest.raises(ConfigurationError, match="async DPoP replay store"):
        SyncVerifier(settings(dpop_replay=AsyncStore()))


def test_the_settings_choose_the_challenge_schemes() -> None:
    """allowed: Bearer then DPoP; required: DPoP; off, or no header: Bearer."""
    assert settings().challenge.schemes == ("Bearer", "DPoP")
    assert settings(dpop="required").challenge.schemes == ("DPoP",)
    assert settings(dpop="off").challenge.schemes == ("Bearer",)
    assert settings(header=False, cookie="t").challenge.schemes == ("Bearer",)
    assert settings(dpop_algorithms=["EdDSA", "EdDSA"]).challenge.dpop_algs == ("EdDSA",)


def test_a_full_replay_store_is_refused_even_when_failing_open() -> None:
    """dpop_replay_fail_open covers a store that cannot answer, never a full one: letting
    unrecorded proofs in would make each of them replayable."""
    from jwt_middleware import ReplayStoreError, ReplayUnavailable
    from jwt_middleware.replay import ReplayFull

    sender = Sender(settings(dpop_replay_fail_open=True))
    assert sender.replay_failed(ReplayStoreError("down")) is True
    with pytest.raises(ReplayUnavailable):
        sender.replay_failed(ReplayFull("full"))


def test_the_nonce_secret_is_not_in_the_settings_repr() -> None:
    """repr(Settings) ends up in logs and tracebacks: the nonce secret stays out of it."""
    assert "s3cret" not in repr(settings(dpop_nonce_secret="s3cret" * 8))
