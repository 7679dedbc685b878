"""Frozen-feature evaluation of a run: one protocol on the run's (cached) embeddings of a manifest."""

from __future__ import annotations

from pathlib import Path

from workbench.data.manifest import Manifest
from workbench.evaluate.embeddings import Embeddings
from workbench.evaluate.protocols import EvalConfig, EvalResult
from workbench.evaluate.run_eval import evaluate_embedding_set
from workbench.runs.embeddings import extract_embeddings
from workbench.runs.load import LoadedRun


def evaluate_run(run: LoadedRun | str | Path, manifest: Manifest | str | Path, cfg: EvalConfig | None = None, *,
                 embeddings: Embeddings | None = None) -> EvalResult:
    """Run one protocol (:class:`EvalConfig`) on a run's embeddings of ``manifest``.

    ``embeddings`` reuses one embedding pass for several protocols (``workbench evaluate``)."""
    cfg = cfg or EvalConfig()
    if embeddings is None:
        embeddings = extract_embeddings(run, manifest)
    return evaluate_embedding_set(embeddings.get(cfg.feature), embeddings.meta, cfg)
