"""A folder of PIR bursts, read by the real folder source (EXIF times, a corrupt file skipped),
through the events stage with scripted detections: the MegaDetector batch output checked field
by field against its format, and the Camtrap DP package validated by frictionless.

No network here, and the Camtrap DP 1.0.2 table schemas and profile are not vendored: the
schemas below are written from the standard's documentation (https://camtrap-dp.tdwg.org/data,
/metadata), field by field: name, type, format, required, constraints, keys.
"""

from __future__ import annotations

import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import jsonschema
import numpy as np
import pytest
from PIL import ExifTags, Image

from edge_agent.analytics import folder_log
from edge_agent.analytics.camtrap import (
    PACKAGE_LINK,
    PackageInput,
    PackageWriter,
    Unreadable,
    stamp,
)
from edge_agent.analytics.camtrap_options import CamtrapOptions
from edge_agent.analytics.events import EventsStage, build_events
from edge_agent.analytics.folder_log import MEGADETECTOR_FILE, FolderLog, export_wait
from edge_agent.config import SourceConfig
from edge_agent.health.stats import StatsRegistry
from edge_agent.pipeline.stages import StageContext, stage_options
from edge_agent.sources import open_source
from edge_agent.types import Detections, Result
from tests.helpers.camtrap_dp import PROFILE, rows, validate_package
from tests.helpers.timezone import pinned_timezone

LABELS = ["deer", "boar", "person"]
W, H = 320, 240
Box = tuple[str, float, int, tuple[float, float, float, float]]
COORDS = {"latitude": 52.70442, "longitude": 23.84995}


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    with pinned_timezone("UTC"):
        yield


# ---- the scene --------------------------------------------------------------------------------

#: file -> (EXIF time, boxes); None: a corrupt file. Two deer in a burst, a blank, a boar
#: with a person the events do not count (labels: deer, boar), and two unreadable files.
SCENE: dict[str, tuple[str, list[Box]] | None] = {
    "IMG_0001.JPG": ("06:00:00", [("deer", 0.91, 1, (32, 48, 96, 120))]),
    "IMG_0002.JPG": (
        "06:00:01",
        [("deer", 0.88, 1, (40, 48, 104, 120)), ("deer", 0.62, 2, (200, 100, 280, 200))],
    ),
    "IMG_0003.JPG": None,
    "IMG_0004.JPG": ("06:00:02", [("deer", 0.93, 1, (48, 48, 112, 120))]),
    "IMG_0005.JPG": ("06:10:00", []),
    "IMG_0006.JPG": (
        "06:30:00",
        [("boar", 0.77, 7, (0, 120, 160, 240)), ("person", 0.51, 9, (250, 10, 300, 90))],
    ),
    "IMG_0007.JPG": ("06:30:01", [("boar", 0.81, 7, (10, 120, 170, 240))]),
    "IMG_0008.JPG": ("06:30:02", []),
    "IMG_0009.JPG": None,
}
T0 = 1_714_543_200.0  # 2024-05-01 06:00:00 UTC
BAD_MTIME = T0 + 1.5


def write_folder(folder: Path, scene: dict[str, tuple[str, list[Box]] | None]) -> Path:
    folder.mkdir()
    for name, item in scene.items():
        if item is None:
            (folder / name).write_bytes(b"\xff\xd8 truncated by the SD card" * 10)
            os.utime(folder / name, (BAD_MTIME, BAD_MTIME))
            continue
        exif = Image.Exif()
        exif.get_ifd(ExifTags.IFD.Exif)[ExifTags.Base.DateTimeOriginal] = f"2024:05:01 {item[0]}"
        Image.new("RGB", (W, H), (90, 110, 70)).save(folder / name, "JPEG", exif=exif)
    return folder


def detections(boxes: Sequence[Box]) -> Detections:
    return Detections(
        np.array([b[3] for b in boxes], np.float32).reshape(-1, 4),
        np.array([b[1] for b in boxes], np.float32),
        np.array([LABELS.index(b[0]) for b in boxes], np.int32),
        tracker_id=np.array([b[2] for b in boxes], np.int64),
    )


