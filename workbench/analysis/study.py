"""Run-level analyses: compute once, persist in the run folder, re-plot from disk.

Every function takes run folders and a manifest, reuses cached embeddings
(:func:`workbench.runs.extract_embeddings`) and saves its results objects (:mod:`workbench.results`)
in the run folder, where :mod:`workbench.runs.results` puts them: per checkpoint and manifest
(:func:`~workbench.runs.analysis_folder`) and across checkpoints (:func:`~workbench.runs.track_folder`). The separation, UMAP and attention functions load
a saved result instead of recomputing it (``recompute=True`` forces it), so re-plotting never
recomputes a model, an embedding or a UMAP; :func:`compare_runs` re-scores its probes on every call
(they are cheap on cached embeddings) and overwrites ``eval-*/<protocol>/``.

- :func:`compare_runs` — probe / kNN table of several runs (expression and identity);
- :func:`separation_for_run` / :func:`separation_for_runs` — identity-vs-expression report;
- :func:`separation_over_training` — the report at every numbered checkpoint (a SeparationTrack);
- :func:`umap_for_runs` — one map per run (each persisted), stacked with a ``run`` column (facet on it);
- :func:`aligned_umap_over_training` — AlignedUMAP over a run's checkpoints (``epoch`` column);
- :func:`map_over_training` — the same with UMAP or a quick per-checkpoint PCA;
- :func:`attention_for_run` — Grad-CAM region scores (:mod:`workbench.explain`);
- :func:`write_figure_set` — the standard paper figures + a LaTeX table.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from tqdm.auto import tqdm

from workbench.data.manifest import Manifest
from workbench.errors import CheckpointError, ConfigError
from workbench.io import read_jsonl, write_json
from workbench.results import RESULT_FILE
from workbench.runs import (
    LoadedRun,
    RunFolder,
    analysis_folder,
    extract_embeddings,
    list_checkpoints,
    load_run,
    read_run_meta,
    track_folder,
)
from workbench.runs.pretrain import code_version

#: protocols of the comparison table: name -> EvalConfig fields
DEFAULT_PROTOCOLS: dict[str, dict[str, Any]] = {
    "expr_linear": {"protocol": "linear", "target": "expression"},
    "expr_knn": {"protocol": "knn", "target": "expression"},
    "identity_linear": {"protocol": "linear", "target": "identity"},
    "identity_knn": {"protocol": "knn", "target": "identity", "exclude_same_identity": False},
}


#: seconds before a progress bar shows: quick work and one-line errors stay free of bars
PROGRESS_DELAY = 2.0


def _steps(items: Sequence[Any], desc: str, progress: bool) -> Any:
    """``items`` with a progress bar (tqdm.auto: a widget bar in a notebook, text in a terminal)."""
    return tqdm(items, desc=desc, unit="step", disable=not progress, leave=False, dynamic_ncols=True,
                delay=PROGRESS_DELAY)


def _manifest(manifest):
    return manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)


def _run(run, checkpoint: str = "last"):
    if isinstance(run, LoadedRun) and (checkpoint in ("last", run.checkpoint.stem)):
        return run
    return load_run(run.path if isinstance(run, LoadedRun) else run, checkpoint)


def run_label(run) -> str:
    """The run's folder name (how runs are labelled in tables and figures)."""
    return run.path.name


