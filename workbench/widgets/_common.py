"""Shared pieces of the widget panels: error display, face tiles, galleries and live plotly figures.

Callback rules followed everywhere (see the ipywidgets docs): ``observe(fn, names=["value"])``,
errors of button/observer callbacks are shown in the panel (a red one-line message plus the
traceback in a log ``Output``), background threads only write with ``append_stdout`` /
``append_display_data`` or by setting traits, and expensive sliders use ``continuous_update=False``.
"""

from __future__ import annotations

import functools
import html
import io
import threading
import traceback
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from workbench.errors import WorkbenchError
from workbench.runs import find_runs

#: colour of landmark dots on face tiles (green, as in ``views.preview``)
LANDMARK_COLOR = (0, 220, 0)


# ----------------------------------------------------------------------------- messages

def message_html(text: str, kind: str = "error") -> str:
    """A small coloured box (``error`` red, ``ok`` green, ``info`` grey) for an HTML widget."""
    colours = {"error": ("#b00020", "#fdecea"), "ok": ("#1b5e20", "#e8f5e9"), "info": ("#37474f", "#f5f5f5"),
               "warn": ("#7a4f01", "#fff8e1")}
    fg, bg = colours.get(kind, colours["info"])
    return (f'<div class="wb-msg wb-msg-{kind}" style="color:{fg};background:{bg};padding:4px 8px;'
            f'border-radius:4px;margin:2px 0">{html.escape(text)}</div>')


