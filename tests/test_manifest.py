"""The manifest schema is strict: an unknown key anywhere is an error naming its path and the
nearest known key, so a typo never falls back to a default silently."""

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from edge_agent.bundle import BundleError, parse_manifest
from edge_agent.bundle.manifest import Manifest

BUNDLE = Path("/models/shelf")


def detector_manifest(**changes: Any) -> dict[str, Any]:
    """A valid ssd_anchors manifest with both nested decoder blocks, ``changes`` applied at
    dotted paths (``{"decoder.box_coder.weigths": 1}``)."""
    data: dict[str, Any] = {
        "schema": "edgesight.bundle/1",
        "name": "shelf",
        "version": 1,
        "task": "detect",
        "labels": ["cola", "water"],
        "model": {"file": "model.tflite", "format": "tflite"},
        "input": {"width": 300, "height": 300, "layout": "NHWC", "dtype": "uint8"},
        "decoder": {
            "type": "ssd_anchors",
            "outputs": {"boxes": "raw_boxes", "scores": "raw_scores"},
            "anchor_generator": {"num_layers": 1, "feature_map_sizes": [[19, 19]]},
            "box_coder": {"order": "yxhw"},
        },
        "thresholds": {"score": 0.4},
        "files": {"model.tflite": "0" * 64},
    }
    data = copy.deepcopy(data)
    for path, value in changes.items():
        *parents, key = path.split(".")
        holder = data
        for name in parents:
            holder = holder[name]
        holder[key] = value
    return data


def problem(data: dict[str, Any]) -> str:
    with pytest.raises(BundleError) as info:
        parse_manifest(json.dumps(data).encode(), BUNDLE)
    return str(info.value).removeprefix(f"bundle {BUNDLE}: manifest.json: ")


def test_the_base_manifest_is_valid():
    manifest = parse_manifest(json.dumps(detector_manifest()).encode(), BUNDLE)
    assert manifest.decoder.type == "ssd_anchors" and manifest.thresholds.score == 0.4


@pytest.mark.parametrize(
    ("key", "expected"),
    [
        ("treshold", "treshold: unknown key (did you mean 'thresholds'?)"),
        ("model.fromat", "model.fromat: unknown key (did you mean 'format'?)"),
        ("input.widht", "input.widht: unknown key (did you mean 'width'?)"),
        ("thresholds.scroe", "thresholds.scroe: unknown key (did you mean 'score'?)"),
        ("decoder.anchor_file", "decoder.anchor_file: unknown key (did you mean 'anchors_file'?)"),
        (
            "decoder.box_coder.weigths",
            "decoder.box_coder.weigths: unknown key (did you mean 'weights'?)",
        ),
        (
            "decoder.anchor_generator.min_scael",
            "decoder.anchor_generator.min_scael: unknown key (did you mean 'min_scale'?)",
        ),
        ("decoder.outputs.box", "decoder.outputs.box: unknown key (did you mean 'boxes'?)"),
    ],
)
def test_unknown_key_names_its_path_and_the_nearest_known_key(key, expected):
    assert problem(detector_manifest(**{key: 1})) == expected


@pytest.mark.parametrize(
    ("key", "known"),
    [
        ("colour", "['schema', 'name', 'version', 'task', 'multilabel', 'labels', 'model'"),
        ("thresholds.zzz", "['score', 'per_class', 'nms_iou', 'max_detections']"),
        ("decoder.box_coder.zzz", "['order', 'weights']"),
    ],
)
def test_unknown_key_without_a_close_match_lists_the_known_keys(key, known):
    assert problem(detector_manifest(**{key: 1})).startswith(
        f"{key}: unknown key; expected one of {known}"
    )


def test_every_unknown_key_is_reported_at_once():
    found = problem(detector_manifest(**{"treshold": 1, "input.widht": 1})).split("; ")
    assert found[0].startswith("input.widht: unknown key") and "treshold: unknown key" in found[1]


def test_unknown_decoder_type_suggests_and_lists_the_types():
    found = problem(detector_manifest(decoder={"type": "ssd_anchor"}))
    assert found.startswith("decoder.type: unknown type 'ssd_anchor' (did you mean 'ssd_anchors'?)")
    assert "expected one of ['softmax', 'sigmoid', 'ssd_boxes', 'ssd_anchors'," in found


def test_missing_decoder_type_is_named():
    assert problem(detector_manifest(decoder={})) == "decoder.type: required field is missing"


def test_misspelt_choice_is_suggested():
    found = problem(detector_manifest(**{"input.resize": "letterbx"}))
    assert found.startswith("input.resize: Input should be 'stretch'")
    assert found.endswith("(got 'letterbx'; did you mean 'letterbox'?)")


def test_every_field_is_declared_so_dumps_load_back():
    """What a manifest dumps (by alias) is exactly what it accepts: no extra key to drop."""
    manifest = Manifest.model_validate(detector_manifest(created="2026-01-01T00:00:00Z"))
    again = Manifest.model_validate(manifest.model_dump(mode="json", by_alias=True))
    assert again == manifest
