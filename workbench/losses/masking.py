"""Patch masking for masked image modelling: MAE's random masking and SimFLE's semantic masking
(with its channel-grouping loss), as pure functions.

Conventions (facebookresearch/mae ``random_masking``): for ``L`` patches and mask ratio ``r``,
``len_keep = int(L·(1 − r))``; ``ids_shuffle`` orders the patches (kept ones first),
``ids_restore = argsort(ids_shuffle)`` undoes it, ``ids_keep = ids_shuffle[:, :len_keep]`` and
``mask`` is 1 for removed and 0 for kept patches, in the original patch order (row-major).

SimFLE (``jymoon0613/simfle`` ``model/layer.py``): the visible patches are the ``len_keep`` patches
with the highest mean activation of one channel group of the backbone's last feature map,
bilinearly upsampled to the image (``semantic_masking`` over ``group_patch_scores``); the grouping
layer is trained with ``grouping_loss`` only (the sort is not differentiable).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from workbench.dist import gather_with_grad


class Masking(NamedTuple):
    """Which patches an MAE encoder sees. All (B, ·) tensors on the scores' / generator's device."""

    ids_keep: torch.Tensor     #: (B, K) int64, indices of the visible patches (in kept order)
    ids_restore: torch.Tensor  #: (B, L) int64, ``argsort(ids_shuffle)``
    ids_shuffle: torch.Tensor  #: (B, L) int64, kept patches first
    mask: torch.Tensor         #: (B, L) float, 1 = removed (to reconstruct), 0 = kept


def num_visible(num_patches: int, mask_ratio: float) -> int:
    """``int(L·(1 − r))`` as in MAE/SimFLE (49 patches at r = 0.75 → 12; 64 → 16)."""
    return int(num_patches * (1 - mask_ratio))


def masking_from_order(ids_shuffle: torch.Tensor, mask_ratio: float) -> Masking:
    """Build a :class:`Masking` from a per-sample patch order (first ``len_keep`` are kept)."""
    b, n = ids_shuffle.shape
    keep = num_visible(n, mask_ratio)
    if keep < 1:
        raise ValueError(f"mask ratio {mask_ratio} leaves no visible patch out of {n}")
    ids_restore = torch.argsort(ids_shuffle, dim=1)
    mask = torch.ones((b, n), device=ids_shuffle.device)
    mask[:, :keep] = 0
    mask = torch.gather(mask, 1, ids_restore)
    return Masking(ids_shuffle[:, :keep], ids_restore, ids_shuffle, mask)


def random_masking(batch: int, num_patches: int, mask_ratio: float, generator: torch.Generator | None,
                   device: torch.device | str = "cpu") -> Masking:
    """MAE's per-sample uniform random masking (noise drawn from ``generator``; ascending order)."""
    noise = torch.rand((batch, num_patches), generator=generator, device=device)
    return masking_from_order(torch.argsort(noise, dim=1), mask_ratio)


def semantic_masking(scores: torch.Tensor, mask_ratio: float) -> Masking:
    """SimFLE's masking: keep the ``int(L·(1 − r))`` highest-scoring patches of each sample.

    ``scores`` (B, L): per-patch scores (``group_patch_scores``). Descending stable sort, so ties
    keep the lower patch index first.
    """
    order = torch.sort(scores.detach(), dim=1, descending=True, stable=True).indices
    return masking_from_order(order, mask_ratio)


def patch_scores(heatmap: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, 1, H, W) → (B, L) mean of each ``patch_size`` square patch, row-major patch order."""
    b, c, h, w = heatmap.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"heat map {h}x{w} is not divisible into {patch_size}-px patches")
    return F.avg_pool2d(heatmap, patch_size).mean(dim=1).reshape(b, -1)


def group_heatmap(act: torch.Tensor, group_index: torch.Tensor, groups: int, size: int) -> torch.Tensor:
    """Sum the channels of group ``group_index[b]`` (C/G contiguous channels) of ``act`` (B, C, h, w)
    and upsample bilinearly (``align_corners=False``) to ``size × size`` → (B, 1, size, size)."""
    b, c = act.shape[:2]
    m = c // groups
    rows = group_index.view(-1, 1) * m + torch.arange(m, device=act.device).view(1, -1)  # (B, M)
    picked = act[torch.arange(b, device=act.device).view(-1, 1), rows]                # (B, M, h, w)
    summed = picked.sum(dim=1, keepdim=True)
    return F.interpolate(summed, size=(size, size), mode="bilinear", align_corners=False)


def group_patch_scores(act: torch.Tensor, group_index: torch.Tensor, groups: int, size: int,
                       patch_size: int) -> torch.Tensor:
    """SimFLE's per-patch scores: :func:`group_heatmap` then :func:`patch_scores` → (B, L)."""
    return patch_scores(group_heatmap(act, group_index, groups, size), patch_size)


def grouping_target(channels: int, groups: int, *, device: torch.device | str = "cpu",
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(C, C) block-diagonal target: G blocks of (C/G)×(C/G) ones on contiguous channels."""
    if groups < 1 or channels % groups:
        raise ValueError(f"{channels} channels cannot be split into {groups} equal groups")
    idx = torch.arange(channels, device=device) // (channels // groups)
    return (idx.view(-1, 1) == idx.view(1, -1)).to(dtype)


def grouping_correlation(act: torch.Tensor, offset: float = 1e-3) -> torch.Tensor:
    """(C, C) channel co-activation ``Co = Σ_b ⟨â_{b,c1}, â_{b,c2}⟩ / B`` where ``â`` is each
    (b, c) spatial map of ``act + offset`` flattened and L2-normalised (DBTNet / SimFLE)."""
    a = act.float() if act.dtype in (torch.float16, torch.bfloat16) else act
    b, c = a.shape[:2]
    with torch.autocast(device_type=a.device.type, enabled=False):  # C×C sums: keep float32 under AMP
        a = F.normalize((a + offset).reshape(b, c, -1), p=2, dim=2)
        return torch.einsum("bcn,bdn->cd", a, a) / b


def grouping_loss(act: torch.Tensor, groups: int, *, weight: float = 1e-3,
                  ref_channels: float = 512.0) -> torch.Tensor:
    """SimFLE/DBTNet channel-grouping loss ``g = Σ weight·(Co − GT)² / (C/ref_channels)²``.

    ``act`` (B, C, h, w): the grouping layer's output. Zero when channels within a group have
    identical (normalised) maps and channels of different groups are orthogonal. SimFLE then
    optimises ``mean(g²)`` with weight β = 0.03 (see :class:`~workbench.methods.simfle.SimFLE`).

    Multi-process (DDP): ``Co`` is a batch mean, so the processes' correlations (equal shards) are
    gathered and averaged into the global batch's; every process computes the same ``g`` (the
    gather's backward and DDP's gradient average give the single-process gradient).
    """
    co = gather_with_grad(grouping_correlation(act)[None]).mean(0)
    return grouping_loss_from_correlation(co, groups, weight=weight, ref_channels=ref_channels)


def grouping_loss_from_correlation(co: torch.Tensor, groups: int, *, weight: float = 1e-3,
                                   ref_channels: float = 512.0) -> torch.Tensor:
    """:func:`grouping_loss` from a precomputed (C, C) :func:`grouping_correlation` (e.g. the mean of
    the processes' correlations under DDP, which is the global batch's: equal shards)."""
    c = co.shape[0]
    gt = grouping_target(c, groups, device=co.device, dtype=co.dtype)
    return ((co - gt).pow(2) * weight).sum() / ((c / ref_channels) ** 2)
