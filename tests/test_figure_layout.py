"""Every paper figure in every style, on small hand-built data (no training): the drawn geometry has no
legend over a plot area, no overlapping titles or tick labels, no rotated tick labels and nothing outside
the page; the exports are real vector PDF/SVG + PNG with normal file modes."""

from __future__ import annotations

import os
import stat
from types import SimpleNamespace

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

from workbench.data.vocabulary import EXPRESSIONS  # noqa: E402
from workbench.viz import figures as F  # noqa: E402

STYLES = ("single", "double", "slide")
#: deliberately long run folder names (what made the legend take 60 % of the width)
RUNS = ("simclr-resnet18-e20-s0-20260105-141233", "contrawarping-resnet18-e20-s0-20260105-150012",
        "sslfer-resnet18-e20-s0-20260105-160501")


def curves_data(runs=RUNS) -> pd.DataFrame:
    rows = []
    for k, run in enumerate(runs):
        for step in range(0, 400, 10):
            rows.append({"run": run, "step": step, "epoch": step / 40, "loss": 5.0 * np.exp(-step / (150 + 30 * k)) + 1,
                         "knn_expression": np.nan})
        for epoch in range(1, 11):
            rows.append({"run": run, "step": epoch * 40, "epoch": epoch, "loss": np.nan,
                         "knn_expression": 0.2 + 0.05 * epoch * (1 + 0.2 * k)})
    return pd.DataFrame(rows)


def probe_table(runs=RUNS) -> pd.DataFrame:
    rows = []
    for k, run in enumerate(runs):
        row = {"run": run, "method": run.split("-")[0]}
        for j, (name, chance) in enumerate((("expr_linear", 0.143), ("expr_knn", 0.143), ("identity_linear", 0.02),
                                            ("identity_knn", 0.02))):
            acc = 0.35 + 0.1 * k + 0.05 * j
            row.update({name: acc, f"{name}_f1": acc - 0.05, f"{name}_low": acc - 0.06, f"{name}_high": acc + 0.05,
                        f"{name}_chance": chance})
        rows.append(row)
    return pd.DataFrame(rows)


def separation_reports(runs=RUNS) -> dict:
    from workbench.analysis.separation import SeparationReport

    out = {}
    for k, run in enumerate(runs):
        out[run] = SeparationReport(
            expression_linear_acc=0.4 + 0.1 * k, expression_linear_f1=0.35, expression_knn_acc=0.38 + 0.1 * k,
            expression_knn_f1=0.3, expression_chance=0.143, identity_linear_acc=0.9 - 0.2 * k, identity_knn_acc=0.8,
            identity_chance=0.02, retrieval={"map_at_r": 0.3, "r_precision": 0.35, "precision_at_1": 0.5,
                                             "precision_at_5": 0.45, "n_queries": 100, "n_skipped": 0},
            variance={"identity": 0.6, "expression": 0.1 + 0.05 * k, "additive": 0.72, "identity_unique": 0.62,
                      "expression_unique": 0.12, "shared": -0.02, "residual": 0.28},
            silhouette_expression=-0.05 + 0.05 * k, silhouette_identity=0.2, expression_over_identity=-0.3 + 0.2 * k,
            intervals={n: {"low": v - 0.07, "high": min(1.0, v + 0.06), "n_people": 10}
                       for n, v in (("expression_linear", 0.4 + 0.1 * k), ("expression_knn", 0.38 + 0.1 * k),
                                    ("identity_linear", 0.9 - 0.2 * k), ("identity_knn", 0.8))})
    return out


def map_frame(runs=RUNS) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for run in runs:
        for e_i, e in enumerate(EXPRESSIONS[:7]):
            c = np.array([np.cos(e_i), np.sin(e_i)]) * 3
            for xy in rng.normal(size=(15, 2)) + c:
                rows.append({"x": xy[0], "y": xy[1], "run": run, "expression": e, "identity": f"p{e_i % 3}"})
    return pd.DataFrame(rows)


