"""`workbench benchmark --out DIR [--quick]`: throughput and memory (the code is :mod:`workbench.benchmark`)."""

from __future__ import annotations

import argparse
from pathlib import Path

from workbench.benchmark import BenchConfig, run_benchmark, to_markdown
from workbench.config import describe

# -- CLI ------------------------------------------------------------------------------------------

def register(sub) -> None:
    p = sub.add_parser(
        "benchmark", help="throughput and memory of the pipeline vs a PIL/DataLoader reference",
        description="Measure pretraining throughput (workbench vs PIL + torchvision DataLoader vs model-only, "
                    "SimCLR, same model and batch), view families, embedding extraction, UMAP, synthetic "
                    "generation and peak memory. Writes OUT/benchmark.json and OUT/benchmark.md.")
    p.add_argument("--out", required=True, help="folder for benchmark.json and benchmark.md")
    p.add_argument("--quick", action="store_true", help="about 1-2 minutes (fewer images/rounds, one backbone)")
    p.add_argument("--keep", action="store_true", help="keep the temporary images and decoded cache")
    for spec in describe(BenchConfig):
        if spec.name in ("out", "quick", "keep"):
            continue
        p.add_argument("--" + spec.name.replace("_", "-"), dest=spec.name, type=spec.type, default=None,
                       help=f"{spec.help} [default: {spec.default}]")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from workbench.config import from_dict

    given = {spec.name: getattr(args, spec.name) for spec in describe(BenchConfig)
             if getattr(args, spec.name, None) is not None}
    cfg = from_dict(BenchConfig, given)
    result = run_benchmark(cfg)
    print(to_markdown(result))
    print(f"wrote {Path(cfg.out) / 'benchmark.json'} and {Path(cfg.out) / 'benchmark.md'}")
    return 0
