"""Run-level panels over :mod:`workbench.analysis.study`: compare runs, identity-vs-expression
separation, Grad-CAM attention and the paper figure set. Each computes through the library (results
persist in the run folders, so re-opening a panel re-plots without recomputing) and shows tables and
plotly figures; every button also exists as a method (``evaluate()``, ``compute()``, ``export()``).
"""

from __future__ import annotations

import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from workbench.errors import ConfigError
from workbench.widgets._common import LiveFigure, Panel, frame_html, image_widget, run_selector


def _selected(sel: Any) -> list[Path]:
    runs = [Path(v) for v in sel.value]
    if not runs:
        raise ConfigError("select at least one run")
    return runs


def _manifest(m: Any) -> Any:
    from workbench.data.manifest import Manifest

    return m if isinstance(m, Manifest) else Manifest.load(m)


# ============================================================================= compare

class RunComparison(Panel):
    """Probe and kNN results of several runs in one table and one grouped bar chart.

    Args:
        run_dirs: run folders to offer (all selected).
        more_runs: more run folders to list, not selected (an *Add* box adds others).
        manifest: the evaluation manifest (expression: subject-disjoint; identity: leakage split).
        protocols: names from :data:`workbench.analysis.study.DEFAULT_PROTOCOLS` (default: all).
        auto: evaluate at once (otherwise press *Evaluate*).
    """

    def __init__(self, run_dirs: Sequence[str | Path], manifest: Any, *, more_runs: Sequence[str | Path] = (),
                 protocols: Sequence[str] | None = None,
                 auto: bool = True) -> None:
        from workbench.analysis.study import DEFAULT_PROTOCOLS

        super().__init__()
        self.manifest = _manifest(manifest)
        self.runs = run_selector(run_dirs, more=more_runs)
        names = list(DEFAULT_PROTOCOLS)
        self.protocols = W.SelectMultiple(options=names, value=tuple(protocols or names), rows=len(names),
                                          description="Protocols", layout=W.Layout(width="300px"))
        self.label_fraction = W.Dropdown(options=[("100 %", 1.0), ("10 %", 0.1), ("1 %", 0.01)], value=1.0,
                                         description="Labels", layout=W.Layout(width="180px"))
        self.metric = W.ToggleButtons(options=[("accuracy", ""), ("macro-F1", "_f1")], value="",
                                      description="Plot")
        self.button = W.Button(description="Evaluate", button_style="primary", icon="table")
        self.table_html = W.HTML()
        self.plot = LiveFigure()
        self.table: Any = None
        self.button.on_click(self.guard(lambda _b: self.evaluate()))
        self.metric.observe(self.guard(lambda _c: self._draw()), names=["value"])
        self.widget = W.VBox([
            W.HBox([self.runs, self.protocols, W.VBox([self.label_fraction, self.button])]),
            self.status, self.table_html,
            W.HTML("<small style='color:#555'>expression: subject-disjoint split (kNN ignores same-identity "
                   "neighbours); identity: leakage probe, lower = less identity in the embedding</small>"),
            self.metric, self.plot.widget,
        ])
        if auto:
            self.guard(self.evaluate)()

    def evaluate(self) -> Any:
        """Run the chosen protocols on the selected runs; returns (and shows) the table."""
        from workbench.analysis.study import DEFAULT_PROTOCOLS, compare_runs

        runs = _selected(self.runs)
        chosen = list(self.protocols.value)
        if not chosen:
            raise ConfigError("select at least one protocol")
        with self.busy(f"evaluating {len(runs)} run(s)"):
            table = compare_runs(runs, self.manifest, progress=True, protocols={k: DEFAULT_PROTOCOLS[k] for k in chosen},
                                 label_fraction=float(self.label_fraction.value))
        self.table = table
        self._draw()
        return table

    def figure(self) -> Any:
        """Grouped bars: one group per protocol, one bar per run (accuracy or macro-F1)."""
        import plotly.express as px

        if self.table is None:
            raise ConfigError("nothing evaluated yet")
        suffix = self.metric.value
        cols = [c for c in self.protocols.value if f"{c}{suffix}" in self.table.columns]
        long = self.table.melt(id_vars=["run"], value_vars=[f"{c}{suffix}" for c in cols], var_name="protocol",
                               value_name="score")
        long["protocol"] = long["protocol"].str.removesuffix(suffix) if suffix else long["protocol"]
        fig = px.bar(long, x="protocol", y="score", color="run", barmode="group", range_y=[0, 1],
                     title=f"frozen-feature {'accuracy' if not suffix else 'macro-F1'}")
        fig.update_layout(template="plotly_white", height=360, legend={"orientation": "h", "y": -0.25})
        return fig

    def _draw(self) -> None:
        if self.table is None:
            return
        keep = ["run", "method", "backbone", *[c for c in self.protocols.value if c in self.table.columns]]
        self.table_html.value = frame_html(self.table[keep])
        self.plot.update(self.figure())


