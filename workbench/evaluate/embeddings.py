"""Extract and cache embeddings of a run over a manifest.

``extract_embeddings(run, manifest)`` feeds the manifest's faces (decoded once, at the run's image
size) through the run's method in eval mode, batched, on the GPU when present, and caches
``feats`` and ``z`` in ``RUN_DIR/embeddings/<checkpoint>-<key>.npz``. The key covers the checkpoint
file, the manifest fingerprint and the size, so a stale cache is never reused.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from workbench.io import atomic_write


@dataclass
class Embeddings:
    """Embeddings of the usable rows of a manifest (``meta`` holds those rows' manifest columns)."""

    feats: np.ndarray
    z: np.ndarray
    meta: pd.DataFrame
    run: str
    checkpoint: str

    def get(self, feature: str = "feats") -> np.ndarray:
        if feature not in ("feats", "z"):
            from workbench.errors import ConfigError

            raise ConfigError(f"feature must be 'feats' or 'z', got '{feature}'")
        return self.feats if feature == "feats" else self.z

    def __len__(self) -> int:
        return len(self.feats)


def _key(checkpoint: Path, fingerprint: str, size: int) -> str:
    st = checkpoint.stat()
    h = hashlib.sha256(f"{checkpoint.resolve()}|{st.st_size}|{st.st_mtime_ns}|{fingerprint}|{size}".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def embed_faces(method, data, *, batch_size: int = 256, device: torch.device | str | None = None
                ) -> tuple[np.ndarray, np.ndarray]:
    """(feats, z) for every row of a FaceData, batched, in eval mode."""
    from workbench.train.trainer import select_device

    dev = torch.device(device) if device is not None else select_device("auto")
    was_training = method.training
    method.eval().to(dev)
    feats, zs = [], []
    amp = dev.type == "cuda"
    for s in range(0, len(data), batch_size):
        rows = np.arange(s, min(s + batch_size, len(data)))
        x, _ = data.batch(rows, dev, pin=amp)
        with torch.autocast(device_type=dev.type, dtype=torch.bfloat16, enabled=amp):
            out = method(x)
        feats.append(out["feats"].float().cpu().numpy())
        zs.append(out["z"].float().cpu().numpy())
    method.train(was_training)
    return np.concatenate(feats), np.concatenate(zs)


def extract_embeddings(run, manifest, *, batch_size: int = 256, device: str | None = None,
                       use_cache: bool = True, progress: bool = False) -> Embeddings:
    """Embeddings of ``manifest`` under ``run`` (a LoadedRun or a run folder path)."""
    from workbench.data.cache import load_face_data
    from workbench.data.manifest import Manifest
    from workbench.train.run import LoadedRun, load_run

    if not isinstance(run, LoadedRun):
        run = load_run(run)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    size = run.image_size
    cache = run.path / "embeddings" / f"{run.checkpoint.stem}-{_key(run.checkpoint, manifest.fingerprint(), size)}.npz"
    data = load_face_data(manifest, size, cache_dir=run.config.data.cache_dir or None, progress=progress)
    meta = data.manifest.frame.reset_index(drop=True)
    if use_cache and cache.is_file():
        with np.load(cache) as npz:
            return Embeddings(npz["feats"], npz["z"], meta, run.name, run.checkpoint.stem)
    feats, z = embed_faces(run.method, data, batch_size=batch_size, device=device)
    atomic_write(cache, lambda p: np.savez(open(p, "wb"), feats=feats, z=z))
    return Embeddings(feats, z, meta, run.name, run.checkpoint.stem)
