"""Collapse monitor: cheap statistics of a batch of embeddings, logged during training.

- ``std``: mean per-dimension standard deviation of L2-normalised embeddings (lightly's
  ``std_of_l2_normalized``). Healthy ≈ 1/sqrt(d); complete collapse → 0.
- ``std_ratio``: ``std · sqrt(d)`` (≈ 1 healthy, → 0 collapsed), comparable across dims.
- ``effective_rank``: exp of the entropy of the normalised singular values (RankMe, Garrido et al.
  2023). Dimensional collapse shows as a falling rank long before the loss says anything.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


@torch.no_grad()
def collapse_stats(z: torch.Tensor) -> dict[str, float]:
    z = F.normalize(z.detach().float(), dim=1)
    d = z.shape[1]
    std = float(z.std(dim=0).mean()) if z.shape[0] > 1 else 0.0
    s = torch.linalg.svdvals(z - z.mean(0, keepdim=True)) if z.shape[0] > 1 else torch.zeros(1)
    p = s / s.sum().clamp(min=1e-12)
    entropy = float(-(p * torch.log(p.clamp(min=1e-12))).sum())
    return {"std": std, "std_ratio": std * math.sqrt(d), "effective_rank": math.exp(entropy)}
