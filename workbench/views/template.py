"""A symmetric 68-point template face and a cartoon renderer, for tests, benchmarks and demos.

Not a face generator (see ``workbench.data.synth`` for that): just enough structure (skin, eyes,
brows, nose, mouth placed on the iBUG-68 layout) to check that views move the right pixels.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from workbench.views import _ops


def _unit_template() -> list[tuple[float, float]]:
    pts: list[tuple[float, float]] = []
    for i in range(17):  # jaw: ear (image left) -> chin -> ear
        t = math.pi * i / 16
        pts.append((0.5 - 0.38 * math.cos(t), 0.40 + 0.50 * math.sin(t)))
    for x0 in (0.20, 0.58):  # brows 17-21, 22-26
        for j in range(5):
            s = j / 4
            pts.append((x0 + 0.22 * s, 0.31 - 0.04 * math.sin(math.pi * s)))
    pts += [(0.5, 0.40), (0.5, 0.47), (0.5, 0.54), (0.5, 0.61)]  # nose bridge 27-30
    pts += [(0.43, 0.65), (0.465, 0.665), (0.5, 0.675), (0.535, 0.665), (0.57, 0.65)]  # lower nose 31-35
    pts += [(0.25, 0.40), (0.29, 0.37), (0.35, 0.37), (0.39, 0.40), (0.35, 0.43), (0.29, 0.43)]  # eye 36-41
    pts += [(0.61, 0.40), (0.65, 0.37), (0.71, 0.37), (0.75, 0.40), (0.71, 0.43), (0.65, 0.43)]  # eye 42-47
    pts += [(0.36, 0.77), (0.40, 0.74), (0.45, 0.725), (0.5, 0.73), (0.55, 0.725), (0.60, 0.74),
            (0.64, 0.77), (0.60, 0.81), (0.55, 0.83), (0.5, 0.835), (0.45, 0.83), (0.40, 0.81)]  # 48-59
    pts += [(0.38, 0.77), (0.45, 0.76), (0.5, 0.762), (0.55, 0.76), (0.62, 0.77),
            (0.55, 0.785), (0.5, 0.79), (0.45, 0.785)]  # inner lips 60-67
    return pts


def template_landmarks(size: int, batch: int = 1, *, jitter: float = 0.0, scale_jitter: float = 0.0,
                       generator: torch.Generator | None = None,
                       device: torch.device | str | None = None) -> Tensor:
    """(B, 68, 2) mirror-symmetric frontal template in pixel-centre coordinates of a ``size`` image.

    ``jitter`` = per-point noise (fraction of ``size``); ``scale_jitter`` = per-face random zoom and
    shift (fraction); both drawn from ``generator``.
    """
    base = torch.tensor(_unit_template(), dtype=torch.float32, device=device)
    lm = base.expand(batch, 68, 2).clone()
    if scale_jitter > 0:
        s = 1 + _ops.uniform((batch, 1, 1), -scale_jitter, scale_jitter, generator, lm.device)
        t = _ops.uniform((batch, 1, 2), -scale_jitter / 2, scale_jitter / 2, generator, lm.device)
        lm = (lm - 0.5) * s + 0.5 + t
    if jitter > 0:
        lm = lm + jitter * torch.randn(lm.shape, generator=generator, device=lm.device)
    return lm * size - 0.5


def render_faces(landmarks: Tensor, size: int, generator: torch.Generator | None = None) -> Tensor:
    """(B, 3, size, size) cartoon faces drawn on the landmarks, colours random per sample."""
    b = landmarks.shape[0]
    dev = landmarks.device
    lm = landmarks.float()
    col = lambda lo, hi: _ops.uniform((b, 3, 1, 1), lo, hi, generator, dev)  # noqa: E731
    grid = _ops.pixel_grid(size, size, dev)
    ramp = (grid[..., 1] / max(size - 1, 1))[None, None]
    img = col(0.1, 0.5) * (1 - ramp) + col(0.2, 0.7) * ramp  # background gradient
    hull = lambda idx: _ops.convex_hull_mask(lm[:, idx], size, size)[:, None]  # noqa: E731
    skin = hull(list(range(0, 27)))
    img = torch.where(skin, col(0.55, 0.9), img)
    for brow in (list(range(17, 22)), list(range(22, 27))):
        thick = torch.cat([lm[:, brow], lm[:, brow] + torch.tensor([0.0, 0.035 * size], device=dev)], 1)
        img = torch.where(_ops.convex_hull_mask(thick, size, size)[:, None], col(0.05, 0.25), img)
    for eye in (list(range(36, 42)), list(range(42, 48))):
        img = torch.where(hull(eye), torch.ones_like(img), img)
        c = lm[:, eye].mean(1)
        r = 0.022 * size
        box = torch.cat([c - r, c + r], -1)
        img = torch.where(_ops.ellipse_mask(box, size, size)[:, None], col(0.0, 0.3), img)
    nose = torch.cat([lm[:, 27:36], lm[:, 27:28] + torch.tensor([0.01 * size, 0.0], device=dev)], 1)
    img = torch.where(_ops.convex_hull_mask(nose, size, size)[:, None], img * 0.8, img)
    img = torch.where(hull(list(range(48, 60))), col(0.6, 0.9) * torch.tensor([1.0, 0.3, 0.3], device=dev)
                      .view(1, 3, 1, 1), img)
    img = torch.where(hull(list(range(60, 68))), torch.full_like(img, 0.15), img)
    return img.clamp(0, 1)
