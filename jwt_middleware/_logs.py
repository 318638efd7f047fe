"""Refusal reasons reach the console even when the app configured no logging.

The middleware logs each refusal (reason and detail, never the token) at INFO. A process that
configured no logging drops INFO records: Python's last-resort handler shows WARNING and up,
and uvicorn and gunicorn configure only their own loggers. So with nothing configured, the
package logger gets a stderr handler at INFO. Anyone who configures logging takes over: a
handler on the root logger (``logging.basicConfig``, dictConfig) silences this one, and a
handler or level already set on ``jwt_middleware`` means it is never installed.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["show_refusals_by_default"]

_LOGGER = "jwt_middleware"


class _Fallback(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes only while the root logger has no handler: once it has one, the record reaches
    that handler by propagation, and writing it here too would show it twice."""

    def emit(self, record: logging.LogRecord) -> None:
        if not logging.getLogger().handlers:
            super().emit(record)


def show_refusals_by_default() -> None:
    """Install the fallback handler, once, if nothing is configured (see the module doc)."""
    package = logging.getLogger(_LOGGER)
    if package.handlers or package.level != logging.NOTSET or logging.getLogger().handlers:
        return
    handler = _Fallback(sys.stderr)
    handler.setFormatter(logging.Formatter("%(levelname)s:  %(message)s"))
    package.addHandler(handler)
    package.setLevel(logging.INFO)
