"""The jwt-middleware command (also python -m jwt_middleware): diagnose tokens and key sets.

    jwt-middleware inspect [TOKEN] [--json]        decode without trusting it; warnings
    jwt-middleware verify [TOKEN] --issuer I --audience A [--jwks-url U | --discovery] [--json]
    jwt-middleware jwks URL [--json]               list the keys a JWKS serves
    jwt-middleware serve-issuer [--port N] ...     a local test issuer, with a ready-made token

TOKEN is read from standard input when omitted or "-". A pasted "Bearer " or
"Authorization: Bearer " prefix is dropped, with a note on stderr.

Streams: stdout carries results only (inspect's decoded header, claims and warnings; verify's
verdict line and claims; jwks' key table). stderr carries every explanation of a failure, every
error and every note. --json replaces stdout with exactly one JSON object (shapes below);
stderr is unchanged. Messages on stderr and in JSON never contain the token, and URLs in them
lose their user:password@ and query values. The only command that prints a token is
serve-issuer: a local test issuer's token is its whole point.

Exit codes, the one mapping being _EXIT: 0 ok (decoded / valid / listed / served and stopped) ·
1 the token is invalid · 2 usage or configuration error · 3 the input is not a decodable JWT ·
4 keys could not be fetched.

--json shapes:
    inspect  {"verified": false, "header": {...}, "claims": {...}, "warnings": [str]}
    verify   {"valid": bool, "reason": str|null, "detail": str|null, "explanation": [str],
              "claims": {...}|null}      (also for exit 3, reason "malformed_token", and exit 4)
    jwks     {"url": str, "keys": [{"kid", "kty", "crv", "size", "use", "algorithms"}],
              "skipped": [str]}
    any exit 2 (and inspect 3, jwks 4): {"error": "usage"|"not_a_jwt"|"keys_unavailable",
              "detail": str}
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import logging
import re
import shlex
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from types import FrameType
from typing import Any, Final, TextIO

import httpcore
import httpx

from . import _b64 as b64
from ._errors import AuthError, ConfigurationError, KeyFetchError, Reason, Unavailable, redact
from ._jwks import fetch_jwks
from ._jws import loads_strict
from ._keys import KeySet
from ._settings import DEFAULT_ALGORITHMS, Settings
from ._verify import SyncVerifier

__all__ = ["main"]

EXIT_OK, EXIT_INVALID, EXIT_USAGE, EXIT_UNDECODABLE, EXIT_UNAVAILABLE = 0, 1, 2, 3, 4
_KEY_SOURCE_HEADERS = ("jku", "x5u", "jwk", "x5c")
_ISSUER_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384",
                      "ES512", "EdDSA")

_DESCRIPTION: Final = """\
Diagnose JWT access tokens and key sets, with exactly the checks of jwt_middleware.
"jwt-middleware COMMAND --help" describes each command.

The token is read from standard input when omitted or given as "-", and is never printed
(serve-issuer excepted). Results go to stdout, explanations and errors to stderr.
"""
_EPILOG: Final = """\
exit codes:
  0  ok (decoded, valid, listed)
  1  the token is invalid
  2  usage or configuration error
  3  the input is not a decodable JWT
  4  the keys could not be fetched
"""


class Failure(Exception):
    """Ends a command: ``kind`` picks the exit code (_EXIT) and the JSON ``error``."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind
        self.message = message


_EXIT: Final = {
    "usage": EXIT_USAGE,
    "not_a_jwt": EXIT_UNDECODABLE,
    "keys_unavailable": EXIT_UNAVAILABLE,
}
_DECODE_PROBLEM: Final = "not a decodable JWT"


@dataclass
class Outcome:
    """What a command found: ``lines`` (stdout), ``data`` (stdout with --json), ``notes``
    (stderr), and the exit code."""

    code: int
    data: dict[str, Any]
    lines: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


