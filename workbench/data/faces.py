"""Face detection, 68 landmarks and similarity alignment with dlib (``workbench faces``).

Pipeline per image: :func:`~workbench.data.images.read_image` -> dlib HOG frontal detector
(``get_frontal_face_detector``; the CNN ``mmod_human_face_detector`` as a fallback when HOG finds
nothing, slow on CPU) -> the largest face -> 68 landmarks (``shape_predictor_68_face_landmarks``) ->
a similarity transform (rotation, uniform scale, translation; Umeyama least squares) that maps the
chosen landmark points onto :data:`workbench.data.geometry.TEMPLATE_68` placed in a ``size`` x ``size`` crop -> crop.

:func:`align_manifest` does this for a whole manifest: crops are written under ``OUT/crops/``,
``OUT/manifest.csv`` keeps every original column (paths to the crops, ``landmarks`` in crop
coordinates), ``OUT/failures.csv`` lists every image that failed (unreadable, no face) or needs a
look (several faces: the largest is kept), and ``OUT/progress.jsonl`` makes the run resumable.

The dlib models come from the ``face-recognition-models`` package (``pip install
'workbench[faces]'``); dlib is imported only when a detector is created.
"""

from __future__ import annotations

import csv
import functools
import importlib.util
import json
import os
import posixpath
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workbench.config import param
from workbench.data.geometry import apply_transform, canonical_landmarks, similarity_transform
from workbench.data.images import ImageReadError, blank_reason, read_image
from workbench.data.landmarks import ALIGN_POINTS, EYES, NOSE, PARTS, format_landmarks, parse_landmarks
from workbench.errors import ConfigError, ManifestError, OptionalDependencyError, require

#: landmark subsets the similarity transform can be fitted on
POINT_SETS: dict[str, tuple[int, ...]] = {
    "stable": EYES + NOSE,  # eyes + nose: do not move with the expression (default)
    "align": ALIGN_POINTS,  # brows, eyes, nose, mouth (Matthew Earl's face swap set)
    "all": tuple(range(68)),
}
MODEL_FILES = {"shape_predictor": "shape_predictor_68_face_landmarks.dat",
               "cnn_detector": "mmod_human_face_detector.dat"}


@dataclass
class FacesConfig:
    """Options of :func:`align_manifest` / ``workbench faces``."""

    size: int = param(112, "Side of the aligned square crops in pixels (112 is common for FER; the cache "
                      "resizes again for training).", min=16, max=1024)
    upsample: int = param(1, "Times the HOG detector upsamples the image; 1 finds faces down to ~40 px, "
                          "0 is ~3x faster on large faces, 2 for tiny faces.", min=0, max=3)
    points: str = param("stable", "Landmarks the alignment is fitted on: 'stable' (eyes + nose, unaffected "
                        "by the expression), 'align' (brows, eyes, nose, mouth) or 'all' 68.",
                        choices=tuple(POINT_SETS))
    face_fraction: float = param(0.7, "Width of the landmark box as a fraction of the crop (smaller = more "
                                 "context around the face).", min=0.3, max=1.0)
    cnn_fallback: bool = param(True, "Try dlib's CNN detector when HOG finds no face (slow on CPU: ~1 s/image).")
    whole_image_fallback: bool = param(False, "When no face is found, fit the landmarks in the whole image "
                                       "(for datasets of tight face crops, e.g. CK+48, FER2013).")
    use_manifest_landmarks: bool = param(False, "Align with the manifest's own landmarks where a row has them "
                                         "(e.g. AffectNet, CK+) instead of detecting; much faster.")
    image_format: str = param("png", "Crop file format: png (lossless) or jpg (smaller).", choices=("png", "jpg"))
    workers: int = param(1, "Worker processes (each loads the dlib models, ~100 MB).", min=1, max=64)
    batch_size: int = param(64, "Images per batch between progress saves.", min=1)
    retry_failed: bool = param(False, "On resume, retry images that failed before (default: keep the failure).")


@dataclass
class Detection:
    """A face found in an image: 68 landmarks (image pixels), its box and how it was found."""

    landmarks: np.ndarray
    box: tuple[int, int, int, int]  # left, top, right, bottom
    n_faces: int
    detector: str  # "hog", "cnn", "whole-image" or "manifest" (landmarks given)


