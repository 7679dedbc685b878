"""Weighted k-nearest-neighbour evaluation on frozen embeddings (cosine similarity).

The classifier is the one of DINO / solo-learn (``WeightedKNNClassifier(k=20, T=0.07)``): the ``k``
most cosine-similar training rows vote for their class with weight ``exp(sim / temperature)``.
Lower temperatures trust the closest neighbours more; 0.07 works well for L2-normalised SSL
features, 0.1-0.5 for noisier ones.

**Leakage-aware option.** On FER data every subject contributes many images, so the nearest
neighbour of a face is usually the same person with another expression - or the same expression a
frame later. ``exclude_same_group=True`` (groups = identity codes) removes every training row of the
query's own identity from its neighbour list, so identity matching cannot inflate expression
accuracy. ``leave_one_out=True`` scores a set against itself without the query matching itself.

Work is chunked over queries (about 16 M similarities, 64 MB, per chunk by default), so 50k x 50k
runs in bounded memory; pass ``device="cuda"`` to use a GPU.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from workbench.errors import WorkbenchError

DEFAULT_CHUNK_ELEMENTS = 1 << 24  # similarities held at once (64 MB in float32)


def _as_tensor(x: Any, device: str | torch.device, name: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x)
    if t.ndim != 2:
        raise WorkbenchError(f"{name} must be a 2-D (N, D) array, got shape {tuple(t.shape)}")
    if t.shape[0] == 0:
        raise WorkbenchError(f"{name} is empty")
    return t.to(device=device, dtype=torch.float32)


def encode_groups(*groups: Any) -> list[np.ndarray]:
    """Jointly encode any group arrays (strings, ints...) to int64 codes comparable across arrays."""
    arrays = [np.asarray(g).astype(str) for g in groups]
    _, inv = np.unique(np.concatenate(arrays), return_inverse=True)
    out, start = [], 0
    for a in arrays:
        out.append(inv[start:start + a.size].astype(np.int64))
        start += a.size
    return out


def iter_masked_similarities(
    query_X: Any,
    keys_X: Any,
    *,
    query_groups: Any = None,
    key_groups: Any = None,
    exclude_same_group: bool = False,
    exclude_self: bool = False,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
) -> Iterator[tuple[int, torch.Tensor]]:
    """Yield ``(start_row, sims)`` chunks of the cosine-similarity matrix ``query x keys``.

    Excluded pairs (same group when ``exclude_same_group``; the diagonal when ``exclude_self``,
    which requires the query and key sets to be the same rows) hold ``-inf``.
    ``chunk_size`` (queries per chunk) defaults to keep about 16 M similarities in memory.
    """
    q = torch.nn.functional.normalize(_as_tensor(query_X, device, "query features"), dim=1)
    kx = torch.nn.functional.normalize(_as_tensor(keys_X, device, "reference features"), dim=1)
    if q.shape[1] != kx.shape[1]:
        raise WorkbenchError(f"feature sizes differ: queries {q.shape[1]} vs references {kx.shape[1]}")
    nq, nk = q.shape[0], kx.shape[0]
    if exclude_self and nq != nk:
        raise WorkbenchError("leave-one-out needs the query set to be the reference set (same rows)")
    qg = kg = None
    if exclude_same_group:
        if query_groups is None or key_groups is None:
            raise WorkbenchError("exclude_same_group needs identity codes for both the queries and the references")
        if len(query_groups) != nq or len(key_groups) != nk:
            raise WorkbenchError("group arrays must have one entry per row of their feature array")
        qg_np, kg_np = encode_groups(query_groups, key_groups)
        qg, kg = torch.as_tensor(qg_np, device=device), torch.as_tensor(kg_np, device=device)
    rows = chunk_size or max(1, DEFAULT_CHUNK_ELEMENTS // nk)
    for start in range(0, nq, rows):
        stop = min(nq, start + rows)
        sims = q[start:stop] @ kx.T
        if qg is not None and kg is not None:
            sims.masked_fill_(qg[start:stop, None] == kg[None, :], float("-inf"))
        if exclude_self:
            r = torch.arange(stop - start, device=sims.device)
            sims[r, r + start] = float("-inf")
        yield start, sims


def _iter_weighted_neighbors(train_X: Any, query_X: Any, k: int, temperature: float, **kw: Any
                             ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
    if temperature <= 0:
        raise WorkbenchError(f"temperature must be > 0, got {temperature}")
    if k < 1:
        raise WorkbenchError(f"k must be >= 1, got {k}")
    n_train = len(train_X)
    kk = min(k, n_train)
    for start, sims in iter_masked_similarities(query_X, train_X, **kw):
        top, idx = sims.topk(kk, dim=1)
        weights = (top / temperature).exp()  # -inf -> 0: excluded neighbours do not vote
        yield start, weights, idx


def knn_predict(
    train_X: Any,
    train_y: Any,
    query_X: Any = None,
    *,
    k: int = 20,
    temperature: float = 0.07,
    n_classes: int | None = None,
    train_groups: Any = None,
    query_groups: Any = None,
    exclude_same_group: bool = False,
    leave_one_out: bool = False,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    return_scores: bool = False,
) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Weighted kNN class predictions for ``query_X`` from ``(train_X, train_y)``.

    Args:
        train_y: int class indices ``0..C-1``.
        query_X: queries; ``None`` together with ``leave_one_out=True`` scores the training set
            against itself (each row's own vote removed).
        k: neighbours (default 20, as DINO/solo-learn; 10-50 are typical).
        temperature: vote weight ``exp(sim / temperature)`` (default 0.07).
        exclude_same_group: ignore training rows whose group (identity) equals the query's.
        return_scores: also return the ``(Q, C)`` normalised vote scores.

    Queries left without any eligible neighbour get class 0 and a warning.
    """
    y = np.asarray(train_y).astype(np.int64)
    if y.shape[0] != len(train_X):
        raise WorkbenchError("train_y must have one label per row of train_X")
    if leave_one_out:
        query_X = train_X if query_X is None else query_X
        query_groups = train_groups if query_groups is None else query_groups
    elif query_X is None:
        raise WorkbenchError("query_X is required unless leave_one_out=True")
    c = int(n_classes if n_classes is not None else y.max() + 1)
    y_t = torch.as_tensor(y, device=device)
    preds, scores_all, empty = [], [], 0
    for _, w, idx in _iter_weighted_neighbors(
        train_X, query_X, k, temperature, query_groups=query_groups, key_groups=train_groups,
        exclude_same_group=exclude_same_group, exclude_self=leave_one_out, chunk_size=chunk_size,
        device=device,
    ):
        scores = torch.zeros(w.shape[0], c, device=w.device, dtype=torch.float32)
        scores.scatter_add_(1, y_t[idx], w)
        total = scores.sum(dim=1, keepdim=True)
        empty += int((total == 0).sum())
        preds.append(scores.argmax(dim=1).cpu())
        if return_scores:
            scores_all.append((scores / total.clamp_min(1e-30)).cpu())
    if empty:
        warnings.warn(f"{empty} queries had no eligible neighbour (all references excluded) and got class 0",
                      stacklevel=2)
    pred = torch.cat(preds).numpy()
    if return_scores:
        return pred, torch.cat(scores_all).numpy()
    return pred


