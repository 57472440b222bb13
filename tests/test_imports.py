"""The on-device agent never imports torch or the trainer, even while running a model."""

import subprocess
import sys

from tools.toy_models import colour_blocks_bundle

PROBE = """
import sys
import numpy as np
from edge_agent import cli, pipeline
from edge_agent.bundle import load_bundle
from edge_agent.decoders import build_decoder
from edge_agent.preprocess import Preprocessor
from edge_agent.runtimes import load_runtime
b = load_bundle(sys.argv[1])
rt = load_runtime("onnx", b, threads=1)
t, tr = Preprocessor(b.manifest.input)(np.zeros((48, 64, 3), np.uint8))
build_decoder(b.manifest)(rt.run(t), tr)
bad = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision", "trainer"))
print(",".join(bad))
"""


def test_agent_path_never_imports_torch_or_trainer(tmp_path):
    bundle = colour_blocks_bundle(tmp_path / "b")
    out = subprocess.run([sys.executable, "-c", PROBE, str(bundle)], capture_output=True,
                         text=True, check=True)
    assert out.stdout.strip() == "", f"imported: {out.stdout}"
