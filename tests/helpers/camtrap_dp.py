"""The Camtrap DP 1.0 oracle: the standard's table schemas and profile, checked with the
frictionless validator (tests of the events stage's exports and of the README's walkthrough)."""

from __future__ import annotations

import csv
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
from frictionless import Package

from edge_agent.analytics.camtrap import PROFILE_URL

#: The 1.0.2 table schemas, one field a line: name, type, then "required", "unique" and
#: constraints (enum values split by |; a line starting with | goes on). Datetimes are
#: "%Y-%m-%dT%H:%M:%S%z".
TABLES = {
    "deployments": """
        deploymentID string required unique
        locationID string
        locationName string
        latitude number required minimum=-90 maximum=90
        longitude number required minimum=-180 maximum=180
        coordinateUncertainty integer minimum=1
        deploymentStart datetime required
        deploymentEnd datetime required
        setupBy string
        cameraID string
        cameraModel string
        cameraDelay integer minimum=0
        cameraHeight number minimum=0
        cameraDepth number minimum=0
        cameraTilt integer minimum=-90 maximum=90
        cameraHeading integer minimum=0 maximum=360
        detectionDistance number minimum=0
        timestampIssues boolean
        baitUse boolean
        featureType string enum=roadPaved|roadDirt|trailHiking|trailGame|roadUnderpass|roadOverpass
            |roadBridge|culvert|burrow|nestSite|carcass|waterSource|fruitingTree
        habitat string
        deploymentGroups string
        deploymentTags string
        deploymentComments string
    """,
    "media": r"""
        mediaID string required unique
        deploymentID string required
        captureMethod string enum=activityDetection|timeLapse
        timestamp datetime required
        filePath string required pattern=^(?=^[^./~])(^((?!\.{2}).)*$).*$
        filePublic boolean required
        fileName string
        fileMediatype string required pattern=^(image|video|audio)/.*$
        exifData any
        favorite boolean
        mediaComments string
    """,
    "observations": """
        observationID string required unique
        deploymentID string required
        mediaID string
        eventID string
        eventStart datetime required
        eventEnd datetime required
        observationLevel string required enum=media|event
        observationType string required enum=animal|human|vehicle|blank|unknown|unclassified
        cameraSetupType string enum=setup|calibration
        scientificName string
        count integer minimum=1
        lifeStage string enum=adult|subadult|juvenile
        sex string enum=female|male
        behavior string
        individualID string
        individualPositionRadius number minimum=0
        individualPositionAngle number minimum=-90 maximum=90
        individualSpeed number minimum=0
        bboxX number minimum=0 maximum=1
        bboxY number minimum=0 maximum=1
        bboxWidth number minimum=1e-15 maximum=1
        bboxHeight number minimum=1e-15 maximum=1
        classificationMethod string enum=human|machine
        classifiedBy string
        classificationTimestamp datetime
        classificationProbability number minimum=0 maximum=1
        observationTags string
        observationComments string
    """,
}
KEYS: dict[str, dict[str, Any]] = {
    "deployments": {"primaryKey": "deploymentID"},
    "media": {"primaryKey": "mediaID", "foreignKeys": [("deploymentID", "deployments")]},
    "observations": {
        "primaryKey": "observationID",
        "foreignKeys": [("deploymentID", "deployments"), ("mediaID", "media")],
    },
}


def table_schema(table: str) -> dict[str, Any]:
    fields = []
    for line in re.sub(r"\n\s*\|", "|", TABLES[table]).splitlines():
        if not line.strip():
            continue
        name, kind, *rest = line.split()
        field: dict[str, Any] = {"name": name, "type": kind}
        if kind == "datetime":
            field["format"] = "%Y-%m-%dT%H:%M:%S%z"
        constraints: dict[str, Any] = {"required": "required" in rest}
        for word in rest:
            key, _, value = word.partition("=")
            if key == "unique":
                constraints["unique"] = True
            elif key in ("minimum", "maximum"):
                constraints[key] = float(value) if kind == "number" else int(value)
            elif key in ("enum", "pattern"):
                constraints[key] = value.split("|") if key == "enum" else value
        fields.append({**field, "constraints": constraints})
    keys = KEYS[table]
    foreign = [
        {"fields": f, "reference": {"resource": r, "fields": f}}
        for f, r in keys.get("foreignKeys", [])
    ]
    return {
        "fields": fields,
        "missingValues": ["", "NA", "NaN", "nan"],
        "primaryKey": keys["primaryKey"],
        **({"foreignKeys": foreign} if foreign else {}),
    }


#: The profile's own requirements (https://camtrap-dp.tdwg.org/metadata), beside the Data
#: Package ones frictionless checks.
PROFILE: dict[str, Any] = {
    "type": "object",
    "required": [
        "profile",
        "created",
        "contributors",
        "project",
        "spatial",
        "temporal",
        "taxonomic",
        "resources",
    ],
    "properties": {
        "profile": {"const": PROFILE_URL},
        "created": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$"},
        "contributors": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": ["title"],
                "properties": {
                    "role": {
                        "enum": [
                            "contact",
                            "principalInvestigator",
                            "rightsHolder",
                            "publisher",
                            "contributor",
                        ]
                    }
                },
            },
        },
        "project": {
            "type": "object",
            "required": [
                "title",
                "samplingDesign",
                "captureMethod",
                "individualAnimals",
                "observationLevel",
            ],
            "properties": {
                "samplingDesign": {
                    "enum": [
                        "simpleRandom",
                        "systematicRandom",
                        "clusteredRandom",
                        "experimental",
                        "targeted",
                        "opportunistic",
                    ]
                },
                "captureMethod": {
                    "type": "array",
                    "minItems": 1,
                    "uniqueItems": True,
                    "items": {"enum": ["activityDetection", "timeLapse"]},
                },
                "individualAnimals": {"type": "boolean"},
                "observationLevel": {"type": "array", "items": {"enum": ["media", "event"]}},
            },
        },
        "spatial": {"type": "object", "required": ["type", "coordinates"]},
        "temporal": {
            "type": "object",
            "required": ["start", "end"],
            "properties": {
                "start": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\d$"},
                "end": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\d$"},
            },
        },
        "taxonomic": {"type": "array", "items": {"type": "object", "required": ["scientificName"]}},
        "resources": {
            "type": "array",
            "minItems": 3,
            "items": {
                "required": ["name", "path", "profile", "schema"],
                "properties": {
                    "name": {"enum": ["deployments", "media", "observations"]},
                    "profile": {"const": "tabular-data-resource"},
                    "schema": {"type": "string", "pattern": r"/camtrap-dp/1\.0\.2/"},
                },
            },
        },
    },
}


def validate_package(folder: Path) -> dict[str, Any]:
    """The descriptor against the profile, then every table with frictionless against the
    schemas above (keys across tables too); the descriptor is returned."""
    descriptor = json.loads((folder / "datapackage.json").read_text())
    jsonschema.validate(descriptor, PROFILE)
    local = dict(descriptor, profile="data-package")  # the profile is a URL: checked above
    local["resources"] = [dict(r, schema=table_schema(r["name"])) for r in descriptor["resources"]]
    report = Package(local, basepath=str(folder)).validate()
    assert report.valid, report.flatten(["type", "note", "rowNumber", "fieldName"])
    return descriptor


def rows(folder: Path, table: str) -> list[dict[str, str]]:
    with open(folder / f"{table}.csv", newline="") as fh:
        return list(csv.DictReader(fh))
