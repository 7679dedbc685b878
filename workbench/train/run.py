"""Run folders: create and resume a pretraining run, and load a finished one for analysis."""

from __future__ import annotations

import os
import platform
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.errors import CheckpointError, ConfigError, WorkbenchError
from workbench.io import read_json_object, write_json
from workbench.train.config import RunConfig


def code_version() -> dict[str, Any]:
    """Package version, git commit (when run from a checkout) and library versions."""
    import timm

    import workbench

    sha = ""
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(workbench.__file__).parent,
                             capture_output=True, text=True, timeout=5).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        pass
    return {"workbench": workbench.__version__, "git": sha, "torch": torch.__version__,
            "timm": timm.__version__, "python": platform.python_version()}


def build_method(config: RunConfig):
    """Instantiate the backbone and the method of a run config (random init unless weights given)."""
    from workbench.methods import get_method
    from workbench.models import Backbone

    cls = get_method(config.method)
    mcfg = config.build_method_config()
    backbone = Backbone(config.model.backbone, image_size=config.data.image_size,
                        weights=config.model.weights or None, small_stem=config.model.small_stem)
    return cls(mcfg, backbone, config.data.image_size)


def prepare_data(config: RunConfig, *, progress: bool = True):
    """Load (decode once, cached) the training split and the val split for online kNN."""
    from workbench.data.cache import load_face_data

    data = load_face_data(config.data.manifest, config.data.image_size,
                          cache_dir=config.data.cache_dir or None, progress=progress)
    if config.data.split == "all":
        return data, None
    train = data.split(config.data.split)
    val = None
    try:
        val = data.split("val")
    except Exception:  # noqa: BLE001 - no val split: online kNN is skipped
        val = None
    return train, val


#: training options that may differ when resuming (they do not change what is computed, except that
#: a larger ``epochs`` extends the cosine schedule: exact only when resuming with the same value)
RESUME_MAY_CHANGE = ("epochs", "max_steps", "device", "threads", "knn_every", "log_every",
                     "checkpoint_every", "keep_checkpoints", "devices", "strategy", "num_nodes", "tensorboard")


def pretrain(config: RunConfig, out_dir: str | Path, *, resume: bool = False, callbacks=None,
             progress: bool = True, trainer_hook=None):
    """Pretrain ``config`` into ``out_dir``; returns a :class:`~workbench.train.trainer.TrainResult`.

    ``resume=True`` continues from ``out_dir/checkpoints/last.safetensors`` (the saved config must
    match). ``trainer_hook(trainer)`` is called before training starts (the notebook keeps the
    trainer to call ``trainer.stop()``).
    """
    from contextlib import nullcontext

    from workbench.train.lock import RunLock, is_rank_zero_process

    # one writer per run folder; the extra processes of a multi-process run work under rank 0's lock
    with RunLock(out_dir) if is_rank_zero_process() else nullcontext():
        return _pretrain(config, Path(out_dir), resume=resume, callbacks=callbacks, progress=progress,
                         trainer_hook=trainer_hook)


def _pretrain(config: RunConfig, out: Path, *, resume: bool, callbacks, progress: bool, trainer_hook):
    from workbench.train.trainer import Trainer

    # -- several processes (devices x num_nodes > 1): DDP through Lightning Fabric --
    if config.train.devices * config.train.num_nodes > 1:
        from workbench.train.distributed import pretrain_distributed

        return pretrain_distributed(config, out, resume=resume, callbacks=callbacks, progress=progress,
                                    trainer_hook=trainer_hook)
    # --
    check_run_folder(config, out, resume=resume)
    config.build_method_config()  # validate early
    if config.train.threads:
        torch.set_num_threads(config.train.threads)
    torch.manual_seed(config.train.seed)
    method = build_method(config)
    from workbench.data.manifest import Manifest

    method.check_data(Manifest.load(config.data.manifest))  # before decoding anything
    train, val = prepare_data(config, progress=progress)
    write_run_config(config, method, out)
    trainer = Trainer(config, method, train, out, val_data=val, callbacks=callbacks, progress=progress)
    if resume:
        trainer.resume(out / "checkpoints" / "last.safetensors")
    if trainer_hook is not None:
        trainer_hook(trainer)
    return trainer.fit()


