"""Figure export (matplotlib, plotly + Kaleido, forced fallbacks), style presets and LaTeX tables."""

from __future__ import annotations

import json
import shutil
import time
import xml.etree.ElementTree as ET

import matplotlib
import matplotlib.pyplot as plt
import pandas as pd
import plotly.graph_objects as go
import pytest
from PIL import Image

import workbench
import workbench.viz.export as export_mod
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import ConfigError
from workbench.viz import (
    EXPRESSION_COLORS,
    ExportError,
    apply_mpl_style,
    apply_plotly_style,
    export_figure,
    get_preset,
    identity_colors,
    latex_table,
)

HAS_CHROME = any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome", "chrome"))


def check_outputs(files: dict, *, width_in: float, html: bool) -> dict:
    assert files["pdf"].read_bytes().startswith(b"%PDF")
    root = ET.parse(files["svg"]).getroot()
    assert root.tag.endswith("svg")
    with Image.open(files["png"]) as im:
        dpi = im.info["dpi"]
        assert dpi[0] == pytest.approx(300, abs=1) and dpi[1] == pytest.approx(300, abs=1)
        assert im.size[0] == pytest.approx(width_in * 300, rel=0.02)
    assert pd.read_csv(files["csv"]).shape[0] > 0
    assert ("html" in files) == html
    card = json.loads(files["json"].read_text())
    assert card["workbench_version"] == workbench.__version__
    assert "git_sha" in card and card["created"].endswith("+00:00")
    assert set(card["files"]) >= {"pdf", "svg", "png", "csv"}
    return card


def _plotly_fig():
    return go.Figure([go.Scatter(x=[0, 1, 2], y=[0.2, 0.5, 0.9], name="expression", mode="lines+markers"),
                      go.Bar(x=[0, 1, 2], y=[0.1, 0.3, 0.2], name="identity")],
                     layout={"title": "probe accuracy", "xaxis_title": "epoch"})


def test_palette_and_presets():
    assert tuple(EXPRESSION_COLORS) == EXPRESSIONS and len(set(EXPRESSION_COLORS.values())) == 8
    assert EXPRESSION_COLORS["neutral"] == "#999999"
    assert get_preset("single").width_in == 3.5 and get_preset("double").width_in == 7.16
    ids = identity_colors(["b", "a", "c"] * 5)
    assert ids == identity_colors(["c", "a", "b"])  # independent of order of appearance
    with pytest.raises(ConfigError):
        get_preset("poster")
    fig = apply_plotly_style(_plotly_fig(), "double")
    assert fig.layout.width == round(7.16 * 96) and fig.layout.font.size == pytest.approx(12)
    rc = apply_mpl_style("single")
    assert rc["pdf.fonttype"] == 42 and matplotlib.rcParams["figure.figsize"] == [3.5, 2.6]
    matplotlib.rcdefaults()


def test_export_matplotlib_figure(tmp_path):
    fig, ax = plt.subplots(figsize=(3.5, 2.5))
    ax.plot([0, 1, 2], [1, 0, 1])
    data = pd.DataFrame({"x": [0, 1, 2], "y": [1, 0, 1]})
    files = export_figure(fig, tmp_path, "lines", data=data, card={"seed": 7, "method": "simclr"})
    plt.close(fig)
    card = check_outputs(files, width_in=3.5, html=False)
    assert card["renderer"] == "matplotlib" and card["seed"] == 7 and card["run"]["method"] == "simclr"


@pytest.mark.skipif(not HAS_CHROME, reason="Kaleido needs Chrome/Chromium")
def test_export_plotly_with_kaleido(tmp_path):
    files = export_figure(_plotly_fig(), tmp_path, "probe", preset="single", card={"seed": 1}, timeout=120)
    card = check_outputs(files, width_in=3.5, html=True)
    assert card["renderer"] == "kaleido" and card["fallback_reason"] is None
    assert (tmp_path / "plotly.min.js").is_file()  # HTML works offline
    assert b"<svg" in files["svg"].read_bytes()
    assert not list(tmp_path.glob(".*kaleido-tmp*"))


def test_forced_timeout_falls_back_to_matplotlib(tmp_path):
    calls = []

    def fallback(preset):
        calls.append(preset.name)
        f, ax = plt.subplots()
        ax.bar([0, 1, 2], [0.1, 0.3, 0.2])
        return f

    files = export_figure(_plotly_fig(), tmp_path, "probe", preset="double", timeout=0.001, mpl_fallback=fallback)
    card = check_outputs(files, width_in=7.16, html=True)
    assert calls == ["double"]
    assert card["renderer"] == "matplotlib-fallback" and "timed out" in card["fallback_reason"]


def test_hanging_kaleido_is_killed_and_generic_fallback_used(tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "_KALEIDO_SCRIPT", "import time\ntime.sleep(60)\n")
    t0 = time.monotonic()
    files = export_figure(_plotly_fig(), tmp_path, "hang", timeout=1.0)
    assert time.monotonic() - t0 < 15
    card = check_outputs(files, width_in=3.5, html=True)
    assert card["renderer"] == "matplotlib-fallback"


def test_failing_kaleido_reports_reason(tmp_path, monkeypatch):
    monkeypatch.setattr(export_mod, "_KALEIDO_SCRIPT", "raise RuntimeError('no chrome here')\n")
    files = export_figure(_plotly_fig(), tmp_path, "fail", timeout=30)
    card = json.loads(files["json"].read_text())
    assert card["renderer"] == "matplotlib-fallback" and "no chrome here" in card["fallback_reason"]


def test_export_errors(tmp_path):
    with pytest.raises(ExportError):
        export_figure(object(), tmp_path, "x")
    with pytest.raises(ExportError):
        export_figure(_plotly_fig(), tmp_path, "../escape")
    with pytest.raises(ExportError):
        export_figure(_plotly_fig(), tmp_path, "x", formats=("jpg",))


def test_latex_table_booktabs_and_bold_best():
    df = pd.DataFrame({"method": ["SimCLR", "BYOL_v2"], "acc": [0.61234, 0.70], "RMSE": [0.3, 0.2],
                       "n": [10, 12]})
    tex = latex_table(df, "Linear probe (50% labels).", "tab:probe", minimize=["RMSE"])
    assert r"\toprule" in tex and r"\midrule" in tex and r"\bottomrule" in tex
    assert r"\caption{Linear probe (50\% labels).}" in tex and r"\label{tab:probe}" in tex
    assert r"BYOL\_v2 & \textbf{0.700} & \textbf{0.200} & \textbf{12} \\" in tex
    assert r"SimCLR & 0.612 & 0.300 & 10 \\" in tex
    assert r"\begin{tabular}{lrrr}" in tex
    auto = latex_table(df, "c", "l")  # rmse minimised automatically
    assert r"\textbf{0.200}" in auto
    nan = latex_table(pd.DataFrame({"a": [1.0, float("nan")]}), "c", "l")
    assert "--" in nan