def attention_result(seed: int = 0, size: int = 48) -> SimpleNamespace:
    """What the grid needs of an AttentionResult: images, heatmaps, scores (path, expression, score_*)."""
    rng = np.random.default_rng(seed)
    exprs = list(EXPRESSIONS)
    n = 2 * len(exprs)
    yy, xx = np.mgrid[0:size, 0:size] / size
    heat = np.stack([np.exp(-((xx - rng.uniform(.3, .7)) ** 2 + (yy - rng.uniform(.3, .8)) ** 2) / 0.03)
                     for _ in range(n)])
    images = (rng.uniform(0.3, 0.7, size=(n, size, size, 1)) * 255 * np.ones(3)).astype(np.uint8)
    regions = ["brows", "eyes", "nose", "mouth", "cheeks_jaw", "rest_of_face", "outside_face"]  # the real seven
    scores = pd.DataFrame({"path": [f"img{i}.png" for i in range(n)], "expression": [exprs[i // 2] for i in range(n)],
                           **{f"score_{r}": rng.uniform(0.5, 2.0, n) for r in regions}})
    return SimpleNamespace(images=images, heatmaps=heat.astype(np.float16), scores=scores, regions=regions,
                           meta={"run": "run", "target": "prototype"})


def build(kind: str, style: str, runs=RUNS):
    if kind == "training_curves":
        return F.training_curves_figure(curves_data(runs), style=style, chance=1 / 7)
    if kind == "probe_comparison":
        return F.probe_comparison_figure(probe_table(runs), style=style)
    if kind == "separation_bars":
        return F.separation_figure(separation_reports(runs), style=style)
    if kind == "umap_panels":
        return F.umap_panels_figure(map_frame(runs), style=style)
    if kind == "gradcam_grid":
        return F.gradcam_grid_figure({r: attention_result(k) for k, r in enumerate(runs)}, style=style)
    if kind == "gradcam_regions":
        return F.region_bars_figure(attention_result(), style=style)
    raise AssertionError(kind)


@pytest.mark.parametrize("style", STYLES)
@pytest.mark.parametrize("kind", F.figure_kinds())
def test_every_figure_lays_out_cleanly_in_every_style(kind, style):
    fig, data = build(kind, style)
    try:
        assert F.layout_problems(fig) == []
        assert len(data) > 0
        w, h = fig.get_size_inches()
        assert w == pytest.approx({"single": 3.5, "double": 7.16, "slide": 10.0}[style])
        assert h <= 10.0
    finally:
        plt.close(fig)


@pytest.mark.parametrize("kind", ["training_curves", "probe_comparison", "separation_bars", "umap_panels"])
def test_short_run_names_and_one_run_also_lay_out(kind):
    fig, _ = build(kind, "single", runs=("simclr",))
    try:
        assert F.layout_problems(fig) == []
    finally:
        plt.close(fig)


def test_the_check_sees_a_legend_over_the_data_and_clipped_titles():
    fig, ax = plt.subplots(figsize=(3.5, 2.6))
    ax.bar(range(3), [0.5, 0.9, 0.7], label="a very long run name that covers the bars")
    ax.legend(loc="center")
    ax.set_title("a title far too long to fit into a single-column figure of 3.5 inches " * 2)
    ax.set_xticks(range(3), ["expr_linear", "identity_linear", "identity_knn"], rotation=45)
    problems = F.layout_problems(fig)
    plt.close(fig)
    assert any("legend 0 covers the plot area" in p for p in problems)
    assert any("clipped" in p for p in problems)
    assert any("rotated" in p for p in problems)


def test_colours_labels_and_intervals_come_from_the_style():
    from matplotlib.colors import to_hex

    from workbench.viz.style import OKABE_ITO, metric_label, run_colors

    fig, long = F.probe_comparison_figure(probe_table(), style="double")
    try:
        ax = fig.axes[0]
        bar_colours = {to_hex(p.get_facecolor()).upper() for p in ax.patches}
        assert bar_colours <= {c.upper() for c in OKABE_ITO}
        ticks = [t.get_text() for t in ax.get_xticklabels()]
        assert "expr_linear" not in ticks and ticks == ["Linear", "kNN"]
        assert ax.get_title() == "Expression"
        assert any(c.get_segments() for c in ax.collections)  # chance ticks + error bars are line collections
        legend = [t.get_text() for t in fig.legends[0].get_texts()]
        assert legend[0].replace("\n", "").startswith("A: simclr") and legend[-1] == "chance"
    finally:
        plt.close(fig)
    assert {"low", "high", "chance"} <= set(long.columns)
    assert metric_label("expr_linear") == "Expression (linear probe)"
    assert metric_label("retrieval_precision_at_5") == "Cross-identity precision@5"
    assert run_colors(["b", "a", "b"]) == {"b": OKABE_ITO[0], "a": OKABE_ITO[1]}


def test_training_curve_panels_share_run_colours():
    from matplotlib.colors import to_hex

    fig, _ = F.training_curves_figure(curves_data(), style="double", chance=1 / 7)
    try:
        loss_ax, knn_ax = fig.axes[:2]
        loss = [to_hex(line.get_color()) for line in loss_ax.get_lines()]
        knn = [to_hex(line.get_color()) for line in knn_ax.get_lines() if line.get_linestyle() != "--"][:len(loss)]
        assert loss == knn and len(set(loss)) == len(RUNS)
    finally:
        plt.close(fig)


def test_gradcam_grid_exports_vector_pdf_png_with_colour_bar_and_normal_modes(tmp_path):
    from workbench.viz.export import export_figure

    old = os.umask(0o022)
    try:
        fig, data = F.gradcam_grid_figure({r: attention_result(k) for k, r in enumerate(RUNS[:2])}, style="double")
        assert any(ax.get_label() == "<colorbar>" for ax in fig.axes)
        captions = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert "happiness" in captions
        files = export_figure(fig, tmp_path, "gradcam_grid", preset="double", data=data)
        plt.close(fig)
    finally:
        os.umask(old)
    assert files["pdf"].read_bytes()[:4] == b"%PDF" and b"<svg" in files["svg"].read_bytes()
    assert files["png"].read_bytes()[:4] == b"\x89PNG"
    for key in ("csv", "json", "pdf", "png"):
        assert stat.S_IMODE(files[key].stat().st_mode) == 0o644, key


def test_plotly_html_shares_one_plotly_js(tmp_path):
    import plotly.graph_objects as go

    from workbench.viz.export import export_figure

    fig = go.Figure(go.Bar(x=["a", "b"], y=[1, 2]))
    for sub in ("one", "two"):
        export_figure(fig, tmp_path / sub, "bars", timeout=0.001, plotlyjs_dir=tmp_path, formats=("png",))
    assert (tmp_path / "plotly.min.js").is_file()
    assert not list(tmp_path.glob("*/plotly.min.js"))
    html = (tmp_path / "one" / "bars.html").read_text()
    assert 'src="../plotly.min.js"' in html
    assert stat.S_IMODE((tmp_path / "one" / "bars.html").stat().st_mode) & 0o044 == 0o044


def test_the_check_sees_tick_labels_that_run_together():
    fig, ax = plt.subplots(figsize=(1.2, 1.5))
    ax.set_xlim(0, 1)
    ax.set_xticks([0, 0.25, 0.5, 0.75, 1.0], ["0.00", "0.25", "0.50", "0.75", "1.00"], fontsize=9)
    problems = F.layout_problems(fig)
    plt.close(fig)
    assert any("tick labels" in p and "overlap" in p for p in problems)
