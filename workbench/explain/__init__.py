"""Grad-CAM on facial landmarks: where an SSL encoder attends on the face, scored per region.

- :mod:`.targets`: what to explain without class labels (prototype / identity / other-view cosine,
  probe logit) as small callables on the model's output dict;
- :mod:`.gradcam`: :class:`GradCAM` (captum ``LayerGradCam``, bilinear upsampling, CNNs and ViTs,
  a context manager that never leaks hooks);
- :mod:`.regions`: disjoint facial regions from 68 landmarks, region scores (1 = uniform), the
  pointing game against FACS-expected regions;
- :mod:`.attention`: :func:`compute_attention` → :class:`AttentionResult` (persisted; summary,
  overlays, plots without recomputing).
"""

from workbench.explain.attention import (
    TARGETS,
    AttentionResult,
    compute_attention,
    fixed_view,
    score_heatmaps,
)
from workbench.explain.gradcam import GradCAM, explain_batch
from workbench.explain.regions import (
    FACS_REGIONS,
    REGIONS,
    RegionScores,
    expected_mask,
    expected_regions,
    moving_region_share,
    moving_regions,
    pointing_game,
    region_masks,
    region_scores,
)
from workbench.explain.targets import (
    FunctionTarget,
    IdentityCentroidSimilarity,
    OtherViewSimilarity,
    ProbeLogit,
    PrototypeSimilarity,
    Target,
    class_prototypes,
)

__all__ = [
    "FACS_REGIONS", "REGIONS", "TARGETS", "AttentionResult", "FunctionTarget", "GradCAM",
    "IdentityCentroidSimilarity", "OtherViewSimilarity", "PrototypeSimilarity", "ProbeLogit", "RegionScores",
    "Target", "class_prototypes", "compute_attention", "expected_mask", "expected_regions", "explain_batch",
    "fixed_view", "moving_region_share", "moving_regions", "pointing_game", "region_masks", "region_scores",
    "score_heatmaps",
]
