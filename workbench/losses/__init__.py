"""Pure loss functions (each tested against a hand-written reference)."""

from workbench.losses._reduce import masked_mean
from workbench.losses.barlow import barlow_twins_loss, barlow_twins_terms, cross_correlation
from workbench.losses.contrastive import byol_loss, multi_positive_nt_xent, nt_xent, pair_positive_index
from workbench.losses.distill import kd_kl, kd_to_mean
from workbench.losses.mae import mae_loss, patchify
from workbench.losses.maskfn import (
    MaskFNLoss,
    landmark_descriptor,
    maskfn_batch_loss,
    maskfn_loss,
    maskfn_terms,
    select_false_negatives,
)
from workbench.losses.masking import (
    Masking,
    group_patch_scores,
    grouping_loss,
    grouping_target,
    random_masking,
    semantic_masking,
)
from workbench.losses.moco import moco_infonce
from workbench.losses.warp_negative import warp_negative_loss

__all__ = ["Masking", "barlow_twins_loss", "barlow_twins_terms", "byol_loss", "cross_correlation",
           "group_patch_scores", "grouping_loss", "grouping_target", "kd_kl", "kd_to_mean", "mae_loss",
           "moco_infonce", "multi_positive_nt_xent", "nt_xent", "pair_positive_index", "patchify",
           "random_masking", "semantic_masking"]
__all__ += ["MaskFNLoss", "landmark_descriptor", "maskfn_batch_loss", "maskfn_loss", "maskfn_terms", "masked_mean",
            "select_false_negatives", "warp_negative_loss"]
