"""The verification flow, written once and free of I/O: a token in, verified claims out.

Order matters (RFC 8725 §3): size → structure → header (alg allow-list, crit, typ) → payload
JSON → issuer, time claims, audience, required claims → key lookup by kid → signature →
custom validators → revocation. Everything before the key lookup is cheap and needs no key, so
junk costs neither a key fetch nor a public-key operation. Nothing from the token is *trusted*
until the signature holds: the early checks only refuse, they never grant.

:meth:`Flow.steps` is a generator, as httpx's ``auth_flow`` and h11's connection are: where the
flow needs the outside world (keys that must be fetched, a validator, the revocation store) it
yields ``(function, args)``, and the driver — ``AsyncVerifier`` awaits, ``SyncVerifier`` calls —
sends the result back in, or throws the exception in. Every rule lives here, once.
"""

from __future__ import annotations

import logging
import math
import ssl
import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, field
from hashlib import blake2b as _blake2b
from typing import Any

from cachetools import LRUCache

from . import _b64 as b64
from ._errors import (
    AuthError,
    ConfigurationError,
    InvalidProof,
    InvalidToken,
    KeysUnavailable,
    Reason,
    RevocationStoreError,
    RevocationUnavailable,
)
from ._extract import DPOP
from ._jws import HeaderRules, ParsedToken, loads_strict, parse
from ._keys import Key, KeySet
from ._resolve import MAX_ISS, IssuerPattern, Resolved, with_shared
from ._sender import UNBOUND, Request, Sender, binding
from ._settings import Issuer, Settings
from .revocation import revocation_query

__all__ = ["Flow", "Step", "VerifiedToken", "token_digest"]

logger = logging.getLogger("jwt_middleware")

#: What the flow asks its driver to do: call ``function(*args)`` (awaiting the result when the
#: driver can), then send the result back in, or throw the exception in.
Step = tuple[Callable[..., Any], tuple[Any, ...]]


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
    #: Until when the token is accepted: its issuer's ``exp`` + ``leeway``, in seconds since the
    #: epoch (None without ``exp``). An authenticated WebSocket is closed then.
    valid_until: float | None = None
    #: What the token is bound to: its ``cnf.jkt`` (a DPoP key's thumbprint, RFC 9449) and
    #: ``cnf.x5t#S256`` (a client certificate's, RFC 8705); None each when unbound.
    binding: tuple[str | None, str | None] = field(default=UNBOUND, repr=False, compare=False)
    #: The ``sub`` claim (None when absent). Worked out once: a cached token serves many requests.
    subject: str | None = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        sub = self.claims.get("sub")
        object.__setattr__(self, "subject", sub if isinstance(sub, str) else None)


def token_digest(token: bytes) -> bytes:
    """The token cache's key: a 256-bit BLAKE2b digest of the whole token, so that no other
    token can hit an entry (that would take a BLAKE2 collision) and the cache holds no usable
    token. BLAKE2b rather than SHA-256: equally collision resistant, and measured under uvicorn
    it costs about 2.5 µs less per request (OpenSSL's EVP layer behind hashlib.sha256 is a lot
    of code to run cold on every request), although SHA-256 wins a tight in-process loop."""
    return _blake2b(token, digest_size=32).digest()


class _StaticSource:
    """The static keys in the shape of a JWKSPolicy: always fresh."""

    __slots__ = ("fresh_until", "keyset")

    def __init__(self, keyset: KeySet) -> None:
        self.keyset = keyset
        self.fresh_until = math.inf


