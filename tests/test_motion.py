"""The motion gate on scripted frames whose truth is known: noise, light, objects, masks."""

from __future__ import annotations

from collections import Counter

import cv2
import numpy as np
import pytest
from pydantic import ValidationError

from edge_agent.config.motion import PRESETS, MotionConfig
from edge_agent.motion import Decision, MotionGate

H, W = 240, 320
FPS = 10
NOISE_STD = 5.0  # grey levels of sensor noise per pixel


def make_scene(seed: int = 0, low: int = 50, high: int = 150) -> np.ndarray:
    """A textured static scene (blocks of 10x10 px), BGR, away from 0 and 255."""
    rng = np.random.default_rng(seed)
    blocks = rng.integers(low, high, (H // 10, W // 10), dtype=np.uint8)
    grey = cv2.resize(blocks, (W, H), interpolation=cv2.INTER_NEAREST)
    return cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)


def noisy(frame: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    return np.clip(frame + rng.normal(0, NOISE_STD, frame.shape), 0, 255).astype(np.uint8)


def with_box(frame: np.ndarray, x: int, y: int, w: int, h: int, value: int = 240) -> np.ndarray:
    out = frame.copy()
    out[y : y + h, x : x + w] = value
    return out


def run(gate: MotionGate, frames: list[np.ndarray], t0: float = 0.0) -> list[Decision]:
    return [gate.decide(f, t0 + i / FPS) for i, f in enumerate(frames)]


def reasons(decisions: list[Decision]) -> Counter[str]:
    return Counter(d.reason for d in decisions)


def test_static_noise_only_keepalives():
    rng = np.random.default_rng(1)
    scene = make_scene()
    gate = MotionGate(MotionConfig(enabled=True, keepalive_s=30.0))
    seconds = 100
    decisions = [gate.decide(noisy(scene, rng), i / FPS) for i in range(seconds * FPS + 1)]
    assert decisions[0] == Decision(True, "warmup", 0.0)
    # warm-up at 0 s, then keep-alives at 30, 60 and 90 s, nothing else inferred
    assert reasons(decisions) == {"warmup": 1, "keepalive": 3, "still": seconds * FPS - 3}
    keepalives = [i for i, d in enumerate(decisions) if d.reason == "keepalive"]
    assert keepalives == [300, 600, 900]
    assert all(d.infer == (d.reason != "still") for d in decisions)
    assert max(d.changed for d in decisions) < 0.001


@pytest.mark.parametrize(
    "light",
    [
        pytest.param(lambda f, k: f.astype(np.int16) + 40, id="sudden +40"),
        pytest.param(lambda f, k: f.astype(np.float64) * 1.5, id="sudden gain 1.5"),
        pytest.param(lambda f, k: f.astype(np.float64) - 30, id="sudden -30"),
        pytest.param(lambda f, k: f.astype(np.float64) + 40 * min(1.0, k / 200), id="slow +40"),
    ],
)
def test_lighting_change_is_not_motion(light):
    rng = np.random.default_rng(2)
    scene = make_scene()
    gate = MotionGate(MotionConfig(enabled=True, keepalive_s=1000.0))
    before = run(gate, [noisy(scene, rng) for _ in range(20)])
    lit = [np.clip(light(scene, k), 0, 255).astype(np.uint8) for k in range(300)]
    after = run(gate, [noisy(f, rng) for f in lit], t0=2.0)
    assert reasons(before) == {"warmup": 1, "still": 19}
    assert reasons(after) == {"still": 300}  # not one motion frame, and still throughout


def test_lighting_storm_relearns_background():
    """A change no gain and offset explain (half the frame darkened, a cloud's shadow over
    half a field) re-learns the background at once: not motion, then still."""
    rng = np.random.default_rng(3)
    scene = make_scene()
    shadow = scene.copy()
    shadow[:, : W // 2] //= 2
    gate = MotionGate(MotionConfig(enabled=True, keepalive_s=1000.0))
    run(gate, [noisy(scene, rng) for _ in range(5)])
    after = run(gate, [noisy(shadow, rng) for _ in range(20)], t0=1.0)
    assert gate.relearned == 1
    assert after[0].changed >= 0.5
    assert reasons(after) == {"still": 20}


def test_small_object_entering_is_motion():
    rng = np.random.default_rng(4)
    scene = make_scene()
    gate = MotionGate(MotionConfig(enabled=True, keepalive_s=1000.0, hold_s=2.0))
    run(gate, [noisy(scene, rng) for _ in range(10)])
    # 2 % of the frame: 48 x 32 px of 320 x 240
    entered = gate.decide(noisy(with_box(scene, 100, 100, 48, 32), rng), 1.0)
    assert entered.infer and entered.reason == "motion"
    assert 0.01 < entered.changed < 0.04


@pytest.mark.parametrize("size", [(1280, 720), (1920, 1080)])
def test_large_frames_are_sampled_first_and_still_see_a_small_object(size):
    """A frame over twice the small copy's width is sampled, then averaged: noise stays still,
    a 1 % object is motion, and a sudden +40 is light, not motion."""
    w, h = size
    rng = np.random.default_rng(6)
    blocks = rng.integers(50, 150, (h // 40, w // 40), dtype=np.uint8)
    scene = cv2.cvtColor(cv2.resize(blocks, (w, h), interpolation=cv2.INTER_NEAREST),
                         cv2.COLOR_GRAY2BGR)  # fmt: skip
    gate = MotionGate(MotionConfig(enabled=True, keepalive_s=1000.0, hold_s=0.0))
    still = run(gate, [noisy(scene, rng) for _ in range(10)])
    assert reasons(still) == {"warmup": 1, "still": 9}
    box = (w // 10, h // 10)  # 1 % of the frame
    entered = gate.decide(noisy(with_box(scene, w // 3, h // 3, *box), rng), 1.0)
    assert entered.reason == "motion" and 0.005 < entered.changed < 0.03
    gate.decide(noisy(scene, rng), 1.1)  # gone again
    lit = np.clip(scene.astype(np.int16) + 40, 0, 255).astype(np.uint8)
    assert reasons(run(gate, [noisy(lit, rng) for _ in range(5)], t0=1.2)) == {"still": 5}


def test_object_that_stops_holds_then_still():
    """Moving, then parked: motion while it moves and until the background (adapt_s) takes
    it in, hold for hold_s after the last motion, then still."""
    rng = np.random.default_rng(5)
    scene = make_scene()
    cfg = MotionConfig(enabled=True, keepalive_s=1000.0, hold_s=2.0, adapt_s=1.0)
    gate = MotionGate(cfg)
    run(gate, [noisy(scene, rng) for _ in range(10)])
    moving = [noisy(with_box(scene, 20 + 8 * k, 100, 48, 32), rng) for k in range(20)]
    parked = [noisy(with_box(scene, 20 + 8 * 19, 100, 48, 32), rng) for _ in range(100)]
    decisions = run(gate, moving + parked, t0=1.0)
    assert [d.reason for d in decisions[:20]] == ["motion"] * 20
    labels = [d.reason for d in decisions[20:]]
    motion_end = labels.index("hold")
    # a contrast of about 100 grey levels falls under 25 in adapt_s * ln(4) = 1.4 s
    assert 5 <= motion_end <= 2 * FPS and set(labels[:motion_end]) == {"motion"}
    assert labels[motion_end:] == ["hold"] * (2 * FPS) + ["still"] * (80 - motion_end)


def test_ignore_mask_hides_blinking_timestamp():
    rng = np.random.default_rng(6)
    scene = make_scene()
    stamp = (0, 0, 96, 16)  # top-left corner, 2 % of the frame, blinking every other frame
    frames = [noisy(with_box(scene, *stamp, value=255 if k % 2 else 0), rng) for k in range(50)]
    plain = MotionGate(MotionConfig(enabled=True, keepalive_s=1000.0, min_area=0.005))
    assert reasons(run(plain, frames))["motion"] > 40
    box = [[0.0, 0.0], [0.3, 0.0], [0.3, 0.07], [0.0, 0.07]]
    masked = MotionGate(MotionConfig(enabled=True, keepalive_s=1000.0, ignore=[box]))
    assert reasons(run(masked, frames)) == {"warmup": 1, "still": 49}
    # motion outside the mask is still seen
    moved = masked.decide(noisy(with_box(scene, 150, 150, 48, 32), rng), 5.1)
    assert moved.reason == "motion"


def test_frame_size_change_reinitialises():
    rng = np.random.default_rng(7)
    gate = MotionGate(MotionConfig(enabled=True, keepalive_s=1000.0))
    run(gate, [noisy(make_scene(), rng) for _ in range(5)])
    big = cv2.resize(make_scene(seed=8), (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST)
    decisions = [gate.decide(noisy(big, rng), 1.0 + i / FPS) for i in range(5)]
    assert [d.reason for d in decisions] == ["warmup"] + ["still"] * 4


def test_time_going_backwards_counts_as_no_time():
    rng = np.random.default_rng(9)
    scene = make_scene()
    boxed = with_box(scene, 0, 100, 48, 32)
    gate = MotionGate(MotionConfig(enabled=True, keepalive_s=10.0, hold_s=1.0))
    assert gate.decide(noisy(scene, rng), 100.0).reason == "warmup"
    assert gate.decide(noisy(scene, rng), 103.0).reason == "still"
    # the clock jumps back an hour: no keep-alive falls due, none is pushed back
    assert gate.decide(noisy(scene, rng), -3600.0).reason == "still"
    assert gate.decide(noisy(scene, rng), 109.9).reason == "still"
    assert gate.decide(noisy(scene, rng), 110.0).reason == "keepalive"
    assert gate.decide(noisy(boxed, rng), 111.0).reason == "motion"
    # no time passed, so the background took nothing of the box in: still motion
    late = gate.decide(noisy(boxed, rng), 50.0)
    assert late.reason == "motion" and late.changed > 0.01


def test_image_must_be_bgr_uint8():
    gate = MotionGate(MotionConfig())
    with pytest.raises(ValueError, match=r"shape \(H, W, 3\), but got uint8 \(10, 10\)"):
        gate.decide(np.zeros((10, 10), np.uint8), 0.0)


# --- config --------------------------------------------------------------------------------


def test_defaults_are_off():
    cfg = MotionConfig()
    assert not cfg.enabled and cfg.preset is None and not cfg.publish_skipped
    assert (cfg.sensitivity, cfg.min_area, cfg.keepalive_s, cfg.hold_s, cfg.width) == (
        25,
        0.005,
        30.0,
        2.0,
        160,
    )


@pytest.mark.parametrize("preset", sorted(PRESETS))
def test_preset_fills_defaults_and_explicit_keys_win(preset):
    cfg = MotionConfig.model_validate({"preset": preset}, strict=True)
    assert cfg.enabled
    for key, value in PRESETS[preset].items():
        assert getattr(cfg, key) == value
    mine = MotionConfig.model_validate(
        {"preset": preset, "sensitivity": 99, "enabled": False}, strict=True
    )
    assert (mine.sensitivity, mine.enabled) == (99, False)
    assert mine.min_area == PRESETS[preset]["min_area"]


@pytest.mark.parametrize(
    ("data", "field", "expected"),
    [
        ({"preset": "garage"}, "preset", "'camera_trap' or 'shelf'"),
        ({"sensitivity": 0}, "sensitivity", "greater than or equal to 1"),
        ({"sensitivity": 300}, "sensitivity", "less than or equal to 255"),
        ({"min_area": 0}, "min_area", "greater than 0"),
        ({"min_area": 1.5}, "min_area", "less than or equal to 1"),
        ({"keepalive_s": 0}, "keepalive_s", "greater than 0"),
        ({"hold_s": -1}, "hold_s", "greater than or equal to 0"),
        ({"width": 16}, "width", "greater than or equal to 32"),
        ({"ignore": [[[0, 0], [1, 0]]]}, "ignore", "needs 3 to 64 points [x, y], but got 2"),
        ({"ignore": [[[0, 0], [1.5, 0], [1, 1]]]}, "ignore", "each from 0 to 1"),
        ({"sensitivty": 10}, "sensitivty", "Extra inputs are not permitted"),
    ],
)
def test_bad_values_are_refused_naming_the_field(data, field, expected):
    with pytest.raises(ValidationError) as info:
        MotionConfig.model_validate(data, strict=True)
    (error,) = info.value.errors()
    assert error["loc"][0] == field
    assert expected in error["msg"]


def test_yaml_example_from_docs():
    cfg = MotionConfig.model_validate(
        {"preset": "shelf", "ignore": [[[0, 0], [0.3, 0], [0.3, 0.06], [0, 0.06]]]}, strict=True
    )
    assert cfg.enabled and cfg.sensitivity == PRESETS["shelf"]["sensitivity"]
    assert len(cfg.ignore) == 1
