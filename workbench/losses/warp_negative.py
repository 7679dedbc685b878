"""ContraWarping's negative term: push a prediction away from locally warped versions of its face.

The form is UNVERIFIED (no paper body or code was readable, research brief §3.3); two proposed forms:

- ``"margin"`` (triplet on cosine): ``mean_{b,j} max(0, cos(q_b, n_bj) − cos(q_b, t_b) + m)``,
- ``"infonce"`` (warped views as the only negatives):
  ``mean_b −log( e^{cos(q_b,t_b)/τ} / (e^{cos(q_b,t_b)/τ} + Σ_j e^{cos(q_b,n_bj)/τ}) )``,

with ``q`` the online prediction of a globally transformed view, ``t`` the (target) projection of
the other global view (the positive) and ``n_j`` the projections of the warped copies. Nothing is
detached here: the caller decides (BYOL targets come from a no-grad EMA network).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from workbench.errors import ConfigError

NEGATIVE_LOSSES = ("margin", "infonce")
REDUCTIONS = ("mean", "none")


def warp_negative_loss(prediction: Tensor, positive: Tensor, negatives: Tensor, kind: str = "margin", *,
                       margin: float = 0.5, temperature: float = 0.2, reduction: str = "mean") -> Tensor:
    """Negative term for ``prediction`` (B, D), ``positive`` (B, D) and ``negatives`` (B, n, D).

    Args:
        kind: ``"margin"`` (triplet, ``margin`` on cosines, in [0, 2]) or ``"infonce"`` (``temperature``).
        margin: m of the triplet form; 0.5 is a middle choice (cosines live in [−1, 1]).
        temperature: τ of the InfoNCE form (0.1-0.5; lower = harder).
        reduction: ``"mean"`` (a scalar) or ``"none"``: (B,) per-item values (``margin``: the mean over
            the item's negatives), whose mean is the ``"mean"`` value (every item has n negatives);
            e.g. for a masked mean over the rows with landmarks (:func:`workbench.losses.masked_mean`).
    """
    if kind not in NEGATIVE_LOSSES:
        raise ConfigError(f"negative_loss must be one of {', '.join(NEGATIVE_LOSSES)}, got {kind!r}")
    if reduction not in REDUCTIONS:
        raise ConfigError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")
    if negatives.ndim != 3 or negatives.shape[0] != prediction.shape[0]:
        raise ConfigError(f"negatives must be (B, n, D) with B = {prediction.shape[0]}, got {tuple(negatives.shape)}")
    with torch.autocast(device_type=prediction.device.type, enabled=False):  # cosines in float32
        q = F.normalize(prediction.float(), dim=-1)
        t = F.normalize(positive.float(), dim=-1)
        n = F.normalize(negatives.float(), dim=-1)
        cos_pos = (q * t).sum(-1)  # (B,)
        cos_neg = torch.einsum("bd,bnd->bn", q, n)  # (B, n)
    if kind == "margin":
        hinge = F.relu(cos_neg - cos_pos[:, None] + margin)
        return hinge.mean() if reduction == "mean" else hinge.mean(dim=1)
    logits = torch.cat([cos_pos[:, None], cos_neg], dim=1) / temperature
    per_item = torch.logsumexp(logits, dim=1) - logits[:, 0]
    return per_item.mean() if reduction == "mean" else per_item
