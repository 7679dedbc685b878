"""SSL-FER (Shu, Gu, Yang, Lo, BMVC 2022): SimCLR on face-track frames with TimeAug, HardNeg,
FaceSwap and MaskFN."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from workbench.config import param, to_dict
from workbench.errors import CheckpointError, ConfigError, MissingMetadataError
from workbench.losses import nt_xent, pair_positive_index
from workbench.losses.maskfn import landmark_descriptor, maskfn_batch_loss
from workbench.methods.base import Batch, MethodConfig, SSLMethod
from workbench.views import _ops
from workbench.views.faceswap import (
    DonorPool,
    FaceSwapConfig,
    donor_landmarks,
    gather_donor_pool,
    swap_with_donors,
)
from workbench.views.global_aug import GlobalViewConfig, global_augment, sslfer_views
from workbench.views.masking import PartMaskConfig, draw_part_mask, part_mask

#: The paper's ablation rows (README / poster table, research brief §2.7) -> strategy switches.
#: Row c (TimeAug + HardNeg + "CutMix") has no code anywhere in the official repository and is not
#: reproducible; "simclr" is the plain baseline (no landmark mask either).
ABLATION_ROWS: dict[str, dict[str, bool]] = {
    "simclr": {"time_aug": False, "hard_negatives": False, "face_swap": False, "mask_fn": False,
               "landmark_mask": False},
    "a": {"time_aug": True, "hard_negatives": False, "face_swap": False, "mask_fn": False},
    "b": {"time_aug": True, "hard_negatives": True, "face_swap": False, "mask_fn": False},
    "d": {"time_aug": True, "hard_negatives": False, "face_swap": True, "mask_fn": True},
    "e": {"time_aug": True, "hard_negatives": True, "face_swap": True, "mask_fn": False},
    "f": {"time_aug": True, "hard_negatives": True, "face_swap": False, "mask_fn": True},
    "g": {"time_aug": True, "hard_negatives": True, "face_swap": True, "mask_fn": True},
}

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def _anchor_view() -> GlobalViewConfig:
    return GlobalViewConfig(jitter_p=1.0)


def _positive_view() -> GlobalViewConfig:
    return GlobalViewConfig()


@dataclass
class SSLFERConfig(MethodConfig):
    proj_hidden_dim: int = param(2048, "Hidden width of the projector (code: 2048 = ResNet-50 features).", min=8)
    proj_dim: int = param(128, "Output of the projector, the loss space (code --out_dim 128).", min=2)
    proj_batch_norm: bool = param(False, "BatchNorm in the projector MLP (code: none, Linear-ReLU-Linear).")
    temperature: float = param(0.07, "NT-Xent temperature τ (code 0.07). With small CPU batches 0.1-0.2 is "
                                     "more stable.", min=1e-3, max=10.0)
    time_aug: bool = param(True, "TimeAug: the positive is a nearby frame of the same clip (needs clip, frame). "
                                 "Off = the positive is the anchor frame itself.")
    hard_negatives: bool = param(True, "HardNeg: add a second anchor/positive pair from the same clip >= "
                                       "min_negative_distance frames away (same identity, other expression; "
                                       "needs clip, frame). Batch = 4 images per item [A, NA, P, NP].")
    face_swap: bool = param(True, "FaceSwap: with probability swap.p the positive's inner face is pasted on "
                                  "the head of another identity of the batch (needs landmarks, identity).")
    mask_fn: bool = param(True, "MaskFN: per row, the negative with the most similar eye/mouth descriptor is "
                                "removed from the negatives and added as an extra positive (needs landmarks).")
    landmark_mask: bool = param(True, "Landmark part mask (code imgRandomLandmarkMask, the first transform of "
                                      "every view; whether the paper describes it is UNVERIFIED; needs landmarks).")
    mask_shared: bool = param(True, "Landmark part mask shared by the pair: the anchor and its positive get the same "
                                    "part masked (one draw of part and p 0.8 coin per pair). Default on because "
                                    "independent draws (False = the official code, an ablation) make most pairs "
                                    "agree only if the encoder ignores the mouth and eyes, the expression cues.")
    offsets: tuple[int, ...] = param((2, 3, 4, 5, 6), "TimeAug positive offsets in stored frames (code: "
                                     "int(arange(fps) + sqrt(fps)) at fps 25/6 = 2..6, i.e. 0.5-1.4 s).")
    offset_weights: tuple[float, ...] = param((5.0, 4.0, 3.0, 2.0, 1.0), "Sampling weights of the offsets "
                                              "(code distr_mode c = decreasing 5:4:3:2:1).")
    min_negative_distance: int = param(12, "HardNeg: minimum distance of the negative anchor from the anchor, "
                                           "in stored frames (code int(3 s x 25/6) = 12).", min=1)
    anchors_per_clip: int = param(1, "Items drawn per clip and epoch (code: 1).", min=1)
    swap: FaceSwapConfig = field(default_factory=FaceSwapConfig, metadata={
        "help": "FaceSwap (Earl's landmark swap, hard mask; p 0.8 for P and independently for NP)."})
    mask: PartMaskConfig = field(default_factory=PartMaskConfig, metadata={
        "help": "Landmark part mask (p 0.8; per-sample part = intended, the code fixed it once per run; "
                "shared by the pair or not: mask_shared)."})
    anchor_view: GlobalViewConfig = field(default_factory=_anchor_view, metadata={
        "help": "View of A and NA: the face-scaled view with colour jitter always on. The code's view (crop "
                "112/128, jitter 0.4/0.4/0.4/0.2 always, blur k3 p .5, gray .2) is the paper preset: at 48 px "
                "it cut the expression probe from 0.87 to 0.57 in a measured ablation (docs/RESULTS.md)."})
    positive_view: GlobalViewConfig = field(default_factory=_positive_view, metadata={
        "help": "View of P and NP (as the anchor view but colour jitter with p 0.8; paper preset: the code's)."})
    maskfn_lambda: float = param(0.8, "MaskFN weight λ of the promoted false negative: L = mean(L1) + λ mean(L2) "
                                      "(code --negative_lambda 0.8).", min=0.0)
    protect_hard_negatives: bool = param(True, "MaskFN never promotes a same-item row (the hard negatives NA/NP "
                                               "of A/P) to a positive (intended). False = official 'agg' code.")
    descriptor: str = param("landmarks", "MaskFN descriptor: 'landmarks' = weight-free eye/mouth landmark geometry "
                                         "(default, offline); 'resnet18' = the paper's frozen ImageNet ResNet-18 on "
                                         "eye and mouth crops (needs descriptor_weights).",
                            choices=("landmarks", "resnet18"))
    descriptor_per_person: bool = param(
        False, "MaskFN: compare descriptors as each person's deviation from their mean descriptor over the (global) "
               "batch (needs identity codes, ignored without; losses.maskfn.person_residual), so that face shape cannot pick the "
               "false negative. Off by default, as measured: on the synthetic set the per-image-normalised "
               "landmark descriptor already promotes a same-expression false negative for 97 % of rows at 32 "
               "images per batch (clips: 74 % at 32 items), the residual from the few images a person has in a "
               "batch only 70 % (69 %), even with a simulated 30 % per-person eye/mouth shape spread; try it on "
               "real faces with many images per person per batch.")
    descriptor_weights: str = param("", "Local ImageNet ResNet-18 weights (.safetensors or tensor-only .pth; "
                                        "torchvision/timm 'resnet18' names) for descriptor='resnet18'.")
    descriptor_crop: int = param(64, "Side of the eye/mouth crops for the ResNet-18 descriptor (code 64).", min=8)
    descriptor_margin: float = param(10 / 112, "Vertical margin of the eye crop as a fraction of the image side "
                                               "(code: 10 px at 112 px).", min=0.0, max=0.5)


def eye_mouth_crops(images: torch.Tensor, landmarks: torch.Tensor, size: int = 64,
                    margin: float = 10 / 112) -> tuple[torch.Tensor, torch.Tensor]:
    """SSL-FER ``maskCLR.get_patch``: (eye crops, mouth crops), each (B, 3, size, size) in [0, 1].

    Eye box = bounding box of landmarks 36-47 grown by ``margin`` x image height in y; mouth box =
    bounding box of 48-67. Each box is padded to a square with black (``SquarePad``) and resized to
    ``size`` (bilinear). Rows with missing landmarks give black crops (the code's no-face fallback).
    """
    b, _, h, w = images.shape
    lm = landmarks.float()
    eye_pts, mouth_pts = lm[:, 36:48], lm[:, 48:68]

    def crop(pts: torch.Tensor, grow: float | None) -> torch.Tensor:
        lo, hi = pts.amin(dim=1), pts.amax(dim=1)
        if grow is not None:  # vertical margin (arithmetic, not a device constant built per step)
            lo = torch.stack([lo[:, 0], lo[:, 1] - grow], dim=1)
            hi = torch.stack([hi[:, 0], hi[:, 1] + grow], dim=1)
        box = torch.cat([lo, hi], dim=-1)
        ok = torch.isfinite(box).all(dim=1)
        box = torch.where(ok[:, None], box, torch.zeros_like(box))
        centre = (box[:, :2] + box[:, 2:]) / 2
        side = (box[:, 2:] - box[:, :2]).amax(dim=1).clamp_min(1.0) + 1.0  # pixel centres -> edge extent
        step = side / size
        affine = torch.zeros((b, 2, 3), device=images.device)
        affine[:, 0, 0] = step
        affine[:, 1, 1] = step
        affine[:, :, 2] = centre + (0.5 - size / 2) * step[:, None]
        out = _ops.warp_affine(images.float(), affine, (size, size), padding="zeros")
        coords = _ops.apply_affine(affine, _ops.pixel_grid(size, size, images.device).view(1, -1, 2).expand(b, -1, 2))
        inside = ((coords >= box[:, None, :2] - 0.5) & (coords <= box[:, None, 2:] + 0.5)).all(-1)
        inside = inside & ok[:, None]
        return out * inside.view(b, 1, size, size).to(out.dtype)

    return crop(eye_pts, margin * h), crop(mouth_pts, None)


@dataclass
class SSLFERViews:
    """What one SSL-FER step feeds to the encoder (see :meth:`SSLFER.make_views`).

    ``images`` (M, 3, S, S) augmented views in loss order ``[A, NA, P, NP]`` (M = 4B) or ``[A, P]``
    (M = 2B); ``raw`` / ``raw_landmarks`` the same rows un-augmented and un-swapped (MaskFN's
    descriptor input); ``positive_index`` (M,); ``item`` (M,) the batch item of each row; ``swapped``
    (M,) bool; ``donor`` (M,) row whose head was used, −1 where not swapped: a row of the GLOBAL batch
    in the order of the losses' gather (rank blocks of M rows, ``rank x M + local row``), i.e. the
    local row in one process.
    """

    images: torch.Tensor
    raw: torch.Tensor
    raw_landmarks: torch.Tensor | None
    positive_index: torch.Tensor
    item: torch.Tensor
    swapped: torch.Tensor
    donor: torch.Tensor
    identity: torch.Tensor | None = None  #: (M,) identity code of each row (−1 = unknown), None without codes


class SSLFER(SSLMethod):
    """SSL-FER: NT-Xent (τ 0.07) over ``4B`` images ``[A, NA, P, NP]`` (positive of row i = row i ± 2B:
    A↔P, NA↔NP), i.e. 2B pairs, plus four switchable face-specific strategies:

    - **TimeAug** (``time_aug``): P is a frame 2-6 stored frames (0.5-1.4 s at 25/6 fps) from A in the
      same clip, offsets weighted 5:4:3:2:1, random sign when both sides fit (``ClipSampler``).
    - **HardNeg** (``hard_negatives``): NA is a frame >= 12 stored frames (~2.9 s) from A in the same
      clip and NP its own TimeAug positive: same-identity, other-expression negatives.
    - **FaceSwap** (``face_swap``): with p 0.8, independently for P and NP, the positive's inner face is
      pasted onto the head of another identity from the batch (donor pool = the positives of the
      global batch, gathered from every process under DDP; anchors are never swapped); rows with
      missing landmarks or identity stay unswapped (the code's fallback on detection failure).
    - **MaskFN** (``mask_fn``): per row, the non-positive with the most similar eye/mouth descriptor of
      the un-augmented, un-swapped frame is removed from the negatives and promoted to a positive with
      weight λ 0.8: ``L = mean(L1) + λ·mean(L2)`` (:func:`workbench.losses.maskfn.maskfn_loss`).
      ``descriptor_per_person`` compares each row's deviation from its person's mean descriptor in the
      batch instead (:func:`workbench.losses.maskfn.person_residual`; off by default, see its help).
      Rows without a descriptor (no landmarks) neither get nor become a false negative.

    Per image: FaceSwap (P, NP) → landmark part mask (p 0.8, every view; by default the same part in
    a pair's two views, ``mask_shared``) → global view
    (``sslfer_views``: anchors with colour jitter always, positives with p 0.8). Projector
    Linear-ReLU-Linear 2048 → 128 without BN.

    Ablation rows (research brief §2.7; ``ABLATION_ROWS``, pass as ``--opt`` switches)::

        row     time_aug  hard_negatives  face_swap  mask_fn   paper AffectNet F1/Acc
        SimCLR  off       off             off        off       57.5 / 57.7  (+ landmark_mask off)
        a       on        off             off        off       57.8 / 57.9
        b       on        on              off        off       58.1 / 58.3
        c       TimeAug+HardNeg+"CutMix": no code exists, not reproducible
        d       on        off             on         on        58.6 / 58.7
        e       on        on              on         off       58.8 / 58.9
        f       on        on              off        on        58.9 / 58.9
        g       on        on              on         on        59.3 / 59.3  (default)

    Verified in the official code (``ClaudiaShu/SSL-FER`` fd5a07e, brief §2): every default of this
    config but ``mask_shared`` and ``descriptor`` (our choices, below): τ, offsets/weights, distance 12,
    swap p 0.8 for P and NP, mask p 0.8 and margin, view transforms, λ 0.8, projector sizes,
    descriptor crops 64 px with ±10 px eye margin; and the batch layout. Paper training recipe
    (``paper_run``): ResNet-50 from scratch, 112 px, 128 items x 4 images, Adam 3e-4, wd 1e-4,
    300 (MaskFN) / 500 (FaceSwap) epochs, effectively constant LR.

    Official-code quirks (§2.10) and what is done here:

    1. Frames in unsorted ``glob`` order → fixed: frames are ordered by the ``frame`` column.
    2. MaskFN stream's default mode takes frame 0 twice as the "hard negative" → fixed: the swapCLR
       rule (>= 12 frames) always.
    3. Landmark-mask part fixed once per run → intended per-sample choice; reproduce with
       ``mask.parts`` = one part.
    4. FaceSwap stream trains on BGR images → fixed (RGB everywhere); not reproducible here.
    5. Scheduler is effectively a constant LR → ``paper_run`` uses ``schedule=constant``.
    6. Landmarks re-detected every step → taken from the manifest (pre-computed).
    7. Evaluation-repo quirks (val set with train transform, LFW script) → not applicable: evaluation
       is the library's own (``workbench evaluate`` / ``workbench finetune``).
    8. MaskFN "agg" loss can promote the same-identity hard negative → ``protect_hard_negatives=True``
       (default, intended: same-item rows are never promoted); ``False`` reproduces the code.

    Our choices (UNVERIFIED / library design): the four strategies in ONE step (row g has no single
    entry point in the repo: here the swapCLR sampler + FaceSwap and the maskCLR descriptor + loss are
    merged); the default MaskFN descriptor is the weight-free landmark geometry of eyes and mouth
    (``descriptor='landmarks'``), because the paper's ImageNet ResNet-18 needs weights the library
    never downloads: give them with ``descriptor='resnet18', descriptor_weights=PATH`` (a missing file
    is an error, never a silent random init); descriptors are computed on the un-swapped frame
    (the MaskFN stream had no swap); the crop ``Resize(128) → RandomCrop(112)`` is a fixed-area crop
    of the cached face at the run's size; whether the paper used the landmark mask is UNVERIFIED;
    the part mask is shared by each pair (A/P, NA/NP: same part, same coin) by default, where the code
    draws it independently per view (``mask_shared=False``, the ``paper`` preset): independent masks (p 0.8)
    differ between the two views of ~75 % of the pairs (a part in one view only, or two different
    parts), and the loss then rewards ignoring the mouth and eyes.
    """

    name = "sslfer"
    paper = ("Shu, Gu, Yang, Lo, Revisiting Self-Supervised Contrastive Learning for Facial Expression "
             "Recognition, BMVC 2022 (arXiv 2210.03853)")
    summary = "SimCLR + TimeAug, HardNeg, FaceSwap and MaskFN on face clips (seed method)."
    Config = SSLFERConfig
    #: columns of the default configuration (all four strategies); the actual check follows the config
    requires = ("clip", "frame", "landmarks", "identity")
    synth_mode = "clips"
    presets = {
        "paper": {"proj_hidden_dim": 2048, "proj_dim": 128, "proj_batch_norm": False, "temperature": 0.07,
                  "time_aug": True, "hard_negatives": True, "face_swap": True, "mask_fn": True,
                  "landmark_mask": True, "mask_shared": False, "maskfn_lambda": 0.8,
                  "anchor_view": to_dict(sslfer_views()[0]), "positive_view": to_dict(sslfer_views()[1]), "min_negative_distance": 12,
                  "descriptor": "resnet18", "protect_hard_negatives": True},
        "cpu": {"proj_hidden_dim": 256, "proj_dim": 64, "proj_batch_norm": False, "temperature": 0.1,
                "time_aug": True, "hard_negatives": True, "face_swap": True, "mask_fn": True,
                "landmark_mask": True, "maskfn_lambda": 0.8, "descriptor": "landmarks"},
        # every strategy on and every positive swapped (the contract test then runs every code path)
        "tiny": {"proj_hidden_dim": 32, "proj_dim": 16, "proj_batch_norm": False, "temperature": 0.1,
                 "time_aug": True, "hard_negatives": True, "face_swap": True, "mask_fn": True,
                 "landmark_mask": True, "maskfn_lambda": 0.8, "descriptor": "landmarks", "swap": {"p": 1.0}},
    }
    batch_level_terms = True
    #: the donors are drawn over the global pool in row order, which differs between 1 and 2 processes;
    #: the global donor pool is tested in tests/test_methods_ddp_views.py
    ddp_check_overrides: ClassVar[dict[str, Any]] = {"face_swap": False}
    #: the paper's training recipe for the other run sections (model/data/train), for reference
    paper_run: ClassVar[dict[str, Any]] = {"backbone": "resnet50", "image_size": 112, "batch_size": 128, "optimizer": "adam",
                                 "lr": 3e-4, "weight_decay": 1e-4, "epochs": 300, "schedule": "constant",
                                 "warmup_epochs": 0}

    def __init__(self, cfg: SSLFERConfig, backbone, image_size: int):
        if cfg.mask_fn and cfg.descriptor == "resnet18" and not cfg.descriptor_weights:
            raise ConfigError("method 'sslfer': descriptor='resnet18' needs descriptor_weights=PATH to local "
                              "ImageNet ResNet-18 weights (nothing is downloaded); or use descriptor='landmarks'")
        super().__init__(cfg, backbone, image_size)
        self._descriptor_net: list[nn.Module] = []  # a plain list: frozen, not part of the checkpoint

    def build_projector(self) -> nn.Module:
        from workbench.models import mlp

        c = self.cfg
        return mlp(self.backbone.dim, c.proj_hidden_dim, c.proj_dim, layers=2, batch_norm=c.proj_batch_norm)

    # -- data ------------------------------------------------------------------------------
    def required_columns(self) -> tuple[str, ...]:
        """Manifest columns the configured strategies need."""
        c = self.cfg
        cols: list[str] = []
        if c.time_aug or c.hard_negatives:
            cols += ["clip", "frame"]
        if c.face_swap:
            cols += ["landmarks", "identity"]
        if (c.mask_fn or c.landmark_mask) and "landmarks" not in cols:
            cols.append("landmarks")
        return tuple(cols)

    def check_data(self, manifest) -> None:
        manifest.require(*self.required_columns(), purpose=f"method '{self.name}' ({self._strategies()})")
        if self.cfg.mask_fn and self.cfg.descriptor == "resnet18":
            p = Path(self.cfg.descriptor_weights)
            if not p.is_file():
                raise CheckpointError(f"method 'sslfer': MaskFN descriptor weights not found: {p}")

    def _strategies(self) -> str:
        c = self.cfg
        on = [n for n, f in (("TimeAug", c.time_aug), ("HardNeg", c.hard_negatives), ("FaceSwap", c.face_swap),
                             ("MaskFN", c.mask_fn)) if f]
        return " + ".join(on) or "SimCLR"

    def make_sampler(self, data, batch_size: int, seed: int):
        """``ClipSampler`` ([A, P, NA, NP] or [A, P]) when TimeAug or HardNeg is on, else random images."""
        from workbench.views.samplers import ClipSampler, RandomSampler

        c = self.cfg
        if not (c.time_aug or c.hard_negatives):
            return RandomSampler(len(data), batch_size, seed)
        frame = data.manifest.frame
        for col in ("clip", "frame"):
            if col not in frame.columns:
                raise MissingMetadataError(f"method 'sslfer' ({self._strategies()}) needs column '{col}'")
        clip = frame["clip"].to_numpy(dtype=object)
        frames = frame["frame"].astype("float64").to_numpy()
        return ClipSampler(clip, frames, batch_size, seed, time_aug=c.time_aug, offsets=c.offsets,
                           offset_weights=c.offset_weights, hard_negatives=c.hard_negatives,
                           min_negative_distance=c.min_negative_distance, anchors_per_clip=c.anchors_per_clip)

    # -- views -----------------------------------------------------------------------------
    def _columns(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Images (B, m, 3, S, S), landmarks and identity codes (B, m) in sampler order [A, P, (NA, NP)]."""
        x, lm = batch.images, batch.landmarks
        ident = batch.codes.get("identity")
        k = x.shape[1]
        want = 4 if self.cfg.hard_negatives else 2
        if k == want:
            return x, lm, ident
        if k != 1:
            raise ConfigError(f"method 'sslfer' expects {want} images per item from its sampler, got {k}")
        # random sampler: the positive is the same frame (columns [0, 0]; no Python-list index)
        twice = lambda t: None if t is None else torch.cat([t, t], dim=1)  # noqa: E731
        return twice(x), twice(lm), twice(ident)

    def swap_positives(self, images: torch.Tensor, landmarks: torch.Tensor, identity: torch.Tensor,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """FaceSwap on the positive columns (1 = P, 3 = NP) of (B, m, ...) items; anchors untouched.

        The donor pool is the positives of the global batch: under ``torch.distributed`` with several
        processes the pool images, landmarks and identities of every process are gathered
        (:func:`~workbench.views.faceswap.gather_donor_pool`, collective; shards have equal shapes), so
        a head may come from another process's shard. One process: the local positives (unchanged).

        Returns (images, landmarks, donor) with ``donor`` (B, m): the global (item, column) flat index
        ``(rank x B + item) x m + column`` of the head image used (``item x m + column`` in one
        process), −1 where not swapped (always −1 for anchors).
        """
        b, m = images.shape[:2]
        n_cols = m // 2  # positive columns 1::2 = [P] or [P, NP]
        pool = images[:, 1::2].transpose(0, 1).reshape(-1, *images.shape[2:])  # [P (B), NP (B)]
        pool_lm = landmarks[:, 1::2].transpose(0, 1).reshape(-1, 68, 2)
        pool_id = identity[:, 1::2].transpose(0, 1).reshape(-1)
        glob = gather_donor_pool(pool, pool_lm, pool_id)
        finite_all = torch.isfinite(glob.landmarks).flatten(1).all(dim=1) & (glob.identity >= 0)
        safe_all = torch.where(finite_all.view(-1, 1, 1), glob.landmarks, torch.zeros_like(glob.landmarks))
        n = pool.shape[0]
        finite, safe_lm = finite_all[glob.offset:glob.offset + n], safe_all[glob.offset:glob.offset + n]
        out, donor = swap_with_donors(pool, safe_lm, pool_id, self.cfg.swap, generator,
                                      DonorPool(glob.images, safe_all, glob.identity, glob.offset))
        ok = (donor >= 0) & finite & finite_all[donor.clamp_min(0)]
        donor = torch.where(ok, donor, torch.full_like(donor, -1))
        out = torch.where(ok.view(-1, 1, 1, 1), out, pool)
        new_lm = torch.where(ok.view(-1, 1, 1), donor_landmarks(safe_lm, donor, safe_all), pool_lm)
        images, landmarks = images.clone(), landmarks.clone()
        images[:, 1::2] = out.view(n_cols, b, *images.shape[2:]).transpose(0, 1)
        landmarks[:, 1::2] = new_lm.view(n_cols, b, 68, 2).transpose(0, 1).to(landmarks.dtype)
        # global pool index (rank blocks of n, each column-major over [P, NP]) -> global flat (item, column)
        d = donor.clamp_min(0)
        rank, j = d // n, d % n
        flat = torch.where(donor >= 0, (rank * b + j % b) * m + 1 + 2 * (j // b), donor)
        donors = torch.full((b, m), -1, dtype=torch.long, device=images.device)
        donors[:, 1::2] = flat.view(n_cols, b).transpose(0, 1)
        return images, landmarks, donors

    def make_views(self, batch: Batch) -> SSLFERViews:
        """Raw items → (FaceSwap) → (landmark mask) → global views, in loss order [A, NA, P, NP]."""
        c = self.cfg
        gen = batch.generator
        x, lm, ident = self._columns(batch)
        b, m = x.shape[:2]
        raw, raw_lm = x, lm
        donors = torch.full((b, m), -1, dtype=torch.long, device=x.device)
        need_lm = c.face_swap or c.landmark_mask or c.mask_fn
        if need_lm and lm is None:
            raise MissingMetadataError(f"method 'sslfer' ({self._strategies()}) needs landmarks in the batch")
        if c.face_swap:
            if ident is None:
                raise MissingMetadataError("method 'sslfer' with FaceSwap needs the 'identity' column")
            x, lm, donors = self.swap_positives(x, lm, ident, gen)
        # loss order: anchors [A, NA] then positives [P, NP] (columns [0, 2, 1, 3] or [0, 1])
        flat = lambda t: torch.cat([t[:, 0::2], t[:, 1::2]], 1).transpose(0, 1).reshape(-1, *t.shape[2:])  # noqa: E731
        xs, raws = flat(x), flat(raw)
        lms = flat(lm) if lm is not None else None
        raw_lms = flat(raw_lm) if raw_lm is not None else None
        half = xs.shape[0] // 2
        if c.landmark_mask:
            draws = None
            if c.mask_shared:  # one draw per pair: rows i and i + half (A/P, NA/NP) mask the same part
                choice, apply = draw_part_mask(half, c.mask, gen, xs.device)
                draws = (choice.repeat(2), apply.repeat(2))
            xs, _ = part_mask(xs, torch.nan_to_num(lms, nan=-1e4), c.mask, gen, draws=draws)
        anchors = global_augment(xs[:half], c.anchor_view, gen).images
        positives = global_augment(xs[half:], c.positive_view, gen).images
        n_pairs = half
        item = torch.arange(b, device=x.device).repeat(m)
        # donor global flat (item, column) index -> global loss row: rank x M + (block of column) x B + item
        d = flat(donors[..., None]).squeeze(-1)
        dd = d.clamp_min(0)
        g_item, col = dd // m, dd % m
        rank, it = g_item // b, g_item % b
        block = (col % 2) * (m // 2) + col // 2  # position of the column in the loss order
        donor_rows = torch.where(d >= 0, rank * (b * m) + block * b + it, d)
        ident_rows = None if ident is None else flat(ident[..., None]).squeeze(-1).to(torch.long)
        return SSLFERViews(images=torch.cat([anchors, positives]), raw=raws, raw_landmarks=raw_lms,
                           positive_index=pair_positive_index(n_pairs, x.device), item=item,
                           swapped=donor_rows >= 0, donor=donor_rows, identity=ident_rows)

    # -- MaskFN ----------------------------------------------------------------------------
    def _resnet18(self, device: torch.device) -> nn.Module:
        if not self._descriptor_net:
            import timm

            from workbench.models import load_backbone_weights

            p = Path(self.cfg.descriptor_weights)
            if not p.is_file():
                raise CheckpointError(f"method 'sslfer': MaskFN descriptor weights not found: {p}")
            net = timm.create_model("resnet18", pretrained=False, num_classes=0)
            load_backbone_weights(net, p)
            net.eval()
            for q in net.parameters():
                q.requires_grad_(False)
            self._descriptor_net.append(net)
        return self._descriptor_net[0].to(device).eval()

    @torch.no_grad()
    def descriptors(self, raw: torch.Tensor, landmarks: torch.Tensor) -> torch.Tensor:
        """(M, D) L2-normalised MaskFN descriptors of un-augmented frames (config ``descriptor``);
        float32 even under autocast (the argmax over similarities should not see bf16 rounding)."""
        if self.cfg.descriptor == "landmarks":
            with torch.autocast(device_type=raw.device.type, enabled=False):
                return landmark_descriptor(landmarks.float())
        net = self._resnet18(raw.device)
        eyes, mouth = eye_mouth_crops(raw, landmarks, self.cfg.descriptor_crop, self.cfg.descriptor_margin)
        crops = torch.cat([eyes, mouth])  # ImageNet normalisation per channel (no device constants per step)
        crops = torch.stack([(crops[:, c] - IMAGENET_MEAN[c]) / IMAGENET_STD[c] for c in range(3)], dim=1)
        f = net(crops).float()
        fe, fm = f.chunk(2)
        return torch.nn.functional.normalize(torch.cat([fe, fm], dim=1), dim=1)

    # -- training --------------------------------------------------------------------------
    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:
        """NT-Xent over ``[A, NA, P, NP]``, with MaskFN when on. Under DDP the losses see the global
        batch (:func:`~workbench.losses.nt_xent`, :func:`~workbench.losses.maskfn.maskfn_batch_loss`
        gather every process's rows), so negatives, MaskFN candidates and FaceSwap donors span it. The
        method's own code reads nothing from the device (no data-dependent shapes, no Python-list indices)."""
        c = self.cfg
        v = self.make_views(batch)
        z = self(v.images)["z"]
        n_items = batch.images.shape[0]
        if not c.mask_fn:
            return {"loss": nt_xent(z, v.positive_index, c.temperature), "z": z.detach()[:n_items]}
        if v.raw_landmarks is None:
            raise MissingMetadataError(f"method 'sslfer' ({self._strategies()}) needs landmarks in the batch")
        terms = maskfn_batch_loss(z, v.positive_index, self.descriptors(v.raw, v.raw_landmarks), v.item,
                                  identity=v.identity if c.descriptor_per_person else None,
                                  temperature=c.temperature, lam=c.maskfn_lambda,
                                  protect_same_item=c.protect_hard_negatives)
        return {"loss": terms.loss, "z": z.detach()[:n_items], "maskfn_l1": terms.l1, "maskfn_l2": terms.l2,
                "maskfn_same_item": terms.same_item}


__all__ = ["ABLATION_ROWS", "SSLFER", "SSLFERConfig", "SSLFERViews", "eye_mouth_crops"]
