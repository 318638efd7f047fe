"""Several trusted issuers (multi-tenant, or a move between identity providers), each with its
own keys, audience and rules: pass a list of :class:`Settings` where one is expected.

The token's ``iss`` is read (unverified) only to choose whose rules apply; then that issuer's
verifier does everything, with only that issuer's keys. A token naming an issuer that is not
configured is refused before any key is looked at. Request-level settings (token location,
public paths, CSRF, realm, hooks) are the request's, not an issuer's: they must be equal in
every entry.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from . import _b64 as b64
from ._errors import ConfigurationError, InvalidToken, Reason
from ._jws import loads_strict
from ._settings import Settings
from ._verify import AsyncVerifier, SyncVerifier, VerifiedToken

__all__ = [
    "AsyncIssuerRouter",
    "SyncIssuerRouter",
    "async_verifier",
    "primary_settings",
    "sync_verifier",
]

REQUEST_FIELDS = (
    "header", "cookie", "public_paths", "anonymous", "realm", "expose_error_details", "on_error",
    "csrf", "csrf_header", "csrf_claim", "allowed_origins", "warm_up", "clock",
    "cors_origins", "cors_methods", "cors_headers", "cors_credentials", "cors_max_age",
    "preflight_passthrough", "websocket_expiry",
)  # fmt: skip


def primary_settings(settings: Settings | Sequence[Settings]) -> tuple[Settings, list[Settings]]:
    """``(request-level settings, per-issuer list)``; validates a multi-issuer configuration."""
    if isinstance(settings, Settings):
        return settings, [settings]
    entries = list(settings)
    if not entries or not all(isinstance(s, Settings) for s in entries):
        raise ConfigurationError("settings must be a Settings or a non-empty list of them")
    first = entries[0]
    seen: dict[str, int] = {}
    for index, entry in enumerate(entries):
        if not entry.issuers:
            raise ConfigurationError(f"issuer #{index}: each issuer entry names its issuer(s)")
        for iss in entry.issuers:
            if iss in seen:
                raise ConfigurationError(
                    f"issuer {iss!r} appears in entries #{seen[iss]} and #{index}"
                )
            seen[iss] = index
        differing = [f for f in REQUEST_FIELDS if getattr(entry, f) != getattr(first, f)]
        if differing:
            raise ConfigurationError(
                f"issuer #{index} differs from #0 in request-level settings {differing}; "
                "they apply to the request, so set them the same in every entry"
            )
    return first, entries


def _unverified_issuer(token: str, max_bytes: int) -> str | None:
    if len(token) > max_bytes:
        raise InvalidToken(Reason.TOKEN_TOO_LARGE, f"{len(token)} bytes")
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(Reason.MALFORMED_TOKEN, f"{len(parts)} segments")
    try:
        claims: Any = loads_strict(b64.decode(parts[1]))
    except (ValueError, RecursionError):
        raise InvalidToken(Reason.MALFORMED_PAYLOAD, "payload is not JSON") from None
    iss = claims.get("iss") if isinstance(claims, dict) else None
    return iss if isinstance(iss, str) else None


class _Router:
    def __init__(self, entries: list[Settings], make: Any) -> None:
        self.verifiers = [make(entry) for entry in entries]
        self.by_issuer = {
            iss: v
            for entry, v in zip(entries, self.verifiers, strict=True)
            for iss in entry.issuers
        }
        self.max_bytes = max(entry.max_token_bytes for entry in entries)
        self.caches = any(v.caches for v in self.verifiers)

    def cached(self, digest: bytes) -> VerifiedToken | None:
        # A digest names one token, so at most one issuer's cache can hold it.
        for verifier in self.verifiers:
            verified: VerifiedToken | None = verifier.cached(digest)
            if verified is not None:
                return verified
        return None

    def route(self, token: str) -> Any:
        iss = _unverified_issuer(token, self.max_bytes)
        verifier = self.by_issuer.get(iss) if iss is not None else None
        if verifier is None:
            raise InvalidToken(Reason.ISSUER_MISMATCH, f"iss {str(iss)[:100]!r} not configured")
        return verifier


class AsyncIssuerRouter(_Router):
    def __init__(self, entries: list[Settings]) -> None:
        super().__init__(entries, AsyncVerifier)

    async def verify(self, token: str, digest: bytes | None = None) -> VerifiedToken:
        verifier: AsyncVerifier = self.route(token)
        return await verifier.verify(token, digest)

    async def warm_up(self) -> None:
        for verifier in self.verifiers:
            await verifier.warm_up()

    async def aclose(self) -> None:
        for verifier in self.verifiers:
            await verifier.aclose()


class SyncIssuerRouter(_Router):
    def __init__(self, entries: list[Settings]) -> None:
        super().__init__(entries, SyncVerifier)

    def verify(self, token: str, digest: bytes | None = None) -> VerifiedToken:
        verifier: SyncVerifier = self.route(token)
        return verifier.verify(token, digest)

    def warm_up(self) -> None:
        for verifier in self.verifiers:
            verifier.warm_up()

    def close(self) -> None:
        for verifier in self.verifiers:
            verifier.close()


def _resolve(
    settings: Settings | Sequence[Settings] | None, options: dict[str, Any]
) -> tuple[Settings, list[Settings]]:
    if settings is not None and options:
        raise ConfigurationError("pass either settings= or keyword options, not both")
    return primary_settings(settings if settings is not None else Settings(**options))


def async_verifier(
    settings: Settings | Sequence[Settings] | None, options: dict[str, Any]
) -> tuple[Settings, AsyncVerifier | AsyncIssuerRouter]:
    """What a middleware's ``settings=`` / keyword options mean: request-level settings and
    the verifier (one issuer, or a router over several)."""
    primary, entries = _resolve(settings, options)
    return primary, AsyncVerifier(primary) if len(entries) == 1 else AsyncIssuerRouter(entries)


def sync_verifier(
    settings: Settings | Sequence[Settings] | None, options: dict[str, Any]
) -> tuple[Settings, SyncVerifier | SyncIssuerRouter]:
    primary, entries = _resolve(settings, options)
    return primary, SyncVerifier(primary) if len(entries) == 1 else SyncIssuerRouter(entries)
