"""Barlow Twins loss against a loop reference and the official BatchNorm formulation."""

import math

import pytest
import torch
from torch import nn

from workbench.losses import barlow_twins_loss, barlow_twins_terms, cross_correlation


def ref_barlow(z1, z2, lambd, eps=1e-5):
    n, d = len(z1), len(z1[0])

    def standardize(z):
        cols = []
        for j in range(d):
            col = [float(z[i][j]) for i in range(n)]
            mean = sum(col) / n
            var = sum((v - mean) ** 2 for v in col) / n  # biased, like BatchNorm in train mode
            cols.append([(v - mean) / math.sqrt(var + eps) for v in col])
        return cols  # cols[j][i]

    a, b = standardize(z1), standardize(z2)
    loss = 0.0
    for i in range(d):
        for j in range(d):
            c = sum(a[i][k] * b[j][k] for k in range(n)) / n
            loss += (1 - c) ** 2 if i == j else lambd * c * c
    return loss


@pytest.mark.parametrize("n,d,lambd", [(4, 3, 5e-3), (6, 5, 0.1), (8, 2, 1.0)])
def test_barlow_matches_loop_reference(n, d, lambd):
    g = torch.Generator().manual_seed(n * 7 + d)
    z1 = torch.randn(n, d, generator=g, dtype=torch.float64)
    z2 = torch.randn(n, d, generator=g, dtype=torch.float64)
    got = float(barlow_twins_loss(z1, z2, lambd))
    assert got == pytest.approx(ref_barlow(z1.tolist(), z2.tolist(), lambd), rel=1e-9)


def test_barlow_matches_official_batchnorm_code():
    g = torch.Generator().manual_seed(1)
    z1, z2 = torch.randn(16, 6, generator=g), torch.randn(16, 6, generator=g)
    bn = nn.BatchNorm1d(6, affine=False).train()
    c = bn(z1).T @ bn(z2) / 16
    on = torch.diagonal(c).add(-1).pow(2).sum()
    off = c.flatten()[:-1].view(5, 7)[:, 1:].flatten().pow(2).sum()  # official off_diagonal()
    assert torch.allclose(cross_correlation(z1, z2), c, atol=1e-6)
    assert float(barlow_twins_loss(z1, z2, 0.0051)) == pytest.approx(float(on + 0.0051 * off), rel=1e-5)
    got_on, got_off = barlow_twins_terms(z1, z2)
    assert float(got_on) == pytest.approx(float(on), rel=1e-5)
    assert float(got_off) == pytest.approx(float(off), rel=1e-5)


def test_barlow_is_zero_for_decorrelated_identical_views_and_scales_by_dim():
    # columns of a 4x4 Hadamard matrix minus the constant one: zero-mean, orthogonal, unit variance
    h = torch.tensor([[1, 1, 1], [-1, 1, -1], [1, -1, -1], [-1, -1, 1]], dtype=torch.float64)
    assert float(barlow_twins_loss(h, h, 5e-3)) == pytest.approx(0.0, abs=1e-8)
    g = torch.Generator().manual_seed(2)
    z1, z2 = torch.randn(8, 4, generator=g), torch.randn(8, 4, generator=g)
    full = barlow_twins_loss(z1, z2, 0.01)
    assert float(barlow_twins_loss(z1, z2, 0.01, scale_by_dim=True)) == pytest.approx(float(full) / 4, rel=1e-6)


def test_barlow_stays_float32_under_autocast():
    g = torch.Generator().manual_seed(3)
    z1, z2 = torch.randn(32, 16, generator=g), torch.randn(32, 16, generator=g)
    ref = float(barlow_twins_loss(z1, z2))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = barlow_twins_loss(z1, z2)
    assert got.dtype == torch.float32 and float(got) == pytest.approx(ref, rel=1e-5)
