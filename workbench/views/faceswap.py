"""SSL-FER FaceSwap (Matthew Earl's 2015 landmark face swap), batched on CPU or GPU.

For each pair (head image, face image):

1. Least-squares similarity transform (Umeyama / Procrustes, no reflection, closed form) from the
   face's ALIGN_POINTS (brows, eyes, nose, mouth 48-60) onto the head's.
2. The face image is warped into the head's frame (bilinear, zeros outside, as Earl's
   ``BORDER_TRANSPARENT`` into a black canvas).
3. Mask = filled convex hulls of {eyes + brows (17-26, 36-47)} and {nose + mouth (27-35, 48-60)},
   for the head's landmarks and for the warped face landmarks, united (Earl's ``combined_mask``).
   Hard by default: SSL-FER commented out Earl's feathering; ``feather > 0`` restores a feathered edge.
4. Colour correction: ``warped * blur(head) / blur(warped)`` with a Gaussian of kernel
   ``blur_frac x`` the head's inter-ocular distance (eye centres, forced odd; OpenCV's sigma rule).
5. ``out = head * (1 - mask) + corrected * mask``.

Differences from Earl's script: the similarity scale is the least-squares one (Earl uses the ratio
of point-cloud standard deviations and an SVD that may return a reflection); colours are RGB floats.

This module's own code never reads the device (no ``.item()``, no data-dependent shapes, no
``linalg.inv`` error check, no Python lists as CUDA indices): blur kernels have a static width,
donors are drawn with masked scores. Under multi-process training :func:`gather_donor_pool` makes
the donor pool the global batch.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from workbench.config import param
from workbench.data.geometry import convex_hull_mask
from workbench.data.landmarks import ALIGN_POINTS, BROWS, EYES, LEFT_EYE, MOUTH, NOSE, RIGHT_EYE
from workbench.dist import gather, rank_and_world
from workbench.errors import ConfigError
from workbench.views import _ops

#: The two convex-hull groups of Earl's OVERLAY_POINTS (SSL-FER): eyes+brows, nose+mouth (27-35, 48-60).
OVERLAY_GROUPS: tuple[tuple[int, ...], ...] = (BROWS + EYES, NOSE + tuple(range(48, 61)))
#: Landmarks replaced by the warped face's ones in the swapped image (everything but the jaw).
INNER_FACE: tuple[int, ...] = BROWS + NOSE + EYES + MOUTH


@dataclass
class FaceSwapConfig:
    """SSL-FER face swap (positives keep the expression, the surrounding head changes identity)."""

    p: float = param(0.8, "Probability of swapping each sample (SSL-FER: 0.8 for P and for NP).", min=0.0, max=1.0)
    feather: float = param(
        0.0, "Mask feathering sigma as a fraction of the inter-ocular distance; 0 = hard mask as in the "
        "SSL-FER code (Earl's 11 px feather commented out). ~0.1 hides seams.", min=0.0, max=1.0)
    color_correct: bool = param(True, "Match the pasted face's colours to the head by the ratio of blurs (Earl).")
    blur_frac: float = param(
        0.6, "Colour-correction kernel as a fraction of the head's inter-ocular distance (Earl: 0.6).",
        min=0.01, max=5.0)


@dataclass
class DonorPool:
    """Heads that donors are drawn from (:func:`swap_with_donors`): ``images`` (N, 3, H, W),
    ``landmarks`` (N, 68, 2), ``identity`` (N,) integer codes; ``offset`` = pool index of the caller's
    first sample (its own rows are ``offset .. offset + B - 1``; rank x B for :func:`gather_donor_pool`)."""

    images: Tensor
    landmarks: Tensor
    identity: Tensor
    offset: int = 0


@dataclass
class SwapResult:
    """Detailed output of :func:`face_swap_details`.

    ``images`` (B, 3, H, W); ``mask`` (B, 1, H, W) blend weight (0 where not applied); ``applied``
    (B,) bool; ``affine`` (B, 2, 3) similarity mapping face pixels to head pixels; ``landmarks``
    (B, 68, 2): head jaw + warped inner face where applied, the face's own landmarks elsewhere.
    """

    images: Tensor
    mask: Tensor
    applied: Tensor
    affine: Tensor
    landmarks: Tensor


def procrustes(src: Tensor, dst: Tensor) -> Tensor:
    """Batched least-squares similarity (B, 2, 3) with ``dst ~ s R src + t`` (no reflection).

    Closed form with complex numbers: ``a = sum(conj(src_c) dst_c) / sum(|src_c|^2)`` = s e^{i theta}.
    """
    s = src.double()
    d = dst.double()
    ms, md = s.mean(dim=1, keepdim=True), d.mean(dim=1, keepdim=True)
    sc, dc = s - ms, d - md
    den = (sc * sc).sum(dim=(1, 2)).clamp_min(1e-12)
    re = (sc[..., 0] * dc[..., 0] + sc[..., 1] * dc[..., 1]).sum(1) / den
    im = (sc[..., 0] * dc[..., 1] - sc[..., 1] * dc[..., 0]).sum(1) / den
    lin = torch.stack([torch.stack([re, -im], -1), torch.stack([im, re], -1)], 1)  # (B, 2, 2)
    t = md.squeeze(1) - (lin @ ms.transpose(1, 2)).squeeze(-1)
    return torch.cat([lin, t[..., None]], dim=2).to(src.dtype)


def invert_similarity(affine: Tensor) -> Tensor:
    """Inverse of (B, 2, 3) similarities ``[[a, -b, tx], [b, a, ty]]`` (as :func:`procrustes` returns),
    in closed form in float64: ``[[a, b], [-b, a]] / (a² + b²)`` and ``-L⁻¹ t``. Unlike ``linalg.inv``
    it neither raises on a degenerate map (a = b = 0: the zero map of missing, zero-filled
    landmarks; returned as zeros) nor reads an error flag from the device."""
    m = affine.double()
    a, b, tx, ty = m[:, 0, 0], m[:, 1, 0], m[:, 0, 2], m[:, 1, 2]
    den = a * a + b * b
    ok = den > 0
    ia = torch.where(ok, a / den.clamp_min(1e-300), torch.zeros_like(a))
    ib = torch.where(ok, b / den.clamp_min(1e-300), torch.zeros_like(b))
    first = torch.stack([ia, ib, -(ia * tx + ib * ty)], dim=-1)
    second = torch.stack([-ib, ia, ib * tx - ia * ty], dim=-1)
    return torch.stack([first, second], dim=1).to(affine.dtype)


def eye_distance(landmarks: Tensor) -> Tensor:
    """(B,) distance between the eye centres (means of 36-41 and 42-47), as Earl's script."""
    right = _ops.take_points(landmarks, RIGHT_EYE).mean(1)
    left = _ops.take_points(landmarks, LEFT_EYE).mean(1)
    return (left - right).norm(dim=-1)


