"""Barlow Twins: training step, output contract, loss = pure loss, loss decrease on a fixed batch."""

import pytest
import torch
from _helpers import random_image_batch

from workbench.config import from_dict
from workbench.losses import barlow_twins_loss
from workbench.methods import METHODS, Batch, get_method
from workbench.methods.barlow import BarlowTwins, BarlowTwinsConfig
from workbench.models import Backbone

S, B = 32, 8




def make_batch(seed: int = 0) -> Batch:
    return random_image_batch(B, S, seed)


def small_method(**over) -> BarlowTwins:
    torch.manual_seed(0)
    cfg = from_dict(BarlowTwinsConfig, {"proj_hidden_dim": 64, "proj_dim": 32, **over})
    return BarlowTwins(cfg, Backbone("test_resnet", image_size=S), S)


def test_registered_with_presets():
    assert METHODS["barlow_twins"] is BarlowTwins and get_method("barlow-twins") is BarlowTwins
    assert BarlowTwins.requires == () and BarlowTwins.paper and BarlowTwins.summary
    for preset in ("paper", "cpu"):
        from_dict(BarlowTwinsConfig, BarlowTwins.presets[preset])
    assert sum(isinstance(x, torch.nn.Linear) for x in small_method().projector) == 3


@pytest.mark.parametrize("scale_by_dim", [False, True])
def test_training_step_contract_gradients_and_loss(scale_by_dim):
    m = small_method(scale_by_dim=scale_by_dim).train()
    out = m.training_step(make_batch())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["z"].shape == (B, 32) and not out["z"].requires_grad
    expected = float(out["on_diag"] + 5e-3 * out["off_diag"]) / (32 if scale_by_dim else 1)
    assert float(out["loss"].detach()) == pytest.approx(expected, rel=1e-5)
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and float(sum(g.abs().sum() for g in grads)) > 0
    f = m.eval()(make_batch().images[:, 0])
    assert f["feats"].shape == (B, m.backbone.dim) and f["z"].shape == (B, 32)


def test_step_loss_equals_pure_loss_on_the_same_views():
    from workbench.views.global_aug import global_augment

    m = small_method().train()
    batch = make_batch(3)
    out = m.training_step(batch)
    g = torch.Generator().manual_seed(4)
    x = batch.images[:, 0]
    v1 = global_augment(x, m.cfg.view1, g).images
    v2 = global_augment(x, m.cfg.view2, g).images
    with torch.no_grad():
        ref = barlow_twins_loss(m(v1)["z"], m(v2)["z"], 5e-3)
    assert float(out["loss"].detach()) == pytest.approx(float(ref), rel=1e-4)


def test_steps_on_a_fixed_batch_reduce_the_loss():
    m = small_method().train()
    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-3)
    losses = []
    for _ in range(6):
        out = m.training_step(make_batch(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.after_optimizer_step(0.0)
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0]
