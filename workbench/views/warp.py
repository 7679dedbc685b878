"""Landmark-driven local warping: same identity, different local geometry (ContraWarping negatives).

The warp is a smooth displacement field made of Gaussian RBF bumps centred at a few randomly chosen
*expression* landmarks (mouth, eyes, brows by default), each with its own random displacement:

``d(x) = sum_k delta_k * g(|x - c_k| / sigma_k)`` with ``g`` a Gaussian lowered by its value at 3 sigma
(so each bump is continuous and exactly 0 from 3 sigma_k on),

and the image is resampled backwards (``out(x) = in(x - d(x))``), so the content at ``c_k`` moves
to about ``c_k + delta_k``. Outside the bumps the field is exactly zero and pixels are copied
bit-exactly. Identity geometry is protected by construction: each bump is narrowed so that it ends
before the nearest *pinned* landmark (jaw and nose by default: ``sigma_k <= gap_k / 3``), so those
landmarks never move, and ``|delta_k| <= sigma_k`` keeps every bump fold-free (slope <= 0.61);
where overlapping bumps would add up to a slope above ``MAX_SLOPE`` = 0.8 (pixel-grid Jacobian),
that sample's whole field is scaled down, so a warp never folds or tears.
The ContraWarping paper's exact operator is UNVERIFIED (seed-methods §3.3); this is the brief's
proposed landmark-driven design.

Units: ``face size`` = sqrt(width x height) of the 68-landmark bounding box (about 80 px for a
112 px aligned crop). The displacement of each control point has a uniform random direction and a
length drawn in ``[0.5, 1] x magnitude x face size`` (then capped at sigma_k). Near pinned points
(e.g. the upper lip under the nose) bumps are smaller and move less.
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
        "box area; ~80 px at 112 px): 0.06 ~ 5 px. Lengths are drawn in [0.5, 1] x this and capped at the bump's "
        "sigma (no folding), so values above radius saturate. 0 = no-op.", min=0.0, max=0.5)
    regions: tuple[str, ...] = param(
        ("mouth", "eyes", "brows"), "Landmark parts whose points may be moved (names from "
        "workbench.data.landmarks.PARTS). Avoid 'jaw'/'nose': moving them changes identity cues.")
    points_per_region: int = param(3, "Control points moved per region and sample (default 3).", min=1)
    radius: float = param(
        0.1, "Gaussian RBF sigma as a fraction of the face size (default 0.1 ~ 8 px); the field is cut "
        "at 3 sigma. Smaller = more local, larger = smoother but reaches the nose/jaw.", min=1e-3, max=1.0)
    p: float = param(1.0, "Probability that a sample is warped (default 1).", min=0.0, max=1.0)
    pin: tuple[str, ...] = param(
        ("jaw", "nose"), "Parts held exactly fixed (identity geometry): each bump is narrowed to end "
        "before the nearest pinned landmark (sigma <= gap / 3) and moves at most one sigma. "
        "Empty = same-size bumps everywhere (the chin and nose then move a little with the mouth).")


def _validate(cfg: LocalWarpConfig) -> None:
    unknown = [r for r in (*cfg.regions, *cfg.pin) if r not in PARTS]
    if unknown:
        raise ConfigError(f"unknown warp region '{unknown[0]}' (choose from {', '.join(PARTS)})")
    if not cfg.regions:
        raise ConfigError("local warp needs at least one region")


def face_size(landmarks: Tensor) -> Tensor:
    """(B,) sqrt(width x height) of the landmark bounding box, at least 1 px."""
    span = landmarks.amax(dim=1) - landmarks.amin(dim=1)
    return torch.sqrt(span[:, 0].clamp_min(1) * span[:, 1].clamp_min(1))


_CUT = math.exp(-4.5)  # Gaussian value at 3 sigma, subtracted so the bump is continuous and compact


def _field(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor) -> Tensor:
    """Displacement at (B, H, W, 2) grid points from K bumps: centres / delta (B, K, 2), sigma (B, K)."""
    disp = torch.zeros_like(points)
    for k in range(centres.shape[1]):  # a handful of control points; each step is (B, H, W)
        diff = points - centres[:, k, None, None, :]
        r2 = (diff * diff).sum(-1)
        s2 = sigma[:, k, None, None] ** 2
        phi = ((torch.exp(-r2 / (2 * s2)) - _CUT) / (1 - _CUT)).clamp_min(0)  # Gaussian, 0 from 3 sigma on
        disp = disp + phi[..., None] * delta[:, k, None, None, :]
    return disp


def _field_at(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Displacement (B, P, 2) and its Jacobian (B, P, 2, 2) at a few points (B, P, 2), vectorised over K."""
    diff = points[:, :, None, :] - centres[:, None, :, :]  # (B, P, K, 2)
    r2 = (diff * diff).sum(-1)
    s2 = sigma[:, None, :] ** 2
    g = torch.exp(-r2 / (2 * s2))
    inside = g > _CUT
    phi = torch.where(inside, (g - _CUT) / (1 - _CUT), torch.zeros_like(g))
    dphi = torch.where(inside, -g / ((1 - _CUT) * s2), torch.zeros_like(g))[..., None] * diff  # (B, P, K, 2)
    disp = (phi[..., None] * delta[:, None]).sum(2)
    jac = torch.einsum("bkd,bpke->bpde", delta, dphi)  # d disp_d / d x_e
    return disp, jac


