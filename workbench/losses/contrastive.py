"""Contrastive losses as pure functions of embeddings.

All take un-normalised embeddings and normalise them inside. Each is tested against a
hand-written (loop) reference in ``tests/test_losses.py``. Under multi-process training (DDP) the
losses that compare rows across the batch gather the embeddings of every process themselves
(:mod:`workbench.dist`), so that the mean over processes is the loss of the global batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from workbench.dist import gather, gather_with_grad, rank_and_world
from workbench.losses._reduce import masked_mean


def nt_xent(z: torch.Tensor, positive_index: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """NT-Xent / InfoNCE over ``2N`` (or any M) rows with one positive per row (SimCLR).

    ``L_i = -log( exp(s_{i,p(i)}/τ) / Σ_{k≠i} exp(s_ik/τ) )`` averaged over rows, with
    ``s = cos(z_i, z_k)``. ``positive_index[i]`` is the row index of i's positive.

    Multi-process (DDP): ``z`` and ``positive_index`` are this process's rows (equal shards); each
    local row is compared with the gathered rows of every process (all other rows of the global batch
    are negatives), so the mean over processes is the single-process loss of the global batch.

    Args:
        z: (M, D) embeddings.
        positive_index: (M,) int64, local row indices.
        temperature: τ; 0.1-0.5 for SimCLR, 0.07 in SSL-FER. Lower = harder negatives.
    """
    rank, world = rank_and_world()
    with torch.autocast(device_type=z.device.type, enabled=False):  # logits / τ: keep float32 under AMP
        if world > 1:
            return _gathered_nt_xent(z.float(), positive_index.to(z.device), temperature, rank)
        z = F.normalize(z.float(), dim=1)
        sim = z @ z.t() / temperature
        eye = torch.eye(z.shape[0], dtype=torch.bool, device=z.device)
        sim = sim.masked_fill(eye, float("-inf"))
        return F.cross_entropy(sim, positive_index.to(z.device))


def _gathered_nt_xent(z: torch.Tensor, positive_index: torch.Tensor, temperature: float, rank: int) -> torch.Tensor:
    """Local rows against every process's rows (rank blocks of M): row ``j`` is key ``rank·M + j``."""
    m = z.shape[0]
    keys = F.normalize(gather_with_grad(z), dim=1)
    q = F.normalize(z, dim=1)
    sim = q @ keys.t() / temperature
    own = rank * m + torch.arange(m, device=z.device)
    # each row's own key (a comparison mask: F.one_hot reads the indices' max on non-CUDA devices)
    sim = sim.masked_fill(own[:, None] == torch.arange(keys.shape[0], device=z.device), float("-inf"))
    return F.cross_entropy(sim, rank * m + positive_index)


def pair_positive_index(n_pairs: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """Positive indices for the layout ``[view1 (N), view2 (N)]``: row i ↔ row i ± N."""
    idx = torch.arange(2 * n_pairs, device=device)
    return (idx + n_pairs) % (2 * n_pairs)


def multi_positive_nt_xent(z: torch.Tensor, groups: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Multi-positive NT-Xent (SupCon form with group ids as "labels"), as used for CL-MEx.

    ``L_i = -(1/|P(i)|) Σ_{p∈P(i)} log( exp(s_ip/τ) / Σ_{k≠i} exp(s_ik/τ) )`` where P(i) are the
    other rows of i's group. Rows whose group has no other member are ignored.

    Multi-process (DDP): the rows and group ids of every process are gathered and every process
    computes the same global-batch loss (group ids must be global, e.g. dataset codes).
    """
    with torch.autocast(device_type=z.device.type, enabled=False):  # logits / τ: keep float32 under AMP
        return _multi_positive(gather_with_grad(z.float()), gather(groups.to(z.device)), temperature)


def _multi_positive(z: torch.Tensor, groups: torch.Tensor, temperature: float) -> torch.Tensor:
    z = F.normalize(z, dim=1)
    m = z.shape[0]
    sim = z @ z.t() / temperature
    eye = torch.eye(m, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(eye, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (groups.view(-1, 1) == groups.view(1, -1)) & ~eye
    n_pos = pos.sum(1)
    mean_log_prob = torch.where(pos, log_prob, torch.zeros_like(log_prob)).sum(1) / n_pos.clamp(min=1)
    # mean over rows with a positive (0, graph kept, when none): no device read, no data-dependent shape
    return -masked_mean(mean_log_prob, n_pos > 0)


def byol_loss(prediction: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """BYOL regression loss ``2 - 2·cos(q, z')`` averaged over the batch (target is detached)."""
    with torch.autocast(device_type=prediction.device.type, enabled=False):
        p = F.normalize(prediction.float(), dim=-1)
        t = F.normalize(target.detach().float(), dim=-1)
        return (2 - 2 * (p * t).sum(dim=-1)).mean()
