"""Splits, label-fraction subsets, evaluate_embeddings and EvalResult persistence."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.config import from_dict
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import ConfigError, WorkbenchError
from workbench.evaluate.probe import fit_linear_probe, ridge_probe
from workbench.evaluate.protocols import (
    EvalConfig,
    EvalResult,
    evaluate_embeddings,
    identity_probe_split,
    label_fraction_subset,
    subject_disjoint_split,
)


def test_label_fraction_subset_stratified_and_seeded():
    labels = np.array([0] * 500 + [1] * 100 + [2] * 3)
    idx = label_fraction_subset(labels, 0.1, seed=0)
    counts = np.bincount(labels[idx], minlength=3)
    np.testing.assert_array_equal(counts, [50, 10, 1])  # at least one of the rare class
    np.testing.assert_array_equal(idx, label_fraction_subset(labels, 0.1, seed=0))
    assert not np.array_equal(idx, label_fraction_subset(labels, 0.1, seed=1))
    assert np.all(np.diff(idx) > 0)
    np.testing.assert_array_equal(label_fraction_subset(labels, 1.0, seed=3), np.arange(labels.size))
    assert label_fraction_subset(labels, 0.1, seed=0, stratify=False).size == 60
    str_idx = label_fraction_subset(np.array(["a"] * 10 + ["b"] * 2), 0.01)
    assert str_idx.size == 2
    with pytest.raises(ConfigError):
        label_fraction_subset(labels, 0.0)


def test_subject_disjoint_split():
    ident = np.repeat([f"s{i}" for i in range(10)], 5)
    tr, te = subject_disjoint_split(ident, seed=0, test_fraction=0.3)
    assert set(ident[tr]).isdisjoint(ident[te])
    assert len(set(ident[te])) == 3 and tr.size + te.size == ident.size
    tr2, _ = subject_disjoint_split(ident, seed=0, test_fraction=0.3)
    np.testing.assert_array_equal(tr, tr2)
    with pytest.raises(WorkbenchError):
        subject_disjoint_split(["a", "a"])


def test_identity_probe_split_is_per_identity_half_half():
    ident = np.array(["a"] * 4 + ["b"] * 6 + ["c"])
    tr, te = identity_probe_split(ident, seed=0)
    assert sorted(ident[te].tolist()) == ["a", "a", "b", "b", "b"]
    assert "c" in set(ident[tr]) and "c" not in set(ident[te])
    assert set(tr).isdisjoint(te) and tr.size + te.size == ident.size


def _clusters(seed=0, n_per=30, classes=4, dim=8, sep=3.0):
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * sep
    y = np.repeat(np.arange(classes), n_per)
    return centers[y] + rng.normal(size=(y.size, dim)), y


def test_linear_and_knn_expression():
    X, y = _clusters()
    Xt, yt = _clusters(seed=0)
    groups = np.arange(y.size) % 10
    lin = evaluate_embeddings(X, y, Xt, yt, EvalConfig(), class_names=EXPRESSIONS[:4])
    assert lin.accuracy > 0.95 and lin.macro_f1 > 0.95 and lin.chance == pytest.approx(0.25)
    assert list(lin.per_class) == list(EXPRESSIONS[:4])
    knn = evaluate_embeddings(X, y, Xt, yt, EvalConfig(protocol="knn"), train_groups=groups,
                              test_groups=groups + 100)
    assert knn.accuracy > 0.95 and knn.class_names == list(EXPRESSIONS)
    names = np.array(EXPRESSIONS)[y]
    by_name = evaluate_embeddings(X, names, Xt, np.array(EXPRESSIONS)[yt], EvalConfig())
    assert by_name.accuracy == lin.accuracy
    with pytest.raises(ConfigError):  # kNN exclusion without identity codes is refused, not silently skipped
        evaluate_embeddings(X, y, Xt, yt, EvalConfig(protocol="knn"))


def test_label_fraction_reduces_training_set_and_probe_is_deterministic():
    X, y = _clusters(n_per=50)
    cfg = EvalConfig(label_fraction=0.1, seed=3)
    a = evaluate_embeddings(X, y, X, y, cfg)
    b = evaluate_embeddings(X, y, X, y, cfg)
    assert a.n_train == 20 and a.n_test == 200
    np.testing.assert_array_equal(a.predictions, b.predictions)
    p1 = fit_linear_probe(X, y, seed=0).predict_proba(X)
    p2 = fit_linear_probe(X, y, seed=0).predict_proba(X)
    np.testing.assert_array_equal(p1, p2)


def test_identity_target_needs_shared_identities():
    X, _ = _clusters()
    ident = np.repeat([f"s{i}" for i in range(6)], 20)
    tr, te = identity_probe_split(ident)
    res = evaluate_embeddings(X[tr], ident[tr], X[te], ident[te], EvalConfig(target="identity"))
    assert res.class_names == sorted(set(ident)) and res.n_test == te.size
    dtr, dte = subject_disjoint_split(ident)
    with pytest.raises(WorkbenchError, match="identity_probe_split"):
        evaluate_embeddings(X[dtr], ident[dtr], X[dte], ident[dte], EvalConfig(target="identity"))


def test_regression_targets_and_ridge():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(200, 5))
    v = np.tanh(X @ np.array([0.5, -0.3, 0.2, 0.0, 0.1]))
    res = evaluate_embeddings(X[:150], v[:150], X[150:], v[150:], EvalConfig(target="valence"))
    assert res.ccc > 0.9 and res.rmse < 0.1 and res.accuracy is None
    knn = evaluate_embeddings(X[:150], v[:150], X[150:], v[150:],
                              EvalConfig(target="arousal", protocol="knn", exclude_same_identity=False))
    assert knn.ccc > 0.5
    assert ridge_probe(X, v, X[:3]).shape == (3,)
    assert "CCC" in res.summary()


def test_result_round_trip(tmp_path):
    X, y = _clusters()
    res = evaluate_embeddings(X, y, X, y, EvalConfig(C=0.5))
    path = res.save(tmp_path / "res")
    assert sorted(p.name for p in path.iterdir()) == ["arrays.npz", "result.json"]
    back = EvalResult.load(path)
    assert back.to_dict() == res.to_dict()
    np.testing.assert_array_equal(back.predictions, res.predictions)
    assert back.config["C"] == 0.5 and "acc" in back.summary()
    with pytest.raises(WorkbenchError):
        EvalResult.load(tmp_path / "missing")


def test_config_validation_through_param_metadata():
    cfg = from_dict(EvalConfig, {"protocol": "knn", "k": "10"})
    assert cfg.k == 10
    with pytest.raises(ConfigError):
        from_dict(EvalConfig, {"protocol": "svm"})
    with pytest.raises(ConfigError):
        from_dict(EvalConfig, {"label_fraction": 1.5})


def _few_test_people_set(n_people: int = 8, per_person: int = 16, seed: int = 0):
    """Features that carry expression (plus a per-person offset); the split tests only one person."""
    import pandas as pd

    rng = np.random.default_rng(seed)
    names = list(EXPRESSIONS)
    rows, feats = [], []
    for p in range(n_people):
        offset = rng.normal(0.0, 1.0, 16)
        for i in range(per_person):
            e = i % len(names)
            x = offset + rng.normal(0.0, 0.3, 16)
            x[e] += 3.0
            feats.append(x)
            rows.append({"identity": f"p{p}", "expression": names[e],
                         "split": "test" if p == 0 else ("val" if p == 1 else "train")})
    return np.asarray(feats, dtype=np.float32), pd.DataFrame(rows)


def test_few_test_people_switch_to_person_wise_cross_validation():
    from workbench.evaluate.run_eval import evaluate_embedding_set

    X, meta = _few_test_people_set()
    cv = evaluate_embedding_set(X, meta, EvalConfig(protocol="linear", target="expression"))
    assert cv.n_test_people == 8 and cv.n_test == len(meta)  # every person is scored once, out of fold
    assert "5-fold cross-validation over all 8" in cv.split_rule and "1 < 12" in cv.split_rule
    assert cv.accuracy > 0.9 and cv.ci_low <= cv.accuracy <= cv.ci_high
    split = evaluate_embedding_set(X, meta, EvalConfig(protocol="linear", target="expression", min_test_people=0))
    assert split.n_test_people == 1 and split.n_test == 16 and "manifest split" in split.split_rule
    knn = evaluate_embedding_set(X, meta, EvalConfig(protocol="knn", target="expression"))
    assert knn.n_test == len(meta) and knn.accuracy > 0.9


def test_separation_scores_expression_with_the_same_rule_as_evaluate():
    from workbench.analysis.separation import separation_report
    from workbench.evaluate.run_eval import evaluate_embedding_set

    X, meta = _few_test_people_set()
    ev = evaluate_embedding_set(X, meta, EvalConfig(protocol="linear", target="expression"))
    rep = separation_report(X, meta["expression"], meta["identity"], split=meta["split"].to_numpy())
    assert rep.expression_linear_acc == pytest.approx(ev.accuracy, abs=1e-9)
    assert rep.split_rule == ev.split_rule
    assert rep.intervals["expression_linear"]["n_people"] == 8


def test_results_use_the_classes_of_the_data_set():
    """A 7-class set (JAFFE, CK+, KDEF) gets 7x7 results, not an 8-class vocabulary with an empty row."""
    from workbench.evaluate.run_eval import evaluate_embedding_set

    X, meta = _few_test_people_set()
    seven = meta[meta["expression"] != "contempt"].reset_index(drop=True)
    res = evaluate_embedding_set(X[meta["expression"].to_numpy() != "contempt"], seven,
                                 EvalConfig(protocol="linear", target="expression"))
    assert res.class_names == [c for c in EXPRESSIONS if c != "contempt"]
    assert np.asarray(res.confusion).shape == (7, 7) and "contempt" not in res.per_class
