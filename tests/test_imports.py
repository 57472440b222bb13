"""The on-device agent never imports torch or the trainer, even while running a model, and
leaves cryptography (~6 MB of RSS) alone unless signatures are required, and the archive
machinery (tarfile, gzip) unless the bundle is an archive."""

import subprocess
import sys

from tests.helpers.clips import write_clip
from tools.toy_models import colour_blocks_bundle

PROBE = """
import sys
from edge_agent.config import AgentConfig
from edge_agent.pipeline import Agent
cfg = AgentConfig.model_validate({
    "model": {"bundle": sys.argv[1], "threads": 1},
    "sources": [{"id": "clip", "uri": sys.argv[2]}],
    "mqtt": {"host": "127.0.0.1", "port": 9},
})
agent = Agent(cfg)
agent.start()
agent.wait()
agent.close()
assert agent.frames_done() > 0
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "trainer",
                                                 "cryptography", "tarfile", "gzip"))
print(",".join(bad))
"""


def test_agent_run_never_imports_torch_trainer_or_what_it_does_not_need(tmp_path):
    bundle = colour_blocks_bundle(tmp_path / "b")
    clip = write_clip(tmp_path / "clip.mp4")
    out = subprocess.run(
        [sys.executable, "-c", PROBE, str(bundle), str(clip)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "", f"imported: {out.stdout}"