def compare_runs(run_dirs: Sequence[str | Path], manifest, *, protocols: dict[str, dict] | None = None,
                 checkpoint: str = "last", label_fraction: float = 1.0, seed: int = 0,
                 out: str | Path | None = None, progress: bool = False) -> pd.DataFrame:
    """One row per run, one column per protocol (accuracy); also macro-F1 columns.

    Expression is evaluated subject-disjoint (kNN without same-identity neighbours); identity on a
    per-identity split ("identity leakage": lower is better for an expression embedding). Each
    protocol's :class:`~workbench.evaluate.protocols.EvalResult` is saved in ``eval-*/<protocol>/``;
    ``out`` also writes the table as CSV; ``progress`` shows a bar over the runs.
    """
    from workbench.config import from_dict
    from workbench.evaluate.protocols import EvalConfig
    from workbench.evaluate.run_eval import evaluate_embedding_set

    m = _manifest(manifest)
    protocols = protocols or DEFAULT_PROTOCOLS
    rows = []
    for rd in _steps(list(run_dirs), "evaluating runs", progress):
        run = _run(rd, checkpoint)
        emb = extract_embeddings(run, m)
        row: dict[str, Any] = {"run": run_label(run), "method": run.config.method,
                               "backbone": run.config.model.backbone, "checkpoint": run.checkpoint.stem}
        for name, fields in protocols.items():
            cfg = from_dict(EvalConfig, {"seed": seed, "label_fraction": label_fraction, **fields})
            res = evaluate_embedding_set(emb.get(cfg.feature), emb.meta, cfg)
            res.save(analysis_folder(run, "eval", m) / name)
            row[name] = res.accuracy
            row[f"{name}_f1"] = res.macro_f1
            row.update({f"{name}_low": res.ci_low, f"{name}_high": res.ci_high, f"{name}_chance": res.chance})
        rows.append(row)
    table = pd.DataFrame(rows)
    if out:
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        table.to_csv(out, index=False)
    return table


def separation_for_run(run_dir, manifest, *, checkpoint: str = "last", feature: str = "feats", seed: int = 0,
                       recompute: bool = False):
    """Identity-vs-expression report of one run (persisted; loaded when already computed)."""
    from workbench.analysis.separation import SeparationReport, separation_report
    from workbench.data.splits import assign_splits
    from workbench.errors import MissingMetadataError

    m = _manifest(manifest)
    run = _run(run_dir, checkpoint)
    folder = analysis_folder(run, f"separation-{feature}", m)
    if not recompute and (folder / RESULT_FILE).is_file():
        return SeparationReport.load(folder)
    m.require("expression", "identity", purpose="the identity-vs-expression analysis")
    emb = extract_embeddings(run, m)
    meta = emb.meta
    if meta["expression"].isna().any() or meta["identity"].isna().any():
        raise MissingMetadataError("the separation analysis needs expression and identity on every row")
    return separation_report(emb.get(feature), meta["expression"].to_numpy(), meta["identity"].astype(str).to_numpy(),
                             seed=seed, split=assign_splits(meta, seed=seed).to_numpy(), out_dir=folder)


def separation_for_runs(run_dirs: Sequence[str | Path], manifest, *, progress: bool = False, **kw) -> dict[str, Any]:
    """``{run name: SeparationReport}`` (``progress``: a bar over the runs)."""
    m = _manifest(manifest)
    return {Path(rd).name: separation_for_run(rd, m, **kw)
            for rd in _steps(list(run_dirs), "identity vs expression", progress)}


def separation_over_training(run_dir, manifest, *, feature: str = "feats", seed: int = 0, recompute: bool = False,
                             progress: bool = False):
    """SeparationReport at each numbered checkpoint of a run (each persisted and reused), collected in a
    SeparationTrack that is saved in ``separation-track-<manifest key>/``."""
    from workbench.analysis.separation import SeparationTrack

    m = _manifest(manifest)
    cks = list_checkpoints(run_dir)
    if not cks:
        raise CheckpointError(f"{run_dir} has no numbered checkpoints (pretrain with checkpoint_every > 0)")
    track = SeparationTrack()
    for ck in _steps(cks, "checkpoints", progress):
        epoch = int(ck.stem.split("-")[1])
        track.add(epoch, separation_for_run(run_dir, m, checkpoint=ck.stem, feature=feature, seed=seed,
                                            recompute=recompute))
    track.save(track_folder(run_dir, "separation-track", m))
    return track