def overlay_mask(landmarks: Tensor, h: int, w: int) -> Tensor:
    """(B, H, W) bool union of the filled convex hulls of the OVERLAY_GROUPS."""
    out = torch.zeros((landmarks.shape[0], h, w), dtype=torch.bool, device=landmarks.device)
    for group in OVERLAY_GROUPS:
        out |= convex_hull_mask(_ops.take_points(landmarks, group), h, w)
    return out


def _opencv_sigma(ksize: Tensor) -> Tensor:
    return 0.3 * ((ksize - 1) * 0.5 - 1) + 0.8


def _odd_limit(limit: int) -> int:
    return max(1, limit if limit % 2 == 1 else limit - 1)


def _odd_kernels(iod: Tensor, frac: float, limit: int) -> tuple[Tensor, int]:
    """Per-sample odd kernel sizes (B,) ``floor(frac x iod)`` forced odd, in [1, limit], and the common
    padded width: the largest odd size <= ``limit``, a host constant. The inter-ocular distance has no
    bound known on the host (landmarks may lie outside the image), so the width cannot depend on
    ``frac``; kernels are zero beyond their own radius, so the blur equals the one padded to the
    batch's largest kernel, without reading that size from the device."""
    k = torch.floor(frac * iod).clamp(min=1)
    k = torch.where(k % 2 == 0, k + 1, k)
    lim = _odd_limit(limit)
    return k.clamp(max=lim), (lim if k.numel() else 1)


