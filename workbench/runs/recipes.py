"""Recipes: make (or reuse) a synthetic set and small runs, so every notebook runs standalone and later
notebooks reuse what earlier ones made under the same ``OUT`` folder.

Run folders are named after their recipe (``{method}_{backbone}_{batch}-{epochs}e_{dataset}_{seed}``),
so a notebook finds a run made by another notebook with the same settings instead of retraining.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.config import to_dict
from workbench.data.synth import SynthConfig, generate_dataset, validate
from workbench.errors import ConfigError
from workbench.methods import get_method
from workbench.runs.layout import RunFolder
from workbench.runs.pretrain import pretrain
from workbench.train.config import RunConfig


def recipe_name(method: str, backbone: str, batch_size: int, epochs: int, dataset: str, seed: int = 0) -> str:
    """``simclr_resnet18_64-10e_synth_0``: what a run folder is called (style of mmpretrain/solo-learn)."""
    clean = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in dataset) or "data"
    return f"{method}_{backbone}_{batch_size}-{epochs}e_{clean}_{seed}"


def ensure_synth(out_dir: str | Path, *, identities: int = 16, images_per_identity: int = 24, size: int = 48,
                 seed: int = 0, views: int = 0, clips: bool = False, clip_length: int = 16) -> Path:
    """The manifest of a synthetic set in ``out_dir``, generated unless the same settings exist there."""
    cfg = validate(SynthConfig(identities=identities, images_per_identity=images_per_identity, size=size,
                               seed=seed, views=views, clips=clips, clip_length=clip_length))
    out = Path(out_dir)
    manifest = out / "manifest.csv"
    saved = out / "synth_config.json"
    if manifest.is_file() and saved.is_file():
        try:
            if json.loads(saved.read_text(encoding="utf-8")) == to_dict(cfg):
                return manifest
        except (OSError, ValueError):
            pass
    return generate_dataset(cfg, out, progress=False)


def run_config(manifest: str | Path, method: str = "simclr", *, backbone: str = "resnet18", image_size: int = 48,
               epochs: int = 5, batch_size: int = 32, max_steps: int = 0, seed: int = 0, lr: float = 2e-3,
               method_config: dict[str, Any] | None = None, **train: Any) -> RunConfig:
    """A validated :class:`~workbench.train.RunConfig` from the few settings notebooks expose."""
    return RunConfig.from_dict({
        "method": method, "data": {"manifest": str(manifest), "image_size": image_size},
        "model": {"backbone": backbone}, "method_config": dict(method_config or {}),
        "train": {"epochs": epochs, "batch_size": batch_size, "max_steps": max_steps, "seed": seed, "lr": lr,
                  "log_every": 1, **train}})


def ensure_runs(out_dir: str | Path, manifest: str | Path, methods: Sequence[str] = ("simclr", "byol"), *,
                backbone: str = "resnet18", image_size: int = 48, epochs: int = 5, batch_size: int = 32,
                max_steps: int = 0, seed: int = 0, progress: bool = True, **train: Any) -> list[Path]:
    """Run folders for ``methods`` in ``out_dir`` (trained now when missing; finished ones are reused).

    Uses each method's ``cpu`` preset when it has one. Returns the run folders in ``methods`` order.
    """
    if not methods:
        raise ConfigError("choose at least one method")
    out = Path(out_dir)
    dataset = Path(manifest).parent.name
    runs = []
    for m in methods:
        cls = get_method(m)
        run = out / recipe_name(cls.name, backbone, batch_size, epochs, dataset, seed)
        if not RunFolder(run).is_trained():
            cfg = run_config(manifest, cls.name, backbone=backbone, image_size=image_size, epochs=epochs,
                             batch_size=batch_size, max_steps=max_steps, seed=seed,
                             method_config=dict(cls.presets.get("cpu", {})), **train)
            if progress:
                print(f"pretraining {run.name} …", flush=True)
            pretrain(cfg, run, progress=progress)
        runs.append(run)
    return runs
