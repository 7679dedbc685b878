"""Landmark-driven local warping: same identity, different local geometry (ContraWarping negatives).

The warp is a smooth displacement field made of Gaussian RBF bumps centred at a few randomly chosen
*expression* landmarks (mouth, eyes, brows by default), each with its own random displacement:

``d(x) = sum_k delta_k * g(|x - c_k| / sigma_k)`` with ``g`` a Gaussian lowered by its value at 3 sigma
(so each bump is continuous and exactly 0 from 3 sigma_k on),

and the image is resampled backwards (``out(x) = in(x - d(x))``), so the content at ``c_k`` moves
to about ``c_k + delta_k``. Outside the bumps the field is exactly zero and pixels are copied
bit-exactly. Identity geometry is protected by construction: each bump is narrowed so that it ends
before the nearest *pinned* landmark (the jaw by default: ``sigma_k <= gap_k / 3``), so those
landmarks never move, and ``|delta_k| <= sigma_k`` keeps every bump fold-free (slope <= 0.61);
where overlapping bumps would add up to a slope above ``MAX_SLOPE`` = 0.8 (pixel-grid Jacobian),
that sample's whole field is scaled down, so a warp never folds or tears.
The ContraWarping paper's exact operator is UNVERIFIED (seed-methods §3.3); this is the brief's
proposed landmark-driven design.

Units (``unit``): ``iod`` (default) = the inter-ocular distance of each face, between the outer eye
corners 36 and 45 as :func:`workbench.data.landmarks.inter_ocular_distance` (about 0.35-0.5 of the
image side for an aligned crop; ``fallback_iod`` x image side for rows whose landmarks give no usable
distance); ``face`` = sqrt(width x height) of the 68-landmark bounding box (about 1.5 IOD; the
former unit). Expressions move landmarks by about 0.13-0.30 IOD (measured on the synthetic set:
brows, lip corners, jaw drop), so the IOD is the scale of an expression whatever the crop and the
image size. Defaults (magnitude 0.2, radius 0.3, jaw pinned) move landmarks up to 0.15 IOD on average
(3.7 px at 48 px, p90 4.8 px); the former ones (0.06 / 0.1 face size, jaw and nose pinned) 0.08 IOD
(1.9 px). The displacement of each
control point has a uniform random direction and a length drawn in ``[0.5, 1] x magnitude x unit``
(then capped at sigma_k). Near pinned points (e.g. the upper lip under the nose)
bumps are smaller and move less.
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
        0.2, "Max displacement of a control point in units of `unit` (IOD by default); lengths are drawn in "
        "[0.5, 1] x this and capped at the bump's sigma (no folding). 0.2 because expressions move landmarks by "
        "0.13-0.30 IOD (synthetic set): landmarks then move up to 0.15 IOD (3.7 px at 48 px), where the former "
        "0.06 face size moved them 0.08 IOD (1.9 px), less than any expression. 0 = no-op.", min=0.0, max=1.0)
    regions: tuple[str, ...] = param(
        ("mouth", "eyes", "brows"), "Landmark parts whose points may be moved (names from "
        "workbench.data.landmarks.PARTS). Avoid 'jaw'/'nose': moving them changes identity cues.")
    points_per_region: int = param(3, "Control points moved per region and sample (default 3).", min=1)
    radius: float = param(
        0.3, "Gaussian RBF sigma in units of `unit` (IOD by default); the field is cut at 3 sigma. Smaller = "
        "more local, larger = smoother but reaches the nose/jaw. 0.3 = a feature-sized bump (a lip corner, a "
        "brow) big enough to carry a 0.2 IOD move; the jaw pin narrows most bumps to 0.1-0.22 IOD anyway.",
        min=1e-3, max=1.0)
    unit: str = param(
        "iod", "Unit of magnitude and radius: 'iod' = each face's inter-ocular distance (outer eye corners 36-45; "
        "expressions move landmarks by ~0.1-0.3 IOD at any crop or image size); 'face' = sqrt of the "
        "68-landmark box area (~1.5 IOD; the former unit).", choices=("iod", "face"))
    fallback_iod: float = param(
        0.45, "IOD assumed for rows whose landmarks give none (missing, or eye corners < 1 px apart), as a "
        "fraction of the image side (tight aligned crops: 0.49 for the synthetic default, ~0.4 for RAF-DB).",
        min=0.01, max=1.0)
    p: float = param(1.0, "Probability that a sample is warped (default 1).", min=0.0, max=1.0)
    pin: tuple[str, ...] = param(
        ("jaw",), "Parts held exactly fixed (identity geometry): each bump is narrowed to end "
        "before the nearest pinned landmark (sigma <= gap / 3) and moves at most one sigma. Default jaw only: "
        "pinning the nose too (its bridge lies between brows and eyes, its base above the lip) caps every bump "
        "at ~0.1 IOD whatever magnitude/radius say (landmarks moved 0.10 IOD at most); unpinned, the nose "
        "follows by <= 0.09 IOD (mean 0.04), like AU9/AU10. Empty = same-size bumps everywhere (the chin "
        "then moves with the mouth).")


def _validate(cfg: LocalWarpConfig) -> None:
    unknown = [r for r in (*cfg.regions, *cfg.pin) if r not in PARTS]
    if unknown:
        raise ConfigError(f"unknown warp region '{unknown[0]}' (choose from {', '.join(PARTS)})")
    if not cfg.regions:
        raise ConfigError("local warp needs at least one region")
    if cfg.unit not in ("iod", "face"):
        raise ConfigError(f"warp unit must be 'iod' or 'face', got {cfg.unit!r}")


def face_size(landmarks: Tensor) -> Tensor:
    """(B,) sqrt(width x height) of the landmark bounding box, at least 1 px."""
    span = landmarks.amax(dim=1) - landmarks.amin(dim=1)
    return torch.sqrt(span[:, 0].clamp_min(1) * span[:, 1].clamp_min(1))


def inter_ocular(landmarks: Tensor) -> Tensor:
    """(B,) distance between the outer eye corners 36 and 45 (as
    :func:`workbench.data.landmarks.inter_ocular_distance`, on tensors); NaN where a corner is missing."""
    return (landmarks[:, 36] - landmarks[:, 45]).norm(dim=-1)


def warp_unit(landmarks: Tensor, cfg: LocalWarpConfig, image_size: tuple[int, int] | None = None) -> Tensor:
    """(B,) pixels per unit of ``magnitude`` / ``radius`` (``cfg.unit``), float32, no device read.

    ``iod``: each face's inter-ocular distance; rows where it is not finite or below 1 px get
    ``cfg.fallback_iod x sqrt(H x W)`` (``image_size`` = (H, W)), or, without ``image_size``, the
    landmark box size / 1.5 (at least 1 px). ``face``: :func:`face_size`.
    """
    lm = landmarks.float()
    if cfg.unit == "face":
        return face_size(lm)
    iod = inter_ocular(lm)
    if image_size is not None:
        fallback = torch.full_like(iod, cfg.fallback_iod * math.sqrt(image_size[0] * image_size[1]))
    else:
        fallback = face_size(torch.nan_to_num(lm)) / 1.5
    ok = torch.isfinite(iod) & (iod >= 1.0)
    return torch.where(ok, iod, fallback.clamp_min(1.0))


_CUT = math.exp(-4.5)  # Gaussian value at 3 sigma, subtracted so the bump is continuous and compact


#: Floor of the Gaussian exponents: exp(-5) < _CUT, so every clamped value still lands outside the cut
#: (same result), while exp stays off its slow denormal path (arguments below about -87).
_EXP_FLOOR = -5.0


def _axis_bumps(n: int, centre: Tensor, neg_inv: Tensor) -> Tensor:
    """(B, K, n) Gaussian factors ``exp(-(t - c)^2 / (2 sigma^2))`` at pixels t = 0..n-1 of one axis.

    Factors below ``exp(_EXP_FLOOR)`` are raised to it: their products with any factor <= 1 stay below
    the cut, so the bumps do not change.
    """
    t = torch.arange(n, device=centre.device, dtype=centre.dtype)
    return (t - centre[..., None]).square_().mul_(neg_inv[..., None]).clamp_min_(_EXP_FLOOR).exp_()


#: On CPU the (b, K, H, W) bumps are made this many elements (4 MB) at a time, to stay in cache.
_CPU_CHUNK = 1 << 20


def _field(h: int, w: int, centres: Tensor, delta: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """Displacement (B, 2, H, W) on the pixel grid from K bumps (centres / delta (B, K, 2), sigma (B, K))
    and its :func:`_max_slope` (B,).

    The Gaussian is separable: the (B, K, H, W) bumps are outer products of (B, K, H) and (B, K, W)
    factors, lowered by the 3-sigma value and clamped at 0, then contracted over K by a bmm (in
    cache-sized chunks of samples on CPU, each followed by its slope while still in cache).
    """
    b, k = sigma.shape
    neg_inv = -0.5 / sigma.square()
    ex = _axis_bumps(w, centres[..., 0], neg_inv)[:, :, None, :]
    ey = _axis_bumps(h, centres[..., 1], neg_inv)[:, :, :, None]
    weights = (delta / (1 - _CUT)).transpose(1, 2)  # (B, 2, K)
    disp = torch.empty((b, 2, h, w), device=sigma.device, dtype=sigma.dtype)
    slope = torch.empty((b,), device=sigma.device, dtype=sigma.dtype)
    step = max(1, _CPU_CHUNK // (k * h * w)) if sigma.device.type == "cpu" else max(b, 1)
    for i in range(0, b, step):
        s = slice(i, i + step)
        phi = torch.mul(ey[s], ex[s]).sub_(_CUT).relu_()  # (b, K, H, W), exactly 0 from 3 sigma on
        torch.bmm(weights[s], phi.view(-1, k, h * w), out=disp[s].view(-1, 2, h * w))
        slope[s] = _max_slope(disp[s])
    return disp, slope


def _field_at(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor) -> Tensor:
    """Displacement and Jacobian at a few points (B, 2, P), vectorised over K: (B, 2, 3, P) with
    ``[:, d, 0]`` = d_d, ``[:, d, 1]`` = d d_d / dx and ``[:, d, 2]`` = d d_d / dy."""
    b, _, p = points.shape
    k = sigma.shape[1]
    dx = points[:, None, 0] - centres[..., 0, None]  # (B, K, P)
    dy = points[:, None, 1] - centres[..., 1, None]
    neg_inv = (-0.5 / sigma.square())[..., None]  # (B, K, 1)
    g = torch.addcmul(dx * dx, dy, dy).mul_(neg_inv).clamp_min_(_EXP_FLOOR).exp_()
    rows = torch.empty((b, k, 3, p), device=points.device, dtype=points.dtype)
    torch.sub(g, _CUT, out=rows[:, :, 0]).relu_()  # phi x (1 - cut)
    dphi = torch.where(g > _CUT, g, 0.0).mul_(2 * neg_inv)  # d phi / d r^2 x 2 (1 - cut)
    torch.mul(dphi, dx, out=rows[:, :, 1])
    torch.mul(dphi, dy, out=rows[:, :, 2])
    return torch.bmm((delta / (1 - _CUT)).transpose(1, 2), rows.view(b, k, 3 * p)).view(b, 2, 3, p)


def _forward_points(points: Tensor, centres: Tensor, delta: Tensor, sigma: Tensor, steps: int = 8) -> Tensor:
    """Solve ``y - d(y) = p`` for each point p (B, P, 2) (Newton; the map is invertible since |grad d| < 1)."""
    p = points.transpose(1, 2).contiguous()  # (B, 2, P)
    y = p + _field_at(p, centres, delta, sigma)[:, :, 0]
    for _ in range(steps):
        f = _field_at(y, centres, delta, sigma)
        r = y - f[:, :, 0] - p  # residual
        (jxx, jyx), (jxy, jyy) = f[:, :, 1].unbind(1), f[:, :, 2].unbind(1)
        a00, a11 = 1 - jxx, 1 - jyy  # Jacobian of y - d(y): [[a00, -jxy], [-jyx, a11]]
        det = (a00 * a11 - jxy * jyx).clamp_min(1e-6)
        step = torch.stack([a11 * r[:, 0] + jxy * r[:, 1], a00 * r[:, 1] + jyx * r[:, 0]], 1)
        y = y - step / det[:, None]
    return y.transpose(1, 2)


def pinned_indices(cfg: LocalWarpConfig) -> list[int]:
    """Landmarks held fixed: the ``pin`` parts minus anything listed in ``regions``."""
    moving = {i for r in cfg.regions for i in PARTS[r]}
    return sorted({i for r in cfg.pin for i in PARTS[r]} - moving)


@_ops.full_precision
def sample_warp_params(landmarks: Tensor, cfg: LocalWarpConfig, generator: torch.Generator | None,
                       image_size: tuple[int, int] | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Control points (B, K, 2), displacements (B, K, 2) and per-bump sigma (B, K) for a batch.

    With pinned parts, each bump's sigma is at most a third of the distance from its control point
    to the nearest pinned landmark (so the 3-sigma cut ends before it) and its displacement at most
    its sigma (bump slope <= 0.61: no folding from a single bump).
    ``image_size`` (H, W): for the IOD fallback (:func:`warp_unit`).
    """
    b = landmarks.shape[0]
    dev = landmarks.device
    lm = landmarks.float()
    size = warp_unit(lm, cfg, image_size)
    chosen = []
    for region in cfg.regions:  # few regions; per-sample choice without replacement
        idx = _ops.index_tensor(PARTS[region], dev)  # built once per device: no per-step copy
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
        gap = torch.cdist(ctrl, _ops.take_points(lm, pinned), compute_mode="donot_use_mm_for_euclid_dist").amin(dim=2)
        sigma = torch.minimum(sigma, gap / 3.01).clamp_min(1e-3)  # cut strictly before the pin
    length = torch.minimum(length, sigma) * apply[:, None]
    delta = torch.stack([torch.cos(angle), torch.sin(angle)], -1) * length[..., None]
    return ctrl, delta, sigma


