"""The shared base of every SSL method.

A method is a small ``nn.Module`` over a :class:`~workbench.models.Backbone` that

- declares its config dataclass (``Config``), paper reference and the manifest columns it needs,
- returns the fixed output contract from ``forward(images01)``: ``{"feats": (B, D), "z": (B, P)}``,
- chooses how batches are drawn (``make_sampler``: random images, clip pairs, multi-view groups),
- computes its loss in ``training_step(batch)`` from raw (un-augmented) images, making its own views,
- optionally updates target networks in ``after_optimizer_step`` (EMA).

The trainer owns everything else (optimiser, schedule, AMP, checkpoints, logging), so a method
file stays ~100-300 lines.

Multi-process (DDP) training (:mod:`workbench.train.distributed`): every process runs
``training_step`` on its own disjoint shard of the global batch, BatchNorm layers are synchronised
(global batch statistics) and gradients are averaged. A loss that is a mean over items therefore
needs nothing else. A loss that compares items *across* the batch (negatives, batch statistics of
embeddings) must see the global batch: call :func:`all_gather_with_grad` on the embeddings
(``(n, D)`` per process → ``(world·n, D)`` in rank order, gradients flow back to each process's
rows; the identity in a single process), compute the loss for the local rows against the gathered
ones, and the mean over processes equals the single-process loss (see ``SimCLR``).
:func:`process_rank_and_world` gives ``(rank, world_size)`` (``(0, 1)`` in a single process).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.distributed as dist
from torch import nn

from workbench.config import param
from workbench.models import Backbone

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
    #: named config presets: "paper" (published defaults) and "cpu" (trains in minutes on a CPU)
    presets: ClassVar[dict[str, dict[str, Any]]] = {}
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

    def check_data(self, manifest: Manifest) -> None:
        """Raise MissingMetadataError when a needed manifest column is missing (named in the message).

        Called on the manifest before any image is decoded, so a wrong dataset fails at once.
        """
        manifest.require(*self.requires, purpose=f"method '{self.name}'")

    def training_step(self, batch: Batch) -> dict[str, torch.Tensor]:  # pragma: no cover - abstract
        raise NotImplementedError

    def after_optimizer_step(self, progress: float) -> None:
        """Called after every optimiser step with training progress in [0, 1] (EMA updates)."""

    def trainable_parameters(self) -> list[nn.Parameter]:
        return [p for p in self.parameters() if p.requires_grad]


# -- helpers shared by several methods --------------------------------------------------------

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


# -- multi-process helpers (identity in a single process) -------------------------------------

def process_rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group, ``(0, 1)`` when not distributed."""
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in forward; backward sums every process's gradient for the local rows.

    Backend-agnostic (an ``all_reduce`` of the full gradient, then the local slice), so it works on
    gloo (CPU) as well as NCCL. Needs the same shape on every process.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = process_rank_and_world()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        dist.all_gather(parts, x)
        ctx.rank, ctx.n = rank, x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def all_gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape everywhere) from all processes along dim 0, in rank order.

    Differentiable: each process gets the gradient of the sum of all processes' losses with respect
    to its own rows, which is what DDP's gradient averaging expects when every process computes the
    loss of its local rows against the gathered ones. The identity in a single process.
    """
    _, world = process_rank_and_world()
    if world == 1:
        return x
    return _GatherWithGrad.apply(x)
