"""The two drivers of :class:`~jwt_middleware._flow.Flow`: ``AsyncVerifier`` awaits what the
flow asks for, on the event loop; ``SyncVerifier`` calls it, in the request's thread. Neither
holds a rule of its own."""

from __future__ import annotations

import inspect
from collections.abc import Sequence
from typing import Any

from ._errors import ConfigurationError
from ._extract import HEADER
from ._flow import Flow, VerifiedToken, token_digest
from ._sender import Request
from ._settings import Issuer, Settings, issuer_entries

__all__ = ["AsyncVerifier", "SyncVerifier", "VerifiedToken", "token_digest"]


class _Driver:
    def __init__(self, settings: Settings | Sequence[Settings]) -> None:
        #: The request-level settings (the first entry's, for several issuers).
        self.settings, entries = issuer_entries(settings)
        #: The trusted issuers, in the order given.
        self.issuers: tuple[Issuer, ...] = tuple(entries)
        self._flow = Flow(self.settings, entries, self._key_cache, self._introspector)
        #: Whether :meth:`cached` can ever answer (the adapters skip the lookup otherwise).
        self.caches = self._flow.caches
        #: The verified token for a :func:`token_digest`, from the token cache, when nothing
        #: else needs checking; else None (call ``verify``). No I/O, no parsing, no await.
        self.cached = self._flow.cached

    def _key_cache(self, settings: Issuer) -> Any:
        raise NotImplementedError

    def _introspector(self, settings: Issuer) -> Any:
        raise NotImplementedError

    def _known(
        self, token: str, digest: bytes | None, request: Request | None, location: str
    ) -> tuple[VerifiedToken | None, bytes | None]:
        """``(the token cache's answer or None, the digest)``, before the flow's generator is
        built: a cache hit then costs 1.7 µs, not 2.0 (bench, "SyncVerifier, one repeated
        token": 601k/s like this, 509k/s through the generator). A caller that passes the
        digest (the middlewares) has asked :meth:`cached` already: it is not asked twice. With
        a request, or a location other than the Bearer header (the middlewares' general path: a
        DPoP scheme, a DPoP header, a cookie), the steps decide: their cache hit still runs the
        sender checks, which ``cached`` knows nothing of."""
        if digest is not None or not self.caches or request is not None or location != HEADER:
            return None, digest
        digest = token_digest(token.encode())
        return self._flow.cached(digest), digest

    @property
    def remote(self) -> Any:
        """The remote key cache when there is one issuer with remote keys (else None), to
        inspect its state (``remote.policy``) in diagnostics and tests."""
        issuers = self._flow.issuers
        return issuers[0].remote if len(issuers) == 1 else None

    @property
    def _remotes(self) -> list[Any]:
        return self._flow.remotes

    @property
    def _introspectors(self) -> list[Any]:
        opaque = self._flow.opaque
        return [opaque.introspector] if opaque is not None else []


class AsyncVerifier(_Driver):
    """Verifies tokens on the event loop; remote keys are fetched without blocking it.

    Pass one :class:`Settings`, or a list of them for several trusted issuers."""

    def _key_cache(self, settings: Issuer) -> Any:
        from ._jwks_async import AsyncJWKS  # here: a WSGI process never imports asyncio

        return AsyncJWKS(settings)

    def _introspector(self, settings: Issuer) -> Any:
        from ._introspect import AsyncIntrospector

        return AsyncIntrospector(settings.introspection, settings.clock)

    async def verify(
        self,
        token: str,
        digest: bytes | None = None,
        *,
        location: str = HEADER,
        request: Request | None = None,
    ) -> VerifiedToken:
        """The verified token, or an AuthError (never any other exception).

        ``digest``: the token's :func:`token_digest`, when the caller has it already;
        ``location``/``request``: where the token was found, and the request, for the checks of
        sender-constrained tokens (without a request, a bound token is refused)."""
        verified, digest = self._known(token, digest, request, location)
        if verified is not None:
            return verified
        flow = self._flow.steps(token, digest, location, request)
        answer, result = flow.send, None
        try:
            while True:
                function, args = answer(result)
                try:
                    result = function(*args)
                    if inspect.isawaitable(result):
                        result = await result
                    answer = flow.send
                except Exception as exc:
                    answer, result = flow.throw, exc
        except StopIteration as done:
            result = done.value
            assert isinstance(result, VerifiedToken)
            return result

    async def warm_up(self) -> None:
        """Fetch the remote keys now, so the first request does not wait for them."""
        for remote in self._remotes:
            await remote.refresh(rate_limited=False)

    async def aclose(self) -> None:
        for remote in self._remotes:
            await remote.aclose()
        for introspector in self._introspectors:
            await introspector.aclose()


