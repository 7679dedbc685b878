"""Widget panels without a browser: forms round-trip configs, panels drive the library, events map
back to manifest rows, and errors end up visible in the panel."""

from __future__ import annotations

import time
from dataclasses import fields
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("ipywidgets")

from workbench.config import to_dict  # noqa: E402
from workbench.errors import ConfigError  # noqa: E402
from workbench.methods import METHODS  # noqa: E402
from workbench.widgets import (  # noqa: E402
    AttentionPanel,
    ConfigForm,
    EmbeddingExplorer,
    FigurePanel,
    LiveFigure,
    ManifestBrowser,
    RunComparison,
    SeparationPanel,
    TrainPanel,
    ViewPreview,
    ensure_runs,
    ensure_synth,
    map_over_training,
)

ERROR = "wb-msg-error"


# ----------------------------------------------------------------------------- ConfigForm

@pytest.mark.parametrize("name", sorted(METHODS))
def test_config_form_round_trips_every_method_config(name):
    cls = METHODS[name].Config
    form = ConfigForm(cls)
    assert form.value() == cls()
    for preset in METHODS[name].presets.values():
        form.set_values(dict(preset))
        value = form.value()
        for key, want in preset.items():
            got = to_dict(getattr(value, key))
            assert got == to_dict(want) or (isinstance(want, dict) and want.items() <= got.items()), key
        form.reset()
        assert form.value() == cls()


def test_config_form_widgets_follow_the_field_specs():
    import ipywidgets as W

    from workbench.train import TrainConfig

    form = ConfigForm(TrainConfig)
    assert isinstance(form.inputs["optimizer"], W.Dropdown)
    assert [v for _, v in form.inputs["optimizer"].options] == ["adamw", "adam", "sgd"]
    assert isinstance(form.inputs["compile"], W.Checkbox)
    assert isinstance(form.inputs["epochs"], W.IntText) and isinstance(form.inputs["lr"], W.FloatText)
    html = form.widget.children[0].children[0].children[2].value
    assert "Passes over the training split" in html and "default 10" in html and "range 1" in html


def test_config_form_values_and_nested_subform():
    form = ConfigForm(METHODS["simclr"].Config, values={"temperature": 0.2})
    form.inputs["proj_dim"].value = 32
    form.inputs["views"].inputs["crop_scale"].value = "0.5, 0.9"
    form.inputs["views"].inputs["padding"].value = "zeros"
    cfg = form.value()
    assert cfg.temperature == 0.2 and cfg.proj_dim == 32
    assert cfg.views.crop_scale == (0.5, 0.9) and cfg.views.padding == "zeros"
    assert set(form.changed()) == {"temperature", "proj_dim", "views"}


def test_config_form_rejects_out_of_range_with_a_visible_message():
    form = ConfigForm(METHODS["simclr"].Config)
    form.inputs["temperature"].value = -1.0          # as typed by the user
    assert "temperature" in form.errors
    assert ERROR in form.field_messages["temperature"].value and "must be &gt;= 0.001" in form.message.value
    with pytest.raises(ConfigError, match="temperature"):
        form.value()
    assert not form.is_valid()
    form.inputs["temperature"].value = 0.3           # fixed: the message goes away
    assert form.errors == {} and form.message.value == "" and form.value().temperature == 0.3
    form.inputs["views"].inputs["hflip_p"].value = 2.0   # nested bound
    with pytest.raises(ConfigError, match="hflip_p"):
        form.value()
    assert ERROR in form.message.value
    with pytest.raises(ConfigError, match="unknown option"):
        form.set_values({"temprature": 0.1})
    with pytest.raises(ConfigError, match="must be one of"):
        form.inputs["views"].set_values({"padding": "mirror"})


def test_config_form_bad_tuple_text_is_reported():
    form = ConfigForm(METHODS["simclr"].Config)
    form.inputs["views"].inputs["crop_scale"].value = "0.5, big"
    with pytest.raises(ConfigError, match="crop_scale"):
        form.value()
    assert ERROR in form.message.value


# ----------------------------------------------------------------------------- TrainPanel

def _panel(manifest: Path, out: Path, **train) -> TrainPanel:
    return TrainPanel(manifest, out, backbone="resnet10t", image_size=32,
                      train={"epochs": 1, "batch_size": 16, "threads": 2, "knn_every": 1, **train})


def test_train_panel_builds_the_run_config_from_its_forms(tiny_synth, tmp_path):
    panel = _panel(tiny_synth, tmp_path)
    panel.set_method("byol", preset="cpu")
    cfg = panel.config()
    assert cfg.method == "byol" and cfg.model.backbone == "resnet10t" and cfg.data.image_size == 32
    assert cfg.method_config["proj_dim"] == METHODS["byol"].presets["cpu"]["proj_dim"]
    assert panel.run_dir.name.startswith("byol_resnet10t_16-1e_")
    panel.train_form.inputs["batch_size"].value = 1          # below min=2
    with pytest.raises(ConfigError, match="batch_size"):
        panel.config()
    assert ERROR in panel.status.value
    panel.start_button.click()                               # the button shows the error, never raises
    assert ERROR in panel.status.value and not panel.running


