"""The public API: what ``jwt_middleware`` and its public modules export, the typed keywords
of the middlewares, and what a WSGI-only import costs. A change here is a change for users:
update the CHANGELOG with it."""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import typing
from pathlib import Path

import pytest

import jwt_middleware
from jwt_middleware import Settings
from jwt_middleware._settings import Options

ROOT = Path(__file__).resolve().parents[2]

PUBLIC = [
    "AsyncVerifier", "AuthError", "CSRFRejected", "ConfigurationError", "DEFAULT_ALGORITHMS",
    "InsufficientAuthentication", "InsufficientScope",
    "IntrospectionUnavailable", "InvalidProof", "InvalidRequest", "InvalidToken", "Issuer",
    "IssuerPattern", "JWTCredentials", "JWTMiddleware", "JWTMiddlewareError", "JWTUser",
    "JWTWSGIMiddleware", "Key", "KeyFetchError", "KeySet", "KeysUnavailable", "MissingToken",
    "NotInstalled", "Reason", "ReplayStoreError", "ReplayUnavailable", "RevocationStoreError",
    "RevocationUnavailable", "Settings", "SyncVerifier", "Unavailable", "UnusableKey",
    "UsageError", "UseDPoPNonce", "VerifiedToken", "__version__", "check_scopes", "get_token",
    "requires_scopes",
]  # fmt: skip

MODULES = {
    "jwt_middleware.cookies": ["clear_token_cookie", "set_token_cookie"],
    "jwt_middleware.fastapi": ["AuthHTTPException", "RequireScopes", "openapi_login"],
    "jwt_middleware.introspection": ["Introspection"],
    "jwt_middleware.keystore": [
        "AsyncKeyStore", "AsyncRedisKeyStore", "CorruptEntry", "KeyStore", "KeyStoreError",
        "MemoryKeyStore", "RedisKeyStore", "StoredDocument", "check_key_store",
    ],
    "jwt_middleware.flask": [
        "JWT", "AuthHTTPException", "current_token", "require_scopes", "require_token",
    ],
    "jwt_middleware.observe": ["Counters", "Events", "PrometheusEvents"],
    "jwt_middleware.mcp": [
        "FastMCPVerifier", "MCPMiddleware", "MCPUser", "TokenVerifier", "access_token",
    ],
    "jwt_middleware.replay": [
        "AsyncRedisReplayStore", "AsyncReplayStore", "MemoryReplayStore", "RedisReplayStore",
        "ReplayFull", "ReplayStore", "ReplayStoreError",
    ],
    "jwt_middleware.revocation": [
        "GRACE", "AsyncRedisRevocationStore", "AsyncRevocationStore", "MemoryRevocationStore",
        "RedisRevocationStore", "RevocationStore", "RevocationStoreError", "revocation_query",
    ],
    "jwt_middleware.testing": [
        "FAULT_MODES", "OMIT", "ClientCertificate", "LocalIssuer", "SigningKey",
        "client_certificate", "dpop_headers", "dpop_proof", "generate_key",
    ],
}  # fmt: skip


def test_the_top_level_exports_exactly_the_public_api() -> None:
    """``jwt_middleware.__all__`` is the pinned list, and every name in it resolves."""
    assert sorted(jwt_middleware.__all__) == sorted(PUBLIC)
    for name in PUBLIC:
        assert getattr(jwt_middleware, name) is not None, name
    assert set(PUBLIC) <= set(dir(jwt_middleware))


def test_an_unknown_top_level_name_is_an_attribute_error() -> None:
    """The lazy ASGI names do not turn every typo into an import."""
    with pytest.raises(AttributeError, match="no attribute 'JWTMiddelware'"):
        jwt_middleware.JWTMiddelware  # noqa: B018


@pytest.mark.parametrize("module", sorted(MODULES))
def test_each_public_module_exports_its_pinned_names(module: str) -> None:
    """The integrations stay public modules with small, pinned ``__all__`` lists."""
    imported = __import__(module, fromlist=["__all__"])
    assert sorted(imported.__all__) == sorted(MODULES[module])
    for name in imported.__all__:
        assert hasattr(imported, name), name


