"""Linear probe backends: the torch L-BFGS probe fits scikit-learn's model and objective.

Tolerances (measured on a 2-core CPU, seeds 0-2, C in 0.1/1/10, 8 and 2 classes):
- scikit-learn stops at ``tol=1e-4`` on the objective / (C n) gradient, the torch probe at 1e-7, so
  against the *sklearn backend* probabilities differ by up to 3e-2 at C=1 (scikit-learn's own
  distance from the optimum); against a scikit-learn fit run to ``tol=1e-10`` the float64 torch
  probe is within 3e-5 (asserted < 1e-3), the float32 one (CUDA) within 6e-4 (asserted < 5e-3).
- objectives: the float64 torch fit is within 2e-8 (relative) of that reference (asserted 1e-6),
  the sklearn backend 5e-7 to 4e-3 above it; the float32 fit (emulated on the CPU) is below sklearn's.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from workbench.config import from_dict
from workbench.errors import ConfigError, WorkbenchError
from workbench.evaluate.probe import fit_linear_probe, linear_probe, resolve_backend
from workbench.evaluate.protocols import EvalConfig, evaluate_embeddings


def _problem(seed: int = 0, classes: int = 8, n: int = 600, dim: int = 64):
    """Train and test rows of overlapping Gaussian classes (uneven feature scales, one constant column)."""
    rng = np.random.default_rng(seed)
    centers = rng.normal(size=(classes, dim)) * 0.5
    y = np.arange(2 * n) % classes
    X = centers[y] + rng.normal(size=(2 * n, dim)) * rng.uniform(0.5, 2.0, dim) + 0.5
    X[:, 3] = 7.0
    return X[:n], y[:n], X[n:], y[n:]


def _reference(X, y, C: float = 1.0):
    """scikit-learn run (nearly) to the optimum: the model both backends approximate."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(X)
    return scaler, LogisticRegression(C=C, tol=1e-10, max_iter=100_000).fit(scaler.transform(X), y)


def _objective(probe, X, y, C: float = 1.0) -> float:
    """``C * sum_i logloss_i + 0.5 * ||W||^2`` (intercept not penalised) of a fitted probe, by hand."""
    Z = (X - probe.scaler.mean_) / probe.scaler.scale_
    W = np.atleast_2d(np.asarray(probe.model.coef_, dtype=np.float64))
    b = np.atleast_1d(np.asarray(probe.model.intercept_, dtype=np.float64))
    logits = Z @ W.T + b
    if W.shape[0] == 1:  # binary: logits [0, z]
        logits = np.concatenate([np.zeros_like(logits), logits], axis=1)
    m = logits.max(axis=1, keepdims=True)
    logp = logits - m - np.log(np.exp(logits - m).sum(axis=1, keepdims=True))
    codes = np.searchsorted(probe.classes, y)
    return float(-C * logp[np.arange(y.size), codes].sum() + 0.5 * (W**2).sum())


