"""Linear probes on frozen features (no backbone update).

Choice: scikit-learn. Features are standardised (mean/std fitted on the training rows only), then
- classification: :class:`sklearn.linear_model.LogisticRegression` (L-BFGS, multinomial softmax,
  L2 penalty ``C``; deterministic for a fixed ``seed``),
- regression (valence/arousal): :class:`sklearn.linear_model.Ridge` (closed form, deterministic).

This is the classic offline protocol (SimCLR/BYOL appendix, solo-learn ``main_linear.py`` without
augmentation). L-BFGS on 50k x 2048 features takes about a minute on 2 cores; for much larger sets
train a torch softmax layer instead. ``C`` is the inverse L2 strength: lower it (0.1, 0.01) when the
probe has few labels per class (label-fraction runs), raise it when features are low-dimensional.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError


def _features(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise WorkbenchError(f"{name} must be a non-empty 2-D (N, D) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise WorkbenchError(f"{name} contains NaN or inf (collapsed or diverged checkpoint?)")
    return a


@dataclass
class LinearProbe:
    """A fitted standardiser + logistic-regression classifier. ``classes`` are the label values seen."""

    scaler: Any
    model: Any
    classes: np.ndarray
    converged: bool

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (values from ``classes``)."""
        return self.model.predict(self.scaler.transform(_features(X, "features")))

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(N, len(classes))`` softmax probabilities."""
        return self.model.predict_proba(self.scaler.transform(_features(X, "features")))


def fit_linear_probe(X: Any, y: Any, *, C: float = 1.0, max_iter: int = 1000, seed: int = 0) -> LinearProbe:
    """Fit a standardised multinomial logistic-regression probe.

    Args:
        C: inverse L2 strength (default 1.0 on standardised features).
        max_iter: L-BFGS iterations (default 1000); a warning-free fit is recorded in ``converged``.
        seed: random_state (L-BFGS itself is deterministic; the seed keeps it so if the solver changes).
    """
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    Xa = _features(X, "train features")
    ya = np.asarray(y)
    if ya.shape[0] != Xa.shape[0]:
        raise WorkbenchError(f"{Xa.shape[0]} feature rows but {ya.shape[0]} labels")
    classes = np.unique(ya)
    if classes.size < 2:
        raise WorkbenchError("the linear probe needs at least 2 classes in the training labels")
    if C <= 0:
        raise WorkbenchError(f"C must be > 0, got {C}")
    scaler = StandardScaler().fit(Xa)
    model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed, solver="lbfgs")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(scaler.transform(Xa), ya)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return LinearProbe(scaler=scaler, model=model, classes=classes, converged=converged)


def linear_probe(train_X: Any, train_y: Any, test_X: Any, *, C: float = 1.0, max_iter: int = 1000,
                 seed: int = 0) -> np.ndarray:
    """Fit on ``(train_X, train_y)`` and return predictions for ``test_X`` (see :func:`fit_linear_probe`)."""
    return fit_linear_probe(train_X, train_y, C=C, max_iter=max_iter, seed=seed).predict(test_X)


def ridge_probe(train_X: Any, train_t: Any, test_X: Any, *, alpha: float = 1.0) -> np.ndarray:
    """Standardised ridge regression for continuous targets (valence, arousal); returns test predictions.

    ``alpha`` (default 1.0) is the L2 strength; raise it (10-100) when there are fewer training rows
    than feature dimensions.
    """
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    Xa = _features(train_X, "train features")
    t = np.asarray(train_t, dtype=np.float64)
    if t.ndim != 1 or t.shape[0] != Xa.shape[0]:
        raise WorkbenchError("regression targets must be 1-D with one value per training row")
    if not np.all(np.isfinite(t)):
        raise WorkbenchError("regression targets contain NaN; drop unlabelled rows first")
    scaler = StandardScaler().fit(Xa)
    model = Ridge(alpha=alpha).fit(scaler.transform(Xa), t)
    return model.predict(scaler.transform(_features(test_X, "test features")))
