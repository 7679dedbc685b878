"""The TensorBoard embedding projector of a run: a sample of faces with thumbnails and labels.

``tensorboard --logdir runs/`` then shows, under *Projector*, the run's pooled features (``feats``) of up to
``n`` faces of the training manifest (seeded, balanced over the sample), each with its thumbnail and its
manifest labels (expression, identity, split, view, ...), for PCA / t-SNE / UMAP in the browser.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from workbench.data.cache import FaceData
from workbench.evaluate.embeddings import embed_faces
from workbench.runs.layout import RunFolder

#: manifest columns shown as labels (those present)
LABEL_COLUMNS = ("expression", "identity", "split", "view", "group", "clip", "intensity")
#: thumbnail side in px (the projector's sprite sheet has a size limit of 8192 x 8192)
THUMBNAIL = 32


def write_projector(folder: RunFolder, method: Any, data: FaceData, *, n: int = 500, seed: int = 0,
                    step: int = 0, device: torch.device | str | None = None) -> int:
    """Write the projector files of ``method`` over a sample of ``data`` into the run's TensorBoard folder;
    returns the number of faces written (0 when the ``tensorboard`` package is not installed)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:  # tensorboard is optional: the scalars are skipped the same way
        return 0
    rows = np.arange(len(data))
    if rows.size > n:
        rows = np.sort(np.random.default_rng(seed).choice(rows, n, replace=False))
    sample = data.subset(rows)
    feats, _ = embed_faces(method, sample, device=device)
    frame = sample.manifest.frame.reset_index(drop=True)
    columns = [c for c in LABEL_COLUMNS if c in frame.columns]
    if not columns:
        columns = ["path"]
    labels = [[_label(frame.at[i, c]) for c in columns] for i in range(len(frame))]
    images, _ = sample.batch(np.arange(len(sample)), "cpu")
    thumbs = torch.nn.functional.interpolate(images, size=(THUMBNAIL, THUMBNAIL), mode="bilinear",
                                             antialias=True, align_corners=False)
    writer = SummaryWriter(str(folder.tensorboard))
    try:
        writer.add_embedding(torch.from_numpy(feats), metadata=labels if len(columns) > 1 else [r[0] for r in labels],
                             metadata_header=columns if len(columns) > 1 else None, label_img=thumbs,
                             global_step=step, tag="feats")
    finally:
        writer.close()
    return len(frame)


def _label(value: Any) -> str:
    text = "" if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)
    return text.replace("\t", " ").replace("\n", " ") or "-"
