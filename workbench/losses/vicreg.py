"""VICReg loss (Bardes, Ponce, LeCun, ICLR 2022) as pure functions.

Reference: ``facebookresearch/vicreg`` ``main_vicreg.py``: ``repr = mse(x, y)``; ``x, y`` gathered
from all processes and centred; ``std = sqrt(var(dim 0, unbiased) + 1e-4)``,
``std_loss = mean(relu(1 − std_x))/2 + mean(relu(1 − std_y))/2``; ``cov = xᵀx / (N − 1)``,
``cov_loss = Σ_{i≠j} cov_x,ij² / D + Σ_{i≠j} cov_y,ij² / D``;
``loss = 25·repr + 25·std_loss + 1·cov_loss``. Tested against a loop reference in
``tests/test_losses_vicreg.py``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.dist import gather_with_grad


def _variance_covariance(z: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mean(relu(1 − std)), Σ_{i≠j} C_ij² / D)`` of one (N, D) float32 embedding."""
    n, d = z.shape
    x = z - z.mean(dim=0)
    std = torch.sqrt(x.var(dim=0) + eps)
    cov = x.t() @ x / (n - 1)
    off = cov.pow(2).sum() - torch.diagonal(cov).pow(2).sum()
    return F.relu(1 - std).mean(), off / d


def vicreg_terms(z1: torch.Tensor, z2: torch.Tensor, *, eps: float = 1e-4
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(invariance, variance, covariance)`` terms of two (N, D) projections, in float32.

    Invariance: the mean squared difference (per item). Variance: the hinge ``relu(1 − std)`` on each
    dimension's standard deviation over the batch (``sqrt(var + eps)``, unbiased), averaged over the
    dimensions and the two views. Covariance: the squared off-diagonal entries of each view's
    covariance matrix, summed, divided by D, summed over the two views.

    Multi-process (DDP): the invariance term is this process's mean (DDP's average makes it the global
    one); the variance and covariance terms are batch statistics, computed on the gathered global batch
    (:func:`workbench.dist.gather_with_grad`; every process computes the same values).
    """
    if z1.shape != z2.shape or z1.ndim != 2:
        raise ValueError(f"z1 and z2 must be (N, D) of the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}")
    with torch.autocast(device_type=z1.device.type, enabled=False):  # batch statistics: keep float32 under AMP
        a, b = z1.float(), z2.float()
        inv = F.mse_loss(a, b)
        var1, cov1 = _variance_covariance(gather_with_grad(a), eps)
        var2, cov2 = _variance_covariance(gather_with_grad(b), eps)
        return inv, (var1 + var2) / 2, cov1 + cov2


def vicreg_loss(z1: torch.Tensor, z2: torch.Tensor, sim_coeff: float = 25.0, std_coeff: float = 25.0,
                cov_coeff: float = 1.0, *, eps: float = 1e-4) -> torch.Tensor:
    """VICReg loss ``λ·invariance + μ·variance + ν·covariance`` (paper λ = μ = 25, ν = 1); see
    :func:`vicreg_terms`."""
    inv, var, cov = vicreg_terms(z1, z2, eps=eps)
    return sim_coeff * inv + std_coeff * var + cov_coeff * cov


__all__ = ["vicreg_loss", "vicreg_terms"]
