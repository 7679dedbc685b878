"""Losses against hand-written loop references."""

import math

import pytest
import torch

from workbench.losses import byol_loss, multi_positive_nt_xent, nt_xent, pair_positive_index


def ref_nt_xent(z, pos, tau):
    z = [v / math.sqrt(float((v * v).sum())) for v in z]
    total = 0.0
    for i in range(len(z)):
        num = math.exp(float((z[i] * z[pos[i]]).sum()) / tau)
        den = sum(math.exp(float((z[i] * z[k]).sum()) / tau) for k in range(len(z)) if k != i)
        total += -math.log(num / den)
    return total / len(z)


def ref_multi(z, groups, tau):
    z = [v / math.sqrt(float((v * v).sum())) for v in z]
    losses = []
    for i in range(len(z)):
        den = sum(math.exp(float((z[i] * z[k]).sum()) / tau) for k in range(len(z)) if k != i)
        pos = [p for p in range(len(z)) if p != i and groups[p] == groups[i]]
        if not pos:
            continue
        losses.append(-sum(math.log(math.exp(float((z[i] * z[p]).sum()) / tau) / den) for p in pos) / len(pos))
    return sum(losses) / len(losses)


@pytest.mark.parametrize("n,d,tau", [(2, 3, 0.1), (4, 8, 0.5), (5, 16, 0.07)])
def test_nt_xent_matches_reference(n, d, tau):
    g = torch.Generator().manual_seed(n * 10 + d)
    z = torch.randn(2 * n, d, generator=g, dtype=torch.float64)
    pos = pair_positive_index(n)
    got = float(nt_xent(z, pos, tau))
    assert got == pytest.approx(ref_nt_xent(z, pos.tolist(), tau), rel=1e-5)


def test_pair_positive_index_layout():
    assert pair_positive_index(3).tolist() == [3, 4, 5, 0, 1, 2]


def test_nt_xent_is_low_for_identical_views_and_high_for_random():
    g = torch.Generator().manual_seed(0)
    a = torch.randn(16, 32, generator=g)
    aligned = float(nt_xent(torch.cat([a, a]), pair_positive_index(16), 0.1))
    shuffled = float(nt_xent(torch.cat([a, a[torch.randperm(16, generator=g)]]), pair_positive_index(16), 0.1))
    assert aligned < 0.05 < shuffled


@pytest.mark.parametrize("groups", [[0, 0, 1, 1, 1, 2], [0, 1, 0, 1, 2, 2, 2, 3]])
def test_multi_positive_matches_reference(groups):
    g = torch.Generator().manual_seed(len(groups))
    z = torch.randn(len(groups), 6, generator=g, dtype=torch.float64)
    got = float(multi_positive_nt_xent(z, torch.tensor(groups), 0.2))
    assert got == pytest.approx(ref_multi(z, groups, 0.2), rel=1e-5)


def test_multi_positive_equals_nt_xent_for_pairs():
    g = torch.Generator().manual_seed(3)
    z = torch.randn(8, 5, generator=g, dtype=torch.float64)
    groups = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert float(multi_positive_nt_xent(z, groups, 0.3)) == pytest.approx(
        float(nt_xent(z, pair_positive_index(4), 0.3)), rel=1e-6)


def test_multi_positive_without_any_positive_is_zero_with_a_graph():
    """Rows alone in their group are ignored (a masked mean, no device read); none left gives 0."""
    z = torch.randn(4, 5, generator=torch.Generator().manual_seed(1), requires_grad=True)
    loss = multi_positive_nt_xent(z, torch.arange(4), 0.2)
    assert float(loss.detach()) == 0.0 and loss.requires_grad
    loss.backward()
    assert torch.equal(z.grad, torch.zeros_like(z))


def test_byol_loss_reference_and_stop_gradient():
    p = torch.tensor([[1.0, 0.0], [0.0, 2.0]], requires_grad=True)
    t = torch.tensor([[1.0, 0.0], [1.0, 0.0]], requires_grad=True)
    loss = byol_loss(p, t)
    # cos = 1 and 0 -> (0 + 2) / 2
    assert float(loss) == pytest.approx(1.0)
    loss.backward()
    assert t.grad is None and p.grad is not None
