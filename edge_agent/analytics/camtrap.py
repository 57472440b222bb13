"""A Camera Trap Data Package (Camtrap DP 1.0, https://camtrap-dp.tdwg.org) of one folder
source: ``datapackage.json`` with ``deployments.csv``, ``media.csv`` and ``observations.csv``.

It names the 1.0.2 profile and schemas: the 1.0 profile as published has a JSON reference
(``#$defs/version``) that jsonschema 4.18 and later refuse, so frictionless cannot validate a
package naming it; 1.0.1 fixed only that, and 1.0.2 adds "NA" and "NaN" as missing values.
The tables are the same in all three.

Every media file the folder holds is a row of media.csv (one that could not be read too, with
a comment saying so). Observations are the machine's: one per sequence and label at event
level (``count`` is the most seen in one image), and one per box at media level (its bbox).
The columns are the 1.0 table schemas' fields in their order, as the standard requires.

Camtrap DP 1.0 requires a deployment's latitude and longitude and the package's spatial
coverage, so a package is written only when both are configured (camtrap_options.py).
"""

from __future__ import annotations

import csv
import io
import json
import mimetypes
import os
import re
import secrets
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from edge_agent import __version__
from edge_agent.analytics.camtrap_options import CamtrapOptions
from edge_agent.fsutil import replace_symlink, write_atomic

if TYPE_CHECKING:
    from edge_agent.analytics.events import SequenceRecord
    from edge_agent.analytics.folder_log import MediaRecord

SPEC = "https://raw.githubusercontent.com/tdwg/camtrap-dp/1.0.2"
PROFILE_URL = f"{SPEC}/camtrap-dp-profile.json"
TABLES = ("deployments", "media", "observations")
#: Column order of each table: the fields of the 1.0.x table schemas, in their order.
DEPLOYMENT_FIELDS = (
    "deploymentID", "locationID", "locationName", "latitude", "longitude",
    "coordinateUncertainty", "deploymentStart", "deploymentEnd", "setupBy", "cameraID",
    "cameraModel", "cameraDelay", "cameraHeight", "cameraDepth", "cameraTilt", "cameraHeading",
    "detectionDistance", "timestampIssues", "baitUse", "featureType", "habitat",
    "deploymentGroups", "deploymentTags", "deploymentComments",
)  # fmt: skip
MEDIA_FIELDS = (
    "mediaID", "deploymentID", "captureMethod", "timestamp", "filePath", "filePublic",
    "fileName", "fileMediatype", "exifData", "favorite", "mediaComments",
)  # fmt: skip
OBSERVATION_FIELDS = (
    "observationID", "deploymentID", "mediaID", "eventID", "eventStart", "eventEnd",
    "observationLevel", "observationType", "cameraSetupType", "scientificName", "count",
    "lifeStage", "sex", "behavior", "individualID", "individualPositionRadius",
    "individualPositionAngle", "individualSpeed", "bboxX", "bboxY", "bboxWidth", "bboxHeight",
    "classificationMethod", "classifiedBy", "classificationTimestamp",
    "classificationProbability", "observationTags", "observationComments",
)  # fmt: skip
#: deployments.csv columns taken as they are from CamtrapOptions fields.
DEPLOYMENT_OPTIONS = {
    "locationID": "location_id", "locationName": "location_name", "latitude": "latitude",
    "longitude": "longitude", "coordinateUncertainty": "coordinate_uncertainty_m",
    "setupBy": "setup_by", "cameraID": "camera_id", "cameraModel": "camera_model",
    "cameraDelay": "camera_delay_s", "cameraHeight": "camera_height_m",
    "cameraTilt": "camera_tilt_deg", "cameraHeading": "camera_heading_deg",
    "detectionDistance": "detection_distance_m", "baitUse": "bait_use",
    "featureType": "feature_type", "habitat": "habitat",
}  # fmt: skip
#: Smallest box side written: the schema requires bboxWidth/bboxHeight > 0.
MIN_BOX_SIDE = 1e-4
UNREADABLE = "edgesight could not read this file: not classified"
#: The package folder is swapped in whole through this symlink (its CSVs refer to each other).
PACKAGE_LINK = "camtrap-dp"


@dataclass(frozen=True)
class Unreadable:
    """A media file the folder holds that gave no result, with its capture time if known."""

    file: str
    ts: float | None


def stamp(ts: float) -> str:
    """Camtrap DP's datetime: ISO 8601 to the second with the device's UTC offset at that
    time (time.strftime: a package of 10,000 images has 30,000 of them)."""
    local = time.localtime(ts)
    minutes = local.tm_gmtoff // 60
    sign = "+" if minutes >= 0 else "-"
    hours, minutes = divmod(abs(minutes), 60)
    return time.strftime("%Y-%m-%dT%H:%M:%S", local) + f"{sign}{hours:02d}:{minutes:02d}"


