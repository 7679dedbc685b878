"""BYOL (Grill et al., NeurIPS 2020): predict an EMA target's projection of the other view."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.config import param, to_dict
from workbench.losses import byol_loss
from workbench.methods.base import Batch, MethodConfig, MomentumMethod, two_views
from workbench.models import mlp
from workbench.views.global_aug import GlobalViewConfig, byol_views


@dataclass
class BYOLConfig(MethodConfig):
    pred_hidden_dim: int = param(512, "Hidden width of the predictor MLP (paper 4096).", min=8)
    momentum: float = param(0.99, "Base EMA momentum m0 of the target network; ramps to 1 with a cosine "
                                  "(paper 0.996 for long runs; 0.99 for short FER runs).", min=0.0, max=1.0)
    cosine_momentum: bool = param(True, "Ramp the momentum m0 → 1 over training (BYOL). Off = constant m0 "
                                        "(SimFLE's code).")
    view1: GlobalViewConfig = field(default_factory=lambda: byol_views()[0],
                                    metadata={"help": "Augmentation of view 1 (BYOL: blur always)."})
    view2: GlobalViewConfig = field(default_factory=lambda: byol_views()[1],
                                    metadata={"help": "Augmentation of view 2 (BYOL: rare blur, solarize)."})


class BYOL(MomentumMethod):
    """BYOL: online network (backbone + projector + predictor) regresses the EMA target's
    projection of the other view with ``2 − 2cos``, symmetrised. No negatives."""

    name = "byol"
    paper = "Grill et al., Bootstrap Your Own Latent, NeurIPS 2020"
    summary = "Online predictor regresses an EMA target of the other view (baseline)."
    Config = BYOLConfig
    presets = {"paper": {"view1": to_dict(byol_views(paper=True)[0]), "view2": to_dict(byol_views(paper=True)[1]), "proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "momentum": 0.996},
               "cpu": {"proj_hidden_dim": 256, "proj_dim": 64, "pred_hidden_dim": 256, "momentum": 0.99},
               "tiny": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32, "momentum": 0.99}}

    def __init__(self, cfg: BYOLConfig, backbone, image_size: int):
        super().__init__(cfg, backbone, image_size)
        self.predictor = mlp(cfg.proj_dim, cfg.pred_hidden_dim, cfg.proj_dim, layers=2)
        self.add_target("backbone")
        self.add_target("projector")

    @torch.no_grad()
    def target_z(self, images01: torch.Tensor) -> torch.Tensor:
        return self.target_projector(self.target_backbone(images01))

    def byol_terms(self, v1: torch.Tensor, v2: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Symmetrised BYOL loss for two view batches; also returns the online z of view 1."""
        z = self(torch.cat([v1, v2]))["z"]
        p1, p2 = self.predictor(z).chunk(2)
        t = self.target_z(torch.cat([v1, v2]))
        t1, t2 = t.chunk(2)
        return byol_loss(p1, t2) + byol_loss(p2, t1), z[: v1.shape[0]]

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.images[:, 0]
        loss, z = self.byol_terms(*two_views(x, self.cfg.view1, self.cfg.view2, batch.generator))
        return {"loss": loss, "z": z.detach()}
