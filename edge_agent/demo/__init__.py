"""``edge-agent demo``: the whole agent path on a generated clip, offline, in seconds.

A hand takes three items off a shelf and later puts them back, then a bag slides along the top
shelf across a counting line and back (clip.py composes the clip from committed assets on the
first run). The bundled shelf detector counts the products frame by frame; the source's stages
track them, count the line's crossings and watch two shelf slots go out of stock and come back,
with annotated snapshots (analytics.py). The agent publishes everything over MQTT: to the
broker at --mqtt-host/--mqtt-port, or, when none answers there, to an embedded amqtt broker it
starts on 127.0.0.1. Meanwhile a table of counts per second of video prints live, with the slot
events and line crossings as they happen, and annotated frames go to ``OUT/annotated/``.

The detector (:data:`BUNDLE`) is an SSDLite trained by our own trainer on synthetic shelves
(tools/build_demo_bundle.sh rebuilds it). Labels always come from the bundle's manifest.
"""

from __future__ import annotations

import shutil
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from edge_agent.bundle import BundleError, load_bundle
from edge_agent.cli.common import EXIT_BAD_INPUT, EXIT_FAILED, EXIT_OK
from edge_agent.config import AgentConfig, ModelConfig, MqttConfig, SourceConfig
from edge_agent.config.mqtt_features import HomeAssistantConfig
from edge_agent.demo import clip
from edge_agent.demo.analytics import LINE_NAME, Happenings, demo_stages
from edge_agent.demo.broker import (
    BrokerUnavailable,
    EmbeddedBroker,
    port_is_free,
    probe_mqtt,
)
from edge_agent.demo.report import AnnotatedFrames, CountsTable
from edge_agent.pipeline import Agent
from edge_agent.runtimes import ModelRuntimeError
from edge_agent.sources import SourceError

#: The trained shelf detector (labels can, bottle, box, bag), INT8 ONNX.
BUNDLE = Path(__file__).parent / "shelf_bundle"
#: Play the clip at its own frame rate, so the table fills in as the video plays; False runs
#: as fast as the model goes (the tests do).
REALTIME = True
DEVICE_ID = "demo"
CLIENT_ID = "edgesight-demo"
#: Every topic the demo publishes is under this (the default prefix, then the device id).
DEVICE_TOPIC_PREFIX = f"{MqttConfig().topic_prefix}/{DEVICE_ID}"
#: Part of the clip's file name (bumped in clip.py with the drawing), so demo folders made by
#: an older version make the clip again instead of reusing theirs.
CLIP_VERSION = clip.CLIP_VERSION
ANNOTATED_DIR = "annotated"
#: The agent's state folder inside the demo's output folder (snapshots, line tallies).
STATE_DIR = "state"
EMBEDDED_HOST = "127.0.0.1"


@dataclass(frozen=True)
class Scenario:
    """A bundle and the clip made for it."""

    source_id: str
    bundle: Path
    story: str
    fps: int
    frames: int
    write_clip: Callable[[Path], int]

    @property
    def clip_name(self) -> str:
        return f"{self.source_id}-v{CLIP_VERSION}.mp4"


def scenario() -> Scenario:
    """The shelf clip with the bundled shelf detector."""
    return Scenario(
        "shelf",
        BUNDLE,
        "a hand takes three items off a shelf and puts them back, then a bag slides across "
        "the counting line and back",
        clip.CLIP_FPS,
        clip.CLIP_FRAMES,
        clip.write_clip,
    )


def ensure_clip(sc: Scenario, out: Path) -> Path:
    """The scenario's clip in ``out``, made on the first run (written aside, then renamed, so
    an interrupted run leaves no half clip to reuse)."""
    path = out / sc.clip_name
    if path.is_file():
        return path
    partial = path.with_name(f".{path.stem}.partial{path.suffix}")
    started = time.monotonic()
    sc.write_clip(partial)
    partial.replace(path)
    print(
        f"made the clip {path} ({sc.frames} frames, {time.monotonic() - started:.1f} s)", flush=True
    )
    return path


@dataclass(frozen=True)
class Target:
    """Where the agent publishes, and whose broker is there."""

    host: str
    port: int
    broker: Literal["given", "embedded", "none"]


def choose_broker(host: str, port: int, stack: ExitStack) -> Target:
    """The broker at host:port if it lets an anonymous client in; else an embedded one on
    127.0.0.1 (the same port if free), closed by ``stack``; else host:port, undelivered."""
    why_not = probe_mqtt(host, port)
    if why_not is None:
        print(f"publishing to the MQTT broker at {host}:{port}", flush=True)
        return Target(host, port, "given")
    try:
        embedded = EmbeddedBroker(EMBEDDED_HOST, port if port_is_free(EMBEDDED_HOST, port) else 0)
        embedded.start()
    except BrokerUnavailable as exc:
        print(
            f"no MQTT broker at {host}:{port} ({why_not}), and {exc}; the model runs "
            "anyway, but its results will not be delivered",
            file=sys.stderr,
            flush=True,
        )
        return Target(host, port, "none")
    stack.callback(embedded.close)
    print(
        f"no MQTT broker at {host}:{port} ({why_not}): started an embedded one (amqtt) on "
        f"{embedded.host}:{embedded.port} for the demo",
        flush=True,
    )
    return Target(embedded.host, embedded.port, "embedded")