class Trusted:
    """One trusted issuer's rules and keys, as the flow uses them."""

    def __init__(
        self,
        settings: Issuer,
        remote: Any,
        *,
        resource: str | None = None,
        implied: Mapping[str, tuple[str, ...]] | None = None,
    ) -> None:
        self.settings = settings
        #: The accepted ``aud`` values: the issuer's audience and (RFC 8707) this resource's
        #: identifier; empty when the audience check is waived.
        self.audiences = settings.audiences
        if resource is not None and self.audiences:
            self.audiences = self.audiences | {resource}
        self.implied = implied or {}
        self.rules = HeaderRules(settings.algorithms, settings.typ)
        self.static = settings.static_keys
        #: The remote key cache (AsyncJWKS or SyncJWKS, by the driver), or None.
        self.remote = remote
        #: Where the current key set comes from: the remote cache's policy, else the static
        #: keys, which never go stale. Read on every cache hit.
        self.source: Any = remote.policy if remote is not None else _StaticSource(self.static)
        self._merged: tuple[KeySet | None, KeySet] = (None, self.static)
        self.validators = settings.validators
        self.revocation = settings.revocation
        self.events = settings.events
        #: The introspection client (RFC 7662; by the driver), or None.
        self.introspector: Any = None
        #: Whether its JWTs are introspected too, after their own checks.
        self.introspects_jwts = settings.introspection is not None and settings.introspection.jwts
        #: Whether a cached token of this issuer needs nothing more (no validator, no store,
        #: no introspection, all of which must run on every use and may do I/O).
        self.plain = (
            not settings.validators and settings.revocation is None and not self.introspects_jwts
        )
        #: Found by ``issuer_resolver`` and no token of it verified yet (see Resolved).
        self.pending = False

    def keys_now(self, now: float) -> KeySet | None:
        """The key set a verification at ``now`` is bound to; None when it needs a refresh."""
        source = self.source
        return source.keyset if now < source.fresh_until else None

    def check_claims(
        self, claims: Mapping[str, Any], now: float, default_iss: str | None = None
    ) -> None:
        """Refuse ``claims`` that break this issuer's rules at ``now``. ``default_iss``: the
        ``iss`` of claims that may leave it out (an introspection answer, RFC 7662 §2.2)."""
        s = self.settings
        leeway = s.leeway
        if s.issuers:
            iss = claims.get("iss", default_iss)
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
        audiences = self.audiences
        if audiences:
            aud = claims.get("aud")
            if isinstance(aud, str):
                ok = aud in audiences
            elif isinstance(aud, list) and aud and all(isinstance(a, str) for a in aud):
                ok = not audiences.isdisjoint(aud)
            else:
                raise InvalidToken(Reason.AUDIENCE_MISMATCH, "aud missing or malformed")
            if not ok:
                raise InvalidToken(Reason.AUDIENCE_MISMATCH, "aud does not name this service")
        for name in s.required_claims:
            if claims.get(name) is None:
                raise InvalidToken(Reason.CLAIM_MISSING, f"claim {name!r} missing")
        clients = s.allowed_clients
        if clients is not None:
            # RFC 9068's client_id first; azp (OIDC's authorized party) where there is none.
            # Present at all, client_id decides: a null one does not hand over to azp.
            client = claims["client_id"] if "client_id" in claims else claims.get("azp")
            if not isinstance(client, str) or client not in clients:
                raise InvalidToken(Reason.CLIENT_NOT_ALLOWED, f"client {str(client)[:100]!r}")
        sub = claims.get("sub")
        if sub is not None and not isinstance(sub, str):
            raise InvalidToken(Reason.CLAIM_INVALID, "sub is not a string")
        if s.profile == "rfc9068":
            for name in ("client_id", "jti"):  # RFC 9068 §2.2: strings
                if not isinstance(claims.get(name), str):
                    raise InvalidToken(Reason.CLAIM_INVALID, f"{name} is not a string")

    def key_now(self, kid: str | None, alg: str) -> Key | None:
        """The key for ``kid``/``alg`` if finding it needs no fetch; None: fetch first."""
        if self.remote is None or (kid is not None and kid in self.static.by_kid):
            return self.static.find(kid, alg)
        keyset = self.remote.keyset_now(kid)
        return None if keyset is None else self.find(keyset, kid, alg)

    def find(self, remote: KeySet, kid: str | None, alg: str) -> Key:
        """The key for ``kid``/``alg`` in the remote set (with the static keys, for a token
        without kid: those are merged once per remote set)."""
        if kid is not None:
            return remote.find(kid, alg)
        cached_remote, merged = self._merged
        if cached_remote is not remote:
            merged = self.static.merged(remote)
            self._merged = (remote, merged)
        return merged.find(kid, alg)

    def verified(self, parsed: ParsedToken, claims: Mapping[str, Any], key: Key) -> VerifiedToken:
        header = parsed.header
        if not key.verify(header.alg, parsed.signing_input, parsed.signature):
            raise InvalidToken(Reason.SIGNATURE_INVALID, f"kid {str(header.kid)[:64]!r}")
        exp = claims.get("exp")
        valid_until = exp + self.settings.leeway if exp is not None else None
        # claims and header.fields are deeply read-only already (loads_strict(frozen=True)).
        return VerifiedToken(
            claims, header.fields, self.scopes(claims), valid_until, binding(claims)
        )

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
        if self.implied:
            for scope in tuple(found):
                found.update(dict.fromkeys(self.implied.get(scope, ())))
        return tuple(found)

    def revocation_failed(self, exc: Exception) -> bool:
        """Fail closed (raise 503) unless configured to fail open; logged either way."""
        if not isinstance(exc, RevocationStoreError):
            logger.error("jwt_middleware: the revocation store raised", exc_info=exc)
        if self.settings.revocation_fail_open:
            logger.warning("jwt_middleware: revocation unknown (%s); letting the token in", exc)
            return False
        logger.warning("jwt_middleware: revocation unknown (%s); refusing", exc)
        raise RevocationUnavailable(type(exc).__name__)


