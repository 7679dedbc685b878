"""`workbench benchmark --out DIR [--quick] [--device auto]`: throughput and memory, side by side.

One run measures, in the same process and interleaved where it matters (see ``benchmarks/README.md``):

- **pretraining throughput** (SimCLR, 2 views, same model, optimiser and batch size) of
  ``workbench`` (decoded-once uint8 cache → batched augmentation on the device → the trainer's step),
  ``reference`` (PIL decoding of the PNG files + torchvision transforms, two views per image, in a
  ``DataLoader`` with persistent workers, pin_memory on CUDA; the solo-learn / lightly recipe) and
  ``model_only`` (the same step on views already on the device: the ceiling). Rounds of the three
  pipelines alternate (warm-up steps discarded in every round) and the median step time is kept,
  so machine noise hits all three alike; the ratios are the result;
- where the time goes (gather/transfer, augmentation, model step; PIL decode and transforms per item),
- view-family throughput (:func:`workbench.views.bench.view_throughput`), embedding extraction,
  UMAP (first call, numba JIT included, then warm), synthetic generation, the decode-once cache build,
- peak memory: RSS of this process (and of the DataLoader workers) and CUDA max allocated.

Writes ``DIR/benchmark.json`` (machine, settings, raw timings, results) and ``DIR/benchmark.md``.
The measurement functions are importable (``run_benchmark(BenchConfig(...))``).
"""

from __future__ import annotations

import copy
import gc
import json
import math
import os
import platform
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
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

def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def _rss_mb(who: int = resource.RUSAGE_SELF) -> float:
    """Peak resident set size in MiB (``ru_maxrss``: KiB on Linux, bytes on macOS)."""
    r = resource.getrusage(who).ru_maxrss
    return r / (1024 * 1024) if sys.platform == "darwin" else r / 1024


