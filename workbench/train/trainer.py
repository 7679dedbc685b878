"""The training loop shared by every method.

``pretrain(config, out_dir)`` builds data, backbone and method from a :class:`RunConfig`, then runs
:class:`Trainer`. The loop:

- picks the device (CUDA > MPS > CPU) and, where the hardware has bf16, bf16 autocast and channels_last
  (``workbench.train.precision``),
- draws batches of row indices from the method's sampler (seeded per epoch) and gathers decoded
  uint8 faces from the memory-mapped cache, augmenting on the device,
- seeds one ``torch.Generator`` per step from (seed, step), so resuming is exact,
- logs per-step metrics (loss, lr, collapse monitor) to ``metrics.jsonl`` and calls ``callbacks``,
- writes ``checkpoints/last.safetensors`` (+ numbered ones) atomically; Ctrl-C or :meth:`Trainer.stop`
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
from typing import Any

import numpy as np
import torch

from workbench.errors import ConfigError, TrainingDiverged, WorkbenchError
from workbench.train.checkpoint import load_checkpoint, save_checkpoint
from workbench.train.config import RunConfig
from workbench.train.monitor import collapse_stats
from workbench.train.precision import resolve_amp, resolve_channels_last

Callback = Callable[[dict[str, Any]], None]


def select_device(name: str = "auto") -> torch.device:
    """'auto' → CUDA if available, else MPS, else CPU; otherwise validate the given device."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"unknown device '{name}' (use auto, cpu, cuda, cuda:N or mps)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA GPU is available (use --device auto or cpu)")
    return dev


@dataclass
class TrainResult:
    run_dir: Path
    status: str  # "finished" | "stopped" | "max_steps"
    epoch: int
    step: int
    last_metrics: dict[str, Any]