# ============================================================================= separation

#: columns of the separation table (SeparationReport.metrics() names)
SEPARATION_COLUMNS = ("expression_over_identity", "expression_linear_acc", "expression_knn_acc",
                      "identity_linear_acc", "identity_knn_acc", "retrieval_map_at_r", "var_identity",
                      "var_expression", "silhouette_expression", "silhouette_identity")


class SeparationPanel(Panel):
    """Identity-vs-expression report across runs: a table, the runs on an identity-leakage vs
    expression-accuracy plane, one run's full report, and (when checkpoints exist) its track over training.

    Args:
        run_dirs: run folders to offer (all selected).
        more_runs: more run folders to list, not selected (an *Add* box adds others).
        manifest: manifest with ``expression`` and ``identity``.
        feature: ``feats`` (backbone) or ``z`` (projection).
        auto: compute at once.
    """

    def __init__(self, run_dirs: Sequence[str | Path], manifest: Any, *, more_runs: Sequence[str | Path] = (),
                 feature: str = "feats",
                 auto: bool = True) -> None:
        super().__init__()
        self.manifest = _manifest(manifest)
        self.runs = run_selector(run_dirs, more=more_runs)
        self.feature = W.ToggleButtons(options=["feats", "z"], value=feature, description="Feature")
        self.button = W.Button(description="Compute", button_style="primary", icon="balance-scale")
        self.view = W.ToggleButtons(options=[("runs plane", "plane"), ("one run", "run"),
                                             ("over training", "track")], value="plane", description="Show")
        self.run = W.Dropdown(description="Run", layout=W.Layout(width="420px"))
        self.table_html = W.HTML()
        self.summary = W.HTML()
        self.plot = LiveFigure()
        self.reports: dict[str, Any] = {}
        self.tracks: dict[str, Any] = {}
        self.button.on_click(self.guard(lambda _b: self.compute()))
        for w in (self.view, self.run):
            w.observe(self.guard(lambda _c: self._draw()), names=["value"])
        self.widget = W.VBox([
            W.HBox([self.runs, W.VBox([self.feature, self.button])]),
            self.status, self.table_html, W.HBox([self.view, self.run]), self.summary, self.plot.widget,
        ])
        if auto:
            self.guard(self.compute)()

    def compute(self) -> dict[str, Any]:
        """Reports of the selected runs (loaded from the run folders when already computed)."""
        from workbench.analysis.study import separation_for_runs

        runs = _selected(self.runs)
        with self.busy(f"scoring identity vs expression for {len(runs)} run(s)"):
            self.reports = separation_for_runs(runs, self.manifest, feature=self.feature.value, progress=True)
        self._paths = {p.name: p for p in runs}
        previous = self.run.value
        self.run.options = list(self.reports)
        self.run.value = previous if previous in self.reports else next(iter(self.reports), None)  # never blank
        self._draw()
        return self.reports

    def table(self) -> Any:
        """One row per run, the headline separation metrics as columns."""
        import pandas as pd

        rows = []
        for name, rep in self.reports.items():
            m = rep.metrics()
            rows.append({"run": name, **{c: m.get(c) for c in SEPARATION_COLUMNS}})
        return pd.DataFrame(rows)

    def plane_figure(self) -> Any:
        """Runs as points: x = identity leakage (linear probe), y = expression accuracy (linear probe)."""
        import plotly.graph_objects as go

        df = self.table()
        fig = go.Figure()
        for _, r in df.iterrows():
            fig.add_trace(go.Scatter(x=[r["identity_linear_acc"]], y=[r["expression_linear_acc"]], mode="markers",
                                     name=r["run"], marker={"size": 13},
                                     hovertemplate=f"{html.escape(r['run'])}<br>identity %{{x:.3f}}<br>"
                                                   "expression %{y:.3f}<extra></extra>"))
        if self.reports:
            rep = next(iter(self.reports.values()))
            fig.add_vline(x=rep.identity_chance, line_dash="dot", line_color="#888",
                          annotation_text="identity chance", annotation_position="top right")
            fig.add_hline(y=rep.expression_chance, line_dash="dot", line_color="#888",
                          annotation_text="expression chance", annotation_position="top left")
        fig.update_layout(template="plotly_white", height=420, legend={"orientation": "h", "y": -0.25},
                          title="better expression embeddings sit top-left",
                          xaxis={"title": "identity leakage (linear probe accuracy)", "range": [0, 1.05]},
                          yaxis={"title": "expression accuracy (linear, subject-disjoint)", "range": [0, 1.05]})
        return fig

    def track(self, run: str) -> Any:
        """The SeparationTrack of run ``run`` over its numbered checkpoints (computed once, persisted)."""
        from workbench.analysis.study import separation_over_training

        if run not in self.tracks:
            with self.busy(f"scoring every checkpoint of {run}"):
                self.tracks[run] = separation_over_training(self._paths[run], self.manifest, progress=True,
                                                            feature=self.feature.value)
        return self.tracks[run]

    def _draw(self) -> None:
        if not self.reports:
            return
        self.table_html.value = frame_html(self.table().set_index("run").T)   # metrics as rows: long run names fit
        view, run = self.view.value, self.run.value
        self.run.layout.display = "none" if view == "plane" else ""
        if view == "plane":
            self.summary.value = ""
            self.plot.update(self.plane_figure())
        elif view == "run" and run:
            rep = self.reports[run]
            self.summary.value = f"<code>{html.escape(rep.summary())}</code>"
            self.plot.update(rep.plot(title=run))
        elif view == "track" and run:
            tr = self.track(run)
            self.summary.value = ""
            self.plot.update(tr.plot(title=f"{run} over training"))