def _proc_peak_rss_mb(pid: int | None) -> float | None:
    """Peak RSS (VmHWM) of a live process in MiB, from /proc (Linux; None elsewhere)."""
    try:
        with open(f"/proc/{pid}/status", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def _median(xs: list[float]) -> float:
    return float(statistics.median(xs)) if xs else float("nan")


def _timed_cpu(fn: Callable[[], Any], dev: torch.device, repeats: int, warmup: int = 1,
               pids: Callable[[], list[int]] = list) -> tuple[list[float], float]:
    """Wall seconds of each call after ``warmup`` calls, and CPU seconds per call over the timed calls
    (this process, all threads, plus the processes ``pids()``, e.g. DataLoader workers)."""
    for _ in range(warmup):
        fn()
    _sync(dev)
    out = []
    c0, w0 = time.process_time(), _cpu_of(pids())
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        _sync(dev)
        out.append(time.perf_counter() - t)
    cpu = time.process_time() - c0 + _cpu_of(pids()) - w0
    return out, cpu / max(1, repeats)


def _cpu_of(pids: list[int]) -> float:
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


# -- the reference pipeline (module level: picklable for DataLoader workers) ----------------------

class PILGaussianBlur:
    """PIL's Gaussian blur with a random radius (what solo-learn and lightly use)."""

    def __init__(self, sigma: tuple[float, float] = (0.1, 2.0)):
        self.sigma = sigma

    def __call__(self, img):
        from PIL import ImageFilter

        return img.filter(ImageFilter.GaussianBlur(radius=random.uniform(*self.sigma)))


def reference_transform(size: int):
    """SimCLR's view transform with torchvision on PIL images, ranges equal to the workbench's defaults."""
    from torchvision import transforms as T

    from workbench.models.backbone import IMAGENET_MEAN, IMAGENET_STD

    return T.Compose([
        T.RandomResizedCrop(size, scale=(0.35, 1.0), ratio=(3 / 4, 4 / 3), antialias=True),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.2, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.RandomApply([PILGaussianBlur((0.1, 2.0))], p=0.5),
        T.ToTensor(),
        T.Normalize(IMAGENET_MEAN, IMAGENET_STD),
    ])


class TwoViewFiles(torch.utils.data.Dataset):
    """Image files → two independently augmented views (decoded with PIL on every access)."""

    def __init__(self, paths: list[str], size: int):
        self.paths, self.size = list(paths), size
        self.transform = reference_transform(size)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            img = im.convert("RGB")
        return self.transform(img), self.transform(img)


# -- pretraining comparison -----------------------------------------------------------------------

def _simclr_views_step(method, optimizer, trainer, views: torch.Tensor, temperature: float) -> float:
    """The trainer's step (autocast, channels_last, NT-Xent, AdamW) on two ready-made views ``(2B, ...)``."""
    from workbench.losses import nt_xent, pair_positive_index

    dev = trainer.device
    if trainer._channels_last():
        views = views.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=dev.type, dtype=trainer.amp_dtype or torch.float32,
                        enabled=trainer.amp_dtype is not None):
        z = method(views)["z"]
        loss = nt_xent(z, pair_positive_index(views.shape[0] // 2, dev), temperature)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return float(loss.detach())


def _forever(make_iter: Callable[[int], Iterator[Any]]) -> Iterator[Any]:
    epoch = 0
    while True:
        yield from make_iter(epoch)
        epoch += 1


def pretrain_comparison(manifest: Path, data, backbone: str, cfg: BenchConfig, dev: torch.device,
                        work: Path) -> dict[str, Any]:
    """Per-step times of workbench / reference / model-only, interleaved in rounds, plus a breakdown."""
    from workbench.methods.base import Batch
    from workbench.train import RunConfig
    from workbench.train.run import build_method
    from workbench.train.trainer import Trainer
    from workbench.views.global_aug import global_augment

    size, bs = cfg.image_size, cfg.batch_size
    temperature = 0.2
    rc = RunConfig.from_dict({
        "method": "simclr", "data": {"manifest": str(manifest), "image_size": size, "split": "all"},
        "model": {"backbone": backbone},
        "train": {"batch_size": bs, "device": str(dev), "epochs": 1000, "knn_every": 0, "log_every": 10**6,
                  "seed": cfg.seed, "warmup_epochs": 0, "amp": cfg.amp, "channels_last": cfg.channels_last},
        "method_config": {"temperature": temperature},
    })
    torch.manual_seed(cfg.seed)
    method = build_method(rc)
    trainer = Trainer(rc, method, data, work / f"run-{backbone}", device=dev, progress=False)
    # the reference trains an identical copy; its inputs are already normalised (transforms.Normalize),
    # so the copy's built-in normalisation becomes the identity (same arithmetic cost)
    ref_method = copy.deepcopy(method)
    ref_method.backbone.mean.zero_()
    ref_method.backbone.std.fill_(1.0)
    ref_opt = trainer._make_optimizer(ref_method.trainable_parameters())
    ref_method.train()

    rows_it = _forever(trainer.sampler.batches)

    def workbench_step() -> None:
        batch = trainer._make_batch(next(rows_it), Batch)
        trainer._train_step(batch)
        trainer.step += 1

    paths = [str(p) for p in data.manifest.abs_paths()]
    loader = torch.utils.data.DataLoader(
        TwoViewFiles(paths, size), batch_size=bs, shuffle=True, drop_last=True, num_workers=cfg.workers,
        persistent_workers=cfg.workers > 0, pin_memory=dev.type == "cuda",
        generator=torch.Generator().manual_seed(cfg.seed))
    ref: dict[str, Any] = {"loader": loader, "it": None}

    def reference_step() -> None:
        try:
            v1, v2 = next(ref["it"])
        except StopIteration:  # end of an epoch: the workers start the next one
            ref["it"] = iter(ref["loader"])
            v1, v2 = next(ref["it"])
        views = torch.cat([v1.to(dev, non_blocking=True), v2.to(dev, non_blocking=True)])
        _simclr_views_step(ref_method, ref_opt, trainer, views, temperature)

    gen = torch.Generator(device=dev).manual_seed(cfg.seed)
    fixed = torch.rand(2 * bs, 3, size, size, device=dev, generator=gen)

    def model_step() -> None:
        _simclr_views_step(method, trainer.optimizer, trainer, fixed, temperature)

    # Every round restarts the reference's iterator just before its turn (a new epoch: empty prefetch
    # queue, the workers fill it during the discarded warm-up step; afterwards each step costs one
    # batch of worker work, concurrent with the model step). After its turn the workers still refill
    # the last consumed batch: the other pipelines discard two warm-up steps to absorb it. The order of
    # the pipelines rotates from round to round.
    warm = {"reference": 1, "model_only": 2, "workbench": 2}
    fns = {"reference": reference_step, "model_only": model_step, "workbench": workbench_step}
    times: dict[str, list[list[float]]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}

    def worker_pids() -> list[int]:
        return [w.pid for w in getattr(getattr(ref.get("loader"), "_iterator", None), "_workers", [])]

    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    names = list(fns)
    for rnd in range(cfg.rounds):
        for name in names[rnd % 3:] + names[:rnd % 3]:
            fn = fns[name]
            if name == "reference":
                ref["it"] = iter(loader)
            wall, c = _timed_cpu(fn, dev, cfg.steps, warmup=warm[name],
                                 pids=worker_pids if name == "reference" else list)
            times[name].append(wall)
            cpu[name].append(c)
    cuda_peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    worker_rss = [_proc_peak_rss_mb(w.pid) for w in getattr(getattr(loader, "_iterator", None), "_workers", [])]
    del loader
    ref.clear()  # stop the workers, so that their peak RSS is counted in RUSAGE_CHILDREN
    gc.collect()

    # where the time goes, in CPU seconds (robust to other tenants of a shared machine):
    # workbench = host gather + transfer, two global views, model step; reference = per item work
    rows = next(rows_it)
    _, c_batch = _timed_cpu(lambda: trainer._make_batch(rows, Batch), dev, cfg.steps)
    x = trainer._make_batch(rows, Batch).images[:, 0]
    vcfg = method.cfg.views
    _, c_aug = _timed_cpu(lambda: (global_augment(x, vcfg, gen), global_augment(x, vcfg, gen)), dev, cfg.steps)
    ds = TwoViewFiles(paths[:64], size)
    from PIL import Image

    c0 = time.process_time()
    imgs = []
    for p in ds.paths:
        with Image.open(p) as im:
            imgs.append(im.convert("RGB"))
    t_decode = (time.process_time() - c0) / len(imgs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in a DataLoader worker
    try:
        c0 = time.process_time()
        for img in imgs:
            ds.transform(img), ds.transform(img)
        t_tf = (time.process_time() - c0) / len(imgs)
    finally:
        torch.set_num_threads(threads)

    med = {k: _median([t for r in v for t in r]) for k, v in times.items()}
    ips = {k: bs / v for k, v in med.items()}
    per_round = {k: [bs / _median(r) for r in v] for k, v in times.items()}
    # pipelines of one round ran seconds apart: per-round ratios are robust to slow load drifts
    round_ratios = [w / r for w, r in zip(per_round["workbench"], per_round["reference"])]
    cpu_med = {k: _median(v) for k, v in cpu.items()}
    return {
        "backbone": backbone, "image_size": size, "batch_size": bs, "views_per_image": 2,
        "step_precision": str(trainer.amp_dtype or torch.float32).replace("torch.", ""),
        "channels_last": trainer._channels_last(),
        "images_per_s": ips, "images_per_s_per_round": per_round,
        "ratio_workbench_vs_reference": ips["workbench"] / ips["reference"],
        "ratio_per_round": round_ratios, "ratio_median_of_rounds": _median(round_ratios),
        "fraction_of_model_only": {"workbench": ips["workbench"] / ips["model_only"],
                                   "reference": ips["reference"] / ips["model_only"]},
        "step_seconds": times, "warmup_steps_per_round": warm,
        "cpu_seconds_per_step": cpu, "images_per_cpu_second": {k: bs / v for k, v in cpu_med.items()},
        "ratio_cpu_efficiency_workbench_vs_reference": cpu_med["reference"] / cpu_med["workbench"],
        "breakdown_cpu_ms": {
            "workbench_gather_transfer_per_batch": 1e3 * c_batch,
            "workbench_two_global_views_per_batch": 1e3 * c_aug,
            "model_step_per_batch": 1e3 * cpu_med["model_only"],
            "workbench_step_per_batch": 1e3 * cpu_med["workbench"],
            "reference_step_per_batch_main_plus_workers": 1e3 * cpu_med["reference"],
            "reference_decode_per_image_1thread": 1e3 * t_decode,
            "reference_two_transforms_per_image_1thread": 1e3 * t_tf,
            "reference_input_per_batch_1thread": 1e3 * bs * (t_decode + t_tf),
        },
        "cuda_max_allocated_mb": cuda_peak,
        "reference_worker_peak_rss_mb": [r for r in worker_rss if r is not None],
    }


# -- the other sections ---------------------------------------------------------------------------

def views_section(dev: torch.device, size: int, batch: int, rounds: int) -> dict[str, Any]:
    """Median images/s of each view family over ``rounds`` calls of ``view_throughput``."""
    from workbench.views.bench import view_throughput

    runs = [view_throughput(dev, batch_size=batch, size=size, repeats=3) for _ in range(max(1, rounds))]
    return {"device": str(dev), "batch_size": batch, "image_size": size,
            "images_per_s": {k: _median([r[k] for r in runs]) for k in runs[0]}, "raw": runs}


def embeddings_section(method, data, dev: torch.device, repeats: int) -> tuple[dict[str, Any], np.ndarray]:
    from workbench.evaluate.embeddings import embed_faces

    embed_faces(method, data.subset(np.arange(min(256, len(data)))), device=dev)  # warm-up
    feats = None
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        feats, _z = embed_faces(method, data, batch_size=256, device=dev)
        _sync(dev)
        times.append(time.perf_counter() - t)
    assert feats is not None
    return ({"images": len(data), "batch_size": 256, "dim": int(feats.shape[1]), "seconds": times,
             "images_per_s": len(data) / _median(times)}, feats)


def umap_section(feats: np.ndarray, points: int, repeats: int) -> dict[str, Any]:
    from workbench.analysis.umap import compute_map

    x = feats[:points]
    t = time.perf_counter()
    compute_map(x, method="umap", seed=0)
    first = time.perf_counter() - t
    warm = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        compute_map(x, method="umap", seed=0)
        warm.append(time.perf_counter() - t)
    return {"points": int(x.shape[0]), "dim": int(x.shape[1]), "first_call_s": first, "warm_s": warm,
            "warm_median_s": _median(warm), "numba_jit_and_import_s_approx": first - _median(warm),
            "note": "first call = import + numba JIT (less when numba's on-disk cache is warm) + fit; "
                    "UMAP with a seed is single-threaded"}


def probe_section(dev: torch.device, rows: int = 10_000, dim: int = 512, classes: int = 8,
                  repeats: int = 1) -> dict[str, Any]:
    """Seconds of one linear-probe fit on seeded ``(rows, dim)`` float32 features: scikit-learn vs torch
    (CPU, and ``dev`` when it is CUDA): the ``probes`` section of :func:`run_benchmark`."""
    from workbench.evaluate.probe import fit_linear_probe

    rng = np.random.default_rng(0)
    y = np.arange(rows) % classes
    X = (rng.normal(size=(classes, dim))[y] * 0.08 + rng.normal(size=(rows, dim))).astype(np.float32)
    runs = [("sklearn", torch.device("cpu")), ("torch", torch.device("cpu"))]
    if dev.type == "cuda":
        runs.append(("torch", dev))
    out: dict[str, Any] = {"rows": rows, "dim": dim, "classes": classes, "threads": torch.get_num_threads()}
    for backend, d in runs:
        fit_linear_probe(X[:256], y[:256], backend=backend, device=d)  # warm-up (imports, CUDA context)
        times, acc = [], 0.0
        for _ in range(max(1, repeats)):
            t = time.perf_counter()
            probe = fit_linear_probe(X, y, backend=backend, device=d)
            _sync(d)
            times.append(time.perf_counter() - t)
            acc = float((probe.predict(X) == y).mean())
        out[f"{backend}_{d.type}"] = {"seconds": times, "median_s": _median(times), "train_accuracy": acc,
                                      "converged": probe.converged}
    return out


# -- the run --------------------------------------------------------------------------------------

def convert_to_jpeg(manifest: Path, out_dir: Path, quality: int = 90) -> Path:
    """Re-encode a manifest's images as JPEG files (same pixels, same rows) and return the new manifest."""
    from PIL import Image

    from workbench.data.manifest import Manifest

    src = Manifest.load(manifest)
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    frame = src.frame.copy()
    paths = []
    for i, path in enumerate(src.abs_paths()):
        rel = f"images/{i:06d}.jpg"
        with Image.open(path) as im:
            im.convert("RGB").save(out_dir / rel, format="JPEG", quality=quality)
        paths.append(rel)
    frame["path"] = paths
    return Manifest.from_frame(frame, out_dir).save(out_dir / "manifest.csv")


def files_info(manifest: Path) -> dict[str, Any]:
    """Count, format, pixel size and mean byte size of the files a manifest lists."""
    from PIL import Image

    from workbench.data.manifest import Manifest

    paths = Manifest.load(manifest, validate=False).abs_paths()
    with Image.open(paths[0]) as im:
        fmt, wh = im.format, im.size
    return {"count": len(paths), "format": fmt, "width": wh[0], "height": wh[1],
            "mean_bytes": float(np.mean([p.stat().st_size for p in paths]))}


def resolve(cfg: BenchConfig) -> tuple[BenchConfig, torch.device]:
    """Fill the automatic settings from the device and --quick."""
    from workbench.train.trainer import select_device

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


def run_benchmark(cfg: BenchConfig, *, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Run every section and return the results dict (also written to ``cfg.out`` when set)."""
    from workbench.config import to_dict
    from workbench.data.cache import load_face_data
    from workbench.data.synth import SynthConfig, generate_dataset

    cfg, dev = resolve(cfg)
    skip = {s.strip() for s in cfg.skip.split(",") if s.strip()}
    result: dict[str, Any] = {"machine": machine_info(dev), "settings": to_dict(cfg),
                              "targets": {"cpu_ratio_min": TARGET_CPU_RATIO,
                                          "gpu_fraction_of_model_only_min": TARGET_GPU_FRACTION},
                              "memory": {}}
    t_all = time.perf_counter()
    work = Path(tempfile.mkdtemp(prefix="wb-bench-"))

    def mem(section: str) -> None:
        result["memory"][section] = {"peak_rss_mb": round(_rss_mb(), 1)}

    try:
        log(f"[benchmark] {dev} · {cfg.images} synthetic faces, files {cfg.source_size} px "
            f"{cfg.source_format.upper()}, training at {cfg.image_size} px, in {work}")
        ident = max(8, math.ceil(cfg.images / 80))  # >= 8 identities: train, val and test splits
        per = max(1, math.ceil(cfg.images / ident))
        t = time.perf_counter()
        manifest = generate_dataset(SynthConfig(identities=ident, images_per_identity=per, size=cfg.source_size,
                                                seed=cfg.seed), work / "synth", progress=False)
        gen_s = time.perf_counter() - t
        n_img = ident * per
        result["synth"] = {"images": n_img, "size": cfg.source_size, "format": "PNG (compress_level=1)",
                           "seconds": gen_s, "images_per_s": n_img / gen_s, "processes": 1}
        if cfg.source_format == "jpeg":
            manifest = convert_to_jpeg(manifest, work / "jpeg")
        result["files"] = files_info(manifest)
        t = time.perf_counter()
        data = load_face_data(manifest, cfg.image_size, cache_dir=work / "cache", progress=False)
        cache_s = time.perf_counter() - t
        result["cache_build"] = {"images": len(data), "seconds": cache_s, "images_per_s": len(data) / cache_s,
                                 "note": f"one-time decode of the {cfg.source_format.upper()} files into the "
                                         f"memory-mapped uint8 cache at {cfg.image_size} px"}
        mem("setup")

        if "pretrain" not in skip:
            result["pretrain"] = []
            for bb in [b.strip() for b in cfg.backbones.split(",") if b.strip()]:
                log(f"[benchmark] pretraining throughput: {bb}, batch {cfg.batch_size}, {cfg.rounds} rounds "
                    f"x {cfg.steps} steps, reference with {cfg.workers} workers")
                r = pretrain_comparison(manifest, data, bb, cfg, dev, work)
                result["pretrain"].append(r)
                log("[benchmark]   images/s " + ", ".join(f"{k} {v:.1f}" for k, v in r["images_per_s"].items())
                    + f" -> workbench/reference {r['ratio_workbench_vs_reference']:.2f}x")
            mem("pretrain")

        if "views" not in skip:
            log("[benchmark] view families")
            vb = 128 if dev.type == "cpu" else 256
            result["views"] = [views_section(torch.device("cpu"), cfg.image_size, vb, cfg.rounds)]
            if dev.type == "cuda":
                result["views"].append(views_section(dev, cfg.image_size, vb, cfg.rounds))
            mem("views")

        feats = None
        if "embeddings" not in skip or "umap" not in skip:
            from workbench.train import RunConfig
            from workbench.train.run import build_method

            bb = cfg.backbones.split(",")[-1].strip()
            log(f"[benchmark] embedding extraction ({bb})")
            if dev.type == "cuda":
                torch.cuda.reset_peak_memory_stats(dev)
            m = build_method(RunConfig.from_dict({"method": "simclr", "model": {"backbone": bb},
                                                  "data": {"image_size": cfg.image_size}}))
            emb, feats = embeddings_section(m, data, dev, repeats=1 if cfg.quick else 3)
            emb["backbone"] = bb
            if dev.type == "cuda":
                emb["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
            if "embeddings" not in skip:
                result["embeddings"] = emb
            mem("embeddings")

        if "umap" not in skip and feats is not None:
            log(f"[benchmark] UMAP on {min(cfg.umap_points, len(feats))} x {feats.shape[1]}")
            result["umap"] = umap_section(feats, cfg.umap_points, repeats=1 if cfg.quick else 2)
            mem("umap")

        if "probes" not in skip:
            rows = 2000 if cfg.quick or cfg.images < 1000 else 10_000
            log(f"[benchmark] linear probe fit on {rows} x 512 features: scikit-learn vs torch")
            result["probes"] = probe_section(dev, rows=rows, repeats=1 if cfg.quick else 3)
            mem("probes")
    finally:
        if not cfg.keep:
            shutil.rmtree(work, ignore_errors=True)
    if hasattr(os, "getloadavg"):
        result["machine"]["load_average_end"] = [round(x, 2) for x in os.getloadavg()]
    result["total_seconds"] = time.perf_counter() - t_all
    result["summary"] = summary(result)
    if cfg.out:
        write_report(result, cfg.out)
    return result


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """Headline numbers and whether the targets are met."""
    out: dict[str, Any] = {}
    gpu = result["machine"]["device"].startswith("cuda")
    for r in result.get("pretrain", []):
        ok = (r["fraction_of_model_only"]["workbench"] >= TARGET_GPU_FRACTION if gpu
              else r["ratio_workbench_vs_reference"] >= TARGET_CPU_RATIO)
        out[r["backbone"]] = {"ratio_workbench_vs_reference": round(r["ratio_workbench_vs_reference"], 3),
                              "workbench_fraction_of_model_only": round(r["fraction_of_model_only"]["workbench"], 3),
                              "target": (f"workbench >= {TARGET_GPU_FRACTION:.0%} of model-only" if gpu
                                         else f"workbench >= {TARGET_CPU_RATIO}x reference"),
                              "target_met": bool(ok)}
    return out


def _f(x: Any, nd: int = 1) -> str:
    if x is None:
        return "–"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return str(x)


def _files_line(result: dict[str, Any]) -> str:
    f = result.get("files")
    if not f:  # results written before the files were recorded: PNG at the training size
        return f"PNG at {result['settings']['image_size']} px"
    return f"{f['count']} {f['format']} files of {f['width']}x{f['height']} px, {f['mean_bytes'] / 1024:.1f} KiB each"


def to_markdown(result: dict[str, Any]) -> str:
    """The report as markdown tables."""
    m, s = result["machine"], result["settings"]
    lines = [
        "# workbench benchmark", "",
        f"- machine: {m.get('cpu_model', m.get('device_name'))}, {m['cpu_count']} CPUs "
        f"({m['cpu_affinity']} usable), torch {m['torch']} ({m['torch_threads']} threads), device `{m['device']}`"
        + (f" ({m['device_name']})" if m["device"].startswith("cuda") else ""),
        f"- load average at start / end: {m.get('load_average_start')} / {m.get('load_average_end')}",
        f"- files: {_files_line(result)}; training at {s['image_size']} px",
        f"- settings: {s['images']} synthetic faces, batch {s['batch_size']} "
        f"(2 views each), reference DataLoader workers {s['workers']}, {s['rounds']} rounds x {s['steps']} "
        f"timed steps (medians), amp={s['amp']}, channels_last={s['channels_last']}, quick={s['quick']}",
        f"- total time {result['total_seconds']:.0f} s", "",
    ]
    if result.get("pretrain"):
        r0 = result["pretrain"][0]
        step = (f"model step in {r0.get('step_precision', 'float32')}"
                + (" autocast" if r0.get("step_precision", "float32") != "float32" else "")
                + (", channels_last" if r0.get("channels_last") else ""))
        lines += [f"## Pretraining throughput (SimCLR, images/s; each image = 2 views; {step}, the same in all "
                  "three pipelines)", "",
                  "| backbone | workbench | reference (PIL + DataLoader) | model-only | workbench / reference "
                  "| per-round ratios: median [min, max] | workbench / model-only | reference / model-only "
                  "| target met |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---|"]
        for r in result["pretrain"]:
            ips, fr = r["images_per_s"], r["fraction_of_model_only"]
            met = result["summary"][r["backbone"]]
            lines.append(f"| {r['backbone']} | {_f(ips['workbench'])} | {_f(ips['reference'])} | "
                         f"{_f(ips['model_only'])} | **{r['ratio_workbench_vs_reference']:.2f}x** | "
                         f"{r['ratio_median_of_rounds']:.2f}x [{min(r['ratio_per_round']):.2f}, "
                         f"{max(r['ratio_per_round']):.2f}] | {fr['workbench']:.0%} | {fr['reference']:.0%} | "
                         f"{'yes' if met['target_met'] else 'no'} ({met['target']}) |")
        lines += ["", "CPU cost per step (CPU seconds of this process, all threads, plus the reference's DataLoader "
                  "workers; far less sensitive to other tenants of a shared machine than wall time):", "",
                  "| backbone | workbench | reference | model-only | images per CPU-second: workbench / reference |",
                  "|---|---:|---:|---:|---:|"]
        for r in result["pretrain"]:
            b = r["breakdown_cpu_ms"]
            lines.append(f"| {r['backbone']} | {b['workbench_step_per_batch'] / 1e3:.2f} s | "
                         f"{b['reference_step_per_batch_main_plus_workers'] / 1e3:.2f} s | "
                         f"{b['model_step_per_batch'] / 1e3:.2f} s | "
                         f"{r['ratio_cpu_efficiency_workbench_vs_reference']:.2f}x |")
        lines += ["", "Where the time goes (CPU ms):", "",
                  "| backbone | wb gather+transfer / batch | wb 2 global views / batch | model step / batch "
                  "| ref decode / image (1 thread) | ref 2 transforms / image (1 thread) | ref input work / batch |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for r in result["pretrain"]:
            b = r["breakdown_cpu_ms"]
            lines.append(f"| {r['backbone']} | {_f(b['workbench_gather_transfer_per_batch'])} | "
                         f"{_f(b['workbench_two_global_views_per_batch'])} | {_f(b['model_step_per_batch'])} | "
                         f"{_f(b['reference_decode_per_image_1thread'], 3)} | "
                         f"{_f(b['reference_two_transforms_per_image_1thread'], 3)} | "
                         f"{_f(b['reference_input_per_batch_1thread'])} |")
        lines.append("")
    if result.get("views"):
        lines += ["## View families (images/s)", "", "| device | batch | size | global | warp | faceswap | mask |",
                  "|---|---:|---:|---:|---:|---:|---:|"]
        for v in result["views"]:
            i = v["images_per_s"]
            lines.append(f"| {v['device']} | {v['batch_size']} | {v['image_size']} | {_f(i.get('global'))} | "
                         f"{_f(i.get('warp'))} | {_f(i.get('faceswap'))} | {_f(i.get('mask'))} |")
        lines.append("")
    lines += ["## Other throughput", "", "| what | amount | time | rate |", "|---|---|---:|---:|"]
    if "synth" in result:
        y = result["synth"]
        lines.append(f"| synthetic generation (1 process, PNG) | {y['images']} faces @ {y['size']} px | "
                     f"{y['seconds']:.1f} s | {y['images_per_s']:.0f} images/s |")
    if "cache_build" in result:
        c = result["cache_build"]
        fmt = result.get("files", {}).get("format", "PNG")
        lines.append(f"| decode-once cache build (to {result['settings']['image_size']} px) | {c['images']} {fmt} "
                     f"files | {c['seconds']:.1f} s | "
                     f"{c['images_per_s']:.0f} images/s |")
    if "embeddings" in result:
        e = result["embeddings"]
        lines.append(f"| embedding extraction ({e['backbone']}, eval) | {e['images']} images → {e['dim']}-d | "
                     f"{_median(e['seconds']):.1f} s | {e['images_per_s']:.0f} images/s |")
    if "umap" in result:
        u = result["umap"]
        lines.append(f"| UMAP first call (import + numba JIT + fit) | {u['points']} x {u['dim']} | "
                     f"{u['first_call_s']:.1f} s | – |")
        lines.append(f"| UMAP warm (fit only) | {u['points']} x {u['dim']} | {u['warm_median_s']:.1f} s | "
                     f"{u['points'] / u['warm_median_s']:.0f} points/s |")
    if "probes" in result:
        p = result["probes"]
        for key, label in (("sklearn_cpu", "scikit-learn L-BFGS, CPU"), ("torch_cpu", "torch L-BFGS, CPU"),
                           ("torch_cuda", "torch L-BFGS, CUDA")):
            if key in p:
                lines.append(f"| linear probe fit ({label}, {p['threads']} threads) | {p['rows']} x {p['dim']}, "
                             f"{p['classes']} classes | {p[key]['median_s']:.2f} s | – |")
    lines += ["", "## Peak memory", "", "Peak RSS of the benchmark process (monotone: the section that raised it "
              "is the first with the higher value):", "", "| after section | peak RSS (MiB) |", "|---|---:|"]
    for k, v in result["memory"].items():
        lines.append(f"| {k} | {v['peak_rss_mb']:.0f} |")
    wr = [(r["backbone"], max(r["reference_worker_peak_rss_mb"])) for r in result.get("pretrain", [])
          if r.get("reference_worker_peak_rss_mb")]
    if wr:
        lines += ["", "Peak RSS of one reference DataLoader worker (forked: shares pages with the main process): "
                  + ", ".join(f"{b} {mb:.0f} MiB" for b, mb in wr)]
    cuda = [(r["backbone"], r["cuda_max_allocated_mb"]) for r in result.get("pretrain", [])
            if r.get("cuda_max_allocated_mb")]
    if cuda:
        lines += ["", "CUDA max allocated during the pretraining comparison: "
                  + ", ".join(f"{b} {mb:.0f} MiB" for b, mb in cuda)]
    return "\n".join(lines) + "\n"


def write_report(result: dict[str, Any], out: str | Path) -> tuple[Path, Path]:
    """``OUT/benchmark.json`` and ``OUT/benchmark.md`` (atomic writes)."""
    from workbench.io import atomic_write

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    js, md = out / "benchmark.json", out / "benchmark.md"
    text = json.dumps(result, indent=1, default=float)
    atomic_write(js, lambda p: Path(p).write_text(text, encoding="utf-8"))
    report = to_markdown(result)
    atomic_write(md, lambda p: Path(p).write_text(report, encoding="utf-8"))
    return js, md
