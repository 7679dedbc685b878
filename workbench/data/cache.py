"""Decode once: a prepared, memory-mapped face array built from a manifest.

``load_face_data(manifest, size)`` decodes every image once (bad files are skipped with a
count and a list, see :mod:`workbench.data.images` for the policy), resizes it to ``size`` x
``size`` (padded to square first) and stores

- ``images.u8``: uint8 ``(N, S, S, 3)`` raw memory-mapped array,
- ``landmarks.npy``: float32 ``(N, 68, 2)`` in the cached image's pixel coordinates (NaN if unknown),
- ``rows.npy``: the manifest row of each cached image, ``skipped.csv``: files that were not usable,
- ``meta.json``: manifest fingerprint, size, counts.

Where: ``cache_dir`` when given (``DataConfig.cache_dir``), else ``$WORKBENCH_CACHE``, else a
``.workbench-cache/`` folder next to the manifest (so a licensed dataset's pixels stay with the dataset,
never in a shared home folder), else, when that folder is not writable, ``~/.cache/workbench/faces``.
The folder is named after the manifest's folder and file (``jaffe-aligned-manifest-48px-<key>``); the
key is made of the manifest path, its fingerprint (content + file sizes/mtimes) and the size, so it is
reused across runs and rebuilt automatically when the manifest, any image, or the size changes. The
path is printed on the first build. Two processes building the same cache are safe: each decodes into
its own temporary folder and the first to finish wins. Training never touches image files afterwards,
so a bad file cannot crash an epoch.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch

from workbench.data.manifest import Manifest
from workbench.errors import ManifestError
from workbench.io import read_json, write_json

#: columns that get integer codes for samplers and metrics
CODED_COLUMNS = ("identity", "expression", "clip", "group", "view", "split")


#: the cache folder created next to a manifest (ignored by git)
CACHE_DIR_NAME = ".workbench-cache"


def cache_root() -> Path:
    """``$WORKBENCH_CACHE`` or ``~/.cache/workbench/faces`` (generated synthetic sets live beside it)."""
    return Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench" / "faces"))


def default_cache_dir(manifest: Manifest) -> Path:
    """``$WORKBENCH_CACHE`` when set, else ``.workbench-cache/`` next to the manifest when that folder is
    writable, else ``~/.cache/workbench/faces``."""
    if os.environ.get("WORKBENCH_CACHE"):
        return Path(os.environ["WORKBENCH_CACHE"])
    parent = manifest.path.parent
    beside = parent / CACHE_DIR_NAME
    if beside.is_dir() and os.access(beside, os.W_OK) or os.access(parent, os.W_OK):
        return beside
    return cache_root()


def cache_folder_name(manifest: Manifest, size: int) -> str:
    """``<manifest folder>-<manifest stem>-<size>px-<key>``: says which data set it holds."""
    import re

    def slug(text: str) -> str:
        return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_") or "root"

    return f"{slug(manifest.path.parent.name)}-{slug(manifest.path.stem)}-{size}px-{cache_key(manifest, size)}"


@dataclass
class FaceData:
    """Decoded faces of a manifest at one resolution, plus integer codes of its label columns.

    Attributes:
        manifest: the manifest restricted to the usable (cached) rows, in cache order.
        images: uint8 (N, S, S, 3), memory-mapped.
        landmarks: float32 (N, 68, 2) or None when the manifest has no landmarks.
        size: S.
        skipped: list of (path, reason) for files that could not be used.
    """

    manifest: Manifest
    images: np.ndarray
    landmarks: np.ndarray | None
    size: int
    skipped: list[tuple[str, str]] = field(default_factory=list)
    cache_dir: Path | None = None
    _codes: dict[str, tuple[np.ndarray, list[str]]] = field(default_factory=dict, repr=False)
    #: the images (uint8 N,S,S,3) and landmarks as tensors on a device (:meth:`to_device`), or None
    device_images: torch.Tensor | None = field(default=None, repr=False)
    device_landmarks: torch.Tensor | None = field(default=None, repr=False)

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def codes(self, column: str) -> tuple[np.ndarray, list[str]]:
        """Integer codes (-1 = missing) and the names they index, for a manifest column."""
        if column not in self._codes:
            self._codes[column] = self.manifest.labels(column)
        return self._codes[column]

    def has(self, column: str) -> bool:
        return self.manifest.has(column)

    def subset(self, rows: np.ndarray) -> FaceData:
        """A view on some rows (no copy of the memory map until indexed)."""
        rows = np.asarray(rows, dtype=np.int64)
        return FaceData(self.manifest.subset(rows), _IndexedArray(self.images, rows),  # type: ignore[arg-type]
                        None if self.landmarks is None else self.landmarks[rows], self.size,
                        self.skipped, self.cache_dir)

    def split(self, name: str) -> FaceData:
        """Rows of one split (``train``/``val``/``test``); automatic subject-disjoint split if none."""
        from workbench.data.splits import assign_splits

        split = assign_splits(self.manifest.frame).to_numpy()
        rows = np.flatnonzero(split == name)
        if rows.size == 0:
            raise ManifestError(f"split '{name}' has no images in {self.manifest.path}")
        return self.subset(rows)

    @property
    def nbytes(self) -> int:
        """Bytes of the decoded images and landmarks (what :meth:`to_device` uploads)."""
        n = int(np.prod(self.images.shape)) * np.dtype(self.images.dtype).itemsize
        return n + (0 if self.landmarks is None else int(np.prod(self.landmarks.shape)) * 4)

    def to_device(self, device: torch.device | str) -> FaceData:
        """The same data with its images and landmarks uploaded once to ``device``: :meth:`batch` then
        gathers there (``index_select`` on uint8, converted after) with no per-step host gather or copy."""
        dev = torch.device(device)
        images = torch.from_numpy(np.ascontiguousarray(np.asarray(self.images))).to(dev)
        lms = None if self.landmarks is None else torch.from_numpy(np.ascontiguousarray(self.landmarks)).to(dev)
        return replace(self, device_images=images, device_landmarks=lms, _codes=dict(self._codes))

    def on_device(self, device: torch.device | str) -> bool:
        """Whether :meth:`batch` for ``device`` gathers on the device (the data were uploaded there)."""
        if self.device_images is None:
            return False
        a, b = torch.device(device), self.device_images.device
        return a.type == b.type and (a.index or 0) == (b.index or 0)

    def batch(self, rows: np.ndarray, device: torch.device | str = "cpu", *, pin: bool = False
              ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Images float (…, 3, S, S) in [0, 1] and landmarks (…, 68, 2) for an index array of any shape.

        Uploaded data (:meth:`to_device`) are gathered on the device. Otherwise the uint8 gather happens
        on the host and the conversion to float on ``device`` (4x less host→device traffic); ``pin=True``
        pins host memory for non-blocking copies.
        """
        rows = np.asarray(rows, dtype=np.int64)
        flat = rows.reshape(-1)
        if self.on_device(device):
            return self._device_batch(rows, flat)
        u8 = torch.from_numpy(np.ascontiguousarray(self.images[flat]))
        if pin and torch.cuda.is_available():
            u8 = u8.pin_memory()
        u8 = u8.to(device, non_blocking=pin)
        x = u8.permute(0, 3, 1, 2).float().div_(255.0)
        x = x.reshape(*rows.shape, 3, self.size, self.size)
        lm = None
        if self.landmarks is not None:
            lm = torch.from_numpy(np.ascontiguousarray(self.landmarks[flat]))
            if pin and torch.cuda.is_available():
                lm = lm.pin_memory()
            lm = lm.to(device, non_blocking=pin)
            lm = lm.reshape(*rows.shape, 68, 2)
        return x, lm

    def _device_batch(self, rows: np.ndarray, flat: np.ndarray) -> tuple[torch.Tensor, torch.Tensor | None]:
        images = self.device_images
        assert images is not None
        index = torch.from_numpy(flat).to(images.device, non_blocking=True)
        x = images.index_select(0, index).permute(0, 3, 1, 2).float().div_(255.0)
        x = x.reshape(*rows.shape, 3, self.size, self.size)
        lm = None
        if self.device_landmarks is not None:
            lm = self.device_landmarks.index_select(0, index).reshape(*rows.shape, 68, 2)
        return x, lm


