"""Train / val / test assignment: keep official splits, otherwise make subject-disjoint ones.

Subject-disjoint means no identity appears in two splits, so a test score measures generalisation
to unseen people (a random row split lets a model recognise the person instead of the expression).

- :func:`assign_splits`: one train/val/test label per row (official split kept when given).
- :func:`subject_folds`: k subject-disjoint folds (the usual protocol for small posed datasets such
  as JAFFE, KDEF, CK+).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import pandas as pd

from workbench.errors import ConfigError

SPLITS: tuple[str, ...] = ("train", "val", "test")
#: accepted spellings of the split names (case-insensitive)
SPLIT_ALIASES: dict[str, str] = {
    "train": "train", "training": "train", "trn": "train",
    "val": "val", "valid": "val", "validation": "val", "dev": "val",
    "test": "test", "testing": "test", "tst": "test",
}


def _identities(frame: pd.DataFrame) -> list[str | None]:
    if "identity" not in frame.columns:
        return [None] * len(frame)
    out: list[str | None] = []
    for v in frame["identity"].tolist():
        if isinstance(v, str):
            out.append(v if v.strip() else None)
        elif v is None or pd.isna(v):
            out.append(None)
        else:
            out.append(str(v))
    return out


def assign_splits(frame: pd.DataFrame, *, seed: int = 0,
                  fractions: Sequence[float] = (0.7, 0.15, 0.15)) -> pd.Series:
    """train/val/test per row (a Series aligned to ``frame.index``).

    1. an official ``split`` column is kept (rows without one are assigned as below);
    2. otherwise subject-disjoint by ``identity``: identities are shuffled with ``seed`` and filled
       into train/val/test until each holds ~``fractions`` of the rows (each non-zero fraction gets
       at least one identity when there are enough); rows without identity are assigned per row;
    3. without identities, a seeded random split by row, with a warning (test images may then show
       the same people as training images, which inflates accuracy).
    """
    fr = np.asarray(fractions, dtype=np.float64)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0, atol=1e-6):
        raise ConfigError(f"split fractions must be 3 non-negative numbers summing to 1, got {tuple(fractions)}")
    n = len(frame)
    out = np.full(n, None, dtype=object)
    if "split" in frame.columns:
        for i, v in enumerate(frame["split"].tolist()):
            if isinstance(v, str) and v.strip().lower() in SPLIT_ALIASES:
                out[i] = SPLIT_ALIASES[v.strip().lower()]
    todo = np.array([v is None for v in out], dtype=bool)
    if not todo.any():
        return pd.Series(out, index=frame.index, dtype=object)
    rng = np.random.default_rng(seed)
    cuts = np.cumsum(fr)
    ids = _identities(frame)
    has_id = np.array([i is not None for i in ids], dtype=bool) & todo
    if has_id.any():
        uniq = sorted({ids[i] for i in np.flatnonzero(has_id)})
        counts = pd.Series([ids[i] for i in np.flatnonzero(has_id)]).value_counts()
        order = rng.permutation(len(uniq))
        shuffled = [uniq[k] for k in order]
        total = float(sum(counts[u] for u in shuffled))
        assign: dict[str, int] = {}
        done = 0.0
        for u in shuffled:
            c = float(counts[u])
            mid = (done + c / 2.0) / total
            assign[u] = int(min(np.searchsorted(cuts, mid, side="right"), 2))
            done += c
        # every split with a non-zero fraction gets at least one identity when possible
        wanted = [k for k in range(3) if fr[k] > 0]
        if len(uniq) >= len(wanted):
            for k in wanted:
                if k not in assign.values():
                    by_split: dict[int, list[str]] = {}
                    for u, s in assign.items():
                        by_split.setdefault(s, []).append(u)
                    donor = max(by_split, key=lambda s: len(by_split[s]))
                    if len(by_split[donor]) > 1:
                        assign[by_split[donor][-1]] = k
        for i in np.flatnonzero(has_id):
            out[i] = SPLITS[assign[ids[i]]]
    rest = np.flatnonzero(todo & ~has_id)
    if rest.size:
        if not has_id.any():
            warnings.warn("no identity column: splitting by row at random, so test images may show the "
                          "same people as training images", UserWarning, stacklevel=2)
        u = rng.random(rest.size)
        for i, x in zip(rest, u):
            out[i] = SPLITS[int(min(np.searchsorted(cuts, x, side="right"), 2))]
    return pd.Series(out, index=frame.index, dtype=object)


def subject_folds(frame: pd.DataFrame, k: int = 5, *, seed: int = 0) -> np.ndarray:
    """Fold index (0..k-1) per row, subject-disjoint by ``identity`` and balanced by row count.

    Rows without identity are spread at random (seeded). Raises ConfigError when ``k`` exceeds the
    number of identities.
    """
    if int(k) < 2:
        raise ConfigError(f"k must be at least 2, got {k}")
    ids = _identities(frame)
    uniq = sorted({i for i in ids if i is not None})
    if uniq and len(uniq) < k:
        raise ConfigError(f"cannot make {k} subject-disjoint folds from {len(uniq)} identities")
    rng = np.random.default_rng(seed)
    counts = pd.Series([i for i in ids if i is not None]).value_counts() if uniq else pd.Series(dtype=int)
    order = [uniq[j] for j in rng.permutation(len(uniq))]
    # greedy: biggest identities first into the currently smallest fold
    order.sort(key=lambda u: -int(counts[u]))
    sizes = np.zeros(k, dtype=np.int64)
    fold_of: dict[str, int] = {}
    for u in order:
        f = int(np.argmin(sizes))
        fold_of[u] = f
        sizes[f] += int(counts[u])
    out = np.empty(len(frame), dtype=np.int64)
    for r, i in enumerate(ids):
        out[r] = fold_of[i] if i is not None else int(rng.integers(k))
    return out
