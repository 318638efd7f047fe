"""The ``WWW-Authenticate`` values the default settings send, for tests that pin them whole."""

from __future__ import annotations

from jwt_middleware._dpop import DEFAULT_PROOF_ALGORITHMS

__all__ = ["DPOP_ALGS", "with_dpop"]

#: The default DPoP proof algorithms, as a challenge's ``algs`` lists them.
DPOP_ALGS = " ".join(DEFAULT_PROOF_ALGORITHMS)


def with_dpop(bearer: str, realm: str = "api") -> str:
    """A 401's Bearer challenge followed by the bare DPoP one that the default ``dpop="allowed"``
    adds (RFC 9449 §7.2: both schemes are accepted)."""
    return f'{bearer}, DPoP realm="{realm}", algs="{DPOP_ALGS}"'
