"""Settings validation: every mistake fails at construction with a ConfigurationError."""

from __future__ import annotations

import base64
import dataclasses
import logging
import math
from collections.abc import Callable
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from jwt_middleware import (
    ConfigurationError,
    Key,
    KeysUnavailable,
    Settings,
    SyncVerifier,
)
from jwt_middleware import _b64 as b64
from jwt_middleware._keys import KeySet
from jwt_middleware.revocation import MemoryRevocationStore
from jwt_middleware.testing import generate_key
from tests.support.clock import FakeClock
from tests.support.servers import free_port

ISS = "https://issuer.example"
AUD = "api://orders"

Make = Callable[..., Settings]


def b64e(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def ec_jwk(private_key: ec.EllipticCurvePrivateKey, **extra: Any) -> dict[str, Any]:
    n = private_key.public_key().public_numbers()
    return {
        "kty": "EC",
        "crv": "P-256",
        "x": b64e(n.x.to_bytes(32, "big")),
        "y": b64e(n.y.to_bytes(32, "big")),
        **extra,
    }


@pytest.fixture(scope="module")
def ec_priv() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


@pytest.fixture(scope="module")
def ec_key(ec_priv: ec.EllipticCurvePrivateKey) -> Key:
    pem = ec_priv.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return Key.from_pem(pem, kid="ec-1")


@pytest.fixture
def make(ec_key: Key) -> Make:
    def build(**overrides: Any) -> Settings:
        options: dict[str, Any] = {
            "issuer": ISS,
            "audience": AUD,
            "keys": [ec_key],
            "clock": FakeClock(),
        }
        options.update(overrides)
        return Settings(**options)

    return build


def refused(make: Make, match: str | None = None, **overrides: Any) -> ConfigurationError:
    with pytest.raises(ConfigurationError, match=match) as info:
        make(**overrides)
    return info.value


def test_baseline_is_valid(make: Make, ec_key: Key) -> None:
    """Issuer, audience and one static key make valid settings: no discovery, no remote keys."""
    s = make()
    assert s.issuers == {ISS} and s.audiences == {AUD}
    assert s.static_keys.kids == ["ec-1"]
    assert s.discovery_issuer is None and not s.remote


def test_configuration_error_is_a_value_error() -> None:
    """ConfigurationError is a ValueError."""
    assert issubclass(ConfigurationError, ValueError)


# == issuer / audience =======================================================================


@pytest.mark.parametrize("what", ["issuer", "audience"])
def test_missing_issuer_or_audience(what: str, make: Make) -> None:
    """A missing issuer or audience is refused, and the message names allow_any_issuer/audience."""
    exc = refused(make, **{what: None})
    assert f"allow_any_{what}" in str(exc)


@pytest.mark.parametrize("what", ["issuer", "audience"])
def test_both_set_and_waived(what: str, make: Make) -> None:
    """Setting an issuer (audience) together with allow_any_issuer (audience) is refused."""
    refused(make, "choose one", **{f"allow_any_{what}": True})


@pytest.mark.parametrize("what", ["issuer", "audience"])
def test_waived(what: str, make: Make) -> None:
    """With allow_any_issuer (audience) and no value, the accepted set is empty."""
    s = make(**{what: None, f"allow_any_{what}": True})
    assert getattr(s, what + "s") == frozenset()


@pytest.mark.parametrize("what", ["issuer", "audience"])
@pytest.mark.parametrize("value", [[], (), "", [""], [ISS, ""], [1], [None], [ISS, 2]])
def test_empty_or_non_string_names(what: str, value: Any, make: Make) -> None:
    """Empty lists, empty strings and non-strings as issuer or audience are refused."""
    refused(make, "non-empty", **{what: value})


@pytest.mark.parametrize("what", ["issuer", "audience"])
def test_lists_accepted(what: str, make: Make) -> None:
    """A list of issuers or audiences is accepted and kept as a set, duplicates merged."""
    s = make(**{what: ["a", "b", "a"]})
    assert getattr(s, what + "s") == {"a", "b"}


# == algorithms ==============================================================================


def test_algorithms_empty(make: Make) -> None:
    """An empty algorithms list is refused."""
    refused(make, "empty", algorithms=[])


@pytest.mark.parametrize("alg", ["none", "None", "NONE", "nOnE"])
def test_algorithm_none_any_case(alg: str, make: Make) -> None:
    """The algorithm 'none' is refused in any letter case."""
    refused(make, "none", algorithms=["ES256", alg])


@pytest.mark.parametrize("alg", ["ES224", "RS1024", "HS128", "es256", "ES256 ", "", "RSA-OAEP"])
def test_algorithm_unsupported(alg: str, make: Make) -> None:
    """Unknown algorithm names, wrong case and stray spaces included, are refused as unsupported."""
    refused(make, "unsupported", algorithms=[alg])


@pytest.mark.parametrize("alg", [None, 256, b"ES256"])
def test_algorithm_not_a_string(alg: Any, make: Make) -> None:
    """An algorithm that is not a str (None, int, bytes) is refused."""
    refused(make, algorithms=[alg])


def test_hs_alg_without_secret(make: Make) -> None:
    """An HS* algorithm with no HMAC secret is refused, even with a remote JWKS configured."""
    exc = refused(make, "HMAC secret", algorithms=["ES256", "HS256"])
    assert "HS256" in str(exc)
    # a remote source does not help: remote JWKS never supply secrets
    refused(
        make, "HMAC secret", algorithms=["HS256"], keys=[], jwks_url="https://keys.example/jwks"
    )


def test_secret_without_hs_alg(make: Make, ec_key: Key) -> None:
    """An HMAC secret among the keys without an HS* algorithm allowed is refused."""
    refused(make, "HS", keys=[ec_key, Key.from_secret(b"s" * 32, kid="h")])


def test_secret_with_hs_alg_ok(make: Make, ec_key: Key) -> None:
    """An HMAC secret next to an EC key is accepted when HS256 is allowed."""
    s = make(algorithms=["ES256", "HS256"], keys=[ec_key, Key.from_secret(b"s" * 32, kid="h")])
    assert sorted(s.static_keys.kids) == ["ec-1", "h"]


def test_secret_from_static_jwks_counts(make: Make) -> None:
    """An oct key in a static JWKS is the HMAC secret an HS256 setup needs."""
    jwks = {"keys": [{"kty": "oct", "k": b64e(b"s" * 32), "kid": "h"}]}
    s = make(algorithms=["HS256"], keys=[], jwks=jwks)
    assert s.static_keys.kids == ["h"]


def test_algorithms_copied(make: Make) -> None:
    """Settings keep their own tuple of algorithms: changing the list passed in has no effect."""
    algs = ["ES256"]
    s = make(algorithms=algs)
    algs.append("HS256")
    assert s.algorithms == ("ES256",)


# == numbers =================================================================================

POSITIVE = [
    "jwks_max_age",
    "jwks_cooldown",
    "jwks_timeout",
    "jwks_max_bytes",
    "max_token_bytes",
    "max_lifetime",
]


@pytest.mark.parametrize("name", POSITIVE)
@pytest.mark.parametrize("value", [0, -1, -0.5, math.nan, True, "10", None])
def test_non_positive_numbers(name: str, value: Any, make: Make) -> None:
    """Zero, negative, NaN, bool, str and None are refused for the positive numbers;
    max_lifetime=None means no limit."""
    if name == "max_lifetime" and value is None:
        assert make(max_lifetime=None).max_lifetime is None  # None means "no limit"
        return
    overrides: dict[str, Any] = {name: value}
    if name == "jwks_max_age":
        overrides["jwks_cooldown"] = 0.001  # keep the cooldown rule out of the way
    refused(make, name, **overrides)


@pytest.mark.parametrize("name", ["leeway", "jwks_max_stale"])
@pytest.mark.parametrize("value", [-1, -0.001, math.nan, True, "0", None])
def test_negative_numbers(name: str, value: Any, make: Make) -> None:
    """Negative, NaN, bool, str and None are refused for leeway and jwks_max_stale."""
    refused(make, name, **{name: value})


@pytest.mark.parametrize("name", ["leeway", "jwks_max_stale"])
def test_zero_allowed(name: str, make: Make) -> None:
    """Zero is accepted for leeway and jwks_max_stale."""
    assert getattr(make(**{name: 0}), name) == 0


@pytest.mark.parametrize(
    "overrides",
    [
        {"leeway": float("inf")},
        {"jwks_max_age": float("inf"), "jwks_cooldown": float("inf")},
        {"jwks_timeout": float("inf")},
        {"max_token_bytes": float("inf")},
    ],
    ids=["leeway", "jwks_max_age", "jwks_timeout", "max_token_bytes"],
)
def test_infinite_numbers_are_refused(overrides: dict[str, Any], make: Make) -> None:
    """Infinity is refused for leeway, jwks_max_age, jwks_timeout and max_token_bytes."""
    refused(make, **overrides)


def test_cooldown_above_max_age(make: Make) -> None:
    """A jwks_cooldown above jwks_max_age is refused; equal to it is accepted."""
    refused(make, "jwks_cooldown", jwks_max_age=10, jwks_cooldown=20)
    assert make(jwks_max_age=10, jwks_cooldown=10).jwks_cooldown == 10


# == requests ================================================================================


def test_no_token_location(make: Make) -> None:
    """With header=False and no cookie there is nowhere to read a token: refused."""
    refused(make, "token location", header=False)
    assert make(header=False, cookie="session").cookie == "session"


@pytest.mark.parametrize("name", ["", "a b", "a;b", "a=b", "a,b", 'a"b', "é", "a\n"])
def test_bad_cookie_name(name: str, make: Make) -> None:
    """Cookie names that are empty or hold spaces, separators, quotes or non-ASCII are refused."""
    refused(make, "cookie", cookie=name)


@pytest.mark.parametrize("name", ["session", "__Host-token", "a.b", "x_y~1"])
def test_good_cookie_name(name: str, make: Make) -> None:
    """RFC 6265 token cookie names, __Host- prefix included, are accepted."""
    assert make(cookie=name).cookie == name


@pytest.mark.parametrize("path", ["health", "", "*", b"/bytes", None])
def test_public_path_without_slash(path: Any, make: Make) -> None:
    """A public path that is not a str starting with '/' is refused."""
    refused(make, "public path", public_paths=["/ok", path])


def test_public_paths_ok(make: Make) -> None:
    """Public paths are kept as a set."""
    assert make(public_paths=["/health", "/docs"]).public_paths == {"/health", "/docs"}


@pytest.mark.parametrize("field", ["required_claims", "scope_claims"])
@pytest.mark.parametrize("value", [[""], [1], [None], ["ok", ""]])
def test_bad_claim_names(field: str, value: Any, make: Make) -> None:
    """required_claims and scope_claims refuse empty and non-string names."""
    refused(make, "claim names", **{field: value})


@pytest.mark.parametrize("name", ["scope_claims", "required_claims"])
def test_claim_name_lists_refuse_a_bare_string(name: str, make: Make) -> None:
    """scope_claims and required_claims refuse a bare string where a list is needed."""
    refused(make, **{name: "scope"})


@pytest.mark.parametrize("validator", ["not callable", 1, None])
def test_non_callable_validator(validator: Any, make: Make) -> None:
    """A validator that is not callable is refused."""
    refused(make, "validators", validators=[lambda c: True, validator])


def test_non_callable_on_error(make: Make) -> None:
    """An on_error that is not callable is refused."""
    refused(make, "on_error", on_error="log")


@pytest.mark.parametrize("typ", ["", "   ", 1])
def test_bad_typ(typ: Any, make: Make) -> None:
    """A typ that is empty, blank or not a string is refused."""
    refused(make, "typ", typ=typ)


@pytest.mark.parametrize(
    "overrides",
    [
        {"anonymous": "false"},
        {"revocation_fail_open": "false", "revocation": MemoryRevocationStore()},
        {"audience": None, "allow_any_audience": "false"},
        {"expose_error_details": "false"},
    ],
    ids=["anonymous", "revocation_fail_open", "allow_any_audience", "expose_error_details"],
)
def test_boolean_settings_must_be_bools(overrides: dict[str, Any], make: Make) -> None:
    """Boolean settings refuse the string 'false' (only True or False are accepted)."""
    refused(make, **overrides)


@pytest.mark.parametrize("overrides", [{"realm": None}, {"clock": None}], ids=["realm", "clock"])
def test_realm_and_clock_are_validated(overrides: dict[str, Any], make: Make) -> None:
    """realm=None and clock=None are refused."""
    refused(make, **overrides)


# == key URLs ================================================================================


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/jwks",
        "http://keys.internal/jwks",
        "http://10.0.0.1/jwks",
        "http://localhost.evil.example/jwks",
        "http://127.0.0.1.nip.io/jwks",
        "ftp://example.com/jwks",
        "file:///etc/jwks.json",
        "https:///jwks",
        "https://",
        "//example.com/jwks",
        "example.com/jwks",
        "",
    ],
)
def test_jwks_url_refused(url: str, make: Make) -> None:
    """A jwks_url that is not https (plain http only to loopback) or has no host is refused."""
    refused(make, "https", jwks_url=url)


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/jwks",
        "http://127.0.0.1:8080/jwks",
        "http://127.1.2.3/jwks",
        "http://[::1]/jwks",
        "http://[::1]:8443/jwks",
        "http://localhost/jwks",
        "http://LOCALHOST:9000/jwks",
        "https://example.com/jwks",
        "https://example.com:8443/.well-known/jwks.json",
    ],
)
def test_jwks_url_accepted(url: str, make: Make) -> None:
    """https URLs and http to 127.0.0.0/8, [::1] or localhost are accepted as jwks_url."""
    s = make(jwks_url=url)
    assert s.jwks_url == url and s.remote


