"""`workbench export`: the backbone loads into plain timm with strict=True and gives the run's features."""

from __future__ import annotations

import json

import pytest
import torch

from workbench.cli.main import main


def test_export_loads_into_plain_timm_and_matches_the_run(tiny_run, tmp_path, capsys):
    import safetensors.torch
    import timm

    from workbench.runs import load_run

    out = tmp_path / "backbone.safetensors"
    assert main(["export", str(tiny_run), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    card = json.loads(out.with_suffix(".json").read_text())
    assert card["model"] == "resnet10t" and card["input"]["size"] == [3, 32, 32] and card["feature_dim"] > 0
    assert card["provenance"]["method"] == "simclr" and card["provenance"]["checkpoint"] == "last.safetensors"
    assert "strict=True" in printed and card["load"][1] in printed
    model = timm.create_model(card["model"], num_classes=0)
    model.load_state_dict(safetensors.torch.load_file(str(out)), strict=True)
    model.eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    mean = torch.tensor(card["input"]["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(card["input"]["std"]).view(1, 3, 1, 1)
    run = load_run(tiny_run)
    with torch.no_grad():
        torch.testing.assert_close(model((x - mean) / std), run.method.backbone(x), rtol=1e-4, atol=1e-5)


def test_export_bad_input_is_one_line(tiny_run, tmp_path, capsys):
    assert main(["export", str(tiny_run), "--out", str(tmp_path / "b.pt")]) == 2
    assert main(["export", str(tmp_path), "--out", str(tmp_path / "b.safetensors")]) == 2
    err = [x for x in capsys.readouterr().err.splitlines() if x.strip()]
    assert len(err) == 2 and ".safetensors" in err[0] and "not a run folder" in err[1]


@pytest.mark.parametrize("name", ["vit_tiny_patch16_224"])
def test_export_card_carries_the_image_size_for_vits(name, tmp_path):
    from workbench.runs.export import _load_lines

    assert "img_size=64" in _load_lines(name, "b.safetensors", 64, False)[1]
