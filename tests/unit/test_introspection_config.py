"""Introspection(...) validation: every mistake fails at construction with a ConfigurationError
that says how to fix it, and the client secret never shows (repr, errors)."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import pytest

from jwt_middleware import ConfigurationError, Issuer
from jwt_middleware.introspection import Introspection

SECRET = "s3cret-never-shown"
URL = "https://as.example/oauth2/introspect"


def build(**overrides: Any) -> Introspection:
    options: dict[str, Any] = {"url": URL, "client_id": "orders-api", "client_secret": SECRET}
    options.update(overrides)
    return Introspection(**options)


def test_defaults() -> None:
    """The documented defaults: basic auth, access_token hint, 300 s / 10k active cache, a 30 s
    bounded negative cache, 64 KiB answers, only non-JWT tokens introspected."""
    config = build()
    assert (config.auth, config.token_type_hint, config.jwts) == (
        "client_secret_basic",
        "access_token",
        False,
    )
    assert (config.cache_ttl, config.cache_size) == (300.0, 10_000)
    assert (config.negative_ttl, config.negative_cache_size) == (30.0, 10_000)
    assert (config.max_bytes, config.timeout, config.deadline) == (64 * 1024, 5.0, 10.0)
    assert config.trust_env is True and config.ca_bundle is None


def test_repr_hides_the_secret() -> None:
    """repr() (and so any log of the settings) shows the client id, never the secret."""
    shown = repr(build())
    assert "orders-api" in shown
    assert SECRET not in shown


def test_keyword_only_and_frozen() -> None:
    """Positional arguments are refused, and a built config cannot be changed."""
    with pytest.raises(TypeError):
        Introspection(URL, "orders-api", SECRET)  # type: ignore[call-arg]
    config = build()
    with pytest.raises(AttributeError):
        config.url = "https://elsewhere.example/"  # type: ignore[misc]


@pytest.mark.parametrize(
    "url",
    [
        "http://as.example/introspect",  # plain http off loopback
        "ftp://as.example/introspect",
        "not a url",
        "https:///introspect",
        42,
    ],
)
def test_url_must_be_https_off_loopback(url: Any) -> None:
    """The endpoint is https, or http on a loopback host only: its answer decides who gets in."""
    with pytest.raises(ConfigurationError, match="introspection url"):
        build(url=url)


@pytest.mark.parametrize("url", ["http://127.0.0.1:8080/i", "http://localhost/i", "http://[::1]/i"])
def test_http_on_loopback_is_allowed(url: str) -> None:
    """Plain http is accepted on loopback (a LocalIssuer, a sidecar)."""
    assert build(url=url).url == url


def test_credentials_in_the_url_are_refused_and_not_echoed() -> None:
    """user:password@ in the URL is refused (use client_id/client_secret), without echoing it."""
    with pytest.raises(ConfigurationError, match="client_id and client_secret") as caught:
        build(url="https://svc:hunter2@as.example/introspect")
    assert "hunter2" not in str(caught.value)


@pytest.mark.parametrize("name", ["client_id", "client_secret"])
@pytest.mark.parametrize("value", ["", None, 7, b"bytes"])
def test_client_credentials_are_non_empty_strings(name: str, value: Any) -> None:
    """client_id and client_secret must be non-empty strings; the message never echoes them."""
    with pytest.raises(ConfigurationError, match=f"{name} must be a non-empty string") as caught:
        build(**{name: value})
    assert "bytes" not in str(caught.value)


def test_a_wrong_secret_type_is_not_echoed() -> None:
    """Even a secret of the wrong type stays out of the message."""
    with pytest.raises(ConfigurationError) as caught:
        build(client_secret=["s3cret-never-shown"])
    assert SECRET not in str(caught.value)


@pytest.mark.parametrize("auth", ["basic", "client_secret_jwt", "private_key_jwt", None])
def test_auth_method(auth: Any) -> None:
    """Only client_secret_basic and client_secret_post are supported, and the message lists them."""
    with pytest.raises(ConfigurationError, match="client_secret_basic, client_secret_post"):
        build(auth=auth)


def test_post_auth_is_accepted() -> None:
    """client_secret_post is the other supported method."""
    assert build(auth="client_secret_post").auth == "client_secret_post"


@pytest.mark.parametrize("hint", ["", 3, b"access_token"])
def test_token_type_hint(hint: Any) -> None:
    """token_type_hint is a non-empty string, or None to send none."""
    with pytest.raises(ConfigurationError, match="token_type_hint"):
        build(token_type_hint=hint)
    assert build(token_type_hint=None).token_type_hint is None


@pytest.mark.parametrize("name", ["jwts", "trust_env"])
@pytest.mark.parametrize("value", [1, "yes", None])
def test_flags_are_booleans(name: str, value: Any) -> None:
    """jwts and trust_env take True or False, not truthy values."""
    with pytest.raises(ConfigurationError, match=f"{name} must be True or False"):
        build(**{name: value})


@pytest.mark.parametrize(
    "name", ["cache_ttl", "negative_ttl", "timeout", "deadline", "retry_after"]
)
@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), True, "5"])
def test_durations_are_positive_numbers(name: str, value: Any) -> None:
    """Every duration is a positive, finite number of seconds."""
    with pytest.raises(ConfigurationError, match=f"{name} must be a positive number"):
        build(**{name: value})


@pytest.mark.parametrize("name", ["cache_size", "negative_cache_size"])
@pytest.mark.parametrize("value", [-1, 1.5, True, "10"])
def test_cache_sizes_are_integers(name: str, value: Any) -> None:
    """Cache sizes are integers >= 0 (0 turns that cache off): a bound, never unbounded."""
    with pytest.raises(ConfigurationError, match=f"{name} must be an integer >= 0"):
        build(**{name: value})
    assert getattr(build(**{name: 0}), name) == 0


@pytest.mark.parametrize("value", [0, -5, 2.5, False])
def test_max_bytes(value: Any) -> None:
    """max_bytes is an integer >= 1."""
    with pytest.raises(ConfigurationError, match="max_bytes must be an integer >= 1"):
        build(max_bytes=value)


def test_ca_bundle_missing_file(tmp_path: Path) -> None:
    """A ca_bundle path that does not exist fails at startup, naming the path."""
    missing = tmp_path / "nope.pem"
    with pytest.raises(ConfigurationError, match="no file"):
        build(ca_bundle=str(missing))


def test_ca_bundle_not_pem(tmp_path: Path) -> None:
    """A ca_bundle file that holds no CA certificate fails at startup."""
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    with pytest.raises(ConfigurationError, match="no PEM CA certificate"):
        build(ca_bundle=str(junk))


def test_ca_bundle_wrong_type() -> None:
    """ca_bundle is a path or an SSLContext."""
    with pytest.raises(ConfigurationError, match=r"PEM file or an ssl\.SSLContext"):
        build(ca_bundle=b"/etc/ssl/ca.pem")


def test_an_ssl_context_is_used_as_given() -> None:
    """An SSLContext given as ca_bundle is the one the requests use."""
    context = ssl.create_default_context()
    assert build(ca_bundle=context).ssl_context() is context


def test_issuer_takes_only_an_introspection() -> None:
    """Issuer(introspection=...) refuses anything but an Introspection, and keeps one."""
    with pytest.raises(ConfigurationError, match="introspection must be an Introspection"):
        Issuer(issuer="https://as.example/", audience="api", introspection={"url": URL})
    config = build()
    issuer = Issuer(issuer="https://as.example/", audience="api", introspection=config)
    assert issuer.introspection is config
    assert SECRET not in repr(issuer)
