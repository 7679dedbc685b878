"""MoCo v3 contrastive loss (Chen, Xie, He, ICCV 2021) as a pure function.

Reference: ``facebookresearch/moco-v3`` ``moco/builder.py`` ``contrastive_loss``: q and k
L2-normalised, ``logits = q kᵀ / τ``, labels = the diagonal (in-batch keys, no queue),
``CrossEntropy(logits, labels) · 2τ``; under DDP the keys are ``concat_all_gather``-ed and the
labels offset by ``rank·N`` (done here: :func:`workbench.dist.gather`). Tested against a loop
reference in ``tests/test_losses_moco.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.dist import gather, rank_and_world


def moco_infonce(q: torch.Tensor, k: torch.Tensor, temperature: float = 0.2, *,
                 scale_by_temperature: bool = True, positive_offset: int = 0) -> torch.Tensor:
    """InfoNCE of queries ``q`` (N, D) against in-batch keys ``k`` (M, D), M ≥ N; row i's positive
    is key ``positive_offset + i`` (key i by default, where M = N).

    ``L = mean_i −log( exp(q̂_i·k̂_i/τ) / Σ_j exp(q̂_i·k̂_j/τ) )``, times ``2τ`` when
    ``scale_by_temperature`` (MoCo v3: keeps the gradient scale independent of τ). Keys are
    detached (they come from the momentum encoder). Symmetrise as ``f(q1, k2) + f(q2, k1)``.

    Args:
        temperature: τ. MoCo v3 code: 1.0 for ResNet recipes, 0.2 for ViT recipes (paper 0.2).
            Small batches (FER) usually prefer 0.1-0.5.
        positive_offset: index of the first query's positive among ``k`` (0 for in-batch keys).

    Multi-process (DDP): ``q`` and ``k`` are this process's rows; the keys of every process are
    gathered (``concat_all_gather`` of the official code, rank blocks of M, no gradient) and the
    positives shifted by ``rank·M``, so the mean over processes of the per-process losses is the
    single-process loss of the global batch.
    """
    if q.ndim != 2 or k.ndim != 2 or q.shape[1] != k.shape[1]:
        raise ValueError(f"q and k must be (N, D) and (M, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    if not 0 <= positive_offset <= k.shape[0] - q.shape[0]:
        raise ValueError(f"positive keys [{positive_offset}, {positive_offset + q.shape[0]}) are not all among "
                         f"the {k.shape[0]} keys")
    rank, world = rank_and_world()
    if world > 1:
        positive_offset, k = rank * k.shape[0] + positive_offset, gather(k)
    with torch.autocast(device_type=q.device.type, enabled=False):  # logits / τ: keep float32 under AMP
        q = F.normalize(q.float() if q.dtype in (torch.float16, torch.bfloat16) else q, dim=1)
        k = F.normalize(k.detach().to(q.dtype), dim=1)
        logits = q @ k.t() / temperature
        labels = torch.arange(positive_offset, positive_offset + q.shape[0], device=q.device)
        loss = F.cross_entropy(logits, labels)
    return loss * (2 * temperature) if scale_by_temperature else loss
