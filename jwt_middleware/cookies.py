"""Setting the token cookie correctly, on a Starlette or a Flask/werkzeug response.

What the issuer side should set, and why:

* ``HttpOnly`` — page scripts (and so XSS) cannot read the token. Always on here.
* ``Secure`` — never sent over plain http. Browsers treat http://localhost and 127.0.0.1 as
  secure contexts, so local development works too.
* ``SameSite=Strict`` (default; ``Lax`` if users arrive from links on other sites and must be
  logged in on that first GET) — the browser does not attach the cookie to cross-site requests.
  Defence in depth: CSRF checks still run.
* ``Path=/`` and the ``__Host-`` name prefix — the browser then refuses the cookie unless it
  was set by this exact host over https with Path=/ and no Domain, so a sibling subdomain cannot
  plant or overwrite it ("cookie tossing").
* ``Max-Age`` — no longer than the token's own lifetime.
"""

from __future__ import annotations

from typing import Any, Literal

from ._errors import ConfigurationError

__all__ = ["clear_token_cookie", "set_token_cookie"]

SameSite = Literal["strict", "lax"]


def set_token_cookie(
    response: Any,
    token: str,
    *,
    max_age: int,
    name: str = "__Host-access_token",
    path: str = "/",
    samesite: SameSite = "strict",
    secure: bool = True,
) -> None:
    """Set ``name=token`` on ``response`` (anything with Starlette's/werkzeug's ``set_cookie``)."""
    if isinstance(max_age, bool) or not isinstance(max_age, int) or max_age <= 0:
        raise ConfigurationError(
            "max_age must be a positive number of seconds (the token's lifetime)"
        )
    _set(response, name, token, max_age, path, samesite, secure)


def clear_token_cookie(
    response: Any,
    *,
    name: str = "__Host-access_token",
    path: str = "/",
    samesite: SameSite = "strict",
    secure: bool = True,
) -> None:
    """Expire the cookie (same attributes, or browsers keep the old one)."""
    _set(response, name, "", 0, path, samesite, secure)


def _set(
    response: Any, name: str, value: str, max_age: int, path: str, samesite: str, secure: bool
) -> None:
    _check(name, path, samesite, secure)
    expires = {"expires": 0} if max_age == 0 else {}  # clearing: old browsers need Expires too
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path=path,
        secure=secure,
        httponly=True,
        samesite=samesite,
        **expires,
    )


def _check(name: str, path: str, samesite: str, secure: bool) -> None:
    if samesite not in ("strict", "lax"):
        raise ConfigurationError(
            "samesite must be 'strict' or 'lax' ('none' sends the token cross-site)"
        )
    if name.startswith(("__Host-", "__Secure-")) and not secure:
        raise ConfigurationError(f"a {name.split('-')[0]}- cookie must be secure")
    if name.startswith("__Host-") and path != "/":
        raise ConfigurationError("a __Host- cookie must have path='/'")
    if not path.startswith("/"):
        raise ConfigurationError("path must start with '/'")
