"""Format names, which task each holds, format detection, and ``load``/``save`` dispatch.

Detection formats hold boxes, classification formats hold image labels. Boxes become image labels
only as multilabel (an image may hold several classes; ``multilabel.from_boxes``); every other
crossing would invent or drop information, so ``conversion_problem`` refuses it and says why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from trainer.datasets import coco, folder, multilabel, voc, yolo
from trainer.datasets.core import BOX_SLACK_PX, Dataset, DatasetError, Task
from trainer.datasets.files import ImageMode


@dataclass(frozen=True)
class Format:
    name: str
    task: Task
    load: Callable[..., Dataset]  # (path) for classification, (path, slack_px) for detection
    save: Callable[[Dataset, Path, ImageMode], None]
    summary: str


FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        Format("coco", "detect", coco.load, coco.save, "COCO instances JSON"),
        Format("voc", "detect", voc.load, voc.save, "Pascal VOC XML"),
        Format("yolo", "detect", yolo.load, yolo.save, "YOLO txt + data.yaml"),
        Format("folders", "classify", folder.load, folder.save, "one folder per class"),
        Format("multilabel", "classify", multilabel.load, multilabel.save, "CSV path,labels"),
    )
}


def get_format(name: str) -> Format:
    if name not in FORMATS:
        raise DatasetError(f"unknown format {name!r}: expected one of {sorted(FORMATS)}")
    return FORMATS[name]


def detect_format(path: Path) -> str:
    """Guess the format of the dataset at ``path`` from its files and folders."""
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    if path.is_file():
        by_suffix = {".json": "coco", ".csv": "multilabel", ".yaml": "yolo", ".yml": "yolo"}
        if path.suffix.lower() in by_suffix:
            return by_suffix[path.suffix.lower()]
    elif (path / "Annotations").is_dir():
        return "voc"
    elif yolo.find_yaml(path) is not None or (
        (path / "images").is_dir() and (path / "labels").is_dir()
    ):
        return "yolo"
    elif coco.find_json(path):
        return "coco"
    elif multilabel.find_csv(path):
        return "multilabel"
    elif any(p.is_dir() and not p.name.startswith(".") for p in path.iterdir()):
        return "folders"
    raise DatasetError(
        f"{path}: cannot tell the dataset format: expected Annotations/ (voc), data.yaml or "
        "images/+labels/ (yolo), annotations/*.json (coco), a .csv (multilabel) or class "
        "folders; pass the format explicitly"
    )


def load(path: Path | str, fmt: str | None = None, slack_px: float = BOX_SLACK_PX) -> Dataset:
    """Load and validate a dataset; ``fmt`` None detects it. Raises DatasetError.

    ``slack_px``: how far a box may leave the image (detection formats; see ``core.check``).
    """
    path = Path(path)
    name = fmt or detect_format(path)
    if not path.exists():
        raise DatasetError(f"{path}: no such file or folder")
    source = get_format(name)
    return source.load(path, slack_px) if source.task == "detect" else source.load(path)


def save(dataset: Dataset, out: Path | str, fmt: str, images: ImageMode = "copy") -> None:
    """Write ``dataset`` to a new folder ``out`` in format ``fmt``; images copied or linked."""
    target = get_format(fmt)
    problem = task_problem(dataset, fmt)
    if problem:
        raise DatasetError(problem)
    target.save(dataset, Path(out), images)


def conversion_problem(src: str, dst: str) -> str | None:
    """Why ``src`` cannot become ``dst`` (None when it can, at least for some datasets)."""
    a, b = get_format(src), get_format(dst)
    if a.task == b.task or (a.task == "detect" and dst == "multilabel"):
        return None
    if a.task == "detect":
        return (
            f"cannot convert {src} to {dst}: {src} holds boxes (detection), {dst} holds one "
            "label per image, and an image with boxes of several classes has no single label "
            "(every box would be dropped too). Detection converts to coco, voc, yolo, or to "
            "multilabel (an image's labels are the classes of its boxes)."
        )
    return (
        f"cannot convert {src} to {dst}: {src} holds image labels (classification) and {dst} "
        "needs boxes, which labels cannot give. Classification converts to folders or multilabel."
    )


def task_problem(dataset: Dataset, fmt: str) -> str | None:
    target = get_format(fmt)
    if dataset.task == target.task:
        return None
    return (
        f"cannot save a {dataset.task} dataset as {fmt}: {fmt} holds {target.task} data "
        f"({target.summary})"
    )
