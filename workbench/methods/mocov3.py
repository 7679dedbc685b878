"""MoCo v3 (Chen, Xie, He, ICCV 2021): predict the momentum encoder's keys of the other view (InfoNCE)."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.config import param, to_dict
from workbench.losses.moco import moco_infonce
from workbench.methods.base import Batch, MethodConfig, MomentumMethod, two_views
from workbench.models import mlp
from workbench.views.global_aug import GlobalViewConfig, byol_views


@dataclass
class MoCoV3Config(MethodConfig):
    temperature: float = param(0.2, "InfoNCE temperature τ (paper / ViT recipes 0.2; the official ResNet-50 "
                                    "recipe uses 1.0). The loss is multiplied by 2τ.", min=1e-3, max=10.0)
    proj_layers: int = param(3, "Projector depth (paper 3; the official code uses 2 for ResNets, 3 for ViTs). "
                                "All layers have BN, the last one without affine.", choices=(2, 3))
    pred_hidden_dim: int = param(512, "Hidden width of the 2-layer predictor (paper 4096).", min=8)
    pred_last_bn: bool = param(False, "BN (no affine) after the predictor's last layer (official code: off for "
                                      "ResNets, on for ViTs).")
    momentum: float = param(0.99, "Base momentum m0 of the momentum encoder (paper 0.99; 0.996 for 1000-epoch "
                                  "runs).", min=0.0, max=1.0)
    cosine_momentum: bool = param(True, "Ramp the momentum m0 → 1 with a half cosine over training "
                                        "(official --moco-m-cos, used by every published recipe).")
    view1: GlobalViewConfig = field(default_factory=lambda: byol_views()[0],
                                    metadata={"help": "Augmentation of view 1 (MoCo v3 = BYOL's: blur always)."})
    view2: GlobalViewConfig = field(default_factory=lambda: byol_views()[1],
                                    metadata={"help": "Augmentation of view 2 (BYOL's: rare blur, solarize)."})


class MoCoV3(MomentumMethod):
    """MoCo v3: online network (backbone + projector + predictor) gives queries q; an EMA copy
    (backbone + projector) gives keys k. ``L = ctr(q1, k2) + ctr(q2, k1)`` with in-batch keys only
    (no queue), ``ctr = 2τ · CE(q̂ k̂ᵀ / τ, diag)``.

    Verified against ``facebookresearch/moco-v3`` (``moco/builder.py``, ``main_moco.py``, CONFIG.md):
    MLPs with BN in every layer and a non-affine BN on the projector output; 2-layer predictor;
    hidden 4096 / out 256; m0 = 0.99 with the cosine ramp to 1; loss scaled by 2τ; τ = 1.0 (ResNet
    recipes) / 0.2 (ViT recipes); the two views get BYOL's asymmetric augmentation and are encoded in
    separate passes (BN statistics per view). Choices made here: τ defaults to 0.2 (the paper's
    value, better for the small batches of FER); projector depth 3 as in the paper (the code uses 2
    for ResNets: ``proj_layers=2``); the predictor has no output BN (ResNet code; ``pred_last_bn``
    for the ViT variant); MLP hidden layers have no bias (as the code), the predictor's last Linear
    has one. The ViT "stop-grad patch embedding" trick is not implemented.
    Multi-process (DDP): the loss (:func:`~workbench.losses.moco.moco_infonce`) gathers the keys of all
    processes (no gradient, as the official ``concat_all_gather``) and each local query's positive is
    its own key at offset ``rank·n``; the per-process loss is the mean over local queries, so DDP's
    gradient average is the gradient of the single-process loss on the global batch.
    Practical: AdamW lr 1e-3 with batch 64-256 works for small backbones; the official ResNet recipe
    is LARS lr 0.6 (×batch/256), wd 1e-6; ViT: AdamW 1.5e-4 (×batch/256), wd 0.1.
    """

    name = "mocov3"
    paper = "Chen, Xie, He, An Empirical Study of Training Self-Supervised Vision Transformers, ICCV 2021"
    summary = "Symmetric InfoNCE of predictor queries against momentum-encoder keys of the other view."
    Config = MoCoV3Config
    requires = ()
    presets = {"paper": {"view1": to_dict(byol_views(paper=True)[0]), "view2": to_dict(byol_views(paper=True)[1]), "proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "proj_layers": 3,
                         "temperature": 0.2, "momentum": 0.99, "cosine_momentum": True},
               "cpu": {"proj_hidden_dim": 256, "proj_dim": 64, "pred_hidden_dim": 256, "proj_layers": 3,
                       "temperature": 0.2, "momentum": 0.99, "cosine_momentum": True},
               "tiny": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32, "proj_layers": 3,
                        "temperature": 0.5, "momentum": 0.99, "cosine_momentum": True}}
    batch_level_terms = True

    def __init__(self, cfg: MoCoV3Config, backbone, image_size: int):
        super().__init__(cfg, backbone, image_size)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, layers=2, last_bn=cfg.pred_last_bn)
        self.add_target("backbone")
        self.add_target("projector")

    def build_projector(self) -> nn.Module:
        c = self.cfg
        return mlp(self.backbone.dim, c.proj_hidden_dim, c.proj_dim, layers=c.proj_layers, last_bn=True)

    @torch.no_grad()
    def keys(self, images01: torch.Tensor) -> torch.Tensor:
        """Momentum-encoder keys (B, proj_dim) of one view (no gradients)."""
        return self.target_projector(self.target_backbone(images01))

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        v1, v2 = two_views(batch.images[:, 0], self.cfg.view1, self.cfg.view2, batch.generator)
        z1, z2 = self(v1)["z"], self(v2)["z"]
        q1, q2 = self.predictor(z1), self.predictor(z2)
        k1, k2 = self.keys(v1), self.keys(v2)
        t = self.cfg.temperature
        l12, l21 = moco_infonce(q1, k2, t), moco_infonce(q2, k1, t)
        return {"loss": l12 + l21, "z": z1.detach(), "loss_q1k2": l12.detach(), "loss_q2k1": l21.detach()}
