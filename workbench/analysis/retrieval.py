"""Retrieval metrics: mAP@R, R-precision and precision@k (Musgrave et al., "A Metric Learning Reality
Check", ECCV 2020).

For a query with ``R`` relevant items in the database (same label, not itself, and - with
``exclude_same_group`` - not of its own identity), rank the eligible database by cosine similarity
and look at the top ``R``:

    AP@R = (1/R) * sum_{i=1..R} rel(i) * P(i),     P(i) = (#relevant in top i) / i

mAP@R averages AP@R over queries with ``R > 0``. Unlike precision@1 it rewards a whole class being
tight, and unlike plain mAP it does not need the full ranking.

**Cross-identity retrieval** (``groups=identity, exclude_same_group=True``) answers "do faces with
the same expression from *other* people come first?" - an identity-only embedding scores low here
even when its expression kNN looks fine on a leaky split.

The pure functions (:func:`average_precision_at_r`, :func:`precision_at_k`, :func:`r_precision`)
take a boolean relevance matrix ``(Q, K)`` in rank order and the per-query ``R``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError
from workbench.evaluate.knn import encode_groups, iter_masked_similarities


def average_precision_at_r(relevance: Any, n_relevant: Any) -> np.ndarray:
    """Per-query AP@R from a ranked ``(Q, K)`` boolean relevance matrix; ``NaN`` where ``R == 0``.

    Columns beyond a query's ``R`` are ignored; ``K`` must be >= max ``R`` (missing ranks count as
    not relevant).
    """
    rel = np.asarray(relevance, dtype=bool)
    r = np.asarray(n_relevant, dtype=np.int64)
    if rel.ndim != 2 or r.shape != (rel.shape[0],):
        raise WorkbenchError("relevance must be (Q, K) and n_relevant (Q,)")
    q, k = rel.shape
    ranks = np.arange(1, k + 1)
    within = ranks[None, :] <= r[:, None]
    hits = rel & within
    prec = np.cumsum(hits, axis=1) / ranks[None, :]
    with np.errstate(divide="ignore", invalid="ignore"):
        ap = np.where(r > 0, (prec * hits).sum(axis=1) / np.maximum(r, 1), np.nan)
    return ap.astype(np.float64)


def r_precision(relevance: Any, n_relevant: Any) -> np.ndarray:
    """Per-query precision over the top ``R``; ``NaN`` where ``R == 0``."""
    rel = np.asarray(relevance, dtype=bool)
    r = np.asarray(n_relevant, dtype=np.int64)
    within = np.arange(1, rel.shape[1] + 1)[None, :] <= r[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(r > 0, (rel & within).sum(axis=1) / np.maximum(r, 1), np.nan)


def precision_at_k(relevance: Any, k: int) -> np.ndarray:
    """Per-query fraction of relevant items among the top ``k`` (absent ranks count as misses)."""
    rel = np.asarray(relevance, dtype=bool)
    if k < 1:
        raise WorkbenchError(f"k must be >= 1, got {k}")
    return rel[:, :k].sum(axis=1) / float(k)


def _relevant_counts(labels: np.ndarray, groups: np.ndarray | None) -> np.ndarray:
    """R per query: same label, excluding itself, and excluding its own group when groups are given."""
    _, lab = np.unique(labels, return_inverse=True)
    per_label = np.bincount(lab)
    if groups is None:
        return per_label[lab] - 1
    _, grp = np.unique(groups, return_inverse=True)
    pair = lab * (grp.max() + 1) + grp
    _, pair_inv, pair_counts = np.unique(pair, return_inverse=True, return_counts=True)
    return per_label[lab] - pair_counts[pair_inv]


def retrieval_scores(
    X: Any,
    labels: Any,
    *,
    groups: Any = None,
    exclude_same_group: bool = True,
    ks: Sequence[int] = (1, 5, 10),
    chunk_size: int | None = None,
    device: str = "cpu",
    return_per_query: bool = False,
) -> dict[str, Any]:
    """Leave-one-out retrieval within ``X`` by cosine similarity.

    Args:
        labels: what counts as relevant (e.g. expression).
        groups: identity codes; with ``exclude_same_group`` (default) a query never retrieves its
            own identity and ``R`` only counts other identities.
        ks: precision@k cut-offs (default 1, 5, 10).

    Returns ``{"map_at_r", "r_precision", "precision_at_<k>"..., "n_queries", "n_skipped"}``
    (queries with ``R == 0`` are skipped); ``"ap_at_r"`` per query (NaN when skipped) if
    ``return_per_query``.
    """
    lab = np.asarray(labels).astype(str)
    n = lab.shape[0]
    if len(X) != n:
        raise WorkbenchError(f"{len(X)} feature rows but {n} labels")
    grp = None
    if exclude_same_group:
        if groups is None:
            raise WorkbenchError("cross-identity retrieval needs groups (identity codes); "
                                 "pass groups or exclude_same_group=False")
        grp = encode_groups(groups)[0]
    ks = sorted({int(k) for k in ks})
    r_all = _relevant_counts(lab, grp)
    _, lab_codes = np.unique(lab, return_inverse=True)
    lab_t = torch.as_tensor(lab_codes, device=device)
    ap = np.full(n, np.nan)
    rp = np.full(n, np.nan)
    pk = {k: np.full(n, np.nan) for k in ks}
    for start, sims in iter_masked_similarities(X, X, query_groups=grp, key_groups=grp,
                                                exclude_same_group=exclude_same_group, exclude_self=True,
                                                chunk_size=chunk_size, device=device):
        b = sims.shape[0]
        r = r_all[start:start + b]
        kk = int(min(n, max(int(r.max()), max(ks))))
        top, idx = sims.topk(kk, dim=1)
        rel = ((lab_t[idx] == lab_t[start:start + b, None]) & torch.isfinite(top)).cpu().numpy()
        ap[start:start + b] = average_precision_at_r(rel, r)
        rp[start:start + b] = r_precision(rel, r)
        for k in ks:
            pk[k][start:start + b] = np.where(r > 0, precision_at_k(rel, k), np.nan)
    valid = r_all > 0
    if not valid.any():
        raise WorkbenchError("no query has a relevant item (every label occurs in one identity only)")
    out: dict[str, Any] = {
        "map_at_r": float(np.nanmean(ap)),
        "r_precision": float(np.nanmean(rp)),
        **{f"precision_at_{k}": float(np.nanmean(pk[k])) for k in ks},
        "n_queries": int(valid.sum()),
        "n_skipped": int((~valid).sum()),
    }
    if return_per_query:
        out["ap_at_r"] = ap
    return out
