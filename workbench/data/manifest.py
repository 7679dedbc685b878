"""The dataset manifest: a UTF-8 CSV with one row per image (schema in ``docs/ARCHITECTURE.md``).

- :data:`workbench.data.validation.COLUMNS` is the schema (name -> type); only ``path`` is required,
  every other column is optional and may have empty cells (= missing). Free provenance columns must
  start with ``meta_``.
- :class:`Manifest` loads, normalises (canonical expression names, string ids, integer frames),
  subsets, splits and saves a manifest. Paths are relative to the manifest's folder (``root``).
- :func:`workbench.data.validation.validate_manifest` collects *all* problems; ``Manifest.load`` checks
  the same schema rules but not the image files (use ``validate_manifest(..., check_files=True)`` or
  ``workbench manifest validate`` for those).
"""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.landmarks import N_LANDMARKS, parse_landmarks
from workbench.data.splits import SPLIT_ALIASES, assign_splits
from workbench.data.validation import (
    COLUMNS,
    Collector,
    ValidationReport,
    check_header,
    describe_frame,
    inspect_manifest,
    is_present,
    landmark_block,
    normalise_frame,
    read_manifest_bytes,
    text_frame,
)
from workbench.data.vocabulary import EXPRESSION_INDEX, EXPRESSIONS
from workbench.errors import ManifestError, MissingMetadataError