def build(folder: Path, state: Path, stats: StatsRegistry, **options: Any) -> EventsStage:
    opts = stage_options("events", {"labels": ["deer", "boar"], **options})
    context = StageContext("trap", stats, tuple(LABELS), state, media_folder=folder)
    return build_events(opts, context)


def run(folder: Path, stage: EventsStage, stats: StatsRegistry, scene: dict, after=None) -> list:
    """The real folder source's frames with the scene's boxes through the stage; ``after(name)``
    is called after each image."""
    source = open_source(SourceConfig(id="trap", uri=str(folder)), metrics=stats.source("trap"))
    results = []
    for frame in source.frames():
        _, boxes = scene[frame.origin]
        result = Result(
            "trap",
            frame.seq,
            frame.ts,
            "colour-blocks",
            "detect",
            LABELS,
            (W, H),
            detections(boxes),
            origin=frame.origin,
        )
        results.append(stage.process(result, frame))
        if after is not None:
            after(frame.origin)
    source.close()
    return results


# ---- MegaDetector -----------------------------------------------------------------------------


def check_megadetector_format(output: dict[str, Any]) -> None:
    """The format's rules (https://lila.science/megadetector-output-format)."""
    assert set(output) == {"info", "detection_categories", "images"}
    assert isinstance(output["info"]["format_version"], str)
    assert float(output["info"]["format_version"]) >= 1.3
    for cid, name in output["detection_categories"].items():
        assert int(cid) > 0 and isinstance(name, str) and name  # "0" is the informal empty
    for image in output["images"]:
        assert isinstance(image["file"], str)
        if image.get("failure") is not None:
            assert isinstance(image["failure"], str) and image["detections"] is None
            continue
        assert isinstance(image["detections"], list)
        for det in image["detections"]:
            assert set(det) == {"category", "conf", "bbox"}
            assert det["category"] in output["detection_categories"]
            assert isinstance(det["conf"], float) and 0 <= det["conf"] <= 1
            x, y, w, h = det["bbox"]
            assert 0 <= x <= 1 and 0 <= y <= 1 and 0 <= x + w <= 1.0001 and 0 <= y + h <= 1.0001


def md_box(xyxy: tuple[float, float, float, float]) -> list[float]:
    x1, y1, x2, y2 = xyxy
    return [round(x1 / W, 4), round(y1 / H, 4), round((x2 - x1) / W, 4), round((y2 - y1) / H, 4)]


def test_megadetector_output_field_by_field(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "trap", SCENE)
    stats = StatsRegistry()
    stage = build(folder, tmp_path / "state", stats)
    run(folder, stage, stats, SCENE)
    stage.close()
    path = tmp_path / "state" / "exports" / MEGADETECTOR_FILE
    output = json.loads(path.read_text())
    check_megadetector_format(output)
    info = output["info"]
    assert (info["format_version"], info["detector"]) == ("1.4", "colour-blocks")
    assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", info["detection_completion_time"])
    assert output["detection_categories"] == {"1": "deer", "2": "boar", "3": "person"}
    expected: list[dict[str, Any]] = []
    for name, item in SCENE.items():  # one list in name order, the unreadable files in place
        if item is None:
            expected.append({"file": name, "failure": "Failure image access", "detections": None})
            continue
        dets = [  # every box, the person too: the reader chooses
            {"category": str(LABELS.index(label) + 1), "conf": conf, "bbox": md_box(xyxy)}
            for label, conf, _, xyxy in item[1]
        ]
        expected.append({"file": name, "detections": dets})
    assert output["images"] == expected


# ---- Camtrap DP 1.0 ---------------------------------------------------------------------------


