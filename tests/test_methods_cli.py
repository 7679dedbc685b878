"""Every registered method pretrains from the CLI on the synthetic set it needs (generated on demand)."""

from __future__ import annotations

import json

import pytest

from workbench.cli.main import main
from workbench.methods import METHODS

BACKBONE = {"mae": "vit_tiny_patch16_224"}
SIZE = {"simfle": "64"}  # SimFLE ranks patches on the CNN's last map: needs >= 2x2 at stride 32


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(METHODS))
def test_pretrain_each_method_on_its_synthetic_set(name, tmp_path, capsys):
    out = tmp_path / name
    code = main(["pretrain", "--method", name, "--preset", "cpu", "--backbone", BACKBONE.get(name, "resnet10t"),
                 "--image-size", SIZE.get(name, "32"), "--batch-size", "8", "--epochs", "1", "--max-steps", "2",
                 "--device", "cpu", "--train-opt", "knn_every=0", "--quiet", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    assert "max_steps" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["config"]["method"] == name and cfg["method_config_resolved"]
    assert (out / "checkpoints" / "last.safetensors").is_file()


@pytest.mark.parametrize("name,column", [("sslfer", "clip"), ("clmex", "group")])
def test_missing_metadata_is_named(name, column, tiny_synth, tmp_path, capsys):
    code = main(["pretrain", "--method", name, "--data", str(tiny_synth), "--backbone", "resnet10t",
                 "--image-size", "32", "--max-steps", "1", "--device", "cpu", "--out", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert code == 2 and f"'{column}'" in err and len(err.strip().splitlines()) == 1
