"""The verifier: a token string in, verified claims out, or an :class:`AuthError`.

Order matters (RFC 8725 §3): size → structure → header (alg allow-list, crit, typ) → payload
JSON → issuer, time claims, audience, required claims → key lookup by kid → signature →
custom validators. Everything before the key lookup is cheap and needs no key, so junk costs
neither a key fetch nor a public-key operation. Nothing from the token is *trusted* until the
signature holds: the early checks only refuse, they never grant.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from hashlib import blake2b as _blake2b
from typing import Any

from ._errors import AuthError, ConfigurationError, InvalidToken, Reason, RevocationUnavailable
from ._jwks import AsyncJWKS, JWKSPolicy, SyncJWKS
from ._jws import HeaderRules, ParsedToken, loads_strict, parse
from ._keys import Key, KeySet
from ._settings import Settings
from .revocation import RevocationStoreError, revocation_query

__all__ = ["AsyncVerifier", "SyncVerifier", "VerifiedToken", "token_digest"]

logger = logging.getLogger("jwt_middleware")


_Entry = tuple["VerifiedToken", float, float, object]  # token, not_before, expires, key set


@dataclass(frozen=True, slots=True)
class VerifiedToken:
    """A token whose signature and claims were verified.

    ``claims`` and ``header`` are deeply read-only (``dict`` and ``list`` subclasses whose
    mutating methods raise TypeError): a cached token is shared by every request carrying it.
    ``copy.deepcopy(token.claims)`` gives a mutable copy; ``json.dumps`` takes them as they are.
    """

    claims: Mapping[str, Any]
    header: Mapping[str, Any]
    scopes: tuple[str, ...]
    #: The ``sub`` claim (None when absent). Worked out once: a cached token serves many requests.
    subject: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sub = self.claims.get("sub")
        object.__setattr__(self, "subject", sub if isinstance(sub, str) else None)


class _Core:
    """Everything that does not depend on how keys are fetched."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.rules = HeaderRules(settings.algorithms, settings.typ)
        self.static = settings.static_keys
        self._merged: tuple[KeySet | None, KeySet] = (None, self.static)
        self._cache: OrderedDict[bytes, _Entry] = OrderedDict()
        self._seen: OrderedDict[bytes, None] = OrderedDict()  # digests verified once
        self._cache_size = settings.token_cache_size
        #: Where the current key set comes from: the remote cache's policy (set by
        #: _Cached._setup), else the static keys, which never go stale.
        self.source: JWKSPolicy | _StaticSource = _StaticSource(self.static)

    # -- the verified-token cache -------------------------------------------------------------
    # A client reuses its token for minutes; verifying the same bytes again would redo the
    # public-key operation for nothing. Entries are keyed by token_digest() of the whole token
    # (so no other token can hit them), bound to the key set they were verified with (a new or
    # shrunk key set misses everything), and their time window (exp/nbf) is checked on every
    # hit. The adapters look a request's token up here before extracting or parsing anything.

    def keys_now(self, now: float) -> KeySet | None:
        """The key set a verification at ``now`` is bound to; None when it needs a refresh."""
        source = self.source
        return source.keyset if now < source.fresh_until else None

    def hit(self, digest: bytes, now: float) -> VerifiedToken | None:
        """The cached verification of the token with this digest, if still good at ``now``
        for the current key set (none while the keys need a refresh)."""
        entry = self._cache.get(digest)
        if entry is None:
            return None
        # keys_now(), inlined: this is the hot path of every request with a known token.
        source = self.source
        if now >= source.fresh_until:
            return None
        verified, not_before, expires, entry_keys = entry
        if entry_keys is source.keyset and not_before <= now < expires:
            return verified
        self._cache.pop(digest, None)
        return None

    def remember(self, digest: bytes, verified: VerifiedToken, keys: object) -> None:
        """``keys``: the key set the token was verified against, or None when it changed (or
        was not fresh) during the verification — then the result is not cached, since the key
        that verified it may already be gone."""
        if not digest:
            return
        # Admit a token on its second full verification only: a stream of one-off tokens then
        # never churns the cache (insert + evict per request), while a reused token — the case
        # the cache is for — gets in on its second use.
        seen = self._seen
        if seen.pop(digest, _ABSENT) is _ABSENT:  # one atomic step: threads may race here
            if len(seen) >= self._cache_size:
                try:
                    seen.popitem(last=False)
                except KeyError:
                    pass
            seen[digest] = None
            return
        if keys is None:
            return
        cache = self._cache
        if len(cache) >= self._cache_size:
            # Oldest first; bounded whatever tokens arrive. (OrderedDict: O(1); a plain dict's
            # next(iter()) would scan the tombstones FIFO deletion leaves at its front.)
            try:
                cache.popitem(last=False)
            except KeyError:  # another thread emptied it meanwhile
                pass
        claims, leeway = verified.claims, self.settings.leeway
        exp, nbf = claims.get("exp"), claims.get("nbf")
        expires = exp + leeway if exp is not None else math.inf
        not_before = nbf - leeway if nbf is not None else -math.inf
        cache[digest] = (verified, not_before, expires, keys)

    def precheck(self, token: str, now: float) -> tuple[ParsedToken, dict[str, Any]]:
        settings = self.settings
        if len(token) > settings.max_token_bytes:
            raise InvalidToken(Reason.TOKEN_TOO_LARGE, f"{len(token)} bytes")
        parsed = parse(token, self.rules)
        try:
            # Frozen while parsing: the claims of a cached token are shared by every request
            # that carries it, nested members too. Once per verification, never per cache hit.
            claims = loads_strict(parsed.payload, frozen=True)
        except (ValueError, RecursionError):
            raise InvalidToken(Reason.MALFORMED_PAYLOAD, "payload is not JSON") from None
        if not isinstance(claims, dict):
            raise InvalidToken(Reason.MALFORMED_PAYLOAD, "payload is not a JSON object")
        self.check_claims(claims, now)
        return parsed, claims

    def check_claims(self, claims: dict[str, Any], now: float) -> None:
        s = self.settings
        leeway = s.leeway
        if s.issuers:
            iss = claims.get("iss")
            if not isinstance(iss, str) or iss not in s.issuers:
                raise InvalidToken(Reason.ISSUER_MISMATCH, f"iss {str(iss)[:100]!r}")
        exp = _numeric_date(claims, "exp", required=s.require_exp)
        if exp is not None and now >= exp + leeway:
            raise InvalidToken(Reason.EXPIRED, f"expired {now - exp:.0f}s ago")
        nbf = _numeric_date(claims, "nbf")
        if nbf is not None and now + leeway < nbf:
            raise InvalidToken(Reason.NOT_YET_VALID, f"valid in {nbf - now:.0f}s")
        iat = _numeric_date(claims, "iat", required=s.max_lifetime is not None)
        if iat is not None and now + leeway < iat:
            raise InvalidToken(Reason.ISSUED_IN_FUTURE, f"issued {iat - now:.0f}s ahead")
        if s.max_lifetime is not None:
            if exp is None or iat is None or exp - iat > s.max_lifetime:
                raise InvalidToken(Reason.LIFETIME_TOO_LONG, f"lifetime over {s.max_lifetime}s")
        if s.audiences:
            aud = claims.get("aud")
            if isinstance(aud, str):
                ok = aud in s.audiences
            elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
                ok = not s.audiences.isdisjoint(aud)
            else:
                raise InvalidToken(Reason.AUDIENCE_MISMATCH, "aud missing or malformed")
            if not ok:
                raise InvalidToken(Reason.AUDIENCE_MISMATCH, "aud does not name this service")
        for name in s.required_claims:
            if claims.get(name) is None:
                raise InvalidToken(Reason.CLAIM_MISSING, f"claim {name!r} missing")
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise InvalidToken(Reason.CLAIM_INVALID, "sub is not a string")

    def find(self, remote: KeySet, kid: str | None, alg: str) -> Key:
        """The key for ``kid``/``alg`` in the remote set (with the static keys, for a token
        without kid)."""
        return (self.keys_with(remote) if kid is None else remote).find(kid, alg)

    def keys_with(self, remote: KeySet) -> KeySet:
        """Static keys plus the remote set, built once per remote set (for kid-less tokens)."""
        cached_remote, merged = self._merged
        if cached_remote is not remote:
            merged = self.static.merged(remote)
            self._merged = (remote, merged)
        return merged

    def finish(self, parsed: ParsedToken, claims: dict[str, Any], key: Key) -> VerifiedToken:
        header = parsed.header
        if not key.verify(header.alg, parsed.signing_input, parsed.signature):
            raise InvalidToken(Reason.SIGNATURE_INVALID, f"kid {str(header.kid)[:64]!r}")
        # claims and header.fields are deeply read-only already (loads_strict(frozen=True)).
        return VerifiedToken(claims, header.fields, self.scopes(claims))

    def scopes(self, claims: Mapping[str, Any]) -> tuple[str, ...]:
        found: dict[str, None] = {}  # ordered and deduplicated
        for name in self.settings.scope_claims:
            value = claims.get(name)
            if value is None:
                continue
            if isinstance(value, str):
                found.update(dict.fromkeys(value.split()))
            elif isinstance(value, list) and all(isinstance(v, str) for v in value):
                found.update(dict.fromkeys(value))
            else:
                # A scope claim we cannot read is refused rather than read as "no scopes":
                # the issuer meant *something* by it.
                raise InvalidToken(Reason.CLAIM_INVALID, f"{name} is neither a string nor a list")
        return tuple(found)

    def accept(self, verified: VerifiedToken, *, revoked: bool, hit: bool) -> VerifiedToken:
        if revoked:
            raise InvalidToken(Reason.TOKEN_REVOKED, "")
        events = self.settings.events
        if events is not None:
            events.verified(cached=hit)
        return verified

    def outcome(self, validator: Any, outcome: Any) -> None:
        if outcome is False:
            raise InvalidToken(Reason.VALIDATOR_REJECTED, getattr(validator, "__name__", ""))

    def revocation_failed(self, exc: Exception) -> bool:
        """Fail closed (raise 503) unless configured to fail open; logged either way."""
        if not isinstance(exc, RevocationStoreError):
            logger.error("jwt_middleware: the revocation store raised", exc_info=exc)
        if self.settings.revocation_fail_open:
            logger.warning("jwt_middleware: revocation unknown (%s); letting the token in", exc)
            return False
        logger.warning("jwt_middleware: revocation unknown (%s); refusing", exc)
        raise RevocationUnavailable(type(exc).__name__)

    def rejected_by_validator(self, exc: Exception) -> AuthError:
        if isinstance(exc, AuthError):
            return exc
        # A validator that crashes on a hostile token must refuse it, not answer 500.
        logger.error("jwt_middleware: a custom validator raised", exc_info=exc)
        return InvalidToken(Reason.VALIDATOR_FAILED, type(exc).__name__)


