"""Small helpers shared by test modules (imported as ``from _helpers import ...``)."""

from __future__ import annotations

import torch

from workbench.methods import Batch


def random_image_batch(batch: int, size: int, seed: int = 0) -> Batch:
    """A trainer-like Batch of ``batch`` random [0, 1] images (k = 1) with its own seeded generator."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(batch, 1, 3, size, size, generator=g)
    return Batch(images=images, landmarks=None, rows=torch.arange(batch).view(batch, 1), codes={},
                 generator=torch.Generator().manual_seed(seed + 1))
