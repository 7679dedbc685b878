"""Global (SimCLR / BYOL style) view augmentations, batched with per-sample parameters.

Pipeline per sample, in this fixed order (BYOL's order):
``crop + flip + (rotate/translate) + resize`` as ONE affine resample -> colour jitter (brightness,
contrast, saturation, hue) -> grayscale -> Gaussian blur -> solarize. Every random parameter is drawn
per sample from the explicit ``generator`` (on the images' device), always in the same order and
always for every sample, so two calls that start from the same generator state draw identical
parameters: clone the state (``g.get_state()`` / ``g.set_state()``) to apply the same global
transform to an anchor and its locally warped negative (ContraWarping).

Pixel convention: landmarks address pixel centres (``img[y, x]``); see ``workbench.views._ops``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.config import param
from workbench.errors import ConfigError
from workbench.views import _ops

#: iBUG-68 index of the mirrored point: after a horizontal flip, point ``i`` plays the role of
#: ``FLIP_PERMUTATION[i]`` (jaw 0<->16, brows 17<->26, eyes 36<->45, mouth corners 48<->54, ...).
FLIP_PERMUTATION: tuple[int, ...] = (
    tuple(range(16, -1, -1))                      # jaw 0..16
    + tuple(range(26, 16, -1))                    # brows 17..26
    + (27, 28, 29, 30)                            # nose bridge
    + (35, 34, 33, 32, 31)                        # lower nose
    + (45, 44, 43, 42, 47, 46)                    # right eye 36..41 -> left eye
    + (39, 38, 37, 36, 41, 40)                    # left eye 42..47 -> right eye
    + (54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55)  # outer lips 48..59
    + (64, 63, 62, 61, 60, 67, 66, 65)            # inner lips 60..67
)


@dataclass
class GlobalViewConfig:
    """One global view family (SimCLR/BYOL style), all probabilities per sample."""

    crop_scale: tuple[float, float] = param(
        (0.9, 1.0), "RandomResizedCrop area range as a fraction of the image (face default 0.9-1: a small "
        "shift and zoom that keeps the whole inner face; on 48-64 px faces SimCLR's 0.35-1 halves the "
        "raw-pixel expression probe, ImageNet's 0.08 crops the eyes or mouth away).")
    crop_ratio: tuple[float, float] = param(
        (1.0, 1.0), "RandomResizedCrop aspect-ratio range w/h (face default 1 = no squashing; ImageNet 3/4-4/3).")
    hflip_p: float = param(0.5, "Probability of a horizontal flip (default 0.5; labels stay valid: the "
                                "synthetic contempt is drawn on either side, as in real faces).", min=0.0, max=1.0)
    rotate_deg: float = param(
        0.0, "Max absolute rotation in degrees, uniform (default 0 = off; 10-15 is a mild face choice).",
        min=0.0, max=180.0)
    max_translate: float = param(
        0.0, "Max shift as a fraction of the crop size, uniform per axis (default 0 = off; try 0.05).",
        min=0.0, max=1.0)
    jitter_p: float = param(0.8, "Probability of colour jitter (default 0.8 as SimCLR/BYOL).", min=0.0, max=1.0)
    brightness: float = param(0.3, "Brightness factor drawn in [1-b, 1+b] (face default 0.3; SimCLR 0.4).", min=0.0)
    contrast: float = param(0.3, "Contrast factor drawn in [1-c, 1+c] (face default 0.3; SimCLR 0.4).", min=0.0)
    saturation: float = param(0.2, "Saturation factor drawn in [1-s, 1+s] (default 0.2).", min=0.0)
    hue: float = param(0.05, "Hue shift drawn in [-h, h] turns (face default 0.05: skin stays skin; SimCLR "
                             "0.1; at most 0.5).", min=0.0, max=0.5)
    grayscale_p: float = param(0.2, "Probability of grayscale (default 0.2).", min=0.0, max=1.0)
    blur_p: float = param(0.3, "Probability of Gaussian blur (face default 0.3; SimCLR 0.5; BYOL: 1.0 / 0.1).",
                          min=0.0, max=1.0)
    blur_sigma: tuple[float, float] = param(
        (0.1, 0.6), "Blur sigma range in output pixels (face default 0.1-0.6, sized for 48-112 px faces where a "
        "lip corner moves 1-3 px; SimCLR's 0.1-2.0 is meant for 100-200 px ImageNet objects).")
    blur_kernel: int = param(
        0, "Blur kernel size in pixels; 0 = auto (about 6 x max sigma + 1). SSL-FER uses 3, SimFLE 23 at 224 px.",
        min=0)
    solarize_p: float = param(0.0, "Probability of solarisation (default 0; BYOL view 2: 0.2).", min=0.0, max=1.0)
    solarize_threshold: float = param(0.5, "Pixels >= threshold are inverted (default 0.5).", min=0.0, max=1.0)
    padding: str = param("reflection", "How to fill pixels sampled outside the image after rotation/shift "
                         "(default reflection).", choices=("zeros", "border", "reflection"))
    mirror_landmark_ids: bool = param(
        True, "After a flip, re-index the returned landmarks so that index i keeps its iBUG meaning "
        "(e.g. 36 stays the subject's right outer eye corner), like a detector run on the flipped image. "
        "False: index i keeps tracking the same physical point.")


@dataclass
class AugResult:
    """Output of :func:`global_augment`.

    ``affine`` (B, 2, 3) maps output pixel coordinates to input pixel coordinates
    (``in = affine @ [x_out, y_out, 1]``); ``flipped`` (B,) tells which samples were mirrored.
    """

    images: Tensor
    landmarks: Tensor | None
    affine: Tensor
    flipped: Tensor


def imagenet_view() -> GlobalViewConfig:
    """SimCLR's published ImageNet view, as it was used on faces before face-scaled defaults: crop 0.35-1
    (ImageNet: 0.08), ratio 3/4-4/3, jitter 0.4/0.4/0.2/0.1, blur p 0.5 sigma 0.1-2."""
    return GlobalViewConfig(crop_scale=(0.35, 1.0), crop_ratio=(3 / 4, 4 / 3), brightness=0.4, contrast=0.4,
                            hue=0.1, blur_p=0.5, blur_sigma=(0.1, 2.0))


def simclr_views(paper: bool = False) -> tuple[GlobalViewConfig, GlobalViewConfig]:
    """Two identical SimCLR-style view configs: face-scaled (default) or the published ImageNet ones."""
    view = imagenet_view() if paper else GlobalViewConfig()
    return view, dataclasses.replace(view)


def byol_views(paper: bool = False) -> tuple[GlobalViewConfig, GlobalViewConfig]:
    """BYOL's asymmetric pair: view 1 always blurred, never solarised; view 2 blur p 0.1, solarize p 0.2
    (face-scaled crops and blur by default, the published ImageNet ones with ``paper=True``)."""
    base = imagenet_view() if paper else GlobalViewConfig()
    return (dataclasses.replace(base, blur_p=1.0, solarize_p=0.0),
            dataclasses.replace(base, blur_p=0.1, solarize_p=0.2))


def sslfer_views() -> tuple[GlobalViewConfig, GlobalViewConfig]:
    """SSL-FER's view transform (official code): (anchor views, positive views).

    ``Resize(128) -> RandomCrop(112)`` = a fixed crop of (112/128)^2 of the area with ratio 1
    (use ``out_size=112``); flip 0.5; ColorJitter(0.4, 0.4, 0.4, 0.2) always on anchors and with
    p 0.8 on positives; blur kernel 3 (sigma 0.1-2) p 0.5; grayscale 0.2. The landmark part mask
    (``part_mask``) runs before it, on the un-augmented frame.
    """
    area = (112 / 128) ** 2
    anchor = GlobalViewConfig(crop_scale=(area, area), crop_ratio=(1.0, 1.0), brightness=0.4, contrast=0.4,
                              saturation=0.4, hue=0.2, jitter_p=1.0, blur_p=0.5, blur_kernel=3, grayscale_p=0.2,
                              solarize_p=0.0)
    return anchor, dataclasses.replace(anchor, jitter_p=0.8)


def simfle_views() -> tuple[GlobalViewConfig, GlobalViewConfig]:
    """SimFLE's two GFL views (official code, meant for ``out_size=224``).

    ``RandomResizedCrop(224)`` with torchvision's default scale 0.08-1 (the face-friendly default
    here is 0.35-1), flip, ColorJitter(0.8, 0.8, 0.8, 0.2) p 0.8, grayscale 0.2, Gaussian blur
    always, kernel 23, sigma 0.1-2.
    """
    cfg = GlobalViewConfig(crop_scale=(0.08, 1.0), brightness=0.8, contrast=0.8, saturation=0.8, hue=0.2,
                           jitter_p=0.8, grayscale_p=0.2, blur_p=1.0, blur_kernel=23, solarize_p=0.0)
    return cfg, dataclasses.replace(cfg)


def _validate(cfg: GlobalViewConfig) -> None:
    lo, hi = cfg.crop_scale
    if not 0 < lo <= hi <= 1:
        raise ConfigError(f"crop_scale must satisfy 0 < min <= max <= 1, got {cfg.crop_scale}")
    rlo, rhi = cfg.crop_ratio
    if not 0 < rlo <= rhi:
        raise ConfigError(f"crop_ratio must satisfy 0 < min <= max, got {cfg.crop_ratio}")
    slo, shi = cfg.blur_sigma
    if not 0 < slo <= shi:
        raise ConfigError(f"blur_sigma must satisfy 0 < min <= max, got {cfg.blur_sigma}")
    if cfg.blur_kernel and cfg.blur_kernel % 2 == 0:
        raise ConfigError(f"blur_kernel must be odd (or 0 = auto), got {cfg.blur_kernel}")


def _crop_boxes(b: int, h: int, w: int, cfg: GlobalViewConfig, gen: torch.Generator | None,
                dev: torch.device) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """torchvision RandomResizedCrop box sampling, 10 attempts vectorised, same fallback (continuous)."""
    attempts = 10
    area = h * w * _ops.uniform((b, attempts), *cfg.crop_scale, gen, dev)
    log_r = _ops.uniform((b, attempts), math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]), gen, dev)
    ratio = torch.exp(log_r)
    cw = torch.sqrt(area * ratio)
    ch = torch.sqrt(area / ratio)
    ok = (cw <= w) & (ch <= h)
    first = torch.argmax(ok.float(), dim=1, keepdim=True)  # first valid attempt
    cw = cw.gather(1, first).squeeze(1)
    ch = ch.gather(1, first).squeeze(1)
    # fallback = torchvision's centre crop clamped to the ratio range
    in_ratio = w / h
    if in_ratio < cfg.crop_ratio[0]:
        fw, fh = float(w), w / cfg.crop_ratio[0]
    elif in_ratio > cfg.crop_ratio[1]:
        fw, fh = h * cfg.crop_ratio[1], float(h)
    else:
        fw, fh = float(w), float(h)
    any_ok = ok.any(dim=1)
    cw = torch.where(any_ok, cw, torch.full_like(cw, fw))
    ch = torch.where(any_ok, ch, torch.full_like(ch, fh))
    u = _ops.uniform((b, 2), 0.0, 1.0, gen, dev)
    x0 = u[:, 0] * (w - cw)
    y0 = u[:, 1] * (h - ch)
    return x0, y0, cw, ch


@_ops.full_precision
def sample_affine(batch: int, in_hw: tuple[int, int], out_hw: tuple[int, int], cfg: GlobalViewConfig,
                  generator: torch.Generator | None, device: torch.device) -> tuple[Tensor, Tensor]:
    """Per-sample crop/flip/rotate/shift affine (B, 2, 3), output px -> input px, and the flip flags."""
    h, w = in_hw
    ho, wo = out_hw
    x0, y0, cw, ch = _crop_boxes(batch, h, w, cfg, generator, device)
    flip = _ops.coin(cfg.hflip_p, batch, generator, device)
    ang = _ops.uniform((batch,), -cfg.rotate_deg, cfg.rotate_deg, generator, device) * (math.pi / 180)
    shift = _ops.uniform((batch, 2), -cfg.max_translate, cfg.max_translate, generator, device)
    f = torch.where(flip, -1.0, 1.0)
    cos, sin = torch.cos(ang), torch.sin(ang)
    rot = torch.stack([torch.stack([cos, -sin], -1), torch.stack([sin, cos], -1)], 1)  # (B, 2, 2)
    # output edge coords e = q + 0.5 -> centred crop offset p = diag(f cw/wo, ch/ho) e - (f cw/2, ch/2)
    lin_local = torch.zeros((batch, 2, 2), device=device)
    lin_local[:, 0, 0] = f * cw / wo
    lin_local[:, 1, 1] = ch / ho
    lin = rot @ lin_local
    centre = torch.stack([x0 + cw / 2 + shift[:, 0] * cw, y0 + ch / 2 + shift[:, 1] * ch], -1)  # edge coords
    half = torch.stack([f * cw / 2, ch / 2], -1)
    # in_centre = lin (q + 0.5) - rot half + centre - 0.5
    offset = (lin @ torch.full((batch, 2, 1), 0.5, device=device)).squeeze(-1) \
        - (rot @ half[..., None]).squeeze(-1) + centre - 0.5
    return torch.cat([lin, offset[..., None]], dim=2), flip


def adjust_colour(images: Tensor, brightness: Tensor, contrast: Tensor, saturation: Tensor,
                  hue: Tensor) -> Tensor:
    """Per-sample factors (B,) applied in torchvision's formulas: brightness, contrast, saturation, hue."""
    v = lambda t: t.view(-1, 1, 1, 1).to(images.dtype)  # noqa: E731
    x = (images * v(brightness)).clamp_(0, 1)
    mean = _ops.grayscale(x).mean(dim=(1, 2, 3), keepdim=True)
    x = x.mul_(v(contrast)).add_((1 - v(contrast)) * mean).clamp_(0, 1)
    gray = _ops.grayscale(x)  # before x is scaled in place
    x = x.mul_(v(saturation)).add_((1 - v(saturation)) * gray).clamp_(0, 1)
    return _ops.shift_hue(x, hue).clamp_(0, 1)


