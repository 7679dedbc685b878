"""Fine-tuning a run (CL-MEx stage 2) and keeping the result in the run folder."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from workbench.data.manifest import Manifest
from workbench.evaluate.finetune import FinetuneResult, finetune
from workbench.runs.load import LoadedRun, load_run
from workbench.runs.results import finetune_folder


def finetune_run(run: LoadedRun | str | Path, manifest: Manifest | str | Path, *, checkpoint: str = "last",
                 save: bool = True, **settings: Any) -> FinetuneResult:
    """:func:`workbench.evaluate.finetune.finetune` on a run folder (loaded at ``checkpoint``) or a loaded
    run; ``save`` keeps the result in ``RUN/analysis/finetune-<key>/`` (every setting in the key)."""
    loaded = run if isinstance(run, LoadedRun) else load_run(run, checkpoint)
    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    result = finetune(loaded, manifest, **settings)
    if save:
        result.save(finetune_folder(
            loaded.path, checkpoint=result.checkpoint, manifest_path=result.manifest,
            label_fraction=result.label_fraction, epochs=result.epochs, lr=result.lr,
            batch_size=result.config["batch_size"], weight_decay=result.config["weight_decay"],
            augment=result.config["augment"], seed=result.seed))
    return result