class SyncVerifier(_Driver):
    """Verifies tokens in the calling thread (WSGI); remote keys are fetched in a thread of
    their own. Pass one :class:`Settings`, or a list of them for several trusted issuers."""

    def _key_cache(self, settings: Issuer) -> Any:
        from ._jwks import SyncJWKS

        return SyncJWKS(settings)

    def _introspector(self, settings: Issuer) -> Any:
        from ._introspect import SyncIntrospector

        return SyncIntrospector(settings.introspection, settings.clock)

    def __init__(self, settings: Settings | Sequence[Settings]) -> None:
        super().__init__(settings)
        for issuer in self._flow.issuers:
            for validator in issuer.validators:
                if inspect.iscoroutinefunction(validator):
                    raise ConfigurationError(f"async validator {validator!r} cannot run under WSGI")
            store = issuer.revocation
            if store is not None and inspect.iscoroutinefunction(store.is_revoked):
                raise ConfigurationError(
                    "an async revocation store cannot run under WSGI; use RedisRevocationStore"
                )
        resolver = self.settings.issuer_resolver
        if inspect.iscoroutinefunction(resolver) or inspect.iscoroutinefunction(
            getattr(resolver, "__call__", None)  # noqa: B004 - an object with async __call__
        ):
            raise ConfigurationError("an async issuer_resolver cannot run under WSGI")
        if inspect.iscoroutinefunction(self._flow.sender.replay.first_use):
            raise ConfigurationError(
                "an async DPoP replay store cannot run under WSGI; use RedisReplayStore"
            )

    def verify(
        self,
        token: str,
        digest: bytes | None = None,
        *,
        location: str = HEADER,
        request: Request | None = None,
    ) -> VerifiedToken:
        """The verified token, or an AuthError (never any other exception); the arguments are
        :meth:`AsyncVerifier.verify`'s."""
        verified, digest = self._known(token, digest, request, location)
        if verified is not None:
            return verified
        flow = self._flow.steps(token, digest, location, request)
        answer, result = flow.send, None
        try:
            while True:
                function, args = answer(result)
                try:
                    result = function(*args)
                    if inspect.isawaitable(result):
                        # An async callable that escaped the check above (an object with an
                        # async __call__): its answer was never computed; it is not a yes.
                        _discard(result)
                        raise TypeError(f"{function!r} returned an awaitable under WSGI")
                    answer = flow.send
                except Exception as exc:
                    answer, result = flow.throw, exc
        except StopIteration as done:
            result = done.value
            assert isinstance(result, VerifiedToken)
            return result

    def warm_up(self) -> None:
        """Fetch the remote keys now, so the first request does not wait for them."""
        for remote in self._remotes:
            remote.refresh(rate_limited=False)

    def close(self) -> None:
        for remote in self._remotes:
            remote.close()
        for introspector in self._introspectors:
            introspector.close()


def _discard(awaitable: Any) -> None:
    close = getattr(awaitable, "close", None)
    if callable(close):
        close()  # no "coroutine was never awaited" warning
