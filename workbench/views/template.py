"""A symmetric 68-point template face and a cartoon renderer, for tests, benchmarks and demos.

Not a face generator (see ``workbench.data.synth`` for that): just enough structure (skin, eyes,
brows, nose, mouth placed on the iBUG-68 layout) to check that views move the right pixels.
"""

from __future__ import annotations

import torch
from torch import Tensor

from workbench.data.geometry import convex_hull_mask
from workbench.views import _ops


def render_faces(landmarks: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """(B, 3, size, size) cartoon faces drawn on the landmarks, colours random per sample."""
    b = landmarks.shape[0]
    dev = landmarks.device
    lm = landmarks.float()
    col = lambda lo, hi: _ops.uniform((b, 3, 1, 1), lo, hi, generator, dev)  # noqa: E731
    grid = _ops.pixel_grid(size, size, dev)
    ramp = (grid[..., 1] / max(size - 1, 1))[None, None]
    img = col(0.1, 0.5) * (1 - ramp) + col(0.2, 0.7) * ramp  # background gradient
    hull = lambda idx: convex_hull_mask(lm[:, idx], size, size)[:, None]  # noqa: E731
    skin = hull(list(range(0, 27)))
    img = torch.where(skin, col(0.55, 0.9), img)
    for brow in (list(range(17, 22)), list(range(22, 27))):
        thick = torch.cat([lm[:, brow], lm[:, brow] + torch.tensor([0.0, 0.035 * size], device=dev)], 1)
        img = torch.where(convex_hull_mask(thick, size, size)[:, None], col(0.05, 0.25), img)
    for eye in (list(range(36, 42)), list(range(42, 48))):
        img = torch.where(hull(eye), torch.ones_like(img), img)
        c = lm[:, eye].mean(1)
        r = 0.022 * size
        box = torch.cat([c - r, c + r], -1)
        img = torch.where(_ops.ellipse_mask(box, size, size)[:, None], col(0.0, 0.3), img)
    nose = torch.cat([lm[:, 27:36], lm[:, 27:28] + torch.tensor([0.01 * size, 0.0], device=dev)], 1)
    img = torch.where(convex_hull_mask(nose, size, size)[:, None], img * 0.8, img)
    img = torch.where(hull(list(range(48, 60))), col(0.6, 0.9) * torch.tensor([1.0, 0.3, 0.3], device=dev)
                      .view(1, 3, 1, 1), img)
    img = torch.where(hull(list(range(60, 68))), torch.full_like(img, 0.15), img)
    return img.clamp(0, 1)
