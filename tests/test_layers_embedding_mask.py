"""OptEmbed's embedding mask (bars.models.layers.EmbeddingMask): the BinaryStep and its surrogate gradient, the
supernet's row pruning by per-field thresholds on row norms and its sampled dimension masks, the fixed (evolution /
retrain) masks, the counts of rows and parameters kept; equations written out by hand on a tiny spec."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import EmbeddingMask, FeatureEmbedding, LogisticRegression, binary_step, prefix_mask
from tests._tiny_ctr import SPEC, tiny_batch


def _emb_and_mask(norm: int = 1):
    torch.manual_seed(0)
    emb = FeatureEmbedding(SPEC, 4)
    with torch.no_grad():
        emb.weight.normal_(0, 0.5)
        emb.weight[0].zero_()
        emb.numeric_weight.normal_()
    plain = emb(tiny_batch(32)[0]).detach()
    mask = EmbeddingMask(SPEC, 4, norm=norm)
    mask.attach(emb)
    return emb, mask, plain


def _surrogate(u: torch.Tensor) -> torch.Tensor:
    """models/layer.py@0feda5f8 BinaryStep.backward, piece by piece."""
    out = []
    for v in u.flatten().tolist():
        a = abs(v)
        out.append(0.0 if a > 1 else 0.4 if a > 0.4 else 2 - 4 * a)
    return torch.tensor(out, dtype=u.dtype).reshape(u.shape)


def test_binary_step_forward_and_its_surrogate_gradient():
    u = torch.tensor([-1.5, -1.0, -0.7, -0.4, -0.1, 0.0, 0.1, 0.39, 0.4, 0.41, 1.0, 1.01, 3.0], dtype=torch.float64,
                     requires_grad=True)
    y = binary_step(u)
    assert y.tolist() == [0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1]
    g = torch.linspace(-1, 2, len(u), dtype=torch.float64)
    (y * g).sum().backward()
    torch.testing.assert_close(u.grad, g * _surrogate(u.detach()), rtol=0, atol=1e-15)
    assert prefix_mask(torch.tensor([0, 2, 4]), 4).tolist() == [[0, 0, 0, 0], [1, 1, 0, 0], [1, 1, 1, 1]]


@pytest.mark.parametrize("norm", [1, 2])
def test_supernet_eval_prunes_rows_below_their_fields_threshold(norm):
    emb, mask, plain = _emb_and_mask(norm)
    xb, _ = tiny_batch(32)
    assert mask.field_names == ("a", "b") and mask.rows_total == 38 and mask.parameters_total == 38 * 4
    mask.eval()
    torch.testing.assert_close(emb(xb), plain)  # thresholds 0: every nonzero row kept, all dims (eval)
    with torch.no_grad():
        mask.threshold.copy_(torch.tensor([0.8, 1.1]))
    out = emb(xb)
    for pos, f in ((0, 0), (2, 1)):  # fields a (position 0) and b (position 2); price (1) unchanged
        keep = (plain[:, pos].norm(p=norm, dim=1) > mask.threshold[f]).float()
        assert 0 < keep.sum() < 32
        torch.testing.assert_close(out[:, pos], plain[:, pos] * keep[:, None])
    torch.testing.assert_close(out[:, 1], plain[:, 1])
    torch.testing.assert_close(emb.flat(xb), out.flatten(1))  # models that call flat() are covered too
    # the hard mask over the tables is the same decision, row by row
    rows = mask.hard_row_mask()
    for f, name in enumerate(mask.field_names):
        table = emb.table(name)
        o = mask.offsets[name]
        want = (table.norm(p=norm, dim=1) > mask.threshold[f]).float()
        assert torch.equal(rows[o: o + 19], want.detach())


def test_supernet_training_samples_a_prefix_of_dims_per_row_and_field_and_the_gradient_is_the_surrogate():
    emb, mask, plain = _emb_and_mask()
    xb, _ = tiny_batch(32)
    with torch.no_grad():
        mask.threshold.copy_(torch.tensor([1.0, 1.5]))
    mask.train()
    torch.manual_seed(7)
    out = emb(xb)
    torch.manual_seed(7)  # the same draw, by hand: k uniform in [0, d) per (row, masked field), keep k + 1 dims
    k = torch.randint(0, 4, (32, 2))
    seen = set()
    for pos, f in ((0, 0), (2, 1)):
        keep = (plain[:, pos].norm(p=1, dim=1) > mask.threshold[f]).float()
        dims = prefix_mask(k[:, f] + 1, 4)
        torch.testing.assert_close(out[:, pos], plain[:, pos] * keep[:, None] * dims)
        seen |= set((k[:, f] + 1).tolist())
    assert seen == {1, 2, 3, 4}
    # gradients: d/dt_f of sum_b sum_j w e_j m_row m_dim = -sum_b g(u_b) sum_j w e_j m_dim (u = ||e||_1 - t_f)
    w = torch.randn(32, 3, 4, generator=torch.Generator().manual_seed(1))
    (out * w).sum().backward()
    for pos, f in ((0, 0), (2, 1)):
        u = plain[:, pos].norm(p=1, dim=1) - mask.threshold[f].detach()
        dims = prefix_mask(k[:, f] + 1, 4)
        want = -(_surrogate(u) * (w[:, pos] * plain[:, pos] * dims).sum(1)).sum()
        torch.testing.assert_close(mask.threshold.grad[f], want, rtol=1e-5, atol=1e-6)
    # the embedding rows get the masked data gradient plus the norm's: check one row that is read once
    e = emb.weight.detach().clone().requires_grad_(True)
    xa = xb["a"].long()
    b = int((torch.bincount(xa, minlength=20) == 1).nonzero()[0])  # a value read by exactly one row
    row = int((xa == b).nonzero()[0])
    ee = e[b]  # field a's value b lives at row b (offset 1, index b -> 1 + b - 1)
    u = ee.abs().sum() - mask.threshold[0].detach()
    m = binary_step(u.unsqueeze(0))[0]
    y = (w[row, 0] * ee * m * prefix_mask(k[row, 0] + 1, 4)).sum()
    (ge,) = torch.autograd.grad(y, [ee])
    torch.testing.assert_close(emb.weight.grad[b], ge, rtol=1e-5, atol=1e-6)


def test_fixed_masks_keep_rows_and_leading_dims_and_count_parameters():
    emb, mask, plain = _emb_and_mask()
    xb, _ = tiny_batch(32)
    row_keep = torch.ones_like(mask.row_keep)
    row_keep[mask.offsets["a"] + 2] = 0  # value 3 of a
    row_keep[mask.offsets["b"]: mask.offsets["b"] + 10] = 0  # values 1..10 of b
    mask.set_fixed(row_keep, torch.tensor([3, 1]))
    assert not mask.threshold.requires_grad and mask.mode == "fixed"
    out = emb(xb)
    ka = (xb["a"].long() != 3).float()
    kb = (xb["b"].long() > 10).float()
    torch.testing.assert_close(out[:, 0], plain[:, 0] * ka[:, None] * torch.tensor([1.0, 1, 1, 0]))
    torch.testing.assert_close(out[:, 2], plain[:, 2] * kb[:, None] * torch.tensor([1.0, 0, 0, 0]))
    torch.testing.assert_close(out[:, 1], plain[:, 1])
    assert mask.rows_kept_per_field().tolist() == [18, 9]
    assert mask.parameters_kept() == 18 * 3 + 9 * 1
    assert mask.parameters_kept(dims=torch.tensor([4, 4])) == (18 + 9) * 4
    # a masked row or dimension gets no gradient
    emb.weight.grad = None
    out.sum().backward()
    g = emb.weight.grad
    assert torch.equal(g[mask.offsets["a"] + 2], torch.zeros(4)) and torch.equal(g[mask.offsets["a"]:, 3][:19],
                                                                                 torch.zeros(19))
    with pytest.raises(ValueError, match="dims must be 2 ints in"):
        mask.set_dims([5, 1])


def test_only_the_d_wide_embeddings_are_masked_and_a_model_without_one_is_refused():
    lr = LogisticRegression(SPEC)  # its own dim-1 tables: not the embeddings OptEmbed masks
    with pytest.raises(ValueError, match="no FeatureEmbedding of width 4"):
        EmbeddingMask(SPEC, 4).attach(lr)
    with pytest.raises(ValueError, match="norm must be 1 or 2"):
        EmbeddingMask(SPEC, 4, norm=3)


def test_feature_level_thresholds_prune_each_value_by_its_own_threshold():
    """The official mode_threshold='feature': one threshold per feature value (global rows, padding row unused)."""
    torch.manual_seed(0)
    emb = FeatureEmbedding(SPEC, 4)
    with torch.no_grad():
        emb.weight.normal_(0, 0.5)
        emb.weight[0].zero_()
    xb, _ = tiny_batch(32)
    plain = emb(xb).detach()
    mask = EmbeddingMask(SPEC, 4, level="feature")
    assert tuple(mask.threshold.shape) == (39,)
    mask.attach(emb)
    with torch.no_grad():
        mask.threshold.copy_(torch.rand(39, generator=torch.Generator().manual_seed(2)) * 2)
    mask.eval()
    out = emb(xb)
    for pos, name in ((0, "a"), (2, "b")):
        t = mask.threshold.detach()[xb[name].long() + mask.offsets[name] - 1]
        keep = (plain[:, pos].norm(p=1, dim=1) > t).float()
        assert 0 < keep.sum() < 32
        torch.testing.assert_close(out[:, pos], plain[:, pos] * keep[:, None])
    rows = mask.hard_row_mask()
    table_a = emb.table("a")
    o = mask.offsets["a"]
    assert torch.equal(rows[o: o + 19], (table_a.norm(p=1, dim=1) > mask.threshold[o: o + 19]).float().detach())
    torch.testing.assert_close(mask.penalty(), torch.exp(-mask.threshold[1:]).sum())
    (out.sum()).backward()
    read = {int(v) + mask.offsets["a"] - 1 for v in xb["a"]} | {int(v) + mask.offsets["b"] - 1 for v in xb["b"]}
    unread = [r for r in range(1, 39) if r not in read]
    assert unread and all(float(mask.threshold.grad[r]) == 0 for r in unread)  # a value not read gets no gradient
    with pytest.raises(ValueError, match="level must be 'field' or 'feature'"):
        EmbeddingMask(SPEC, 4, level="row")
