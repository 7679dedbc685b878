"""Where does an SSL model look on the face? Grad-CAM scored per facial region, persisted.

``compute_attention(run, manifest)`` picks a balanced, seeded set of faces per expression, runs
Grad-CAM for an embedding target (expression prototype, identity centroid, another view, or a
linear-probe logit), scores the maps per facial region (:mod:`.regions`) and the pointing game,
and returns an :class:`AttentionResult`. The result is a results folder (:mod:`workbench.results`);
plotting and overlays read only its files, so re-plotting never recomputes the model::

    res = compute_attention("runs/simclr", "data/manifest.csv", target="prototype")
    res.save("runs/simclr/analysis/attention-prototype")
    res = AttentionResult.load("runs/simclr/analysis/attention-prototype")
    res.summary(); res.plot_regions(); res.save_overlays("figs/cam")

Reading the numbers: ``score_<region>`` = attention mass share / area share (1 = as much as a
uniform map); ``pointing_hit`` = the map's peak lies in a region the expression moves (FACS table,
neutral excluded); ``moving_share`` = mass share on those regions (the synthetic generator's exact
table when available), to compare with ``moving_area`` (their area share).
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from workbench.data.vocabulary import EXPRESSION_INDEX, EXPRESSIONS
from workbench.device import select_device
from workbench.errors import ConfigError, MissingMetadataError, WorkbenchError
from workbench.explain.regions import (
    REGIONS,
    expected_mask,
    moving_region_share,
    pointing_game,
    region_masks,
    region_scores,
)
from workbench.results import Results, frame_from_arrays, frame_to_arrays
from workbench.runs import LoadedRun, extract_embeddings, load_run

#: target kinds of :func:`compute_attention`
TARGETS: tuple[str, ...] = ("prototype", "identity", "view", "probe")
_TEXT_COLUMNS = ("path", "split", "expression", "identity", "target")

# Okabe-Ito (+ grey for neutral), used when workbench.viz.style is not available
_OKABE_ITO: dict[str, str] = {
    "neutral": "#999999", "happiness": "#E69F00", "sadness": "#0072B2", "surprise": "#56B4E9",
    "fear": "#CC79A7", "disgust": "#009E73", "anger": "#D55E00", "contempt": "#000000",
}


def expression_palette() -> dict[str, str]:
    """The workbench's fixed expression colours (``workbench.viz.style.EXPRESSION_COLORS``), or Okabe-Ito."""
    try:
        from workbench.viz.style import EXPRESSION_COLORS

        return dict(EXPRESSION_COLORS)
    except Exception:  # noqa: BLE001 - style module optional
        return dict(_OKABE_ITO)


# ---------------------------------------------------------------------------------------------
# results object
# ---------------------------------------------------------------------------------------------

