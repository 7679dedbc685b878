"""MAE: ViT-only backbone, masked encoder path vs timm's forward, contract, loss decrease."""

import pytest
import torch
from _helpers import random_image_batch

from workbench.config import from_dict
from workbench.errors import ConfigError
from workbench.methods import METHODS, Batch, get_method
from workbench.methods.mae import MAE, MAEConfig
from workbench.models import Backbone
from workbench.models.vit_mae import encode_visible, sincos_pos_embed_2d

S, B = 32, 4
VIT = "test_vit"




def make_batch(seed: int = 0) -> Batch:
    return random_image_batch(B, S, seed)


def small_method(**over) -> MAE:
    """A 64-wide timm test ViT with 8-px patches (4x4 grid at 32 px) and a 1-block decoder."""
    torch.manual_seed(0)
    cfg = from_dict(MAEConfig, {"decoder_dim": 32, "decoder_depth": 1, "decoder_heads": 2, **over})
    return MAE(cfg, Backbone(VIT, image_size=S, patch_size=8), S)


def test_registered_with_presets():
    assert METHODS["mae"] is MAE and get_method("MAE") is MAE
    assert MAE.requires == () and MAE.paper and MAE.summary
    for preset in ("paper", "cpu"):
        from_dict(MAEConfig, MAE.presets[preset])


def test_cnn_backbone_is_a_clear_config_error():
    with pytest.raises(ConfigError, match="needs a ViT backbone"):
        MAE(MAEConfig(), Backbone("resnet10t", image_size=S), S)


def test_patch_size_option_recreates_the_vit_and_must_divide_the_image():
    m = small_method(patch_size=4)
    assert m.patch == 4 and m.num_patches == 64 and m.backbone.model.patch_embed.patch_size == (4, 4)
    with pytest.raises(ConfigError, match="not divisible"):
        small_method(patch_size=5)


def test_encoder_is_the_backbone_with_fixed_sincos_positions_and_masked_path_matches_timm():
    m = small_method().eval()
    vit = m.backbone.model
    assert m.patch == 8 and m.num_patches == 16
    assert not vit.pos_embed.requires_grad
    assert torch.allclose(vit.pos_embed[0], sincos_pos_embed_2d(vit.embed_dim, 4, num_prefix=1))
    assert all(p is not vit.pos_embed for p in m.trainable_parameters())
    x = torch.rand(B, 3, S, S, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = m.backbone.forward_map(x)
        all_ids = torch.arange(16).expand(B, -1)
        assert torch.allclose(encode_visible(vit, m.backbone.normalize(x), all_ids), full, atol=1e-5)
        out = m(x)
    assert out["feats"].shape == (B, vit.embed_dim) and out["z"].shape == (B, vit.embed_dim)
    assert torch.allclose(out["feats"], full[:, 1:].mean(1), atol=1e-6)
    assert torch.allclose(m.embed(x), out["feats"])


def test_training_step_contract_masking_and_gradients():
    m = small_method().train()
    loss, pred, masking, latent = m.reconstruct(make_batch().images[:, 0], torch.Generator().manual_seed(0))
    assert pred.shape == (B, 16, 8 * 8 * 3) and latent.shape == (B, 1 + 4, m.backbone.dim)
    assert masking.ids_keep.shape == (B, 4) and torch.all(masking.mask.sum(1) == 12)
    out = m.training_step(make_batch())
    assert out["loss"].ndim == 0 and torch.isfinite(out["loss"])
    assert out["z"].shape == (B, m.backbone.dim) and not out["z"].requires_grad
    out["loss"].backward()
    vit = m.backbone.model
    assert vit.blocks[0].attn.qkv.weight.grad is not None and float(vit.patch_embed.proj.weight.grad.abs().sum()) > 0
    assert vit.pos_embed.grad is None
    assert float(m.decoder.mask_token.grad.abs().sum()) > 0


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
