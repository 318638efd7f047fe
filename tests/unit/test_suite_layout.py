"""The test suite's own rules (CONTRIBUTING.md, "Tests, by layer"): every test file sits in a
layer folder, every test says in a docstring what it pins, and the tests are type-checked."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import tomllib

from tests.conftest import LAYERS

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


def _test_files() -> list[Path]:
    return sorted(TESTS.rglob("test_*.py"))


def test_every_test_file_is_in_a_layer_folder() -> None:
    """No test file sits at the top of tests/ or in a folder without a marker."""
    misplaced = [
        str(p.relative_to(TESTS))
        for p in _test_files()
        if p.relative_to(TESTS).parts[0] not in LAYERS
    ]
    assert misplaced == []


def test_every_test_has_a_docstring() -> None:
    """Each ``test_*`` function states the behaviour it pins in a docstring."""
    missing = []
    for path in _test_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            if node.name.startswith("test_") and not ast.get_docstring(node):
                missing.append(f"{path.relative_to(ROOT)}::{node.name}")
    assert missing == []


def test_the_tests_are_type_checked() -> None:
    """The README's test command runs mypy --strict over the tests as well as the package."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]
    assert config["strict"] is True
    assert {"jwt_middleware", "tests"} <= set(config["files"])


def test_every_test_the_conformance_map_names_exists() -> None:
    """tests/CONFORMANCE.md points at real files and test functions (moves must update it)."""
    text = (TESTS / "CONFORMANCE.md").read_text() + (ROOT / "docs" / "conformance.md").read_text()
    dangling = []
    for file, name in sorted(set(re.findall(r"(tests/[\w/]+\.py)(?:::(\w+))?", text))):
        path = ROOT / file
        if not path.is_file() or (name and not re.search(rf"def {name}\b", path.read_text())):
            dangling.append(f"{file}::{name}" if name else file)
    assert dangling == []