_Entry = tuple[VerifiedToken, float, float, object, Trusted]  # token, window, key set, issuer
_ABSENT = object()


class TokenCache:
    """Verified tokens by :func:`token_digest`, so a reused token skips parsing and the
    signature check.

    A client reuses its token for minutes; verifying the same bytes again would redo the
    public-key operation for nothing. Entries are keyed by the digest of the whole token (no
    other token can hit them), bound to the key set they were verified with (a new or shrunk key
    set misses everything), and their time window (exp/nbf) is checked on every hit.

    OrderedDicts, not cachetools: a hit runs on every request (``LRUCache.get`` measured 0.6 µs
    against 0.17 µs for ``OrderedDict.get``), and the WSGI side's threads share these without a
    lock because ``OrderedDict.pop``/``popitem`` are single atomic steps, which cachetools'
    Python-level methods are not.
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
        self._seen: OrderedDict[bytes, None] = OrderedDict()  # digests verified once

    def hit(self, digest: bytes, now: float) -> tuple[VerifiedToken, Trusted] | None:
        """The cached verification of the token with this digest, if still good at ``now`` for
        its issuer's current key set (none while those keys need a refresh)."""
        entry = self._entries.get(digest)
        if entry is None:
            return None
        verified, not_before, expires, keys, issuer = entry
        source = issuer.source
        if now >= source.fresh_until:
            return None  # kept: a refresh that brings back the same key set revives it
        if keys is source.keyset and not_before <= now < expires:
            return verified, issuer
        self._entries.pop(digest, None)
        return None

    def remember(
        self, digest: bytes, verified: VerifiedToken, issuer: Trusted, keys: object
    ) -> None:
        """``keys``: the key set the token was verified against, or None when it changed (or
        was not fresh) during the verification — then the result is not cached, since the key
        that verified it may already be gone."""
        # Admit a token on its second full verification only: a stream of one-off tokens then
        # never churns the cache (insert + evict per request), while a reused token — the case
        # the cache is for — gets in on its second use.
        seen = self._seen
        if seen.pop(digest, _ABSENT) is _ABSENT:  # one atomic step: threads may race here
            _make_room(seen, self.size)
            seen[digest] = None
            return
        if keys is None:
            return
        _make_room(self._entries, self.size)
        claims, leeway = verified.claims, issuer.settings.leeway
        nbf = claims.get("nbf")
        until = verified.valid_until
        expires = until if until is not None else math.inf
        not_before = nbf - leeway if nbf is not None else -math.inf
        self._entries[digest] = (verified, not_before, expires, keys, issuer)


def _make_room(entries: OrderedDict[bytes, Any], size: int) -> None:
    if len(entries) >= size:
        # Oldest first; bounded whatever tokens arrive.
        try:
            entries.popitem(last=False)
        except KeyError:  # another thread emptied it meanwhile
            pass


