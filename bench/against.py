"""The cached-token hot path of this checkout against another revision, in one run.

    bash dev.sh bench --against 8530d4e [--rounds 11]

The other revision is checked out (``git worktree``) into a temporary directory. Rounds
alternate between the two trees, each a fresh interpreter importing that tree's package (on
``PYTHONPATH``, ahead of the editable install), so both see the same machine at nearly the same
moment; the report is the ratio of the medians and of the fastest rounds, with the rounds'
spread beside them. Only a ratio outside the spread says anything.
"""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from common import BENCH

ROOT = BENCH.parent
GIT = shutil.which("git") or "git"

#: One round: CPU time per operation of (1) a JWTMiddleware ASGI request whose Bearer token is
#: cached, (2) the middlewares' hot path, token_digest + verifier.cached. Uses only what every
#: revision since the token cache has: Settings with static keys, LocalIssuer.mint.
ROUND = r"""
import asyncio, time
from jwt_middleware import JWTMiddleware, Key, Settings
from jwt_middleware._flow import token_digest
from jwt_middleware.testing import LocalIssuer

issuer = LocalIssuer(issuer="https://issuer.bench.example/", audience="api://bench")
signer = issuer.current_key
token = issuer.mint(subject="u", scope="read", expires_in=3600)
settings = Settings(
    issuer=issuer.issuer, audience=issuer.audience,
    keys=[Key.from_pem(signer.public_pem(), kid=signer.kid)], algorithms=["RS256"],
)
statuses = []

async def app(scope, receive, send):
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": b"{}"})

async def receive():
    return {"type": "http.request", "body": b"", "more_body": False}

async def send(message):
    if message["type"] == "http.response.start":
        statuses.append(message["status"])

middleware = JWTMiddleware(app, settings=settings)
scope = {
    "type": "http", "asgi": {"version": "3.0"}, "http_version": "1.1", "method": "GET",
    "scheme": "https", "path": "/me", "raw_path": b"/me", "root_path": "", "query_string": b"",
    "headers": [(b"host", b"api.bench.example"), (b"authorization", b"Bearer " + token.encode())],
    "client": ("127.0.0.1", 50000), "server": ("127.0.0.1", 8000),
}

async def requests(n):
    for _ in range(n):
        await middleware(dict(scope), receive, send)

loop = asyncio.new_event_loop()
loop.run_until_complete(requests(50))  # the second sighting admits the token to the cache
N = 20_000
started = time.process_time()
loop.run_until_complete(requests(N))
request = (time.process_time() - started) / N
if set(statuses) != {200}:
    raise SystemExit(f"refused: {sorted(set(statuses))}")
raw, cached = token.encode(), middleware.verifier.cached
M = 100_000
started = time.process_time()
for _ in range(M):
    if cached(token_digest(raw)) is None:
        raise SystemExit("the hot path missed a cached token")
hot = (time.process_time() - started) / M
print(request * 1e6, hot * 1e6)
"""

ROWS = ("ASGI request, cached Bearer token", "hot path: token_digest + verifier.cached")


def _round(tree: Path) -> tuple[float, float]:
    done = subprocess.run(  # noqa: S603 - argv built here
        [sys.executable, "-c", ROUND],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        raise RuntimeError(f"a round in {tree} failed:\n{done.stderr[-2000:]}")
    request, hot = map(float, done.stdout.split())
    return request, hot


def run(revision: str, rounds: int) -> list[dict[str, float | str]]:
    with tempfile.TemporaryDirectory(prefix="jwtm-against-") as tmp:
        other = Path(tmp) / "tree"
        subprocess.run(  # noqa: S603 - git and a revision the user named
            [GIT, "-C", str(ROOT), "worktree", "add", "--detach", "-q", str(other), revision],
            check=True,
        )
        try:
            samples: dict[str, list[tuple[float, float]]] = {"other": [], "this": []}
            for _ in range(rounds):
                samples["other"].append(_round(other))
                samples["this"].append(_round(ROOT))
        finally:
            subprocess.run([GIT, "-C", str(ROOT), "worktree", "remove", "--force", str(other)])  # noqa: S603
    rows: list[dict[str, float | str]] = []
    for index, what in enumerate(ROWS):
        medians = {n: statistics.median(s[index] for s in runs) for n, runs in samples.items()}
        # The fastest round is the one least disturbed by the rest of the machine.
        fastest = {n: min(s[index] for s in runs) for n, runs in samples.items()}
        spread = max(
            statistics.pstdev(s[index] for s in runs) / medians[n] for n, runs in samples.items()
        )
        ratio, best = medians["this"] / medians["other"], fastest["this"] / fastest["other"]
        print(
            f"{what}: {revision} {medians['other']:.2f} us, this checkout "
            f"{medians['this']:.2f} us; this/{revision}: medians {ratio:.3f}, fastest rounds "
            f"{best:.3f} (rounds' relative spread up to {spread:.3f}, {rounds} rounds each)",
            flush=True,
        )
        rows.append({"what": what, "us_other": medians["other"], "us_this": medians["this"],
                     "ratio": ratio, "fastest_ratio": best, "spread": spread})  # fmt: skip
    return rows
