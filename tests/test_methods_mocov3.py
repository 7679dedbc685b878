"""MoCo v3: training step, output contract, momentum encoder, loss decrease on a fixed batch."""

import pytest
import torch
from _helpers import random_image_batch

from workbench.config import from_dict
from workbench.losses import moco_infonce
from workbench.methods import METHODS, Batch, get_method
from workbench.methods.base import cosine_momentum
from workbench.methods.mocov3 import MoCoV3, MoCoV3Config
from workbench.models import Backbone

S, B = 32, 8




def make_batch(seed: int = 0) -> Batch:
    return random_image_batch(B, S, seed)


def small_method(**over) -> MoCoV3:
    torch.manual_seed(0)
    cfg = from_dict(MoCoV3Config, {"proj_hidden_dim": 64, "proj_dim": 32, "pred_hidden_dim": 64, **over})
    return MoCoV3(cfg, Backbone("test_resnet", image_size=S), S)


def test_registered_with_presets():
    assert METHODS["mocov3"] is MoCoV3 and get_method("MoCo-v3".replace("-", "")) is MoCoV3
    assert MoCoV3.requires == () and MoCoV3.paper and MoCoV3.summary
    for preset in ("paper", "cpu"):
        from_dict(MoCoV3Config, MoCoV3.presets[preset])


def test_heads_follow_moco_v3():
    m = small_method()
    last = list(m.projector)[-1]
    assert isinstance(last, torch.nn.BatchNorm1d) and not last.affine
    assert sum(isinstance(x, torch.nn.Linear) for x in m.projector) == 3
    assert sum(isinstance(x, torch.nn.Linear) for x in m.predictor) == 2
    assert sum(isinstance(x, torch.nn.Linear) for x in small_method(proj_layers=2).projector) == 2


def test_training_step_contract_and_gradients():
    m = small_method().train()
    batch = make_batch()
    out = m.training_step(batch)
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["z"].shape == (B, 32) and not out["z"].requires_grad
    assert float(out["loss"].detach()) == pytest.approx(float(out["loss_q1k2"] + out["loss_q2k1"]), rel=1e-6)
    out["loss"].backward()
    grads = [p.grad for p in m.backbone.parameters() if p.grad is not None]
    assert grads and float(sum(g.abs().sum() for g in grads)) > 0
    assert all(p.grad is None and not p.requires_grad for p in m.target_backbone.parameters())
    assert all(p.grad is None for p in m.target_projector.parameters())
    ids = {id(p) for p in m.trainable_parameters()}
    assert not ids & {id(p) for p in m.target_backbone.parameters()}
    f = m.eval()(batch.images[:, 0])
    assert f["feats"].shape == (B, m.backbone.dim) and f["z"].shape == (B, 32)


def test_loss_is_infonce_of_queries_against_the_other_views_keys():
    from workbench.views.global_aug import global_augment

    m = small_method().train()
    with torch.no_grad():
        for p in m.backbone.parameters():  # make the momentum encoder differ from the online one
            p.add_(0.05 * torch.randn_like(p))
    batch = make_batch(3)
    out = m.training_step(batch)
    g = torch.Generator().manual_seed(4)  # the batch's generator seed: same views
    x = batch.images[:, 0]
    v1, v2 = global_augment(x, m.cfg.view1, g).images, global_augment(x, m.cfg.view2, g).images
    with torch.no_grad():
        q1, q2 = m.predictor(m(v1)["z"]), m.predictor(m(v2)["z"])
        k1, k2 = m.keys(v1), m.keys(v2)
    expected = moco_infonce(q1, k2, 0.2) + moco_infonce(q2, k1, 0.2)
    same_view = moco_infonce(q1, k1, 0.2) + moco_infonce(q2, k2, 0.2)
    assert float(out["loss"].detach()) == pytest.approx(float(expected), rel=1e-4)
    assert abs(float(expected) - float(same_view)) > 1e-3


def test_momentum_update_is_cosine_ema_of_every_tensor():
    m = small_method()
    with torch.no_grad():
        for p in m.backbone.parameters():
            p.add_(0.1 * torch.randn_like(p))
        for p in m.projector.parameters():
            p.add_(0.1 * torch.randn_like(p))
    before_t = [p.detach().clone() for p in list(m.target_backbone.parameters()) + list(m.target_projector.parameters())]
    online = [p.detach().clone() for p in list(m.backbone.parameters()) + list(m.projector.parameters())]
    progress = 0.3
    mom = cosine_momentum(0.99, progress)
    assert 0.99 < mom < 1.0
    m.after_optimizer_step(progress)
    after = list(m.target_backbone.parameters()) + list(m.target_projector.parameters())
    assert len(after) == len(online)
    for t_new, t_old, o in zip(after, before_t, online):
        assert torch.allclose(t_new, mom * t_old + (1 - mom) * o, atol=1e-6)
        assert not t_new.requires_grad


def test_five_steps_on_a_fixed_batch_reduce_the_loss():
    m = small_method().train()
    opt = torch.optim.Adam(m.trainable_parameters(), lr=1e-3)
    losses = []
    for i in range(6):
        out = m.training_step(make_batch(0))
        opt.zero_grad()
        out["loss"].backward()
        opt.step()
        m.after_optimizer_step((i + 1) / 6)
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < losses[0]
