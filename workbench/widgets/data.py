"""Data panels: ``ManifestBrowser`` (faces with landmarks, labels, filters) and ``ViewPreview``
(every view family side by side, plus what the clip and multi-view samplers put in one item).

Faces are read on demand (only the shown page), with the same decoding as the training cache
(:func:`workbench.data.images.read_image_resized`), so browsing a large manifest costs nothing upfront.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import ipywidgets as W
import numpy as np

from workbench.errors import ConfigError
from workbench.widgets._common import Gallery, Panel, face_tile, image_widget, png_bytes

ALL = "(all)"
#: manifest columns offered as filters (when present)
FILTER_COLUMNS = ("split", "expression", "identity", "view", "clip", "group")


def _manifest(m: Any) -> Any:
    from workbench.data.manifest import Manifest

    return m if isinstance(m, Manifest) else Manifest.load(m)


def load_faces(manifest: Any, rows: Sequence[int], size: int, *, landmarks: np.ndarray | None = None
               ) -> tuple[np.ndarray, np.ndarray | None, list[int]]:
    """Decode ``rows`` of a manifest at ``size`` px: (images uint8 (n, S, S, 3), landmarks (n, 68, 2) in
    those pixels or None, the rows that could be read). Unreadable files are left out."""
    from workbench.data.images import ImageReadError, read_image_resized

    m = _manifest(manifest)
    lm_all = landmarks if landmarks is not None else m.landmarks()
    paths = m.abs_paths()
    imgs, lms, ok = [], [], []
    for r in rows:
        try:
            img, scale, offset = read_image_resized(paths[int(r)], size)
        except ImageReadError:
            continue
        imgs.append(img)
        if lm_all is not None:
            lms.append(lm_all[int(r)] * np.asarray(scale, np.float32) + np.asarray(offset, np.float32))
        ok.append(int(r))
    images = np.stack(imgs) if imgs else np.zeros((0, size, size, 3), np.uint8)
    lm = np.stack(lms).astype(np.float32) if (lm_all is not None and lms) else None
    return images, lm, ok


def _caption(row: Any, columns: Sequence[str]) -> str:
    bits = []
    for c in columns:
        v = row.get(c)
        if v is None or (isinstance(v, float) and np.isnan(v)):
            continue
        bits.append(f"{v:.0f}°" if c == "view" and isinstance(v, float) else str(v))
    return " · ".join(bits)


def _options(frame: Any, column: str) -> list[str]:
    from workbench.data.vocabulary import EXPRESSIONS

    vals = [v for v in frame[column].dropna().unique().tolist() if str(v) != ""]
    if column == "expression":
        return [e for e in EXPRESSIONS if e in vals]
    try:
        return [str(v) for v in sorted(vals)]
    except TypeError:
        return sorted(str(v) for v in vals)


class ManifestBrowser(Panel):
    """Browse a manifest: faces with their landmarks, labels under each face, filters, pages.

    Args:
        manifest: a :class:`~workbench.data.manifest.Manifest` or a path to one.
        size: tile size in px (faces are decoded at this size).
        per_page: faces per page.
        columns: tiles per row.
    """

    def __init__(self, manifest: Any, *, size: int = 96, per_page: int = 24, columns: int = 8) -> None:
        super().__init__()
        self.manifest = _manifest(manifest)
        self.size, self.per_page = int(size), int(per_page)
        self._landmarks = self.manifest.landmarks()
        frame = self.manifest.frame
        self.filters: dict[str, W.Dropdown] = {}
        for col in FILTER_COLUMNS:
            if self.manifest.has(col):
                opts = _options(frame, col)
                dd = W.Dropdown(options=[ALL, *opts], value=ALL, description=col,
                                layout=W.Layout(width="220px"))
                dd.observe(self.guard(lambda _c: self.show_page(0)), names=["value"])
                self.filters[col] = dd
        self.show_landmarks = W.Checkbox(value=self._landmarks is not None, description="landmarks", indent=False,
                                         disabled=self._landmarks is None, layout=W.Layout(width="110px"))
        self.show_landmarks.observe(self.guard(lambda _c: self.show_page(self.page)), names=["value"])
        self.prev_button = W.Button(description="◀", layout=W.Layout(width="40px"))
        self.next_button = W.Button(description="▶", layout=W.Layout(width="40px"))
        self.prev_button.on_click(self.guard(lambda _b: self.show_page(self.page - 1)))
        self.next_button.on_click(self.guard(lambda _b: self.show_page(self.page + 1)))
        self.page_label = W.HTML()
        self.summary = W.HTML(f"<b>{html.escape(str(self.manifest.path or self.manifest.root))}</b>: "
                              f"{html.escape(self.manifest.summary())}")
        self.gallery = Gallery(columns=columns, tile_width=f"{max(self.size, 64)}px", empty="no face matches")
        self.page = 0
        self.filtered = np.arange(len(self.manifest))
        self.widget = W.VBox([
            self.summary,
            W.HBox(list(self.filters.values()), layout=W.Layout(flex_flow="row wrap")),
            W.HBox([self.show_landmarks, self.prev_button, self.next_button, self.page_label],
                   layout=W.Layout(align_items="center")),
            self.status, self.gallery.widget,
        ])
        self.show_page(0)

    @property
    def shown(self) -> list[int]:
        """Manifest row positions of the faces on screen."""
        return list(self.gallery.keys)

    def set_filter(self, **values: Any) -> None:
        """Filter by column values, e.g. ``set_filter(expression="happiness", split="test")``; None = all."""
        for col, v in values.items():
            if col not in self.filters:
                raise ConfigError(f"no filter '{col}'; available: {', '.join(self.filters)}")
            want = ALL if v is None else str(v)
            if want not in self.filters[col].options:
                raise ConfigError(f"'{v}' is not a value of '{col}' in this manifest")
        for col, v in values.items():
            self.filters[col].value = ALL if v is None else str(v)
        self.show_page(0)

    def _mask(self) -> np.ndarray:
        frame = self.manifest.frame
        mask = np.ones(len(frame), dtype=bool)
        for col, dd in self.filters.items():
            if dd.value != ALL:
                mask &= frame[col].astype(str).to_numpy() == dd.value
        return mask

    def show_page(self, page: int) -> None:
        """Show page ``page`` (0-based, clipped) of the filtered faces."""
        self.filtered = np.flatnonzero(self._mask())
        n_pages = max(1, -(-len(self.filtered) // self.per_page))
        self.page = int(min(max(page, 0), n_pages - 1))
        rows = self.filtered[self.page * self.per_page:(self.page + 1) * self.per_page].tolist()
        images, lms, ok = load_faces(self.manifest, rows, self.size, landmarks=self._landmarks)
        frame = self.manifest.frame
        cap_cols = [c for c in ("expression", "identity", "split", "view", "frame") if c in frame.columns]
        items = []
        for i, r in enumerate(ok):
            lm = lms[i] if (lms is not None and self.show_landmarks.value) else None
            items.append((face_tile(images[i], lm), _caption(frame.iloc[r], cap_cols)))
        self.gallery.set(items, keys=ok)
        first = self.page * self.per_page + 1 if len(self.filtered) else 0
        self.page_label.value = (f"faces {first}–{self.page * self.per_page + len(rows)} of {len(self.filtered)} "
                                 f"matching · page {self.page + 1}/{n_pages}")
        if len(ok) < len(rows):
            self.say(f"{len(rows) - len(ok)} image(s) on this page could not be read", "warn")


class ViewPreview(Panel):
    """Every view family on the same faces (columns: original, global, warp, faceswap, mask; landmarks
    as green dots), and the items the clip / multi-view samplers draw.

    Args:
        datasets: a manifest (or path), or ``{"name": manifest}`` to switch between several (e.g. a
            plain, a clip and a multi-view synthetic set).
        size: decoding size in px (the training size).
        samples: faces (rows) in the augmentation grid.
        seed: augmentation and sampling seed.
        scale: display upscaling of the grid.
    """

    def __init__(self, datasets: Any, *, size: int = 64, samples: int = 4, seed: int = 0, scale: int = 2) -> None:
        from workbench.views.preview import FAMILIES

        super().__init__()
        if not isinstance(datasets, Mapping):
            datasets = {Path(str(getattr(datasets, "path", None) or datasets)).parent.name or "data": datasets}
        self.datasets = {k: _manifest(v) for k, v in datasets.items()}
        self.size, self.scale = int(size), int(scale)
        self.dataset = W.Dropdown(options=list(self.datasets), description="Data", layout=W.Layout(width="260px"))
        self.families = W.SelectMultiple(options=list(FAMILIES), value=tuple(FAMILIES), rows=len(FAMILIES),
                                         description="Families", layout=W.Layout(width="220px"))
        self.samples = W.IntSlider(value=samples, min=1, max=8, description="Faces", continuous_update=False)
        self.seed = W.IntSlider(value=seed, min=0, max=99, description="Seed", continuous_update=False)
        self.expression = W.Dropdown(description="Expression", layout=W.Layout(width="240px"))
        self.resample = W.Button(description="New faces", icon="refresh")
        self.header = W.HTML()
        self.image = image_widget(None)
        self.clip_gallery = Gallery(columns=4, tile_width="96px", empty="this dataset has no clips")
        self.group_gallery = Gallery(columns=5, tile_width="96px", empty="this dataset has no multi-view groups")
        self.grid: np.ndarray | None = None
        self.rows: list[int] = []
        self._pick = 0
        for w in (self.families, self.samples, self.seed, self.expression):
            w.observe(self.guard(lambda _c: self.refresh()), names=["value"])
        self.dataset.observe(self.guard(lambda _c: self._dataset_changed()), names=["value"])
        self.resample.on_click(self.guard(lambda _b: self._new_faces()))
        clip_legend = W.HTML(
            "<span style='color:#555'>One SSL-FER clip item: <b>A</b> anchor frame; <b>P</b> its TimeAug "
            "positive (a frame 2-6 positions away in the same clip); <b>NA</b> a hard-negative anchor (a frame "
            "of the same clip at least 12 positions from A: same person, the expression has moved on) and "
            "<b>NP</b> its own TimeAug positive. Identity alone cannot tell A from NA.</span>")
        group_legend = W.HTML("<span style='color:#555'>One multi-view item (CL-MEx): the same expression "
                              "instance from every camera view, ordered by yaw; all are positives of each "
                              "other.</span>")
        tabs = W.Tab(children=[W.VBox([self.header, self.image]), W.VBox([clip_legend, self.clip_gallery.widget]),
                               W.VBox([group_legend, self.group_gallery.widget])])
        for i, t in enumerate(("Augmentations", "Clip sampler (A, P, NA, NP)", "Multi-view sampler")):
            tabs.set_title(i, t)
        self.widget = W.VBox([
            W.HBox([self.dataset, self.expression, self.resample]),
            W.HBox([self.families, W.VBox([self.samples, self.seed])]),
            self.status, tabs,
        ])
        self._dataset_changed()

    @property
    def manifest(self) -> Any:
        return self.datasets[self.dataset.value]

    def _dataset_changed(self) -> None:
        m = self.manifest
        opts = _options(m.frame, "expression") if m.has("expression") else []
        self.expression.options = [ALL, *opts]
        self.expression.value = ALL
        self.refresh()

    def _new_faces(self) -> None:
        self._pick += 1
        self.refresh()

    def pick_rows(self) -> list[int]:
        """The manifest rows shown in the augmentation grid (seeded; filtered by expression)."""
        m = self.manifest
        rows = np.arange(len(m))
        if self.expression.value != ALL:
            rows = rows[m.frame["expression"].astype(str).to_numpy() == self.expression.value]
        if rows.size == 0:
            raise ConfigError("no face with this expression")
        rng = np.random.default_rng((int(self.seed.value), self._pick))
        return sorted(rng.choice(rows, size=min(int(self.samples.value), rows.size), replace=False).tolist())

    def refresh(self) -> None:
        """Recompute the grid and the sampler galleries for the current settings."""
        from workbench.views.preview import preview_grid

        fams = list(self.families.value)
        self.rows = self.pick_rows()
        images, lms, ok = load_faces(self.manifest, self.rows, self.size)
        if not ok:
            raise ConfigError("none of the picked images could be read")
        self.rows = ok
        grid = preview_grid(images, lms, families=fams, n=len(ok), seed=int(self.seed.value))
        self.grid = grid
        shown = ["original"] + [f for f in fams if lms is not None or f == "global"]
        if len(ok) < 2:
            shown = [f for f in shown if f != "faceswap"]
        note = "" if lms is not None else " (no landmarks: warp, faceswap and mask need them)"
        self.header.value = ("<span style='font-family:monospace'>columns: " + " | ".join(shown)
                             + html.escape(note) + "</span>")
        big = grid.repeat(self.scale, axis=0).repeat(self.scale, axis=1) if self.scale > 1 else grid
        self.image.value = png_bytes(big)
        self.image.layout.width = f"{big.shape[1]}px"
        self._refresh_samplers()

    def sampler_items(self, kind: str, n: int = 3) -> np.ndarray | None:
        """Rows of ``n`` sampler items: ``kind="clip"`` → (n, 4 or 2) [A, P, NA, NP]; ``"group"`` → (n, K).
        None when the dataset lacks the columns."""
        from workbench.errors import MissingMetadataError
        from workbench.views.samplers import ClipSampler, MultiViewSampler

        m, seed = self.manifest, int(self.seed.value)
        if kind == "clip":
            if not (m.has("clip") and m.has("frame")):
                return None
            clip, frame = m.frame["clip"].astype(str).to_numpy(), m.frame["frame"].astype(float).to_numpy()
            try:
                s = ClipSampler(clip, frame, batch_size=1, seed=seed)
            except MissingMetadataError:
                s = ClipSampler(clip, frame, batch_size=1, seed=seed, hard_negatives=False)
            return s.sample_epoch(self._pick)[:n]
        if kind == "group":
            if not m.has("group"):
                return None
            s = MultiViewSampler(m.frame["group"].astype(str).to_numpy(), batch_size_groups=1, seed=seed)
            items = s.sample_epoch(self._pick)[:n]
            if m.has("view"):  # each item's views left to right in yaw order
                key = np.array([_view_order(v) for v in m.frame["view"].tolist()])
                items = np.take_along_axis(items, np.argsort(key[items], axis=1, kind="stable"), axis=1)
            return items
        raise ConfigError(f"unknown sampler kind '{kind}' (clip or group)")

    def _refresh_samplers(self) -> None:
        m = self.manifest
        frame = m.frame
        for kind, gallery, names in (("clip", self.clip_gallery, ("A", "P", "NA", "NP")),
                                     ("group", self.group_gallery, None)):
            items_rows = self.sampler_items(kind)
            if items_rows is None:
                gallery.set([])
                continue
            k = items_rows.shape[1]
            gallery.columns = k
            gallery.widget.layout.grid_template_columns = f"repeat({k}, {gallery.tile_width})"
            flat = items_rows.reshape(-1).tolist()
            images, lms, ok = load_faces(m, flat, self.size)
            pos = {r: i for i, r in enumerate(ok)}
            tiles, keys = [], []
            for j, r in enumerate(flat):
                if r not in pos:
                    continue
                row = frame.iloc[r]
                role = names[j % k] if names else f"view {j % k + 1}"
                extra = f"frame {row['frame']}" if kind == "clip" else _caption(row, ["view"])
                tiles.append((face_tile(images[pos[r]], None), f"{role} · {row.get('expression', '')} · {extra}"))
                keys.append(r)
            gallery.set(tiles, keys=keys)


def _view_order(value: object) -> float:
    """A view's sort key: its yaw when numeric, else its position among KDEF-style codes."""
    try:
        return float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        codes = ("FL", "HL", "S", "HR", "FR")
        return float(codes.index(str(value))) if str(value) in codes else 0.0
