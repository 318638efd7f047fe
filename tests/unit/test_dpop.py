"""jwt_middleware._dpop: RFC 9449 §4.3 proof checks (each as a refusal and its positive case),
the RFC 7638 thumbprint, the ``ath`` hash and the ``htu`` comparison."""

from __future__ import annotations

import hashlib
import json
import threading
from typing import Any

import pytest

from jwt_middleware import InvalidToken, Reason
from jwt_middleware import _b64 as b64
from jwt_middleware._dpop import (
    MAX_PROOF_BYTES,
    ProofRules,
    jwk_thumbprint,
    normalized_url,
    token_hash,
)
from jwt_middleware._errors import UnusableKey
from jwt_middleware.replay import MemoryReplayStore, ReplayFull
from jwt_middleware.testing import OMIT, LocalIssuer, SigningKey, dpop_proof, generate_key

NOW = 1_800_000_000.0
URL = "https://api.example.com/orders"
TOKEN = "eyJhbGciOiJFUzI1NiJ9.eyJzdWIiOiJhIn0.c2ln"


def proof(key: SigningKey, claims: dict[str, Any] | None = None, **headers: Any) -> str:
    """A DPoP proof for GET ``URL`` at ``NOW`` bound to ``TOKEN``; arguments override."""
    body = {"jti": "j-1", "htm": "GET", "htu": URL, "iat": NOW, "ath": token_hash(TOKEN)}
    body.update(claims or {})
    header = {"typ": "dpop+jwt", "jwk": key.public_jwk(), **headers}
    return key.sign(body, header, kid=None)


def _case_id(value: object) -> str:
    if not isinstance(value, dict):
        return str(value)
    return ",".join(f"{k}={'omitted' if v is OMIT else str(v)[:24]}" for k, v in value.items())


def check(value: str, rules: ProofRules | None = None, **overrides: Any) -> Any:
    request = {"method": "GET", "url": URL, "access_token": TOKEN, "now": NOW, **overrides}
    return (rules or ProofRules()).check(value, **request)


def refused(value: str, match: str, rules: ProofRules | None = None, **overrides: Any) -> None:
    with pytest.raises(InvalidToken) as caught:
        check(value, rules, **overrides)
    assert caught.value.reason == Reason.DPOP_INVALID
    assert match in caught.value.detail, caught.value.detail


@pytest.fixture(scope="module", params=["ES256", "EdDSA", "PS256", "RS256"])
def key(request: pytest.FixtureRequest) -> SigningKey:
    """A client's proof key, for each default algorithm."""
    return generate_key(request.param)


def test_a_proof_that_passes_every_check_gives_its_key_thumbprint(key: SigningKey) -> None:
    """A good proof: the result names the key's RFC 7638 thumbprint, its jti and its iat."""
    result = check(proof(key))
    assert result == (jwk_thumbprint(key.public_jwk()), "j-1", NOW, None)


def test_the_thumbprint_is_rfc_7638s() -> None:
    """RFC 7638 §3.1's example RSA key has the thumbprint printed there."""
    jwk = {
        "kty": "RSA",
        "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6t"
        "Soc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGj"
        "QR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFT"
        "WhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
        "e": "AQAB",
        "alg": "RS256",
        "kid": "2011-04-29",
    }
    assert jwk_thumbprint(jwk) == "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs"
    with pytest.raises(UnusableKey):
        jwk_thumbprint({"kty": "oct", "k": "c2VjcmV0"})


def test_ath_is_the_base64url_sha256_of_the_token() -> None:
    """RFC 9449 §4.2: ath = base64url(SHA-256(ASCII(access token)))."""
    assert token_hash(TOKEN) == b64.encode(hashlib.sha256(TOKEN.encode()).digest())


