"""The OpenAPI login: routes guarded by ``RequireScopes`` declare an OAuth 2.0 authorization-code
scheme (PKCE, a public client) instead of the plain bearer one, each operation naming the scopes
its guards require, so the docs' Authorize button logs in at the issuer for real.

The scheme is ``oauth2`` with an ``authorizationCode`` flow, not ``openIdConnect``: its URLs and
the scope list sit in the document itself, so the page never fetches the issuer's discovery
document (which would need CORS there) and tools that cannot read discovery still understand it.
The discovery document is read on the server instead, once, when the OpenAPI document is first
built (never at startup: the app serves without the issuer), with the key fetches' limits.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from starlette.exceptions import HTTPException

from ._errors import ConfigurationError, KeyFetchError, redact, scope_names
from ._jwks import discovery_url, fetch_jwks, reset_after_fork
from ._settings import check_key_url

#: The scheme name ``RequireScopes`` declares (an ``HTTPBearer``), replaced by the login's.
BEARER = "bearerAuth"
#: Limits of the one discovery fetch: the middleware's defaults for key fetches.
DISCOVERY_TIMEOUT = 5.0
DISCOVERY_MAX_BYTES = 512 * 1024
#: Seconds a failed discovery fetch is remembered (from its end), before another is tried.
RETRY_AFTER_FAILURE = 30.0
#: Seconds the first document build waits for a fetch it started. FastAPI builds the document
#: inside its async /openapi.json route, so this wait blocks the event loop: it happens once
#: per fetch, and the fetch runs in a thread of its own, so that anyone asking for the (public)
#: document while the issuer is slow or down cannot stall the requests the app serves.
FIRST_WAIT = 1.0
#: The Retry-After while a read is in flight: it ends within the fetch's limit (10 s), most
#: often well before.
READING_RETRY_AFTER = 2.0
#: The clock the failure memory runs on (a module global, so a test can move it).
clock = time.monotonic


class LoginUnavailable(HTTPException, ConfigurationError):
    """The login's endpoints are not known (yet): the discovery document could not be read, or
    is being read. A ConfigurationError for whoever builds the document; for FastAPI's
    /openapi.json route, whose builder it escapes, a 503 with ``Retry-After`` (an HTTPException),
    never a 500 and a traceback. HTTPException first: Starlette picks the handler by the
    class order, and an app's handler for ValueError (a ConfigurationError is one) must not
    answer for it."""

    def __init__(self, message: str, retry_after: float = RETRY_AFTER_FAILURE) -> None:
        HTTPException.__init__(self, 503, message, headers={"Retry-After": str(int(retry_after))})
        Exception.__init__(self, message)

    def __str__(self) -> str:
        return str(self.detail)


@dataclass(frozen=True)
class Endpoints:
    authorization_url: str
    token_url: str


def check_client_id(client_id: object) -> str:
    """RFC 6749 §A.1: a client id is one or more visible ASCII characters (or spaces)."""
    if (
        not isinstance(client_id, str)
        or not client_id.strip()
        or any(not " " <= c <= "~" for c in client_id)
    ):
        raise ConfigurationError(
            "client_id must be a non-empty string of printable ASCII characters (RFC 6749 §A.1)"
        )
    return client_id


def endpoints_from(document: Any, issuer: str, where: str) -> Endpoints:
    """The authorization and token endpoints of a discovery ``document`` that names ``issuer``
    and allows PKCE with S256."""
    if not isinstance(document, dict):
        raise ConfigurationError(f"{where} is not a JSON object")
    if document.get("issuer") != issuer:
        # OpenID Connect Discovery §4.3: a document for another issuer is not this one's.
        raise ConfigurationError(f"{where} names another issuer than {redact(issuer)!r}")
    urls = []
    for member in ("authorization_endpoint", "token_endpoint"):
        url = document.get(member)
        if not isinstance(url, str):
            raise ConfigurationError(f"{where} has no {member}: the issuer cannot log users in")
        check_key_url(url, f"{member} of {where}")
        urls.append(url)
    methods = document.get("code_challenge_methods_supported")
    # Absent is common and says nothing; present without S256 means PKCE cannot work.
    if methods is not None and (not isinstance(methods, list) or "S256" not in methods):
        raise ConfigurationError(f"{where} does not support PKCE with S256")
    return Endpoints(*urls)


class Login:
    """What ``openapi_login`` configured: where to log in, and how the document changes."""

    def __init__(
        self,
        *,
        issuer: str | None,
        authorization_url: str | None,
        token_url: str | None,
        scheme_name: str,
        descriptions: Mapping[str, str],
        fetch: Callable[[str], Any],
    ) -> None:
        if (authorization_url is None) != (token_url is None):
            raise ConfigurationError("give both authorization_url and token_url, or neither")
        if (issuer is None) == (authorization_url is None):
            raise ConfigurationError(
                "give issuer= (its discovery document names the endpoints) or "
                "authorization_url= and token_url=, not both"
            )
        if not isinstance(scheme_name, str) or not scheme_name or scheme_name == BEARER:
            raise ConfigurationError(f"scheme_name must be a name other than {BEARER!r}")
        self._endpoints: Endpoints | None = None
        if authorization_url is not None and token_url is not None:
            check_key_url(authorization_url, "authorization_url")
            check_key_url(token_url, "token_url")
            self._endpoints = Endpoints(authorization_url, token_url)
        else:
            assert issuer is not None
            check_key_url(issuer, "issuer")
        self.issuer = issuer
        self.scheme_name = scheme_name
        self.descriptions = dict(descriptions)
        self._fetch = fetch
        self._lock = threading.Lock()
        self._failed: tuple[float, str] | None = None  # when it ended, what the error said
        self._fetching: threading.Event | None = None  # set when the fetch in flight ends
        reset_after_fork(self)

    def _forked(self) -> None:
        # gunicorn --preload: a read in flight at the fork has no thread in the child, which
        # would otherwise say "still reading" for good.
        self._lock = threading.Lock()
        self._fetching = None

    def endpoints(self) -> Endpoints:
        """The endpoints, read from discovery the first time, in a thread; the call that
        starts the fetch waits for it ``FIRST_WAIT`` seconds at most, later calls not at all
        while it runs. A failure is answered again, with no fetch, for ``RETRY_AFTER_FAILURE``
        seconds. Raises :class:`LoginUnavailable` until the endpoints are known."""
        with self._lock:
            if self._endpoints is not None:
                return self._endpoints
            started = self._fetching is None
            if started:
                failed = self._failed
                if failed is not None and clock() - failed[0] < RETRY_AFTER_FAILURE:
                    raise LoginUnavailable(
                        f"{failed[1]} (not fetched again for {RETRY_AFTER_FAILURE:g}s)"
                    )
                self._fetching = threading.Event()
                try:
                    threading.Thread(
                        target=self._fetch_now, args=(self._fetching,), daemon=True
                    ).start()
                except RuntimeError:  # no thread to be had: try again on the next build
                    self._fetching = None
                    raise LoginUnavailable("openapi_login could not start its read") from None
            fetching = self._fetching
            assert fetching is not None
        if started:
            fetching.wait(FIRST_WAIT)  # outside the lock: the fetch thread needs it
        with self._lock:
            if self._endpoints is not None:
                return self._endpoints
            if self._fetching is None and self._failed is not None:
                raise LoginUnavailable(self._failed[1])
        assert self.issuer is not None
        raise LoginUnavailable(
            f"openapi_login is still reading the discovery document at "
            f"{redact(discovery_url(self.issuer))}",
            retry_after=READING_RETRY_AFTER,
        )

    def _fetch_now(self, done: threading.Event) -> None:
        try:
            endpoints = self._discover()
        except Exception as exc:  # whatever it is, the next build must not wait on it forever
            problem = str(exc) if isinstance(exc, ConfigurationError) else type(exc).__name__
            with self._lock:
                self._failed = (clock(), problem)
                self._fetching = None
        else:
            with self._lock:
                self._endpoints = endpoints
                self._fetching = None
        finally:
            done.set()

    def _discover(self) -> Endpoints:
        assert self.issuer is not None
        url = discovery_url(self.issuer)
        where = f"the discovery document at {redact(url)}"
        try:
            document = self._fetch(url)
        except KeyFetchError as exc:
            raise ConfigurationError(f"openapi_login could not read {where}: {exc}") from exc
        return endpoints_from(document, self.issuer, where)

    def rewrite(self, schema: dict[str, Any], guards: Mapping[str, Any]) -> dict[str, Any]:
        """``schema`` (built with each guard declaring its own scheme name, the keys of
        ``guards``) with those requirements turned into this login's, in place."""
        endpoints = self.endpoints()
        scopes: dict[str, str] = {}
        for path_item in schema.get("paths", {}).values():
            for operation in path_item.values():
                if isinstance(operation, dict) and "security" in operation:
                    operation["security"] = self._requirements(operation["security"], guards)
                    for requirement in operation["security"]:
                        scopes.update(dict.fromkeys(requirement.get(self.scheme_name, ()), ""))
        schemes = schema.setdefault("components", {}).setdefault("securitySchemes", {})
        for name in guards:
            schemes.pop(name, None)
        for name in self.descriptions:
            scopes.setdefault(name, "")
        scopes.update((name, text) for name, text in self.descriptions.items() if text)
        schemes[self.scheme_name] = {
            "type": "oauth2",
            "flows": {
                "authorizationCode": {
                    "authorizationUrl": endpoints.authorization_url,
                    "tokenUrl": endpoints.token_url,
                    "scopes": dict(sorted(scopes.items())),
                }
            },
        }
        return schema

    def _requirements(
        self, security: list[dict[str, list[str]]], guards: Mapping[str, Any]
    ) -> list[dict[str, list[str]]]:
        """An operation's requirements, its guards' replaced by one requirement for each way
        to satisfy them all (where the first guard stood), the others kept."""
        mine = [guards[name] for requirement in security for name in requirement if name in guards]
        if not mine:
            return security
        ours = [{self.scheme_name: list(scopes)} for scopes in _alternatives(mine)]
        result: list[dict[str, list[str]]] = []
        for requirement in security:
            kept = {name: value for name, value in requirement.items() if name not in guards}
            if len(kept) < len(requirement):
                result.extend(r for r in ours if r not in result)
            if kept:
                result.append(kept)
        return result


