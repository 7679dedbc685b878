"""Where a run's persisted results live: one key per result, holding every setting that changes it.

``RUN/analysis/<key>/`` (a :class:`workbench.results.Results` folder). The key of an analysis of one
checkpoint over one manifest is ``<kind>-<checkpoint>-<manifest fingerprint>``; a fine-tune's key also
holds every fine-tuning hyper-parameter, so a 10-epoch result never overwrites a 2-epoch one.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from workbench.runs.layout import RunFolder


def manifest_key(manifest: Any) -> str:
    """Short key of a manifest's content (its fingerprint)."""
    return manifest.fingerprint()[:10]


def analysis_folder(run: Any, kind: str, manifest: Any) -> Path:
    """``RUN/analysis/<kind>-<checkpoint>-<manifest key>``: one analysis of a loaded run's checkpoint over
    one manifest."""
    return RunFolder(run.path).analysis(f"{kind}-{run.checkpoint.stem}-{manifest_key(manifest)}")


def track_folder(run: Any, kind: str, manifest: Any) -> Path:
    """``RUN/analysis/<kind>-<manifest key>``: an analysis across a run's numbered checkpoints."""
    return RunFolder(run).analysis(f"{kind}-{manifest_key(manifest)}")


def finetune_folder(run: Any, *, checkpoint: str, manifest_path: str | Path, label_fraction: float, epochs: int,
                    lr: float, batch_size: int, weight_decay: float, augment: bool, seed: int) -> Path:
    """``RUN/analysis/finetune-<key>``: every setting that changes a fine-tune's result is in the key."""
    manifest_path = Path(manifest_path)
    manifest_id = hashlib.sha1(str(manifest_path.resolve()).encode()).hexdigest()[:6]
    tag = (f"{checkpoint}-{manifest_path.parent.name}-{manifest_path.stem}-{manifest_id}"
           f"-lf{label_fraction:g}-e{epochs}-lr{lr:g}-b{batch_size}-wd{weight_decay:g}"
           f"-{'aug' if augment else 'noaug'}-s{seed}").replace("/", "_").replace(" ", "_")
    return RunFolder(run).analysis(f"finetune-{tag}")
