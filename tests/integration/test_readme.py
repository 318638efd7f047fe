"""The README as a front page: small, installs the right distribution, and names the two
commands CI runs. Its examples run in tests/integration/test_docs.py, with the reference pages."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = (ROOT / "README.md").read_text()
PYPROJECT = (ROOT / "pyproject.toml").read_text()  # read as text: tomllib needs Python 3.11
DISTRIBUTION = re.findall(r'^name = "([^"]+)"', PYPROJECT, re.M)[0]
_EXTRAS_TABLE = PYPROJECT.split("[project.optional-dependencies]")[1].split("\n[")[0]
EXTRAS = set(re.findall(r"^([\w-]+) = ", _EXTRAS_TABLE, re.M))


def section(heading: str) -> str:
    start = README.index(f"\n{heading}\n")
    end = README.find("\n## ", start + 1)
    return README[start : end if end != -1 else None]


def test_the_readme_is_a_front_page() -> None:
    """README.md stays a front page (at most 8 KB); the reference lives in docs/."""
    assert len(README.encode()) <= 8 * 1024, len(README.encode())


def test_the_install_command_names_the_distribution_and_its_extras() -> None:
    """Every `pip install` in the README names pyproject's distribution and extras it has."""
    installs = re.findall(r"pip install '([\w.-]+)\[([\w,]+)\]'", section("## Install"))
    assert installs
    for name, wanted in installs:
        assert name == DISTRIBUTION == "jwt-resource-server"
        assert set(wanted.split(",")) <= EXTRAS
    for extra in re.findall(r"\[(\w+)\]", section("## Install")):
        assert extra in EXTRAS, extra


def test_the_install_section_warns_about_the_other_jwt_middleware() -> None:
    """The README says the unrelated `jwt-middleware` distribution shares the import name."""
    install = section("## Install")
    assert "`jwt-middleware`" in install and "`jwt_middleware`" in install


def test_the_two_quick_start_commands_are_the_ones_ci_runs() -> None:
    """Quick start shows `bash dev.sh demo` and `bash dev.sh test`; CI runs the latter."""
    quick = section("## Quick start")
    assert "bash dev.sh demo" in quick and "bash dev.sh test" in quick
    ci = (ROOT / ".ci" / "run").read_text()
    assert "bash dev.sh test" in ci