def test_jwks_url_not_a_string(make: Make) -> None:
    """A jwks_url given as bytes is refused."""
    refused(make, "URL", jwks_url=b"https://example.com/jwks")


# == discovery ===============================================================================


def test_discovery_default_on_without_key_source(make: Make) -> None:
    """With no key source configured, OIDC discovery from the issuer is on."""
    s = make(keys=[])
    assert s.discovery_issuer == ISS and s.remote


@pytest.mark.parametrize(
    "source",
    [{"jwks_url": "https://example.com/jwks"}, {}],
    ids=["jwks_url", "keys"],
)
def test_discovery_default_off_with_a_key_source(source: dict[str, Any], make: Make) -> None:
    """With a jwks_url or static keys configured, discovery is off by default."""
    overrides: dict[str, Any] = {**source}
    if source:
        overrides["keys"] = []
    assert make(**overrides).discovery_issuer is None


def test_no_usable_key_source_refused(make: Make) -> None:
    """An empty static JWKS, or discovery turned off with no keys, is refused as no key source."""
    refused(make, "no key source", keys=[], jwks={"keys": []})
    refused(make, "no key source", keys=[], discovery=False)


def test_discovery_forced_on_with_keys(make: Make) -> None:
    """discovery=True turns discovery on even with static keys."""
    assert make(discovery=True).discovery_issuer == ISS


