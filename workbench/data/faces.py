"""Face detection, 68 landmarks and similarity alignment with dlib (``workbench faces``).

Pipeline per image: :func:`~workbench.data.images.read_image` -> dlib HOG frontal detector
(``get_frontal_face_detector``; the CNN ``mmod_human_face_detector`` as a fallback when HOG finds
nothing, slow on CPU) -> the largest face -> 68 landmarks (``shape_predictor_68_face_landmarks``) ->
a similarity transform (rotation, uniform scale, translation; Umeyama least squares) that maps the
chosen landmark points onto :data:`workbench.data.geometry.TEMPLATE_68` placed in a ``size`` x ``size`` crop -> crop.

The 68-point predictor is a frontal model: on a profile it still places a complete frontal set (the far
eye on the cheek, the mouth spread). :func:`check_landmarks` therefore marks each face ``ok``,
``profile`` (the manifest's yaw/view says so, or the nose tip sits at a jaw end) or ``implausible``
(eye distance vs box width, fit residual against the frontal template, landmarks outside the box, a
frontal-looking set on a face of known yaw); profiles get :func:`profile_crop` (upright, scale from the
group's frontal faces or the box height) instead of the similarity alignment. Known profiles skip HOG
(it finds none) and go straight to the CNN; the CNN runs batched over a task (a multi-view group or a
chunk of images).

:func:`align_manifest` does this for a whole manifest: crops are written under ``OUT/crops/``,
``OUT/manifest.csv`` keeps every original column (paths to the crops, ``landmarks`` in crop
coordinates; ``meta_face_status``, ``meta_face_reason``, ``meta_detector``), ``OUT/failures.csv`` lists
every image that failed (unreadable, no face) or needs a look (several faces: the largest is kept;
profile; implausible landmarks), and ``OUT/progress.jsonl`` makes the run resumable.

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
from workbench.data.geometry import TEMPLATE_68, apply_transform, canonical_landmarks, similarity_transform
from workbench.data.images import ImageReadError, blank_reason, read_image
from workbench.data.landmarks import (
    ALIGN_POINTS,
    EYES,
    LEFT_EYE,
    NOSE,
    PARTS,
    RIGHT_EYE,
    format_landmarks,
    nose_asymmetry,
    parse_landmarks,
)
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
    batch_size: int = param(64, "Images between saves of progress.jsonl (resume points).", min=1)
    retry_failed: bool = param(False, "On resume, retry images that failed before (default: keep the failure).")
    pose_check: bool = param(True, "Check every face's landmarks and mark it ok / profile / implausible (column "
                             "face_status); profiles get a yaw-aware crop instead of the frontal similarity "
                             "alignment. False: align every face with the similarity transform (no check).")
    profile_yaw: float = param(60.0, "|yaw| in degrees (the manifest's yaw or view column) from which a face is "
                               "a known profile: HOG is skipped (it finds no profiles) and the crop is yaw-aware.",
                               min=0.0, max=180.0)
    task_size: int = param(16, "Images per worker task when the manifest has no group column (one batched CNN "
                           "call per task); a multi-view group is always one task.", min=1, max=1024)


@dataclass
class Detection:
    """A face found in an image: 68 landmarks (image pixels), its box and how it was found."""

    landmarks: np.ndarray
    box: tuple[int, int, int, int]  # left, top, right, bottom
    n_faces: int
    detector: str  # "hog", "cnn", "whole-image" or "manifest" (landmarks given)
    tried: str = ""  # detectors run, in order, e.g. "hog+cnn" or "cnn" (known profile: HOG skipped)


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
# pose: landmark plausibility and the yaw-aware profile crop
# ---------------------------------------------------------------------------------------------

#: Plausibility thresholds, calibrated on ``workbench synth --views 5`` (yaw 0/30/60) and ``--views 7
#: --view-range 80`` (0/26.7/53.3/80), 2 x 8 x 5-7 images of 128 px, dlib HOG then CNN + the 68-point
#: predictor; "good fit" = mean error to the ground-truth landmarks < 8 px. Measured on the *predicted*
#: landmarks (what the pipeline sees), good fits, min-max per |yaw|:
#:
#: ============  =====  =========  =========  =========  =========  =======
#: metric        0 (56)  26.7 (42)  30 (52)    53.3 (7)   60 (4)     80 (0)
#: ============  =====  =========  =========  =========  =========  =======
#: |nose asym.|  0-.15   .34-.73    .46-.85    .61-1.00   .85-.90    no face
#: residual      .02-.07 .05-.15    .07-.18    .12-.16    .14-.15    found
#: eye/box       .38-.47 .33-.42    .29-.42    .29-.36    .27-.33
#: ============  =====  =========  =========  =========  =========  =======
#:
#: Ground-truth landmarks give |nose asymmetry| 0 / 0.61 / 0.70 / 1.63 / 2.1 at 0 / 26.7 / 30 / 53 / 60 deg.
#: The frontal predictor keeps its asymmetry below ~0.9 even on profiles, so the landmarks alone do not
#: separate a half-profile from a profile; the manifest's yaw/view (``profile_yaw``) is the reliable
#: signal and PROFILE_ASYMMETRY = 0.9 only catches clear profiles (above every half-profile, 6x the
#: largest frontal value). 10 of 276 detections were misfits (8-18 px off); 5 of them had a frontal-
#: looking set (|asym| 0.04-0.24) on a face of known |yaw| >= 26.7: with a known yaw, |asym| below
#: YAW_ASYMMETRY_SLOPE * |yaw| (0.24 at 26.7 deg, 0.27 at 30, 0.48 at 53; good fits: >= 0.34 / 0.46 /
#: 0.61) marks the face implausible. Eye distance / box width: plausible in [0.2, 0.7] (observed
#: 0.27-0.47); residual of eyes + nose (points 27-47) after a similarity fit onto TEMPLATE_68, in
#: template eye distances: implausible above 0.3 (observed up to 0.18; 1.7x margin). Every landmark
#: must lie within the detector box grown by half its size on each side.
PROFILE_ASYMMETRY = 0.9
EYE_RATIO_RANGE = (0.2, 0.7)
MAX_RESIDUAL = 0.3
YAW_ASYMMETRY_SLOPE = 0.009  # per degree of known |yaw|, checked from 20 deg
BOX_MARGIN = 0.5
_STABLE_FIT = tuple(range(27, 48))
_TEMPLATE_EYE_DISTANCE = float(np.linalg.norm(TEMPLATE_68[list(LEFT_EYE)].mean(0) - TEMPLATE_68[list(RIGHT_EYE)].mean(0)))


@dataclass
class PoseCheck:
    """Outcome of :func:`check_landmarks`: ``status`` is ``ok``, ``profile`` or ``implausible``."""

    status: str
    reason: str
    asymmetry: float
    eye_ratio: float
    residual: float


def landmark_metrics(landmarks: np.ndarray, box: Sequence[float]) -> tuple[float, float, float]:
    """(nose asymmetry, eye distance / box width, eyes+nose residual after a similarity fit onto
    :data:`TEMPLATE_68` in template eye distances) of one (68, 2) landmark set."""
    lm = np.asarray(landmarks, dtype=np.float64)
    bw = max(float(box[2]) - float(box[0]), 1e-6)
    eyes = np.linalg.norm(lm[list(LEFT_EYE)].mean(0) - lm[list(RIGHT_EYE)].mean(0)) / bw
    idx = list(_STABLE_FIT)
    try:
        m = similarity_transform(lm[idx], TEMPLATE_68[idx])
        r = apply_transform(m, lm[idx]) - TEMPLATE_68[idx]
        res = float(np.sqrt((r**2).sum(1).mean()) / _TEMPLATE_EYE_DISTANCE)
    except ValueError:
        res = float("inf")
    return float(nose_asymmetry(lm)), float(eyes), res


def check_landmarks(landmarks: np.ndarray, box: Sequence[float], yaw: float | None = None, *,
                    profile_yaw: float = 60.0) -> PoseCheck:
    """Classify a face's landmarks: ``profile`` (known |yaw| >= ``profile_yaw``, or the nose tip near
    or beyond a jaw end), ``implausible`` (eye distance out of range for the box, landmarks far outside
    the box, a bad fit to the frontal template, or a frontal-looking set on a face of known yaw) or
    ``ok``. Thresholds and their calibration: see the comment above :data:`PROFILE_ASYMMETRY`."""
    asym, eyes, res = landmark_metrics(landmarks, box)
    out = PoseCheck("ok", "", asym, eyes, res)
    if yaw is not None and np.isfinite(yaw) and abs(yaw) >= profile_yaw:
        out.status, out.reason = "profile", f"manifest yaw {yaw:+.0f}"
        return out
    if abs(asym) >= PROFILE_ASYMMETRY:
        out.status, out.reason = "profile", f"nose asymmetry {asym:+.2f}"
        return out
    lm = np.asarray(landmarks, dtype=np.float64)
    bw, bh = float(box[2]) - float(box[0]), float(box[3]) - float(box[1])
    lo = np.array([box[0] - BOX_MARGIN * bw, box[1] - BOX_MARGIN * bh])
    hi = np.array([box[2] + BOX_MARGIN * bw, box[3] + BOX_MARGIN * bh])
    why = []
    if not EYE_RATIO_RANGE[0] <= eyes <= EYE_RATIO_RANGE[1]:
        why.append(f"eye distance {eyes:.2f} of the box width")
    if not ((lm >= lo) & (lm <= hi)).all():
        why.append("landmarks outside the face box")
    if res > MAX_RESIDUAL:
        why.append(f"template residual {res:.2f}")
    if yaw is not None and np.isfinite(yaw) and abs(yaw) >= 20 and abs(asym) < YAW_ASYMMETRY_SLOPE * abs(yaw):
        why.append(f"frontal-looking landmarks (nose asymmetry {asym:+.2f}) for manifest yaw {yaw:+.0f}")
    if why:
        out.status, out.reason = "implausible", ", ".join(why)
    return out


#: landmark-box width of a frontal face as a fraction of the detector box height (frontal synthetic
#: faces, HOG and CNN boxes; manifest landmarks: the box is the landmark box itself, ratio ~1)
BOX_FACE_RATIO = 1.0


def profile_crop(image: np.ndarray, landmarks: np.ndarray, box: Sequence[float], size: int = 112, *,
                 face_fraction: float = 0.7, scale: float | None = None,
                 box_face_ratio: float = BOX_FACE_RATIO) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Yaw-aware crop of a profile: no rotation (the frontal template does not fit a profile), the
    scale from the box *height* (unchanged by yaw) or ``scale`` (e.g. from the frontal face of the
    same multi-view group), the centre from the box centre (x) and the landmarks' vertical extent
    (y: brows to chin, which the predictor places sensibly even on profiles), put where the frontal
    alignment puts the landmark box centre (0.5, 0.54 of the crop). Returns ``(crop, landmarks in the
    crop, M)`` like :func:`align_face`."""
    lm = np.asarray(landmarks, dtype=np.float64)
    bh = max(float(box[3]) - float(box[1]), 1.0)
    s = float(scale) if scale else face_fraction * size / (box_face_ratio * bh)
    cx = 0.5 * (float(box[0]) + float(box[2]))
    cy = 0.5 * (float(lm[:, 1].min()) + float(lm[:, 1].max()))
    if not float(box[1]) - bh <= cy <= float(box[3]) + bh:
        cy = 0.5 * (float(box[1]) + float(box[3]))
    m = np.array([[s, 0.0, 0.5 * size - 0.5 - s * cx], [0.0, s, 0.54 * size - 0.5 - s * cy]])
    crop = warp_image(image, m, size)
    return crop, apply_transform(m, lm).astype(np.float32), m


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

    def _hog_boxes(self, image: np.ndarray) -> list[tuple[int, int, int, int]]:
        h, w = image.shape[:2]
        ups = [self.upsample] + ([self.upsample + 1] if max(h, w) < 200 and self.upsample < 3 else [])
        for up in ups:
            rects = self._hog(image, up)
            if len(rects):
                return [(r.left(), r.top(), r.right(), r.bottom()) for r in rects]
        return []

    def _cnn_boxes(self, images: Sequence[np.ndarray]) -> list[list[tuple[int, int, int, int]]]:
        """CNN detections for several images: images of the same (downscaled) size go through dlib's
        batched call together (one forward pass for the batch)."""
        from PIL import Image

        if self._cnn is None:
            self._cnn = self.dlib.cnn_face_detection_model_v1(str(self._cnn_path))
        prepared, groups = [], {}
        for k, image in enumerate(images):
            h, w = image.shape[:2]
            scale = min(1.0, self.cnn_max_side / max(h, w))
            small = image
            if scale < 1.0:
                small = np.asarray(Image.fromarray(image).resize((max(1, round(w * scale)), max(1, round(h * scale))),
                                                                 Image.Resampling.BILINEAR))
            up = 1 if max(small.shape[:2]) < 400 else 0
            prepared.append((np.ascontiguousarray(small), scale))
            groups.setdefault((small.shape, up), []).append(k)
        out: list[list[tuple[int, int, int, int]]] = [[] for _ in images]
        for (_, up), ks in groups.items():
            dets = self._cnn([prepared[k][0] for k in ks], up, batch_size=len(ks)) if len(ks) > 1 \
                else [self._cnn(prepared[ks[0]][0], up)]
            for k, found in zip(ks, dets):
                sc = prepared[k][1]
                out[k] = [(round(d.rect.left() / sc), round(d.rect.top() / sc),
                           round(d.rect.right() / sc), round(d.rect.bottom() / sc)) for d in found]
        return out

    def find_boxes(self, images: Sequence[np.ndarray], profile: Sequence[bool] | None = None
                   ) -> list[tuple[list[tuple[int, int, int, int]], str, str]]:
        """``(boxes, detector, tried)`` per image. HOG first, except for known profiles (``profile``
        True: HOG finds no profile, so straight to the CNN); the CNN runs once, batched, on every image
        still without a face; then the whole-image fallback."""
        profile = list(profile) if profile is not None else [False] * len(images)
        res: list[tuple[list[tuple[int, int, int, int]], str, str]] = [([], "", "")] * len(images)
        pending = []
        for k, image in enumerate(images):
            if not profile[k]:
                boxes = self._hog_boxes(image)
                res[k] = (boxes, "hog" if boxes else "", "hog")
                if boxes:
                    continue
            pending.append(k)
        if self.cnn_fallback and pending:
            for k, boxes in zip(pending, self._cnn_boxes([images[k] for k in pending])):
                tried = "+".join(t for t in (res[k][2], "cnn") if t)
                res[k] = (boxes, "cnn" if boxes else "", tried)
        for k, image in enumerate(images):
            if not res[k][0] and self.whole_image_fallback:
                h, w = image.shape[:2]
                res[k] = ([(0, 0, w - 1, h - 1)], "whole-image", res[k][2])
        return res

    def landmarks(self, image: np.ndarray, boxes: list[tuple[int, int, int, int]], how: str,
                  tried: str = "") -> Detection | None:
        """The largest of ``boxes`` with its 68 landmarks, or None when there is no box."""
        if not boxes:
            return None
        box = max(boxes, key=lambda b: (b[2] - b[0]) * (b[3] - b[1]))
        rect = self.dlib.rectangle(int(box[0]), int(box[1]), int(box[2]), int(box[3]))
        shape = self._predictor(np.ascontiguousarray(image), rect)
        pts = np.array([(shape.part(i).x, shape.part(i).y) for i in range(shape.num_parts)], dtype=np.float32)
        return Detection(pts, box, len(boxes), how, tried or how)

    def detect(self, image: np.ndarray, *, profile: bool = False) -> Detection | None:
        """The largest face in a uint8 RGB image (its landmarks in image pixels), or None."""
        image = np.ascontiguousarray(image)
        boxes, how, tried = self.find_boxes([image], [profile])[0]
        return self.landmarks(image, boxes, how, tried)

    def detect_many(self, images: Sequence[np.ndarray], profile: Sequence[bool] | None = None
                    ) -> list[Detection | None]:
        """:meth:`detect` for several images, with one batched CNN call for all that need it."""
        images = [np.ascontiguousarray(im) for im in images]
        return [self.landmarks(im, *found) for im, found in zip(images, self.find_boxes(images, profile))]