def test_torch_probe_agrees_with_sklearn_on_cpu():
    X, y, Xt, yt = _problem()
    sk = fit_linear_probe(X, y, backend="sklearn")
    tp = fit_linear_probe(X, y, backend="torch", device="cpu")
    assert tp.backend == "torch" and sk.backend == "sklearn" and tp.converged and sk.converged
    np.testing.assert_array_equal(tp.classes, sk.classes)
    np.testing.assert_allclose(tp.scaler.mean_, sk.scaler.mean_, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(tp.scaler.scale_, sk.scaler.scale_, rtol=1e-12)
    assert tp.scaler.scale_[3] == 1.0  # constant column, as StandardScaler
    acc_sk, acc_t = (sk.predict(Xt) == yt).mean(), (tp.predict(Xt) == yt).mean()
    assert 0.5 < acc_sk < 0.99 and abs(acc_t - acc_sk) <= 0.01
    p = tp.predict_proba(Xt)
    assert p.shape == (yt.size, 8) and np.allclose(p.sum(axis=1), 1.0)
    assert np.abs(p - sk.predict_proba(Xt)).max() < 0.05  # scikit-learn's tol=1e-4 stop (measured 3e-2)
    scaler, ref = _reference(X, y)
    assert np.abs(p - ref.predict_proba(scaler.transform(Xt))).max() < 1e-3  # measured 2e-5


@pytest.mark.parametrize("classes", [8, 2])
def test_torch_objective_is_no_worse_than_sklearn(classes):
    X, y, _, _ = _problem(seed=1, classes=classes)
    for C in (0.1, 1.0, 10.0):
        f_sk = _objective(fit_linear_probe(X, y, C=C, backend="sklearn"), X, y, C)
        tp = fit_linear_probe(X, y, C=C, backend="torch", device="cpu")
        assert np.atleast_2d(tp.model.coef_).shape[0] == (1 if classes == 2 else classes)
        f_t = _objective(tp, X, y, C)
        assert f_t <= f_sk + 1e-6 * abs(f_sk)
        scaler, ref = _reference(X, y, C)
        f_ref = _objective(SimpleNamespace(scaler=scaler, model=ref, classes=ref.classes_), X, y, C)
        assert f_t == pytest.approx(f_ref, rel=1e-6)


def test_torch_probe_is_deterministic_on_cpu():
    X, y, Xt, _ = _problem(seed=2)
    a = fit_linear_probe(X, y, backend="torch", device="cpu")
    b = fit_linear_probe(X, y, backend="torch", device="cpu")
    np.testing.assert_array_equal(a.predict_proba(Xt), b.predict_proba(Xt))
    np.testing.assert_array_equal(linear_probe(X, y, Xt, backend="torch", device="cpu"), a.predict(Xt))


def test_backend_choice_and_errors():
    assert resolve_backend("auto", None) == ("sklearn", torch.device("cpu"))
    assert resolve_backend("auto", "cpu")[0] == "sklearn"
    X, y, Xt, yt = _problem(classes=4, n=120, dim=8)
    from sklearn.linear_model import LogisticRegression

    auto = fit_linear_probe(X, y, device="cpu")
    assert auto.backend == "sklearn" and isinstance(auto.model, LogisticRegression)
    np.testing.assert_array_equal(auto.predict_proba(Xt), fit_linear_probe(X, y, backend="sklearn").predict_proba(Xt))
    with pytest.raises(WorkbenchError, match="probe backend must be one of auto, sklearn, torch") as exc:
        fit_linear_probe(X, y, backend="jax")
    assert "\n" not in str(exc.value)
    with pytest.raises(WorkbenchError, match="not a torch device"):
        fit_linear_probe(X, y, backend="torch", device="gpu0")
    assert EvalConfig().probe_backend == "auto"
    with pytest.raises(ConfigError):
        from_dict(EvalConfig, {"probe_backend": "jax"})
    res = evaluate_embeddings(X, y, Xt, yt, EvalConfig(probe_backend="torch"), class_names=list("abcd"))
    base = evaluate_embeddings(X, y, Xt, yt, EvalConfig(probe_backend="sklearn"), class_names=list("abcd"))
    assert res.config["probe_backend"] == "torch" and abs(res.accuracy - base.accuracy) <= 0.02


def test_torch_probe_feeds_probe_logit():
    from workbench.explain.targets import ProbeLogit

    X, y, _, _ = _problem(classes=3, n=90, dim=6)
    tp = fit_linear_probe(X, y, backend="torch", device="cpu")
    got = ProbeLogit.from_probe(tp, [0, 1, 2])({"feats": torch.tensor(X[:3])})
    dec = tp.model.decision_function(tp.scaler.transform(X[:3]))
    np.testing.assert_allclose(got.numpy(), dec[np.arange(3), [0, 1, 2]], atol=1e-8)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_probe_agrees_with_sklearn_on_cuda():
    X, y, Xt, yt = _problem()
    assert resolve_backend("auto", "cuda")[0] == "torch"
    tp = fit_linear_probe(X, y, device="cuda")
    assert tp.backend == "torch" and tp.converged and tp.model.weight.device.type == "cuda"
    sk = fit_linear_probe(X, y, backend="sklearn")
    assert abs((tp.predict(Xt) == yt).mean() - (sk.predict(Xt) == yt).mean()) <= 0.01
    scaler, ref = _reference(X, y)
    assert np.abs(tp.predict_proba(Xt) - ref.predict_proba(scaler.transform(Xt))).max() < 5e-3  # float32
    assert _objective(tp, X, y) <= _objective(sk, X, y) * (1 + 1e-5)


@pytest.mark.parametrize("backend", ["sklearn", "torch"])
def test_non_finite_features_raise_one_line(backend):
    X, y, _, _ = _problem(classes=3, n=60, dim=5)
    X[4, 2] = np.nan
    with pytest.raises(WorkbenchError, match="NaN or inf") as exc:
        fit_linear_probe(X, y, backend=backend, device="cpu")
    assert "\n" not in str(exc.value)
    X[4, 2] = 0.0
    probe = fit_linear_probe(X, y, backend=backend, device="cpu")
    with pytest.raises(WorkbenchError, match="NaN or inf"):
        probe.predict(np.full((2, 5), np.inf))
