"""FERPlus: 10 crowd votes per FER2013 image over neutral, happiness, surprise, sadness, anger,
disgust, fear, contempt, unknown, NF (not a face).

Layouts: ``fer2013new.csv`` (columns ``Usage, Image name`` + the 10 vote counts, rows aligned with
``fer2013.csv``, whose pixels are written as PNGs named by ``Image name``), or the folders made by
the official script, ``FER2013Train/``, ``FER2013Valid/``, ``FER2013Test/``, each with PNGs and a
header-less ``label.csv`` (``name, box, 10 votes``).

Label (``--vote majority``, the official FERPlus "majority" mode): single votes are removed as
outliers, then the top emotion must hold more than half of the remaining votes. ``plurality``
takes the top emotion, dropping ties. Images whose winner is unknown/NF, that have no majority,
or that FERPlus removed (empty image name) are dropped and counted.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import param
from workbench.data.builders.base import BuildContext, Builder
from workbench.data.builders.fer2013 import images_dir, pixels_to_png, resolve
from workbench.errors import ManifestError

VOTE_COLUMNS = ("neutral", "happiness", "surprise", "sadness", "anger", "disgust", "fear", "contempt",
                "unknown", "NF")
USAGE = {"training": "train", "publictest": "val", "privatetest": "test"}
FOLDERS = {"FER2013Train": "train", "FER2013Valid": "val", "FER2013Test": "test"}
LAYOUT = ("ROOT/fer2013new.csv + ROOT/fer2013.csv, or ROOT/FER2013{Train,Valid,Test}/{label.csv,*.png}")


@dataclass
class FerPlusOptions:
    vote: str = param("majority", "'majority' (official FERPlus: drop single votes, need > 50%) or "
                      "'plurality' (top emotion, ties dropped).", choices=("majority", "plurality"))
    ferplus_csv: str = param("fer2013new.csv", "FERPlus vote table (relative to root).")
    fer2013_csv: str = param("fer2013.csv", "FER2013 table with the pixels (relative to root).")
    images_dir: str = param("ferplus_images", "Folder (relative to the output manifest) the PNGs are written "
                            "to when building from the CSVs.")
    keep_votes: bool = param(False, "Also write the 10 vote counts as meta_votes_<name> columns.")


def decide(votes: np.ndarray, mode: str) -> tuple[int | None, str]:
    """Index of the winning emotion (0..7) or (None, reason) for a 10-vote vector."""
    v = votes.astype(np.float64).copy()
    if mode == "majority":
        v[v <= 1.0] = 0.0
        total = v.sum()
        if total <= 0:
            return None, "no votes after removing single votes"
        top = int(np.argmax(v))
        if v[top] <= 0.5 * total:
            return None, "no majority"
    else:
        if v.sum() <= 0:
            return None, "no votes"
        top = int(np.argmax(v))
        if np.sum(v == v[top]) > 1:
            return None, "tie"
    if top >= 8:
        return None, VOTE_COLUMNS[top]
    return top, ""


def _row(ctx: BuildContext, path: Path, split: str | None, votes: np.ndarray, opts: FerPlusOptions,
         name: str) -> dict[str, Any] | None:
    top, why = decide(votes, opts.vote)
    if top is None:
        ctx.count(f"dropped: {why}")
        return None
    row: dict[str, Any] = {"path": path, "expression": VOTE_COLUMNS[top], "meta_image": name}
    if split:
        row["split"] = split
    if opts.keep_votes:
        for c, n in zip(VOTE_COLUMNS, votes):
            row[f"meta_votes_{c.lower()}"] = int(n)
    return row


def _votes(cells: list[str]) -> np.ndarray | None:
    try:
        v = np.array([float(c) for c in cells], dtype=np.float64)
    except ValueError:
        return None
    return v if v.size == 10 and np.all(np.isfinite(v)) and np.all(v >= 0) else None


def _from_folders(ctx: BuildContext, opts: FerPlusOptions) -> list[dict[str, Any]]:
    rows = []
    for folder, split in FOLDERS.items():
        d = ctx.root / folder
        label = d / "label.csv"
        if not label.is_file():
            continue
        with open(label, encoding="utf-8", errors="replace", newline="") as fh:
            for n, rec in enumerate(csv.reader(fh), start=1):
                if not rec:
                    continue
                where = f"{ctx.show(label)}:{n}"
                votes = _votes(rec[-10:]) if len(rec) >= 11 else None
                if votes is None:
                    ctx.problem(where, "expected 'name, box, 10 vote counts'")
                    continue
                name = rec[0].strip()
                row = _row(ctx, d / name, split, votes, opts, name)
                if row:
                    rows.append(row)
    return rows


def _from_csv(ctx: BuildContext, opts: FerPlusOptions, votes_csv: Path) -> list[dict[str, Any]]:
    fer = resolve(ctx, opts.fer2013_csv)
    if fer is None:
        raise ManifestError(f"ferplus: {opts.fer2013_csv} (the pixels) not found under {ctx.root}; expected {LAYOUT}")
    out_dir = images_dir(ctx, opts.images_dir)
    rows = []
    with open(votes_csv, encoding="utf-8", errors="replace", newline="") as fv, \
            open(fer, encoding="utf-8", errors="replace", newline="") as fp:
        votes_reader = csv.DictReader(fv)
        pix_reader = csv.DictReader(fp)
        vf = {f.strip().lower(): f for f in (votes_reader.fieldnames or [])}
        pf = {f.strip().lower(): f for f in (pix_reader.fieldnames or [])}
        need = {c.lower() for c in VOTE_COLUMNS} | {"image name"}
        if not need <= set(vf):
            raise ManifestError(f"ferplus: {votes_csv.name} lacks columns {sorted(need - set(vf))}")
        if "pixels" not in pf:
            raise ManifestError(f"ferplus: {fer.name} has no 'pixels' column")
        for i, (rv, rp) in enumerate(zip(votes_reader, pix_reader)):
            where = f"{ctx.show(votes_csv)}:{i + 2}"
            name = (rv.get(vf["image name"]) or "").strip()
            if not name:
                ctx.count("dropped: removed by FERPlus (no image name)")
                continue
            votes = _votes([rv.get(vf[c.lower()]) or "" for c in VOTE_COLUMNS])
            if votes is None:
                ctx.problem(where, "vote counts are not 10 non-negative numbers")
                continue
            usage = (rv.get(vf.get("usage", ""), "") or rp.get(pf.get("usage", ""), "") or "").strip().lower()
            split = USAGE.get(usage)
            top, why = decide(votes, opts.vote)
            if top is None:
                ctx.count(f"dropped: {why}")
                continue
            dest = out_dir / (split or "unsplit") / name
            err = pixels_to_png(rp.get(pf["pixels"]) or "", dest)
            if err:
                ctx.problem(where, err)
                continue
            row = _row(ctx, dest, split, votes, opts, name)
            if row:
                row["meta_row"] = i
                rows.append(row)
    return rows


def build(ctx: BuildContext, opts: FerPlusOptions) -> list[dict[str, Any]]:
    votes_csv = resolve(ctx, opts.ferplus_csv)
    if votes_csv is not None:
        return _from_csv(ctx, opts, votes_csv)
    if any((ctx.root / f / "label.csv").is_file() for f in FOLDERS):
        return _from_folders(ctx, opts)
    raise ManifestError(f"ferplus: neither {opts.ferplus_csv} nor FER2013Train/label.csv found under "
                        f"{ctx.root}; expected {LAYOUT}")


BUILDER = Builder(
    name="ferplus", build=build, options=FerPlusOptions,
    description="FERPlus: FER2013 images relabelled by 10 annotators, 8 expressions (majority vote)",
    citation="Barsoum, Zhang, Canton Ferrer, Zhang. Training Deep Networks for Facial Expression Recognition "
             "with Crowd-Sourced Label Distribution. ICMI 2016.",
    layout=LAYOUT,
)
