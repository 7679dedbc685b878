"""AffectNet: ~290k manually annotated in-the-wild faces, 8 expressions + valence/arousal.

Two distributed layouts are understood:

- ``npy``: ``train_set/images/<i>.jpg`` + ``train_set/annotations/<i>_exp.npy, <i>_val.npy,
  <i>_aro.npy`` (+ ``<i>_lnd.npy`` 68 landmarks), same under ``val_set/``;
- ``csv``: ``training.csv`` / ``validation.csv`` (columns ``subDirectory_filePath, expression,
  valence, arousal`` and ``facial_landmarks``) with images under ``Manually_Annotated_Images/``.

Labels 0..7 = neutral, happy, sad, surprise, fear, disgust, anger, contempt; 8 none, 9 uncertain
and 10 no-face are dropped (counted). The official validation set becomes the **test** split (the
test set is not public). Valence/arousal outside [-1, 1] (``-2`` = not annotated) become missing.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import param
from workbench.data.builders.base import BuildContext, Builder, number_or_none
from workbench.errors import ManifestError

LABELS = {0: "neutral", 1: "happiness", 2: "sadness", 3: "surprise", 4: "fear", 5: "disgust", 6: "anger",
          7: "contempt"}
DROPPED = {8: "none", 9: "uncertain", 10: "no-face"}
LAYOUT = ("ROOT/{train_set,val_set}/{images/<i>.jpg, annotations/<i>_exp.npy,_val.npy,_aro.npy} or "
          "ROOT/**/{training,validation}.csv + ROOT/Manually_Annotated_Images/")


@dataclass
class AffectNetOptions:
    classes: int = param(8, "8 classes (with contempt, as SSL-FER) or 7 (contempt rows dropped).", choices=(7, 8))
    layout: str = param("auto", "'npy', 'csv' or 'auto' (whichever is found).", choices=("auto", "npy", "csv"))
    landmarks: bool = param(True, "Copy the 68 provided landmarks (npy *_lnd.npy or csv facial_landmarks).")
    images_dir: str = param("", "csv layout: folder the subDirectory_filePath values are relative to "
                            "(default: ROOT/Manually_Annotated_Images if present, else ROOT).")
    val_fraction: float = param(0.0, "Carve this fraction of the training rows (seeded, by row: AffectNet has "
                                "no identities) into a 'val' split for model selection; 0 = none.", min=0.0, max=0.5)
    seed: int = param(0, "Seed of --val-fraction.")


def _label(ctx: BuildContext, code: int | None, opts: AffectNetOptions, where: str) -> str | None:
    if code is None:
        ctx.problem(where, "expression label is not an integer")
        return None
    if code in DROPPED:
        ctx.count(f"dropped: {DROPPED[code]} (label {code})")
        return None
    if code not in LABELS:
        ctx.problem(where, f"unknown expression label {code}")
        return None
    if opts.classes == 7 and code == 7:
        ctx.count("dropped: contempt (7-class)")
        return None
    return LABELS[code]


def _va(ctx: BuildContext, value: Any, name: str) -> float | None:
    x = number_or_none(value)
    if x is None or not -1.0 <= x <= 1.0:
        ctx.count(f"{name} missing or outside [-1, 1] (left empty)")
        return None
    return x


def _npy_scalar(path: Path) -> Any:
    arr = np.load(path, allow_pickle=False)
    return arr.reshape(-1)[0].item() if arr.size else None


def _int(value: Any) -> int | None:
    try:
        x = float(str(value).strip())
    except (TypeError, ValueError):
        return None
    return int(x) if x.is_integer() else None


def _build_npy(ctx: BuildContext, opts: AffectNetOptions, sets: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    rows = []
    for set_dir, split in sets:
        ann = set_dir / "annotations"
        imgs = set_dir / "images"
        for exp_file in sorted(ann.glob("*_exp.npy")):
            i = exp_file.name[: -len("_exp.npy")]
            img = imgs / f"{i}.jpg"
            if not img.is_file():
                alt = [q for q in imgs.glob(f"{i}.*")]
                if not alt:
                    ctx.problem(exp_file, f"no image {i}.* in {ctx.show(imgs)}")
                    continue
                img = alt[0]
            try:
                code = _int(_npy_scalar(exp_file))
                val = _npy_scalar(ann / f"{i}_val.npy") if (ann / f"{i}_val.npy").exists() else None
                aro = _npy_scalar(ann / f"{i}_aro.npy") if (ann / f"{i}_aro.npy").exists() else None
            except (OSError, ValueError) as exc:
                ctx.problem(exp_file, f"unreadable annotation ({type(exc).__name__})")
                continue
            expr = _label(ctx, code, opts, ctx.show(exp_file))
            if expr is None:
                continue
            row: dict[str, Any] = {"path": img, "split": split, "expression": expr,
                                   "valence": _va(ctx, val, "valence"), "arousal": _va(ctx, aro, "arousal")}
            lnd = ann / f"{i}_lnd.npy"
            if opts.landmarks and lnd.exists():
                try:
                    pts = np.load(lnd, allow_pickle=False).astype(np.float64).reshape(-1)
                    if pts.size == 136 and np.all(np.isfinite(pts)):
                        row["landmarks"] = pts.reshape(68, 2)
                    else:
                        ctx.count("landmarks malformed (left empty)")
                except (OSError, ValueError):
                    ctx.count("landmarks unreadable (left empty)")
            rows.append(row)
    return rows


def _build_csv(ctx: BuildContext, opts: AffectNetOptions, tables: list[tuple[Path, str]]) -> list[dict[str, Any]]:
    if opts.images_dir:
        img_root = Path(opts.images_dir)
        img_root = img_root if img_root.is_absolute() else ctx.root / img_root
    else:
        cands = [ctx.root / "Manually_Annotated_Images", ctx.root / "Manually_Annotated" / "Manually_Annotated_Images"]
        img_root = next((c for c in cands if c.is_dir()), ctx.root)
    rows = []
    for table, split in tables:
        with open(table, encoding="utf-8", errors="replace", newline="") as fh:
            reader = csv.DictReader(fh)
            fields = [f.strip() for f in (reader.fieldnames or [])]
            if "subDirectory_filePath" not in fields or "expression" not in fields:
                ctx.problem(table, "missing columns subDirectory_filePath/expression")
                continue
            for n, rec in enumerate(reader, start=2):
                rec = {(k or "").strip(): v for k, v in rec.items()}
                where = f"{ctx.show(table)}:{n}"
                rel = (rec.get("subDirectory_filePath") or "").strip()
                if not rel:
                    ctx.problem(where, "empty subDirectory_filePath")
                    continue
                expr = _label(ctx, _int(rec.get("expression")), opts, where)
                if expr is None:
                    continue
                row: dict[str, Any] = {"path": img_root / rel, "split": split, "expression": expr,
                                       "valence": _va(ctx, rec.get("valence"), "valence"),
                                       "arousal": _va(ctx, rec.get("arousal"), "arousal")}
                if opts.landmarks and rec.get("facial_landmarks"):
                    try:
                        pts = np.array([float(t) for t in rec["facial_landmarks"].replace(";", " ").split()])
                    except ValueError:
                        pts = np.zeros(0)
                    if pts.size == 136 and np.all(np.isfinite(pts)):
                        row["landmarks"] = pts.reshape(68, 2)
                    else:
                        ctx.count("landmarks malformed (left empty)")
                rows.append(row)
    return rows


def build(ctx: BuildContext, opts: AffectNetOptions) -> list[dict[str, Any]]:
    sets = [(ctx.root / d, s) for d, s in (("train_set", "train"), ("val_set", "test"))
            if (ctx.root / d / "annotations").is_dir()]
    tables = [(t, s) for t, s in ((ctx.find("training.csv"), "train"), (ctx.find("validation.csv"), "test"))
              if t is not None]
    layout = opts.layout
    if layout == "auto":
        layout = "npy" if sets else "csv" if tables else ""
    if layout == "npy" and not sets:
        raise ManifestError(f"affectnet: no train_set/annotations or val_set/annotations under {ctx.root}")
    if layout == "csv" and not tables:
        raise ManifestError(f"affectnet: no training.csv / validation.csv under {ctx.root}")
    if not layout:
        raise ManifestError(f"affectnet: neither layout found under {ctx.root}; expected {LAYOUT}")
    rows = _build_npy(ctx, opts, sets) if layout == "npy" else _build_csv(ctx, opts, tables)
    if opts.val_fraction > 0:
        rng = np.random.default_rng(opts.seed)
        train = [r for r in rows if r["split"] == "train"]
        for r, u in zip(train, rng.random(len(train))):
            if u < opts.val_fraction:
                r["split"] = "val"
    return rows


BUILDER = Builder(
    name="affectnet", build=build, options=AffectNetOptions,
    description="AffectNet: in-the-wild, 8 (or 7) expressions + valence/arousal; official val -> test",
    citation="Mollahosseini, Hasani, Mahoor. AffectNet: A Database for Facial Expression, Valence, and "
             "Arousal Computing in the Wild. IEEE Trans. Affective Computing 10(1), 2019.",
    layout=LAYOUT,
)
