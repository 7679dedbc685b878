"""Linear probes on frozen features (no backbone update).

Features are standardised (mean/std fitted on the training rows only), then
- classification: multinomial logistic regression (L-BFGS, softmax, L2 penalty ``C``; a binary
  problem uses one weight vector, as scikit-learn does), fitted by one of two backends:

  - ``sklearn``: :class:`sklearn.linear_model.LogisticRegression` (deterministic for a fixed ``seed``),
  - ``torch``: the same objective, ``C * sum_i logloss_i + 0.5 * ||W||^2`` (intercept not penalised),
    minimised by full-batch :class:`torch.optim.LBFGS` (strong Wolfe line search) on ``device``,
    float64 on the CPU (agrees with scikit-learn, deterministic), float32 on CUDA;

  ``backend="auto"`` picks torch on a CUDA device and scikit-learn otherwise, so CPU results stay
  those of scikit-learn. On GPU hosts scikit-learn's BLAS threads fight torch's OpenMP threads (an
  8k x 512 probe did not finish in 60 s on 16 cores), so every scikit-learn fit here runs with at
  most ``torch.get_num_threads()`` BLAS threads.
- regression (valence/arousal): :class:`sklearn.linear_model.Ridge` (closed form, deterministic).

This is the classic offline protocol (SimCLR/BYOL appendix, solo-learn ``main_linear.py`` without
augmentation). L-BFGS on 50k x 2048 features takes about a minute on 2 cores with scikit-learn; use
the torch backend on a GPU for larger sets. ``C`` is the inverse L2 strength: lower it (0.1, 0.01) when
the probe has few labels per class (label-fraction runs), raise it when features are low-dimensional.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

BACKENDS = ("auto", "sklearn", "torch")
#: torch backend stopping rule per dtype, (gradient, change): stop when every gradient entry of the
#: objective / (C n) is below the first (scikit-learn's ``tol`` is 1e-4 on that scale; tighter here,
#: so the torch fit is the closer one to the optimum), or the loss or step changes less than the second
TORCH_TOL = {torch.float64: (1e-7, 1e-14), torch.float32: (1e-6, 1e-9)}


def _features(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x.detach().cpu().numpy() if hasattr(x, "detach") else x, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] == 0:
        raise WorkbenchError(f"{name} must be a non-empty 2-D (N, D) array, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise WorkbenchError(f"{name} contains NaN or inf (collapsed or diverged checkpoint?)")
    return a


def _blas_limit() -> Any:
    """Context capping scikit-learn's BLAS threads at torch's thread count (no oversubscription)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(limits=torch.get_num_threads(), user_api="blas")


def resolve_backend(backend: str, device: str | torch.device | None = None) -> tuple[str, torch.device]:
    """``(backend, device)`` actually used: ``auto`` = torch on a CUDA ``device``, else sklearn; the torch
    backend without a ``device`` runs on CUDA when available, else the CPU."""
    if backend not in BACKENDS:
        raise WorkbenchError(f"probe backend must be one of {', '.join(BACKENDS)}, got {backend!r}")
    try:
        dev = torch.device(device) if device is not None else None
    except (RuntimeError, TypeError) as exc:
        raise WorkbenchError(f"probe device {device!r} is not a torch device ({exc})") from None
    if backend == "auto":
        backend = "torch" if dev is not None and dev.type == "cuda" else "sklearn"
    if dev is None:
        dev = torch.device("cuda" if backend == "torch" and torch.cuda.is_available() else "cpu")
    if backend == "torch" and dev.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(f"probe device {dev} requested but CUDA is not available")
    return backend, dev


class TorchScaler:
    """StandardScaler twin: population std of the training rows, (near-)constant columns get scale 1."""

    def __init__(self, mean: np.ndarray, scale: np.ndarray):
        self.mean_, self.scale_ = mean, scale

    def transform(self, X: np.ndarray) -> np.ndarray:
        return (X - self.mean_) / self.scale_


