"""How much of an embedding's variance is explained by identity, by expression, by both.

All shares are ratios of sums of squares over *all* dimensions (trace of the covariance):

- :func:`between_group_share` (eta squared): ``sum_g n_g ||mean_g - mean||^2 / sum_i ||x_i - mean||^2``.
  1 = every row equals its group mean (the factor explains everything), 0 = group means coincide.
- :func:`two_factor_decomposition`: least-squares fit of the additive model
  ``x_i = mu + a[identity_i] + b[expression_i] + e_i`` and a commonality split of its R^2::

      identity_unique   = R2_additive - eta2_expression
      expression_unique = R2_additive - eta2_identity
      shared            = eta2_identity + eta2_expression - R2_additive
      residual          = 1 - R2_additive        (interaction + within-cell noise)

  The four parts sum to 1. ``shared`` is ~0 in a balanced design (every identity shows every
  expression equally often) and can be negative when factors are confounded in opposite directions.

Rows are L2-normalised first by default (``normalize=True``), so the shares describe the cosine
geometry the kNN and retrieval metrics use; pass ``False`` to analyse raw features.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from workbench.errors import WorkbenchError


def _prepare(X: Any, normalize: bool) -> np.ndarray:
    a = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X, dtype=np.float64)
    if a.ndim != 2 or a.shape[0] < 2:
        raise WorkbenchError(f"need a (N, D) array with N >= 2, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise WorkbenchError("features contain NaN or inf")
    if normalize:
        a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    return a - a.mean(axis=0, keepdims=True)


def _codes(labels: Any, n: int, name: str) -> tuple[np.ndarray, int]:
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise WorkbenchError(f"{name} must have one entry per row ({n}), got shape {lab.shape}")
    uniq, inv = np.unique(lab.astype(str), return_inverse=True)
    return inv.astype(np.int64), uniq.size


def _group_sums(Xc: np.ndarray, codes: np.ndarray, g: int) -> np.ndarray:
    from scipy.sparse import csr_matrix

    m = csr_matrix((np.ones(codes.size), (codes, np.arange(codes.size))), shape=(g, codes.size))
    return np.asarray(m @ Xc)


def between_group_share(X: Any, labels: Any, *, normalize: bool = True) -> float:
    """Eta squared of ``labels`` on ``X``: between-group sum of squares / total sum of squares."""
    Xc = _prepare(X, normalize)
    codes, g = _codes(labels, Xc.shape[0], "labels")
    total = float((Xc ** 2).sum())
    if total == 0.0:
        return 0.0
    sums = _group_sums(Xc, codes, g)
    counts = np.bincount(codes, minlength=g).astype(np.float64)
    between = float(((sums ** 2).sum(axis=1) / counts).sum())
    return between / total


def additive_r2(X: Any, a_labels: Any, b_labels: Any, *, normalize: bool = True) -> float:
    """R^2 of the least-squares additive two-factor model ``mu + a[i] + b[j]`` (exact, any design).

    Solved by eliminating the ``a`` effects: a ``(n_b x n_b)`` system, so identities may number in
    the thousands.
    """
    Xc = _prepare(X, normalize)
    n = Xc.shape[0]
    ca, ga = _codes(a_labels, n, "identity")
    cb, gb = _codes(b_labels, n, "expression")
    total = float((Xc ** 2).sum())
    if total == 0.0:
        return 0.0
    na = np.bincount(ca, minlength=ga).astype(np.float64)
    nb = np.bincount(cb, minlength=gb).astype(np.float64)
    sa, sb = _group_sums(Xc, ca, ga), _group_sums(Xc, cb, gb)
    cross = np.zeros((ga, gb))
    np.add.at(cross, (ca, cb), 1.0)
    # normal equations: diag(nb) B + cross^T A = sb ;  diag(na) A + cross B = sa
    lhs = np.diag(nb) - cross.T @ (cross / na[:, None])
    rhs = sb - cross.T @ (sa / na[:, None])
    B = np.linalg.lstsq(lhs, rhs, rcond=None)[0]
    A = (sa - cross @ B) / na[:, None]
    fitted = A[ca] + B[cb]
    return float(((fitted - fitted.mean(axis=0)) ** 2).sum()) / total


def two_factor_decomposition(X: Any, identity: Any, expression: Any, *, normalize: bool = True
                             ) -> dict[str, float]:
    """Identity / expression variance shares and their additive commonality split.

    Returns ``identity``, ``expression`` (eta squared of each factor alone), ``additive`` (R^2 of
    both), ``identity_unique``, ``expression_unique``, ``shared`` and ``residual`` (the last four sum to 1).
    """
    eta_id = between_group_share(X, identity, normalize=normalize)
    eta_ex = between_group_share(X, expression, normalize=normalize)
    r2 = additive_r2(X, identity, expression, normalize=normalize)
    r2 = max(r2, eta_id, eta_ex)  # guards round-off; the joint model nests both
    return {
        "identity": eta_id,
        "expression": eta_ex,
        "additive": r2,
        "identity_unique": r2 - eta_ex,
        "expression_unique": r2 - eta_id,
        "shared": eta_id + eta_ex - r2,
        "residual": 1.0 - r2,
    }
