"""edge-agent bench measures every variant, recommends one, and writes it into a config.
(Behaviour only; the speed figures themselves are printed by bench/, never asserted.)"""

import yaml

from edge_agent.cli import main
from edge_agent.config import load_config
from tools.toy_models import colour_blocks_bundle


def test_bench_table_recommendation_and_apply(tmp_path, broker, capsys):
    bundle = colour_blocks_bundle(tmp_path / "b")
    config = tmp_path / "agent.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"bundle": str(bundle), "threads": 2},
        "sources": [{"id": "cam", "uri": "0"}],
    }))
    code = main(["bench", "--bundle", str(bundle), "--threads", "1", "--frames", "10",
                 "--mqtt-host", broker.host, "--mqtt-port", str(broker.port),
                 "--apply", str(config)])
    out = capsys.readouterr().out
    assert code == 0, out
    for path in ("runtime", "decode", "agent", "opencv-dnn"):
        assert f" {path} " in out
    assert "fastest here: onnx fp32 1t" in out
    cfg = load_config(config)
    assert (cfg.model.runtime, cfg.model.threads) == ("onnx", 1)
    assert (tmp_path / "agent.yaml.bak").exists()


def test_bench_bad_bundle(tmp_path, capsys):
    assert main(["bench", "--bundle", str(tmp_path / "missing")]) == 2
    assert "not a directory" in capsys.readouterr().err
