"""Training: the run config, the loop, checkpoints and multi-process training (run folders: ``workbench.runs``)."""

from workbench.train.config import DataConfig, ModelConfig, RunConfig, TrainConfig
from workbench.train.trainer import Trainer, TrainResult

__all__ = ["DataConfig", "ModelConfig", "RunConfig", "TrainConfig", "TrainResult", "Trainer"]
