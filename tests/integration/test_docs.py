"""The documentation matches the code: every Python example in README.md and docs/*.md runs as
written, the framework examples answer real requests, and the reference tables are complete.

How a ```python block is run (the convention is also in CONTRIBUTING.md):

* Every block is executed, on its own, in a fresh namespace.
* Each distinct issuer URL ``https://…login.example.com/`` in a block is served by a real
  :class:`LocalIssuer` on 127.0.0.1 (audience ``api://orders``), and the block runs with that
  URL in its place, so discovery, ``jwks_url`` and warm-up reach a real key server.
* An ``app`` the block defines is built: an ASGI app runs its lifespan (startup and shutdown); a
  Flask app's ``JWTWSGIMiddleware`` is closed afterwards.
* Functions named ``test_*`` are called, with the pytest fixtures their parameters name.
* ``<!-- test: protected /a /b=scope; public /c -->`` on the line before the block: ``app`` is
  served by a real server (uvicorn, or werkzeug for WSGI) and, for each ``protected`` path, GET
  without a token must be 401, with a token from the (first) issuer carrying ``scope`` 200, and
  with a token lacking ``scope`` 403; each ``public`` path must be 200 without a token.
"""

from __future__ import annotations

import contextlib
import dataclasses
import inspect
import json
import logging
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from jwt_middleware import Issuer, Reason, Settings
from jwt_middleware._settings import ISSUER_FIELDS, REQUEST_FIELDS
from jwt_middleware._wsgi import JWTWSGIMiddleware
from jwt_middleware.testing import LocalIssuer
from tests.support import config_reference
from tests.support.servers import (
    AppServer,
    bearer,
    free_port,
    jwt_env,
    uvicorn_argv,
    uvicorn_in_thread,
    werkzeug_in_thread,
)

ROOT = Path(__file__).resolve().parents[2]
DOCS = ROOT / "docs"
PAGES = [ROOT / "README.md", *sorted(DOCS.glob("*.md"))]
AUDIENCE = "api://orders"
ISSUER_URL = re.compile(r"https://[a-z-]*login\.example\.com/")
FENCE = re.compile(
    r"^(?:<!-- test: (?P<directive>[^\n]*?) -->\n)?```python\n(?P<code>.*?)^```$", re.M | re.S
)


@dataclasses.dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    protected: tuple[tuple[str, str | None], ...] = ()
    public: tuple[str, ...] = ()

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}"


def parse_directive(text: str, where: str) -> dict[str, Any]:
    protected: list[tuple[str, str | None]] = []
    public: list[str] = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        word, *paths = part.split()
        if word == "protected" and paths:
            for path in paths:
                name, _, scope = path.partition("=")
                protected.append((name, scope or None))
        elif word == "public" and paths:
            public.extend(paths)
        else:
            raise ValueError(f"{where}: unknown test directive {part!r}")
    return {"protected": tuple(protected), "public": tuple(public)}


def blocks_of(page: Path) -> list[Block]:
    text = page.read_text()
    found = []
    for match in FENCE.finditer(text):
        line = text.count("\n", 0, match.start("code")) + 1
        where = f"{page.relative_to(ROOT)}:{line}"
        extra = parse_directive(match["directive"], where) if match["directive"] else {}
        found.append(Block(str(page.relative_to(ROOT)), line, match["code"], **extra))
    return found


BLOCKS = [block for page in PAGES for block in blocks_of(page)]


def section(page: Path, heading: str) -> str:
    """The text under ``heading`` down to the next heading of the same or a higher level."""
    text = page.read_text()
    start = text.index(heading + "\n")
    body = start + len(heading)
    level = len(heading.split(" ")[0])
    end = re.search(rf"^#{{1,{level}}} ", text[body:], re.M)
    return text[start : body + end.start()] if end else text[start:]


@contextlib.contextmanager
def root_logging_preserved() -> Iterator[None]:
    # A block may configure logging (docs/errors.md does); the rest of the session must not
    # inherit that.
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)


def local_issuers(stack: contextlib.ExitStack, code: str) -> tuple[str, list[LocalIssuer]]:
    """``code`` with each issuer URL replaced by that of a started LocalIssuer of its own."""
    issuers = []
    for url in dict.fromkeys(ISSUER_URL.findall(code)):
        port = free_port()
        local = LocalIssuer(port=port, issuer=f"http://127.0.0.1:{port}/", audience=AUDIENCE)
        stack.enter_context(local)
        code = code.replace(url, local.issuer)
        issuers.append(local)
    return code, issuers


def is_wsgi(app: Any) -> bool:
    return not inspect.iscoroutinefunction(type(app).__call__)


def serve(stack: contextlib.ExitStack, app: Any) -> int:
    if is_wsgi(app):
        return stack.enter_context(werkzeug_in_thread(app))
    return stack.enter_context(uvicorn_in_thread(app))


