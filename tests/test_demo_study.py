"""The demo and the study: floors, ceilings, intervals in every figure, honest verdicts (tiny budgets)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from workbench.cli.main import main
from workbench.comparison import StudyConfig, pair_verdicts, run_study
from workbench.demo import FIGURES, DemoConfig, run_demo, story_lines

TINY = {"identities": 8, "images_per_identity": 8, "image_size": 32, "epochs": 1, "batch_size": 16,
        "backbone": "resnet10t", "methods": ("simclr", "sslfer"), "device": "cpu", "budget": "cpu"}


def _row(model, role, lin, leak, width=0.05, people=12):
    def cell(key, v):
        return {key: v, f"{key}_low": None if v is None else v - width, f"{key}_high": None if v is None else v + width}

    return {"model": model, "role": role, **cell("expr_linear", lin), **cell("expr_knn", None),
            **cell("identity_linear", leak), "test_people": people, "train_seconds": 1.0}


def test_story_states_wins_only_when_intervals_separate():
    table = pd.DataFrame([
        _row("raw pixels", "floor", 0.8, 0.99), _row("random init", "floor", 0.45, 0.8),
        _row("simclr", "generic", 0.60, 0.90), _row("sslfer", "face-specific", 0.75, 0.70),
        _row("byol", "generic", 0.50, 0.85), _row("contrawarping", "face-specific", 0.52, 0.84),
        _row("supervised (same backbone)", "ceiling", 0.9, None),
    ])
    lines = story_lines(table, chance=0.125)
    assert "learned expression beyond the untrained network" in lines[0] and "sslfer" in lines[0]
    assert any(line.startswith("sslfer beats simclr") and "leaks less identity" in line for line in lines)
    assert any(line.startswith("contrawarping does not beat byol") and "same identity leakage" in line
               for line in lines)


def test_demo_end_to_end_writes_intervals_for_every_figure(tmp_path, capsys):
    tiny = {**TINY, "methods": ("simclr", "sslfer", "sslfer[face_swap=false;mask_fn=false]")}
    table = run_demo(tmp_path, DemoConfig(**tiny), progress=True)
    printed = capsys.readouterr().out
    assert "95% CI" in printed and "random init" in printed and "landmark geometry" in printed
    models = table["model"].tolist()
    assert models[:3] == ["raw pixels", "random init", "landmark geometry"]
    assert {"simclr", "sslfer", "supervised (same backbone)"} <= set(models)
    # an ablation variant: the cpu preset with the named options changed, in its own run folder
    variant = table.set_index("model").loc["sslfer[face_swap=false;mask_fn=false]"]
    assert variant["role"] == "face-specific variant" and variant["expr_linear"] is not None
    saved = json.loads((tmp_path / "runs" / "sslfer_face_swap=false,mask_fn=false" / "config.json").read_text())
    method_config = saved["config"]["method_config"]
    assert method_config["face_swap"] in (False, "false") and method_config["mask_fn"] in (False, "false")
    assert json.loads((tmp_path / "runs" / "sslfer" / "config.json").read_text())["config"]["method_config"].get(
        "face_swap", True) in (True, "true")
    data = json.loads((tmp_path / "results.json").read_text())
    assert data["story"] and "cross-validation over all 8 people" in data["protocol"]["expression"]  # 2 test people < 12
    for row in data["results"]:
        assert row["test_people"] >= 2
        for key in FIGURES:
            if row[key] is None:
                continue
            assert row[f"{key}_low"] <= row[key] + 1e-9 <= row[f"{key}_high"] + 2e-9
        if row["role"] in ("generic", "face-specific", "floor"):
            assert all(row[k] is not None for k in FIGURES)
    assert (tmp_path / "data" / "pixel_stats" / "result.json").is_file()
    assert "| model | role | expression linear" in (tmp_path / "results.md").read_text()
    # a rerun reuses the runs and gives the same table
    again = run_demo(tmp_path, DemoConfig(**tiny), progress=False)
    pd.testing.assert_frame_equal(table.drop(columns="train_seconds"), again.drop(columns="train_seconds"))


def test_study_stacks_seeds_and_lists_skipped_methods(tmp_path):
    from workbench.data.synth import SynthConfig, generate_dataset

    real = generate_dataset(SynthConfig(identities=8, images_per_identity=8, size=32, seed=5),
                            tmp_path / "real", progress=False)
    no_landmarks = tmp_path / "real" / "plain.csv"
    pd.read_csv(real).drop(columns=["landmarks"]).to_csv(no_landmarks, index=False)
    cfg = StudyConfig(seeds=(0, 1), methods=("simclr", "sslfer"), manifests=(str(no_landmarks),), image_size=32,
                      epochs=1, identities=8, images_per_identity=8, batch_size=16, backbone="resnet10t",
                      device="cpu")
    stacked = run_study(tmp_path / "study", cfg, progress=False, command="workbench study --seeds 0,1")
    assert set(stacked["data"]) == {"synthetic", "plain"} and set(stacked["seed"]) == {0, 1}
    assert "sslfer" not in set(stacked.loc[stacked["data"] == "plain", "model"])
    text = (tmp_path / "study" / "study.md").read_text()
    assert "plain: sslfer skipped (needs landmarks" in text and "workbench study --seeds 0,1" in text
    assert "sslfer vs simclr" in text and "of 2 seeds" in text
    assert len(pair_verdicts(stacked)) == 1  # only the synthetic set has both methods of the pair


def test_study_and_demo_bad_input_is_one_line(tmp_path, capsys):
    assert main(["study", "--out", str(tmp_path), "--synthetic", "false"]) == 2
    assert main(["study", "--out", str(tmp_path), "--manifests", str(tmp_path / "nope.csv")]) == 2
    assert main(["demo", "--out", str(tmp_path), "--methods", "nosuchmethod"]) == 2
    assert main(["study", "--out", str(tmp_path), "--methods", "sslfer[nosuch=1]"]) == 2
    assert main(["demo", "--out", str(tmp_path), "--methods", "sslfer[face_swap=maybe]"]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(err) == 5 and all(line.startswith("error: ") for line in err)
    assert "unknown option 'nosuch'" in err[3] and "face_swap" in err[4]


@pytest.mark.parametrize("budget,device,epochs", [("auto", "cpu", 20), ("gpu", "cpu", 60), ("cpu", "cuda", 20)])
def test_gpu_budget_is_bigger(budget, device, epochs):
    import torch

    from workbench.demo import _resolved

    assert _resolved(DemoConfig(budget=budget), torch.device(device)).epochs == epochs


def test_data_set_names_are_short_and_unique():
    from workbench.comparison import data_set_names

    assert data_set_names(("/x/jaffe-aligned/manifest.csv", "/y/ck48-aligned/manifest.csv", "/z/ck48.csv",
                           "/w/ck48-aligned/manifest.csv", "/v/synthetic.csv")) == [
        "jaffe-aligned", "ck48-aligned", "ck48", "ck48-aligned-2", "synthetic-2"]
