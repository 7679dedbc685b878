"""The results protocol: every kind round-trips through one folder; bad folders are one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.pixel_stats import PixelStats
from workbench.analysis.separation import SeparationReport, SeparationTrack
from workbench.analysis.umap import EmbeddingMap
from workbench.errors import ResultsError, WorkbenchError
from workbench.evaluate.finetune import FinetuneResult
from workbench.evaluate.intervals import Score
from workbench.evaluate.protocols import EvalConfig, EvalResult, evaluate_embeddings
from workbench.explain.attention import AttentionResult
from workbench.results import (
    RESULT_FILE,
    RESULT_KINDS,
    Results,
    frame_from_arrays,
    frame_to_arrays,
    load_results,
)


def _eval() -> EvalResult:
    rng = np.random.default_rng(0)
    X = np.concatenate([rng.normal(0, 1, (30, 4)), rng.normal(4, 1, (30, 4))])
    y = np.repeat([0, 1], 30)
    res = evaluate_embeddings(X, y, X, y, EvalConfig(protocol="knn", exclude_same_identity=False))
    res.test_rows = np.arange(60)
    return res


def _finetune() -> FinetuneResult:
    return FinetuneResult(run="r", checkpoint="last", manifest="m.csv", from_scratch=False, label_fraction=1.0,
                          epochs=1, lr=1e-3, seed=0, n_train=10, n_test=5, accuracy=0.6, macro_f1=0.5, chance=0.2,
                          per_view={"0": {"accuracy": 0.6, "macro_f1": 0.5, "n": 5}}, train_loss=[1.5])


def _attention() -> AttentionResult:
    scores = pd.DataFrame({"row": [0, 1], "path": ["a.png", "b.png"], "split": ["test", "test"],
                           "expression": ["neutral", "happiness"], "identity": ["p1", None], "target": ["x", "y"],
                           "target_score": [0.5, 0.25], "score_mouth": [1.0, np.nan],
                           "pointing_hit": [None, True], "moving_share": [np.nan, 0.4],
                           "moving_area": [0.1, 0.2]})
    rng = np.random.default_rng(1)
    return AttentionResult(rng.random((2, 8, 8)).astype(np.float16), np.zeros((2, 8, 8, 3), np.uint8),
                           rng.random((2, 68, 2)).astype(np.float32), scores, {"target": "prototype", "seed": 0})


def _emap() -> EmbeddingMap:
    meta = pd.DataFrame({"expression": ["neutral", "anger", "anger"], "epoch": [1, 1, 2],
                         "valence": [0.1, None, 0.3], "path": ["a", "b", None]})
    return EmbeddingMap(np.arange(6, dtype=np.float32).reshape(3, 2), meta, method="pca", params={"seed": 0})


def _separation() -> SeparationReport:
    return SeparationReport(
        expression_linear_acc=0.5, expression_linear_f1=0.4, expression_knn_acc=0.45, expression_knn_f1=0.4,
        expression_chance=0.125, identity_linear_acc=0.3, identity_knn_acc=0.2, identity_chance=0.1,
        retrieval={"map_at_r": 0.3}, variance={"identity": 0.5, "expression": 0.1}, silhouette_expression=None,
        silhouette_identity=0.1, expression_over_identity=0.2, expression_confusion=np.eye(3, dtype=np.int64),
        retrieval_ap=np.array([0.1, 0.5]))


def _pixel_stats() -> PixelStats:
    return PixelStats(source="s", n_images=10, n_people=2, n_classes=2, size=32, identity_share=0.6,
                      expression_share=0.05, expression_eta2=0.06, chance=0.5, folds=2,
                      pixel_probe=Score(mean=0.7, low=0.5, high=0.9, n_people=2, n_images=10))


def test_every_kind_round_trips(tmp_path):
    ev = _eval()
    back = EvalResult.load(ev.save(tmp_path / "eval"))
    assert back.to_dict() == ev.to_dict()
    np.testing.assert_array_equal(back.test_rows, ev.test_rows)
    np.testing.assert_array_equal(back.predictions, ev.predictions)

    ft = _finetune()
    back_ft = FinetuneResult.load(ft.save(tmp_path / "ft"))
    assert back_ft == ft and back_ft.path == str(tmp_path / "ft")
    assert not (tmp_path / "ft" / "arrays.npz").exists()  # scalars only

    att = _attention()
    back_att = AttentionResult.load(att.save(tmp_path / "att"))
    pd.testing.assert_frame_equal(back_att.scores, att.scores)
    assert back_att.scores["pointing_hit"].dtype == "boolean" and back_att.meta == att.meta
    np.testing.assert_array_equal(back_att.heatmaps, att.heatmaps)

    em = _emap()
    back_em = EmbeddingMap.load(em.save(tmp_path / "map"))
    pd.testing.assert_frame_equal(back_em.meta, em.meta)
    np.testing.assert_array_equal(back_em.coords, em.coords)

    sep = _separation()
    back_sep = SeparationReport.load(sep.save(tmp_path / "sep"))
    assert back_sep.to_dict() == json.loads(json.dumps(sep.to_dict()))
    np.testing.assert_array_equal(back_sep.expression_confusion, sep.expression_confusion)

    track = SeparationTrack({1: sep, 3: sep})
    back_track = SeparationTrack.load(track.save(tmp_path / "track"))
    assert back_track.to_frame().equals(track.to_frame())

    ps = _pixel_stats()
    assert PixelStats.load(ps.save(tmp_path / "ps")) == ps

    for name, cls in [("eval", EvalResult), ("ft", FinetuneResult), ("att", AttentionResult), ("map", EmbeddingMap),
                      ("sep", SeparationReport), ("track", SeparationTrack), ("ps", PixelStats)]:
        loaded = load_results(tmp_path / name)
        assert type(loaded) is cls and RESULT_KINDS[cls.kind] is cls
        assert json.loads((tmp_path / name / RESULT_FILE).read_text())["version"] == cls.version


def test_kind_mismatch_is_one_line(tmp_path):
    _separation().save(tmp_path / "sep")
    with pytest.raises(ResultsError, match="holds a 'separation' result, not a 'embedding-map' result") as exc:
        EmbeddingMap.load(tmp_path / "sep")
    assert "\n" not in str(exc.value)


def test_newer_version_is_refused(tmp_path):
    folder = _pixel_stats().save(tmp_path / "ps")
    d = json.loads((folder / RESULT_FILE).read_text())
    d["version"] = PixelStats.version + 1
    (folder / RESULT_FILE).write_text(json.dumps(d))
    with pytest.raises(ResultsError, match="newer than this workbench reads"):
        PixelStats.load(folder)
    with pytest.raises(ResultsError, match="newer"):
        load_results(folder)


@pytest.mark.parametrize("damage", ["truncated", "list", "no-kind", "field-missing"])
def test_damaged_json_is_one_line(tmp_path, damage):
    folder = _finetune().save(tmp_path / "ft")
    js = folder / RESULT_FILE
    d = json.loads(js.read_text())
    if damage == "truncated":
        js.write_text(js.read_text()[:40])
    elif damage == "list":
        js.write_text("[1, 2]")
    elif damage == "no-kind":
        d.pop("kind")
        js.write_text(json.dumps(d))
    else:
        d.pop("accuracy")
        js.write_text(json.dumps(d))
    with pytest.raises(WorkbenchError) as exc:
        FinetuneResult.load(folder)
    assert "\n" not in str(exc.value) and str(folder) in str(exc.value)


def test_missing_or_damaged_arrays(tmp_path):
    folder = _attention().save(tmp_path / "att")
    npz = folder / "arrays.npz"
    data = npz.read_bytes()
    npz.unlink()
    with pytest.raises(ResultsError, match="arrays.npz is missing"):
        AttentionResult.load(folder)
    npz.write_bytes(data[: len(data) // 2])
    with pytest.raises(ResultsError, match="damaged arrays file"):
        AttentionResult.load(folder)
    np.savez(npz, heatmaps=np.zeros((2, 8, 8)))
    with pytest.raises(ResultsError, match="array '.*' is missing"):
        AttentionResult.load(folder)


def test_missing_folder_old_format_and_unknown_kind(tmp_path):
    with pytest.raises(ResultsError, match="no saved results here"):
        SeparationReport.load(tmp_path / "nowhere")
    old = tmp_path / "old"  # the previous format: separation.json + separation.npz
    old.mkdir()
    (old / "separation.json").write_text(json.dumps({"kind": "SeparationReport", "version": 1}))
    with pytest.raises(ResultsError, match="no result.json"):
        SeparationReport.load(old)
    (tmp_path / "file.json").write_text("{}")
    with pytest.raises(ResultsError, match="this is a file"):
        _pixel_stats().save(tmp_path / "file.json")
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / RESULT_FILE).write_text(json.dumps({"kind": "nope", "version": 1, "arrays": []}))
    with pytest.raises(ResultsError, match="unknown results kind 'nope'"):
        load_results(odd)


def test_resave_replaces_arrays_and_kinds_are_unique(tmp_path):
    ev = _eval()
    folder = ev.save(tmp_path / "e")
    ev.predictions, ev.test_rows = None, None
    ev.save(folder)
    assert not (folder / "arrays.npz").exists() and EvalResult.load(folder).predictions is None
    with pytest.raises(TypeError, match="already used"):
        type("Clash", (Results,), {"kind": "eval"})


def test_frame_arrays_keep_dtypes_without_pickles():
    df = pd.DataFrame({"i": np.arange(3), "f": [0.5, np.nan, 1.0], "s": ["a", None, "c"],
                       "b": pd.array([True, None, False], dtype="boolean"), "n": pd.array([1, None, 3], dtype="Int64")})
    arrays, spec = frame_to_arrays("t", df)
    assert all(not a.dtype.hasobject for a in arrays.values())
    pd.testing.assert_frame_equal(frame_from_arrays("t", json.loads(json.dumps(spec)), arrays), df)
    empty = pd.DataFrame(index=range(4))
    assert frame_from_arrays("e", *reversed(frame_to_arrays("e", empty))).shape == (4, 0)
