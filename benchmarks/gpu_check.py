"""One prepared, time-boxed check of the workbench on a GPU (``bash benchmarks/gpu_check.sh``).

Steps, each in its own process with its own time limit, so one failure never hides the others:

1. ``env``      machine, torch/CUDA/timm/lightning versions, device name and memory;
2. ``pytest``   the tests marked ``cuda`` (every test with a CUDA variant runs it there);
3. ``methods``  every registered method for a few optimiser steps on the device at sizes it supports
               (simfle at >= 96 px, mae with a ViT, clmex on the multi-view set), the training step under
               ``torch.cuda.set_sync_debug_mode("error")`` (a host-device sync in a step is a failure);
4. ``bench``    ``workbench benchmark --quick`` (throughput vs model-only, views, probes);
5. ``study``    the equal-budget study's GPU quick mode, one seed.

Writes ``OUT/gpu_check.json`` and ``OUT/gpu_check.md`` (plus each step's log). ``--device cpu --quick``
rehearses the whole script on a CPU in a few minutes (tests/test_gpu_check.py runs it).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: seconds per step: GPU budget (8 minutes in all, start-up included) and the CPU rehearsal's
LIMITS = {"gpu": {"env": 30, "pytest": 90, "methods": 150, "bench": 90, "study": 100},
          "cpu": {"env": 30, "pytest": 120, "methods": 240, "bench": 150, "study": 240}}


def _method_smoke(device: str, quick: bool, out: Path) -> dict:
    """Every method for a few steps; returns {method: {status, seconds, loss | error}}."""
    import torch

    from workbench.data.synth_sets import synthetic_manifest_for
    from workbench.methods import METHODS
    from workbench.runs import pretrain
    from workbench.train import RunConfig

    cuda = device.startswith("cuda")
    steps = 3 if quick else 6
    results = {}
    for name, cls in METHODS.items():
        size = 96 if name == "simfle" else (32 if quick else 64)
        backbone = "vit_tiny_patch16_224" if name == "mae" else ("resnet10t" if quick else "resnet18")
        t0 = time.perf_counter()
        try:
            manifest = synthetic_manifest_for(cls.synth_mode, size=size)
            cfg = RunConfig.from_dict({
                "method": name, "data": {"manifest": str(manifest), "image_size": size, "split": "all"},
                "model": {"backbone": backbone},
                "train": {"epochs": 1, "batch_size": 16 if quick else 64, "max_steps": steps, "device": device,
                          "knn_every": 0, "log_every": 10**6, "warmup_epochs": 0, "tensorboard": False},
                "method_config": cls.presets.get("cpu", {})})

            def guard(trainer):
                original = trainer._train_step

                def step(batch):
                    if not cuda or trainer.step < 1:  # the first step logs (reads the loss) by design
                        return original(batch)
                    torch.cuda.set_sync_debug_mode("error")
                    try:
                        return original(batch)
                    finally:
                        torch.cuda.set_sync_debug_mode(0)
                trainer._train_step = step

            res = pretrain(cfg, out / name, progress=False, trainer_hook=guard)
            results[name] = {"status": "ok", "steps": res.step, "loss": res.last_metrics.get("loss"),
                             "image_size": size, "backbone": backbone}
        except Exception as exc:  # noqa: BLE001 - a failing method is a result, not a crash of the check
            results[name] = {"status": "failed", "error": f"{type(exc).__name__}: {str(exc)[:300]}",
                             "image_size": size, "backbone": backbone}
        results[name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(json.dumps({name: results[name]}), flush=True)
    return results


def _env() -> dict:
    import platform

    import torch

    info = {"python": platform.python_version(), "torch": torch.__version__, "cuda": torch.version.cuda,
            "cuda_available": torch.cuda.is_available(), "cpu_count": os.cpu_count(),
            "machine": platform.machine(), "processor": platform.processor()}
    for mod in ("timm", "lightning", "lightning_fabric", "sklearn", "captum", "umap", "plotly"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception:  # noqa: BLE001 - absent or broken: recorded as such
            info[mod] = None
    if torch.cuda.is_available():
        p = torch.cuda.get_device_properties(0)
        info.update(device_name=p.name, device_memory_gib=round(p.total_memory / 2**30, 1),
                    capability=f"{p.major}.{p.minor}", bf16=torch.cuda.is_bf16_supported())
    return info


def _run_step(name: str, cmd: list[str], limit: int, out: Path) -> dict:
    log = out / f"{name}.log"
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
        text, code, status = proc.stdout + proc.stderr, proc.returncode, "ok" if proc.returncode == 0 else "failed"
    except subprocess.TimeoutExpired as exc:
        text = (exc.stdout or b"").decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        text += (exc.stderr or b"").decode(errors="replace") if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        code, status = None, f"timed out after {limit} s"
    log.write_text(text, encoding="utf-8")
    return {"status": status, "returncode": code, "seconds": round(time.perf_counter() - t0, 1),
            "log": log.name, "tail": text[-1500:]}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="benchmarks/results/gpu-check")
    p.add_argument("--device", default="cuda", help="cuda (the real check) or cpu (the rehearsal)")
    p.add_argument("--quick", action="store_true", help="tiny sizes (the CPU rehearsal)")
    p.add_argument("--skip", default="", help="comma-separated steps to leave out")
    p.add_argument("--_step", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if args._step == "env":
        print(json.dumps(_env()))
        return 0
    if args._step == "methods":
        res = _method_smoke(args.device, args.quick, out / "methods")
        (out / "methods.json").write_text(json.dumps(res, indent=1))
        return 0 if all(r["status"] == "ok" for r in res.values()) else 1

    kind = "gpu" if args.device.startswith("cuda") else "cpu"
    limits = LIMITS[kind]
    py, here = sys.executable, str(Path(__file__).resolve())
    cuda_tests = sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_*.py")
                        if "mark.cuda" in f.read_text(encoding="utf-8"))
    study = [py, "-m", "workbench.cli.main", "study", "--out", str(out / "study"), "--seeds", "0",
             "--device", args.device, "--quiet"]
    study += (["--epochs", "1", "--identities", "8", "--images-per-identity", "8", "--image-size", "32",
               "--backbone", "resnet10t", "--batch-size", "16"] if args.quick else ["--mode", "gpu"])
    bench = [py, "-m", "workbench.cli.main", "benchmark", "--quick", "--device", args.device,
             "--out", str(out / "bench"), "--skip", "umap" + (",views,embeddings" if args.quick else "")]
    steps = {
        "env": [py, here, "--_step", "env", "--out", str(out)],
        "pytest": [py, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:cacheprovider", *cuda_tests],
        "methods": [py, here, "--_step", "methods", "--device", args.device, "--out", str(out)]
                   + (["--quick"] if args.quick else []),
        "bench": bench,
        "study": study,
    }
    skip = {s.strip() for s in args.skip.split(",") if s.strip()}
    report = {"device": args.device, "quick": args.quick, "started": time.strftime("%Y-%m-%d %H:%M:%S"),
              "limits_s": limits, "steps": {}}
    for name, cmd in steps.items():
        if name in skip:
            continue
        print(f"[gpu_check] {name} (limit {limits[name]} s)", flush=True)
        report["steps"][name] = res = _run_step(name, cmd, limits[name], out)
        print(f"[gpu_check] {name}: {res['status']} in {res['seconds']} s", flush=True)
    if (out / "methods.json").is_file() and "methods" in report["steps"]:
        report["steps"]["methods"]["methods"] = json.loads((out / "methods.json").read_text())
    if report["steps"].get("env", {}).get("status") == "ok":
        report["env"] = json.loads(report["steps"]["env"]["tail"].strip().splitlines()[-1])
    for name, f in (("bench", out / "bench" / "benchmark.json"), ("study", out / "study" / "study.json")):
        if f.is_file() and name in report["steps"]:
            report["steps"][name]["result_file"] = str(f.relative_to(out))
    (out / "gpu_check.json").write_text(json.dumps(report, indent=1, default=str))
    (out / "gpu_check.md").write_text(markdown(report, out))
    print((out / "gpu_check.md").read_text())
    return 0 if all(s["status"] == "ok" for s in report["steps"].values()) else 1


def markdown(report: dict, out: Path) -> str:
    env = report.get("env", {})
    lines = [f"# gpu_check ({report['device']}{', quick' if report['quick'] else ''}, {report['started']})", "",
             f"- device: {env.get('device_name', 'CPU')} ({env.get('device_memory_gib', '–')} GiB), torch "
             f"{env.get('torch')}, CUDA {env.get('cuda')}, timm {env.get('timm')}, {env.get('cpu_count')} CPUs", "",
             "| step | status | seconds | limit |", "|---|---|---:|---:|"]
    for name, s in report["steps"].items():
        lines.append(f"| {name} | {s['status']} | {s['seconds']} | {report['limits_s'][name]} |")
    methods = report["steps"].get("methods", {}).get("methods", {})
    if methods:
        lines += ["", "| method | status | backbone | px | seconds | loss / error |", "|---|---|---|---:|---:|---|"]
        for name, r in methods.items():
            detail = f"{r['loss']:.4f}" if r.get("loss") is not None else r.get("error", "")
            lines.append(f"| {name} | {r['status']} | {r['backbone']} | {r['image_size']} | {r['seconds']} | "
                         f"{detail} |")
    bench = out / "bench" / "benchmark.md"
    if bench.is_file():
        lines += ["", "## benchmark", "", bench.read_text().split("\n", 1)[-1]]
    study = out / "study" / "study.md"
    if study.is_file():
        lines += ["", "## study (GPU quick mode)" if report["device"] != "cpu" else "## study (rehearsal)", "",
                  study.read_text()]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    sys.exit(main())