# ---------------------------------------------------------------------------------------------
# whole manifests
# ---------------------------------------------------------------------------------------------

_WORKER: dict[str, Any] = {}


def _worker_init(cfg: dict[str, Any]) -> None:
    _WORKER["cfg"] = cfg
    _WORKER["det"] = None  # created on first use: a task of given landmarks never loads dlib
    if cfg.get("_single_thread"):
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        try:
            import torch

            torch.set_num_threads(1)
        except ImportError:  # pragma: no cover - torch is a core dependency
            pass


def _detector() -> FaceDetector:
    if _WORKER.get("det") is None:
        cfg = _WORKER["cfg"]
        _WORKER["det"] = FaceDetector(upsample=cfg["upsample"], cnn_fallback=cfg["cnn_fallback"],
                                      whole_image_fallback=cfg["whole_image_fallback"])
    return _WORKER["det"]


def _process(task: tuple[str, str, str, str] | tuple[str, str, str, str, float | None]) -> dict[str, Any]:
    """One image (see :func:`_process_task`). Never raises."""
    return _process_task([task])[0]


def _process_task(tasks: Sequence[tuple]) -> list[dict[str, Any]]:
    """Several images (a multi-view group or a chunk): read, detect (HOG per image, skipped on known
    profiles; one batched CNN call for the rest) or use the given landmarks, check the landmarks,
    crop (similarity alignment; yaw-aware crop for profiles, at the scale of the group's frontal
    faces when there is one), write the crops. Never raises: every problem becomes a record."""
    cfg = _WORKER["cfg"]
    recs: list[dict[str, Any]] = []
    images: list[np.ndarray | None] = []
    dets: list[Detection | None] = []
    yaws: list[float | None] = []
    for task in tasks:
        key, src, dest, given = task[:4]
        yaw = task[4] if len(task) > 4 else None
        yaws.append(yaw)
        rec: dict[str, Any] = {"key": key, "status": "failed", "reason": "", "warning": "", "landmarks": "",
                               "detector": "", "tried": "", "face_status": "", "face_reason": ""}
        recs.append(rec)
        images.append(None)
        dets.append(None)
        try:
            image = read_image(src)
        except ImageReadError as exc:
            rec["reason"] = f"unreadable: {exc.reason}"
            continue
        blank = blank_reason(image)
        if blank:
            rec["reason"] = blank
            continue
        try:
            pts = parse_landmarks(given) if given else None
        except ValueError as exc:
            rec["reason"] = f"bad landmarks in the manifest: {exc}"
            continue
        images[-1] = image
        if pts is not None:
            lo, hi = pts.min(axis=0), pts.max(axis=0)
            dets[-1] = Detection(pts, (int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])), 1, "manifest", "manifest")
    todo = [k for k, (im, d) in enumerate(zip(images, dets)) if im is not None and d is None]
    if todo:
        known = [cfg["pose_check"] and yaws[k] is not None and abs(yaws[k]) >= cfg["profile_yaw"] for k in todo]
        det = None
        try:
            det = _detector()
            imgs = [np.ascontiguousarray(images[k]) for k in todo]
            found = det.find_boxes(imgs, known)
        except Exception as exc:  # noqa: BLE001 - dlib raises RuntimeError on odd inputs; record, never crash
            found = [([], "", "")] * len(todo)
            for k in todo:
                recs[k]["reason"] = f"detector error: {type(exc).__name__}: {str(exc)[:80]}"
        for k, (boxes, how, tried) in zip(todo, found):
            recs[k]["tried"] = tried
            if recs[k]["reason"]:
                continue
            try:
                dets[k] = det.landmarks(np.ascontiguousarray(images[k]), boxes, how, tried)
            except Exception as exc:  # noqa: BLE001
                recs[k]["reason"] = f"detector error: {type(exc).__name__}: {str(exc)[:80]}"
                continue
            if dets[k] is None:
                recs[k]["reason"] = "no face detected"
    checks: list[PoseCheck | None] = [None] * len(tasks)
    for k, d in enumerate(dets):
        if d is not None and cfg["pose_check"] and d.detector != "whole-image":
            checks[k] = check_landmarks(d.landmarks, d.box, yaws[k], profile_yaw=cfg["profile_yaw"])
    # crops: frontal (similarity) first, their scale is used for the group's profiles
    crops: list[tuple[np.ndarray, np.ndarray] | None] = [None] * len(tasks)
    scales = []
    for k, d in enumerate(dets):
        if d is None or (checks[k] is not None and checks[k].status == "profile"):
            continue
        try:
            crop, lm, m = align_face(images[k], d.landmarks, cfg["size"], points=cfg["points"],
                                     face_fraction=cfg["face_fraction"])
        except ValueError as exc:
            recs[k]["reason"] = f"alignment failed: {exc}"
            continue
        crops[k] = (crop, lm)
        if checks[k] is not None and checks[k].status == "ok" and d.detector != "whole-image":
            scales.append(float(np.hypot(m[0, 0], m[1, 0])))
    group_scale = float(np.median(scales)) if scales else None
    for k, d in enumerate(dets):
        if d is None or checks[k] is None or checks[k].status != "profile":
            continue
        crop, lm, _ = profile_crop(images[k], d.landmarks, d.box, cfg["size"], face_fraction=cfg["face_fraction"],
                                   scale=group_scale)
        crops[k] = (crop, lm)
        checks[k].reason += "; yaw-aware crop, " + ("scale of the group's frontal faces" if group_scale
                                                    else "scale from the box")
    from PIL import Image

    for k, (task, rec, d) in enumerate(zip(tasks, recs, dets)):
        if crops[k] is None:
            continue
        dest_p = Path(task[2])
        dest_p.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest_p.with_name(f".{dest_p.name}.{os.getpid()}.tmp")
        try:
            Image.fromarray(crops[k][0]).save(tmp, format="PNG" if cfg["image_format"] == "png" else "JPEG",
                                              quality=95)
            os.replace(tmp, dest_p)
        except OSError as exc:
            rec["reason"] = f"cannot write crop: {exc.strerror or exc}"
            continue
        chk = checks[k]
        rec.update(status="ok", landmarks=format_landmarks(crops[k][1]), detector=d.detector, tried=d.tried,
                   face_status=chk.status if chk else "unchecked",
                   face_reason=chk.reason if chk else "")
        notes = []
        if d.n_faces > 1:
            notes.append(f"{d.n_faces} faces detected, kept the largest")
        if d.detector == "whole-image":
            notes.append("no face detected, landmarks fitted in the whole image")
        if chk is not None and chk.status != "ok":
            notes.append(f"{chk.status}: {chk.reason}")
        rec["warning"] = "; ".join(notes)
    return recs


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
    if cfg.pose_check:  # the crops of profiles depend on these (absent: an output of the earlier version)
        settings.update(pose_check=True, profile_yaw=cfg.profile_yaw)
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
    yaws = _known_yaws(m)
    groups = [str(g) for g in m.frame["group"].tolist()] if m.has("group") else None
    todo, resumed = [], 0
    for i, (rel, src, crop, lm) in enumerate(zip(rels, srcs, crops, given)):
        rec = done.get(rel)
        if rec is not None and (
                (rec.get("status") == "ok" and (out / crop).is_file())
                or (rec.get("status") == "failed" and not cfg.retry_failed)):
            resumed += 1
            continue
        todo.append((i, (rel, src, str(out / crop), lm, yaws[i])))
    tasks = _make_tasks(todo, groups, cfg.task_size)

    wcfg = asdict(cfg)
    n_todo = sum(len(t) for t in tasks)
    bar = tqdm(total=n_todo, desc=f"faces {m.path.name if m.path else ''}".strip(), unit="img",
               disable=not progress or not n_todo, smoothing=0.1)
    with open(prog_p, "a", encoding="utf-8") as log:
        if cfg.workers > 1 and len(tasks) > 1:
            from concurrent.futures import ProcessPoolExecutor

            wcfg["_single_thread"] = True
            since_flush = 0
            import multiprocessing as mp

            # forkserver/spawn, not fork: a fork of a process that already ran dlib's CNN (an earlier
            # align_manifest call in the same process) hangs in the children
            ctx = mp.get_context("forkserver" if "forkserver" in mp.get_all_start_methods() else "spawn")
            with ProcessPoolExecutor(min(cfg.workers, len(tasks)), mp_context=ctx, initializer=_worker_init,
                                     initargs=(wcfg,)) as ex:
                # one task = one group/chunk; results come back in order but as soon as they are done, so
                # every worker stays busy (no barrier per batch) and the bar's ETA follows the real rate
                for recs in ex.map(_process_task, tasks, chunksize=1):
                    for rec in recs:
                        _log(log, rec, done)
                    since_flush += len(recs)
                    if since_flush >= cfg.batch_size:
                        log.flush()
                        since_flush = 0
                    bar.update(len(recs))
        elif tasks:
            _worker_init(wcfg)
            for task in tasks:
                for rec in _process_task(task):
                    _log(log, rec, done)
                log.flush()
                bar.update(len(task))
    bar.close()
    return _finish(m, out, rels, crops, done, resumed)