def main(
    argv: Sequence[str] | None = None,
    *,
    stdin: TextIO | None = None,
    out: TextIO | None = None,
    err: TextIO | None = None,
) -> int:
    out, err = out or sys.stdout, err or sys.stderr
    args = _parser().parse_args(argv)
    notes: list[str] = []
    try:
        if args.command == "serve-issuer":
            return _serve_issuer(args, out)
        with _library_logs(err):
            outcome = _run(args, stdin or sys.stdin, notes)
    except Failure as failure:
        outcome = Outcome(
            _EXIT[failure.kind],
            {"error": failure.kind, "detail": redact(failure.message)},
            notes=[*notes, _prefix(failure.kind) + failure.message],
        )
    for note in outcome.notes:
        print(redact(note), file=err)
    if args.json:
        print(json.dumps(outcome.data, indent=2, sort_keys=True), file=out)
    else:
        for line in outcome.lines:
            print(line, file=out)
    return outcome.code


class _LogNotes(logging.Handler):
    """The library's warnings as notes on stderr, redacted. A failed key fetch is left out:
    the verdict reports it already, and saying it twice reads as two problems."""

    def __init__(self, err: TextIO) -> None:
        super().__init__(logging.WARNING)
        self.err = err

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(record, "jwt_event", None) != "key_fetch_failed":
            print(redact(f"note: {record.getMessage()}"), file=self.err)


@contextlib.contextmanager
def _library_logs(err: TextIO) -> Iterator[None]:
    library = logging.getLogger("jwt_middleware")
    handler = _LogNotes(err)
    library.addHandler(handler)
    propagate, library.propagate = library.propagate, False
    try:
        yield
    finally:
        library.removeHandler(handler)
        library.propagate = propagate


def _prefix(kind: str) -> str:
    return {"usage": "error: ", "not_a_jwt": f"{_DECODE_PROBLEM}: "}.get(kind, "")


def _run(args: argparse.Namespace, stdin: TextIO, notes: list[str]) -> Outcome:
    if args.command == "jwks":
        return _jwks(args.url, args.timeout)
    if args.command == "inspect":
        return _inspect(_read_token(args.token, stdin, notes), args.algorithms)
    settings = _settings(args)  # configuration errors first: they hold whatever the token is
    return _verify(_read_token(args.token, stdin, notes), settings, notes)


# -- arguments -------------------------------------------------------------------------------


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="jwt-middleware",
        description=_DESCRIPTION,
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    token_help = 'the token; read from standard input when omitted or "-"'
    json_help = "print one JSON object on stdout instead of text (shape: see --help)"
    algorithms_help = f"comma-separated allow-list (default {','.join(DEFAULT_ALGORITHMS)})"

    def command(name: str, summary: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name, help=summary, description=summary, epilog=_EPILOG,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    inspect = command("inspect", "decode a token without verifying it")
    inspect.add_argument("token", nargs="?", default="-", metavar="TOKEN", help=token_help)
    inspect.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS), metavar="ALGS",
                         help=algorithms_help)
    inspect.add_argument("--json", action="store_true", help=json_help)

    verify = command("verify", "run exactly the middleware's checks on a token")
    verify.add_argument("token", nargs="?", default="-", metavar="TOKEN", help=token_help)
    verify.add_argument("--issuer", action="append", metavar="URL",
                        help="trusted issuer, compared exactly (repeatable)")
    verify.add_argument("--audience", action="append", metavar="AUD",
                        help="this API's audience (repeatable)")
    verify.add_argument("--any-issuer", action="store_true", help="waive the issuer check")
    verify.add_argument("--any-audience", action="store_true", help="waive the audience check")
    verify.add_argument("--jwks-url", metavar="URL",
                        help="where the keys are (default: discovery from --issuer)")
    verify.add_argument("--discovery", action="store_true",
                        help="find the keys by OIDC discovery from --issuer")
    verify.add_argument("--algorithms", default=",".join(DEFAULT_ALGORITHMS), metavar="ALGS",
                        help=algorithms_help)
    verify.add_argument("--leeway", type=float, default=60.0, metavar="SECONDS",
                        help="clock skew allowed on exp/nbf/iat (default 60)")
    verify.add_argument("--typ", metavar="TYP", help="required typ header, e.g. at+jwt")
    verify.add_argument("--require-claim", action="append", default=[], metavar="NAME",
                        help="a claim that must be present (repeatable)")
    verify.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                        help="key server timeout (default 5)")
    verify.add_argument("--json", action="store_true", help=json_help)

    jwks = command("jwks", "list the keys served at a JWKS URL")
    jwks.add_argument("url", metavar="URL")
    jwks.add_argument("--timeout", type=float, default=5.0, metavar="SECONDS",
                      help="per socket operation; the fetch ends within twice that (default 5)")
    jwks.add_argument("--json", action="store_true", help=json_help)

    serve = command("serve-issuer", "run a local test issuer on 127.0.0.1 until Ctrl-C")
    serve.add_argument("--port", type=int, default=0, metavar="N", help="default: any free port")
    serve.add_argument("--audience", default="api://default", metavar="AUD",
                       help="aud of its tokens (default api://default)")
    serve.add_argument("--alg", default="RS256", choices=_ISSUER_ALGORITHMS, metavar="ALG",
                       help=f"signing algorithm: {', '.join(_ISSUER_ALGORITHMS)} (default RS256)")
    serve.add_argument("--scope", metavar='"A B"', help="scope of the printed token")
    serve.add_argument("--sub", default="user-1", metavar="SUB", help="default user-1")
    serve.add_argument("--expires-in", type=float, default=3600.0, metavar="SECONDS",
                       help="lifetime of the printed token (default 3600)")
    serve.set_defaults(json=False)
    return parser


