"""Online kNN during training: expression accuracy of the current backbone on the val split."""

from __future__ import annotations

import numpy as np
import torch


@torch.no_grad()
def online_knn(method, train_data, val_data, device, *, seed: int = 0, max_train: int = 4000,
               k: int = 20) -> float | None:
    """Weighted cosine kNN (k=20) of val expressions against (a seeded subset of) train features."""
    from workbench.evaluate.embeddings import embed_faces
    from workbench.evaluate.knn import knn_predict

    y_tr, _ = train_data.codes("expression")
    y_va, _ = val_data.codes("expression")
    rng = np.random.default_rng(seed)
    tr_rows = np.flatnonzero(y_tr >= 0)
    if tr_rows.size > max_train:
        tr_rows = np.sort(rng.choice(tr_rows, max_train, replace=False))
    va_rows = np.flatnonzero(y_va >= 0)
    if tr_rows.size < 2 or va_rows.size == 0:
        return None
    f_tr, _ = embed_faces(method, train_data.subset(tr_rows), device=device)
    f_va, _ = embed_faces(method, val_data.subset(va_rows), device=device)
    pred = knn_predict(f_tr, y_tr[tr_rows], f_va, k=k)
    return float(np.mean(pred == y_va[va_rows]))
