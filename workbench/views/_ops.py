"""Private batched tensor helpers shared by the view families (CPU and CUDA, no Python loop over B).

Pixel convention used by every view: a landmark ``(x, y)`` addresses the pixel *centre* ``img[..., y, x]``
(OpenCV/dlib/numpy convention), so the image spans ``[-0.5, W - 0.5]`` horizontally. This matches
``grid_sample(align_corners=False)`` where a normalised coordinate ``u`` maps to ``x = ((u + 1) W - 1) / 2``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import TypeVar

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.data.landmarks import index_span
from workbench.errors import ConfigError

_F = TypeVar("_F", bound=Callable)


def full_precision(fn: _F) -> _F:
    """Run a view function with autocast off (views are made inside the training step's autocast).

    Under bf16 autocast, matmuls and convolutions would silently run in bf16: crop boxes, warp
    fields and landmark coordinates would lose ~0.25 px at 64 px, blurs 3 significant digits.
    """
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with torch.autocast("cpu", enabled=False):
            if not torch.cuda.is_available():
                return fn(*args, **kwargs)
            with torch.autocast("cuda", enabled=False):
                return fn(*args, **kwargs)
    return wrapper  # type: ignore[return-value]

#: ITU-R 601 luma weights (as torchvision's ``rgb_to_grayscale``).
LUMA = (0.2989, 0.587, 0.114)


# --------------------------------------------------------------------------- checks / randomness
def check_images(images: Tensor, name: str = "images") -> None:
    """Raise ConfigError unless ``images`` is a floating (B, 3, H, W) tensor."""
    if not isinstance(images, Tensor) or images.ndim != 4 or images.shape[1] != 3:
        shape = tuple(images.shape) if isinstance(images, Tensor) else type(images).__name__
        raise ConfigError(f"{name} must be a float tensor (B, 3, H, W) in [0, 1], got {shape}")
    if not images.is_floating_point():
        raise ConfigError(f"{name} must be floating point in [0, 1] (got {images.dtype}); divide uint8 by 255")


def check_landmarks(landmarks: Tensor, batch: int, name: str = "landmarks") -> None:
    """Raise ConfigError unless ``landmarks`` is (B, 68, 2)."""
    if not isinstance(landmarks, Tensor) or landmarks.ndim != 3 or landmarks.shape[1:] != (68, 2) \
            or landmarks.shape[0] != batch:
        shape = tuple(landmarks.shape) if isinstance(landmarks, Tensor) else type(landmarks).__name__
        raise ConfigError(f"{name} must be a tensor ({batch}, 68, 2) of (x, y) pixel coordinates, got {shape}")


def check_generator(generator: torch.Generator | None, device: torch.device) -> None:
    """The generator must live on the images' device (torch draws on the generator's device)."""
    if generator is not None and torch.device(generator.device).type != torch.device(device).type:
        raise ConfigError(f"the generator is on {generator.device} but the images are on {device}: "
                          f"use torch.Generator(device=images.device).manual_seed(seed)")


def uniform(shape: tuple[int, ...], lo: float, hi: float, generator: torch.Generator | None,
            device: torch.device) -> Tensor:
    """float32 samples from U(lo, hi) drawn on ``device`` from ``generator``."""
    u = torch.rand(shape, generator=generator, device=device, dtype=torch.float32)
    return lo + (hi - lo) * u


def coin(p: float, batch: int, generator: torch.Generator | None, device: torch.device) -> Tensor:
    """(B,) bool, True with probability ``p`` (always draws, so the random stream does not depend on p)."""
    return torch.rand((batch,), generator=generator, device=device) < p


def apply_where(images: Tensor, mask: Tensor, fn, *, subset: bool | None = None) -> Tensor:
    """``images`` with ``fn`` applied to the samples where ``mask`` (B,) is True.

    ``fn(x, sel)`` gets the selected samples and the selector (an index tensor or ``slice(None)``)
    to pick its per-sample parameters with ``param[sel]``; it must treat samples independently.
    ``subset`` (default: on CPU) computes ``fn`` on the selected samples only and writes them into
    ``images`` **in place** (pass a tensor you own): a colour jitter with p 0.8 then costs 80 %, a blur
    with p 0.5 half. Off (CUDA default): ``torch.where`` over the whole batch, no host synchronisation.
    """
    if subset is None:
        subset = images.device.type == "cpu"
    if not subset:
        return torch.where(mask.view(-1, *([1] * (images.ndim - 1))), fn(images, slice(None)), images)
    idx = mask.nonzero().squeeze(1)
    if idx.numel() == 0:
        return images
    if idx.numel() == images.shape[0]:
        return fn(images, slice(None))
    return images.index_copy_(0, idx, fn(images.index_select(0, idx), idx).to(images.dtype))


# --------------------------------------------------------------------------- indices
_INDEX_CACHE: dict[tuple[tuple[int, ...], torch.device], Tensor] = {}


def index_tensor(idx: Sequence[int], device: torch.device | str) -> Tensor:
    """``idx`` as an int64 tensor on ``device``, built once per (indices, device) and reused: indexing a
    CUDA tensor with a Python list copies the list to the device and synchronises the stream every call."""
    key = (tuple(int(i) for i in idx), torch.device(device))
    out = _INDEX_CACHE.get(key)
    if out is None:
        with torch.inference_mode(False):  # usable outside inference mode whoever builds it first
            out = _INDEX_CACHE[key] = torch.tensor(key[0], dtype=torch.long, device=device)
    return out


def point_index(idx: Sequence[int], device: torch.device | str) -> slice | Tensor:
    """An index for ``landmarks[:, point_index(idx, dev)]`` (read or write) with no per-call host-to-device
    copy: a slice (a view) when ``idx`` is a contiguous ascending range, else :func:`index_tensor`."""
    span = index_span(idx)
    return span if span is not None else index_tensor(idx, device)


def take_points(points: Tensor, idx: Sequence[int]) -> Tensor:
    """``points[:, idx]`` of (B, K, ...) points, without a Python-list index (see :func:`point_index`)."""
    return points[:, point_index(idx, points.device)]


# --------------------------------------------------------------------------- affine warps
def invert_affine(affine: Tensor) -> Tensor:
    """Inverse of a batch of (B, 2, 3) affine maps ``[L | t]``: ``[L⁻¹ | −L⁻¹ t]`` in closed form (float64,
    ``L⁻¹ = [[d, −b], [−c, a]] / det``), so no error flag is read from the device as ``linalg.inv``
    does; a singular ``L`` gives non-finite values instead of an error."""
    m = affine.double()
    a, b, tx = m[:, 0, 0], m[:, 0, 1], m[:, 0, 2]
    c, d, ty = m[:, 1, 0], m[:, 1, 1], m[:, 1, 2]
    det = a * d - b * c
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    first = torch.stack([ia, ib, -(ia * tx + ib * ty)], dim=-1)
    second = torch.stack([ic, id_, -(ic * tx + id_ * ty)], dim=-1)
    return torch.stack([first, second], dim=1).to(affine.dtype)


def apply_affine(affine: Tensor, points: Tensor) -> Tensor:
    """Apply (B, 2, 3) affine maps to (B, K, 2) points."""
    return points @ affine[:, :, :2].transpose(1, 2) + affine[:, None, :, 2]


def _norm_theta(affine: Tensor, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> Tensor:
    """(B, 2, 3) float64 ``N_in @ [affine; 0 0 1] @ N_out⁻¹``, where ``N`` maps pixel-centre coordinates
    to grid_sample's normalised ones (``x -> x·2/n + 1/n − 1`` per axis): the affine in normalised
    coordinates, composed in closed form (no host-built matrix, no ``linalg.inv`` and its device
    error-flag read). ``N_out⁻¹`` is upper triangular: diagonal ``1 / (2 / n)``, offset
    ``−(1 / (2 / n)) (1 / n − 1)``, rounded as the LU back-substitution of ``linalg.inv`` rounds them,
    and the products are accumulated in the matmuls' order, so theta equals the matrix product with
    ``linalg.inv`` bit for bit on CPU (``tests/test_views_global.py`` keeps that formula)."""
    (h, w), (ho, wo) = in_hw, out_hw
    ix, iy = 1.0 / (2.0 / wo), 1.0 / (2.0 / ho)
    jx, jy = -ix * (1.0 / wo - 1.0), -iy * (1.0 / ho - 1.0)
    m = affine.double()
    rows = []
    for r, (scale, offset) in enumerate(((2.0 / w, 1.0 / w - 1.0), (2.0 / h, 1.0 / h - 1.0))):
        p0, p1, p2 = m[:, r, 0] * scale, m[:, r, 1] * scale, m[:, r, 2] * scale + offset  # row r of N_in @ A
        rows.append(torch.stack([p0 * ix, p1 * iy, (p0 * jx + p1 * jy) + p2], dim=-1))
    return torch.stack(rows, dim=1)


def warp_affine(images: Tensor, affine: Tensor, out_hw: tuple[int, int], *, padding: str = "zeros",
                mode: str = "bilinear") -> Tensor:
    """Resample ``images`` so that output pixel ``q`` shows input pixel ``affine @ [q, 1]``.

    ``affine`` (B, 2, 3) maps output pixel-centre coordinates to input pixel-centre coordinates.
    """
    b, _, h, w = images.shape
    ho, wo = out_hw
    dev = images.device
    theta = _norm_theta(affine, (h, w), (ho, wo)).to(images.dtype)
    # = F.affine_grid(theta, align_corners=False), by broadcasting (its batched matmul with an inner
    # dimension of 3 was ~40 % of this function on CPU)
    xs = (torch.arange(wo, device=dev, dtype=images.dtype) * 2 + 1) / wo - 1
    ys = (torch.arange(ho, device=dev, dtype=images.dtype) * 2 + 1) / ho - 1
    t = theta.view(b, 2, 3, 1, 1)
    grid = t[:, :, 0] * xs.view(1, 1, 1, wo) + t[:, :, 1] * ys.view(1, 1, ho, 1) + t[:, :, 2]  # (B, 2, Ho, Wo)
    return F.grid_sample(images, grid.permute(0, 2, 3, 1), mode=mode, padding_mode=padding, align_corners=False)


def pixel_grid(h: int, w: int, device: torch.device, dtype: torch.dtype = torch.float32) -> Tensor:
    """(H, W, 2) pixel-centre coordinates (x, y)."""
    ys = torch.arange(h, device=device, dtype=dtype)
    xs = torch.arange(w, device=device, dtype=dtype)
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], dim=-1)


def sample_at_pixels(images: Tensor, coords: Tensor, *, padding: str = "border") -> Tensor:
    """Bilinear sample of ``images`` at (B, Ho, Wo, 2) pixel-centre coordinates (x, y)."""
    _, _, h, w = images.shape
    gx = coords[..., 0] * (2.0 / w) + (1.0 / w - 1.0)
    gy = coords[..., 1] * (2.0 / h) + (1.0 / h - 1.0)
    grid = torch.stack([gx, gy], dim=-1).to(images.dtype)
    return F.grid_sample(images, grid, mode="bilinear", padding_mode=padding, align_corners=False)


# --------------------------------------------------------------------------- colour
def grayscale(images: Tensor) -> Tensor:
    """(B, 1, H, W) luma."""
    r, g, b = images.unbind(dim=1)
    return (LUMA[0] * r + LUMA[1] * g + LUMA[2] * b).unsqueeze(1)


def _hue_sixths(images: Tensor, maxc: Tensor, cr: Tensor) -> Tensor:
    """Hue in sixths of a turn, in [-1, 5) (torchvision's tensor formula); ``cr = max - min``."""
    r, g, b = images.unbind(dim=1)
    cr_div = torch.where(cr == 0, torch.ones_like(cr), cr)
    rc = (maxc - r) / cr_div
    gc = (maxc - g) / cr_div
    bc = (maxc - b) / cr_div
    hr = (maxc == r) * (bc - gc)
    hg = ((maxc == g) & (maxc != r)) * (2.0 + rc - bc)
    hb = ((maxc != g) & (maxc != r)) * (4.0 + gc - rc)
    return hr + hg + hb


def rgb_to_hsv(images: Tensor) -> Tensor:
    """RGB in [0, 1] -> HSV with all channels in [0, 1] (torchvision's tensor formula)."""
    maxc = images.amax(dim=1)
    cr = maxc - images.amin(dim=1)
    s = cr / torch.where(cr == 0, torch.ones_like(maxc), maxc)
    h = torch.fmod(_hue_sixths(images, maxc, cr) / 6.0 + 1.0, 1.0)
    return torch.stack([h, s, maxc], dim=1)


def shift_hue(images: Tensor, shift: Tensor) -> Tensor:
    """= ``hsv_to_rgb(rgb_to_hsv(x)`` with hue + ``shift`` (B,) turns``)``, fewer passes over the pixels.

    Uses ``v·s = max − min`` (exact up to rounding), so saturation and value are never materialised.
    """
    maxc = images.amax(dim=1)
    cr = maxc - images.amin(dim=1)
    # hue in sixths of a turn, shifted; k_n = (n + 6 h) mod 6 needs no separate "mod 1" (periodic)
    h6 = _hue_sixths(images, maxc, cr).add_(6.0 + 6.0 * shift.view(-1, 1, 1).to(images.dtype))[:, None]
    n = torch.arange(5.0, 0.0, -2.0, device=images.device, dtype=images.dtype).view(1, 3, 1, 1)  # 5, 3, 1
    t = n + h6
    k = t.sub_(torch.floor(t * (1.0 / 6.0)).mul_(6.0))  # mod 6 (torch.remainder costs 2x more)
    return maxc[:, None] - cr[:, None] * torch.minimum(k, 4.0 - k).clamp_(0.0, 1.0)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of :func:`rgb_to_hsv` (closed form: ``c_n = v - v s clamp(min(k, 4 - k), 0, 1)``)."""
    h, s, v = hsv[:, 0:1], hsv[:, 1:2], hsv[:, 2:3]
    n = torch.arange(5.0, 0.0, -2.0, device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)  # 5, 3, 1
    k = torch.remainder(n + h * 6.0, 6.0)
    return v - v * s * torch.minimum(k, 4.0 - k).clamp(0.0, 1.0)


# --------------------------------------------------------------------------- blur
def gaussian_kernels(sigma: Tensor, ksize: int, radius: Tensor | None = None) -> Tensor:
    """(B, ksize) normalised 1-D Gaussian kernels; taps beyond ``radius`` (B,) are zeroed."""
    half = ksize // 2
    x = torch.arange(-half, half + 1, device=sigma.device, dtype=torch.float32)
    k = torch.exp(-0.5 * (x[None] / sigma.float().clamp_min(1e-3)[:, None]) ** 2)
    if radius is not None:
        k = k * (x.abs()[None] <= radius.float()[:, None])
    return k / k.sum(dim=1, keepdim=True)


def separable_blur(images: Tensor, kernels: Tensor) -> Tensor:
    """Blur each sample with its own separable kernel (B, k) via one grouped convolution per axis.

    Borders are reflected (``cv2.BORDER_REFLECT_101``-like); kernels larger than the image fall back
    to replicate padding.
    """
    b, c, h, w = images.shape
    k = kernels.shape[1]
    half = k // 2
    if half == 0:
        return images
    weight = kernels.to(images.dtype).repeat_interleave(c, dim=0)  # (B*C, k)
    x = images.reshape(1, b * c, h, w)
    mode = "reflect" if half < min(h, w) else "replicate"
    x = F.pad(x, (half, half, 0, 0), mode=mode)
    x = F.conv2d(x, weight.view(b * c, 1, 1, k), groups=b * c)
    x = F.pad(x, (0, 0, half, half), mode=mode)
    x = F.conv2d(x, weight.view(b * c, 1, k, 1), groups=b * c)
    return x.view(b, c, h, w)


def auto_kernel_size(sigma_max: float, limit: int) -> int:
    """Odd kernel size ~ 6 sigma + 1, at most ``limit`` (odd)."""
    k = 2 * math.ceil(3.0 * sigma_max) + 1
    lim = limit if limit % 2 == 1 else limit - 1
    return max(1, min(k, lim))


def ellipse_mask(box: Tensor, h: int, w: int) -> Tensor:
    """(B, H, W) bool filled ellipses inscribed in boxes (B, 4) = (x0, y0, x1, y1), pixel centres."""
    grid = pixel_grid(h, w, box.device)
    cx = (box[:, 0] + box[:, 2]) / 2
    cy = (box[:, 1] + box[:, 3]) / 2
    ax = ((box[:, 2] - box[:, 0]) / 2).clamp_min(1e-3)
    ay = ((box[:, 3] - box[:, 1]) / 2).clamp_min(1e-3)
    nx = (grid[None, :, :, 0] - cx[:, None, None]) / ax[:, None, None]
    ny = (grid[None, :, :, 1] - cy[:, None, None]) / ay[:, None, None]
    return nx * nx + ny * ny <= 1.0
