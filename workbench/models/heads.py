"""Projection / prediction heads (MLPs) used by the SSL methods."""

from __future__ import annotations

from torch import nn


def mlp(in_dim: int, hidden_dim: int, out_dim: int, *, layers: int = 2, batch_norm: bool = True,
        last_bn: bool = False) -> nn.Sequential:
    """``layers``-layer MLP: [Linear -> (BN) -> ReLU] x (layers-1) -> Linear (-> BN without affine).

    SimCLR uses 2 layers without BN (paper) or with BN (v2); BYOL uses 2 layers with BN and
    hidden 4096 (we default smaller for FER-sized data); Barlow Twins / MoCo v3 use 3 layers.
    """
    mods: list[nn.Module] = []
    d = in_dim
    for _ in range(layers - 1):
        mods.append(nn.Linear(d, hidden_dim, bias=not batch_norm))
        if batch_norm:
            mods.append(nn.BatchNorm1d(hidden_dim))
        mods.append(nn.ReLU(inplace=True))
        d = hidden_dim
    mods.append(nn.Linear(d, out_dim, bias=not last_bn))
    if last_bn:
        mods.append(nn.BatchNorm1d(out_dim, affine=False))
    return nn.Sequential(*mods)
