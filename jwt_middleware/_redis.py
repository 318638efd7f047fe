"""What the Redis-backed stores (revocation, DPoP replay) share: how a client is built from a
URL, and how a failure talking to Redis becomes the store's own error.

``redis`` is an optional dependency, so it is imported only when a store is built from a URL.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from typing_extensions import Self  # typing.Self is Python 3.11+

__all__ = ["DEFAULT_PREFIX", "RedisClientStore", "failures_as"]

#: Every store's keys start with this unless told otherwise; each kind of store adds its own
#: segment after it ("jti:", "sub:", "dpop:"), so stores sharing a prefix never collide.
DEFAULT_PREFIX = "jwt_middleware:"

#: A store that cannot reach Redis must say so fast: a request waits on it.
DEFAULT_SOCKET_TIMEOUT = 1.0


class RedisClientStore:
    """A store over one Redis client (``client``). Subclasses name the client class they expect
    (sync ``redis.Redis`` or ``redis.asyncio.Redis``) for :meth:`from_url`."""

    _client_class = "redis.Redis"

    def __init__(self, client: Any, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.client = client
        self.prefix = prefix

    @classmethod
    def from_url(cls, url: str, **options: Any) -> Self:
        """A store on a new client for ``url`` (``socket_timeout`` 1 s unless given; the other
        options are the store's)."""
        module, _, name = cls._client_class.rpartition(".")
        client_class = getattr(importlib.import_module(module), name)
        timeout = options.pop("socket_timeout", DEFAULT_SOCKET_TIMEOUT)
        return cls(client_class.from_url(url, socket_timeout=timeout), **options)


@contextmanager
def failures_as(error: type[Exception]) -> Iterator[None]:
    """Any failure talking to Redis (network, timeout, auth, script) raises ``error``, named by
    the failure's type only: redis messages can carry the host, and a chained cause would carry
    it into the traceback, so neither is kept. Cancellation (a BaseException) passes through."""
    try:
        yield
    except Exception as exc:
        raise error(type(exc).__name__) from None
