"""SimFLE's KL self-distillation against a loop reference."""

import math

import pytest
import torch

from workbench.losses import kd_kl, kd_to_mean


def ref_kd(student, teacher, t):
    total = 0.0
    for s_row, t_row in zip(student, teacher):
        ps = [math.exp(v / t) for v in s_row]
        pt = [math.exp(v / t) for v in t_row]
        ps = [v / sum(ps) for v in ps]
        pt = [v / sum(pt) for v in pt]
        total += sum(b * math.log(b / a) for a, b in zip(ps, pt))
    return total / len(student) * t * t


@pytest.mark.parametrize("t", [1.0, 4.0])
def test_kd_kl_matches_reference(t):
    g = torch.Generator().manual_seed(int(t))
    s = torch.randn(5, 7, generator=g, dtype=torch.float64)
    te = torch.randn(5, 7, generator=g, dtype=torch.float64)
    assert float(kd_kl(s, te, t)) == pytest.approx(ref_kd(s.tolist(), te.tolist(), t), rel=1e-9)


def test_kd_to_mean_is_zero_for_equal_outputs_with_zero_gradient():
    g = torch.Generator().manual_seed(0)
    u = torch.randn(6, 10, generator=g, requires_grad=True)
    loss = kd_to_mean([u, u, u], 4.0)
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6)
    loss.backward()
    assert float(u.grad.abs().max()) < 1e-6


def test_kd_to_mean_uses_the_detached_mean_as_teacher():
    g = torch.Generator().manual_seed(1)
    outs = [torch.randn(4, 8, generator=g, dtype=torch.float64, requires_grad=True) for _ in range(3)]
    mean = (outs[0] + outs[1] + outs[2]).detach() / 3
    expected = sum(ref_kd(o.tolist(), mean.tolist(), 4.0) for o in outs)
    loss = kd_to_mean(outs, 4.0)
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-9)
    loss.backward()
    # teacher = detached mean: each output gets the gradient of its own KL term only (the gradient through
    # an undetached mean teacher would vanish for this sum anyway, so detaching changes no value)
    o0 = outs[0].detach().clone().requires_grad_(True)
    kd_kl(o0, mean, 4.0).backward()
    assert torch.allclose(outs[0].grad, o0.grad)
