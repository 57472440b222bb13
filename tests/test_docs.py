"""The docs that describe contracts stay true to the code."""

import re
import textwrap
from pathlib import Path

import pytest

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


# --- Paths and links: a doc may name only what a user of the repository has -----------------

DOCS = sorted([ROOT / "README.md", *(ROOT / "docs").glob("*.md")])
#: Top-level folders of the repository (and ones a doc might name when they exist): a backticked
#: or linked path starting with one must exist in the checkout.
REPO_DIRS = ("edge_agent", "trainer", "tools", "tests", "scripts", "bench", "docs", "deploy",
             "systemd", "examples")  # fmt: skip
REPO_PATH = re.compile(rf"(?<![\w./-])(?:\./)?((?:{'|'.join(REPO_DIRS)})/[\w./*-]*)")
#: Absolute paths a doc may name: places on a device, and the placeholders of examples.
ALLOWED_ABSOLUTE = (
    "/var/lib/edgesight/",  # the agent's state on a device
    "/etc/edgesight/",  # its config and public keys
    "/etc/mosquitto/",  # the broker's config in docs/mqtt-security.md
    "/opt/edgesight/",  # the installed venv (docs/systemd.md, docs/install.md)
    "/etc/systemd/system/",  # where the unit is installed
    "/var/lib/private/",  # where systemd keeps a DynamicUser service's state
    "/etc/nv_tegra_release/",  # how a Jetson is recognised (docs/install.md)
    "/home/pi/",  # a Pi user's checkout in docs/install.md
    "/path/to/",  # a placeholder
    "/dev/",  # cameras
    "/proc/",  # what bench reads about the device
    "/home/me/",  # a user's home in example output (keygen --out ~/.edgesight)
    "/data/",  # a user's dataset in example messages
    "/srv/",  # a user's capture folder in an example
    "/abs/path/",  # data.yaml's placeholder
    "/customvision/",  # Custom Vision's HTTP routes, not files
    "/classify/",
    "/detect/",
)
#: An absolute path of two or more parts; not a URL's (``://host/...``), topic's or ``~/...``.
ABSOLUTE = re.compile(r"(?<![\w.~}>):/-])(/[A-Za-z][\w.-]*(?:/[\w.{}<>-]*)+)")
#: Files of the machines the project was built on, which no user has.
OUTSIDE_NAMES = ("TOOLCHAIN.md", "DESIGN.md", "STYLE.md", "../shared", ".venv/lib")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
#: A dotted name in our packages (``python -m tools.config_docs``, ``trainer.metrics``).
DOTTED = re.compile(r"(?<![\w./-])((?:edge_agent|trainer|tools)(?:\.\w+)+)")
#: Dotted names that are not modules: the manifest's trainer block; the loggers OpenCV's and
#: FFmpeg's own lines are logged on (backend_logs.py, ffmpeg_log.py).
NOT_MODULES = {
    "trainer.recipe",
    "edge_agent.backend",
    "edge_agent.backend.ffmpeg",
    "edge_agent.backend.opencv",
}


