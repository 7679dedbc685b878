"""``EmbeddingExplorer``: an interactive 2-D map of embeddings with face thumbnails.

- colour and facet by any label column (expression, identity, view, run, split, epoch ...), with the
  workbench's fixed palettes;
- hovering a point shows its face (and labels) next to the map;
- a box or lasso selection shows the selected faces in a gallery (and label counts), back in Python
  as :attr:`EmbeddingExplorer.selected`;
- maps with an ``epoch`` column (aligned UMAP over training) get an epoch slider
  (``continuous_update=False``) unless faceted by epoch.

Works on any :class:`~workbench.analysis.umap.EmbeddingMap`; thumbnails come from the map's
``abs_path`` column (as written by :mod:`workbench.analysis.study`) or ``root / path``::

    emap = umap_for_runs(runs, manifest, method="umap")
    ex = EmbeddingExplorer(emap, color="expression", facet="run")
    ex.select([0, 5, 7]); ex.selected
"""

from __future__ import annotations

import html
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from workbench.errors import ConfigError
from workbench.widgets._common import Gallery, LiveFigure, Panel, face_tile, png_bytes

#: label columns offered for colour / facet, in this order, when present
LABEL_COLUMNS = ("expression", "identity", "run", "view", "split", "group", "clip", "epoch")
NONE = "(none)"