# Settings speaks Python ("pass audience='...'"); a CLI user needs the flag. Applied in order.
_FLAG_WORDING: Final = tuple(
    (re.compile(pattern), replacement)
    for pattern, replacement in (
        (r"pass (issuer|audience)='\.\.\.' \(or a list\)", r"give --\1 (repeatable)"),
        (r"pass allow_any_(issuer|audience)=True", r"give --any-\1"),
        (r"^(issuer|audience) is set and allow_any_\w+=True", r"--\1 and --any-\1 are both given"),
        (r"^(issuer|audience) is required", r"--\1 is required"),
        (r"^(issuer|audience) must be a non-empty string or a list of them", r"--\1 is empty"),
        (
            r"^OIDC discovery needs exactly one issuer; set jwks_url \(or keys/jwks\) instead",
            "OIDC discovery (--discovery, the default without --jwks-url) needs exactly one "
            "--issuer: give --jwks-url instead",
        ),
        (r"^issuer \(for discovery\)", "--issuer (used for OIDC discovery)"),
        (
            r"add keys=\[Key\.from_secret\(\.\.\.\)\] or remove them",
            "the CLI takes no secrets: remove them from --algorithms",
        ),
        (r"^(unsupported algorithm|'none' is never accepted)", r"--algorithms: \1"),
        (r"^(algorithms|leeway|typ)\b", r"--\1"),
        (r"^jwks_url\b", "--jwks-url"),
        (r"^jwks_timeout\b", "--timeout"),
        (r"^claim names are", "--require-claim: claim names are"),
    )
)


def in_flags(message: str) -> str:
    """A Settings error message, naming the CLI flags instead of the Python arguments."""
    for pattern, replacement in _FLAG_WORDING:
        message = pattern.sub(replacement, message)
    return message