def build(stack: contextlib.ExitStack, app: Any) -> None:
    if is_wsgi(app):
        middleware = getattr(app, "wsgi_app", None)
        if isinstance(middleware, JWTWSGIMiddleware):
            stack.callback(middleware.close)
        return
    from starlette.testclient import TestClient  # imported on use: it warns on import

    with TestClient(app):  # the lifespan: middleware construction, key warm-up, shutdown
        pass


def check_answers(block: Block, port: int, issuer: LocalIssuer) -> None:
    base = f"http://127.0.0.1:{port}"
    for path, scope in block.protected:
        refused = httpx.get(base + path, timeout=10)
        assert refused.status_code == 401, f"{path} without a token: {refused.status_code}"
        assert refused.headers["www-authenticate"].startswith("Bearer ")
        token = issuer.mint(subject="alice", scope=scope)
        allowed = httpx.get(base + path, headers=bearer(token), timeout=10)
        assert allowed.status_code == 200, f"{path} with a token: {allowed.status_code}"
        if scope is not None:
            lacking = httpx.get(base + path, headers=bearer(issuer.mint(scope="other")), timeout=10)
            assert lacking.status_code == 403, f"{path} without {scope}: {lacking.status_code}"
    for path in block.public:
        answer = httpx.get(base + path, timeout=10)
        assert answer.status_code == 200, f"public {path}: {answer.status_code}"


@pytest.mark.parametrize("block", BLOCKS, ids=[b.id for b in BLOCKS])
def test_python_example_runs(block: Block, request: pytest.FixtureRequest) -> None:
    """The example runs as written; its app builds; marked ones answer 401/200/403 for real."""
    with contextlib.ExitStack() as stack:
        code, issuers = local_issuers(stack, block.code)
        namespace: dict[str, Any] = {"__name__": "docs_example"}
        with root_logging_preserved():
            exec(compile(code, block.id, "exec"), namespace)
        for name, func in list(namespace.items()):
            if name.startswith("test_") and inspect.isfunction(func):
                params = inspect.signature(func).parameters
                func(**{p: request.getfixturevalue(p) for p in params})
        app = namespace.get("app")
        if block.protected or block.public:
            assert app is not None, f"{block.id}: a test directive needs the block to define app"
            assert issuers, f"{block.id}: a test directive needs an issuer URL in the block"
            check_answers(block, serve(stack, app), issuers[0])
        elif app is not None:
            build(stack, app)


def test_the_three_framework_examples_in_the_readme_are_checked_for_real() -> None:
    """The README's Starlette, FastAPI and Flask examples each carry a protected-path check."""
    readme = [b for b in BLOCKS if b.page == "README.md"]
    checked = [b for b in readme if b.protected]
    frameworks = ("FastAPI(", "Starlette(", "Flask(")
    kinds = {kind for b in checked for kind in frameworks if kind in b.code}
    assert kinds == set(frameworks)


def test_the_fastapi_examples_keep_their_docs_pages_public() -> None:
    """A FastAPI example that makes /docs public makes /redoc and /openapi.json public too."""
    for block in BLOCKS:
        if "FastAPI(" in block.code and '"/docs"' in block.code:
            assert '"/redoc"' in block.code and '"/openapi.json"' in block.code, block.id
            assert {"/docs", "/redoc", "/openapi.json"} <= set(block.public), block.id


def test_the_configuration_reference_is_generated_from_the_docstrings() -> None:
    """docs/configuration.md's option tables are what tests/support/config_reference.py makes of the
    field docstrings: every option, its type, default and docstring (rerun it after a change)."""
    assert config_reference.current() == config_reference.reference(), (
        "docs/configuration.md is out of date: run python tests/support/config_reference.py"
    )


def test_every_option_has_a_docstring() -> None:
    """Every Issuer and Settings option is documented where it is defined."""
    for cls, names in ((Issuer, ISSUER_FIELDS), (Settings, REQUEST_FIELDS)):
        undocumented = set(names) - set(config_reference.docstrings(cls.__name__))
        assert not undocumented, f"{cls.__name__} options without a docstring: {undocumented}"


def test_every_reason_code_is_in_the_troubleshooting_table() -> None:
    """docs/errors.md's reason table names every Reason code."""
    table = section(DOCS / "errors.md", "## Reason codes")
    codes = [v for k, v in vars(Reason).items() if k.isupper()]
    missing = [code for code in codes if f"`{code}`" not in table]
    assert not missing, f"reason codes missing from docs/errors.md: {missing}"


def test_the_index_lists_every_page() -> None:
    """docs/index.md links to every other page of docs/."""
    index = (DOCS / "index.md").read_text()
    pages = [p.name for p in DOCS.glob("*.md") if p.name != "index.md"]
    assert pages, "docs/ has no pages"
    missing = [name for name in pages if f"]({name})" not in index]
    assert not missing, f"docs/index.md does not link to {missing}"


