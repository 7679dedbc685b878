"""Multi-process pretraining (DDP) through Lightning Fabric: several GPUs, nodes, or CPU processes.

``workbench.runs.pretrain(config, ...)`` comes here when ``config.train.devices x num_nodes > 1``. What a step
computes, and how it relates to a single-process run:

- **Global batch.** ``train.batch_size`` is the global batch (items per optimiser step). Every process
  builds the *same* sampler (same seed → same order each epoch) and keeps a disjoint contiguous shard
  of every global batch: rank ``r`` of ``W`` gets items ``[r·b, (r+1)·b)`` with ``b = batch_size / W``,
  which must divide exactly (else :class:`~workbench.errors.ConfigError` before anything starts).
  ``steps per epoch`` and the LR schedule are those of the single-process run.
- **Gradients and batch statistics.** The method is wrapped by Fabric (DDP, gradients averaged);
  every BatchNorm becomes a synchronised BatchNorm first (``torch.nn.SyncBatchNorm`` / timm's variant
  on CUDA, :class:`GlobalBatchNorm` on CPU, where torch's has no kernel), so batch statistics are those
  of the global batch. Losses that compare items across the batch gather the embeddings themselves
  (:mod:`workbench.losses` through :func:`workbench.dist.gather_with_grad`; SimCLR: all ``2B−2`` negatives; MoCo v3: the
  momentum encoder's keys, each local query's positive at offset ``rank·b``; Barlow Twins: both
  views' projections, so the standardisation and the cross-correlation are over the global batch);
  a per-item mean loss (BYOL) needs nothing else. Hence one step equals a single-process step on the
  same global batch with the same views, up to float summation order (``tests/test_distributed.py``).
- **Randomness.** All processes seed weights with ``train.seed`` (and DDP broadcasts rank 0's
  weights). The per-step augmentation generator of rank 0 has the single-process seed; rank ``r > 0``
  a seed derived from ``(seed, step, r)``. Views are per-sample draws from a stream, so a W-process
  run draws *different* (equally distributed) views than a single process: runs are reproducible for
  a fixed W, and bitwise-comparable to one process only with deterministic views.
- **Outputs.** Rank 0 alone writes ``config.json``, ``metrics.jsonl`` (scalar metrics averaged over
  processes, collapse statistics of the gathered batch), checkpoints (atomic, the usual format:
  a checkpoint resumes with any number of processes) and runs the online kNN.
- **Agreement without waiting.** Processes must stop together, and all stop on a NaN/inf loss. Before
  each step every process launches one asynchronous all-reduce of ``[loss non-finite, stop requested,
  loss]`` of the step just done and reads the one launched a step earlier, so the host never waits
  for the step it has just queued (the only other collective read, the metrics, is on logging steps).
  All processes read the same sums at the same step: all raise
  :class:`~workbench.errors.TrainingDiverged` for the same step, or all stop; ``Trainer.stop()`` or a
  stopping callback on rank 0 during step ``s`` takes effect after step ``s + 1`` at the latest.
  Before every checkpoint, at every epoch end and when stopping, every process reads the pending
  agreements (``_settle``): a non-finite step never reaches a checkpoint, nothing stays in flight.

Launch (``train.strategy``): ``ddp`` (default) re-runs the same command line once per extra local
device (Fabric's script launcher) — the CLI path; under ``torchrun`` or SLURM ``srun`` the processes
already exist and nothing is launched. ``ddp_spawn`` starts workers from Python (tests, notebooks;
the config, callbacks and ``trainer_hook`` must be picklable). See ``docs/SCALING.md``.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from workbench.dist import all_reduce_, all_reduce_with_grad, gather, is_distributed, rank_and_world
from workbench.errors import ConfigError
from workbench.train.config import RunConfig
from workbench.train.trainer import RunFolderLike, Trainer, _HostCopy

__all__ = ["FabricTrainer", "GlobalBatchNorm", "convert_sync_batchnorm", "global_rank", "make_fabric",
           "shard_rows", "step_seed"]


# -- pieces that do not need processes (unit-tested directly) ----------------------------------------

def shard_rows(rows: np.ndarray, rank: int, world: int) -> np.ndarray:
    """Rows ``[rank·b, (rank+1)·b)`` of a global batch of ``world·b`` items (exact split)."""
    rows = np.asarray(rows)
    if rows.shape[0] % world:
        raise ConfigError(f"a batch of {rows.shape[0]} items cannot be split exactly over {world} processes")
    b = rows.shape[0] // world
    return rows[rank * b:(rank + 1) * b]


def step_seed(seed: int, step: int, rank: int) -> int:
    """Augmentation seed of one step on one process; rank 0 = the single-process seed."""
    base = int(seed) * 1_000_003 + int(step)
    if rank == 0:
        return base
    ss = np.random.SeedSequence([int(seed) % 2**63, int(step), int(rank)])
    return int(ss.generate_state(1, np.uint64)[0] >> np.uint64(1))


def global_rank() -> int:
    """Rank of this process in the default process group (0 when not distributed)."""
    return rank_and_world()[0]


class GlobalBatchNorm(nn.modules.batchnorm._BatchNorm):
    """BatchNorm with statistics over all processes, on any backend (gloo on CPU).

    ``torch.nn.SyncBatchNorm`` only runs on accelerators; this is its portable equivalent for CPU
    processes: two differentiable all-reduces per layer (mean, then centred second moment, in float32).
    Same parameters and buffers as ``BatchNorm*d`` (checkpoints are interchangeable); outside training
    or in a single process it is plain BatchNorm.
    """

    def _check_input_dim(self, input: torch.Tensor) -> None:
        if input.dim() < 2:
            raise ValueError(f"expected at least 2D input (got {input.dim()}D input)")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        self._check_input_dim(input)
        if not (self.training and is_distributed()):
            return super().forward(input)
        c = input.shape[1]
        dims = [0, *range(2, input.dim())]
        shape = [1, c] + [1] * (input.dim() - 2)
        x = input.float()
        local_n = torch.tensor([x.numel() // c], dtype=x.dtype, device=x.device)
        sums = all_reduce_with_grad(torch.cat([x.sum(dims), local_n]))
        count = sums[-1].detach()
        mean = sums[:-1] / count
        xc = x - mean.view(shape)
        var = all_reduce_with_grad((xc * xc).sum(dims)) / count
        y = xc * torch.rsqrt(var + self.eps).view(shape)
        if self.affine:
            y = y * self.weight.view(shape) + self.bias.view(shape)
        if self.track_running_stats and self.running_mean is not None and self.running_var is not None:
            with torch.no_grad():
                self.num_batches_tracked.add_(1)  # type: ignore[union-attr,operator]
                m = (1.0 / float(self.num_batches_tracked) if self.momentum is None  # type: ignore[arg-type]
                     else self.momentum)
                unbiased = var.detach() * (count / (count - 1).clamp(min=1))
                self.running_mean.mul_(1 - m).add_(mean.detach(), alpha=m)
                self.running_var.mul_(1 - m).add_(unbiased, alpha=m)
        return y.to(input.dtype)


class _GlobalBatchNormAct(GlobalBatchNorm):
    """:class:`GlobalBatchNorm` + the dropout/activation of timm's ``BatchNormAct2d``."""

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        x = super().forward(input)
        if hasattr(self, "drop"):
            x = self.drop(x)
        if hasattr(self, "act"):
            x = self.act(x)
        return x


