"""A run folder's ``config.json`` as one typed model: everything to rebuild and export the model.

Why a model and not a dict: train, evaluate, export and the bundle writer all read it, and a
typo'd key in a dict read is a KeyError far from its cause. Files keep the keys trainers have
always written (``size``, ``input.width``), so older run folders load; attribute names carry the
unit (``size_px``). An unknown or mistyped key in a saved file is a :class:`RunConfigError`
naming the file and the key.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from edge_agent.config.errors import validation_issues
from trainer.errors import InputError

RUN_SCHEMA = "edgesight.run/1"
CONFIG_FILE = "config.json"
#: Metrics that can pick best.pt (trainer.evaluate.SELECTION_METRIC's values).
Metric = Literal["accuracy", "mAP", "mAP50"]

# Files use the keys trainers have always written; attributes may be named otherwise (units).
_MODEL_CONFIG = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


class RunConfigError(InputError):
    """A saved run config cannot be used; the message names the file and every bad key."""


class InputSpec(BaseModel):
    """What the network was trained on; bundle_writer.input_spec turns it into the manifest's."""

    model_config = _MODEL_CONFIG

    width_px: int = Field(alias="width", gt=0, description="Network input width, pixels.")
    height_px: int = Field(alias="height", gt=0, description="Network input height, pixels.")
    layout: Literal["NCHW", "NHWC"] = Field("NCHW", description="Tensor layout during training.")
    color: Literal["RGB", "BGR"] = Field("RGB", description="Channel order the model expects.")
    resize: Literal["stretch", "letterbox"] = Field(
        "stretch", description="How an image reaches the input size (stretch: no aspect kept)."
    )
    mean: tuple[float, float, float] = Field(description="Per-channel mean, after scale.")
    std: tuple[float, float, float] = Field(description="Per-channel std, after scale.")
    scale: str | float = Field(
        "1/255", description="Pixel factor before mean/std: a number or a fraction like '1/255'."
    )

    @field_validator("scale")
    @classmethod
    def _scale_parses(cls, value: str | float) -> str | float:
        if isinstance(value, str):
            try:
                Fraction(value.strip())
            except (ValueError, ZeroDivisionError) as exc:
                raise ValueError(
                    f"expected a number or a fraction like '1/255', got {value!r}"
                ) from exc
        return value


class SplitSizes(BaseModel):
    """Images in each split of the last (re)start."""

    model_config = _MODEL_CONFIG

    train: int = Field(ge=0, description="Training images.")
    val: int = Field(ge=0, description="Validation images (they pick best.pt).")


class StartWeights(BaseModel):
    """What the run's model started from (trainer.pretrained), for reports and bundles."""

    model_config = _MODEL_CONFIG

    source: Literal["imagenet", "coco", "file"] = Field(
        description="A named torchvision file (imagenet, coco) or a local file."
    )
    file: str = Field(description="The weights file loaded, absolute.")
    torchvision: str | None = Field(
        None, description="torchvision's weights id, e.g. MobileNet_V3_Large_Weights.IMAGENET1K_V1."
    )
    url: str | None = Field(None, description="Where torchvision publishes that file.")
    loaded: int = Field(ge=0, description="Tensors copied from the file.")
    reinitialised: int = Field(
        ge=0, description="Class-head tensors of the file left out: the head starts afresh."
    )
    skipped: int = Field(ge=0, description="Other tensors of the file that did not fit.")


class RunConfig(BaseModel):
    """One training run's settings and outcome, as saved in ``RUN/config.json`` and in every
    checkpoint. Fields set only once training runs are None before that."""

    model_config = _MODEL_CONFIG

    schema_: Literal["edgesight.run/1"] = Field(
        RUN_SCHEMA, alias="schema", description="Format of this file."
    )
    task: Literal["classify", "detect"] = Field(description="What the model does.")
    model: str = Field(description="Registered model name (trainer.models.list_models).")
    labels: list[str] = Field(
        min_length=1, description="Class names in output order (a detector's background excluded)."
    )
    multilabel: bool = Field(description="Classifier with independent sigmoid outputs.")
    size_px: int = Field(alias="size", gt=0, description="Square input side, pixels.")
    data: str = Field(description="Dataset folder or file trained on, absolute.")
    batch_size: int = Field(gt=0, description="Images per training step.")
    lr: float = Field(gt=0, description="Peak AdamW learning rate (after warm-up, then cosine).")
    optimizer: Literal["AdamW"] = Field("AdamW", description="Optimizer name.")
    weight_decay: float = Field(ge=0, description="AdamW weight decay.")
    metric: Metric = Field(description="Validation metric that picks best.pt.")
    input: InputSpec = Field(description="Preprocessing the model was trained with.")
    background_class: int | None = Field(
        None, description="Output index of the detector's background class; None for classifiers."
    )
    trainer_version: str = Field(description="edgesight trainer version that made the run.")
    torch: str = Field(description="torch version that made the run.")
    created: str = Field(description="When the run started, ISO 8601 UTC.")
    preset: str = Field("default", description="Augmentation preset (trainer.presets).")
    seed: int = Field(0, description="Seeds the split, data order and augmentation.")
    weights: str | None = Field(
        None, description="--weights as given: imagenet, coco or a local .pt; None: scratch."
    )
    start_weights: StartWeights | None = Field(
        None, description="What the weights gave the model (set when training starts)."
    )
    val_fraction: float = Field(
        0.2, gt=0, lt=1, description="Validation share when the dataset has no val split."
    )
    freeze_epochs: int = Field(0, ge=0, description="Head-only epochs when starting from weights.")
    val_source: Literal["dataset", "seeded split"] | None = Field(
        None, description="Where the validation images came from."
    )
    split: SplitSizes | None = Field(None, description="Images per split.")
    epochs: int | None = Field(
        None, gt=0, description="Total epochs asked for (the last --epochs)."
    )
    reduced_tail: bool | None = Field(
        None, description="MobileNetV3 tail variant of a detector backbone; None for classifiers."
    )
    best_epoch: int | None = Field(None, ge=0, description="Epoch of best.pt; set at the end.")
    best_metric: float | None = Field(None, description="``metric`` of best.pt on validation.")
    epochs_run: int | None = Field(None, ge=0, description="Epochs finished when training ended.")

    def updated(self, **changes: Any) -> RunConfig:
        """A validated copy with ``changes`` (field names) applied; the model is frozen."""
        return type(self).model_validate({**self.model_dump(), **changes})

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types under the file's keys (checkpoints hold this too: torch's
        ``weights_only`` loading accepts nothing else)."""
        return self.model_dump(mode="json", by_alias=True)

    def write(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")

    @classmethod
    def read(cls, path: Path) -> RunConfig:
        """Load a saved config.json, or raise RunConfigError naming the file and the key."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except json.JSONDecodeError as exc:
            raise RunConfigError(f"{path}: not valid JSON: {exc}") from exc
        return cls.parse(data, str(path))

    @classmethod
    def parse(cls, data: Any, where: str) -> RunConfig:
        """Validate a config dict read from ``where`` (a file, or a checkpoint's 'config')."""
        if not isinstance(data, dict):
            raise RunConfigError(f"{where}: expected a JSON object, got {type(data).__name__}")
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            problems = [str(issue) for issue in validation_issues(exc, model=cls)]
            raise RunConfigError(f"{where}: " + "; ".join(problems)) from exc
