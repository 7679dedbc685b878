"""Index samplers: SSL-FER clip invariants, multi-view groups, exact per-epoch determinism."""

from __future__ import annotations

import numpy as np
import pytest

from workbench.errors import ConfigError, MissingMetadataError
from workbench.views import ClipSampler, IndexSampler, MultiViewSampler, RandomSampler


def clip_table(seed: int = 0, n_clips: int = 40) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shuffled rows of clips with 8-60 frames; frame values are non-contiguous (every 6th video frame)."""
    rng = np.random.default_rng(seed)
    clips, frames = [], []
    for c in range(n_clips):
        n = int(rng.integers(8, 61))
        start = int(rng.integers(0, 100))
        clips += [f"id{c // 3:03d}/clip{c}"] * n
        frames += [start + 6 * i for i in range(n)]
    order = rng.permutation(len(clips))
    clips_a, frames_a = np.array(clips, dtype=object)[order], np.array(frames)[order]
    return clips_a, frames_a, order


def rank_of(clips: np.ndarray, frames: np.ndarray) -> np.ndarray:
    """Position of every row inside its clip in frame order (reference, plain Python)."""
    rank = np.empty(len(clips), dtype=np.int64)
    for c in set(clips.tolist()):
        rows = np.flatnonzero(clips == c)
        rank[rows[np.argsort(frames[rows])]] = np.arange(rows.size)
    return rank


def test_clip_sampler_invariants():
    clips, frames, _ = clip_table()
    s = ClipSampler(clips, frames, batch_size=8, seed=1, anchors_per_clip=5)
    assert isinstance(s, IndexSampler) and s.k == 4 and s.items_per_batch == 8
    batches = list(s.batches(0))
    assert len(batches) == len(s) > 0
    items = np.concatenate(batches)
    assert all(b.shape == (8, 4) and b.dtype == np.int64 for b in batches)
    rank = rank_of(clips, frames)
    a, p, na, np_ = items.T
    assert (clips[a] == clips[p]).all() and (clips[a] == clips[na]).all() and (clips[na] == clips[np_]).all()
    d_pos = np.abs(rank[p] - rank[a])
    d_neg = np.abs(rank[np_] - rank[na])
    assert set(d_pos) <= {2, 3, 4, 5, 6} and set(d_neg) <= {2, 3, 4, 5, 6}  # never 0 with TimeAug
    assert (np.abs(rank[na] - rank[a]) >= 12).all()
    assert ((rank[p] > rank[a]).any() and (rank[p] < rank[a]).any())  # both signs occur
    # decreasing offset weights 5:4:3:2:1
    counts = np.bincount(d_pos, minlength=7)[2:]
    assert counts[0] > counts[2] > counts[4]


def test_short_clips_are_skipped_and_offsets_use_frame_order():
    clips = np.array(["a"] * 5 + ["b"] * 30)
    frames = np.concatenate([np.arange(5), np.arange(30)[::-1] * 10])  # clip b stored in reverse
    s = ClipSampler(clips, frames, batch_size=2, seed=0, anchors_per_clip=10)
    assert s.skipped_clips == 1
    items = s.sample_epoch(0)
    assert (clips[items] == "b").all()
    rank = rank_of(clips, frames)
    assert set(np.abs(rank[items[:, 1]] - rank[items[:, 0]])) <= {2, 3, 4, 5, 6}
    with pytest.raises(MissingMetadataError):
        ClipSampler(["a"] * 10, np.arange(10), batch_size=2)  # nothing long enough for a hard negative


def test_clip_sampler_variants():
    clips, frames, _ = clip_table(2)
    no_time = ClipSampler(clips, frames, batch_size=4, seed=0, time_aug=False)
    items = no_time.sample_epoch(0)
    assert np.array_equal(items[:, 0], items[:, 1]) and np.array_equal(items[:, 2], items[:, 3])
    pairs = ClipSampler(clips, frames, batch_size=4, seed=0, hard_negatives=False)
    assert pairs.k == 2 and next(iter(pairs.batches(0))).shape == (4, 2)
    short = ClipSampler(["a"] * 4, np.arange(4), batch_size=1, hard_negatives=False, offsets=(3,),
                        offset_weights=(1,))
    items = short.sample_epoch(0)
    assert set(map(tuple, items.tolist())) <= {(0, 3), (3, 0)}  # only anchors where the offset fits
    with pytest.raises(ConfigError):
        ClipSampler(clips, frames, batch_size=4, offsets=(2, 3), offset_weights=(1,))
    with pytest.raises(MissingMetadataError):
        ClipSampler(["a", None, "a"], [0, 1, 2], batch_size=1)


def test_determinism_per_epoch_and_resume():
    clips, frames, _ = clip_table(3)
    s1 = ClipSampler(clips, frames, batch_size=8, seed=7)
    s2 = ClipSampler(clips, frames, batch_size=8, seed=7)
    e0 = np.concatenate(list(s1.batches(0)))
    assert np.array_equal(e0, np.concatenate(list(s2.batches(0))))
    list(s1.batches(1))  # consuming other epochs does not change epoch 0 (resume-exact)
    assert np.array_equal(e0, np.concatenate(list(s1.batches(0))))
    assert not np.array_equal(e0, np.concatenate(list(s1.batches(1))))
    assert not np.array_equal(e0, np.concatenate(list(ClipSampler(clips, frames, batch_size=8, seed=8).batches(0))))


def test_random_sampler():
    s = RandomSampler(103, batch_size=10, seed=0)
    assert s.k == 1 and len(s) == 10 and isinstance(s, IndexSampler)
    rows = np.concatenate(list(s.batches(0)))
    assert rows.shape == (100, 1) and len(set(rows[:, 0])) == 100
    full = RandomSampler(103, batch_size=10, seed=0, drop_last=False)
    rows = np.concatenate(list(full.batches(0)))[:, 0]
    assert len(full) == 11 and sorted(rows) == list(range(103))
    assert not np.array_equal(rows, np.concatenate(list(full.batches(1)))[:, 0])
    assert np.array_equal(rows, np.concatenate(list(full.batches(0)))[:, 0])
    with pytest.raises(ConfigError):
        RandomSampler(10, batch_size=0)


def group_table() -> tuple[np.ndarray, list[int]]:
    sizes = [5] * 12 + [3] * 4 + [1] * 2 + [7]
    groups = np.concatenate([[f"g{i}"] * n for i, n in enumerate(sizes)])
    return np.random.default_rng(0).permutation(groups), sizes


def test_multiview_sampler_never_mixes_groups():
    groups, sizes = group_table()
    s = MultiViewSampler(groups, batch_size_groups=4, seed=0, views_per_group=5)
    assert s.k == 5 and s.skipped_groups == 2  # the two single-view groups
    items = np.concatenate(list(s.batches(0)))
    assert items.shape == (len(s) * 4, 5)
    for row in items:
        assert len(set(groups[row])) == 1  # one group per row
    full = s.sample_epoch(0)
    assert len(full) == 17 and len({groups[r[0]] for r in full}) == 17
    for row in full:
        g = groups[row[0]]
        n = int((groups == g).sum())
        assert len(set(row)) == min(n, 5)  # padded rows reuse all their views; big groups give 5 distinct
    assert not np.array_equal(s.sample_epoch(0), s.sample_epoch(1))
    assert np.array_equal(s.sample_epoch(3), MultiViewSampler(groups, 4, seed=0, views_per_group=5).sample_epoch(3))


def test_multiview_sampler_options():
    groups, _ = group_table()
    auto = MultiViewSampler(groups, batch_size_groups=2)
    assert auto.k == 7
    drop = MultiViewSampler(groups, batch_size_groups=2, views_per_group=5, short_groups="drop")
    assert len(drop.groups) == 13  # 12 x 5 views + the 7-view group
    with pytest.raises(ConfigError):
        MultiViewSampler(groups, 2, short_groups="pad")
    with pytest.raises(MissingMetadataError):
        MultiViewSampler(["a", "b"], 1)
