"""SSL-FER MaskFN: false-negative selection by an eye/mouth descriptor, and its InfoNCE loss.

For every row ``i`` of a batch of ``M`` embeddings with one positive ``p(i)``:

- ``f(i) = argmax_{k ∉ {i, p(i)} ∪ protected(i)} cos(d_i, d_k)`` over the descriptors ``d`` (exactly one
  false negative per row; :func:`select_false_negatives`),
- ``L1_i = −log( e^{s_ip/τ} / (e^{s_ip/τ} + Σ_{k∉{i,p,f}} e^{s_ik/τ}) )``,
- ``L2_i = −log( e^{s_if/τ} / (e^{s_if/τ} + Σ_{k∉{i,p,f}} e^{s_ik/τ}) )``,
- ``L = mean(L1) + λ·mean(L2)`` (official ``info_nce_loss_withmask_agg``, λ = 0.8; research brief §2.4),

with ``s = cos(z_i, z_k)``. Without false negatives (``f = −1``) ``L1`` is plain NT-Xent and the
row adds no ``L2`` term, so ``maskfn_loss(z, pos, None)`` equals :func:`~workbench.losses.nt_xent`.

The descriptor used by the paper is a frozen ImageNet ResNet-18 on eye and mouth crops;
:func:`landmark_descriptor` is a weight-free stand-in from the 68-point landmark geometry of the
same regions (see its docstring), normalised per image; :func:`person_residual` subtracts each
person's mean descriptor in the batch, so that what is compared is the expression deformation.
:func:`maskfn_batch_loss` is SSL-FER's whole loss with MaskFN over the (global, under DDP) batch.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.data.landmarks import LEFT_EYE, MOUTH, RIGHT_EYE, index_span
from workbench.dist import gather, gather_with_grad, rank_and_world
from workbench.losses._reduce import masked_mean


def _span(idx: tuple[int, ...]) -> slice:
    span = index_span(idx)
    assert span is not None, "a contiguous landmark range"
    return span


def select_false_negatives(descriptors: Tensor, positive_index: Tensor, protect: Tensor | None = None) -> Tensor:
    """(M,) int64: per row the most descriptor-similar candidate, or −1 when no candidate is left.

    Candidates of row ``i`` are all rows except ``i``, ``positive_index[i]`` and the rows marked in
    ``protect[i]``.

    Args:
        descriptors: (M, D) descriptors (L2-normalised inside; NaN rows count as zero vectors).
        positive_index: (M,) int64, row index of each row's positive.
        protect: optional (M, M) bool, ``protect[i, k]`` = row ``k`` may never be promoted for row ``i``
            (SSL-FER intended behaviour: the same-identity hard negatives of the row).
    """
    d = F.normalize(torch.nan_to_num(descriptors.detach().float()), dim=1)
    m = d.shape[0]
    sim = d @ d.t()
    excluded = torch.eye(m, dtype=torch.bool, device=d.device)
    excluded[torch.arange(m, device=d.device), positive_index.to(d.device)] = True
    if protect is not None:
        excluded = excluded | protect.to(device=d.device, dtype=torch.bool)
    sim = sim.masked_fill(excluded, float("-inf"))
    best = sim.argmax(dim=1)
    return torch.where((~excluded).any(dim=1), best, torch.full_like(best, -1))


def maskfn_terms(z: Tensor, positive_index: Tensor, false_negative: Tensor | None,
                 temperature: float = 0.07) -> tuple[Tensor, Tensor, Tensor]:
    """Per-row ``(L1, L2, has_fn)``: (M,), (M,) (0 where ``has_fn`` is False) and (M,) bool.

    ``false_negative`` (M,) int64 row indices (−1 = none for that row) or None (no removal). The
    false negatives are dropped by index, ``drop[i, max(fn_i, 0)] |= fn_i >= 0``: no boolean-mask
    indexing (a data-dependent shape, i.e. a device read on CUDA). The logits ``z zᵀ / τ`` are float32
    even under AMP (autocast is off here, as in :func:`~workbench.losses.nt_xent`): in bfloat16 a
    cosine step of ~0.03 is lost at τ = 0.07 and the loss stays flat at ``ln(M − 1)``.
    """
    with torch.autocast(device_type=z.device.type, enabled=False):
        return _maskfn_terms(z.float(), positive_index, false_negative, temperature)


def _maskfn_terms(z: Tensor, positive_index: Tensor, false_negative: Tensor | None,
                  temperature: float) -> tuple[Tensor, Tensor, Tensor]:
    z = F.normalize(z, dim=1)
    m = z.shape[0]
    dev = z.device
    rows = torch.arange(m, device=dev)
    pos = positive_index.to(dev)
    fn = torch.full((m,), -1, dtype=torch.long, device=dev) if false_negative is None else false_negative.to(dev)
    has_fn = fn >= 0
    sim = z @ z.t() / temperature
    col = fn.clamp_min(0)
    drop = torch.eye(m, dtype=torch.bool, device=dev)
    drop[rows, pos] = True
    drop[rows, col] = drop[rows, col] | has_fn
    negatives = sim.masked_fill(drop, float("-inf"))
    s_pos = sim[rows, pos]
    l1 = torch.logsumexp(torch.cat([s_pos[:, None], negatives], dim=1), dim=1) - s_pos
    s_fn = sim[rows, col]
    l2 = torch.logsumexp(torch.cat([s_fn[:, None], negatives], dim=1), dim=1) - s_fn
    return l1, torch.where(has_fn, l2, torch.zeros_like(l2)), has_fn


def maskfn_loss(z: Tensor, positive_index: Tensor, false_negative: Tensor | None, temperature: float = 0.07,
                lam: float = 0.8) -> Tensor:
    """``mean(L1) + λ·mean(L2)`` (the L2 mean runs over rows that have a false negative; 0 when none).

    Args:
        z: (M, D) embeddings (normalised inside).
        positive_index: (M,) int64 positive row of each row.
        false_negative: (M,) int64 from :func:`select_false_negatives` (−1 = none), or None = plain NT-Xent.
        temperature: τ (SSL-FER 0.07).
        lam: λ, weight of the promoted false negative (SSL-FER ``--negative_lambda`` 0.8). λ = 0 still
            removes the false negative from the negatives.
    """
    l1, l2, has_fn = maskfn_terms(z, positive_index, false_negative, temperature)
    loss = l1.mean()
    if false_negative is not None and lam != 0:  # masked mean: no device read
        loss = loss + lam * masked_mean(l2, has_fn)
    return loss


def landmark_descriptor(landmarks: Tensor, *, normalize: bool = True) -> Tensor:
    """(B, 64) weight-free eye/mouth shape descriptor from 68-point landmarks (B, 68, 2), per image
    normalised.

    Eyes (36-47) and mouth (48-67) points are each centred on their own centroid (as the paper's
    separate eye and mouth crops; removes the head's position and the pose-driven shift of the mouth
    against the eyes), rotated so that the line between the eye centres is horizontal (roll removed),
    divided by the inter-ocular distance (between the eye centres), flattened and concatenated;
    L2-normalised when ``normalize`` (else in IOD units, the input of :func:`person_residual`).
    Translation-, scale- and roll-invariant, so the nearest descriptor is the most similar eye/mouth
    configuration (eye opening, brows excluded, mouth opening/stretch), but still dominated by each
    person's own eye and mouth shape: :func:`person_residual` removes that. Rows with missing (NaN)
    landmarks give a zero vector (cosine 0 with everything).
    """
    lm = landmarks.float()
    right = lm[:, _span(RIGHT_EYE)].mean(dim=1)  # slices (views): no Python-list index copied to the device
    left = lm[:, _span(LEFT_EYE)].mean(dim=1)
    v = left - right
    iod = v.norm(dim=-1).clamp_min(1e-6)
    cos, sin = v[:, 0] / iod, v[:, 1] / iod
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], 1)  # rotate by −angle

    def block(idx: tuple[int, ...]) -> Tensor:
        pts = lm[:, _span(idx)]
        pts = pts - pts.mean(dim=1, keepdim=True)
        return (pts @ rot.transpose(1, 2)) / iod[:, None, None]

    desc = torch.cat([block(RIGHT_EYE + LEFT_EYE).flatten(1), block(MOUTH).flatten(1)], dim=1)
    desc = torch.nan_to_num(desc, nan=0.0, posinf=0.0, neginf=0.0)
    return F.normalize(desc, dim=1) if normalize else desc


#: residuals shorter than this (descriptor units: IOD for landmarks) count as "no descriptor"
RESIDUAL_EPS = 1e-5


def person_residual(descriptors: Tensor, identity: Tensor, *, normalize: bool = True) -> Tensor:
    """Per-person descriptors: each row minus the mean descriptor of its person's rows in the batch.

    What is left is the row's deviation from its person's average face in the batch, i.e. its
    expression deformation, not the person's face shape (which dominates a landmark descriptor: the
    nearest descriptor is otherwise mostly the same person or a look-alike). Rows that have no
    descriptor (all zero, e.g. missing landmarks) or no identity (code < 0) neither count in the means
    nor get one: their output is a zero vector, as is any residual shorter than ``RESIDUAL_EPS`` (the
    only image of its person in the batch, or copies of one image).

    Args:
        descriptors: (M, D) per-image descriptors (e.g. :func:`landmark_descriptor` with
            ``normalize=False``); float32 inside, autocast off.
        identity: (M,) int64 person codes (−1 = unknown).
        normalize: L2-normalise the residuals (zero rows stay zero).

    Pairwise same-person matrix (M, M) and one matmul: no device read, no data-dependent shape, any
    code values (no ``max(code) + 1`` sized buffer).
    """
    with torch.autocast(device_type=descriptors.device.type, enabled=False):
        d = torch.nan_to_num(descriptors.float())
        ident = identity.to(d.device).view(-1)
        valid = (d.abs().sum(dim=1) > 0) & (ident >= 0)
        same = (ident[:, None] == ident[None, :]) & valid[None, :]
        w = same.to(d.dtype)
        mean = (w @ d) / w.sum(dim=1, keepdim=True).clamp_min(1.0)
        r = d - mean
        keep = valid & (r.norm(dim=1) > RESIDUAL_EPS)
        r = torch.where(keep[:, None], r, torch.zeros_like(r))
        return F.normalize(r, dim=1) if normalize else r


class MaskFNLoss(NamedTuple):
    """What :func:`maskfn_batch_loss` returns (all scalars; only ``loss`` carries gradients)."""

    loss: Tensor       #: mean(L1) + λ·mean(L2)
    l1: Tensor         #: mean(L1)
    l2: Tensor         #: mean(L2) over the rows with a false negative (0 when none)
    same_item: Tensor  #: fraction of rows whose false negative is a row of their own batch item


def _gather_index(index: Tensor, block: int) -> Tensor:
    """Local row indices (M,) of every process → global ones (rank blocks of ``block`` rows)."""
    _, world = rank_and_world()
    if world == 1:
        return index
    rows = gather(index)
    return rows + torch.arange(rows.shape[0], device=rows.device) // index.shape[0] * block


def maskfn_batch_loss(z: Tensor, positive_index: Tensor, descriptors: Tensor, item: Tensor, *,
                      identity: Tensor | None = None, temperature: float = 0.07, lam: float = 0.8,
                      protect_same_item: bool = True) -> MaskFNLoss:
    """SSL-FER's loss with MaskFN over the whole batch: select one false negative per row by descriptor
    similarity, then ``mean(L1) + λ·mean(L2)`` (:func:`maskfn_terms`).

    Rows without a descriptor (all zero: no landmarks; per person: no other image of the person)
    neither get nor become a false negative; with ``protect_same_item`` a row of the same batch item
    (the hard negatives NA/NP of A/P) is never promoted.

    Args:
        z: (M, D) embeddings of this process's rows.
        positive_index: (M,) int64 local positive row of each row.
        descriptors: (M, K) MaskFN descriptors (no gradient).
        item: (M,) int64 batch item of each row (local ids).
        identity: (M,) int64 person codes: compare each row's deviation from its person's mean
            descriptor in the batch (:func:`person_residual`); None = the descriptors themselves.
        temperature: τ (SSL-FER 0.07). lam: λ (SSL-FER 0.8).

    Multi-process (DDP): rows, positives, items, descriptors and identities of every process are
    gathered (indices shifted per rank block) and every process computes the same global-batch loss
    (the gather's backward sums the W identical gradients, DDP averages them back), so negatives and
    false-negative candidates span the global batch. No device read, no data-dependent shape.
    """
    m = z.shape[0]
    z, pos = gather_with_grad(z), _gather_index(positive_index.to(z.device), m)
    item = _gather_index(item.to(z.device), m)
    desc = gather(descriptors.detach().float())
    if identity is not None:  # each person's deviation from their mean descriptor in the (global) batch
        desc = person_residual(desc, gather(identity.to(desc.device)))
    has_desc = desc.abs().sum(dim=1) > 0
    protect = ~has_desc[None, :]
    if protect_same_item:
        protect = protect | (item[:, None] == item[None, :])
    with torch.autocast(device_type=desc.device.type, enabled=False):
        fn = select_false_negatives(desc, pos, protect)
    fn = torch.where(has_desc, fn, torch.full_like(fn, -1))
    l1, l2, has_fn = maskfn_terms(z, pos, fn, temperature)
    loss_l2 = masked_mean(l2, has_fn)  # over rows with a false negative; 0 (graph kept) when there is none
    same = (item[fn.clamp_min(0)] == item) & has_fn
    return MaskFNLoss(l1.mean() + lam * loss_l2, l1.mean().detach(), loss_l2.detach(), same.float().mean())
