"""CK+ (Extended Cohn-Kanade), original distribution: image sequences from neutral to peak,
``cohn-kanade-images/S005/001/S005_001_00000011.png``, with one emotion file for the labelled
sequences, ``Emotion/S005/001/S005_001_00000011_emotion.txt`` (a single code 0..7 = neutral,
anger, contempt, disgust, fear, happy, sadness, surprise) and optional 68-point landmarks,
``Landmarks/S005/001/S005_001_00000011_landmarks.txt``.

Rows: the last ``--last-n`` frames of each labelled sequence get its label; with ``--neutral-first``
the first frame is added as neutral; ``--all-frames`` also writes the other frames (and the frames
of unlabelled sequences) without an expression, for clip-based self-supervision. ``clip`` = the
sequence (``S005_001``), ``frame`` = the frame number, ``identity`` = the subject.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import param
from workbench.data.builders.base import BuildContext, Builder, SplitOptions, require_file

LABELS = {0: "neutral", 1: "anger", 2: "contempt", 3: "disgust", 4: "fear", 5: "happiness", 6: "sadness",
          7: "surprise"}
FRAME = re.compile(r"^(?P<subject>S\d+)_(?P<sequence>\d+)_(?P<frame>\d+)\.\w+$", re.IGNORECASE)
LAYOUT = ("ROOT/cohn-kanade-images/S005/001/S005_001_00000011.png + "
          "ROOT/Emotion/S005/001/S005_001_00000011_emotion.txt")


@dataclass
class CKPlusOptions(SplitOptions):
    last_n: int = param(3, "Frames from the end of a labelled sequence that get its label (peak frames).", min=1)
    neutral_first: bool = param(True, "Add the first frame of each labelled sequence as 'neutral'.")
    all_frames: bool = param(False, "Also write all other frames (no expression) for clip-based SSL.")
    landmarks: bool = param(True, "Copy the provided 68-point landmarks when the Landmarks/ folder exists.")


def _read_emotion(path: Path) -> int | None:
    try:
        tokens = path.read_text(encoding="utf-8", errors="replace").split()
        x = float(tokens[0]) if len(tokens) == 1 else None
    except (OSError, ValueError, IndexError):
        return None
    return int(x) if x is not None and x.is_integer() and int(x) in LABELS else None


def _read_landmarks(path: Path) -> np.ndarray | None:
    try:
        pts = np.array([float(t) for t in path.read_text(encoding="utf-8", errors="replace").split()])
    except (OSError, ValueError):
        return None
    return pts.reshape(68, 2) if pts.size == 136 and np.all(np.isfinite(pts)) else None


def build(ctx: BuildContext, opts: CKPlusOptions) -> list[dict[str, Any]]:
    images = require_file(ctx.find("cohn-kanade-images", max_depth=1), "folder cohn-kanade-images/", LAYOUT)
    emotion_dir = images.parent / "Emotion"
    landmark_dir = images.parent / "Landmarks"
    if not emotion_dir.is_dir():
        ctx.count("note: no Emotion/ folder: no sequence is labelled")
    rows = []
    seq_dirs = sorted(d for d in images.glob("*/*") if d.is_dir())
    for seq in seq_dirs:
        frames: list[tuple[int, Path, re.Match[str]]] = []
        for p in ctx.images(seq):
            m = FRAME.match(p.name)
            if not m:
                ctx.problem(p, "file name does not follow 'S005_001_00000011.png'")
                continue
            frames.append((int(m["frame"]), p, m))
        if not frames:
            continue
        frames.sort(key=lambda t: t[0])
        subject = frames[0][2]["subject"].upper()
        clip = f"{subject}_{frames[0][2]['sequence']}"
        rel = seq.relative_to(images)
        emo_files = sorted((emotion_dir / rel).glob("*_emotion.txt")) if emotion_dir.is_dir() else []
        label = None
        if emo_files:
            label = _read_emotion(emo_files[0])
            if label is None:
                ctx.problem(emo_files[0], "emotion file does not hold a single code 0-7")
        labels: dict[int, str] = {}
        if label is not None:
            ctx.count("labelled sequences")
            for k in range(1, min(opts.last_n, len(frames)) + 1):
                labels[len(frames) - k] = LABELS[label]
            if opts.neutral_first and len(frames) > opts.last_n:
                labels[0] = "neutral"
        else:
            ctx.count("unlabelled sequences" + ("" if opts.all_frames else " (skipped)"))
        for j, (num, p, _m) in enumerate(frames):
            if j not in labels and not opts.all_frames:
                continue
            row: dict[str, Any] = {"path": p, "identity": subject, "clip": clip, "frame": num, "view": "0"}
            if j in labels:
                row["expression"] = labels[j]
            if opts.landmarks and landmark_dir.is_dir():
                lm = landmark_dir / rel / f"{p.stem}_landmarks.txt"
                pts = _read_landmarks(lm) if lm.is_file() else None
                if pts is not None:
                    row["landmarks"] = pts
            rows.append(row)
    return rows


BUILDER = Builder(
    name="ckplus", build=build, options=CKPlusOptions,
    description="CK+ original: 593 posed sequences of 123 subjects, 327 labelled (7 expressions + neutral)",
    citation="Lucey et al. The Extended Cohn-Kanade Dataset (CK+). CVPR Workshops 2010; Kanade, Cohn, Tian. "
             "Comprehensive database for facial expression analysis. FG 2000.",
    layout=LAYOUT,
)
