"""Finding the token in a request: the ``Authorization: Bearer`` header (RFC 6750 §2.1), or
``Authorization: DPoP`` (RFC 9449 §7.1), and/or one named cookie. Pure functions over raw
header pairs, so ASGI and WSGI share them.

Never the query string (RFC 6750 §2.3, RFC 9700 §2.5): URLs end up in logs and Referer headers.
"""

from __future__ import annotations

from collections.abc import Iterable

from ._errors import InvalidRequest, Reason

__all__ = ["COOKIE", "DPOP", "HEADER", "extract_token", "plain_bearer", "plain_token"]

HEADER = "header"
COOKIE = "cookie"
#: ``Authorization: DPoP <token>``: a DPoP-bound token, whose proof is in the DPoP header.
DPOP = "dpop"

# b64token = 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" / "/" ) *"="
_B64TOKEN = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~+/"


def credentials(value: bytes, *, dpop: bool = False) -> tuple[str, str] | None:
    """``(token, location)`` of one Authorization header value: ``Bearer`` (location
    ``header``) or, with ``dpop``, ``DPoP`` (RFC 9449 §7.1, location ``dpop``); None for
    another scheme (e.g. Basic). Malformed credentials of either scheme: InvalidRequest."""
    value = value.strip(b" \t")
    for name, location, on in ((b"bearer", HEADER, True), (b"dpop", DPOP, dpop)):
        if not on:
            continue
        size = len(name)
        scheme = value[: size + 1].lower()
        if scheme == name + b" ":
            token = value[size + 1 :].lstrip(b" ")
            body = token.rstrip(b"=")
            # translate() deletes every allowed byte: anything left is not b64token (this runs
            # on every request; it is several times cheaper than a regex over the whole token).
            if body and not body.translate(None, _B64TOKEN):
                return token.decode("ascii"), location
        if scheme == name or (scheme[:size] == name and scheme[size:] in (b" ", b"\t")):
            raise InvalidRequest(
                Reason.MALFORMED_AUTHORIZATION,
                f"malformed {name.decode().capitalize()} credentials",
            )
    return None


_BEARER = (b"Bearer ", b"bearer ")


def plain_bearer(
    headers: Iterable[tuple[bytes, bytes]], cookie: bytes | None = None
) -> bytes | None:
    """The token of the request's only ``Authorization`` header when it is exactly ``Bearer
    <token>`` and no ``Cookie`` header could carry another (with a ``cookie`` configured).

    The token is NOT checked: this is the token cache's key, so the hot path looks up a token it
    verified before without parsing anything. None (anything less plain, or no token): ask
    :func:`extract_token`, which applies every rule and says what is wrong.
    """
    found = None
    for name, value in headers:
        if name == b"authorization":
            if found is not None:
                return None
            found = value
        elif (name == b"cookie" and cookie is not None) or name == b"dpop":
            # A DPoP proof beside a token: the general path refuses or checks it.
            return None
    if found is not None and found.startswith(_BEARER):
        return found[7:]
    return None


def plain_token(plain: bytes) -> str | None:
    """A :func:`plain_bearer` token as :func:`extract_token` would return it, when it is a
    well-formed b64token (RFC 6750 §2.1) as it stands; None: let extract_token decide."""
    body = plain.rstrip(b"=")
    if body and not body.translate(None, _B64TOKEN):
        return plain.decode("ascii")
    return None


def cookie_values(cookie_headers: Iterable[bytes], name: bytes) -> list[str]:
    """Every non-empty value of cookie ``name`` across all Cookie headers (RFC 6265 §5.4)."""
    found: list[str] = []
    for header in cookie_headers:
        for pair in header.split(b";"):
            key, sep, value = pair.strip(b" \t").partition(b"=")
            if not sep or key.rstrip(b" \t") != name:
                continue
            value = value.strip(b" \t")
            if len(value) >= 2 and value[:1] == value[-1:] == b'"':
                value = value[1:-1]
            if value:
                found.append(value.decode("latin-1"))
    return found


def extract_token(
    headers: Iterable[tuple[bytes, bytes]],
    *,
    header: bool = True,
    cookie: bytes | None = None,
    dpop: bool = False,
) -> tuple[str, str] | None:
    """``(token, location)`` from ASGI-style lower-case header pairs, or None when absent.

    Raises InvalidRequest (400) for ambiguity: several Authorization headers, the token in more
    than one place (RFC 6750 §2), or several cookies of the configured name (a sibling
    subdomain can plant a second one: "cookie tossing").
    """
    authorizations: list[bytes] = []
    cookies: list[bytes] = []
    for name, value in headers:
        if name == b"authorization":
            authorizations.append(value)
        elif name == b"cookie":
            cookies.append(value)
    from_header = None
    if header and authorizations:
        if len(authorizations) > 1:
            raise InvalidRequest(Reason.MULTIPLE_TOKENS, "several Authorization headers")
        from_header = credentials(authorizations[0], dpop=dpop)
    if cookie is not None and cookies:
        values = cookie_values(cookies, cookie)
        if len(values) > 1:
            raise InvalidRequest(Reason.MALFORMED_COOKIE, "the token cookie appears more than once")
        if values and _joined_twice(values[0], cookie):
            raise InvalidRequest(Reason.MALFORMED_COOKIE, "the token cookie appears more than once")
        if values:
            if from_header is not None:
                raise InvalidRequest(Reason.MULTIPLE_TOKENS, "token in both header and cookie")
            return values[0], COOKIE
    return from_header


def _joined_twice(value: str, name: bytes) -> bool:
    """Whether a token cookie's value ends in ``,<name>=...``: two Cookie headers that a WSGI
    server joined with a comma, each with the token cookie (the ASGI side sees two headers)."""
    if "," not in value:
        return False
    prefix = name.decode("ascii") + "="
    return any(part.lstrip(" \t").startswith(prefix) for part in value.split(",")[1:])
