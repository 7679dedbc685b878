"""The run layer: the only code that knows how a run folder is laid out and kept consistent.

- :mod:`~workbench.runs.layout` — the folder's paths (:class:`RunFolder`) and :func:`find_runs`;
- :mod:`~workbench.runs.lock` — one writer per folder (:class:`RunLock`);
- :mod:`~workbench.runs.pretrain` — create or resume a run (one set-up for single and multi-process);
- :mod:`~workbench.runs.load` — read a run's config, load a checkpoint for analysis (:class:`LoadedRun`);
- :mod:`~workbench.runs.embeddings` — a run's embeddings of a manifest, cached under a content key;
- :mod:`~workbench.runs.results` — where persisted results live (keys hold every setting);
- :mod:`~workbench.runs.evaluate`, :mod:`~workbench.runs.finetune` — evaluation and fine-tuning of a run;
- :mod:`~workbench.runs.export` — the backbone as a plain timm state dict;
- :mod:`~workbench.runs.recipes` — named small runs that notebooks make once and reuse;
- :mod:`~workbench.runs.projector` — the TensorBoard embedding projector of a finished run.
"""

from workbench.runs.embeddings import embeddings_key, extract_embeddings
from workbench.runs.evaluate import evaluate_run
from workbench.runs.export import export_backbone
from workbench.runs.finetune import finetune_run
from workbench.runs.layout import RunFolder, find_runs
from workbench.runs.load import (
           LoadedRun,
           build_method,
           list_checkpoints,
           load_run,
           read_run_config,
           read_run_meta,
)
from workbench.runs.lock import RunLock
from workbench.runs.pretrain import pretrain
from workbench.runs.recipes import ensure_runs, ensure_synth, recipe_name, run_config
from workbench.runs.results import analysis_folder, finetune_folder, track_folder

__all__ = ["LoadedRun", "RunFolder", "RunLock", "analysis_folder", "build_method", "embeddings_key",
           "ensure_runs", "ensure_synth", "evaluate_run", "export_backbone", "extract_embeddings", "find_runs",
           "finetune_folder", "finetune_run", "list_checkpoints", "load_run", "pretrain", "read_run_config",
           "read_run_meta", "recipe_name", "run_config", "track_folder"]