def test_every_other_module_is_private() -> None:
    """Implementation modules have underscore names; only the integrations are public."""
    public = {p.stem for p in (ROOT / "jwt_middleware").glob("*.py") if not p.stem.startswith("_")}
    assert public == {m.rsplit(".", 1)[1] for m in MODULES} | {"pytest_plugin"}


def test_docs_and_examples_import_only_public_names() -> None:
    """What users copy never reaches into a private module."""
    pages = [ROOT / "README.md", *(ROOT / "docs").glob("*.md"), *(ROOT / "examples").glob("*.py")]
    leaks = [p.name for p in pages if "jwt_middleware._" in p.read_text()]
    assert not leaks


def test_the_middleware_keywords_are_the_settings_fields() -> None:
    """``Options`` (the typed ``**options`` of both middlewares and Flask's ``JWT``) names every
    Settings field with the same type, so mypy checks what ``Settings`` would refuse."""
    fields = {f.name: f.type for f in dataclasses.fields(Settings) if f.init}
    typed = {name: ref.__forward_arg__ for name, ref in Options.__annotations__.items()}
    assert typed == fields
    assert not Options.__required_keys__


@pytest.mark.parametrize(
    "name", ["jwt_middleware.JWTMiddleware", "jwt_middleware.JWTWSGIMiddleware"]
)
def test_the_middlewares_take_typed_keywords(name: str) -> None:
    """No ``**options: Any``: the keywords are ``Unpack[Options]``."""
    classes: dict[str, type[typing.Any]] = {
        "jwt_middleware.JWTMiddleware": jwt_middleware.JWTMiddleware,
        "jwt_middleware.JWTWSGIMiddleware": jwt_middleware.JWTWSGIMiddleware,
    }
    cls = classes[name]
    hints = typing.get_type_hints(
        cls.__init__, globalns={**vars(sys.modules[cls.__module__]), "Unpack": typing.Unpack}
    )
    assert hints["options"] == typing.Unpack[Options]


def test_mypy_checks_the_keywords_of_add_middleware(tmp_path: Path) -> None:
    """A misspelt or mistyped option passed through Starlette's add_middleware (or to the WSGI
    middleware) is a mypy error; the README's forms type-check."""
    code = tmp_path / "app.py"
    code.write_text(
        textwrap.dedent("""
        from starlette.applications import Starlette

        from jwt_middleware import Issuer, JWTMiddleware, JWTWSGIMiddleware

        app = Starlette()
        app.add_middleware(JWTMiddleware, issuer="https://id.example/", audience="api")
        app.add_middleware(JWTMiddleware, trust=[Issuer(issuer="https://a/", audience="x")])
        app.add_middleware(JWTMiddleware, issuer="https://id.example/", leewya=30)
        app.add_middleware(JWTMiddleware, issuer="https://id.example/", leeway="30")


        def wsgi(environ: object, start_response: object) -> list[bytes]:
            return []


        JWTWSGIMiddleware(wsgi, issuer="https://id.example/", audience="api", cookei="c")
    """)
    )
    result = subprocess.run(
        [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--show-error-codes",
         "--no-error-summary", "--warn-unused-ignores", str(code)],
        capture_output=True, text=True, cwd=tmp_path, timeout=300,
        env={**os.environ, "MYPYPATH": str(ROOT)},  # the editable install hides it from mypy
    )  # fmt: skip
    found = [line for line in result.stdout.splitlines() if ": error: " in line]
    errors = [line.split(": error: ", 1)[1] for line in found]
    lines = [int(line.split(":")[1]) for line in found]
    assert lines == [9, 10, 17], result.stdout
    assert 'Unexpected keyword argument "leewya"' in errors[0]
    assert 'Argument "leeway"' in errors[1] and '"float"' in errors[1]
    assert 'Unexpected keyword argument "cookei"' in errors[2]


def test_a_wsgi_import_does_not_import_starlette_or_asyncio() -> None:
    """A Flask/WSGI process pays for neither: the ASGI names load on first use."""
    probe = (
        "import sys\n"
        "from jwt_middleware import JWTWSGIMiddleware, Settings, SyncVerifier\n"
        "import jwt_middleware.flask\n"
        "SyncVerifier(Settings(issuer='https://i/', audience='a', jwks_url='https://i/k'))\n"
        "print(sorted(m for m in ('starlette', 'asyncio') if m in sys.modules))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"