def knn_regress(
    train_X: Any,
    train_t: Any,
    query_X: Any = None,
    *,
    k: int = 20,
    temperature: float = 0.07,
    train_groups: Any = None,
    query_groups: Any = None,
    exclude_same_group: bool = False,
    leave_one_out: bool = False,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
) -> np.ndarray:
    """Weighted kNN regression (e.g. valence/arousal): the ``exp(sim / temperature)``-weighted mean of
    the neighbours' targets. Same options as :func:`knn_predict`; queries without an eligible neighbour
    get the training mean."""
    t = np.asarray(train_t, dtype=np.float64)
    if t.ndim != 1 or t.shape[0] != len(train_X):
        raise WorkbenchError("train targets must be 1-D with one value per row of train_X")
    if leave_one_out:
        query_X = train_X if query_X is None else query_X
        query_groups = train_groups if query_groups is None else query_groups
    elif query_X is None:
        raise WorkbenchError("query_X is required unless leave_one_out=True")
    t_t = torch.as_tensor(t, device=device, dtype=torch.float64)
    out = []
    for _, w, idx in _iter_weighted_neighbors(
        train_X, query_X, k, temperature, query_groups=query_groups, key_groups=train_groups,
        exclude_same_group=exclude_same_group, exclude_self=leave_one_out, chunk_size=chunk_size,
        device=device,
    ):
        w = w.double()
        total = w.sum(dim=1)
        val = (w * t_t[idx]).sum(dim=1) / total.clamp_min(1e-300)
        val = torch.where(total > 0, val, torch.full_like(val, float(t.mean())))
        out.append(val.cpu())
    return torch.cat(out).numpy()
