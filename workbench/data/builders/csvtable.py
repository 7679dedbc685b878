"""Generic CSV: any table with one row per image, mapped to manifest columns with
``--columns path=file,expression=emotion,identity=subject`` (target=source). Columns already named
like manifest columns are taken as they are. Paths are relative to ``--images-dir`` (default: the
root). Bad cells never stop the build: a row with a bad path, expression or split is dropped (listed
as a problem), a bad number or landmark string is left empty (counted).
"""

from __future__ import annotations

import csv
import difflib
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from workbench.config import param
from workbench.data.builders.base import (
    BuildContext,
    Builder,
    SplitOptions,
    expression_or_none,
    number_or_none,
    parse_mapping,
)
from workbench.data.landmarks import parse_landmarks
from workbench.data.splits import SPLIT_ALIASES
from workbench.data.validation import COLUMNS, RANGES
from workbench.errors import ConfigError, ManifestError


@dataclass
class CsvOptions(SplitOptions):
    table: str = param("", "The CSV file (relative to the root or absolute); default: the only .csv in the root.")
    columns: str = param("", "Column mapping 'target=source,...', e.g. 'path=file,expression=emotion'.")
    label_map: str = param("", "Expression value mapping 'value=expression,...' (e.g. '0=anger,1=disgust') "
                           "or a .json/.yaml file.")
    images_dir: str = param("", "Folder the table's paths are relative to (relative to the root); default: the root.")
    keep_extra: bool = param(False, "Keep unmapped columns as meta_<name>.")


def _table(ctx: BuildContext, name: str) -> Path:
    if name:
        p = Path(name)
        p = p if p.is_absolute() else ctx.root / p
        if not p.is_file():
            raise ManifestError(f"csv: table not found: {p}")
        return p
    found = sorted(ctx.root.glob("*.csv"))
    if len(found) != 1:
        what = "no .csv file" if not found else f"{len(found)} .csv files"
        raise ManifestError(f"csv: {what} in {ctx.root}; name the table with --table")
    return found[0]


def _mapping(ctx: BuildContext, header: list[str], opts: CsvOptions) -> dict[str, str]:
    mapping = parse_mapping(opts.columns, what="--columns")
    for target, source in mapping.items():
        if target not in COLUMNS and not target.startswith("meta_"):
            guess = difflib.get_close_matches(target, list(COLUMNS), n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise ConfigError(f"csv: --columns target '{target}' is not a manifest column{hint}")
        if source not in header:
            raise ConfigError(f"csv: --columns source '{source}' is not in the table (columns: {', '.join(header)})")
    for name in header:
        if name in COLUMNS and name not in mapping and name not in mapping.values():
            mapping[name] = name
    if "path" not in mapping:
        raise ConfigError(f"csv: no image path column: add --columns path=<column> (columns: {', '.join(header)})")
    if opts.keep_extra:
        used = set(mapping.values())
        for name in header:
            if name not in used:
                mapping[f"meta_{name}"] = name
    return mapping


def build(ctx: BuildContext, opts: CsvOptions) -> list[dict[str, Any]]:
    table = _table(ctx, opts.table)
    base = ctx.root / opts.images_dir if opts.images_dir else ctx.root
    labels = parse_mapping(opts.label_map)
    try:
        with open(table, encoding="utf-8-sig", newline="") as fh:
            records = list(csv.reader(fh))
    except UnicodeDecodeError:
        raise ManifestError(f"csv: {table.name} is not UTF-8 text; re-save it as UTF-8") from None
    except csv.Error as exc:
        raise ManifestError(f"csv: {table.name} is not a valid CSV ({exc})") from None
    records = [r for r in records if r and any(c.strip() for c in r)]
    if not records:
        raise ManifestError(f"csv: {table.name} is empty")
    header = [h.strip() for h in records[0]]
    mapping = _mapping(ctx, header, opts)
    col = {name: i for i, name in enumerate(header)}
    rows = []
    for n, rec in enumerate(records[1:], start=2):
        where = f"{table.name}:{n}"
        cell = {t: (rec[col[s]].strip() if col[s] < len(rec) else "") for t, s in mapping.items()}
        if not cell["path"]:
            ctx.problem(where, "empty path")
            continue
        rel = Path(cell["path"])
        row: dict[str, Any] = {"path": rel if rel.is_absolute() else base / rel}
        ok = True
        for target, value in cell.items():
            if target == "path" or value == "":
                continue
            kind = COLUMNS.get(target, "meta")
            if target == "expression":
                expr, why = expression_or_none(value, labels)
                if expr is None:
                    ctx.problem(where, why)
                    ok = False
                    break
                row[target] = expr
            elif target == "split":
                if value.lower() not in SPLIT_ALIASES:
                    ctx.problem(where, f"unknown split {value!r}")
                    ok = False
                    break
                row[target] = SPLIT_ALIASES[value.lower()]
            elif kind in ("float", "int"):
                lo, hi = RANGES.get(target, (-math.inf, math.inf) if kind == "float" else (0, 2.0**53))
                x = number_or_none(value, lo, hi)
                if x is None or (kind == "int" and not x.is_integer()):
                    ctx.count(f"{target}: invalid values left empty")
                    continue
                row[target] = int(x) if kind == "int" else x
            elif kind == "landmarks":
                try:
                    row[target] = parse_landmarks(value)
                except ValueError:
                    ctx.count("landmarks: malformed values left empty")
            else:
                row[target] = value
        if ok:
            rows.append(row)
    return rows


BUILDER = Builder(
    name="csv", build=build, options=CsvOptions,
    description="Generic: any CSV table with a column mapping (--columns path=file,expression=emotion)",
    citation="(generic layout; cite the dataset you use)",
    layout="ROOT/<table>.csv with an image path column + images relative to ROOT",
)