class Trainer:
    """Runs a method over decoded face data. Construct with :func:`build_trainer` (or ``pretrain``)."""

    def __init__(self, config: RunConfig, method, data, run_dir: str | Path, *, val_data=None,
                 device: torch.device | None = None, callbacks: list[Callback] | None = None,
                 progress: bool = True):
        self.config = config
        self.tc = config.train
        self.method = method
        self.data = data
        self.val_data = val_data
        self.run_dir = Path(run_dir)
        self.device = device or select_device(self.tc.device)
        self.callbacks = list(callbacks or [])
        self.progress = progress
        self._stop = threading.Event()
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
        self._codes = {c: torch.from_numpy(data.codes(c)[0]) for c in ("identity", "clip", "group",
                                                                       "expression") if data.has(c)}
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
        self.step = int(state.get("step", 0))
        self.epoch = int(state.get("epoch", 0))
        self.step_in_epoch = int(state.get("step_in_epoch", 0))
        self.last_metrics = dict(state.get("metrics", {}))
        if "_rng_torch" in state:
            torch.set_rng_state(state["_rng_torch"])

    # -- the loop --------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        from tqdm.auto import tqdm

        from workbench.methods.base import Batch

        (self.run_dir / "checkpoints").mkdir(parents=True, exist_ok=True)
        metrics_file = open(self.run_dir / "metrics.jsonl", "a", encoding="utf-8")
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
                    if self.step % self.tc.log_every == 0 or self.step == 1:
                        rec = {"step": self.step, "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                               **metrics}
                        self._log(rec, metrics_file)
                        bar.set_postfix(loss=f"{metrics['loss']:.3f}")
                if status != "finished":
                    break
                self.epoch += 1
                self.step_in_epoch = 0
                rec = {"step": self.step, "epoch": float(self.epoch), "event": "epoch_end",
                       "epoch_seconds": time.perf_counter() - t_epoch, **self._epoch_eval()}
                self._log(rec, metrics_file)
                self._save(numbered=(self.epoch % self.tc.checkpoint_every == 0) or self.epoch == self.tc.epochs)
        except KeyboardInterrupt:  # Ctrl-C / kernel interrupt: save below, like Stop
            status = "stopped"
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
            self._save(numbered=False)
            self._log({"step": self.step, "epoch": self.epoch + self.step_in_epoch / self.steps_per_epoch,
                       "event": status}, metrics_file)
        metrics_file.close()
        return TrainResult(self.run_dir, status, self.epoch, self.step, self.last_metrics)

    def _make_batch(self, rows: np.ndarray, batch_cls):
        rows = np.asarray(rows)
        if rows.ndim == 1:
            rows = rows[:, None]
        pin = self.device.type == "cuda"
        images, landmarks = self.data.batch(rows, self.device, pin=pin)
        flat = torch.from_numpy(rows.reshape(-1))
        codes = {c: v[flat].reshape(rows.shape).to(self.device) for c, v in self._codes.items()}
        gen = torch.Generator(device=self.device)
        gen.manual_seed(self._generator_seed())
        return batch_cls(images=images, landmarks=landmarks, rows=torch.from_numpy(rows), codes=codes,
                         generator=gen, step=self.step, epoch=self.epoch)

    def _train_step(self, batch) -> dict[str, float]:
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
        if not self._all_finite(loss):
            raise TrainingDiverged(
                f"loss became {float(loss.detach())} at step {self.step} (epoch {self.epoch}); the last good "
                f"checkpoint is kept in {self.run_dir / 'checkpoints'}. Try a lower --lr or a higher temperature")
        self.optimizer.zero_grad(set_to_none=True)
        self._backward(loss)
        if self.tc.grad_clip > 0:
            torch.nn.utils.clip_grad_norm_(self.method.trainable_parameters(), self.tc.grad_clip)
        self.optimizer.step()
        # progress follows the configured schedule (not max_steps), so a capped run resumes exactly
        self.method.after_optimizer_step(min((self.step + 1) / (self.steps_per_epoch * self.tc.epochs), 1.0))
        metrics = {"loss": float(loss.detach()), "lr": lr}
        for k, v in out.items():
            if k not in ("loss", "z") and torch.is_tensor(v) and v.numel() == 1:
                metrics[k] = float(v.detach())
        metrics = self._reduce_metrics(metrics)
        if "z" in out and ((self.step + 1) % self.tc.log_every == 0 or self.step == 0):
            metrics.update({f"collapse/{k}": v for k, v in collapse_stats(self._gather_rows(out["z"])).items()})
        self.last_metrics = metrics
        return metrics

    # -- process hooks: identity in one process, overridden by ----------------------------------
    # -- workbench.train.distributed.FabricTrainer (DDP through Lightning Fabric) ----------------
    def _generator_seed(self) -> int:
        """Seed of this step's augmentation generator (depends on (seed, step) only)."""
        return int(self.tc.seed) * 1_000_003 + self.step

    def _forward_step(self, batch) -> dict[str, torch.Tensor]:
        return self.method.training_step(batch)

    def _backward(self, loss: torch.Tensor) -> None:
        loss.backward()

    def _all_finite(self, loss: torch.Tensor) -> bool:
        return bool(torch.isfinite(loss))

    def _reduce_metrics(self, metrics: dict[str, float]) -> dict[str, float]:
        return metrics

    def _gather_rows(self, z: torch.Tensor) -> torch.Tensor:
        return z

    def _should_stop(self) -> bool:
        return self._stop.is_set()
    # -- end of process hooks ---------------------------------------------------------------------

    @torch.no_grad()
    def _epoch_eval(self) -> dict[str, float]:
        if not self.tc.knn_every or self.val_data is None or self.epoch % self.tc.knn_every:
            return {}
        if not (self.data.has("expression") and self.val_data.has("expression")):
            return {}
        from workbench.evaluate.online import online_knn

        acc = online_knn(self.method, self.data, self.val_data, self.device, seed=self.tc.seed)
        self.method.train()
        return {"knn/expression": acc} if acc is not None else {}

    def _log(self, rec: dict[str, Any], fh) -> None:
        rec = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in rec.items()}
        fh.write(json.dumps(rec) + "\n")
        fh.flush()
        for cb in self.callbacks:
            cb(rec)

    def _save(self, *, numbered: bool) -> None:
        state = {"epoch": self.epoch, "step": self.step, "step_in_epoch": self.step_in_epoch,
                 "metrics": self.last_metrics, "method": self.method.name}
        ckdir = self.run_dir / "checkpoints"
        save_checkpoint(ckdir / "last.safetensors", self.method, self.optimizer, state)
        if numbered:
            save_checkpoint(ckdir / f"epoch-{self.epoch:04d}.safetensors", self.method, None, state)
            if self.tc.keep_checkpoints:
                numbered_files = sorted(ckdir.glob("epoch-*.safetensors"))
                for old in numbered_files[: -self.tc.keep_checkpoints]:
                    old.unlink(missing_ok=True)
                    old.with_suffix(".safetensors.json").unlink(missing_ok=True)