LINK = re.compile(r"\]\((?!https?://|#)([^)#\s]+)(?:#([^)\s]+))?\)")


def anchors(page: Path) -> set[str]:
    # GitHub's rule, for the headings we write: lower case, spaces to dashes, punctuation gone.
    headings = re.findall(r"^#+ (.+)$", page.read_text(), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


LINKED = [*PAGES, ROOT / "CHANGELOG.md", ROOT / "CONTRIBUTING.md"]


@pytest.mark.parametrize("page", LINKED, ids=[str(p.relative_to(ROOT)) for p in LINKED])
def test_relative_links_resolve(page: Path) -> None:
    """Every relative link of a page names a file that exists (and a heading that exists)."""
    broken = []
    for target, anchor in LINK.findall(page.read_text()):
        path = (page.parent / target).resolve()
        if not path.exists():
            broken.append(target)
        elif anchor and path.suffix == ".md" and anchor not in anchors(path):
            broken.append(f"{target}#{anchor}")
    assert not broken, f"{page.name}: broken links {broken}"


def test_what_the_docs_say_about_starlettes_requires_is_what_it_does(issuer: LocalIssuer) -> None:
    """docs/frameworks.md says @requires("authenticated") admits every verified token (and
    refuses a request without one): while it says so, that is the behaviour."""
    from starlette.applications import Starlette
    from starlette.authentication import requires
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from jwt_middleware import JWTMiddleware

    page = (DOCS / "frameworks.md").read_text()
    claim = 'so `@requires("authenticated")` admits\nevery verified token'
    assert claim in page

    @requires("authenticated")
    async def endpoint(request: Any) -> JSONResponse:
        return JSONResponse({})

    app = Starlette(routes=[Route("/", endpoint)])
    app.add_middleware(JWTMiddleware, issuer=issuer.issuer, audience=issuer.audience)
    with TestClient(app) as client:
        answer = client.get("/", headers=bearer(issuer.mint()))
        refused = client.get("/")
    assert answer.status_code == 200
    assert refused.status_code == 401


# -- refusal reasons in the logs --------------------------------------------------------------


def fenced(page: Path, language: str, containing: str) -> str:
    blocks = re.findall(rf"^```{language}\n(.*?)^```$", page.read_text(), re.M | re.S)
    (block,) = [b for b in blocks if containing in b]
    return str(block)


REFUSED_IN_PROCESS = """
from starlette.applications import Starlette
from starlette.testclient import TestClient
from jwt_middleware import JWTMiddleware
from jwt_middleware.testing import LocalIssuer

with LocalIssuer() as issuer:
    app = Starlette()
    app.add_middleware(JWTMiddleware, issuer=issuer.issuer, audience=issuer.audience)
    expired = issuer.mint(expires_in=-3600)
    print(expired)
    with TestClient(app) as client:
        assert client.get("/", headers={"Authorization": "Bearer " + expired}).status_code == 401
"""


@pytest.mark.parametrize("configured", [False, True], ids=["unconfigured", "basicConfig"])
def test_refusal_reasons_reach_stderr_once_whether_or_not_logging_is_configured(
    configured: bool,
) -> None:
    """An expired token's reason is on stderr exactly once, with docs/errors.md's logging setup
    and without any; the token itself never is."""
    setup = fenced(DOCS / "errors.md", "python", "basicConfig") if configured else ""
    done = subprocess.run(
        [sys.executable, "-c", setup + REFUSED_IN_PROCESS],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    token = done.stdout.strip()
    assert done.stderr.count("token_expired") == 1, done.stderr
    assert token and token not in done.stderr


@pytest.mark.parametrize("configured", [False, True], ids=["default", "log-config"])
def test_refusal_reasons_reach_uvicorns_log_with_the_documented_log_config(
    configured: bool, issuer: LocalIssuer, tmp_path: Path
) -> None:
    """Under uvicorn, refusal reasons are logged exactly once, by default and with
    docs/errors.md's --log-config."""
    config = tmp_path / "log.json"
    config.write_text(fenced(DOCS / "errors.md", "json", "jwt_middleware"))
    json.loads(config.read_text())
    options = ["--log-config", str(config)] if configured else []

    def command(port: int) -> list[str]:
        return uvicorn_argv("starlette_app:app", port, app_dir="examples", options=options)

    with AppServer("uvicorn", command, env=jwt_env(issuer), log=tmp_path / "server.log") as app:
        app.wait_ready()
        expired = issuer.mint(expires_in=-3600)
        assert app.get("/me", expired).status_code == 401
        deadline = time.monotonic() + 5
        while "token_expired" not in app.output() and time.monotonic() < deadline:
            time.sleep(0.05)
        log = app.output()
    assert log.count("token_expired") == 1, log
    assert expired not in log