def _alternatives(guards: Sequence[Any]) -> list[tuple[str, ...]]:
    """The scope sets any one of which satisfies every guard (OpenAPI: requirements are ORed,
    the scopes inside one are ANDed). ``any_of`` guards contribute one choice per scope."""
    choices: list[list[tuple[str, ...]]] = []
    for guard in guards:
        if guard.any_of and guard.scopes:
            choices.append([(scope,) for scope in guard.scopes])
        else:
            choices.append([tuple(guard.scopes)])
    alternatives: list[tuple[str, ...]] = []
    for combination in itertools.product(*choices):
        merged = tuple(dict.fromkeys(s for part in combination for s in part))
        if merged not in alternatives:
            alternatives.append(merged)
    return alternatives


def init_oauth(
    existing: Mapping[str, Any] | None,
    client_id: str,
    scopes: Iterable[str],
    authorize_params: Mapping[str, str] | None,
) -> dict[str, Any]:
    """Swagger UI's ``initOAuth``: this public client, PKCE, the scopes ticked beforehand."""
    settings = dict(existing or {})
    for secret in ("clientSecret", "useBasicAuthenticationWithAccessCodeGrant"):
        # A public client: nothing confidential may be written into the page.
        settings.pop(secret, None)
    settings.update(
        clientId=client_id,
        usePkceWithAuthorizationCodeGrant=True,
        scopes=list(scope_names(scopes)),
    )
    if authorize_params:
        settings["additionalQueryStringParams"] = dict(authorize_params)
    return settings


def bounded_fetch(url: str) -> Any:
    return fetch_jwks(url, timeout=DISCOVERY_TIMEOUT, max_bytes=DISCOVERY_MAX_BYTES)