def keep_on_device(data: FaceData, device: torch.device, mode: str = "auto", share: float = 0.25) -> FaceData:
    """``data`` uploaded to ``device`` when ``mode`` is ``on``, or ``auto`` on CUDA when the decoded faces
    take at most ``share`` of the device's free memory; otherwise ``data`` as it is (host gather per step)."""
    if mode == "off" or data.on_device(device):
        return data
    if mode == "auto":
        if device.type != "cuda":
            return data
        free, _ = torch.cuda.mem_get_info(device)
        if data.nbytes > share * free:
            return data
    return data.to_device(device)


class _IndexedArray:
    """Row-indexed view of an array (keeps subsets of a memmap lazy)."""

    def __init__(self, base: np.ndarray, rows: np.ndarray):
        self.base, self.rows = base, rows
        self.shape = (len(rows), *base.shape[1:])
        self.dtype = base.dtype

    def __getitem__(self, idx):
        return self.base[self.rows[idx]]

    def __len__(self) -> int:
        return len(self.rows)

    def __array__(self, dtype=None):
        arr = np.asarray(self.base[self.rows])
        return arr.astype(dtype) if dtype is not None else arr


def cache_key(manifest: Manifest, size: int) -> str:
    h = hashlib.sha256()
    h.update(str(manifest.path.resolve()).encode())
    h.update(manifest.fingerprint().encode())
    h.update(f"size={size};v=1".encode())
    return h.hexdigest()[:20]


