"""The training loop shared by every method.

:class:`Trainer` runs a built method over decoded face data and writes into a run folder it is handed
(:class:`workbench.runs.RunFolder`; ``workbench.runs.pretrain`` builds everything from a config). The loop:

- picks the device (CUDA > MPS > CPU) and, where the hardware has bf16, bf16 autocast and channels_last
  (``workbench.train.precision``),
- draws batches of row indices from the method's sampler (seeded per epoch) and gathers decoded
  uint8 faces from the memory-mapped cache, augmenting on the device,
- seeds one ``torch.Generator`` per step from (seed, step), so resuming is exact,
- logs per-step metrics (loss, lr, collapse monitor) to the run's metrics log and calls ``callbacks``,
- calls ``epoch_eval(method, device)`` at the end of every ``knn_every``-th epoch (the online kNN),
- writes the last checkpoint (+ numbered ones) atomically; Ctrl-C or :meth:`Trainer.stop`
  saves a checkpoint mid-epoch; a NaN/inf loss stops with a message and keeps the last good checkpoint.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm.auto import tqdm

from workbench.data.cache import keep_on_device
from workbench.device import select_device
from workbench.errors import CheckpointError, ConfigError, TrainingDiverged, WorkbenchError
from workbench.io import read_jsonl, write_text_atomic
from workbench.methods.base import Batch, SSLMethod
from workbench.train.checkpoint import load_checkpoint, save_checkpoint
from workbench.train.config import RunConfig
from workbench.train.monitor import collapse_stats
from workbench.train.precision import resolve_amp, resolve_channels_last

Callback = Callable[[dict[str, Any]], None]
#: epoch-end evaluation: ``(method, device) -> {metric: value}`` (the online kNN of a run)
EpochEval = Callable[[SSLMethod, torch.device], dict[str, float]]


class RunFolderLike(Protocol):
    """The paths the trainer writes (:class:`workbench.runs.RunFolder` provides them)."""

    path: Path
    metrics: Path
    checkpoints: Path
    last_checkpoint: Path
    tensorboard: Path

    def numbered_checkpoint(self, epoch: int) -> Path: ...

    def numbered_checkpoints(self) -> list[Path]: ...


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # "finished" | "stopped" (Stop button) | "interrupted" (Ctrl-C) | "max_steps"
    epoch: int
    step: int
    last_metrics: dict[str, Any]


class _HostCopy:
    """A small device tensor copied to the host without blocking it (CUDA: pinned memory + an event).

    ``tolist()`` waits only for the work queued before the copy, not for later steps.
    """

    def __init__(self, values: torch.Tensor):
        self._event = None
        if values.is_cuda:
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self._host.copy_(values, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
        else:
            self._host = values

    def tolist(self) -> list:
        if self._event is not None:
            self._event.synchronize()
        return self._host.tolist()


class Trainer:
    """Runs a method over decoded face data into ``folder`` (``workbench.runs.pretrain`` builds one)."""

    def __init__(self, config: RunConfig, method: SSLMethod, data, folder: RunFolderLike, *,
                 epoch_eval: EpochEval | None = None, device: torch.device | None = None,
                 callbacks: list[Callback] | None = None, progress: bool = True):
        self.config = config
        self.tc = config.train
        self.method = method
        self.data = data
        self.epoch_eval = epoch_eval
        self.folder = folder
        self.run_dir = folder.path
        self.device = device or select_device(self.tc.device)
        data = keep_on_device(data, self.device, self.tc.device_data)
        self.data = data
        self.callbacks = list(callbacks or [])
        self.progress = progress
        self._stop = threading.Event()
        self._tb: Any = None  # TensorBoard writer: None = not opened yet, False = unavailable
        self.sampler = method.make_sampler(data, self.tc.batch_size, self.tc.seed)
        if len(self.sampler) == 0:
            raise ConfigError(f"batch size {self.tc.batch_size} is larger than what the data can fill "
                              f"({len(data)} images); lower --batch-size")
        self.steps_per_epoch = len(self.sampler)
        self.total_steps = self.steps_per_epoch * self.tc.epochs
        if self.tc.max_steps:
            self.total_steps = min(self.total_steps, self.tc.max_steps)
        self.method.to(self.device)
        self.amp_dtype = self._amp_dtype()
        if self._channels_last():
            self.method.to(memory_format=torch.channels_last)
        params = self.method.trainable_parameters()
        self.optimizer = self._make_optimizer(params)
        self.step = 0
        self.epoch = 0
        self.step_in_epoch = 0
        self.last_metrics: dict[str, Any] = {}
        # label codes live on the device: a step indexes them there (a host→device copy of pageable
        # memory would wait for the GPU every step)
        self._codes = {c: torch.from_numpy(data.codes(c)[0]).to(self.device)
                       for c in ("identity", "clip", "group", "expression") if data.has(c)}
        self._pending_check: tuple[_HostCopy, int] | None = None  # (last step's loss, step): checked one step later
        self._last_scalars: tuple[dict[str, torch.Tensor], float] | None = None  # last step's outputs, on the device
        if self.tc.compile and self.device.type == "cuda":
            self.method.backbone.model = torch.compile(self.method.backbone.model)

    # -- setup helpers ---------------------------------------------------------------------
    def _amp_dtype(self) -> torch.dtype | None:
        return resolve_amp(self.tc.amp, self.device)

    def _channels_last(self) -> bool:
        return resolve_channels_last(self.tc.channels_last, self.device, self.method.backbone.is_vit,
                                     self.amp_dtype)

    def _make_optimizer(self, params) -> torch.optim.Optimizer:
        decay = [p for p in params if p.ndim > 1]
        no_decay = [p for p in params if p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": self.tc.weight_decay},
                  {"params": no_decay, "weight_decay": 0.0}]
        if self.tc.optimizer == "adamw":
            return torch.optim.AdamW(groups, lr=self.tc.lr)
        if self.tc.optimizer == "adam":
            return torch.optim.Adam(groups, lr=self.tc.lr)
        return torch.optim.SGD(groups, lr=self.tc.lr, momentum=0.9)

    def lr_at(self, step: int) -> float:
        warm = self.tc.warmup_epochs * self.steps_per_epoch
        if warm > 0 and step < warm:
            return self.tc.lr * (step + 1) / warm
        if self.tc.schedule == "constant":
            return self.tc.lr
        total = max(self.steps_per_epoch * self.tc.epochs - warm, 1)
        t = min(max(step - warm, 0) / total, 1.0)
        return self.tc.lr * 0.5 * (1 + math.cos(math.pi * t))

    # -- control ---------------------------------------------------------------------------
    def stop(self) -> None:
        """Ask the loop to stop after the current step (a checkpoint is saved). Thread-safe."""
        self._stop.set()

    def resume(self, checkpoint: str | Path) -> None:
        state = load_checkpoint(checkpoint, self.method, self.optimizer)
        try:
            self.step = int(state.get("step", 0))
            self.epoch = int(state.get("epoch", 0))
            self.step_in_epoch = int(state.get("step_in_epoch", 0))
            self.last_metrics = dict(state.get("metrics", {}))
            if min(self.step, self.epoch, self.step_in_epoch) < 0:
                raise ValueError("negative counters")
            if "_rng_torch" in state:
                torch.set_rng_state(state["_rng_torch"])
            self._truncate_metrics(self.step)
        except (TypeError, ValueError, RuntimeError, OverflowError) as exc:
            raise CheckpointError(f"{checkpoint}: its saved training state cannot be resumed "
                                  f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"[:300]
                                  ) from None

    def _truncate_metrics(self, step: int) -> None:
        """Resuming at ``step``: drop the log records of steps after it (written after the checkpoint by
        the run that crashed or was killed), so curves never show a step twice."""
        path = self.folder.metrics
        if not path.is_file():
            return
        records, _ = read_jsonl(path)
        keep = [r for r in records if not isinstance(r.get("step"), (int, float)) or r["step"] <= step]
        if len(keep) != len(records) or _ != 0:
            write_text_atomic(path, "".join(json.dumps(r) + "\n" for r in keep))

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        """Train to ``epochs`` (or a stop); returns the :class:`TrainResult`."""
        try:
            return self._fit()
        finally:
            if self._tb:
                self._tb.close()
            self._tb = None

    def _fit(self) -> TrainResult:
        self.folder.checkpoints.mkdir(parents=True, exist_ok=True)
        metrics_file = open(self.folder.metrics, "a", encoding="utf-8")
        bar = tqdm(total=self.total_steps, initial=self.step, desc=f"{self.method.name}", unit="step",
                   disable=not self.progress, dynamic_ncols=True)
        status = "finished"
        try:
            while self.epoch < self.tc.epochs:
                self.method.train()
                t_epoch = time.perf_counter()
                for i, rows in enumerate(self.sampler.batches(self.epoch)):
                    if i < self.step_in_epoch:
                        continue  # resuming mid-epoch: skip the batches already done
                    if self._should_stop():
                        status = "stopped"
                        break
                    if self.tc.max_steps and self.step >= self.tc.max_steps:
                        status = "max_steps"
                        break
                    batch = self._make_batch(rows, Batch)
                    metrics = self._train_step(batch)
                    self.step += 1
                    self.step_in_epoch = i + 1
                    bar.update(1)
                    if metrics is not None:  # a logging step: step 1 and every log_every steps
                        rec = {"step": self.step, "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                               **metrics}
                        self._log(rec, metrics_file)
                        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
                if status != "finished":
                    break
                self._settle()
                self.epoch += 1
                self.step_in_epoch = 0
                rec = {"step": self.step, "epoch": float(self.epoch), "event": "epoch_end",
                       "epoch_seconds": time.perf_counter() - t_epoch, **self._epoch_eval()}
                self._log(rec, metrics_file)
                self._save(numbered=(self.epoch % self.tc.checkpoint_every == 0) or self.epoch == self.tc.epochs)
        except KeyboardInterrupt:  # Ctrl-C / kernel interrupt: save below, like Stop
            status = "interrupted"
        except torch.cuda.OutOfMemoryError:
            metrics_file.close()
            raise WorkbenchError(
                f"CUDA out of memory at batch size {self.tc.batch_size}; try --batch-size "
                f"{max(2, self.tc.batch_size // 2)} (or a smaller --image-size / backbone)") from None
        except BaseException:  # NaN loss (TrainingDiverged) and bugs: last good checkpoint stays as it is
            metrics_file.close()
            raise
        finally:
            bar.close()
        if status != "finished":
            try:
                self._settle()
            except TrainingDiverged:
                metrics_file.close()
                raise
            self._save(numbered=False)
            self._log({"step": self.step, "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                       "event": status}, metrics_file)
        metrics_file.close()
        return TrainResult(self.run_dir, status, self.epoch, self.step, self.last_metrics)

    def _make_batch(self, rows: np.ndarray, batch_cls):
        rows = np.asarray(rows)
        if rows.ndim == 1:
            rows = rows[:, None]
        pin = self.device.type == "cuda" and not self.data.on_device(self.device)
        images, landmarks = self.data.batch(rows, self.device, pin=pin)
        flat = torch.from_numpy(np.ascontiguousarray(rows.reshape(-1)))
        if pin:
            flat = flat.pin_memory()
        flat = flat.to(self.device, non_blocking=pin)
        codes = {c: v[flat].reshape(rows.shape) for c, v in self._codes.items()}
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self._generator_seed())
        return batch_cls(images=images, landmarks=landmarks, rows=torch.from_numpy(rows), codes=codes,
                         generator=gen, step=self.step, epoch=self.epoch)

    def _train_step(self, batch) -> dict[str, float] | None:
        """One optimiser step; returns the metrics (floats) on logging steps, else None.

        Nothing here waits for the device except on logging steps (step 1 and every ``log_every``):
        the loss's finiteness is copied to the host without blocking and checked one step later
        (and before any checkpoint is written), so the host prepares the next batch while the GPU
        still computes this one.
        """
        lr = self.lr_at(self.step)
        for g in self.optimizer.param_groups:
            g["lr"] = lr
        if self._channels_last():
            batch.images = batch.images.contiguous(memory_format=torch.channels_last) \
                if batch.images.ndim == 4 else batch.images
        with torch.autocast(device_type=self.device.type, dtype=self.amp_dtype or torch.float32,
                            enabled=self.amp_dtype is not None):
            out = self._forward_step(batch)
        loss = out["loss"]
        self._check_finite(loss)
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        if self.tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.method.trainable_parameters(), self.tc.grad_clip)
        self.optimizer.step()
        # progress follows the configured schedule (not max_steps), so a capped run resumes exactly
        self.method.after_optimizer_step(min((self.step + 1) / (self.steps_per_epoch * self.tc.epochs), 1.0))
        scalars = {"loss": loss.detach()}
        scalars.update({k: v.detach() for k, v in out.items()
                        if k not in ("loss", "z") and torch.is_tensor(v) and v.numel() == 1})
        self._last_scalars = (scalars, lr)
        if not ((self.step + 1) % self.tc.log_every == 0 or self.step == 0):
            return None
        metrics = self._read_metrics()
        if "z" in out:
            metrics.update({f"collapse/{k}": v for k, v in collapse_stats(self._gather_rows(out["z"])).items()})
        self.last_metrics = metrics
        return metrics

    def _read_metrics(self) -> dict[str, float]:
        """The last step's scalar outputs as floats (waits for the device), averaged over processes."""
        scalars, lr = self._last_scalars
        keys = list(scalars)
        values = torch.stack([scalars[k].float().reshape(()) for k in keys]).tolist()
        return self._reduce_metrics({**dict(zip(keys, values)), "lr": lr})

    def _settle(self) -> None:
        """Before a checkpoint (every process): the pending loss check, then the last step's metrics."""
        self._raise_if_diverged()
        if self._last_scalars is not None:
            self.last_metrics = {**self.last_metrics, **self._read_metrics()}

    def _check_finite(self, loss: torch.Tensor) -> None:
        """Stop on a NaN/inf loss, one step late: raises for the previous step's loss, queues this one."""
        self._raise_if_diverged()
        self._pending_check = (_HostCopy(loss.detach().float().reshape(1)), self.step)

    def _raise_if_diverged(self) -> None:
        """Read the queued loss check (waits only for the step that produced it)."""
        pending, self._pending_check = self._pending_check, None
        if pending is None:
            return
        copy, step = pending
        (value,) = copy.tolist()
        if not math.isfinite(value):
            raise self._diverged(value, step)

    def _diverged(self, value: float, step: int, where: str = "") -> TrainingDiverged:
        last = self.folder.last_checkpoint
        kept = (f"the last good checkpoint is kept in {last.parent}" if last.is_file()
                else "no checkpoint was written before it (none to resume from)")
        return TrainingDiverged(
            f"loss became {value} at step {step}{where} (epoch {self.epoch}); {kept}. Try a lower --lr or a "
            f"higher temperature")

    # -- process hooks: identity in one process, overridden by ----------------------------------
    # -- workbench.train.distributed.FabricTrainer (DDP through Lightning Fabric) ----------------
    def _generator_seed(self) -> int:
        """Seed of this step's augmentation generator (depends on (seed, step) only)."""
        return int(self.tc.seed) * 1_000_003 + self.step

    def _forward_step(self, batch) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch)

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def _gather_rows(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def _should_stop(self) -> bool:
        return self._stop.is_set()
    # -- end of process hooks ---------------------------------------------------------------------

    @torch.no_grad()
    def _epoch_eval(self) -> dict[str, float]:
        if self.epoch_eval is None or not self.tc.knn_every or self.epoch % self.tc.knn_every:
            return {}
        metrics = self.epoch_eval(self.method, self.device)
        self.method.train()
        return metrics

    def _log(self, rec: dict[str, Any], fh) -> None:
        rec = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in rec.items()}
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        self._tensorboard_scalars(rec)
        for cb in self.callbacks:
            cb(rec)

    def _tensorboard_scalars(self, rec: dict[str, Any]) -> None:
        """Every finite number of a log record as a TensorBoard scalar at its step (writer opened lazily,
        only when the tensorboard package is installed and ``train.tensorboard`` is on)."""
        if not self.tc.tensorboard or self._tb is False:
            return
        if self._tb is None:
            try:
                from torch.utils.tensorboard import SummaryWriter
            except ImportError:  # the package is optional at run time
                self._tb = False
                return
            # purge_step: events a crashed run wrote after the checkpoint we resumed from are dropped
            self._tb = SummaryWriter(str(self.folder.tensorboard), purge_step=self.step or None)
        step = int(rec.get("step", self.step))
        for key, value in rec.items():
            if key in ("step", "epoch") or isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                self._tb.add_scalar(key, value, step)
        self._tb.flush()

    def _save(self, *, numbered: bool) -> None:
        self._raise_if_diverged()  # never write a checkpoint after a NaN step
        state = {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
                 "metrics": self.last_metrics, "method": self.method.name}
        save_checkpoint(self.folder.last_checkpoint, self.method, self.optimizer, state)
        if numbered:
            save_checkpoint(self.folder.numbered_checkpoint(self.epoch), self.method, None, state)
            if self.tc.keep_checkpoints:
                numbered_files = self.folder.numbered_checkpoints()
                for old in numbered_files[: -self.tc.keep_checkpoints]:
                    old.unlink(missing_ok=True)
                    old.with_suffix(".safetensors.json").unlink(missing_ok=True)
