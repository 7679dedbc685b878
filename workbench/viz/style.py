"""Figure style presets and fixed palettes (the same in plotly and matplotlib).

Presets match journal column widths: ``"single"`` = 3.5 in (88 mm), ``"double"`` = 7.16 in (180 mm).
Font sizes are in points at the printed size, so a figure exported with a preset needs no rescaling
in LaTeX (``\\includegraphics[width=\\columnwidth]``). Sizes in plotly are converted at 96 px per inch,
which is how Kaleido maps layout pixels to PDF points.

Palettes never depend on which classes a plot happens to contain:

- :data:`EXPRESSION_COLORS`: one colour per canonical expression, Okabe-Ito (colour-blind safe)
  plus grey for neutral; order = :data:`~workbench.data.vocabulary.EXPRESSIONS`.
- :data:`IDENTITY_PALETTE`: Paul Tol's 9 "muted" colours, repeated over sorted identity codes
  (identities are too many to be distinguished by colour alone; use facets or hover).
- :data:`FACTOR_COLORS`: expression vs identity in comparison plots.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import ConfigError

PX_PER_IN = 96.0
PT_PER_IN = 72.0

EXPRESSION_COLORS: dict[str, str] = {
    "neutral": "#999999",    # grey
    "happiness": "#E69F00",  # orange
    "sadness": "#0072B2",    # blue
    "surprise": "#56B4E9",   # sky blue
    "fear": "#CC79A7",       # reddish purple
    "disgust": "#009E73",    # bluish green
    "anger": "#D55E00",      # vermillion
    "contempt": "#000000",   # black
}
assert tuple(EXPRESSION_COLORS) == EXPRESSIONS

IDENTITY_PALETTE: tuple[str, ...] = (
    "#CC6677", "#332288", "#DDCC77", "#117733", "#88CCEE", "#882255", "#44AA99", "#999933", "#AA4499",
)
FACTOR_COLORS: dict[str, str] = {"expression": "#0072B2", "identity": "#D55E00", "residual": "#BBBBBB",
                                 "shared": "#999999"}
#: Okabe & Ito (2008) colour-blind-safe palette, in the order runs get their colours (black last).
OKABE_ITO: tuple[str, ...] = ("#0072B2", "#E69F00", "#009E73", "#CC79A7", "#56B4E9", "#D55E00", "#F0E442",
                              "#000000")
SEQUENCE_PALETTE: tuple[str, ...] = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9",
                                     "#000000", "#999999")


@dataclass(frozen=True)
class StylePreset:
    """Physical figure size (inches) and typography (points) of one layout."""

    name: str
    width_in: float
    height_in: float
    font_family: str = "DejaVu Sans"
    font_size: float = 8.0
    title_size: float = 9.0
    tick_size: float = 7.0
    legend_size: float = 7.0
    line_width: float = 1.0
    axis_line_width: float = 0.6
    marker_size: float = 3.0
    dpi: int = 300


PRESETS: dict[str, StylePreset] = {
    "single": StylePreset("single", width_in=3.5, height_in=2.6),
    "double": StylePreset("double", width_in=7.16, height_in=3.2, font_size=9.0, title_size=10.0,
                          tick_size=8.0, legend_size=8.0, line_width=1.2, marker_size=3.5),
    "slide": StylePreset("slide", width_in=10.0, height_in=5.6, font_size=16.0, title_size=20.0,
                         tick_size=14.0, legend_size=14.0, line_width=2.0, axis_line_width=1.0,
                         marker_size=6.0, dpi=150),
}

_FONT_STACK = "DejaVu Sans, Arial, Helvetica, sans-serif"


def get_preset(preset: str | StylePreset) -> StylePreset:
    """Resolve a preset name (``single``, ``double``, ``slide``) or pass a :class:`StylePreset` through."""
    if isinstance(preset, StylePreset):
        return preset
    try:
        return PRESETS[str(preset)]
    except KeyError:
        raise ConfigError(f"unknown figure style '{preset}'; choose one of {', '.join(PRESETS)}") from None


def pt_to_px(pt: float) -> float:
    """Points at print size -> plotly layout pixels (96 px per inch)."""
    return pt * PX_PER_IN / PT_PER_IN


def expression_color(name: str) -> str:
    """Fixed colour of a canonical expression (grey for anything unknown)."""
    return EXPRESSION_COLORS.get(str(name), "#BBBBBB")


def identity_colors(identities: Iterable[Any]) -> dict[str, str]:
    """``{identity: colour}`` over the sorted unique identity codes, cycling :data:`IDENTITY_PALETTE`."""
    uniq = sorted({str(i) for i in identities})
    return {ident: IDENTITY_PALETTE[i % len(IDENTITY_PALETTE)] for i, ident in enumerate(uniq)}


def color_map_for(column: str, values: Iterable[Any]) -> dict[str, str]:
    """The fixed colour map for a metadata column (expression, identity), else a cycling sequence."""
    vals = [str(v) for v in values]
    if column == "expression":
        return {v: expression_color(v) for v in dict.fromkeys(vals)}
    if column in ("identity", "subject"):
        return identity_colors(vals)
    uniq = sorted(set(vals))
    return {v: SEQUENCE_PALETTE[i % len(SEQUENCE_PALETTE)] for i, v in enumerate(uniq)}


def category_order(column: str, values: Iterable[Any]) -> list[str]:
    """Legend order: EXPRESSIONS order for expressions, sorted otherwise."""
    vals = {str(v) for v in values}
    if column == "expression":
        return [e for e in EXPRESSIONS if e in vals] + sorted(vals - set(EXPRESSIONS))
    return sorted(vals)


def apply_plotly_style(fig: Any, preset: str | StylePreset = "single") -> Any:
    """Size and restyle a plotly figure in place for print (white template, thin axes, point-sized
    fonts); returns it. Marker sizes are left alone when a trace sets its own."""
    p = get_preset(preset)
    fig.update_layout(
        template="simple_white",
        width=round(p.width_in * PX_PER_IN),
        height=round(p.height_in * PX_PER_IN),
        font={"family": _FONT_STACK, "size": pt_to_px(p.font_size), "color": "#000000"},
        title_font={"size": pt_to_px(p.title_size)},
        legend={"font": {"size": pt_to_px(p.legend_size)}},
        margin={"l": 8, "r": 8, "t": 28 if fig.layout.title.text else 8, "b": 8, "autoexpand": True},
        colorway=list(OKABE_ITO),  # traces without their own colour: colour-blind safe, like the paper figures
        paper_bgcolor="white",
        plot_bgcolor="white",
    )
    if fig.layout.title.text:
        fig.update_layout(title_automargin=True)  # the margin grows to the title instead of clipping it
    axis = {"automargin": True, "linewidth": pt_to_px(p.axis_line_width), "tickwidth": pt_to_px(p.axis_line_width),
            "tickfont": {"size": pt_to_px(p.tick_size)}, "title_font": {"size": pt_to_px(p.font_size)},
            "showline": True, "linecolor": "#000000", "ticks": "outside", "ticklen": 3}

    def style_axis(ax: Any) -> None:
        # keep choices the figure made itself (e.g. maps hide ticks)
        ax.update({k: v for k, v in axis.items() if k not in ("ticks", "ticklen") or ax.ticks is None})

    fig.for_each_xaxis(style_axis)
    fig.for_each_yaxis(style_axis)
    fig.update_annotations(font_size=pt_to_px(p.font_size))
    for tr in fig.data:
        if tr.type in ("scatter", "scattergl"):
            mode = tr.mode or ""
            if "lines" in mode or (tr.mode is None and tr.line.width is None):
                tr.update(line_width=pt_to_px(p.line_width))
            if tr.marker.size is None:
                tr.update(marker_size=pt_to_px(p.marker_size))
    return fig


def mpl_rc(preset: str | StylePreset = "single") -> dict[str, Any]:
    """matplotlib rcParams for a preset (vector-friendly: TrueType fonts in PDF, text kept as text in SVG)."""
    from cycler import cycler

    p = get_preset(preset)
    return {
        "figure.figsize": (p.width_in, p.height_in),
        "figure.dpi": 100,
        "savefig.dpi": p.dpi,
        "savefig.bbox": "standard",
        "font.family": "sans-serif",
        "font.sans-serif": ["DejaVu Sans", "Arial", "Helvetica"],
        "font.size": p.font_size,
        "axes.titlesize": p.title_size,
        "axes.labelsize": p.font_size,
        "xtick.labelsize": p.tick_size,
        "ytick.labelsize": p.tick_size,
        "legend.fontsize": p.legend_size,
        "legend.frameon": False,
        "lines.linewidth": p.line_width,
        "lines.markersize": p.marker_size,
        "axes.linewidth": p.axis_line_width,
        "xtick.major.width": p.axis_line_width,
        "ytick.major.width": p.axis_line_width,
        "axes.spines.top": False,
        "axes.spines.right": False,
        "axes.prop_cycle": cycler(color=list(SEQUENCE_PALETTE)),
        "pdf.fonttype": 42,
        "ps.fonttype": 42,
        "svg.fonttype": "none",
        "figure.constrained_layout.use": True,
    }


def apply_mpl_style(preset: str | StylePreset = "single") -> dict[str, Any]:
    """Update ``matplotlib.rcParams`` globally with :func:`mpl_rc`; returns the applied dict.
    Prefer :func:`mpl_style` (a context manager) inside library code."""
    import matplotlib

    rc = mpl_rc(preset)
    matplotlib.rcParams.update(rc)
    return rc


@contextlib.contextmanager
def mpl_style(preset: str | StylePreset = "single") -> Iterator[StylePreset]:
    """``with mpl_style("double"): fig = ...`` - temporary rcParams for one figure."""
    import matplotlib

    with matplotlib.rc_context(mpl_rc(preset)):
        yield get_preset(preset)


# -- one style for every paper figure -----------------------------------------------------------

CHANCE_COLOR = "#555555"
INTERVAL_NOTE = "error bars: 95% CI (person bootstrap)"

#: human labels of every metric key drawn in a figure (comparison table, separation report, curves)
METRIC_LABELS: dict[str, str] = {
    "expr_linear": "Expression (linear probe)",
    "expr_knn": "Expression (kNN)",
    "identity_linear": "Identity leakage (linear probe)",
    "identity_knn": "Identity leakage (kNN)",
    "expression_linear_acc": "Expression (linear probe)",
    "expression_linear_f1": "Expression macro-F1 (linear)",
    "expression_knn_acc": "Expression (kNN)",
    "expression_knn_f1": "Expression macro-F1 (kNN)",
    "expression_chance": "Expression chance",
    "identity_linear_acc": "Identity leakage (linear probe)",
    "identity_knn_acc": "Identity leakage (kNN)",
    "identity_chance": "Identity chance",
    "silhouette_expression": "Silhouette (expression)",
    "silhouette_identity": "Silhouette (identity)",
    "expression_over_identity": "Expression over identity",
    "retrieval_map_at_r": "Cross-identity mAP@R",
    "retrieval_r_precision": "Cross-identity R-precision",
    "var_identity": "Identity",
    "var_expression": "Expression",
    "var_additive": "Both (additive R²)",
    "var_identity_unique": "Identity only",
    "var_expression_unique": "Expression only",
    "var_shared": "Shared",
    "var_residual": "Residual",
    "loss": "Pretraining loss",
    "knn_expression": "Online kNN (expression)",
    "knn/expression": "Online kNN (expression)",
}

#: short labels of the same keys, for tick labels inside a panel whose title names the group
SHORT_METRIC_LABELS: dict[str, str] = {
    "expr_linear": "Linear", "expr_knn": "kNN", "identity_linear": "Linear", "identity_knn": "kNN",
    "expression_linear_acc": "Expr.\nlinear", "expression_knn_acc": "Expr.\nkNN",
    "identity_linear_acc": "Identity\nlinear", "identity_knn_acc": "Identity\nkNN",
    "silhouette_expression": "Silhouette\nexpr.", "silhouette_identity": "Silhouette\nidentity",
    "expression_over_identity": "Expr. over\nidentity", "retrieval_map_at_r": "x-id\nmAP@R",
    "retrieval_r_precision": "x-id\nR-prec.",
    "var_identity": "Identity", "var_expression": "Expr.", "var_additive": "Both",
    "var_identity_unique": "Identity\nonly", "var_expression_unique": "Expr.\nonly", "var_shared": "Shared",
    "var_residual": "Residual",
}


def metric_label(key: str, *, short: bool = False) -> str:
    """Human label of a metric key (``expr_linear`` -> ``Expression (linear probe)``); unknown keys are
    de-underscored (``retrieval_precision_at_5`` -> ``Retrieval precision at 5``)."""
    key = str(key)
    if short and key in SHORT_METRIC_LABELS:
        return SHORT_METRIC_LABELS[key]
    if key in METRIC_LABELS:
        return METRIC_LABELS[key]
    if key.startswith("retrieval_precision_at_"):
        return f"x-id\nP@{key.rsplit('_', 1)[1]}" if short else f"Cross-identity precision@{key.rsplit('_', 1)[1]}"
    text = key.replace("/", " ").replace("_", " ").strip()
    return text[:1].upper() + text[1:]


def run_colors(names: Iterable[Any]) -> dict[str, str]:
    """``{run: colour}`` in the given order (Okabe-Ito, cycling): the same run keeps its colour in every
    panel of a figure."""
    uniq = list(dict.fromkeys(str(n) for n in names))
    return {n: OKABE_ITO[i % len(OKABE_ITO)] for i, n in enumerate(uniq)}


def short_run_labels(names: Iterable[Any], *, max_len: int = 14) -> dict[str, str]:
    """``{run: short label}``: the names themselves when all are short, else ``A``, ``B``, ... (the legend
    or caption of every figure maps them back to the full names, see :func:`run_key`)."""
    uniq = list(dict.fromkeys(str(n) for n in names))
    if all(len(n) <= max_len for n in uniq):
        return {n: n for n in uniq}
    letters = [chr(ord("A") + i) if i < 26 else f"R{i + 1}" for i in range(len(uniq))]
    return dict(zip(uniq, letters))


def run_key(names: Iterable[Any], *, max_len: int = 14) -> dict[str, str]:
    """``{run: legend text}``: ``"A: full-run-name"`` when short labels are letters, else the name."""
    short = short_run_labels(names, max_len=max_len)
    return {n: n if s == n else f"{s}: {n}" for n, s in short.items()}