@dataclass
class AlignReport:
    """Outcome of :func:`align_manifest`."""

    out_dir: Path
    manifest: Path | None
    n_rows: int
    n_aligned: int
    n_failed: int
    n_warnings: int
    n_resumed: int
    reasons: Counter = field(default_factory=Counter)
    summary_line: str = ""

    @property
    def detection_rate(self) -> float:
        return self.n_aligned / self.n_rows if self.n_rows else 0.0


# ---------------------------------------------------------------------------------------------
# geometry
# ---------------------------------------------------------------------------------------------


def warp_image(image: np.ndarray, m: np.ndarray, size: int, fill: tuple[int, int, int] = (0, 0, 0)) -> np.ndarray:
    """Warp uint8 (H, W, 3) with the (2, 3) matrix ``m`` (source pixel -> crop pixel, pixel centres
    at integers) into a ``size`` x ``size`` crop (bicubic, ``fill`` outside the image)."""
    from PIL import Image

    full = np.vstack([m, [0.0, 0.0, 1.0]])
    inv = np.linalg.inv(full)
    # Pillow samples at pixel centres (x + 0.5): conjugate the transform by the half-pixel shift
    a, b, c = inv[0]
    d, e, f = inv[1]
    c2 = c + 0.5 - 0.5 * (a + b)
    f2 = f + 0.5 - 0.5 * (d + e)
    out = Image.fromarray(image).transform((size, size), Image.Transform.AFFINE, (a, b, c2, d, e, f2),
                                           resample=Image.Resampling.BICUBIC, fillcolor=fill)
    return np.asarray(out)


def align_face(image: np.ndarray, landmarks: np.ndarray, size: int = 112, *, points: str = "stable",
               face_fraction: float = 0.7) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity-align one face: returns ``(crop uint8 (size, size, 3), landmarks in the crop, M)``."""
    if points not in POINT_SETS:
        raise ConfigError(f"points must be one of {', '.join(POINT_SETS)}, got {points!r}")
    idx = list(POINT_SETS[points])
    target = canonical_landmarks(size, face_fraction)
    m = similarity_transform(np.asarray(landmarks)[idx], target[idx])
    crop = warp_image(image, m, size)
    return crop, apply_transform(m, landmarks).astype(np.float32), m


# ---------------------------------------------------------------------------------------------
# dlib
# ---------------------------------------------------------------------------------------------


def model_paths() -> dict[str, Path]:
    """Paths of the dlib model files shipped by ``face-recognition-models`` (not imported: its
    ``__init__`` needs ``pkg_resources``)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise OptionalDependencyError("'face_recognition_models' is not installed (needed for face landmarks): "
                                      "run pip install 'workbench[faces]'")
    base = Path(list(spec.submodule_search_locations)[0]) / "models"
    out = {k: base / v for k, v in MODEL_FILES.items()}
    for p in out.values():
        if not p.is_file():
            raise OptionalDependencyError(f"dlib model file missing: {p}; reinstall face-recognition-models")
    return out


@functools.lru_cache(maxsize=2)
def _dlib_models(predictor_path: str) -> tuple[Any, Any]:
    """HOG detector + shape predictor, loaded once per process (a few seconds)."""
    dlib = require("dlib", extra="faces", purpose="face detection and landmarks")
    return dlib.get_frontal_face_detector(), dlib.shape_predictor(predictor_path)


class FaceDetector:
    """dlib HOG detector (+ CNN fallback) and 68-point shape predictor; call :meth:`detect`."""

    def __init__(self, *, upsample: int = 1, cnn_fallback: bool = True, whole_image_fallback: bool = False,
                 cnn_max_side: int = 800) -> None:
        self.dlib = require("dlib", extra="faces", purpose="face detection and landmarks")
        paths = model_paths()
        self.upsample = int(upsample)
        self.cnn_fallback = bool(cnn_fallback)
        self.whole_image_fallback = bool(whole_image_fallback)
        self.cnn_max_side = int(cnn_max_side)
        self._hog, self._predictor = _dlib_models(str(paths["shape_predictor"]))
        self._cnn_path = paths["cnn_detector"]
        self._cnn = None

    def _boxes(self, image: np.ndarray) -> tuple[list[tuple[int, int, int, int]], str]:
        h, w = image.shape[:2]
        ups = [self.upsample] + ([self.upsample + 1] if max(h, w) < 200 and self.upsample < 3 else [])
        for up in ups:
            rects = self._hog(image, up)
            if len(rects):
                return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects], "hog"
        if self.cnn_fallback:
            if self._cnn is None:
                self._cnn = self.dlib.cnn_face_detection_model_v1(str(self._cnn_path))
            scale = min(1.0, self.cnn_max_side / max(h, w))
            small = image
            if scale < 1.0:
                from PIL import Image

                small = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                                 Image.Resampling.BILINEAR))
            up = 1 if max(small.shape[:2]) < 400 else 0
            dets = self._cnn(small, up)
            if len(dets):
                return [(round(d.rect.left() / scale), round(d.rect.top() / scale),
                         round(d.rect.right() / scale), round(d.rect.bottom() / scale)) for d in dets], "cnn"
        if self.whole_image_fallback:
            return [(0, 0, w - 1, h - 1)], "whole-image"
        return [], ""

    def detect(self, image: np.ndarray) -> Detection | None:
        """The largest face in a uint8 RGB image (its landmarks in image pixels), or None."""
        boxes, how = self._boxes(np.ascontiguousarray(image))
        if not boxes:
            return None
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        rect = self.dlib.rectangle(int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float32)
        return Detection(pts, box, len(boxes), how)