def watch_command(target: Target) -> str:
    topics = f"'{DEVICE_TOPIC_PREFIX}/#'"
    if shutil.which("mosquitto_sub") or not shutil.which("amqtt_sub"):
        return f"mosquitto_sub -h {target.host} -p {target.port} -v -t {topics}"
    return f"amqtt_sub --url mqtt://{target.host}:{target.port} -t {topics}"


def run_demo(out: Path, mqtt_host: str, mqtt_port: int, *, realtime: bool | None = None) -> int:
    """Run the demo; 0 when every frame of the clip was processed."""
    sc = scenario()
    try:
        bundle = load_bundle(sc.bundle)
    except BundleError as exc:
        print(f"error: the demo's bundle is broken: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    labels = bundle.manifest.labels
    out.mkdir(parents=True, exist_ok=True)
    clip_path = ensure_clip(sc, out)
    frames = AnnotatedFrames(out / ANNOTATED_DIR)
    frames.clear()
    # The line's tallies and the slots' states survive a restart: a replay starts afresh.
    state = out / STATE_DIR
    shutil.rmtree(state, ignore_errors=True)
    happenings = Happenings(sc.fps)
    table = CountsTable(labels, sc.fps)
    realtime = REALTIME if realtime is None else realtime
    with ExitStack() as stack:  # the broker, if embedded, closes after the agent
        target = choose_broker(mqtt_host, mqtt_port, stack)
        cfg = AgentConfig(
            device_id=DEVICE_ID,
            model=ModelConfig(bundle=sc.bundle),
            sources=[
                SourceConfig(
                    id=sc.source_id,
                    uri=str(clip_path),
                    fps_limit=sc.fps if realtime else None,
                    stages=demo_stages(labels),
                )
            ],
            mqtt=MqttConfig(
                host=target.host,
                port=target.port,
                client_id=CLIENT_ID,
                # amqtt, the embedded broker, speaks 3.1.1 only.
                protocol="3.1.1" if target.broker == "embedded" else "5",
                # A demo device must not appear in the Home Assistant of whoever runs the
                # demo against their own broker, and linger there as unavailable.
                home_assistant=HomeAssistantConfig(discovery=False),
            ),
            state_dir=state,
        )
        if target.broker != "none":
            print(
                f"watch the messages from another terminal while the demo runs: "
                f"{watch_command(target)}"
            )
        print(
            f"\n{sc.story}\n{clip_path.name} -> {bundle.model_id} ({', '.join(labels)}) -> "
            f"mqtt://{target.host}:{target.port}\n",
            flush=True,
        )
        table.header()
        agent = Agent(cfg, sinks=[table, frames, happenings])
        started = time.monotonic()
        try:
            with agent:
                agent.wait()
        except (BundleError, ModelRuntimeError, SourceError) as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        except KeyboardInterrupt:
            print("\ninterrupted", file=sys.stderr)
            return EXIT_FAILED
        elapsed = time.monotonic() - started
        table.finish()
    _summary(sc, table, elapsed, frames, target, agent)
    _story(happenings, state / "sources" / sc.source_id / "snapshots")
    totals = agent.stats.totals()
    failed = totals["frame_errors"] + totals["stage_errors"] + totals["sink_errors"]
    return EXIT_OK if agent.frames_done() == sc.frames and not failed else EXIT_FAILED


def _summary(
    sc: Scenario,
    table: CountsTable,
    elapsed: float,
    frames: AnnotatedFrames,
    target: Target,
    agent: Agent,
) -> None:
    model = agent.stats.model()
    model_ms = sum(h.percentile(50) or 0.0 for h in (model.preprocess_ms, model.inference_ms))
    print(
        f"\nprocessed {agent.frames_done()} of {sc.frames} frames in {elapsed:.1f} s "
        f"(model {model_ms:.1f} ms per frame)"
    )
    rows = table.rows
    if rows:
        totals = [sum(r.counts.values()) for r in rows]
        print(
            f"counted {totals[0]} at the start, {min(totals)} at the fewest, {totals[-1]} at "
            f"the end; {rows[-1].gone} went out of view, {rows[-1].came} came into view"
        )
    print(
        f"annotated frames: {frames.folder.resolve()} ({frames.written} JPEGs, one frame in "
        f"{frames.every})"
    )
    published = agent.stats.publisher()
    if published.connects.value:
        where = "the broker"
        if target.broker == "embedded":
            where = "the embedded amqtt broker (stopped with the demo)"
        print(
            f"published {published.published.value} MQTT messages under {DEVICE_TOPIC_PREFIX}/ to "
            f"{where} at {target.host}:{target.port}"
        )
    else:
        print(
            f"no MQTT broker answered at {target.host}:{target.port}: results were computed "
            "but not delivered (install amqtt for the embedded broker: pip install "
            "'edgesight[demo]', or pass --mqtt-host/--mqtt-port)",
            file=sys.stderr,
        )


def _story(happenings: Happenings, snapshots: Path) -> None:
    """What the counting stages concluded: the line's totals, the slot events, snapshots."""
    line = happenings.line
    print(f"line {LINE_NAME}: {line['in']} in, {line['out']} out")
    slot_events = [e for e in happenings.events if " slot " in e]
    print(f"slot events: {'; '.join(slot_events) if slot_events else 'none'}")
    written = sorted(snapshots.glob("*.jpg")) if snapshots.is_dir() else []
    print(f"snapshots: {snapshots.resolve()} ({len(written)} JPEGs)")
