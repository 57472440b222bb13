"""Dataset formats in and out of one sample type: COCO, VOC, YOLO, class folders, multilabel CSV.

``load(path)`` detects the format, parses it and validates it (every problem listed in one
DatasetError); ``save(dataset, out, fmt)`` writes any format of the same task.
"""

from trainer.datasets.core import (
    BOX_SLACK_PX,
    Box,
    Dataset,
    DatasetError,
    Sample,
    clip_boxes,
    split,
    validate,
)
from trainer.datasets.files import IMAGE_MODES, ImageMode
from trainer.datasets.multilabel import from_boxes
from trainer.datasets.registry import (
    FORMATS,
    conversion_problem,
    detect_format,
    load,
    save,
)

__all__ = [
    "BOX_SLACK_PX",
    "FORMATS",
    "IMAGE_MODES",
    "Box",
    "Dataset",
    "DatasetError",
    "ImageMode",
    "Sample",
    "clip_boxes",
    "conversion_problem",
    "detect_format",
    "from_boxes",
    "load",
    "save",
    "split",
    "validate",
]
