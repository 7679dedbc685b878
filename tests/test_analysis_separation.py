"""Separation report on constructed embeddings whose answers are known."""

from __future__ import annotations

import json

import numpy as np
import pytest

import workbench.evaluate.protocols as protocols
from workbench.analysis import SeparationReport, SeparationTrack, separation_report
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import WorkbenchError

N_ID, N_EX, REPS = 10, 8, 3


def _embedding(w_id: float, w_ex: float, seed: int = 0, noise: float = 0.07):
    """Concatenated identity one-hot x w_id, expression one-hot x w_ex, plus noise dims."""
    rng = np.random.default_rng(seed)
    ident = np.repeat(np.arange(N_ID), N_EX * REPS)
    expr = np.tile(np.repeat(np.arange(N_EX), REPS), N_ID)
    X = np.concatenate([w_id * np.eye(N_ID)[ident], w_ex * np.eye(N_EX)[expr], np.zeros((ident.size, 6))], axis=1)
    X = X + noise * rng.normal(size=X.shape)
    names = np.array(EXPRESSIONS)[expr]
    return X, names, np.array([f"subj{i:02d}" for i in ident])


@pytest.fixture(scope="module")
def reports():
    out = {}
    for name, (a, b) in {"identity": (1.0, 0.0), "expression": (0.0, 1.0), "mixed": (1.0, 1.0)}.items():
        X, expr, ident = _embedding(a, b)
        out[name] = separation_report(X, expr, ident, seed=0, k=10)
    return out


def test_pure_identity_embedding(reports):
    r = reports["identity"]
    assert r.identity_linear_acc > 0.95 and r.identity_knn_acc > 0.95
    assert r.expression_linear_acc < 0.3 and r.expression_knn_acc < 0.3  # chance = 1/8
    assert r.variance["identity"] > 0.8 and r.variance["expression"] < 0.05
    assert r.retrieval["map_at_r"] < 0.25
    assert r.silhouette_identity > 0.5 > r.silhouette_expression
    assert r.expression_over_identity < -0.7


def test_pure_expression_embedding(reports):
    r = reports["expression"]
    assert r.expression_linear_acc > 0.95 and r.expression_knn_acc > 0.95
    assert r.identity_linear_acc < 0.3 and r.identity_knn_acc < 0.3  # chance = 1/10
    assert r.variance["expression"] > 0.8 and r.variance["identity"] < 0.05
    assert r.retrieval["map_at_r"] > 0.9 and r.retrieval["precision_at_1"] > 0.95
    assert r.silhouette_expression > 0.5 > r.silhouette_identity
    assert r.expression_over_identity > 0.7


def test_mixed_embedding_sits_in_between(reports):
    ri, re, rm = reports["identity"], reports["expression"], reports["mixed"]
    for key in ("identity", "expression"):
        lo, hi = sorted([ri.variance[key], re.variance[key]])
        assert lo + 0.1 < rm.variance[key] < hi - 0.1
    assert ri.silhouette_expression < rm.silhouette_expression < re.silhouette_expression
    assert re.silhouette_identity < rm.silhouette_identity < ri.silhouette_identity
    # identity codes are orthogonal here, so other identities cannot disturb expression ranking
    assert ri.retrieval["map_at_r"] + 0.5 < rm.retrieval["map_at_r"] <= re.retrieval["map_at_r"]
    assert ri.expression_over_identity < rm.expression_over_identity < re.expression_over_identity
    assert abs(rm.variance["shared"]) < 0.05  # balanced design: additive parts do not overlap


def test_report_metadata_and_summary(reports):
    r = reports["expression"]
    assert r.counts["n_identities"] == N_ID and r.counts["n_expressions"] == N_EX
    assert r.counts["expression_train"] + r.counts["expression_test"] == N_ID * N_EX * REPS
    assert r.expression_chance == pytest.approx(1 / 8) and r.identity_chance == pytest.approx(1 / 10)
    assert r.expression_confusion.shape == (8, 8)
    assert "expression-over-identity +" in r.summary()
    assert set(r.metrics()) >= {"retrieval_map_at_r", "retrieval_precision_at_5", "var_residual"}


def test_save_load_and_replot_without_recompute(reports, tmp_path, monkeypatch):
    r = reports["mixed"]
    r.save(tmp_path)
    assert (tmp_path / "result.json").is_file() and (tmp_path / "arrays.npz").is_file()

    def boom(*a, **k):
        raise AssertionError("re-plotting must not recompute")

    monkeypatch.setattr(protocols, "evaluate_embeddings", boom)
    back = SeparationReport.load(tmp_path)
    assert back.to_dict() == json.loads(json.dumps(r.to_dict()))
    np.testing.assert_array_equal(back.retrieval_ap, r.retrieval_ap)
    fig = back.plot()
    assert {t.name for t in fig.data} == {"expression", "identity", "chance"}
    files = back.export(tmp_path / "fig", timeout=0.001)  # forced fallback keeps this test fast
    card = json.loads(files["json"].read_text())
    assert card["renderer"] == "matplotlib-fallback" and card["seed"] == 0
    assert files["pdf"].read_bytes().startswith(b"%PDF")
    with pytest.raises(WorkbenchError):
        SeparationReport.load(tmp_path / "nowhere")


def test_track_across_checkpoints(reports, tmp_path):
    track = SeparationTrack()
    for epoch, key in enumerate(["identity", "mixed", "expression"]):
        track.add(epoch * 5, reports[key])
    df = track.to_frame()
    assert sorted(df["epoch"].unique()) == [0, 5, 10]
    fig = track.plot()
    assert len(fig.data) == 7
    track.save(tmp_path)
    back = SeparationTrack.load(tmp_path)
    assert back.to_frame().equals(df)
    with pytest.raises(WorkbenchError, match="unknown metric"):
        back.plot(["nope"])
    fig_mpl = back.plot_mpl("single")
    assert len(fig_mpl.axes[0].lines) == 7


def test_input_errors():
    X, expr, ident = _embedding(1, 1)
    with pytest.raises(WorkbenchError):
        separation_report(X[:-1], expr, ident)
    with pytest.raises(WorkbenchError):
        separation_report(X, np.array(["smirk"] * len(expr)), ident)
