"""Model registry in torchvision's style: ``register_model`` / ``get_model`` / ``list_models``.

Nothing here downloads: torchvision builders get ``weights=None, weights_backbone=None`` and a
``weights`` argument is always a local file (trainer.pretrained finds the named ones).
``num_classes`` is the number of *our* classes; the detector adds torchvision SSD's background
class 0 itself.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn
from torchvision.models import mobilenet_v2, mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.detection import _utils as det_utils
from torchvision.models.detection.anchor_utils import DefaultBoxGenerator
from torchvision.models.detection.ssd import SSD
from torchvision.models.detection.ssdlite import SSDLiteHead, _mobilenet_extractor, _normal_init

from trainer.errors import InputError
from trainer.run_config import RunConfig
from trainer.state_dicts import LoadReport, WeightsFile, load_matching, read_weights

log = logging.getLogger(__name__)

Task = Literal["classify", "detect"]

#: Default square input sizes, pixels: ImageNet's 224 for classifiers, SSDLite320's 320.
CLASSIFIER_SIZE = 224
DETECTOR_SIZE = 320
#: SSDLite BatchNorm settings from torchvision's builder (eps, momentum).
SSDLITE_BN_EPS = 0.001
SSDLITE_BN_MOMENTUM = 0.03
#: torchvision's SSDLite post-processing, except 100 detections: COCO's maxDets is 100 anyway.
SSDLITE_POSTPROCESS = {
    "score_thresh": 0.001,
    "nms_thresh": 0.55,
    "detections_per_img": 100,
    "topk_candidates": 300,
}
#: SSDLite rescales [0, 1] to [-1, 1] inside the model; classifiers get ImageNet's in the data.
SSDLITE_MEAN_STD = ([0.5, 0.5, 0.5], [0.5, 0.5, 0.5])
IMAGENET_MEAN_STD = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])
SCRATCH_NOTE = (
    "no --weights file: training {name} from scratch; expect to need more data and epochs than "
    "fine-tuning (hundreds of images per class, tens of epochs)"
)


@dataclass(frozen=True)
class ModelInfo:
    """One registered model: its task, default input size, and its builder."""

    name: str
    task: Task
    default_size: int
    builder: Callable[..., nn.Module] = field(repr=False)


_MODELS: dict[str, ModelInfo] = {}


def register_model(name: str, task: Task, default_size: int) -> Callable:
    """Decorator: make ``builder(num_classes, *, multilabel, size, **kw)`` known by ``name``."""

    def wrap(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        if name in _MODELS:
            raise ValueError(f"model {name!r} is already registered")
        _MODELS[name] = ModelInfo(name, task, default_size, builder)
        return builder

    return wrap


def list_models(task: Task | None = None) -> list[str]:
    return sorted(n for n, info in _MODELS.items() if task is None or info.task == task)


def model_info(name: str) -> ModelInfo:
    if name not in _MODELS:
        raise InputError(f"unknown model {name!r}: expected one of {list_models()}")
    return _MODELS[name]


def get_model(
    name: str,
    num_classes: int,
    *,
    multilabel: bool = False,
    weights: Path | str | None = None,
    size: int | None = None,
    **kw: Any,
) -> nn.Module:
    """Build ``name`` for ``num_classes`` classes, then load a local ``weights`` file if given.

    ``multilabel`` changes the loss, not the net (logits either way); it is accepted here so the
    call names everything the model is for. Raises InputError (unknown name, not a weights
    file) or FileNotFoundError.
    """
    wf = read_weights(Path(weights)) if weights is not None else None
    return build_model(name, num_classes, wf, multilabel=multilabel, size=size, **kw)[0]


def build_model(
    name: str,
    num_classes: int,
    weights: WeightsFile | None,
    *,
    new_head: bool = False,
    multilabel: bool = False,
    size: int | None = None,
    **kw: Any,
) -> tuple[nn.Module, LoadReport | None]:
    """``name`` for ``num_classes`` classes with the tensors of ``weights`` that fit, and what
    was loaded. ``new_head``: the class head starts afresh even where its shapes fit (its rows
    meant other classes). A MobileNet ImageNet file given to the detector fills its backbone."""
    info = model_info(name)
    if num_classes < 1:
        raise InputError(f"num_classes must be at least 1, got {num_classes}")
    if info.task == "detect" and multilabel:
        raise InputError(f"{name} is a detector: multilabel applies to classifiers only")
    size = size or info.default_size
    if weights is None:
        log.info(SCRATCH_NOTE.format(name=name))
        return info.builder(num_classes, size=size, **kw), None
    state = weights.state
    if info.task == "detect" and _imagenet_keys(state):
        # An ImageNet MobileNetV3 file: the builder loads it before renaming the backbone.
        log.info("%s: MobileNetV3 ImageNet weights for the detector backbone", weights.path)
        report = LoadReport(weights.path)
        model = info.builder(num_classes, size=size, backbone_state=state, report=report, **kw)
    else:
        if info.task == "detect" and "reduced_tail" not in kw:
            kw["reduced_tail"] = _best_tail(info, num_classes, size, weights.state)
        model = info.builder(num_classes, size=size, **kw)
        skip = (class_head_prefix(model),) if new_head else ()
        report = load_matching(model, weights.state, weights.path, skip)
    log.info(report.summary())
    return model, report


def class_head_prefix(model: nn.Module) -> str:
    """State-dict prefix of the layers whose outputs are our classes: SSD's classification
    head (all of it, so no row of it keeps another label's meaning), a MobileNet's last Linear."""
    if isinstance(model, SSD):
        return "head.classification_head."
    return f"classifier.{len(model.classifier) - 1}."  # type: ignore[arg-type]


def backbone_of(model: nn.Module) -> nn.Module:
    """The feature extractor transfer learning keeps: ``features`` of a MobileNet or of SSD."""
    if isinstance(model, SSD):
        return model.backbone.features  # type: ignore[return-value]
    return model.features  # type: ignore[return-value]


def freeze_backbone(model: nn.Module) -> None:
    """Train only the head: the first epochs of fine-tuning a pretrained backbone."""
    for param in backbone_of(model).parameters():
        param.requires_grad_(False)


def unfreeze_backbone(model: nn.Module) -> None:
    for param in backbone_of(model).parameters():
        param.requires_grad_(True)


def _replace_last_linear(model: nn.Module, num_classes: int) -> nn.Module:
    """Resize a MobileNet's final Linear; the fresh head is why weights skip it."""
    head = model.classifier  # type: ignore[union-attr]
    last = head[-1]
    head[-1] = nn.Linear(last.in_features, num_classes)
    return model


def _classifier(
    factory: Callable[..., nn.Module],
    num_classes: int,
    *,
    size: int,
    backbone_state: dict | None = None,
    **kw: Any,
) -> nn.Module:
    del size, backbone_state  # any input size works; get_model loads weights after building
    return _replace_last_linear(factory(weights=None, **kw), num_classes)


@register_model("mobilenet_v3_small", "classify", CLASSIFIER_SIZE)
def _mobilenet_v3_small(num_classes: int, **kw: Any) -> nn.Module:
    return _classifier(mobilenet_v3_small, num_classes, **kw)


@register_model("mobilenet_v3_large", "classify", CLASSIFIER_SIZE)
def _mobilenet_v3_large(num_classes: int, **kw: Any) -> nn.Module:
    return _classifier(mobilenet_v3_large, num_classes, **kw)


@register_model("mobilenet_v2", "classify", CLASSIFIER_SIZE)
def _mobilenet_v2(num_classes: int, **kw: Any) -> nn.Module:
    return _classifier(mobilenet_v2, num_classes, **kw)


@register_model("ssdlite320_mobilenet_v3_large", "detect", DETECTOR_SIZE)
def _ssdlite(
    num_classes: int,
    *,
    size: int,
    backbone_state: dict | None = None,
    reduced_tail: bool | None = None,
    report: LoadReport | None = None,
    **kw: Any,
) -> nn.Module:
    """torchvision's SSDLite320 builder, with a chosen fixed net size and a local backbone.

    A MobileNetV3-large ImageNet state dict (keys ``features.*``) is loaded into the backbone
    before torchvision splits it into SSD feature maps, since the split renames every key.
    ``reduced_tail`` (torchvision: only without a pretrained backbone) follows the file. What
    the backbone took goes into ``report`` when one is given.
    """
    norm = partial(nn.BatchNorm2d, eps=SSDLITE_BN_EPS, momentum=SSDLITE_BN_MOMENTUM)
    imagenet = _imagenet_keys(backbone_state)
    if reduced_tail is None:
        reduced_tail = not imagenet or _tail_is_reduced(imagenet, norm)
    backbone = mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=reduced_tail)
    _normal_init(backbone)
    if imagenet:
        found = load_matching(backbone, imagenet, report.path if report else Path("backbone"))
        if report is not None:  # tensors named as in the file (the split renames them)
            report.loaded, report.skipped = found.loaded, found.skipped
        else:
            log.info(found.summary())
    features = _mobilenet_extractor(backbone, 6, norm)  # 6: every stage trainable
    anchors = DefaultBoxGenerator([[2, 3] for _ in range(6)], min_ratio=0.2, max_ratio=0.95)
    out_channels = det_utils.retrieve_out_channels(features, (size, size))
    head = SSDLiteHead(out_channels, anchors.num_anchors_per_location(), num_classes + 1, norm)
    mean, std = SSDLITE_MEAN_STD
    params = {**SSDLITE_POSTPROCESS, **kw}
    model = SSD(features, anchors, (size, size), num_classes + 1, head=head,
                image_mean=mean, image_std=std, **params)  # fmt: skip
    model.reduced_tail = reduced_tail  # type: ignore[assignment]  # goes into config.json
    return model


