"""Creating and resuming a pretraining run: one set-up for a single process and for every DDP process.

``pretrain(config, out)`` takes the folder's lock, checks the folder (a new run, or a resume with the
same config), builds the method, checks the manifest's columns before decoding anything, loads the
decoded faces, writes ``config.json`` and runs the :class:`~workbench.train.trainer.Trainer` (or, with
``devices x num_nodes > 1``, one :class:`~workbench.train.distributed.FabricTrainer` per process).
"""

from __future__ import annotations

import os
import platform
import subprocess
import warnings
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import timm
import torch

import workbench
from workbench.config import to_dict
from workbench.data.cache import FaceData, load_face_data
from workbench.data.manifest import Manifest
from workbench.errors import ConfigError
from workbench.evaluate.online import online_knn
from workbench.io import write_json
from workbench.methods import SSLMethod
from workbench.runs.layout import RunFolder
from workbench.runs.load import build_method, read_run_config
from workbench.runs.lock import RunLock, is_rank_zero_process
from workbench.runs.projector import write_projector
from workbench.train.config import RunConfig
from workbench.train.distributed import FabricTrainer, make_fabric
from workbench.train.trainer import Callback, EpochEval, Trainer, TrainResult

#: training options that may differ when resuming (they do not change what is computed, except that
#: a larger ``epochs`` extends the cosine schedule: exact only when resuming with the same value)
RESUME_MAY_CHANGE = ("epochs", "max_steps", "device", "threads", "knn_every", "log_every",
                     "checkpoint_every", "keep_checkpoints", "devices", "strategy", "num_nodes", "tensorboard",
                     "device_data")


def code_version() -> dict[str, Any]:
    """Package version, git commit (when run from a checkout) and library versions."""
    sha = ""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(workbench.__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"workbench": workbench.__version__, "git": sha, "torch": torch.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def pretrain(config: RunConfig, out_dir: str | Path, *, resume: bool = False,
             callbacks: list[Callback] | None = None, progress: bool = True,
             trainer_hook: Callable[[Trainer], None] | None = None) -> TrainResult:
    """Pretrain ``config`` into ``out_dir``; returns the :class:`~workbench.train.trainer.TrainResult`.

    ``resume=True`` continues from the folder's last checkpoint (the saved config must match).
    ``trainer_hook(trainer)`` is called before training starts (the notebook keeps the trainer to call
    ``trainer.stop()``).
    """
    folder = RunFolder(out_dir)
    # one writer per run folder; the extra processes of a multi-process run work under rank 0's lock
    with RunLock(folder.path) if is_rank_zero_process() else nullcontext():
        if config.train.devices * config.train.num_nodes > 1:  # DDP through Lightning Fabric
            fabric = make_fabric(config)
            return fabric.launch(distributed_worker, config, str(folder.path), resume, callbacks, progress,
                                 trainer_hook)
        prepared = prepare_run(config, folder, resume=resume, progress=progress)
        write_run_config(config, prepared.method, folder)
        trainer = Trainer(config, prepared.method, prepared.train, folder, epoch_eval=prepared.epoch_eval,
                          callbacks=callbacks, progress=progress)
        return _start(trainer, folder, resume=resume, trainer_hook=trainer_hook)


@dataclass
class PreparedRun:
    """What every process of a run builds before training: the method, its data and the online kNN."""

    method: SSLMethod
    train: FaceData
    epoch_eval: EpochEval | None


def prepare_run(config: RunConfig, folder: RunFolder, *, resume: bool, progress: bool,
                decode_first: Callable[[], Any] | None = None) -> PreparedRun:
    """The checks and the set-up shared by single- and multi-process runs, cheapest checks first.

    ``decode_first`` is a context factory around the decoding (DDP: one process per node builds the
    decoded-face cache while the others wait)."""
    check_run_folder(config, folder, resume=resume)
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)
    method = build_method(config)  # the method config is built (and validated) once, here
    manifest = Manifest.load(config.data.manifest)  # parsed once: checked, then decoded
    method.check_data(manifest)  # before decoding anything
    with (decode_first() if decode_first is not None else nullcontext()):
        train, val = prepare_data(config, manifest, progress=progress)
    return PreparedRun(method, train, online_knn_eval(config, train, val))


