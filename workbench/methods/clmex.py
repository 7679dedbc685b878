"""CL-MEx (Roy & Etemad, ICMI 2021): contrastive pretraining over simultaneous camera views."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from workbench.config import param
from workbench.errors import ConfigError, MissingMetadataError
from workbench.losses import multi_positive_nt_xent
from workbench.methods.base import Batch, MethodConfig, SSLMethod, flatten_items
from workbench.views.global_aug import GlobalViewConfig, global_augment


def clmex_view() -> GlobalViewConfig:
    """Light per-view augmentation (UNVERIFIED; the views themselves are the main "augmentation"):
    crop 0.7-1, flip, mild colour jitter p 0.8, grayscale 0.1, rare blur, no solarisation."""
    return GlobalViewConfig(crop_scale=(0.7, 1.0), hflip_p=0.5, jitter_p=0.8, brightness=0.3, contrast=0.3,
                            saturation=0.2, hue=0.05, grayscale_p=0.1, blur_p=0.2, solarize_p=0.0)


@dataclass
class CLMExConfig(MethodConfig):
    temperature: float = param(0.1, "Temperature of the multi-positive NT-Xent (UNVERIFIED; 0.07-0.5).",
                               min=1e-3, max=10.0)
    views_per_group: int = param(0, "Views per batch row (0 = the largest group size, e.g. all 5 KDEF/DDCF "
                                    "angles). Larger groups contribute a random subset per epoch.", min=0)
    short_groups: str = param("repeat", "Groups with fewer views: 'repeat' their own views (augmented "
                                        "differently) or 'drop' them.", choices=("repeat", "drop"))
    augment: bool = param(True, "Apply a light global augmentation to every view (UNVERIFIED whether the "
                                "paper did). Off = the raw views only.")
    view_aug: GlobalViewConfig = field(default_factory=clmex_view, metadata={
        "help": "Per-view augmentation (UNVERIFIED; light: crop 0.7-1, flip, mild jitter)."})


class CLMEx(SSLMethod):
    """CL-MEx stage 1: every batch row holds all views of ONE capture instance (``group``: subject x
    expression shot [x session x lighting]); the multi-positive NT-Xent (SupCon form with group ids)
    pulls the views of a group together and pushes every other image of the batch away.

    Under DDP the loss (:func:`~workbench.losses.multi_positive_nt_xent`) gathers the embeddings and
    group codes of all processes and every process computes the same global-batch loss (negatives
    span the global batch). The loss reads only the
    ``group`` codes: expression labels are never used in pretraining (they
    are used in stage 2, :func:`workbench.evaluate.finetune.finetune`: supervised fine-tuning of the
    whole encoder + a linear head, evaluated overall and per view angle, with a from-scratch comparison).

    Verified [abstract, ViewFX abstract]: two stages (self-supervised contrastive pretraining that
    makes views of the same subject/expression agree, then supervised fine-tuning); a
    self-supervised loss only; KDEF and DDCF (5 angles each). UNVERIFIED (no paper body or code):
    the loss form (SupCon-style multi-positive NT-Xent proposed in brief §5.3), τ 0.1, projector sizes
    (library default 2-layer MLP 512 → 128), per-view augmentation (``augment``, default on and light),
    backbone, optimiser, epochs, fine-tuning recipe and split protocol. Grouping by capture instance
    rather than by expression label keeps the pretraining label-free.
    """

    name = "clmex"
    paper = ("Roy & Etemad, Self-supervised Contrastive Learning of Multi-view Facial Expressions, ICMI 2021 "
             "(arXiv 2108.06723)")
    summary = "Multi-positive contrastive loss over simultaneous camera views + supervised fine-tuning (seed)."
    Config = CLMExConfig
    requires = ("group",)
    synth_mode = "views"
    presets = {
        "paper": {"proj_hidden_dim": 2048, "proj_dim": 128, "temperature": 0.1, "views_per_group": 0,
                  "augment": True},
        "cpu": {"proj_hidden_dim": 256, "proj_dim": 64, "temperature": 0.2, "views_per_group": 0, "augment": True},
        "tiny": {"proj_hidden_dim": 32, "proj_dim": 16, "temperature": 0.2, "views_per_group": 0, "augment": True},
    }
    batch_level_terms = True
    #: nothing about the training recipe is verified; a ResNet-18 at 112 px is the library's suggestion
    paper_run: ClassVar[dict[str, Any]] = {}

    def make_sampler(self, data, batch_size: int, seed: int):
        """``MultiViewSampler``: ``batch_size`` groups per batch, one group per row."""
        from workbench.views.samplers import MultiViewSampler

        if "group" not in data.manifest.frame.columns:
            raise MissingMetadataError("method 'clmex' needs column 'group' (one id per capture instance)")
        groups = data.manifest.frame["group"].to_numpy(dtype=object)
        return MultiViewSampler(groups, batch_size, seed, self.cfg.views_per_group or None,
                                short_groups=self.cfg.short_groups)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        group = batch.codes.get("group")
        if group is None:
            raise MissingMetadataError("method 'clmex' needs the 'group' codes in the batch")
        b, k = batch.images.shape[:2]
        if k < 2:
            raise ConfigError("method 'clmex' needs at least 2 views per batch row (use its MultiViewSampler)")
        x = flatten_items(batch.images)
        if self.cfg.augment:
            x = global_augment(x, self.cfg.view_aug, batch.generator).images
        z = self(x)["z"]
        loss = multi_positive_nt_xent(z, group.reshape(-1), self.cfg.temperature)
        return {"loss": loss, "z": z.detach()[::k]}


__all__ = ["CLMEx", "CLMExConfig", "clmex_view"]