def umap_for_runs(run_dirs: Sequence[str | Path], manifest, *, method: str = "umap", seed: int = 0,
                  checkpoint: str = "last", feature: str = "feats", recompute: bool = False,
                  progress: bool = False):
    """A 2-D map (UMAP or PCA) per run (each persisted and reused), stacked into one EmbeddingMap with a
    ``run`` column (the stack itself is not saved)."""
    import numpy as np

    from workbench.analysis.umap import EmbeddingMap, embedding_map

    m = _manifest(manifest)
    coords, metas, params = [], [], {}
    for rd in _steps(list(run_dirs), f"{method.upper()} per run", progress):
        run = _run(rd, checkpoint)
        folder = analysis_folder(run, f"{method}-{feature}-s{seed}", m)
        if not recompute and (folder / RESULT_FILE).is_file():
            one = EmbeddingMap.load(folder)
        else:
            emb = extract_embeddings(run, m)
            meta = _map_meta(emb.meta, m)
            meta.insert(0, "run", run_label(run))
            one = embedding_map(emb.get(feature), meta, method=method, seed=seed, out_dir=folder)
        coords.append(one.coords)
        metas.append(one.meta)
        params = one.params
    return EmbeddingMap(np.concatenate(coords), pd.concat(metas, ignore_index=True), method=method,
                        params={**params, "runs": [Path(r).name for r in run_dirs]})


def _map_meta(meta: pd.DataFrame, manifest) -> pd.DataFrame:
    keep = [c for c in ("path", "expression", "identity", "split", "view", "group", "clip", "frame", "intensity")
            if c in meta.columns]
    out = meta[keep].copy()
    out["abs_path"] = [str(manifest.root / p) for p in out["path"]]
    return out


def aligned_umap_over_training(run_dir, manifest, *, seed: int = 0, feature: str = "feats",
                               max_points: int = 2000, recompute: bool = False, progress: bool = False):
    """AlignedUMAP over the run's numbered checkpoints so maps stay comparable across training."""
    import numpy as np

    from workbench.analysis.umap import EmbeddingMap, aligned_embedding_map

    m = _manifest(manifest)
    folder = track_folder(run_dir, f"aligned-umap-{feature}-s{seed}", m)
    if not recompute and (folder / RESULT_FILE).is_file():
        return EmbeddingMap.load(folder)
    cks = list_checkpoints(run_dir)
    if len(cks) < 2:
        raise CheckpointError(f"{run_dir} needs at least 2 numbered checkpoints for aligned maps")
    Xs, meta = [], None
    rng = np.random.default_rng(seed)
    rows = None
    for ck in _steps(cks, "embedding checkpoints", progress):
        emb = extract_embeddings(_run(run_dir, ck.stem), m)
        if rows is None:
            n = len(emb)
            rows = np.sort(rng.choice(n, max_points, replace=False)) if n > max_points else np.arange(n)
            meta = _map_meta(emb.meta, m).iloc[rows].reset_index(drop=True)
        Xs.append(emb.get(feature)[rows])
    epochs = [int(ck.stem.split("-")[1]) for ck in cks]
    return aligned_embedding_map(Xs, meta, epochs=epochs, seed=seed, out_dir=folder)


def map_over_training(run_dir: str | Path, manifest: Any, *, method: str = "umap", seed: int = 0,
                      max_points: int = 2000, progress: bool = False) -> Any:
    """2-D maps of a run's numbered checkpoints, stacked with an ``epoch`` column.

    ``method="umap"``: :func:`~workbench.analysis.study.aligned_umap_over_training` (AlignedUMAP: axes
    comparable across epochs; needs >= 2 checkpoints; ~30 s of numba compilation in a fresh kernel).
    ``method="pca"``: one PCA per checkpoint (instant, deterministic signs, but not aligned).
    """
    import numpy as np

    from workbench.analysis.umap import EmbeddingMap, compute_map

    if method == "umap":
        return aligned_umap_over_training(run_dir, manifest, seed=seed, max_points=max_points, progress=progress)
    if method != "pca":
        raise ConfigError(f"method must be 'umap' or 'pca', got '{method}'")
    m = _manifest(manifest)
    cks = list_checkpoints(run_dir)
    if not cks:
        raise CheckpointError(f"{run_dir} has no numbered checkpoints (pretrain with checkpoint_every > 0)")
    coords, metas, rows = [], [], None
    for ck in _steps(cks, "checkpoints", progress):
        emb = extract_embeddings(load_run(run_dir, ck.stem), m)
        if rows is None:
            n = len(emb)
            rng = np.random.default_rng(seed)
            rows = np.sort(rng.choice(n, max_points, replace=False)) if n > max_points else np.arange(n)
        keep = [c for c in ("path", "expression", "identity", "split", "view", "group", "clip", "frame")
                if c in emb.meta.columns]
        meta = emb.meta[keep].iloc[rows].reset_index(drop=True)
        meta["abs_path"] = [str(m.root / p) for p in meta["path"]]
        meta["epoch"] = int(ck.stem.split("-")[1])
        coords.append(compute_map(emb.get("feats")[rows], method="pca", seed=seed))
        metas.append(meta)
    return EmbeddingMap(np.concatenate(coords), pd.concat(metas, ignore_index=True), method="pca",
                        params={"seed": seed, "per_checkpoint": True, "epochs": [int(c.stem.split("-")[1]) for c in cks]})


