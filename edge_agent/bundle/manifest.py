"""The bundle manifest schema (``edgesight.bundle/1``) as pydantic models.

Decoder settings are a union discriminated by ``type`` so each decoder validates exactly the
fields it reads; an unknown decoder type lists the valid ones.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

SCHEMA = "edgesight.bundle/1"
#: ``requires_agent``: comma-separated constraints on dotted versions, as ">=0.9" or ">=0.9,<2".
REQUIRES_AGENT_PATTERN = r"^\s*(>=|<|==)\s*\d+(\.\d+)*\s*(,\s*(>=|<|==)\s*\d+(\.\d+)*\s*)*$"
#: The manifest's file name inside a bundle.
MANIFEST = "manifest.json"


class _Strict(BaseModel):
    """Unknown keys are errors at every level (the loader suggests the nearest known key)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ModelFile(_Strict):
    file: str = Field(min_length=1)
    format: Literal["onnx", "tflite"]
    precision: Literal["fp32", "fp16", "int8", "uint8"] = "fp32"


class InputSpec(_Strict):
    name: str | None = None  # None: the model's only input
    width: int = Field(gt=0)
    height: int = Field(gt=0)
    layout: Literal["NCHW", "NHWC"] = "NCHW"
    dtype: Literal["float32", "uint8", "int8"] = "float32"
    color: Literal["RGB", "BGR"] = "RGB"
    # tensor = (pixel * scale - mean) / std, per channel in `color` order; float inputs only.
    scale: float = 1.0 / 255.0
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (1.0, 1.0, 1.0)
    # stretch: no aspect kept; letterbox: fit inside, pad; crop: cover, then the centre crop
    # (torchvision's Resize + CenterCrop, timm's eval transform).
    resize: Literal["stretch", "letterbox", "crop"] = "stretch"
    pad_value: int = Field(114, ge=0, le=255)  # letterbox border, the YOLO/Ultralytics grey
    # crop only: the share of the resized frame the crop keeps per side; torchvision's
    # Resize(256) + CenterCrop(224) is 224 / 256 = 0.875 (timm calls it crop_pct).
    crop_fraction: float = Field(1.0, gt=0, le=1)

    @model_validator(mode="after")
    def _consistent(self) -> InputSpec:
        if any(s == 0 for s in self.std):
            raise ValueError(f"std must not contain 0, got {list(self.std)}")
        if self.crop_fraction != 1.0 and self.resize != "crop":
            raise ValueError(
                f"crop_fraction applies to resize 'crop' only, got resize {self.resize!r}"
            )
        return self


class SoftmaxDecoder(_Strict):
    type: Literal["softmax"]
    output: str | None = None  # None: the model's only output
    from_logits: bool = True  # False when the graph already ends in softmax (Custom Vision)


class SigmoidDecoder(_Strict):
    type: Literal["sigmoid"]
    output: str | None = None
    from_logits: bool = True


class SsdBoxesOutputs(_Strict):
    boxes: str
    scores: str


class SsdBoxesDecoder(_Strict):
    """The graph already decodes boxes; the agent thresholds and runs class-wise NMS."""

    type: Literal["ssd_boxes"]
    outputs: SsdBoxesOutputs
    box_format: Literal["xyxy", "yxyx", "xywh", "cxcywh"] = "xyxy"
    normalized: bool = True  # boxes in [0, 1] of the input tensor, else input pixels
    score_activation: Literal["none", "sigmoid", "softmax"] = "none"
    background_class: int | None = None  # score column to drop (not a label)


class AnchorGenerator(_Strict):
    """Parameters of the TF Object Detection API's SSD anchor generator (create_ssd_anchors)."""

    num_layers: int = Field(6, ge=1)
    min_scale: float = Field(0.2, gt=0)
    max_scale: float = Field(0.95, gt=0)
    scales: list[float] | None = None  # explicit per-layer scales instead of min/max
    aspect_ratios: list[float] = Field(default_factory=lambda: [1.0, 2.0, 0.5, 3.0, 1.0 / 3])
    interpolated_scale_aspect_ratio: float = 1.0  # 0 disables the extra box per cell
    reduce_boxes_in_lowest_layer: bool = True
    base_anchor_size: tuple[float, float] = (1.0, 1.0)  # height, width
    feature_map_sizes: list[tuple[int, int]] | None = None  # (rows, cols) per layer
    feature_map_strides: list[int] | None = None  # or strides in input pixels per layer
    anchor_offset: float = 0.5  # cell centre, in cells

    @model_validator(mode="after")
    def _one_map_spec(self) -> AnchorGenerator:
        maps = self.feature_map_sizes or self.feature_map_strides
        if not maps:
            raise ValueError("give feature_map_sizes or feature_map_strides")
        if len(maps) != self.num_layers:
            raise ValueError(f"num_layers is {self.num_layers} but {len(maps)} feature maps given")
        if self.scales is not None and len(self.scales) != self.num_layers:
            raise ValueError(f"scales needs {self.num_layers} values, got {len(self.scales)}")
        return self


class BoxCoder(_Strict):
    """How box encodings relate to anchors (Faster R-CNN coder, as SSD uses it)."""

    order: Literal["xywh", "yxhw"] = "xywh"  # torchvision: dx, dy, dw, dh; TF: ty, tx, th, tw
    weights: tuple[float, float, float, float] = (10.0, 10.0, 5.0, 5.0)  # in `order`