def _mean_scale(X: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """StandardScaler's ``mean_`` and ``scale_`` of float64 rows ``X`` (same near-constant rule)."""
    n = X.shape[0]
    mean = X.mean(dim=0)
    var = ((X - mean) ** 2).mean(dim=0)
    eps = torch.finfo(torch.float64).eps
    constant = var <= n * eps * var + (n * mean * eps) ** 2
    return mean, torch.where(constant, torch.ones_like(var), var.sqrt())


class TorchLogistic:
    """Softmax layer fitted by :func:`fit_linear_probe` (torch backend); scikit-learn's attribute names.

    ``coef_`` is ``(K, D)``, or ``(1, D)`` for 2 classes (logits ``[0, z]``: the binary model).
    """

    def __init__(self, coef: torch.Tensor, intercept: torch.Tensor, classes: np.ndarray, n_iter: int):
        self.weight, self.bias = coef.detach(), intercept.detach()
        self.classes_, self.n_iter_ = classes, n_iter
        self.coef_ = self.weight.double().cpu().numpy()
        self.intercept_ = self.bias.double().cpu().numpy()

    def _scores(self, Z: Any) -> torch.Tensor:
        z = torch.as_tensor(np.asarray(Z), device=self.weight.device, dtype=self.weight.dtype)
        return torch.addmm(self.bias, z, self.weight.T)

    def decision_function(self, Z: Any) -> np.ndarray:
        """``(N, K)`` logits, ``(N,)`` for 2 classes (like scikit-learn)."""
        with torch.no_grad():
            out = self._scores(Z).double().cpu().numpy()
        return out[:, 0] if out.shape[1] == 1 else out

    def predict_proba(self, Z: Any) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(_as_logits(self._scores(Z)), dim=1).double().cpu().numpy()

    def predict(self, Z: Any) -> np.ndarray:
        with torch.no_grad():
            return self.classes_[_as_logits(self._scores(Z)).argmax(dim=1).cpu().numpy()]


def _as_logits(scores: torch.Tensor) -> torch.Tensor:
    """Binary models score one column ``z``: the softmax logits are ``[0, z]``."""
    return torch.cat([torch.zeros_like(scores), scores], dim=1) if scores.shape[1] == 1 else scores


def _fit_torch(Xa: np.ndarray, codes: np.ndarray, classes: np.ndarray, C: float, max_iter: int,
               dev: torch.device) -> tuple[TorchScaler, TorchLogistic, bool]:
    dtype = torch.float64 if dev.type == "cpu" else torch.float32
    X = torch.as_tensor(Xa, dtype=torch.float64, device=dev)
    mean, scale = _mean_scale(X)
    Z = ((X - mean) / scale).to(dtype)
    del X
    scaler = TorchScaler(mean.cpu().numpy(), scale.cpu().numpy())
    y = torch.as_tensor(codes, dtype=torch.long, device=dev)
    n, k = Z.shape[0], (1 if classes.size == 2 else classes.size)
    W = torch.zeros(k, Z.shape[1], dtype=dtype, device=dev, requires_grad=True)
    b = torch.zeros(k, dtype=dtype, device=dev, requires_grad=True)
    reg = 0.5 / (C * n)  # objective / (C n): scikit-learn's scaling, same minimiser
    max_eval = 2 * max_iter + 50
    opt = torch.optim.LBFGS([W, b], lr=1, max_iter=max_iter, max_eval=max_eval, history_size=10,
                            tolerance_grad=TORCH_TOL[dtype][0], tolerance_change=TORCH_TOL[dtype][1],
                            line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        logits = _as_logits(torch.addmm(b, Z, W.T))
        loss = torch.nn.functional.cross_entropy(logits, y) + reg * W.pow(2).sum()
        loss.backward()
        return loss

    opt.step(closure)
    state = opt.state[W]
    converged = state["n_iter"] < max_iter and state["func_evals"] < max_eval
    return scaler, TorchLogistic(W, b, classes, int(state["n_iter"])), converged


@dataclass
class LinearProbe:
    """A fitted standardiser + logistic-regression classifier. ``classes`` are the label values seen;
    ``backend`` is the one that fitted it (sklearn or torch)."""

    scaler: Any
    model: Any
    classes: np.ndarray
    converged: bool
    backend: str = "sklearn"

    def predict(self, X: Any) -> np.ndarray:
        """Predicted labels (values from ``classes``)."""
        return self.model.predict(self.scaler.transform(_features(X, "features")))

    def predict_proba(self, X: Any) -> np.ndarray:
        """``(N, len(classes))`` softmax probabilities."""
        return self.model.predict_proba(self.scaler.transform(_features(X, "features")))


def fit_linear_probe(X: Any, y: Any, *, C: float = 1.0, max_iter: int = 1000, seed: int = 0,
                     backend: str = "auto", device: str | torch.device | None = None) -> LinearProbe:
    """Fit a standardised multinomial logistic-regression probe.

    Args:
        C: inverse L2 strength (default 1.0 on standardised features).
        max_iter: L-BFGS iterations (default 1000); a warning-free fit is recorded in ``converged``.
        seed: random_state (L-BFGS itself is deterministic; the seed keeps it so if the solver changes).
        backend: sklearn, torch, or auto (default: torch on a CUDA ``device``, else sklearn).
        device: where the torch backend runs; a CUDA device makes ``auto`` pick torch. Without one, auto
            is sklearn and torch runs on CUDA when available, else the CPU.
    """
    backend, dev = resolve_backend(backend, device)
    Xa = _features(X, "train features")
    ya = np.asarray(y)
    if ya.shape[0] != Xa.shape[0]:
        raise WorkbenchError(f"{Xa.shape[0]} feature rows but {ya.shape[0]} labels")
    classes, codes = np.unique(ya, return_inverse=True)
    if classes.size < 2:
        raise WorkbenchError("the linear probe needs at least 2 classes in the training labels")
    if C <= 0:
        raise WorkbenchError(f"C must be > 0, got {C}")
    if backend == "torch":
        scaler, tmodel, converged = _fit_torch(Xa, codes.reshape(-1), classes, C, max_iter, dev)
        return LinearProbe(scaler=scaler, model=tmodel, classes=classes, converged=converged, backend="torch")

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    with _blas_limit(), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        scaler = StandardScaler().fit(Xa)
        model = LogisticRegression(C=C, max_iter=max_iter, random_state=seed, solver="lbfgs")
        model.fit(scaler.transform(Xa), ya)
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return LinearProbe(scaler=scaler, model=model, classes=classes, converged=converged)


def linear_probe(train_X: Any, train_y: Any, test_X: Any, *, C: float = 1.0, max_iter: int = 1000,
                 seed: int = 0, backend: str = "auto", device: str | torch.device | None = None
                 ) -> np.ndarray:
    """Fit on ``(train_X, train_y)`` and return predictions for ``test_X`` (see :func:`fit_linear_probe`)."""
    return fit_linear_probe(train_X, train_y, C=C, max_iter=max_iter, seed=seed, backend=backend,
                            device=device).predict(test_X)


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
    Xte = _features(test_X, "test features")
    with _blas_limit():
        scaler = StandardScaler().fit(Xa)
        model = Ridge(alpha=alpha).fit(scaler.transform(Xa), t)
        return model.predict(scaler.transform(Xte))
