"""DisentangledSelfAttention (DESTINE) against explicit loops over (sample, head, query field, key field): the
per-head ("columns") split, FuxiCTR's reshape ("view") split written out as FuxiCTR 2.3.10 writes it, and their
agreement with one head."""

from __future__ import annotations

import math

import pytest
import torch

from bars.models.layers import DisentangledSelfAttention


def loop_reference(m: DisentangledSelfAttention, x: torch.Tensor, heads_of) -> torch.Tensor:
    """out[b, i, head h cols] = sum_j (softmax_j(<q_i - mean q, k_j - mean k> / s) + softmax_j(u_j)) v_j, head by
    head, with ``heads_of(t)`` giving the [B, H, F, d] head tensors and ``unary_of`` the [B, H, F] unary logits."""
    b, f, _ = x.shape
    q, k, v = m.W_q(x), m.W_k(x), m.W_v(x)
    if m.relu_before_att:
        q, k, v = q.relu(), k.relu(), v.relu()
    qh, kh, vh, uh = heads_of(q), heads_of(k), heads_of(v), heads_of(None, unary=torch.softmax(m.W_unary(x), 1))
    hcount, d = qh.shape[1], qh.shape[3]
    out = torch.zeros(b, hcount, f, d, dtype=x.dtype)
    for bi in range(b):
        for h in range(hcount):
            qc = qh[bi, h] - qh[bi, h].mean(dim=0)
            kc = kh[bi, h] - kh[bi, h].mean(dim=0)
            for i in range(f):
                scores = torch.stack([qc[i] @ kc[j] for j in range(f)])
                if m.use_scale:
                    scores = scores / math.sqrt(d)
                w = torch.softmax(scores, dim=0) + uh[bi, h]
                out[bi, h, i] = sum(w[j] * vh[bi, h, j] for j in range(f))
    return out


def columns_heads(m):
    def heads(t, unary=None):
        if unary is not None:  # [B, F, H] -> [B, H, F]
            return unary.transpose(1, 2)
        b, f, _ = t.shape
        return t.view(b, f, m.num_heads, m.head_dim).transpose(1, 2)
    return heads


def view_heads(m):
    """FuxiCTR 2.3.10: query.view(batch_size * num_heads, -1, head_dim); unary.view(batch * heads, -1, 1)."""
    def heads(t, unary=None):
        if unary is not None:
            b = unary.shape[0]
            return unary.reshape(b * m.num_heads, -1).view(b, m.num_heads, -1)
        b = t.shape[0]
        return t.reshape(b * m.num_heads, -1, m.head_dim).view(b, m.num_heads, -1, m.head_dim)
    return heads


@pytest.mark.parametrize("use_scale, relu", [(False, False), (True, True)])
def test_columns_split_against_loops(use_scale, relu):
    torch.manual_seed(0)
    m = DisentangledSelfAttention(4, 6, num_heads=2, use_residual=True, use_scale=use_scale, relu_before_att=relu,
                                  head_split="columns").double()
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    ref = loop_reference(m, x, columns_heads(m))  # [B, H, F, d]
    want = ref.transpose(1, 2).reshape(3, 5, 6) + m.W_res(x)
    torch.testing.assert_close(m(x), want)


def test_view_split_is_fuxictrs_reshape():
    torch.manual_seed(1)
    m = DisentangledSelfAttention(3, 8, num_heads=2, use_residual=False, use_scale=True,
                                  head_split="view").double()
    x = torch.randn(2, 5, 3, dtype=torch.float64)
    ref = loop_reference(m, x, view_heads(m))  # [B, H, F, d] in the view's order
    want = ref.reshape(2 * 2, 5, 4).reshape(2, 5, 8)  # output.view(batch_size, -1, attention_dim)
    torch.testing.assert_close(m(x), want)
    other = DisentangledSelfAttention(3, 8, num_heads=2, use_residual=False, use_scale=True,
                                      head_split="columns").double()
    other.load_state_dict(m.state_dict())
    assert not torch.allclose(other(x), m(x))  # with 2 heads the splits differ


def test_one_head_the_splits_agree_and_weights_sum_to_two():
    torch.manual_seed(2)
    a = DisentangledSelfAttention(4, 6, num_heads=1, head_split="view")
    c = DisentangledSelfAttention(4, 6, num_heads=1, head_split="columns")
    c.load_state_dict(a.state_dict())
    x = torch.randn(3, 5, 4)
    torch.testing.assert_close(a(x), c(x))
    # each attention row is a softmax (sums to 1) plus the unary softmax (sums to 1): with v = 1, output = 2
    with torch.no_grad():
        a.W_v.weight.zero_()
        a.W_v.bias.fill_(1.0)
        a.W_res.weight.zero_()
        a.W_res.bias.zero_()
    torch.testing.assert_close(a(x), torch.full((3, 5, 6), 2.0))


def test_shapes_parameters_and_errors():
    m = DisentangledSelfAttention(10, 16, num_heads=4, dropout=0.1, use_residual=False)
    assert m.W_res is None and m.W_unary.out_features == 4 and m.dropout is not None
    assert m(torch.randn(2, 7, 10)).shape == (2, 7, 16)
    with pytest.raises(ValueError, match="not divisible"):
        DisentangledSelfAttention(10, 10, num_heads=4)
    with pytest.raises(ValueError, match="head_split"):
        DisentangledSelfAttention(10, 8, head_split="rows")  # type: ignore[arg-type]