@pytest.mark.parametrize(
    ("header", "match"),
    [
        ({"typ": "JWT"}, "typ_mismatch"),
        ({"typ": OMIT}, "typ_mismatch"),
        ({"alg": "HS256"}, "alg_not_allowed"),
        ({"alg": "none"}, "alg_not_allowed"),
        ({"jwk": OMIT}, "no jwk"),
        ({"jwk": "a string"}, "no jwk"),
        ({"crit": ["exp"]}, "crit_unsupported"),
    ],
    ids=["typ-jwt", "no-typ", "hmac", "none", "no-jwk", "jwk-string", "crit"],
)
def test_a_proof_header_outside_the_rules_is_refused(header: dict[str, Any], match: str) -> None:
    """typ dpop+jwt, an asymmetric alg, a jwk object and no crit, or dpop_invalid."""
    refused(proof(generate_key("ES256"), **header), match)


def test_a_jwk_with_private_members_is_refused() -> None:
    """A proof carrying its private key (``d``) is refused, never used."""
    key = generate_key("ES256")
    jwk = dict(key.public_jwk())
    jwk["d"] = "AAAA"
    refused(proof(key, jwk=jwk), "private")


def test_a_jwk_of_another_type_than_the_alg_is_refused() -> None:
    """An RS256 header over an EC jwk: the key cannot verify that alg."""
    key = generate_key("ES256")
    refused(proof(key, alg="RS256"), "does not fit")


def test_a_proof_signed_by_another_key_than_its_jwk_is_refused() -> None:
    """The jwk of one key over a signature by another: the signature check fails."""
    signer, named = generate_key("ES256"), generate_key("ES256")
    refused(proof(signer, jwk=named.public_jwk()), "signature")


def test_an_oversized_proof_is_refused_before_parsing() -> None:
    """A proof over the size bound (a huge jwk) costs no parse."""
    key = generate_key("ES256")
    refused(proof(key, {"pad": "x" * MAX_PROOF_BYTES}), "bytes")


@pytest.mark.parametrize(
    ("claims", "match"),
    [
        ({"jti": OMIT}, "jti"),
        ({"jti": ""}, "jti"),
        ({"jti": 7}, "jti"),
        ({"jti": "j" * 257}, "jti"),
        ({"htm": OMIT}, "htm"),
        ({"htm": "POST"}, "htm"),
        ({"htm": "get"}, "htm"),
        ({"htu": OMIT}, "htu"),
        ({"htu": "https://api.example.com/other"}, "htu"),
        ({"htu": "https://evil.example/orders"}, "htu"),
        ({"htu": "http://api.example.com/orders"}, "htu"),
        ({"htu": "/orders"}, "htu"),
        ({"iat": OMIT}, "iat"),
        ({"iat": "now"}, "iat"),
        ({"iat": True}, "iat"),
        ({"iat": NOW + 6}, "ahead"),
        ({"iat": NOW - 301}, "old"),
        ({"ath": OMIT}, "ath"),
        ({"ath": token_hash("another.token.here")}, "ath"),
    ],
    ids=lambda value: _case_id(value),
)
def test_a_proof_claim_that_does_not_fit_the_request_is_refused(
    claims: dict[str, Any], match: str
) -> None:
    """jti, htm, htu, iat and ath each refused when missing, malformed or for another request."""
    refused(proof(generate_key("ES256"), claims), match)


def test_iat_is_accepted_at_the_edges_of_its_window() -> None:
    """``leeway`` ahead and ``max_age`` back are still accepted; the window is configurable."""
    key = generate_key("ES256")
    assert check(proof(key, {"iat": NOW + 5}))
    assert check(proof(key, {"iat": NOW - 300}))
    strict = ProofRules(max_age=10, leeway=0)
    refused(proof(key, {"iat": NOW - 11}), "old", strict)
    refused(proof(key, {"iat": NOW + 1}), "ahead", strict)


def test_a_proof_without_a_token_needs_no_ath() -> None:
    """With no access token to bind (``access_token=None``), ath is not required."""
    key = generate_key("ES256")
    assert check(proof(key, {"ath": OMIT}), access_token=None).jti == "j-1"


