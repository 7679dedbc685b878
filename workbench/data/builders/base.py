"""Shared machinery of the dataset builders: the report, the build context and small parsers.

A builder is a function ``build(ctx: BuildContext, opts) -> list[dict]`` returning one dict per
image (``path`` = absolute or root-relative :class:`~pathlib.Path`, plus manifest columns); it
records every skipped file with :meth:`BuildContext.problem` and every deliberate drop with
:meth:`BuildContext.count` instead of raising. :func:`workbench.data.builders.build_manifest`
turns the rows into a validated manifest.
"""

from __future__ import annotations

import json
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from workbench.config import param
from workbench.data.images import is_image_file
from workbench.data.vocabulary import ALIASES, suggest_expression
from workbench.errors import ConfigError, ManifestError


@dataclass
class BuildReport:
    """What a build did: rows written, per-file problems (file, reason) and counts of drops/labels."""

    format: str
    root: Path
    out: Path | None = None
    rows: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    summary_line: str = ""

    @property
    def n_problems(self) -> int:
        return len(self.problems)

    def problem_groups(self) -> list[tuple[str, list[str]]]:
        """Problems grouped by reason, most frequent first: ``[(reason, [files...]), ...]``."""
        groups: dict[str, list[str]] = {}
        for f, why in self.problems:
            groups.setdefault(why, []).append(f)
        return sorted(groups.items(), key=lambda kv: -len(kv[1]))

    def lines(self, max_listed: int = 5) -> list[str]:
        """Human-readable lines: the summary, the counts, then problems grouped by reason."""
        out = [self.summary_line] if self.summary_line else []
        for key, n in sorted(self.counts.items()):
            out.append(f"  {key}: {n}")
        for why, files in self.problem_groups()[: max(1, max_listed * 2)]:
            shown = ", ".join(files[:max_listed]) + (", ..." if len(files) > max_listed else "")
            out.append(f"  problem: {why}: {len(files)} file{'s' if len(files) != 1 else ''} ({shown})")
        n_groups = len(self.problem_groups())
        if n_groups > max_listed * 2:
            out.append(f"  ... and {n_groups - max_listed * 2} more kinds of problems")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": self.format, "root": str(self.root), "out": str(self.out) if self.out else None,
            "rows": self.rows, "counts": dict(self.counts), "summary": self.summary_line,
            "problems": [{"file": f, "reason": r} for f, r in self.problems],
        }


@dataclass
class BuildContext:
    """Where a builder reads (``root``) and writes (``out`` = the manifest path), and its report."""

    root: Path
    out: Path
    report: BuildReport

    @property
    def out_dir(self) -> Path:
        return self.out.parent

    def problem(self, file: str | os.PathLike[str], reason: str) -> None:
        """Record a file that was skipped, with a short reason."""
        self.report.problems.append((self.show(file), " ".join(str(reason).split())))

    def count(self, key: str, n: int = 1) -> None:
        """Count a deliberate drop or a notable fact (e.g. ``'dropped: uncertain'``)."""
        self.report.counts[key] += n

    def show(self, file: str | os.PathLike[str]) -> str:
        """A file name for messages: relative to root when possible."""
        p = Path(file)
        try:
            return p.relative_to(self.root).as_posix()
        except ValueError:
            return p.as_posix()

    def images(self, under: Path | None = None) -> Iterator[Path]:
        """All image files below ``under`` (default root), sorted, skipping hidden files/folders."""
        base = under or self.root
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in sorted(filenames):
                if not name.startswith(".") and is_image_file(name):
                    yield Path(dirpath) / name

    def find(self, *candidates: str, max_depth: int = 3) -> Path | None:
        """First existing path among ``candidates`` (relative to root), else a file with the same
        name found up to ``max_depth`` folders below root; None when absent."""
        for c in candidates:
            p = self.root / c
            if p.exists():
                return p
        names = {Path(c).name for c in candidates}
        base_depth = len(self.root.parts)
        for dirpath, dirnames, filenames in os.walk(self.root):
            depth = len(Path(dirpath).parts) - base_depth
            dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")) if depth < max_depth else []
            for n in sorted(filenames):
                if n in names:
                    return Path(dirpath) / n
        return None