def test_train_panel_start_records_stop_checkpoint(tiny_synth, tmp_path):
    panel = _panel(tiny_synth, tmp_path, epochs=50, log_every=1)
    run_dir = panel.start()
    t0 = time.time()
    while not any("loss" in r for r in panel.records) and time.time() - t0 < 120 and panel.running:
        time.sleep(0.2)
    assert panel.running and panel.records, panel.status.value
    panel.stop()
    result = panel.wait(timeout=120)
    assert result is not None and result.status == "stopped" and result.step >= 1
    assert (run_dir / "checkpoints" / "last.safetensors").is_file()
    assert "saved" in panel.status.value and ERROR not in panel.status.value
    log = "".join(o.get("text", "") for o in panel.log.outputs)       # the Log accordion has every record
    assert "step 1 · epoch" in log and "loss" in log and "stopped at step" in log
    knn_axis = panel.curves.figure.layout.yaxis2.range
    assert tuple(knn_axis) == (0, 1.02)
    rec = panel.records[0]
    assert {"step", "loss", "lr", "collapse/std_ratio", "collapse/effective_rank"} <= set(rec)
    fig = panel.curves.figure
    assert len(fig.data[0].y) >= 1 and len(fig.data[2].y) >= 1          # loss and std ratio drawn
    assert panel.progress.value >= 1 and not panel.start_button.disabled and panel.stop_button.disabled
    with pytest.raises(ConfigError, match="already holds a run"):
        panel.start()
    panel.resume.value = True                                            # continue the stopped run
    panel.train_form.inputs["epochs"].value = 1
    panel.train_form.inputs["max_steps"].value = result.step + 1
    panel.start(wait=True)
    assert panel.result.step == result.step + 1
    steps = [r["step"] for r in panel.records if "loss" in r]              # the history before the stop stays
    assert steps == list(range(1, result.step + 2)), steps
    assert list(panel.curves.figure.data[0].x) == steps


def test_train_panel_shows_errors_from_the_training_thread(tmp_path):
    panel = _panel(tmp_path / "missing.csv", tmp_path / "runs")
    panel.start()
    assert panel.wait(timeout=60) is None
    assert panel.error is not None and ERROR in panel.status.value
    assert panel.progress.bar_style == "danger" and not panel.running


# ----------------------------------------------------------------------------- data panels

def test_manifest_browser_filters_and_draws_landmarks(tiny_synth):
    from workbench.data.manifest import Manifest

    browser = ManifestBrowser(tiny_synth, size=48, per_page=8)
    assert len(browser.shown) == 8 and "192" in browser.page_label.value
    browser.set_filter(expression="happiness", split="train")
    frame = Manifest.load(tiny_synth).frame
    assert browser.shown and all(frame["expression"].iloc[r] == "happiness" and frame["split"].iloc[r] == "train"
                                 for r in browser.shown)
    assert all("happiness" in c for c in browser.gallery.captions)
    browser.set_filter(expression=None, split=None, identity="id003")
    assert len(browser.filtered) == 16
    browser.show_page(1)
    assert browser.page == 1 and len(browser.shown) == 8
    with pytest.raises(ConfigError):
        browser.set_filter(expression="joyful")
    with_dots = browser.gallery.widget.children[0].children[0].value
    browser.show_landmarks.value = False
    assert browser.gallery.widget.children[0].children[0].value != with_dots


def test_view_preview_shows_every_family_and_sampler_items(tiny_synth, tiny_clips, tiny_views):
    preview = ViewPreview({"plain": tiny_synth, "clips": tiny_clips, "views": tiny_views}, size=32, samples=3)
    h, w, _ = preview.grid.shape
    assert (h, w) == (3 * 32 + 2 * 2, 5 * 32 + 4 * 2)                   # original + 4 families
    assert "faceswap" in preview.header.value
    preview.families.value = ("global", "mask")
    assert preview.grid.shape[1] == 3 * 32 + 2 * 2
    assert preview.sampler_items("clip") is None
    preview.dataset.value = "clips"
    items = preview.sampler_items("clip")
    assert items.shape[1] in (2, 4) and len(preview.clip_gallery.keys) == items.size
    preview.dataset.value = "views"
    items = preview.sampler_items("group")
    assert items.shape[1] == 5 and len(preview.group_gallery.keys) == items.size
    yaws = preview.manifest.frame["view"].astype(float).to_numpy()[items]
    assert (np.diff(yaws, axis=1) > 0).all()  # every item's views left to right in yaw order


