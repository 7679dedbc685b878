"""The multi-view study end to end on a tiny synthetic multi-view set (CL-MEx vs scratch, per view)."""

from __future__ import annotations

import json

import pandas as pd

from workbench.cli.main import main
from workbench.multiview import MODELS


def test_study_multiview_cli_scores_every_model_per_view_with_intervals(tmp_path, capsys):
    out = tmp_path / "mv"
    code = main(["multiview", "--out", str(out), "--seeds", "0", "--views", "3", "--identities", "12",
                 "--instances-per-identity", "8", "--image-size", "32", "--backbone", "resnet10t", "--epochs", "1",
                 "--finetune-epochs", "1", "--batch-size", "8", "--device", "cpu", "--quiet"])
    assert code == 0
    table = pd.read_csv(out / "multiview.csv", dtype={"view": str})
    assert set(table["model"]) == set(MODELS)
    for _, g in table.groupby("model"):
        assert sorted(g["view"]) == sorted(["all", "-60.0", "0.0", "60.0"])  # overall + every view
    assert ((table["low"] <= table["accuracy"]) & (table["accuracy"] <= table["high"])).all()
    assert (table["test_people"] >= 1).all() and (table["n"] >= 1).all()
    overall = table[table["view"] == "all"].set_index("model")
    # fine-tuning from scratch and the pretrained encoder had the same budget and test rows
    assert overall.loc["clmex fine-tuned", "n"] == overall.loc["scratch fine-tuned", "n"]
    text = (out / "multiview.md").read_text()
    assert "clmex fine-tuned" in text and "view 60.0" in text and "seeds" in text and "Command:" in text
    assert json.loads((out / "multiview.json").read_text())["config"]["views"] == 3
    # the fine-tunes are kept in the run folder under their full keys
    assert len(list((out / "seed0" / "clmex" / "analysis").glob("finetune-*"))) == 2
