"""Views inside training steps: the device-read detector (``_helpers.DeviceReads``) sees what it
should, and SSL-FER FaceSwap donors drawn from the global batch of 2 gloo processes."""

from __future__ import annotations

import pytest
import torch
import torch.distributed as dist
from _helpers import DeviceReads
from torch import nn

from workbench.config import from_dict
from workbench.data.geometry import template_landmarks
from workbench.methods import Batch
from workbench.methods.sslfer import SSLFER, SSLFERConfig
from workbench.views import FaceSwapConfig, face_swap, render_faces
from workbench.views.faceswap import gather_donor_pool

# -- device-read detector (``DeviceReads`` and ``cuda_paths`` live in ``_helpers``) -----------------


def test_detector_sees_host_reads_masks_and_python_lists():
    x = torch.rand(4, 5)
    with DeviceReads() as reads:
        x[0, 0].item()
        bool(x[0, 0] > 0)
        x[x[:, 0] > 0.5]
        x[:, [1, 3]]
        torch.linalg.inv(torch.eye(3) + x[:3, :3])
        x[:, 1:3] * 2 + x[:, 1].unsqueeze(1)
        torch.where(x > 0.5, x, 0.0).sum() / (x > 0.5).sum().clamp_min(1)
        x[:, 0] = 1.0
    assert (len(reads.host), len(reads.checks), len(reads.shapes), len(reads.python_data)) == (2, 1, 1, 1)
    assert all(e.endswith(" @ ?") for e in reads.host)  # no workbench frame on the stack


# -- FaceSwap donors from the global batch (2 gloo processes) ----------------------------------------

#: identity of each global item (2 per process); process 0 holds one identity only: without the
#: global pool its positives could never be swapped, with it every donor of process 0 is remote
IDS = (0, 0, 1, 2)
B, M, S = 2, 4, 32  # items per process, images per item [A, P, NA, NP], image side


def _global_items() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    n = len(IDS)
    lm = template_landmarks(S, n * M, jitter=0.004, scale_jitter=0.1, generator=g)
    x = render_faces(lm, S, g)
    ident = torch.tensor(IDS)[:, None].expand(n, M).contiguous()
    return x.view(n, M, 3, S, S), lm.view(n, M, 68, 2), ident


class _NoNetwork(nn.Module):
    """The views need no network: a stand-in with the ``dim`` the projector reads (no timm import in
    the spawned processes)."""

    dim = 8


def _sslfer() -> SSLFER:
    cfg = from_dict(SSLFERConfig, {"proj_hidden_dim": 8, "proj_dim": 4, "swap": {"p": 1.0}})
    return SSLFER(cfg, _NoNetwork(), S)  # type: ignore[arg-type]


def _swap_worker(rank: int, world: int, init: str, out: str) -> None:
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        x, lm, ident = (t[rank * B:(rank + 1) * B] for t in _global_items())
        m = _sslfer()
        pool = gather_donor_pool(x[:, 1], lm[:, 1], ident[:, 1])
        swaps = [m.swap_positives(x, lm, ident, torch.Generator().manual_seed(10 * rank + s))[::2] for s in range(3)]
        batch = Batch(images=x, landmarks=lm, rows=torch.zeros(B, M, dtype=torch.long), codes={"identity": ident},
                      generator=torch.Generator().manual_seed(rank))
        torch.save({"swaps": swaps, "donor_rows": m.make_views(batch).donor, "pool_offset": pool.offset,
                    "pool_identity": pool.identity}, f"{out}.{rank}")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_faceswap_donors_come_from_the_global_batch(tmp_path):
    """2 processes x 2 items: donors are drawn from the gathered positives of both processes, never with
    the sample's identity; ``donor`` is the global (item, column) flat index and the swapped image is
    the single-process face swap of that global head; ``SSLFERViews.donor`` is a global loss row."""
    import torch.multiprocessing as mp

    mp.spawn(_swap_worker, args=(2, f"file://{tmp_path / 'store'}", str(tmp_path / "out")), nprocs=2)
    x_all, lm_all, _ = _global_items()
    ids = torch.tensor(IDS)
    remote = {0: 0, 1: 0}
    for rank in range(2):
        res = torch.load(tmp_path / f"out.{rank}", weights_only=True)
        assert res["pool_offset"] == rank * B and res["pool_identity"].tolist() == [0, 0, 1, 2]
        mine = torch.arange(rank * B, (rank + 1) * B)
        for images, donors in res["swaps"]:
            assert torch.all(donors[:, 0::2] == -1) and torch.all(donors[:, 1::2] >= 0)  # p = 1, a donor exists
            d_item, d_col = donors[:, 1::2] // M, donors[:, 1::2] % M
            assert set(d_col.flatten().tolist()) <= {1, 3}  # heads are positives
            assert torch.all(ids[d_item] != ids[mine][:, None])  # never the sample's identity
            other = (d_item // B) != rank
            remote[rank] += int(other.sum())
            if rank == 0:
                assert other.all()  # process 0 has a single identity: every head is from process 1
            for i in range(B):
                for k, col in enumerate((1, 3)):
                    h_item, h_col = int(d_item[i, k]), int(d_col[i, k])
                    ref = face_swap(x_all[h_item, h_col][None], lm_all[h_item, h_col][None],
                                    x_all[mine[i], col][None], lm_all[mine[i], col][None], FaceSwapConfig(p=1.0))
                    torch.testing.assert_close(images[i, col][None], ref, atol=1e-5, rtol=0)
            torch.testing.assert_close(images[:, 0::2], x_all[mine][:, 0::2], atol=0, rtol=0)  # anchors untouched
        rows = res["donor_rows"]  # loss rows [A, NA, P, NP] x B per process, rank blocks of M x B rows
        assert torch.all(rows[:2 * B] == -1) and torch.all(rows[2 * B:] >= 0)
        d_rank, local = rows[2 * B:] // (M * B), rows[2 * B:] % (M * B)
        assert torch.all(local >= 2 * B)  # a positive row
        assert torch.all(ids[d_rank * B + local % B] != ids[mine].repeat(2))
        if rank == 0:
            assert torch.all(d_rank == 1)
    assert remote[0] == 3 * 2 * B and remote[1] > 0  # process 1 draws from both shards
