"""Signed (and deliberately broken) update bundles for the remote-update tests.

Every bundle here is tools/toy_models.py's colour-blocks detector, which finds a red, green or
blue block of 32 pixels, so the good one and each broken one differ in exactly one way. A bundle
carries a ``trial/`` folder (a frame with a red block, and ``trial/expected.json`` asking for at
least one detection on it), as docs/bundle.md describes, so the child-process trial can tell a
model that detects nothing from one that works.

    python -m tools.bad_models OUT_DIR   # writes every kind, signed by a new key, as .tar.gz
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from onnx import helper, numpy_helper

from edge_agent.bundle import MANIFEST, write_manifest
from edge_agent.bundle.signing import sign_manifest
from edge_agent.fsutil import sha256_file
from tools.toy_models import colour_blocks_bundle

TRIAL_IMAGE = "red_block.png"
#: Where the red block sits in the 160-pixel trial frame: exactly one pooling window.
BLOCK = (32, 64)
#: Each broken kind and what is wrong with it.
KINDS = {
    "good": "works: detects the red block in its trial frame",
    "wrong_key": "signed by a key the device does not pin",
    "bad_signature": "manifest.json changed after signing",
    "unsigned": "no manifest.sig",
    "other_labels": "labels cat, dog, bird instead of red, green, blue",
    "loader_crash": "model.onnx is not an ONNX file (the manifest's sha256 matches it)",
    "nan": "the graph multiplies its scores by NaN",
    "blind": "the graph multiplies its scores by 0: it detects nothing",
}


def trial_frame() -> np.ndarray:
    """160 x 160 BGR black frame with a pure red 32-pixel block in one window."""
    frame = np.zeros((160, 160, 3), np.uint8)
    lo, hi = BLOCK
    frame[lo:hi, lo:hi] = (0, 0, 255)
    return frame


def _add_trial(out: Path, files: dict[str, str]) -> None:
    (out / "trial").mkdir(exist_ok=True)
    cv2.imwrite(str(out / "trial" / TRIAL_IMAGE), trial_frame())
    expected = {TRIAL_IMAGE: {"min_detections": 1}}
    (out / "trial" / "expected.json").write_text(json.dumps(expected) + "\n", encoding="utf-8")
    files.update({f"trial/{TRIAL_IMAGE}": "", "trial/expected.json": ""})


def _scale_scores(model_path: Path, factor: float) -> None:
    """Rewire the graph so ``scores`` comes out multiplied by ``factor`` (NaN, 0)."""
    model = onnx.load(str(model_path))
    graph = model.graph
    for node in graph.node:
        node.output[:] = ["raw_scores" if o == "scores" else o for o in node.output]
    graph.initializer.append(numpy_helper.from_array(np.array(factor, np.float32), "factor"))
    graph.node.append(helper.make_node("Mul", ["raw_scores", "factor"], ["scores"]))
    onnx.checker.check_model(model)
    onnx.save(model, str(model_path))


def _rewrite(out: Path, **changes: Any) -> None:
    """Write the manifest again with ``changes``, re-hashing every listed file."""
    body = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
    write_manifest(out, {**body, **changes})


def build(
    kind: str,
    out: Path,
    key: Ed25519PrivateKey,
    *,
    version: int = 2,
    name: str = "colour-blocks",
    trial: bool = True,
    **changes: Any,
) -> Path:
    """The bundle folder ``out`` of this kind (see KINDS), signed with ``key`` unless the kind
    says otherwise; ``changes`` go into the manifest (``requires_agent=">=9"``, ...)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {list(KINDS)}")
    colour_blocks_bundle(out, name=name, version=version)
    files = {"model.onnx": ""}
    if trial:
        _add_trial(out, files)
    if kind == "nan":
        _scale_scores(out / "model.onnx", float("nan"))
    elif kind == "blind":
        _scale_scores(out / "model.onnx", 0.0)
    elif kind == "loader_crash":
        (out / "model.onnx").write_bytes(b"\x08\xff not an onnx protobuf \x00" * 64)
    if kind == "other_labels":
        changes["labels"] = ["cat", "dog", "bird"]
    _rewrite(out, files=files, **changes)
    if kind == "unsigned":
        return out
    sign_manifest(out, Ed25519PrivateKey.generate() if kind == "wrong_key" else key)
    if kind == "bad_signature":
        body = json.loads((out / MANIFEST).read_text(encoding="utf-8"))
        body["thresholds"]["score"] = 0.1  # a change after signing, as a tamperer would make
        (out / MANIFEST).write_text(json.dumps(body, indent=2) + "\n", encoding="utf-8")
    return out


def pack(folder: Path, archive: Path) -> tuple[Path, str, int]:
    """``folder`` as a .tar.gz (``edge-trainer pack``): (archive, sha256, size in bytes)."""
    from trainer.signing_cli import pack_bundle

    pack_bundle(folder, archive)
    return archive, sha256_file(archive), archive.stat().st_size


if __name__ == "__main__":
    if len(sys.argv) != 2:
        sys.exit("usage: python -m tools.bad_models OUT_DIR")
    root = Path(sys.argv[1])
    signer = Ed25519PrivateKey.generate()
    for each in KINDS:
        made = build(each, root / each, signer)
        print(pack(made, root / f"{each}.tar.gz")[0], "-", KINDS[each])