def _imagenet_keys(state: dict | None) -> dict[str, torch.Tensor]:
    """The MobileNet ``features.*`` tensors of a classifier state dict, else nothing."""
    if not state:
        return {}
    return {k: v for k, v in state.items() if k.startswith("features.")}


def _best_tail(info: ModelInfo, num_classes: int, size: int, state: dict) -> bool:
    """The tail variant of a detector checkpoint: whichever loads more of its tensors."""
    matches = {}
    for reduced in (True, False):
        own = info.builder(num_classes, size=size, reduced_tail=reduced).state_dict()
        matches[reduced] = sum(k in own and own[k].shape == v.shape for k, v in state.items())
    return matches[True] >= matches[False]


def _tail_is_reduced(state: dict[str, torch.Tensor], norm: Callable) -> bool:
    """Which MobileNetV3 tail variant matches more tensors of ``state`` by shape."""
    scores = {}
    for reduced in (False, True):
        own = mobilenet_v3_large(weights=None, norm_layer=norm, reduced_tail=reduced).state_dict()
        scores[reduced] = sum(k in own and own[k].shape == v.shape for k, v in state.items())
    return scores[True] > scores[False]


def load_checkpoint(path: Path | str, device: str = "cpu") -> tuple[nn.Module, RunConfig]:
    """Rebuild a model from one of our checkpoints (``best.pt``, ``epoch_NNN.pt``) in eval mode."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises pickle, zip and runtime errors alike
        raise InputError(f"{path}: not a torch checkpoint: {exc}") from exc
    if not isinstance(ckpt, dict) or "config" not in ckpt or "model" not in ckpt:
        raise InputError(f"{path}: not an edgesight checkpoint: expected keys 'model' and 'config'")
    config = RunConfig.parse(ckpt["config"], f"{path} (its 'config')")
    model = build_from_config(config)
    model.load_state_dict(ckpt["model"])
    return model.to(device).eval(), config


def build_from_config(config: RunConfig) -> nn.Module:
    """An untrained model with the architecture a run's config.json describes."""
    kw: dict[str, Any] = {}
    if config.reduced_tail is not None:
        kw["reduced_tail"] = config.reduced_tail
    info = model_info(config.model)
    return info.builder(len(config.labels), size=config.size_px, **kw)
