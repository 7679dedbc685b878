"""VICReg (Bardes, Ponce, LeCun, ICLR 2022): invariance, variance and covariance regularisation."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from workbench.config import param, to_dict
from workbench.losses.vicreg import vicreg_terms
from workbench.methods.base import Batch, MethodConfig, SSLMethod, two_views
from workbench.models import mlp
from workbench.views.global_aug import GlobalViewConfig, byol_views


@dataclass
class VICRegConfig(MethodConfig):
    proj_hidden_dim: int = param(2048, "Hidden width of the 3-layer expander (paper 8192).", min=8)
    proj_dim: int = param(2048, "Output size of the expander, where the loss is computed (paper 8192).", min=2)
    sim_coeff: float = param(25.0, "Weight λ of the invariance (MSE) term (paper 25).", min=0.0)
    std_coeff: float = param(25.0, "Weight μ of the variance (std hinge) term (paper 25).", min=0.0)
    cov_coeff: float = param(1.0, "Weight ν of the covariance (off-diagonal) term (paper 1).", min=0.0)
    view1: GlobalViewConfig = field(default_factory=lambda: byol_views()[0],
                                    metadata={"help": "Augmentation of view 1 (VICReg = BYOL's: blur always)."})
    view2: GlobalViewConfig = field(default_factory=lambda: byol_views()[1],
                                    metadata={"help": "Augmentation of view 2 (BYOL's: rare blur, solarize)."})


class VICReg(SSLMethod):
    """VICReg: backbone + 3-layer expander per view (shared weights, separate passes);
    ``L = λ·mse(z1, z2) + μ·[v(z1) + v(z2)]/2 + ν·[c(z1) + c(z2)]`` with the variance hinge ``v`` on
    each dimension's batch standard deviation and the covariance term ``c`` (squared off-diagonal
    covariances / D). No negatives, no EMA, no predictor.

    Following ``facebookresearch/vicreg`` ``main_vicreg.py``: expander Linear-BN-ReLU ×2 then a Linear,
    8192-8192-8192; λ = μ = 25, ν = 1; eps 1e-4 in the std; BYOL's asymmetric augmentations.
    Choices made here: smaller default widths (2048). Multi-process (DDP): the loss gathers both
    projections for the variance and covariance terms (:func:`~workbench.losses.vicreg.vicreg_terms`).
    Practical: the official recipe is LARS, lr 0.2 × batch/256 (base), wd 1e-6; AdamW 1e-3 works for
    small runs.
    """

    name = "vicreg"
    paper = ("Bardes, Ponce, LeCun, VICReg: Variance-Invariance-Covariance Regularization for "
             "Self-Supervised Learning, ICLR 2022")
    summary = "Invariance + variance + covariance regularisation of the two views' projections."
    Config = VICRegConfig
    presets = {"paper": {"view1": to_dict(byol_views(paper=True)[0]), "view2": to_dict(byol_views(paper=True)[1]),
                         "proj_hidden_dim": 8192, "proj_dim": 8192, "sim_coeff": 25.0, "std_coeff": 25.0,
                         "cov_coeff": 1.0},
               "cpu": {"proj_hidden_dim": 512, "proj_dim": 512},
               "tiny": {"proj_hidden_dim": 32, "proj_dim": 16}}
    batch_level_terms = True

    def build_projector(self) -> nn.Module:
        return mlp(self.backbone.dim, self.cfg.proj_hidden_dim, self.cfg.proj_dim, layers=3)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        v1, v2 = two_views(batch.images[:, 0], c.view1, c.view2, batch.generator)
        z1, z2 = self(v1)["z"], self(v2)["z"]
        inv, var, cov = vicreg_terms(z1, z2)
        loss = c.sim_coeff * inv + c.std_coeff * var + c.cov_coeff * cov
        return {"loss": loss, "z": z1.detach(), "invariance": inv.detach(), "variance": var.detach(),
                "covariance": cov.detach()}


__all__ = ["VICReg", "VICRegConfig"]
