"""MaskFN (SSL-FER): false-negative selection and loss against hand-written loop references."""

import math

import pytest
import torch
from _helpers import DeviceReads

from workbench.losses import (
    landmark_descriptor,
    maskfn_loss,
    maskfn_terms,
    nt_xent,
    pair_positive_index,
    select_false_negatives,
)
from workbench.losses.maskfn import person_residual


def _unit(v):
    return v / math.sqrt(float((v * v).sum()))


def ref_select(desc, pos, protect=None):
    d = [_unit(v) for v in desc]
    out = []
    for i in range(len(d)):
        best, best_k = -math.inf, -1
        for k in range(len(d)):
            if k == i or k == pos[i] or (protect is not None and protect[i][k]):
                continue
            s = float((d[i] * d[k]).sum())
            if s > best:
                best, best_k = s, k
        out.append(best_k)
    return out


def ref_maskfn(z, pos, fn, tau, lam):
    """Brief §2.4: L1_i, L2_i with the false negative f removed from the negatives; mean(L1) + λ mean(L2)."""
    z = [_unit(v) for v in z]
    s = lambda i, k: float((z[i] * z[k]).sum()) / tau  # noqa: E731
    l1s, l2s = [], []
    for i in range(len(z)):
        p, f = pos[i], fn[i]
        negs = [math.exp(s(i, k)) for k in range(len(z)) if k not in (i, p, f)]
        l1s.append(-math.log(math.exp(s(i, p)) / (math.exp(s(i, p)) + sum(negs))))
        if f >= 0:
            l2s.append(-math.log(math.exp(s(i, f)) / (math.exp(s(i, f)) + sum(negs))))
    return sum(l1s) / len(l1s) + (lam * sum(l2s) / len(l2s) if l2s else 0.0)


@pytest.mark.parametrize("n,d,tau,lam", [(2, 4, 0.07, 0.8), (4, 8, 0.5, 0.8), (6, 16, 0.1, 0.3)])
def test_loss_matches_loop_reference(n, d, tau, lam):
    g = torch.Generator().manual_seed(n + d)
    m = 4 * n
    z = torch.randn(m, d, generator=g, dtype=torch.float64)
    desc = torch.randn(m, 5, generator=g, dtype=torch.float64)
    pos = pair_positive_index(2 * n)
    fn = select_false_negatives(desc, pos)
    got = float(maskfn_loss(z, pos, fn, tau, lam))
    assert got == pytest.approx(ref_maskfn(z, pos.tolist(), fn.tolist(), tau, lam), rel=1e-6)


