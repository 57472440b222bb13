"""The docs that describe contracts stay true to the code."""

from pathlib import Path

from tools.config_docs import render

ROOT = Path(__file__).resolve().parents[1]


def test_config_reference_is_current():
    current = (ROOT / "docs" / "config.md").read_text()
    stale = "docs/config.md is stale: python -m tools.config_docs > docs/config.md"
    assert current == render(), stale


def _json_blocks(text: str) -> list[str]:
    blocks, inside, current = [], False, []
    for line in text.splitlines():
        if line.startswith("```json"):
            inside, current = True, []
        elif line.startswith("```") and inside:
            inside = False
            blocks.append("\n".join(current))
        elif inside:
            current.append(line)
    return blocks


def test_readme_manifests_are_valid():
    import json

    from edge_agent.bundle.manifest import Manifest

    blocks = _json_blocks((ROOT / "README.md").read_text())
    full = [b for b in blocks if b.lstrip().startswith('{"schema"')]
    fragments = [b for b in blocks if b.lstrip().startswith('"decoder"')]
    assert len(full) >= 4 and fragments
    base = None
    for block in full:
        data = json.loads(block.replace("<sha256>", "0" * 64))
        Manifest.model_validate(data)
        if data["task"] == "detect" and data["model"]["format"] == "tflite":
            base = data
    for fragment in fragments:
        decoder = json.loads("{" + fragment + "}")["decoder"]
        Manifest.model_validate({**base, "decoder": decoder})
