"""Embeddings of decoded faces under a model: ``embed_faces`` and the :class:`Embeddings` container.

A run's embeddings of a manifest, cached in the run folder: :func:`workbench.runs.extract_embeddings`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from workbench.device import select_device
from workbench.errors import ConfigError


@dataclass
class Embeddings:
    """Embeddings of the usable rows of a manifest (``meta`` holds those rows' manifest columns)."""

    feats: np.ndarray
    z: np.ndarray
    meta: pd.DataFrame
    run: str
    checkpoint: str

    def get(self, feature: str = "feats") -> np.ndarray:
        if feature not in ("feats", "z"):
            raise ConfigError(f"feature must be 'feats' or 'z', got '{feature}'")
        return self.feats if feature == "feats" else self.z

    def __len__(self) -> int:
        return len(self.feats)


@torch.no_grad()
def embed_faces(method, data, *, batch_size: int = 256, device: torch.device | str | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(feats, z) for every row of a FaceData, batched, in eval mode."""
    dev = torch.device(device) if device is not None else select_device("auto")
    was_training = method.training
    method.eval().to(dev)
    feats, zs = [], []
    amp = dev.type == "cuda"
    for s in range(0, len(data), batch_size):
        rows = np.arange(s, min(s + batch_size, len(data)))
        x, _ = data.batch(rows, dev, pin=amp)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            out = method(x)
        feats.append(out["feats"].float().cpu().numpy())
        zs.append(out["z"].float().cpu().numpy())
    method.train(was_training)
    return np.concatenate(feats), np.concatenate(zs)
