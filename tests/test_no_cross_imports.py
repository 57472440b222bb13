"""Test modules share code through tests/helpers only, never by importing one another (a test
module's import would also collect its tests' fixtures and constants by accident)."""

from __future__ import annotations

import ast
from pathlib import Path

TESTS = Path(__file__).parent


def test_test_modules_import_helpers_not_each_other():
    offenders = []
    for path in sorted(TESTS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            offenders += [
                f"{path.name}: {name}"
                for name in names
                if name.startswith(("tests.test_", "tests.conftest", "conftest", "test_"))
            ]
    assert offenders == []
