"""Barlow Twins (Zbontar et al., ICML 2021): make the views' cross-correlation matrix the identity."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.config import param, to_dict
from workbench.losses.barlow import barlow_twins_terms
from workbench.methods.base import Batch, MethodConfig, SSLMethod, two_views
from workbench.models import mlp
from workbench.views.global_aug import GlobalViewConfig, byol_views


@dataclass
class BarlowTwinsConfig(MethodConfig):
    proj_hidden_dim: int = param(1024, "Hidden width of the 3-layer projector (paper 8192). Barlow Twins "
                                       "improves with width; 1024-2048 is a good CPU/GPU compromise.", min=8)
    proj_dim: int = param(1024, "Output size of the projector = size of the cross-correlation matrix "
                                "(paper 8192).", min=2)
    lambd: float = param(5e-3, "Weight λ of the off-diagonal (redundancy) term (paper 5e-3, code 0.0051, "
                               "for D = 8192; ~1/D is a common choice for small projectors).", min=0.0)
    scale_by_dim: bool = param(False, "Divide the loss by D (some re-implementations do, so that the loss "
                                      "scale does not grow with the width). Off = paper.")
    view1: GlobalViewConfig = field(default_factory=lambda: byol_views()[0],
                                    metadata={"help": "Augmentation of view 1 (Barlow Twins = BYOL's: blur always)."})
    view2: GlobalViewConfig = field(default_factory=lambda: byol_views()[1],
                                    metadata={"help": "Augmentation of view 2 (BYOL's: rare blur, solarize)."})


class BarlowTwins(SSLMethod):
    """Barlow Twins: backbone + 3-layer projector per view (shared weights, separate passes);
    the projections are standardised over the batch and their (D, D) cross-correlation ``C`` is
    pushed to the identity: ``Σ_i (1 − C_ii)² + λ Σ_{i≠j} C_ij²``. No negatives, no EMA, no predictor.

    Verified against ``facebookresearch/barlowtwins`` ``main.py``: projector Linear-BN-ReLU ×2 then a
    Linear (no output BN), 8192-8192-8192; standardisation = ``BatchNorm1d(affine=False)`` in train
    mode (biased variance, eps 1e-5); ``C = bn(z1)ᵀ bn(z2) / N``; λ = 0.0051 (paper 5e-3);
    augmentations = BYOL's asymmetric pair (blur 1.0 / 0.1, solarize 0 / 0.2). Choices made here:
    λ = 5e-3 (paper); smaller default widths (1024); the projector's last Linear has a bias (it is
    removed by the standardisation anyway); optional 1/D loss scaling (``scale_by_dim``).
    Multi-process (DDP): the loss (:func:`~workbench.losses.barlow.barlow_twins_terms`) gathers ``z1``
    and ``z2`` from all processes with gradient, so the per-dimension standardisation and ``C`` are
    those of the global batch (every process computes the same global loss; DDP's gradient average
    then equals the single-process gradient).
    Practical: needs batch ≥ 64 for a stable correlation estimate; the official recipe is LARS with
    lr 0.2 (weights) / 0.0048 (biases) × batch/256, wd 1.5e-6; AdamW 1e-3 works for small runs.
    """

    name = "barlow_twins"
    paper = ("Zbontar, Jing, Misra, LeCun, Deny, Barlow Twins: Self-Supervised Learning via Redundancy "
             "Reduction, ICML 2021")
    summary = "Cross-correlation of the two views' projections pushed to the identity (no negatives)."
    Config = BarlowTwinsConfig
    requires = ()
    presets = {"paper": {"view1": to_dict(byol_views(paper=True)[0]), "view2": to_dict(byol_views(paper=True)[1]), "proj_hidden_dim": 8192, "proj_dim": 8192, "lambd": 5e-3, "scale_by_dim": False},
               "cpu": {"proj_hidden_dim": 512, "proj_dim": 512, "lambd": 5e-3, "scale_by_dim": False},
               "tiny": {"proj_hidden_dim": 32, "proj_dim": 16, "lambd": 5e-3, "scale_by_dim": False}}
    batch_level_terms = True

    def build_projector(self) -> nn.Module:
        return mlp(self.backbone.dim, self.cfg.proj_hidden_dim, self.cfg.proj_dim, layers=3)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        v1, v2 = two_views(batch.images[:, 0], self.cfg.view1, self.cfg.view2, batch.generator)
        z1, z2 = self(v1)["z"], self(v2)["z"]
        on, off = barlow_twins_terms(z1, z2)  # = barlow_twins_loss, with both terms kept for logging
        loss = on + self.cfg.lambd * off
        if self.cfg.scale_by_dim:
            loss = loss / z1.shape[1]
        return {"loss": loss, "z": z1.detach(), "on_diag": on.detach(), "off_diag": off.detach()}
