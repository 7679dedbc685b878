"""Process-group helpers: rank and world size, gathers (with and without gradient) and all-reduces.

Every function works without an initialised ``torch.distributed`` process group (a single process):
the rank is 0, the world size 1, gathers return their input and all-reduces do nothing. Collectives
must be called by every process of the group, with the same shapes (equal shards).
"""

from __future__ import annotations

import torch
import torch.distributed as torch_dist

__all__ = ["all_reduce_", "all_reduce_with_grad", "gather", "gather_with_grad", "is_distributed",
           "rank_and_world"]

_OPS = {"sum": torch_dist.ReduceOp.SUM, "max": torch_dist.ReduceOp.MAX, "min": torch_dist.ReduceOp.MIN}


def rank_and_world() -> tuple[int, int]:
    """``(rank, world_size)`` of the default process group; ``(0, 1)`` when not distributed."""
    if torch_dist.is_available() and torch_dist.is_initialized():
        return torch_dist.get_rank(), torch_dist.get_world_size()
    return 0, 1


def is_distributed() -> bool:
    """True when a process group with more than one process is initialised."""
    return rank_and_world()[1] > 1


class _GatherWithGrad(torch.autograd.Function):
    """all_gather in forward; backward sums every process's gradient for the local rows.

    Backend-agnostic (an ``all_reduce`` of the full gradient, then the local slice), so it works on
    gloo (CPU) as well as NCCL.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        rank, world = rank_and_world()
        x = x.contiguous()
        parts = [torch.empty_like(x) for _ in range(world)]
        torch_dist.all_gather(parts, x)
        ctx.rank, ctx.n = rank, x.shape[0]
        return torch.cat(parts, 0)

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch_dist.all_reduce(grad)
        return grad[ctx.rank * ctx.n:(ctx.rank + 1) * ctx.n]


def gather_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape everywhere) from all processes along dim 0, in rank order.

    Differentiable: each process gets the gradient of the sum of all processes' losses with respect
    to its own rows, which is what DDP's gradient averaging expects when every process computes a loss
    of its local rows against the gathered ones (or every process the same global loss). The identity
    (``x`` itself) in a single process.
    """
    if not is_distributed():
        return x
    if not (x.is_floating_point() or x.is_complex()):
        return gather(x)
    return _GatherWithGrad.apply(x)


def gather(x: torch.Tensor) -> torch.Tensor:
    """Concatenate ``x`` (same shape everywhere, any dtype) from all processes along dim 0, in rank
    order, without gradient. ``x`` itself in a single process (not detached)."""
    _, world = rank_and_world()
    if world == 1:
        return x
    x = x.detach().contiguous()
    parts = [torch.empty_like(x) for _ in range(world)]
    torch_dist.all_gather(parts, x)
    return torch.cat(parts, 0)


def all_reduce_(x: torch.Tensor, op: str = "sum") -> torch.Tensor:
    """Reduce ``x`` over all processes in place (``op``: ``"sum"``, ``"max"``, ``"min"``) and return it;
    nothing happens in a single process."""
    if op not in _OPS:
        raise ValueError(f"op must be one of {', '.join(_OPS)}, got {op!r}")
    if is_distributed():
        torch_dist.all_reduce(x, op=_OPS[op])
    return x


class _AllReduceSum(torch.autograd.Function):
    """Sum over processes; the gradient of a sum of per-process losses is summed back the same way."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        x = x.clone()
        torch_dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        grad = grad.contiguous().clone()
        torch_dist.all_reduce(grad)
        return grad


def all_reduce_with_grad(x: torch.Tensor) -> torch.Tensor:
    """Differentiable sum of ``x`` over all processes (a new tensor; ``x`` itself in a single process)."""
    if not is_distributed():
        return x
    return _AllReduceSum.apply(x)
