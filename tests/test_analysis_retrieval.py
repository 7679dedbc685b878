"""mAP@R / precision@k against hand-computed examples."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.analysis.retrieval import (
    average_precision_at_r,
    precision_at_k,
    r_precision,
    retrieval_scores,
)
from workbench.errors import WorkbenchError


def test_pure_functions_hand_values():
    rel = np.array([[1, 0, 1, 1, 0],   # R=3: (1/1 + 2/3) / 3 = 5/9 (rank 4 is beyond R)
                    [0, 1, 1, 0, 0],   # R=2: (1/2) / 2 = 1/4
                    [1, 1, 0, 0, 0],   # R=2: perfect
                    [0, 0, 0, 0, 0]], dtype=bool)  # R=0: skipped
    r = np.array([3, 2, 2, 0])
    ap = average_precision_at_r(rel, r)
    np.testing.assert_allclose(ap[:3], [5 / 9, 1 / 4, 1.0])
    assert np.isnan(ap[3])
    np.testing.assert_allclose(r_precision(rel, r)[:3], [2 / 3, 1 / 2, 1.0])
    np.testing.assert_allclose(precision_at_k(rel, 1), [1, 0, 1, 0])
    np.testing.assert_allclose(precision_at_k(rel, 5), [0.6, 0.4, 0.4, 0.0])


def _five_points():
    """Unit vectors at the given angles; hand ranking in the test below."""
    ang = np.deg2rad([0, 10, 20, 35, 90])
    X = np.stack([np.cos(ang), np.sin(ang)], axis=1)
    labels = np.array(["a", "a", "b", "a", "a"])
    groups = np.array(["g1", "g1", "g2", "g2", "g3"])
    return X, labels, groups


def test_cross_identity_retrieval_hand_example():
    X, labels, groups = _five_points()
    # q0 (a,g1): eligible p2,p3,p4 -> [0,1,1], R=2 -> 1/4 ; q1 likewise -> 1/4
    # q2 (b,g2): no other 'b' -> skipped
    # q3 (a,g2): eligible p1,p0,p4 all relevant, R=3 -> 1
    # q4 (a,g3): ranking p3,p2,p1,p0 -> [1,0,1], R=3 -> (1 + 2/3)/3 = 5/9
    out = retrieval_scores(X, labels, groups=groups, ks=(1, 5), return_per_query=True)
    assert out["map_at_r"] == pytest.approx((0.25 + 0.25 + 1 + 5 / 9) / 4)
    assert out["precision_at_1"] == pytest.approx(0.5)
    assert out["n_queries"] == 4 and out["n_skipped"] == 1
    np.testing.assert_allclose(out["ap_at_r"][[0, 1, 3, 4]], [0.25, 0.25, 1, 5 / 9])
    # precision@5 counts absent ranks as misses: q0 has 2 relevant among 3 eligible -> 2/5
    assert out["precision_at_5"] == pytest.approx((2 / 5 + 2 / 5 + 3 / 5 + 3 / 5) / 4)


def test_without_group_exclusion_same_identity_counts():
    X, labels, groups = _five_points()
    out = retrieval_scores(X, labels, exclude_same_group=False, ks=(1,), return_per_query=True)
    # q0: ranking p1,p2,p3,p4 -> [1,0,1], R=3 -> 5/9
    assert out["ap_at_r"][0] == pytest.approx(5 / 9)
    # q3 (35 deg): p2 of its own identity is eligible now and ranks first -> [0,1,1], R=3 -> 7/18
    assert out["ap_at_r"][3] == pytest.approx(7 / 18)
    with pytest.raises(WorkbenchError):
        retrieval_scores(X, labels)  # exclusion on by default needs groups


def test_chunking_does_not_change_results():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 6))
    lab = rng.integers(0, 3, 60)
    grp = rng.integers(0, 8, 60)
    a = retrieval_scores(X, lab, groups=grp)
    b = retrieval_scores(X, lab, groups=grp, chunk_size=7)
    assert a == pytest.approx(b)
