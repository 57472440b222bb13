"""The docs that describe contracts stay true to the code."""

from pathlib import Path

from tools.config_docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    current = (ROOT / "docs" / "config.md").read_text()
    stale = "docs/config.md is stale: python -m tools.config_docs > docs/config.md"
    assert current == render(), stale
