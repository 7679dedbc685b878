"""The shared base of every SSL method.

A method is a small ``nn.Module`` over a :class:`~workbench.models.Backbone` that

- declares its config dataclass (``Config``), paper reference and the manifest columns it needs,
- returns the fixed output contract from ``forward(images01)``: ``{"feats": (B, D), "z": (B, P)}``,
- chooses how batches are drawn (``make_sampler``: random images, clip pairs, multi-view groups),
- computes its loss in ``training_step(batch)`` from raw (un-augmented) images, making its own views,
- optionally updates target networks in ``after_optimizer_step`` (EMA; :class:`MomentumMethod`),
- declares a ``tiny`` preset (and ``tiny_model``) that ``tests/test_method_contract.py`` runs.

The trainer owns everything else (optimiser, schedule, AMP, checkpoints, logging), so a method
file stays ~100-300 lines.

Multi-process (DDP) training (:mod:`workbench.train.distributed`): every process runs
``training_step`` on its own disjoint shard of the global batch, BatchNorm layers are synchronised
(global batch statistics) and gradients are averaged. A loss that is a mean over items therefore
needs nothing else. A loss that compares items *across* the batch (negatives, batch statistics of
embeddings) gathers the global batch itself (:mod:`workbench.losses`, via
:func:`workbench.dist.gather_with_grad`), so a method's ``training_step`` has no DDP branch; such a
method sets ``batch_level_terms = True`` and the contract test checks 2 processes against one.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
from torch import nn

from workbench.config import param
from workbench.models import Backbone
from workbench.views.global_aug import GlobalViewConfig, global_augment

if TYPE_CHECKING:
    from workbench.data.cache import FaceData
    from workbench.data.manifest import Manifest


@dataclass
class MethodConfig:
    """Fields shared by all methods (subclass it per method)."""

    proj_hidden_dim: int = param(512, "Hidden width of the projector MLP (papers: 2048-4096; 512 is enough "
                                      "for FER-sized data and small backbones).", min=8)
    proj_dim: int = param(128, "Output size of the projector (the loss space `z`).", min=2)


@dataclass
class Batch:
    """What the trainer hands to ``training_step``.

    Attributes:
        images: float (B, k, 3, S, S) in [0, 1] on the training device (k images per item: 1 for
            plain methods, 2/4 for clip pairs, K for multi-view groups).
        landmarks: (B, k, 68, 2) in pixel coordinates at size S, or None (NaN where unknown).
        rows: (B, k) int64 dataset row indices.
        codes: integer codes per item for manifest columns (identity, clip, group, expression...),
            each (B, k) int64, -1 where missing.
        generator: torch.Generator on the device; draw all randomness from it.
        step / epoch: global optimiser step and epoch.
    """

    images: torch.Tensor
    landmarks: torch.Tensor | None
    rows: torch.Tensor
    codes: dict[str, torch.Tensor]
    generator: torch.Generator
    step: int = 0
    epoch: int = 0

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])


class SSLMethod(nn.Module):
    """Base class: projector head, output contract, default random sampler."""

    name: ClassVar[str] = "base"
    paper: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    Config: ClassVar[type[MethodConfig]] = MethodConfig
    #: manifest columns this method needs for pretraining (checked before training starts)
    requires: ClassVar[tuple[str, ...]] = ()
    #: named config presets: "paper" (published defaults), "cpu" (trains in minutes on a CPU) and
    #: "tiny" (the smallest config, well under a second per step on a CPU: the contract test's)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
    #: backbone and image size of the "tiny" preset: ``{"backbone": timm name, "image_size": px,
    #: **Backbone keyword arguments}``
    tiny_model: ClassVar[dict[str, Any]] = {"backbone": "resnet10t", "image_size": 32}
    #: the loss compares items across the batch (negatives, batch statistics), so under DDP its losses
    #: gather the global batch; the contract test then checks 2 processes against one
    batch_level_terms: ClassVar[bool] = False
    #: config changes for that 2-vs-1-process check, for random choices that depend on the order of the
    #: global batch's rows (which differs between 1 and W processes), e.g. FaceSwap's donor draw
    ddp_check_overrides: ClassVar[dict[str, Any]] = {}
    #: suggested synthetic set for `workbench pretrain --method NAME` without --data
    synth_mode: ClassVar[str] = "plain"  # "plain" | "clips" | "views"

    def __init__(self, cfg: MethodConfig, backbone: Backbone, image_size: int):
        super().__init__()
        self.cfg = cfg
        self.backbone = backbone
        self.image_size = image_size
        self.projector = self.build_projector()

    def build_projector(self) -> nn.Module:
        from workbench.models import mlp

        return mlp(self.backbone.dim, self.cfg.proj_hidden_dim, self.cfg.proj_dim, layers=2)

    # -- output contract -------------------------------------------------------------------
    def forward(self, images01: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{"feats": pooled backbone features, "z": projection}`` for ``[0, 1]`` images."""
        feats = self.backbone(images01)
        return {"feats": feats, "z": self.projector(feats)}

    @torch.no_grad()
    def embed(self, images01: torch.Tensor) -> torch.Tensor:
        """Pooled features only (what evaluation uses)."""
        return self.backbone(images01)

    # -- training hooks --------------------------------------------------------------------
    def make_sampler(self, data: FaceData, batch_size: int, seed: int):
        """How batches are drawn; default: random images, one per item."""
        from workbench.views.samplers import RandomSampler

        return RandomSampler(len(data), batch_size, seed)

    def required_columns(self) -> tuple[str, ...]:
        """Manifest columns this configured method needs (default: ``requires``)."""
        return self.requires

    def check_data(self, manifest: Manifest) -> None:
        """Raise MissingMetadataError when a needed manifest column is missing (named in the message).

        Called on the manifest before any image is decoded, so a wrong dataset fails at once.
        """
        manifest.require(*self.required_columns(), purpose=f"method '{self.name}'")

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimiser step with training progress in [0, 1] (EMA updates)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


