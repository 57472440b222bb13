"""Pascal VOC: one XML per image in ``Annotations/``, images in ``JPEGImages/``.

Splits are the stem lists ``ImageSets/Main/<split>.txt``; when they exist, only listed images
belong to the dataset (that is what VOC means by them), and ``trainval.txt`` is skipped when
``train.txt`` and ``val.txt`` are there. Without them every XML is loaded, unsplit.
VOC pixel coordinates are 1-based and inclusive; like Detectron2 we read ``(xmin - 1, ymin - 1,
xmax, ymax)`` as xyxy and write the inverse, rounded to whole pixels (VOC stores integers).
``classes.txt`` (one name a line) fixes the class order; without it classes are sorted names.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from trainer.datasets.core import (
    BOX_SLACK_PX,
    Box,
    Dataset,
    DatasetError,
    Sample,
    check,
    normalise_split,
)
from trainer.datasets.files import (
    ImageMode,
    UniqueNames,
    place_image,
    prepare_output,
    read_class_list,
    write_class_list,
)

CLASSES_FILE = "classes.txt"


def _split_files(root: Path) -> dict[str, Path]:
    main = root / "ImageSets" / "Main"
    files = {p.stem: p for p in sorted(main.glob("*.txt")) if "_" not in p.stem}  # not cat_train
    if "train" in files and "val" in files:
        files.pop("trainval", None)
    return files


def load(path: Path, slack_px: float = BOX_SLACK_PX) -> Dataset:
    """Load a VOC folder; raise DatasetError listing all problems.

    ``slack_px``: how far a box may leave the image (see ``core.check``).
    """
    root = path
    ann_dir = root / "Annotations"
    if not ann_dir.is_dir():
        raise DatasetError(f"{root}: no Annotations/ folder: expected a Pascal VOC layout")
    problems: list[str] = []
    entries: list[tuple[str, Path, str]] = []  # (split, xml path, where)
    split_files = _split_files(root)
    listed: dict[str, str] = {}
    for raw_split, list_file in split_files.items():
        split = normalise_split(raw_split)
        for line_no, line in enumerate(list_file.read_text(encoding="utf-8").splitlines(), 1):
            stem = line.split()[0] if line.split() else ""
            if not stem:
                continue
            where = f"ImageSets/Main/{list_file.name} line {line_no}"
            if stem in listed:
                problems.append(f"{where}: duplicate id {stem!r}: already listed at {listed[stem]}")
                continue
            listed[stem] = where
            entries.append((split, ann_dir / f"{stem}.xml", where))
    if not split_files:
        entries = [("", xml_path, "") for xml_path in sorted(ann_dir.glob("*.xml"))]
    declared = {normalise_split(s): f"ImageSets/Main/{p.name}" for s, p in split_files.items()}
    fixed = read_class_list(root / CLASSES_FILE)
    samples = [
        s
        for split, xml_path, where in entries
        if (s := _read_xml(root, xml_path, split, where, problems)) is not None
    ]
    names = {b.label for s in samples for b in s.boxes}
    classes = fixed if fixed is not None else sorted(names)
    return check(Dataset("detect", classes, samples, splits=declared), problems, slack_px)


def _read_xml(
    root: Path, xml_path: Path, split: str, where: str, problems: list[str]
) -> Sample | None:
    name = f"Annotations/{xml_path.name}"
    if not xml_path.is_file():
        problems.append(f"{where}: missing annotation file: expected {name}")
        return None
    try:
        tree = ET.parse(xml_path)  # expat >= 2.4.1 refuses entity-expansion bombs
    except (ET.ParseError, OSError) as exc:
        problems.append(f"{name}: not readable as XML: {exc}")
        return None
    node = tree.getroot()
    filename = (node.findtext("filename") or "").strip() or f"{xml_path.stem}.jpg"
    width = _int_text(node, "size/width")
    height = _int_text(node, "size/height")
    if width is None or height is None:
        problems.append(f"{name}: expected <size><width> and <height> as whole numbers")
        width = height = 0
    sample = Sample(root / "JPEGImages" / filename, width, height, split=split, origin=name)
    for i, obj in enumerate(node.findall("object"), 1):
        obj_where = f"{name} object {i}"
        label = (obj.findtext("name") or "").strip()
        coords = [_float_text(obj, f"bndbox/{k}") for k in ("xmin", "ymin", "xmax", "ymax")]
        if not label or any(c is None for c in coords):
            problems.append(f"{obj_where}: expected <name> and <bndbox> xmin ymin xmax ymax")
            continue
        xmin, ymin, xmax, ymax = (float(c) for c in coords if c is not None)
        difficult = (obj.findtext("difficult") or "0").strip() == "1"
        sample.boxes.append(Box((xmin - 1, ymin - 1, xmax, ymax), label, difficult, obj_where))
    return sample


def _int_text(node: ET.Element, path: str) -> int | None:
    value = _float_text(node, path)
    return int(value) if value is not None and value == int(value) else None


def _float_text(node: ET.Element, path: str) -> float | None:
    try:
        return float((node.findtext(path) or "").strip())
    except ValueError:
        return None


def save(dataset: Dataset, out: Path, images: ImageMode = "copy") -> None:
    """Write ``dataset`` as VOC; image stems are made unique across the whole dataset."""
    if dataset.task != "detect":
        raise DatasetError(f"voc holds detection boxes; this dataset's task is {dataset.task}")
    prepare_output(out)
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (out / sub).mkdir(parents=True)
    write_class_list(out / CLASSES_FILE, dataset.classes)
    names = UniqueNames()
    stems = UniqueNames()  # a.jpg and a.png would both want Annotations/a.xml
    for split, members in dataset.by_split().items():
        ids: list[str] = []
        for sample in members:
            stem = stems.claim(sample.image_path.stem)
            file_name = names.claim(stem + sample.image_path.suffix)
            place_image(sample.image_path, out / "JPEGImages" / file_name, images)
            (out / "Annotations" / f"{stem}.xml").write_text(
                _to_xml(sample, file_name), encoding="utf-8"
            )
            ids.append(stem)
        if split:
            (out / "ImageSets" / "Main" / f"{split}.txt").write_text(
                "".join(f"{i}\n" for i in ids), encoding="utf-8"
            )


def _to_xml(sample: Sample, file_name: str) -> str:
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = "JPEGImages"
    ET.SubElement(root, "filename").text = file_name
    size = ET.SubElement(root, "size")
    for key, value in (("width", sample.width), ("height", sample.height), ("depth", 3)):
        ET.SubElement(size, key).text = str(value)
    ET.SubElement(root, "segmented").text = "0"
    for box in sample.boxes:
        obj = ET.SubElement(root, "object")
        ET.SubElement(obj, "name").text = box.label
        ET.SubElement(obj, "pose").text = "Unspecified"
        ET.SubElement(obj, "truncated").text = "0"
        ET.SubElement(obj, "difficult").text = "1" if box.difficult else "0"
        bndbox = ET.SubElement(obj, "bndbox")
        x1, y1, x2, y2 = box.xyxy
        xmin, ymin = round(x1) + 1, round(y1) + 1
        values = (xmin, ymin, max(round(x2), xmin), max(round(y2), ymin))  # keep >= 1 px
        for key, value in zip(("xmin", "ymin", "xmax", "ymax"), values, strict=True):
            ET.SubElement(bndbox, key).text = str(value)
    ET.indent(root)
    return ET.tostring(root, encoding="unicode") + "\n"
