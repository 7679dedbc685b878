"""A run's embeddings of a manifest, cached in the run folder.

``extract_embeddings(run, manifest)`` feeds the manifest's faces (decoded once, at the run's image size)
through the run's method in eval mode, batched, on the GPU when present, and caches ``feats`` and ``z``
under the run's ``embeddings/`` folder. The key covers the checkpoint file (path, size, modification
time), the manifest fingerprint and the size, so a stale cache is never reused.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from workbench.data.cache import load_face_data
from workbench.data.manifest import Manifest
from workbench.evaluate.embeddings import Embeddings, embed_faces
from workbench.io import atomic_write
from workbench.runs.load import LoadedRun, load_run


def embeddings_key(checkpoint: Path, fingerprint: str, size: int) -> str:
    """Cache key of one checkpoint's embeddings of one manifest at one size."""
    st = checkpoint.stat()
    h = hashlib.sha256(f"{checkpoint.resolve()}|{st.st_size}|{st.st_mtime_ns}|{fingerprint}|{size}".encode())
    return h.hexdigest()[:16]


def extract_embeddings(run: LoadedRun | str | Path, manifest: Manifest | str | Path, *, batch_size: int = 256,
                       device: str | None = None, use_cache: bool = True, progress: bool = False) -> Embeddings:
    """Embeddings of ``manifest`` under ``run`` (a LoadedRun or a run folder path)."""
    if not isinstance(run, LoadedRun):
        run = load_run(run)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    size = run.image_size
    cache = run.folder.embeddings(run.checkpoint.stem, embeddings_key(run.checkpoint, manifest.fingerprint(), size))
    data = load_face_data(manifest, size, cache_dir=run.config.data.cache_dir or None, progress=progress)
    meta = data.manifest.frame.reset_index(drop=True)
    if use_cache and cache.is_file():
        with np.load(cache) as npz:
            return Embeddings(npz["feats"], npz["z"], meta, run.name, run.checkpoint.stem)
    feats, z = embed_faces(run.method, data, batch_size=batch_size, device=device)
    atomic_write(cache, lambda p: np.savez(open(p, "wb"), feats=feats, z=z))
    return Embeddings(feats, z, meta, run.name, run.checkpoint.stem)
