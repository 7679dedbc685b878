"""The equal-budget study behind docs/RESULTS.md: ``workbench study``.

Every face-specific method against its generic baseline (:data:`workbench.demo.PAIRS`), at the same
budget, over several seeds, on the calibrated synthetic set and on any real manifests given. Each seed of
each data set is one :func:`workbench.demo.compare_methods` (floors, ceilings, methods; every accuracy with
its 95 % person-bootstrap interval); the study stacks them and writes

    OUT/study.csv          one row per data set x seed x model (mean, low, high of every figure)
    OUT/study.md           the summary table (mean over seeds and seed range), the per-pair verdicts and the
                           exact command that made it
    OUT/<data>/seed<k>/    the runs and per-seed tables

A face-specific method "beats" its baseline on a seed when the two 95 % intervals do not overlap; the
verdict counts those seeds and gives the mean paired difference. Nothing is tuned per method: every
method gets its ``cpu`` preset, the same epochs, batch, learning rate, backbone and seed.
"""

from __future__ import annotations

import shlex
import sys
import time
from dataclasses import dataclass, replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pandas as pd

from workbench.config import from_dict, param
from workbench.demo import PAIRS, DemoConfig, _compare, compare_methods, parse_method_spec
from workbench.errors import ConfigError, MissingMetadataError
from workbench.io import write_json, write_text_atomic


@dataclass
class StudyConfig:
    """Settings of ``workbench study`` (the equal-budget comparison)."""

    mode: str = param("quick", "quick = the demo's CPU budget (48 px, 20 epochs, about 8 min per seed on 2 "
                               "cores); gpu = 3x the epochs and 2x the synthetic people (minutes on a GPU).",
                      choices=("quick", "gpu"))
    seeds: tuple[int, ...] = param((0, 1, 2), "Seeds: each draws its own synthetic people, weights and views.")
    methods: tuple[str, ...] = param(("simclr", "sslfer", "byol", "contrawarping"),
                                     "Methods (generic baselines and their face-specific counterparts).")
    synthetic: bool = param(True, "Include the calibrated synthetic set (one per seed).")
    manifests: tuple[str, ...] = param((), "Real data sets as manifest CSVs (e.g. JAFFE and CK+48 built with "
                                           "`workbench manifest build`); methods whose columns are missing "
                                           "(landmarks: run `workbench faces` first) are listed as skipped.")
    image_size: int = param(48, "Training and probe resolution (px).", min=16)
    epochs: int = param(0, "Pretraining epochs per method; 0 = the mode's budget (quick 20, gpu 60).", min=0)
    identities: int = param(0, "Synthetic people per seed; 0 = the mode's (quick 48, gpu 96).", min=0)
    images_per_identity: int = param(16, "Synthetic images per person.", min=8)
    batch_size: int = param(64, "Items per step.", min=4)
    backbone: str = param("resnet18", "timm backbone for every method.")
    device: str = param("auto", "'auto' uses CUDA when present.")


def _demo_config(cfg: StudyConfig, seed: int) -> DemoConfig:
    base = DemoConfig(seed=seed, image_size=cfg.image_size, backbone=cfg.backbone, device=cfg.device,
                      methods=cfg.methods, budget="cpu", batch_size=cfg.batch_size,
                      images_per_identity=cfg.images_per_identity)
    if cfg.mode == "gpu":
        base = replace(base, epochs=base.epochs * 3, identities=base.identities * 2)
    return replace(base, epochs=cfg.epochs or base.epochs, identities=cfg.identities or base.identities)


