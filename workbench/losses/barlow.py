"""Barlow Twins redundancy-reduction loss (Zbontar et al., ICML 2021) as pure functions.

Reference: ``facebookresearch/barlowtwins`` ``main.py``: ``c = bn(z1).T @ bn(z2) / N`` with
``bn = BatchNorm1d(affine=False)`` in train mode (batch mean, *biased* batch variance, eps 1e-5),
``loss = Σ_i (1 − c_ii)² + λ Σ_{i≠j} c_ij²``. Tested against a loop reference in
``tests/test_losses_barlow.py``. Under DDP the loss gathers both projections of every process
(:func:`workbench.dist.gather_with_grad`), so the standardisation and ``C`` are the global batch's.
"""

from __future__ import annotations

import torch

from workbench.dist import gather_with_grad


def _full(x: torch.Tensor) -> torch.Tensor:
    """Half / bfloat16 → float32 (statistics over the batch need the precision); others unchanged."""
    return x.float() if x.dtype in (torch.float16, torch.bfloat16) else x


def batch_standardize(z: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """Per-dimension ``(z − mean) / sqrt(var + eps)`` over the batch (biased variance), i.e. what
    ``BatchNorm1d(affine=False)`` computes in train mode."""
    z = _full(z)
    mean = z.mean(dim=0, keepdim=True)
    var = z.var(dim=0, unbiased=False, keepdim=True)
    return (z - mean) / torch.sqrt(var + eps)


def cross_correlation(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> torch.Tensor:
    """(D, D) empirical cross-correlation ``C = std(z1)ᵀ std(z2) / N`` of two (N, D) embeddings."""
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must be (N, D) of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    n = z1.shape[0]
    with torch.autocast(device_type=z1.device.type, enabled=False):  # D×D sums: keep float32 under AMP
        return batch_standardize(z1, eps).t() @ batch_standardize(z2, eps) / n


def barlow_twins_terms(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-5) -> tuple[torch.Tensor, torch.Tensor]:
    """``(Σ_i (1 − C_ii)², Σ_{i≠j} C_ij²)``: the invariance and redundancy-reduction terms.

    Multi-process (DDP): ``z1`` and ``z2`` are this process's rows; ``C`` is computed over the gathered
    global batch, so every process computes the same global loss (the gather's backward sums the W
    processes' gradients for the local rows and DDP averages them: the single-process gradient).
    """
    c = cross_correlation(gather_with_grad(z1), gather_with_grad(z2), eps)
    diag = torch.diagonal(c)
    on = (1 - diag).pow(2).sum()
    off = c.pow(2).sum() - diag.pow(2).sum()
    return on, off


def barlow_twins_loss(z1: torch.Tensor, z2: torch.Tensor, lambd: float = 5e-3, *,
                      scale_by_dim: bool = False, eps: float = 1e-5) -> torch.Tensor:
    """Barlow Twins loss ``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²`` for two (N, D) projections.

    Args:
        z1, z2: projector outputs of the two views (un-normalised; standardised here).
        lambd: off-diagonal weight λ. Paper 5e-3 (official code 0.0051) for D = 8192; the
            paper's ablation finds it robust; ~1/D is a common choice for small projectors.
        scale_by_dim: divide the loss by D (used by some re-implementations so that the loss
            magnitude does not grow with the projector width; with Adam/AdamW this barely matters,
            with SGD/LARS it rescales the effective learning rate). Off = the paper.
        eps: BatchNorm epsilon of the standardisation.
    """
    on, off = barlow_twins_terms(z1, z2, eps)
    loss = on + lambd * off
    return loss / z1.shape[1] if scale_by_dim else loss
