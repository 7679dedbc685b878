"""2-D maps of embeddings (UMAP, aligned UMAP across checkpoints, PCA) as persisted results objects.

- :func:`compute_map` - one seeded 2-D map. UMAP (``umap-learn``) is imported lazily: the first fit
  in a process pays ~10-20 s of numba compilation. A ``random_state`` makes UMAP single-threaded
  (umap-learn forces ``n_jobs=1`` for reproducibility); even then results can differ across
  machines / library versions (umap #1080), which is why maps are cached on disk.
- :func:`compute_aligned_maps` - :class:`umap.AlignedUMAP` over several checkpoints of the *same rows*,
  so axes stay comparable between epochs (an independent UMAP per epoch can flip and rotate freely).
- :class:`EmbeddingMap` - coordinates + one metadata row per point (expression, identity, view, run,
  epoch, path...), saved as a results folder (:mod:`workbench.results`, kind ``embedding-map``);
  :meth:`~EmbeddingMap.plot` returns a plotly scatter with the fixed expression palette, facets and
  hover columns.

Parameter advice (UMAP): ``n_neighbors`` 15 (5-50; larger = more global structure), ``min_dist`` 0.1
(0-0.5; smaller = tighter clusters), ``metric`` "cosine" for SSL features.

Example::

    emap = embedding_map(X, meta, method="umap", seed=0, out_dir=RunFolder(run).analysis("umap-last"))
    emap.plot(color="expression", facet="view", hover=["identity", "path"]).show()
    aligned = aligned_embedding_map([X_ep1, X_ep5, X_ep10], meta, epochs=[1, 5, 10], seed=0)
    aligned.plot(color="expression", facet="epoch")
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.errors import WorkbenchError, require
from workbench.results import Results, frame_from_arrays, frame_to_arrays
from workbench.viz.style import StylePreset, category_order, color_map_for, get_preset

METHODS = ("umap", "pca")
DEFAULT_HOVER = ("expression", "identity", "view", "epoch", "path")


def _features(X: Any) -> np.ndarray:
    a = np.asarray(X.detach().cpu().numpy() if hasattr(X, "detach") else X, dtype=np.float32)
    if a.ndim != 2 or a.shape[0] < 3:
        raise WorkbenchError(f"a 2-D map needs a (N, D) array with N >= 3, got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise WorkbenchError("features contain NaN or inf")
    return a


def _umap_module() -> Any:
    return require("umap", purpose="UMAP embedding maps (or use method='pca')")


def _umap_kwargs(n: int, n_neighbors: int, min_dist: float, metric: str) -> dict[str, Any]:
    if n_neighbors < 2:
        raise WorkbenchError(f"n_neighbors must be >= 2, got {n_neighbors}")
    if not 0.0 <= min_dist <= 1.0:
        raise WorkbenchError(f"min_dist must be in [0, 1], got {min_dist}")
    return {"n_neighbors": min(n_neighbors, n - 1), "min_dist": min_dist, "metric": metric, "n_components": 2}


def compute_map(X: Any, *, method: str = "umap", seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1,
                metric: str = "cosine") -> np.ndarray:
    """``(N, 2)`` float32 coordinates of a seeded 2-D map.

    Args:
        method: ``"umap"`` (default) or ``"pca"`` (instant, linear, deterministic; rows are
            L2-normalised first when ``metric="cosine"``).
        seed: UMAP ``random_state`` (forces single-threaded UMAP).
        n_neighbors, min_dist, metric: UMAP parameters (defaults 15, 0.1, "cosine").
    """
    a = _features(X)
    if method == "pca":
        from sklearn.decomposition import PCA

        if metric == "cosine":
            a = a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
        coords = PCA(n_components=2, svd_solver="full", random_state=seed).fit_transform(a)
        # fix the sign of each axis so re-runs are identical (largest |loading| positive)
        for j in range(2):
            if coords[np.argmax(np.abs(coords[:, j])), j] < 0:
                coords[:, j] *= -1
        return coords.astype(np.float32)
    if method != "umap":
        raise WorkbenchError(f"unknown map method '{method}'; choose one of {', '.join(METHODS)}")
    umap = _umap_module()
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        reducer = umap.UMAP(random_state=seed, n_jobs=1, **_umap_kwargs(a.shape[0], n_neighbors, min_dist, metric))
        return np.asarray(reducer.fit_transform(a), dtype=np.float32)


def compute_aligned_maps(Xs: Sequence[Any], seed: int = 0, *, n_neighbors: int = 15, min_dist: float = 0.1,
                         metric: str = "cosine", alignment_regularisation: float = 0.01) -> list[np.ndarray]:
    """One ``(N, 2)`` map per checkpoint with :class:`umap.AlignedUMAP`; all ``Xs`` hold the same rows in
    the same order (relations = identity mapping between consecutive checkpoints).

    ``alignment_regularisation`` (default 0.01): raise it (0.1) for steadier axes between epochs,
    lower it to let each map follow its own data more closely.
    """
    arrays = [_features(x) for x in Xs]
    if len(arrays) < 2:
        raise WorkbenchError("aligned maps need at least 2 checkpoints (use compute_map for one)")
    n = arrays[0].shape[0]
    if any(a.shape[0] != n for a in arrays):
        raise WorkbenchError("aligned maps need the same rows at every checkpoint (row counts differ)")
    umap = _umap_module()
    relation = {i: i for i in range(n)}
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*n_jobs.*overridden.*")
        reducer = umap.AlignedUMAP(random_state=seed, alignment_regularisation=alignment_regularisation,
                                   **_umap_kwargs(n, n_neighbors, min_dist, metric))
        reducer.fit(arrays, relations=[relation] * (len(arrays) - 1))
    return [np.asarray(e, dtype=np.float32) for e in reducer.embeddings_]


def _metadata(meta: Any, n: int) -> Any:
    import pandas as pd

    if meta is None:
        return pd.DataFrame(index=range(n))
    df = pd.DataFrame(meta).reset_index(drop=True)
    if len(df) != n:
        raise WorkbenchError(f"metadata has {len(df)} rows but the map has {n} points")
    return df


@dataclass
class EmbeddingMap(Results):
    """2-D coordinates + per-point metadata (+ how they were computed). Rows align with ``meta``.
    Persisted as a results folder (kind ``embedding-map``)."""

    kind = "embedding-map"
    version = 1

    coords: np.ndarray
    meta: Any
    method: str = "umap"
    params: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.coords = np.asarray(self.coords, dtype=np.float32)
        if self.coords.ndim != 2 or self.coords.shape[1] != 2:
            raise WorkbenchError(f"coords must be (N, 2), got shape {self.coords.shape}")
        self.meta = _metadata(self.meta, self.coords.shape[0])

    def frame(self) -> Any:
        """Metadata with ``x``, ``y`` columns first (the figure's source data)."""
        import pandas as pd

        return pd.concat([pd.DataFrame({"x": self.coords[:, 0], "y": self.coords[:, 1]}), self.meta], axis=1)

    def _check_columns(self, *cols: str | None) -> None:
        missing = [c for c in cols if c and c not in self.meta.columns]
        if missing:
            raise WorkbenchError(f"no metadata column '{missing[0]}'; available: {', '.join(map(str, self.meta.columns))}")

    def plot(self, color: str | None = "expression", facet: str | None = None, hover: Sequence[str] | None = None,
             *, facet_wrap: int = 4, title: str | None = None, max_points: int | None = None, seed: int = 0,
             render_mode: str = "auto") -> Any:
        """Plotly scatter coloured by a metadata column (fixed palette for expression / identity).

        Args:
            color: column to colour by (``None`` = single colour).
            facet: column for small multiples (``"epoch"`` for aligned maps, ``"view"``, ``"run"``).
            hover: columns shown on hover; default = those of expression, identity, view, epoch, path present.
            max_points: random subsample (seeded) for very large maps; hover stays exact.
            render_mode: ``"auto"`` (WebGL above 1000 points), ``"svg"`` for vector export.
        """
        import plotly.express as px

        self._check_columns(color, facet, *(hover or ()))
        df = self.frame()
        if max_points is not None and len(df) > max_points:
            df = df.sample(n=max_points, random_state=seed).sort_index()
        for col in (color, facet):
            if col and col != "epoch" and col in df:
                df[col] = df[col].astype(str)
        hover_cols = list(hover) if hover is not None else [c for c in DEFAULT_HOVER if c in df.columns]
        kwargs: dict[str, Any] = {}
        if color:
            kwargs["color"] = color
            kwargs["color_discrete_map"] = color_map_for(color, df[color])
            kwargs["category_orders"] = {color: category_order(color, df[color])}
        if facet:
            kwargs["facet_col"] = facet
            kwargs["facet_col_wrap"] = facet_wrap
            kwargs.setdefault("category_orders", {})[facet] = sorted(df[facet].unique().tolist())
        fig = px.scatter(df, x="x", y="y", hover_data=hover_cols, render_mode=render_mode,
                         title=title or f"{self.method.upper()} map", **kwargs)
        fig.update_traces(marker={"size": 4, "opacity": 0.8})
        fig.update_xaxes(showticklabels=False, ticks="", title_text="", matches="x")
        fig.update_yaxes(showticklabels=False, ticks="", title_text="", matches="y", scaleanchor="x")
        fig.update_layout(legend={"itemsizing": "constant"})
        fig.for_each_annotation(lambda a: a.update(text=a.text.split("=")[-1]))
        return fig

    def plot_mpl(self, preset: str | StylePreset = "single", color: str | None = "expression",
                 facet: str | None = None) -> Any:
        """The same scatter with matplotlib (export fallback; no hover)."""
        import matplotlib.pyplot as plt

        from workbench.viz.style import mpl_style

        self._check_columns(color, facet)
        df = self.frame()
        panels = sorted(df[facet].unique().tolist()) if facet else [None]
        p = get_preset(preset)
        with mpl_style(p):
            fig, axes = plt.subplots(1, len(panels), squeeze=False, sharex=True, sharey=True)
            for ax, panel in zip(axes[0], panels):
                sub = df if panel is None else df[df[facet] == panel]
                if color:
                    cmap = color_map_for(color, df[color])
                    for value in category_order(color, df[color]):
                        pts = sub[sub[color].astype(str) == value]
                        ax.scatter(pts["x"], pts["y"], s=p.marker_size ** 2 / 2, c=cmap[value], linewidths=0,
                                   label=value if ax is axes[0][0] else None)
                else:
                    ax.scatter(sub["x"], sub["y"], s=p.marker_size ** 2 / 2, linewidths=0)
                ax.set_xticks([])
                ax.set_yticks([])
                ax.set_aspect("equal", adjustable="box")
                if panel is not None:
                    ax.set_title(str(panel))
            if color and len(category_order(color, df[color])) <= 12:
                fig.legend(loc="outside right center", markerscale=2)
        return fig

    def export(self, out_dir: str | Path, *, style: str | StylePreset = "single", name: str = "embedding-map",
               color: str | None = "expression", facet: str | None = None, card: dict[str, Any] | None = None,
               timeout: float = 60.0) -> dict[str, Path]:
        """Vector figure (SVG markers, not WebGL), PNG, HTML, CSV of ``frame()`` and a card."""
        from workbench.viz.export import export_figure

        fig = self.plot(color=color, facet=facet, render_mode="svg")
        card = {"method": self.method, **self.params, **(card or {})}
        return export_figure(fig, out_dir, name, preset=style, data=self.frame(), card=card, timeout=timeout,
                             mpl_fallback=lambda p: self.plot_mpl(p, color=color, facet=facet))

    # ------------------------------------------------------------------ persistence
    def _fields(self) -> dict[str, Any]:
        _, spec = frame_to_arrays("meta", self.meta)
        return {"method": self.method, "params": self.params, "meta": spec}

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays, _ = frame_to_arrays("meta", self.meta)
        return {"coords": self.coords, **arrays}

    @classmethod
    def _from_saved(cls, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> EmbeddingMap:
        return cls(coords=arrays["coords"], meta=frame_from_arrays("meta", fields["meta"], arrays),
                   method=fields["method"], params=fields["params"])


def embedding_map(X: Any, meta: Any = None, *, method: str = "umap", seed: int = 0, n_neighbors: int = 15,
                  min_dist: float = 0.1, metric: str = "cosine", out_dir: str | Path | None = None) -> EmbeddingMap:
    """Compute a 2-D map (:func:`compute_map`) and wrap it with its metadata; saved to ``out_dir`` if given."""
    coords = compute_map(X, method=method, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric)
    params = {"seed": seed, "metric": metric}
    if method == "umap":
        params.update(n_neighbors=n_neighbors, min_dist=min_dist)
    emap = EmbeddingMap(coords, meta, method=method, params=params)
    if out_dir is not None:
        emap.save(out_dir)
    return emap


def aligned_embedding_map(Xs: Sequence[Any], meta: Any = None, *, epochs: Sequence[Any] | None = None,
                          seed: int = 0, n_neighbors: int = 15, min_dist: float = 0.1, metric: str = "cosine",
                          alignment_regularisation: float = 0.01, out_dir: str | Path | None = None
                          ) -> EmbeddingMap:
    """Aligned UMAP over checkpoints, stacked into one map with an ``epoch`` column (facet on it)."""
    import pandas as pd

    maps = compute_aligned_maps(Xs, seed=seed, n_neighbors=n_neighbors, min_dist=min_dist, metric=metric,
                                alignment_regularisation=alignment_regularisation)
    epochs = list(epochs) if epochs is not None else list(range(len(maps)))
    if len(epochs) != len(maps):
        raise WorkbenchError(f"{len(epochs)} epoch labels for {len(maps)} checkpoints")
    base = _metadata(meta, maps[0].shape[0])
    frames = [base.assign(epoch=e) for e in epochs]
    emap = EmbeddingMap(np.concatenate(maps), pd.concat(frames, ignore_index=True), method="aligned-umap",
                        params={"seed": seed, "metric": metric, "n_neighbors": n_neighbors, "min_dist": min_dist,
                                "alignment_regularisation": alignment_regularisation, "epochs": epochs})
    if out_dir is not None:
        emap.save(out_dir)
    return emap
