"""MAE reconstruction loss (He et al., CVPR 2022) as pure functions.

Reference: ``facebookresearch/mae`` ``models_mae.py`` ``patchify`` / ``forward_loss`` (identical in
SimFLE's FaceMAE): per-patch MSE between the decoder output and the patch pixels, normalised per
patch when ``norm_pix`` (mean / unbiased variance over the patch's p·p·3 values, eps 1e-6),
averaged over the removed patches only.
"""

from __future__ import annotations

import torch


def patchify(images: torch.Tensor, patch_size: int) -> torch.Tensor:
    """(B, C, H, W) → (B, L, p·p·C), patches row-major, each flattened as (p, p, C) (MAE order)."""
    b, c, h, w = images.shape
    p = patch_size
    if h % p or w % p:
        raise ValueError(f"image {h}x{w} is not divisible into {p}-px patches")
    x = images.reshape(b, c, h // p, p, w // p, p)
    x = torch.einsum("nchpwq->nhwpqc", x)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def mae_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor, *, norm_pix: bool = True,
             eps: float = 1e-6) -> torch.Tensor:
    """Mean over removed patches of the per-patch MSE.

    Args:
        pred: (B, L, p·p·C) decoder output.
        target: (B, L, p·p·C) ``patchify`` of the encoder's input image.
        mask: (B, L), 1 = removed (counted), 0 = visible (ignored).
        norm_pix: normalise each target patch by its mean / std first (MAE default; better
            representations).
    """
    pred = pred.float() if pred.dtype in (torch.float16, torch.bfloat16) else pred
    target = target.to(pred.dtype)
    if norm_pix:
        mean = target.mean(dim=-1, keepdim=True)
        var = target.var(dim=-1, keepdim=True)
        target = (target - mean) / (var + eps) ** 0.5
    per_patch = (pred - target).pow(2).mean(dim=-1)
    mask = mask.to(per_patch.dtype)
    return (per_patch * mask).sum() / mask.sum().clamp(min=1)
