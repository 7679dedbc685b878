"""Manifest validation: the schema (:data:`COLUMNS`, :data:`RANGES`), row and header checks, the path
policy and error collection; :func:`validate_manifest` reports *all* problems (one line each) instead of
stopping at the first. :class:`workbench.data.manifest.Manifest` loads through the same checks.

Paths that leave the manifest folder (``../images/x.png``) are reported as a *warning*: they work,
but the manifest breaks when moved. Absolute paths are an error (the manifest would not be portable).
"""

from __future__ import annotations

import csv
import difflib
import io
import math
import os
import posixpath
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.data.landmarks import COORDINATE_LIMIT, N_LANDMARKS, format_landmarks, parse_landmarks
from workbench.data.splits import SPLIT_ALIASES, SPLITS
from workbench.data.vocabulary import ALIASES, EXPRESSIONS, suggest_expression
from workbench.errors import ManifestError

#: The manifest schema: column name -> type (``meta_*`` columns are free and ignored).
COLUMNS: dict[str, str] = {
    "path": "str",
    "split": "str",
    "expression": "str",
    "identity": "str",
    "intensity": "float",
    "valence": "float",
    "arousal": "float",
    "clip": "str",
    "frame": "int",
    "view": "str/float",
    "group": "str",
    "yaw": "float",
    "pitch": "float",
    "roll": "float",
    "landmarks": "landmarks",
}
#: allowed range of the numeric columns (inclusive)
RANGES: dict[str, tuple[float, float]] = {
    "intensity": (0.0, 1.0),
    "valence": (-1.0, 1.0),
    "arousal": (-1.0, 1.0),
    "yaw": (-180.0, 180.0),
    "pitch": (-180.0, 180.0),
    "roll": (-180.0, 180.0),
}
META_PREFIX = "meta_"
_STR_COLUMNS = ("identity", "clip", "group", "view")
_FLOAT_COLUMNS = tuple(c for c, t in COLUMNS.items() if t == "float")
_PATH_HINTS = ("file", "filename", "file_name", "filepath", "file_path", "image", "img", "image_path",
               "img_path", "subdirectory_filepath", "name", "image_name")


@dataclass(frozen=True)
class Problem:
    """One validation finding: a stable ``code``, a one-line ``message`` and its ``severity``."""

    code: str
    message: str
    severity: str = "error"  # "error" (manifest unusable) or "warning" (usable, but check it)

    def __str__(self) -> str:
        return self.message if self.severity == "error" else f"warning: {self.message}"


