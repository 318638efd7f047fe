"""The async transport of the remote JWKS cache, for the ASGI side: httpcore on the running loop.

Apart from :mod:`._jwks` (policy, fetch flow, sync transport) so that importing the WSGI side never
imports asyncio.
"""

from __future__ import annotations

import asyncio
import functools
import time
from typing import Any

import httpcore

from ._errors import KeyFetchError
from ._jwks import (
    _TOO_SLOW,
    Plan,
    _advance,
    _Answer,
    _Body,
    _is_step,
    _Outcome,
    _Pause,
    _Remote,
    _Step,
    _StoreCall,
    _Target,
    late_release,
    store_call_limit,
    store_too_slow,
)
from ._keys import KeySet
from ._settings import Issuer
from .keystore import MemoryKeyStore, is_async

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
            return self._keys_after_fetch(kid, await self.refresh(kid=kid))
        return self.policy.usable_keyset(kid, now)

    def _refresh_in_background(self) -> None:
        self._start()

    async def refresh(self, *, rate_limited: bool = True, kid: str | None = None) -> bool:
        """Fetch now, or join the fetch in flight. Never raises: failures go to the policy.
        False: the fetch was still running at its deadline. ``kid``: the unknown key the fetch
        is for (a shared document without it is no answer)."""
        if self._flight is None:
            if not self.policy.may_fetch(self.clock()):
                return True
            self._start(rate_limited=rate_limited, kid=kid)
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

    def _start(self, *, rate_limited: bool = True, kid: str | None = None) -> None:
        loop = asyncio.get_running_loop()
        self.policy.begin(self.clock(), rate_limited=rate_limited)
        self._deadline = time.monotonic() + self.total
        flight: asyncio.Future[None] = loop.create_future()
        self._flight = flight
        task = loop.create_task(self._run(flight, kid))
        self._tasks.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self._tasks.discard)

    async def _run(self, flight: asyncio.Future[None], kid: str | None) -> None:
        outcome: _Outcome = KeyFetchError("fetch cancelled")
        deadline = asyncio.get_running_loop().time() + self.total
        try:
            outcome = await asyncio.wait_for(self._fetch(kid, deadline), timeout=self.total)
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

    async def _fetch(self, kid: str | None, deadline: float) -> _Outcome:
        flow = self._flow(kid)
        step = _advance(flow, None)
        while _is_step(step):
            step = _advance(flow, await self._make(step, deadline))
        outcome: _Outcome = step
        return outcome

    async def _make(self, step: _Step, deadline: float) -> Any:
        """The answer to one step of the flow (``deadline``: the fetch's, in loop time)."""
        if isinstance(step, _Target):
            return await self._answer(step)
        if isinstance(step, _Pause):
            await asyncio.sleep(step.seconds)
            return None
        assert isinstance(step, _StoreCall)
        method = getattr(self.store, step.method)
        # Bounded, so a store that hangs leaves the fetch time to reach the key server itself.
        limit = store_call_limit(deadline - asyncio.get_running_loop().time())
        if isinstance(self.store, MemoryKeyStore):
            try:
                return method(*step.args)  # a dict behind a lock: it never blocks for long
            except Exception as exc:
                return exc
        # A sync store (redis-py, a database client) blocks on its socket: off the loop. Its
        # calls are few (a fetch's worth, once per max age), so a thread costs nothing.
        call = asyncio.ensure_future(
            method(*step.args) if is_async(self.store) else asyncio.to_thread(method, *step.args)
        )
        try:
            # Shielded: a call given up on goes on, so that a lock it takes late is released.
            return await asyncio.wait_for(asyncio.shield(call), limit)
        except asyncio.TimeoutError:
            return store_too_slow(limit)
        except Exception as exc:
            return exc
        finally:
            if not call.done():
                call.add_done_callback(functools.partial(self._late, step))

    def _late(self, step: _StoreCall, call: asyncio.Future[Any]) -> None:
        """A store call answered after the fetch gave up on it: undo what needs undoing."""
        if call.cancelled() or call.exception() is not None:
            return
        undo = late_release(step, call.result())
        if undo is None:
            return
        release = self.store.release
        done = release(*undo) if is_async(self.store) else asyncio.to_thread(release, *undo)
        task = asyncio.ensure_future(done)
        self._tasks.add(task)  # asyncio keeps only weak references to tasks
        task.add_done_callback(self._released)

    def _released(self, task: asyncio.Future[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()  # it expires anyway: retrieved, so never reported as lost

    async def _answer(self, target: _Target) -> _Answer:
        """One GET, or the exception it ended with."""
        limits = self.limits
        # A pool per request: its connection belongs to this loop, and none outlives the fetch.
        proxied = target.proxy is not None
        pool_class = httpcore.AsyncHTTPProxy if proxied else httpcore.AsyncConnectionPool
        pool = pool_class(**limits.pool_options(target.proxy))
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
