"""The MQTT contract in one place: topic names and payload builders (pure functions, no I/O).

DESIGN.md ("MQTT contract") is the source of truth; docs/mqtt.md is the user-facing copy. Change
all three together. Everything here is deterministic so it can be tested without a broker.
"""

from __future__ import annotations

import json
import unicodedata
from typing import Any

from edge_agent.types import Classifications, Detections, Result

#: Schema tag of a result payload; bump the number on an incompatible change.
RESULT_SCHEMA = "edgesight.result/1"
#: Values of the ``state`` field of the status topic.
STATUS_STATES = ("online", "offline", "degraded")
#: Classes reported for a classification result, best first.
CLASSIFICATION_TOP_K = 5
#: Decimal places: probabilities to 1e-4, normalised box coordinates to 1e-5 (0.02 px in a
#: 2,000 px frame), timings to 1 µs. Fewer digits keep the JSON short on slow uplinks.
PROBABILITY_DIGITS = 4
BOX_DIGITS = 5
TIMING_DIGITS = 3
#: A source with this id would publish ``<p>/<dev>/cmd/result``, the topic of a command named
#: "result"; a device with this id would live under ``<p>/fleet/``, where fleet groups live.
RESERVED_SOURCE_IDS = frozenset({"cmd"})
RESERVED_DEVICE_IDS = frozenset({"fleet"})

_TOPIC_WILDCARDS = frozenset("/+#")


def _unsafe_in_topic(ch: str) -> bool:
    """True for characters that must not appear inside one topic level.

    ``/`` separates levels and ``+``/``#`` are wildcards. MQTT 3.1.1 section 1.5.3 forbids U+0000
    and says control characters (U+0001-U+001F, U+007F-U+009F) and Unicode non-characters SHOULD
    NOT appear; mosquitto closes the connection of a client that sends them, and paho would then
    resend the same QoS 1 message on every reconnect. Lone surrogates cannot be encoded as UTF-8.
    """
    if ch in _TOPIC_WILDCARDS or ch.isspace():
        return True
    if unicodedata.category(ch) in ("Cc", "Cs"):
        return True
    code = ord(ch)
    return 0xFDD0 <= code <= 0xFDEF or (code & 0xFFFE) == 0xFFFE


def topic_level(text: str) -> str:
    """Make ``text`` safe as one topic level: unsafe characters become ``_``; empty becomes ``_``.

    Unsafe: ``/``, ``+``, ``#``, whitespace, NUL and other control characters, surrogates and
    Unicode non-characters. Distinct labels may map to the same level ("a b" and "a_b").
    """
    safe = "".join("_" if _unsafe_in_topic(ch) else ch for ch in text)
    return safe or "_"


class Topics:
    """Topic names for one device: ``<prefix>/<device>/...``.

    The prefix is used as given (it may hold several levels, e.g. ``site1/edgesight``; config.py
    refuses wildcards in it); the device id, source ids, labels and command names are passed
    through :func:`topic_level`.
    """

    def __init__(self, prefix: str, device_id: str) -> None:
        if not prefix or any(ch in prefix for ch in "+#") or prefix.startswith("/"):
            raise ValueError(
                f"topic prefix must be non-empty without '+', '#' or a leading '/', "
                f"but got {prefix!r}"
            )
        device = topic_level(device_id)
        if device in RESERVED_DEVICE_IDS:
            raise ValueError(
                f"device id {device_id!r} is reserved in topics; "
                f"choose another than {sorted(RESERVED_DEVICE_IDS)}"
            )
        self.prefix = prefix.rstrip("/")
        self.device_id = device_id
        self.base = f"{self.prefix}/{device}"

    def _source(self, src: str) -> str:
        level = topic_level(src)
        if level in RESERVED_SOURCE_IDS:
            raise ValueError(
                f"source id {src!r} is reserved in topics; "
                f"choose another than {sorted(RESERVED_SOURCE_IDS)}"
            )
        return f"{self.base}/{level}"

    def status(self) -> str:
        return f"{self.base}/status"

    def result(self, src: str) -> str:
        return f"{self._source(src)}/result"

    def count(self, src: str, label: str) -> str:
        return f"{self._source(src)}/count/{topic_level(label)}"

    def stats(self) -> str:
        return f"{self.base}/stats"

    def model(self) -> str:
        return f"{self.base}/model"

    def event(self, src: str) -> str:
        return f"{self._source(src)}/event"

    def snapshot(self, src: str) -> str:
        return f"{self._source(src)}/snapshot"

    def cmd(self, name: str) -> str:
        return f"{self.base}/cmd/{topic_level(name)}"

    def cmd_reply(self, name: str) -> str:
        return f"{self.cmd(name)}/reply"

    def cmd_filter(self) -> str:
        """Subscription filter matching every command (and, one level down, no replies)."""
        return f"{self.base}/cmd/+"


