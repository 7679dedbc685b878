"""How visible expression is in the pixels of a face set: ``workbench manifest stats``.

Compute → persisted result → print, for any manifest (synthetic or real), so a user can put a real set
and the synthetic set side by side. All figures are on grey images resized to ``size`` (48 px by default,
the size the reference figures were measured at):

- ``identity_share``: share of the pixel variance explained by the person (eta squared of identity).
- ``expression_share``: within-identity share explained by expression: each person's mean image is
  removed, then the expression means of what is left (pooled over people) are taken; their sum of
  squares over the *total* sum of squares. Real posed faces: JAFFE 0.063, CK+48 0.047.
  ``expression_eta2`` is the plain share of the expression means (JAFFE 0.065, CK+48 0.079); in a
  balanced design (every person shows every expression equally often) the two are equal.
- ``pixel_probe``: subject-disjoint raw-pixel expression probe: PCA (100 components) + logistic
  regression, person-wise k-fold cross-validation, pooled out-of-fold accuracy with a 95 % person
  bootstrap interval. JAFFE 0.35-0.41, CK+48 0.79.
- ``landmark_probe`` (when the manifest has landmarks): the same probe on landmark geometry (points
  centred, rotated to a level eye line and scaled by the inter-ocular distance): the ceiling of what
  the geometry alone says.
- ``chance``: the majority-class share.

Images are decoded in memory for this (no cache is written), so a licensed dataset leaves nothing behind.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from workbench.data.landmarks import inter_ocular_distance, parse_landmarks
from workbench.errors import MissingMetadataError, WorkbenchError
from workbench.evaluate.intervals import Score, person_bootstrap, person_folds
from workbench.results import Results

#: reference figures of real posed faces (grey 48 px, subject-disjoint), from docs/RESULTS.md
REFERENCE_SETS: dict[str, dict[str, float]] = {
    "JAFFE (10 people, 7 classes)": {"expression_share": 0.063, "pixel_probe": 0.38, "identity_share": 0.65},
    "CK+48 (118 people, 7 classes)": {"expression_share": 0.047, "pixel_probe": 0.79, "identity_share": 0.81},
}


@dataclass
class PixelStats(Results):
    """The statistics of one face set (see the module docstring); a results folder (kind ``pixel-stats``)."""

    kind = "pixel-stats"
    version = 1

    source: str
    n_images: int
    n_people: int
    n_classes: int
    size: int
    identity_share: float
    expression_share: float
    expression_eta2: float
    pixel_probe: Score
    chance: float
    folds: int
    landmark_probe: Score | None = None
    mean_expression_change: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PixelStats:
        d = dict(d)
        d["pixel_probe"] = Score(**d["pixel_probe"])
        if d.get("landmark_probe"):
            d["landmark_probe"] = Score(**d["landmark_probe"])
        return cls(**d)

    def _fields(self) -> dict[str, Any]:
        return self.to_dict()

    @classmethod
    def _from_saved(cls, fields: dict[str, Any], arrays: dict[str, np.ndarray]) -> PixelStats:
        return cls.from_dict(fields)

    def lines(self) -> list[str]:
        """The report as terminal lines (with the reference sets beside it)."""
        out = [f"{self.source}: {self.n_images} images, {self.n_people} people, {self.n_classes} expressions, "
               f"grey {self.size} px",
               f"  identity variance share      {self.identity_share:.3f}",
               f"  expression variance share    {self.expression_share:.3f}  (within identity; "
               f"identity/expression = {self.identity_share / max(self.expression_share, 1e-9):.1f}x; "
               f"plain eta2 {self.expression_eta2:.3f})",
               f"  raw-pixel expression probe   {self.pixel_probe.line()}"]
        if self.landmark_probe is not None:
            out.append(f"  landmark-geometry probe      {self.landmark_probe.line()}")
        out.append(f"  chance (majority class)      {self.chance:.3f}   [{self.folds}-fold person-wise CV]")
        if self.mean_expression_change:
            parts = ", ".join(f"{k} {v:.1f}" for k, v in self.mean_expression_change.items())
            out.append(f"  mean |pixel change| vs the person's neutral (0-255): {parts}")
        out.append("  reference (real posed faces): " + "; ".join(
            f"{k}: expression {v['expression_share']:.3f}, pixel probe {v['pixel_probe']:.2f}"
            for k, v in REFERENCE_SETS.items()))
        return out


def _grey(images: np.ndarray) -> np.ndarray:
    a = np.asarray(images, dtype=np.float32)
    if a.ndim == 4:
        a = a @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return a.reshape(len(a), -1)


def variance_shares(X: np.ndarray, identity: np.ndarray, expression: np.ndarray) -> tuple[float, float, float]:
    """``(identity_share, expression_share, expression_eta2)`` of rows ``X`` (see the module docstring)."""
    X = np.asarray(X, dtype=np.float64)
    Xc = X - X.mean(axis=0)
    total = float((Xc ** 2).sum())
    if total == 0.0:
        return 0.0, 0.0, 0.0
    _, pid = np.unique(np.asarray(identity).astype(str), return_inverse=True)
    _, eid = np.unique(np.asarray(expression).astype(str), return_inverse=True)

    def group_means(A: np.ndarray, codes: np.ndarray) -> np.ndarray:
        sums = np.zeros((int(codes.max()) + 1, A.shape[1]))
        np.add.at(sums, codes, A)
        return sums / np.bincount(codes)[:, None]

    person_mean = group_means(Xc, pid)[pid]
    within = Xc - person_mean
    expression_within = group_means(within, eid)[eid]
    expression_raw = group_means(Xc, eid)[eid]
    return (float((person_mean ** 2).sum()) / total, float((expression_within ** 2).sum()) / total,
            float((expression_raw ** 2).sum()) / total)


def normalised_geometry(landmarks: np.ndarray) -> np.ndarray:
    """(N, 136) landmark shapes: centred, eye line levelled, scaled by the inter-ocular distance."""
    lm = np.asarray(landmarks, dtype=np.float64)
    centre = lm.mean(axis=1, keepdims=True)
    eyes = lm[:, 42:48].mean(axis=1) - lm[:, 36:42].mean(axis=1)
    ang = np.arctan2(eyes[:, 1], eyes[:, 0])
    c, s = np.cos(-ang), np.sin(-ang)
    rot = np.stack([np.stack([c, -s], -1), np.stack([s, c], -1)], -2)  # (N, 2, 2)
    out = np.einsum("nij,nkj->nki", rot, lm - centre)
    iod = np.maximum(inter_ocular_distance(lm), 1e-6)
    return (out / iod[:, None, None]).reshape(len(lm), -1)


def cv_probe(X: np.ndarray, y: np.ndarray, people: np.ndarray, *, folds: int = 5, seed: int = 0,
             pca: int | None = 100, C: float = 1.0, split_rule: str = "") -> Score:
    """Subject-disjoint k-fold probe (optional PCA, standardised logistic regression), pooled + bootstrap.

    Runs scikit-learn on one BLAS thread (threadpoolctl): next to torch's OpenMP pool, more threads are
    several times slower on small machines.
    """
    from sklearn.decomposition import PCA
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler
    from threadpoolctl import threadpool_limits

    X = np.asarray(X, dtype=np.float64)
    y = np.asarray(y)
    fold = person_folds(people, folds, seed)
    pred = np.empty(len(y), dtype=y.dtype)
    with threadpool_limits(limits=1):
        for f in range(int(fold.max()) + 1):
            tr, te = fold != f, fold == f
            Xtr, Xte = X[tr], X[te]
            if pca:
                k = int(min(pca, tr.sum() - 1, X.shape[1]))
                p = PCA(n_components=k, random_state=seed).fit(Xtr)
                Xtr, Xte = p.transform(Xtr), p.transform(Xte)
            sc = StandardScaler().fit(Xtr)
            if np.unique(y[tr]).size < 2:
                pred[te] = y[tr][0]
                continue
            model = LogisticRegression(C=C, max_iter=2000, random_state=seed)
            model.fit(sc.transform(Xtr), y[tr])
            pred[te] = model.predict(sc.transform(Xte))
    _, counts = np.unique(y, return_counts=True)
    rule = split_rule or f"{int(fold.max()) + 1}-fold person-wise CV"
    return person_bootstrap(pred == y, people, seed=seed, chance=float(counts.max() / len(y)), split_rule=rule)


def compute_pixel_stats(images: np.ndarray, identity: Any, expression: Any, *, landmarks: np.ndarray | None = None,
                        folds: int = 5, seed: int = 0, source: str = "faces") -> PixelStats:
    """Statistics of uint8 ``images`` (N, S, S[, 3]) with their identity and expression labels."""
    ids = np.asarray(identity).astype(str)
    ex = np.asarray(expression).astype(str)
    if len(ids) != len(images) or len(ex) != len(images):
        raise WorkbenchError("one identity and one expression label per image are needed")
    if np.unique(ids).size < 2:
        raise WorkbenchError("pixel statistics need at least 2 people")
    X = _grey(images)
    id_share, ex_share, ex_eta2 = variance_shares(X, ids, ex)
    probe = cv_probe(X / 255.0, ex, ids, folds=folds, seed=seed)
    lm_probe = None
    if landmarks is not None:
        lm = np.asarray(landmarks, dtype=np.float64)
        ok = np.isfinite(lm).all(axis=(1, 2))
        if ok.sum() >= 10 and np.unique(ids[ok]).size >= 2:
            lm_probe = cv_probe(normalised_geometry(lm[ok]), ex[ok], ids[ok], folds=folds, seed=seed, pca=None)
    change: dict[str, float] = {}
    if "neutral" in set(ex):
        neutral = {p: X[(ids == p) & (ex == "neutral")].mean(axis=0) for p in np.unique(ids[ex == "neutral"])}
        for e in sorted(set(ex) - {"neutral"}):
            rows = [i for i in np.flatnonzero(ex == e) if ids[i] in neutral]
            if rows:
                change[e] = float(np.mean([np.abs(X[i] - neutral[ids[i]]).mean() for i in rows]))
    _, counts = np.unique(ex, return_counts=True)
    side = int(round(np.sqrt(X.shape[1])))
    return PixelStats(source=source, n_images=len(X), n_people=int(np.unique(ids).size),
                      n_classes=int(counts.size), size=side, identity_share=id_share, expression_share=ex_share, expression_eta2=ex_eta2,
                      pixel_probe=probe, chance=float(counts.max() / counts.sum()), folds=folds,
                      landmark_probe=lm_probe, mean_expression_change=change)


def manifest_pixel_stats(manifest: Any, *, size: int = 48, folds: int = 5, seed: int = 0,
                         max_images: int | None = 4000) -> PixelStats:
    """Decode a manifest's labelled images in memory at ``size`` px and compute :func:`compute_pixel_stats`.

    ``max_images`` keeps whole people (seeded) until the cap, so a large set stays a minute's work.
    """
    from workbench.data.images import ImageReadError, read_image_resized
    from workbench.data.manifest import Manifest

    m = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    frame = m.frame
    for col in ("identity", "expression"):
        if col not in frame.columns or frame[col].isna().all():
            raise MissingMetadataError(f"pixel statistics need an '{col}' column in {m.path}")
    frame = frame[frame["identity"].notna() & frame["expression"].notna()].reset_index(drop=True)
    if max_images and len(frame) > max_images:
        people = np.random.default_rng(seed).permutation(frame["identity"].astype(str).unique())
        counts = frame["identity"].astype(str).value_counts()
        keep = people[np.cumsum(counts[people].to_numpy()) <= max_images]
        frame = frame[frame["identity"].astype(str).isin(keep)].reset_index(drop=True)
    images, landmarks, rows = [], [], []
    has_lm = "landmarks" in frame.columns and frame["landmarks"].notna().any()
    for i, row in frame.iterrows():
        try:
            img, scale, offset = read_image_resized(m.root / str(row["path"]), size)
        except (ImageReadError, OSError):
            continue
        images.append(img)
        rows.append(i)
        if has_lm:
            lm = parse_landmarks(row["landmarks"])
            landmarks.append(lm * scale + offset if lm is not None and lm.shape == (68, 2)
                             else np.full((68, 2), np.nan))
    if not images:
        raise WorkbenchError(f"{m.path}: no readable labelled image")
    sub = frame.iloc[rows]
    return compute_pixel_stats(np.stack(images), sub["identity"].to_numpy(), sub["expression"].to_numpy(),
                               landmarks=np.stack(landmarks) if has_lm else None, folds=folds, seed=seed,
                               source=str(m.path))


__all__ = ["REFERENCE_SETS", "PixelStats", "compute_pixel_stats", "cv_probe", "manifest_pixel_stats",
           "normalised_geometry", "variance_shares"]
