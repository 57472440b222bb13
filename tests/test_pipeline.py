"""Pipeline hand-over: live sources keep only the newest frame, files lose none."""

import threading
import time
from pathlib import Path

import numpy as np

from edge_agent.pipeline import agent as pipeline
from edge_agent.config import AgentConfig
from edge_agent.pipeline.handover import Mailbox
from edge_agent.predictor import Predictor
from edge_agent.sources import SourceStats
from edge_agent.types import Frame
from tests.test_e2e import FRAMES, write_clip
from tools.toy_models import colour_blocks_bundle

INFER_S = 0.04  # the slow model: 25 fps
CAMERA_FPS = 200


class SlowPredictor(Predictor):
    """The real predictor with a model that takes INFER_S per frame."""

    def infer(self, prepared):
        time.sleep(INFER_S)
        return super().infer(prepared)


class FakeCamera:
    """Mimics a live FrameSource: frames at CAMERA_FPS whatever the consumer does."""

    live = True
    kind = "camera"

    def __init__(self, source_id: str, n: int) -> None:
        # mimics sources.FrameSource's public attributes
        self.source_id, self.n = source_id, n
        self.stats = SourceStats(0, 0, 0, 0)
        self.produced: list[Frame] = []

    def frames(self):
        image = np.full((120, 160, 3), 60, np.uint8)
        for seq in range(self.n):
            frame = Frame(image, self.source_id, seq, time.time())
            self.produced.append(frame)
            yield frame
            time.sleep(1 / CAMERA_FPS)

    def close(self) -> None:
        pass


def make_agent(tmp_path: Path, uri: str, monkeypatch) -> tuple[pipeline.Agent, list]:
    monkeypatch.setattr(pipeline, "Predictor", SlowPredictor)
    cfg = AgentConfig.model_validate(
        {
            "device_id": "t",
            "model": {"bundle": str(colour_blocks_bundle(tmp_path / "b"))},
            "sources": [{"id": "cam", "uri": uri}],
            "mqtt": {"host": "127.0.0.1", "port": 9, "reconnect_max_delay_s": 1},  # nobody there
        }
    )
    seen: list[tuple[Frame, float]] = []
    lock = threading.Lock()

    def on_result(result, frame):
        with lock:
            seen.append((frame, time.time()))

    return pipeline.Agent(cfg, on_result=on_result), seen


def test_live_source_keeps_only_the_newest_frame(tmp_path, monkeypatch):
    camera = FakeCamera("cam", n=200)  # 1 s of camera
    monkeypatch.setattr(pipeline, "open_source", lambda cfg, stop: camera)
    agent, seen = make_agent(tmp_path, "0", monkeypatch)
    agent.start()
    agent.wait()
    agent.close()
    processed = [f.seq for f, _ in seen]
    stats = agent.stats["cam"]
    assert 5 < len(processed) < len(camera.produced) / 2  # the model could not keep up
    assert processed == sorted(processed)
    # every frame was either processed or counted as dropped: none is waiting or lost
    assert stats.dropped_frames + len(processed) == len(camera.produced)
    # the newest frame is never dropped: the camera's last frame is the last one processed
    assert processed[-1] == camera.produced[-1].seq


def test_file_source_processes_every_frame_in_order(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4")
    agent, seen = make_agent(tmp_path, str(clip), monkeypatch)
    agent.start()
    agent.wait()
    agent.close()
    assert [f.seq for f, _ in seen] == list(range(FRAMES))
    assert agent.stats["cam"].dropped_frames == 0


def test_mailbox_offer_keeps_only_the_newest_frame():
    box = Mailbox()
    assert box.get(0.01) == (False, None)
    frames = [Frame(np.zeros((2, 2, 3), np.uint8), "s", i, 0.0) for i in range(3)]
    assert box.offer(frames[0]) is False
    assert box.offer(frames[1]) is True  # replaced an untaken frame
    assert box.get(0.01) == (True, frames[1])
    box.offer(frames[2])
    box.close()  # the pending frame still comes out, then the end
    assert box.get(0.01) == (True, frames[2])
    assert box.get(0.01) == (True, None)


def test_mailbox_put_returns_only_once_the_frame_is_taken():
    box, stop = Mailbox(), threading.Event()
    done = threading.Event()

    def capture():
        box.put("frame 1", stop)
        done.set()

    thread = threading.Thread(target=capture)
    thread.start()
    assert not done.wait(0.3)  # nobody took it: capture may not read the next frame yet
    assert box.get(1.0) == (True, "frame 1")
    assert done.wait(1.0)
    thread.join()


def test_mailbox_put_gives_up_on_stop():
    box, stop = Mailbox(), threading.Event()
    result: list[bool] = []
    thread = threading.Thread(target=lambda: result.append(box.put("frame", stop)))
    thread.start()
    stop.set()
    thread.join(2.0)
    assert result == [False]


def test_a_failing_hook_is_counted_and_the_agent_still_finishes(tmp_path, monkeypatch):
    clip = write_clip(tmp_path / "clip.mp4")
    agent, _ = make_agent(tmp_path, str(clip), monkeypatch)

    def broken_hook(result, frame):
        raise RuntimeError("the frame writer's disk is full")

    agent.on_result = broken_hook
    done = threading.Event()

    def run():
        agent.start()
        agent.wait()
        agent.close()
        done.set()

    threading.Thread(target=run, daemon=True).start()
    assert done.wait(60), "the agent hung after its hook raised"
    stats = agent.stats["cam"]
    assert stats.frames == FRAMES and stats.errors == FRAMES
