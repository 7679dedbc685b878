"""AttentionResult persistence, summaries, overlays and plots; compute_attention end to end."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from workbench.data.geometry import template_landmarks
from workbench.errors import MissingMetadataError, WorkbenchError
from workbench.explain.attention import AttentionResult, compute_attention, fixed_view, score_heatmaps
from workbench.explain.regions import REGION_INDEX, REGIONS, region_masks

S = 48
EXPRS = ("neutral", "happiness", "surprise", "anger")
SKINS = ((224, 172, 140), (150, 100, 70), (240, 205, 180))




def _expression_landmarks(expr: str, size: int, rng: np.random.Generator) -> np.ndarray:
    lm = template_landmarks(size)[0].numpy().astype(np.float64)
    u = size / 64.0
    if expr == "happiness":
        lm[[48, 60]] += [-2 * u, -2 * u]
        lm[[54, 64]] += [2 * u, -2 * u]
    elif expr == "surprise":
        lm[17:27, 1] -= 3 * u
        lm[55:60, 1] += 3 * u
        lm[65:68, 1] += 3 * u
    elif expr == "anger":
        lm[17:27, 1] += 2 * u
        lm[[21, 22], 0] += [1.5 * u, -1.5 * u]
    return (lm + rng.uniform(-1.5, 1.5, 2) * u).astype(np.float32)


def _ellipse(img: np.ndarray, cx: float, cy: float, rx: float, ry: float, rgb) -> None:
    yy, xx = np.mgrid[: img.shape[0], : img.shape[1]]
    inside = ((xx - cx) / max(rx, 0.5)) ** 2 + ((yy - cy) / max(ry, 0.5)) ** 2 <= 1.0
    img[inside] = rgb


def _draw_face(lm: np.ndarray, size: int, skin, rng: np.random.Generator) -> np.ndarray:
    """Coloured ellipses placed on the 68 landmarks (no synthetic generator needed)."""
    img = np.zeros((size, size, 3), np.uint8)
    img[:] = rng.integers(40, 90, 3)
    face = np.concatenate([lm[0:17], lm[17:27] - [0, size * 0.12]])
    lo, hi = face.min(0), face.max(0)
    _ellipse(img, *(lo + hi) / 2, *(hi - lo) / 2, skin)
    for idx in (range(17, 22), range(22, 27)):
        p = lm[list(idx)]
        _ellipse(img, *p.mean(0), np.ptp(p[:, 0]) / 2, 1.2 * size / 64, (60, 40, 30))
    for idx in (range(36, 42), range(42, 48)):
        p = lm[list(idx)]
        _ellipse(img, *p.mean(0), np.ptp(p[:, 0]) / 2, np.ptp(p[:, 1]) / 2 + 0.5, (30, 30, 60))
    p = lm[31:36]
    _ellipse(img, *p.mean(0), np.ptp(p[:, 0]) / 2, 1.5, tuple(int(c * 0.8) for c in skin))
    p = lm[48:60]
    _ellipse(img, *p.mean(0), np.ptp(p[:, 0]) / 2, np.ptp(p[:, 1]) / 2 + 0.5, (170, 40, 50))
    return img


def _faces(n_per: int = 2, size: int = S, seed: int = 0):
    rng = np.random.default_rng(seed)
    rows, images, lms = [], [], []
    for ident, skin in enumerate(SKINS):
        for e in EXPRS:
            for k in range(n_per):
                lm = _expression_landmarks(e, size, rng)
                images.append(_draw_face(lm, size, skin, rng))
                lms.append(lm)
                rows.append({"path": f"img/{ident}_{e}_{k}.png", "expression": e, "identity": f"id{ident}",
                             "split": "test" if ident == 2 else "train"})
    return rows, np.stack(images), np.stack(lms)


def _result(n_per: int = 2) -> AttentionResult:
    rows, images, lms = _faces(n_per)
    masks = region_masks(lms, S)
    heat = masks[:, REGION_INDEX["mouth"]].float() * 0.8 + 0.05  # attention on the mouth
    heat[:, 0, 0] = 1.0
    table = score_heatmaps(heat, lms, [r["expression"] for r in rows])
    info = pd.DataFrame(rows)
    info.insert(0, "row", np.arange(len(rows), dtype=np.int64))
    info["target"] = info["expression"]
    info["target_score"] = np.linspace(0, 1, len(rows))
    info.loc[3, "identity"] = np.nan  # a missing value must survive the round trip
    df = pd.concat([info, table], axis=1)
    meta = {"run": "runs/x", "checkpoint": "last", "target": "prototype", "layer": "backbone.model.layer4",
            "image_size": S, "regions": list(REGIONS)}
    return AttentionResult(heat.numpy().astype(np.float16), images, lms, df, meta)


def test_save_load_round_trip(tmp_path):
    res = _result()
    folder = res.save(tmp_path / "att")
    assert sorted(p.name for p in folder.iterdir()) == ["arrays.npz", "result.json"]
    back = AttentionResult.load(folder)
    assert back.heatmaps.dtype == np.float16 and np.array_equal(back.heatmaps, res.heatmaps)
    assert back.images.dtype == np.uint8 and np.array_equal(back.images, res.images)
    assert np.array_equal(back.landmarks, res.landmarks)
    pd.testing.assert_frame_equal(back.scores, res.scores.pipe(lambda d: d))
    assert back.meta == res.meta
    pd.testing.assert_frame_equal(back.summary(), res.summary())
    (folder / "result.json").unlink()
    with pytest.raises(WorkbenchError, match="no result.json"):
        AttentionResult.load(folder)


def test_summary_reports_mouth_attention_and_pointing():
    res = _result()
    summ = res.summary()
    assert list(summ.index) == [*EXPRS, "all"]
    score_cols = [f"score_{r}" for r in REGIONS]
    assert (summ[score_cols].idxmax(axis=1) == "score_mouth").all()
    assert np.isnan(summ.loc["neutral", "pointing_acc"])  # neutral is excluded from the pointing game
    # the peak was put at (0, 0), outside the face: every pointing game is a miss
    assert (summ.loc[["happiness", "surprise", "anger"], "pointing_acc"] == 0).all()
    assert (summ.loc[["happiness", "surprise", "anger"], "moving_share"] > summ.loc[
        ["happiness", "surprise", "anger"], "moving_area"]).all()
    assert summ.loc["all", "n"] == len(res)


def test_overlay_grid_and_pngs(tmp_path):
    from PIL import Image

    res = _result()
    ov = res.overlay(1)
    assert ov.dtype == np.uint8 and ov.shape == (S, S, 3)
    for x, y in np.round(res.landmarks[1]).astype(int):
        assert tuple(ov[y, x]) == (0, 255, 255), "landmarks are drawn in cyan"
    bare = res.overlay(1, landmarks=False, alpha=0.0)
    assert np.array_equal(bare, res.images[1])
    big = res.overlay(2, scale=3, regions=True)
    assert big.shape == (3 * S, 3 * S, 3) and (big == 255).all(-1).sum() > 50  # white region borders
    g = res.grid(8)
    assert g.dtype == np.uint8 and g.ndim == 3 and g.shape[0] > g.shape[1] / 3
    paths = res.save_overlays(tmp_path / "png", scale=2)
    assert len(paths) == len(res) + 1 and paths[-1].name == "grid.png"
    img = np.asarray(Image.open(paths[0]))
    assert img.shape == (2 * S, 2 * S, 3)
    with pytest.raises(WorkbenchError, match="out of range"):
        res.overlay(len(res))


def test_plot_regions_is_a_figure_with_fixed_colours():
    import plotly.graph_objects as go

    from workbench.explain.attention import expression_palette

    fig = _result().plot_regions()
    assert isinstance(fig, go.Figure)
    names = [t.name for t in fig.data]
    assert names == list(EXPRS)
    pal = expression_palette()
    assert [t.marker.color for t in fig.data] == [pal[e] for e in EXPRS]
    assert list(fig.data[1].x) == list(REGIONS)
    assert isinstance(_result().plot_regions(metric="mass"), go.Figure)


def test_fixed_view_flips_and_crops():
    x = torch.zeros(1, 3, 20, 20)
    x[..., :, :5] = 1.0
    v = fixed_view(x, crop=1.0)
    assert torch.allclose(v, x.flip(-1))
    assert fixed_view(torch.rand(2, 3, 16, 16)).shape == (2, 3, 16, 16)


# ---------------------------------------------------------------------------------------------
# end to end: a hand-made run folder over a hand-drawn manifest
# ---------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def run_and_manifest(tmp_path_factory):
    from PIL import Image

    from workbench.data.landmarks import format_landmarks
    from workbench.io import write_json
    from workbench.runs import build_method
    from workbench.train.checkpoint import save_checkpoint
    from workbench.train.config import RunConfig

    root = tmp_path_factory.mktemp("att-e2e")
    rows, images, lms = _faces(2, size=64, seed=1)
    (root / "data" / "img").mkdir(parents=True)
    for r, img, lm in zip(rows, images, lms):
        Image.fromarray(img).save(root / "data" / r["path"])
        r["landmarks"] = format_landmarks(lm)
    pd.DataFrame(rows).to_csv(root / "data" / "manifest.csv", index=False)
    pd.DataFrame(rows).drop(columns="landmarks").to_csv(root / "data" / "nolm.csv", index=False)
    cfg = RunConfig.from_dict({"method": "simclr", "data": {"manifest": str(root / "data" / "manifest.csv"),
                                                              "image_size": 64, "cache_dir": str(root / "cache")},
                               "model": {"backbone": "resnet10t"},
                               "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})
    torch.manual_seed(0)
    method = build_method(cfg)
    run = root / "run"
    save_checkpoint(run / "checkpoints" / "last.safetensors", method, None, {"epoch": 1, "step": 1})
    write_json(run / "config.json", {"config": cfg.to_dict()})
    return run, root / "data" / "manifest.csv"


@pytest.mark.parametrize("target", ["prototype", "identity", "view", "probe"])
def test_compute_attention_end_to_end(run_and_manifest, target, tmp_path):
    run, manifest = run_and_manifest
    res = compute_attention(run, manifest, target=target, n_per_expression=2, seed=0, device="cpu",
                            batch_size=5, layer="layer3", out=tmp_path / "att")
    n = len(res)
    assert n == 2 * len(EXPRS)
    assert res.heatmaps.shape == (n, 64, 64) and res.heatmaps.dtype == np.float16
    assert res.images.shape == (n, 64, 64, 3) and res.landmarks.shape == (n, 68, 2)
    assert 0 <= res.heatmaps.min() and res.heatmaps.max() <= 1
    assert (res.heatmaps.reshape(n, -1).max(1) > 0).sum() >= n // 2, "maps are not all empty"
    df = res.scores
    assert list(df["expression"]) == [e for e in ("neutral", "happiness", "surprise", "anger") for _ in range(2)]
    assert {f"score_{r}" for r in REGIONS} <= set(df.columns) and df["pointing_hit"].dtype == "boolean"
    assert df.loc[df["expression"] == "neutral", "pointing_hit"].isna().all()
    assert res.meta["target"] == target and res.meta["layer"] == "backbone.model.layer3"
    again = AttentionResult.load(tmp_path / "att")
    pd.testing.assert_frame_equal(again.scores, df)
    if target == "identity":
        assert set(df["target"]) <= {"id0", "id1", "id2"}
    if target in ("prototype", "view"):
        assert (df["target_score"].abs() <= 1 + 1e-5).all()
    same = compute_attention(run, manifest, target=target, n_per_expression=2, seed=0, device="cpu",
                             layer="layer3") if target == "prototype" else None
    if same is not None:  # seeded: same faces, same maps
        assert list(same.scores["path"]) == list(df["path"])
        assert np.allclose(same.heatmaps.astype(np.float32), res.heatmaps.astype(np.float32), atol=2e-3)


def test_compute_attention_needs_landmarks(run_and_manifest):
    run, manifest = run_and_manifest
    with pytest.warns(UserWarning, match="coarse"):  # default layer4: a 2x2 grid at 64 px
        held_out = compute_attention(run, manifest, target="view", n_per_expression=1, split="test",
                                     device="cpu")
    assert len(held_out) == len(EXPRS) and set(held_out.scores["split"]) == {"test"}
    assert set(held_out.scores["identity"]) == {"id2"}
    with pytest.raises(MissingMetadataError, match="landmarks"):
        compute_attention(run, manifest.with_name("nolm.csv"), device="cpu")
    with pytest.raises(WorkbenchError, match="target must be"):
        compute_attention(run, manifest, target="class", device="cpu")


def test_on_the_synthetic_set_if_available(request, tmp_path):
    synth = pytest.importorskip("workbench.data.synth")
    if not hasattr(synth, "generate_dataset"):
        pytest.skip("the synthetic generator is not available")
    try:
        tiny_synth = request.getfixturevalue("tiny_synth")
    except pytest.FixtureLookupError:
        pytest.skip("no tiny_synth fixture")
    from workbench.io import write_json
    from workbench.runs import build_method
    from workbench.train.checkpoint import save_checkpoint
    from workbench.train.config import RunConfig

    cfg = RunConfig.from_dict({"method": "simclr", "data": {"manifest": str(tiny_synth), "image_size": 48},
                               "model": {"backbone": "resnet10t"},
                               "method_config": {"proj_hidden_dim": 32, "proj_dim": 16}})
    save_checkpoint(tmp_path / "run" / "checkpoints" / "last.safetensors", build_method(cfg), None, {})
    write_json(tmp_path / "run" / "config.json", {"config": cfg.to_dict()})
    res = compute_attention(tmp_path / "run", tiny_synth, n_per_expression=1, device="cpu", layer="layer2")
    assert len(res) >= 4
    summ = res.summary()
    assert "moving_share" in summ and summ.loc["all", "n"] == len(res)
    masks = region_masks(res.landmarks, 48)
    assert torch.equal(masks.sum(1), torch.ones(len(res), 48, 48, dtype=torch.long))
