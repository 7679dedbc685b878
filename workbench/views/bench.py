"""Throughput of the view families (images per second) on a device, on synthetic template faces."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from workbench.data.geometry import template_landmarks
from workbench.views.faceswap import FaceSwapConfig, swap_with_donors
from workbench.views.global_aug import GlobalViewConfig, global_augment
from workbench.views.masking import PartMaskConfig, part_mask
from workbench.views.template import render_faces
from workbench.views.warp import LocalWarpConfig, local_warp


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def view_throughput(device: str | torch.device, batch_size: int = 256, size: int = 112,
                    repeats: int = 5) -> dict[str, float]:
    """Images/s of each family (``global``, ``warp``, ``faceswap``, ``mask``) at ``batch_size`` x ``size``.

    One warm-up call, then the mean over ``repeats`` timed calls (CUDA synchronised).
    """
    dev = torch.device(device)
    gen = torch.Generator(device=dev).manual_seed(0)
    lm = template_landmarks(size, batch_size, jitter=0.005, scale_jitter=0.05, generator=gen, device=dev)
    images = render_faces(lm, size, gen)
    ids = torch.arange(batch_size, device=dev) % max(2, batch_size // 4)
    runs: dict[str, Callable[[], object]] = {
        "global": lambda: global_augment(images, GlobalViewConfig(), gen, landmarks=lm),
        "warp": lambda: local_warp(images, lm, LocalWarpConfig(), gen),
        "faceswap": lambda: swap_with_donors(images, lm, ids, FaceSwapConfig(p=1.0), gen),
        "mask": lambda: part_mask(images, lm, PartMaskConfig(p=1.0), gen),
    }
    out: dict[str, float] = {}
    with torch.no_grad():
        for name, fn in runs.items():
            fn()
            _sync(dev)
            t0 = time.perf_counter()
            for _ in range(max(1, repeats)):
                fn()
            _sync(dev)
            out[name] = batch_size * max(1, repeats) / max(time.perf_counter() - t0, 1e-9)
    return out