@dataclass(frozen=True)
class Builder:
    """A registered dataset layout: build function, options dataclass, description and citation."""

    name: str
    build: Callable[[BuildContext, Any], list[dict[str, Any]]]
    options: type
    description: str
    citation: str
    layout: str  # one-line expected layout, quoted when nothing usable is found
    spec: str = ""  # name of data_manifests/<spec>.yaml
    #: images of the complete official release (0 = unknown): a build that finds fewer says so
    expected: int = 0
    #: file names of the complete release (without extension), when the naming scheme enumerates them
    expected_names: Callable[[], set[str]] | None = None

    def __call__(self, root: str | os.PathLike[str], out: str | os.PathLike[str], **options: Any) -> BuildReport:
        from workbench.data.builders import build_manifest

        return build_manifest(self.name, root, out, **options)


@dataclass
class SplitOptions:
    """Options shared by builders of datasets without an official split."""

    split: str = param("auto", "train/val/test: 'auto' = seeded subject-disjoint split by identity "
                       "(0.7/0.15/0.15), 'none' = no split column (made on the fly when needed).",
                       choices=("auto", "none"))
    seed: int = param(0, "Seed of the automatic subject-disjoint split; keep it fixed to compare runs.")


# ---------------------------------------------------------------------------------------------
# small parsers shared by builders
# ---------------------------------------------------------------------------------------------


def parse_mapping(text: str | dict[str, Any] | None, *, what: str = "label map") -> dict[str, str]:
    """``"happy=happiness,0=anger"`` or a path to a .json/.yaml mapping file -> dict (keys as text)."""
    if not text:
        return {}
    if isinstance(text, dict):
        return {str(k).strip(): str(v).strip() for k, v in text.items()}
    s = str(text).strip()
    p = Path(s)
    if p.suffix.lower() in (".json", ".yaml", ".yml"):
        if not p.is_file():
            raise ConfigError(f"{what} file not found: {p}")
        try:
            raw = p.read_text(encoding="utf-8")
            if p.suffix.lower() == ".json":
                data = json.loads(raw)
            else:
                import yaml

                data = yaml.safe_load(raw)
        except Exception as exc:  # noqa: BLE001 - json/yaml/unicode errors all mean "bad file"
            raise ConfigError(f"{what} file {p} is not valid: {str(exc).splitlines()[0]}") from None
        if not isinstance(data, dict):
            raise ConfigError(f"{what} file {p} must contain a mapping of source: target")
        return {str(k).strip(): str(v).strip() for k, v in data.items()}
    out: dict[str, str] = {}
    for item in re.split(r"[,;]", s):
        if not item.strip():
            continue
        if "=" not in item:
            raise ConfigError(f"{what}: expected 'source=target' items separated by commas, got {item.strip()!r}")
        k, v = item.split("=", 1)
        if not k.strip() or not v.strip():
            raise ConfigError(f"{what}: empty side in {item.strip()!r}")
        out[k.strip()] = v.strip()
    return out


def expression_or_none(label: object, label_map: dict[str, str] | None = None) -> tuple[str | None, str]:
    """Map a raw label to a canonical expression: ``(name, "")`` or ``(None, reason)``."""
    text = str(label).strip()
    if label_map:
        text = label_map.get(text, label_map.get(text.lower(), text))
    key = text.lower()
    if key in ALIASES:
        return ALIASES[key], ""
    guess = suggest_expression(text)
    hint = f" (closest: '{guess}'; map it with --label-map)" if guess else " (map it with --label-map)"
    return None, f"unknown expression label {text!r}{hint}"


def number_or_none(text: object, lo: float = -math.inf, hi: float = math.inf) -> float | None:
    """A finite float within [lo, hi], else None."""
    try:
        x = float(str(text).strip())
    except ValueError:
        return None
    return x if math.isfinite(x) and lo <= x <= hi else None


def require_file(path: Path | None, what: str, layout: str) -> Path:
    """Return ``path`` or raise a one-line ManifestError describing the expected layout."""
    if path is None or not path.exists():
        raise ManifestError(f"{what} not found; expected layout: {layout}")
    return path