class EmbeddingExplorer(Panel):
    """Scatter of an EmbeddingMap with hover thumbnails, selection gallery, colour/facet and epoch controls.

    Args:
        emap: the map (``coords`` (N, 2) + ``meta``).
        color: initial colour column (``None`` = one colour).
        facet: initial facet column (small multiples) or None.
        root: folder that ``meta.path`` is relative to (when the map has no ``abs_path`` column).
        thumb_size: thumbnail size in px.
        max_gallery: most faces shown for a selection.
        max_points: most points drawn per panel (seeded subsample; selection and hover stay exact).
    """

    def __init__(self, emap: Any, *, color: str | None = "expression", facet: str | None = None,
                 root: str | Path | None = None, thumb_size: int = 96, max_gallery: int = 40,
                 max_points: int = 20000) -> None:
        super().__init__()
        self.emap = emap
        self.meta = emap.meta.reset_index(drop=True)
        self.coords = np.asarray(emap.coords, dtype=np.float32)
        self.root = Path(root) if root is not None else None
        self.thumb_size, self.max_gallery, self.max_points = int(thumb_size), int(max_gallery), int(max_points)
        self._thumbs: OrderedDict[int, np.ndarray | None] = OrderedDict()
        self._pngs: dict[int, bytes] = {}
        self._trace_rows: list[np.ndarray] = []
        self._sel_parts: dict[int, np.ndarray] = {}
        self.selected: list[int] = []
        self.hovered: int | None = None
        cols = [c for c in LABEL_COLUMNS if c in self.meta.columns and self.meta[c].notna().any()]
        self.label_columns = cols
        for c in (color, facet):
            if c is not None and c not in cols:
                raise ConfigError(f"no label column '{c}' in the map; available: {', '.join(cols) or 'none'}")
        self.color = W.Dropdown(options=[NONE, *cols], value=color or NONE, description="Colour",
                                layout=W.Layout(width="220px"))
        self.facet = W.Dropdown(options=[NONE, *cols], value=facet or NONE, description="Facet",
                                layout=W.Layout(width="220px"))
        epochs = sorted(self.meta["epoch"].dropna().unique().tolist()) if "epoch" in self.meta.columns else []
        self.epochs = epochs
        self.epoch = W.SelectionSlider(options=epochs or [0], value=epochs[-1] if epochs else 0, description="Epoch",
                                       continuous_update=False, layout=W.Layout(width="360px",
                                                                                display="" if epochs else "none"))
        blank = np.full((2 * self.thumb_size, 2 * self.thumb_size, 3), 240, dtype=np.uint8)
        self.hover_image = W.Image(value=png_bytes(blank), format="png",
                                   layout=W.Layout(width=f"{2 * self.thumb_size}px", height=f"{2 * self.thumb_size}px"))
        self.hover_label = W.HTML("<i style='color:#777'>hover a point to see its face</i>",
                                  layout=W.Layout(width=f"{2 * self.thumb_size + 20}px"))
        self.selection_info = W.HTML("<i style='color:#777'>box- or lasso-select points to see their faces</i>")
        self.clear_button = W.Button(description="Clear selection", icon="times", layout=W.Layout(width="150px"))
        self.gallery = Gallery(columns=8, tile_width="80px", empty="no selection")
        self.plot = LiveFigure()
        for w in (self.color, self.facet, self.epoch):
            w.observe(self.guard(lambda _c: self.redraw()), names=["value"])
        self.clear_button.on_click(self.guard(lambda _b: self.select([])))
        note = [] if self.plot.interactive else [W.HTML(
            "<i>Hover and lasso need plotly's FigureWidget (pip install anywidget); "
            "use explorer.select(rows) meanwhile.</i>")]
        self.widget = W.VBox([
            W.HBox([self.color, self.facet, self.epoch], layout=W.Layout(flex_flow="row wrap")),
            *note, self.status,
            W.HBox([self.plot.widget, W.VBox([self.hover_image, self.hover_label])],
                   layout=W.Layout(align_items="flex-start")),
            W.HBox([self.selection_info, self.clear_button], layout=W.Layout(align_items="center")),
            self.gallery.widget,
        ])
        self.redraw()

    # ------------------------------------------------------------------ drawing
    def set_color(self, column: str | None) -> None:
        """Colour by ``column`` (None = one colour)."""
        self._check(column)
        self.color.value = column or NONE

    def set_facet(self, column: str | None) -> None:
        """Small multiples by ``column`` (None = one panel)."""
        self._check(column)
        self.facet.value = column or NONE

    def set_epoch(self, epoch: Any) -> None:
        """Show the map of one epoch (maps with an ``epoch`` column)."""
        if epoch not in self.epochs:
            raise ConfigError(f"no epoch {epoch}; available: {', '.join(map(str, self.epochs))}")
        self.epoch.value = epoch

    def _check(self, column: str | None) -> None:
        if column is not None and column not in self.label_columns:
            raise ConfigError(f"no label column '{column}'; available: {', '.join(self.label_columns)}")

    def visible_rows(self) -> np.ndarray:
        """Rows drawn now (one epoch of an aligned map unless faceted by epoch)."""
        rows = np.arange(len(self.meta))
        if self.epochs and self.facet.value != "epoch":
            rows = rows[self.meta["epoch"].to_numpy() == self.epoch.value]
        return rows

    def legend(self) -> list[str]:
        """Names of the legend entries currently drawn."""
        return list(dict.fromkeys(t.name for t in self.plot.figure.data if t.showlegend is not False))

    def figure(self) -> Any:
        """The plotly figure for the current settings (one trace per facet panel x colour value)."""
        import plotly.graph_objects as go
        from plotly.subplots import make_subplots

        from workbench.viz.style import category_order, color_map_for

        color = None if self.color.value == NONE else self.color.value
        facet = None if self.facet.value == NONE else self.facet.value
        rows = self.visible_rows()
        meta = self.meta
        panels: list[Any] = [None]
        if facet:
            vals = meta[facet].iloc[rows]
            panels = sorted(vals.dropna().unique().tolist(), key=lambda v: (str(type(v)), v))
        ncols = min(len(panels), 4)
        nrows = -(-len(panels) // ncols)
        fig = make_subplots(rows=nrows, cols=ncols, shared_xaxes="all", shared_yaxes="all",
                            subplot_titles=[f"{facet} {p}" for p in panels] if facet else None,
                            horizontal_spacing=0.03, vertical_spacing=0.08)
        if color:
            values = meta[color].astype(str)
            order = category_order(color, values.iloc[rows])
            cmap = color_map_for(color, values.iloc[rows])
        else:
            values, order, cmap = None, [None], {}
        hover_cols = [c for c in self.label_columns if c != "epoch" or self.epochs]
        text = meta[hover_cols].astype(str).agg(" · ".join, axis=1).to_numpy() if hover_cols else None
        self._trace_rows = []
        rng = np.random.default_rng(0)
        trace_cls = go.Scattergl if len(rows) > 5000 else go.Scatter
        for pi, panel in enumerate(panels):
            prow, pcol = pi // ncols + 1, pi % ncols + 1
            in_panel = rows if panel is None else rows[meta[facet].iloc[rows].to_numpy() == panel]
            if len(in_panel) > self.max_points:
                in_panel = np.sort(rng.choice(in_panel, self.max_points, replace=False))
            for value in order:
                r = in_panel if value is None else in_panel[values.iloc[in_panel].to_numpy() == value]
                if value is not None and len(r) == 0:
                    continue
                self._trace_rows.append(r)
                fig.add_trace(trace_cls(
                    x=self.coords[r, 0], y=self.coords[r, 1], mode="markers", name=str(value or "faces"),
                    legendgroup=str(value), showlegend=pi == 0 and value is not None,
                    marker={"size": 6, "opacity": 0.85, "color": cmap.get(value) if value is not None else "#0072B2"},
                    customdata=r, text=None if text is None else text[r],
                    hovertemplate="%{text}<extra>row %{customdata}</extra>",
                    selected={"marker": {"opacity": 1.0}}, unselected={"marker": {"opacity": 0.15}}),
                    row=prow, col=pcol)
        fig.update_xaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False)
        fig.update_yaxes(showticklabels=False, ticks="", showgrid=False, zeroline=False)
        title = f"{self.emap.method.upper()} map"
        if self.epochs and facet != "epoch":
            title += f" · epoch {self.epoch.value}"
        fig.update_layout(template="plotly_white", height=max(380, 300 * nrows), width=760, dragmode="lasso",
                          title=title, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                          legend={"itemsizing": "constant", "title": {"text": color or ""}})
        return fig

    def redraw(self) -> None:
        """Redraw the map for the current colour / facet / epoch (keeps the selection gallery)."""
        self.plot.update(self.figure())
        if self.plot.interactive:
            for trace in self.plot.figure.data:
                trace.on_hover(self._on_hover)
                trace.on_selection(self._on_selection)
                trace.on_deselect(self._on_deselect)
        self._sel_parts = {}
        if self.selected:
            self._mark(set(self.selected))

    # ------------------------------------------------------------------ events
    def _on_hover(self, trace: Any, points: Any, _state: Any) -> None:
        try:
            if points.point_inds:
                self.hover(int(self._trace_rows[points.trace_index][points.point_inds[0]]))
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            self.show_error(exc)

    def _on_selection(self, trace: Any, points: Any, _selector: Any) -> None:
        try:
            rows = self._trace_rows[points.trace_index]
            self._sel_parts[points.trace_index] = rows[np.asarray(points.point_inds, dtype=np.int64)]
            merged = np.concatenate(list(self._sel_parts.values())) if self._sel_parts else np.zeros(0, np.int64)
            self._show_selection(sorted(set(merged.tolist())))
        except Exception as exc:  # noqa: BLE001 - shown in the panel
            self.show_error(exc)

    def _on_deselect(self, trace: Any, points: Any) -> None:
        self._sel_parts = {}
        self._show_selection([])

    # ------------------------------------------------------------------ programmatic API
    def hover(self, row: int) -> None:
        """Show the face and labels of map row ``row`` (what hovering does)."""
        if not 0 <= row < len(self.meta):
            raise ConfigError(f"row {row} out of range (0..{len(self.meta) - 1})")
        self.hovered = int(row)
        img = self.thumbnail(row)
        if img is not None:
            self.hover_image.value = png_bytes(face_tile(img, scale=2))
        labels = self.meta.iloc[row]
        shown = [c for c in (*self.label_columns, "path") if c in labels.index]
        self.hover_label.value = "<br>".join(f"<b>{html.escape(c)}</b>: {html.escape(str(labels[c]))}"
                                             for c in shown)

    def select(self, rows: Sequence[int]) -> None:
        """Select map rows (what a lasso does): highlights them and shows their faces."""
        rows = sorted({int(r) for r in rows})
        bad = [r for r in rows if not 0 <= r < len(self.meta)]
        if bad:
            raise ConfigError(f"row {bad[0]} out of range (0..{len(self.meta) - 1})")
        self._mark(set(rows))
        self._sel_parts = {}
        self._show_selection(rows)

    def _mark(self, want: set[int]) -> None:
        """Highlight rows ``want`` on the map (plotly ``selectedpoints``; empty = no highlight)."""

        def mark(fig: Any) -> None:
            for i, t in enumerate(fig.data):
                r = self._trace_rows[i]
                t.selectedpoints = [j for j, v in enumerate(r.tolist()) if v in want] if want else None

        self.plot.restyle(mark)

    def _show_selection(self, rows: list[int]) -> None:
        self.selected = list(rows)
        if not rows:
            self.selection_info.value = "<i style='color:#777'>no selection</i>"
            self.gallery.set([])
            return
        shown = rows[: self.max_gallery]
        items, keys = [], []
        for r in shown:
            if r not in self._pngs:
                img = self.thumbnail(r)
                if img is None:
                    continue
                self._pngs[r] = png_bytes(img)
            lab = self.meta.iloc[r]
            cap = " · ".join(str(lab[c]) for c in ("expression", "identity") if c in lab.index)
            items.append((self._pngs[r], cap))
            keys.append(r)
        self.gallery.set(items, keys=keys, reuse=True)
        counts = []
        for c in ("expression", "identity", "run"):
            if c in self.meta.columns:
                vc = self.meta[c].iloc[rows].astype(str).value_counts()
                counts.append(f"<b>{c}</b>: " + ", ".join(f"{html.escape(k)} {v}" for k, v in vc.head(6).items())
                              + (" …" if len(vc) > 6 else ""))
        more = f" (first {len(shown)} shown)" if len(rows) > len(shown) else ""
        self.selection_info.value = f"<b>{len(rows)} selected</b>{more}<br>" + "<br>".join(counts)

    def thumbnail(self, row: int) -> np.ndarray | None:
        """uint8 face of map row ``row`` at ``thumb_size`` px (cached), or None without an image path."""
        from workbench.data.images import ImageReadError, read_image_resized

        row = int(row)
        if row in self._thumbs:
            self._thumbs.move_to_end(row)
            return self._thumbs[row]
        lab = self.meta.iloc[row]
        path = None
        if "abs_path" in lab.index and isinstance(lab["abs_path"], str):
            path = Path(lab["abs_path"])
        elif "path" in lab.index and isinstance(lab["path"], str):
            path = (self.root / lab["path"]) if self.root is not None else Path(lab["path"])
        img = None
        if path is not None:
            try:
                img = read_image_resized(path, self.thumb_size)[0]
            except ImageReadError:
                img = None
        self._thumbs[row] = img
        if len(self._thumbs) > 2048:
            self._thumbs.popitem(last=False)
        return img