# ============================================================================= attention

class AttentionPanel(Panel):
    """Grad-CAM of several runs side by side: overlays with landmarks and per-region attention bars.

    Args:
        run_dirs: run folders to offer (all selected).
        more_runs: more run folders to list, not selected (an *Add* box adds others).
        manifest: manifest with landmarks and expressions.
        target: ``prototype`` (expression prototype), ``identity`` (identity centroid), ``view``
            (another view) or ``probe`` (linear-probe logit); see :func:`workbench.explain.compute_attention`.
        n_per_expression: faces explained per expression.
        auto: compute at once.
    """

    def __init__(self, run_dirs: Sequence[str | Path], manifest: Any, *, more_runs: Sequence[str | Path] = (),
                 target: str = "prototype",
                 n_per_expression: int = 2, seed: int = 0, auto: bool = True) -> None:
        from workbench.explain.attention import TARGETS

        super().__init__()
        self.manifest = _manifest(manifest)
        self.runs = run_selector(run_dirs, more=more_runs)
        self.target = W.Dropdown(options=list(TARGETS), value=target, description="Target",
                                 layout=W.Layout(width="220px"))
        self.per_expression = W.IntSlider(value=n_per_expression, min=1, max=8, description="Faces/expr.",
                                          continuous_update=False)
        self.seed = W.IntText(value=seed, description="Seed", layout=W.Layout(width="160px"))
        self.expression = W.Dropdown(options=["(all)"], description="Show", layout=W.Layout(width="240px"))
        self.metric = W.ToggleButtons(options=[("mass / area", "score"), ("mass share", "mass")], value="score",
                                      description="Bars")
        self.button = W.Button(description="Compute", button_style="primary", icon="eye")
        self.panels = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.results: dict[str, Any] = {}
        self.region_figures: dict[str, Any] = {}  # the bar figure drawn per run
        self.button.on_click(self.guard(lambda _b: self.compute()))
        for w in (self.expression, self.metric):
            w.observe(self.guard(lambda _c: self._draw()), names=["value"])
        self.widget = W.VBox([
            W.HBox([self.runs, W.VBox([self.target, self.per_expression, self.seed, self.button])]),
            self.status, W.HBox([self.expression, self.metric]), self.panels,
        ])
        if auto:
            self.guard(self.compute)()

    def compute(self) -> dict[str, Any]:
        """Grad-CAM results of the selected runs (loaded when already computed with these settings)."""
        from workbench.analysis.study import attention_for_run
        from workbench.data.vocabulary import EXPRESSIONS

        runs = _selected(self.runs)
        out = {}
        with self.busy(f"Grad-CAM ({self.target.value}) on {len(runs)} run(s)"):
            for r in runs:
                out[r.name] = attention_for_run(r, self.manifest, target=self.target.value,
                                                n_per_expression=int(self.per_expression.value),
                                                seed=int(self.seed.value))
        self.results = out
        present = set().union(*(set(res.scores["expression"].dropna()) for res in out.values()))
        self.expression.options = ["(all)"] + [e for e in EXPRESSIONS if e in present]
        self._draw()
        return out

    def indices(self, run: str) -> list[int]:
        """Faces of ``run``'s result shown for the chosen expression (all: a balanced grid)."""
        res = self.results[run]
        if self.expression.value == "(all)":
            return res._grid_indices(16)[0]
        return np.flatnonzero(res.scores["expression"].to_numpy() == self.expression.value).tolist()

    def summary(self) -> Any:
        """Per run: pointing-game accuracy and attention share on the regions the expression moves."""
        import pandas as pd

        rows = []
        for name, res in self.results.items():
            s = res.summary().loc["all"]
            rows.append({"run": name, "pointing_acc": s["pointing_acc"], "moving_share": s["moving_share"],
                         "moving_area": s["moving_area"], "n": int(s["n"])})
        return pd.DataFrame(rows)

    def _draw(self) -> None:
        if not self.results:
            return
        cols: list[W.Widget] = [W.HTML(frame_html(self.summary()), layout=W.Layout(width="100%"))]
        for name, res in self.results.items():
            idx = self.indices(name)
            ncols = min(len(idx), 4) or 1
            grid = res.grid(indices=idx, ncols=ncols, scale=2, landmarks=True) if idx else None
            shown = None if self.expression.value == "(all)" else [self.expression.value]
            fig = res.plot_regions(metric=self.metric.value, expressions=shown)  # the bars follow the filter
            self.region_figures[name] = fig
            labels = res.scores["expression"].astype(str).to_numpy()
            rows_text = [", ".join(labels[idx[i:i + ncols]]) for i in range(0, len(idx), ncols)]
            caption = W.HTML("<span style='color:#555;font-size:11px'>tiles, row by row: "
                             + " | ".join(html.escape(t) for t in rows_text) + "</span>")
            fig.update_layout(height=300, width=460, title=name, margin={"l": 40, "r": 10, "t": 40, "b": 40},
                              legend={"font": {"size": 9}})
            cols.append(W.VBox([W.HTML(f"<b>{html.escape(name)}</b> · target {html.escape(res.meta.get('target', ''))}"),
                                image_widget(grid, width=f"{grid.shape[1]}px") if grid is not None
                                else W.HTML("<i>no face</i>"), caption,
                                LiveFigure(fig).widget],
                               layout=W.Layout(margin="0 12px 12px 0")))
        self.panels.children = tuple(cols)