def describe_error(exc: BaseException) -> str:
    """One line for the user: the message of a WorkbenchError, ``Type: message`` otherwise."""
    if isinstance(exc, WorkbenchError):
        return str(exc)
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class Panel:
    """Base of every panel: a ``status`` line, a ``log`` Output and error-safe callbacks.

    Subclasses build ``self.widget`` (displayed by ``display(panel)`` or as a cell's last value).
    Methods called from code raise as usual; button and observer callbacks are wrapped with
    :meth:`guard`, so their errors appear in the panel instead of being lost.
    """

    widget: W.Widget

    def __init__(self) -> None:
        self.status = W.HTML(layout=W.Layout(width="100%"))
        self.log = W.Output(layout=W.Layout(max_height="240px", overflow="auto"))
        self.last_error: BaseException | None = None

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def show_error(self, exc: BaseException) -> None:
        """Red message in ``status``; full traceback in ``log`` (thread-safe)."""
        self.last_error = exc
        self.status.value = message_html(describe_error(exc), "error")
        if not isinstance(exc, WorkbenchError):
            self.log.append_stdout("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))

    def say(self, text: str, kind: str = "info") -> None:
        """Show a one-line status message."""
        self.status.value = message_html(text, kind) if text else ""

    def guard(self, fn: Callable[..., Any]) -> Callable[..., Any]:
        """Wrap a widget callback: exceptions are shown in the panel, never lost."""

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return fn(*args, **kwargs)
            except Exception as exc:  # noqa: BLE001 - shown to the user
                self.show_error(exc)
                return None

        return wrapper

    def busy(self, text: str) -> _Busy:
        """Context manager: shows ``text`` while working, clears it afterwards (errors stay)."""
        return _Busy(self, text)


class _Busy:
    """Shows a message while working; library warnings raised meanwhile are shown in the panel (yellow)
    instead of spilling into the cell's stderr."""

    def __init__(self, panel: Panel, text: str) -> None:
        self.panel, self.text = panel, text
        self._catch = warnings.catch_warnings(record=True)
        self._seen: list[warnings.WarningMessage] = []

    def __enter__(self) -> None:
        self.panel.say(self.text + " …", "info")
        self._seen = self._catch.__enter__() or []
        warnings.simplefilter("default")
        self.panel.log.__enter__()  # the library's progress bars (tqdm.auto) appear in the panel's log

    def __exit__(self, exc_type: Any, *_: Any) -> None:
        self.panel.log.__exit__(None, None, None)
        self._catch.__exit__(None, None, None)
        if exc_type is not None:
            return
        texts = list(dict.fromkeys(str(w.message).splitlines()[0] for w in self._seen))
        if texts:
            self.panel.say(" | ".join(texts), "warn")
        else:
            self.panel.say("")


# ----------------------------------------------------------------------------- images

def png_bytes(image: np.ndarray) -> bytes:
    """uint8 (H, W, 3) → PNG bytes (for ``ipywidgets.Image``)."""
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


def face_tile(image: np.ndarray, landmarks: np.ndarray | None = None, *, scale: int = 1,
              color: tuple[int, int, int] = LANDMARK_COLOR) -> np.ndarray:
    """A face (uint8 H, W, 3) upscaled ``scale``x (nearest) with its 68 landmarks drawn as dots."""
    img = np.asarray(image, dtype=np.uint8)
    s = max(1, int(scale))
    if s > 1:
        img = img.repeat(s, axis=0).repeat(s, axis=1)
    img = np.ascontiguousarray(img).copy()
    if landmarks is None:
        return img
    pts = np.asarray(landmarks, dtype=np.float32)
    if pts.ndim != 2 or not np.isfinite(pts).all():
        return img
    h, w = img.shape[:2]
    r = 1 if min(h, w) >= 96 else 0
    for x, y in np.round((pts + 0.5) * s - 0.5).astype(int):
        if 0 <= x < w and 0 <= y < h:
            img[max(0, y - r):y + r + 1, max(0, x - r):x + r + 1] = color
    return img


def image_widget(image: np.ndarray | None = None, *, width: str | None = None) -> W.Image:
    """An ``ipywidgets.Image`` showing a uint8 array (empty when None)."""
    layout = W.Layout(width=width) if width else W.Layout()
    return W.Image(value=png_bytes(image) if image is not None else b"", format="png", layout=layout)


class Gallery:
    """A grid of captioned images; ``set(items)`` replaces them (``items``: (image, caption) pairs).

    ``keys`` holds what each tile shows (e.g. row indices), for tests and callers.
    """

    def __init__(self, *, columns: int = 8, tile_width: str = "96px", empty: str = "nothing to show") -> None:
        self.columns, self.tile_width, self.empty = columns, tile_width, empty
        self.keys: list[Any] = []
        self.captions: list[str] = []
        self.widget = W.GridBox(layout=W.Layout(grid_template_columns=f"repeat({columns}, {tile_width})",
                                                grid_gap="4px"))
        self.set([])

    def set(self, items: Sequence[tuple[np.ndarray | bytes, str]], keys: Sequence[Any] | None = None, *,
            reuse: bool = False) -> None:
        """Show ``items``: (image uint8 (H, W, 3) or PNG bytes, caption). ``reuse=True``: keep the tiles
        when keys and captions are unchanged (images are then assumed unchanged too)."""
        new_keys = list(keys) if keys is not None else list(range(len(items)))
        captions = [c for _, c in items]
        if reuse and items and new_keys == self.keys and captions == self.captions:
            return
        self.keys, self.captions = new_keys, captions
        if not items:
            self.widget.children = (W.HTML(f"<i style='color:#777'>{html.escape(self.empty)}</i>"),)
            return
        tiles = []
        for img, caption in items:
            pic = (W.Image(value=img, format="png", layout=W.Layout(width=self.tile_width))
                   if isinstance(img, bytes) else image_widget(img, width=self.tile_width))
            tiles.append(W.VBox([pic,
                                 W.HTML(f"<div style='font-size:10px;line-height:11px;width:{self.tile_width};"
                                        f"overflow:hidden'>{html.escape(caption)}</div>")],
                                layout=W.Layout(width=self.tile_width)))
        self.widget.children = tuple(tiles)


# ----------------------------------------------------------------------------- plotly

def has_figure_widget() -> bool:
    """True when plotly's interactive ``FigureWidget`` is usable (plotly >= 6 needs ``anywidget``)."""
    try:
        import plotly.graph_objects as go

        go.FigureWidget()
    except Exception:  # noqa: BLE001 - missing anywidget or an old plotly
        return False
    return True


class LiveFigure:
    """A plotly figure shown as a ``FigureWidget`` (hover/selection events, in-place updates), or,
    without ``anywidget``, re-rendered into an ``Output`` (no events).

    ``update(fig)`` replaces the figure; ``figure`` is the current ``go.Figure``/``FigureWidget``.
    """

    def __init__(self, fig: Any = None, *, interactive: bool | None = None) -> None:
        import plotly.graph_objects as go

        self.interactive = has_figure_widget() if interactive is None else interactive
        self._lock = threading.Lock()
        fig = fig if fig is not None else go.Figure()
        if self.interactive:
            self.figure = go.FigureWidget(fig)
            self.widget: W.Widget = self.figure
        else:
            self.figure = go.Figure(fig)
            self.widget = W.Output()
            self._render()

    def _render(self) -> None:
        import json

        import plotly.io as pio

        spec = json.loads(pio.to_json(self.figure, validate=False))
        spec.setdefault("config", {})
        self.widget.outputs = ({"output_type": "display_data", "metadata": {},
                                "data": {"application/vnd.plotly.v1+json": spec, "text/plain": "<plotly figure>"}},)

    def update(self, fig: Any) -> None:
        """Replace data and layout by those of ``fig`` (keeps the same widget on screen)."""
        import plotly.graph_objects as go

        with self._lock:
            if self.interactive:
                new = go.Figure(fig)
                with self.figure.batch_update():
                    self.figure.data = ()
                    # shapes and annotations are cleared explicitly: the browser keeps those the new layout
                    # leaves out (a chance line of one view stayed on the next view's epoch axis)
                    self.figure.update_layout(shapes=[], annotations=[])
                    self.figure.layout = new.layout
                    self.figure.add_traces(list(new.data))
            else:
                self.figure = go.Figure(fig)
                self._render()

    def restyle(self, fn: Callable[[Any], None]) -> None:
        """Change the current figure in place with ``fn(figure)`` (batched when interactive)."""
        with self._lock:
            if self.interactive:
                with self.figure.batch_update():
                    fn(self.figure)
            else:
                fn(self.figure)
                self._render()


# ----------------------------------------------------------------------------- runs

class RunPicker(W.VBox):
    """A multi-select of run folders (labels = folder names, values = paths) with an *Add* box: type a run
    folder, or a folder holding runs at any depth (:func:`workbench.runs.find_runs`), and its runs join
    the list, selected. ``more`` runs are listed but not selected (e.g. every other run under the
    notebook's ``OUT``). ``value`` / ``options`` are those of the multi-select."""

    def __init__(self, run_dirs: Sequence[str | Path], *, more: Sequence[str | Path] = (), description: str = "Runs",
                 rows: int = 4) -> None:
        self.max_rows = rows
        paths = [Path(p) for p in run_dirs]
        paths += [Path(p) for p in more if Path(p) not in paths]
        self.select = W.SelectMultiple(options=[(p.name, str(p)) for p in paths],
                                       value=tuple(str(p) for p in run_dirs), rows=min(max(len(paths), 2), rows),
                                       description=description, layout=W.Layout(width="460px"))
        self.folder = W.Text(placeholder="add runs: a run folder, or a folder holding runs",
                             layout=W.Layout(width="370px"))
        self.add_button = W.Button(description="Add", icon="plus", layout=W.Layout(width="84px"))
        self.message = W.HTML()
        self.add_button.on_click(lambda _: self.add(self.folder.value))
        super().__init__([self.select, W.HBox([self.folder, self.add_button]), self.message])

    @property
    def value(self) -> tuple[str, ...]:
        return tuple(self.select.value)

    @value.setter
    def value(self, value: Sequence[str]) -> None:
        self.select.value = tuple(value)

    @property
    def options(self) -> tuple[Any, ...]:
        return tuple(self.select.options)

    def add(self, folder: str | Path) -> list[Path]:
        """Add every trained run at or under ``folder`` (selected); returns the runs added."""
        folder = Path(str(folder).strip()).expanduser()
        found = find_runs(folder)
        known = {v for _, v in self.select.options}
        new = [p for p in found if str(p) not in known]
        if not found:
            self.message.value = message_html(f"no trained run (config.json + a checkpoint) at or under {folder}",
                                              "error")
            return []
        selected = tuple(self.select.value)
        self.select.options = [*self.select.options, *((p.name, str(p)) for p in new)]
        self.select.value = (*selected, *(str(p) for p in new))
        self.select.rows = min(max(len(self.select.options), 2), self.max_rows)
        self.message.value = message_html(f"added {len(new)} run(s) from {folder}" if new
                                          else f"the runs under {folder} are already listed", "ok")
        return new


def run_selector(run_dirs: Sequence[str | Path], *, more: Sequence[str | Path] = (), description: str = "Runs",
                 rows: int = 4) -> RunPicker:
    """A :class:`RunPicker` over ``run_dirs`` (selected) and ``more`` (listed, not selected)."""
    return RunPicker(run_dirs, more=more, description=description, rows=rows)


def frame_html(df: Any, *, digits: int = 3, max_rows: int = 200) -> str:
    """A compact HTML table of a DataFrame (numbers rounded)."""
    import pandas as pd

    if df is None or len(df) == 0:
        return "<i>no rows</i>"
    shown = df.head(max_rows)
    shown = shown.round(digits) if isinstance(shown, pd.DataFrame) else shown
    return ("<div style='overflow:auto;max-height:360px'>"
            + shown.to_html(border=0, classes="wb-table", na_rep="–", float_format=lambda v: f"{v:.{digits}f}")
            + "</div>")