@pytest.mark.parametrize(
    "htu",
    [
        "HTTPS://API.EXAMPLE.COM/orders",
        "https://api.example.com:443/orders",
        "https://api.example.com/orders?page=2",
        "https://api.example.com/orders#top",
    ],
    ids=["case", "default-port", "query", "fragment"],
)
def test_htu_is_compared_after_rfc3986_normalisation(htu: str) -> None:
    """Scheme and host case, a default port, the query and the fragment do not matter."""
    assert check(proof(generate_key("ES256"), {"htu": htu}))


def test_the_path_is_compared_exactly() -> None:
    """Path case and a trailing slash do matter: they name another resource."""
    key = generate_key("ES256")
    refused(proof(key, {"htu": URL.upper().replace("HTTPS://API.EXAMPLE.COM", URL[:23])}), "htu")
    refused(proof(key, {"htu": URL + "/"}), "htu")


@pytest.mark.parametrize(
    ("url", "normal"),
    [
        ("https://Example.COM:443/a?b#c", "https://example.com/a"),
        ("http://example.com:8080", "http://example.com:8080/"),
        ("https://[::1]:8443/x", "https://[::1]:8443/x"),
        ("ftp://example.com/", None),
        ("https://user@example.com/", None),
        ("https://example.com:99999/", None),
        ("not a url", None),
        ("https://e.example/%7efoo/x%2fy", "https://e.example/~foo/x%2Fy"),
        ("https://e.example/a/./b/../c", "https://e.example/a/c"),
        ("https://e.example/a/b/..", "https://e.example/a/"),
        ("https://e.example/../../x", "https://e.example/x"),
    ],
)
def test_normalized_url(url: str, normal: str | None) -> None:
    """What htu and the request URL are compared as (None: not a usable http(s) URL)."""
    assert normalized_url(url) == normal


def test_a_clients_key_is_parsed_once_per_distinct_header() -> None:
    """The proof key is cached by header segment; another jwk in another header is its own."""
    rules = ProofRules()
    key, other = generate_key("ES256"), generate_key("ES256")
    first = check(proof(key, {"jti": "1"}), rules)
    second = check(proof(key, {"jti": "2"}), rules)
    third = check(proof(other, {"jti": "3"}), rules)
    assert first.jkt == second.jkt != third.jkt
    assert len(rules._keys) == 2


def test_the_proof_key_cache_stays_bounded_under_a_flood_of_keys() -> None:
    """Distinct keys beyond the cache size never grow it past the bound, and every proof is
    still checked with its own key."""
    rules = ProofRules(cache_size=3)
    keys = [generate_key("ES256") for _ in range(7)]
    for index, key in enumerate(keys):
        assert check(proof(key, {"jti": str(index)}), rules).jkt == key.thumbprint
        assert len(rules._keys) <= 3


@pytest.mark.parametrize(
    "options",
    [{"algorithms": ["HS256"]}, {"algorithms": []}, {"max_age": -1}, {"leeway": float("inf")}],
    ids=["hmac", "none", "negative-age", "infinite-leeway"],
)
def test_bad_rules_are_refused(options: dict[str, Any]) -> None:
    """Only asymmetric algorithms, and finite non-negative windows."""
    with pytest.raises(ValueError):
        ProofRules(**options)


def test_the_testing_helpers_build_a_bound_token_and_a_proof_that_fit(issuer: LocalIssuer) -> None:
    """``mint(dpop_key=)`` names the key in cnf.jkt; a ``dpop_proof`` by it passes every check."""
    client_key = generate_key("EdDSA")
    access = issuer.mint(dpop_key=client_key)
    made = dpop_proof(client_key, "POST", URL + "?page=1", access_token=access, now=NOW)
    checked = check(made, method="POST", access_token=access)
    assert checked.jkt == client_key.thumbprint
    payload = json.loads(b64.decode(access.split(".")[1]))
    assert payload["cnf"] == {"jkt": checked.jkt}
    nonce = dpop_proof(client_key, "GET", URL, nonce="n-1", claims={"jti": OMIT})
    assert json.loads(b64.decode(nonce.split(".")[1]))["nonce"] == "n-1"
    with pytest.raises(InvalidToken):
        check(nonce, access_token=None)  # no jti