def test_discovery_with_two_issuers_refused(make: Make) -> None:
    """Discovery with two issuers is refused; two issuers with static keys are accepted."""
    refused(make, "exactly one issuer", keys=[], issuer=[ISS, "https://other.example"])
    refused(make, "exactly one issuer", discovery=True, issuer=[ISS, "https://other.example"])
    # fine when another key source is configured
    assert make(issuer=[ISS, "https://other.example"]).issuers == {ISS, "https://other.example"}


def test_discovery_with_any_issuer_refused(make: Make) -> None:
    """Discovery with allow_any_issuer is refused: it needs exactly one issuer."""
    refused(make, "exactly one issuer", keys=[], issuer=None, allow_any_issuer=True)


def test_discovery_issuer_must_be_https(make: Make) -> None:
    """A discovery issuer must be https, except http on loopback."""
    refused(make, "https", keys=[], issuer="http://issuer.example")
    assert make(keys=[], issuer="http://127.0.0.1:8000").discovery_issuer == "http://127.0.0.1:8000"


# == static keys =============================================================================


def test_static_jwks_parsed(make: Make, ec_priv: ec.EllipticCurvePrivateKey) -> None:
    """A static JWKS is parsed into a KeySet at construction."""
    s = make(keys=[], jwks={"keys": [ec_jwk(ec_priv, kid="j1")]})
    assert s.static_keys.kids == ["j1"]
    assert isinstance(s.static_keys, KeySet)


