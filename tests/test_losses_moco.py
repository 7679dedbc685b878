"""MoCo v3 InfoNCE against a loop reference."""

import math

import pytest
import torch

from workbench.losses import moco_infonce


def ref_moco(q, k, tau, offset=0):
    """Loop reference: query i's positive is key ``offset + i`` among all keys."""
    def unit(v):
        s = math.sqrt(sum(x * x for x in v))
        return [x / s for x in v]

    q, k = [unit(v) for v in q], [unit(v) for v in k]
    total = 0.0
    for i in range(len(q)):
        logits = [sum(a * b for a, b in zip(q[i], k[j])) / tau for j in range(len(k))]
        total += -math.log(math.exp(logits[offset + i]) / sum(math.exp(v) for v in logits))
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


@pytest.mark.parametrize("n,m,offset", [(3, 9, 0), (3, 9, 3), (3, 9, 6), (4, 4, 0), (2, 7, 5)])
def test_moco_infonce_positive_offset_matches_reference(n, m, offset):
    g = torch.Generator().manual_seed(n * 10 + m + offset)
    q = torch.randn(n, 5, generator=g, dtype=torch.float64)
    k = torch.randn(m, 5, generator=g, dtype=torch.float64)
    got = float(moco_infonce(q, k, 0.3, positive_offset=offset))
    assert got == pytest.approx(ref_moco(q.tolist(), k.tolist(), 0.3, offset), rel=1e-9)


def test_moco_infonce_offset_blocks_average_to_the_global_loss_and_gradient():
    """What DDP computes: rank r's queries against the gathered keys at offset r·n; the mean over ranks
    (DDP's gradient average) is the single-process loss of the global batch, and so is its gradient."""
    g = torch.Generator().manual_seed(5)
    world, n = 3, 4
    q = torch.randn(world * n, 8, generator=g, dtype=torch.float64, requires_grad=True)
    k = torch.randn(world * n, 8, generator=g, dtype=torch.float64)
    full = moco_infonce(q, k, 0.2)
    (grad_full,) = torch.autograd.grad(full, q)
    parts = [moco_infonce(q[r * n:(r + 1) * n], k, 0.2, positive_offset=r * n) for r in range(world)]
    mean = sum(parts) / world
    (grad_mean,) = torch.autograd.grad(mean, q)
    assert float(mean.detach()) == pytest.approx(float(full.detach()), rel=1e-12)
    torch.testing.assert_close(grad_mean, grad_full, rtol=1e-10, atol=1e-12)


def test_moco_infonce_rejects_positives_outside_the_keys():
    q, k = torch.randn(3, 4), torch.randn(6, 4)
    with pytest.raises(ValueError, match="not all among"):
        moco_infonce(q, k, positive_offset=4)
    with pytest.raises(ValueError, match="not all among"):
        moco_infonce(q, k, positive_offset=-1)
    with pytest.raises(ValueError, match=r"\(N, D\) and \(M, D\)"):
        moco_infonce(q, torch.randn(6, 5))
