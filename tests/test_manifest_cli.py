"""`workbench manifest validate|build|formats`: exit codes and one-line messages."""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from workbench.cli.main import main


def _img(p):
    p.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((16, 16, 3), 100, np.uint8)).save(p)


def test_validate_ok_and_json(tmp_path, capsys):
    _img(tmp_path / "a.png")
    _img(tmp_path / "b.png")
    (tmp_path / "m.csv").write_text("path,expression,identity\na.png,happy,x\nb.png,sad,y\n")
    assert main(["manifest", "validate", str(tmp_path / "m.csv")]) == 0
    out = capsys.readouterr().out
    assert out.startswith("ok: 2 rows") and "2 identities" in out
    assert main(["manifest", "validate", str(tmp_path / "m.csv"), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["ok"] is True and data["n_rows"] == 2 and data["problems"] == []


def test_validate_lists_every_problem_and_fails(tmp_path, capsys):
    (tmp_path / "m.csv").write_text("path,expresion,valence\na.png,x,3\na.png,y,abc\n")
    assert main(["manifest", "validate", str(tmp_path / "m.csv")]) == 2
    cap = capsys.readouterr()
    lines = cap.out.strip().splitlines()
    assert any("did you mean 'expression'" in ln for ln in lines)
    assert any("duplicate" in ln for ln in lines) and any("missing image files" in ln for ln in lines)
    assert any("outside [-1, 1]" in ln for ln in lines) and any("not a number" in ln for ln in lines)
    assert cap.err.startswith("error:") and len(cap.err.strip().splitlines()) == 1
    assert main(["manifest", "validate", str(tmp_path / "m.csv"), "--no-files", "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert not data["ok"] and "missing_file" not in {p["code"] for p in data["problems"]}


def test_validate_unreadable_csv(tmp_path, capsys):
    (tmp_path / "m.csv").write_bytes(b"path\n\xff\xfe.png\n")
    assert main(["manifest", "validate", str(tmp_path / "m.csv")]) == 2
    assert "UTF-8" in capsys.readouterr().out
    assert main(["manifest", "validate", str(tmp_path / "missing.csv")]) == 2
    assert "not found" in capsys.readouterr().out


def test_build_prints_summary_and_problems(tmp_path, capsys):
    root = tmp_path / "jaffe"
    for name in ("KA.AN1.39.tiff", "KL.HA1.50.tiff", "UY.SU1.80.tiff", "oops.tiff"):
        _img(root / name)
    out = tmp_path / "m.csv"
    assert main(["manifest", "build", "jaffe", "--root", str(root), "--out", str(out), "--split", "none"]) == 0
    text = capsys.readouterr().out
    assert "jaffe: wrote" in text and "3 rows" in text and "1 problem" in text and "oops.tiff" in text
    assert main(["manifest", "build", "jaffe", "--root", str(root), "--out", str(out), "--strict"]) == 1
    capsys.readouterr()
    assert main(["manifest", "build", "jaffe", "--root", str(tmp_path / "none"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "root folder not found" in err and len(err.strip().splitlines()) == 1
    assert main(["manifest", "build", "jaffe", "--root", str(root), "--out", str(out), "--split", "none", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["rows"] == 3


def test_build_option_errors(tmp_path, capsys):
    assert main(["manifest", "build", "affectnet", "--root", str(tmp_path), "--out", str(tmp_path / "m.csv"),
                 "--classes", "9"]) == 2
    assert "must be one of 7, 8" in capsys.readouterr().err
    assert main(["manifest", "build"]) == 2
    assert "give a dataset format" in capsys.readouterr().err


def test_formats_lists_builders(capsys):
    assert main(["manifest", "formats"]) == 0
    out = capsys.readouterr().out
    for name in ("rafdb", "affectnet", "fer2013", "ferplus", "kdef", "ddcf", "ckplus", "ckplus48", "jaffe",
                 "voxceleb1", "folder", "csv"):
        assert name in out
    assert "Lyons" in out and "data_manifests/kdef.yaml" in out
