"""Every Wycheproof JWS/JWK vector, at the signature layer (keys → parse → find → verify).

The vectors are read in place from ../shared/vectors/wycheproof. A key set with any `problems`
counts as rejected, as Settings refuses such a configuration. Claims are not checked (the
payloads are not JWT claim sets).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from jwt_middleware import InvalidToken, Reason, UnusableKey
from jwt_middleware._jws import HeaderRules, parse
from jwt_middleware._keys import ASYMMETRIC_ALGORITHMS, HMAC_ALGORITHMS, KeySet

# Vendored (Apache-2.0, LICENSE beside them), so every clone runs them: no skip.
VECTORS = Path(__file__).resolve().parents[1] / "vectors" / "wycheproof"
FILES = {"jws": "json_web_signature_test.json", "jwk": "json_web_key_test.json"}

ACCEPTED = "accepted"


class Deviation(NamedTuple):
    expect: str  # ACCEPTED, or the Reason code (or "key") we reject with
    why: str


KNOWN_DEVIATIONS: dict[tuple[str, int], Deviation] = {
    ("jws", 346): Deviation(
        Reason.KEY_ALG_MISMATCH,
        "rfc7520 Figure20: the JWK says alg PS256 but the token is PS384. We bind a key to its "
        "JWK 'alg' (RFC 7517 §4.4, RFC 8725 §3.1), so it is refused.",
    ),
    ("jws", 350): Deviation(
        Reason.KEY_ALG_MISMATCH,
        "rfc7520WithKeyOps Figure20: same as 346 (JWK alg PS256, token PS384).",
    ),
    ("jws", 372): Deviation(
        Reason.MALFORMED_HEADER,
        "A '?' inserted into the header, labelled valid: strict base64url (RFC 7515 §2) refuses "
        "characters outside the alphabet rather than skipping them.",
    ),
    ("jws", 373): Deviation(
        Reason.MALFORMED_TOKEN,
        "A '?' inserted into the payload, labelled valid: strict base64url refuses it.",
    ),
    ("jws", 367): Deviation(
        ACCEPTED,
        "'invalidBase64Padding', labelled invalid, is byte-identical to tcId 357 (labelled "
        "valid) in this copy of the file; the labels contradict each other and we follow 357.",
    ),
    ("jws", 370): Deviation(
        ACCEPTED,
        "'invalidBase64PaddingInPayload', labelled invalid, is byte-identical to tcId 357 "
        "(labelled valid); we follow 357.",
    ),
}
# Deviations that exist only because the file repeats tcId 357 under a contradicting label.
IDENTICAL_TO = {("jws", 367): 357, ("jws", 370): 357}


class Case(NamedTuple):
    file: str
    tc_id: int
    group: dict[str, Any]
    test: dict[str, Any]

    @property
    def id(self) -> str:
        return f"{self.file}-{self.tc_id}-{self.group.get('comment', '')}-{self.test['comment']}"


def _load() -> tuple[dict[str, dict[str, Any]], list[Case]]:
    documents = {prefix: json.loads((VECTORS / name).read_text()) for prefix, name in FILES.items()}
    cases = [
        Case(prefix, test["tcId"], group, test)
        for prefix, document in documents.items()
        for group in document["testGroups"]
        for test in group["tests"]
    ]
    return documents, cases


DOCUMENTS, CASES = _load()
BY_ID = {(c.file, c.tc_id): c for c in CASES}
RULES = HeaderRules(ASYMMETRIC_ALGORITHMS | HMAC_ALGORITHMS.keys(), None)


def run(case: Case) -> str:
    """ACCEPTED, or why it was rejected: a Reason code, or 'key' for an unusable key set."""
    material = case.group.get("public", case.group.get("private"))
    document = (
        material if isinstance(material, dict) and "keys" in material else {"keys": [material]}
    )
    try:
        keyset, problems = KeySet.from_jwks(document, allow_symmetric=True)
    except UnusableKey:
        return "key"
    if problems:
        return "key"
    try:
        parsed = parse(case.test["jws"], RULES)
        key = keyset.find(parsed.header.kid, parsed.header.alg)
    except InvalidToken as exc:
        return exc.reason
    if not key.verify(parsed.header.alg, parsed.signing_input, parsed.signature):
        return Reason.SIGNATURE_INVALID
    return ACCEPTED


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_vector(case: Case) -> None:
    """Each Wycheproof vector is accepted if labelled valid and refused if invalid, or as its
    listed deviation expects.
    """
    outcome = run(case)
    deviation = KNOWN_DEVIATIONS.get((case.file, case.tc_id))
    if deviation is not None:
        assert outcome == deviation.expect, deviation.why
        return
    if case.test["result"] == "valid":
        assert outcome == ACCEPTED
    else:
        assert case.test["result"] == "invalid"
        assert outcome != ACCEPTED


@pytest.mark.parametrize("prefix", list(FILES))
def test_every_vector_is_run(prefix: str) -> None:
    """Every vector in each Wycheproof file is run, once per tcId."""
    run_here = [c for c in CASES if c.file == prefix]
    assert len(run_here) == DOCUMENTS[prefix]["numberOfTests"]
    assert len({c.tc_id for c in run_here}) == len(run_here)  # tcIds unique


def test_case_ids_unique() -> None:
    """The generated test ids of the Wycheproof cases are unique."""
    ids = [c.id for c in CASES]
    assert len(set(ids)) == len(ids)


def test_deviations_exist_and_contradict_the_label() -> None:
    """Each listed deviation names a real vector and expects the opposite of its label."""
    for key, deviation in KNOWN_DEVIATIONS.items():
        case = BY_ID[key]
        labelled_valid = case.test["result"] == "valid"
        assert labelled_valid != (deviation.expect == ACCEPTED), key


@pytest.mark.parametrize("key", list(IDENTICAL_TO), ids=lambda k: f"{k[0]}-{k[1]}")
def test_contradicting_duplicates_are_still_identical(key: tuple[str, int]) -> None:
    """tcIds 367 and 370 repeat valid tcId 357's token and keys exactly but are labelled invalid."""
    # If the file is fixed (the token differs from 357's), revisit the deviation.
    case, original = BY_ID[key], BY_ID[(key[0], IDENTICAL_TO[key])]
    assert case.test["jws"] == original.test["jws"]
    assert case.group.get("private") == original.group.get("private")
    assert case.group.get("public") == original.group.get("public")
    assert original.test["result"] == "valid" and case.test["result"] == "invalid"


def test_roca_vector_rejected_for_roca() -> None:
    """The ROCA-vulnerable Wycheproof RSA key is dropped from the key set with a ROCA problem."""
    (case,) = [c for c in CASES if c.group.get("comment") == "jws_rsa_roca_key"]
    keyset, problems = KeySet.from_jwks(case.group["public"], allow_symmetric=True)
    assert len(keyset) == 0 and any("ROCA" in p for p in problems)
