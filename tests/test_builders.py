"""Dataset builders on miniature copies of each official layout (tiny generated images, no faces)."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from workbench.data.builders import BUILDERS, build_manifest
from workbench.data.builders.ferplus import decide
from workbench.data.manifest import Manifest
from workbench.errors import ConfigError, ManifestError


def img(path, size=(16, 16), seed=0):
    path.parent.mkdir(parents=True, exist_ok=True)
    arr = np.random.default_rng(seed).integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    Image.fromarray(arr).save(path)
    return path


def rows_by_name(manifest_path):
    m = Manifest.load(manifest_path)
    return m, {p.split("/")[-1]: r for p, r in zip(m.frame["path"], m.frame.to_dict("records"))}


def test_registry_complete():
    assert set(BUILDERS) == {"rafdb", "affectnet", "fer2013", "ferplus", "kdef", "ddcf", "ckplus", "ckplus48",
                             "jaffe", "voxceleb1", "folder", "csv"}
    for b in BUILDERS.values():
        assert b.citation and b.description and b.layout


def test_rafdb(tmp_path):
    root = tmp_path / "raf"
    (root / "EmoLabel").mkdir(parents=True)
    (root / "EmoLabel" / "list_patition_label.txt").write_text(
        "train_00001.jpg 5\ntrain_00002.jpg 1\ntest_0001.jpg 7\nnonsense\ntrain_00003.jpg 9\ntrain_00004.jpg 2\n")
    for n in ("train_00001", "train_00002", "test_0001"):
        img(root / "Image" / "aligned" / f"{n}_aligned.jpg")
    rep = build_manifest("rafdb", root, root / "manifest.csv")
    assert rep.rows == 3 and rep.n_problems == 3
    m, by = rows_by_name(root / "manifest.csv")
    assert by["train_00001_aligned.jpg"]["expression"] == "sadness"
    assert by["train_00002_aligned.jpg"]["expression"] == "surprise"
    assert by["test_0001_aligned.jpg"]["split"] == "test" and by["test_0001_aligned.jpg"]["expression"] == "neutral"
    assert not any(p.startswith("..") for p in m.frame["path"])
    reasons = " | ".join(r for _, r in rep.problems)
    assert "label 1-7" in reasons and "not found" in reasons


def _npy(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.array(value))


def test_affectnet_npy(tmp_path):
    root = tmp_path / "an"
    ann = root / "train_set" / "annotations"
    for i, (exp, val, aro) in enumerate([("1", "0.5", "-2"), ("9", "0", "0"), ("7", "0.1", "0.2")]):
        img(root / "train_set" / "images" / f"{i}.jpg")
        _npy(ann / f"{i}_exp.npy", exp)
        _npy(ann / f"{i}_val.npy", val)
        _npy(ann / f"{i}_aro.npy", aro)
    _npy(ann / "0_lnd.npy", np.arange(136, dtype=np.float64))
    img(root / "val_set" / "images" / "5.jpg")
    _npy(root / "val_set" / "annotations" / "5_exp.npy", "0")
    _npy(root / "train_set" / "annotations" / "8_exp.npy", "2")  # no image
    rep = build_manifest("affectnet", root, tmp_path / "a8.csv")
    assert rep.rows == 3 and rep.counts["dropped: uncertain (label 9)"] == 1 and rep.n_problems == 1
    m, by = rows_by_name(tmp_path / "a8.csv")
    assert by["0.jpg"]["expression"] == "happiness" and by["0.jpg"]["valence"] == 0.5
    assert np.isnan(by["0.jpg"]["arousal"]) and by["5.jpg"]["split"] == "test"
    assert m.landmarks()[list(by).index("0.jpg"), 1, 0] == 2.0
    rep7 = build_manifest("affectnet", root, tmp_path / "a7.csv", classes=7)
    assert rep7.rows == 2 and rep7.counts["dropped: contempt (7-class)"] == 1


def test_affectnet_csv(tmp_path):
    root = tmp_path / "an"
    lists = root / "Manually_Annotated_file_lists"
    lists.mkdir(parents=True)
    lm = ";".join(str(float(v)) for v in range(136))
    head = "subDirectory_filePath,face_x,face_y,face_width,face_height,facial_landmarks,expression,valence,arousal\n"
    (lists / "training.csv").write_text(head + f"1/a.jpg,0,0,16,16,{lm},3,0.2,-0.3\n1/b.jpg,0,0,16,16,,10,-2,-2\n"
                                        "1/c.jpg,0,0,16,16,,x,0,0\n")
    (lists / "validation.csv").write_text(head + "2/d.jpg,0,0,16,16,,6,0.9,0.1\n")
    for n in ("1/a.jpg", "1/b.jpg", "1/c.jpg", "2/d.jpg"):
        img(root / "Manually_Annotated_Images" / n)
    rep = build_manifest("affectnet", root, root / "m.csv", val_fraction=0.0)
    assert rep.rows == 2 and rep.counts["dropped: no-face (label 10)"] == 1 and rep.n_problems == 1
    m, by = rows_by_name(root / "m.csv")
    assert by["a.jpg"]["expression"] == "surprise" and by["d.jpg"]["split"] == "test"
    assert by["d.jpg"]["expression"] == "anger" and m.has("landmarks")


def _pixels(v=0, n=2304):
    return " ".join(str((v + i) % 256) for i in range(n))


def test_fer2013(tmp_path):
    root = tmp_path / "fer"
    root.mkdir()
    (root / "fer2013.csv").write_text(
        "emotion,pixels,Usage\n"
        f"3,{_pixels(1)},Training\n0,{_pixels(2)},PublicTest\n6,{_pixels(3)},PrivateTest\n"
        f"2,{_pixels(4, 2303)},Training\n9,{_pixels(5)},Training\n")
    out = tmp_path / "out" / "fer.csv"
    rep = build_manifest("fer2013", root, out)
    assert rep.rows == 3 and rep.n_problems == 2
    m = Manifest.load(out)
    assert m.frame["split"].tolist() == ["train", "val", "test"]
    assert m.frame["expression"].tolist() == ["happiness", "anger", "neutral"]
    assert m.frame["path"][0] == "fer2013_images/train/00000.png"
    with Image.open(m.abs_paths()[0]) as im:
        arr = np.asarray(im)
    assert arr.shape == (48, 48) and arr[0, 1] == 2
    assert build_manifest("fer2013", root, out).rows == 3  # re-run keeps existing PNGs


def test_ferplus_decision_rules():
    v = np.array([0, 8, 1, 1, 0, 0, 0, 0, 0, 0])  # happiness
    assert decide(v, "majority") == (1, "")
    assert decide(np.array([4, 4, 2, 0, 0, 0, 0, 0, 0, 0]), "majority") == (None, "no majority")
    assert decide(np.array([4, 4, 2, 0, 0, 0, 0, 0, 0, 0]), "plurality") == (None, "tie")
    assert decide(np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 10]), "majority") == (None, "NF")
    assert decide(np.array([1, 1, 1, 1, 1, 1, 1, 1, 1, 1]), "majority")[0] is None


def test_ferplus_csv_and_folders(tmp_path):
    root = tmp_path / "fp"
    root.mkdir()
    (root / "fer2013.csv").write_text("emotion,pixels,Usage\n" + "".join(
        f"0,{_pixels(i)},{u}\n" for i, u in enumerate(["Training", "Training", "PublicTest", "PrivateTest", "Training"])))
    (root / "fer2013new.csv").write_text(
        "Usage,Image name,neutral,happiness,surprise,sadness,anger,disgust,fear,contempt,unknown,NF\n"
        "Training,fer0000000.png,0,9,1,0,0,0,0,0,0,0\n"
        "Training,,0,0,0,0,0,0,0,0,0,10\n"
        "PublicTest,fer0000002.png,0,0,0,0,0,0,0,0,2,8\n"
        "PrivateTest,fer0000003.png,3,0,0,0,0,0,0,7,0,0\n"
        "Training,fer0000004.png,5,5,0,0,0,0,0,0,0,0\n")
    rep = build_manifest("ferplus", root, tmp_path / "o" / "fp.csv", keep_votes=True)
    assert rep.rows == 2
    assert rep.counts["dropped: removed by FERPlus (no image name)"] == 1
    assert rep.counts["dropped: NF"] == 1 and rep.counts["dropped: no majority"] == 1
    m, by = rows_by_name(tmp_path / "o" / "fp.csv")
    assert by["fer0000000.png"]["expression"] == "happiness" and by["fer0000003.png"]["expression"] == "contempt"
    assert by["fer0000003.png"]["split"] == "test" and by["fer0000000.png"]["meta_votes_happiness"] == "9"
    # official-script folders
    root2 = tmp_path / "fp2"
    img(root2 / "FER2013Train" / "fer0000000.png")
    img(root2 / "FER2013Test" / "fer0000009.png")
    (root2 / "FER2013Train" / "label.csv").write_text('fer0000000.png,"(0, 0, 48, 48)",0,0,10,0,0,0,0,0,0,0\n')
    (root2 / "FER2013Test" / "label.csv").write_text('fer0000009.png,"(0, 0, 48, 48)",0,0,0,0,9,1,0,0,0,0\nbad\n')
    rep2 = build_manifest("ferplus", root2, root2 / "m.csv")
    assert rep2.rows == 2 and rep2.n_problems == 1
    _, by2 = rows_by_name(root2 / "m.csv")
    assert by2["fer0000000.png"]["expression"] == "surprise" and by2["fer0000009.png"]["split"] == "test"


def test_kdef(tmp_path):
    root = tmp_path / "KDEF"
    for name in ("AF01ANFL.JPG", "AF01ANS.JPG", "AF01ANHR.JPG", "BM02HAFR.jpg", "AF01XXS.JPG", "readme.jpg"):
        img(root / name[:4] / name)
    rep = build_manifest("kdef", root, root / "kdef.csv")
    assert rep.rows == 4 and rep.n_problems == 2
    _, by = rows_by_name(root / "kdef.csv")
    r = by["AF01ANFL.JPG"]
    assert (r["identity"], r["expression"], r["view"], r["group"]) == ("F01", "anger", "-90", "F01_A_AN")
    assert by["AF01ANS.JPG"]["view"] == "0" and by["AF01ANHR.JPG"]["view"] == "45"
    assert by["BM02HAFR.jpg"]["identity"] == "M02" and by["BM02HAFR.jpg"]["group"] == "M02_B_HA"
    build_manifest("kdef", root, root / "codes.csv", views="codes")
    _, by = rows_by_name(root / "codes.csv")
    assert by["AF01ANFL.JPG"]["view"] == "FL"
    # a partial copy says how much of the full release is there, and names what is missing
    note = next(k for k in rep.counts if "expected images" in k)
    assert note.startswith("note: 4 of 4,900 expected images (the full kdef release); missing: AF01AFFL, ")
    assert rep.counts[note] == 4896 and "AF01ANFL" not in note


def test_kdef_release_names():
    from workbench.data.builders.kdef import expected_names

    names = expected_names()
    assert len(names) == 4900 and "BM35SUFR" in names and "AF01ANS" in names


def test_ddcf_pattern(tmp_path):
    root = tmp_path / "ddcf"
    for name in ("F01_Happy_frontal_L1.jpg", "F01_Happy_left_L1.jpg", "M02_Content_frontal_L2.jpg", "junk.jpg"):
        img(root / name)
    rep = build_manifest("ddcf", root, root / "m.csv")
    assert rep.rows == 2 and rep.n_problems == 2  # 'content' is not canonical, junk does not match
    _, by = rows_by_name(root / "m.csv")
    assert by["F01_Happy_left_L1.jpg"]["view"] == "-90" and by["F01_Happy_left_L1.jpg"]["group"] == "F01_Happy_L1"
    rep = build_manifest("ddcf", root, root / "m2.csv", label_map="Content=happiness")
    assert rep.rows == 3
    rep = build_manifest("ddcf", root, root / "m3.csv", pattern=r"^(?P<identity>[FM]\d+)_(?P<expression>[A-Za-z]+)_")
    assert rep.rows == 3 - 1
    with pytest.raises(ConfigError, match="named groups"):
        build_manifest("ddcf", root, root / "m4.csv", pattern=r"^(?P<who>\w+)")
    with pytest.raises(ConfigError, match="regular expression"):
        build_manifest("ddcf", root, root / "m4.csv", pattern=r"([")


def test_ckplus(tmp_path):
    root = tmp_path / "ck"
    seq = root / "cohn-kanade-images" / "S005" / "001"
    for k in range(1, 6):
        img(seq / f"S005_001_{k:08d}.png", seed=k)
    for k in range(1, 4):
        img(root / "cohn-kanade-images" / "S006" / "002" / f"S006_002_{k:08d}.png")
    emo = root / "Emotion" / "S005" / "001"
    emo.mkdir(parents=True)
    (emo / "S005_001_00000005_emotion.txt").write_text("   3.0000000e+00\n")
    lm = root / "Landmarks" / "S005" / "001"
    lm.mkdir(parents=True)
    (lm / "S005_001_00000005_landmarks.txt").write_text("".join(f"   {i}.0   {i + 1}.0\n" for i in range(68)))
    rep = build_manifest("ckplus", root, root / "m.csv")
    assert rep.rows == 4 and rep.counts["labelled sequences"] == 1
    m, by = rows_by_name(root / "m.csv")
    assert by["S005_001_00000005.png"]["expression"] == "disgust"
    assert by["S005_001_00000003.png"]["expression"] == "disgust"
    assert by["S005_001_00000001.png"]["expression"] == "neutral"
    assert by["S005_001_00000005.png"]["clip"] == "S005_001" and by["S005_001_00000005.png"]["frame"] == 5
    assert m.landmarks()[list(by).index("S005_001_00000005.png"), 0, 1] == 1.0
    rep = build_manifest("ckplus", root, root / "all.csv", all_frames=True, neutral_first=False, last_n=1)
    assert rep.rows == 8
    m, by = rows_by_name(root / "all.csv")
    assert m.frame["expression"].notna().sum() == 1


def test_ckplus48_and_jaffe(tmp_path):
    root = tmp_path / "ck48"
    for rel in ("anger/S010_004_00000017.png", "happy/S011_001_00000003.png", "weird/S012_001_00000001.png",
                "anger/badname.png"):
        img(root / rel)
    rep = build_manifest("ckplus48", root, root / "m.csv", split="none")
    assert rep.rows == 2 and rep.n_problems == 2
    assert rep.counts["note: 2 of 981 expected images (the full ckplus48 release)"] == 979
    _, by = rows_by_name(root / "m.csv")
    r = by["S010_004_00000017.png"]
    assert (r["identity"], r["clip"], r["frame"], r["expression"]) == ("S010", "S010_004", 17, "anger")
    assert by["S011_001_00000003.png"]["expression"] == "happiness"
    jroot = tmp_path / "jaffe"
    for name in ("KA.AN1.39.tiff", "KL.HA2.50.tiff", "NA.SU1.79.tiff", "notes.tiff"):
        img(jroot / name, size=(32, 32))
    rep = BUILDERS["jaffe"](jroot, jroot / "m.csv")  # a Builder is callable like build_manifest
    assert rep.rows == 3 and rep.n_problems == 1
    m, by = rows_by_name(jroot / "m.csv")
    assert by["KL.HA2.50.tiff"]["identity"] == "KL" and by["KL.HA2.50.tiff"]["expression"] == "happiness"
    assert by["NA.SU1.79.tiff"]["identity"] == "NA"  # the string "NA" stays an identity, not a missing value
    assert m.has("split")


def test_voxceleb(tmp_path):
    root = tmp_path / "vox"
    for clip in ("00001", "00002"):
        for k in (3, 1, 2):
            img(root / "id10001" / "ytA" / clip / f"{k:07d}.jpg")
    img(root / "unzippedIntervalFaces" / "data" / "A.J._Buckley" / "1.6" / "ytB" / "1" / "01.jpg")
    img(root / "stray.jpg")
    rep = build_manifest("voxceleb1", root, root / "m.csv")
    assert rep.rows == 7 and rep.n_problems == 1
    m = Manifest.load(root / "m.csv")
    assert not m.has("split") and m.frame["clip"].nunique() == 3
    c = m.subset(m.frame["clip"] == "id10001/ytA/00001")
    assert c.frame["frame"].tolist() == [1, 2, 3] and set(c.frame["identity"]) == {"id10001"}
    assert "A.J._Buckley" in set(m.frame["identity"])
    assert build_manifest("voxceleb1", root, root / "m2.csv", min_frames=2).rows == 6


def test_folder(tmp_path):
    root = tmp_path / "f"
    img(root / "happy" / "a.png")
    img(root / "Angry" / "sub" / "b.png")
    img(root / "0" / "c.png")
    img(root / "weird" / "d.png")
    rep = build_manifest("folder", root, root / "m.csv", label_map="0=fear")
    assert rep.rows == 3 and rep.n_problems == 1
    _, by = rows_by_name(root / "m.csv")
    assert by["b.png"]["expression"] == "anger" and by["c.png"]["expression"] == "fear"
    root2 = tmp_path / "s"
    for split, cls in [("train", "happy"), ("train", "sad"), ("test", "happy"), ("val", "sad")]:
        img(root2 / split / cls / f"{split}_{cls}.png")
    build_manifest("folder", root2, root2 / "m.csv")
    _, by = rows_by_name(root2 / "m.csv")
    assert by["test_happy.png"]["split"] == "test" and by["val_sad.png"]["expression"] == "sadness"


def test_csv_generic(tmp_path):
    root = tmp_path / "c"
    for n in ("a", "b", "c", "d"):
        img(root / "imgs" / f"{n}.png")
    (root / "labels.csv").write_text(
        "file,emotion,subject,v,extra\nimgs/a.png,0,s1,0.5,x\nimgs/b.png,1,s2,7,y\n"
        "imgs/c.png,9,s3,0,z\n,1,s4,0,w\nimgs/d.png,happy,s4,-0.2,q\n")
    out = tmp_path / "m.csv"
    rep = build_manifest("csv", root, out, columns="path=file,expression=emotion,identity=subject,valence=v",
                         label_map="0=anger,1=disgust", keep_extra=True)
    assert rep.rows == 3 and rep.n_problems == 2 and rep.counts["valence: invalid values left empty"] == 1
    _, by = rows_by_name(out)
    assert by["a.png"]["expression"] == "anger" and by["a.png"]["meta_extra"] == "x"
    assert np.isnan(by["b.png"]["valence"]) and by["d.png"]["expression"] == "happiness"
    with pytest.raises(ConfigError, match="did you mean 'expression'"):
        build_manifest("csv", root, out, columns="path=file,expresion=emotion")
    with pytest.raises(ConfigError, match="not in the table"):
        build_manifest("csv", root, out, columns="path=filename")


def test_build_errors_are_one_line(tmp_path):
    with pytest.raises(ManifestError, match="did you mean 'jaffe'"):
        build_manifest("jafe", tmp_path, tmp_path / "m.csv")
    with pytest.raises(ManifestError, match="root folder not found"):
        build_manifest("jaffe", tmp_path / "nope", tmp_path / "m.csv")
    with pytest.raises(ConfigError, match="unknown option 'sed'"):
        build_manifest("jaffe", tmp_path, tmp_path / "m.csv", sed=1)
    with pytest.raises(ManifestError, match="nothing matched the expected layout"):
        build_manifest("jaffe", tmp_path, tmp_path / "m.csv")
    img(tmp_path / "x" / "bad.tiff")
    with pytest.raises(ManifestError, match="all 1 candidate files had problems") as ei:
        build_manifest("jaffe", tmp_path / "x", tmp_path / "m.csv")
    assert "\n" not in str(ei.value)
    with pytest.raises(ManifestError, match="expected layout"):
        build_manifest("rafdb", tmp_path, tmp_path / "m.csv")


def test_verify_drops_unreadable_and_paths_relative_to_out(tmp_path):
    root = tmp_path / "data" / "jaffe"
    img(root / "KA.AN1.39.tiff", size=(32, 32))
    (root / "KA.AN2.40.tiff").write_bytes(b"not an image")
    rep = build_manifest("jaffe", root, tmp_path / "data" / "m.csv", verify=True, split="none")
    assert rep.rows == 1 and "not a recognised image format" in rep.problems[0][1]
    assert Manifest.load(tmp_path / "data" / "m.csv").frame["path"][0] == "jaffe/KA.AN1.39.tiff"
    rep = build_manifest("jaffe", root, tmp_path / "elsewhere" / "m.csv", split="none")
    assert rep.rows == 2 and any(k.startswith("note: images reached through the link") for k in rep.counts)
    m = Manifest.load(tmp_path / "elsewhere" / "m.csv")  # valid: every path stays inside its folder
    assert m.frame["path"][0].startswith("jaffe-images/") and m.abs_paths()[0].is_file()
