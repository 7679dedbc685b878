"""Dataset builders: one module per dataset layout, each turning the original files into a manifest.

``BUILDERS`` maps a format name to a :class:`~workbench.data.builders.base.Builder` (callable as
``BUILDERS[name](root, out, **options)``); :func:`build_manifest` runs one and writes the manifest.
Builders never stop at the first bad file: every skipped file is listed with its reason in the
:class:`~workbench.data.builders.base.BuildReport`, and deliberate drops (e.g. AffectNet's
"uncertain" class) are counted. Manifest paths are written relative to the output manifest's folder.

The dataset specs (citation, licence and access, layout, labels, splits) live in
``data_manifests/<name>.yaml``; ``workbench manifest formats`` lists them.
"""

from __future__ import annotations

import difflib
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from workbench.config import from_dict
from workbench.data.builders import (
    affectnet,
    ckplus,
    ckplus48,
    csvtable,
    ddcf,
    fer2013,
    ferplus,
    folder,
    jaffe,
    kdef,
    rafdb,
    voxceleb,
)
from workbench.data.builders.base import BuildContext, Builder, BuildReport
from workbench.data.landmarks import format_landmarks
from workbench.errors import ManifestError

_MODULES = (rafdb, affectnet, fer2013, ferplus, kdef, ddcf, ckplus, ckplus48, jaffe, voxceleb, folder, csvtable)

#: format name -> Builder (callable: ``BUILDERS["jaffe"](root, out, **options) -> BuildReport``)
BUILDERS: dict[str, Builder] = {m.BUILDER.name: m.BUILDER for m in _MODULES}

__all__ = ["BUILDERS", "BuildReport", "Builder", "build_manifest", "spec_path"]


def spec_path(name: str) -> Path | None:
    """The ``data_manifests/<spec>.yaml`` of a format in a source checkout, or None."""
    b = BUILDERS.get(name)
    if b is None:
        return None
    p = Path(__file__).resolve().parents[3] / "data_manifests" / f"{b.spec or b.name}.yaml"
    return p if p.is_file() else None


def get_builder(name: str) -> Builder:
    """The builder registered as ``name``; unknown names raise ManifestError with a suggestion."""
    key = str(name).strip().lower()
    if key in BUILDERS:
        return BUILDERS[key]
    guess = difflib.get_close_matches(key, list(BUILDERS), n=1, cutoff=0.5)
    hint = f" (did you mean '{guess[0]}'?)" if guess else ""
    raise ManifestError(f"unknown dataset format '{name}'{hint}; known formats: {', '.join(BUILDERS)}")


def _rel(abs_path: Path, out_dir: Path) -> str:
    return Path(os.path.relpath(os.path.abspath(abs_path), os.path.abspath(out_dir))).as_posix()


def _image_root_link(root: Path, out_dir: Path, name: str) -> Path:
    """Where image paths are taken from, so that every manifest path stays inside its folder.

    When the dataset root is the manifest's folder or below it, that is the root itself. Otherwise
    (a manifest written elsewhere, e.g. next to read-only licensed data) a symbolic link
    ``OUT_DIR/<name>-images`` → root is created (or reused) and paths go through it.
    """
    root_abs, out_abs = Path(os.path.abspath(root)), Path(os.path.abspath(out_dir))
    if root_abs == out_abs or out_abs in root_abs.parents:
        return root_abs
    link = out_abs / f"{name}-images"
    if link.is_symlink() or link.exists():
        if link.resolve() != root_abs.resolve():
            raise ManifestError(f"{link} already exists and does not point to {root_abs}; remove it or choose "
                                "another --out folder")
    else:
        try:
            link.symlink_to(root_abs.resolve(), target_is_directory=True)
        except OSError as exc:
            raise ManifestError(f"cannot link {link} → {root_abs} ({exc.strerror}); put the manifest in or above "
                                "the dataset folder instead") from None
    return link