def convert_sync_batchnorm(module: nn.Module, device_type: str) -> nn.Module:
    """Every ``BatchNorm*d`` (timm's ``BatchNormAct2d`` included) → a synchronised one.

    CUDA: timm's converter (``torch.nn.SyncBatchNorm`` / ``SyncBatchNormAct``); other devices:
    :class:`GlobalBatchNorm`. Parameters are shared (not copied), buffers copied.
    """
    if device_type == "cuda":
        from timm.layers import convert_sync_batchnorm as timm_convert

        return timm_convert(module)
    if isinstance(module, nn.modules.batchnorm._BatchNorm) and not isinstance(module, GlobalBatchNorm):
        act = hasattr(module, "act") or hasattr(module, "drop")
        cls = _GlobalBatchNormAct if act else GlobalBatchNorm
        new = cls(module.num_features, module.eps, module.momentum, module.affine, module.track_running_stats)
        if module.affine:
            new.weight, new.bias = module.weight, module.bias
        new.running_mean = module.running_mean
        new.running_var = module.running_var
        new.num_batches_tracked = module.num_batches_tracked
        for name in ("drop", "act"):
            if hasattr(module, name):
                setattr(new, name, getattr(module, name))
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, device_type))
    return module


# -- the trainer ------------------------------------------------------------------------------

class _StepModule(nn.Module):
    """What DDP wraps: ``forward(batch)`` is the method's ``training_step`` (so gradients sync)."""

    def __init__(self, method: nn.Module):
        super().__init__()
        self.method = method

    def forward(self, batch: Any) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch)