def attention_for_run(run_dir, manifest, *, target: str = "prototype", checkpoint: str = "last",
                      n_per_expression: int = 8, seed: int = 0, layer: Any = None, recompute: bool = False):
    """Grad-CAM region scores of a run (persisted; loaded when already computed)."""
    from workbench.explain.attention import AttentionResult, compute_attention

    m = _manifest(manifest)
    run = _run(run_dir, checkpoint)
    folder = analysis_folder(run, f"attention-{target}-n{n_per_expression}-s{seed}", m)
    if not recompute and (folder / RESULT_FILE).is_file():
        return AttentionResult.load(folder)
    if layer is None:
        layer = default_cam_layer(run)
    return compute_attention(run, m, target=target, n_per_expression=n_per_expression, seed=seed,
                             layer=layer, out=folder)


def default_cam_layer(run) -> str | None:
    """A CAM stage with at least a 4x4 map for small faces: ResNets use ``layer2`` (stride 8) up to 48 px,
    ``layer3`` (stride 16) up to 96 px, and the last stage above (``layer4`` is only 2x2 at 64 px)."""
    bb = run.method.backbone
    if bb.is_vit or not hasattr(bb.model, "layer3"):
        return None
    if run.image_size <= 48 and hasattr(bb.model, "layer2"):
        return "layer2"
    return "layer3" if run.image_size <= 96 else None


# -- figures -----------------------------------------------------------------------------------

FIGURES = ("training_curves", "probe_comparison", "separation_bars", "umap_panels", "gradcam_grid")


def _number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def training_curves(run_dirs: Sequence[str | Path], *, style: str = "double", chance: float | None = None):
    """Matplotlib figure (:func:`workbench.viz.figures.training_curves_figure`): loss per step and online
    kNN per epoch, one colour per run; returns ``(figure, data)`` read from each run's ``metrics.jsonl``."""
    from workbench.viz.figures import training_curves_figure

    rows = []
    for rd in run_dirs:
        name = Path(rd).name
        recs, bad = read_jsonl(RunFolder(rd).metrics)
        if bad:
            warnings.warn(f"{RunFolder(rd).metrics}: {bad} malformed line(s) skipped", stacklevel=2)
        recs = [r for r in recs if _number(r.get("step")) and _number(r.get("epoch"))]
        steps = [r for r in recs if _number(r.get("loss"))]
        knn = [r for r in recs if _number(r.get("knn/expression"))]
        rows += [{"run": name, "step": r["step"], "epoch": r["epoch"], "loss": r.get("loss"),
                  "knn_expression": r.get("knn/expression")} for r in steps + knn]
    data = pd.DataFrame(rows, columns=["run", "step", "epoch", "loss", "knn_expression"])
    return training_curves_figure(data, style=style, chance=chance)


def probe_comparison_figure(table: pd.DataFrame, *, style: str = "double"):
    """:func:`workbench.viz.figures.probe_comparison_figure` of a :func:`compare_runs` table."""
    from workbench.viz.figures import probe_comparison_figure as build

    return build(table, style=style)


def separation_bars_figure(reports: dict[str, Any], *, style: str = "double"):
    """:func:`workbench.viz.figures.separation_figure` of ``{run: SeparationReport}``."""
    from workbench.viz.figures import separation_figure

    return separation_figure(reports, style=style)