@pytest.mark.parametrize(
    "bad",
    [
        {"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA", "kid": "bad"},
        {"kty": "RSA", "n": "AQAB", "e": "AQAB", "kid": "bad"},
        {"kty": "AKP", "kid": "bad"},
        {"kty": "EC", "crv": "P-256", "kid": "bad", "use": "enc"},
    ],
    ids=["bad-point", "small-rsa", "unknown-kty", "enc"],
)
def test_static_jwks_with_a_bad_key_refused(
    bad: dict[str, Any], make: Make, ec_priv: ec.EllipticCurvePrivateKey
) -> None:
    """A static JWKS with one unusable key is refused, and the message names its kid."""
    exc = refused(make, "unusable", keys=[], jwks={"keys": [ec_jwk(ec_priv, kid="good"), bad]})
    assert "'bad'" in str(exc)


@pytest.mark.parametrize("jwks", [[], {"keys": {}}, {"key": []}, "x"])
def test_static_jwks_not_a_jwks(jwks: Any, make: Make) -> None:
    """A static jwks that is not an object with a 'keys' list is refused."""
    refused(make, "JWK Set", keys=[], jwks=jwks)


def test_static_jwks_mixing_symmetric_and_asymmetric(
    make: Make, ec_priv: ec.EllipticCurvePrivateKey
) -> None:
    """A static JWKS mixing an EC key and an HMAC secret is refused."""
    jwks = {"keys": [ec_jwk(ec_priv, kid="e"), {"kty": "oct", "k": b64e(b"s" * 32), "kid": "h"}]}
    refused(make, "mixes", keys=[], jwks=jwks, algorithms=["ES256", "HS256"])


