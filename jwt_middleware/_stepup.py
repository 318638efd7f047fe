"""Step-up authentication (RFC 9470): a route that needs a stronger or more recent login than
the token shows (``acr``, ``auth_time``) answers 401 ``insufficient_user_authentication`` with
what the client must ask the authorization server for (``acr_values``, ``max_age``). Shared by
the Starlette, FastAPI and Flask per-route checks; no framework imports."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

from ._errors import ConfigurationError, InsufficientAuthentication

__all__ = ["StepUp", "step_up"]

# RFC 9470 §3: acr_values is a space-separated list in a quoted string: visible ASCII, no
# quote or backslash (anything else would reach the client altered).
_ACR = re.compile(r"[\x21\x23-\x5b\x5d-\x7e]+")
_MAX_DATE = 10**11


class StepUp(NamedTuple):
    """A route's authentication requirement: ``acr`` one of ``acr_values`` (when any), and the
    login (``auth_time``) at most ``max_age`` seconds ago (when set)."""

    acr_values: tuple[str, ...] = ()
    max_age: int | None = None

    def check(self, claims: Mapping[str, Any], now: float, leeway: float = 0.0) -> None:
        """Raise InsufficientAuthentication unless the claims meet the requirement; an
        ``auth_time`` more than ``leeway`` ahead of ``now`` proves no recent login."""
        if self.acr_values:
            acr = claims.get("acr")
            if not isinstance(acr, str) or acr not in self.acr_values:
                self._refuse(f"acr {str(acr)[:40]!r}")
        if self.max_age is not None:
            auth_time = claims.get("auth_time")
            if (
                isinstance(auth_time, bool)
                or not isinstance(auth_time, (int, float))
                or not 0 <= auth_time <= _MAX_DATE
            ):
                self._refuse("no auth_time")
            elif auth_time > now + leeway:
                self._refuse("auth_time in the future")
            elif now - auth_time > self.max_age:
                self._refuse(f"login {now - auth_time:.0f}s ago")

    def _refuse(self, detail: str) -> None:
        raise InsufficientAuthentication(self.acr_values, self.max_age, detail)


NONE = StepUp()


def step_up(acr_values: Iterable[str] = (), max_age: float | None = None) -> StepUp:
    """The checked requirement of a per-route helper's ``acr_values``/``max_age`` arguments."""
    if isinstance(acr_values, (str, bytes)):
        raise ConfigurationError("acr_values must be a list of values, not a single string")
    values = tuple(dict.fromkeys(acr_values))
    for value in values:
        if not isinstance(value, str) or not _ACR.fullmatch(value):
            raise ConfigurationError(
                f"an acr value is a word of visible ASCII without spaces or quotes, got {value!r}"
            )
    if max_age is not None and (
        isinstance(max_age, bool)
        or not isinstance(max_age, (int, float))
        or not math.isfinite(max_age)
        or max_age < 0
    ):
        raise ConfigurationError(f"max_age must be a number of seconds >= 0, got {max_age!r}")
    if not values and max_age is None:
        return NONE
    return StepUp(values, None if max_age is None else int(max_age))