def load_face_data(manifest: Manifest | str | Path, size: int = 64, *, cache_dir: str | Path | None = None,
                   progress: bool = True, workers: int | None = None) -> FaceData:
    """Decode (or reuse the cached decode of) every image of ``manifest`` at ``size`` px.

    Args:
        manifest: a Manifest or a path to one.
        size: training resolution (square). 48-64 px for CPU runs, 112 for the papers' setting.
        cache_dir: where caches live (default: see the module docstring, :func:`default_cache_dir`).
        progress: show a tqdm bar while decoding.
        workers: decoding threads (default: number of CPUs, max 8).
    """
    from workbench.errors import ConfigError

    if not isinstance(manifest, Manifest):
        manifest = Manifest.load(manifest)
    if int(size) < 16:
        raise ConfigError(f"image size must be at least 16 px, got {size}")
    if len(manifest) == 0:
        raise ManifestError(f"{manifest.path}: the manifest has no rows")
    size = int(size)
    folder = Path(cache_dir or default_cache_dir(manifest)) / cache_folder_name(manifest, size)
    meta_path = folder / "meta.json"
    if not meta_path.is_file():
        if progress:
            print(f"decoding {len(manifest)} images of {manifest.path} at {size} px once, into {folder}")
        _build_cache(manifest, size, folder, progress=progress, workers=workers)
    meta = read_json(meta_path)
    n = int(meta["n"])
    rows = np.load(folder / "rows.npy")
    images = np.memmap(folder / "images.u8", dtype=np.uint8, mode="r", shape=(n, size, size, 3))
    landmarks = np.load(folder / "landmarks.npy") if meta["has_landmarks"] else None
    skipped = [tuple(x) for x in meta.get("skipped", [])]
    if skipped:  # always said, whether or not progress is shown
        warnings.warn(f"{len(skipped)} of {len(manifest)} images were skipped (see {folder / 'skipped.csv'}); "
                      f"first: {skipped[0][0]} ({skipped[0][1]})", stacklevel=2)
    return FaceData(manifest.subset(rows), images, landmarks, size, skipped, folder)


def _build_cache(manifest: Manifest, size: int, folder: Path, *, progress: bool, workers: int | None) -> None:
    from tqdm.auto import tqdm

    from workbench.data.images import ImageReadError, read_image_resized

    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    paths = manifest.abs_paths()
    n = len(paths)
    src_lm = manifest.landmarks()
    images = np.memmap(tmp / "images.u8", dtype=np.uint8, mode="w+", shape=(n, size, size, 3))
    landmarks = np.full((n, 68, 2), np.nan, dtype=np.float32)
    ok = np.zeros(n, dtype=bool)
    skipped: list[tuple[str, str]] = []

    def work(i: int):
        try:
            img, scale, offset = read_image_resized(paths[i], size)
        except ImageReadError as exc:
            return i, None, exc.reason
        return i, (img, scale, offset), None

    n_workers = workers or min(8, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=n_workers) as pool:
        it = pool.map(work, range(n))
        for i, res, reason in tqdm(it, total=n, desc=f"decoding {manifest.path.name} @ {size}px",
                                   disable=not progress, leave=False):
            if res is None:
                skipped.append((str(manifest.frame["path"].iloc[i]), str(reason)))
                continue
            img, scale, offset = res
            images[i] = img
            if src_lm is not None:
                landmarks[i] = src_lm[i] * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)
            ok[i] = True
    good = np.flatnonzero(ok)
    if good.size == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        first = f"; first: {skipped[0][0]} ({skipped[0][1]})" if skipped else ""
        raise ManifestError(f"{manifest.path}: none of the {n} images could be read{first}")
    if good.size < n:  # compact
        compact = np.memmap(tmp / "images.c.u8", dtype=np.uint8, mode="w+", shape=(good.size, size, size, 3))
        for s in range(0, good.size, 1024):
            compact[s:s + 1024] = images[good[s:s + 1024]]
        compact.flush()
        del images, compact
        os.replace(tmp / "images.c.u8", tmp / "images.u8")
    else:
        images.flush()
        del images
    has_lm = src_lm is not None
    np.save(tmp / "landmarks.npy", landmarks[good])
    np.save(tmp / "rows.npy", good)
    if skipped:
        import csv

        with open(tmp / "skipped.csv", "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["path", "reason"])
            w.writerows(skipped)
    write_json(tmp / "meta.json", {"n": int(good.size), "size": size, "has_landmarks": has_lm,
                                   "manifest": str(manifest.path), "fingerprint": manifest.fingerprint(),
                                   "skipped": skipped[:1000], "n_skipped": len(skipped)})
    try:
        os.replace(tmp, folder)  # atomic; fails when another process finished the same cache first
    except OSError:
        if (folder / "meta.json").is_file():  # theirs is complete (same key = same content): keep it
            shutil.rmtree(tmp, ignore_errors=True)
        else:  # a leftover without meta.json (killed build): replace it
            shutil.rmtree(folder, ignore_errors=True)
            os.replace(tmp, folder)
