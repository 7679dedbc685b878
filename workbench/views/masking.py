"""Landmark part masking (SSL-FER ``imgRandomLandmarkMask``) and per-part region masks.

``part_mask`` hides one facial part per sample under a filled ellipse of the image's mean colour,
inscribed in the part's landmark box grown by a margin (SSL-FER: 10 px at 112 px). The official
code draws the part ONCE per transform object (``random.choice`` in ``__init__``), i.e. once per
run; here the intended per-sample choice is the default and ``per_sample=False`` draws one part per
call (for the once-per-run behaviour, list a single part). :func:`draw_part_mask` draws the part and
the coin separately, so that a caller can mask the same part in two views (SSL-FER's shared default). SSL-FER's "left eye" is 36-41 in image
terms; our names follow the subject (``right_eye`` = 36-41, ``left_eye`` = 42-47), which does not
matter for a uniform choice among both eyes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.config import param
from workbench.data.landmarks import PARTS
from workbench.errors import ConfigError
from workbench.views import _ops


@dataclass
class PartMaskConfig:
    """Random landmark-part masking (a first transform of every SSL-FER view)."""

    p: float = param(0.8, "Probability that a sample gets a part masked (SSL-FER: 0.8).", min=0.0, max=1.0)
    parts: tuple[str, ...] = param(
        ("mouth", "left_eye", "right_eye"), "Parts to choose from, uniformly (names from "
        "workbench.data.landmarks.PARTS; SSL-FER: mouth, left eye, right eye).")
    margin: float = param(
        10 / 112, "Margin added around the part's landmark box, as a fraction of the image side "
        "(SSL-FER: 10 px at 112 px = 0.089).", min=0.0, max=1.0)
    per_sample: bool = param(
        True, "Draw the part per sample (intended). False = one part per call; the official code "
        "fixes it once per run (quirk), reproduce that by listing a single part.")
    fill: str = param("mean", "Fill colour: 'mean' = the image's mean colour (SSL-FER), 'zero' = black.",
                      choices=("mean", "zero"))


def _part_indices(parts: Sequence[str | Sequence[int]]) -> list[list[int]]:
    out = []
    for part in parts:
        if isinstance(part, str):
            if part not in PARTS:
                raise ConfigError(f"unknown facial part '{part}' (choose from {', '.join(PARTS)})")
            out.append(list(PARTS[part]))
        else:
            idx = [int(i) for i in part]
            if not idx or min(idx) < 0 or max(idx) > 67:
                raise ConfigError(f"a part must list landmark indices in 0..67, got {part}")
            out.append(idx)
    if not out:
        raise ConfigError("at least one facial part is needed")
    return out


def part_boxes(landmarks: Tensor, parts: Sequence[str | Sequence[int]]) -> Tensor:
    """(B, P, 4) landmark boxes (x0, y0, x1, y1) of each part."""
    boxes = []
    for idx in _part_indices(parts):
        pts = _ops.take_points(landmarks, idx).float()
        boxes.append(torch.cat([pts.amin(dim=1), pts.amax(dim=1)], dim=-1))
    return torch.stack(boxes, dim=1)


def draw_part_mask(batch: int, cfg: PartMaskConfig, generator: torch.Generator | None,
                   device: torch.device | str = "cpu") -> tuple[Tensor, Tensor]:
    """The random draws of :func:`part_mask` for ``batch`` samples: (part index (B,) int64, applied (B,) bool).

    Draw them once and pass them to :func:`part_mask` (``draws=``) for several batches to mask the
    same part in each, e.g. ``(choice.repeat(2), apply.repeat(2))`` for ``[anchors, positives]``.
    """
    n = len(_part_indices(cfg.parts))
    u = torch.rand((batch,), generator=generator, device=device)
    choice = (u * n).long().clamp(max=n - 1)
    if not cfg.per_sample:
        choice = choice[:1].expand(batch)
    return choice, _ops.coin(cfg.p, batch, generator, torch.device(device))


@_ops.full_precision
def part_mask(images: Tensor, landmarks: Tensor, cfg: PartMaskConfig,
              generator: torch.Generator | None, *,
              draws: tuple[Tensor, Tensor] | None = None) -> tuple[Tensor, Tensor]:
    """Mask one random part per sample; returns (images, chosen part index into ``cfg.parts`` or -1).

    Only pixels inside the chosen ellipse change; samples not selected by ``cfg.p`` are unchanged.
    ``draws``: (part index (B,), applied (B,)) from :func:`draw_part_mask` instead of drawing here
    (nothing is then drawn from ``generator``).
    """
    _ops.check_images(images)
    b, _, h, w = images.shape
    _ops.check_landmarks(landmarks, b)
    _ops.check_generator(generator, images.device)
    boxes = part_boxes(landmarks, cfg.parts)  # (B, P, 4)
    if draws is None:
        draws = draw_part_mask(b, cfg, generator, images.device)
    choice, apply = (t.to(images.device) for t in draws)
    if choice.shape != (b,) or apply.shape != (b,):
        raise ConfigError(f"part mask draws must be two ({b},) tensors, got {tuple(choice.shape)} and "
                          f"{tuple(apply.shape)}")
    box = boxes.gather(1, choice.view(-1, 1, 1).expand(-1, 1, 4)).squeeze(1)
    mx, my = cfg.margin * w, cfg.margin * h  # box grown by the margin (arithmetic, no device constant)
    grown = torch.stack([box[:, 0] - mx, box[:, 1] - my, box[:, 2] + mx, box[:, 3] + my], dim=1)
    inside = _ops.ellipse_mask(grown, h, w) & apply.view(-1, 1, 1)
    if cfg.fill == "mean":
        colour = images.mean(dim=(2, 3), keepdim=True)
    else:
        colour = torch.zeros_like(images[:, :, :1, :1])
    out = torch.where(inside[:, None], colour.expand_as(images), images)
    return out, torch.where(apply, choice, torch.full_like(choice, -1))
