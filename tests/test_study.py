"""Run-level analyses from the command line and Python: compute → persist → re-plot without recompute."""

from __future__ import annotations

import json

import pytest

from workbench.cli.main import main


def test_separation_cli_json_and_persistence(tiny_run, tiny_synth, capsys, monkeypatch):
    assert main(["separation", str(tiny_run), "--data", str(tiny_synth), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    for key in ("expr_linear_acc", "id_linear_acc"):
        assert key in d or any(k.startswith(key.split("_")[0]) for k in d)
    assert list((tiny_run / "analysis").glob("separation-feats-last-*/result.json"))
    # second call loads the persisted report: computing again would fail
    import workbench.analysis.separation as sep

    monkeypatch.setattr(sep, "separation_report", lambda *a, **k: pytest.fail("recomputed"))
    assert main(["separation", str(tiny_run), "--data", str(tiny_synth), "--json"]) == 0


def test_separation_track_over_checkpoints(tiny_run, tiny_synth, capsys, monkeypatch):
    from workbench.analysis import study
    from workbench.analysis.study import separation_over_training

    monkeypatch.setattr(study, "PROGRESS_DELAY", 0.0)  # the bar shows at once (normally after 2 s)

    frame = separation_over_training(tiny_run, tiny_synth, progress=True).to_frame()
    assert sorted(set(frame["epoch"].tolist())) == [1, 2]
    err = capsys.readouterr().err  # the bar over the checkpoints (tqdm text outside a notebook)
    assert "checkpoints" in err and "2/2" in err


def test_compare_runs_table(tiny_run, tiny_synth, tmp_path):
    from workbench.analysis.study import compare_runs

    table = compare_runs([tiny_run], tiny_synth, out=tmp_path / "t.csv")
    assert {"expr_linear", "expr_knn", "identity_linear"} <= set(table.columns)
    assert 0 <= table.loc[0, "expr_linear"] <= 1 and (tmp_path / "t.csv").is_file()


def test_pca_map_cli_and_reload(tiny_run, tiny_synth, tmp_path, monkeypatch):
    assert main(["umap", str(tiny_run), "--data", str(tiny_synth), "--out", str(tmp_path), "--method", "pca"]) == 0
    assert (tmp_path / "pca-expression.html").is_file() and (tmp_path / "pca-expression.pdf").is_file()
    import workbench.analysis.umap as um
    from workbench.analysis.study import umap_for_runs

    monkeypatch.setattr(um, "compute_map", lambda *a, **k: pytest.fail("recomputed"))
    emap = umap_for_runs([tiny_run], tiny_synth, method="pca")
    assert emap.coords.shape[1] == 2 and "run" in emap.meta.columns
    assert emap.plot(color="identity").data


def test_attention_cli_writes_overlays_and_scores(tiny_run, tiny_synth, tmp_path):
    assert main(["attention", str(tiny_run), "--data", str(tiny_synth), "--out", str(tmp_path),
                 "--per-expression", "1"]) == 0
    import pandas as pd

    scores = pd.read_csv(tmp_path / "region_scores.csv")
    assert len(scores) >= 7 and any(c.startswith("score_mouth") for c in scores.columns)
    assert list((tmp_path / "overlays").glob("*.png"))


@pytest.mark.slow
def test_figures_cli_writes_the_set(tiny_run, tiny_synth, tmp_path):
    assert main(["figures", str(tiny_run), "--data", str(tiny_synth), "--out", str(tmp_path),
                 "--umap-method", "pca", "--figures", "training_curves", "probe_comparison", "separation_bars",
                 "umap_panels"]) == 0
    for name in ("training_curves", "probe_comparison", "separation_bars", "umap_panels"):
        for ext in ("pdf", "svg", "png", "csv", "json"):
            assert (tmp_path / f"{name}.{ext}").is_file(), (name, ext)
    assert (tmp_path / "pdf").exists() is False
    assert (tmp_path / "training_curves.pdf").read_bytes()[:4] == b"%PDF"
    tex = (tmp_path / "results.tex").read_text()
    assert "\\toprule" in tex and "simclr" in tex
    card = json.loads((tmp_path / "training_curves.json").read_text())
    assert "runs" in card["run"] and card["seed"] == 0 and card["renderer"]