@dataclass
class ValidationReport:
    """All problems found in a manifest (see :func:`validate_manifest`)."""

    path: Path | None
    n_rows: int = 0
    problems: list[Problem] = field(default_factory=list)
    summary_line: str = ""

    @property
    def errors(self) -> list[Problem]:
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        return [p for p in self.problems if p.severity != "error"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def raise_if_failed(self) -> None:
        """Raise :class:`ManifestError` with the first error (+ how many more) when not ok."""
        errs = self.errors
        if errs:
            where = f"{self.path}: " if self.path else ""
            more = f" (and {len(errs) - 1} more)" if len(errs) > 1 else ""
            raise ManifestError(f"{where}{errs[0].message}{more}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "path": str(self.path) if self.path else None,
            "ok": self.ok,
            "n_rows": self.n_rows,
            "summary": self.summary_line,
            "problems": [{"code": p.code, "severity": p.severity, "message": p.message} for p in self.problems],
        }


# --------------------------------------------------------------------------------------------
# parsing helpers
# --------------------------------------------------------------------------------------------


class Collector:
    """Accumulates problems; ``max_listed`` bounds the examples quoted in a message."""

    def __init__(self, max_listed: int = 5) -> None:
        self.problems: list[Problem] = []
        self.max_listed = max(1, int(max_listed))

    def add(self, code: str, message: str, severity: str = "error") -> None:
        self.problems.append(Problem(code, " ".join(message.split()), severity))

    @property
    def has_errors(self) -> bool:
        return any(p.severity == "error" for p in self.problems)

    def examples(self, items: Sequence[str]) -> str:
        shown = ", ".join(items[: self.max_listed])
        return shown + (", ..." if len(items) > self.max_listed else "")


def _n(count: int, noun: str) -> str:
    """'1 row', '3 rows'."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _q(value: object, limit: int = 40) -> str:
    text = str(value)
    text = text if len(text) <= limit else text[: limit - 3] + "..."
    return repr(text)


def _lines(idx: Iterable[int], line_of: Sequence[int], max_listed: int) -> str:
    idx = list(idx)
    shown = ", ".join(str(line_of[i]) for i in idx[:max_listed])
    return ("line " if len(idx) == 1 else "lines ") + shown + (", ..." if len(idx) > max_listed else "")


def _decode_csv(data: bytes, col: Collector) -> tuple[list[str], list[list[str]], list[int]] | None:
    """bytes -> (header, rows, line numbers), or None after recording why it is unreadable."""
    if not data.strip():
        col.add("empty", "the manifest file is empty (expected a header line starting with 'path')")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        col.add("not_utf8", f"not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); "
                            "re-save the CSV with UTF-8 encoding")
        return None
    if "\x00" in text:
        line = text[: text.index("\x00")].count("\n") + 1
        col.add("bad_csv", f"not a text CSV (NUL byte on line {line})")
        return None
    header: list[str] | None = None
    rows: list[list[str]] = []
    line_of: list[int] = []
    ragged: list[tuple[int, int]] = []
    plain = text.replace("\r\n", "\n")
    records: Iterable[tuple[int, list[str]]]
    if '"' not in plain and "\r" not in plain:  # no quoting: plain splitting is exact CSV, and ~5x faster
        records = ((n, line.split(",")) for n, line in enumerate(plain.split("\n"), start=1))
    else:
        reader = csv.reader(io.StringIO(text, newline=""))
        records = ((reader.line_num, rec) for rec in reader)
    line_num = 0
    try:
        for line_num, rec in records:
            if not rec or (len(rec) == 1 and not rec[0].strip()):
                continue  # blank line
            if header is None:
                header = [h.strip() for h in rec]
                continue
            if len(rec) != len(header):
                if len(rec) > len(header) and not any(v.strip() for v in rec[len(header):]):
                    rec = rec[: len(header)]  # trailing empty cells (e.g. a trailing comma)
                elif len(rec) < len(header):
                    ragged.append((line_num, len(rec)))
                    rec = rec + [""] * (len(header) - len(rec))
                else:
                    ragged.append((line_num, len(rec)))
                    continue
            rows.append(rec)
            line_of.append(line_num)
    except csv.Error as exc:
        col.add("bad_csv", f"not a valid CSV (line {line_num + 1}: {exc})")
        return None
    if header is None:
        col.add("empty", "the manifest file is empty (expected a header line starting with 'path')")
        return None
    if ragged:
        lines = ", ".join(str(n) for n, _ in ragged[: col.max_listed])
        col.add("bad_csv", f"wrong number of fields (header has {len(header)}) on {_n(len(ragged), 'line')} "
                           f"(line {lines}); quote values that contain commas")
    return header, rows, line_of


def check_header(header: Sequence[str], col: Collector) -> None:
    if "path" not in header:
        hint = ""
        for name in header:
            if name.lower().replace(" ", "_") in _PATH_HINTS:
                hint = f" (rename '{name}' to 'path'?)"
                break
        col.add("no_path_column", f"no 'path' column{hint}; the manifest needs one image path per row, "
                                  "relative to the manifest's folder")
    seen: set[str] = set()
    for i, name in enumerate(header):
        if not name:
            col.add("unknown_column", f"column {i + 1} has no name (an index saved by pandas? use "
                                      "to_csv(index=False)); name it or prefix it with 'meta_'")
            continue
        if name in seen:
            col.add("duplicate_column", f"column '{name}' appears twice in the header")
        seen.add(name)
        if name in COLUMNS or name.startswith(META_PREFIX):
            continue
        guess = difflib.get_close_matches(name.lower(), list(COLUMNS), n=1, cutoff=0.6)
        hint = f"did you mean '{guess[0]}'? " if guess else ""
        col.add("unknown_column", f"unknown column '{name}': {hint}known columns are "
                                  f"{', '.join(COLUMNS)}; prefix free columns with 'meta_'")


def is_present(v: Any) -> bool:
    """A non-missing cell: not None/NaN/NA and not an empty string."""
    if isinstance(v, str):
        return v.strip() != ""
    if v is None or v is pd.NA:
        return False
    if isinstance(v, (float, np.floating)):
        return not math.isnan(v)
    return True


_WIN_ABS = re.compile(r"[A-Za-z]:[\\/]")


def _is_absolute(p: str) -> bool:
    """Absolute on any OS (``/x``, ``\\server``, ``C:\\x``): such a manifest is not portable."""
    return p[:1] in ("/", "\\") or _WIN_ABS.match(p) is not None or (os.name == "nt" and os.path.isabs(p))


def normalise_path(p: str) -> str:
    """Canonical manifest path: forward slashes, no ``./`` or redundant separators."""
    p = p.strip().replace("\\", "/")
    return posixpath.normpath(p) if p else p


def _check_paths(raw: pd.Series, line_of: Sequence[int], col: Collector) -> list[str]:
    vals = [normalise_path(v) for v in raw.tolist()]
    m = col.max_listed
    empty: list[int] = []
    nul: list[int] = []
    absolute: list[int] = []
    outside: list[int] = []
    first_seen: dict[str, int] = {}
    dups: list[tuple[int, int]] = []
    for i, v in enumerate(vals):
        if not v:
            empty.append(i)
            continue
        if "\x00" in v:
            nul.append(i)
        if _is_absolute(v):
            absolute.append(i)
        elif v[:2] == ".." and (len(v) == 2 or v[2] == "/"):
            outside.append(i)
        j = first_seen.setdefault(v, i)
        if j != i:
            dups.append((j, i))
    if empty:
        col.add("empty_path", f"empty path in {_n(len(empty), 'row')} ({_lines(empty, line_of, m)})")
    if nul:
        col.add("bad_path", f"NUL character in {_n(len(nul), 'path')} ({_lines(nul, line_of, m)})")
    if absolute:
        col.add("absolute_path", f"absolute paths in {_n(len(absolute), 'row')} (first: {_q(vals[absolute[0]], 60)}); "
                                 "paths must be relative to the manifest's folder")
    if outside:
        col.add("outside_root", f"paths leaving the manifest folder in {_n(len(outside), 'row')} (first: "
                                f"{_q(vals[outside[0]], 60)}); paths must stay inside the manifest's folder: "
                                "put the manifest in or above the image folder (builders link it for you)")
    if dups:
        a, b = dups[0]
        col.add("duplicate_path", f"{_n(len(dups), 'duplicate path')} (first: {_q(vals[b], 60)} on lines "
                                  f"{line_of[a]} and {line_of[b]}); each image must appear once")
    return vals


def _check_split(raw: pd.Series, line_of: Sequence[int], col: Collector) -> list[Any]:
    out: list[Any] = []
    bad: dict[str, list[int]] = {}
    missing: list[int] = []
    for i, v in enumerate(raw.tolist()):
        key = v.strip().lower()
        if not key:
            out.append(np.nan)
            missing.append(i)
        elif key in SPLIT_ALIASES:
            out.append(SPLIT_ALIASES[key])
        else:
            out.append(v.strip())
            bad.setdefault(v.strip(), []).append(i)
    present = len(out) - len(missing)
    if present == 0:
        return out  # an all-empty split column counts as absent
    for label, idx in list(bad.items())[: col.max_listed]:
        guess = difflib.get_close_matches(label.lower(), list(SPLIT_ALIASES), n=1, cutoff=0.5)
        hint = f" (did you mean '{SPLIT_ALIASES[guess[0]]}'?)" if guess else ""
        col.add("bad_split", f"unknown split {_q(label)} in {_n(len(idx), 'row')}{hint} "
                             f"({_lines(idx, line_of, col.max_listed)}); use train, val or test")
    if missing:
        col.add("missing_split", f"no split value in {_n(len(missing), 'row')} ({_lines(missing, line_of, col.max_listed)}); "
                                 "give every row a split or drop the column (a subject-disjoint split is "
                                 "then made automatically)")
    names = {v for v in out if isinstance(v, str)}
    for need in ("train", "test"):
        if need not in names:
            col.add("empty_split", f"the split column has no '{need}' rows; give some rows '{need}' or "
                                   "drop the column for an automatic subject-disjoint split")
    return out


def _check_expression(raw: pd.Series, line_of: Sequence[int], col: Collector) -> list[Any]:
    out: list[Any] = []
    bad: dict[str, list[int]] = {}
    cache: dict[str, str | None] = {}
    for i, v in enumerate(raw.tolist()):
        text = v.strip()
        if not text:
            out.append(np.nan)
            continue
        if text not in cache:
            cache[text] = ALIASES.get(text.lower())
        canon = cache[text]
        if canon is None:
            bad.setdefault(text, []).append(i)
            out.append(text)
        else:
            out.append(canon)
    for label, idx in list(bad.items())[: col.max_listed]:
        guess = suggest_expression(label)
        hint = f" (did you mean '{guess}'?)" if guess else ""
        col.add("bad_expression", f"unknown expression label {_q(label)} in {_n(len(idx), 'row')}{hint} "
                                  f"({_lines(idx, line_of, col.max_listed)}); canonical labels are "
                                  f"{', '.join(EXPRESSIONS)}")
    if len(bad) > col.max_listed:
        col.add("bad_expression", f"... and {len(bad) - col.max_listed} more unknown expression labels")
    return out


def _parse_number(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def _check_numeric(name: str, raw: pd.Series, line_of: Sequence[int], col: Collector,
                   integer: bool = False) -> list[float]:
    texts = [v.strip() for v in raw.tolist()]
    lo, hi = RANGES.get(name, (0.0, 2.0**53) if integer else (-math.inf, math.inf))
    try:  # fast path (C parser); any surprise falls back to float() per value
        num = pd.to_numeric(pd.Series(texts, dtype=object).replace("", np.nan), errors="coerce")
        values = np.asarray(num, dtype=np.float64)
    except (ValueError, TypeError, OverflowError):
        values = np.array([_parse_number(t) if t else math.nan for t in texts], dtype=np.float64)
    out: list[float] = []
    bad: list[int] = []
    nonfinite: list[int] = []
    frac: list[int] = []
    outside: list[int] = []
    for i, (text, x) in enumerate(zip(texts, values.tolist())):
        if not text:
            out.append(math.nan)
            continue
        if math.isnan(x):
            y = _parse_number(text)  # pandas refused it: is it a NaN token or not a number at all?
            if y is None:
                bad.append(i)
                out.append(math.nan)
                continue
            x = y
        if not math.isfinite(x):
            nonfinite.append(i)
            out.append(math.nan)
        elif integer and not x.is_integer():
            frac.append(i)
            out.append(math.nan)
        elif not lo <= x <= hi:
            outside.append(i)
            out.append(math.nan)
        else:
            out.append(x)
    m = col.max_listed
    kind = "an integer" if integer else "a number"
    if bad:
        col.add("bad_value", f"column '{name}': not {kind} in {_n(len(bad), 'row')} (first: "
                             f"{_q(raw.iloc[bad[0]])} on line {line_of[bad[0]]})")
    if nonfinite:
        col.add("bad_value", f"column '{name}': NaN or inf in {_n(len(nonfinite), 'row')} "
                             f"({_lines(nonfinite, line_of, m)}); leave missing values empty")
    if frac:
        col.add("bad_value", f"column '{name}': not a whole number in {_n(len(frac), 'row')} (first: "
                             f"{_q(raw.iloc[frac[0]])} on line {line_of[frac[0]]})")
    if outside:
        rng = f"[{lo:g}, {hi:g}]" if name in RANGES else ">= 0"
        col.add("out_of_range", f"column '{name}': value outside {rng} in {_n(len(outside), 'row')} (first: "
                                f"{_q(raw.iloc[outside[0]])} on line {line_of[outside[0]]})")
    return out


def landmark_block(texts: Sequence[str]) -> np.ndarray | None:
    """Fast path: all strings valid -> (n, 68, 2) float32, else None (then parse row by row)."""
    if not texts:
        return np.zeros((0, N_LANDMARKS, 2), np.float32)
    joined = "\n".join(texts).replace(",", " ")
    if '"' in joined or "\r" in joined:
        return None
    try:  # pandas' C parser: ~10x faster than float() per token
        arr = pd.read_csv(io.StringIO(joined), sep=r"\s+", header=None, dtype=np.float64, engine="c",
                          skip_blank_lines=False).to_numpy()
    except Exception:  # noqa: BLE001 - any parse trouble: the exact row-by-row path reports it
        return None
    if (arr.shape != (len(texts), 2 * N_LANDMARKS) or not np.isfinite(arr).all()
            or (arr.size and np.abs(arr).max() > COORDINATE_LIMIT)):
        return None
    return arr.reshape(len(texts), N_LANDMARKS, 2).astype(np.float32)


def _check_landmarks(raw: pd.Series, line_of: Sequence[int], col: Collector) -> list[Any]:
    texts = [v.strip() for v in raw.tolist()]
    present = [t for t in texts if t]
    if landmark_block(present) is not None:
        return [t if t else np.nan for t in texts]
    out: list[Any] = []
    bad: list[int] = []
    reason = ""
    for i, text in enumerate(texts):
        if not text:
            out.append(np.nan)
            continue
        try:
            parse_landmarks(text)
        except ValueError as exc:
            bad.append(i)
            reason = reason or str(exc)
            out.append(np.nan)
            continue
        out.append(text)
    if bad:
        col.add("bad_landmarks", f"column 'landmarks': malformed in {_n(len(bad), 'row')} "
                                 f"({_lines(bad, line_of, col.max_listed)}): {reason}")
    return out


def normalise_frame(raw: pd.DataFrame, line_of: Sequence[int], col: Collector) -> pd.DataFrame:
    """All-text frame -> typed, canonical frame; problems go to ``col``."""
    n = len(raw)
    out: dict[str, Any] = {}
    for name in raw.columns:
        s = raw[name]
        if name == "path":
            out[name] = pd.Series(_check_paths(s, line_of, col), dtype=object)
        elif name == "split":
            out[name] = pd.Series(_check_split(s, line_of, col), dtype=object)
        elif name == "expression":
            out[name] = pd.Series(_check_expression(s, line_of, col), dtype=object)
        elif name in _FLOAT_COLUMNS:
            out[name] = pd.Series(_check_numeric(name, s, line_of, col), dtype="float64")
        elif name == "frame":
            vals = _check_numeric(name, s, line_of, col, integer=True)
            out[name] = pd.array([None if math.isnan(v) else int(v) for v in vals], dtype="Int64")
        elif name == "landmarks":
            out[name] = pd.Series(_check_landmarks(s, line_of, col), dtype=object)
        else:  # identity, clip, group, view and meta_* / unknown columns: stripped text, empty = missing
            vals = [v.strip() for v in s.tolist()]
            out[name] = pd.Series([v if v else np.nan for v in vals], dtype=object)
    frame = pd.DataFrame(out, index=pd.RangeIndex(n))
    return frame


def text_frame(frame: pd.DataFrame) -> pd.DataFrame:
    """Any user frame -> all-text frame (missing = ''), for the same checks as a loaded CSV."""

    def conv(v: Any, name: str) -> str:
        if v is None or v is pd.NA or v is pd.NaT:
            return ""
        if isinstance(v, np.ndarray):
            if name == "landmarks":
                try:
                    return format_landmarks(v)
                except ValueError:
                    return " ".join(str(x) for x in v.reshape(-1))
            return " ".join(str(x) for x in v.reshape(-1))
        if isinstance(v, (float, np.floating)):
            if math.isnan(v):
                return ""
            return repr(float(v))
        if isinstance(v, (bool, np.bool_)):
            return str(bool(v))
        if isinstance(v, (int, np.integer)):
            return str(int(v))
        if isinstance(v, os.PathLike):
            return os.fspath(v)
        return str(v)

    cols = [str(c) for c in frame.columns]
    data = {c: [conv(v, c) for v in frame[orig].tolist()] for c, orig in zip(cols, frame.columns)}
    return pd.DataFrame(data, index=pd.RangeIndex(len(frame)), columns=cols, dtype=object)


def describe_frame(frame: pd.DataFrame) -> str:
    parts = [f"{_n(len(frame), 'row')}"]
    if "split" in frame and frame["split"].notna().any():
        counts = frame["split"].value_counts()
        parts.append(" / ".join(f"{k} {int(counts[k])}" for k in SPLITS if k in counts))
    if "expression" in frame and frame["expression"].notna().any():
        parts.append(f"{frame['expression'].nunique()} expressions")
    if "identity" in frame and frame["identity"].notna().any():
        parts.append(f"{frame['identity'].nunique()} identities")
    if "clip" in frame and frame["clip"].notna().any():
        parts.append(f"{frame['clip'].nunique()} clips")
    if "landmarks" in frame and frame["landmarks"].notna().any():
        parts.append(f"landmarks {int(frame['landmarks'].notna().sum())}")
    return ", ".join(parts)


def _check_files(frame: pd.DataFrame, root: Path, col: Collector, deep: bool) -> None:
    from workbench.data.images import ImageReadError, blank_reason, read_image

    missing: list[str] = []
    unreadable: list[tuple[str, str]] = []
    blank: list[str] = []
    for rel in dict.fromkeys(frame["path"].tolist()):
        if not isinstance(rel, str) or not rel or "\x00" in rel or _is_absolute(rel):
            continue
        p = root / rel
        try:
            st = p.stat()
        except FileNotFoundError:
            missing.append(rel)
            continue
        except (OSError, ValueError) as exc:
            unreadable.append((rel, type(exc).__name__))
            continue
        if not p.is_file():
            unreadable.append((rel, "not a regular file"))
        elif st.st_size == 0:
            unreadable.append((rel, "empty file"))
        elif not os.access(p, os.R_OK):
            unreadable.append((rel, "permission denied"))
        elif deep:
            try:
                if blank_reason(read_image(p)):
                    blank.append(rel)
            except ImageReadError as exc:
                unreadable.append((rel, exc.reason))
    if missing:
        col.add("missing_file", f"missing image files: {len(missing)} of {len(frame)} "
                                f"(first: {col.examples(missing)}) relative to {root}")
    if unreadable:
        shown = col.examples([f"{r} ({why})" for r, why in unreadable])
        col.add("unreadable_file", f"unreadable image files: {len(unreadable)} ({shown})")
    if blank:
        col.add("blank_image", f"blank images (one colour everywhere, no face): {len(blank)} "
                               f"(first: {col.examples(blank)})", severity="warning")


def inspect_manifest(data: bytes, root: Path, col: Collector) -> pd.DataFrame | None:
    parsed = _decode_csv(data, col)
    if parsed is None:
        return None
    header, rows, line_of = parsed
    check_header(header, col)
    if "path" not in header:
        return None
    # duplicated header names: keep the first occurrence only
    keep = [i for i, h in enumerate(header) if h and header.index(h) == i]
    names = [header[i] for i in keep]
    if len(keep) != len(header):
        rows = [[r[i] for i in keep] for r in rows]
    raw = pd.DataFrame(rows, columns=names, dtype=object)
    if not rows:
        col.add("empty", "the manifest has a header but no rows")
        raw = pd.DataFrame({n: pd.Series([], dtype=object) for n in names})
    return normalise_frame(raw, line_of, col)


def read_manifest_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ManifestError(f"manifest not found: {path}") from None
    except IsADirectoryError:
        raise ManifestError(f"{path} is a folder; give the manifest CSV file") from None
    except OSError as exc:
        raise ManifestError(f"cannot read manifest {path}: {exc.strerror or exc}") from None


# --------------------------------------------------------------------------------------------
# public API
# --------------------------------------------------------------------------------------------


def validate_manifest(path: str | os.PathLike[str], *, check_files: bool = True, deep: bool = False,
                      max_listed: int = 5) -> ValidationReport:
    """Check a manifest CSV and return *all* problems found (it does not stop at the first).

    ``check_files`` (default True) also checks that every image exists, is a non-empty regular file
    and is readable; ``deep`` (default False, slow: decodes every image) also catches corrupt images.
    ``max_listed`` bounds the examples quoted per problem. Never raises for a bad manifest: look at
    ``report.ok`` / ``report.problems`` or call ``report.raise_if_failed()``.
    """
    p = Path(path)
    report = ValidationReport(path=p)
    col = Collector(max_listed)
    try:
        data = read_manifest_bytes(p)
    except ManifestError as exc:
        col.add("unreadable_csv", str(exc))
        report.problems = col.problems
        return report
    frame = inspect_manifest(data, p.parent, col)
    if frame is not None:
        report.n_rows = len(frame)
        if check_files and len(frame):
            _check_files(frame, p.parent, col, deep)
        report.summary_line = describe_frame(frame)
    report.problems = col.problems
    return report


__all__ = ["COLUMNS", "META_PREFIX", "RANGES", "Collector", "Problem", "ValidationReport", "check_header",
           "describe_frame", "inspect_manifest", "is_present", "landmark_block", "normalise_frame", "normalise_path",
           "read_manifest_bytes", "text_frame", "validate_manifest"]
