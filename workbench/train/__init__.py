"""Training: run config, the loop, checkpoints and run folders."""

from workbench.train.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.train.run import LoadedRun, build_method, list_checkpoints, load_run, pretrain

__all__ = ["DataConfig", "LoadedRun", "ModelConfig", "RunConfig", "TrainConfig", "build_method",
           "list_checkpoints", "load_run", "pretrain"]