# -- the in-process replay store ---------------------------------------------------------------


def test_a_proof_is_accepted_once_and_replays_are_seen() -> None:
    """The first use of (jkt, jti) is recorded; the same pair again is a replay until it expires."""
    store = MemoryReplayStore()
    assert store.first_use("k", "j1", until=NOW + 310, now=NOW)
    assert not store.first_use("k", "j1", until=NOW + 310, now=NOW + 300)
    assert store.first_use("other-key", "j1", until=NOW + 310, now=NOW)  # same jti, other key
    assert store.first_use("k", "j1", until=NOW + 700, now=NOW + 311)  # past its window


def test_a_full_store_refuses_rather_than_forget_a_live_proof() -> None:
    """Full of live entries: ReplayFull and nothing recorded; once entries expire, room again."""
    store = MemoryReplayStore(max_entries=2, max_per_key=2)
    assert store.first_use("k", "1", until=NOW + 10, now=NOW)
    assert store.first_use("k", "2", until=NOW + 20, now=NOW)
    with pytest.raises(ReplayFull):
        store.first_use("k", "3", until=NOW + 30, now=NOW + 5)
    assert len(store) == 2 and not store.first_use("k", "1", until=NOW + 10, now=NOW + 5)
    assert store.first_use("k", "3", until=NOW + 30, now=NOW + 11)  # "1" expired: its room
    assert not store.first_use("k", "2", until=NOW + 20, now=NOW + 11)


class _CountingStore(MemoryReplayStore):
    """Counts the rescans of the whole store."""

    scans = 0

    def _make_room(self, now: float) -> None:
        if now >= self._earliest:
            type(self).scans += 1
        super()._make_room(now)


def test_a_full_store_does_not_rescan_before_anything_can_expire() -> None:
    """A flood against a full store is refused without a scan per proof (bounded work)."""
    store = _CountingStore(max_entries=1000, max_per_key=1000)
    for i in range(1000):
        store.first_use("k", str(i), until=NOW + 300, now=NOW)
    for i in range(2000):
        with pytest.raises(ReplayFull):
            store.first_use("flood", str(i), until=NOW + 300, now=NOW + 1)
    assert _CountingStore.scans == 0
    assert store.first_use("late", "1", until=NOW + 700, now=NOW + 301)  # all expired: one scan
    assert _CountingStore.scans == 1


def test_concurrent_uses_of_one_proof_admit_exactly_one() -> None:
    """Threads racing the same (jkt, jti): one first use, every other sees a replay."""
    store = MemoryReplayStore()
    barrier = threading.Barrier(8)
    results: list[bool] = []

    def use() -> None:
        barrier.wait()
        results.append(store.first_use("k", "same", until=NOW + 300, now=NOW))

    threads = [threading.Thread(target=use) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) == [False] * 7 + [True]


@pytest.mark.parametrize("size", [0, -1, True, 1.5])
def test_the_store_bound_must_be_a_positive_integer(size: Any) -> None:
    """``max_entries`` is an int >= 1."""
    with pytest.raises(ValueError, match="max_entries"):
        MemoryReplayStore(max_entries=size)


def test_a_token_that_is_not_ascii_is_an_invalid_token_not_a_crash() -> None:
    """``token_hash`` of a non-ASCII string (a latin-1 header) raises InvalidToken."""
    with pytest.raises(InvalidToken):
        token_hash("tok\xe9n")


