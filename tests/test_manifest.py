"""Manifest: loading/normalising, every validation rule, splits, labels, landmarks, saving, fingerprint."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from workbench.data.manifest import Manifest
from workbench.data.splits import assign_splits, subject_folds
from workbench.data.validation import COLUMNS, validate_manifest
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import ConfigError, ManifestError, MissingMetadataError, WorkbenchError

LM = " ".join(f"{v:.1f}" for v in np.arange(136) % 40 + 1)


def _img(p, size=(16, 16)):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, (90, 90, 90)).save(p)


def _write(tmp_path, text: str | bytes, name="m.csv"):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


@pytest.fixture
def good(tmp_path):
    for i in range(8):
        _img(tmp_path / "img" / f"{i}.png")
    rows = ["path,split,expression,identity,valence,frame,landmarks,meta_note"]
    ids = ["a", "a", "b", "b", "c", "c", "d", "007"]
    exprs = ["happy", "Angry", "neutral", "SA", "surprise", "fear", "disgust", "contempt"]
    splits = ["train", "training", "train", "val", "test", "test", "train", "train"]
    for i in range(8):
        lm = LM if i % 2 == 0 else ""
        rows.append(f"img/{i}.png,{splits[i]},{exprs[i]},{ids[i]},{0.1 * i - 0.3:.1f},{i},{lm},x{i}")
    return _write(tmp_path, "\n".join(rows) + "\n")


def test_columns_schema_matches_architecture():
    assert list(COLUMNS) == ["path", "split", "expression", "identity", "intensity", "valence", "arousal",
                             "clip", "frame", "view", "group", "yaw", "pitch", "roll", "landmarks"]
    assert COLUMNS["frame"] == "int" and COLUMNS["valence"] == "float" and COLUMNS["path"] == "str"


def test_load_normalises(good):
    m = Manifest.load(good)
    assert len(m) == 8 and m.root == good.parent and m.path == good
    f = m.frame
    assert f["expression"].tolist()[:4] == ["happiness", "anger", "neutral", "sadness"]
    assert f["split"].tolist()[1] == "train"
    assert f["identity"].tolist()[7] == "007"  # ids stay strings, leading zeros kept
    assert str(f["frame"].dtype) == "Int64" and f["valence"].dtype == np.float64
    assert m.has("landmarks") and m.has("meta_note") and not m.has("clip")
    assert m.abs_paths()[0] == good.parent / "img" / "0.png"
    assert "8 rows" in m.summary()


def test_labels_and_landmarks(good):
    m = Manifest.load(good)
    codes, names = m.labels("expression")
    assert names == list(EXPRESSIONS) and codes[0] == EXPRESSIONS.index("happiness") and codes.dtype == np.int64
    ids, id_names = m.labels("identity")
    assert id_names == ["007", "a", "b", "c", "d"] and ids[0] == 1
    lms = m.landmarks()
    assert lms.shape == (8, 68, 2) and lms.dtype == np.float32
    assert np.isfinite(lms[0]).all() and np.isnan(lms[1]).all()
    with pytest.raises(MissingMetadataError):
        m.labels("clip")


def test_require_names_purpose(good):
    m = Manifest.load(good)
    m.require("identity", purpose="x")
    with pytest.raises(MissingMetadataError) as ei:
        m.require("clip", "group", purpose="SSL-FER temporal sampling")
    msg = str(ei.value)
    assert msg.startswith("SSL-FER temporal sampling needs column 'clip'") and "group" in msg and "\n" not in msg


def test_subset_and_split(good):
    m = Manifest.load(good)
    sub = m.subset(m.frame["identity"] == "a")
    assert len(sub) == 2 and list(sub.frame.index) == [0, 1]
    assert len(m.subset([0, 2, 4])) == 3
    assert len(m.split("train")) == 5 and len(m.split("validation")) == 1 and len(m.split("test")) == 2
    with pytest.raises(ManifestError):
        m.split("holdout")


def test_auto_split_is_subject_disjoint(tmp_path):
    frame = pd.DataFrame({"path": [f"{i}.png" for i in range(200)], "identity": [f"s{i % 20}" for i in range(200)]})
    m = Manifest.from_frame(frame, tmp_path)
    parts = {s: set(m.split(s).frame["identity"]) for s in ("train", "val", "test")}
    assert all(parts.values())
    assert not (parts["train"] & parts["test"]) and not (parts["train"] & parts["val"])
    assert sum(len(m.split(s)) for s in parts) == 200
    again = assign_splits(m.frame, seed=0)
    assert (again == assign_splits(m.frame, seed=0)).all()
    assert not (again == assign_splits(m.frame, seed=1)).all()
    assert 100 <= (again == "train").sum() <= 170


def test_assign_splits_keeps_official_and_warns_without_ids():
    f = pd.DataFrame({"path": list("abcd"), "split": ["test", "train", None, None]})
    with pytest.warns(UserWarning):
        s = assign_splits(f, seed=0)
    assert s.iloc[0] == "test" and s.iloc[1] == "train" and set(s) <= {"train", "val", "test"}
    with pytest.warns(UserWarning, match="no identity"):
        assign_splits(pd.DataFrame({"path": list("abcdef")}))
    with pytest.raises(ConfigError):
        assign_splits(f, fractions=(0.5, 0.5, 0.5))
    few = pd.DataFrame({"path": list("abc"), "identity": list("xyz")})
    assert set(assign_splits(few)) == {"train", "val", "test"}


def test_subject_folds():
    f = pd.DataFrame({"identity": [f"s{i % 10}" for i in range(100)]})
    folds = subject_folds(f, 5, seed=0)
    assert set(folds) == set(range(5))
    for _ident, grp in pd.Series(folds).groupby(f["identity"]):
        assert grp.nunique() == 1
    with pytest.raises(ConfigError):
        subject_folds(f, 11)


def test_save_roundtrip_and_relocation(good, tmp_path):
    m = Manifest.load(good)
    p = m.save(tmp_path / "copy.csv")
    again = Manifest.load(p)
    pd.testing.assert_frame_equal(again.frame, Manifest.load(good).frame)
    up = Manifest.load(good)
    moved = up.save(tmp_path / "sub" / "deeper" / "m.csv")
    assert Manifest.load(moved, validate=False).frame["path"][0] == "../../img/0.png"
    assert up.abs_paths()[0].resolve() == (tmp_path / "img" / "0.png").resolve()
    assert not list(tmp_path.glob(".*.tmp")) and not list((tmp_path / "sub" / "deeper").glob(".*.tmp"))
    with pytest.raises(ManifestError):
        m.save(tmp_path / "x.txt")


def test_from_frame_encodes_arrays_and_validates(tmp_path):
    lm = np.zeros((68, 2), np.float32) + 3
    m = Manifest.from_frame(pd.DataFrame({"path": ["a.png", "b.png"], "landmarks": [lm, None],
                                          "frame": [1.0, np.nan], "expression": ["happy", None]}), tmp_path)
    assert m.landmarks()[0, 0, 0] == 3 and np.isnan(m.landmarks()[1]).all()
    assert m.frame["frame"].tolist()[0] == 1 and m.frame["expression"][0] == "happiness"
    with pytest.raises(ManifestError, match="unknown expression"):
        Manifest.from_frame(pd.DataFrame({"path": ["a.png"], "expression": ["joyish"]}), tmp_path)
    with pytest.raises(ManifestError, match="no 'path' column"):
        Manifest.from_frame(pd.DataFrame({"file": ["a.png"]}), tmp_path)


def test_fingerprint_changes_with_files(good):
    m = Manifest.load(good)
    fp = m.fingerprint()
    assert fp == Manifest.load(good).fingerprint() and len(fp) == 64
    img = good.parent / "img" / "3.png"
    Image.new("RGB", (20, 20)).save(img)
    os.utime(img, ns=(1, 1))
    assert Manifest.load(good).fingerprint() != fp


def test_valid_manifest_reports_ok(good):
    r = validate_manifest(good)
    assert r.ok and r.n_rows == 8 and not r.problems and "8 rows" in r.summary_line
    r.raise_if_failed()


# ---- every validation rule: one clear line each ------------------------------------------------

CASES = [
    ("no_path_column", "file,expression\na.png,happy\n", "rename 'file' to 'path'"),
    ("unknown_column", "path,expresion\na.png,happy\n", "did you mean 'expression'"),
    ("bad_expression", "path,expression\na.png,hapy\n", "did you mean 'happiness'"),
    ("bad_value", "path,valence\na.png,abc\n", "not a number"),
    ("bad_value", "path,arousal\na.png,nan\n", "NaN or inf"),
    ("out_of_range", "path,valence\na.png,1.5\n", "outside [-1, 1]"),
    ("bad_value", "path,frame\na.png,2.5\n", "not a whole number"),
    ("bad_landmarks", "path,landmarks\na.png,1 2 3\n", "136 numbers"),
    ("absolute_path", "path\n/etc/passwd\n", "absolute"),
    ("absolute_path", "path\nC:\\\\data\\\\a.png\n", "absolute"),
    ("duplicate_path", "path\na.png\n./a.png\n", "duplicate"),
    ("bad_split", "path,split\na.png,train\nb.png,tset\nc.png,test\n", "did you mean 'test'"),
    ("empty_split", "path,split\na.png,train\nb.png,val\n", "no 'test' rows"),
    ("missing_split", "path,split\na.png,train\nb.png,\nc.png,test\n", "no split value"),
    ("empty", "path,expression\n", "no rows"),
    ("empty", "", "empty"),
    ("not_utf8", b"path,identity\na.png,\xff\xfe\n", "UTF-8"),
    ("bad_csv", b"path,identity\na.png,x\x00y\n", "NUL"),
    ("bad_csv", "path,identity\na.png,x,y,z\n", "wrong number of fields"),
    ("duplicate_column", "path,identity,identity\na.png,x,y\n", "twice"),
    ("unknown_column", ",path\n0,a.png\n", "index"),
    ("empty_path", "path,identity\n,x\n", "empty path"),
]


@pytest.mark.parametrize("code, text, needle", CASES)
def test_each_problem_is_one_clear_line(tmp_path, code, text, needle):
    p = _write(tmp_path, text)
    r = validate_manifest(p, check_files=False)
    assert not r.ok
    hits = [x for x in r.problems if x.code == code]
    assert hits, [(x.code, x.message) for x in r.problems]
    assert any(needle in x.message for x in hits), hits
    assert all("\n" not in x.message for x in r.problems)
    with pytest.raises(ManifestError) as ei:
        Manifest.load(p)
    assert "\n" not in str(ei.value) and isinstance(ei.value, WorkbenchError)


def test_all_problems_are_collected(tmp_path):
    p = _write(tmp_path, "path,expresion,valence,split,frame\na.png,x,3,train,1.5\na.png,y,abc,foo,2\n")
    r = validate_manifest(p)
    codes = {x.code for x in r.problems}
    assert {"unknown_column", "duplicate_path", "out_of_range", "bad_value", "bad_split", "missing_file"} <= codes
    with pytest.raises(ManifestError, match=r"\(and \d+ more\)"):
        r.raise_if_failed()


def test_missing_and_unreadable_files(tmp_path):
    _img(tmp_path / "ok.png")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "corrupt.png").write_bytes(b"garbage" * 20)
    rows = "path\nok.png\nempty.png\ncorrupt.png\n" + "".join(f"gone{i}.png\n" for i in range(9))
    p = _write(tmp_path, rows)
    r = validate_manifest(p, max_listed=3)
    missing = next(x for x in r.problems if x.code == "missing_file")
    assert "9 of 12" in missing.message and "gone0.png" in missing.message and "gone5.png" not in missing.message
    unreadable = next(x for x in r.problems if x.code == "unreadable_file")
    assert "empty.png" in unreadable.message and "corrupt.png" not in unreadable.message
    deep = validate_manifest(p, deep=True)
    assert "corrupt.png" in next(x for x in deep.problems if x.code == "unreadable_file").message
    assert validate_manifest(p, check_files=False).ok


def test_outside_root_is_an_error(tmp_path):
    _img(tmp_path / "img" / "a.png")
    sub = tmp_path / "manifests"
    sub.mkdir()
    p = _write(sub, "path\n../img/a.png\n")
    r = validate_manifest(p)
    assert not r.ok and [e.code for e in r.errors] == ["outside_root"]
    with pytest.raises(ManifestError, match="leaving the manifest folder"):
        Manifest.load(p)


def test_aliases_and_bom_and_blank_lines(tmp_path):
    p = _write(tmp_path, "\ufeffpath,expression,split\n\na.png,HAPPY,Training\nb.png,angry,testing\n\n")
    m = Manifest.load(p)
    assert m.frame["expression"].tolist() == ["happiness", "anger"]
    assert m.frame["split"].tolist() == ["train", "test"]


def test_load_errors_are_manifest_errors(tmp_path):
    with pytest.raises(ManifestError, match="not found"):
        Manifest.load(tmp_path / "nope.csv")
    with pytest.raises(ManifestError, match="folder"):
        Manifest.load(tmp_path)


def test_validate_false_keeps_going(tmp_path):
    p = _write(tmp_path, "path,valence,expression\na.png,abc,hapy\nb.png,0.5,sad\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = Manifest.load(p, validate=False)
    assert np.isnan(m.frame["valence"][0]) and m.frame["valence"][1] == 0.5
    codes, _ = m.labels("expression")
    assert codes.tolist() == [-1, EXPRESSIONS.index("sadness")]


@pytest.mark.parametrize("value", ["1e300", "-1e300", "2e6"])
def test_landmarks_beyond_the_coordinate_limit_are_flagged(tmp_path, value):
    """1e300 is finite in float64 but inf in the float32 cache: it must not pass validation."""
    _img(tmp_path / "img" / "0.png")
    _img(tmp_path / "img" / "1.png")
    huge = " ".join([value] + LM.split()[1:])
    p = _write(tmp_path, f"path,expression,identity,landmarks\nimg/0.png,happy,a,{LM}\nimg/1.png,sad,b,{huge}\n")
    report = validate_manifest(p)
    assert any("landmark coordinates must lie within" in str(x) for x in report.problems), report.problems


def test_links_inside_the_root_are_followed_but_dotdot_is_refused(tmp_path):
    """Policy: the path text must stay inside the manifest folder; a link inside it may point anywhere
    (builders link a read-only dataset root next to the manifest, so licensed data is never copied)."""
    outside = tmp_path / "dataset"
    _img(outside / "0.png")
    _img(outside / "1.png")
    root = tmp_path / "work"
    root.mkdir()
    (root / "images").symlink_to(outside, target_is_directory=True)
    linked = _write(root, "path,expression,identity\nimages/0.png,happy,a\nimages/1.png,sad,b\n")
    report = validate_manifest(linked, deep=True)
    assert report.ok, report.problems
    dotdot = _write(root, "path,expression,identity\n../dataset/0.png,happy,a\n", name="up.csv")
    assert any("leaving the manifest folder" in str(x) for x in validate_manifest(dotdot).problems)


def test_deep_validation_flags_blank_images(tmp_path):
    from workbench.data.images import blank_reason

    _img(tmp_path / "img" / "0.png")  # one grey colour everywhere
    face = np.random.default_rng(0).integers(0, 255, (16, 16, 3), dtype=np.uint8)
    Image.fromarray(face).save(tmp_path / "img" / "1.png")
    p = _write(tmp_path, "path,expression,identity\nimg/0.png,happy,a\nimg/1.png,sad,b\n")
    report = validate_manifest(p, deep=True)
    blank = [x for x in report.problems if x.code == "blank_image"]
    assert len(blank) == 1 and "img/0.png" in blank[0].message and "1.png" not in blank[0].message
    assert blank_reason(face) is None and "blank image" in blank_reason(np.full((8, 8, 3), 7, np.uint8))
