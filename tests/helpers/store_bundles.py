"""Tiny bundle folders for the model-store tests (test_update_store, test_update_crash): a
manifest and placeholder model bytes, unique per version, optionally signed. They are never
run, only staged, swapped and verified by their signatures and hashes."""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge_agent.bundle import write_manifest
from edge_agent.bundle.signing import sign_manifest

MANIFEST_BASE = {
    "schema": "edgesight.bundle/1",
    "name": "shelf",
    "task": "classify",
    "labels": ["a", "b"],
    "model": {"file": "model.onnx", "format": "onnx"},
    "input": {"width": 8, "height": 8},
    "decoder": {"type": "softmax"},
}


def make_bundle(folder: Path, version: int, key: Ed25519PrivateKey | None = None) -> str:
    """A bundle folder (model bytes unique per version); returns a sha256 to stage it under."""
    folder.mkdir(parents=True)
    (folder / "model.onnx").write_bytes(f"model v{version}".encode())
    write_manifest(folder, {**MANIFEST_BASE, "version": version, "files": {"model.onnx": ""}})
    if key is not None:
        sign_manifest(folder, key)
    return hashlib.sha256(f"archive v{version}".encode()).hexdigest()
