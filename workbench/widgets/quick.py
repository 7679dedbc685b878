"""Notebook set-up helpers: make (or reuse) the synthetic set and small runs, so every notebook runs
standalone and later notebooks reuse what earlier ones made under the same ``OUT`` folder.

Run folders are named after their recipe (``{method}_{backbone}_{batch}-{epochs}e_{dataset}_{seed}``),
so a notebook finds a run made by another notebook with the same settings instead of retraining.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from workbench.errors import ConfigError


def recipe_name(method: str, backbone: str, batch_size: int, epochs: int, dataset: str, seed: int = 0) -> str:
    """``simclr_resnet18_64-10e_synth_0``: what a run folder is called (style of mmpretrain/solo-learn)."""
    clean = "".join(ch if ch.isalnum() or ch in "-." else "-" for ch in dataset) or "data"
    return f"{method}_{backbone}_{batch_size}-{epochs}e_{clean}_{seed}"


def ensure_synth(out_dir: str | Path, *, identities: int = 16, images_per_identity: int = 24, size: int = 48,
                 seed: int = 0, views: int = 0, clips: bool = False, clip_length: int = 16) -> Path:
    """The manifest of a synthetic set in ``out_dir``, generated unless the same settings exist there."""
    from workbench.config import to_dict
    from workbench.data.synth import SynthConfig, generate_dataset, validate

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
               method_config: dict[str, Any] | None = None, **train: Any) -> Any:
    """A validated :class:`~workbench.train.RunConfig` from the few settings notebooks expose."""
    from workbench.train import RunConfig

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
    from workbench.methods import get_method
    from workbench.train import pretrain

    if not methods:
        raise ConfigError("choose at least one method")
    out = Path(out_dir)
    dataset = Path(manifest).parent.name
    runs = []
    for m in methods:
        cls = get_method(m)
        run = out / recipe_name(cls.name, backbone, batch_size, epochs, dataset, seed)
        if not (run / "checkpoints" / "last.safetensors").is_file():
            cfg = run_config(manifest, cls.name, backbone=backbone, image_size=image_size, epochs=epochs,
                             batch_size=batch_size, max_steps=max_steps, seed=seed,
                             method_config=dict(cls.presets.get("cpu", {})), **train)
            if progress:
                print(f"pretraining {run.name} …", flush=True)
            pretrain(cfg, run, progress=False)
        runs.append(run)
    return runs


def find_runs(out_dir: str | Path) -> list[Path]:
    """Finished run folders directly inside ``out_dir`` (sorted by name)."""
    from workbench.widgets._common import run_dirs_in

    return run_dirs_in(out_dir)


def map_over_training(run_dir: str | Path, manifest: Any, *, method: str = "umap", seed: int = 0,
                      max_points: int = 2000) -> Any:
    """2-D maps of a run's numbered checkpoints, stacked with an ``epoch`` column.

    ``method="umap"``: :func:`~workbench.analysis.study.aligned_umap_over_training` (AlignedUMAP: axes
    comparable across epochs; needs >= 2 checkpoints; ~30 s of numba compilation in a fresh kernel).
    ``method="pca"``: one PCA per checkpoint (instant, deterministic signs, but not aligned).
    """
    import numpy as np
    import pandas as pd

    from workbench.analysis.study import aligned_umap_over_training
    from workbench.analysis.umap import EmbeddingMap, compute_map
    from workbench.data.manifest import Manifest
    from workbench.errors import CheckpointError
    from workbench.evaluate.embeddings import extract_embeddings
    from workbench.train.run import list_checkpoints, load_run

    if method == "umap":
        return aligned_umap_over_training(run_dir, manifest, seed=seed, max_points=max_points)
    if method != "pca":
        raise ConfigError(f"method must be 'umap' or 'pca', got '{method}'")
    m = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    cks = list_checkpoints(run_dir)
    if not cks:
        raise CheckpointError(f"{run_dir} has no numbered checkpoints (epoch-*.safetensors)")
    coords, metas, rows = [], [], None
    for ck in cks:
        emb = extract_embeddings(load_run(run_dir, ck.stem), m)
        if rows is None:
            n = len(emb)
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(n, max_points, replace=False)) if n > max_points else np.arange(n)
        keep = [c for c in ("path", "expression", "identity", "split", "view", "group", "clip", "frame")
                if c in emb.meta.columns]
        meta = emb.meta[keep].iloc[rows].reset_index(drop=True)
        meta["abs_path"] = [str(m.root / p) for p in meta["path"]]
        meta["epoch"] = int(ck.stem.split("-")[1])
        coords.append(compute_map(emb.get("feats")[rows], method="pca", seed=seed))
        metas.append(meta)
    return EmbeddingMap(np.concatenate(coords), pd.concat(metas, ignore_index=True), method="pca",
                        params={"seed": seed, "per_checkpoint": True, "epochs": [int(c.stem.split("-")[1]) for c in cks]})
