"""`workbench benchmark`: settings, the reference pipeline, the report (structure only: speed is never
asserted in tests, it is measured by the benchmark itself)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from workbench.benchmark import (
    BenchConfig,
    TwoViewFiles,
    reference_transform,
    resolve,
    run_benchmark,
    summary,
    to_markdown,
)
from workbench.errors import ConfigError


def test_resolve_fills_cpu_and_quick_defaults():
    full, dev = resolve(BenchConfig(device="cpu"))
    assert dev.type == "cpu"
    assert (full.images, full.image_size, full.batch_size) == (2000, 64, 64)
    assert full.backbones == "resnet10t,resnet18" and full.workers >= 1 and full.rounds > 1
    quick, _ = resolve(BenchConfig(device="cpu", quick=True))
    assert quick.images < full.images and quick.backbones == "resnet10t"
    mine, _ = resolve(BenchConfig(device="cpu", images=10, batch_size=4, workers=3, backbones="resnet34"))
    assert (mine.images, mine.batch_size, mine.workers, mine.backbones) == (10, 4, 3, "resnet34")
    with pytest.raises(ConfigError, match="unknown timm backbone 'x'"):  # checked before any work
        resolve(BenchConfig(device="cpu", backbones="x"))
    with pytest.raises(ConfigError, match="unknown section 'nosuch'"):
        resolve(BenchConfig(device="cpu", skip="umap,nosuch"))


def test_reference_pipeline_gives_two_normalised_views(tiny_synth):
    from workbench.data.manifest import Manifest

    paths = [str(p) for p in Manifest.load(tiny_synth).abs_paths()[:3]]
    ds = TwoViewFiles(paths, 32)
    v1, v2 = ds[0]
    assert v1.shape == v2.shape == (3, 32, 32) and v1.dtype == torch.float32
    assert not torch.equal(v1, v2)  # independent random views
    assert v1.min() < 0  # Normalize applied (the reference model's own normalisation is the identity)
    assert len(reference_transform(48).transforms) == 7


def _fake_result(device: str, ratio: float, frac: float) -> dict:
    ips = {"workbench": 10.0 * ratio, "reference": 10.0, "model_only": 10.0 * ratio / frac}
    return {
        "machine": {"device": device, "cpu_count": 2, "cpu_affinity": 2, "torch": "x", "torch_threads": 2,
                    "device_name": "gpu", "load_average_start": [1, 1, 1], "load_average_end": [1, 1, 1]},
        "settings": {"images": 8, "image_size": 32, "batch_size": 4, "workers": 1, "rounds": 1, "steps": 1,
                     "amp": "auto", "channels_last": "auto", "quick": True},
        "total_seconds": 1.0, "memory": {"setup": {"peak_rss_mb": 100.0}},
        "pretrain": [{"backbone": "b", "images_per_s": ips, "ratio_workbench_vs_reference": ratio,
                      "ratio_per_round": [ratio], "ratio_median_of_rounds": ratio,
                      "fraction_of_model_only": {"workbench": frac, "reference": frac / ratio},
                      "ratio_cpu_efficiency_workbench_vs_reference": 1.0,
                      "breakdown_cpu_ms": dict.fromkeys(
                          ("workbench_gather_transfer_per_batch", "workbench_two_global_views_per_batch",
                           "model_step_per_batch", "workbench_step_per_batch",
                           "reference_step_per_batch_main_plus_workers", "reference_decode_per_image_1thread",
                           "reference_two_transforms_per_image_1thread", "reference_input_per_batch_1thread"), 1.0),
                      "reference_worker_peak_rss_mb": [50.0], "cuda_max_allocated_mb": None}],
    }


@pytest.mark.parametrize("device,ratio,frac,met", [("cpu", 1.6, 0.5, True), ("cpu", 1.2, 0.99, False),
                                                   ("cuda", 1.1, 0.75, True), ("cuda", 3.0, 0.6, False)])
def test_targets_cpu_ratio_and_gpu_fraction_of_model_only(device, ratio, frac, met):
    res = _fake_result(device, ratio, frac)
    res["summary"] = summary(res)
    assert res["summary"]["b"]["target_met"] is met
    md = to_markdown(res)
    assert f"**{ratio:.2f}x**" in md and ("| yes (" if met else "| no (") in md


@pytest.mark.slow
def test_tiny_benchmark_run_writes_json_and_markdown(tmp_path):
    out = tmp_path / "bench"
    cfg = BenchConfig(out=str(out), device="cpu", images=48, image_size=32, batch_size=8, backbones="test_resnet",
                      workers=1, rounds=1, steps=1, skip="umap", source_size=48, source_format="jpeg")
    res = run_benchmark(cfg, log=lambda _m: None)
    saved = json.loads((out / "benchmark.json").read_text())
    assert saved["machine"]["cpu_count"] >= 1 and saved["settings"]["batch_size"] == 8
    # both pipelines read 48 px JPEG files; the cache holds them at the 32 px training size
    assert (saved["files"]["format"], saved["files"]["width"], saved["files"]["count"]) == ("JPEG", 48, 48)
    (p,) = saved["pretrain"]
    assert p["step_precision"] in ("float32", "bfloat16") and isinstance(p["channels_last"], bool)
    assert set(p["images_per_s"]) == {"workbench", "reference", "model_only"}
    assert all(np.isfinite(v) and v > 0 for v in p["images_per_s"].values())
    assert len(p["step_seconds"]["reference"]) == 1 and len(p["step_seconds"]["reference"][0]) == 1
    assert p["cpu_seconds_per_step"]["reference"][0] > 0 and p["breakdown_cpu_ms"]["model_step_per_batch"] > 0
    assert {"global", "warp", "faceswap", "mask"} <= set(saved["views"][0]["images_per_s"])
    assert saved["embeddings"]["images"] == saved["cache_build"]["images"] > 0
    assert "umap" not in saved and saved["summary"]["test_resnet"]["target"].startswith("workbench >=")
    probes = saved["probes"]  # the linear probe fit, scikit-learn vs torch, side by side in one run
    assert probes["rows"] == 2000 and probes["sklearn_cpu"]["median_s"] > 0 and probes["torch_cpu"]["median_s"] > 0
    assert abs(probes["sklearn_cpu"]["train_accuracy"] - probes["torch_cpu"]["train_accuracy"]) <= 0.01
    md = (out / "benchmark.md").read_text()
    assert "| test_resnet |" in md and "Peak memory" in md and "linear probe fit (torch L-BFGS, CPU" in md
    assert res["total_seconds"] > 0


def test_cli_parses_quick_and_options():
    from workbench.cli.main import build_parser

    args = build_parser().parse_args(["benchmark", "--quick", "--out", "d", "--device", "cpu", "--workers", "3",
                                      "--backbones", "resnet10t"])
    assert args.quick and args.out == "d" and args.workers == 3 and args.backbones == "resnet10t"
    assert args.func.__module__ == "workbench.cli.benchmark"
