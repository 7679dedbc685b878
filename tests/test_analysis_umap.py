"""2-D maps: PCA determinism, EmbeddingMap persistence and plotting, seeded (aligned) UMAP."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from workbench.analysis.umap import (
    EmbeddingMap,
    aligned_embedding_map,
    compute_aligned_maps,
    compute_map,
    embedding_map,
)
from workbench.data.vocabulary import EXPRESSIONS
from workbench.errors import WorkbenchError
from workbench.viz.style import EXPRESSION_COLORS


def _data(n_per: int = 10, seed: int = 0):
    rng = np.random.default_rng(seed)
    expr = np.repeat(np.arange(4), n_per)
    X = np.eye(12)[expr] * 3 + rng.normal(size=(expr.size, 12))
    meta = pd.DataFrame({
        "expression": np.array(EXPRESSIONS)[expr],
        "identity": [f"{i % 5:03d}" for i in range(expr.size)],  # leading zeros must survive a CSV round trip
        "view": np.where(np.arange(expr.size) % 2 == 0, "left", "right"),
        "path": [f"faces/{i}.png" for i in range(expr.size)],
    })
    return X, meta


def test_pca_map_deterministic_and_validated():
    X, _ = _data()
    a = compute_map(X, method="pca")
    np.testing.assert_array_equal(a, compute_map(X, method="pca"))
    assert a.shape == (40, 2) and a.dtype == np.float32
    with pytest.raises(WorkbenchError):
        compute_map(X, method="tsne")
    with pytest.raises(WorkbenchError):
        compute_map(X[:2], method="pca")


def test_embedding_map_round_trip_and_plot(tmp_path):
    X, meta = _data()
    emap = embedding_map(X, meta, method="pca", out_dir=tmp_path)
    back = EmbeddingMap.load(tmp_path)
    np.testing.assert_array_equal(back.coords, emap.coords)
    assert back.meta["identity"].tolist() == meta["identity"].tolist()
    assert back.method == "pca" and back.params["seed"] == 0

    fig = back.plot(color="expression", facet="view", hover=["identity", "path"])
    colors = {t.name: t.marker.color for t in fig.data}
    assert colors["happiness"] == EXPRESSION_COLORS["happiness"]  # fixed palette, not plotly's default
    assert list(dict.fromkeys(t.name for t in fig.data)) == list(EXPRESSIONS[:4])  # vocabulary order
    assert {a.text for a in fig.layout.annotations} == {"left", "right"}
    assert "path" in fig.data[0].hovertemplate and fig.data[0].customdata is not None
    with pytest.raises(WorkbenchError, match="no metadata column"):
        back.plot(color="valence")
    mfig = back.plot_mpl("double", facet="view")
    assert len(mfig.axes) == 2


def test_metadata_must_align():
    X, meta = _data()
    with pytest.raises(WorkbenchError):
        EmbeddingMap(compute_map(X, method="pca"), meta.iloc[:5])


@pytest.mark.slow
def test_umap_seeded_identical_twice():
    X, _ = _data(n_per=15)
    a = compute_map(X, method="umap", seed=0, n_neighbors=10)
    b = compute_map(X, method="umap", seed=0, n_neighbors=10)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (60, 2) and np.all(np.isfinite(a))


@pytest.mark.slow
def test_aligned_umap_over_checkpoints():
    X, meta = _data(n_per=15)
    X2 = X + 0.1 * np.random.default_rng(1).normal(size=X.shape)
    maps = compute_aligned_maps([X, X2], seed=0, n_neighbors=10)
    assert len(maps) == 2 and all(m.shape == (60, 2) for m in maps)
    # aligned: the same rows stay close between consecutive checkpoints
    spread = np.linalg.norm(maps[0] - maps[0].mean(0), axis=1).mean()
    assert np.linalg.norm(maps[0] - maps[1], axis=1).mean() < 0.5 * spread
    emap = aligned_embedding_map([X, X2], meta, epochs=[1, 5], seed=0, n_neighbors=10)
    assert emap.meta["epoch"].tolist() == [1] * 60 + [5] * 60
    assert len(emap.plot(facet="epoch").layout.annotations) == 2
    with pytest.raises(WorkbenchError):
        compute_aligned_maps([X, X[:-1]])
