"""Figure style presets, fixed palettes, human metric labels, the paper figures (:mod:`.figures`,
matplotlib from computed data), export (plotly + Kaleido with timeout, matplotlib fallback) and LaTeX
tables."""

from workbench.viz.export import ExportError, export_figure, plotly_to_mpl
from workbench.viz.latex import latex_table
from workbench.viz.style import (
    EXPRESSION_COLORS,
    FACTOR_COLORS,
    IDENTITY_PALETTE,
    METRIC_LABELS,
    OKABE_ITO,
    PRESETS,
    StylePreset,
    apply_mpl_style,
    apply_plotly_style,
    expression_color,
    get_preset,
    identity_colors,
    metric_label,
    mpl_style,
    run_colors,
    short_run_labels,
)

__all__ = [
    "EXPRESSION_COLORS", "FACTOR_COLORS", "IDENTITY_PALETTE", "METRIC_LABELS", "OKABE_ITO", "PRESETS",
    "ExportError", "StylePreset", "apply_mpl_style", "apply_plotly_style", "export_figure", "expression_color",
    "get_preset", "identity_colors", "latex_table", "metric_label", "mpl_style", "plotly_to_mpl", "run_colors",
    "short_run_labels",
]
