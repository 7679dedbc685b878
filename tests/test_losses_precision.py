"""Every loss in ``workbench.losses`` returns float32 (and finite values) under bf16 autocast.

Logits divided by a small temperature lose most of their resolution in bfloat16 (8 mantissa bits:
at τ = 0.07 a cosine step of ~0.03 is lost), so each loss must leave autocast for its sums. CPU
autocast bf16 works on every CPU (emulated where not native), so this runs everywhere.
"""

from __future__ import annotations

import pytest
import torch

import workbench.losses as losses

BF16 = torch.bfloat16


def _g(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _r(*shape: int, seed: int) -> torch.Tensor:
    return torch.randn(*shape, generator=_g(seed)).to(BF16)


def _pos(m: int) -> torch.Tensor:
    return losses.pair_positive_index(m // 2)


def _fn(m: int) -> torch.Tensor:
    return losses.select_false_negatives(torch.randn(m, 6, generator=_g(99)), _pos(m))


def _mask(b: int, n: int) -> torch.Tensor:
    return losses.random_masking(b, n, 0.75, _g(5)).mask


#: name -> list of (case id, callable building its inputs and calling the loss)
CASES = {
    "nt_xent": [("tau0.07", lambda: losses.nt_xent(_r(12, 16, seed=1), _pos(12), 0.07))],
    "multi_positive_nt_xent": [("groups", lambda: losses.multi_positive_nt_xent(
        _r(12, 16, seed=2), torch.arange(12) // 3, 0.1))],
    "byol_loss": [("", lambda: losses.byol_loss(_r(8, 16, seed=3), _r(8, 16, seed=4)))],
    "moco_infonce": [("", lambda: losses.moco_infonce(_r(8, 16, seed=5), _r(8, 16, seed=6), 0.2))],
    "barlow_twins_loss": [("", lambda: losses.barlow_twins_loss(_r(16, 8, seed=7), _r(16, 8, seed=8)))],
    "barlow_twins_terms": [("", lambda: losses.barlow_twins_terms(_r(16, 8, seed=9), _r(16, 8, seed=10)))],
    "cross_correlation": [("", lambda: losses.cross_correlation(_r(16, 8, seed=11), _r(16, 8, seed=12)))],
    "kd_kl": [("", lambda: losses.kd_kl(_r(8, 10, seed=13), _r(8, 10, seed=14)))],
    "kd_to_mean": [("", lambda: losses.kd_to_mean([_r(8, 10, seed=s) for s in (15, 16, 17)]))],
    "mae_loss": [("norm_pix", lambda: losses.mae_loss(_r(2, 16, 12, seed=18), _r(2, 16, 12, seed=19),
                                                      _mask(2, 16))),
                 ("raw", lambda: losses.mae_loss(_r(2, 16, 12, seed=20), _r(2, 16, 12, seed=21), _mask(2, 16),
                                                 norm_pix=False))],
    "grouping_loss": [("", lambda: losses.grouping_loss(_r(4, 8, 3, 3, seed=22).abs(), 4))],
    "maskfn_loss": [("fn", lambda: losses.maskfn_loss(_r(12, 16, seed=23), _pos(12), _fn(12))),
                    ("no_fn", lambda: losses.maskfn_loss(_r(12, 16, seed=24), _pos(12), None))],
    "maskfn_batch_loss": [("", lambda: losses.maskfn_batch_loss(
        _r(12, 16, seed=29), _pos(12), torch.randn(12, 6, generator=_g(30)), torch.arange(12) % 6))],
    "maskfn_terms": [("fn", lambda: losses.maskfn_terms(_r(12, 16, seed=25), _pos(12), _fn(12)))],
    "warp_negative_loss": [
        (f"{kind}-{red}", lambda kind=kind, red=red: losses.warp_negative_loss(
            _r(6, 16, seed=26), _r(6, 16, seed=27), _r(6, 3, 16, seed=28), kind, reduction=red))
        for kind in ("margin", "infonce") for red in ("mean", "none")],
}

#: exported names that are not losses (index/mask builders, descriptors, reductions, types)
NOT_LOSSES = {"MaskFNLoss", "Masking", "group_patch_scores", "grouping_target", "landmark_descriptor", "masked_mean",
              "pair_positive_index", "patchify", "random_masking", "select_false_negatives", "semantic_masking"}


def test_every_exported_loss_is_covered():
    """A new loss exported from workbench.losses must be added to CASES (or declared not a loss)."""
    exported = set(losses.__all__)
    assert exported - set(CASES) - NOT_LOSSES == set()
    assert set(CASES) | NOT_LOSSES <= exported


def _tensors(out):
    if isinstance(out, torch.Tensor):
        return [out]
    return [t for t in out if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("name,case", [(n, c) for n, cs in CASES.items() for c, _ in cs],
                         ids=[f"{n}-{c}" if c else n for n, cs in CASES.items() for c, _ in cs])
def test_loss_is_float32_under_bf16_autocast(name, case):
    call = dict(CASES[name])[case]
    with torch.autocast("cpu", dtype=BF16):
        out = call()
    for t in _tensors(out):
        if t.dtype == torch.bool:  # masks (maskfn_terms' has_fn)
            continue
        assert t.dtype == torch.float32, f"{name}: {t.dtype}"
        assert torch.isfinite(t).all()


#: known to compute an intermediate in bf16 under autocast (float32 result, bf16 cosines inside)
BF16_INSIDE: set[str] = set()


@pytest.mark.parametrize("name,case", [(n, c) for n, cs in CASES.items() for c, _ in cs],
                         ids=[f"{n}-{c}" if c else n for n, cs in CASES.items() for c, _ in cs])
def test_loss_under_autocast_equals_float32(name, case, request):
    """Not only the returned dtype: the value equals the autocast-free float32 computation on the same
    (bf16) inputs, so no intermediate (the logits) was computed in bfloat16."""
    if name in BF16_INSIDE:
        request.applymarker(pytest.mark.xfail(strict=False, reason="einsum of cosines runs in bf16 under autocast (a hinge at 0 may hide it)"))
    call = dict(CASES[name])[case]
    ref = _tensors(call())
    with torch.autocast("cpu", dtype=BF16):
        got = _tensors(call())
    for a, b in zip(got, ref, strict=True):
        if b.dtype == torch.bool:
            assert torch.equal(a, b)
        else:
            torch.testing.assert_close(a, b.float(), rtol=1e-5, atol=1e-5)