#: view labels that are not numbers -> yaw in degrees (KDEF's angle codes, plain words)
VIEW_WORDS = {"fl": -90.0, "hl": -45.0, "s": 0.0, "hr": 45.0, "fr": 90.0, "frontal": 0.0, "front": 0.0,
              "profile": 90.0, "full_left": -90.0, "full_right": 90.0, "half_left": -45.0, "half_right": 45.0}


def _known_yaws(m: Any) -> list[float | None]:
    """Per row, the manifest's ``yaw`` (else ``view``: degrees or a word of :data:`VIEW_WORDS`), or None."""
    import pandas as pd

    for col in ("yaw", "view"):
        if not m.has(col):
            continue
        vals = pd.to_numeric(m.frame[col], errors="coerce").tolist()
        if col == "view":
            words = [VIEW_WORDS.get(str(v).strip().lower().replace("-", "_").replace(" ", "_"))
                     for v in m.frame[col].tolist()]
            vals = [w if w is not None and not np.isfinite(v) else v for v, w in zip(vals, words)]
        if any(np.isfinite(v) for v in vals):
            return [float(v) if np.isfinite(v) else None for v in vals]
    return [None] * len(m.frame)


def _make_tasks(todo: list[tuple[int, tuple]], groups: list[str] | None, size: int) -> list[list[tuple]]:
    """Worker tasks: each multi-view group together (its frontal faces set the scale of its profiles),
    the rest in chunks of ``size`` (one batched CNN call per chunk)."""
    tasks: list[list[tuple]] = []
    loose: list[tuple] = []
    by_group: dict[str, list[tuple]] = {}
    for i, task in todo:
        g = groups[i] if groups is not None else ""
        if g and g.lower() not in ("nan", "none"):
            by_group.setdefault(g, []).append(task)
        else:
            loose.append(task)
    tasks.extend(by_group.values())
    tasks.extend(loose[i:i + size] for i in range(0, len(loose), size))
    return tasks


