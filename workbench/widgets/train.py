"""``TrainPanel``: configure and run pretraining from a notebook without blocking it.

The method's options form is generated from ``Method.Config`` (with its presets), next to the data,
model and training forms. **Start** trains in a background thread (the notebook stays usable);
a progress bar, the current loss and live curves (loss, online kNN expression accuracy, collapse
monitor: std ratio and effective rank) follow it. **Stop** asks the trainer to stop after the current
step; it then saves the run's last checkpoint so the run can be resumed or analysed. Errors
appear in red in the panel (traceback in its log), never lost in a thread.

From code (what the tests do)::

    panel = TrainPanel("data/synth/manifest.csv", "runs", method="byol")
    panel.start(); panel.wait()        # or panel.stop()
    panel.records[-1], panel.run_dir
"""

from __future__ import annotations

import html
import threading
import time
from pathlib import Path
from typing import Any

import ipywidgets as W

from workbench.errors import ConfigError
from workbench.io import read_jsonl
from workbench.runs import RunFolder, recipe_name
from workbench.widgets._common import LiveFigure, Panel, message_html
from workbench.widgets.form import ConfigForm

CURVES = (("loss", "loss"), ("knn/expression", "online kNN (expression, val)"),
          ("collapse/std_ratio", "collapse: std ratio (1 = healthy)"),
          ("collapse/effective_rank", "collapse: effective rank"))


def _log_line(rec: dict[str, Any]) -> str:
    """One line of the panel's Log for a metrics record."""
    bits = [f"step {rec.get('step')}"]
    if isinstance(rec.get("epoch"), (int, float)):
        bits.append(f"epoch {rec['epoch']:.2f}")
    for key in ("loss", "lr", "knn/expression", "collapse/std_ratio", "event"):
        value = rec.get(key)
        if value is not None:
            bits.append(f"{key} {value:.4g}" if isinstance(value, float) else f"{key} {value}")
    return " · ".join(bits)


def _curve_figure() -> Any:
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=4, subplot_titles=[t for _, t in CURVES], horizontal_spacing=0.06)
    for i, (key, _) in enumerate(CURVES):
        fig.add_scatter(x=[], y=[], mode="lines+markers", name=key, row=1, col=i + 1, marker={"size": 4},
                        line={"width": 1.5})
        fig.update_xaxes(title_text="step", row=1, col=i + 1)
        if key == "knn/expression":  # an accuracy: always on [0, 1], even with one point
            fig.update_yaxes(range=[0, 1.02], row=1, col=i + 1)
    fig.update_layout(height=260, margin={"l": 40, "r": 10, "t": 40, "b": 40}, showlegend=False,
                      template="plotly_white")
    fig.update_annotations(font_size=11)
    return fig