def test_static_jwks_unhashable_kty_refused(
    make: Make, ec_priv: ec.EllipticCurvePrivateKey
) -> None:
    """A static JWK whose kty is a list is refused with a ConfigurationError."""
    refused(make, keys=[], jwks={"keys": [ec_jwk(ec_priv, kid="e"), {"kty": ["EC"]}]})


def test_kid_collision_between_keys_and_jwks(
    make: Make, ec_priv: ec.EllipticCurvePrivateKey, ec_key: Key
) -> None:
    """A kid used both by keys and by the static JWKS is refused, and the message names it."""
    exc = refused(make, "more than one", jwks={"keys": [ec_jwk(ec_priv, kid="ec-1")]})
    assert "ec-1" in str(exc)


def test_kid_collision_between_keys(make: Make, ec_key: Key) -> None:
    """Two keys with the same kid are refused."""
    other = Key.from_secret(b"s" * 32, kid="ec-1")
    refused(make, "more than one", keys=[ec_key, other], algorithms=["ES256", "HS256"])


def test_kid_less_keys_do_not_collide(make: Make, ec_priv: ec.EllipticCurvePrivateKey) -> None:
    """Keys without a kid never collide: two are both kept."""
    a = Key.from_jwk(ec_jwk(ec_priv))
    b = Key.from_jwk(ec_jwk(ec.generate_private_key(ec.SECP256R1())))
    assert len(make(keys=[a, b]).static_keys) == 2


@pytest.mark.parametrize("thing", ["-----BEGIN PUBLIC KEY-----", {"kty": "EC"}, None, b"secret"])
def test_keys_must_be_key_objects(thing: Any, make: Make, ec_key: Key) -> None:
    """keys holding a PEM string, a dict, None or bytes is refused, pointing to Key.from_pem."""
    exc = refused(make, "Key objects", keys=[ec_key, thing])
    assert "Key.from_pem" in str(exc)


def test_keys_must_be_key_objects_not_crypto_objects(
    make: Make, ec_priv: ec.EllipticCurvePrivateKey
) -> None:
    """keys holding a cryptography public key object is refused."""
    refused(make, "Key objects", keys=[ec_priv.public_key()])


# == frozen ==================================================================================


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("issuer", "https://evil.example"),
        ("leeway", 1e9),
        ("algorithms", ("HS256",)),
        ("issuers", frozenset({"x"})),
        ("static_keys", KeySet()),
    ],
)
def test_settings_frozen(field: str, value: Any, make: Make) -> None:
    """Settings are frozen: assigning a field raises FrozenInstanceError and keeps the value."""
    s = make()
    before = getattr(s, field)
    with pytest.raises(dataclasses.FrozenInstanceError):
        setattr(s, field, value)
    assert getattr(s, field) == before or getattr(s, field) is before


