"""Figure style presets, fixed palettes, export (plotly + Kaleido with timeout, matplotlib fallback)
and LaTeX tables."""

from workbench.viz.export import ExportError, export_figure, plotly_to_mpl
from workbench.viz.latex import latex_table
from workbench.viz.style import (
    EXPRESSION_COLORS,
    FACTOR_COLORS,
    IDENTITY_PALETTE,
    PRESETS,
    StylePreset,
    apply_mpl_style,
    apply_plotly_style,
    expression_color,
    get_preset,
    identity_colors,
    mpl_style,
)

__all__ = [
    "EXPRESSION_COLORS", "FACTOR_COLORS", "IDENTITY_PALETTE", "PRESETS", "ExportError", "StylePreset",
    "apply_mpl_style", "apply_plotly_style", "export_figure", "expression_color", "get_preset",
    "identity_colors", "latex_table", "mpl_style", "plotly_to_mpl",
]