# ---------------------------------------------------------------------------------------------
# whole manifests
# ---------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(cfg: dict[str, Any]) -> None:
    _WORKER["cfg"] = cfg
    _WORKER["det"] = FaceDetector(upsample=cfg["upsample"], cnn_fallback=cfg["cnn_fallback"],
                                  whole_image_fallback=cfg["whole_image_fallback"])


def _process(task: tuple[str, str, str, str]) -> dict[str, Any]:
    """One image: read, detect (or use the given landmarks), align, write the crop. Never raises."""
    key, src, dest, given = task
    cfg = _WORKER["cfg"]
    rec: dict[str, Any] = {"key": key, "status": "failed", "reason": "", "warning": "", "landmarks": "",
                           "detector": ""}
    try:
        image = read_image(src)
    except ImageReadError as exc:
        rec["reason"] = f"unreadable: {exc.reason}"
        return rec
    blank = blank_reason(image)
    if blank:
        rec["reason"] = blank
        return rec
    try:
        pts = parse_landmarks(given) if given else None
        if pts is not None:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            det = Detection(pts, (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])), 1, "manifest")
        else:
            det = _WORKER["det"].detect(image)
    except Exception as exc:  # noqa: BLE001 - dlib raises RuntimeError on odd inputs; record, never crash
        rec["reason"] = f"detector error: {type(exc).__name__}: {str(exc)[:80]}"
        return rec
    if det is None:
        rec["reason"] = "no face detected"
        return rec
    try:
        crop, lm, _ = align_face(image, det.landmarks, cfg["size"], points=cfg["points"],
                                 face_fraction=cfg["face_fraction"])
    except ValueError as exc:
        rec["reason"] = f"alignment failed: {exc}"
        return rec
    from PIL import Image

    dest_p = Path(dest)
    dest_p.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest_p.with_name(f".{dest_p.name}.{os.getpid()}.tmp")
    try:
        Image.fromarray(crop).save(tmp, format="PNG" if cfg["image_format"] == "png" else "JPEG", quality=95)
        os.replace(tmp, dest_p)
    except OSError as exc:
        rec["reason"] = f"cannot write crop: {exc.strerror or exc}"
        return rec
    rec.update(status="ok", landmarks=format_landmarks(lm), detector=det.detector)
    notes = []
    if det.n_faces > 1:
        notes.append(f"{det.n_faces} faces detected, kept the largest")
    if det.detector == "whole-image":
        notes.append("no face detected, landmarks fitted in the whole image")
    rec["warning"] = "; ".join(notes)
    return rec


def crop_names(paths: Sequence[str], image_format: str = "png") -> list[str]:
    """Crop file names (relative to the output folder) mirroring the source paths without their
    common prefix: ``crops/<sub/folders>/<stem>.png``; unique and never leaving the folder."""
    norm = [posixpath.normpath(str(p).replace("\\", "/")) for p in paths]
    dirs = [posixpath.dirname(p) for p in norm]
    try:
        common = posixpath.commonpath(dirs) if dirs and all(d for d in dirs) else ""
    except ValueError:
        common = ""
    out, seen = [], set()
    ext = "." + image_format
    for p in norm:
        rel = posixpath.relpath(p, common) if common else p
        parts = [("_up" if part == ".." else part) for part in rel.split("/") if part not in ("", ".")]
        stem = posixpath.splitext("/".join(parts))[0] or "image"
        name = f"crops/{stem}{ext}"
        k = 1
        while name in seen:
            name = f"crops/{stem}__{k}{ext}"
            k += 1
        seen.add(name)
        out.append(name)
    return out