class _Cached:
    """The token cache's no-I/O path, shared by both verifiers."""

    settings: Settings
    _core: _Core
    remote: AsyncJWKS | SyncJWKS | None

    def _setup(self, settings: Settings, remote: AsyncJWKS | SyncJWKS | None) -> None:
        self.settings = settings
        self._core = _Core(settings)
        self.remote = remote
        if remote is not None:
            self._core.source = remote.policy
        #: Whether ``cached()`` can answer: a token cache, and no validator or revocation
        #: store (those must run on every use, and may do I/O).
        self.caches = settings.token_cache_size > 0
        self._plain = self.caches and not settings.validators and settings.revocation is None

    def cached(self, digest: bytes) -> VerifiedToken | None:
        """The verified token with this :func:`token_digest` if the token cache holds it and
        nothing else needs checking; None: call ``verify``. No I/O, no parsing, no await."""
        if not self._plain:
            return None
        try:
            verified = self._core.hit(digest, self.settings.clock())
            if verified is not None:
                events = self.settings.events
                if events is not None:
                    events.verified(cached=True)
            return verified
        except Exception:
            # A raising clock or events hook: verify() meets the same error and refuses the
            # token the way it refuses every internal error (logged, 401, never a 500).
            return None

    def _lookup(
        self, token: str, digest: bytes | None, now: float
    ) -> tuple[bytes, object, VerifiedToken | None]:
        core = self._core
        keys = core.keys_now(now)
        if not self.caches:
            return b"", keys, None
        if digest is None:
            digest = token_digest(token.encode())
        return digest, keys, core.hit(digest, now)


