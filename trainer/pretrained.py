"""Named starting weights, ``--weights imagenet|coco``, through torchvision's weights API and
torch's hub cache; a local file keeps working.

Why torchvision's own files: their URL, file name (which carries the sha256 prefix torch checks)
and cache folder (``torch.hub.get_dir()/checkpoints``, i.e. ``$TORCH_HOME/hub/checkpoints``) are
the ones every torchvision user already has, so a file fetched once, by any tool or by hand,
serves every later run. An edge project must not reach the network on its own: downloading
happens only with ``--download-weights`` or ``EDGESIGHT_ALLOW_DOWNLOAD=1``; otherwise a file
missing from the cache is an error naming the file, the folder and the URL.

What each name keeps: ``imagenet`` — a classifier's whole net but its last Linear, the
detector's MobileNetV3-large backbone (torchvision's ``weights_backbone``); ``coco`` — the whole
SSDLite320 COCO detector (backbone, extra layers, box regression head) but its classification
head. The class head always starts afresh for our labels.
"""

from __future__ import annotations

import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn
from torchvision.models import (
    MobileNet_V2_Weights,
    MobileNet_V3_Large_Weights,
    MobileNet_V3_Small_Weights,
    WeightsEnum,
)
from torchvision.models.detection import SSDLite320_MobileNet_V3_Large_Weights

from trainer.errors import InputError
from trainer.models import build_model, list_models, model_info
from trainer.run_config import StartWeights
from trainer.state_dicts import NEW_HEAD, LoadReport, read_weights

log = logging.getLogger(__name__)

NAMES = ("imagenet", "coco")
ALLOW_ENV = "EDGESIGHT_ALLOW_DOWNLOAD"
#: torchvision's weights per model and name. Classifiers: torchvision's DEFAULT; the detector's
#: backbone: the one torchvision's SSDLite builder names as its ``weights_backbone``.
TORCHVISION: dict[str, dict[str, WeightsEnum]] = {
    "imagenet": {
        "mobilenet_v3_small": MobileNet_V3_Small_Weights.DEFAULT,
        "mobilenet_v3_large": MobileNet_V3_Large_Weights.DEFAULT,
        "mobilenet_v2": MobileNet_V2_Weights.DEFAULT,
        "ssdlite320_mobilenet_v3_large": MobileNet_V3_Large_Weights.IMAGENET1K_V1,
    },
    "coco": {"ssdlite320_mobilenet_v3_large": SSDLite320_MobileNet_V3_Large_Weights.COCO_V1},
}
#: How much of a file a model keeps, for the log and the error messages.
KEEPS = {
    ("imagenet", "classify"): "all but the last Linear",
    ("imagenet", "detect"): "the MobileNetV3-large backbone",
    ("coco", "detect"): "all but the classification head",
}


@dataclass(frozen=True)
class Named:
    """One torchvision weights file and what of it a model keeps."""

    name: str
    weights: WeightsEnum
    keeps: str

    @property
    def url(self) -> str:
        return str(self.weights.url)

    @property
    def file_name(self) -> str:
        """torch's cache name: the URL's last part (its ``-xxxxxxxx`` is a sha256 prefix)."""
        return os.path.basename(urlparse(self.url).path)

    @property
    def id(self) -> str:
        return f"{type(self.weights).__name__}.{self.weights.name}"


def cache_dir() -> Path:
    """Where torch keeps downloaded weights: ``$TORCH_HOME/hub/checkpoints``."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def download_allowed(flag: bool = False) -> bool:
    """``--download-weights``, or ``EDGESIGHT_ALLOW_DOWNLOAD`` set to 1 / true / yes."""
    return flag or os.environ.get(ALLOW_ENV, "").strip().lower() in ("1", "true", "yes")


def is_name(weights: str | Path | None) -> bool:
    """A name, not a path: a file called ``coco`` is given as ``./coco``."""
    return isinstance(weights, str) and weights in NAMES


def as_recorded(weights: str | Path | None) -> str | None:
    """config.json's ``weights``: a name as is, a file absolute (so Path("./coco") stays a file)."""
    if weights is None or is_name(weights):
        return None if weights is None else str(weights)
    return str(Path(weights).resolve())


