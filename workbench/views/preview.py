"""Preview grids of the view families (rows = samples, columns = original + one per family).

Used by the notebooks and ``workbench views preview``. Effects are forced on (p = 1) so every
column shows its family. Families that need landmarks (warp, faceswap, mask) are left out when no
landmarks are given; faceswap needs at least 2 samples (sample i gets the head of sample i+1).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from workbench.errors import ConfigError
from workbench.views.faceswap import FaceSwapConfig, face_swap_details
from workbench.views.global_aug import GlobalViewConfig, global_augment
from workbench.views.masking import PartMaskConfig, part_mask
from workbench.views.warp import LocalWarpConfig, local_warp

FAMILIES = ("global", "warp", "faceswap", "mask")
_NEED_LANDMARKS = {"warp", "faceswap", "mask"}


def _as_tensor(images: Tensor | np.ndarray) -> Tensor:
    if isinstance(images, Tensor):
        x = images.detach()
    else:
        arr = np.asarray(images)
        if arr.ndim == 4 and arr.shape[-1] == 3 and arr.shape[1] != 3:
            arr = arr.transpose(0, 3, 1, 2)
        x = torch.from_numpy(np.ascontiguousarray(arr))
    if x.dtype == torch.uint8:
        x = x.float() / 255.0
    if x.ndim != 4 or x.shape[1] != 3:
        raise ConfigError(f"preview images must be (B, 3, H, W) or (B, H, W, 3), got {tuple(x.shape)}")
    return x.float().clamp(0, 1)


def _draw_dots(tile: np.ndarray, points: np.ndarray | None) -> None:
    if points is None:
        return
    h, w, _ = tile.shape
    r = 1 if min(h, w) >= 64 else 0
    for x, y in np.round(points).astype(int):
        if 0 <= x < w and 0 <= y < h:
            tile[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = (0, 255, 0)


def preview_grid(images: Tensor | np.ndarray, landmarks: Tensor | np.ndarray | None = None, *,
                 families: Sequence[str] = FAMILIES, n: int = 4, seed: int = 0, gap: int = 2) -> np.ndarray:
    """uint8 (rows x H, cols x W, 3) grid: first column the originals, then one column per family.

    ``images`` float [0, 1] (B, 3, H, W) or uint8 (B, H, W, 3); ``landmarks`` (B, 68, 2) pixel
    coordinates (drawn as green dots). The first ``n`` samples are shown; runs on the images' device.
    """
    unknown = [f for f in families if f not in FAMILIES]
    if unknown:
        raise ConfigError(f"unknown view family '{unknown[0]}' (choose from {', '.join(FAMILIES)})")
    x = _as_tensor(images)[:n]
    b, _, h, w = x.shape
    if b == 0:
        raise ConfigError("preview needs at least one image")
    lm = None
    if landmarks is not None:
        lm = torch.as_tensor(np.asarray(landmarks) if not isinstance(landmarks, Tensor) else landmarks)
        lm = lm.detach().float().to(x.device)[:n]
    fams = [f for f in families if lm is not None or f not in _NEED_LANDMARKS]
    if b < 2:
        fams = [f for f in fams if f != "faceswap"]
    gen = torch.Generator(device=x.device).manual_seed(int(seed))
    columns: list[tuple[Tensor, Tensor | None]] = [(x, lm)]
    for fam in fams:
        if fam == "global":
            res = global_augment(x, GlobalViewConfig(), gen, landmarks=lm)
            columns.append((res.images, res.landmarks))
        elif fam == "warp":
            assert lm is not None
            cfg = LocalWarpConfig(p=1.0)  # the training defaults (IOD units), always applied
            columns.append(local_warp(x, lm, cfg, gen))
        elif fam == "faceswap":
            assert lm is not None
            heads, head_lm = x.roll(-1, 0), lm.roll(-1, 0)
            sw = face_swap_details(heads, head_lm, x, lm, FaceSwapConfig(p=1.0), gen)
            columns.append((sw.images, sw.landmarks))
        elif fam == "mask":
            assert lm is not None
            masked, _ = part_mask(x, lm, PartMaskConfig(p=1.0), gen)
            columns.append((masked, lm))
    cols = len(columns)
    grid = np.full((b * h + (b - 1) * gap, cols * w + (cols - 1) * gap, 3), 255, dtype=np.uint8)
    for c, (imgs, pts) in enumerate(columns):
        arr = (imgs.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
        pts_np = pts.cpu().numpy() if pts is not None else None
        for r in range(b):
            tile = arr[r].copy()
            _draw_dots(tile, None if pts_np is None else pts_np[r])
            y0, x0 = r * (h + gap), c * (w + gap)
            grid[y0:y0 + h, x0:x0 + w] = tile
    return grid


def save_preview(path: str | Path, images: Tensor | np.ndarray, landmarks: Tensor | np.ndarray | None = None,
                 **kwargs: object) -> Path:
    """Write :func:`preview_grid` as a PNG (atomically) and return the path."""
    from PIL import Image

    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    grid = preview_grid(images, landmarks, **kwargs)  # type: ignore[arg-type]
    tmp = out.with_name(out.name + ".tmp")
    Image.fromarray(grid).save(tmp, format="PNG")
    os.replace(tmp, out)
    return out
