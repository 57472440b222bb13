"""trainer.quantize's PT2E recipe on a real SSDLite graph: the box-regression head is left float
and everything else is prepared for INT8. The prepared graph is inspected before calibration,
so no conversion runs here (the converted file: tests/test_export.py, EDGESIGHT_SLOW_TESTS)."""

from __future__ import annotations

import copy
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("litert_torch")

from torchao.quantization.pt2e.quantize_pt2e import prepare_pt2e  # noqa: E402

from trainer.export_onnx import ExportModule, sample_input  # noqa: E402
from trainer.models import get_model  # noqa: E402
from trainer.quantize import (  # noqa: E402
    SSD_FLOAT_MODULES,
    float_modules,
    in_modules,
    make_quantizer,
)

#: Small input: the graph's structure does not depend on the size, only the export time does.
SIZE = 96


@pytest.fixture(scope="module")
def ssd() -> tuple[ExportModule, Any]:
    """An untrained SSDLite's ExportModule (NHWC, as TFLite takes it) and its exported graph
    (prepare_pt2e rewrites a graph in place: tests take a copy)."""
    torch.manual_seed(0)
    module = ExportModule(get_model("ssdlite320_mobilenet_v3_large", 3, size=SIZE), nhwc=True)
    module.eval()
    sample = sample_input(SIZE, nhwc=True)
    return module, torch.export.export(module, (), {"images": sample}).module()


def _observed(prepared: Any, node: Any) -> bool:
    """Whether ``node`` is an observer PT2E inserted (it records a range to quantize with)."""
    from torchao.quantization.pt2e import ObserverBase

    return node.op == "call_module" and isinstance(getattr(prepared, node.target), ObserverBase)


def _convs(prepared: Any, under: tuple[str, ...]) -> list[Any]:
    return [
        n
        for n in prepared.graph.nodes
        if n.op == "call_function" and "conv2d" in str(n.target) and in_modules(n, under)
    ]


def test_the_regression_head_stays_float_and_the_rest_is_quantized(ssd) -> None:
    module, graph = ssd
    exported = copy.deepcopy(graph)
    assert float_modules(module) == SSD_FLOAT_MODULES
    quantizer = make_quantizer(float_modules(module))
    prepared = prepare_pt2e(exported, quantizer)
    regression = _convs(prepared, SSD_FLOAT_MODULES)
    classification = _convs(prepared, ("head.classification_head",))
    backbone = _convs(prepared, ("backbone",))
    assert regression and classification and backbone
    # Conv weights reach an INT8 conv through an observer; the float head's take them as they are.
    assert not any(_observed(prepared, n.args[1]) for n in regression)
    assert all(_observed(prepared, n.args[1]) for n in classification + backbone)
    assert {n.name for n in regression} <= set(quantizer.kept_float)
    # No range is recorded for anything the regression head computes (its output, ``loc``,
    # included), while the class head's activations are observed for INT8.
    observed = [n.args[0] for n in prepared.graph.nodes if _observed(prepared, n)]
    assert not any(in_modules(n, SSD_FLOAT_MODULES) for n in observed)
    assert any(in_modules(n, ("head.classification_head",)) for n in observed)


def test_a_module_path_that_matches_nothing_is_an_error(ssd) -> None:
    """A renamed module must not silently quantize the head it was meant to keep float."""
    exported = copy.deepcopy(ssd[1])
    with pytest.raises(ValueError, match=r"head\.regression_hed"):
        prepare_pt2e(exported, make_quantizer(("head.regression_hed",)))


def test_classifiers_keep_nothing_float() -> None:
    module = ExportModule(get_model("mobilenet_v3_small", 3, size=64), nhwc=True)
    assert float_modules(module) == ()