def _feather_kernels(sigma: Tensor, limit: int) -> Tensor:
    """(B, W) Gaussian kernels of ``sigma`` (B,) truncated at the batch's radius
    ``min(ceil(3 max sigma), W // 2)`` (``_ops.auto_kernel_size`` of the largest sigma), zero-padded to
    the static width W = the largest odd size <= ``limit`` (the radius stays on the device)."""
    if sigma.numel() == 0:
        return _ops.gaussian_kernels(sigma, 1)
    lim = _odd_limit(limit)
    half = torch.ceil(3.0 * sigma.amax().double()).clamp(0, lim // 2)
    return _ops.gaussian_kernels(sigma, lim, radius=half.expand(sigma.shape[0]))


def swapped_landmarks(face_landmarks: Tensor, head_landmarks: Tensor) -> Tensor:
    """Landmarks of ``face_swap(head, face)``: head jaw + the face's inner points aligned onto the head."""
    affine = procrustes(_ops.take_points(face_landmarks, ALIGN_POINTS),
                        _ops.take_points(head_landmarks, ALIGN_POINTS))
    warped = _ops.apply_affine(affine, face_landmarks)
    out = head_landmarks.clone()
    idx = _ops.point_index(INNER_FACE, out.device)
    out[:, idx] = warped[:, idx].to(out.dtype)
    return out


def _swap(heads: Tensor, head_lm: Tensor, faces: Tensor, face_lm: Tensor, apply: Tensor,
          cfg: FaceSwapConfig) -> SwapResult:
    b, _, h, w = heads.shape
    affine = procrustes(_ops.take_points(face_lm, ALIGN_POINTS).float(),
                        _ops.take_points(head_lm, ALIGN_POINTS).float())
    warped = _ops.warp_affine(faces, invert_similarity(affine), (h, w), padding="zeros")
    warped_lm = _ops.apply_affine(affine, face_lm.float())
    mask = overlay_mask(head_lm.float(), h, w) | overlay_mask(warped_lm, h, w)
    m = mask[:, None].to(heads.dtype)
    iod = eye_distance(head_lm.float())
    if cfg.feather > 0:
        kern = _feather_kernels(cfg.feather * iod, min(h, w))
        m = (_ops.separable_blur(m, kern) > 1e-3).to(heads.dtype)  # Earl: grow
        m = _ops.separable_blur(m, kern).clamp(0, 1)  # then feather
    if cfg.color_correct:
        ks, kmax = _odd_kernels(iod, cfg.blur_frac, min(h, w))
        kern = _ops.gaussian_kernels(_opencv_sigma(ks), kmax, radius=(ks - 1) / 2)
        head_blur = _ops.separable_blur(heads, kern)
        face_blur = _ops.separable_blur(warped, kern)
        face_blur = face_blur + (128.0 / 255.0) * (face_blur <= 1.0 / 255.0)  # Earl's divide-by-zero guard
        corrected = (warped * head_blur / face_blur).clamp(0, 1)
    else:
        corrected = warped
    m = m * apply.view(-1, 1, 1, 1).to(m.dtype)
    out = heads * (1 - m) + corrected * m
    lm_out = head_lm.clone()
    idx = _ops.point_index(INNER_FACE, lm_out.device)
    lm_out[:, idx] = warped_lm[:, idx].to(lm_out.dtype)
    return SwapResult(images=out.clamp(0, 1), mask=m, applied=apply, affine=affine, landmarks=lm_out)


@_ops.full_precision
def face_swap_details(heads: Tensor, head_landmarks: Tensor, faces: Tensor, face_landmarks: Tensor,
                      cfg: FaceSwapConfig, generator: torch.Generator | None = None) -> SwapResult:
    """Like :func:`face_swap` but also returns the mask, the applied flags, the transform and landmarks.

    Rows not selected by ``cfg.p`` return the face image and landmarks unchanged (the SSL-FER
    positive stays un-swapped), with an all-zero mask.
    """
    _ops.check_images(heads, "heads")
    _ops.check_images(faces, "faces")
    b = heads.shape[0]
    if faces.shape[0] != b:
        raise ConfigError(f"heads and faces need the same batch size, got {b} and {faces.shape[0]}")
    _ops.check_landmarks(head_landmarks, b, "head_landmarks")
    _ops.check_landmarks(face_landmarks, b, "face_landmarks")
    _ops.check_generator(generator, heads.device)
    apply = _ops.coin(cfg.p, b, generator, heads.device)
    res = _swap(heads, head_landmarks, faces.to(heads.dtype), face_landmarks, apply, cfg)
    if faces.shape[2:] == heads.shape[2:]:
        keep = ~apply
        res.images = torch.where(keep.view(-1, 1, 1, 1), faces.to(res.images.dtype), res.images)
        res.landmarks = torch.where(keep.view(-1, 1, 1), face_landmarks.to(res.landmarks.dtype), res.landmarks)
    return res


@_ops.full_precision
def face_swap(heads: Tensor, head_landmarks: Tensor, faces: Tensor, face_landmarks: Tensor,
              cfg: FaceSwapConfig, generator: torch.Generator | None = None) -> Tensor:
    """Paste the inner face of ``faces[i]`` onto ``heads[i]`` (with probability ``cfg.p``).

    All tensors share the batch size; images (B, 3, H, W) in [0, 1], landmarks (B, 68, 2) in their
    own image's pixels. The output has the heads' size. Rows not selected by ``p`` return ``faces[i]``
    (when faces and heads have the same size; otherwise the head is returned for them).
    """
    return face_swap_details(heads, head_landmarks, faces, face_landmarks, cfg, generator).images


def pick_donors(identity_codes: Tensor, generator: torch.Generator | None,
                pool_identity: Tensor | None = None) -> Tensor:
    """(B,) int64: for each sample a uniformly random index of the pool (default: the batch itself)
    with a different identity, -1 if none. Draws one (B, N) uniform score matrix from ``generator``."""
    codes = identity_codes.reshape(-1)
    pool = codes if pool_identity is None else pool_identity.reshape(-1).to(codes.device)
    scores = torch.rand((codes.numel(), pool.numel()), generator=generator, device=codes.device)
    allowed = codes[:, None] != pool[None, :]
    scores = torch.where(allowed, scores, torch.full_like(scores, -1.0))
    best = scores.argmax(dim=1)
    return torch.where(allowed.any(dim=1), best, torch.full_like(best, -1))


def gather_donor_pool(images: Tensor, landmarks: Tensor, identity_codes: Tensor) -> DonorPool:
    """The donor pool of the global batch: every process's ``images`` (B, 3, H, W), ``landmarks``
    (B, 68, 2) and ``identity_codes`` (B,) concatenated in rank order (:func:`workbench.dist.gather`,
    no gradient: donors are inputs), ``offset`` = rank x B. Collective: every process must call it,
    with the same shapes (equal shards). Without an initialised process group, or with one process,
    the local batch itself (no copy, offset 0)."""
    codes = identity_codes.reshape(-1)
    rank, world = rank_and_world()
    if world == 1:
        return DonorPool(images, landmarks, codes)
    return DonorPool(gather(images), gather(landmarks), gather(codes), offset=rank * images.shape[0])


@_ops.full_precision
def swap_with_donors(images: Tensor, landmarks: Tensor, identity_codes: Tensor, cfg: FaceSwapConfig,
                     generator: torch.Generator | None, pool: DonorPool | None = None) -> tuple[Tensor, Tensor]:
    """Put the inner face of each sample on the head of another identity from the donor pool.

    ``identity_codes`` (B,) integers (e.g. clip or subject codes). ``pool`` (default: this batch,
    ``DonorPool(images, landmarks, identity_codes)``) holds the candidate heads; pass
    ``gather_donor_pool(images, landmarks, identity_codes)`` to draw from the global batch of all
    processes. Returns (images, donor) where ``donor[i]`` is the pool index of the head used for
    sample i (with the default pool: the batch index; with a gathered pool: the global index
    rank x B + batch index), or -1 when the sample was left unchanged (not selected by ``cfg.p`` or no
    other identity in the pool). The donor's identity always differs. Landmarks of the result:
    ``donor_landmarks(landmarks, donor, pool.landmarks)``.
    """
    _ops.check_images(images)
    b = images.shape[0]
    _ops.check_landmarks(landmarks, b)
    _ops.check_generator(generator, images.device)
    if identity_codes.numel() != b:
        raise ConfigError(f"identity_codes must have one entry per image ({b}), got {identity_codes.numel()}")
    if pool is None:
        pool = DonorPool(images, landmarks, identity_codes)
    else:
        _ops.check_images(pool.images, "pool.images")
        _ops.check_landmarks(pool.landmarks, pool.images.shape[0], "pool.landmarks")
        if pool.identity.numel() != pool.images.shape[0]:
            raise ConfigError(f"pool.identity must have one entry per pool image ({pool.images.shape[0]}), "
                              f"got {pool.identity.numel()}")
    donor = pick_donors(identity_codes.to(images.device), generator, pool.identity)
    apply = _ops.coin(cfg.p, b, generator, images.device) & (donor >= 0)
    src = donor.clamp_min(0)
    res = _swap(pool.images[src].to(images.dtype), pool.landmarks[src], images, landmarks, apply, cfg)
    out = torch.where(apply.view(-1, 1, 1, 1), res.images, images)
    return out, torch.where(apply, donor, torch.full_like(donor, -1))


@_ops.full_precision
def donor_landmarks(landmarks: Tensor, donor: Tensor, pool_landmarks: Tensor | None = None) -> Tensor:
    """Landmarks of the :func:`swap_with_donors` output (unchanged rows keep their own landmarks);
    ``pool_landmarks`` (N, 68, 2) are the donor pool's (default: ``landmarks``, the batch itself)."""
    src = donor.clamp_min(0)
    heads = landmarks if pool_landmarks is None else pool_landmarks
    swapped = swapped_landmarks(landmarks, heads[src])
    return torch.where((donor >= 0).view(-1, 1, 1), swapped, landmarks)
