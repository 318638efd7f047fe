"""Counters for every decision, and the Prometheus exporter."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from jwt_middleware import ConfigurationError, JWTMiddleware
from jwt_middleware.observe import Counters, PrometheusEvents
from jwt_middleware.testing import LocalIssuer


async def ok(request: Request) -> PlainTextResponse:
    return PlainTextResponse("ok")


def run(settings: Any, issuer: LocalIssuer, tokens: list[str | None]) -> list[int]:
    app = Starlette(
        routes=[Route("/", ok)], middleware=[Middleware(JWTMiddleware, settings=settings)]
    )

    async def go() -> list[int]:
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://t"
        ) as c:
            statuses = []
            for token in tokens:
                headers = {"authorization": f"Bearer {token}"} if token else {}
                statuses.append((await c.get("/", headers=headers)).status_code)
            return statuses

    return asyncio.run(go())


def test_counters_count_each_decision(issuer: LocalIssuer, make_settings: Any) -> None:
    """Counters tally each outcome; one token used thrice counts 2 verified and 1 cached."""
    events = Counters()
    token = issuer.mint()
    statuses = run(
        make_settings(events=events, warm_up=False),
        issuer,
        [token, token, token, None, issuer.mint(expires_in=-600), issuer.mint(audience="x")],
    )
    assert statuses == [200, 200, 200, 401, 401, 401]
    assert events.snapshot() == {
        "verified": 2,  # the cache admits a token on its second use
        "verified_cached": 1,
        "rejected:token_missing": 1,
        "rejected:token_expired": 1,
        "rejected:audience_mismatch": 1,
        "key_fetch_ok": 1,
    }


def test_failed_key_fetches_are_counted(issuer: LocalIssuer, make_settings: Any) -> None:
    """A JWKS fetch answering 500 counts key_fetch_failed, and the request gets 503."""
    events = Counters()
    issuer.set_fault("status", status=500)
    assert run(make_settings(events=events, warm_up=False), issuer, [issuer.mint()]) == [503]
    assert events.snapshot() == {"key_fetch_failed": 1, "rejected:keys_unavailable": 1}


def test_refusals_are_structured_log_records_without_the_token(
    issuer: LocalIssuer, make_settings: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A refusal logs jwt_event=refused with its jwt_reason; no record contains the token."""
    token = issuer.mint(audience="someone-else")
    with caplog.at_level(logging.DEBUG, logger="jwt_middleware"):
        run(make_settings(warm_up=False), issuer, [token])
    refused = [r for r in caplog.records if getattr(r, "jwt_event", None) == "refused"]
    assert [r.jwt_reason for r in refused] == ["audience_mismatch"]  # type: ignore[attr-defined]
    assert all(token not in r.getMessage() for r in caplog.records)


def test_prometheus_exporter(issuer: LocalIssuer, make_settings: Any) -> None:
    """PrometheusEvents exports verified (cached or not), rejected and key-fetch counters."""
    registry = CollectorRegistry()
    events = PrometheusEvents(registry)
    token = issuer.mint()
    run(make_settings(events=events, warm_up=False), issuer, [token, token, token, None])
    text = generate_latest(registry).decode()
    assert 'jwt_middleware_verified_total{cached="false"} 2.0' in text
    assert 'jwt_middleware_verified_total{cached="true"} 1.0' in text
    assert 'jwt_middleware_rejected_total{reason="token_missing"} 1.0' in text
    assert 'jwt_middleware_key_fetches_total{outcome="ok"} 1.0' in text


def test_events_object_is_checked(make_settings: Any) -> None:
    """An events object lacking the hook methods is a ConfigurationError naming ``verified``."""
    with pytest.raises(ConfigurationError, match="verified"):
        make_settings(events=object())
