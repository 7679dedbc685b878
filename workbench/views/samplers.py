"""Index samplers: which dataset rows form each training batch (numpy, exact resume).

Every sampler yields, per batch, an int64 array ``(B, k)`` of dataset row indices; the method
decides how to turn the ``k`` columns into views (e.g. SSL-FER concatenates ``[A, NA, P, NP]``).
The random stream of epoch ``e`` is ``np.random.default_rng((seed, e))``: batches depend only on
(seed, epoch), so resuming at epoch ``e`` reproduces the run exactly and every epoch has its own order.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from workbench.errors import ConfigError, MissingMetadataError


@runtime_checkable
class IndexSampler(Protocol):
    """What the trainer needs from a sampler."""

    items_per_batch: int
    k: int

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """Yield (items_per_batch, k) int64 arrays of row indices for one epoch."""
        ...

    def __len__(self) -> int:
        """Batches per epoch."""
        ...


def _epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    return np.random.default_rng((int(seed), int(epoch)))


def _check_batch(batch_size: int, name: str = "batch_size") -> None:
    if int(batch_size) < 1:
        raise ConfigError(f"{name} must be >= 1, got {batch_size}")


def _split(items: np.ndarray, batch_size: int, drop_last: bool) -> Iterator[np.ndarray]:
    n = len(items)
    stop = n - n % batch_size if drop_last else n
    for start in range(0, stop, batch_size):
        yield items[start:start + batch_size]


def _n_batches(n: int, batch_size: int, drop_last: bool) -> int:
    return n // batch_size if drop_last else -(-n // batch_size)


class RandomSampler:
    """Plain shuffled rows, ``k = 1`` (SimCLR / BYOL / ContraWarping / SimFLE)."""

    k = 1

    def __init__(self, n: int, batch_size: int, seed: int = 0, drop_last: bool = True) -> None:
        _check_batch(batch_size)
        if n < 1:
            raise ConfigError("the dataset has no rows to sample")
        self.n, self.items_per_batch, self.seed, self.drop_last = int(n), int(batch_size), int(seed), drop_last

    def __len__(self) -> int:
        return _n_batches(self.n, self.items_per_batch, self.drop_last)

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        order = _epoch_rng(self.seed, epoch).permutation(self.n).astype(np.int64)
        for chunk in _split(order, self.items_per_batch, self.drop_last):
            yield chunk[:, None]


def _codes(values: Sequence[object] | np.ndarray, what: str) -> np.ndarray:
    arr = np.asarray(values, dtype=object)
    missing = np.array([v is None or (isinstance(v, float) and np.isnan(v)) or v == "" for v in arr], dtype=bool)
    if missing.any():
        raise MissingMetadataError(f"{int(missing.sum())} rows have no '{what}' value; fill the column or "
                                   f"filter those rows out of the manifest")
    _, codes = np.unique(arr.astype(str), return_inverse=True)
    return codes.astype(np.int64)


class ClipSampler:
    """SSL-FER clip sampler: anchor, TimeAug positive, optional same-clip hard-negative pair.

    Columns per item: ``[A, P, NA, NP]`` (``k = 4``) or ``[A, P]`` without hard negatives (``k = 2``).

    - Frames of a clip are ordered by the ``frame`` column (the official code used unsorted
      ``glob`` order, a quirk we fix); offsets count positions in that order (stored frames; at
      SSL-FER's 25/6 fps, offsets 2-6 are 0.5-1.4 s and 12 is ~2.9 s).
    - TimeAug positive: offset ``d`` from ``offsets`` with ``offset_weights`` (SSL-FER
      ``distr_mode c`` = 5:4:3:2:1), sign random when both sides fit, else the side that fits.
      ``time_aug=False``: the positive is the anchor frame itself (pure augmentation, SimCLR).
    - Hard negative: ``NA`` uniform among frames at least ``min_negative_distance`` positions from
      the anchor in the same clip, ``NP`` its own TimeAug positive.
    - One item = one clip, ``anchors_per_clip`` times per epoch (SSL-FER: one). Anchors are drawn
      uniformly among the frames for which the full item exists (the official code re-draws or
      skips otherwise); clips where no item can exist (too short) are skipped, see ``skipped_clips``.
    """

    def __init__(self, clip: Sequence[object] | np.ndarray, frame: Sequence[float] | np.ndarray,
                 batch_size: int, seed: int = 0, *, time_aug: bool = True,
                 offsets: Sequence[int] = (2, 3, 4, 5, 6), offset_weights: Sequence[float] = (5, 4, 3, 2, 1),
                 hard_negatives: bool = True, min_negative_distance: int = 12,
                 anchors_per_clip: int = 1, drop_last: bool = True) -> None:
        _check_batch(batch_size)
        clip_codes = _codes(clip, "clip")
        frames = np.asarray(frame, dtype=np.float64)
        if frames.shape != clip_codes.shape:
            raise ConfigError(f"clip and frame need one value per row ({len(clip_codes)} vs {frames.size})")
        if not np.all(np.isfinite(frames)):
            raise MissingMetadataError("some rows have no 'frame' value; the clip sampler needs frame order")
        self.offsets = np.asarray(offsets, dtype=np.int64)
        weights = np.asarray(offset_weights, dtype=np.float64)
        if time_aug and (self.offsets.size == 0 or weights.shape != self.offsets.shape or np.any(self.offsets < 1)
                         or np.any(weights < 0) or weights.sum() <= 0):
            raise ConfigError("offsets must be positive integers with one non-negative weight each "
                              f"(got offsets={tuple(offsets)}, weights={tuple(offset_weights)})")
        if hard_negatives and min_negative_distance < 1:
            raise ConfigError(f"min_negative_distance must be >= 1, got {min_negative_distance}")
        if anchors_per_clip < 1:
            raise ConfigError(f"anchors_per_clip must be >= 1, got {anchors_per_clip}")
        self.weights = weights / weights.sum() if time_aug else weights
        self.items_per_batch, self.seed, self.drop_last = int(batch_size), int(seed), drop_last
        self.time_aug, self.hard_negatives = bool(time_aug), bool(hard_negatives)
        self.min_negative_distance = int(min_negative_distance)
        self.anchors_per_clip = int(anchors_per_clip)
        self.k = 4 if hard_negatives else 2

        # CSR layout: rows of each clip sorted by frame (ties by row index)
        order = np.lexsort((np.arange(len(frames)), frames, clip_codes))
        self._rows = order.astype(np.int64)
        sorted_codes = clip_codes[order]
        n_clips = int(clip_codes.max()) + 1 if clip_codes.size else 0
        self._start = np.searchsorted(sorted_codes, np.arange(n_clips), side="left").astype(np.int64)
        self._len = np.bincount(sorted_codes, minlength=n_clips).astype(np.int64)
        self._big = int(self._len.max()) + 1 if n_clips else 1

        # positions that admit a TimeAug positive, and valid anchors (per clip, flattened)
        clip_of = sorted_codes
        pos = np.arange(len(order), dtype=np.int64) - self._start[clip_of]
        n_of = self._len[clip_of]
        has_pos = (self._fits(pos, n_of).any(axis=-1) & (self.weights > 0)).any(axis=1) if self.time_aug else np.ones(len(pos), dtype=bool)
        self._pos_ok = has_pos
        # sorted keys of "positive-able" positions, to count far frames per anchor by searchsorted
        keys = clip_of * self._big + pos
        self._ok_keys = keys[has_pos]
        if self.hard_negatives:
            lo, hi = self._far_counts(clip_of, pos)
            anchor_ok = has_pos & (lo + hi > 0)
        else:
            anchor_ok = has_pos
        self._anchor_keys = keys[anchor_ok]  # sorted: (clip, position)
        self._anchor_start = np.searchsorted(self._anchor_keys, np.arange(n_clips) * self._big, side="left")
        self._anchor_count = np.searchsorted(self._anchor_keys, np.arange(n_clips) * self._big + self._big - 1,
                                             side="right") - self._anchor_start
        self.clips = np.flatnonzero(self._anchor_count > 0)
        self.skipped_clips = int(n_clips - self.clips.size)
        if self.clips.size == 0:
            need = (int(self.offsets.min()) + 1 if time_aug else 1) + (self.min_negative_distance if hard_negatives
                                                                        else 0)
            raise MissingMetadataError(f"no clip is long enough for the clip sampler (needs about {need} frames)")

    # -- helpers -----------------------------------------------------------------------------
    def _fits(self, pos: np.ndarray, n: np.ndarray) -> np.ndarray:
        """(N, D, 2) bool: offset d fits forward / backward from pos."""
        d = self.offsets[None, :]
        fwd = pos[:, None] + d <= n[:, None] - 1
        bwd = pos[:, None] - d >= 0
        return np.stack([fwd, bwd], axis=-1)

    def _far_counts(self, clip: np.ndarray, pos: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Positive-able frames at distance >= m below / above each (clip, pos)."""
        m = self.min_negative_distance
        base = clip * self._big
        clip_lo = np.searchsorted(self._ok_keys, base, side="left")
        clip_hi = np.searchsorted(self._ok_keys, base + self._big - 1, side="right")
        below = np.searchsorted(self._ok_keys, base + pos - m, side="right")
        above = np.searchsorted(self._ok_keys, base + pos + m, side="left")
        lo = np.clip(below - clip_lo, 0, None) * (pos - m >= 0)
        hi = np.clip(clip_hi - above, 0, None)
        return lo, hi

    def _positive(self, pos: np.ndarray, n: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """TimeAug positive positions for anchors ``pos`` in clips of length ``n``."""
        u_d, u_s = rng.random(len(pos)), rng.random(len(pos))
        if not self.time_aug:
            return pos.copy()
        fits = self._fits(pos, n)
        p = self.weights[None, :] * fits.any(axis=-1)
        cum = np.cumsum(p, axis=1)
        j = (cum <= (u_d * cum[:, -1])[:, None]).sum(axis=1)
        j = np.minimum(j, len(self.offsets) - 1)
        d = self.offsets[j]
        fwd = fits[np.arange(len(pos)), j, 0]
        bwd = fits[np.arange(len(pos)), j, 1]
        sign = np.where(fwd & bwd, np.where(u_s < 0.5, 1, -1), np.where(fwd, 1, -1))
        return pos + sign * d

    # -- protocol ------------------------------------------------------------------------------
    def __len__(self) -> int:
        return _n_batches(self.clips.size * self.anchors_per_clip, self.items_per_batch, self.drop_last)

    def sample_epoch(self, epoch: int) -> np.ndarray:
        """All items of one epoch, (N, k) dataset rows, in batch order."""
        rng = _epoch_rng(self.seed, epoch)
        clips = np.repeat(self.clips, self.anchors_per_clip)
        clips = clips[rng.permutation(clips.size)]
        n = self._len[clips]
        a_idx = self._anchor_start[clips] + (rng.random(clips.size) * self._anchor_count[clips]).astype(np.int64)
        a_idx = np.minimum(a_idx, self._anchor_start[clips] + self._anchor_count[clips] - 1)
        a = self._anchor_keys[a_idx] - clips * self._big
        p = self._positive(a, n, rng)
        cols = [a, p]
        if self.hard_negatives:
            lo, hi = self._far_counts(clips, a)
            base = clips * self._big
            j = np.minimum((rng.random(clips.size) * (lo + hi)).astype(np.int64), lo + hi - 1)
            clip_lo = np.searchsorted(self._ok_keys, base, side="left")
            clip_hi = np.searchsorted(self._ok_keys, base + self._big - 1, side="right")
            flat = np.where(j < lo, clip_lo + j, clip_hi - hi + (j - lo))
            na = self._ok_keys[flat] - base
            cols += [na, self._positive(na, n, rng)]
        positions = np.stack(cols, axis=1)
        return self._rows[self._start[clips][:, None] + positions]

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        yield from _split(self.sample_epoch(epoch), self.items_per_batch, self.drop_last)


class MultiViewSampler:
    """CL-MEx group sampler: each batch row holds ``k`` views of ONE group (never mixed).

    ``k = views_per_group`` (default: the largest group size). Groups with more views contribute a
    random subset of ``k`` per epoch; groups with fewer views are padded by cycling through their own
    (shuffled) views (``short_groups="repeat"``: duplicates are same-group positives, distinct after
    augmentation) or left out (``"drop"``). Groups with fewer than ``min_views`` views (default 2: a
    lone view has no positive) are always left out. ``batch_size_groups`` rows per batch.
    """

    def __init__(self, group: Sequence[object] | np.ndarray, batch_size_groups: int, seed: int = 0,
                 views_per_group: int | None = None, *, short_groups: str = "repeat", min_views: int = 2,
                 drop_last: bool = True) -> None:
        _check_batch(batch_size_groups, "batch_size_groups")
        if short_groups not in ("repeat", "drop"):
            raise ConfigError(f"short_groups must be 'repeat' or 'drop', got {short_groups!r}")
        codes = _codes(group, "group")
        order = np.lexsort((np.arange(codes.size), codes))
        self._rows = order.astype(np.int64)
        sorted_codes = codes[order]
        n_groups = int(codes.max()) + 1 if codes.size else 0
        self._start = np.searchsorted(sorted_codes, np.arange(n_groups), side="left").astype(np.int64)
        self._len = np.bincount(sorted_codes, minlength=n_groups).astype(np.int64)
        k = int(views_per_group) if views_per_group else int(self._len.max(initial=0))
        if k < 1:
            raise ConfigError(f"views_per_group must be >= 1, got {views_per_group}")
        keep = self._len >= max(1, int(min_views))
        if short_groups == "drop":
            keep &= self._len >= k
        self.groups = np.flatnonzero(keep)
        if self.groups.size == 0:
            raise MissingMetadataError(f"no group has at least {max(int(min_views), k if short_groups == 'drop' else 0)} "
                                       "views; check the 'group' column")
        self.k, self.items_per_batch, self.seed, self.drop_last = k, int(batch_size_groups), int(seed), drop_last
        self.skipped_groups = int(n_groups - self.groups.size)

    def __len__(self) -> int:
        return _n_batches(self.groups.size, self.items_per_batch, self.drop_last)

    def sample_epoch(self, epoch: int) -> np.ndarray:
        """(G, k) dataset rows, one group per row, rows in batch order."""
        rng = _epoch_rng(self.seed, epoch)
        groups = self.groups[rng.permutation(self.groups.size)]
        # shuffle views inside every group: sort (group, random key) over the flat CSR
        noise = rng.random(self._rows.size)
        group_of = np.repeat(np.arange(self._len.size), self._len)
        shuffled = self._rows[np.lexsort((noise, group_of))]
        n = self._len[groups]
        j = np.arange(self.k)[None, :] % n[:, None]
        return shuffled[self._start[groups][:, None] + j]

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        yield from _split(self.sample_epoch(epoch), self.items_per_batch, self.drop_last)
