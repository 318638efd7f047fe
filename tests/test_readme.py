"""The README matches the code: every setting and reason code documented, every example valid."""

from __future__ import annotations

import ast
import dataclasses
import importlib
import re
from pathlib import Path

import pytest

from jwt_middleware import Reason, Settings

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()
BLOCKS = re.findall(r"```python\n(.*?)```", README, flags=re.S)


def test_every_setting_is_in_the_configuration_reference() -> None:
    table = README[README.index("## Configuration reference") :]
    fields = [f.name for f in dataclasses.fields(Settings) if f.init]
    missing = [name for name in fields if f"| `{name}` |" not in table]
    assert not missing, f"settings missing from the README table: {missing}"


def test_every_reason_code_is_in_the_troubleshooting_table() -> None:
    table = README[README.index("## Errors and troubleshooting") :]
    codes = [v for k, v in vars(Reason).items() if k.isupper()]
    missing = [code for code in codes if f"`{code}`" not in table]
    assert not missing, f"reason codes missing from the README: {missing}"


@pytest.mark.parametrize("block", BLOCKS, ids=[f"block{i}" for i in range(len(BLOCKS))])
def test_python_examples_compile_and_import_what_exists(block: str) -> None:
    tree = ast.parse(block)
    for node in ast.walk(tree):
        if (
            isinstance(node, ast.ImportFrom)
            and node.module
            and node.module.startswith("jwt_middleware")
        ):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{node.module} has no {alias.name}"


def test_the_two_quick_start_commands_are_the_ones_ci_runs() -> None:
    quick = README[README.index("## Quick start") : README.index("## Use it")]
    assert "bash dev.sh demo" in quick and "bash dev.sh test" in quick
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    assert "bash dev.sh test" in ci