def test_validator_catches_what_it_should(tmp_path: Path) -> None:
    """The oracle itself: a broken table or a missing field fails it."""
    folder = write_folder(tmp_path / "trap", SCENE)
    stats = StatsRegistry()
    stage = build(folder, tmp_path / "state", stats, camtrap=COORDS)
    run(folder, stage, stats, SCENE)
    stage.close()
    package = tmp_path / "state" / "exports" / PACKAGE_LINK
    validate_package(package)
    observations = (package / "observations.csv").read_text()
    (package / "observations.csv").write_text(observations.replace(",machine,", ",robot,", 1))
    with pytest.raises(AssertionError, match="constraint"):
        validate_package(package)
    (package / "observations.csv").write_text(observations.replace("IMG_0004.JPG,", "IMG_X,", 1))
    with pytest.raises(AssertionError, match="foreign-key"):
        validate_package(package)
    descriptor = json.loads((package / "datapackage.json").read_text())
    del descriptor["spatial"]
    with pytest.raises(jsonschema.ValidationError, match="spatial"):
        jsonschema.validate(descriptor, PROFILE)


def test_camtrap_package_field_by_field(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "trap", SCENE)
    stats = StatsRegistry()
    camtrap = {
        **COORDS,
        "deployment_id": "trap-a",
        "coordinate_uncertainty_m": 30,
        "camera_model": "Reconyx-PC800",
        "feature_type": "trailGame",
        "bait_use": False,
        "scientific_names": {"deer": "Capreolus capreolus"},
    }
    stage = build(folder, tmp_path / "state", stats, camtrap=camtrap)
    run(folder, stage, stats, SCENE)
    stage.close()
    package = tmp_path / "state" / "exports" / PACKAGE_LINK
    descriptor = validate_package(package)
    assert descriptor["spatial"] == {"type": "Point", "coordinates": [23.84995, 52.70442]}
    assert descriptor["temporal"] == {"start": "2024-05-01", "end": "2024-05-01"}
    assert descriptor["taxonomic"] == [{"scientificName": "Capreolus capreolus"}]
    assert descriptor["project"]["observationLevel"] == ["media", "event"]

    (deployment,) = rows(package, "deployments")
    assert {k: v for k, v in deployment.items() if v} == {
        "deploymentID": "trap-a",
        "latitude": "52.70442",
        "longitude": "23.84995",
        "coordinateUncertainty": "30",
        "deploymentStart": "2024-05-01T06:00:00+00:00",
        "deploymentEnd": "2024-05-01T06:30:02+00:00",
        "cameraModel": "Reconyx-PC800",
        "baitUse": "false",
        "featureType": "trailGame",
    }

    media = {m["mediaID"]: m for m in rows(package, "media")}
    assert sorted(media) == sorted(SCENE)  # the unreadable ones too
    assert media["IMG_0002.JPG"] == {
        "mediaID": "IMG_0002.JPG",
        "deploymentID": "trap-a",
        "captureMethod": "activityDetection",
        "timestamp": "2024-05-01T06:00:01+00:00",
        "filePath": (folder / "IMG_0002.JPG").as_uri(),
        "filePublic": "false",
        "fileName": "IMG_0002.JPG",
        "fileMediatype": "image/jpeg",
        "exifData": "",
        "favorite": "",
        "mediaComments": "",
    }
    assert media["IMG_0003.JPG"]["timestamp"] == "2024-05-01T06:00:01+00:00"  # its file time
    assert "could not read" in media["IMG_0009.JPG"]["mediaComments"]

    observations = rows(package, "observations")
    events = [o for o in observations if o["observationLevel"] == "event"]
    assert [
        (
            o["observationID"],
            o["eventStart"],
            o["eventEnd"],
            o["observationType"],
            o["scientificName"],
            o["count"],
            o["classificationMethod"],
            o["classificationProbability"],
            o["observationTags"],
            o["mediaID"],
        )
        for o in events
    ] == [
        (
            "trap-20240501T060000.000Z-deer",
            "2024-05-01T06:00:00+00:00",
            "2024-05-01T06:00:02+00:00",
            "animal",
            "Capreolus capreolus",
            "2",
            "machine",
            "0.93",
            "label:deer | tracks:2",
            "",
        ),
        (
            "trap-20240501T063000.000Z-boar",
            "2024-05-01T06:30:00+00:00",
            "2024-05-01T06:30:01+00:00",
            "animal",
            "",
            "1",
            "machine",
            "0.81",
            "label:boar | tracks:1",
            "",
        ),
    ]
    boxes = [o for o in observations if o["observationLevel"] == "media"]
    assert [
        (
            o["observationID"],
            o["eventID"],
            o["eventStart"],
            o["count"],
            o["classificationProbability"],
            o["observationTags"],
        )
        for o in boxes
    ] == [
        (
            "IMG_0001.JPG#0",
            events[0]["eventID"],
            "2024-05-01T06:00:00+00:00",
            "1",
            "0.91",
            "label:deer | track:1",
        ),
        (
            "IMG_0002.JPG#0",
            events[0]["eventID"],
            "2024-05-01T06:00:01+00:00",
            "1",
            "0.88",
            "label:deer | track:1",
        ),
        (
            "IMG_0002.JPG#1",
            events[0]["eventID"],
            "2024-05-01T06:00:01+00:00",
            "1",
            "0.62",
            "label:deer | track:2",
        ),
        (
            "IMG_0004.JPG#0",
            events[0]["eventID"],
            "2024-05-01T06:00:02+00:00",
            "1",
            "0.93",
            "label:deer | track:1",
        ),
        (
            "IMG_0006.JPG#0",
            events[1]["eventID"],
            "2024-05-01T06:30:00+00:00",
            "1",
            "0.77",
            "label:boar | track:7",
        ),
        (
            "IMG_0007.JPG#0",
            events[1]["eventID"],
            "2024-05-01T06:30:01+00:00",
            "1",
            "0.81",
            "label:boar | track:7",
        ),
    ]  # the person is not counted: labels are deer and boar
    first = boxes[2]
    assert [first[k] for k in ("bboxX", "bboxY", "bboxWidth", "bboxHeight")] == [
        "0.625",
        "0.4167",
        "0.25",
        "0.4167",
    ]
    assert first["classifiedBy"] == "colour-blocks" and first["mediaID"] == "IMG_0002.JPG"


