"""Metrics against hand-written references and scikit-learn."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import confusion_matrix as sk_confusion
from sklearn.metrics import f1_score

from workbench.errors import WorkbenchError
from workbench.evaluate import metrics as M


def ccc_reference(x: list[float], y: list[float]) -> float:
    """Lin's CCC written out with plain Python sums (population moments)."""
    n = len(x)
    mx, my = sum(x) / n, sum(y) / n
    vx = sum((a - mx) ** 2 for a in x) / n
    vy = sum((b - my) ** 2 for b in y) / n
    cov = sum((a - mx) * (b - my) for a, b in zip(x, y)) / n
    return 2 * cov / (vx + vy + (mx - my) ** 2)


def test_ccc_matches_reference_on_random_pairs():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x = rng.normal(size=50)
        y = 0.7 * x + rng.normal(scale=0.5, size=50) + rng.normal()
        assert M.ccc(x, y) == pytest.approx(ccc_reference(list(x), list(y)), abs=1e-12)


def test_ccc_hand_values():
    x = [1.0, 2.0, 3.0]
    assert M.ccc(x, x) == 1.0
    assert M.ccc(x, [2.0, 3.0, 4.0]) == pytest.approx(4 / 7)  # shifted by 1: penalised, unlike Pearson
    assert M.ccc(x, [3.0, 2.0, 1.0]) == pytest.approx(-1.0)
    assert M.ccc([0.5] * 4, [0.5] * 4) == 1.0  # identical constants


def test_rmse_and_regression_summary():
    assert M.rmse([0, 0, 0, 0], [1, -1, 1, -1]) == 1.0
    s = M.regression_summary([1, 2, 3], [1, 2, 3])
    assert s == {"ccc": 1.0, "rmse": 0.0, "pcc": pytest.approx(1.0)}
    with pytest.raises(WorkbenchError):
        M.ccc([1.0, np.nan], [1.0, 2.0])


def test_classification_metrics_match_sklearn():
    rng = np.random.default_rng(1)
    y = rng.integers(0, 5, size=200)
    p = np.where(rng.random(200) < 0.6, y, rng.integers(0, 5, size=200))
    assert M.accuracy(y, p) == pytest.approx(np.mean(y == p))
    assert M.macro_f1(y, p) == pytest.approx(f1_score(y, p, average="macro"))
    np.testing.assert_array_equal(M.confusion_matrix(y, p, 5), sk_confusion(y, p, labels=range(5)))


def test_per_class_names_recall_and_absent_class():
    names = ["neutral", "happiness", "sadness"]
    y = np.array([0, 0, 1, 1])
    p = np.array([0, 1, 1, 1])
    pc = M.per_class_metrics(y, p, names)
    assert list(pc) == names
    assert pc["neutral"] == {"accuracy": 0.5, "f1": pytest.approx(2 / 3), "support": 2}
    assert pc["happiness"]["accuracy"] == 1.0
    assert pc["sadness"] == {"accuracy": None, "f1": None, "support": 0}
    # macro-F1 averages over classes present in y_true only
    assert M.macro_f1(y, p, 3) == pytest.approx((2 / 3 + 0.8) / 2)
    s = M.classification_summary(y, p, names)
    assert s["confusion"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert math.isclose(s["accuracy"], 0.75)


def test_metric_input_errors():
    with pytest.raises(WorkbenchError):
        M.accuracy([0, 1], [0])
    with pytest.raises(WorkbenchError):
        M.confusion_matrix([0, 3], [0, 1], 2)
    with pytest.raises(WorkbenchError):
        M.accuracy([], [])