def _runnable(methods: tuple[str, ...], manifest: Path) -> tuple[tuple[str, ...], dict[str, str]]:
    """Methods whose required columns the manifest has, and a reason for each one left out."""
    from workbench.data.manifest import Manifest
    from workbench.demo import STILL_IMAGE_OPTIONS
    from workbench.methods import get_method

    frame = Manifest.load(manifest).frame
    keep, skipped = [], {}
    for name in methods:
        method, changed = parse_method_spec(name)
        cls = get_method(method)
        options = from_dict(cls.Config, {**cls.presets.get("cpu", {}), **STILL_IMAGE_OPTIONS.get(method, {}),
                                         **changed})
        by_config = getattr(cls, "required_columns", None)  # reads only ``self.cfg``
        needed = by_config(SimpleNamespace(cfg=options, requires=cls.requires)) if by_config else getattr(cls, "requires", ())
        missing = [c for c in needed if c not in frame.columns or frame[c].isna().all()]
        if missing:
            skipped[name] = f"needs {', '.join(missing)}"
        else:
            keep.append(name)
    return tuple(keep), skipped


def run_study(out_dir: str | Path, cfg: StudyConfig | None = None, *, progress: bool = True,
              command: str | None = None) -> pd.DataFrame:
    """Run the study and return the stacked per-seed table (also written to ``out_dir``)."""
    from workbench.data.synth import SynthConfig, generate_dataset

    cfg = cfg or StudyConfig()
    if not cfg.seeds:
        raise ConfigError("study: give at least one seed")
    for name in cfg.methods:
        parse_method_spec(name)  # unknown methods or options: one line, before any work
    if not cfg.synthetic and not cfg.manifests:
        raise ConfigError("study: nothing to compare on (synthetic off and no --manifests)")
    for m in cfg.manifests:
        if not Path(m).is_file():
            raise ConfigError(f"study: manifest not found: {m}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    say = print if progress else (lambda *a, **k: None)
    t0 = time.perf_counter()
    tables: list[pd.DataFrame] = []
    skipped: dict[str, dict[str, str]] = {}
    sets: list[tuple[str, Path | None]] = [("synthetic", None)] if cfg.synthetic else []
    sets += [(name, Path(m)) for name, m in zip(data_set_names(cfg.manifests), cfg.manifests, strict=True)]
    for data_name, manifest in sets:
        for seed in cfg.seeds:
            dcfg = _demo_config(cfg, seed)
            sub = out / data_name / f"seed{seed}"
            if manifest is None:
                manifest_path = sub / "data" / "manifest.csv"
                if not manifest_path.is_file():
                    generate_dataset(SynthConfig(identities=dcfg.identities,
                                                 images_per_identity=dcfg.images_per_identity,
                                                 size=dcfg.image_size, seed=seed, test_fraction=0.25,
                                                 val_fraction=0.1), manifest_path.parent, progress=False)
            else:
                manifest_path = manifest
                methods, why = _runnable(cfg.methods, manifest)
                skipped[data_name] = why
                if not methods:
                    raise MissingMetadataError(f"study: no method can run on {manifest} ({why})")
                dcfg = replace(dcfg, methods=methods)
            say(f"== {data_name}, seed {seed} → {sub}")
            table = compare_methods(manifest_path, sub, dcfg, progress=progress)
            table.insert(0, "seed", seed)
            table.insert(0, "data", data_name)
            tables.append(table)
    stacked = pd.concat(tables, ignore_index=True)
    stacked.to_csv(out / "study.csv", index=False)
    cmd = command or "workbench " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    text = study_markdown(stacked, skipped, cmd, cfg)
    write_text_atomic(out / "study.md", text)
    write_json(out / "study.json", {"config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
                                    "command": cmd, "seconds": round(time.perf_counter() - t0, 1),
                                    "skipped": skipped, "rows": stacked.to_dict(orient="records")})
    say(text)
    return stacked


def data_set_names(manifests: tuple[str, ...]) -> list[str]:
    """A short unique name per manifest: its file stem, or its folder's name for ``.../manifest.csv``
    (what `workbench faces` and `synth` write), numbered when two would clash."""
    names: list[str] = []
    for m in manifests:
        p = Path(m)
        base = p.parent.name if p.stem == "manifest" and p.parent.name else p.stem
        name, k = base, 2
        while name in names or name == "synthetic":
            name, k = f"{base}-{k}", k + 1
        names.append(name)
    return names


def summary_table(stacked: pd.DataFrame) -> pd.DataFrame:
    """Per data set and model: mean over seeds and the seed range of each figure."""
    rows: list[dict[str, Any]] = []
    for (data, model), g in stacked.groupby(["data", "model"], sort=False):
        row: dict[str, Any] = {"data": data, "model": model, "role": g["role"].iloc[0], "seeds": len(g),
                               "test_people": int(g["test_people"].iloc[0]) if pd.notna(g["test_people"].iloc[0])
                               else None}
        for key in ("expr_linear", "expr_knn", "identity_linear"):
            vals = g[key].dropna()
            row[key] = None if vals.empty else float(vals.mean())
            row[f"{key}_min"] = None if vals.empty else float(vals.min())
            row[f"{key}_max"] = None if vals.empty else float(vals.max())
            lows = g[f"{key}_low"].dropna()
            row[f"{key}_ci_width"] = None if lows.empty else float((g[f"{key}_high"] - g[f"{key}_low"]).mean())
        rows.append(row)
    return pd.DataFrame(rows)


def pair_verdicts(stacked: pd.DataFrame) -> list[str]:
    """One sentence per data set and pair: seeds where the intervals separate, and the mean difference."""
    lines = []
    for data, d in stacked.groupby("data", sort=False):
        for generic, face in PAIRS.items():
            wins = losses = ties = 0
            diffs, leak = [], []
            for _, s in d.groupby("seed"):
                g, f = s[s["model"] == generic], s[s["model"] == face]
                if g.empty or f.empty:
                    continue
                g, f = g.iloc[0], f.iloc[0]
                verdict = _compare(f, g, "expr_linear")
                wins, losses, ties = wins + (verdict == "higher"), losses + (verdict == "lower"), \
                    ties + (verdict == "indistinguishable")
                diffs.append(f["expr_linear"] - g["expr_linear"])
                leak.append(f["identity_linear"] - g["identity_linear"])
            if not diffs:
                continue
            n = len(diffs)
            lines.append(f"- **{data}: {face} vs {generic}** — expression linear probe: higher in {wins} of {n} "
                         f"seeds, lower in {losses}, no difference (overlapping 95% intervals) in {ties}; mean "
                         f"difference {sum(diffs) / n:+.3f}. Identity leakage difference {sum(leak) / n:+.3f} "
                         f"(negative = less identity).")
    return lines


def _fmt(row: pd.Series, key: str) -> str:
    if row.get(key) is None or pd.isna(row.get(key)):
        return "—"
    if row["seeds"] == 1:
        return f"{row[key]:.3f} (±{row[f'{key}_ci_width'] / 2:.3f})"
    return f"{row[key]:.3f} ({row[f'{key}_min']:.3f}–{row[f'{key}_max']:.3f}; CI ±{row[f'{key}_ci_width'] / 2:.3f})"


def study_markdown(stacked: pd.DataFrame, skipped: dict[str, dict[str, str]], command: str,
                   cfg: StudyConfig) -> str:
    """The study's report: summary table, verdicts, skipped methods and the command."""
    summ = summary_table(stacked)
    head = ["data", "model", "role", "expression linear", "expression kNN", "identity leakage", "test people"]
    lines = [f"Equal-budget study ({cfg.mode} mode, seeds {', '.join(map(str, cfg.seeds))}, {cfg.backbone}, "
             f"{cfg.image_size} px). Cells: mean over seeds (seed range; mean half-width of the per-seed 95% "
             "person-bootstrap interval).", "",
             "| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for _, r in summ.iterrows():
        lines.append("| " + " | ".join([str(r["data"]), str(r["model"]), str(r["role"]), _fmt(r, "expr_linear"),
                                        _fmt(r, "expr_knn"), _fmt(r, "identity_linear"),
                                        str(r["test_people"])]) + " |")
    lines += ["", *pair_verdicts(stacked)]
    for data, why in skipped.items():
        for name, reason in why.items():
            lines.append(f"- {data}: {name} skipped ({reason}).")
    lines += ["", "Made with:", "", "```", command, "```", ""]
    return "\n".join(lines)


__all__ = ["StudyConfig", "pair_verdicts", "run_study", "study_markdown", "summary_table"]