def _slug(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[`*_]", "", heading.strip().lower())
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    inside, found = False, set()
    for line in path.read_text().splitlines():
        if line.startswith("```"):
            inside = not inside
        elif not inside and line.startswith("#"):
            found.add(_slug(line.lstrip("#")))
        found.update(re.findall(r'<a id="([^"]+)"', line))  # an explicit anchor
    return found


def _doc_id(doc: Path) -> str:
    return str(doc.relative_to(ROOT))


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_links_reach_files_and_headings(doc: Path) -> None:
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve() if file else doc
        if not path.is_relative_to(ROOT):
            broken.append(f"{target}: outside the repository")
        elif not path.exists():
            broken.append(f"{target}: no such file")
        elif anchor and path.suffix == ".md" and anchor not in _anchors(path):
            broken.append(f"{target}: no heading #{anchor} in {path.name}")
    assert not broken, f"{_doc_id(doc)}: broken links:\n" + "\n".join(broken)


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_named_repository_paths_exist(doc: Path) -> None:
    missing = []
    for number, line in enumerate(doc.read_text().splitlines(), start=1):
        for name in REPO_PATH.findall(line):
            name = name.rstrip(".,:;")
            if "*" in name or "..." in name:
                found = any(ROOT.glob(name.replace("...", "*")))
            else:
                found = (ROOT / name).exists()
            if not found:
                missing.append(f"line {number}: {name}")
    assert not missing, f"{_doc_id(doc)}: no such path in the repository:\n" + "\n".join(missing)


def _resolves(dotted: str) -> bool:
    """Whether ``a.b.c`` is a module of the repository, or a name defined in one."""
    parts, path = dotted.split("."), ROOT
    for i, part in enumerate(parts):
        if (path / part).is_dir():
            path = path / part
            continue
        module = path / f"{part}.py"
        if module.is_file():
            rest, source = parts[i + 1 :], module
        else:  # a name the package itself defines or re-exports
            rest, source = parts[i:], path / "__init__.py"
        return not rest or re.search(rf"\b{rest[0]}\b", source.read_text()) is not None
    return True


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_named_modules_exist(doc: Path) -> None:
    names = set(DOTTED.findall(doc.read_text())) - NOT_MODULES
    assert [n for n in sorted(names) if not _resolves(n)] == [], _doc_id(doc)


@pytest.mark.parametrize("doc", DOCS, ids=_doc_id)
def test_no_path_outside_the_repository(doc: Path) -> None:
    """No build-machine path (/work/..., /tmp/..., ../shared): users have only the repository."""
    found = []
    for number, line in enumerate(doc.read_text().splitlines(), start=1):
        for path in ABSOLUTE.findall(line):
            if not (path + "/").startswith(ALLOWED_ABSOLUTE):  # the folder itself too
                found.append(f"line {number}: {path}")
        found += [f"line {number}: {name}" for name in OUTSIDE_NAMES if name in line]
    assert not found, f"{_doc_id(doc)}: paths outside the repository:\n" + "\n".join(found)


def test_the_checks_see_what_they_should() -> None:
    assert REPO_PATH.findall("see `trainer/nope.py` and ./scripts/x.sh") == [
        "trainer/nope.py",
        "scripts/x.sh",
    ]
    assert REPO_PATH.findall("runs/shelf/eval and my_trainer/x") == []
    line = "see /work/shared/TOOLCHAIN.md, http://camera.local/a.jpg, ~/.cache/x/y, a/b/c"
    assert ABSOLUTE.findall(line) == ["/work/shared/TOOLCHAIN.md"]
    assert _resolves("trainer.metrics.top1_best_f1") and _resolves("tools.config_docs")
    assert not _resolves("trainer.nope") and not _resolves("trainer.metrics.no_such_name")
    assert _slug(" What `check-config` and check-bundle prove") == (
        "what-check-config-and-check-bundle-prove"
    )


def _yaml_blocks(text: str) -> list[str]:
    return [textwrap.dedent(b) for b in re.findall(r"```yaml\n(.*?)```", text, re.DOTALL)]


def test_config_examples_with_stages_are_valid_configs():
    """Every YAML example that lists stages loads as a config, as a user would paste it: the
    option names, values and stage order the docs show are ones the agent accepts."""
    from edge_agent.config import parse_config

    checked = 0
    for doc in DOCS:
        for block in _yaml_blocks(doc.read_text(encoding="utf-8")):
            if "- type:" not in block or "[...]" in block:
                continue  # no stages, or an elided fragment
            text = block if "model:" in block else "model:\n  bundle: bundle\n" + block
            parse_config(text, ROOT / "docs" / "agent.yaml")  # raises ConfigError naming it
            checked += 1
    assert checked >= 4
