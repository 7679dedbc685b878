"""Weighted kNN: brute-force reference, same-identity exclusion, leave-one-out, chunking."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import WorkbenchError
from workbench.evaluate.knn import knn_predict, knn_regress


def knn_reference(train, y, query, k, t, c, tg=None, qg=None, loo=False):
    """Loop-per-query weighted cosine kNN (DINO/solo-learn voting)."""
    tn = train / np.linalg.norm(train, axis=1, keepdims=True)
    qn = query / np.linalg.norm(query, axis=1, keepdims=True)
    out = []
    for i, q in enumerate(qn):
        sims = tn @ q
        order = [j for j in np.argsort(-sims) if not (loo and j == i) and not (tg is not None and tg[j] == qg[i])]
        scores = np.zeros(c)
        for j in order[:k]:
            scores[y[j]] += np.exp(sims[j] / t)
        out.append(int(np.argmax(scores)))
    return np.array(out)


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    train = rng.normal(size=(120, 16)).astype(np.float32)
    y = rng.integers(0, 4, size=120)
    query = rng.normal(size=(40, 16)).astype(np.float32)
    tg = rng.integers(0, 6, size=120)
    qg = rng.integers(0, 6, size=40)
    return train, y, query, tg, qg


def test_matches_reference(data):
    train, y, query, tg, qg = data
    ref = knn_reference(train, y, query, 7, 0.1, 4)
    np.testing.assert_array_equal(knn_predict(train, y, query, k=7, temperature=0.1, n_classes=4), ref)


def test_exclusion_matches_reference_and_is_chunk_invariant(data):
    train, y, query, tg, qg = data
    ref = knn_reference(train, y, query, 5, 0.07, 4, tg, qg)
    for chunk in (None, 1, 7):
        pred = knn_predict(train, y, query, k=5, n_classes=4, train_groups=tg, query_groups=qg,
                           exclude_same_group=True, chunk_size=chunk)
        np.testing.assert_array_equal(pred, ref)


def test_same_identity_neighbours_are_excluded():
    """Each identity is a tight cluster showing a single expression; its own images would give the
    right answer, another identity's images the wrong one."""
    rng = np.random.default_rng(0)
    centers = np.eye(3)
    ident = np.repeat([0, 1, 2], 10)
    expr = np.repeat([0, 1, 2], 10)  # identity i always shows expression i
    train = centers[ident] + 0.01 * rng.normal(size=(30, 3))
    query = centers[[0, 1, 2]] + 0.01 * rng.normal(size=(3, 3))
    q_ident = np.array([0, 1, 2])
    q_expr = np.array([0, 1, 2])
    leaky = knn_predict(train, expr, query, k=5)
    np.testing.assert_array_equal(leaky, q_expr)  # identity matching "solves" expression
    fair = knn_predict(train, expr, query, k=5, train_groups=ident, query_groups=q_ident, exclude_same_group=True)
    assert not np.any(fair == q_expr)  # only other identities may vote -> wrong expression


def test_leave_one_out_never_votes_for_itself():
    x = np.array([[1.0, 0.0], [0.0, 1.0], [0.9, 0.1], [0.1, 0.9]])
    y = np.array([0, 1, 1, 0])  # each point's nearest *other* point has the other label
    np.testing.assert_array_equal(knn_predict(x, y, k=1, leave_one_out=True), [1, 0, 0, 1])
    np.testing.assert_array_equal(knn_predict(x, y, x, k=1), y)  # with itself: trivially right


def test_scores_and_regression():
    x = np.array([[1.0, 0.0], [0.8, 0.2], [0.0, 1.0]])
    pred, scores = knn_predict(x, [0, 0, 1], np.array([[1.0, 0.05]]), k=3, return_scores=True)
    assert pred[0] == 0 and scores.shape == (1, 2) and scores.sum() == pytest.approx(1.0)
    v = knn_regress(x, [0.5, 0.5, -1.0], np.array([[1.0, 0.0]]), k=2)
    assert v[0] == pytest.approx(0.5)
    # all references of the query's own group -> training mean and no crash
    v = knn_regress(x, [1.0, 0.0, -1.0], np.array([[1.0, 0.0]]), k=2, train_groups=["a", "a", "a"],
                    query_groups=["a"], exclude_same_group=True)
    assert v[0] == pytest.approx(0.0)


def test_errors():
    x = np.ones((3, 2))
    with pytest.raises(WorkbenchError):
        knn_predict(x, [0, 1, 0], x, exclude_same_group=True)
    with pytest.raises(WorkbenchError):
        knn_predict(x, [0, 1, 0], np.ones((2, 3)))
    with pytest.raises(WorkbenchError):
        knn_predict(x, [0, 1, 0], x, temperature=0)
