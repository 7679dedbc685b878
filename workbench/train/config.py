"""Run configuration: data, model, method and training settings (one dataclass each)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from workbench.config import from_dict, param, to_dict
from workbench.methods import MethodConfig, get_method


@dataclass
class DataConfig:
    manifest: str = param("", "Path to the manifest CSV (see `workbench manifest validate`).")
    image_size: int = param(64, "Training resolution in px (square). 48-64 on CPU; the papers use 112-224.",
                            min=16, max=1024)
    split: str = param("train", "Split to pretrain on ('all' = every row). Keep val/test for evaluation.",
                       choices=("train", "val", "test", "all"))
    cache_dir: str = param("", "Where decoded face arrays are cached ('' = $WORKBENCH_CACHE, else "
                               "a .workbench-cache folder next to the manifest, else ~/.cache/workbench).")


@dataclass
class ModelConfig:
    backbone: str = param("resnet18", "Any timm model name (never downloads weights). Tiny choices for CPU: "
                                      "resnet18, resnet10t, vit_tiny_patch16_224 (with --image-size 64 → "
                                      "patch grid 4x4), convnext_atto.")
    weights: str = param("", "Optional local file (.safetensors or tensor-only .pth) to initialise the backbone.")
    small_stem: bool = param(False, "timm ResNets only: 3x3 stride-1 first conv(s) and no max-pool, so a 48-64 px "
                                     "face keeps a 48x48 map before layer1 (12x12 with the ImageNet stem) and 1-2 px "
                                     "cues survive; costs ~13x the compute (resnet18, 64 images at 48 px, forward+backward: "
                                     "37 -> 479 GFLOP, 0.5 -> 6.5 s on one CPU thread). Off by default for that cost "
                                     "(ImageNet conv1 weights load as their 3x3 centre).")


@dataclass
class TrainConfig:
    epochs: int = param(10, "Passes over the training split.", min=1)
    batch_size: int = param(64, "Items per step (a contrastive method sees 2x as many images). "
                                "Lower it on CUDA out-of-memory.", min=2)
    lr: float = param(1e-3, "Peak learning rate (after warm-up). AdamW 1e-3 works for small backbones; "
                            "SGD needs ~0.05·batch/256.", min=0.0)
    optimizer: str = param("adamw", "Optimiser.", choices=("adamw", "adam", "sgd"))
    weight_decay: float = param(1e-4, "Weight decay (AdamW 1e-4..0.05; SGD 1e-4 or 1e-5).", min=0.0)
    warmup_epochs: float = param(1.0, "Linear warm-up length in epochs (fractions allowed).", min=0.0)
    schedule: str = param("cosine", "LR schedule after warm-up.", choices=("cosine", "constant"))
    grad_clip: float = param(0.0, "Clip the global grad norm to this value (0 = off).", min=0.0)
    amp: str = param("auto", "Mixed precision: 'auto' = bf16 autocast where the hardware has it (CUDA Ampere+, "
                     "CPUs with AVX512-BF16/AMX, e.g. Zen 4, Sapphire Rapids), else float32.",
                     choices=("auto", "bf16", "off"))
    channels_last: str = param("auto", "channels_last memory format: 'auto' = on for CNNs on CUDA, and on CPU "
                               "when the step runs in bf16.",
                               choices=("auto", "on", "off"))
    device_data: str = param("auto", "Keep the decoded faces on the training device and gather batches there "
                                     "(no per-step host gather or copy): 'auto' = on CUDA when they take at most "
                                     "a quarter of the free GPU memory (64 px: 12 KB per face, 1 M faces = 12 GB); "
                                     "'on' = always (also CPU); 'off' = gather on the host, pinned copy per step.",
                             choices=("auto", "on", "off"))
    compile: bool = param(False, "torch.compile the backbone (CUDA; first steps are slow while compiling).")
    seed: int = param(0, "Seed for weights, batch order and augmentations (same seed, same run on CPU).")
    device: str = param("auto", "'auto' picks CUDA > MPS > CPU; or 'cpu', 'cuda', 'cuda:1', 'mps'.")
    log_every: int = param(10, "Log metrics (loss, lr, collapse monitor) every N steps.", min=1)
    checkpoint_every: int = param(1, "Write a numbered checkpoint every N epochs (last.safetensors is "
                                     "always updated at the end of each epoch).", min=1)
    keep_checkpoints: int = param(0, "Keep only the N newest numbered checkpoints (0 = keep all; "
                                     "checkpoints are needed for AlignedUMAP over training).", min=0)
    knn_every: int = param(1, "Online kNN expression accuracy on the val split every N epochs (0 = off; "
                              "needs an expression column).", min=0)
    max_steps: int = param(0, "Stop after this many optimiser steps (0 = no limit; for smoke tests).", min=0)
    threads: int = param(0, "torch CPU threads (0 = leave PyTorch's default).", min=0)
    tensorboard: bool = param(True, "Also write TensorBoard event files to RUN/tensorboard (every logged scalar: "
                                    "loss terms, lr, collapse monitor, online kNN) when the tensorboard package "
                                    "is installed; `tensorboard --logdir runs/` overlays every run.")
    # -- multi-process training (workbench.train.distributed, needs lightning-fabric) --
    devices: int = param(1, "Processes per node: GPUs with device cuda/auto, or CPU processes with device cpu. "
                            "> 1 trains with DDP through Lightning Fabric; batch_size stays the GLOBAL batch and "
                            "must divide exactly (each process gets batch_size / (devices x num_nodes)).", min=1)
    strategy: str = param("ddp", "How the processes start when devices x num_nodes > 1: 'ddp' re-runs the "
                                 "command once per extra device (CLI, scripts; under torchrun/SLURM nothing is "
                                 "started); 'ddp_spawn' spawns workers from Python (tests, notebooks; config and "
                                 "callbacks must be picklable); 'ddp_fork'/'ddp_notebook' fork (CPU, Jupyter); "
                                 "'ddp_find_unused_parameters_true' for methods with unused parameters.",
                          choices=("ddp", "ddp_spawn", "ddp_fork", "ddp_notebook",
                                   "ddp_find_unused_parameters_true"))
    num_nodes: int = param(1, "Machines. > 1 needs a launcher that starts the processes on every node "
                              "(torchrun or SLURM srun, see docs/SCALING.md).", min=1)


@dataclass
class RunConfig:
    """Everything needed to reproduce a pretraining run (saved as config.json in the run folder)."""

    method: str = param("simclr", "SSL method name (see `workbench methods`).")
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    method_config: dict[str, Any] = param({}, "Method options (see the method's config; unknown keys are errors).")

    def to_dict(self) -> dict[str, Any]:
        return to_dict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RunConfig:
        return from_dict(cls, d)

    def build_method_config(self) -> MethodConfig:
        cls = get_method(self.method)
        return from_dict(cls.Config, self.method_config, where=f"method '{self.method}'")