def distributed_worker(fabric: Any, config: RunConfig, out_dir: str, resume: bool,
                       callbacks: list[Callback] | None, progress: bool,
                       trainer_hook: Callable[[Trainer], None] | None) -> TrainResult:
    """One process of a multi-process run (started by Fabric, torchrun or SLURM)."""
    folder = RunFolder(out_dir)
    prepared = prepare_run(config, folder, resume=resume, progress=progress and fabric.local_rank == 0,
                           decode_first=lambda: fabric.rank_zero_first(local=True))
    fabric.barrier()  # every process checked the run folder before rank 0 writes into it
    if fabric.global_rank == 0:
        write_run_config(config, prepared.method, folder)
    trainer = FabricTrainer(fabric, config, prepared.method, prepared.train, folder,
                            epoch_eval=prepared.epoch_eval, callbacks=callbacks, progress=progress)
    result = _start(trainer, folder, resume=resume, trainer_hook=trainer_hook)
    fabric.barrier()
    return result


def _start(trainer: Trainer, folder: RunFolder, *, resume: bool,
           trainer_hook: Callable[[Trainer], None] | None) -> TrainResult:
    if resume:
        trainer.resume(folder.last_checkpoint)
    if trainer_hook is not None:
        trainer_hook(trainer)
    result = trainer.fit()
    if result.status == "finished" and trainer.tc.tensorboard and getattr(trainer, "rank", 0) == 0:
        write_projector(folder, trainer.method, trainer.data, seed=trainer.tc.seed, step=result.step,
                        device=trainer.device)
    return result


def prepare_data(config: RunConfig, manifest: Manifest | None = None, *, progress: bool = True
                 ) -> tuple[FaceData, FaceData | None]:
    """Load (decode once, cached) the training split and the val split for online kNN."""
    data = load_face_data(manifest if manifest is not None else config.data.manifest, config.data.image_size,
                          cache_dir=config.data.cache_dir or None, progress=progress)
    if config.data.split == "all":
        return data, None
    train = data.split(config.data.split)
    try:
        val = data.split("val")
    except Exception:  # noqa: BLE001 - no val split: online kNN is skipped
        val = None
    return train, val


def online_knn_eval(config: RunConfig, train: FaceData, val: FaceData | None) -> EpochEval | None:
    """The trainer's epoch-end evaluation: weighted kNN expression accuracy of val against train, or None
    when there is nothing to evaluate (no val split, no expression labels, ``knn_every`` 0)."""
    if not config.train.knn_every or val is None or not (train.has("expression") and val.has("expression")):
        return None
    seed = config.train.seed

    def evaluate(method: SSLMethod, device: torch.device) -> dict[str, float]:
        acc = online_knn(method, train, val, device, seed=seed)
        return {"knn/expression": acc} if acc is not None and np.isfinite(acc) else {}

    return evaluate


def check_run_folder(config: RunConfig, out: str | Path | RunFolder, *, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one whose config differs (beyond RESUME_MAY_CHANGE)."""
    folder = RunFolder(out)
    if resume:
        if not folder.config.is_file():
            raise ConfigError(f"cannot resume: {folder.config} not found")
        saved = read_run_config(folder)
        a, b = saved.to_dict(), config.to_dict()
        for key in RESUME_MAY_CHANGE:
            a["train"].pop(key), b["train"].pop(key)
        if a != b:
            diff = [f"{sec}.{k}" for sec in a if isinstance(a[sec], dict)
                    for k in a[sec] if a[sec].get(k) != b.get(sec, {}).get(k)]
            raise ConfigError(f"cannot resume {folder.path}: the config differs from the saved one "
                              f"({', '.join(diff) or 'method'}); only {', '.join(RESUME_MAY_CHANGE)} may change")
    elif folder.last_checkpoint.exists():
        raise ConfigError(f"{folder.path} already holds a run; use --resume to continue it or choose another --out")
    elif folder.metrics.exists():  # a run that stopped before its first checkpoint: start clean
        os.replace(folder.metrics, folder.previous_metrics)
        warnings.warn(f"{folder.path} held a run that never saved a checkpoint: starting clean (its log is kept "
                      f"as {folder.previous_metrics.name})", stacklevel=3)


def write_run_config(config: RunConfig, method: SSLMethod, out: str | Path | RunFolder) -> None:
    """Write the run's ``config.json`` (config, code versions, resolved method config)."""
    folder = RunFolder(out)
    folder.path.mkdir(parents=True, exist_ok=True)
    write_json(folder.config, {"config": config.to_dict(), "version": code_version(),
                               "method_config_resolved": to_dict(method.cfg)})