def test_a_proof_by_another_key_is_refused_before_its_signature_is_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the expected jkt given, a proof key that is not it is dpop_key_mismatch without a
    public-key operation (a client could otherwise make us verify 4096-bit RSA for nothing)."""
    from jwt_middleware._keys import Key

    calls: list[str] = []
    real = Key.verify

    def spy(self: Key, alg: str, signing_input: bytes, signature: bytes) -> bool:
        calls.append(alg)
        return real(self, alg, signing_input, signature)

    monkeypatch.setattr(Key, "verify", spy)
    key, other = generate_key("ES256"), generate_key("ES256")
    rules = ProofRules()
    with pytest.raises(InvalidToken) as refused:
        rules.check(proof(other), method="GET", url=URL, access_token=TOKEN, now=NOW,
                    jkt=key.thumbprint)  # fmt: skip
    assert refused.value.reason == Reason.DPOP_KEY_MISMATCH
    assert calls == []
    rules.check(proof(key), method="GET", url=URL, access_token=TOKEN, now=NOW, jkt=key.thumbprint)
    assert calls == ["ES256"]


def test_an_rsa_proof_key_over_4096_bits_is_refused() -> None:
    """Proof keys are bounded tighter than issuer keys: any client can send one."""
    big = generate_key("RS256", rsa_bits=4160)
    with pytest.raises(InvalidToken, match="jwk"):
        check(proof(big))


@pytest.mark.parametrize(
    ("htu", "path", "accepted"),
    [
        ("https://api.example.com/admin", "/public/../admin", False),
        ("https://api.example.com/admin", "/files/../../admin", False),
        ("https://api.example.com/public/../admin", "/public/../admin", True),
        ("https://api.example.com/public/../admin", "/admin", True),
        ("https://api.example.com/a/./b", "/a/b", True),
    ],
)
def test_dot_segments_are_resolved_in_htu_only(htu: str, path: str, accepted: bool) -> None:
    """The app routes on the request path as sent: a proof for /admin must not pass on
    /public/../admin. The proof's own htu is normalised (RFC 3986 §6.2.2)."""
    request_url = "https://api.example.com" + path
    made = proof(generate_key("ES256"), {"htu": htu})
    if accepted:
        check(made, url=request_url)
    else:
        with pytest.raises(InvalidToken, match="htu"):
            check(made, url=request_url)


def test_one_key_cannot_fill_the_replay_store_for_the_others() -> None:
    """A key holds at most max_per_key live entries (default a quarter of the store): over it,
    that key gets ReplayFull while other keys still record; once its entries expire, it may
    record again."""
    store = MemoryReplayStore(max_entries=8)
    assert store.max_per_key == 2
    assert store.first_use("mallory", "1", 200.0, 100.0)
    assert store.first_use("mallory", "2", 200.0, 100.0)
    with pytest.raises(ReplayFull, match="one DPoP key"):
        store.first_use("mallory", "3", 200.0, 100.0)
    assert store.first_use("alice", "1", 200.0, 100.0)
    assert store.first_use("mallory", "3", 400.0, 250.0)  # the first two expired at 200
    assert not store.first_use("mallory", "3", 400.0, 260.0)


def test_the_per_key_bound_holds_across_a_purge_of_the_full_store() -> None:
    """When a full store purges expired entries, each key's count is rebuilt from what is
    left, so the bound and the replay answers still hold."""
    store = MemoryReplayStore(max_entries=4, max_per_key=2)
    store.first_use("a", "1", 110.0, 100.0)
    store.first_use("b", "1", 110.0, 100.0)
    store.first_use("c", "1", 500.0, 100.0)
    store.first_use("c", "2", 500.0, 100.0)
    assert store.first_use("d", "1", 500.0, 200.0)  # full: a and b expired, purged
    assert len(store) == 3
    with pytest.raises(ReplayFull):
        store.first_use("c", "3", 500.0, 200.0)
    assert not store.first_use("c", "2", 500.0, 200.0)
