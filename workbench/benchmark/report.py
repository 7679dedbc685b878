"""The benchmark report: headline :func:`summary`, markdown tables (:func:`to_markdown`) and
``benchmark.json`` + ``benchmark.md`` (:func:`write_report`)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from workbench.benchmark.harness import TARGET_CPU_RATIO, TARGET_GPU_FRACTION, median


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
            where = " (on device)" if r.get("device_data") else ""
            lines.append(f"| {r['backbone']} | {_f(b['workbench_gather_transfer_per_batch'])}{where} | "
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
                     f"{median(e['seconds']):.1f} s | {e['images_per_s']:.0f} images/s |")
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
