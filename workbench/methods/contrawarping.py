"""ContraWarping (Xue, Sun, Yang, arXiv 2303.09034): BYOL on global views + locally warped negatives."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from workbench.config import param
from workbench.errors import MissingMetadataError
from workbench.losses import byol_loss, masked_mean
from workbench.losses.warp_negative import NEGATIVE_LOSSES, warp_negative_loss
from workbench.methods.base import Batch
from workbench.methods.byol import BYOL, BYOLConfig
from workbench.views.global_aug import global_augment
from workbench.views.warp import LocalWarpConfig, local_warp


@dataclass
class ContraWarpingConfig(BYOLConfig):
    warp: LocalWarpConfig = field(default_factory=LocalWarpConfig, metadata={
        "help": "Landmark-driven local warp of mouth/eyes/brows (jaw pinned, identity kept), sized in "
                "inter-ocular distances (default up to 0.2 IOD: an expression-sized move at any image size); "
                "the paper's operator is UNVERIFIED."})
    negatives: int = param(1, "Warped negatives per image and view (UNVERIFIED; the released checkpoint name "
                              "'..._m6_...' might mean 6). Cost: one extra target pass per negative.", min=1)
    negative_weight: float = param(1.0, "Weight of the negative term added to the BYOL loss (UNVERIFIED). "
                                        "0 = plain BYOL (no warps are drawn).", min=0.0)
    negative_loss: str = param("margin", "Negative term (UNVERIFIED): 'margin' = triplet on cosines "
                                         "max(0, cos(q, n) - cos(q, t) + margin); 'infonce' = InfoNCE with the "
                                         "warped views as the only negatives.", choices=NEGATIVE_LOSSES)
    margin: float = param(0.5, "Triplet margin on cosines for negative_loss='margin' (UNVERIFIED; 0.2-1).",
                          min=0.0, max=2.0)
    temperature: float = param(0.2, "InfoNCE temperature for negative_loss='infonce' (UNVERIFIED; 0.1-0.5).",
                               min=1e-3, max=10.0)
    negative_blur: bool = param(False, "Pass the warped negatives through the anchor view's Gaussian blur too "
                                       "(True = former behaviour). Off by default: the blur (BYOL view 1 blurs "
                                       "always; the paper presets up to sigma 2 px) smooths away the few-pixel "
                                       "warp that is the only difference the negative exists for.")
    negative_encoder: str = param("target", "Network that embeds the warped negatives (UNVERIFIED): 'target' = "
                                            "EMA target projection, no gradient (brief's proposal); 'online' = "
                                            "online projection, gradients push both apart.",
                                  choices=("target", "online"))


@dataclass
class ContraWarpingViews:
    """``v1``, ``v2`` (B, 3, S, S) global views; ``neg1``, ``neg2`` (n, B, 3, S, S) the warped copies
    under the SAME global transform as ``v1`` / ``v2`` (without its blur unless ``negative_blur``); ``warped`` (n, B, 3, S, S) before that transform;
    ``valid`` (B,) rows with landmarks (only they get the negative term)."""

    v1: torch.Tensor
    v2: torch.Tensor
    neg1: torch.Tensor
    neg2: torch.Tensor
    warped: torch.Tensor
    valid: torch.Tensor


class ContraWarping(BYOL):
    """ContraWarping: global transforms make positives, local warps make negatives.

    Per image ``x`` with landmarks: two BYOL global views ``v1 = T1(x)``, ``v2 = T2(x)``; ``negatives``
    locally warped copies ``w_j = warp_j(x)`` (``local_warp``: random displacements of mouth, eye and
    brow landmarks with jaw and nose pinned, so identity geometry is kept and only expression-bearing
    local geometry changes), each passed through the SAME global transforms (``T1(w_j)``, ``T2(w_j)``:
    the generator state is replayed) except the Gaussian blur (``negative_blur`` False: the blur would
    smooth the warp away), so a negative differs from its anchor view only locally (and in sharpness).
    The warp is sized in inter-ocular distances (``warp.unit``), up to 0.2 IOD by default.

    ``L = BYOL(p1, t2) + BYOL(p2, t1) + λ_neg [N(p1; t2, T1(w)) + N(p2; t1, T2(w))]`` with the BYOL
    terms ``2 − 2cos`` (online predictor vs. EMA target of the other view) and ``N`` the negative term
    (:func:`workbench.losses.warp_negative.warp_negative_loss`, ``margin`` or ``infonce``) that pushes
    the prediction of a view away from the projections of its own warped copies.

    Verified (research brief §3): the idea (global transforms → positives, local warping → negatives,
    on top of BYOL) [abstract]; ResNet-18, BYOL, landmark-based warping, 50 epochs [released checkpoint
    name ``ContraWarping_R18_BYOL_m6_ldmk_ep50``]. Headline: RAF-DB linear probe 79.14 % (v1 abstract).

    UNVERIFIED (no paper body or code was readable), all configurable: the warping operator and its
    magnitudes (``warp``), number of negatives (``negatives`` 1; "m6" may mean 6), the form of the
    negative term (``negative_loss`` margin, ``margin`` 0.5, ``temperature`` 0.2), its weight
    (``negative_weight`` 1), which network embeds negatives (``negative_encoder`` target), head sizes and
    EMA momentum (BYOL's: 4096/256, 0.996 in the ``paper`` preset), pretraining data, optimiser, batch.
    Rows without landmarks (NaN) get only the BYOL terms: the negative term is the mean over rows with
    landmarks, computed as a masked mean (no device read, no data-dependent shapes; 0 when no row has
    landmarks).
    ``negative_weight=0`` is exactly BYOL (same views, same random stream): the paper's BYOL baseline.
    """

    name = "contrawarping"
    paper = ("Xue, Sun, Yang, Unsupervised Facial Expression Representation Learning with Contrastive Local "
             "Warping, arXiv 2303.09034 (2023)")
    summary = "BYOL + locally warped same-face negatives (seed method; loss form UNVERIFIED)."
    Config = ContraWarpingConfig
    requires = ("landmarks",)
    synth_mode = "plain"
    presets = {
        "paper": {"proj_hidden_dim": 4096, "proj_dim": 256, "pred_hidden_dim": 4096, "momentum": 0.996,
                  "negatives": 1, "negative_weight": 1.0, "negative_loss": "margin", "margin": 0.5},
        "cpu": {"proj_hidden_dim": 256, "proj_dim": 64, "pred_hidden_dim": 256, "momentum": 0.99,
                "negatives": 1, "negative_weight": 1.0, "negative_loss": "margin", "margin": 0.5},
        "tiny": {"proj_hidden_dim": 32, "proj_dim": 16, "pred_hidden_dim": 32, "momentum": 0.99,
                 "negatives": 2, "negative_weight": 1.0, "negative_loss": "margin", "margin": 0.5},
    }
    #: the run sections implied by the checkpoint name (ResNet-18, 50 epochs); the rest is UNVERIFIED
    paper_run: ClassVar[dict[str, Any]] = {"backbone": "resnet18", "epochs": 50}

    def make_views(self, batch: Batch) -> ContraWarpingViews:
        """Global views and their warped negatives; the generator state is replayed so ``T1(w_j)``
        uses exactly the parameters of ``v1`` (likewise ``T2``)."""
        c = self.cfg
        x = batch.images[:, 0]
        gen = batch.generator
        s1 = gen.get_state()
        v1 = global_augment(x, c.view1, gen).images
        s2 = gen.get_state()
        v2 = global_augment(x, c.view2, gen).images
        if batch.landmarks is None:
            raise MissingMetadataError("method 'contrawarping' needs landmarks (column 'landmarks') in the batch")
        lm = batch.landmarks[:, 0]
        valid = torch.isfinite(lm).flatten(1).all(dim=1)
        lm = torch.where(valid.view(-1, 1, 1), lm, torch.zeros_like(lm))
        warped = torch.stack([local_warp(x, lm, c.warp, gen)[0] for _ in range(c.negatives)])
        end = gen.get_state()
        negs = []
        for state, view in ((s1, c.view1), (s2, c.view2)):
            if not c.negative_blur:  # same draws (every stage always draws), no blur applied
                view = dataclasses.replace(view, blur_p=0.0)
            out = []
            for w in warped:
                gen.set_state(state)
                out.append(global_augment(w, view, gen).images)
            negs.append(torch.stack(out))
        gen.set_state(end)
        return ContraWarpingViews(v1=v1, v2=v2, neg1=negs[0], neg2=negs[1], warped=warped, valid=valid)

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        c = self.cfg
        if c.negative_weight == 0:
            return super().training_step(batch)
        v = self.make_views(batch)
        b = v.v1.shape[0]
        z = self(torch.cat([v.v1, v.v2]))["z"]
        p1, p2 = self.predictor(z).chunk(2)
        t1, t2 = self.target_z(torch.cat([v.v1, v.v2])).chunk(2)
        loss_byol = byol_loss(p1, t2) + byol_loss(p2, t1)
        negs = torch.cat([v.neg1.flatten(0, 1), v.neg2.flatten(0, 1)])
        zn = self(negs)["z"] if c.negative_encoder == "online" else self.target_z(negs)
        n1, n2 = zn.view(2, c.negatives, b, -1).transpose(1, 2)  # each (B, n, P)
        kw = {"margin": c.margin, "temperature": c.temperature, "reduction": "none"}
        per_item = (warp_negative_loss(p1, t2, n1, c.negative_loss, **kw)
                    + warp_negative_loss(p2, t1, n2, c.negative_loss, **kw))
        loss_neg = masked_mean(per_item, v.valid)  # over rows with landmarks, no device read
        loss = loss_byol + c.negative_weight * loss_neg
        return {"loss": loss, "z": z.detach()[:b], "loss_byol": loss_byol.detach(), "loss_negative": loss_neg.detach()}


__all__ = ["ContraWarping", "ContraWarpingConfig", "ContraWarpingViews"]