def named_weights(name: str, model_name: str) -> Named:
    """The torchvision weights ``name`` means for ``model_name``; InputError if there are none."""
    task = model_info(model_name).task
    found = TORCHVISION.get(name, {}).get(model_name)
    if name == "coco" and task == "classify":
        raise InputError(f"--weights coco: {model_name} is a classifier and COCO weights exist for "
                         f"the detector only ({', '.join(list_models('detect'))}); "
                         "use --weights imagenet for a classifier")  # fmt: skip
    if found is None:
        raise InputError(f"--weights {name}: no torchvision weights known for {model_name}; "
                         f"expected one of {sorted(TORCHVISION.get(name, {}))}")  # fmt: skip
    return Named(name, found, KEEPS[(name, task)])


def locate(named: Named, allow_download: bool = False) -> Path:
    """The cached file, downloading it (hash checked) only when allowed: ``allow_download`` or
    EDGESIGHT_ALLOW_DOWNLOAD (the user's standing opt-in)."""
    folder = cache_dir()
    path = folder / named.file_name
    if path.is_file():
        return path
    fetch = (f"fetch {named.url} and copy {named.file_name} into {folder} (that folder is "
             "$TORCH_HOME/hub/checkpoints)")  # fmt: skip
    if not download_allowed(allow_download):
        raise InputError(f"--weights {named.name}: {named.file_name} is not in {folder} and "
                         f"downloading is off: {fetch}, or let edge-trainer download it "
                         f"(--download-weights or {ALLOW_ENV}=1)")  # fmt: skip
    log.info("downloading %s (%s) into %s", named.url, named.id, folder)
    try:
        torch.hub.load_state_dict_from_url(
            named.url, model_dir=str(folder), map_location="cpu", progress=sys.stderr.isatty(),
            check_hash=True, file_name=named.file_name, weights_only=True,
        )  # fmt: skip
    except Exception as exc:  # urllib, socket, hash and disk errors: all mean "no file"
        raise InputError(
            f"--weights {named.name}: downloading {named.url} failed ({exc}); "
            f"without internet here, {fetch}"
        ) from exc
    return path


def resolve(weights: str | Path, model_name: str, allow_download: bool = False) -> Path:
    """The local file ``weights`` stands for; checks a name against the model first."""
    if is_name(weights):
        return locate(named_weights(str(weights), model_name), allow_download)
    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path} (or a name: {', '.join(NAMES)})")
    return path


def start_model(
    model_name: str,
    labels: list[str],
    weights: str | Path | None,
    *,
    multilabel: bool = False,
    size: int | None = None,
    allow_download: bool = False,
) -> tuple[nn.Module, StartWeights | None]:
    """The model a run starts from, and what its weights file gave it (None: from scratch).

    The class head starts afresh for named weights and for our checkpoints of other labels (its
    rows meant other classes); a checkpoint of the same labels keeps it (more data, same task).
    """
    if weights is None:
        model, _ = build_model(model_name, len(labels), None, multilabel=multilabel, size=size)
        return model, None
    named = named_weights(str(weights), model_name) if is_name(weights) else None
    path = locate(named, allow_download) if named else resolve(weights, model_name)
    wf = read_weights(path)
    new_head = named is not None or (wf.labels is not None and wf.labels != labels)
    model, report = build_model(model_name, len(labels), wf, new_head=new_head,
                                multilabel=multilabel, size=size)  # fmt: skip
    assert report is not None  # a file was given
    _check_fit(report, named, model_name)
    if named:
        log.info("%s weights %s: kept %s", named.name, named.id, named.keeps)
    return model, StartWeights(
        source=named.name if named else "file",
        file=str(path.resolve()),
        torchvision=named.id if named else None,
        url=named.url if named else None,
        loaded=len(report.loaded),
        reinitialised=sum(why == NEW_HEAD for why in report.skipped.values()),
        skipped=sum(why != NEW_HEAD for why in report.skipped.values()),
    )


def _check_fit(report: LoadReport, named: Named | None, model_name: str) -> None:
    """Named weights must fit entirely (but the head); a file must give the model something."""
    misfits = {k: why for k, why in report.skipped.items() if why != NEW_HEAD}
    shown = "; ".join(f"{k} ({why})" for k, why in list(misfits.items())[:4])
    if named and misfits:
        raise InputError(f"{report.path}: not torchvision's {named.id} file for {model_name}: "
                         f"{len(misfits)} tensors do not fit, e.g. {shown}; delete it and fetch "
                         f"{named.url} again")  # fmt: skip
    if not report.loaded:
        raise InputError(f"{report.path}: none of its tensors fit {model_name}"
                         + (f", e.g. {shown}" if shown else "")
                         + "; is it a weights file for this model?")  # fmt: skip