@dataclass
class AttentionResult(Results):
    """Grad-CAM maps and their region scores for a set of faces.

    Attributes:
        heatmaps: (N, H, W) float16 maps in [0, 1] (each divided by its own maximum).
        images: (N, H, W, 3) uint8 faces as explained (the run's image size).
        landmarks: (N, 68, 2) float32 (x, y) in the images' pixel coordinates.
        scores: one row per image: ``row, path, split, expression, identity, target, target_score,
            score_<region>...`` (mass/area), ``mass_<region>...``, ``pointing_hit`` (nullable bool,
            NA for neutral), ``moving_share``, ``moving_area``.
        meta: run, checkpoint, target kind, layer, image size, seed, region list...

    Persisted as a results folder (kind ``attention``): ``meta`` in ``result.json``; maps, faces,
    landmarks and the score table in ``arrays.npz``.
    """

    kind = "attention"
    version = 1

    heatmaps: np.ndarray
    images: np.ndarray
    landmarks: np.ndarray
    scores: pd.DataFrame
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.heatmaps = np.asarray(self.heatmaps)
        self.images = np.asarray(self.images, dtype=np.uint8)
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32)
        self.scores = _typed_scores(self.scores.reset_index(drop=True))
        if not (len(self.heatmaps) == len(self.images) == len(self.landmarks) == len(self.scores)):
            raise WorkbenchError(f"attention result parts disagree: {len(self.heatmaps)} heatmaps, "
                                 f"{len(self.images)} images, {len(self.landmarks)} landmarks, "
                                 f"{len(self.scores)} score rows")

    def __len__(self) -> int:
        return int(self.heatmaps.shape[0])

    @property
    def regions(self) -> list[str]:
        return list(self.meta.get("regions", REGIONS))

    # -- persistence ---------------------------------------------------------------------------
    def _fields(self) -> dict[str, Any]:
        arrays, spec = frame_to_arrays("scores", self.scores)
        return {"meta": self.meta, "scores": spec}

    def _arrays(self) -> dict[str, np.ndarray]:
        arrays, _ = frame_to_arrays("scores", self.scores)
        return {"heatmaps": np.asarray(self.heatmaps, dtype=np.float16),
                "images": np.asarray(self.images, dtype=np.uint8),
                "landmarks": np.asarray(self.landmarks, dtype=np.float32), **arrays}

    @classmethod
    def _from_saved(cls, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> AttentionResult:
        scores = frame_from_arrays("scores", fields["scores"], arrays)
        return cls(arrays["heatmaps"], arrays["images"], arrays["landmarks"], scores, dict(fields["meta"]))

    # -- tables --------------------------------------------------------------------------------
    def summary(self) -> pd.DataFrame:
        """Mean region score (mass/area, 1 = uniform) per expression, plus ``pointing_acc``
        (neutral excluded), ``moving_share``, ``moving_area`` and ``n``; a last row ``all``."""
        df = self.scores
        cols = [f"score_{r}" for r in self.regions]
        order = [e for e in EXPRESSIONS if e in set(df["expression"].dropna())]
        order += sorted(set(df["expression"].dropna()) - set(order))

        def row(part: pd.DataFrame) -> dict[str, float]:
            d: dict[str, float] = {"n": float(len(part))}
            d.update({c: float(part[c].mean()) for c in cols})
            hits = part["pointing_hit"].dropna()
            d["pointing_acc"] = float(hits.astype(float).mean()) if len(hits) else math.nan
            d["moving_share"] = float(part["moving_share"].mean())
            d["moving_area"] = float(part["moving_area"].mean())
            return d

        rows = {e: row(df[df["expression"] == e]) for e in order}
        rows["all"] = row(df)
        out = pd.DataFrame.from_dict(rows, orient="index")
        out["n"] = out["n"].astype(int)
        out.index.name = "expression"
        return out

    # -- pictures ------------------------------------------------------------------------------
    def overlay(self, i: int, *, alpha: float = 0.5, landmarks: bool = True, regions: bool = False,
                scale: int = 1, cmap: str = "inferno", landmark_color: tuple[int, int, int] = (0, 255, 255)
                ) -> np.ndarray:
        """Heatmap (colormap) blended over face ``i``, with the 68 landmarks drawn.

        Args:
            alpha: heatmap opacity (default 0.5).
            landmarks: draw the 68 points in ``landmark_color`` (default cyan).
            regions: draw the region borders in white (to check the region layout).
            scale: integer upscaling (nearest) before drawing; 3-4 makes 64 px faces readable.
            cmap: a matplotlib colormap name (default ``"inferno"``, perceptually uniform; ``"jet"``, the
                usual CAM look, exaggerates some levels and is not colour-blind safe).
        Returns:
            (H*scale, W*scale, 3) uint8.
        """
        import matplotlib

        if not 0 <= i < len(self):
            raise WorkbenchError(f"image index {i} out of range (0..{len(self) - 1})")
        s = max(1, int(scale))
        img = np.asarray(self.images[i], dtype=np.float32) / 255.0
        heat = np.asarray(self.heatmaps[i], dtype=np.float32)
        if s > 1:
            img = img.repeat(s, 0).repeat(s, 1)
            heat = _upsample(heat, s)
        colour = matplotlib.colormaps[cmap](np.clip(heat, 0.0, 1.0))[..., :3]
        out = (1.0 - alpha) * img + alpha * colour
        out = np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)
        h, w = out.shape[:2]
        lm = np.asarray(self.landmarks[i], dtype=np.float64)
        if regions and np.isfinite(lm).all():
            m = region_masks(lm, (h, w), image_size=self.images.shape[1:3]).numpy()[0]
            label = m.argmax(0)
            edge = np.zeros((h, w), dtype=bool)
            edge[:, 1:] |= label[:, 1:] != label[:, :-1]
            edge[1:, :] |= label[1:, :] != label[:-1, :]
            out[edge] = 255
        if landmarks and np.isfinite(lm).all():
            r = s // 3
            pts = np.round((lm + 0.5) * s - 0.5).astype(int)
            for x, y in pts:
                out[max(0, y - r):min(h, y + r + 1), max(0, x - r):min(w, x + r + 1)] = landmark_color
        return out

    def _grid_indices(self, n: int) -> tuple[list[int], int]:
        df = self.scores.reset_index(drop=True)
        exprs = [e for e in EXPRESSIONS if e in set(df["expression"].dropna())]
        groups = [df.index[df["expression"] == e].tolist() for e in exprs] or [df.index.tolist()]
        per = max(1, math.ceil(n / len(groups)))
        picked = [i for g in groups for i in g[:per]][:n]
        return picked, per

    def grid(self, n: int = 16, *, indices: list[int] | None = None, ncols: int | None = None,
             scale: int = 2, pad: int = 2, **overlay_kw: Any) -> np.ndarray:
        """A mosaic of overlays, uint8 (rows x cols cells, white padding).

        Default selection: up to ``ceil(n / n_expressions)`` faces per expression, one expression
        per row in canonical order. Extra keyword arguments go to :meth:`overlay`.
        """
        if len(self) == 0:
            raise WorkbenchError("the attention result holds no images")
        if indices is None:
            indices, per = self._grid_indices(n)
            ncols = ncols or per
        ncols = max(1, ncols or min(len(indices), 8))
        tiles = [self.overlay(i, scale=scale, **overlay_kw) for i in indices]
        th, tw = tiles[0].shape[:2]
        nrows = math.ceil(len(tiles) / ncols)
        canvas = np.full((nrows * (th + pad) + pad, ncols * (tw + pad) + pad, 3), 255, dtype=np.uint8)
        for k, t in enumerate(tiles):
            r, c = divmod(k, ncols)
            y, x = pad + r * (th + pad), pad + c * (tw + pad)
            canvas[y:y + th, x:x + tw] = t
        return canvas

    def save_overlays(self, folder: str | Path, *, scale: int = 4, grid: bool = True, **overlay_kw: Any
                      ) -> list[Path]:
        """Write one PNG per face (``0003_happiness.png``) and ``grid.png``; returns the paths."""
        from PIL import Image

        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        paths = []
        for i in range(len(self)):
            expr = str(self.scores["expression"].iloc[i]) if "expression" in self.scores else "face"
            p = out / f"{i:04d}_{_safe(expr)}.png"
            Image.fromarray(self.overlay(i, scale=scale, **overlay_kw)).save(p)
            paths.append(p)
        if grid and len(self):
            p = out / "grid.png"
            Image.fromarray(self.grid(scale=max(1, scale // 2), **overlay_kw)).save(p)
            paths.append(p)
        return paths

    def plot_regions(self, *, metric: str = "score", style: str | None = None,
                     expressions: Sequence[str] | None = None) -> Any:
        """Grouped bar chart: mean region score per expression (error bars: standard error).

        Args:
            metric: ``"score"`` (mass/area, dashed line at 1 = uniform; default) or ``"mass"``
                (share of the attention mass, rows sum to 1).
            style: optional ``workbench.viz.style`` preset (``"single"``, ``"double"``, ``"slide"``).
            expressions: only these expressions (default: every one present).
        Returns:
            a plotly ``Figure``; colours are the fixed expression palette.
        """
        import plotly.graph_objects as go

        if metric not in ("score", "mass"):
            raise ConfigError(f"metric must be 'score' or 'mass', got '{metric}'")
        palette = expression_palette()
        df = self.scores
        regions = self.regions
        fig = go.Figure()
        order = [e for e in EXPRESSIONS if e in set(df["expression"].dropna())
                 and (expressions is None or e in expressions)]
        for e in order:
            part = df[df["expression"] == e]
            vals = part[[f"{metric}_{r}" for r in regions]]
            sem = vals.std(ddof=1) / np.sqrt(vals.notna().sum().clip(lower=1))
            fig.add_trace(go.Bar(name=e, x=regions, y=vals.mean().to_numpy(),
                                 error_y={"type": "data", "array": sem.fillna(0).to_numpy(), "thickness": 1},
                                 marker_color=palette.get(e, "#BBBBBB"),
                                 hovertemplate=f"{e}<br>%{{x}}: %{{y:.2f}}<extra>n={len(part)}</extra>"))
        if metric == "score":
            fig.add_hline(y=1.0, line_dash="dash", line_color="#555555", annotation_text="uniform",
                          annotation_position="top right")
        target = self.meta.get("target", "")
        fig.update_layout(barmode="group", title=f"Grad-CAM attention per facial region ({target})",
                          xaxis_title="region", legend_title="expression",
                          yaxis_title="attention / area (1 = uniform)" if metric == "score"
                          else "share of attention")
        if style:
            from workbench.viz.style import apply_plotly_style

            apply_plotly_style(fig, style)
        return fig


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) or "face"


def _upsample(heat: np.ndarray, s: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(heat))[None, None]
    return torch.nn.functional.interpolate(t, scale_factor=s, mode="bilinear", align_corners=False)[0, 0].numpy()


def _typed_scores(df: pd.DataFrame) -> pd.DataFrame:
    """Normalise column dtypes so that a CSV round trip gives an equal frame (text columns: object
    with NaN for missing, whatever pandas' default string dtype is)."""
    df = df.copy()
    for c in _TEXT_COLUMNS:
        if c in df:
            df[c] = df[c].astype(object).where(df[c].notna(), np.nan)
    if "row" in df:
        df["row"] = df["row"].astype(np.int64)
    if "pointing_hit" in df:
        df["pointing_hit"] = df["pointing_hit"].map(
            lambda v: pd.NA if v is None or (isinstance(v, float) and math.isnan(v)) or v is pd.NA
            else str(v).strip().lower() in ("true", "1", "1.0")).astype("boolean")
    for c in df.columns:
        if c.startswith(("score_", "mass_")) or c in ("target_score", "moving_share", "moving_area"):
            df[c] = df[c].astype(np.float64)
    return df


# ---------------------------------------------------------------------------------------------
# computing
# ---------------------------------------------------------------------------------------------

def fixed_view(images01: torch.Tensor, crop: float = 0.9) -> torch.Tensor:
    """The deterministic "other view" of the ``view`` target: horizontal flip + centre crop of
    ``crop`` x the side (default 0.9), resized back (bilinear)."""
    b, c, h, w = images01.shape
    ch, cw = max(1, round(h * crop)), max(1, round(w * crop))
    y0, x0 = (h - ch) // 2, (w - cw) // 2
    x = images01.flip(-1)[:, :, y0:y0 + ch, x0:x0 + cw]
    return torch.nn.functional.interpolate(x, size=(h, w), mode="bilinear", align_corners=False)


def score_heatmaps(heatmaps: torch.Tensor, landmarks: torch.Tensor | np.ndarray, expressions: list[str], *,
                   image_size: int | tuple[int, int] | None = None, dilate: float = 0.1, forehead: float = 0.6
                   ) -> pd.DataFrame:
    """Region scores, pointing game and moving-region share of heatmaps, one row per image.

    Columns: ``score_<region>``, ``mass_<region>``, ``pointing_hit`` (NA where the expression
    moves no region), ``moving_share``, ``moving_area``.
    """
    hm = torch.as_tensor(heatmaps).float()
    masks = region_masks(landmarks, tuple(hm.shape[1:]), image_size=image_size, dilate=dilate,  # type: ignore[arg-type]
                         forehead=forehead)
    rs = region_scores(hm, masks)
    facs = expected_mask(expressions, table="facs")
    hit = pointing_game(hm, masks, facs)
    synth = expected_mask(expressions, table="synth")
    share = moving_region_share(hm, masks, expressions)
    area = (rs.area * synth.float()).sum(1)
    area = torch.where(synth.any(1), area, torch.full_like(area, float("nan")))
    data: dict[str, Any] = {}
    for j, r in enumerate(REGIONS):
        data[f"score_{r}"] = rs.score[:, j].numpy().astype(np.float64)
    for j, r in enumerate(REGIONS):
        data[f"mass_{r}"] = rs.mass[:, j].numpy().astype(np.float64)
    data["pointing_hit"] = pd.array([bool(h) if e else pd.NA for h, e in zip(hit.tolist(), facs.any(1).tolist())],
                                    dtype="boolean")
    data["moving_share"] = share.numpy().astype(np.float64)
    data["moving_area"] = area.numpy().astype(np.float64)
    return pd.DataFrame(data)


def _select(frame: pd.DataFrame, ok: np.ndarray, n_per_expression: int, seed: int) -> np.ndarray:
    """Balanced, seeded choice of rows (positions) per expression, in canonical expression order."""
    rng = np.random.default_rng(seed)
    expr = frame["expression"].to_numpy()
    out: list[np.ndarray] = []
    for e in EXPRESSIONS:
        cand = np.flatnonzero(ok & (expr == e))
        if cand.size == 0:
            continue
        k = min(int(n_per_expression), cand.size)
        out.append(np.sort(rng.choice(cand, size=k, replace=False)))
    return np.concatenate(out) if out else np.zeros(0, dtype=np.int64)


def _codes(values: pd.Series) -> tuple[np.ndarray, list[str]]:
    keys = [None if (not isinstance(v, str) and pd.isna(v)) or v == "" else str(v) for v in values.tolist()]
    names = sorted({k for k in keys if k is not None})
    index = {k: i for i, k in enumerate(names)}
    return np.asarray([index[k] if k is not None else -1 for k in keys], dtype=np.int64), names


def compute_attention(run: Any, manifest: Any, *, target: str = "prototype", n_per_expression: int = 8,
                      seed: int = 0, device: str | torch.device | None = None, batch_size: int = 32,
                      layer: Any = None, split: str | None = None, out: str | Path | None = None,
                      dilate: float = 0.1, forehead: float = 0.6, checkpoint: str = "last") -> AttentionResult:
    """Grad-CAM of a run on a balanced set of faces, scored per facial region.

    Args:
        run: a run folder or a :class:`~workbench.runs.LoadedRun`.
        manifest: a manifest (or its path) **with landmarks** and expressions.
        target: what to explain (default ``"prototype"``):
            ``"prototype"`` cosine to the image's expression prototype (mean train-split
            embedding of that expression); ``"identity"`` cosine to the image's identity centroid
            (over *all* rows of that identity, since subject-disjoint splits leave test identities
            out of train); ``"view"`` cosine to a fixed other view (flip + 0.9 centre crop,
            :func:`fixed_view`); ``"probe"`` logit of the true class under a logistic-regression
            probe fitted on the train split's embeddings.
        n_per_expression: faces per expression (default 8; fewer when the data has fewer).
        seed: selection seed (default 0: the same faces every time).
        device: ``None`` / ``"auto"`` = CUDA > MPS > CPU, or ``"cpu"``, ``"cuda:1"``...
        batch_size: Grad-CAM batch (default 32; lower it on out-of-memory).
        layer: Grad-CAM layer (default: the backbone's last stage; see :class:`.GradCAM`).
        split: explain only faces of this split (``"test"`` for held-out faces; default: any).
        out: when given, the result is also saved there (e.g. ``RUN/analysis/attention-prototype``).
        dilate, forehead: region geometry (see :func:`.regions.region_masks`).
        checkpoint: which checkpoint of a run *folder* to load (``"last"``, ``"epoch-0003"``) to
            follow attention over training.
    Raises:
        MissingMetadataError: the manifest has no landmarks (or no expression / identity column
            the target needs).
    """
    from workbench.data.cache import load_face_data
    from workbench.data.manifest import Manifest
    from workbench.data.splits import assign_splits
    from workbench.explain.gradcam import GradCAM
    from workbench.explain.targets import (
        IdentityCentroidSimilarity,
        OtherViewSimilarity,
        ProbeLogit,
        PrototypeSimilarity,
        class_prototypes,
    )

    if target not in TARGETS:
        raise ConfigError(f"target must be one of {', '.join(TARGETS)}, got '{target}'")
    if int(n_per_expression) < 1:
        raise ConfigError(f"n_per_expression must be >= 1, got {n_per_expression}")
    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    purpose = f"Grad-CAM attention scoring (target '{target}')"
    manifest.require("landmarks", purpose=purpose)
    manifest.require("expression", purpose=purpose)
    if target == "identity":
        manifest.require("identity", purpose=purpose)
    if split is not None and split not in ("train", "val", "test"):
        raise ConfigError(f"split must be train, val or test, got '{split}'")
    dev = select_device("auto" if device is None else str(device))
    if not isinstance(run, LoadedRun):
        run = load_run(run, checkpoint=checkpoint, device=dev)
    method = run.method.to(dev).eval()
    size = run.image_size
    data = load_face_data(manifest, size, cache_dir=run.config.data.cache_dir or None, progress=False)
    if data.landmarks is None:
        raise MissingMetadataError(f"{purpose} needs landmarks, and none of the usable images of "
                                   f"{manifest.path or manifest.root} has them")
    frame = data.manifest.frame.reset_index(drop=True)
    splits = assign_splits(frame).to_numpy()
    expr_codes = np.asarray([EXPRESSION_INDEX.get(v, -1) if isinstance(v, str) else -1
                             for v in frame["expression"].tolist()], dtype=np.int64)
    ok = np.isfinite(data.landmarks).reshape(len(frame), -1).all(1) & (expr_codes >= 0)
    if split is not None:
        ok &= splits == split
    id_codes, id_names = _codes(frame["identity"]) if "identity" in frame else (np.full(len(frame), -1), [])

    feats = None
    if target in ("prototype", "identity", "probe"):
        emb = extract_embeddings(run, manifest, device=str(dev))
        if len(emb) != len(frame):
            raise WorkbenchError(f"embeddings ({len(emb)}) and faces ({len(frame)}) disagree; delete "
                                 f"{run.folder.embeddings_folder} and retry")
        feats = emb.feats
    train = (splits == "train") & (expr_codes >= 0)
    if target in ("prototype", "probe") and not train.any():
        raise MissingMetadataError(f"{purpose} needs labelled train-split images for the "
                                   f"{'prototypes' if target == 'prototype' else 'probe'}; the manifest has none")
    if target in ("prototype", "probe"):
        ok &= np.isin(expr_codes, np.unique(expr_codes[train]))
    if target == "identity":
        ok &= id_codes >= 0
    rows = _select(frame, ok, n_per_expression, seed)
    if rows.size == 0:
        raise MissingMetadataError(f"{purpose}: no image has landmarks, an expression"
                                   f"{' and an identity' if target == 'identity' else ''}"
                                   f"{f' in split {split!r}' if split else ''}")
    expressions = [str(frame["expression"].iloc[r]) for r in rows]

    labels: list[str]
    if target == "prototype":
        assert feats is not None
        protos = class_prototypes(feats[train], expr_codes[train], len(EXPRESSIONS))
        tgt: Any = PrototypeSimilarity(protos, expr_codes[rows])
        labels = expressions
    elif target == "identity":
        assert feats is not None
        cents = class_prototypes(feats, id_codes, len(id_names))
        tgt = IdentityCentroidSimilarity(cents, id_codes[rows])
        labels = [id_names[c] for c in id_codes[rows]]
    elif target == "probe":
        from workbench.evaluate.probe import fit_linear_probe

        assert feats is not None
        probe = fit_linear_probe(feats[train], expr_codes[train], seed=seed)
        tgt = ProbeLogit.from_probe(probe, expr_codes[rows].tolist())
        labels = expressions
    else:
        others = []
        with torch.no_grad():
            for s in range(0, rows.size, batch_size):
                x, _ = data.batch(rows[s:s + batch_size], dev)
                others.append(method(fixed_view(x))["feats"].float().cpu())
        tgt = OtherViewSimilarity(torch.cat(others))
        labels = ["flip+crop0.9"] * rows.size

    heat, scores = [], []
    with GradCAM(method, layer) as cam:
        layer_name = cam.layer_name
        for s in range(0, rows.size, batch_size):
            chunk = rows[s:s + batch_size]
            x, _ = data.batch(chunk, dev)
            heat.append(cam(x, tgt, torch.arange(s, s + chunk.size)).cpu())
            assert cam.last_scores is not None and cam.last_raw is not None
            scores.append(cam.last_scores.float().cpu())
            if s == 0 and min(cam.last_raw.shape[1:]) < 4:
                import warnings

                warnings.warn(f"Grad-CAM layer '{layer_name}' gives a {tuple(cam.last_raw.shape[1:])} grid at "
                              f"{size} px: region scores will be coarse; pass layer= an earlier stage "
                              "(ResNets: 'layer3' or 'layer2') or use larger images", stacklevel=2)
    heatmaps = torch.cat(heat)
    lms = np.asarray(data.landmarks[rows], dtype=np.float32)
    table = score_heatmaps(heatmaps, lms, expressions, dilate=dilate, forehead=forehead)
    info = pd.DataFrame({
        "row": rows.astype(np.int64),
        "path": frame["path"].iloc[rows].astype(str).to_numpy(),
        "split": splits[rows],
        "expression": expressions,
        "identity": frame["identity"].iloc[rows].to_numpy() if "identity" in frame else np.nan,
        "target": labels,
        "target_score": torch.cat(scores).numpy().astype(np.float64),
    })
    df = pd.concat([info, table], axis=1)
    images = np.stack([np.asarray(data.images[int(r)], dtype=np.uint8) for r in rows])
    import workbench

    meta = {
        "run": str(run.path), "run_name": run.name, "checkpoint": run.checkpoint.stem,
        "method": getattr(method, "name", type(method).__name__),
        "backbone": getattr(getattr(method, "backbone", None), "name", ""),
        "target": target, "feature": "feats", "layer": layer_name, "image_size": int(size),
        "heatmap_size": list(heatmaps.shape[1:]), "n_images": int(rows.size),
        "n_per_expression": int(n_per_expression), "seed": int(seed), "split": split,
        "manifest": str(manifest.path or manifest.root), "regions": list(REGIONS),
        "region_params": {"dilate": dilate, "forehead": forehead},
        "normalisation": "each heatmap divided by its own maximum (1 = most attended pixel)",
        "pointing_table": "facs", "moving_table": "synth if available else facs",
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "workbench": getattr(workbench, "__version__", ""),
    }
    res = AttentionResult(heatmaps.numpy().astype(np.float16), images, lms, df, meta)
    if out is not None:
        res.save(out)
    return res