# ----------------------------------------------------------------------------- run panels

@pytest.fixture(scope="module")
def pca_map(tiny_run, tiny_synth):
    from workbench.analysis.study import umap_for_runs

    return umap_for_runs([tiny_run], tiny_synth, method="pca")


def test_run_comparison_table_and_plot(tiny_run, tiny_synth):
    panel = RunComparison([tiny_run], tiny_synth, protocols=["expr_linear", "identity_linear"])
    assert list(panel.table["run"]) == [tiny_run.name]
    assert 0 <= panel.table.loc[0, "expr_linear"] <= 1 and tiny_run.name in panel.table_html.value
    assert len(panel.plot.figure.data) == 1 and list(panel.plot.figure.data[0].x) == ["expr_linear", "identity_linear"]
    panel.metric.value = "_f1"
    assert "macro-F1" in panel.plot.figure.layout.title.text
    panel.protocols.value = ()
    panel.button.click()
    assert ERROR in panel.status.value


def test_run_picker_lists_more_runs_and_adds_a_folder_of_runs(tiny_run, tiny_synth, tmp_path):
    import shutil

    from workbench.widgets._common import RunPicker

    other = tmp_path / "elsewhere" / "deep" / "copy"  # a run trained somewhere else (e.g. in notebook 03)
    shutil.copytree(tiny_run, other)
    (tmp_path / "elsewhere" / "not-a-run").mkdir()
    picker = RunPicker([], more=[tiny_run])
    assert picker.options == ((tiny_run.name, str(tiny_run)),) and picker.value == ()
    assert picker.add(tmp_path / "nothing-here") == [] and "no trained run" in picker.message.value
    picker.folder.value = str(tmp_path / "elsewhere")
    picker.add_button.click()
    assert picker.value == (str(other),) and len(picker.options) == 2
    assert picker.add(tmp_path / "elsewhere") == [] and "already listed" in picker.message.value
    panel = RunComparison([tiny_run], tiny_synth, more_runs=[other], auto=False)
    assert panel.runs.value == (str(tiny_run),) and len(panel.runs.options) == 2


def test_embedding_explorer_selection_shows_those_faces(pca_map, tiny_synth):
    from plotly.callbacks import Points

    ex = EmbeddingExplorer(pca_map, color="expression")
    assert set(ex.legend()) <= {"neutral", "happiness", "sadness", "surprise", "fear", "disgust", "anger", "contempt"}
    ex.select([3, 1, 7])
    assert ex.selected == [1, 3, 7] and ex.gallery.keys == [1, 3, 7]
    assert "3 selected" in ex.selection_info.value
    exprs = [str(pca_map.meta["expression"].iloc[r]) for r in (1, 3, 7)]
    assert [c.split(" · ")[0] for c in ex.gallery.captions] == exprs
    img = ex.thumbnail(1)
    assert img.shape == (96, 96, 3) and img.dtype == np.uint8
    ex.hover(5)
    assert ex.hovered == 5 and ex.hover_image.value and str(pca_map.meta["identity"].iloc[5]) in ex.hover_label.value
    ex.set_color("identity")
    assert ex.legend()[0].startswith("id")
    if ex.plot.interactive:       # a lasso event as plotly sends it: point indices within one trace
        trace_rows = ex._trace_rows[1]
        ex._on_selection(ex.plot.figure.data[1], Points(point_inds=[0, 1], trace_index=1), None)
        assert ex.selected == sorted(trace_rows[:2].tolist()) and ex.gallery.keys == ex.selected
        ex._on_hover(ex.plot.figure.data[0], Points(point_inds=[0], trace_index=0), None)
        assert ex.hovered == int(ex._trace_rows[0][0])
    ex.select([])
    assert ex.selected == [] and ex.gallery.keys == []
    with pytest.raises(ConfigError):
        ex.set_color("colour")


def test_embedding_explorer_facets_and_epoch_slider(tiny_run, tiny_synth):
    over = map_over_training(tiny_run, tiny_synth, method="pca")
    ex = EmbeddingExplorer(over, color="expression")
    assert ex.epochs == [1, 2] and ex.epoch.continuous_update is False
    n = len(over.meta) // 2
    assert len(ex.visible_rows()) == n and "epoch 2" in ex.plot.figure.layout.title.text
    ex.set_epoch(1)
    assert "epoch 1" in ex.plot.figure.layout.title.text and (over.meta["epoch"].iloc[ex.visible_rows()] == 1).all()
    ex.set_facet("epoch")
    assert len(ex.visible_rows()) == 2 * n
    assert {a.text for a in ex.plot.figure.layout.annotations} == {"epoch 1", "epoch 2"}