def _bool(value: bool | None) -> str | None:
    """Camtrap DP writes booleans lower case (csv would write True)."""
    return None if value is None else "true" if value else "false"


def _csv(fields: Sequence[str], rows: Iterable[dict[str, object]]) -> bytes:
    """A table with ``fields`` as its columns in order; absent or None cells are empty."""
    out = io.StringIO()
    writer = csv.DictWriter(out, fields, restval="", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue().encode()


@dataclass
class PackageInput:
    """What a package is made of: one folder source's results so far."""

    source_id: str
    folder: Path
    records: Sequence[MediaRecord]
    sequences: Sequence[SequenceRecord]  # ended ones only: an open one has no end yet
    unreadable: Sequence[Unreadable]


class CamtrapPackage:
    """Builds the three tables and the descriptor for one deployment."""

    def __init__(self, options: CamtrapOptions, data: PackageInput) -> None:
        self.o = options
        self.d = data
        self.deployment = options.deployment_id or data.source_id
        self._folder_uri = data.folder.absolute().as_uri().rstrip("/") + "/"

    def _media_path(self, name: str) -> tuple[str, bool]:
        if self.o.media_url_prefix is not None:
            return self.o.media_url_prefix + name, True
        return self._folder_uri + quote(name), False

    def _media_row(self, name: str, ts: float, comment: str | None) -> dict[str, object]:
        path, public = self._media_path(name)
        return {
            "mediaID": name,
            "deploymentID": self.deployment,
            "captureMethod": self.o.capture_method,
            "timestamp": stamp(ts),
            "filePath": path,
            "filePublic": _bool(public),
            "fileName": name,
            "fileMediatype": mimetypes.guess_type(name)[0] or f"image/{Path(name).suffix[1:]}",
            "mediaComments": comment,
        }

    def media(self) -> list[dict[str, object]]:
        rows = [self._media_row(r.file, r.ts, None) for r in self.d.records]
        rows += [self._media_row(u.file, u.ts, UNREADABLE) for u in self.d.unreadable if u.ts]
        return rows

    def _taxon(self, label: str) -> dict[str, object]:
        return {
            "observationType": self.o.observation_type(label),
            "scientificName": self.o.scientific_names.get(label),
            "classificationMethod": "machine",
        }

    def observations(self) -> list[dict[str, object]]:
        rows: list[dict[str, object]] = []
        ended = {s.id: s for s in self.d.sequences}
        for seq in self.d.sequences:
            for label, tally in seq.labels.items():
                rows.append(
                    {
                        "observationID": tally.event_id,
                        "deploymentID": self.deployment,
                        "eventID": seq.id,
                        "eventStart": stamp(seq.start),
                        "eventEnd": stamp(seq.end),
                        "observationLevel": "event",
                        **self._taxon(label),
                        "count": tally.max_count,
                        "classifiedBy": tally.model,
                        "classificationTimestamp": stamp(seq.closed_at),
                        "classificationProbability": round(tally.max_conf, 3),
                        "observationTags": f"label:{label} | tracks:{len(tally.tracks)}",
                    }
                )
        for rec in self.d.records:
            if rec.sequence not in ended:
                continue
            for i in rec.counted_indices():
                x, y, w, h = (float(v) for v in rec.boxes[i])
                label = rec.label(i)
                tags = f"label:{label}"
                if rec.tracks is not None and rec.tracks[i] >= 0:
                    tags += f" | track:{int(rec.tracks[i])}"
                rows.append(
                    {
                        "observationID": f"{rec.file}#{i}",
                        "deploymentID": self.deployment,
                        "mediaID": rec.file,
                        "eventID": rec.sequence,
                        "eventStart": stamp(rec.ts),
                        "eventEnd": stamp(rec.ts),
                        "observationLevel": "media",
                        **self._taxon(label),
                        "count": 1,
                        "bboxX": round(x, 4),
                        "bboxY": round(y, 4),
                        "bboxWidth": max(round(w, 4), MIN_BOX_SIDE),
                        "bboxHeight": max(round(h, 4), MIN_BOX_SIDE),
                        "classifiedBy": rec.model,
                        "classificationTimestamp": stamp(rec.classified_at),
                        "classificationProbability": round(float(rec.conf[i]), 3),
                        "observationTags": tags,
                    }
                )
        return rows

    def deployments(self, start: float, end: float) -> list[dict[str, object]]:
        o = self.o
        row = {column: getattr(o, option) for column, option in DEPLOYMENT_OPTIONS.items()}
        row["baitUse"] = _bool(o.bait_use)
        tags = " | ".join(o.deployment_tags) or None
        times = {"deploymentStart": stamp(start), "deploymentEnd": stamp(end)}
        return [{**row, **times, "deploymentID": self.deployment, "deploymentTags": tags}]

    def descriptor(self, start: float, end: float, names: Iterable[str]) -> dict[str, Any]:
        o = self.o
        assert o.latitude is not None and o.longitude is not None  # enabled
        title = o.project_title or f"edgesight {self.d.source_id}"
        return {
            "profile": PROFILE_URL,
            "name": re.sub(r"[^a-z0-9._-]+", "-", f"edgesight-{self.d.source_id}".lower()),
            "title": title,
            "created": datetime.now(UTC).isoformat(timespec="seconds").replace("+00:00", "Z"),
            "contributors": [c.model_dump(exclude_none=True) for c in o.contributors],
            "sources": [{"title": "edgesight", "version": __version__}],
            "project": {
                "title": title,
                "samplingDesign": o.sampling_design,
                "captureMethod": [o.capture_method],
                "individualAnimals": False,
                "observationLevel": ["media", "event"],
            },
            "spatial": {"type": "Point", "coordinates": [o.longitude, o.latitude]},
            "temporal": {
                "start": datetime.fromtimestamp(start).date().isoformat(),
                "end": datetime.fromtimestamp(end).date().isoformat(),
            },
            "taxonomic": [{"scientificName": name} for name in sorted(set(names))],
            "resources": [
                {
                    "name": table,
                    "path": f"{table}.csv",
                    "profile": "tabular-data-resource",
                    "format": "csv",
                    "mediatype": "text/csv",
                    "encoding": "utf-8",
                    "schema": f"{SPEC}/{table}-table-schema.json",
                }
                for table in TABLES
            ],
        }

    def files(self) -> dict[str, bytes] | None:
        """File name -> content, or None when there is no media yet (no deployment time)."""
        times = [r.ts for r in self.d.records] + [u.ts for u in self.d.unreadable if u.ts]
        if not times:
            return None
        start, end = min(times), max(times)
        observations = self.observations()
        names = [str(r["scientificName"]) for r in observations if r.get("scientificName")]
        descriptor = self.descriptor(start, end, names)
        return {
            "datapackage.json": json.dumps(descriptor, indent=2).encode(),
            "deployments.csv": _csv(DEPLOYMENT_FIELDS, self.deployments(start, end)),
            "media.csv": _csv(MEDIA_FIELDS, self.media()),
            "observations.csv": _csv(OBSERVATION_FIELDS, observations),
        }


#: Package folders this module makes: the link's name, a dash and 8 hex digits.
_PACKAGE_DIR = re.compile(rf"\.{PACKAGE_LINK}-[0-9a-f]{{8}}")


def _link_target(link: Path) -> str | None:
    """The package folder ``link`` names, if it is a symlink to one beside it."""
    try:
        target = os.readlink(link)
    except OSError:  # no link yet (first run), or not a symlink
        return None
    return target if _PACKAGE_DIR.fullmatch(target) else None


class PackageWriter:
    """Writes one source's packages as ``out_dir/camtrap-dp``, a symlink swapped to a complete
    new folder, so a reader or a crash never sees tables of two versions.

    It deletes only package folders it made itself and the one the link named when it was
    made (the previous run's): another writer of the same folder (two sources given one
    export_dir) must never lose its current package."""

    def __init__(self, out_dir: Path) -> None:
        self.out_dir = out_dir
        self._mine: set[str] = set()  # made by this writer and not yet deleted
        # Read now, when the agent builds its stages, before any source of this run writes:
        # later, the link may name another writer's package.
        self._previous = _link_target(out_dir / PACKAGE_LINK)

    def write(self, options: CamtrapOptions, data: PackageInput) -> Path | None:
        """Write the package and swap the link to it; None (nothing written) if no media yet."""
        files = CamtrapPackage(options, data).files()
        if files is None:
            return None
        self.out_dir.mkdir(parents=True, exist_ok=True)
        link = self.out_dir / PACKAGE_LINK
        new = self.out_dir / f".{PACKAGE_LINK}-{secrets.token_hex(4)}"
        new.mkdir()
        self._mine.add(new.name)  # deleted by a later write if this one fails half-way
        for name, content in files.items():
            write_atomic(new / name, content)
        replace_symlink(link, new.name)
        stale = self._mine - {new.name}
        if self._previous is not None and self._previous != new.name:
            stale.add(self._previous)
        for name in stale:
            shutil.rmtree(self.out_dir / name, ignore_errors=True)
        self._mine, self._previous = {new.name}, None
        return link
