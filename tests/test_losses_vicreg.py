"""VICReg loss against a hand-written (loop) reference of ``facebookresearch/vicreg`` ``main_vicreg.py``."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.losses.vicreg import vicreg_loss, vicreg_terms


def reference(z1: torch.Tensor, z2: torch.Tensor, eps: float = 1e-4) -> tuple[float, float, float]:
    """(invariance, variance, covariance) with explicit loops over items and dimensions (float64)."""
    a, b = z1.double().tolist(), z2.double().tolist()
    n, d = len(a), len(a[0])
    inv = sum((a[i][k] - b[i][k]) ** 2 for i in range(n) for k in range(d)) / (n * d)

    def var_cov(x: list[list[float]]) -> tuple[float, float]:
        mean = [sum(x[i][k] for i in range(n)) / n for k in range(d)]
        c = [[x[i][k] - mean[k] for k in range(d)] for i in range(n)]
        hinge = 0.0
        for k in range(d):
            std = math.sqrt(sum(c[i][k] ** 2 for i in range(n)) / (n - 1) + eps)
            hinge += max(0.0, 1.0 - std)
        off = 0.0
        for p in range(d):
            for q in range(d):
                if p != q:
                    off += (sum(c[i][p] * c[i][q] for i in range(n)) / (n - 1)) ** 2
        return hinge / d, off / d

    v1, c1 = var_cov(a)
    v2, c2 = var_cov(b)
    return inv, (v1 + v2) / 2, c1 + c2


@pytest.mark.parametrize("n,d,scale", [(8, 5, 1.0), (16, 6, 0.3), (5, 4, 2.0)])
def test_vicreg_terms_match_the_loop_reference(n, d, scale):
    g = torch.Generator().manual_seed(n * d)
    z1 = scale * torch.randn(n, d, generator=g)
    z2 = z1 + 0.5 * scale * torch.randn(n, d, generator=g)
    got = [float(t) for t in vicreg_terms(z1, z2)]
    for a, b in zip(got, reference(z1, z2)):
        assert a == pytest.approx(b, rel=1e-5, abs=1e-6)
    inv, var, cov = reference(z1, z2)
    assert float(vicreg_loss(z1, z2)) == pytest.approx(25 * inv + 25 * var + cov, rel=1e-5)
    assert float(vicreg_loss(z1, z2, 1.0, 2.0, 3.0)) == pytest.approx(inv + 2 * var + 3 * cov, rel=1e-5)


def test_vicreg_terms_are_float32_and_differentiable_under_bf16_autocast():
    g = torch.Generator().manual_seed(0)
    z1 = torch.randn(8, 6, generator=g, requires_grad=True)
    z2 = torch.randn(8, 6, generator=g)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = vicreg_terms(z1.to(torch.bfloat16), z2.to(torch.bfloat16))
    assert all(t.dtype == torch.float32 and torch.isfinite(t) for t in terms)
    sum(terms).backward()
    assert z1.grad is not None and torch.isfinite(z1.grad).all()


def test_variance_term_is_zero_for_unit_spread_and_one_for_collapse():
    z = torch.tensor([[1.0, -1.0], [-1.0, 1.0]] * 4) * 2  # std 2.1 > 1 in both dimensions
    assert float(vicreg_terms(z, z)[1]) == 0.0
    collapsed = torch.ones(8, 3)
    inv, var, cov = vicreg_terms(collapsed, collapsed)
    assert float(inv) == 0.0 and float(cov) == 0.0 and float(var) == pytest.approx(1 - math.sqrt(1e-4))


def test_vicreg_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        vicreg_terms(torch.randn(4, 3), torch.randn(4, 2))