class _Agreement:
    """A small tensor summed over processes in the background; :meth:`read` waits for it.

    CUDA: the current stream waits for the sum (with NCCL the host does not) and a pinned copy + event
    brings it back, so :meth:`read` waits only for the step that launched it. CPU (gloo): the sum runs
    in gloo's threads and :meth:`read` waits for it.
    """

    def __init__(self, flags: torch.Tensor, step: int | None):
        self.step = step
        self._flags = flags
        self._work: Any = dist.all_reduce(flags, async_op=True)
        self._copy: _HostCopy | None = None
        if flags.is_cuda:
            self._work.wait()  # NCCL: orders the current stream after the sum, returns at once
            self._work, self._copy = None, _HostCopy(flags)

    def read(self) -> list[float]:
        if self._work is not None:
            self._work.wait()
            self._work = None
        return self._copy.tolist() if self._copy is not None else self._flags.tolist()


class FabricTrainer(Trainer):
    """:class:`~workbench.train.trainer.Trainer` for one process of a Fabric DDP run (see module doc)."""

    def __init__(self, fabric: Any, config: RunConfig, method: nn.Module, data: Any, folder: RunFolderLike,
                 **kwargs: Any):
        self.fabric = fabric
        self.rank, self.world = int(fabric.global_rank), int(fabric.world_size)
        if config.train.batch_size % self.world:
            raise ConfigError(f"batch_size {config.train.batch_size} must be divisible by the number of "
                              f"processes ({self.world} = devices x num_nodes)")
        method = convert_sync_batchnorm(method, fabric.device.type)
        if self.rank != 0:
            kwargs["callbacks"], kwargs["progress"] = None, False
        super().__init__(config, method, data, folder, device=fabric.device, **kwargs)
        self._flag_dtype = torch.float64 if self.device.type == "cpu" else torch.float32
        self._unsent: tuple[torch.Tensor, int] | None = None  # the last step's loss, not yet in an agreement
        self._agreement: _Agreement | None = None  # launched, not read yet
        self._stop_agreed = False
        self.local_batch = config.train.batch_size // self.world
        self._ddp = fabric.setup_module(_StepModule(self.method))

    # sharding and seeds
    def _make_batch(self, rows: np.ndarray, batch_cls):
        rows = np.asarray(rows)
        if rows.shape[0] != self.tc.batch_size:
            raise ConfigError(f"the sampler gave a batch of {rows.shape[0]} items, not {self.tc.batch_size}; "
                              "multi-process training needs full batches (drop_last)")
        return super()._make_batch(shard_rows(rows, self.rank, self.world), batch_cls)

    def _generator_seed(self) -> int:
        return step_seed(self.tc.seed, self.step, self.rank)

    # forward / backward through DDP
    def _forward_step(self, batch) -> dict[str, torch.Tensor]:
        return self._ddp(batch)

    def _backward(self, loss: torch.Tensor) -> None:
        self.fabric.backward(loss)

    # agreement between processes: one asynchronous all-reduce per step, read one step later
    def _sum(self, values: list[float]) -> torch.Tensor:
        """Blocking sum over processes (the metrics: logging steps and ``_settle``)."""
        return all_reduce_(torch.tensor(values, dtype=self._flag_dtype, device=self.device))

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Keep this step's loss: its finiteness is agreed at the next :meth:`_should_stop` (no wait here)."""
        self._unsent = (loss.detach(), self.step)

    def _should_stop(self) -> bool:
        """Every process, before each step: read the agreement launched one step ago (raises if a loss
        diverged), launch the one of the step just done. Stops once any process asked to."""
        self._read_agreement()
        self._send_agreement()
        return self._stop_agreed

    def _settle(self) -> None:
        """Every process (checkpoint, epoch end, stop): wait for the agreement of every finished step."""
        self._read_agreement()
        if self._unsent is not None:
            self._send_agreement()
            self._read_agreement()
        super()._settle()

    def _raise_if_diverged(self) -> None:
        # rank 0 alone calls this before a checkpoint: no collective here, ``_settle`` (every process) read it
        if self._agreement is not None or self._unsent is not None:
            raise RuntimeError("checkpoint before the processes agreed on the last step's loss "
                               "(call _settle on every process first)")

    def _send_agreement(self) -> None:
        """Launch the sum of ``[last loss non-finite, stop requested here, last loss]`` (without waiting)."""
        unsent, self._unsent = self._unsent, None
        dtype, device = self._flag_dtype, self.device
        # device tensors from fills and device ops only: a tensor built from host values would wait for the GPU
        stop = torch.full((1,), float(self._stop.is_set()), dtype=dtype, device=device)
        if unsent is None:  # no step since the last agreement (start of an epoch): the stop request alone
            loss, step = torch.zeros(1, dtype=dtype, device=device), None
        else:
            loss, step = unsent[0].to(dtype).reshape(1), unsent[1]
        self._agreement = _Agreement(torch.cat([(~torch.isfinite(loss)).to(dtype), stop, loss]), step)

    def _read_agreement(self) -> None:
        """Wait for the launched agreement (if any); raise if a process's loss was not finite."""
        agreement, self._agreement = self._agreement, None
        if agreement is None:
            return
        nonfinite, stop, loss_sum = agreement.read()
        if nonfinite > 0:
            raise self._diverged(loss_sum / self.world, agreement.step,
                                 f" on {int(nonfinite)} of {self.world} processes")
        self._stop_agreed = self._stop_agreed or stop > 0

    def _reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        keys = sorted(metrics)
        total = self._sum([float(metrics[k]) for k in keys]).tolist()
        return {k: v / self.world for k, v in zip(keys, total)}

    def _gather_rows(self, z: torch.Tensor) -> torch.Tensor:
        return gather(z.detach())

    # rank 0 writes
    def _log(self, rec: dict[str, Any], fh) -> None:
        if self.rank == 0:
            super()._log(rec, fh)

    def _save(self, *, numbered: bool) -> None:
        if self.rank == 0:
            super()._save(numbered=numbered)

    def _truncate_metrics(self, step: int) -> None:
        if self.rank == 0:
            super()._truncate_metrics(step)

    def _epoch_eval(self) -> dict[str, float]:
        return super()._epoch_eval() if self.rank == 0 else {}


