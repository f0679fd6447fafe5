"""DNIS's soft selection layer (bars.models.layers.DimensionSelection) and its pruning (prune_mask): the scaled
embeddings, the gradient reaching alpha only when the selection step asks for it, the hard mask, the threshold
that hits a target ratio of embedding parameters."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import DimensionSelection, FeatureEmbedding, LogisticRegression, prune_mask
from tests._tiny_ctr import SPEC, tiny_batch


def _emb_and_selection(alpha: torch.Tensor | None = None):
    torch.manual_seed(0)
    emb = FeatureEmbedding(SPEC, 4)
    with torch.no_grad():
        emb.weight.normal_()
        emb.numeric_weight.normal_()
    plain = emb(tiny_batch(16)[0]).detach()
    sel = DimensionSelection(SPEC, 4)
    if alpha is not None:
        with torch.no_grad():
            sel.weight.copy_(alpha)
    sel.attach(emb)
    return emb, sel, plain


def test_selection_is_one_at_init_and_scales_each_dimension_of_its_field():
    emb, sel, plain = _emb_and_selection()
    xb, _ = tiny_batch(16)
    assert sel.field_names == ("a", "b") and tuple(sel.weight.shape) == (2, 4)
    assert torch.equal(emb(xb), plain)  # alpha = 1: the plain model
    alpha = torch.tensor([[0.5, -2.0, 0.0, 1.5], [3.0, 0.25, 1.0, -1.0]])
    with torch.no_grad():
        sel.weight.copy_(alpha)
    out = emb(xb)
    # fields in spec order a, price (numeric: unchanged), b
    torch.testing.assert_close(out[:, 0], plain[:, 0] * alpha[0])
    torch.testing.assert_close(out[:, 1], plain[:, 1])
    torch.testing.assert_close(out[:, 2], plain[:, 2] * alpha[1])
    torch.testing.assert_close(emb.flat(xb), out.flatten(1))  # models that call flat() are covered too


def test_alpha_gets_a_gradient_only_in_the_selection_step():
    alpha = torch.tensor([[0.5, -2.0, 0.0, 1.5], [3.0, 0.25, 1.0, -1.0]])
    emb, sel, plain = _emb_and_selection(alpha)
    xb, _ = tiny_batch(16)
    w = torch.randn(16, 3, 4, generator=torch.Generator().manual_seed(1))
    (emb(xb) * w).sum().backward()  # the backbone's step: alpha detached
    assert sel.weight.grad is None and emb.weight.grad is not None
    sel.grad_on = True
    (g,) = torch.autograd.grad((emb(xb) * w).sum(), [sel.weight])
    # d/d alpha[f, j] of sum_b w[b, f, j] * e[b, f, j] * alpha[f, j] = sum_b w[b, f, j] * e[b, f, j]
    torch.testing.assert_close(g[0], (w[:, 0] * plain[:, 0]).sum(0))
    torch.testing.assert_close(g[1], (w[:, 2] * plain[:, 2]).sum(0))


def test_hard_mask_zeroes_dims_and_their_table_columns_get_no_gradient():
    emb, sel, plain = _emb_and_selection(torch.full((2, 4), 0.3))
    keep = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]], dtype=torch.bool)
    sel.set_mask(keep)
    assert sel.hard and not sel.weight.requires_grad
    assert sel.dims_per_field() == {"a": 2, "b": 1}
    assert sel.parameters_total == 19 * 4 * 2 and sel.parameters_kept() == 19 * 2 + 19 * 1
    xb, _ = tiny_batch(16)
    out = emb(xb)
    torch.testing.assert_close(out[:, 0], plain[:, 0] * keep[0])  # 0/1, not alpha
    torch.testing.assert_close(out[:, 2], plain[:, 2] * keep[1])
    out.square().sum().backward()
    a0, a1 = emb.table_rows["a"]
    b0, b1 = emb.table_rows["b"]
    assert emb.weight.grad[a0:a1][:, ~keep[0]].abs().sum() == 0 and emb.weight.grad[a0:a1][:, keep[0]].abs().sum() > 0
    assert emb.weight.grad[b0:b1][:, ~keep[1]].abs().sum() == 0


def test_attach_skips_narrower_embeddings_and_refuses_a_model_without_one():
    lr = LogisticRegression(SPEC)  # its own dim-1 tables: not the embeddings DNIS selects over
    with pytest.raises(ValueError, match="no FeatureEmbedding of width 4"):
        DimensionSelection(SPEC, 4).attach(lr)
    model = torch.nn.ModuleDict({"emb": FeatureEmbedding(SPEC, 4), "lr": lr})
    assert len(DimensionSelection(SPEC, 4).attach(model)) == 1


def test_prune_by_threshold_and_by_a_target_ratio_of_parameters():
    alpha = torch.tensor([[0.9, -0.1, 0.5, 0.05], [-0.7, 0.3, 0.3, 0.01]])
    rows = torch.tensor([100, 10])
    assert prune_mask(alpha, rows, threshold=0.3).tolist() == [[True, False, True, False], [True, False, False, False]]
    total = 4 * 110
    for ratio in (0.05, 0.25, 0.5, 0.6, 0.75, 1.0):
        keep = prune_mask(alpha, rows, keep_ratio=ratio)
        kept = int((keep.sum(1) * rows).sum())
        assert kept <= ratio * total
        # the threshold is |alpha| of the weakest kept entry; one more value of |alpha| would exceed the target
        lower = alpha.abs()[~keep]
        if len(lower):
            nxt = lower.max()
            more = int(((alpha.abs() >= nxt).sum(1) * rows).sum())
            assert more > ratio * total
            assert bool((alpha.abs()[keep] > nxt).all())
    # ties at 0.3 (field b, 10 rows each) are kept or dropped together
    keep = prune_mask(alpha, rows, keep_ratio=(100 + 10 + 100 + 10 + 10) / total)
    assert keep.tolist() == [[True, False, True, False], [True, True, True, False]]
    keep = prune_mask(alpha, rows, keep_ratio=(100 + 10 + 100 + 10 + 9) / total)  # one tie short: both dropped
    assert keep.tolist() == [[True, False, True, False], [True, False, False, False]]
    with pytest.raises(ValueError, match="exactly one"):
        prune_mask(alpha, rows, keep_ratio=0.5, threshold=0.1)
    with pytest.raises(ValueError, match="keep_ratio must be in"):
        prune_mask(alpha, rows, keep_ratio=0.0)


def test_min_dims_floor_keeps_each_fields_strongest_dims_within_the_budget():
    alpha = torch.tensor([[0.9, -0.1, 0.5, 0.05], [-0.7, 0.3, 0.3, 0.01], [0.02, 0.04, 0.03, 0.01]])
    rows = torch.tensor([100, 10, 5])
    total = 4 * 115
    assert prune_mask(alpha, rows, keep_ratio=0.5)[2].sum() == 0  # the paper's rule drops field 3 entirely
    keep = prune_mask(alpha, rows, keep_ratio=0.5, min_dims=1)
    assert keep.sum(1).min() >= 1 and bool(keep[2, 1]) and keep[2].sum() == 1  # its largest |alpha|
    assert int((keep.sum(1) * rows).sum()) <= 0.5 * total
    assert prune_mask(alpha, rows, threshold=0.6, min_dims=1).tolist() == [
        [True, False, False, False], [True, False, False, False], [False, True, False, False]]
    # floors alone over the budget: only the floors are kept
    assert prune_mask(alpha, rows, keep_ratio=0.1, min_dims=2).sum(1).tolist() == [2, 2, 2]


def test_per_row_and_per_field_pruning():
    """bars switch ``scope``: per_row ranks by |alpha| / rows[f] (the same budget rule, written out as a greedy
    loop); per_field keeps floor(keep_ratio * d) of every field's dims, its largest |alpha|."""
    alpha = torch.tensor([[0.9, -0.1, 0.5, 0.05], [-0.7, 0.3, 0.3, 0.01], [0.02, 0.04, 0.03, 0.01]])
    rows = torch.tensor([100, 10, 5])
    total = 4 * 115
    keep = prune_mask(alpha, rows, keep_ratio=0.5, scope="per_row")
    score = alpha.abs() / rows[:, None]
    want = torch.zeros_like(keep)
    spent = 0
    order = sorted(((float(score[f, j]), f, j) for f in range(3) for j in range(4)), reverse=True)
    for i, (v, f, j) in enumerate(order):  # no ties here: greedy until the next entry would exceed the budget
        if spent + int(rows[f]) > 0.5 * total:
            break
        want[f, j] = True
        spent += int(rows[f])
    assert torch.equal(keep, want)
    # |alpha| / rows: field 1's 0.07, 0.03, 0.03, then field 0's 0.009, field 2's 0.008, 0.006 (140 of 230 rows);
    # field 0's next (0.005, 100 rows) would exceed the budget
    assert keep.tolist() == [[True, False, False, False], [True, True, True, False], [False, True, True, False]]
    assert not prune_mask(alpha, rows, keep_ratio=0.5)[2].any()  # the paper's rule, for contrast
    with pytest.raises(ValueError, match="scope=per_row ranks against a keep_ratio budget"):
        prune_mask(alpha, rows, threshold=0.1, scope="per_row")
    keep = prune_mask(alpha, rows, keep_ratio=0.5, scope="per_field")
    assert keep[0].tolist() == [True, False, True, False] and keep[2].tolist() == [False, True, True, False]
    assert keep.sum(1).tolist() == [2, 2, 2] and bool(keep[1, 0])  # field 1's tie at 0.3: one of the two
    assert prune_mask(alpha, rows, keep_ratio=0.3, scope="per_field").sum(1).tolist() == [1, 1, 1]
    assert prune_mask(alpha, rows, keep_ratio=0.3, scope="per_field", min_dims=2).sum(1).tolist() == [2, 2, 2]
