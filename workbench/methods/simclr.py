"""SimCLR (Chen et al., ICML 2020): NT-Xent between two augmented views of each image."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from workbench.config import param, to_dict
from workbench.losses import nt_xent, pair_positive_index
from workbench.methods.base import Batch, MethodConfig, SSLMethod, two_views
from workbench.views.global_aug import GlobalViewConfig, simclr_views


@dataclass
class SimCLRConfig(MethodConfig):
    temperature: float = param(0.1, "NT-Xent temperature τ. 0.1-0.2 suits small batches; SSL-FER uses 0.07. "
                                    "Too low with few negatives makes training unstable.", min=1e-3, max=10.0)
    views: GlobalViewConfig = field(default_factory=lambda: simclr_views()[0],
                                    metadata={"help": "Global augmentation of both views (same family)."})


class SimCLR(SSLMethod):
    """SimCLR: two global views per image; each view's positive is the other view, all other
    2N−2 images in the batch are negatives. Projector: 2-layer MLP (with BN, as in SimCLR v2)."""

    name = "simclr"
    paper = "Chen et al., A Simple Framework for Contrastive Learning of Visual Representations, ICML 2020"
    summary = "NT-Xent between two global views (baseline)."
    Config = SimCLRConfig
    presets = {"paper": {"views": to_dict(simclr_views(paper=True)[0]), "temperature": 0.5, "proj_hidden_dim": 2048, "proj_dim": 128},
               "cpu": {"temperature": 0.2, "proj_hidden_dim": 256, "proj_dim": 64},
               "tiny": {"temperature": 0.2, "proj_hidden_dim": 32, "proj_dim": 16}}
    batch_level_terms = True

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.images[:, 0]
        v1, v2 = two_views(x, self.cfg.views, self.cfg.views, batch.generator)
        z = self(torch.cat([v1, v2]))["z"]
        loss = nt_xent(z, pair_positive_index(x.shape[0], z.device), self.cfg.temperature)
        return {"loss": loss, "z": z.detach()[: x.shape[0]]}
