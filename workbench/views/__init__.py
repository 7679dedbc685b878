"""Batched view augmentations (CPU or CUDA) and index samplers for the SSL methods.

Every view takes float (B, 3, H, W) images in [0, 1], optional (B, 68, 2) landmarks in pixel
coordinates, a config dataclass and an explicit ``torch.Generator`` on the images' device; random
parameters are drawn per sample. Samplers are numpy, seeded per (seed, epoch).
"""

from workbench.views.faceswap import (
    DonorPool,
    FaceSwapConfig,
    SwapResult,
    donor_landmarks,
    face_swap,
    face_swap_details,
    gather_donor_pool,
    invert_similarity,
    pick_donors,
    procrustes,
    swap_with_donors,
    swapped_landmarks,
)
from workbench.views.global_aug import (
    FLIP_PERMUTATION,
    AugResult,
    GlobalViewConfig,
    byol_views,
    global_augment,
    simclr_views,
    simfle_views,
    sslfer_views,
)
from workbench.views.masking import PartMaskConfig, part_boxes, part_mask
from workbench.views.preview import FAMILIES, preview_grid, save_preview
from workbench.views.samplers import ClipSampler, IndexSampler, MultiViewSampler, RandomSampler
from workbench.views.template import render_faces
from workbench.views.warp import LocalWarpConfig, local_warp

__all__ = [
    "FAMILIES",
    "FLIP_PERMUTATION",
    "AugResult",
    "ClipSampler",
    "DonorPool",
    "FaceSwapConfig",
    "GlobalViewConfig",
    "IndexSampler",
    "LocalWarpConfig",
    "MultiViewSampler",
    "PartMaskConfig",
    "RandomSampler",
    "SwapResult",
    "byol_views",
    "donor_landmarks",
    "face_swap",
    "face_swap_details",
    "gather_donor_pool",
    "global_augment",
    "invert_similarity",
    "local_warp",
    "part_boxes",
    "part_mask",
    "pick_donors",
    "preview_grid",
    "procrustes",
    "render_faces",
    "save_preview",
    "simclr_views",
    "simfle_views",
    "sslfer_views",
    "swap_with_donors",
    "swapped_landmarks",
]