#: Largest allowed slope of the displacement field (per pixel); below 1 the warp cannot fold.
MAX_SLOPE = 0.8


def _max_slope(disp: Tensor) -> Tensor:
    """(B,) max Frobenius norm of the finite-difference Jacobian of a (B, 2, H, W) field."""
    gx = disp[..., :-1, 1:] - disp[..., :-1, :-1]
    gy = disp[..., 1:, :-1] - disp[..., :-1, :-1]
    return gx.square_().add_(gy.square_()).sum(1).flatten(1).amax(dim=1).sqrt()


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
    ctrl, delta, sigma = sample_warp_params(landmarks, cfg, generator, (h, w))
    disp, slope = _field(h, w, ctrl, delta, sigma)
    # overlapping bumps may add up: scale a sample's field down so that |grad d| <= MAX_SLOPE (no folds)
    scale = (MAX_SLOPE / slope.clamp_min(1e-12)).clamp(max=1.0)
    disp.mul_(scale.view(-1, 1, 1, 1))
    delta = delta * scale.view(-1, 1, 1)
    coords = _ops.pixel_grid(h, w, images.device) - disp.permute(0, 2, 3, 1)
    warped = _ops.sample_at_pixels(images, coords, padding="border")
    moved = (disp != 0).any(dim=1, keepdim=True)
    out = torch.where(moved, warped, images)
    # forward-map the landmarks: the output position y that shows input landmark p (y - d(y) = p)
    y = _forward_points(landmarks.float(), ctrl, delta, sigma)
    return out, y.to(landmarks.dtype)