def check_source_ids(sources: list[str]) -> None:
    """Raise ValueError if a source id cannot be used in topics (see RESERVED_SOURCE_IDS)."""
    bad = [s for s in sources if topic_level(s) in RESERVED_SOURCE_IDS]
    if bad:
        raise ValueError(
            f"source ids {bad} are reserved in topics; choose others than "
            f"{sorted(RESERVED_SOURCE_IDS)}"
        )


def status_payload(
    state: str, ts: float, agent_version: str, model: dict[str, Any] | None, sources: list[str]
) -> dict[str, Any]:
    """The retained ``status`` payload; ``state`` is one of STATUS_STATES."""
    if state not in STATUS_STATES:
        raise ValueError(f"status state must be one of {list(STATUS_STATES)}, but got {state!r}")
    return {
        "state": state,
        "ts": float(ts),
        "agent_version": agent_version,
        "model": model,
        "sources": list(sources),
    }


def _label(labels: list[str], class_id: int, model: str) -> str:
    if not 0 <= class_id < len(labels):
        raise ValueError(
            f"class_id {class_id} is outside the {len(labels)} labels of model {model!r} "
            f"(expected 0..{len(labels) - 1})"
        )
    return labels[class_id]


def _detection_predictions(result: Result, det: Detections) -> list[dict[str, Any]]:
    width, height = result.frame_size
    boxes = det.to_custom_vision_boxes(width, height)
    out: list[dict[str, Any]] = []
    for i in range(len(det)):
        class_id = int(det.class_id[i])
        left, top, box_w, box_h = (round(float(v), BOX_DIGITS) for v in boxes[i])
        pred: dict[str, Any] = {
            "tagId": class_id,
            "tagName": _label(result.labels, class_id, result.model),
            "probability": round(float(det.confidence[i]), PROBABILITY_DIGITS),
            "boundingBox": {"left": left, "top": top, "width": box_w, "height": box_h},
        }
        if det.tracker_id is not None:
            pred["trackId"] = int(det.tracker_id[i])
        out.append(pred)
    return out


def _classification_predictions(result: Result, cls: Classifications) -> list[dict[str, Any]]:
    return [
        {
            "tagId": class_id,
            "tagName": _label(result.labels, class_id, result.model),
            "probability": round(score, PROBABILITY_DIGITS),
        }
        for class_id, score in cls.top(CLASSIFICATION_TOP_K)
    ]


def result_payload(result: Result, device_id: str) -> dict[str, Any]:
    """The ``<src>/result`` payload (schema edgesight.result/1) for one frame.

    ``id`` is stable for a given frame so a consumer can drop what QoS 1 redelivers.
    """
    preds = result.predictions
    if isinstance(preds, Detections):
        predictions = _detection_predictions(result, preds)
    elif isinstance(preds, Classifications):
        predictions = _classification_predictions(result, preds)
    else:
        raise ValueError(
            f"Result.predictions must be Detections or Classifications, "
            f"but got {type(preds).__name__}"
        )
    width, height = result.frame_size
    ts = float(result.ts)
    return {
        "schema": RESULT_SCHEMA,
        "id": f"{device_id}/{result.source_id}/{result.seq}/{int(ts * 1000)}",
        "device": device_id,
        "source": result.source_id,
        "seq": int(result.seq),
        "ts": ts,
        "origin": result.origin,
        "model": result.model,
        "task": result.task,
        "width": int(width),
        "height": int(height),
        "predictions": predictions,
        "counts": {str(label): int(n) for label, n in result.counts.items()},
        "timing_ms": {str(k): round(float(v), TIMING_DIGITS) for k, v in result.timing_ms.items()},
    }


def count_payload(n: int, ts: float) -> dict[str, Any]:
    """The retained ``<src>/count/<label>`` payload."""
    return {"count": int(n), "ts": float(ts)}


def encode(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON; NaN and infinities are refused (JSON has no such numbers)."""
    try:
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except ValueError as exc:
        raise ValueError(f"payload is not valid JSON (NaN or infinity?): {exc}") from exc
    return text.encode("utf-8")