def _forward_points(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor, steps: int = 8) -> Tensor:
    """Solve ``y - d(y) = p`` for each point p (Newton; the map is invertible since |grad d| < 1)."""
    y = points + _field_at(points, centres, delta, sigma)[0]
    eye = torch.eye(2, device=points.device, dtype=points.dtype)
    for _ in range(steps):
        d, jac = _field_at(y, centres, delta, sigma)
        r = y - d - points  # residual
        a = eye - jac  # Jacobian of y - d(y)
        det = (a[..., 0, 0] * a[..., 1, 1] - a[..., 0, 1] * a[..., 1, 0]).clamp_min(1e-6)
        step_x = (a[..., 1, 1] * r[..., 0] - a[..., 0, 1] * r[..., 1]) / det
        step_y = (-a[..., 1, 0] * r[..., 0] + a[..., 0, 0] * r[..., 1]) / det
        y = y - torch.stack([step_x, step_y], -1)
    return y


def pinned_indices(cfg: LocalWarpConfig) -> list[int]:
    """Landmarks held fixed: the ``pin`` parts minus anything listed in ``regions``."""
    moving = {i for r in cfg.regions for i in PARTS[r]}
    return sorted({i for r in cfg.pin for i in PARTS[r]} - moving)


@_ops.full_precision
def sample_warp_params(landmarks: Tensor, cfg: LocalWarpConfig,
                       generator: torch.Generator | None) -> tuple[Tensor, Tensor, Tensor]:
    """Control points (B, K, 2), displacements (B, K, 2) and per-bump sigma (B, K) for a batch.

    With pinned parts, each bump's sigma is at most a third of the distance from its control point
    to the nearest pinned landmark (so the 3-sigma cut ends before it) and its displacement at most
    its sigma (bump slope <= 0.61: no folding from a single bump).
    """
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
    sigma = (cfg.radius * size)[:, None].expand(b, n)
    pinned = pinned_indices(cfg)
    if pinned:
        gap = torch.cdist(ctrl, lm[:, pinned], compute_mode="donot_use_mm_for_euclid_dist").amin(dim=2)
        sigma = torch.minimum(sigma, gap / 3.01).clamp_min(1e-3)  # cut strictly before the pin
    length = torch.minimum(length, sigma) * apply[:, None]
    delta = torch.stack([torch.cos(angle), torch.sin(angle)], -1) * length[..., None]
    return ctrl, delta, sigma


#: Largest allowed slope of the displacement field (per pixel); below 1 the warp cannot fold.
MAX_SLOPE = 0.8


def _max_slope(disp: Tensor) -> Tensor:
    """(B,) max Frobenius norm of the finite-difference Jacobian of a (B, H, W, 2) field."""
    gx = disp[:, :-1, 1:] - disp[:, :-1, :-1]
    gy = disp[:, 1:, :-1] - disp[:, :-1, :-1]
    return torch.sqrt((gx * gx).sum(-1) + (gy * gy).sum(-1)).flatten(1).amax(dim=1)


@_ops.full_precision
def local_warp(images: Tensor, landmarks: Tensor, cfg: LocalWarpConfig,
               generator: torch.Generator | None) -> tuple[Tensor, Tensor]:
    """Warp expression regions of each face; returns (warped images, displaced landmarks).

    Pixels where the displacement field is zero are copied bit-exactly (a no-op when
    ``magnitude == 0`` or for samples not selected by ``p``). Landmarks are moved with the forward
    map (Newton inverse of the backward sampling), so they match the warped image.
    """
    _ops.check_images(images)
    b, _, h, w = images.shape
    _ops.check_landmarks(landmarks, b)
    _ops.check_generator(generator, images.device)
    _validate(cfg)
    ctrl, delta, sigma = sample_warp_params(landmarks, cfg, generator)
    grid = _ops.pixel_grid(h, w, images.device).expand(b, h, w, 2)
    disp = _field(grid, ctrl, delta, sigma)
    # overlapping bumps may add up: scale a sample's field down so that |grad d| <= MAX_SLOPE (no folds)
    scale = (MAX_SLOPE / _max_slope(disp).clamp_min(1e-12)).clamp(max=1.0)
    disp = disp * scale.view(-1, 1, 1, 1)
    delta = delta * scale.view(-1, 1, 1)
    warped = _ops.sample_at_pixels(images, grid - disp, padding="border")
    moved = (disp != 0).any(dim=-1)[:, None]
    out = torch.where(moved, warped, images)
    # forward-map the landmarks: the output position y that shows input landmark p (y - d(y) = p)
    y = _forward_points(landmarks.float(), ctrl, delta, sigma)
    return out, y.to(landmarks.dtype)