def test_separation_panel_table_and_views(tiny_run, tiny_synth):
    panel = SeparationPanel([tiny_run], tiny_synth)
    table = panel.table()
    assert list(table["run"]) == [tiny_run.name] and -1 <= table.loc[0, "expression_over_identity"] <= 1
    assert len(panel.plot.figure.data) == 1 and len(panel.plot.figure.layout.shapes) == 2  # chance lines
    assert panel.run.value == tiny_run.name  # the first run is preselected: "one run" shows something at once
    panel.view.value = "run"
    assert "expression-over-identity" in panel.summary.value
    panel.view.value = "track"
    assert ERROR not in panel.status.value and len(panel.tracks[tiny_run.name].to_frame()) > 0
    assert len(panel.plot.figure.layout.shapes) == 0  # no chance line of the plane view on the epoch axis


def test_attention_panel_overlays_and_region_bars(tiny_run, tiny_synth):
    panel = AttentionPanel([tiny_run], tiny_synth, n_per_expression=1)
    res = panel.results[tiny_run.name]
    assert len(res) >= 7 and ERROR not in panel.status.value
    summary = panel.summary()
    assert list(summary["run"]) == [tiny_run.name] and 0 <= summary.loc[0, "moving_share"] <= 1
    box = panel.panels.children[1]
    assert box.children[1].value and box.children[2] is not None           # overlay image + bar figure
    assert "tiles, row by row: neutral, happiness" in box.children[2].value  # captions name each tile
    panel.expression.value = "happiness"
    assert panel.indices(tiny_run.name) == np.flatnonzero(res.scores["expression"] == "happiness").tolist()
    assert [t.name for t in panel.region_figures[tiny_run.name].data] == ["happiness"]  # bars follow the filter


@pytest.mark.slow
def test_figure_panel_exports(tiny_run, tiny_synth, tmp_path):
    panel = FigurePanel([tiny_run], tiny_synth, tmp_path / "figs", figures=["training_curves"], umap_method="pca",
                        timeout=30)
    written = panel.export()
    assert written["training_curves"].is_file() and (tmp_path / "figs" / "training_curves.csv").is_file()
    assert (tmp_path / "figs" / "results.tex").is_file() and "training_curves" in panel.files.value
    panel.figures.value = ()
    panel.button.click()
    assert ERROR in panel.status.value


# ----------------------------------------------------------------------------- helpers

def test_ensure_synth_and_runs_reuse(tmp_path):
    m = ensure_synth(tmp_path / "data", identities=6, images_per_identity=8, size=32)
    stamp = m.stat().st_mtime_ns
    assert ensure_synth(tmp_path / "data", identities=6, images_per_identity=8, size=32).stat().st_mtime_ns == stamp
    runs = ensure_runs(tmp_path / "runs", m, ["simclr"], backbone="resnet10t", image_size=32, epochs=1,
                       batch_size=16, max_steps=1, progress=False)
    ck = runs[0] / "checkpoints" / "last.safetensors"
    assert ck.is_file() and runs[0].name == "simclr_resnet10t_16-1e_data_0"
    before = ck.stat().st_mtime_ns
    assert ensure_runs(tmp_path / "runs", m, ["simclr"], backbone="resnet10t", image_size=32, epochs=1,
                       batch_size=16, max_steps=1, progress=False) == runs
    assert ck.stat().st_mtime_ns == before


def test_live_figure_without_figure_widget():
    import plotly.graph_objects as go

    live = LiveFigure(go.Figure(go.Scatter(x=[1], y=[2])), interactive=False)
    assert live.widget.outputs and "application/vnd.plotly.v1+json" in live.widget.outputs[0]["data"]
    live.update(go.Figure(go.Bar(x=["a"], y=[1])))
    assert live.figure.data[0].type == "bar" and len(live.widget.outputs) == 1


def test_every_panel_field_is_documented():
    """Every config field a form shows carries help text (the form's second column)."""
    from workbench.train import DataConfig, ModelConfig, TrainConfig

    for cls in (DataConfig, ModelConfig, TrainConfig, *(m.Config for m in METHODS.values())):
        missing = [f.name for f in fields(cls) if not f.metadata.get("help")]
        assert not missing, (cls.__name__, missing)


def test_panels_work_without_figure_widget(monkeypatch, pca_map, tiny_synth, tmp_path):
    """Without anywidget (plotly's FigureWidget), figures render into an Output and selection still works."""
    import workbench.widgets._common as common

    monkeypatch.setattr(common, "has_figure_widget", lambda: False)
    ex = EmbeddingExplorer(pca_map, color="identity")
    assert not ex.plot.interactive and "anywidget" in ex.widget.children[1].value
    ex.select([2, 4])
    assert ex.gallery.keys == [2, 4]
    panel = _panel(tiny_synth, tmp_path)
    assert not panel.curves.interactive and panel.curves.widget.outputs
