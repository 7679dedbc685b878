"""`workbench evaluate`: several protocols and targets from one embedding pass, --by a column, the EvalConfig
options as flags, a table by default and JSON lines with --json."""

from __future__ import annotations

import json

import numpy as np

from workbench.cli.main import main


def test_several_protocols_and_targets_in_one_call(tiny_run, tiny_synth, capsys, monkeypatch):
    import workbench.runs as emb_module

    calls = []
    original = emb_module.extract_embeddings
    monkeypatch.setattr(emb_module, "extract_embeddings",
                        lambda *a, **k: calls.append(1) or original(*a, **k))
    assert main(["evaluate", str(tiny_run), "--data", str(tiny_synth), "--protocol", "linear", "knn",
                 "--target", "expression", "identity", "--k", "5", "--exclude-same-identity", "false",
                 "--json"]) == 0
    rows = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    assert len(calls) == 1  # one embedding pass for the four results
    assert [(r["protocol"], r["target"]) for r in rows] == [("linear", "expression"), ("knn", "expression"),
                                                           ("linear", "identity"), ("knn", "identity")]
    knn = rows[1]
    assert knn["config"]["k"] == 5 and knn["config"]["exclude_same_identity"] is False
    for r in rows:
        assert r["ci_low"] <= r["accuracy"] <= r["ci_high"] and r["n_test_people"] >= 1 and r["split_rule"]


def test_table_by_default_and_accuracy_by_view(tiny_run, capsys):
    """The multi-view synthetic set: accuracy per camera view, in view order, adding up to the whole."""
    from workbench.data.synth import SynthConfig, generate_dataset

    views = generate_dataset(SynthConfig(identities=8, images_per_identity=8, size=32, views=5, seed=3),
                             tiny_run.parent / "views", progress=False)
    assert main(["evaluate", str(tiny_run), "--data", str(views), "--by", "view"]) == 0
    out = capsys.readouterr().out
    assert "95% interval" in out and "test people" in out and "view=" in out
    assert main(["evaluate", str(tiny_run), "--data", str(views), "--by", "view", "--json"]) == 0
    (row,) = [json.loads(x) for x in capsys.readouterr().out.strip().splitlines()]
    groups = row["by"]["groups"]
    assert list(groups) == sorted(groups, key=float) and len(groups) == 5
    total = sum(g["n"] for g in groups.values())
    assert total == row["n_test"]
    weighted = sum(g["accuracy"] * g["n"] for g in groups.values()) / total
    assert np.isclose(weighted, row["accuracy"])


def test_a_missing_by_column_is_one_line(tiny_run, tiny_synth, capsys):
    assert main(["evaluate", str(tiny_run), "--data", str(tiny_synth), "--by", "nosuch"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no 'nosuch' column" in err[0]