class SsdAnchorsDecoder(_Strict):
    """Raw SSD head outputs (box encodings + class scores) decoded against anchors."""

    type: Literal["ssd_anchors"]
    outputs: SsdBoxesOutputs
    anchors_file: str | None = None  # .npy (N, 4), listed in files
    anchors_format: Literal["xyxy", "yxyx", "cxcywh"] = "xyxy"
    anchors_normalized: bool = True  # False: input pixels
    anchor_generator: AnchorGenerator | None = None
    box_coder: BoxCoder = Field(default_factory=BoxCoder)
    score_activation: Literal["softmax", "sigmoid", "none"] = "softmax"
    background_class: int | None = 0

    @model_validator(mode="after")
    def _one_anchor_source(self) -> SsdAnchorsDecoder:
        if (self.anchors_file is None) == (self.anchor_generator is None):
            raise ValueError("give exactly one of anchors_file and anchor_generator")
        return self


class TflitePostprocessOutputs(_Strict):
    boxes: str
    classes: str
    scores: str
    count: str


class TflitePostprocessDecoder(_Strict):
    """The four outputs of TFLite's TFLite_Detection_PostProcess op (boxes yxyx normalised)."""

    type: Literal["tflite_detection_postprocess"]
    outputs: TflitePostprocessOutputs
    class_offset: int = 0  # added to the op's class index to index `labels`


class DetectionsOutputs(_Strict):
    boxes: str
    classes: str
    scores: str
    count: str | None = None


class DetectionsDecoder(_Strict):
    """Outputs already decoded and suppressed in the graph (Custom Vision S1 exports:
    detected_boxes, detected_classes, detected_scores)."""

    type: Literal["detections"]
    outputs: DetectionsOutputs
    box_format: Literal["xyxy", "yxyx", "xywh", "cxcywh"] = "xyxy"
    normalized: bool = True
    class_offset: int = 0


#: Anchors (width, height in grid cells) of Azure Custom Vision's compact detector exports.
CUSTOM_VISION_ANCHORS = [(0.573, 0.677), (1.87, 2.06), (3.34, 5.47), (7.88, 3.53), (9.77, 9.17)]


class YoloRegionsDecoder(_Strict):
    """A YOLOv2 region grid (1, A * (5 + C), H, W): Azure Custom Vision compact ONNX exports."""

    type: Literal["yolo_regions"]
    output: str | None = None
    anchors: list[tuple[float, float]] = Field(default_factory=lambda: CUSTOM_VISION_ANCHORS)
    # Custom Vision's graphs apply the sigmoid to x, y themselves (see Azure-Samples/
    # customvision-export-samples, onnx/object_detection/predict.py); darknet exports do not.
    xy_activation: Literal["none", "sigmoid"] = "none"


Decoder = Annotated[
    SoftmaxDecoder
    | SigmoidDecoder
    | SsdBoxesDecoder
    | SsdAnchorsDecoder
    | TflitePostprocessDecoder
    | DetectionsDecoder
    | YoloRegionsDecoder,
    Field(discriminator="type"),
]


class Thresholds(_Strict):
    score: float = Field(0.5, ge=0, le=1)
    per_class: dict[str, float] = Field(default_factory=dict)
    nms_iou: float = Field(0.45, gt=0, le=1)
    max_detections: int = Field(100, ge=1)


class Manifest(_Strict):
    """Top level of manifest.json. Unknown keys are refused here as everywhere in the manifest:
    a misspelt ``treshold`` kept as an extra would silently run with the default thresholds."""

    schema_: Literal["edgesight.bundle/1"] = Field(alias="schema")
    name: str = Field(min_length=1)
    version: int = Field(ge=0)
    task: Literal["classify", "detect"]
    multilabel: bool = False
    labels: list[str] = Field(min_length=1)
    model: ModelFile
    input: InputSpec
    decoder: Decoder
    thresholds: Thresholds = Field(default_factory=Thresholds)
    metrics: dict[str, Any] = Field(default_factory=dict)
    files: dict[str, str]
    created: str | None = None
    trainer: dict[str, Any] | None = None
    # Checked by remote updates (edge_agent/updates/verify.py) before a bundle is tried.
    requires_agent: str | None = Field(None, pattern=REQUIRES_AGENT_PATTERN)

    @model_validator(mode="after")
    def _consistent(self) -> Manifest:
        classify = self.decoder.type in ("softmax", "sigmoid")
        if classify != (self.task == "classify"):
            raise ValueError(f"decoder {self.decoder.type!r} does not fit task {self.task!r}")
        if self.decoder.type == "sigmoid" and not self.multilabel:
            raise ValueError("decoder 'sigmoid' needs multilabel: true")
        dupes = sorted({label for label in self.labels if self.labels.count(label) > 1})
        if dupes:
            raise ValueError(f"labels must be unique, but {dupes} appear more than once")
        unknown = sorted(set(self.thresholds.per_class) - set(self.labels))
        if unknown:
            raise ValueError(f"thresholds.per_class names labels not in labels: {unknown}")
        anchors = getattr(self.decoder, "anchors_file", None)
        for needed in filter(None, [self.model.file, anchors]):
            if needed not in self.files:
                raise ValueError(f"files must list {needed!r} with its sha256")
        return self

    def class_thresholds(self, override: float | None = None) -> list[float]:
        """Score threshold per class index: per_class wins, then the override, then score."""
        base = self.thresholds.score if override is None else override
        return [self.thresholds.per_class.get(label, base) for label in self.labels]