def color_jitter(images: Tensor, cfg: GlobalViewConfig, generator: torch.Generator | None, *,
                 inplace: bool = False) -> Tensor:
    """Per-sample brightness, contrast, saturation, hue (fixed order), applied with ``cfg.jitter_p``.

    ``inplace=True`` may overwrite ``images`` (CPU: only the jittered samples are computed).
    """
    b = images.shape[0]
    dev = images.device
    apply = _ops.coin(cfg.jitter_p, b, generator, dev)
    fb = _ops.uniform((b,), max(0.0, 1 - cfg.brightness), 1 + cfg.brightness, generator, dev)
    fc = _ops.uniform((b,), max(0.0, 1 - cfg.contrast), 1 + cfg.contrast, generator, dev)
    fs = _ops.uniform((b,), max(0.0, 1 - cfg.saturation), 1 + cfg.saturation, generator, dev)
    fh = _ops.uniform((b,), -cfg.hue, cfg.hue, generator, dev)
    if cfg.jitter_p <= 0:
        return images
    return _ops.apply_where(images if inplace else images.clone(), apply,
                            lambda x, sel: adjust_colour(x, fb[sel], fc[sel], fs[sel], fh[sel]))


def _blur(images: Tensor, cfg: GlobalViewConfig, generator: torch.Generator | None) -> Tensor:
    """Per-sample Gaussian blur with ``cfg.blur_p`` (may overwrite ``images``)."""
    b, _, h, w = images.shape
    dev = images.device
    apply = _ops.coin(cfg.blur_p, b, generator, dev)
    sigma = _ops.uniform((b,), *cfg.blur_sigma, generator, dev)
    if cfg.blur_p <= 0:
        return images
    k = cfg.blur_kernel or _ops.auto_kernel_size(cfg.blur_sigma[1], min(h, w))
    return _ops.apply_where(images, apply, lambda x, sel: _ops.separable_blur(x, _ops.gaussian_kernels(sigma[sel], k)))


