"""``jwt-middleware`` (or ``python -m jwt_middleware``): diagnose tokens and key sets.

    jwt-middleware inspect [TOKEN]            decode without trusting it; warnings
    jwt-middleware verify [TOKEN] --issuer I --audience A [--jwks-url U | --discovery] ...
    jwt-middleware jwks URL                   list the keys a JWKS serves

TOKEN is read from standard input when omitted or "-". The token itself is never printed.

Exit codes: 0 ok (decoded / valid / listed) · 1 the token is invalid · 2 usage or configuration
error · 3 the input is not a decodable JWT · 4 keys could not be fetched.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import time
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

import httpx

from . import b64
from .errors import AuthError, ConfigurationError, Reason, Unavailable
from .jws import loads_strict
from .keys import KeySet
from .settings import DEFAULT_ALGORITHMS, Settings
from .verify import SyncVerifier

__all__ = ["main"]

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNDECODABLE, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
_KEY_SOURCE_HEADERS = ("jku", "x5u", "jwk", "x5c")


def main(
    argv: Sequence[str] | None = None, *, stdin: TextIO | None = None, out: TextIO | None = None
) -> int:
    out = out or sys.stdout
    parser = _parser()
    args = parser.parse_args(argv)
    try:
        if args.command == "jwks":
            return _jwks(args.url, args.timeout, out)
        token = _read_token(args.token, stdin or sys.stdin)
        if args.command == "inspect":
            return _inspect(token, args.algorithms, out)
        return _verify(token, args, out)
    except ConfigurationError as exc:
        print(f"configuration error: {exc}", file=out)
        return EXIT_USAGE


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jwt-middleware",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    inspect = sub.add_parser("inspect", help="decode a token without verifying it")
    inspect.add_argument("token", nargs="?", default="-")
    inspect.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS))
    verify = sub.add_parser("verify", help="run exactly the middleware's checks on a token")
    verify.add_argument("token", nargs="?", default="-")
    verify.add_argument("--issuer", action="append", help="trusted issuer (repeatable)")
    verify.add_argument("--audience", action="append", help="this API's audience (repeatable)")
    verify.add_argument("--any-issuer", action="store_true", help="waive the issuer check")
    verify.add_argument("--any-audience", action="store_true", help="waive the audience check")
    verify.add_argument("--jwks-url")
    verify.add_argument("--discovery", action="store_true", help="OIDC discovery from --issuer")
    verify.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS))
    verify.add_argument("--leeway", type=float, default=60.0)
    verify.add_argument("--typ")
    verify.add_argument("--require-claim", action="append", default=[])
    verify.add_argument("--timeout", type=float, default=5.0)
    jwks = sub.add_parser("jwks", help="list the keys served at a JWKS URL")
    jwks.add_argument("url")
    jwks.add_argument("--timeout", type=float, default=5.0)
    return parser


def _read_token(arg: str, stdin: TextIO) -> str:
    return (stdin.read() if arg == "-" else arg).strip()


def _decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"a signed JWT has 3 dot-separated parts, this has {len(parts)}")
    header, payload = (loads_strict(b64.decode(p)) for p in parts[:2])
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise ValueError("header and payload must be JSON objects")
    return header, payload


def _when(value: Any, now: float) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return f"{value!r} (not a NumericDate)"
    try:
        stamp = dt.datetime.fromtimestamp(value, tz=dt.timezone.utc).isoformat(timespec="seconds")
    except (OverflowError, OSError, ValueError):
        return f"{value!r} (out of range)"
    delta = value - now
    ago = f"in {_span(delta)}" if delta >= 0 else f"{_span(-delta)} ago"
    return f"{stamp} ({ago})"


def _span(seconds: float) -> str:
    seconds = int(seconds)
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return (
                f"{seconds // size}{unit} {seconds % size}s"
                if unit == "m"
                else f"{seconds // size}{unit}"
            )
    return f"{seconds}s"


def _inspect(token: str, algorithms: str, out: TextIO) -> int:
    try:
        header, claims = _decode(token)
    except (ValueError, RecursionError) as exc:
        print(f"not a decodable JWT: {exc}", file=out)
        return EXIT_UNDECODABLE
    now = time.time()
    print("UNVERIFIED — nothing below is trusted until `verify` succeeds.\n", file=out)
    print("header:", json.dumps(header, indent=2, sort_keys=True), sep="\n", file=out)
    print("claims:", json.dumps(claims, indent=2, sort_keys=True), sep="\n", file=out)
    times = [(n, claims[n]) for n in ("iat", "nbf", "exp") if n in claims]
    if times:
        print("times:", file=out)
        for name, value in times:
            print(f"  {name}: {_when(value, now)}", file=out)
    for warning in _warnings(token, header, claims, set(algorithms.split(",")), now):
        print(f"warning: {warning}", file=out)
    return EXIT_OK


def _warnings(
    token: str, header: Mapping[str, Any], claims: Mapping[str, Any], allowed: set[str], now: float
) -> list[str]:
    found = []
    alg = header.get("alg")
    if not isinstance(alg, str) or alg.lower() == "none":
        found.append(f"alg {alg!r} is never accepted")
    elif alg not in allowed:
        found.append(f"alg {alg} is outside the allow-list ({', '.join(sorted(allowed))})")
    if "kid" not in header:
        found.append("no kid: accepted only if exactly one configured key fits the alg")
    for name in _KEY_SOURCE_HEADERS:
        if name in header:
            found.append(f"header {name!r} is present; it is never used to find keys")
    if "crit" in header:
        found.append("crit header present: refused (no extensions are supported)")
    if "exp" not in claims:
        found.append("no exp: refused by default (require_exp=True)")
    elif (
        isinstance(claims["exp"], (int, float))
        and not isinstance(claims["exp"], bool)
        and claims["exp"] <= now
    ):
        found.append("expired")
    for name in ("iss", "aud", "sub"):
        if name not in claims:
            found.append(f"no {name} claim")
    if len(token) > 8192:
        found.append(f"{len(token)} bytes: over the default 8 KiB size cap")
    return found


def _verify(token: str, args: argparse.Namespace, out: TextIO) -> int:
    settings = Settings(
        issuer=args.issuer if args.issuer else None,
        audience=args.audience if args.audience else None,
        allow_any_issuer=args.any_issuer,
        allow_any_audience=args.any_audience,
        jwks_url=args.jwks_url,
        discovery=True if args.discovery else None,
        algorithms=[a for a in args.algorithms.split(",") if a],
        leeway=args.leeway,
        typ=args.typ,
        required_claims=args.require_claim,
        jwks_timeout=args.timeout,
        token_cache_size=0,
    )
    verifier = SyncVerifier(settings)
    try:
        verified = verifier.verify(token)
    except AuthError as exc:
        print(f"INVALID: {exc.reason}", file=out)
        for line in _explain(exc, token, settings, verifier):
            print(f"  {line}", file=out)
        return EXIT_UNAVAILABLE if isinstance(exc, Unavailable) else EXIT_INVALID
    finally:
        verifier.close()
    print(f"VALID: sub={verified.subject!r} scopes={' '.join(verified.scopes) or '-'}", file=out)
    print(json.dumps(dict(verified.claims), indent=2, sort_keys=True), file=out)
    return EXIT_OK


def _explain(exc: AuthError, token: str, settings: Settings, verifier: SyncVerifier) -> list[str]:
    """What failed, precisely: the middleware hides this from clients; an operator needs it."""
    lines = [exc.detail] if exc.detail else []
    try:
        header, claims = _decode(token)
    except (ValueError, RecursionError):
        return lines
    now = settings.clock()
    reason = exc.reason
    if reason in (Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.ISSUED_IN_FUTURE):
        name = {Reason.EXPIRED: "exp", Reason.NOT_YET_VALID: "nbf"}.get(reason, "iat")
        skew = abs(float(claims.get(name, now)) - now)
        lines.append(f"{name} is {_when(claims.get(name), now)}; leeway is {settings.leeway:.0f}s")
        lines.append(f"off by {_span(skew)} — if the token is fresh, check both clocks (NTP)")
    elif reason == Reason.AUDIENCE_MISMATCH:
        lines.append(
            f"token aud: {claims.get('aud')!r}; expected one of {sorted(settings.audiences)}"
        )
    elif reason == Reason.ISSUER_MISMATCH:
        lines.append(f"token iss: {claims.get('iss')!r}; trusted: {sorted(settings.issuers)}")
        lines.append("issuers are compared exactly (case and trailing slash matter)")
    elif reason in (Reason.KID_UNKNOWN, Reason.KID_AMBIGUOUS, Reason.KEY_ALG_MISMATCH):
        kids = sorted(settings.static_keys.kids)
        if verifier.remote is not None and verifier.remote.policy.keyset is not None:
            kids += verifier.remote.policy.keyset.kids
        lines.append(
            f"token kid: {header.get('kid')!r}, alg {header.get('alg')!r}; known kids: {kids}"
        )
    elif reason == Reason.ALG_NOT_ALLOWED:
        lines.append(f"token alg: {header.get('alg')!r}; allowed: {list(settings.algorithms)}")
    elif isinstance(exc, Unavailable) and verifier.remote is not None:
        lines.append(f"key server problem: {verifier.remote.policy.last_error}")
    elif reason == Reason.SIGNATURE_INVALID:
        lines.append(
            "the signature does not match the key with that kid: altered token or wrong key"
        )
    return lines


def _jwks(url: str, timeout: float, out: TextIO) -> int:
    try:
        response = httpx.get(url, timeout=timeout, follow_redirects=False)
    except httpx.HTTPError as exc:
        print(f"could not fetch {url}: {type(exc).__name__}", file=out)
        return EXIT_UNAVAILABLE
    if response.status_code != 200:
        print(f"{url} answered HTTP {response.status_code}", file=out)
        return EXIT_UNAVAILABLE
    try:
        document = loads_strict(response.content)
        keyset, problems = KeySet.from_jwks(document, source=url)
    except (ValueError, RecursionError) as exc:
        print(f"{url} is not a usable JWKS: {exc}", file=out)
        return EXIT_UNAVAILABLE
    uses = {
        e["kid"]: e.get("use", "-")
        for e in document["keys"]
        if isinstance(e, dict) and isinstance(e.get("kid"), str)
    }
    print(f"{'kid':<40} {'kty':<4} {'size/crv':<10} {'use':<4} algorithms", file=out)
    for key in keyset.keys:
        size = key.crv or str(key.size)
        use = str(uses.get(key.kid, "-"))
        algs = ",".join(sorted(key.algorithms))
        print(f"{key.kid or '-':<40} {key.kty:<4} {size:<10} {use:<4} {algs}", file=out)
    for problem in problems:
        print(f"skipped: {problem}", file=out)
    return EXIT_OK
