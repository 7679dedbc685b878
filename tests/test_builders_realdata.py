"""The JAFFE and CK+48 builders reproduce the reference labels of the shared real data (opt-in)."""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd
import pytest

from workbench.cli.main import main
from workbench.data.builders import build_manifest
from workbench.data.manifest import Manifest
from workbench.data.validation import validate_manifest

SHARED = Path(os.environ.get("WORKBENCH_SHARED_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))

pytestmark = pytest.mark.realdata


def _shared(name: str) -> Path:
    p = SHARED / name
    if not (p / "images").is_dir() or not (p / "manifest.csv").is_file():
        pytest.skip(f"real dataset '{name}' not available at {p}")
    return p


def _reference(folder: Path) -> pd.DataFrame:
    ref = pd.read_csv(folder / "manifest.csv", dtype=str, keep_default_na=False)  # identity 'NA' is a name
    ref["name"] = ref["path"].map(lambda p: p.split("/")[-1])
    return ref.set_index("name")


def _compare(ours: Manifest, ref: pd.DataFrame) -> None:
    names = [p.split("/")[-1] for p in ours.frame["path"]]
    assert sorted(names) == sorted(ref.index)
    got = ours.frame.assign(name=names).set_index("name").loc[ref.index]
    assert (got["expression"] == ref["expression"]).all()
    assert (got["identity"] == ref["identity"]).all()


def test_jaffe_cli_reproduces_reference(tmp_path, capsys):
    folder = _shared("jaffe")
    out = tmp_path / "jaffe.csv"
    assert main(["manifest", "build", "jaffe", "--root", str(folder / "images"), "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "213 rows" in text and "10 identities" in text and "0 problems" in text
    m = Manifest.load(out)
    _compare(m, _reference(folder))
    assert set(m.frame["split"]) == {"train", "val", "test"}
    r = validate_manifest(out)
    assert r.ok, r.problems


def test_ckplus48_reproduces_reference(tmp_path):
    folder = _shared("ckplus48")
    rep = build_manifest("ckplus48", folder / "images", tmp_path / "ck48.csv")
    assert rep.rows == 981 and not rep.problems
    m = Manifest.load(tmp_path / "ck48.csv")
    ref = _reference(folder)
    _compare(m, ref)
    got = m.frame.assign(name=[p.split("/")[-1] for p in m.frame["path"]]).set_index("name").loc[ref.index]
    assert (got["clip"] == ref["sequence"]).all() and (got["frame"].astype(int) == ref["frame"].astype(int)).all()
    assert m.frame["identity"].nunique() == 118 and m.frame["clip"].nunique() == 327
    # subject-disjoint automatic split
    ids = {s: set(m.split(s).frame["identity"]) for s in ("train", "val", "test")}
    assert not (ids["train"] & ids["test"]) and not (ids["train"] & ids["val"]) and not (ids["val"] & ids["test"])