def _load_progress(path: Path) -> dict[str, dict[str, Any]]:
    done: dict[str, dict[str, Any]] = {}
    if not path.is_file():
        return done
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut by an interruption
            if isinstance(rec, dict) and "key" in rec:
                done[str(rec["key"])] = rec
    return done


def align_manifest(manifest: Any, out_dir: str | os.PathLike[str], config: FacesConfig | None = None, *,
                   progress: bool = True, restart: bool = False) -> AlignReport:
    """Detect, landmark and align every image of ``manifest`` (a Manifest or a path) into ``out_dir``.

    Resumable: crops already written and recorded in ``OUT/progress.jsonl`` are not redone (change
    of size/points/face_fraction needs a new ``out_dir`` or ``restart=True``). Every failure is
    listed in ``OUT/failures.csv`` with its reason; nothing is dropped silently. Returns an
    :class:`AlignReport`; raises ManifestError only when no image at all could be aligned.
    """
    from tqdm.auto import tqdm

    from workbench.data.manifest import Manifest

    cfg = config or FacesConfig()
    m = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    if m.path is not None and os.path.abspath(m.path.parent) == os.path.abspath(out):
        raise ConfigError(f"--out {out} is the manifest's own folder; choose a new folder for the crops")
    settings = {"size": cfg.size, "points": cfg.points, "face_fraction": cfg.face_fraction,
                "image_format": cfg.image_format}
    meta_p, prog_p = out / "faces_settings.json", out / "progress.jsonl"
    if restart:
        for p in (meta_p, prog_p):
            if p.exists():
                p.unlink()
    if meta_p.is_file():
        try:
            old = json.loads(meta_p.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            old = None
        if old != settings:
            raise ConfigError(f"{out} holds crops made with other settings ({old}); use a new --out or --restart")
    meta_p.write_text(json.dumps(settings), encoding="utf-8")

    rels = [str(p) for p in m.frame["path"].tolist()]
    crops = crop_names(rels, cfg.image_format)
    srcs = [str(p) for p in m.abs_paths()]
    done = _load_progress(prog_p)
    given = [""] * len(rels)
    if cfg.use_manifest_landmarks and m.has("landmarks"):
        given = [v if isinstance(v, str) else "" for v in m.frame["landmarks"].tolist()]
    todo, resumed = [], 0
    for rel, src, crop, lm in zip(rels, srcs, crops, given):
        rec = done.get(rel)
        if rec is not None and (
                (rec.get("status") == "ok" and (out / crop).is_file())
                or (rec.get("status") == "failed" and not cfg.retry_failed)):
            resumed += 1
            continue
        todo.append((rel, src, str(out / crop), lm))

    wcfg = asdict(cfg)
    bar = tqdm(total=len(todo), desc=f"faces {m.path.name if m.path else ''}".strip(), unit="img",
               disable=not progress or not todo)
    batches = [todo[i:i + cfg.batch_size] for i in range(0, len(todo), cfg.batch_size)]
    with open(prog_p, "a", encoding="utf-8") as log:
        if cfg.workers > 1 and len(todo) > cfg.batch_size:
            from concurrent.futures import ProcessPoolExecutor

            with ProcessPoolExecutor(cfg.workers, initializer=_worker_init, initargs=(wcfg,)) as ex:
                for batch in batches:
                    for rec in ex.map(_process, batch, chunksize=max(1, len(batch) // (4 * cfg.workers))):
                        _log(log, rec, done)
                    log.flush()
                    bar.update(len(batch))
        elif todo:
            _worker_init(wcfg)
            for batch in batches:
                for task in batch:
                    _log(log, _process(task), done)
                log.flush()
                bar.update(len(batch))
    bar.close()
    return _finish(m, out, rels, crops, done, resumed)


def _log(log: Any, rec: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
    log.write(json.dumps(rec) + "\n")
    done[rec["key"]] = rec


def _finish(m: Any, out: Path, rels: list[str], crops: list[str], done: dict[str, dict[str, Any]],
            resumed: int) -> AlignReport:
    from workbench.data.manifest import Manifest

    keep: list[int] = []
    landmarks: list[str] = []
    failures: list[tuple[str, str, str]] = []
    reasons: Counter = Counter()
    n_warn = 0
    for i, rel in enumerate(rels):
        rec = done.get(rel, {"status": "failed", "reason": "not processed (interrupted?)"})
        if rec.get("status") == "ok" and (out / crops[i]).is_file():
            keep.append(i)
            landmarks.append(rec.get("landmarks", ""))
            if rec.get("warning"):
                n_warn += 1
                failures.append((rel, "kept", rec["warning"]))
                if "faces detected" in rec["warning"]:
                    reasons["several faces (largest kept)"] += 1
                if "whole image" in rec["warning"]:
                    reasons["whole-image fallback"] += 1
        else:
            why = rec.get("reason") or "crop file missing"
            failures.append((rel, "failed", why))
            reasons[why.split(":")[0]] += 1
    _write_failures(out / "failures.csv", failures)
    report = AlignReport(out_dir=out, manifest=None, n_rows=len(rels), n_aligned=len(keep),
                         n_failed=len(rels) - len(keep), n_warnings=n_warn, n_resumed=resumed, reasons=reasons)
    if not keep:
        raise ManifestError(f"faces: none of the {len(rels)} images could be aligned (see {out / 'failures.csv'}; "
                            f"most common: {reasons.most_common(1)[0][0] if reasons else 'unknown'})")
    frame = m.frame.iloc[keep].copy().reset_index(drop=True)
    frame["path"] = [crops[i] for i in keep]
    frame["landmarks"] = landmarks
    out_manifest = Manifest.from_frame(frame, out)
    report.manifest = out_manifest.save(out / "manifest.csv")
    detail = ", ".join(f"{k} {v}" for k, v in reasons.most_common())
    see = f"; see {out / 'failures.csv'}" if failures else ""
    report.summary_line = (f"faces: {report.n_aligned} of {report.n_rows} aligned ({report.detection_rate:.1%})"
                           f"{f', {report.n_failed} failed' if report.n_failed else ''}"
                           f"{f', {n_warn} warnings' if n_warn else ''}"
                           f"{f' ({detail})' if detail else ''}"
                           f"{f', {resumed} resumed' if resumed else ''} -> {report.manifest}"
                           f"{see}")
    return report


def _write_failures(path: Path, failures: Iterable[tuple[str, str, str]]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["path", "status", "reason"])
        w.writerows(failures)
    os.replace(tmp, path)


# ---------------------------------------------------------------------------------------------
# visual check
# ---------------------------------------------------------------------------------------------

_PART_COLOURS = {"jaw": (255, 220, 0), "brows": (255, 120, 0), "nose": (0, 200, 255), "eyes": (0, 255, 80),
                 "mouth": (255, 40, 160)}


def landmark_overlay_sheet(manifest: Any, out_png: str | os.PathLike[str], *, n: int = 36, cols: int = 6,
                           cell: int = 160, seed: int = 0) -> Path:
    """Contact sheet of ``n`` random images (seeded) with their landmarks drawn, coloured by part
    (jaw yellow, brows orange, nose cyan, eyes green, mouth pink), to check landmarks by eye."""
    from PIL import Image, ImageDraw

    from workbench.data.manifest import Manifest

    m = manifest if isinstance(manifest, Manifest) else Manifest.load(manifest)
    lms = m.landmarks()
    if lms is None:
        raise ManifestError(f"{m.path or m.root}: no landmarks column to draw; run `workbench faces` first")
    have = np.flatnonzero(np.isfinite(lms).all(axis=(1, 2)))
    if have.size == 0:
        raise ManifestError(f"{m.path or m.root}: every landmarks value is empty")
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(have, size=min(int(n), have.size), replace=False))
    cols = max(1, min(int(cols), pick.size))
    rows = (pick.size + cols - 1) // cols
    sheet = Image.new("RGB", (cols * cell, rows * cell), (20, 20, 20))
    paths = m.abs_paths()
    for k, i in enumerate(pick):
        try:
            img = read_image(paths[i])
        except ImageReadError:
            continue
        h, w = img.shape[:2]
        s = cell / max(h, w)
        tile = Image.fromarray(img).resize((max(1, round(w * s)), max(1, round(h * s))), Image.Resampling.BILINEAR)
        draw = ImageDraw.Draw(tile)
        r = max(1.0, cell / 110)
        for part in ("jaw", "brows", "nose", "eyes", "mouth"):
            for j in PARTS[part]:
                x, y = (lms[i, j] + 0.5) * s - 0.5
                draw.ellipse((x - r, y - r, x + r, y + r), fill=_PART_COLOURS[part])
        sheet.paste(tile, ((k % cols) * cell, (k // cols) * cell))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