def read_run_config(cfg_path: Path) -> RunConfig:
    """The :class:`RunConfig` in a run's ``config.json``; a damaged file is one CheckpointError line."""
    try:
        meta = read_json_object(cfg_path, "run config")
    except WorkbenchError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_path}: not a valid run config (no 'config' mapping); was it edited by hand?")
    try:
        config = RunConfig.from_dict(meta["config"])
        from workbench.methods import get_method

        get_method(config.method)
        return config
    except WorkbenchError as exc:
        raise CheckpointError(f"{cfg_path}: not a valid run config ({exc})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: not a valid run config ({type(exc).__name__}: {exc})"[:300]) from None


def check_run_folder(config: RunConfig, out: Path, *, resume: bool) -> None:
    """Refuse to overwrite a run, or to resume one whose config differs (beyond RESUME_MAY_CHANGE)."""
    cfg_path = out / "config.json"
    if resume:
        if not cfg_path.is_file():
            raise ConfigError(f"cannot resume: {cfg_path} not found")
        saved = read_run_config(cfg_path)
        a, b = saved.to_dict(), config.to_dict()
        for key in RESUME_MAY_CHANGE:
            a["train"].pop(key), b["train"].pop(key)
        if a != b:
            diff = [f"{sec}.{k}" for sec in a if isinstance(a[sec], dict)
                    for k in a[sec] if a[sec].get(k) != b.get(sec, {}).get(k)]
            raise ConfigError(f"cannot resume {out}: the config differs from the saved one "
                              f"({', '.join(diff) or 'method'}); only {', '.join(RESUME_MAY_CHANGE)} may change")
    elif (out / "checkpoints" / "last.safetensors").exists():
        raise ConfigError(f"{out} already holds a run; use --resume to continue it or choose another --out")
    elif (out / "metrics.jsonl").exists():  # a run that stopped before its first checkpoint: start clean
        import warnings

        os.replace(out / "metrics.jsonl", out / "metrics.previous.jsonl")
        warnings.warn(f"{out} held a run that never saved a checkpoint: starting clean (its log is kept as "
                      "metrics.previous.jsonl)", stacklevel=3)


def write_run_config(config: RunConfig, method, out: Path) -> None:
    """Write ``out/config.json`` (config, code versions, resolved method config)."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {"config": config.to_dict(), "version": code_version(),
                                     "method_config_resolved": _resolved(method)})


def _resolved(method) -> dict[str, Any]:
    from workbench.config import to_dict

    return to_dict(method.cfg)


@dataclass
class LoadedRun:
    """A run loaded for analysis: the method in eval mode plus its config."""

    path: Path
    config: RunConfig
    method: Any
    checkpoint: Path
    state: dict[str, Any]

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def image_size(self) -> int:
        return self.config.data.image_size


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Numbered checkpoints in training order (``epoch-0001`` ...)."""
    return sorted((Path(run_dir) / "checkpoints").glob("epoch-*.safetensors"))


def load_run(run_dir: str | Path, checkpoint: str | Path = "last", device: str | torch.device = "cpu") -> LoadedRun:
    """Load a run folder (``checkpoint``: 'last', 'epoch-0003', or a path) with its method in eval mode."""
    run = Path(run_dir)
    cfg_path = run / "config.json"
    if not cfg_path.is_file():
        raise CheckpointError(f"{run} is not a run folder (no config.json); create one with `workbench pretrain`")
    config = read_run_config(cfg_path)
    ck = Path(checkpoint)
    if not ck.suffix:
        ck = run / "checkpoints" / f"{checkpoint}.safetensors"
    from workbench.train.checkpoint import load_checkpoint

    method = build_method(_without_weights(config))
    state = load_checkpoint(ck, method)
    method.to(device).eval()
    return LoadedRun(run, config, method, ck, state)


def _without_weights(config: RunConfig) -> RunConfig:
    d = config.to_dict()
    d["model"]["weights"] = ""
    return RunConfig.from_dict(d)