@_ops.full_precision
def global_augment(images: Tensor, cfg: GlobalViewConfig, generator: torch.Generator | None, *,
                   out_size: int | tuple[int, int] | None = None, landmarks: Tensor | None = None) -> AugResult:
    """Augment a batch with one global view family; every sample gets its own random parameters.

    ``images`` (B, 3, H, W) in [0, 1]; ``out_size`` = output side (int) or (H, W), default the input
    size; ``landmarks`` (B, 68, 2) are mapped into the output frame (re-indexed on flips when
    ``cfg.mirror_landmark_ids``). Crop + flip + rotation + resize are one bilinear ``grid_sample``
    (``align_corners=False``), so a full-size unflipped crop reproduces the input exactly.
    """
    _ops.check_images(images)
    _validate(cfg)
    b, _, h, w = images.shape
    dev = images.device
    _ops.check_generator(generator, dev)
    if out_size is None:
        out_hw = (h, w)
    elif isinstance(out_size, int):
        out_hw = (out_size, out_size)
    else:
        out_hw = (int(out_size[0]), int(out_size[1]))
    if landmarks is not None:
        _ops.check_landmarks(landmarks, b)
    affine, flipped = sample_affine(b, (h, w), out_hw, cfg, generator, dev)
    # x is ours from here: every stage may work in place (CPU: only on the samples it applies to);
    # every stage draws its parameters for all samples first, so the random stream never depends on
    # which samples were selected or on the device
    x = _ops.warp_affine(images, affine, out_hw, padding=cfg.padding).clamp_(0, 1)
    x = color_jitter(x, cfg, generator, inplace=True)
    gray_apply = _ops.coin(cfg.grayscale_p, b, generator, dev)
    if cfg.grayscale_p > 0:
        x = _ops.apply_where(x, gray_apply, lambda s, _: _ops.grayscale(s).expand_as(s))
    x = _blur(x, cfg, generator)
    sol_apply = _ops.coin(cfg.solarize_p, b, generator, dev)
    if cfg.solarize_p > 0:
        t = cfg.solarize_threshold
        x = _ops.apply_where(x, sol_apply, lambda s, _: torch.where(s >= t, 1 - s, s))
    out_lm = None
    if landmarks is not None:
        out_lm = _ops.apply_affine(_ops.invert_affine(affine), landmarks.to(affine.dtype)).to(landmarks.dtype)
        if cfg.mirror_landmark_ids:
            perm = _ops.index_tensor(FLIP_PERMUTATION, landmarks.device)  # built once per device
            out_lm = torch.where(flipped.view(-1, 1, 1), out_lm[:, perm], out_lm)
    return AugResult(images=x.contiguous(), landmarks=out_lm, affine=affine, flipped=flipped)