# -- launching --------------------------------------------------------------------------------

def _fabric_class():
    try:
        from lightning.fabric import Fabric
    except ImportError:
        try:
            from lightning_fabric import Fabric
        except ImportError:
            raise ConfigError("multi-process training needs Lightning Fabric: pip install 'workbench[scale]' "
                              "(lightning-fabric)") from None
    return Fabric


def _accelerator(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    kind = device.split(":")[0]
    if kind == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' requested but no CUDA GPU is available (use --device cpu)")
        return "cuda"
    if kind == "cpu":
        return "cpu"
    raise ConfigError(f"multi-process training runs on 'cuda' or 'cpu' processes, not '{device}'")


def launcher() -> str | None:
    """``'torchrun'`` or ``'slurm'`` when this process was started by that launcher, else ``None``."""
    env = os.environ
    if env.get("TORCHELASTIC_RUN_ID") or all(k in env for k in ("RANK", "WORLD_SIZE", "LOCAL_RANK",
                                                                 "MASTER_ADDR", "MASTER_PORT")):
        return "torchrun"
    if env.get("SLURM_STEP_ID") is not None and env.get("SLURM_PROCID") is not None and env.get("SLURM_NTASKS"):
        return "slurm"
    return None


def check_launch(config: RunConfig) -> str | None:
    """The launcher (see :func:`launcher`); refuses ``num_nodes > 1`` without one (before any work)."""
    started_by = launcher()
    if config.train.num_nodes > 1 and started_by is None:
        raise ConfigError(f"num_nodes {config.train.num_nodes} needs a launcher that starts the processes on "
                          "every machine (torchrun --nnodes, or SLURM srun; see docs/SCALING.md); none was "
                          "found, so nothing was started")
    return started_by


def make_fabric(config: RunConfig):
    """The Fabric object of a run (accelerator from ``train.device``; precision is the trainer's own).

    Several machines need a launcher (torchrun, SLURM srun) that starts every process: without one the
    run would wait forever for ranks that never come, so it stops here. A single-machine run
    rendezvous on the loopback address (``MASTER_ADDR`` 127.0.0.1 unless set)."""
    tc = config.train
    world = tc.devices * tc.num_nodes
    if tc.batch_size % world:
        raise ConfigError(f"batch_size {tc.batch_size} must be divisible by devices x num_nodes = {world} "
                          f"(each process gets an equal share of the global batch)")
    if check_launch(config) is None:
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
    return _fabric_class()(accelerator=_accelerator(tc.device), devices=tc.devices, num_nodes=tc.num_nodes,
                           strategy=tc.strategy, precision="32-true")
