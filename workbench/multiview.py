"""The multi-view study (CL-MEx's setting): ``workbench multiview``.

On a multi-view data set (every expression instance seen from K yaw angles, a ``group`` per instance;
the synthetic ``--views 5`` set by default, or a KDEF/DDCF-style manifest), for every seed:

1. pretrain CL-MEx on the groups (multi-positive contrastive over the simultaneous views);
2. fine-tune its encoder + a linear head on expression (``workbench finetune``), and the same
   architecture from scratch at the same fine-tuning budget (epochs, lr, batch, augmentation, split);
3. score a frozen linear probe of the pretrained encoder and of the untrained one (floor);

every accuracy overall and per view with its 95 % person-bootstrap interval and test-people count. The
study writes ``OUT/multiview.csv`` (one row per seed x model x view, ``all`` = overall) and
``OUT/multiview.md`` (means over seeds, per-seed verdicts, the command). "Beats" on a seed means the two
intervals do not overlap; otherwise the seed shows no difference. Nothing is tuned for either side.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench.config import param
from workbench.data.cache import load_face_data
from workbench.data.manifest import Manifest
from workbench.data.synth import SynthConfig, generate_dataset
from workbench.device import select_device
from workbench.errors import ConfigError
from workbench.evaluate.embeddings import embed_faces
from workbench.evaluate.protocols import EvalConfig
from workbench.evaluate.run_eval import accuracy_by, evaluate_embedding_set
from workbench.io import write_json, write_text_atomic
from workbench.methods import get_method
from workbench.runs import RunFolder, build_method, extract_embeddings, finetune_run, load_run, pretrain
from workbench.train.config import RunConfig

#: the models of the study, in table order
MODELS = ("clmex fine-tuned", "scratch fine-tuned", "clmex frozen linear", "random init frozen linear")


@dataclass
class MultiViewConfig:
    """Settings of ``workbench multiview``."""

    seeds: tuple[int, ...] = param((0, 1, 2), "Seeds: each draws its own synthetic people, weights, split and views.")
    manifest: str = param("", "A multi-view manifest (group + view columns, e.g. KDEF built with `workbench "
                              "manifest build`); '' = the synthetic multi-view set, one per seed.")
    views: int = param(5, "Synthetic views per expression instance (yaw evenly spaced in [-view_range, "
                          "view_range]).", min=2)
    view_range: float = param(60.0, "Largest synthetic |yaw| in degrees.", min=0.0, max=80.0)
    identities: int = param(36, "Synthetic people per seed (>= 12 test people need >= 36 at a 1/3 test share).",
                            min=8)
    instances_per_identity: int = param(8, "Synthetic expression instances per person (each seen from every "
                                           "view).", min=8)
    image_size: int = param(48, "Training and evaluation resolution (px).", min=16)
    backbone: str = param("resnet18", "timm backbone of both sides.")
    epochs: int = param(20, "CL-MEx pretraining epochs.", min=1)
    batch_size: int = param(16, "Groups per pretraining step (x views images).", min=2)
    finetune_epochs: int = param(10, "Fine-tuning epochs, the same for the pretrained and the scratch encoder.",
                                 min=1)
    finetune_lr: float = param(1e-3, "Fine-tuning learning rate (AdamW, cosine), both sides.", min=0.0)
    finetune_batch_size: int = param(32, "Fine-tuning batch size, both sides.", min=2)
    label_fraction: float = param(1.0, "Share of the training labels used to fine-tune and to fit the frozen "
                                       "probes (class-stratified, seeded); 0.1 = the few-label setting where "
                                       "pretraining should matter most.", min=0.001, max=1.0)
    device: str = param("auto", "'auto' uses CUDA when present.")


def _synthetic(cfg: MultiViewConfig, seed: int, folder: Path) -> Path:
    manifest = folder / "manifest.csv"
    if not manifest.is_file():
        generate_dataset(SynthConfig(identities=cfg.identities, images_per_identity=cfg.instances_per_identity,
                                     views=cfg.views, view_range=cfg.view_range, size=cfg.image_size, seed=seed,
                                     test_fraction=1 / 3, val_fraction=0.1), folder, progress=False)
    return manifest


def _rows(seed: int, model: str, overall: Any, per_view: dict[str, dict[str, Any]]) -> list[dict[str, Any]]:
    rows = [{"seed": seed, "model": model, "view": "all", "accuracy": overall.accuracy, "low": overall.ci_low,
             "high": overall.ci_high, "test_people": overall.n_test_people, "n": overall.n_test}]
    for view, s in per_view.items():
        rows.append({"seed": seed, "model": model, "view": view, "accuracy": s["accuracy"], "low": s["ci_low"],
                     "high": s["ci_high"], "test_people": s["people"], "n": s["n"]})
    return rows


def run_multiview_study(out_dir: str | Path, cfg: MultiViewConfig | None = None, *, progress: bool = True,
                        command: str | None = None) -> pd.DataFrame:
    """Run the study; returns the per-seed table (also written to ``out_dir``)."""
    cfg = cfg or MultiViewConfig()
    if not cfg.seeds:
        raise ConfigError("multiview: give at least one seed")
    if cfg.manifest:
        real = Manifest.load(cfg.manifest)
        real.require("group", "view", "expression", "identity", purpose="the multi-view study")
    device = select_device(cfg.device)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    cls = get_method("clmex")
    rows: list[dict[str, Any]] = []
    for seed in cfg.seeds:
        sub = out / f"seed{seed}"
        manifest = Path(cfg.manifest) if cfg.manifest else _synthetic(cfg, seed, sub / "data")
        run_dir = sub / "clmex"
        say(f"== seed {seed}: pretraining CL-MEx ({cfg.epochs} epochs) → {run_dir}")
        if not RunFolder(run_dir).is_trained():
            pretrain(RunConfig.from_dict({
                "method": "clmex", "data": {"manifest": str(manifest), "image_size": cfg.image_size},
                "model": {"backbone": cfg.backbone}, "method_config": dict(cls.presets["cpu"]),
                "train": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "seed": seed, "device": cfg.device,
                          "knn_every": 0, "keep_checkpoints": 1, "warmup_epochs": 1}}), run_dir, progress=progress)
        run = load_run(run_dir, device=device)
        budget = dict(epochs=cfg.finetune_epochs, lr=cfg.finetune_lr, batch_size=cfg.finetune_batch_size,
                      seed=seed, device=device, progress=progress, label_fraction=cfg.label_fraction)
        for model, scratch in (("clmex fine-tuned", False), ("scratch fine-tuned", True)):
            say(f"   fine-tuning {'from scratch' if scratch else 'CL-MEx'} ({cfg.finetune_epochs} epochs)")
            res = finetune_run(run, manifest, from_scratch=scratch, **budget)
            rows += _rows(seed, model, res, res.per_view)
        say("   frozen linear probes (CL-MEx, random init)")
        probe = EvalConfig(protocol="linear", target="expression", seed=seed, label_fraction=cfg.label_fraction)
        emb = extract_embeddings(run, manifest)
        frozen = evaluate_embedding_set(emb.feats, emb.meta, probe)
        rows += _rows(seed, "clmex frozen linear", frozen, accuracy_by(frozen, emb.meta, "view"))
        data = load_face_data(manifest, cfg.image_size, progress=False)
        torch.manual_seed(seed)
        untrained = build_method(run.config)
        feats, _ = embed_faces(untrained, data, device=device)
        meta = data.manifest.frame.reset_index(drop=True)
        floor = evaluate_embedding_set(feats, meta, probe)
        rows += _rows(seed, "random init frozen linear", floor, accuracy_by(floor, meta, "view"))
    table = pd.DataFrame(rows)
    table.to_csv(out / "multiview.csv", index=False)
    cmd = command or "workbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = multiview_markdown(table, cmd, cfg)
    write_text_atomic(out / "multiview.md", text)
    write_json(out / "multiview.json", {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                                        "command": cmd, "seconds": round(time.perf_counter() - t0, 1),
                                        "results": table.to_dict(orient="records")})
    say("\n" + text)
    return table


def _verdict(table: pd.DataFrame, a: str, b: str, view: str = "all") -> str:
    """How often ``a``'s interval lies above / below ``b``'s over the seeds, and the mean difference."""
    wins = losses = ties = 0
    diffs = []
    for _, g in table[table["view"] == view].groupby("seed"):
        ra, rb = g[g["model"] == a], g[g["model"] == b]
        if ra.empty or rb.empty:
            continue
        ra, rb = ra.iloc[0], rb.iloc[0]
        diffs.append(ra["accuracy"] - rb["accuracy"])
        if ra["low"] > rb["high"]:
            wins += 1
        elif ra["high"] < rb["low"]:
            losses += 1
        else:
            ties += 1
    n = wins + losses + ties
    word = "beats" if wins == n and n else ("loses to" if losses == n and n else "is not separated from")
    return (f"{a} {word} {b} ({view}): higher in {wins} of {n} seeds, lower in {losses}, no difference in {ties}; "
            f"mean difference {np.mean(diffs):+.3f}" if diffs else f"{a} vs {b}: no data")


def multiview_markdown(table: pd.DataFrame, command: str, cfg: MultiViewConfig) -> str:
    """Means over seeds per model and view (with the seed range), verdicts, the command."""
    views = [v for v in dict.fromkeys(table["view"].tolist()) if v != "all"]
    cols = ["all", *sorted(views, key=lambda v: (float(v) if _is_number(v) else 0.0, v))]
    labels = "" if cfg.label_fraction >= 1 else f", {cfg.label_fraction:g} of the training labels"
    lines = [f"# Multi-view study: CL-MEx vs the same architecture from scratch ({len(cfg.seeds)} seed(s)"
             f"{labels})", "",
             "Cells: mean over seeds of the expression accuracy [lowest 95 % interval bound, highest bound] "
             f"over seeds; {int(table['test_people'].max())} test people at most.", "",
             "| model | " + " | ".join("overall" if c == "all" else f"view {c}" for c in cols) + " |",
             "|---|" + "---:|" * len(cols)]
    for model in MODELS:
        sub = table[table["model"] == model]
        if sub.empty:
            continue
        cells = []
        for c in cols:
            g = sub[sub["view"] == c]
            cells.append(f"{g['accuracy'].mean():.3f} [{g['low'].min():.3f}, {g['high'].max():.3f}]" if len(g) else "–")
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    lines += ["", "Verdicts (a seed counts when the two 95 % intervals do not overlap):", ""]
    for a, b in (("clmex fine-tuned", "scratch fine-tuned"), ("clmex frozen linear", "random init frozen linear")):
        lines.append(f"- {_verdict(table, a, b)}")
        for v in cols[1:]:
            lines.append(f"  - {_verdict(table, a, b, v)}")
    lines += ["", f"Command: `{command}`", ""]
    return "\n".join(lines)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