class Flow:
    """Every rule of verification, for one or several trusted issuers, without I/O."""

    def __init__(
        self,
        settings: Settings,
        entries: Sequence[Issuer],
        remote: Callable[[Issuer], Any],
        introspector: Callable[[Issuer], Any] | None = None,
    ) -> None:
        """``settings``: the shared options; ``entries``: the trusted issuers; ``remote``:
        builds the key cache of an issuer whose keys are fetched; ``introspector``: the
        introspection client of an issuer with ``introspection``."""
        self._settings = settings
        self._remote = remote
        self.issuers = [self._trusted(i, remote(i) if i.remote else None) for i in entries]
        #: The key caches of resolved issuers, by what they fetch: tenants of a provider with
        #: one JWKS share one, so a new tenant costs no fetch. Bounded like the issuers.
        self._shared: LRUCache[tuple[Any, ...], Any] = LRUCache(
            maxsize=settings.issuer_cache_size + 2 * settings.new_issuers_per_minute + 16
        )
        self._shared_lock = threading.Lock()
        opaque = [t for t in self.issuers if t.settings.introspection is not None]
        if len(opaque) > 1:
            raise ConfigurationError(
                "only one trusted issuer can have introspection: an opaque token names no "
                "issuer to choose by"
            )
        for trusted in opaque:
            if introspector is None:
                raise ConfigurationError("introspection needs a driver that can introspect")
            trusted.introspector = introspector(trusted.settings)
        #: The issuer asked about tokens that are not JWTs, if any.
        self.opaque = opaque[0] if opaque else None
        self.clock = settings.clock
        resolver = settings.issuer_resolver
        bounds = [i.max_token_bytes for i in entries]
        if resolver is not None:  # a resolved issuer's own bound applies once it is chosen
            fields = resolver.fields if isinstance(resolver, IssuerPattern) else {}
            bounds.append(fields.get("max_token_bytes", settings.max_token_bytes))
        self.max_token_bytes = max(bounds)
        #: What ``issuer_resolver`` answered, bounded; None without one.
        self.resolved = (
            Resolved(
                resolver,
                settings.issuer_cache_size,
                settings.new_issuers_per_minute,
                self._admitted,
            )
            if resolver is not None
            else None
        )
        self._only = self.issuers[0] if len(self.issuers) == 1 and resolver is None else None
        self._by_iss = {iss: i for i in self.issuers for iss in i.settings.issuers}
        size = settings.token_cache_size
        self.tokens = TokenCache(size) if size > 0 else None
        #: Whether :meth:`cached` can ever answer: never when every token must be DPoP-bound
        #: (a bound token needs its proof checked on every request).
        self.caches = (
            self.tokens is not None
            and (resolver is not None or any(i.plain for i in self.issuers))
            and settings.dpop != "required"
        )
        #: The sender-constraint rules (DPoP, certificate-bound tokens).
        self.sender = Sender(settings)

    def _trusted(self, issuer: Issuer, remote: Any) -> Trusted:
        settings = self._settings
        return Trusted(issuer, remote, resource=settings.resource, implied=settings.implied)

    def _admitted(self, issuer: Issuer) -> Trusted:
        """The flow's view of an issuer the resolver admitted."""
        settings = self._settings
        issuer = with_shared(issuer, settings.clock, settings.events)
        remote = None
        if issuer.remote:
            key = _remote_key(issuer)
            with self._shared_lock:
                remote = self._shared.get(key)
                if remote is None:
                    remote = self._shared[key] = self._remote(issuer)
        trusted = self._trusted(issuer, remote)
        trusted.pending = True
        return trusted

    @property
    def remotes(self) -> list[Any]:
        """Every key cache: the configured issuers', then the resolved ones' (each once)."""
        with self._shared_lock:
            shared = list(self._shared.values())
        return [i.remote for i in self.issuers if i.remote is not None] + shared

    def cached(self, digest: bytes) -> VerifiedToken | None:
        """The verified token with this :func:`token_digest` if the token cache holds it and
        nothing else needs checking; None: run :meth:`steps`. No I/O, no parsing."""
        tokens = self.tokens
        if tokens is None:
            return None
        try:
            found = tokens.hit(digest, self.clock())
            if found is None:
                return None
            verified, issuer = found
            if not issuer.plain or verified.binding is not UNBOUND:
                return None  # a bound token's proof or certificate is checked every time
            events = issuer.events
            if events is not None:
                events.verified(cached=True)
            return verified
        except Exception:
            # A raising clock or events hook: steps() meets the same error and refuses the
            # token the way it refuses every internal error (logged, 401, never a 500).
            return None

    def steps(
        self,
        token: str,
        digest: bytes | None = None,
        location: str = "header",
        request: Request | None = None,
    ) -> Generator[Step, Any, VerifiedToken]:
        """Verify ``token``, found at ``location`` of ``request`` (``"dpop"``: under
        ``Authorization: DPoP``): yields the calls the driver must make; returns the verified
        token, or raises an :class:`AuthError` (never any other exception)."""
        try:
            now = self.clock()
            tokens = self.tokens
            found = None
            if tokens is not None:
                if digest is None:
                    digest = token_digest(token.encode())
                found = tokens.hit(digest, now)
            opaque = None
            if found is not None:
                verified, issuer = found
            elif self.opaque is not None and token.count(".") != 2:
                # Not a JWS (three segments): an opaque token, for the introspection endpoint.
                issuer = opaque = self.opaque
                verified = yield from self._introspected(opaque, token, now)
            else:
                parsed, claims, issuer = yield from self._parse(token, now)
                keys_before = issuer.keys_now(now)
                kid, alg = parsed.header.kid, parsed.header.alg
                key = issuer.key_now(kid, alg)
                if key is None:
                    keyset = yield issuer.remote.keyset_for, (kid,)
                    key = issuer.find(keyset, kid, alg)
                verified = issuer.verified(parsed, claims, key)
                if issuer.pending:
                    self.resolved.prove(claims["iss"], issuer)  # type: ignore[union-attr]
                    issuer.pending = False
                if tokens is not None:
                    assert digest is not None
                    after = issuer.keys_now(now)
                    tokens.remember(
                        digest, verified, issuer, keys_before if keys_before is after else None
                    )
            # After the token cache took the token (a proof refused, for a stale nonce say, does
            # not make the retry verify the token again; validators run on every use anyway),
            # and before the validators: a token without its proof never reaches their I/O.
            proof = self.sender.check(verified.binding, token, location, request, now, digest)
            for validator in issuer.validators:
                try:
                    outcome = yield validator, (verified.claims,)
                except Exception as exc:
                    raise _rejected_by_validator(exc) from None
                if outcome is False:
                    raise InvalidToken(
                        Reason.VALIDATOR_REJECTED, getattr(validator, "__name__", "")
                    )
            store = issuer.revocation
            if store is not None:
                try:
                    revoked = yield store.is_revoked, revocation_query(verified.claims)
                except Exception as exc:  # the store's own errors, network errors, timeouts
                    revoked = issuer.revocation_failed(exc)
                if revoked:
                    raise InvalidToken(Reason.TOKEN_REVOKED, "")
            if opaque is None and issuer.introspects_jwts:
                # The issuer's word on a JWT that holds up on its own (revoked early?).
                yield issuer.introspector.introspect, (token,)
            if proof is not None:
                # Last: a request refused for any other reason must not use up its jti.
                sender = self.sender
                try:
                    fresh = yield (
                        sender.replay.first_use,
                        (proof.jkt, proof.jti, sender.until(proof), now),
                    )
                except Exception as exc:
                    fresh = sender.replay_failed(exc)
                if not fresh:
                    raise InvalidProof(Reason.DPOP_REPLAYED, "")
            if issuer.events is not None:
                issuer.events.verified(cached=found is not None)
            return verified
        except AuthError as exc:
            if location == DPOP:
                exc.scheme = "DPoP"  # its challenge carries the error (RFC 9449 §7.1)
            raise
        except Exception as exc:
            error = _internal_error(exc)
            if location == DPOP:
                error.scheme = "DPoP"
            raise error from None

    def _parse(
        self, token: str, now: float
    ) -> Generator[Step, Any, tuple[ParsedToken, dict[str, Any], Trusted]]:
        if len(token) > self.max_token_bytes:
            raise InvalidToken(Reason.TOKEN_TOO_LARGE, f"{len(token)} bytes")
        issuer = self._only
        if issuer is not None:
            parsed = parse(token, issuer.rules)  # the header first: its verdict is cached
            claims = _claims(parsed.payload)
        else:
            claims = _claims(_unverified_payload(token))
            iss = claims.get("iss")
            issuer = self._by_iss.get(iss) if isinstance(iss, str) else None
            if issuer is None:
                issuer = yield from self._resolve(claims, now)
            if len(token) > issuer.settings.max_token_bytes:
                raise InvalidToken(Reason.TOKEN_TOO_LARGE, f"{len(token)} bytes")
            parsed = parse(token, issuer.rules)
        issuer.check_claims(claims, now)
        return parsed, claims, issuer

    def _resolve(self, claims: Mapping[str, Any], now: float) -> Generator[Step, Any, Trusted]:
        # The (unverified) iss only chooses whose rules apply; that issuer's checks then do
        # everything, with that issuer's keys alone.
        iss = claims.get("iss")
        resolved = self.resolved
        if resolved is None or not isinstance(iss, str) or not 0 < len(iss) <= MAX_ISS:
            raise InvalidToken(Reason.ISSUER_MISMATCH, f"iss {str(iss)[:100]!r} not configured")
        found = resolved.known(iss)
        if found is False:
            raise InvalidToken(Reason.ISSUER_MISMATCH, f"iss {iss[:100]!r} not accepted")
        if found is not None:
            return found  # type: ignore[no-any-return]
        try:
            answer = yield resolved.resolver, (iss,)
        except AuthError:
            raise
        except Exception as exc:
            # The resolver's own failure (a tenant database down, say): this token's keys
            # cannot be known now, which is not the token's fault.
            logger.error("jwt_middleware: issuer_resolver raised", exc_info=exc)
            raise KeysUnavailable(f"issuer_resolver raised {type(exc).__name__}") from None
        return resolved.admit(iss, answer, now)  # type: ignore[no-any-return]

    def _introspected(
        self, issuer: Trusted, token: str, now: float
    ) -> Generator[Step, Any, VerifiedToken]:
        """An opaque token's verification: the introspection endpoint's answer about it, held
        to the issuer's rules as a JWT's claims would be."""
        if len(token) > issuer.settings.max_token_bytes:
            raise InvalidToken(Reason.TOKEN_TOO_LARGE, f"{len(token)} bytes")
        claims = yield issuer.introspector.introspect, (token,)
        # RFC 7662 §2.2: iss is optional; the endpoint asked is the issuer's own.
        iss = next(iter(issuer.settings.issuers)) if len(issuer.settings.issuers) == 1 else None
        issuer.check_claims(claims, now, default_iss=iss)
        exp = claims.get("exp")
        valid_until = exp + issuer.settings.leeway if exp is not None else None
        return VerifiedToken(
            claims, _NO_HEADER, issuer.scopes(claims), valid_until, binding(claims)
        )


