"""DPoP replay across server processes: a proof one process accepted is refused by another only
when they record proofs in the same Redis.

The same API (``tests/support/dpop_app.py``) runs as separate processes on their own ports, two
under uvicorn (``app``, AsyncRedisReplayStore) and two under gunicorn (``wsgi_app``,
RedisReplayStore), all with one ``PUBLIC_URL``, so a proof names the same ``htu`` whichever
process gets it: the attacker who captured a request can send it to any of them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from jwt_middleware.testing import LocalIssuer, SigningKey, dpop_proof, generate_key
from tests.support.redis_server import (
    RedisServer,
    redis_clean,
    redis_server,
    redis_url,
    spare_redis,
)
from tests.support.servers import AppServer, gunicorn_argv, jwt_env, uvicorn_argv, wait_all_ready

__all__ = ["redis_clean", "redis_server", "redis_url", "spare_redis"]  # fixtures, used by name

PUBLIC_URL = "https://api.example.test"
ORDERS = PUBLIC_URL + "/orders"
TARGET = {"asgi": "tests.support.dpop_app:app", "wsgi": "tests.support.dpop_app:wsgi_app"}


@pytest.fixture(scope="module")
def issuer() -> Iterator[LocalIssuer]:
    """One key server for the module and its app processes (overrides conftest's)."""
    with LocalIssuer(audience="api://orders") as local:
        yield local


@pytest.fixture(scope="module")
def key() -> SigningKey:
    return generate_key("ES256")


class Worker(AppServer):
    """The DPoP API in a server process of its own."""

    def send(self, token: str, proof: str, method: str = "GET") -> httpx.Response:
        """``/orders`` with ``Authorization: DPoP`` and the given proof, on a fresh connection."""
        headers = {"authorization": f"DPoP {token}", "dpop": proof}
        return httpx.request(method, f"{self.url}/orders", headers=headers, timeout=10)


def _command(kind: str) -> Callable[[int], list[str]]:
    def argv(port: int) -> list[str]:
        if kind == "asgi":
            return uvicorn_argv(TARGET[kind], port, options=["--log-level", "warning"])
        options = ["--workers", "1", "--graceful-timeout", "3"]
        return gunicorn_argv(TARGET[kind], port, options=options)

    return argv


@contextlib.contextmanager
def workers(
    issuer: LocalIssuer, folder: Path, kinds: dict[str, str], **env: str
) -> Iterator[dict[str, Worker]]:
    """Named worker processes (name -> "asgi"/"wsgi"), booted together, stopped on exit."""
    environment = jwt_env(issuer, jwks_url=True, PUBLIC_URL=PUBLIC_URL, **env)
    with contextlib.ExitStack() as stack:
        started = [
            stack.enter_context(
                Worker(name, _command(kind), env=environment, log=folder / f"{name}.log")
            )
            for name, kind in kinds.items()
        ]
        wait_all_ready(started)
        yield {w.name: w for w in started}


#: Two uvicorn processes (A, B) and two gunicorn ones (W, V).
FLEET = {"A": "asgi", "B": "asgi", "W": "wsgi", "V": "wsgi"}


@pytest.fixture(scope="module")
def shared(
    issuer: LocalIssuer, redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Worker]]:
    """The fleet, every process recording proofs in the session's Redis."""
    folder = tmp_path_factory.mktemp("dpop_shared")
    with workers(issuer, folder, FLEET, REDIS_URL=redis_url) as fleet:
        yield fleet


@pytest.fixture(scope="module")
def separate(
    issuer: LocalIssuer, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Worker]]:
    """The fleet with the default replay store: each process remembers only its own proofs."""
    folder = tmp_path_factory.mktemp("dpop_memory")
    with workers(issuer, folder, FLEET) as fleet:
        yield fleet


@pytest.fixture
def shared_clean(shared: dict[str, Worker], redis_clean: str) -> dict[str, Worker]:
    return shared