def _settings(args: argparse.Namespace) -> Settings:
    try:
        return Settings(
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
    except ConfigurationError as exc:
        raise Failure("usage", f"configuration: {in_flags(str(exc))}") from None


# -- tokens ----------------------------------------------------------------------------------

_BEARER = re.compile(r"(?:authorization\s*:\s*)?bearer\s+(\S+)", re.IGNORECASE)


def _read_token(arg: str, stdin: TextIO, notes: list[str]) -> str:
    text = (stdin.read() if arg == "-" else arg).strip()
    if not text:
        where = "standard input was empty" if arg == "-" else "the TOKEN argument is empty"
        raise Failure(
            "usage",
            f"no token given ({where}): pass it as an argument (jwt-middleware verify eyJ...) "
            'or on standard input (echo "$TOKEN" | jwt-middleware verify ...)',
        )
    bearer = _BEARER.fullmatch(text)
    if bearer is None:
        return text
    # Pasting a header value is the commonest slip; say so rather than check something else.
    prefix = text[: bearer.start(1)].strip()
    notes.append(f"note: dropped the {prefix!r} prefix (a header, not a token); "
                 "checked the token after it")
    return bearer.group(1)


def _decode(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    parts = token.split(".")
    if len(parts) != 3:
        raise ValueError(f"a signed JWT has 3 dot-separated parts, this has {len(parts)}")
    header, payload = (loads_strict(b64.decode(p)) for p in parts[:2])
    if not isinstance(header, dict) or not isinstance(payload, dict):
        raise ValueError("header and payload must be JSON objects")
    return header, payload


def _decoded(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    try:
        return _decode(token)
    except (ValueError, RecursionError) as exc:
        raise Failure("not_a_jwt", str(exc)) from None


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


# -- inspect ---------------------------------------------------------------------------------


def _inspect(token: str, algorithms: str) -> Outcome:
    header, claims = _decoded(token)
    now = time.time()
    warnings = _warnings(token, header, claims, set(algorithms.split(",")), now)
    lines = [
        "UNVERIFIED — nothing below is trusted until `verify` succeeds.",
        "",
        "header:",
        json.dumps(header, indent=2, sort_keys=True),
        "claims:",
        json.dumps(claims, indent=2, sort_keys=True),
    ]
    times = [(n, claims[n]) for n in ("iat", "nbf", "exp") if n in claims]
    if times:
        lines.append("times:")
        lines += [f"  {name}: {_when(value, now)}" for name, value in times]
    lines += [f"warning: {warning}" for warning in warnings]
    data = {"verified": False, "header": header, "claims": claims, "warnings": warnings}
    return Outcome(EXIT_OK, data, lines)


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


# -- verify ----------------------------------------------------------------------------------


def _verify(token: str, settings: Settings, notes: list[str]) -> Outcome:
    try:
        header, claims = _decode(token)
    except (ValueError, RecursionError) as exc:
        return _verdict(EXIT_UNDECODABLE, Reason.MALFORMED_TOKEN, f"{_DECODE_PROBLEM}: {exc}",
                        [], notes)
    verifier = SyncVerifier(settings)
    try:
        verified = verifier.verify(token)
    except AuthError as exc:
        code = EXIT_UNAVAILABLE if isinstance(exc, Unavailable) else EXIT_INVALID
        explanation = _explain(exc, header, claims, settings, verifier)
        return _verdict(code, exc.reason, exc.detail, explanation, notes)
    finally:
        verifier.close()
    scopes = " ".join(verified.scopes) or "-"
    shown = dict(verified.claims)
    lines = [f"VALID: sub={verified.subject!r} scopes={scopes}",
             json.dumps(shown, indent=2, sort_keys=True)]
    data: dict[str, Any] = {"valid": True, "reason": None, "detail": None, "explanation": []}
    data["claims"] = shown
    return Outcome(EXIT_OK, data, lines, notes)


def _verdict(
    code: int, reason: str, detail: str, explanation: list[str], notes: list[str]
) -> Outcome:
    word = "CANNOT VERIFY" if code == EXIT_UNAVAILABLE else "INVALID"
    why = [f"  {line}" for line in ([detail] if detail else []) + explanation]
    data: dict[str, Any] = {
        "valid": False,
        "reason": reason,
        "detail": redact(detail) or None,
        "explanation": [redact(line) for line in explanation],
        "claims": None,
    }
    return Outcome(code, data, [f"{word}: {reason}"], [*notes, *why])


def _explain(
    exc: AuthError,
    header: Mapping[str, Any],
    claims: Mapping[str, Any],
    settings: Settings,
    verifier: SyncVerifier,
) -> list[str]:
    """What failed, precisely: the middleware hides this from clients; an operator needs it."""
    now = settings.clock()
    reason = exc.reason
    if reason in (Reason.EXPIRED, Reason.NOT_YET_VALID, Reason.ISSUED_IN_FUTURE):
        claim_of: dict[str, str] = {Reason.EXPIRED: "exp", Reason.NOT_YET_VALID: "nbf"}
        name = claim_of.get(reason, "iat")
        skew = abs(float(claims.get(name, now)) - now)
        return [
            f"{name} is {_when(claims.get(name), now)}; leeway is {settings.leeway:.0f}s",
            f"off by {_span(skew)} — if the token is fresh, check both clocks (NTP)",
        ]
    if reason == Reason.AUDIENCE_MISMATCH:
        return [f"token aud: {claims.get('aud')!r}; expected one of {sorted(settings.audiences)}"]
    if reason == Reason.ISSUER_MISMATCH:
        return [
            f"token iss: {claims.get('iss')!r}; trusted: {sorted(settings.issuers)}",
            "issuers are compared exactly (case and trailing slash matter)",
        ]
    if reason == Reason.TYP_MISMATCH:
        return [
            f"token typ: {str(header.get('typ'))[:40]!r}; expected {settings.typ!r} (--typ)",
            "compared case-insensitively; an 'application/' prefix is optional",
        ]
    if reason in (Reason.KID_UNKNOWN, Reason.KID_AMBIGUOUS, Reason.KEY_ALG_MISMATCH):
        kids = sorted(settings.static_keys.kids)
        if verifier.remote is not None and verifier.remote.policy.keyset is not None:
            kids += verifier.remote.policy.keyset.kids
        return [f"token kid: {header.get('kid')!r}, alg {header.get('alg')!r}; known kids: {kids}"]
    if reason == Reason.ALG_NOT_ALLOWED:
        return [f"token alg: {header.get('alg')!r}; allowed: {list(settings.algorithms)}"]
    if isinstance(exc, Unavailable) and verifier.remote is not None:
        # exc.detail already is the key server problem; say where to look further.
        url = verifier.remote.jwks_uri or settings.jwks_url
        target = f"jwt-middleware jwks {shlex.quote(url)}" if url else "jwt-middleware jwks URL"
        return [f"for what the key server does, run: {target}"]
    if reason == Reason.SIGNATURE_INVALID:
        return ["the signature does not match the key with that kid: altered token or wrong key"]
    return []


# -- jwks ------------------------------------------------------------------------------------


def _jwks(url: str, timeout: float) -> Outcome:
    target = _http_url(url)
    if not 0 < timeout < float("inf"):
        raise Failure("usage", "--timeout must be a positive number of seconds")
    try:
        # The middleware's own fetcher: its size cap (wire and decoded), total deadline and
        # media-type check hold here too, so the CLI is no way round them for a hostile server.
        document = fetch_jwks(url, timeout=timeout, max_bytes=Settings.jwks_max_bytes)
    except KeyFetchError as exc:
        if exc.__cause__ is None:  # the server answered, with something we refuse
            raise Failure("keys_unavailable", str(exc)) from None
        problem = _fetch_problem(exc.__cause__, target, timeout)
        raise Failure("keys_unavailable", f"could not fetch {url}: {problem}") from None
    try:
        keyset, problems = KeySet.from_jwks(document, source=redact(url))
    except (ValueError, RecursionError) as exc:
        raise Failure("keys_unavailable", f"{url} is not a usable JWKS: {exc}") from None
    uses = {
        e["kid"]: str(e.get("use", "-"))
        for e in document["keys"]
        if isinstance(e, dict) and isinstance(e.get("kid"), str)
    }
    lines = [f"{'kid':<40} {'kty':<4} {'size/crv':<10} {'use':<4} algorithms"]
    rows = []
    for key in keyset.keys:
        use, algorithms = uses.get(key.kid or "", "-"), sorted(key.algorithms)
        size, algs = key.crv or str(key.size), ",".join(algorithms)
        lines.append(f"{key.kid or '-':<40} {key.kty:<4} {size:<10} {use:<4} {algs}")
        rows.append({"kid": key.kid, "kty": key.kty, "crv": key.crv, "size": key.size,
                     "use": use, "algorithms": algorithms})
    lines += [f"skipped: {problem}" for problem in problems]
    data = {"url": redact(url), "keys": rows, "skipped": problems}
    return Outcome(EXIT_OK, data, lines)


def _http_url(url: str) -> httpx.URL:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        raise Failure("usage", f"{url!r} is not a URL") from None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        raise Failure("usage", f"{url!r} is not an http:// or https:// URL")
    return parsed


def _fetch_problem(exc: BaseException, url: httpx.URL, timeout: float) -> str:
    """What went wrong (``exc``: httpcore's exception), in words: "ConnectError" tells nobody
    whether to look at DNS, TLS or a firewall."""
    port = url.port or (443 if url.scheme == "https" else 80)
    where = f"{url.host}:{port}"
    if isinstance(exc, httpcore.ConnectTimeout):
        return f"timed out after {timeout:g}s connecting to {where} (firewall? wrong host?)"
    if isinstance(exc, httpcore.TimeoutException):
        return f"timed out: {where} took the connection but sent no answer within {timeout:g}s"
    cause = _root_cause(exc)
    if isinstance(cause, ssl.SSLCertVerificationError):
        return f"TLS failure: the certificate of {where} is not trusted ({cause.verify_message})"
    if isinstance(cause, ssl.SSLError):
        return f"TLS failure: the handshake with {where} failed ({cause.reason}); is it https?"
    if isinstance(cause, socket.gaierror):
        return f"DNS failure: {url.host!r} could not be resolved ({cause.strerror})"
    if isinstance(cause, ConnectionRefusedError):
        return f"connection refused by {where}: nothing listens on that port"
    if isinstance(exc, httpcore.RemoteProtocolError):
        return f"{where} broke off the HTTP exchange ({exc})"
    if isinstance(cause, OSError) and cause.strerror:
        return f"{where}: {cause.strerror}"
    return f"{where}: {type(exc).__name__}"


def _root_cause(exc: BaseException) -> BaseException:
    seen: set[int] = set()
    while id(exc) not in seen:
        seen.add(id(exc))
        nxt = exc.__cause__ or exc.__context__
        if nxt is None:
            break
        exc = nxt
    return exc


# -- serve-issuer ----------------------------------------------------------------------------


def _serve_issuer(args: argparse.Namespace, out: TextIO) -> int:
    from .testing import LocalIssuer  # only this command needs the test issuer's imports

    issuer = LocalIssuer(algorithm=args.alg, audience=args.audience, port=args.port)
    try:
        issuer.start()
    except OSError as exc:
        print(f"error: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        token = issuer.mint(subject=args.sub, scope=args.scope, expires_in=args.expires_in)
        for line in _issuer_banner(issuer.issuer, issuer.audience, issuer.jwks_url,
                                   issuer.discovery_url, issuer.token_url, token):
            print(line, file=out)
        out.flush()
        _wait_for_stop()
    finally:
        issuer.stop()
    return EXIT_OK


def _issuer_banner(
    issuer: str, audience: str, jwks_url: str, discovery_url: str, token_url: str, token: str
) -> Iterator[str]:
    q = shlex.quote
    yield "local test issuer on 127.0.0.1 — for development only: /token gives anyone a token"
    yield f"issuer:     {issuer}"
    yield f"audience:   {audience}"
    yield f"jwks:       {jwks_url}"
    yield f"discovery:  {discovery_url}"
    yield f"token-url:  {token_url}?sub=alice&scope=read"
    yield f"token:      {token}"
    yield ""
    yield "# configure your app and shell:"
    yield (f"export JWT_ISSUER={q(issuer)} JWT_AUDIENCE={q(audience)} "
           f"JWT_JWKS_URL={q(jwks_url)} TOKEN={q(token)}")
    yield 'curl -H "Authorization: Bearer $TOKEN" http://127.0.0.1:8000/   # your app'
    yield ('jwt-middleware verify "$TOKEN" --issuer "$JWT_ISSUER" --audience "$JWT_AUDIENCE" '
           '--jwks-url "$JWT_JWKS_URL"')
    yield f"curl -s {q(token_url + '?sub=alice&scope=read')}   # a fresh token"
    yield ""
    yield "serving; Ctrl-C to stop"


def _wait_for_stop() -> None:
    stop = threading.Event()

    def handler(signum: int, frame: FrameType | None) -> None:
        stop.set()

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, handler)
    while not stop.wait(0.5):
        pass
