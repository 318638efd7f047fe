"""LocalIssuer over real HTTP on loopback: discovery, JWKS, minting, rotation and faults."""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import jwt
import pytest

from jwt_middleware.testing import OMIT, LocalIssuer, SigningKey, generate_key

PRIVATE_MEMBERS = {"d", "p", "q", "dp", "dq", "qi", "k", "oth"}


@pytest.fixture
def local() -> Iterator[LocalIssuer]:
    # ES256: the server behaviour does not depend on the algorithm, and EC keys are quick to make.
    with LocalIssuer(algorithm="ES256", audience="api://tests") as issuer:
        yield issuer


@pytest.fixture
def client() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5) as http:
        yield http


def served_key(issuer: LocalIssuer, kid: str) -> jwt.PyJWK:
    keys = httpx.get(issuer.jwks_url, timeout=5).json()["keys"]
    return jwt.PyJWK({"kid": kid, **next(k for k in keys if k["kid"] == kid)})


def b64decode(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def header_of(token: str) -> dict[str, Any]:
    # Parsed by hand: PyJWT refuses some of the odd headers these tests make on purpose.
    return dict(json.loads(b64decode(token.split(".")[0])))


def claims_of(token: str) -> dict[str, Any]:
    return dict(json.loads(b64decode(token.split(".")[1])))


# -- keys and signing ---------------------------------------------------------------------------


@pytest.mark.parametrize("alg", ["RS256", "PS256", "ES256", "ES384", "EdDSA"])
def test_minted_token_verifies_with_the_served_jwk(alg: str, client: httpx.Client) -> None:
    """A minted token verifies against the served JWK and the PEM, with a 300 s lifetime."""
    with LocalIssuer(algorithm=alg) as issuer:
        token = issuer.mint(subject="alice", scope="read write")
        kid = header_of(token)["kid"]
        assert kid == issuer.current_key.kid
        jwk = next(k for k in client.get(issuer.jwks_url).json()["keys"] if k["kid"] == kid)
        assert jwk["alg"] == alg and jwk["use"] == "sig"
        claims = jwt.decode(
            token,
            key=jwt.PyJWK(jwk),
            algorithms=[alg],
            audience=issuer.audience,
            issuer=issuer.issuer,
        )
        assert claims["sub"] == "alice"
        assert claims["scope"] == "read write"
        assert claims["exp"] - claims["iat"] == 300
        # The PEM form is the same public key.
        pem_claims = jwt.decode(
            token, issuer.current_key.public_pem(), algorithms=[alg], audience=issuer.audience
        )
        assert pem_claims == claims


@pytest.mark.parametrize(
    ("alg", "kty", "crv"),
    [
        ("RS256", "RSA", None),
        ("ES256", "EC", "P-256"),
        ("ES384", "EC", "P-384"),
        ("EdDSA", "OKP", "Ed25519"),
    ],
)
def test_public_jwk_has_only_public_members(alg: str, kty: str, crv: str | None) -> None:
    """public_jwk() carries kty, crv, kid, alg and use=sig, and no private member."""
    jwk = generate_key(alg, kid="k1", rsa_bits=2048).public_jwk()
    assert jwk["kty"] == kty and jwk.get("crv") == crv
    assert jwk["kid"] == "k1" and jwk["alg"] == alg and jwk["use"] == "sig"
    assert not PRIVATE_MEMBERS & jwk.keys()


@pytest.mark.parametrize(("alg", "size"), [("HS256", 32), ("HS384", 48), ("HS512", 64)])
def test_hmac_keys_are_never_published(alg: str, size: int) -> None:
    """HMAC keys have the hash's size, refuse public_jwk/public_pem and leave the JWKS empty."""
    key = generate_key(alg)
    assert isinstance(key.private_key, bytes) and len(key.private_key) == size
    with pytest.raises(ValueError):
        key.public_jwk()
    with pytest.raises(ValueError):
        key.public_pem()
    with LocalIssuer(algorithm=alg) as issuer:
        assert issuer.jwks() == {"keys": []}
        assert httpx.get(issuer.jwks_url).json() == {"keys": []}
        token = issuer.mint()
        claims = jwt.decode(
            token, issuer.current_key.private_key, algorithms=[alg], audience=issuer.audience
        )
        assert claims["iss"] == issuer.issuer


def test_generated_kids_differ_and_secrets_stay_out_of_repr() -> None:
    """Generated kids are distinct and 8+ chars, repr hides the secret; unknown algorithms raise."""
    first, second = generate_key("HS256"), generate_key("HS256")
    assert first.kid != second.kid and len(first.kid) >= 8
    assert repr(first.private_key) not in repr(first)
    with pytest.raises(ValueError):
        generate_key("none")
    with pytest.raises(ValueError):
        SigningKey(kid="x", alg="RS1", private_key=b"")


def test_sign_header_controls() -> None:
    """sign() sets alg, typ and kid, honours kid=None, overrides and OMIT, and
    signs a header lying about alg with the key's real algorithm."""
    key = generate_key("ES256", kid="key-a")
    assert header_of(key.sign({"a": 1})) == {"alg": "ES256", "typ": "JWT", "kid": "key-a"}
    assert "kid" not in header_of(key.sign({"a": 1}, kid=None))
    assert header_of(key.sign({}, kid="other"))["kid"] == "other"
    odd = key.sign({}, {"typ": OMIT, "crit": ["exp"], "kid": 7, "alg": "HS256"})
    assert header_of(odd) == {"alg": "HS256", "crit": ["exp"], "kid": 7}
    # A header that lies about "alg" is still signed with the key's real algorithm.
    signing_input, _, signature = odd.rpartition(".")
    es256 = jwt.PyJWS().get_algorithm_by_name("ES256")
    public = jwt.PyJWK(key.public_jwk()).key
    assert es256.verify(signing_input.encode(), public, b64decode(signature))
    assert not es256.verify(signing_input.encode() + b"x", public, b64decode(signature))


# -- minting ------------------------------------------------------------------------------------


def test_mint_default_and_overridden_claims(local: LocalIssuer) -> None:
    """mint() sets iss, sub, aud, iat, exp (iat + 300) and a fresh jti; each claim
    can be overridden or omitted."""
    claims = claims_of(local.mint(now=1_800_000_000))
    assert claims.keys() == {"iss", "sub", "aud", "iat", "exp", "jti"}
    assert claims["iss"] == local.issuer and claims["aud"] == "api://tests"
    assert claims["sub"] == "user-1"
    assert (claims["iat"], claims["exp"]) == (1_800_000_000, 1_800_000_300)
    assert isinstance(claims["exp"], int)

    custom = claims_of(
        local.mint(
            {"iss": "https://evil.example", "aud": OMIT, "jti": OMIT, "extra": [1, 2]},
            subject="bob",
            scope="admin",
            now=1000,
            expires_in=None,
            issued_at=900,
            not_before=950,
        )
    )
    assert custom == {
        "iss": "https://evil.example",
        "sub": "bob",
        "iat": 900,
        "nbf": 950,
        "scope": "admin",
        "extra": [1, 2],
    }
    assert claims_of(local.mint(audience=["a", "b"]))["aud"] == ["a", "b"]
    assert "aud" not in claims_of(local.mint(audience=None))
    assert "jti" not in claims_of(local.mint(jti=False))
    assert claims_of(local.mint())["jti"] != claims_of(local.mint())["jti"]


def test_mint_key_kid_and_headers(local: LocalIssuer) -> None:
    """mint() signs with a given key, merges extra headers, and omits or overrides the kid."""
    other = generate_key("EdDSA", kid="side")
    token = local.mint(key=other, headers={"typ": "at+jwt"})
    assert header_of(token) == {"alg": "EdDSA", "typ": "at+jwt", "kid": "side"}
    assert "kid" not in header_of(local.mint(kid=None))
    assert header_of(local.mint(kid="ghost"))["kid"] == "ghost"


def test_configured_issuer_is_used_everywhere(client: httpx.Client) -> None:
    """A configured issuer URL appears in the property, the discovery document and minted iss."""
    with LocalIssuer(algorithm="ES256", issuer="https://idp.example/tenant") as issuer:
        assert issuer.issuer == "https://idp.example/tenant"
        assert client.get(issuer.discovery_url).json()["issuer"] == "https://idp.example/tenant"
        assert claims_of(issuer.mint())["iss"] == "https://idp.example/tenant"


# -- documents ----------------------------------------------------------------------------------


def test_discovery_document(local: LocalIssuer, client: httpx.Client) -> None:
    """Discovery is served as JSON on loopback with the issuer, jwks_uri and signing algorithms."""
    assert local.url.startswith("http://127.0.0.1:")
    assert local.issuer == local.url
    answer = client.get(local.discovery_url)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    document = answer.json()
    assert document["issuer"] == local.issuer
    assert document["jwks_uri"] == local.jwks_url == local.url + "/.well-known/jwks.json"
    assert document["id_token_signing_alg_values_supported"] == ["ES256"]
    assert document == local.discovery()


def test_jwks_document(local: LocalIssuer, client: httpx.Client) -> None:
    """The JWKS served holds exactly the current key, with no private members."""
    document = client.get(local.jwks_url).json()
    assert document == local.jwks()
    assert [k["kid"] for k in document["keys"]] == [local.current_key.kid]
    for jwk in document["keys"]:
        assert not PRIVATE_MEMBERS & jwk.keys()


def test_rotate_keeps_old_keys_unless_retired(local: LocalIssuer, client: httpx.Client) -> None:
    """rotate() publishes the new key beside the old; retire_old=True leaves only the new."""
    first = local.current_key
    second = local.rotate()
    assert local.current_key == second and second.kid != first.kid
    kids = [k["kid"] for k in client.get(local.jwks_url).json()["keys"]]
    assert kids == [first.kid, second.kid]
    assert header_of(local.mint())["kid"] == second.kid

    third = local.rotate("EdDSA", retire_old=True)
    assert third.alg == "EdDSA"
    assert [k["kid"] for k in client.get(local.jwks_url).json()["keys"]] == [third.kid]
    assert local.published_keys == [third]
    discovery = client.get(local.discovery_url).json()
    assert discovery["id_token_signing_alg_values_supported"] == ["EdDSA"]


def test_unpublish_and_add_key(local: LocalIssuer, client: httpx.Client) -> None:
    """add_key(publish=False) signs unpublished; unpublish is idempotent; published_keys copies."""
    original = local.current_key
    hidden = generate_key("ES256", kid="hidden")
    local.add_key(hidden, publish=False, make_current=True)
    assert header_of(local.mint())["kid"] == "hidden"
    assert [k["kid"] for k in client.get(local.jwks_url).json()["keys"]] == [original.kid]

    local.add_key(hidden)
    local.unpublish(original)
    local.unpublish(original)  # no-op the second time
    assert [k["kid"] for k in client.get(local.jwks_url).json()["keys"]] == ["hidden"]
    published = local.published_keys
    published.clear()  # a copy: the issuer is unaffected
    assert local.published_keys == [hidden]


def test_unknown_path_and_method(local: LocalIssuer, client: httpx.Client) -> None:
    """An unknown path is 404 and a POST to the JWKS is 405 with Allow: GET."""
    assert client.get(local.url + "/nope").status_code == 404
    answer = client.post(local.jwks_url, content=b"x" * 100)
    assert answer.status_code == 405 and answer.headers["allow"] == "GET"


def test_token_endpoint(client: httpx.Client) -> None:
    """/token serves a no-store Bearer token with the sub and scope asked (default user-1)."""
    with LocalIssuer() as issuer:
        answer = client.get(issuer.url + "/token", params={"sub": "carol", "scope": "read"})
        assert answer.status_code == 200
        assert answer.headers["cache-control"] == "no-store"
        body = answer.json()
        assert body["token_type"] == "Bearer" and body["expires_in"] == 300
        kid = header_of(body["access_token"])["kid"]
        claims = jwt.decode(
            body["access_token"],
            served_key(issuer, kid),
            algorithms=["RS256"],
            audience=issuer.audience,
            issuer=issuer.issuer,
        )
        assert claims["sub"] == "carol" and claims["scope"] == "read"
        plain = claims_of(client.get(issuer.url + "/token").json()["access_token"])
        assert plain["sub"] == "user-1" and "scope" not in plain


# -- accounting ---------------------------------------------------------------------------------


def test_request_counts_and_log(local: LocalIssuer, client: httpx.Client) -> None:
    """JWKS and discovery hits (faulted ones too) are counted and logged in order; reset clears."""
    assert (local.jwks_requests, local.discovery_requests) == (0, 0)
    client.get(local.discovery_url)
    client.get(local.jwks_url)
    client.get(local.jwks_url + "?x=1")
    local.set_fault("status", status=500)
    assert client.get(local.jwks_url).status_code == 500
    assert (local.jwks_requests, local.discovery_requests) == (3, 1)
    paths = [path for path, _ in local.request_log]
    assert paths == [
        "/.well-known/openid-configuration",
        "/.well-known/jwks.json",
        "/.well-known/jwks.json",
        "/.well-known/jwks.json",
    ]
    times = [at for _, at in local.request_log]
    assert times == sorted(times)
    local.reset_counts()
    assert (local.jwks_requests, local.discovery_requests, local.request_log) == (0, 0, [])


def test_concurrent_requests_are_all_counted(local: LocalIssuer) -> None:
    """Forty JWKS requests from eight threads all succeed and are all counted."""
    errors: list[BaseException] = []

    def fetch() -> None:
        try:
            with httpx.Client(timeout=5) as http:
                for _ in range(5):
                    assert http.get(local.jwks_url).status_code == 200
        except BaseException as error:  # reported below, on the test's thread
            errors.append(error)

    threads = [threading.Thread(target=fetch) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert local.jwks_requests == 40


# -- faults -------------------------------------------------------------------------------------


def test_down_refuses_connections_and_recovers_on_the_same_port(
    local: LocalIssuer, client: httpx.Client
) -> None:
    """The down fault refuses connections uncounted; clearing it serves again on the same port."""
    url = local.url
    assert client.get(local.jwks_url).status_code == 200  # leaves a keep-alive connection
    local.set_fault("down")
    assert local.fault == "down"
    with pytest.raises(httpx.ConnectError):
        client.get(local.jwks_url)
    with pytest.raises(httpx.ConnectError):
        httpx.get(local.discovery_url)
    assert local.jwks_requests == 1
    local.set_fault(None)
    assert local.url == url
    assert client.get(local.jwks_url).json() == local.jwks()
    # Down and up again, quickly: the port is reusable at once.
    local.set_fault("down")
    local.set_fault(None)
    assert client.get(local.jwks_url).status_code == 200


def test_slow_times_out_a_short_client_timeout(local: LocalIssuer, client: httpx.Client) -> None:
    """The slow fault delays JWKS answers past a short client timeout but leaves discovery alone."""
    local.set_fault("slow", delay=1.0)
    with pytest.raises(httpx.TimeoutException):
        client.get(local.jwks_url, timeout=0.2)
    local.set_fault("slow", delay=0.05)
    assert client.get(local.jwks_url, timeout=2).json() == local.jwks()
    assert client.get(local.discovery_url, timeout=0.2).status_code == 200  # not targeted


@pytest.mark.parametrize("status", [500, 404, 503])
def test_status(local: LocalIssuer, client: httpx.Client, status: int) -> None:
    """The status fault answers the JWKS with that status and a short body; discovery stays 200."""
    local.set_fault("status", status=status)
    answer = client.get(local.jwks_url)
    assert answer.status_code == status
    assert len(answer.content) < 200
    assert client.get(local.discovery_url).status_code == 200


def test_faults_can_target_discovery(local: LocalIssuer, client: httpx.Client) -> None:
    """A fault with paths=("discovery",) hits discovery only; both paths can be targeted at once."""
    local.set_fault("status", status=503, paths=("discovery",))
    assert client.get(local.discovery_url).status_code == 503
    assert client.get(local.jwks_url).status_code == 200
    local.set_fault("wrong_shape", body={"issuer": "https://other"}, paths=("jwks", "discovery"))
    assert client.get(local.discovery_url).json() == {"issuer": "https://other"}
    assert client.get(local.jwks_url).json() == {"issuer": "https://other"}
    assert local.discovery_requests == 2


def test_garbage_is_not_json(local: LocalIssuer, client: httpx.Client) -> None:
    """The garbage fault answers 200 application/json with a body that is not JSON."""
    local.set_fault("garbage")
    answer = client.get(local.jwks_url)
    assert answer.status_code == 200
    assert answer.headers["content-type"] == "application/json"
    with pytest.raises(json.JSONDecodeError):
        answer.json()


def test_wrong_shape(local: LocalIssuer, client: httpx.Client) -> None:
    """The wrong_shape fault serves {"keys": "nope"} by default, or the body it is given."""
    local.set_fault("wrong_shape")
    assert client.get(local.jwks_url).json() == {"keys": "nope"}
    local.set_fault("wrong_shape", body=[1, 2])
    assert client.get(local.jwks_url).json() == [1, 2]


def test_huge(local: LocalIssuer, client: httpx.Client) -> None:
    """The huge fault serves a valid JWKS padded to 1 MiB by default, or to the size asked."""
    local.set_fault("huge")
    answer = client.get(local.jwks_url)
    assert int(answer.headers["content-length"]) == len(answer.content) == 1 << 20
    assert answer.json()["keys"] == local.jwks()["keys"]
    local.set_fault("huge", size=3_000_000)
    assert len(client.get(local.jwks_url).content) == 3_000_000


def test_huge_client_hanging_up_early(local: LocalIssuer, client: httpx.Client) -> None:
    """A client hanging up mid-way through a huge answer leaves the issuer serving normally."""
    local.set_fault("huge", size=20_000_000)
    with client.stream("GET", local.jwks_url) as answer:
        assert next(answer.iter_bytes()).startswith(b'{"keys"')
    local.set_fault(None)
    assert client.get(local.jwks_url).status_code == 200


def test_redirect(local: LocalIssuer, client: httpx.Client) -> None:
    """The redirect fault answers 302 to a local JWKS path, or the status and location given."""
    local.set_fault("redirect")
    answer = client.get(local.jwks_url)
    assert answer.status_code == 302
    location = answer.headers["location"]
    assert location.startswith(local.url) and location != local.jwks_url
    followed = client.get(local.jwks_url, follow_redirects=True)
    assert followed.json() == local.jwks()
    local.set_fault("redirect", status=307, location="http://127.0.0.2:1/jwks")
    answer = client.get(local.jwks_url)
    assert (answer.status_code, answer.headers["location"]) == (307, "http://127.0.0.2:1/jwks")


def test_rotate_each_serves_a_new_key_every_time(local: LocalIssuer, client: httpx.Client) -> None:
    """The rotate_each fault serves a single new key on each fetch, never the current key."""
    local.set_fault("rotate_each")
    kid_sets = [{k["kid"] for k in client.get(local.jwks_url).json()["keys"]} for _ in range(3)]
    assert all(len(kids) == 1 for kids in kid_sets)
    assert len(set.union(*kid_sets)) == 3
    assert local.current_key.kid not in set.union(*kid_sets)


def test_truncated(local: LocalIssuer, client: httpx.Client) -> None:
    """The truncated fault cuts the answer short (protocol or read error); clearing it recovers."""
    local.set_fault("truncated")
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        client.get(local.jwks_url)
    local.set_fault(None)
    assert client.get(local.jwks_url).status_code == 200


def test_invalid_faults_are_rejected(local: LocalIssuer) -> None:
    """Unknown faults, options and paths raise ValueError/TypeError and leave no fault set."""
    with pytest.raises(ValueError):
        local.set_fault("explode")
    with pytest.raises(TypeError):
        local.set_fault("slow", seconds=1)
    with pytest.raises(ValueError):
        local.set_fault("status", paths=("token",))
    with pytest.raises(ValueError):
        local.set_fault("rotate_each", paths=("discovery",))
    assert local.fault is None


def test_cache_control(client: httpx.Client) -> None:
    """The JWKS carries the configured Cache-Control, which can be changed or removed live."""
    with LocalIssuer(algorithm="ES256", cache_control="max-age=60") as issuer:
        assert client.get(issuer.jwks_url).headers["cache-control"] == "max-age=60"
        issuer.cache_control = "no-store"
        assert client.get(issuer.jwks_url).headers["cache-control"] == "no-store"
        issuer.cache_control = None
        assert "cache-control" not in client.get(issuer.jwks_url).headers


def test_stop_closes_the_port_and_start_reopens_it(client: httpx.Client) -> None:
    """url raises before start; stop refuses connections and start reopens the same URL."""
    issuer = LocalIssuer(algorithm="ES256")
    with pytest.raises(RuntimeError):
        _ = issuer.url
    issuer.start()
    url = issuer.url
    assert client.get(issuer.jwks_url).status_code == 200
    issuer.stop()
    with pytest.raises(httpx.ConnectError):
        client.get(issuer.jwks_url)
    issuer.start()
    try:
        assert issuer.url == url
        assert client.get(issuer.jwks_url).status_code == 200
    finally:
        issuer.stop()


def test_stop_is_prompt_with_a_slow_request_in_flight(local: LocalIssuer) -> None:
    """stop() is prompt with a slow request in flight, which fails with a transport error."""
    local.set_fault("slow", delay=30)
    outcome: list[BaseException | int] = []

    def fetch() -> None:
        try:
            outcome.append(httpx.get(local.jwks_url, timeout=10).status_code)
        except BaseException as error:  # reported below, on the test's thread
            outcome.append(error)

    thread = threading.Thread(target=fetch)
    thread.start()
    while local.jwks_requests == 0:
        thread.join(0.01)
    local.stop()
    thread.join(5)
    assert not thread.is_alive()
    assert len(outcome) == 1 and isinstance(outcome[0], httpx.TransportError)


def test_an_issuer_not_started_says_how_to_start_it() -> None:
    """Its URLs before start(): a RuntimeError that names both ways to start it."""
    with pytest.raises(RuntimeError, match=r"with LocalIssuer\(\) as issuer.*start\(\)"):
        _ = LocalIssuer().jwks_url