class AsyncVerifier(_Cached):
    """Verifies tokens on the event loop; remote keys are fetched with ``httpx.AsyncClient``."""

    remote: AsyncJWKS | None

    def __init__(self, settings: Settings) -> None:
        self._setup(settings, AsyncJWKS(settings) if settings.remote else None)

    async def verify(self, token: str, digest: bytes | None = None) -> VerifiedToken:
        """The verified token, or an AuthError (never any other exception).

        ``digest``: the token's :func:`token_digest`, when the caller has it already."""
        # One function, not a wrapper around another: every new token comes through here, and
        # (on the ASGI side) each extra coroutine costs more than the checks it would hold.
        try:
            core = self._core
            now = self.settings.clock()
            digest, keys, verified = self._lookup(token, digest, now)
            hit = verified is not None
            if verified is None:
                parsed, claims = core.precheck(token, now)
                kid, alg = parsed.header.kid, parsed.header.alg
                key = self._key(kid, alg)
                if isinstance(key, AsyncJWKS):
                    key = core.find(await key.keyset_for(kid), kid, alg)
                verified = core.finish(parsed, claims, key)
                if self.settings.validators:
                    await self._validate(verified)
                core.remember(digest, verified, _same(keys, core.keys_now(now)))
            elif self.settings.validators:
                await self._validate(verified)
            store = self.settings.revocation
            revoked = False
            if store is not None:
                try:
                    revoked = store.is_revoked(*revocation_query(verified.claims))
                    if inspect.isawaitable(revoked):
                        revoked = await revoked
                except Exception as exc:  # the store's own errors, network errors, timeouts
                    revoked = core.revocation_failed(exc)
            return core.accept(verified, revoked=revoked, hit=hit)
        except AuthError:
            raise
        except Exception as exc:
            raise _internal_error(exc) from None

    async def _validate(self, verified: VerifiedToken) -> None:
        core = self._core
        for validator in self.settings.validators:
            try:
                outcome = validator(verified.claims)
                if inspect.isawaitable(outcome):
                    outcome = await outcome
            except Exception as exc:  # see rejected_by_validator
                raise core.rejected_by_validator(exc) from None
            core.outcome(validator, outcome)

    def _key(self, kid: str | None, alg: str) -> Key | AsyncJWKS:
        """The key, or the remote key cache to await when finding it needs a fetch first (an
        await costs more than the lookup, and most new tokens need no fetch)."""
        core = self._core
        if self.remote is None or (kid is not None and kid in core.static.by_kid):
            return core.static.find(kid, alg)
        keyset = self.remote.keyset_now(kid)
        return self.remote if keyset is None else core.find(keyset, kid, alg)

    async def warm_up(self) -> None:
        """Fetch the remote keys now, so the first request does not wait for them."""
        if self.remote is not None:
            await self.remote.refresh(rate_limited=False)

    async def aclose(self) -> None:
        if self.remote is not None:
            await self.remote.aclose()