def test_sequences_are_frozen_copies(make: Make, ec_key: Key) -> None:
    """Sequences passed in are copied to tuples/frozensets: later changes do not reach Settings."""
    keys = [ec_key]
    validators: list[Any] = [lambda c: True]
    s = make(keys=keys, validators=validators, required_claims=["jti"])
    keys.append(Key.from_secret(b"s" * 32))
    validators.append(lambda c: False)
    assert s.keys == (ec_key,) and len(s.validators) == 1
    assert isinstance(s.required_claims, tuple)
    assert isinstance(s.public_paths, frozenset)


# == secrets in reprs, errors and logs ========================================================


def test_settings_repr_and_url_errors_never_show_url_secrets() -> None:
    """A jwks_url's credentials and query stay out of the Settings repr and of startup errors."""
    url = "https://svc:hunter2@keys.example/jwks?api_key=s3cret"
    settings = Settings(issuer="https://i.example", audience="a", jwks_url=url)
    assert "hunter2" not in repr(settings) and "s3cret" not in repr(settings)
    with pytest.raises(ConfigurationError) as caught:
        Settings(issuer="https://i.example", audience="a", jwks_url=url.replace("https", "http"))
    assert "hunter2" not in str(caught.value) and "s3cret" not in str(caught.value)


@pytest.mark.parametrize(
    ("url", "secret"),
    [
        ("https://svc:p@ss@keys.example/jwks", "ss@"),
        ("https://svc:pa/ss@keys.example/jwks", "pa/ss"),
        ("http://svc:p w@keys.example/jwks", "p w"),
    ],
)
def test_passwords_holding_at_slash_or_space_never_reach_an_error(url: str, secret: str) -> None:
    """A key URL whose password holds '@', '/' or a space is refused at startup (or kept) without
    any part of the password in the message or the repr."""
    try:
        settings = Settings(issuer="https://i.example", audience="a", jwks_url=url)
    except ConfigurationError as exc:
        assert secret not in str(exc)
    else:
        assert secret not in repr(settings)
    from jwt_middleware._errors import redact

    assert secret not in redact(f"{url} answered HTTP 500")
    assert secret not in redact(f"jwks_url {url!r} is not a valid URL")


def test_a_key_url_httpx_cannot_parse_is_refused_at_startup() -> None:
    """jwks_url is parsed by the client that fetches it: what httpx refuses fails at startup,
    not on every fetch (where its message would be logged)."""
    with pytest.raises(ConfigurationError, match="not a valid URL"):
        Settings(issuer="https://i.example", audience="a", jwks_url="https://u:pa/ss@host/jwks")


def test_settings_repr_does_not_show_hmac_secrets() -> None:
    """The Settings repr does not show an HMAC secret from a static JWKS."""
    secret = b"do-not-log-this-hmac-secret-0123456789"
    k = b64.encode(secret)
    settings = Settings(
        issuer="https://iss.example",
        audience="api://x",
        algorithms=["HS256"],
        jwks={"keys": [{"kty": "oct", "k": k, "kid": "s1"}]},
    )
    assert k not in repr(settings)


def test_jwks_url_credentials_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    """Credentials in a jwks_url appear in neither the logs nor the 503 detail of a failed fetch."""
    url = f"http://svc:hunter2-password@127.0.0.1:{free_port()}/jwks"  # nothing listens there
    settings = Settings(issuer="https://iss.example", audience="api://x", jwks_url=url)
    verifier = SyncVerifier(settings)
    caplog.set_level(logging.DEBUG, logger="jwt_middleware")
    claims = {"iss": "https://iss.example", "aud": "api://x", "exp": 4_000_000_000}
    try:
        with pytest.raises(KeysUnavailable) as unavailable:
            verifier.verify(generate_key("RS256").sign(claims))
    finally:
        verifier.close()
    assert "hunter2" not in caplog.text
    assert "hunter2" not in unavailable.value.detail
