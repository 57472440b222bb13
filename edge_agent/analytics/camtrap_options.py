"""The Camtrap DP package's deployment and project metadata (``events`` stage option
``camtrap``), and how a model label becomes an observationType; camtrap.py writes the package.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Labels read as people or vehicles when ``observation_types`` does not say; any other label
#: is an animal (models on camera traps name animals). COCO and MegaDetector names.
HUMAN_LABELS = frozenset({"person", "people", "human", "pedestrian"})
VEHICLE_LABELS = frozenset(
    {"vehicle", "car", "truck", "bus", "van", "motorcycle", "motorbike", "bicycle", "train",
     "boat", "airplane"}
)  # fmt: skip

ObservationType = Literal["animal", "human", "vehicle", "unknown"]
FeatureType = Literal[
    "roadPaved", "roadDirt", "trailHiking", "trailGame", "roadUnderpass", "roadOverpass",
    "roadBridge", "culvert", "burrow", "nestSite", "carcass", "waterSource", "fruitingTree",
]  # fmt: skip
Role = Literal["contact", "principalInvestigator", "rightsHolder", "publisher", "contributor"]
SamplingDesign = Literal[
    "simpleRandom", "systematicRandom", "clusteredRandom", "experimental", "targeted",
    "opportunistic",
]  # fmt: skip


class Contributor(BaseModel):
    """A person or organisation credited in the package (Camtrap DP requires one)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: str = Field(min_length=1, description="Name of the person or organisation.")
    email: str | None = Field(None, description="E-mail address.")
    role: Role = Field("contributor", description="Role in the package.")
    organization: str | None = Field(None, description="Organisation the person belongs to.")


class CamtrapOptions(BaseModel):
    """Deployment and project metadata of the Camtrap DP package. The package is written only
    when ``latitude`` and ``longitude`` are set: Camtrap DP 1.0 requires them."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment_id: str | None = Field(
        None, min_length=1, description="deploymentID; default: the source's id."
    )
    latitude: float | None = Field(None, ge=-90, le=90, description="Latitude, WGS84 degrees.")
    longitude: float | None = Field(None, ge=-180, le=180, description="Longitude, WGS84 degrees.")
    coordinate_uncertainty_m: int | None = Field(
        None, ge=1, description="Radius of the coordinates' uncertainty, in metres."
    )
    location_id: str | None = Field(None, description="locationID of the camera's place.")
    location_name: str | None = Field(None, description="Name of the camera's place.")
    setup_by: str | None = Field(None, description="Who set the camera up.")
    camera_id: str | None = Field(None, description="The camera's serial number or id.")
    camera_model: str | None = Field(None, description="Make and model, e.g. Reconyx-PC800.")
    camera_delay_s: int | None = Field(None, ge=0, description="Trigger delay, in seconds.")
    camera_height_m: float | None = Field(None, ge=0, description="Height above ground, m.")
    camera_tilt_deg: int | None = Field(None, ge=-90, le=90, description="Tilt, degrees.")
    camera_heading_deg: int | None = Field(
        None, ge=0, le=360, description="Heading, degrees clockwise from north."
    )
    detection_distance_m: float | None = Field(
        None, ge=0, description="Largest distance at which the camera detects, in metres."
    )
    bait_use: bool | None = Field(None, description="Whether bait was used.")
    feature_type: FeatureType | None = Field(None, description="Feature the camera watches.")
    habitat: str | None = Field(None, description="Short description of the habitat.")
    deployment_tags: tuple[str, ...] = Field((), description="Tags such as 'forest edge'.")
    capture_method: Literal["activityDetection", "timeLapse"] = Field(
        "activityDetection", description="How the camera takes pictures (PIR: activity)."
    )
    project_title: str | None = Field(
        None, min_length=1, description="Project title; default: 'edgesight <source id>'."
    )
    sampling_design: SamplingDesign = Field(
        "opportunistic", description="The project's sampling design (Camtrap DP's values)."
    )
    contributors: tuple[Contributor, ...] = Field(
        (Contributor(title="edgesight"),),
        min_length=1,
        description="People and organisations credited; default: edgesight.",
    )
    media_url_prefix: str | None = Field(
        None,
        description="Where the images are published: filePath is this plus the file name, "
        "and filePublic true. Default: a file:// URL of the image on this device, not public.",
    )
    observation_types: dict[str, ObservationType] = Field(
        default_factory=dict,
        description="observationType per model label; default: person-like labels human, "
        "vehicle-like labels vehicle, others animal.",
    )
    scientific_names: dict[str, str] = Field(
        default_factory=dict,
        description="scientificName per model label (e.g. deer: Capreolus capreolus); labels "
        "without one are written with an empty scientificName and a label tag.",
    )

    @model_validator(mode="after")
    def _both_coordinates(self) -> CamtrapOptions:
        if (self.latitude is None) != (self.longitude is None):
            missing = "longitude" if self.longitude is None else "latitude"
            raise ValueError(f"{missing}: expected latitude and longitude together, or neither")
        return self

    @property
    def enabled(self) -> bool:
        return self.latitude is not None

    def labels_named(self) -> list[tuple[tuple[Any, ...], str]]:
        named = [(("observation_types", label), label) for label in self.observation_types]
        return named + [(("scientific_names", label), label) for label in self.scientific_names]

    def observation_type(self, label: str) -> str:
        if label in self.observation_types:
            return self.observation_types[label]
        low = label.lower()
        return "human" if low in HUMAN_LABELS else "vehicle" if low in VEHICLE_LABELS else "animal"