class TrainPanel(Panel):
    """Method/data/model/training forms, Start/Stop, progress and live curves.

    Args:
        manifest: manifest CSV to pretrain on (editable in the Data tab).
        out_dir: folder where run folders are created (``out_dir/<run name>``).
        method: initial method (a key of :data:`workbench.methods.METHODS`).
        backbone: initial timm backbone.
        image_size: initial training resolution.
        train: initial training options (:class:`~workbench.train.TrainConfig` fields).
        name: run folder name (default: the recipe name, e.g. ``simclr_resnet18_64-10e_synth_0``).
    """

    def __init__(self, manifest: str | Path, out_dir: str | Path, *, method: str = "simclr",
                 backbone: str = "resnet18", image_size: int = 48, train: dict[str, Any] | None = None,
                 name: str | None = None) -> None:
        from workbench.methods import METHODS
        from workbench.train import DataConfig, ModelConfig, TrainConfig

        super().__init__()
        self.out_dir = Path(out_dir)
        self.records: list[dict[str, Any]] = []
        self.result: Any = None
        self.error: BaseException | None = None
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._ticker: threading.Thread | None = None
        self._trainer: Any = None
        self._stop_requested = False
        self._total = 0
        self._run_dir: Path | None = None

        self.method = W.Dropdown(options=[(f"{k} — {c.summary}" if c.summary else k, k) for k, c in METHODS.items()],
                                 value=method, description="Method", layout=W.Layout(width="560px"))
        self.paper = W.HTML()
        self.preset = W.Dropdown(description="Preset", layout=W.Layout(width="260px"))
        self.method_box = W.VBox()
        self.data_form = ConfigForm(DataConfig, values={"manifest": str(manifest), "image_size": image_size})
        self.model_form = ConfigForm(ModelConfig, values={"backbone": backbone})
        self.train_form = ConfigForm(TrainConfig, values={"log_every": 1, **(train or {})})
        self.method_form: ConfigForm = ConfigForm(METHODS[method].Config)
        self.name = W.Text(value=name or "", placeholder="(recipe name)", description="Run name",
                           layout=W.Layout(width="460px"))
        self.resume = W.Checkbox(value=False, description="resume if the folder holds a run", indent=False)
        self.start_button = W.Button(description="Start", button_style="success", icon="play")
        self.stop_button = W.Button(description="Stop", button_style="danger", icon="stop", disabled=True,
                                    tooltip="stop after the current step and save a checkpoint")
        self.progress = W.IntProgress(value=0, min=0, max=1, description="0 / ?", bar_style="info",
                                      layout=W.Layout(width="460px"))
        self.info = W.HTML()
        self.curves = LiveFigure(_curve_figure())

        self.method.observe(self.guard(lambda _c: self._build_method_form()), names=["value"])
        self.preset.observe(self.guard(lambda _c: self._apply_preset()), names=["value"])
        self.start_button.on_click(self.guard(lambda _b: self.start()))
        self.stop_button.on_click(self.guard(lambda _b: self.stop()))
        self._build_method_form()

        tabs = W.Tab(children=[W.VBox([W.HBox([self.preset]), self.paper, self.method_box]),
                               self.data_form.widget, self.model_form.widget, self.train_form.widget])
        for i, t in enumerate(("Method options", "Data", "Model", "Training")):
            tabs.set_title(i, t)
        log = W.Accordion(children=[self.log])
        log.set_title(0, "Log")
        log.selected_index = None
        self.widget = W.VBox([
            self.method, tabs,
            W.HBox([self.name, self.resume]),
            W.HBox([self.start_button, self.stop_button, self.progress, self.info], layout=W.Layout(align_items="center")),
            self.status, self.curves.widget, log,
        ], layout=W.Layout(width="100%"))

    # ------------------------------------------------------------------ forms
    def _build_method_form(self) -> None:
        from workbench.methods import get_method

        cls = get_method(self.method.value)
        self.method_form = ConfigForm(cls.Config)
        self.method_box.children = (self.method_form.widget,)
        doc = " ".join((cls.__doc__ or "").strip().split("\n\n")[0].split())
        self.paper.value = (f"<span style='color:#555'>{html.escape(doc)}<br><i>{html.escape(cls.paper)}</i>"
                            "</span>")
        self.preset.options = [("(defaults)", "")] + [(p, p) for p in cls.presets]
        self.preset.value = ""

    def _apply_preset(self) -> None:
        from workbench.methods import get_method

        cls = get_method(self.method.value)
        self.method_form.reset()
        if self.preset.value:
            self.method_form.set_values(dict(cls.presets[self.preset.value]))

    def set_method(self, method: str, preset: str | None = None) -> None:
        """Choose a method (rebuilds its form) and optionally one of its presets (``"cpu"``, ``"paper"``)."""
        self.method.value = method
        if preset is not None:
            self.preset.value = preset

    def config(self) -> Any:
        """The validated :class:`~workbench.train.RunConfig` of the forms (ConfigError shown and raised)."""
        from workbench.config import to_dict
        from workbench.train import RunConfig

        try:
            parts = {"method": self.method.value, "data": self.data_form.to_dict(),
                     "model": self.model_form.to_dict(), "train": self.train_form.to_dict(),
                     "method_config": to_dict(self.method_form.value())}
            cfg = RunConfig.from_dict(parts)
            cfg.build_method_config()
            if not cfg.data.manifest:
                raise ConfigError("choose a manifest (Data tab)")
        except ConfigError as exc:
            self.show_error(exc)
            raise
        return cfg

    @property
    def run_dir(self) -> Path:
        """Where the run is (or will be) written: ``out_dir / name`` (recipe name when empty)."""
        if self._run_dir is not None:
            return self._run_dir
        if self.name.value.strip():
            return self.out_dir / self.name.value.strip()
        d, m, t = self.data_form.raw(), self.model_form.raw(), self.train_form.raw()
        dataset = Path(str(d.get("manifest") or "data")).parent.name or "data"
        return self.out_dir / recipe_name(self.method.value, str(m["backbone"]), t["batch_size"], t["epochs"],
                                          dataset, t["seed"])

    # ------------------------------------------------------------------ control
    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self, *, wait: bool = False) -> Path:
        """Validate the forms and start training in a background thread; returns the run folder."""
        from workbench.runs import pretrain

        if self.running:
            raise ConfigError("training is already running; stop it first")
        cfg = self.config()
        self._run_dir = None
        run_dir = self.run_dir
        resume = bool(self.resume.value) and RunFolder(run_dir).last_checkpoint.is_file()
        if not resume and RunFolder(run_dir).last_checkpoint.exists():
            raise ConfigError(f"{run_dir} already holds a run: tick 'resume', or choose another run name")
        self._run_dir = run_dir
        with self._lock:
            self.records = []
        self.result, self.error, self._trainer, self._stop_requested = None, None, None, False
        self._total = 0
        self.progress.value, self.progress.max, self.progress.bar_style = 0, 1, "info"
        self.progress.description = "preparing"
        self.curves.update(_curve_figure())
        self.say(f"training {run_dir.name} (data preparation first) …", "info")
        self.start_button.disabled, self.stop_button.disabled = True, False

        def work() -> None:
            try:
                self.result = pretrain(cfg, run_dir, resume=resume, callbacks=[self._on_record], progress=False,
                                       trainer_hook=self._on_trainer)
            except BaseException as exc:  # noqa: BLE001 - shown in the panel
                self.error = exc

        self._thread = threading.Thread(target=work, name="workbench-train", daemon=True)
        self._ticker = threading.Thread(target=self._tick, name="workbench-train-ui", daemon=True)
        self._thread.start()
        self._ticker.start()
        if wait:
            self.wait()
        return run_dir

    def stop(self) -> None:
        """Stop after the current step; the trainer then saves ``last.safetensors`` (thread-safe)."""
        self._stop_requested = True
        if self._trainer is not None:
            self._trainer.stop()
        if self.running:
            self.say("stopping after the current step …", "info")

    def wait(self, timeout: float | None = None) -> Any:
        """Block until training (and the last display refresh) is done; returns the TrainResult or None."""
        for t in (self._thread, self._ticker):
            if t is not None:
                t.join(timeout)
        return self.result

    # ------------------------------------------------------------------ thread side
    def _on_trainer(self, trainer: Any) -> None:
        self._trainer = trainer
        self._total = int(trainer.total_steps)
        if trainer.step:  # resumed: the curves start with the run's history (the log is already cut at the
            # checkpoint's step, so nothing is shown twice)
            history, _ = read_jsonl(trainer.folder.metrics)
            with self._lock:
                self.records = [r for r in history if isinstance(r.get("step"), int) and r["step"] <= trainer.step
                                and "event" not in r] + self.records
        if self._stop_requested:
            trainer.stop()

    def _on_record(self, rec: dict[str, Any]) -> None:
        with self._lock:
            self.records.append(dict(rec))
        self.log.append_stdout(_log_line(rec) + "\n")

    def metrics_frame(self) -> Any:
        """The records received so far as a DataFrame (one row per logged step / epoch end)."""
        import pandas as pd

        with self._lock:
            return pd.DataFrame(self.records)

    def _refresh(self) -> None:
        tr = self._trainer
        if tr is not None:
            total = max(1, self._total)
            self.progress.max = total
            self.progress.value = min(int(tr.step), total)
            self.progress.description = f"{int(tr.step)} / {total}"
        with self._lock:
            recs = list(self.records)
        if not recs:
            return
        steps = [r for r in recs if "loss" in r]
        last = steps[-1] if steps else recs[-1]
        knn = [r for r in recs if r.get("knn/expression") is not None]
        bits = [f"epoch {last.get('epoch', 0):.2f}"]
        if "loss" in last:
            bits.append(f"loss {last['loss']:.4f}")
        if knn:
            bits.append(f"kNN {knn[-1]['knn/expression']:.3f}")
        self.info.value = "<span style='font-family:monospace'>" + " · ".join(bits) + "</span>"

        def series(key: str) -> tuple[list[Any], list[Any]]:
            pts = [(r["step"], r[key]) for r in recs if r.get(key) is not None]
            return [p[0] for p in pts], [p[1] for p in pts]

        def apply(fig: Any) -> None:
            for i, (key, _) in enumerate(CURVES):
                x, y = series(key)
                fig.data[i].x, fig.data[i].y = x, y

        self.curves.restyle(apply)

    def _tick(self) -> None:
        """UI refresher: progress and curves every 0.3 s while training, then the final state."""
        seen = -1
        while self._thread is not None and self._thread.is_alive():
            n = len(self.records)
            if n != seen or self._trainer is not None:
                try:
                    self._refresh()
                except Exception as exc:  # noqa: BLE001 - a display problem must not stop training
                    self.log.append_stdout(f"display refresh failed: {exc!r}\n")
                seen = n
            time.sleep(0.3)
        try:
            self._refresh()
        finally:
            self._finish()

    def _finish(self) -> None:
        self.start_button.disabled, self.stop_button.disabled = False, True
        if self.error is not None:
            self.progress.bar_style = "danger"
            self.show_error(self.error)
            return
        res = self.result
        if res is None:
            return
        ck = RunFolder(res.run_dir).last_checkpoint
        self.progress.bar_style = "success" if res.status == "finished" else "warning"
        per_epoch = getattr(self._trainer, "steps_per_epoch", 0) or 0
        epoch = f"{res.step / per_epoch:.2f}" if per_epoch else str(res.epoch)  # as the live line shows it
        self.log.append_stdout(f"{res.status} at step {res.step}; checkpoint {ck}\n")
        self.status.value = message_html(
            f"{res.status} at step {res.step} (epoch {epoch}); checkpoint {ck} "
            f"{'saved' if ck.is_file() else 'MISSING'}", "ok" if ck.is_file() else "error")