class Manifest:
    """A loaded manifest: ``frame`` (normalised DataFrame), ``root`` (folder the paths are relative
    to) and ``path`` (the CSV it came from; None until saved when built with :meth:`from_frame`).

    Normalised dtypes: text columns are ``object`` with NaN for missing, numeric columns ``float64``
    (NaN = missing), ``frame`` is the nullable ``Int64``, ``expression`` holds canonical names.
    """

    def __init__(self, frame: pd.DataFrame, root: str | os.PathLike[str], path: str | os.PathLike[str] | None = None):
        self.frame = frame
        self.root = Path(root)
        self.path = Path(path) if path is not None else None

    # ---- construction -----------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike[str], *, validate: bool = True) -> Manifest:
        """Read and normalise a manifest CSV.

        With ``validate=True`` (default) any schema error raises :class:`ManifestError` (first
        problem + how many more; run ``workbench manifest validate`` for the full list). With
        ``validate=False`` bad values become missing (NaN) instead, except that a manifest without
        a readable CSV or a ``path`` column always fails. Image files are not checked here.
        """
        p = Path(path)
        col = Collector()
        frame = inspect_manifest(read_manifest_bytes(p), p.parent, col)
        report = ValidationReport(path=p, problems=col.problems)
        if frame is None or validate:
            report.raise_if_failed()
        assert frame is not None
        return cls(frame, p.parent, p)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame, root: str | os.PathLike[str], *, validate: bool = True) -> Manifest:
        """Build from a DataFrame whose ``path`` values are relative to ``root``.

        Values are normalised exactly as when loading a CSV (landmark arrays of shape (68, 2) are
        encoded); schema errors raise :class:`ManifestError` unless ``validate=False``.
        """
        if not isinstance(frame, pd.DataFrame):
            raise ManifestError(f"from_frame needs a pandas DataFrame, got {type(frame).__name__}")
        col = Collector()
        text = text_frame(frame)
        check_header(list(text.columns), col)
        if "path" not in text.columns:
            ValidationReport(path=None, problems=col.problems).raise_if_failed()
        if len(text) == 0:
            col.add("empty", "the manifest has no rows")
        norm = normalise_frame(text, list(range(2, len(text) + 2)), col)
        if validate:
            ValidationReport(path=None, problems=col.problems).raise_if_failed()
        return cls(norm, root, None)

    # ---- basic access -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.frame)

    def __repr__(self) -> str:
        return f"Manifest({self.path or self.root}, {describe_frame(self.frame)})"

    @property
    def columns(self) -> list[str]:
        return [str(c) for c in self.frame.columns]

    def summary(self) -> str:
        """One line: rows, split sizes, number of expressions / identities / clips."""
        return describe_frame(self.frame)

    def abs_paths(self) -> list[Path]:
        """Image paths joined to ``root`` (not resolved: symlinks stay as given)."""
        return [self.root / p for p in self.frame["path"].tolist()]

    def has(self, column: str) -> bool:
        """True when the column exists and has at least one non-empty value."""
        if column not in self.frame.columns:
            return False
        return any(is_present(v) for v in self.frame[column].tolist())

    def require(self, *columns: str, purpose: str) -> None:
        """Raise :class:`MissingMetadataError` naming the first missing column and the purpose."""
        missing = [c for c in columns if not self.has(c)]
        if not missing:
            return
        more = f" (also missing: {', '.join(missing[1:])})" if len(missing) > 1 else ""
        where = self.path or self.root
        raise MissingMetadataError(
            f"{purpose} needs column '{missing[0]}'{more}, which manifest {where} does not provide; "
            "use a dataset/builder that provides it or add the column")

    def subset(self, mask_or_index: Any) -> Manifest:
        """Rows selected by a boolean mask (length N) or integer positions; the index is reset."""
        sel = mask_or_index
        if isinstance(sel, pd.Series):
            sel = sel.to_numpy()
        if isinstance(sel, slice):
            frame = self.frame.iloc[sel]
        else:
            arr = np.asarray(sel)
            if arr.dtype == bool:
                if arr.shape != (len(self.frame),):
                    raise ManifestError(f"mask has {arr.size} values for {len(self.frame)} rows")
                frame = self.frame.loc[arr]
            else:
                if arr.size and not np.issubdtype(arr.dtype, np.integer):
                    raise ManifestError("subset needs a boolean mask or integer row positions")
                frame = self.frame.iloc[arr.astype(np.int64).reshape(-1)]
        return Manifest(frame.reset_index(drop=True), self.root, self.path)

    def split(self, name: str, *, seed: int = 0) -> Manifest:
        """Rows of split ``name`` (train/val/test or an alias).

        Without a split column, a seeded subject-disjoint split by ``identity`` is made on the fly
        (:func:`assign_splits`, fractions 0.7/0.15/0.15, ``seed`` default 0) so every caller gets
        the same one; without identities it falls back to a random row split (with a warning).
        The result may be empty (e.g. no 'val' rows).
        """
        key = str(name).strip().lower()
        if key not in SPLIT_ALIASES:
            raise ManifestError(f"unknown split '{name}'; use train, val or test")
        key = SPLIT_ALIASES[key]
        if self.has("split"):
            splits = self.frame["split"]
            if splits.isna().any():  # partially filled (only possible with validate=False)
                splits = assign_splits(self.frame, seed=seed)
        else:
            splits = assign_splits(self.frame, seed=seed)
        return self.subset((splits == key).to_numpy())

    # ---- derived arrays -------------------------------------------------------------------------
    def landmarks(self) -> np.ndarray | None:
        """``(N, 68, 2)`` float32 landmarks (NaN rows where missing), or None without the column."""
        if not self.has("landmarks"):
            return None
        out = np.full((len(self.frame), N_LANDMARKS, 2), np.nan, dtype=np.float32)
        values = self.frame["landmarks"].tolist()
        idx = [i for i, v in enumerate(values) if isinstance(v, str) and v.strip()]
        block = landmark_block([values[i].strip() for i in idx])
        if block is not None:
            out[idx] = block
            return out
        for i, v in enumerate(values):
            try:
                pts = parse_landmarks(v)
            except ValueError:
                pts = None
            if pts is not None:
                out[i] = pts
        return out

    def labels(self, column: str = "expression") -> tuple[np.ndarray, list[str]]:
        """Integer codes (int64, -1 = missing) and class names for a label column.

        ``expression`` always uses the fixed :data:`~workbench.data.vocabulary.EXPRESSIONS` order;
        other columns use their sorted distinct values.
        """
        if column not in self.frame.columns:
            raise MissingMetadataError(f"labels need column '{column}', which manifest "
                                       f"{self.path or self.root} does not provide")
        values = self.frame[column].tolist()
        if column == "expression":
            names = list(EXPRESSIONS)
            codes = [EXPRESSION_INDEX.get(v, -1) if isinstance(v, str) else -1 for v in values]
            return np.asarray(codes, dtype=np.int64), names
        keys = [None if (not isinstance(v, str) and pd.isna(v)) else str(v) for v in values]
        names = sorted({k for k in keys if k is not None and k != ""})
        index = {k: i for i, k in enumerate(names)}
        codes = [index.get(k, -1) if k is not None else -1 for k in keys]
        return np.asarray(codes, dtype=np.int64), names

    def fingerprint(self) -> str:
        """sha256 over the manifest bytes and each image's (size, mtime_ns): changes when any changes."""
        h = hashlib.sha256()
        if self.path is not None and self.path.is_file():
            h.update(self.path.read_bytes())
        else:
            h.update(self._to_csv_text(self.frame).encode("utf-8"))
        h.update(b"\0root\0" + os.fsencode(os.path.abspath(self.root)))
        for p in self.abs_paths():
            try:
                st = p.stat()
                h.update(f"\n{st.st_size}:{st.st_mtime_ns}".encode())
            except (OSError, ValueError):
                h.update(b"\nmissing")
        return h.hexdigest()

    # ---- saving -----------------------------------------------------------------------------------
    @staticmethod
    def _ordered(frame: pd.DataFrame) -> pd.DataFrame:
        known = [c for c in COLUMNS if c in frame.columns]
        rest = [c for c in frame.columns if c not in COLUMNS]
        return frame[known + rest]

    @classmethod
    def _to_csv_text(cls, frame: pd.DataFrame) -> str:
        buf = io.StringIO()
        cls._ordered(frame).to_csv(buf, index=False, lineterminator="\n")
        return buf.getvalue()

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the manifest atomically (temp file + ``os.replace``) and return its path.

        When saved to another folder, paths are rewritten relative to the new folder; the
        manifest object then points to the new file (``path``, ``root`` and ``frame`` updated).
        """
        p = Path(path)
        if p.suffix.lower() != ".csv":
            raise ManifestError(f"manifest file name must end in .csv, got {p.name}")
        new_root = p.parent
        frame = self.frame.copy()
        if os.path.abspath(new_root) != os.path.abspath(self.root):
            frame["path"] = [
                rel if not isinstance(rel, str) else
                Path(os.path.relpath(os.path.abspath(self.root / rel), os.path.abspath(new_root))).as_posix()
                for rel in frame["path"].tolist()
            ]
        text = self._to_csv_text(frame)
        new_root.mkdir(parents=True, exist_ok=True)
        tmp = new_root / f".{p.name}.{os.getpid()}.tmp"
        try:
            with open(tmp, "w", encoding="utf-8", newline="") as fh:
                fh.write(text)
            os.replace(tmp, p)
        finally:
            if tmp.exists():
                tmp.unlink()
        self.frame, self.root, self.path = frame, new_root, p
        return p


__all__ = ["Manifest"]
