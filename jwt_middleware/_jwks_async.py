"""The async transport of the remote JWKS cache, for the ASGI side: httpcore on the running loop.

Apart from :mod:`._jwks` (policy, fetch flow, sync transport) so that importing the WSGI side never
imports asyncio.
"""

from __future__ import annotations

import asyncio
import time

import httpcore

from ._errors import KeyFetchError
from ._jwks import _TOO_SLOW, Plan, _advance, _Answer, _Body, _Outcome, _Remote, _Target
from ._keys import KeySet
from ._settings import Issuer

__all__ = ["AsyncJWKS"]


class AsyncJWKS(_Remote):
    """Remote keys for the ASGI side (httpcore on the running loop), never blocking the loop."""

    def __init__(self, settings: Issuer) -> None:
        super().__init__(settings)
        self._flight: asyncio.Future[None] | None = None
        self._deadline = 0.0
        self._tasks: set[asyncio.Task[None]] = set()

    async def keyset_for(self, kid: str | None) -> KeySet:
        """The keys to look ``kid`` up in, fetching first (or joining the fetch in flight) when
        the policy says so; raises KeysUnavailable."""
        plan, now = self._plan(kid)
        if plan is Plan.FETCH:
            return self._keys_after_fetch(kid, await self.refresh())
        return self.policy.usable_keyset(kid, now)

    def _refresh_in_background(self) -> None:
        self._start()

    async def refresh(self, *, rate_limited: bool = True) -> bool:
        """Fetch now, or join the fetch in flight. Never raises: failures go to the policy.
        False: the fetch was still running at its deadline."""
        if self._flight is None:
            if not self.policy.may_fetch(self.clock()):
                return True
            self._start(rate_limited=rate_limited)
        flight = self._flight
        assert flight is not None
        # The fetch runs in its own task and the waiters are shielded from it: a client that
        # disconnects cancels its own wait, never the fetch everyone else is waiting for.
        left = max(0.0, self._deadline - time.monotonic())
        try:
            await asyncio.wait_for(asyncio.shield(flight), timeout=left)
        except asyncio.TimeoutError:
            return flight.done()
        return True

    def _start(self, *, rate_limited: bool = True) -> None:
        loop = asyncio.get_running_loop()
        self.policy.begin(self.clock(), rate_limited=rate_limited)
        self._deadline = time.monotonic() + self.total
        flight: asyncio.Future[None] = loop.create_future()
        self._flight = flight
        task = loop.create_task(self._run(flight))
        self._tasks.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _run(self, flight: asyncio.Future[None]) -> None:
        outcome: _Outcome = KeyFetchError("fetch cancelled")
        try:
            outcome = await asyncio.wait_for(self._fetch(), timeout=self.total)
        except asyncio.TimeoutError:
            outcome = KeyFetchError(_TOO_SLOW)
        finally:
            try:
                self._record(outcome)
            finally:
                self._flight = None
                if not flight.done():
                    flight.set_result(None)
        self._report(outcome)

    async def aclose(self) -> None:
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    async def _fetch(self) -> _Outcome:
        flow = self._flow()
        step = _advance(flow, None)
        while isinstance(step, _Target):
            step = _advance(flow, await self._answer(step))
        return step

    async def _answer(self, target: _Target) -> _Answer:
        """One GET, or the exception it ended with."""
        limits = self.limits
        # A pool per request: its connection belongs to this loop, and none outlives the fetch.
        proxied = target.proxy is not None
        pool_class = httpcore.AsyncHTTPProxy if proxied else httpcore.AsyncConnectionPool
        pool = pool_class(**limits.pool_options(target))
        try:
            async with (
                pool,
                pool.stream(
                    "GET", target.url, headers=target.headers, extensions=limits.extensions
                ) as response,
            ):
                body = _Body(target, response.status, response.headers, limits.max_bytes)
                async for chunk in response.aiter_stream():
                    body.feed(chunk)
        except Exception as exc:
            return exc
        return body
