"""The one place that knows how a run folder is laid out.

::

    RUN/
      config.json                 run config, code versions, resolved method config
      .lock                       pid, host and start time of the process writing the run
      metrics.jsonl               one JSON record per logged step and per epoch end
      metrics.previous.jsonl      the log of an earlier start that never saved a checkpoint
      checkpoints/last.safetensors            latest weights + optimiser + training state (header)
      checkpoints/epoch-0003.safetensors      numbered checkpoints (weights + training state)
      tensorboard/                TensorBoard event files
      embeddings/<ckpt>-<key>.npz cached features of one checkpoint over one manifest
      analysis/<name>/            persisted results (evaluation, finetune, UMAP, separation, attention)

Every other module asks a :class:`RunFolder` for these paths instead of spelling them out.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

CONFIG = "config.json"
LOCK = ".lock"
METRICS = "metrics.jsonl"
PREVIOUS_METRICS = "metrics.previous.jsonl"
CHECKPOINTS = "checkpoints"
LAST = "last"
CHECKPOINT_SUFFIX = ".safetensors"
TENSORBOARD = "tensorboard"
EMBEDDINGS = "embeddings"
ANALYSIS = "analysis"
_NUMBERED = re.compile(r"epoch-\d{4,}")


@dataclass(frozen=True)
class RunFolder:
    """Paths of one run folder (nothing is created until something is written)."""

    path: Path

    def __init__(self, path: str | Path | RunFolder):
        object.__setattr__(self, "path", Path(path.path if isinstance(path, RunFolder) else path))

    def __fspath__(self) -> str:
        return str(self.path)

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def config(self) -> Path:
        return self.path / CONFIG

    @property
    def lock(self) -> Path:
        return self.path / LOCK

    @property
    def metrics(self) -> Path:
        return self.path / METRICS

    @property
    def previous_metrics(self) -> Path:
        return self.path / PREVIOUS_METRICS

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    @property
    def last_checkpoint(self) -> Path:
        return self.checkpoint(LAST)

    def checkpoint(self, name: str | Path) -> Path:
        """``'last'``, ``'epoch-0003'`` or a path (returned as it is when it has a suffix)."""
        p = Path(name)
        if p.suffix:
            return p
        return self.checkpoints / f"{name}{CHECKPOINT_SUFFIX}"

    def numbered_checkpoint(self, epoch: int) -> Path:
        return self.checkpoint(numbered_name(epoch))

    def numbered_checkpoints(self) -> list[Path]:
        """Numbered checkpoints in training order (``epoch-0001`` ...)."""
        if not self.checkpoints.is_dir():
            return []
        return sorted(p for p in self.checkpoints.glob(f"epoch-*{CHECKPOINT_SUFFIX}")
                      if _NUMBERED.fullmatch(p.name[: -len(CHECKPOINT_SUFFIX)]))

    @property
    def tensorboard(self) -> Path:
        return self.path / TENSORBOARD

    @property
    def embeddings_folder(self) -> Path:
        return self.path / EMBEDDINGS

    def embeddings(self, checkpoint_stem: str, key: str) -> Path:
        return self.embeddings_folder / f"{checkpoint_stem}-{key}.npz"

    def analysis(self, name: str) -> Path:
        """``RUN/analysis/<name>``: where one persisted result lives."""
        return self.path / ANALYSIS / name

    def is_run(self) -> bool:
        """A run folder with a config (it may not have a checkpoint yet)."""
        return self.config.is_file()

    def is_trained(self) -> bool:
        """A run that saved at least one checkpoint (it can be analysed or resumed)."""
        return self.config.is_file() and self.last_checkpoint.is_file()


def numbered_name(epoch: int) -> str:
    return f"epoch-{epoch:04d}"


def find_runs(root: str | Path, *, trained: bool = True) -> list[Path]:
    """Run folders at ``root`` itself or below it (any depth), sorted; ``trained`` keeps only those with a
    checkpoint. Folders inside a run (checkpoints, analysis, ...) are not searched."""
    root = Path(root)
    found: list[Path] = []
    if not root.is_dir():
        return found

    def visit(folder: Path, depth: int) -> None:
        run = RunFolder(folder)
        if run.is_run():
            if not trained or run.is_trained():
                found.append(folder)
            return
        if depth >= 4:
            return
        try:
            children = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
        except OSError:
            return
        for child in children:
            visit(child, depth + 1)

    visit(root, 0)
    return sorted(found)
