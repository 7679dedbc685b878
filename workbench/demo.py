"""The main job: synthetic faces → SimCLR and BYOL pretraining → expression and identity probes.

``run_demo(out_dir)`` writes::

    OUT/data/manifest.csv, images/, contact_sheet.png      the synthetic set
    OUT/runs/simclr, OUT/runs/byol                         run folders (config, metrics, checkpoints)
    OUT/results.csv, results.md, results.json              the comparison table

The table compares each method against two floors — raw pixels and a randomly initialised backbone —
on: expression linear probe and kNN (subject-disjoint; kNN excludes same-identity
neighbours) and identity linear probe ("identity leakage": lower is better for an expression
embedding). The same command uses the GPU when there is one.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from workbench.config import param
from workbench.io import write_json, write_text_atomic


@dataclass
class DemoConfig:
    identities: int = param(24, "Synthetic identities (subject-disjoint train/val/test).", min=6)
    images_per_identity: int = param(32, "Images per identity (balanced over the 8 expressions).", min=8)
    image_size: int = param(48, "Resolution of the synthetic faces and of training (px).", min=16)
    methods: tuple[str, ...] = param(("simclr", "byol"), "Methods to pretrain and compare.")
    backbone: str = param("resnet18", "timm backbone for every method.")
    epochs: int = param(15, "Pretraining epochs per method.", min=1)
    batch_size: int = param(64, "Items per step.", min=4)
    lr: float = param(2e-3, "Peak learning rate (AdamW).", min=0.0)
    seed: int = param(0, "Seed for data, weights and augmentations.")
    device: str = param("auto", "'auto' uses CUDA when present.")


def run_demo(out_dir: str | Path, cfg: DemoConfig | None = None, *, progress: bool = True) -> pd.DataFrame:
    """Run the whole loop and return the comparison table (also written to ``out_dir``)."""
    from workbench.data.cache import load_face_data
    from workbench.data.synth import SynthConfig, generate_dataset, write_contact_sheet
    from workbench.evaluate.embeddings import embed_faces, extract_embeddings
    from workbench.evaluate.protocols import EvalConfig
    from workbench.evaluate.run_eval import evaluate_embedding_set
    from workbench.methods import get_method
    from workbench.train import RunConfig, build_method, load_run, pretrain
    from workbench.train.trainer import select_device

    cfg = cfg or DemoConfig()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    say = print if progress else (lambda *a, **k: None)

    manifest = out / "data" / "manifest.csv"
    if not manifest.is_file():
        say(f"[1/3] generating {cfg.identities * cfg.images_per_identity} synthetic faces → {manifest.parent}")
        generate_dataset(SynthConfig(identities=cfg.identities, images_per_identity=cfg.images_per_identity,
                                     size=cfg.image_size, seed=cfg.seed), manifest.parent, progress=False)
        write_contact_sheet(manifest.parent / "contact_sheet.png", seed=cfg.seed)
    device = select_device(cfg.device)
    say(f"      device: {device}")

    protocols = {
        "expr_linear": EvalConfig(protocol="linear", target="expression", seed=cfg.seed),
        "expr_knn": EvalConfig(protocol="knn", target="expression", seed=cfg.seed),
        "identity_linear": EvalConfig(protocol="linear", target="identity", seed=cfg.seed),
    }
    rows = []

    def score(name: str, X, meta, seconds: float) -> None:
        row = {"model": name}
        for key, ecfg in protocols.items():
            row[key] = round(float(evaluate_embedding_set(X, meta, ecfg).accuracy), 4)
        row["train_seconds"] = round(seconds, 1)
        rows.append(row)

    import numpy as np

    data = load_face_data(manifest, cfg.image_size, progress=False)
    meta = data.manifest.frame.reset_index(drop=True)
    # floors: raw pixels, and a randomly initialised backbone (same architecture, no training)
    score("raw pixels", np.asarray(data.images, dtype=np.float32).reshape(len(data), -1) / 255.0, meta, 0.0)
    base_cfg = RunConfig.from_dict({"method": cfg.methods[0], "data": {"manifest": str(manifest),
                                    "image_size": cfg.image_size}, "model": {"backbone": cfg.backbone}})
    import torch

    torch.manual_seed(cfg.seed)
    feats, _ = embed_faces(build_method(base_cfg), data, device=device)
    score("random init", feats, meta, 0.0)

    for i, name in enumerate(cfg.methods, 1):
        method_cls = get_method(name)
        run_dir = out / "runs" / name
        say(f"[2/3] pretraining {name} ({i}/{len(cfg.methods)}) → {run_dir}")
        rc = RunConfig.from_dict({
            "method": name,
            "data": {"manifest": str(manifest), "image_size": cfg.image_size},
            "model": {"backbone": cfg.backbone},
            "train": {"epochs": cfg.epochs, "batch_size": cfg.batch_size, "lr": cfg.lr, "seed": cfg.seed,
                      "device": cfg.device, "warmup_epochs": 1},
            "method_config": dict(method_cls.presets.get("cpu", {})),
        })
        t = time.perf_counter()
        if not (run_dir / "checkpoints" / "last.safetensors").exists():
            pretrain(rc, run_dir, progress=progress)
        seconds = time.perf_counter() - t
        emb = extract_embeddings(load_run(run_dir, device=device), manifest)
        score(name, emb.feats, emb.meta, seconds)

    say("[3/3] evaluating (expression: subject-disjoint; identity: per-identity split)")
    table = pd.DataFrame(rows)
    table.to_csv(out / "results.csv", index=False)
    write_text_atomic(out / "results.md", _markdown(table))
    write_json(out / "results.json", {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                                      "device": str(device), "seconds": round(time.perf_counter() - t0, 1),
                                      "results": rows})
    say("\n" + _markdown(table))
    say(f"expr_* = expression accuracy (8 classes, chance 0.125); identity_linear = identity leakage "
        f"(chance {1 / cfg.identities:.3f}). Generic SSL on faces tends to learn identity (the problem the "
        f"face-specific methods attack: see `workbench methods`). Written to {out}. "
        f"Total {time.perf_counter() - t0:.0f} s.")
    return table


def _markdown(table: pd.DataFrame) -> str:
    cols = list(table.columns)
    lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for _, r in table.iterrows():
        lines.append("| " + " | ".join(str(r[c]) for c in cols) + " |")
    return "\n".join(lines) + "\n"
