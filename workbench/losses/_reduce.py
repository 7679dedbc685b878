"""Reductions without device reads, shared by losses and methods."""

from __future__ import annotations

import torch


def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` (B,) over the rows where ``mask`` (B,) is True, without a device read or a
    data-dependent shape: ``sum(where(mask, values, 0)) / max(1, sum(mask))``. 0 (still connected to
    the graph of ``values``) when no row is selected; unselected rows contribute no value and a zero
    gradient. Equals ``values[mask].mean()`` up to summation order (≤ 1 ulp)."""
    picked = torch.where(mask, values, torch.zeros_like(values))
    return picked.sum() / mask.sum().clamp_min(1).to(values.dtype)


__all__ = ["masked_mean"]
