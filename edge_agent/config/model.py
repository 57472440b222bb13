"""``model``: the bundle and how to run it. Each runtime's options are that runtime module's own
model (``model.onnx``, ``model.tflite``)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator, model_validator

from edge_agent.config.base import ConfigPath, Section
from edge_agent.config.checks import checked_public_keys
from edge_agent.runtimes.onnx import OnnxOptions
from edge_agent.runtimes.tflite import TfliteOptions

#: Keys that moved into a runtime's own section, and where they went.
MOVED_KEYS = {
    "providers": "model.onnx.providers",
    "graph_optimization": "model.onnx.graph_optimization",
    "edgetpu": "model.tflite.edgetpu",
}


class ModelConfig(Section):
    bundle: ConfigPath = Field(
        description="Model bundle: a folder holding manifest.json, or a .tar.gz of one "
        "(unpacked once into $EDGESIGHT_BUNDLE_CACHE, default ~/.cache/edgesight/bundles, "
        "and verified on every start). check-config checks that it exists and can be read."
    )
    runtime: Literal["auto", "onnx", "tflite"] = Field(
        "auto",
        description="Inference runtime: onnx (onnxruntime), tflite (LiteRT), or auto: the one "
        "that runs the bundle's model file format.",
    )
    threads: int = Field(2, ge=1, le=64, description="Intra-op threads for the runtime (1 to 64).")
    onnx: OnnxOptions = Field(
        default_factory=OnnxOptions, description="Options for the onnx runtime."
    )
    tflite: TfliteOptions = Field(
        default_factory=TfliteOptions, description="Options for the tflite runtime."
    )
    score_threshold: float | None = Field(
        None,
        ge=0,
        le=1,
        description="Override the bundle's score threshold, from 0 to 1 (its per-class "
        "thresholds still win).",
    )
    public_keys: list[str] = Field(
        default_factory=list,
        description="ed25519 public keys allowed to sign bundles: PEM file paths or the one-line "
        "base64 form that edge-trainer keygen prints. When set, a bundle must carry a "
        "manifest.sig from one of them and hold no file its manifest does not list. A key file "
        "that is missing or not a key is refused.",
    )

    @field_validator("public_keys")
    @classmethod
    def _keys_load(cls, value: list[str]) -> list[str]:
        return checked_public_keys(value)

    def runtime_for(self, model_format: str) -> str:
        """The runtime to use for a bundle whose model file has this format."""
        return model_format if self.runtime == "auto" else self.runtime

    def options_for(self, runtime: str) -> BaseModel:
        """That runtime's options section."""
        options: BaseModel = self.onnx if runtime == "onnx" else self.tflite
        return options

    @model_validator(mode="before")
    @classmethod
    def _moved_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            moved = [f"{key} is now {MOVED_KEYS[key]}" for key in MOVED_KEYS if key in data]
            if moved:
                raise ValueError("; ".join(moved))
        return data
