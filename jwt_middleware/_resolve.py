"""Issuers found at run time (multi-tenant providers): :class:`IssuerPattern`, and the bounded
bookkeeping the flow keeps of what a resolver answered.

A tenant's ``iss`` is read from a token that is not verified yet, so everything here assumes it
is made up: a resolver is consulted only for an ``iss`` no configured issuer names; what it
admits is kept in bounded caches, and admitting a *new* issuer (which may cost a discovery and a
key fetch) is rate limited, so a flood of invented issuers costs a bounded number of fetches and
cannot push the tenants that really sign tokens out of the cache.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import threading
from collections.abc import Callable, Collection
from typing import Any
from urllib.parse import urlsplit

from cachetools import LRUCache, TTLCache

from ._errors import ConfigurationError, InvalidToken, Reason, Unavailable
from ._settings import ISSUER_FIELDS, Issuer

__all__ = ["IssuerPattern", "Resolved"]

logger = logging.getLogger("jwt_middleware")

_PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)\}")
#: What a placeholder matches in a path: GUIDs, realm and tenant names. No dot, slash, percent
#: or colon, so a value can never climb out of its path segment (``..``) or change the host.
_IN_PATH = r"[A-Za-z0-9_-]{1,128}"
#: In the host, one lowercase DNS label: ``https://{tenant}.auth0.com/``.
_IN_HOST = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
#: Longest ``iss`` a resolver is asked about: longer is no issuer anyone configured.
MAX_ISS = 512


class IssuerPattern:
    """Trust every issuer whose ``iss`` fits ``template``, one placeholder standing for the
    tenant: ``IssuerPattern("https://login.microsoftonline.com/{tenant}/v2.0", audience=...)``.

    The other keywords are those of :class:`Issuer` (``audience``, ``jwks_url``,
    ``algorithms``, ...), the same for every tenant; ``{tenant}`` (the placeholder's name) in a
    string value is replaced by the tenant's value, e.g. a per-realm ``jwks_url``. Without
    ``jwks_url``, each tenant's keys come from its own discovery document.

    A placeholder in the path matches 1 to 128 of ``A-Z a-z 0-9 _ -``; in the host, one
    lowercase DNS label. ``allow``: the tenant values accepted (a collection, or a callable
    returning True for an accepted value); ``None``: any value that fits.
    """

    def __init__(
        self,
        template: str,
        *,
        allow: Collection[str] | Callable[[str], bool] | None = None,
        **issuer_fields: Any,
    ) -> None:
        if not isinstance(template, str):
            raise ConfigurationError(f"IssuerPattern template must be a string, got {template!r}")
        names = _PLACEHOLDER.findall(template)
        if len(names) != 1:
            raise ConfigurationError(
                "IssuerPattern template needs exactly one placeholder such as {tenant}, got "
                f"{template!r}"
            )
        self.template = template
        self.name = name = names[0]
        marker = "{" + name + "}"
        before, after = template.split(marker)
        parts = urlsplit(template.replace(marker, "tenant"))
        if parts.scheme != "https" and not (parts.scheme == "http" and _loopback(parts.hostname)):
            raise ConfigurationError(
                f"IssuerPattern template must be an https URL, got {template!r}"
            )
        in_host = "/" not in before[len(parts.scheme) + 3 :]
        if in_host and not (before.endswith(("//", ".")) and after[:1] in (".", ":", "/", "")):
            raise ConfigurationError(
                f"IssuerPattern: in the host, {marker} must be a whole DNS label: {template!r}"
            )
        value = _IN_HOST if in_host else _IN_PATH
        self._regex = re.compile(re.escape(before) + f"({value})" + re.escape(after))
        for field_name in ("issuer", "allow_any_issuer", "trust"):
            if field_name in issuer_fields:
                raise ConfigurationError(
                    f"IssuerPattern: {field_name} comes from the template; do not pass it"
                )
        unknown = sorted(set(issuer_fields) - set(ISSUER_FIELDS))
        if unknown:
            raise ConfigurationError(f"IssuerPattern: unknown Issuer fields {unknown}")
        if allow is not None and not callable(allow):
            if isinstance(allow, (str, bytes)) or not all(isinstance(v, str) for v in allow):
                raise ConfigurationError(
                    "IssuerPattern allow= must be a collection of tenant values or a callable"
                )
            allow = frozenset(allow)
        self.allow = allow
        self.fields = issuer_fields
        # Built once now with a sample value, so a wrong field fails at startup.
        self._build(template.replace(marker, "sample"), "sample")

    def __call__(self, iss: str) -> Issuer | None:
        """This tenant's :class:`Issuer`, or None when ``iss`` does not fit (or is not
        allowed)."""
        match = self._regex.fullmatch(iss)
        if match is None:
            return None
        value = match.group(1)
        allow = self.allow
        if allow is not None:
            if not (allow(value) if callable(allow) else value in allow):
                return None
        return self._build(iss, value)

    def _build(self, iss: str, value: str) -> Issuer:
        marker = "{" + self.name + "}"
        fields: dict[str, Any] = {
            name: v.replace(marker, value) if isinstance(v, str) else v
            for name, v in self.fields.items()
        }
        return Issuer(issuer=iss, **fields)

    def __repr__(self) -> str:
        return f"IssuerPattern({self.template!r})"


def _loopback(host: str | None) -> bool:
    return host in ("localhost", "127.0.0.1", "::1")


class _Budget:
    """A token bucket: ``per_minute`` admissions, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.rate = per_minute / 60.0
        self.capacity = float(per_minute)
        self.left = float(per_minute)
        self.at: float | None = None

    def take(self, now: float) -> float:
        """0 when one admission is allowed now (and taken); else seconds until one is."""
        if self.at is not None:
            # A clock stepped back refills nothing, and takes nothing back either.
            self.left = min(self.capacity, self.left + max(0.0, now - self.at) * self.rate)
        self.at = now
        if self.left >= 1.0:
            self.left -= 1.0
            return 0.0
        return (1.0 - self.left) / self.rate if self.rate > 0 else 60.0