def write_figure_set(run_dirs: Sequence[str | Path], manifest, out_dir: str | Path, *,
                     figures: Sequence[str] | None = None, style: str = "double", seed: int = 0,
                     umap_method: str = "umap", timeout: float = 60.0, progress: bool = False) -> dict[str, Path]:
    """Write the standard figures (PDF, SVG, 300-dpi PNG, CSV, JSON card each) and ``results.tex``
    (``progress``: a bar over the figures)."""
    from workbench.viz.export import export_figure
    from workbench.viz.latex import latex_table

    figures = tuple(figures or FIGURES)
    unknown = [f for f in figures if f not in FIGURES]
    if unknown:
        raise ConfigError(f"unknown figure '{unknown[0]}' (choose from {', '.join(FIGURES)})")
    m = _manifest(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    runs = [Path(r) for r in run_dirs]
    card = {"runs": {r.name: read_run_meta(r)["config"] for r in runs},
            "manifest": str(m.path), "seed": seed, "code": code_version()}
    written: dict[str, Path] = {}

    def export(fig, data, name: str) -> Path:  # (figure, data) of workbench.viz.figures, then the name
        import matplotlib.pyplot as plt

        from workbench.viz.figures import layout_problems

        try:
            for problem in layout_problems(fig):  # real data can be longer or odder than the tests' data
                warnings.warn(f"figure {name} ({style}): {problem}", stacklevel=2)
            return export_figure(fig, out, name, preset=style, data=data, card=card, timeout=timeout)["pdf"]
        finally:
            plt.close(fig)

    bar = tqdm(total=len(figures) + 1, desc="figures", disable=not progress, leave=False, dynamic_ncols=True,
               delay=PROGRESS_DELAY)
    table = compare_runs(runs, m, seed=seed, out=out / "results.csv")
    bar.update()
    if "training_curves" in figures:
        chance = table["expr_knn_chance"].dropna() if "expr_knn_chance" in table else pd.Series(dtype=float)
        written["training_curves"] = export(*training_curves(runs, style=style, chance=chance.mean()
                                                             if len(chance) else None), "training_curves")
        bar.update()
    if "probe_comparison" in figures:
        written["probe_comparison"] = export(*probe_comparison_figure(table, style=style), "probe_comparison")
        bar.update()
    if "separation_bars" in figures:
        reports = separation_for_runs(runs, m, seed=seed)
        written["separation_bars"] = export(*separation_bars_figure(reports, style=style), "separation_bars")
        bar.update()
    if "umap_panels" in figures:
        from workbench.viz.export import write_plotly_html
        from workbench.viz.figures import umap_panels_figure

        emap = umap_for_runs(runs, m, method=umap_method, seed=seed)
        fig, data = umap_panels_figure(emap.frame(), style=style, facet="run", method=umap_method.upper())
        written["umap_panels"] = export(fig, data, "umap_panels")
        write_plotly_html(emap.plot(color="expression", facet="run"), out / "umap_panels.html", plotlyjs_dir=out)
        bar.update()
    if "gradcam_grid" in figures and m.has("landmarks"):
        from workbench.viz.figures import gradcam_grid_figure, region_bars_figure

        results = {r.name: attention_for_run(r, m, seed=seed, n_per_expression=2) for r in runs}
        written["gradcam_grid"] = export(*gradcam_grid_figure(results, style=style), "gradcam_grid")
        for name, res in results.items():
            res.save_overlays(out / f"gradcam_{name}", cmap="inferno")
            written[f"gradcam_regions_{name}"] = export(*region_bars_figure(res, style=style),
                                                        f"gradcam_regions_{name}")
        bar.update()
    bar.close()
    cols = ["run", "method"] + [c for c in DEFAULT_PROTOCOLS if c in table.columns]
    tex = latex_table(table[cols], caption="Frozen-feature evaluation (accuracy). Expression: subject-disjoint; "
                                           "identity: leakage (lower is better for expression embeddings).",
                      label="tab:results", minimize=["identity_linear", "identity_knn"])
    (out / "results.tex").write_text(tex, encoding="utf-8")
    written["latex"] = out / "results.tex"
    write_json(out / "figures.json", {"figures": {k: str(v) for k, v in written.items()}, **card})
    return written
