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
The measurement functions are importable (``run_benchmark(BenchConfig(...))``). Modules:
:mod:`.harness` (settings, timing, memory, machine), :mod:`.reference` (the PIL + DataLoader pipeline),
:mod:`.run` (the measurements), :mod:`.report` (summary, markdown, files).
"""

from workbench.benchmark.harness import (
           SECTIONS,
           TARGET_CPU_RATIO,
           TARGET_GPU_FRACTION,
           BenchConfig,
           check_settings,
           resolve,
)
from workbench.benchmark.reference import TwoViewFiles, reference_transform
from workbench.benchmark.report import summary, to_markdown, write_report
from workbench.benchmark.run import run_benchmark

__all__ = ["SECTIONS", "TARGET_CPU_RATIO", "TARGET_GPU_FRACTION", "BenchConfig", "TwoViewFiles", "check_settings",
           "reference_transform", "resolve", "run_benchmark", "summary", "to_markdown", "write_report"]