def test_exports_mid_run_are_complete_and_valid(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What a killed agent leaves: after each image the files on disk are whole, list the
    images read so far (the corrupt one in the middle as a failure), and the package holds
    the sequences that ended."""
    monkeypatch.setattr(folder_log, "EXPORT_BACKOFF", 0.0)  # with export_every_s 0: every image
    folder = write_folder(tmp_path / "trap", SCENE)
    stats = StatsRegistry()
    stage = build(folder, tmp_path / "state", stats, camtrap=COORDS, export_every_s=0)
    out = tmp_path / "state" / "exports"
    seen: dict[str, tuple[list[str], list[str]]] = {}

    def snapshot(name: str) -> None:
        output = json.loads((out / MEGADETECTOR_FILE).read_text())
        check_megadetector_format(output)
        validate_package(out / PACKAGE_LINK)
        observations = rows(out / PACKAGE_LINK, "observations")
        events = [o["eventID"] for o in observations if o["observationLevel"] == "event"]
        seen[name] = ([i["file"] for i in output["images"]], events)
        assert [p.name for p in out.iterdir() if p.name.startswith(".")] == [
            os.readlink(out / PACKAGE_LINK)
        ]  # one package folder: no leftovers

    run(folder, stage, stats, SCENE, after=snapshot)
    assert seen["IMG_0004.JPG"] == (
        ["IMG_0001.JPG", "IMG_0002.JPG", "IMG_0003.JPG", "IMG_0004.JPG"],
        [],
    )
    assert seen["IMG_0005.JPG"][1] == ["trap-20240501T060000.000Z"]  # ended on IMG_0005
    assert "IMG_0009.JPG" not in seen["IMG_0008.JPG"][0]  # not known to be bad before the end
    stage.close()
    output = json.loads((out / MEGADETECTOR_FILE).read_text())
    assert [i["file"] for i in output["images"] if i.get("failure")] == [
        "IMG_0003.JPG",
        "IMG_0009.JPG",
    ]


def test_last_image_ends_the_last_event_in_its_result(tmp_path: Path) -> None:
    scene = {k: v for k, v in SCENE.items() if k <= "IMG_0007.JPG"}
    folder = write_folder(tmp_path / "trap", scene)
    stats = StatsRegistry()
    stage = build(folder, tmp_path / "state", stats)
    results = run(folder, stage, stats, scene)
    last = results[-1]
    assert [(p.payload["type"], p.payload["label"]) for p in last.publications] == [("end", "boar")]
    assert len(last.snapshot_requests) == 1


def test_no_coordinates_no_package(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = write_folder(tmp_path / "trap", SCENE)
    stats = StatsRegistry()
    stage = build(folder, tmp_path / "state", stats)
    with caplog.at_level(logging.INFO, logger="edge_agent.analytics.folder_log"):
        run(folder, stage, stats, SCENE)
        stage.close()
    out = tmp_path / "state" / "exports"
    assert sorted(p.name for p in out.iterdir()) == [MEGADETECTOR_FILE]
    assert "latitude and longitude are not set" in caplog.text


def test_export_switches_and_folders(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "trap", {"IMG_0001.JPG": SCENE["IMG_0001.JPG"]})
    stats = StatsRegistry()
    off = build(folder, tmp_path / "off", stats, export=False)
    (only,) = run(folder, off, stats, SCENE)
    off.close()
    assert not (tmp_path / "off").exists()
    assert off.folder is not None and off.folder.records == {}  # nothing kept for nothing
    assert [p.payload["type"] for p in only.publications] == ["start", "end"]  # folder done
    elsewhere = tmp_path / "elsewhere"
    absolute = build(folder, tmp_path / "abs", stats, export_dir=str(elsewhere))
    run(folder, absolute, stats, SCENE)
    absolute.close()
    assert (elsewhere / MEGADETECTOR_FILE).is_file() and not (tmp_path / "abs").exists()
    opts = stage_options("events", {"export": True})
    no_state = StageContext("trap", stats, tuple(LABELS), None, media_folder=folder)
    with pytest.raises(ValueError, match="export_dir 'exports' is relative"):
        build_events(opts, no_state)


def test_a_run_stopped_before_any_image_keeps_the_last_exports(tmp_path: Path) -> None:
    folder = write_folder(tmp_path / "trap", SCENE)
    stats = StatsRegistry()
    first = build(folder, tmp_path / "state", stats, camtrap=COORDS)
    run(folder, first, stats, SCENE)
    first.close()
    out = tmp_path / "state" / "exports"
    before = (out / MEGADETECTOR_FILE).read_bytes(), os.readlink(out / PACKAGE_LINK)
    restarted = build(folder, tmp_path / "state", StatsRegistry(), camtrap=COORDS)
    restarted.close()  # stopped at once: nothing read
    assert ((out / MEGADETECTOR_FILE).read_bytes(), os.readlink(out / PACKAGE_LINK)) == before


def test_camtrap_times_carry_the_local_offset_of_their_date() -> None:
    os.environ["TZ"] = "Europe/Berlin"  # the fixture restores UTC
    time.tzset()
    assert stamp(T0) == "2024-05-01T08:00:00+02:00"
    assert stamp(T0 - 150 * 86400) == "2023-12-03T07:00:00+01:00"  # winter time


# ---- when the exports are written ------------------------------------------------------------


def md_files(out: Path) -> list[str]:
    return [i["file"] for i in json.loads((out / MEGADETECTOR_FILE).read_text())["images"]]


def test_last_picture_writes_the_final_exports_at_once(tmp_path: Path) -> None:
    """The folder is done on its last picture: the exports list it then, not at shutdown."""
    scene = {k: SCENE[k] for k in ("IMG_0001.JPG", "IMG_0002.JPG", "IMG_0004.JPG")}
    folder = write_folder(tmp_path / "trap", scene)
    stats = StatsRegistry()
    stage = build(folder, tmp_path / "state", stats, camtrap=COORDS)  # export_every_s 30
    out = tmp_path / "state" / "exports"
    run(folder, stage, stats, scene)
    assert md_files(out) == list(scene)
    events = [o for o in rows(out / PACKAGE_LINK, "observations") if o["eventID"]]
    assert events, "the sequence the last picture ended is in the package"


def test_finish_writes_the_final_exports(tmp_path: Path) -> None:
    """A source that ends (its last file corrupt, so no last picture is seen): the stage's
    finish, as the agent calls it, writes every picture and the failure before close()."""
    scene = {k: SCENE[k] for k in ("IMG_0001.JPG", "IMG_0002.JPG", "IMG_0004.JPG")}
    scene["IMG_0009.JPG"] = None
    folder = write_folder(tmp_path / "trap", scene)
    stats = StatsRegistry()
    stage = build(folder, tmp_path / "state", stats)
    results = run(folder, stage, stats, scene)
    out = tmp_path / "state" / "exports"
    assert md_files(out) == ["IMG_0001.JPG"]  # the first picture's periodic write
    stage.finish(replace(results[-1], publications=[], snapshot_requests=[]))
    assert md_files(out) == list(scene)


def test_export_interval_grows_with_the_cost_of_a_rewrite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A rewrite that takes d seconds is followed by none for max(export_every_s, 20 d): the
    post thread spends at most ~5 % on exports. Final writes happen whatever is due."""
    assert export_wait(30, 0.1) == 30 and export_wait(30, 2.0) == 40
    folder = tmp_path / "trap"
    folder.mkdir()
    names = [f"IMG_{i:04d}.JPG" for i in range(100)]
    for name in names:
        (folder / name).touch()  # listed, never decoded here
    now = [0.0]
    writes: list[float] = []
    real = folder_log.write_batch_output

    def timed(path: Path, output: dict[str, Any]) -> None:
        writes.append(now[0])
        real(path, output)
        now[0] += 0.125 * len(output["images"])  # a rewrite costs 1/8 s per image (exact)

    monkeypatch.setattr(folder_log, "write_batch_output", timed)
    opts = stage_options("events", {"export_every_s": 5})
    stats = StatsRegistry()
    log = FolderLog(
        folder, tmp_path / "out", opts, "trap", stats.source("trap"), LABELS, lambda: now[0]
    )
    stage = EventsStage(opts, "trap", log)  # type: ignore[arg-type]
    for i, name in enumerate(names[:-1]):  # one image a second
        result = Result("trap", i, T0 + i, "m", "detect", LABELS, (W, H), detections([]))
        result.origin = name
        stage.process(result, None)
        now[0] += 1.0
    # 1 image: 0.125 s, wait 5 s; 6 images at 5.125: 0.75 s, wait 15 s; 21 at 20.875:
    # 2.625 s, wait 52.5 s; 74 at 76.5: 9.25 s, wait 185 s: none more before the end.
    assert writes == [0.0, 5.125, 20.875, 76.5]
    stage.finish(result)  # not due, but final
    assert len(writes) == 5 and md_files(tmp_path / "out") == names[:-1]
    stage.close()  # final again with nothing new: not rewritten
    assert len(writes) == 5


# ---- package folders --------------------------------------------------------------------------


def test_a_writer_deletes_only_its_own_package_folders(tmp_path: Path) -> None:
    """Two sources given one export_dir (a config the agent refuses, but still): each keeps
    its current package. Only the previous run's folder (the link's at start) and a writer's
    own older folders are deleted; a folder someone else left is never touched."""
    out = tmp_path / "exports"
    out.mkdir()
    previous = out / ".camtrap-dp-0badc0de"
    previous.mkdir()
    os.symlink(previous.name, out / PACKAGE_LINK)
    foreign = out / ".camtrap-dp-feedf00d"  # not ours: a crash's leftover, another writer's
    foreign.mkdir()
    options = CamtrapOptions(**COORDS)
    data = PackageInput("trap", tmp_path, [], [], [Unreadable("IMG_0001.JPG", T0)])
    a, b = PackageWriter(out), PackageWriter(out)  # both built before either writes

    def folders() -> set[str]:
        return {p.name for p in out.iterdir() if p.name.startswith(".")}

    a.write(options, data)
    a_current = os.readlink(out / PACKAGE_LINK)
    assert folders() == {a_current, foreign.name}  # the previous run's package is gone
    b.write(options, data)
    b_current = os.readlink(out / PACKAGE_LINK)
    assert folders() == {a_current, b_current, foreign.name}  # a's current one survives b
    a.write(options, data)
    a_next = os.readlink(out / PACKAGE_LINK)
    assert folders() == {a_next, b_current, foreign.name}  # a deletes its own older one only
    assert (out / b_current / "media.csv").is_file()
