"""Reading run folders: the saved config, the method it describes, and a checkpoint loaded for analysis."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.errors import CheckpointError, WorkbenchError
from workbench.io import read_json_object
from workbench.methods import SSLMethod, get_method
from workbench.models import Backbone
from workbench.runs.layout import RunFolder
from workbench.train.checkpoint import load_checkpoint
from workbench.train.config import RunConfig


def build_method(config: RunConfig) -> SSLMethod:
    """Instantiate the backbone and the method of a run config (random init unless weights given)."""
    cls = get_method(config.method)
    mcfg = config.build_method_config()
    backbone = Backbone(config.model.backbone, image_size=config.data.image_size,
                        weights=config.model.weights or None, small_stem=config.model.small_stem)
    return cls(mcfg, backbone, config.data.image_size)


def read_run_meta(run: str | Path | RunFolder) -> dict[str, Any]:
    """The whole ``config.json`` of a run (config, code versions, resolved method config)."""
    path = RunFolder(run).config
    try:
        return read_json_object(path, "run config")
    except WorkbenchError as exc:
        raise CheckpointError(str(exc)) from None


def read_run_config(run: str | Path | RunFolder) -> RunConfig:
    """The :class:`RunConfig` of a run folder (or of a ``config.json`` path); a damaged file is one
    CheckpointError line."""
    cfg_path = Path(run) if Path(run).suffix == ".json" else RunFolder(run).config
    try:
        meta = read_json_object(cfg_path, "run config")
    except WorkbenchError as exc:
        raise CheckpointError(str(exc)) from None
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"{cfg_path}: not a valid run config (no 'config' mapping); was it edited by hand?")
    try:
        config = RunConfig.from_dict(meta["config"])
        get_method(config.method)
        return config
    except WorkbenchError as exc:
        raise CheckpointError(f"{cfg_path}: not a valid run config ({exc})") from None
    except (KeyError, TypeError, AttributeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: not a valid run config ({type(exc).__name__}: {exc})"[:300]) from None


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
    def folder(self) -> RunFolder:
        return RunFolder(self.path)

    @property
    def image_size(self) -> int:
        return self.config.data.image_size


def list_checkpoints(run_dir: str | Path) -> list[Path]:
    """Numbered checkpoints in training order (``epoch-0001`` ...)."""
    return RunFolder(run_dir).numbered_checkpoints()


def load_run(run_dir: str | Path | RunFolder, checkpoint: str | Path = "last",
             device: str | torch.device = "cpu") -> LoadedRun:
    """Load a run folder (``checkpoint``: 'last', 'epoch-0003', or a path) with its method in eval mode."""
    run = RunFolder(run_dir)
    if not run.is_run():
        raise CheckpointError(f"{run.path} is not a run folder (no config.json); create one with `workbench pretrain`")
    config = read_run_config(run)
    ck = run.checkpoint(checkpoint)
    method = build_method(_without_weights(config))
    state = load_checkpoint(ck, method)
    method.to(device).eval()
    return LoadedRun(run.path, config, method, ck, state)


def _without_weights(config: RunConfig) -> RunConfig:
    d = config.to_dict()
    d["model"]["weights"] = ""
    return RunConfig.from_dict(d)
