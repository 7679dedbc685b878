"""Benchmark harness: settings (:class:`BenchConfig`, :func:`resolve`, :func:`check_settings`), timing and
memory helpers, machine information."""

from __future__ import annotations

import copy
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from workbench.config import param
from workbench.errors import ConfigError

#: what the pipeline should reach (benchmarks/README.md)
TARGET_CPU_RATIO = 1.5  # workbench / reference images/s on a small CPU machine
TARGET_GPU_FRACTION = 0.7  # workbench / model-only images/s on a GPU


@dataclass
class BenchConfig:
    """Settings of one benchmark run (0 / '' = chosen from the device and --quick)."""

    out: str = param("", "Folder for benchmark.json and benchmark.md.")
    device: str = param("auto", "auto | cpu | cuda | cuda:N.")
    quick: bool = param(False, "About 1-2 minutes: fewer images, one small backbone, fewer rounds.")
    images: int = param(0, "Synthetic faces written as PNG for both pipelines (0 = 2000, quick 512).", min=0)
    image_size: int = param(0, "Training resolution (0 = 64 on CPU, 112 on CUDA).", min=0)
    source_size: int = param(0, "Side of the image files both pipelines read (0 = the training size, the case "
                                "most favourable to the reference; real face sets are stored at 100-640 px).",
                             min=0)
    source_format: str = param("png", "Format of the image files: png (compress level 1) or jpeg (quality 90, "
                                      "how most face sets are distributed).", choices=("png", "jpeg"))
    batch_size: int = param(0, "Items per step, 2 views each (0 = 64 on CPU, 256 on CUDA; quick 32 on CPU).",
                            min=0)
    backbones: str = param("", "Comma-separated timm backbones for the pretraining comparison "
                               "('' = resnet10t,resnet18; quick resnet10t).")
    workers: int = param(0, "DataLoader workers of the reference (0 = number of CPUs, at most 8).", min=0)
    rounds: int = param(0, "Alternating rounds of the three pipelines (0 = 6, quick 2).", min=0)
    steps: int = param(0, "Timed steps per pipeline and round (0 = 3, quick 2).", min=0)
    amp: str = param("auto", "Trainer mixed precision for all three pipelines ('auto' = bf16 on CUDA, off on CPU).",
                     choices=("auto", "bf16", "off"))
    channels_last: str = param("auto", "Trainer channels_last for all three pipelines ('auto' = on for CNNs on "
                                       "CUDA).", choices=("auto", "on", "off"))
    umap_points: int = param(0, "Points of the UMAP timing (0 = min(images, 2000)).", min=0)
    skip: str = param("", "Comma-separated sections to skip: pretrain, views, embeddings, umap, probes.")
    seed: int = param(0, "Seed of the synthetic set, weights and batch order.")
    keep: bool = param(False, "Keep the temporary folder with the images and the decoded cache.")


# -- small helpers --------------------------------------------------------------------------------

def sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(who).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def proc_peak_rss_mb(pid: int | None) -> float | None:
    """Peak RSS (VmHWM) of a live process in MiB, from /proc (Linux; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def timed_cpu(fn: Callable[[], Any], dev: torch.device, repeats: int, warmup: int = 1,
               pids: Callable[[], list[int]] = list) -> tuple[list[float], float]:
    """Wall seconds of each call after ``warmup`` calls, and CPU seconds per call over the timed calls
    (this process, all threads, plus the processes ``pids()``, e.g. DataLoader workers)."""
    for _ in range(warmup):
        fn()
    sync(dev)
    out = []
    c0, w0 = time.process_time(), cpu_of(pids())
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync(dev)
        out.append(time.perf_counter() - t)
    cpu = time.process_time() - c0 + cpu_of(pids()) - w0
    return out, cpu / max(1, repeats)


def cpu_of(pids: list[int]) -> float:
    """utime + stime of live processes from /proc (Linux; 0 elsewhere), in seconds."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / tick
        except (OSError, ValueError, IndexError):
            pass
    return total


def machine_info(dev: torch.device) -> dict[str, Any]:
    """CPU count, load, library versions, accelerator name."""
    info: dict[str, Any] = {
        "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
        "cpu_count": os.cpu_count(), "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
        else os.cpu_count(), "torch_threads": torch.get_num_threads(), "device": str(dev),
        "device_name": platform.processor() or platform.machine(),
    }
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            names = [ln.split(":", 1)[1].strip() for ln in fh if ln.startswith("model name")]
        if names:
            info["cpu_model"] = names[0]
    except OSError:
        pass
    try:
        import torchvision

        info["torchvision"] = torchvision.__version__
    except ImportError:  # pragma: no cover
        pass
    if dev.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(dev)
        info["cuda"] = torch.version.cuda
    if hasattr(os, "getloadavg"):
        info["load_average_start"] = [round(x, 2) for x in os.getloadavg()]
    return info


def resolve(cfg: BenchConfig) -> tuple[BenchConfig, torch.device]:
    """Fill the automatic settings from the device and --quick."""
    from workbench.device import select_device

    dev = select_device(cfg.device)
    c = copy.copy(cfg)
    gpu = dev.type == "cuda"
    c.images = c.images or (512 if c.quick else 2000)
    c.image_size = c.image_size or (112 if gpu else 64)
    c.source_size = c.source_size or c.image_size
    c.batch_size = c.batch_size or (256 if gpu else (32 if c.quick else 64))
    c.backbones = c.backbones or ("resnet18" if gpu else ("resnet10t" if c.quick else "resnet10t,resnet18"))
    c.workers = c.workers or min(8, os.cpu_count() or 1)
    c.rounds = c.rounds or (2 if c.quick else 6)
    c.steps = c.steps or (2 if c.quick else 3)
    c.umap_points = c.umap_points or min(c.images, 2000)
    check_settings(c)
    return c, dev


#: sections ``--skip`` may name
SECTIONS = ("pretrain", "views", "embeddings", "umap", "probes")


def check_settings(cfg: BenchConfig) -> None:
    """Every argument checked before any work: section names, backbones, a writable ``out``."""
    import timm

    unknown = sorted({s.strip() for s in cfg.skip.split(",") if s.strip()} - set(SECTIONS))
    if unknown:
        raise ConfigError(f"--skip: unknown section '{unknown[0]}' (sections: {', '.join(SECTIONS)})")
    for bb in [b.strip() for b in cfg.backbones.split(",") if b.strip()]:
        if not timm.is_model(bb):
            raise ConfigError(f"--backbones: unknown timm backbone '{bb}'")
    if cfg.out:
        out = Path(cfg.out)
        try:
            out.mkdir(parents=True, exist_ok=True)
            probe = out / f".write-test-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as exc:
            raise ConfigError(f"--out {out} is not a writable folder ({exc.strerror or type(exc).__name__})"
                              ) from None


