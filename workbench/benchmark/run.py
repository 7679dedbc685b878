"""The measurements: the pretraining comparison (workbench vs reference vs model-only), the other
sections, and :func:`run_benchmark` (all of them, then the report)."""

from __future__ import annotations

import copy
import gc
import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.benchmark.harness import (
    TARGET_CPU_RATIO,
    TARGET_GPU_FRACTION,
    BenchConfig,
    machine_info,
    median,
    proc_peak_rss_mb,
    resolve,
    rss_mb,
    sync,
    timed_cpu,
)
from workbench.benchmark.reference import TwoViewFiles, convert_to_jpeg, files_info
from workbench.benchmark.report import summary, write_report

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
    from workbench.runs import RunFolder, build_method
    from workbench.train import RunConfig
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
    trainer = Trainer(rc, method, data, RunFolder(work / f"run-{backbone}"), device=dev, progress=False)
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
            wall, c = timed_cpu(fn, dev, cfg.steps, warmup=warm[name],
                                 pids=worker_pids if name == "reference" else list)
            times[name].append(wall)
            cpu[name].append(c)
    cuda_peak = torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None
    worker_rss = [proc_peak_rss_mb(w.pid) for w in getattr(getattr(loader, "_iterator", None), "_workers", [])]
    del loader
    ref.clear()  # stop the workers, so that their peak RSS is counted in RUSAGE_CHILDREN
    gc.collect()

    # where the time goes, in CPU seconds (robust to other tenants of a shared machine):
    # workbench = gather (+ transfer unless the data are on the device), two global views, model step; reference = per item work
    rows = next(rows_it)
    _, c_batch = timed_cpu(lambda: trainer._make_batch(rows, Batch), dev, cfg.steps)
    x = trainer._make_batch(rows, Batch).images[:, 0]
    vcfg = method.cfg.views
    _, c_aug = timed_cpu(lambda: (global_augment(x, vcfg, gen), global_augment(x, vcfg, gen)), dev, cfg.steps)
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

    med = {k: median([t for r in v for t in r]) for k, v in times.items()}
    ips = {k: bs / v for k, v in med.items()}
    per_round = {k: [bs / median(r) for r in v] for k, v in times.items()}
    # pipelines of one round ran seconds apart: per-round ratios are robust to slow load drifts
    round_ratios = [w / r for w, r in zip(per_round["workbench"], per_round["reference"])]
    cpu_med = {k: median(v) for k, v in cpu.items()}
    return {
        "backbone": backbone, "image_size": size, "batch_size": bs, "views_per_image": 2,
        "step_precision": str(trainer.amp_dtype or torch.float32).replace("torch.", ""),
        "channels_last": trainer._channels_last(),
        "device_data": trainer.data.on_device(dev),  # faces uploaded once, batches gathered on the device
        "images_per_s": ips, "images_per_s_per_round": per_round,
        "ratio_workbench_vs_reference": ips["workbench"] / ips["reference"],
        "ratio_per_round": round_ratios, "ratio_median_of_rounds": median(round_ratios),
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
            "images_per_s": {k: median([r[k] for r in runs]) for k in runs[0]}, "raw": runs}


def embeddings_section(method, data, dev: torch.device, repeats: int) -> tuple[dict[str, Any], np.ndarray]:
    from workbench.evaluate.embeddings import embed_faces

    embed_faces(method, data.subset(np.arange(min(256, len(data)))), device=dev)  # warm-up
    feats = None
    times = []
    for _ in range(max(1, repeats)):
        t = time.perf_counter()
        feats, _z = embed_faces(method, data, batch_size=256, device=dev)
        sync(dev)
        times.append(time.perf_counter() - t)
    assert feats is not None
    return ({"images": len(data), "batch_size": 256, "dim": int(feats.shape[1]), "seconds": times,
             "images_per_s": len(data) / median(times)}, feats)


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
            "warm_median_s": median(warm), "numba_jit_and_import_s_approx": first - median(warm),
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
            sync(d)
            times.append(time.perf_counter() - t)
            acc = float((probe.predict(X) == y).mean())
        out[f"{backend}_{d.type}"] = {"seconds": times, "median_s": median(times), "train_accuracy": acc,
                                      "converged": probe.converged}
    return out


# -- the run --------------------------------------------------------------------------------------

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
        result["memory"][section] = {"peak_rss_mb": round(rss_mb(), 1)}

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
            from workbench.runs import build_method
            from workbench.train import RunConfig

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