def build_manifest(format: str, root: str | os.PathLike[str], out: str | os.PathLike[str], *,
                   verify: bool = False, **options: Any) -> BuildReport:
    """Build the manifest of dataset ``format`` found under ``root`` and write it to ``out`` (.csv).

    ``options`` are the format's options (see ``workbench manifest build FORMAT --help``).
    ``verify`` (default False; slow) decodes every image and drops unreadable ones; otherwise
    images are only checked to exist. Returns the :class:`BuildReport`; raises ManifestError when
    no usable row is left (saying why) and ConfigError for bad options.
    """
    from workbench.data.images import ImageReadError, read_image
    from workbench.data.manifest import Manifest
    from workbench.data.splits import assign_splits

    builder = get_builder(format)
    opts = from_dict(builder.options, options, where=builder.name)
    root_p = Path(root).expanduser()
    out_p = Path(out).expanduser()
    if not root_p.is_dir():
        raise ManifestError(f"{builder.name}: root folder not found: {root_p}")
    if out_p.suffix.lower() != ".csv":
        raise ManifestError(f"--out must be a .csv file, got {out_p}")
    report = BuildReport(format=builder.name, root=root_p, out=out_p)
    ctx = BuildContext(root=root_p, out=out_p, report=report)
    out_p.parent.mkdir(parents=True, exist_ok=True)
    raw_rows = builder.build(ctx, opts)

    image_root = _image_root_link(root_p, out_p.parent, builder.name)
    rows: list[dict[str, Any]] = []
    for row in raw_rows:
        p = Path(row["path"])
        abs_p = p if p.is_absolute() else root_p / p
        if verify:
            try:
                read_image(abs_p)
            except ImageReadError as exc:
                ctx.problem(abs_p, exc.reason)
                continue
        elif not abs_p.is_file():
            ctx.problem(abs_p, "image file not found")
            continue
        new = dict(row)
        under_root = Path(os.path.abspath(root_p)) in Path(os.path.abspath(abs_p)).parents
        new["path"] = _rel(image_root / os.path.relpath(os.path.abspath(abs_p), os.path.abspath(root_p))
                           if under_root else abs_p, out_p.parent)
        lm = new.get("landmarks")
        if isinstance(lm, np.ndarray):
            new["landmarks"] = format_landmarks(lm) if np.all(np.isfinite(lm)) else ""
        rows.append(new)

    if not rows:
        if report.problems:
            why, files = report.problem_groups()[0]
            reason = f"all {len(report.problems)} candidate files had problems (most common: {why}, {len(files)}x)"
        elif report.counts:
            reason = "every file was dropped (" + ", ".join(f"{k}: {v}" for k, v in report.counts.items()) + ")"
        else:
            reason = f"nothing matched the expected layout: {builder.layout}"
        raise ManifestError(f"{builder.name}: no usable images under {root_p}: {reason}")

    frame = pd.DataFrame(rows)
    if getattr(opts, "split", None) == "auto" and ("split" not in frame or frame["split"].isna().all()):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            frame["split"] = assign_splits(frame, seed=int(getattr(opts, "seed", 0)))
        for w in caught:
            report.counts[f"note: {w.message}"] += 1
    if "split" in frame:
        present = set(frame["split"].dropna())
        if present and not {"train", "test"} <= present:
            # too few identities for an automatic split, or a partial download of an official one
            frame = frame.rename(columns={"split": "meta_split"})
            report.counts["note: no train and test rows in the split, kept as meta_split"] += len(frame)
    manifest = Manifest.from_frame(frame, out_p.parent)
    manifest.save(out_p)
    report.rows = len(manifest)
    if image_root != Path(os.path.abspath(root_p)):
        report.counts[f"note: images reached through the link {image_root} → {root_p}"] = len(manifest)
    _expected_note(builder, rows, report)
    n_probs = len(report.problems)
    report.summary_line = (f"{builder.name}: wrote {out_p} ({manifest.summary()}); "
                           f"{n_probs} problem{'s' if n_probs != 1 else ''}")
    return report


def _expected_note(builder: Builder, rows: list[dict[str, Any]], report: BuildReport, max_listed: int = 8) -> None:
    """``note: 4,897 of 4,900 expected images (the full KDEF release); missing: ...`` when fewer are found."""
    if not builder.expected or len(rows) >= builder.expected:
        return
    line = f"note: {len(rows):,} of {builder.expected:,} expected images (the full {builder.name} release)"
    if builder.expected_names is not None:
        found = {Path(str(r["path"])).stem.upper() for r in rows}
        missing = sorted(n for n in builder.expected_names() if n.upper() not in found)
        if missing:
            line += "; missing: " + ", ".join(missing[:max_listed]) + (", ..." if len(missing) > max_listed else "")
    report.counts[line] = builder.expected - len(rows)
