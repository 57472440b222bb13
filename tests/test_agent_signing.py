"""The agent, as a user runs it, refuses unsigned or wrongly signed bundles when keys are set."""

import json

from edge_agent.cli import main
from tools.toy_models import colour_blocks_bundle
from trainer.cli import main as trainer_main


def write_config(tmp_path, pub) -> str:
    cfg = {
        "model": {"bundle": "b", "public_keys": [str(pub)]},
        "sources": [{"id": "cam", "uri": "0"}],
    }
    path = tmp_path / "agent.yaml"
    path.write_text(json.dumps(cfg))
    return str(path)


def test_check_config_with_signing_keys(tmp_path, capsys):
    bundle = colour_blocks_bundle(tmp_path / "b")
    assert trainer_main(["keygen", "--out", str(tmp_path / "keys")]) == 0
    assert trainer_main(["keygen", "--out", str(tmp_path / "other")]) == 0
    config = write_config(tmp_path, tmp_path / "keys" / "edgesight.pub")
    capsys.readouterr()

    assert main(["check-config", config]) == 2  # unsigned
    assert "not signed (no manifest.sig)" in capsys.readouterr().err

    assert (
        trainer_main(["sign", str(bundle), "--key", str(tmp_path / "other" / "edgesight.key")]) == 0
    )
    capsys.readouterr()
    assert main(["check-config", config]) == 2  # signed, but by a key the agent does not trust
    assert "does not verify" in capsys.readouterr().err

    assert (
        trainer_main(["sign", str(bundle), "--key", str(tmp_path / "keys" / "edgesight.key")]) == 0
    )
    capsys.readouterr()
    assert main(["check-config", config]) == 0
    assert "signed by" in capsys.readouterr().out

    (bundle / "extra.bin").write_bytes(b"smuggled")  # not listed in the signed manifest
    assert main(["check-config", config]) == 2
    assert "extra.bin" in capsys.readouterr().err