def _log(log: Any, rec: dict[str, Any], done: dict[str, dict[str, Any]]) -> None:
    log.write(json.dumps(rec) + "\n")
    done[rec["key"]] = rec


def _finish(m: Any, out: Path, rels: list[str], crops: list[str], done: dict[str, dict[str, Any]],
            resumed: int) -> AlignReport:
    from workbench.data.manifest import Manifest

    keep: list[int] = []
    landmarks: list[str] = []
    extra: dict[str, list[str]] = {"face_status": [], "face_reason": [], "detector": []}
    failures: list[tuple[str, str, str]] = []
    reasons: Counter = Counter()
    n_warn = 0
    for i, rel in enumerate(rels):
        rec = done.get(rel, {"status": "failed", "reason": "not processed (interrupted?)"})
        if rec.get("status") == "ok" and (out / crops[i]).is_file():
            keep.append(i)
            landmarks.append(rec.get("landmarks", ""))
            for col in extra:  # records of an earlier version have no face_status: unchecked
                extra[col].append(rec.get(col) or ("unchecked" if col == "face_status" else ""))
            if rec.get("face_status") in ("profile", "implausible"):
                reasons[rec["face_status"]] += 1
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
    for col, vals in extra.items():  # meta_ columns: free columns of the manifest schema
        frame[f"meta_{col}"] = vals
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