def _remote_key(issuer: Issuer) -> tuple[Any, ...]:
    """What a key cache's fetches and key rules depend on: issuers equal in these can share
    one (the JWKS, discovery and key rules alike)."""
    bundle = issuer.jwks_ca_bundle
    return (
        issuer.jwks_url,
        issuer.discovery_issuer,
        issuer.rsa_max_bits,
        issuer.rsa_max_exponent,
        issuer.jwks_max_age,
        issuer.jwks_cooldown,
        issuer.jwks_timeout,
        issuer.jwks_max_bytes,
        issuer.jwks_max_stale,
        id(bundle) if isinstance(bundle, ssl.SSLContext) else bundle,
        issuer.jwks_proxy,
        issuer.jwks_trust_env,
        id(issuer.key_store),
        id(issuer.events),
        id(issuer.clock),
    )


def _unverified_payload(token: str) -> bytes:
    """The payload segment, decoded, to route by ``iss`` before the header is checked with the
    chosen issuer's rules (parse() then decodes it again, which costs less than passing it)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise InvalidToken(Reason.MALFORMED_TOKEN, f"{len(parts)} segments")
    try:
        return b64.decode(parts[1])
    except ValueError:
        raise InvalidToken(Reason.MALFORMED_PAYLOAD, "payload is not base64url") from None


def _claims(body: bytes) -> dict[str, Any]:
    try:
        # Frozen while parsing: the claims of a cached token are shared by every request that
        # carries it, nested members too. Once per verification, never per cache hit.
        claims = loads_strict(body, frozen=True)
    except (ValueError, RecursionError):
        raise InvalidToken(Reason.MALFORMED_PAYLOAD, "payload is not JSON") from None
    if not isinstance(claims, dict):
        raise InvalidToken(Reason.MALFORMED_PAYLOAD, "payload is not a JSON object")
    return claims


def _rejected_by_validator(exc: Exception) -> AuthError:
    if isinstance(exc, AuthError):
        return exc
    # A validator that crashes on a hostile token must refuse it, not answer 500.
    logger.error("jwt_middleware: a custom validator raised", exc_info=exc)
    return InvalidToken(Reason.VALIDATOR_FAILED, type(exc).__name__)


def _internal_error(exc: Exception) -> AuthError:
    # Defence in depth: a bug of ours met by a hostile token must refuse the request (fail
    # closed), not answer 500 with a traceback. Logged loudly, because it is a bug.
    logger.error("jwt_middleware: unexpected error while verifying a token", exc_info=exc)
    return InvalidToken(Reason.VERIFIER_ERROR, type(exc).__name__)


#: The header of a token that has none (an opaque token): read-only, like every JWT's.
_NO_HEADER: Mapping[str, Any] = loads_strict(b"{}", frozen=True)

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
