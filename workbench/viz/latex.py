"""LaTeX tables for papers (booktabs, best value per column in bold).

Example::

    tex = latex_table(df, "Linear probe accuracy (subject-disjoint).", "tab:probe",
                      minimize=["identity acc"])   # lower identity leakage is better
    Path("paper/tab_probe.tex").write_text(tex)

Needs ``\\usepackage{booktabs}`` in the preamble.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from workbench.errors import WorkbenchError

_ESCAPES = {"\\": r"\textbackslash{}", "&": r"\&", "%": r"\%", "$": r"\$", "#": r"\#", "_": r"\_",
            "{": r"\{", "}": r"\}", "~": r"\textasciitilde{}", "^": r"\textasciicircum{}"}
_AUTO_MINIMIZE = ("rmse", "loss", "error", "mse", "mae")


def latex_escape(text: Any) -> str:
    """Escape LaTeX special characters in a cell or header."""
    return "".join(_ESCAPES.get(ch, ch) for ch in str(text))


def latex_table(
    df: Any,
    caption: str,
    label: str,
    *,
    digits: int = 3,
    bold_best: bool = True,
    minimize: Sequence[str] | None = None,
    index: bool = False,
    placement: str = "t",
) -> str:
    """A ``table`` environment with a booktabs ``tabular`` of ``df``.

    Args:
        digits: decimals for float cells (default 3).
        bold_best: bold the best value of every numeric column (all ties are bold).
        minimize: columns where lower is better. Default: columns whose name contains
            rmse / loss / error / mse / mae; every other numeric column is maximised.
        index: include the DataFrame index as the first column.

    NaN / None cells print as ``--`` and never win.
    """
    import pandas as pd

    if not isinstance(df, pd.DataFrame):
        raise WorkbenchError("latex_table expects a pandas DataFrame")
    if df.empty:
        raise WorkbenchError("cannot make a LaTeX table from an empty DataFrame")
    table = df.reset_index() if index else df
    lower = set(minimize) if minimize is not None else {
        c for c in table.columns if any(k in str(c).lower() for k in _AUTO_MINIMIZE)}
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    best: dict[Any, float] = {}
    if bold_best:
        for c in numeric:
            col = pd.to_numeric(table[c], errors="coerce").dropna()
            if not col.empty:
                best[c] = float(col.min() if c in lower else col.max())

    def fmt(c: Any, v: Any) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "--"
        if c in numeric:
            fv = float(v)
            if math.isnan(fv):
                return "--"
            s = f"{fv:.{digits}f}" if pd.api.types.is_float_dtype(table[c]) else str(int(fv))
            if c in best and math.isclose(round(fv, digits), round(best[c], digits), abs_tol=0.0):
                s = rf"\textbf{{{s}}}"
            return s
        return latex_escape(v)

    align = "".join("r" if c in numeric else "l" for c in table.columns)
    lines = [
        rf"\begin{{table}}[{placement}]",
        r"\centering",
        rf"\caption{{{latex_escape(caption)}}}",
        rf"\label{{{label}}}",
        rf"\begin{{tabular}}{{{align}}}",
        r"\toprule",
        " & ".join(latex_escape(c) for c in table.columns) + r" \\",
        r"\midrule",
    ]
    for _, row in table.iterrows():
        lines.append(" & ".join(fmt(c, row[c]) for c in table.columns) + r" \\")
    lines += [r"\bottomrule", r"\end{tabular}", r"\end{table}", ""]
    return "\n".join(lines)
