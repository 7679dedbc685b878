"""Landmark-driven local warping: same identity, different local geometry (ContraWarping negatives).

The warp is a smooth displacement field made of Gaussian RBF bumps centred at a few randomly chosen
*expression* landmarks (mouth, eyes, brows by default), each with its own random displacement:

``d(x) = sum_k delta_k * exp(-|x - c_k|^2 / (2 sigma^2))`` (truncated to 0 beyond 3 sigma),

and the image is resampled backwards (``out(x) = in(x - d(x))``), so the content at ``c_k`` moves
to about ``c_k + delta_k``. Outside the 3-sigma discs the field is exactly zero and pixels are copied
unchanged, so the face contour, nose and the overall face geometry (identity cues) are untouched by
construction as long as the chosen regions stay away from them. The ContraWarping paper's exact
operator is UNVERIFIED (seed-methods §3.3); this is the brief's proposed landmark-driven design.

Units: ``face size`` = sqrt(width x height) of the 68-landmark bounding box (about 80 px for a
112 px aligned crop). The displacement of each control point has a uniform random direction and a
length drawn in ``[0.5, 1] x magnitude x face size`` (never near zero, so negatives really differ).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.config import param
from workbench.data.landmarks import PARTS
from workbench.errors import ConfigError
from workbench.views import _ops


@dataclass
class LocalWarpConfig:
    """Random local warping of expression regions."""

    magnitude: float = param(
        0.06, "Max displacement of a control point as a fraction of the face size (sqrt of the landmark "
        "box area; ~80 px at 112 px): 0.06 ~ 5 px. Lengths are drawn in [0.5, 1] x this. 0 = no-op. "
        "Keep <= 1.5 x radius (larger folds the image).", min=0.0, max=0.5)
    regions: tuple[str, ...] = param(
        ("mouth", "eyes", "brows"), "Landmark parts whose points may be moved (names from "
        "workbench.data.landmarks.PARTS). Avoid 'jaw'/'nose': moving them changes identity cues.")
    points_per_region: int = param(3, "Control points moved per region and sample (default 3).", min=1)
    radius: float = param(
        0.1, "Gaussian RBF sigma as a fraction of the face size (default 0.1 ~ 8 px); the field is cut "
        "at 3 sigma. Smaller = more local, larger = smoother but reaches the nose/jaw.", min=1e-3, max=1.0)
    p: float = param(1.0, "Probability that a sample is warped (default 1).", min=0.0, max=1.0)


def _validate(cfg: LocalWarpConfig) -> None:
    unknown = [r for r in cfg.regions if r not in PARTS]
    if unknown:
        raise ConfigError(f"unknown warp region '{unknown[0]}' (choose from {', '.join(PARTS)})")
    if not cfg.regions:
        raise ConfigError("local warp needs at least one region")
    if cfg.magnitude > 1.5 * cfg.radius:
        raise ConfigError(f"local warp magnitude {cfg.magnitude} > 1.5 x radius {cfg.radius} would fold the "
                          "image; lower magnitude or raise radius")


def face_size(landmarks: Tensor) -> Tensor:
    """(B,) sqrt(width x height) of the landmark bounding box, at least 1 px."""
    span = landmarks.amax(dim=1) - landmarks.amin(dim=1)
    return torch.sqrt(span[:, 0].clamp_min(1) * span[:, 1].clamp_min(1))


def _field(points: Tensor, ctrl: Tensor, delta: Tensor, sigma: Tensor) -> Tensor:
    """Displacement at (B, ..., 2) points from K bumps ctrl/delta (B, K, 2) with sigma (B,)."""
    extra = points.ndim - 2
    shape = (-1,) + (1,) * extra
    disp = torch.zeros_like(points)
    s2 = (sigma.view(shape) ** 2)
    for k in range(ctrl.shape[1]):  # a handful of control points
        diff = points - ctrl[:, k].view(shape[:1] + (1,) * extra + (2,))
        r2 = (diff * diff).sum(-1)
        phi = torch.exp(-r2 / (2 * s2)) * (r2 <= 9 * s2)
        disp = disp + phi[..., None] * delta[:, k].view(shape[:1] + (1,) * extra + (2,))
    return disp


def sample_warp_params(landmarks: Tensor, cfg: LocalWarpConfig,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Control points (B, K, 2), displacements (B, K, 2) and sigma (B,) for a batch."""
    b = landmarks.shape[0]
    dev = landmarks.device
    lm = landmarks.float()
    size = face_size(lm)
    chosen = []
    for region in cfg.regions:  # few regions; per-sample choice without replacement
        idx = torch.tensor(PARTS[region], device=dev)
        k = min(cfg.points_per_region, idx.numel())
        order = torch.rand((b, idx.numel()), generator=generator, device=dev).argsort(dim=1)[:, :k]
        chosen.append(idx[order])
    ctrl_idx = torch.cat(chosen, dim=1)  # (B, K)
    ctrl = lm.gather(1, ctrl_idx[..., None].expand(-1, -1, 2))
    n = ctrl.shape[1]
    angle = _ops.uniform((b, n), 0.0, 2 * math.pi, generator, dev)
    length = _ops.uniform((b, n), 0.5, 1.0, generator, dev) * cfg.magnitude * size[:, None]
    apply = _ops.coin(cfg.p, b, generator, dev)
    length = length * apply[:, None]
    delta = torch.stack([torch.cos(angle), torch.sin(angle)], -1) * length[..., None]
    return ctrl, delta, cfg.radius * size


def local_warp(images: Tensor, landmarks: Tensor, cfg: LocalWarpConfig,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Warp expression regions of each face; returns (warped images, displaced landmarks).

    Pixels where the displacement field is zero are copied bit-exactly (a no-op when
    ``magnitude == 0`` or for samples not selected by ``p``). Landmarks are moved with the forward
    map (fixed-point inverse of the backward sampling), so they match the warped image.
    """
    _ops.check_images(images)
    b, _, h, w = images.shape
    _ops.check_landmarks(landmarks, b)
    _ops.check_generator(generator, images.device)
    _validate(cfg)
    ctrl, delta, sigma = sample_warp_params(landmarks, cfg, generator)
    grid = _ops.pixel_grid(h, w, images.device).expand(b, h, w, 2)
    disp = _field(grid, ctrl, delta, sigma)
    warped = _ops.sample_at_pixels(images, grid - disp, padding="border")
    moved = (disp != 0).any(dim=-1)[:, None]
    out = torch.where(moved, warped, images)
    # forward-map the landmarks: y = p + d(y) (contraction since |grad d| < 1)
    lm = landmarks.float()
    y = lm + _field(lm, ctrl, delta, sigma)
    for _ in range(8):
        y = lm + _field(y, ctrl, delta, sigma)
    return out, y.to(landmarks.dtype)
