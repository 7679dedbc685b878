"""Variance decomposition against constructed designs and a dummy-regression reference."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.variance import additive_r2, between_group_share, two_factor_decomposition


def _balanced(w_id: float, w_ex: float, noise: float = 0.0, seed: int = 0):
    rng = np.random.default_rng(seed)
    n_id, n_ex, reps, d = 6, 4, 3, 10
    ident = np.repeat(np.arange(n_id), n_ex * reps)
    expr = np.tile(np.repeat(np.arange(n_ex), reps), n_id)
    A = rng.normal(size=(n_id, d))
    B = rng.normal(size=(n_ex, d))
    A -= A.mean(0)
    B -= B.mean(0)
    X = w_id * A[ident] + w_ex * B[expr] + noise * rng.normal(size=(ident.size, d))
    return X, ident, expr, A, B


def test_balanced_additive_design_exact_shares():
    X, ident, expr, A, B = _balanced(1.0, 1.0)
    ss_a = (A ** 2).sum() * 12  # each identity has 12 rows
    ss_b = (B ** 2).sum() * 18
    d = two_factor_decomposition(X, ident, expr, normalize=False)
    assert d["identity"] == pytest.approx(ss_a / (ss_a + ss_b))
    assert d["expression"] == pytest.approx(ss_b / (ss_a + ss_b))
    assert d["additive"] == pytest.approx(1.0)
    assert d["residual"] == pytest.approx(0.0, abs=1e-9)
    assert d["shared"] == pytest.approx(0.0, abs=1e-9)
    parts = d["identity_unique"] + d["expression_unique"] + d["shared"] + d["residual"]
    assert parts == pytest.approx(1.0)


def test_pure_factors():
    X, ident, expr, *_ = _balanced(1.0, 0.0, noise=0.01)
    assert between_group_share(X, ident) > 0.99
    assert between_group_share(X, expr) < 0.01
    X, ident, expr, *_ = _balanced(0.0, 1.0, noise=0.01)
    assert between_group_share(X, expr) > 0.99
    assert between_group_share(X, ident) < 0.01


def test_additive_r2_matches_dummy_regression_on_unbalanced_design():
    rng = np.random.default_rng(1)
    n = 90
    ident = rng.integers(0, 7, n)
    expr = rng.integers(0, 3, n)
    X = rng.normal(size=(n, 4)) + np.eye(7)[ident][:, :4] + 0.5 * np.eye(3)[expr].repeat(2, 1)[:, :4]
    Xc = X - X.mean(0)
    design = np.concatenate([np.ones((n, 1)), np.eye(7)[ident], np.eye(3)[expr]], axis=1)
    fitted = design @ np.linalg.lstsq(design, X, rcond=None)[0]
    ref = ((fitted - X.mean(0)) ** 2).sum() / (Xc ** 2).sum()
    assert additive_r2(X, ident, expr, normalize=False) == pytest.approx(ref, rel=1e-9)
    d = two_factor_decomposition(X, ident, expr, normalize=False)
    parts = d["identity_unique"] + d["expression_unique"] + d["shared"] + d["residual"]
    assert parts == pytest.approx(1.0)


def test_normalize_uses_cosine_geometry():
    X, ident, expr, *_ = _balanced(1.0, 1.0, noise=0.1)
    scaled = X * np.random.default_rng(0).uniform(1, 10, size=(X.shape[0], 1))  # row scale is irrelevant
    assert between_group_share(scaled, ident) == pytest.approx(between_group_share(X, ident))