class Resolved:
    """What the flow remembers of a resolver's answers, all bounded.

    ``proven``: issuers one of whose tokens verified (kept in an LRU of ``size``); ``pending``:
    admitted but not yet proven, a small LRU of their own, so invented issuers (whose tokens
    never verify) can only push each other out; ``refused``: the ``iss`` values the resolver
    said no to, for a minute, so a repeated one does not ask it again. Admissions into
    ``pending`` are limited to ``per_minute``."""

    def __init__(
        self, resolver: Callable[[str], Any], size: int, per_minute: int, build: Callable[..., Any]
    ) -> None:
        self.resolver = resolver
        self.proven: LRUCache[str, Any] = LRUCache(maxsize=size)
        self.pending: LRUCache[str, Any] = LRUCache(maxsize=max(16, 2 * per_minute))
        self.refused: TTLCache[str, bool] = TTLCache(maxsize=4096, ttl=60.0)
        self._budget = _Budget(per_minute)
        self._build = build  # Issuer -> the flow's Trusted
        # cachetools' caches are not thread safe, and the WSGI side's threads share these.
        self._lock = threading.Lock()

    def known(self, iss: str) -> Any:
        """The flow's issuer for ``iss`` if admitted already; False if refused lately; None:
        ask the resolver."""
        with self._lock:
            found = self.proven.get(iss)
            if found is None:
                found = self.pending.get(iss)
            if found is None and iss in self.refused:
                return False
            return found

    def admit(self, iss: str, answer: Any, now: float) -> Any:
        """The flow's issuer for the resolver's ``answer`` about ``iss``; raises the refusal."""
        if answer is None:
            with self._lock:
                self.refused[iss] = True
            raise InvalidToken(Reason.ISSUER_MISMATCH, f"iss {iss[:100]!r} not accepted")
        if type(answer) is not Issuer or iss not in answer.issuers:
            logger.error(
                "jwt_middleware: issuer_resolver answered %r for iss %r: it must return an "
                "Issuer(issuer=<that iss>, ...) or None",
                type(answer).__name__,
                iss[:100],
            )
            raise InvalidToken(Reason.ISSUER_MISMATCH, "issuer_resolver gave no usable issuer")
        if answer.introspection is not None:
            logger.error(
                "jwt_middleware: issuer_resolver answered an Issuer with introspection for "
                "%r: opaque tokens carry no iss to resolve; configure it on a trusted issuer",
                iss[:100],
            )
            raise InvalidToken(Reason.ISSUER_MISMATCH, "resolved issuer with introspection")
        with self._lock:
            found = self.proven.get(iss) or self.pending.get(iss)
            if found is not None:  # another request admitted it meanwhile
                return found
            wait = self._budget.take(now)
            if wait:
                raise Unavailable(Reason.ISSUER_RATE_LIMITED, iss[:100], retry_after=wait)
        trusted = self._build(answer)  # outside the lock: it may build a key cache
        with self._lock:
            self.pending[iss] = trusted
        logger.info("jwt_middleware: admitted issuer %r (issuer_resolver)", iss[:100])
        return trusted

    def prove(self, iss: str, trusted: Any) -> None:
        """A token of ``iss`` verified: keep its issuer among the proven ones."""
        with self._lock:
            if self.pending.pop(iss, None) is not None:
                self.proven[iss] = trusted


def with_shared(issuer: Issuer, clock: Any, events: Any) -> Issuer:
    """``issuer`` with the settings' clock and events where it left them unset (as
    ``Settings.trust`` does)."""
    changes = {}
    for name, ours in (("clock", clock), ("events", events)):
        own = getattr(issuer, name)
        if own is _DEFAULTS[name] and ours is not own:
            changes[name] = ours
    return dataclasses.replace(issuer, **changes) if changes else issuer


_DEFAULTS = {f.name: f.default for f in dataclasses.fields(Issuer) if f.name in ("clock", "events")}
