"""SimCLR (Chen et al., ICML 2020): NT-Xent between two augmented views of each image."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from workbench.config import param, to_dict
from workbench.losses import nt_xent, pair_positive_index
from workbench.methods.base import (
    Batch,
    MethodConfig,
    SSLMethod,
    all_gather_with_grad,
    process_rank_and_world,
)
from workbench.views.global_aug import GlobalViewConfig, global_augment, simclr_views


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
               "cpu": {"temperature": 0.2, "proj_hidden_dim": 256, "proj_dim": 64}}

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        x = batch.images[:, 0]
        v1 = global_augment(x, self.cfg.views, batch.generator).images
        v2 = global_augment(x, self.cfg.views, batch.generator).images
        z = self(torch.cat([v1, v2]))["z"]
        if process_rank_and_world()[1] == 1:
            loss = nt_xent(z, pair_positive_index(x.shape[0], z.device), self.cfg.temperature)
        else:  # DDP: local rows against the gathered global batch (all 2N-2 negatives)
            loss = gathered_nt_xent(z, self.cfg.temperature)
        return {"loss": loss, "z": z.detach()[: x.shape[0]]}


def gathered_nt_xent(z: torch.Tensor, temperature: float) -> torch.Tensor:
    """NT-Xent of this process's rows ``[view1 (n); view2 (n)]`` against every process's rows.

    Keys are :func:`all_gather_with_grad` of ``z`` (rank blocks of ``2n``); row ``j`` of rank ``r``
    is key ``r·2n + j``, its positive ``r·2n + (j + n) mod 2n``. With equal shards, the mean over
    processes is the single-process ``nt_xent`` of the global batch (same rows and negatives).
    """
    rank, _ = process_rank_and_world()
    m = z.shape[0]
    keys = F.normalize(all_gather_with_grad(z).float(), dim=1)
    q = F.normalize(z.float(), dim=1)
    sim = q @ keys.t() / temperature
    local = torch.arange(m, device=z.device)
    own = rank * m + local
    # each row's own key (a comparison mask: F.one_hot reads the indices' max on non-CUDA devices)
    sim = sim.masked_fill(own[:, None] == torch.arange(keys.shape[0], device=z.device), float("-inf"))
    return F.cross_entropy(sim, rank * m + (local + m // 2) % m)
