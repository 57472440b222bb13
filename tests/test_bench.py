"""edge-agent bench measures every variant, recommends one, and writes it into a config.
(Behaviour only; the speed figures themselves are printed by bench/, never asserted.)"""

from pathlib import Path

import pytest
import yaml

from edge_agent.cli import main
from edge_agent.config import load_config
from tools.toy_models import colour_blocks_bundle


def test_bench_table_recommendation_and_apply(tmp_path, broker, capsys):
    bundle = colour_blocks_bundle(tmp_path / "b")
    config = tmp_path / "agent.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "model": {"bundle": str(bundle), "threads": 2},
                "sources": [{"id": "cam", "uri": "0"}],
            }
        )
    )
    code = main(
        [
            "bench",
            "--bundle",
            str(bundle),
            "--threads",
            "1",
            "--frames",
            "10",
            "--rounds",
            "2",
            "--mqtt-host",
            broker.host,
            "--mqtt-port",
            str(broker.port),
            "--apply",
            str(config),
            "--sources",
            "1,2",
            "--sources-seconds",
            "1",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0, out
    for path in ("runtime", "decode", "agent", "opencv-dnn"):
        assert f" {path} " in out
    # the multi-source rows: one per source count, each source served about its fair share
    multi = [line.split() for line in out.splitlines() if line.startswith("onnx fp32 1t")]
    multi = [cols for cols in multi if cols[3].isdigit()]  # variant(3) sources results/s x min
    assert [int(cols[3]) for cols in multi] == [1, 2]
    assert all(float(cols[4]) > 0 and float(cols[6]) > 0.5 for cols in multi), out
    assert "fastest here: onnx fp32 1t" in out
    cfg = load_config(config)
    assert (cfg.model.runtime, cfg.model.threads) == ("onnx", 1)
    assert (tmp_path / "agent.yaml.bak").exists()


def test_bench_bad_bundle(tmp_path, capsys):
    assert main(["bench", "--bundle", str(tmp_path / "missing")]) == 2
    assert "no such folder or file" in capsys.readouterr().err


def test_recommend_picks_the_fastest_whole_agent_row():
    from edge_agent.bench import Row, recommend

    rows = [
        Row("onnx fp32 1t", "runtime", 500.0, 2.0, 2.0, "onnx", 1, "a"),  # faster, but bare loop
        Row("onnx fp32 1t", "agent", 90.0, 11.0, 12.0, "onnx", 1, "a"),
        Row("tflite int8 2t", "agent", 120.0, 8.0, 9.0, "tflite", 2, "b"),
        Row("opencv-dnn fp32", "opencv-dnn", 300.0, 3.0, 4.0),
    ]
    best = recommend(rows)
    assert best is not None and (best.runtime, best.threads, best.bundle) == ("tflite", 2, "b")
    assert recommend([r for r in rows if r.path != "agent"]) is None


def test_rows_pool_interleaved_rounds_and_keep_each_rounds_figure(tmp_path, broker):
    from edge_agent.bench import run_bench
    from edge_agent.config import MqttConfig

    bundle = colour_blocks_bundle(tmp_path / "b")
    rows = run_bench(
        [bundle], None, MqttConfig(host=broker.host, port=broker.port), [1], frames=8, rounds=2
    )
    paths = {r.path: r for r in rows}
    assert set(paths) == {"runtime", "decode", "agent", "opencv-dnn"}
    for row in rows:
        assert len(row.round_fps) == 2
        # the pooled figure lies between the rounds' own figures
        assert min(row.round_fps) - 1e-9 <= row.fps <= max(row.round_fps) + 1e-9


def test_bench_arguments_out_of_range_name_the_flag(tmp_path, capsys):
    for flag, value in (("--rounds", "0"), ("--frames", "1"), ("--threads", "1,0")):
        with pytest.raises(SystemExit) as info:
            main(["bench", "--bundle", str(tmp_path), flag, value])
        assert info.value.code == 2
        assert f"argument {flag}: expected an integer" in capsys.readouterr().err


def test_bench_missing_source_is_a_clear_error(tmp_path, capsys):
    bundle = colour_blocks_bundle(tmp_path / "b")
    code = main(
        [
            "bench",
            "--bundle",
            str(bundle),
            "--source",
            str(tmp_path / "nope.mp4"),
            "--threads",
            "1",
            "--frames",
            "3",
            "--rounds",
            "1",
            "--mqtt-port",
            "9",
        ]
    )
    assert code == 2
    assert "video file not found" in capsys.readouterr().err


SOURCES = [{"id": "cam", "uri": "0"}]


@pytest.mark.parametrize(
    ("config_in", "bundle_in", "written"),
    [
        ("site", "site/b", "b"),  # the bundle in the config's folder
        ("site/configs", "site/bundles/b", "../bundles/b"),  # beside it
        ("site/configs/agent", "bundles/b", None),  # far away: absolute
    ],
)
def test_apply_writes_the_bundle_relative_to_the_config_not_the_cwd(
    tmp_path, monkeypatch, config_in, bundle_in, written
):
    import os

    from edge_agent.bench import Row, apply_to_config

    bundle = colour_blocks_bundle(tmp_path / bundle_in)
    config = tmp_path / config_in / "agent.yaml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(yaml.safe_dump({"model": {"bundle": "old"}, "sources": SOURCES}))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # bench ran here, and names the bundle from here
    best = Row("onnx fp32 1t", "agent", 90.0, 11.0, 12.0, "onnx", 1, os.path.relpath(bundle))
    apply_to_config(Path(os.path.relpath(config)), best)
    entry = yaml.safe_load(config.read_text())["model"]["bundle"]
    assert entry == (written or str(bundle))
    monkeypatch.chdir(tmp_path)  # the agent starts somewhere else again
    assert load_config(config).model.bundle.resolve() == bundle.resolve()


def test_apply_keeps_an_absolute_bundle_path_absolute(tmp_path):
    from edge_agent.bench import Row, apply_to_config

    bundle = colour_blocks_bundle(tmp_path / "b")
    config = tmp_path / "agent.yaml"
    old = {"model": {"bundle": str(tmp_path / "old")}, "sources": SOURCES}
    config.write_text(yaml.safe_dump(old))
    apply_to_config(config, Row("onnx fp32 1t", "agent", 90.0, 11.0, 12.0, "onnx", 1, str(bundle)))
    assert yaml.safe_load(config.read_text())["model"]["bundle"] == str(bundle)