def _accepted(answer: httpx.Response, sub: str) -> int:
    """The PID of the process that let the request in (fails the test on a refusal)."""
    assert answer.status_code == 200, answer.text
    assert answer.json()["sub"] == sub
    return int(answer.json()["pid"])


def _replayed(answer: httpx.Response) -> None:
    assert answer.status_code == 401, answer.text
    assert answer.json()["reason"] == "dpop_replayed"
    assert answer.json()["error"] == "invalid_dpop_proof"
    assert answer.headers["www-authenticate"].startswith(
        'DPoP realm="api", error="invalid_dpop_proof"'
    )


PAIRS = [("A", "B"), ("W", "V"), ("A", "W")]
PAIR_IDS = ["uvicorn-uvicorn", "gunicorn-gunicorn", "uvicorn-gunicorn"]


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=PAIR_IDS)
def test_a_proof_replayed_to_another_process_is_refused_with_shared_redis(
    shared_clean: dict[str, Worker], issuer: LocalIssuer, key: SigningKey, first: str, second: str
) -> None:
    """With one Redis, a proof accepted by one process is dpop_replayed at the other, either
    way round, and at the first one too; each fresh proof still gets in."""
    one, other = shared_clean[first], shared_clean[second]
    token = issuer.mint(dpop_key=key, subject="dana")
    for accepting, replayed_to in ((one, other), (other, one)):
        proof = dpop_proof(key, "GET", ORDERS, access_token=token)
        pid = _accepted(accepting.send(token, proof), "dana")
        _replayed(replayed_to.send(token, proof))
        _replayed(accepting.send(token, proof))
        fresh = dpop_proof(key, "GET", ORDERS, access_token=token)
        assert _accepted(replayed_to.send(token, fresh), "dana") != pid  # two processes


@pytest.mark.parametrize(("first", "second"), PAIRS, ids=PAIR_IDS)
def test_without_redis_a_proof_replayed_to_another_process_is_accepted(
    separate: dict[str, Worker], issuer: LocalIssuer, key: SigningKey, first: str, second: str
) -> None:
    """The documented limitation of the in-memory store: a proof accepted by one process is
    accepted again by another (each refuses only what it saw itself)."""
    one, other = separate[first], separate[second]
    token = issuer.mint(dpop_key=key, subject="dana")
    proof = dpop_proof(key, "GET", ORDERS, access_token=token)
    pid = _accepted(one.send(token, proof), "dana")
    assert _accepted(other.send(token, proof), "dana") != pid
    _replayed(one.send(token, proof))
    _replayed(other.send(token, proof))


@pytest.mark.parametrize("kind", ["asgi", "wsgi"])
def test_redis_down_is_503_from_the_worker(
    issuer: LocalIssuer,
    key: SigningKey,
    spare_redis: RedisServer,
    tmp_path: Path,
    kind: str,
) -> None:
    """With its Redis stopped, a worker answers a valid proof 503 replay_unavailable with
    Retry-After and no challenge (fail closed: the proof cannot be recorded, so not accepted)."""
    with workers(issuer, tmp_path, {kind: kind}, REDIS_URL=spare_redis.url) as fleet:
        worker = fleet[kind]
        token = issuer.mint(dpop_key=key, subject="dana")
        _accepted(worker.send(token, dpop_proof(key, "GET", ORDERS, access_token=token)), "dana")
        spare_redis.stop()
        for _ in range(2):  # the pooled connection that broke, then a new one that cannot connect
            proof = dpop_proof(key, "GET", ORDERS, access_token=token)
            answer = worker.send(token, proof)
            assert answer.status_code == 503, answer.text
            assert int(answer.headers["retry-after"]) >= 1
            assert "www-authenticate" not in answer.headers
            assert answer.json()["error"] == "temporarily_unavailable"
            assert answer.json()["reason"] == "replay_unavailable"
