"""Classification and regression metrics on plain arrays.

Classification metrics take integer class indices (``0..C-1``, the order of ``class_names``; for
expressions that is :data:`workbench.data.vocabulary.EXPRESSIONS`). Regression metrics (valence /
arousal) take float arrays. Everything returns plain Python floats / dicts, so results serialise to
JSON directly.

- :func:`accuracy`, :func:`macro_f1` (averaged over the classes present in ``y_true``: a class with no
  test sample would otherwise add a meaningless 0),
- :func:`per_class_metrics`: per class accuracy (= recall, the diagonal of the row-normalised confusion
  matrix, as FER papers report it), F1 and support; ``None`` where a class has no test sample,
- :func:`confusion_matrix` (rows = true, columns = predicted),
- :func:`ccc` (Lin's concordance correlation coefficient, the standard valence/arousal score) and
  :func:`rmse`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError


def _as_labels(y: Any, name: str) -> np.ndarray:
    a = np.asarray(y)
    if a.ndim != 1:
        raise WorkbenchError(f"{name} must be a 1-D array of class indices, got shape {a.shape}")
    if a.size and not np.issubdtype(a.dtype, np.integer):
        if np.issubdtype(a.dtype, np.floating) and np.all(np.mod(a, 1) == 0):
            return a.astype(np.int64)
        raise WorkbenchError(f"{name} must hold integer class indices, got dtype {a.dtype}")
    return a.astype(np.int64)


def _pair(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _as_labels(y_true, "y_true"), _as_labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise WorkbenchError(f"y_true and y_pred differ in length ({t.size} vs {p.size})")
    if t.size == 0:
        raise WorkbenchError("cannot score an empty set of predictions")
    return t, p


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of exact matches."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p))


def confusion_matrix(y_true: Any, y_pred: Any, n_classes: int | None = None) -> np.ndarray:
    """``(C, C)`` int64 counts, rows = true class, columns = predicted class.

    ``n_classes`` defaults to ``max(label) + 1``; pass ``len(class_names)`` to keep a fixed shape.
    """
    t, p = _pair(y_true, y_pred)
    c = int(n_classes if n_classes is not None else max(t.max(), p.max()) + 1)
    if t.min() < 0 or p.min() < 0 or t.max() >= c or p.max() >= c:
        raise WorkbenchError(f"class indices must lie in [0, {c - 1}]")
    return np.bincount(t * c + p, minlength=c * c).reshape(c, c).astype(np.int64)


def _f1_from_confusion(cm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-class (recall, f1); NaN where undefined."""
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        recall = np.where(support > 0, tp / support, np.nan)
        denom = support + predicted
        f1 = np.where(support > 0, np.where(denom > 0, 2 * tp / denom, 0.0), np.nan)
    return recall, f1


def macro_f1(y_true: Any, y_pred: Any, n_classes: int | None = None) -> float:
    """Unweighted mean F1 over the classes that occur in ``y_true`` (same as scikit-learn's
    ``f1_score(average="macro", labels=np.unique(y_true))``)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    _, f1 = _f1_from_confusion(cm)
    return float(np.nanmean(f1))


def per_class_metrics(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, dict[str, Any]]:
    """``{name: {"accuracy", "f1", "support"}}`` for every class in ``class_names`` (in order).

    ``accuracy`` is the per-class recall. Metrics are ``None`` for a class without test samples.
    """
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    recall, f1 = _f1_from_confusion(cm)
    support = cm.sum(axis=1)
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(class_names):
        out[str(name)] = {
            "accuracy": None if np.isnan(recall[i]) else float(recall[i]),
            "f1": None if np.isnan(f1[i]) else float(f1[i]),
            "support": int(support[i]),
        }
    return out


def classification_summary(y_true: Any, y_pred: Any, class_names: Sequence[str]) -> dict[str, Any]:
    """``accuracy``, ``macro_f1``, ``per_class`` and ``confusion`` (nested lists) in one dict."""
    cm = confusion_matrix(y_true, y_pred, len(class_names))
    _, f1 = _f1_from_confusion(cm)
    return {
        "accuracy": accuracy(y_true, y_pred),
        "macro_f1": float(np.nanmean(f1)),
        "per_class": per_class_metrics(y_true, y_pred, class_names),
        "confusion": cm.tolist(),
    }


def _pair_float(x: Any, y: Any) -> tuple[np.ndarray, np.ndarray]:
    a = np.asarray(x, dtype=np.float64).ravel()
    b = np.asarray(y, dtype=np.float64).ravel()
    if a.shape != b.shape:
        raise WorkbenchError(f"prediction and target differ in length ({a.size} vs {b.size})")
    if a.size == 0:
        raise WorkbenchError("cannot score an empty set of predictions")
    if not (np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
        raise WorkbenchError("regression targets/predictions contain NaN or inf; drop unlabelled rows first")
    return a, b


def ccc(x: Any, y: Any) -> float:
    """Lin's concordance correlation coefficient ``2 cov / (var_x + var_y + (mean_x - mean_y)^2)``.

    Uses population (ddof=0) moments, as the AVEC / AffectNet evaluation scripts do. 1 = perfect
    agreement, 0 = none, -1 = perfect inversion; unlike Pearson it penalises bias and scale errors.
    Two identical constant series score 1.
    """
    a, b = _pair_float(x, y)
    ma, mb = a.mean(), b.mean()
    va, vb = a.var(), b.var()
    cov = np.mean((a - ma) * (b - mb))
    denom = va + vb + (ma - mb) ** 2
    if denom == 0.0:  # both constant and equal
        return 1.0
    return float(2.0 * cov / denom)


def rmse(x: Any, y: Any) -> float:
    """Root mean squared error."""
    a, b = _pair_float(x, y)
    return float(math.sqrt(np.mean((a - b) ** 2)))


def regression_summary(y_true: Any, y_pred: Any) -> dict[str, float]:
    """``ccc``, ``rmse`` and Pearson ``pcc`` (0 when a series is constant)."""
    a, b = _pair_float(y_true, y_pred)
    pcc = float(np.corrcoef(a, b)[0, 1]) if a.std() > 0 and b.std() > 0 else 0.0
    return {"ccc": ccc(a, b), "rmse": rmse(a, b), "pcc": pcc}
