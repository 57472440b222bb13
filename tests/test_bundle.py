"""Bundle loading: schema, sha256 of every file, missing files, clear errors."""

import json

import pytest

from edge_agent.bundle import BundleError, load_bundle, write_manifest
from tools.toy_models import colour_blocks_bundle


@pytest.fixture
def bundle(tmp_path):
    return colour_blocks_bundle(tmp_path / "b")


def edit_manifest(bundle, **changes):
    path = bundle / "manifest.json"
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            data.pop(key)
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_good_bundle_loads(bundle):
    b = load_bundle(bundle)
    assert b.manifest.labels == ["red", "green", "blue"]
    assert b.model_path.name == "model.onnx" and len(b.manifest_sha256) == 64
    assert b.describe()["name"] == "colour-blocks"


def test_wrong_sha256_names_file_and_both_hashes(bundle):
    with (bundle / "model.onnx").open("ab") as fh:
        fh.write(b"tampered")
    with pytest.raises(
        BundleError,
        match=r"model.onnx: sha256 mismatch \(expected [0-9a-f]{64}, "
        r"got [0-9a-f]{64}\)",
    ) as info:
        load_bundle(bundle)
    assert str(bundle) in str(info.value)


def test_missing_model_file(bundle):
    (bundle / "model.onnx").unlink()
    with pytest.raises(BundleError, match=r"model\.onnx: file is missing"):
        load_bundle(bundle)


def test_manifest_without_labels(bundle):
    edit_manifest(bundle, labels=None)
    with pytest.raises(BundleError, match=r"manifest\.json: labels: required field is missing"):
        load_bundle(bundle)


def test_repeated_labels_are_named(bundle):
    edit_manifest(bundle, labels=["red", "green", "red"])
    with pytest.raises(BundleError, match=r"labels must be unique, but \['red'\] appear"):
        load_bundle(bundle)


def test_model_file_not_listed(bundle):
    edit_manifest(bundle, files={})
    with pytest.raises(BundleError, match=r"files must list 'model\.onnx' with its sha256"):
        load_bundle(bundle)


def test_unknown_decoder_lists_choices(bundle):
    edit_manifest(bundle, decoder={"type": "yolo"})
    with pytest.raises(BundleError, match=r"softmax.*sigmoid.*ssd_boxes"):
        load_bundle(bundle)


def test_decoder_must_fit_task(bundle):
    edit_manifest(bundle, decoder={"type": "softmax"})
    with pytest.raises(BundleError, match="decoder 'softmax' does not fit task 'detect'"):
        load_bundle(bundle)


def test_listed_path_outside_bundle_refused(bundle):
    edit_manifest(bundle, files={"model.onnx": "0" * 64, "../etc/passwd": "0" * 64})
    with pytest.raises(BundleError, match="must be a relative path inside the bundle"):
        load_bundle(bundle)


def test_missing_or_broken_manifest(tmp_path, bundle):
    with pytest.raises(BundleError, match="no such folder or file"):
        load_bundle(tmp_path / "nothing")
    (bundle / "manifest.json").write_text("{not json")
    with pytest.raises(BundleError, match="not valid JSON"):
        load_bundle(bundle)
    (bundle / "manifest.json").unlink()
    with pytest.raises(BundleError, match=r"manifest\.json is missing"):
        load_bundle(bundle)


def test_write_manifest_requires_files(tmp_path):
    with pytest.raises(ValueError, match="files"):
        write_manifest(tmp_path, {"name": "x"})