class MomentumMethod(SSLMethod):
    """A method with EMA target copies of some of its modules (BYOL, MoCo v3, SimFLE).

    Declare each target once with :meth:`add_target` (``self.add_target("backbone")`` creates the frozen
    copy ``self.target_backbone``); after every optimiser step every target is updated with
    ``θ_t ← m·θ_t + (1 − m)·θ_o`` (:func:`ema_update`) at the momentum :meth:`momentum` of the
    progress. The config must have ``momentum`` (base m0) and ``cosine_momentum`` (ramp m0 → 1 with
    BYOL's cosine, :func:`cosine_momentum`; off = constant m0) fields.
    """

    def __init__(self, cfg: MethodConfig, backbone: Backbone, image_size: int):
        for name in ("momentum", "cosine_momentum"):
            if not hasattr(cfg, name):
                raise TypeError(f"{type(self).__name__}.Config needs a '{name}' field (MomentumMethod)")
        super().__init__(cfg, backbone, image_size)
        self.momentum_pairs: list[tuple[str, str]] = []  # (online, target) attribute names

    def add_target(self, name: str) -> nn.Module:
        """Create ``self.target_<name>``, a frozen copy of ``self.<name>`` updated by EMA; returns it."""
        target = frozen_copy(getattr(self, name))
        setattr(self, f"target_{name}", target)
        self.momentum_pairs.append((name, f"target_{name}"))
        return target

    def momentum(self, progress: float) -> float:
        """EMA momentum at training progress in [0, 1]."""
        m0 = float(self.cfg.momentum)  # type: ignore[attr-defined]
        return cosine_momentum(m0, progress) if self.cfg.cosine_momentum else m0  # type: ignore[attr-defined]

    def after_optimizer_step(self, progress: float) -> None:
        m = self.momentum(progress)
        for online, target in self.momentum_pairs:
            ema_update(getattr(self, target), getattr(self, online), m)


# -- helpers shared by several methods --------------------------------------------------------

def two_views(x: torch.Tensor, view1: GlobalViewConfig, view2: GlobalViewConfig,
              generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
    """Two global views ``(T1(x), T2(x))`` of a (B, 3, S, S) batch, drawn in that order from ``generator``."""
    return global_augment(x, view1, generator).images, global_augment(x, view2, generator).images


def frozen_copy(module: nn.Module) -> nn.Module:
    """A deep copy with gradients off (EMA target networks)."""
    target = copy.deepcopy(module)
    for p in target.parameters():
        p.requires_grad_(False)
    return target


@torch.no_grad()
def ema_update(target: nn.Module, online: nn.Module, momentum: float) -> None:
    """``θ_t ← m·θ_t + (1 − m)·θ_o`` for every parameter; buffers (BN statistics) are copied."""
    for pt, po in zip(target.parameters(), online.parameters()):
        pt.mul_(momentum).add_(po.detach(), alpha=1.0 - momentum)
    for bt, bo in zip(target.buffers(), online.buffers()):
        bt.copy_(bo)


def cosine_momentum(base: float, progress: float) -> float:
    """BYOL's schedule: ``1 − (1 − m0)·(cos(π·progress) + 1)/2`` (m0 at start → 1 at the end)."""
    return 1.0 - (1.0 - base) * (math.cos(math.pi * min(max(progress, 0.0), 1.0)) + 1.0) / 2.0


def flatten_items(x: torch.Tensor) -> torch.Tensor:
    """(B, k, ...) → (B·k, ...)."""
    return x.reshape(-1, *x.shape[2:])