class SyncVerifier(_Cached):
    """Verifies tokens in a thread; remote keys are fetched with ``httpx.Client``."""

    remote: SyncJWKS | None

    def __init__(self, settings: Settings) -> None:
        for validator in settings.validators:
            if inspect.iscoroutinefunction(validator):
                raise ConfigurationError(f"async validator {validator!r} cannot run under WSGI")
        if settings.revocation is not None and inspect.iscoroutinefunction(
            settings.revocation.is_revoked
        ):
            raise ConfigurationError(
                "an async revocation store cannot run under WSGI; use RedisRevocationStore"
            )
        self._setup(settings, SyncJWKS(settings) if settings.remote else None)

    def verify(self, token: str, digest: bytes | None = None) -> VerifiedToken:
        """The verified token, or an AuthError (never any other exception).

        ``digest``: the token's :func:`token_digest`, when the caller has it already."""
        # One function, not a wrapper around another: every new token comes through here, and
        # (on the ASGI side) each extra coroutine costs more than the checks it would hold.
        try:
            core = self._core
            now = self.settings.clock()
            digest, keys, verified = self._lookup(token, digest, now)
            hit = verified is not None
            if verified is None:
                parsed, claims = core.precheck(token, now)
                key = self._key(parsed.header.kid, parsed.header.alg)
                verified = core.finish(parsed, claims, key)
                if self.settings.validators:
                    self._validate(verified)
                core.remember(digest, verified, _same(keys, core.keys_now(now)))
            elif self.settings.validators:
                self._validate(verified)
            store = self.settings.revocation
            revoked = False
            if store is not None:
                try:
                    revoked = store.is_revoked(*revocation_query(verified.claims))
                except Exception as exc:  # the store's own errors, network errors, timeouts
                    revoked = core.revocation_failed(exc)
            return core.accept(verified, revoked=revoked, hit=hit)
        except AuthError:
            raise
        except Exception as exc:
            raise _internal_error(exc) from None

    def _validate(self, verified: VerifiedToken) -> None:
        core = self._core
        for validator in self.settings.validators:
            try:
                outcome = validator(verified.claims)
            except Exception as exc:  # see rejected_by_validator
                raise core.rejected_by_validator(exc) from None
            core.outcome(validator, outcome)

    def _key(self, kid: str | None, alg: str) -> Key:
        core = self._core
        if self.remote is None or (kid is not None and kid in core.static.by_kid):
            return core.static.find(kid, alg)
        return core.find(self.remote.keyset_for(kid), kid, alg)

    def warm_up(self) -> None:
        """Fetch the remote keys now, so the first request does not wait for them."""
        if self.remote is not None:
            self.remote.refresh(rate_limited=False)

    def close(self) -> None:
        if self.remote is not None:
            self.remote.close()