# ============================================================================= figures

class FigurePanel(Panel):
    """Choose runs and figure types; export the paper figure set (PDF, SVG, PNG, CSV, JSON card each,
    plus ``results.tex``) with :func:`workbench.analysis.study.write_figure_set`.

    Args:
        run_dirs: run folders to offer (all selected).
        more_runs: more run folders to list, not selected (an *Add* box adds others).
        manifest: the evaluation manifest.
        out_dir: where the figures go.
        figures: initially selected figure types (default: all).
        style: ``single``, ``double`` or ``slide``.
        umap_method: ``umap`` or ``pca`` for the map panels.
        timeout: seconds the static export may take per figure before the matplotlib fallback.
    """

    def __init__(self, run_dirs: Sequence[str | Path], manifest: Any, out_dir: str | Path, *,
                 more_runs: Sequence[str | Path] = (),
                 figures: Sequence[str] | None = None, style: str = "double", umap_method: str = "umap",
                 timeout: float = 60.0) -> None:
        from workbench.analysis.study import FIGURES
        from workbench.viz.style import PRESETS

        super().__init__()
        self.manifest = _manifest(manifest)
        self.runs = run_selector(run_dirs, more=more_runs)
        self.figures = W.SelectMultiple(options=list(FIGURES), value=tuple(figures or FIGURES), rows=len(FIGURES),
                                        description="Figures", layout=W.Layout(width="320px"))
        self.style = W.Dropdown(options=list(PRESETS), value=style, description="Style",
                                layout=W.Layout(width="200px"))
        self.umap_method = W.Dropdown(options=["umap", "pca"], value=umap_method, description="Map",
                                      layout=W.Layout(width="200px"))
        self.out_dir = W.Text(value=str(out_dir), description="Folder", layout=W.Layout(width="460px"))
        self.timeout = float(timeout)
        self.button = W.Button(description="Export", button_style="primary", icon="download")
        self.files = W.HTML()
        self.previews = W.HBox(layout=W.Layout(flex_flow="row wrap"))
        self.written: dict[str, Path] = {}
        self.button.on_click(self.guard(lambda _b: self.export()))
        self.widget = W.VBox([
            W.HBox([self.runs, self.figures, W.VBox([self.style, self.umap_method])]),
            W.HBox([self.out_dir, self.button]), self.status, self.files, self.previews,
        ])

    def export(self) -> dict[str, Path]:
        """Write the chosen figures; returns ``{figure: main file}`` (also listed in the panel)."""
        from workbench.analysis.study import write_figure_set

        runs = _selected(self.runs)
        figs = list(self.figures.value)
        if not figs:
            raise ConfigError("select at least one figure")
        out = Path(self.out_dir.value).expanduser()
        with self.busy(f"exporting {len(figs)} figure type(s) for {len(runs)} run(s) to {out}"):
            self.written = write_figure_set(runs, self.manifest, out, progress=True, figures=figs, style=self.style.value,
                                            umap_method=self.umap_method.value, timeout=self.timeout)
        self._list(out)
        self.say(f"wrote {len(self.written)} figure(s) to {out}", "ok")
        return self.written

    def _list(self, out: Path) -> None:
        rows = []
        for name, main in self.written.items():
            siblings = sorted(p.name for p in out.glob(f"{Path(main).stem}.*"))
            rows.append(f"<tr><td><b>{html.escape(name)}</b></td><td><code>{html.escape(', '.join(siblings))}"
                        "</code></td></tr>")
        self.files.value = f"<table>{''.join(rows)}</table>"
        tiles = []
        for name, main in self.written.items():
            png = Path(main).with_suffix(".png")
            if png.is_file():
                tiles.append(W.VBox([W.HTML(f"<small>{html.escape(name)}</small>"),
                                     W.Image(value=png.read_bytes(), format="png", layout=W.Layout(width="360px"))]))
        self.previews.children = tuple(tiles)


__all__ = ["AttentionPanel", "FigurePanel", "RunComparison", "SeparationPanel"]