#: frame colour of a tile by the face's status (``meta_face_status`` written by ``workbench faces``)
STATUS_COLOURS = {"ok": (40, 200, 60), "profile": (60, 140, 255), "implausible": (255, 40, 40),
                  "unchecked": (140, 140, 140)}


def landmark_overlay_sheet(manifest: Any, out_png: str | os.PathLike[str], *, n: int = 36, cols: int = 6,
                           cell: int = 160, seed: int = 0) -> Path:
    """Contact sheet of ``n`` random images (seeded) with their landmarks drawn, coloured by part
    (jaw yellow, brows orange, nose cyan, eyes green, mouth pink), to check landmarks by eye. When
    the manifest has ``meta_face_status``, each tile gets a frame coloured by it (:data:`STATUS_COLOURS`:
    ok green, profile blue, implausible red, unchecked grey) and the status written in its corner."""
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
    status = ([str(v) if isinstance(v, str) else "unchecked" for v in m.frame["meta_face_status"].tolist()]
              if "meta_face_status" in m.frame.columns else None)
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
        if status is not None:
            colour = STATUS_COLOURS.get(status[i], STATUS_COLOURS["unchecked"])
            tw, th = tile.size
            draw.rectangle((0, 0, tw - 1, th - 1), outline=colour, width=max(2, cell // 40))
            if status[i] != "ok":
                draw.text((4, 3), status[i], fill=colour)
        sheet.paste(tile, ((k % cols) * cell, (k // cols) * cell))
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    sheet.save(out)
    return out