def test_selection_is_the_argmax_among_non_positives_exactly_one_per_row():
    g = torch.Generator().manual_seed(3)
    m = 12
    desc = torch.randn(m, 7, generator=g, dtype=torch.float64)
    pos = pair_positive_index(m // 2)
    fn = select_false_negatives(desc, pos)
    assert fn.shape == (m,) and fn.dtype == torch.long
    assert fn.tolist() == ref_select(desc, pos.tolist())
    rows = torch.arange(m)
    assert torch.all(fn != rows) and torch.all(fn != pos)
    # even when the positive has the most similar descriptor, it is never the chosen one
    desc2 = torch.cat([desc[: m // 2], desc[: m // 2]])  # each row's positive has its own descriptor
    fn2 = select_false_negatives(desc2, pos)
    assert torch.all(fn2 != pos) and torch.all(fn2 != rows)
    # every candidate k has an exact copy k ± m/2, so each argmax is a tie: which copy wins depends on the last
    # bit of two float32 matmul entries (CPU/BLAS dependent), so the chosen row must hold the reference's
    # descriptor, whichever copy it is
    ref2 = torch.tensor(ref_select(desc2, pos.tolist()))
    assert torch.equal(desc2[fn2], desc2[ref2])


def test_exactly_one_negative_is_removed_per_row():
    """L1 uses M−3 negatives: adding the removed row's term back gives the plain NT-Xent row loss."""
    g = torch.Generator().manual_seed(5)
    m, tau = 8, 0.2
    z = torch.randn(m, 6, generator=g, dtype=torch.float64)
    pos = pair_positive_index(m // 2)
    fn = select_false_negatives(torch.randn(m, 3, generator=g, dtype=torch.float64), pos)
    l1, l2, has = maskfn_terms(z, pos, fn, tau)
    l1_plain, _, has_plain = maskfn_terms(z, pos, None, tau)
    l1, l1_plain = l1.double(), l1_plain.double()
    assert torch.all(has) and not torch.any(has_plain)
    zn = torch.nn.functional.normalize(z, dim=1)
    s = zn @ zn.t() / tau
    rows = torch.arange(m)
    # exp(-L) = e^{s_ip} / den  ->  den_plain - den_fn = e^{s_if}
    den_fn = torch.exp(s[rows, pos]) / torch.exp(-l1)
    den_plain = torch.exp(s[rows, pos]) / torch.exp(-l1_plain)
    assert torch.allclose(den_plain, den_fn + torch.exp(s[rows, fn]), rtol=1e-5)
    # L2 shares L1's negatives, with the false negative in the numerator
    assert torch.allclose(torch.exp(-l2.double()), torch.exp(s[rows, fn]) / (den_fn - torch.exp(s[rows, pos])
                                                                   + torch.exp(s[rows, fn])), rtol=1e-4)


def test_equals_nt_xent_without_removal_and_lambda_zero():
    g = torch.Generator().manual_seed(1)
    z = torch.randn(16, 8, generator=g)
    pos = pair_positive_index(8)
    assert float(maskfn_loss(z, pos, None, 0.07, 0.0)) == pytest.approx(float(nt_xent(z, pos, 0.07)), rel=1e-6)
    assert float(maskfn_loss(z, pos, None, 0.07, 0.8)) == pytest.approx(float(nt_xent(z, pos, 0.07)), rel=1e-6)
    fn = select_false_negatives(torch.randn(16, 4, generator=g), pos)
    assert float(maskfn_loss(z, pos, fn, 0.07, 0.0)) != pytest.approx(float(nt_xent(z, pos, 0.07)), rel=1e-4)


def test_protected_hard_negatives_are_never_chosen():
    """Layout [A, NA, P, NP] of B items: the same-item rows (hard negatives) look most similar."""
    b = 3
    m = 4 * b
    item = torch.arange(b).repeat(4)
    g = torch.Generator().manual_seed(2)
    base = torch.randn(b, 6, generator=g)
    desc = base[item] + 0.01 * torch.randn(m, 6, generator=g)  # same item = nearly identical descriptors
    pos = pair_positive_index(2 * b)
    unprotected = select_false_negatives(desc, pos)
    assert torch.all(item[unprotected] == item)  # the official "agg" quirk: hard negatives get promoted
    protect = item[:, None] == item[None, :]
    fn = select_false_negatives(desc, pos, protect)
    assert torch.all(item[fn] != item)
    assert fn.tolist() == ref_select(desc, pos.tolist(), protect.tolist())
    # nothing left to choose -> -1, and the loss falls back to NT-Xent for that row (finite)
    everything = torch.ones(m, m, dtype=torch.bool)
    none = select_false_negatives(desc, pos, everything)
    assert torch.all(none == -1)
    z = torch.randn(m, 5, generator=g)
    assert float(maskfn_loss(z, pos, none, 0.1, 0.8)) == pytest.approx(float(nt_xent(z, pos, 0.1)), rel=1e-6)


def test_gradients_flow_through_both_terms():
    g = torch.Generator().manual_seed(4)
    z = torch.randn(8, 4, generator=g, requires_grad=True)
    pos = pair_positive_index(4)
    fn = select_false_negatives(torch.randn(8, 3, generator=g), pos)
    maskfn_loss(z, pos, fn, 0.1, 0.8).backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_terms_equal_the_boolean_index_form_and_nothing_is_read_from_the_device():
    """``maskfn_terms`` drops the false negatives by index (the former form indexed with the boolean
    ``has_fn``: a data-dependent shape); ``maskfn_loss`` takes a masked L2 mean (no ``bool(any)``)."""
    g = torch.Generator().manual_seed(6)
    m, tau = 12, 0.1
    z = torch.randn(m, 6, generator=g, requires_grad=True)
    lm = torch.rand(m, 68, 2, generator=g) * 64
    pos = pair_positive_index(m // 2)
    with DeviceReads() as reads:
        fn = select_false_negatives(landmark_descriptor(lm), pos)
        fn = torch.where(torch.arange(m) % 3 == 0, -1, fn)  # some rows without a false negative
        l1, l2, has = maskfn_terms(z, pos, fn, tau)
        loss = maskfn_loss(z, pos, fn, tau, 0.8)
        loss.backward()
    assert reads.host + reads.checks + reads.shapes + reads.python_data == []
    rows = torch.arange(m)
    drop = torch.eye(m, dtype=torch.bool)
    drop[rows, pos] = True
    drop[rows[has], fn[has]] = True
    sim = torch.nn.functional.normalize(z.detach(), dim=1) @ torch.nn.functional.normalize(z.detach(), dim=1).t() / tau
    neg = sim.masked_fill(drop, float("-inf"))
    ref1 = torch.logsumexp(torch.cat([sim[rows, pos][:, None], neg], 1), 1) - sim[rows, pos]
    torch.testing.assert_close(l1.detach(), ref1)
    assert float(loss.detach()) == pytest.approx(float((l1.mean() + 0.8 * l2[has].mean()).detach()), rel=1e-6)


def _face(mouth_open: float = 0.0) -> torch.Tensor:
    from workbench.data.geometry import template_landmarks

    lm = torch.as_tensor(template_landmarks(64), dtype=torch.float32).clone().view(68, 2)
    lm[[57, 58, 56, 65, 66, 67]] += torch.tensor([0.0, mouth_open])  # lower lip down
    return lm


def test_landmark_descriptor_is_similarity_invariant_and_sees_the_mouth():
    lm = _face()[None]
    ang = 0.3
    rot = torch.tensor([[math.cos(ang), -math.sin(ang)], [math.sin(ang), math.cos(ang)]])
    moved = (lm @ rot.t()) * 1.7 + torch.tensor([5.0, -3.0])
    d = landmark_descriptor(torch.cat([lm, moved, _face(6.0)[None]]))
    assert d.shape == (3, 64)
    assert torch.allclose(d.norm(dim=1), torch.ones(3), atol=1e-5)
    assert torch.allclose(d[0], d[1], atol=1e-5)  # translation, scale and roll removed
    assert float(d[0] @ d[2]) < 0.999  # an open mouth is a different descriptor
    nan = landmark_descriptor(torch.full((1, 68, 2), float("nan")))
    assert torch.all(nan == 0)


def test_landmark_descriptor_unnormalised_is_in_iod_units():
    lm = torch.stack([_face(), _face(4.0)])
    raw = landmark_descriptor(lm, normalize=False)
    torch.testing.assert_close(torch.nn.functional.normalize(raw, dim=1), landmark_descriptor(lm))
    torch.testing.assert_close(landmark_descriptor(lm * 2.5, normalize=False), raw, atol=1e-5, rtol=1e-5)


def ref_person_residual(desc, ident):
    out = []
    valid = [bool(desc[i].abs().sum() > 0) and int(ident[i]) >= 0 for i in range(len(desc))]
    for i in range(len(desc)):
        if not valid[i]:
            out.append(torch.zeros_like(desc[i]))
            continue
        mates = [desc[k] for k in range(len(desc)) if valid[k] and int(ident[k]) == int(ident[i])]
        r = desc[i] - sum(mates) / len(mates)
        out.append(r / r.norm() if r.norm() > 1e-5 else torch.zeros_like(r))
    return torch.stack(out)


def test_person_residual_matches_a_loop_reference_and_removes_face_shape():
    """Each row minus its person's mean descriptor (valid rows only), L2-normalised; rows without a
    descriptor, without identity or alone with their person give zeros. A per-person offset (face shape)
    then changes nothing: the nearest residual is the same expression deformation."""
    g = torch.Generator().manual_seed(7)
    m, d = 14, 6
    desc = torch.randn(m, d, generator=g, dtype=torch.float64)
    ident = torch.tensor([3, 3, 3, 9, 9, 0, 0, 0, 0, 5, -1, 9, 3, 0])  # 5 alone, -1 unknown
    desc[4] = 0  # a row without landmarks
    got = person_residual(desc, ident)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref_person_residual(desc, ident).float(), atol=1e-6, rtol=1e-5)
    assert torch.all(got[[4, 9, 10]] == 0)
    shape = torch.randn(10, d, generator=g, dtype=torch.float64) * 5  # one large offset per person
    shifted = desc + torch.where(desc.abs().sum(1, keepdim=True) > 0, shape[ident.clamp_min(0)], 0)
    torch.testing.assert_close(person_residual(shifted, ident)[ident >= 0], got[ident >= 0], atol=1e-5, rtol=1e-4)
    # two identical images of one person: no residual (no descriptor), not float noise blown up to unit length
    twin = person_residual(torch.tensor([[0.3, 0.7, 0.1], [0.3, 0.7, 0.1], [0.2, 0.1, 0.5]]), torch.tensor([1, 1, 2]))
    assert torch.all(twin == 0)


def test_person_residual_picks_the_same_expression_across_face_shapes():
    """Two people whose face shapes differ far more than their expressions: per image, each row's
    nearest descriptor is its own person's other image; per person, it is the other person's image with
    the same expression."""
    neutral, open_ = _face(), _face(2.0)
    wide = neutral.clone()
    wide[48:68, 0] = 32 + (wide[48:68, 0] - 32) * 1.4  # person B: a much wider mouth
    wide_open = wide.clone()
    wide_open[[57, 58, 56, 65, 66, 67]] += torch.tensor([0.0, 2.0])
    lm = torch.stack([neutral, open_, wide, wide_open])  # rows: A-neutral, A-open, B-neutral, B-open
    ident = torch.tensor([0, 0, 1, 1])
    pos = torch.arange(4)  # no positive pairing: only the row itself is excluded
    per_image = select_false_negatives(landmark_descriptor(lm), pos)
    assert torch.equal(ident[per_image], ident)  # face shape wins
    per_person = select_false_negatives(person_residual(landmark_descriptor(lm, normalize=False), ident), pos)
    assert per_person.tolist() == [2, 3, 0, 1]  # same expression, other person


def test_person_residual_reads_nothing_from_the_device_and_is_float32_under_autocast():
    g = torch.Generator().manual_seed(8)
    lm = torch.rand(12, 68, 2, generator=g) * 48
    lm[3] = float("nan")
    ident = torch.arange(12) % 4
    with DeviceReads() as reads:
        r = person_residual(landmark_descriptor(lm, normalize=False), ident)
    assert reads.host + reads.checks + reads.shapes + reads.python_data == []
    with torch.autocast("cpu", dtype=torch.bfloat16):
        rb = person_residual(landmark_descriptor(lm, normalize=False).bfloat16(), ident)
    assert rb.dtype == torch.float32 and torch.all(r[3] == 0)
