"""The paper figures, drawn with matplotlib from data that is already computed.

Every builder takes DataFrames / results objects / dicts and a style preset (``single``, ``double``,
``slide``; :mod:`workbench.viz.style`) and returns ``(matplotlib Figure, long DataFrame of the data
drawn)``. Nothing here trains, embeds, fits a probe or a UMAP: :mod:`workbench.analysis.study` computes
(and caches) and then calls these.

One look for all of them:

- colours: runs get Okabe-Ito colours in a fixed order (the same run has the same colour in every
  panel), expressions their fixed palette (:data:`~workbench.viz.style.EXPRESSION_COLORS`);
- labels: human labels for every metric key (:func:`~workbench.viz.style.metric_label`); long run
  names become ``A``, ``B``... on the axes, and the legend maps them back (``A: full-run-name``);
- layout: constrained layout, legends *below* the plot area (never on top of data), titles and
  labels wrapped to the width they have, no rotated tick labels;
- every accuracy is drawn with its chance level (dashed) and, when the results carry it, the
  95 % person-bootstrap interval.

:func:`layout_problems` checks a drawn figure's geometry (legend over data, overlapping titles or
tick labels, text outside the page); the tests run it for every figure in every style.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.vocabulary import EXPRESSIONS
from workbench.viz.style import (
    CHANCE_COLOR,
    StylePreset,
    color_map_for,
    expression_color,
    get_preset,
    metric_label,
    mpl_style,
    run_colors,
    run_key,
    short_run_labels,
)

#: comparison-table protocols grouped into panels (each panel its own axis: chance levels differ)
PROBE_PANELS: dict[str, tuple[str, ...]] = {
    "Expression": ("expr_linear", "expr_knn"),
    "Identity leakage\n(lower is better)": ("identity_linear", "identity_knn"),
}

#: separation-report quantities grouped into panels with comparable scales
SEPARATION_PANELS: dict[str, tuple[str, ...]] = {
    "Probe accuracy": ("expression_linear_acc", "expression_knn_acc", "identity_linear_acc", "identity_knn_acc"),
    "Variance share": ("var_identity", "var_expression", "var_shared", "var_residual"),
    "Cluster structure": ("silhouette_expression", "silhouette_identity", "retrieval_map_at_r",
                          "expression_over_identity"),
}

_CHANCE_OF = {"expression_linear_acc": "expression_chance", "expression_knn_acc": "expression_chance",
              "identity_linear_acc": "identity_chance", "identity_knn_acc": "identity_chance"}

_MAX_HEIGHT_IN = {"single": 8.0, "double": 8.5, "slide": 5.6}


# -- helpers ----------------------------------------------------------------------------------

def _wrap(text: str, width_in: float, font_pt: float) -> str:
    """Wrap ``text`` to the characters that fit ``width_in`` at ``font_pt`` (average glyph 0.58 em)."""
    chars = max(6, int(width_in * 72.0 / (0.58 * font_pt)))
    return "\n".join(textwrap.fill(line, chars, break_on_hyphens=True, break_long_words=False)
                     for line in str(text).split("\n"))


def _figure(p: StylePreset, nrows: int = 1, ncols: int = 1, *, height_in: float | None = None, **kw: Any):
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(nrows, ncols, squeeze=False, figsize=(p.width_in, height_in or p.height_in), **kw)
    return fig, axes


def _legend_below(fig: Any, handles: list, labels: list[str], p: StylePreset, *, title: str | None = None,
                  text_only: bool = False, key: Sequence[str] = ()) -> None:
    """One legend for the figure, centred under the plot area, as many columns as fit the width; ``key``
    lines (``A: full run name``) go into its title, one per line."""
    if not handles:
        return
    if key:
        title = "\n".join([*(_wrap(k, p.width_in * 0.9, p.legend_size) for k in key), *([title] if title else [])])
    labels = [_wrap(lab, p.width_in * 0.9, p.legend_size) for lab in labels]
    longest = max(max(len(s) for s in lab.split("\n")) for lab in labels)
    col_in = (longest * 0.58 * p.legend_size + (1.0 if text_only else 2.5) * p.legend_size) / 72.0
    ncols = max(1, min(len(labels), int(p.width_in * 0.95 // max(col_in, 1e-3))))
    fig.legend(handles, labels, loc="outside lower center", ncols=ncols, title=title, fontsize=p.legend_size,
               frameon=False, title_fontsize=p.legend_size, handlelength=0.0 if text_only else 1.5, columnspacing=1.0,
               handletextpad=0.0 if text_only else 0.4)


def fit_tick_labels(fig: Any, ax: Any, *, min_pt: float = 5.0) -> None:
    """Shrink the x tick labels of ``ax`` (half a point at a time, not below ``min_pt``) until neighbours
    no longer touch; for converted figures whose categories the caller does not know in advance."""
    labels = _tick_labels(ax.xaxis)
    while labels:
        fig.canvas.draw()
        r = fig.canvas.get_renderer()
        size = labels[0].get_fontsize()
        gap = size * fig.dpi / 72.0 / 3.0
        bbs = [lab.get_window_extent(r) for lab in labels]
        if not any(_overlap(a, b, tol=-gap) for a, b in zip(bbs, bbs[1:])) or size - 0.5 < min_pt:
            return
        for lab in labels:
            lab.set_fontsize(size - 0.5)
        ax.tick_params(axis="x", labelsize=size - 0.5)


def _is_num(v: Any) -> bool:
    return v is not None and isinstance(v, (int, float, np.floating, np.integer)) and not isinstance(v, bool) \
        and math.isfinite(float(v))


def _runs_legend(fig: Any, runs: Sequence[str], colors: Mapping[str, str], p: Any, *, chance: bool,
                 intervals: bool) -> None:
    """The legend under a bar figure: one entry per run (short key: full name), chance, the CI note."""
    handles, labels = _run_handles(runs, colors, p=p), [run_key(runs)[r] for r in runs]
    if chance:
        handles.append(_chance_handle(p))
        labels.append("chance")
    _legend_below(fig, handles, labels, p, title="error bars: 95% CI" if intervals else None)


def _bar_inputs(sub: pd.DataFrame, key: str, value: str, keys: Sequence[str]) -> tuple[dict, dict, dict]:
    """From a long frame (``key``, ``run``, ``value``, ``low``, ``high``, ``chance``): the bar values and
    intervals keyed by (key, run), and the chance level per key."""
    values = {(k, r): v for k, r, v in zip(sub[key], sub["run"], sub[value])}
    intervals = {(k, r): (lo, hi) for k, r, lo, hi in zip(sub[key], sub["run"], sub["low"], sub["high"])}
    chance = {k: sub.loc[sub[key] == k, "chance"].dropna().mean() for k in keys}
    return values, intervals, chance


def _grouped_bars(ax: Any, groups: Sequence[str], runs: Sequence[str], values: Mapping[tuple[str, str], Any],
                  colors: Mapping[str, str], p: StylePreset, *, intervals: Mapping[tuple[str, str], tuple] | None = None,
                  chance: Mapping[str, Any] | None = None, tick_labels: Sequence[str] | None = None,
                  horizontal: bool = False) -> bool:
    """Bars per ``(group, run)`` with optional 95 % intervals and a dashed chance tick per group
    (``horizontal``: groups top to bottom, labels on the y axis). Returns whether a chance line was drawn."""
    n = max(1, len(runs))
    width = 0.8 / n
    drew_chance = False
    for j, run in enumerate(runs):
        pos = np.arange(len(groups)) + (j - (n - 1) / 2) * width
        vals = np.array([float(values[(g, run)]) if _is_num(values.get((g, run))) else np.nan for g in groups])
        yerr = None
        if intervals:
            lo_hi = [intervals.get((g, run)) or (None, None) for g in groups]
            if any(_is_num(a) and _is_num(b) for a, b in lo_hi):
                yerr = np.array([[v - a if _is_num(a) and np.isfinite(v) else 0.0 for v, (a, _) in zip(vals, lo_hi)],
                                 [b - v if _is_num(b) and np.isfinite(v) else 0.0 for v, (_, b) in zip(vals, lo_hi)]])
                yerr = np.clip(yerr, 0.0, None)
        err_kw = {"elinewidth": p.axis_line_width, "capsize": 1.5 * p.line_width, "capthick": p.axis_line_width,
                  "ecolor": "#000000"}
        if horizontal:
            ax.barh(pos, vals, height=width * 0.92, color=colors[run], xerr=yerr, label=run, error_kw=err_kw)
        else:
            ax.bar(pos, vals, width=width * 0.92, color=colors[run], yerr=yerr, label=run, error_kw=err_kw)
    for i, g in enumerate(groups):
        c = (chance or {}).get(g)
        if _is_num(c):
            draw = ax.vlines if horizontal else ax.hlines
            draw(float(c), i - 0.45, i + 0.45, colors=CHANCE_COLOR, linestyles=(0, (3, 2)), lw=p.line_width,
                 zorder=3)
            drew_chance = True
    if horizontal:
        ax.set_yticks(np.arange(len(groups)), list(tick_labels or groups))
        ax.set_ylim(len(groups) - 0.45, -0.55)  # first group on top
        ax.tick_params(axis="y", length=0)
    else:
        ax.set_xticks(np.arange(len(groups)), list(tick_labels or groups))
        ax.set_xlim(-0.55, len(groups) - 0.45)
        ax.tick_params(axis="x", length=0)
    return drew_chance


def _chance_handle(p: StylePreset):
    from matplotlib.lines import Line2D

    return Line2D([], [], color=CHANCE_COLOR, ls=(0, (3, 2)), lw=p.line_width)


def _run_handles(runs: Sequence[str], colors: Mapping[str, str], *, kind: str = "patch", p: StylePreset):
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    if kind == "line":
        return [Line2D([], [], color=colors[r], lw=p.line_width, marker="o", ms=p.marker_size) for r in runs]
    return [Patch(facecolor=colors[r]) for r in runs]


def _panel_title(ax: Any, text: str, p: StylePreset, width_in: float) -> None:
    """Title wrapped to the panel's width less the y-axis labels' room."""
    room = max(0.8, width_in - 0.45 * p.font_size / 8.0)
    ax.set_title(_wrap(text, room, p.title_size), fontsize=p.title_size)


# -- training curves ----------------------------------------------------------------------------

def training_curves_figure(data: pd.DataFrame, *, style: str | StylePreset = "double",
                           chance: float | None = None) -> tuple[Any, pd.DataFrame]:
    """Pretraining loss per step and online kNN expression accuracy per epoch, one colour per run.

    Args:
        data: rows ``run, step, epoch, loss, knn_expression`` (NaN where a record has no such value),
            as :func:`workbench.analysis.study.training_curves` reads them from ``metrics.jsonl``.
        chance: expression chance level for the kNN panel (dashed line), when known.
    """
    from matplotlib.ticker import MaxNLocator

    p = get_preset(style)
    data = data.copy()
    for col in ("loss", "knn_expression", "step", "epoch"):
        if col not in data:
            data[col] = np.nan
    runs = list(dict.fromkeys(data["run"].astype(str))) if len(data) else []
    colors = run_colors(runs)
    has_knn = bool(data["knn_expression"].notna().any())
    ncols = 2 if has_knn else 1
    with mpl_style(p):
        fig, axes = _figure(p, 1, ncols)
        ax_loss = axes[0][0]
        for run in runs:
            part = data[(data["run"].astype(str) == run) & data["loss"].notna()].sort_values("step")
            few = len(part) <= 20  # a short run: markers, so a single record is still visible
            ax_loss.plot(part["step"], part["loss"], color=colors[run], lw=p.line_width, marker="o" if few else None,
                         ms=p.marker_size)
        ax_loss.set_xlabel("Step")
        ax_loss.set_ylabel("Loss")
        _panel_title(ax_loss, metric_label("loss"), p, p.width_in / ncols)
        handles = _run_handles(runs, colors, kind="line" if has_knn else "line", p=p)
        labels = [run_key(runs)[r] for r in runs]
        if has_knn:
            ax = axes[0][1]
            for run in runs:
                part = data[(data["run"].astype(str) == run) & data["knn_expression"].notna()].sort_values("epoch")
                ax.plot(part["epoch"], part["knn_expression"], color=colors[run], lw=p.line_width, marker="o",
                        ms=p.marker_size)
            if _is_num(chance):
                ax.axhline(float(chance), color=CHANCE_COLOR, ls=(0, (3, 2)), lw=p.line_width)
                handles.append(_chance_handle(p))
                labels.append("chance")
            ax.set_ylim(0.0, 1.0)
            ax.set_xlabel("Epoch")
            ax.set_ylabel("Accuracy")
            ax.xaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
            _panel_title(ax, metric_label("knn_expression"), p, p.width_in / ncols)
        ax_loss.xaxis.set_major_locator(MaxNLocator(nbins=4 if p.name == "single" else 6, integer=True))
        steps = data.loc[data["loss"].notna(), "step"].astype(float)
        if len(steps) and steps.max() - steps.min() < 2:  # one logged step: integer ticks around it
            ax_loss.set_xlim(steps.min() - 1, steps.max() + 1)
        _legend_below(fig, handles, labels, p)
    return fig, data


# -- probe comparison -----------------------------------------------------------------------------

def probe_comparison_figure(table: pd.DataFrame, *, style: str | StylePreset = "double"
                            ) -> tuple[Any, pd.DataFrame]:
    """Frozen-feature probe accuracy of several runs: one panel for expression, one for identity leakage,
    bars per run with 95 % intervals (``<protocol>_low`` / ``_high`` columns) and chance levels
    (``<protocol>_chance``).

    Args:
        table: :func:`workbench.analysis.study.compare_runs`' table (``run`` + one column per protocol).
    """
    p = get_preset(style)
    runs = [str(r) for r in table["run"]]
    colors = run_colors(runs)
    panels = {t: tuple(c for c in cols if c in table.columns) for t, cols in PROBE_PANELS.items()}
    panels = {t: cols for t, cols in panels.items() if cols}
    rows = []
    for _, r in table.iterrows():
        for cols in panels.values():
            for c in cols:
                rows.append({"run": str(r["run"]), "protocol": c, "label": metric_label(c),
                             "accuracy": r.get(c), "low": r.get(f"{c}_low"), "high": r.get(f"{c}_high"),
                             "chance": r.get(f"{c}_chance")})
    long = pd.DataFrame(rows, columns=["run", "protocol", "label", "accuracy", "low", "high", "chance"])
    n = max(1, len(panels))
    with mpl_style(p):
        fig, axes = _figure(p, 1, n, sharey=True)
        drew_chance = drew_ci = False
        for ax, (title, cols) in zip(axes[0], panels.items()):
            values, ivs, chance = _bar_inputs(long[long["protocol"].isin(cols)], "protocol", "accuracy", cols)
            drew_ci |= any(_is_num(a) for a, _ in ivs.values())
            drew_chance |= _grouped_bars(ax, cols, runs, values, colors, p, intervals=ivs, chance=chance,
                                         tick_labels=[metric_label(c, short=True) for c in cols])
            _panel_title(ax, title, p, p.width_in / n)
            ax.set_ylim(0.0, 1.03)
            ax.set_yticks([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
        axes[0][0].set_ylabel("Accuracy")
        _runs_legend(fig, runs, colors, p, chance=drew_chance, intervals=drew_ci)
    return fig, long


# -- separation ------------------------------------------------------------------------------------

def _report_parts(rep: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """(metrics, intervals) of a SeparationReport or of a plain ``{"metrics":..., "intervals":...}`` /
    flat metrics dict."""
    if hasattr(rep, "metrics"):
        return dict(rep.metrics()), dict(getattr(rep, "intervals", {}) or {})
    rep = dict(rep)
    if "metrics" in rep:
        return dict(rep["metrics"]), dict(rep.get("intervals") or {})
    return rep, {}


def separation_figure(reports: Mapping[str, Any], *, style: str | StylePreset = "double"
                      ) -> tuple[Any, pd.DataFrame]:
    """Identity-vs-expression reports of several runs in three panels, each with its own axis:
    probe accuracies (95 % intervals, chance), variance shares, cluster structure.

    Args:
        reports: ``{run: SeparationReport}`` (or ``{run: {"metrics": {...}, "intervals": {...}}}``).
    Returns the figure and a long table of *every* metric (``panel`` empty for those not drawn).
    """
    from matplotlib.ticker import MaxNLocator

    p = get_preset(style)
    runs = [str(r) for r in reports]
    colors = run_colors(runs)
    drawn = {k: t for t, keys in SEPARATION_PANELS.items() for k in keys}
    rows = []
    for run, rep in reports.items():
        metrics, intervals = _report_parts(rep)
        for k, v in metrics.items():
            iv = intervals.get(k.removesuffix("_acc")) or {}
            rows.append({"run": str(run), "panel": drawn.get(k, ""), "metric": k, "label": metric_label(k),
                         "value": v, "low": iv.get("low"), "high": iv.get("high"),
                         "chance": metrics.get(_CHANCE_OF.get(k, ""))})
    long = pd.DataFrame(rows, columns=["run", "panel", "metric", "label", "value", "low", "high", "chance"])
    panels = {t: [k for k in keys if k in set(long["metric"][long["value"].map(_is_num)])]
              for t, keys in SEPARATION_PANELS.items()}
    panels = {t: keys for t, keys in panels.items() if keys}
    n = max(1, len(panels))
    vertical = p.name == "single"
    nrows, ncols = (n, 1) if vertical else (1, n)
    height = min(_MAX_HEIGHT_IN.get(p.name, 8.0), 1.5 * n + 0.9) if vertical else p.height_in + 0.4
    # side by side: give each panel its tick labels' width on top of an equal plot width
    label_in = [max(len(metric_label(k, short=True).replace("\n", " ")) for k in keys) * 0.58 * p.tick_size / 72.0
                + 0.15 for keys in panels.values()]
    plot_in = max(0.8, (p.width_in - sum(label_in)) / n)
    ratios = [plot_in + w for w in label_in]
    with mpl_style(p):
        fig, axes = _figure(p, nrows, ncols, height_in=height,
                            **({} if vertical else {"gridspec_kw": {"width_ratios": ratios}}))
        flat = [a for row in axes for a in row]
        drew_chance = drew_ci = False
        for ax, (title, keys) in zip(flat, panels.items()):
            sub = long[long["metric"].isin(keys)]
            values, ivs, chance = _bar_inputs(sub, "metric", "value", keys)
            drew_ci |= any(_is_num(a) for a, _ in ivs.values())
            drew_chance |= _grouped_bars(ax, keys, runs, values, colors, p, intervals=ivs, chance=chance,
                                         tick_labels=[metric_label(k, short=True).replace("\n", " ")
                                                      for k in keys], horizontal=True)
            # the title is centred over the plot area (not over the tick labels)
            _panel_title(ax, title, p, (p.width_in - label_in[flat.index(ax)] if vertical else plot_in)
                         + 0.45 * p.font_size / 8.0)
            vals = pd.to_numeric(sub["value"], errors="coerce")
            if title in ("Probe accuracy", "Variance share"):
                ax.set_xlim(0.0, 1.03)  # room for an interval that ends at 1
                ax.set_xticks([0.0, 0.5, 1.0])
                ax.set_xlabel("Accuracy" if title == "Probe accuracy" else "Share of variance")
            else:
                lo = min(0.0, float(np.nanmin(vals)) if vals.notna().any() else 0.0)
                ax.set_xlim(min(-0.05, lo * 1.15), 1.0)
                ax.axvline(0.0, color="#000000", lw=p.axis_line_width)
                ax.set_xlabel("Score")
                ax.xaxis.set_major_locator(MaxNLocator(nbins=3 if p.name == "single" else 4))
        _runs_legend(fig, runs, colors, p, chance=drew_chance, intervals=drew_ci)
    return fig, long


# -- embedding maps --------------------------------------------------------------------------------

def umap_panels_figure(frame: pd.DataFrame, *, style: str | StylePreset = "double", color: str = "expression",
                       facet: str | None = "run", method: str = "UMAP") -> tuple[Any, pd.DataFrame]:
    """One 2-D map per ``facet`` value (runs), points coloured by ``color`` (fixed palette), legend below.

    Args:
        frame: ``x, y`` plus metadata columns (``EmbeddingMap.frame()``); nothing is recomputed.
    """
    p = get_preset(style)
    df = frame.copy()
    panels = list(dict.fromkeys(df[facet].astype(str))) if facet and facet in df else [None]
    n = len(panels)
    ncols = min(n, 2 if p.name == "single" else 4)
    nrows = math.ceil(n / ncols)
    panel_w = p.width_in / ncols
    height = min(_MAX_HEIGHT_IN.get(p.name, 8.0), nrows * panel_w * 0.95 + 0.9)
    if p.name == "slide" or n == 1:
        height = p.height_in if nrows == 1 else height
    short = short_run_labels(panels) if panels != [None] else {}
    with mpl_style(p):
        fig, axes = _figure(p, nrows, ncols, height_in=height)
        flat = [a for row in axes for a in row]
        values = [str(v) for v in df[color]] if color and color in df else []
        cmap = color_map_for(color, values) if values else {}
        from workbench.viz.style import category_order

        order = category_order(color, values) if values else []
        ms = max(1.0, p.marker_size * 0.6) ** 2
        for ax, panel in zip(flat, panels):
            sub = df if panel is None else df[df[facet].astype(str) == panel]
            if order:
                for v in order:
                    pts = sub[sub[color].astype(str) == v]
                    ax.scatter(pts["x"], pts["y"], s=ms, c=cmap[v], linewidths=0, rasterized=len(df) > 5000)
            else:
                ax.scatter(sub["x"], sub["y"], s=ms, c="#0072B2", linewidths=0)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.spines[["top", "right"]].set_visible(True)
            ax.set_aspect("equal", adjustable="datalim")
            if panel is not None:
                _panel_title(ax, short.get(panel, panel), p, panel_w)
        for ax in flat[n:]:
            ax.set_visible(False)
        flat[(nrows - 1) * ncols].set_xlabel(f"{method} 1")
        flat[(nrows - 1) * ncols].set_ylabel(f"{method} 2")
        from matplotlib.lines import Line2D

        handles = [Line2D([], [], ls="", marker="o", color=cmap[v], ms=p.marker_size * 1.3) for v in order[:12]]
        labels = list(order[:12])
        keyed = {k: v for k, v in run_key(panels).items() if k != v} if panels != [None] else {}
        # letters on the panels: the legend title says which run each is
        _legend_below(fig, handles, labels, p, key=list(keyed.values()))
    return fig, df


# -- Grad-CAM ----------------------------------------------------------------------------------------

def _pick_faces(results: Mapping[str, Any]) -> tuple[list[str], dict[str, dict[str, int]]]:
    """Expressions (canonical order) and, per run, the row shown for each: the first run's first face
    of that expression, and the same image in the other runs when they explained it."""
    first = next(iter(results.values()))
    s0 = first.scores
    present = set(s0["expression"].dropna().astype(str)) if "expression" in s0 else set()
    exprs = [e for e in EXPRESSIONS if e in present] + sorted(present - set(EXPRESSIONS))
    picks: dict[str, dict[str, int]] = {}
    for run, res in results.items():
        sc = res.scores.reset_index(drop=True)
        picks[run] = {}
        for e in exprs:
            ref = s0.reset_index(drop=True)
            i0 = int(ref.index[ref["expression"].astype(str) == e][0])
            same = sc.index[sc["path"].astype(str) == str(ref["path"].iloc[i0])] if "path" in sc and "path" in ref \
                else sc.index[:0]
            cand = same if len(same) else sc.index[sc["expression"].astype(str) == e]
            if len(cand):
                picks[run][e] = int(cand[0])
    return exprs, picks


def gradcam_grid_figure(results: Mapping[str, Any] | Any, *, style: str | StylePreset = "double",
                        cmap: str = "inferno", alpha: float = 0.55) -> tuple[Any, pd.DataFrame]:
    """Paper-ready Grad-CAM grid: one face per expression, the input and each run's map over it,
    captions per row and column, a perceptually uniform colormap and a colour bar.

    Expressions are the columns when they fit the width (double, slide), else the rows (single).

    Args:
        results: ``{run: AttentionResult}`` (or one AttentionResult); nothing is recomputed.
        cmap: a perceptually uniform matplotlib colormap (``inferno``, ``magma``, ``viridis``).
    """
    import matplotlib
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import Normalize

    if not isinstance(results, Mapping):
        results = {str(results.meta.get("run", "run")): results}
    p = get_preset(style)
    runs = [str(r) for r in results]
    exprs, picks = _pick_faces(results)
    first = next(iter(results.values()))
    labels = short_run_labels(runs)
    lines = ["Input"] + [labels[r] for r in runs]   # one line of cells per run (+ the input faces)
    expr_cols = p.width_in / max(1, len(exprs)) >= 0.75
    nrows, ncols = (len(lines), len(exprs)) if expr_cols else (len(exprs), len(lines))
    cbar_in = 0.55 + p.tick_size / 72 * 3
    avail_w = p.width_in - cbar_in - (0.35 if expr_cols else 0.9)
    cell = min(avail_w / ncols, (_MAX_HEIGHT_IN.get(p.name, 8.0) - 0.9) / nrows)
    height = cell * nrows + 0.55 + (0.45 if any(labels[r] != r for r in runs) else 0.1)
    rows_out = []
    with mpl_style(p):
        fig, axes = _figure(p, nrows, ncols, height_in=height)
        cm = matplotlib.colormaps[cmap]
        for li, line in enumerate(lines):
            run = None if li == 0 else runs[li - 1]
            for ei, e in enumerate(exprs):
                ax = axes[li][ei] if expr_cols else axes[ei][li]
                ax.set_xticks([])
                ax.set_yticks([])
                for s in ax.spines.values():
                    s.set_visible(False)
                res = first if run is None else results[run]
                i = picks[runs[0] if run is None else run].get(e)
                if i is not None:
                    ax.imshow(np.asarray(res.images[i]), interpolation="nearest")
                    if run is not None:
                        heat = np.asarray(res.heatmaps[i], dtype=np.float32)
                        h, w = np.asarray(res.images[i]).shape[:2]
                        ax.imshow(np.clip(heat, 0, 1), cmap=cm, vmin=0.0, vmax=1.0, alpha=alpha,
                                  interpolation="bilinear", extent=(-0.5, w - 0.5, h - 0.5, -0.5))
                        rows_out.append({"run": run, "expression": e, "row": i,
                                         "path": str(res.scores["path"].iloc[i]) if "path" in res.scores else "",
                                         "heat_mean": float(heat.mean())})
                col_caption, row_caption = (e, line) if expr_cols else (line, e)
                if (li == 0) if expr_cols else (ei == 0):
                    ax.set_title(_wrap(col_caption, cell, p.font_size), fontsize=p.font_size)
                if (ei == 0) if expr_cols else (li == 0):
                    ax.set_ylabel(_wrap(row_caption, 0.9, p.font_size), fontsize=p.font_size, rotation=0,
                                  ha="right", va="center", labelpad=3)
        cb = fig.colorbar(ScalarMappable(Normalize(0, 1), cm), ax=axes, shrink=0.8 if nrows > 1 else 1.0,
                          fraction=0.05, aspect=max(8, 8 * nrows))
        cb.set_label("Grad-CAM (1 = max)")
        cb.set_ticks([0, 0.5, 1])
        keyed = [f"{labels[r]}: {r}" for r in runs if labels[r] != r]
        if keyed:
            from matplotlib.lines import Line2D

            _legend_below(fig, [Line2D([], [], ls="") for _ in keyed], keyed, p, text_only=True)
    return fig, pd.DataFrame(rows_out, columns=["run", "expression", "row", "path", "heat_mean"])


def region_bars_figure(result: Any, *, style: str | StylePreset = "double", metric: str = "score"
                       ) -> tuple[Any, pd.DataFrame]:
    """Mean Grad-CAM region score per expression (bars: mean, error bars: standard error), dashed line
    at 1 = uniform attention. ``result`` is an AttentionResult (its ``scores`` and ``regions``)."""
    p = get_preset(style)
    df = result.scores
    regions = list(result.regions)
    regions = [r for r in regions if f"{metric}_{r}" in df]
    present = set(df["expression"].dropna().astype(str))
    exprs = [e for e in EXPRESSIONS if e in present] + sorted(present - set(EXPRESSIONS))
    rows = []
    for e in exprs:
        part = df[df["expression"].astype(str) == e]
        for r in regions:
            v = pd.to_numeric(part[f"{metric}_{r}"], errors="coerce").dropna()
            sem = float(v.std(ddof=1) / math.sqrt(len(v))) if len(v) > 1 else 0.0
            rows.append({"expression": e, "region": r, "mean": float(v.mean()) if len(v) else np.nan, "sem": sem,
                         "n": int(len(v))})
    long = pd.DataFrame(rows, columns=["expression", "region", "mean", "sem", "n"])
    colors = {e: expression_color(e) for e in exprs}
    # horizontal bars: region names never collide; the height grows with regions x expressions
    bar_in = {"single": 0.045, "double": 0.05, "slide": 0.07}.get(p.name, 0.05) * (p.font_size / 8.0 if
                                                                                   p.name == "slide" else 1.0)
    legend_in = 0.25 + 0.22 * math.ceil((len(exprs) + 1) / (2 if p.name == "single" else 5)) * p.legend_size / 7.0
    height = 0.7 + len(regions) * max(0.25, bar_in * max(1, len(exprs))) + legend_in
    height = max(p.height_in, min(_MAX_HEIGHT_IN.get(p.name, 8.0), height))
    with mpl_style(p):
        fig, axes = _figure(p, 1, 1, height_in=height)
        ax = axes[0][0]
        values = {(r, e): m for r, e, m in zip(long["region"], long["expression"], long["mean"])}
        ivs = {(r, e): (m - s, m + s) for r, e, m, s in zip(long["region"], long["expression"], long["mean"],
                                                             long["sem"])}
        _grouped_bars(ax, regions, exprs, values, colors, p, intervals=ivs, horizontal=True,
                      tick_labels=[r.replace("cheeks_jaw", "cheeks/jaw").replace("_", " ") for r in regions])
        if metric == "score":
            ax.axvline(1.0, color=CHANCE_COLOR, ls=(0, (3, 2)), lw=p.line_width)
        ax.set_xlabel("Attention / area (1 = uniform)" if metric == "score" else "Share of attention")
        handles = _run_handles(exprs, colors, p=p)
        labels = list(exprs)
        if metric == "score":
            handles.append(_chance_handle(p))
            labels.append("uniform")
        _legend_below(fig, handles, labels, p, title="error bars: standard error")
    return fig, long


# -- geometry check ------------------------------------------------------------------------------

def _texts_of(ax: Any) -> list[Any]:
    out = [ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
    for axis in (ax.xaxis, ax.yaxis):
        lo, hi = sorted(axis.get_view_interval())
        eps = (hi - lo) * 1e-6
        for loc, lab in zip(axis.get_majorticklocs(), axis.get_majorticklabels()):
            if lo - eps <= loc <= hi + eps:
                out.append(lab)
    return [t for t in out if t.get_visible() and t.get_text().strip()]


def _tick_labels(axis: Any) -> list[Any]:
    lo, hi = sorted(axis.get_view_interval())
    eps = (hi - lo) * 1e-6
    return [lab for loc, lab in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
            if lo - eps <= loc <= hi + eps and lab.get_visible() and lab.get_text().strip()]


def _overlap(a: Any, b: Any, tol: float = 0.5) -> bool:
    return (min(a.x1, b.x1) - max(a.x0, b.x0) > tol) and (min(a.y1, b.y1) - max(a.y0, b.y0) > tol)


def layout_problems(fig: Any, *, tol: float = 1.0) -> list[str]:
    """What is wrong with a matplotlib figure's layout once drawn (empty list = nothing):

    - a text (title, axis label, tick label, legend, colour bar label) reaches outside the figure;
    - a legend covers a plot area (axes);
    - a title or axis label covers another axes or another title/label;
    - neighbouring tick labels of one axis overlap or nearly touch (gap under 1/3 of the font size);
    - a tick label is rotated.
    """
    fig.canvas.draw()
    r = fig.canvas.get_renderer()
    page = fig.bbox
    problems: list[str] = []
    axes = [a for a in fig.axes if a.get_visible()]
    legends = list(fig.legends) + [a.get_legend() for a in axes if a.get_legend() is not None]

    def inside(bb: Any, what: str) -> None:
        if bb.x0 < page.x0 - tol or bb.y0 < page.y0 - tol or bb.x1 > page.x1 + tol or bb.y1 > page.y1 + tol:
            problems.append(f"{what} is clipped (extends outside the figure)")

    heads: list[tuple[str, Any, Any]] = []   # (description, bbox, owning axes)
    for i, ax in enumerate(axes):
        for t in _texts_of(ax):
            bb = t.get_window_extent(r)
            inside(bb, f"axes {i} text '{t.get_text()[:30]}'")
        for t in _tick_labels(ax.xaxis) + _tick_labels(ax.yaxis):
            if t.get_rotation() % 360 != 0:
                problems.append(f"axes {i} tick label '{t.get_text()[:30]}' is rotated")
        for t in (ax.title, ax._left_title, ax._right_title, ax.xaxis.label, ax.yaxis.label):
            if t.get_visible() and t.get_text().strip():
                heads.append((f"axes {i} '{t.get_text()[:30]}'", t.get_window_extent(r), ax))
        for axis in (ax.xaxis, ax.yaxis):
            labs = _tick_labels(axis)
            bbs = [lab.get_window_extent(r) for lab in labs]
            # neighbours need a gap of a third of the font size, else they read as one number
            gap = (labs[0].get_fontsize() * fig.dpi / 72.0 / 3.0) if labs else 0.0
            for a_i in range(len(bbs) - 1):
                if _overlap(bbs[a_i], bbs[a_i + 1], tol=-gap):
                    problems.append(f"axes {i} tick labels '{labs[a_i].get_text()[:20]}' and "
                                    f"'{labs[a_i + 1].get_text()[:20]}' overlap")
        for j, other in enumerate(axes):
            if other is ax:
                continue
            obox = other.get_window_extent(r)
            for t in _texts_of(ax):
                if _overlap(t.get_window_extent(r), obox):
                    problems.append(f"axes {i} text '{t.get_text()[:30]}' covers the plot area of axes {j}")
    for a_i in range(len(heads)):
        for b_i in range(a_i + 1, len(heads)):
            (da, ba, _), (db, bb_, _) = heads[a_i], heads[b_i]
            if _overlap(ba, bb_):
                problems.append(f"{da} and {db} overlap")
    for k, leg in enumerate(legends):
        lb = leg.get_window_extent(r)
        inside(lb, f"legend {k}")
        for i, ax in enumerate(axes):
            if _overlap(lb, ax.get_window_extent(r)):
                problems.append(f"legend {k} covers the plot area of axes {i}")
        for d, hb, _ in heads:
            if _overlap(lb, hb):
                problems.append(f"legend {k} covers {d}")
    for t in fig.texts + ([fig._suptitle] if fig._suptitle is not None else []):
        if t.get_visible() and t.get_text().strip():
            inside(t.get_window_extent(r), f"figure text '{t.get_text()[:30]}'")
    return problems


def figure_kinds() -> tuple[str, ...]:
    """Names of the builders in this module (what the layout test renders)."""
    return ("training_curves", "probe_comparison", "separation_bars", "umap_panels", "gradcam_grid",
            "gradcam_regions")