_ABSENT = object()


def token_digest(token: bytes) -> bytes:
    """The token cache's key: a 256-bit BLAKE2b digest of the whole token, so that no other
    token can hit an entry (that would take a BLAKE2 collision) and the cache holds no usable
    token. BLAKE2b rather than SHA-256: equally collision resistant, and measured under uvicorn
    it costs about 2.5 µs less per request (OpenSSL's EVP layer behind hashlib.sha256 is a lot
    of code to run cold on every request), although SHA-256 wins a tight in-process loop."""
    return _blake2b(token, digest_size=32).digest()


def _same(before: object, after: object) -> object:
    return before if before is not None and before is after else None


class _StaticSource:
    """The static keys in the shape of a JWKSPolicy: always fresh."""

    __slots__ = ("fresh_until", "keyset")

    def __init__(self, keyset: KeySet) -> None:
        self.keyset = keyset
        self.fresh_until = math.inf


def _internal_error(exc: Exception) -> AuthError:
    # Defence in depth: a bug of ours met by a hostile token must refuse the request (fail
    # closed), not answer 500 with a traceback. Logged loudly, because it is a bug.
    logger.error("jwt_middleware: unexpected error while verifying a token", exc_info=exc)
    return InvalidToken(Reason.VERIFIER_ERROR, type(exc).__name__)


_MAX_DATE = 10**11  # year 5138: beyond it a date is a mistake or an attack


def _numeric_date(claims: Mapping[str, Any], name: str, *, required: bool = False) -> float | None:
    value = claims.get(name)
    if value is None:
        if required:
            raise InvalidToken(Reason.CLAIM_MISSING, f"{name} missing")
        return None
    # bool is an int in Python; "exp": true must not read as 1970-01-01T00:00:01Z.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InvalidToken(Reason.CLAIM_INVALID, f"{name} is not a number")
    # Compare before any float conversion: float(10**400) overflows.
    if not 0 <= value <= _MAX_DATE or (isinstance(value, float) and math.isnan(value)):
        raise InvalidToken(Reason.CLAIM_INVALID, f"{name} is out of range")
    return float(value)
