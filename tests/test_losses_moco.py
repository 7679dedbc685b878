"""MoCo v3 InfoNCE against a loop reference."""

import math

import pytest
import torch

from workbench.losses import moco_infonce


def ref_moco(q, k, tau):
    def unit(v):
        s = math.sqrt(sum(x * x for x in v))
        return [x / s for x in v]

    q, k = [unit(v) for v in q], [unit(v) for v in k]
    total = 0.0
    for i in range(len(q)):
        logits = [sum(a * b for a, b in zip(q[i], k[j])) / tau for j in range(len(k))]
        total += -math.log(math.exp(logits[i]) / sum(math.exp(v) for v in logits))
    return total / len(q) * 2 * tau


@pytest.mark.parametrize("n,d,tau", [(3, 4, 0.2), (5, 8, 1.0), (8, 3, 0.07)])
def test_moco_infonce_matches_reference(n, d, tau):
    g = torch.Generator().manual_seed(n + d)
    q = torch.randn(n, d, generator=g, dtype=torch.float64)
    k = torch.randn(n, d, generator=g, dtype=torch.float64)
    assert float(moco_infonce(q, k, tau)) == pytest.approx(ref_moco(q.tolist(), k.tolist(), tau), rel=1e-9)
    unscaled = float(moco_infonce(q, k, tau, scale_by_temperature=False))
    assert unscaled == pytest.approx(ref_moco(q.tolist(), k.tolist(), tau) / (2 * tau), rel=1e-9)


def test_moco_keys_get_no_gradient_and_aligned_keys_give_low_loss():
    g = torch.Generator().manual_seed(0)
    q = torch.randn(16, 32, generator=g, requires_grad=True)
    k = torch.randn(16, 32, generator=g, requires_grad=True)
    moco_infonce(q, k, 0.2).backward()
    assert k.grad is None and q.grad is not None and float(q.grad.abs().sum()) > 0
    base = q.detach()
    aligned = float(moco_infonce(base, base.clone(), 0.1))
    shuffled = float(moco_infonce(base, base[torch.randperm(16, generator=g)], 0.1))
    assert aligned < 0.05 < shuffled
