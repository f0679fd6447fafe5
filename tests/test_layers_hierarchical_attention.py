"""InterHAt's transformer block and hierarchical attentional aggregation against explicit loops."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import (
    AttentionalAggregation,
    HierarchicalAttention,
    PositionwiseFeedForward,
    TransformerSelfAttention,
)


def attention_loops(x, wq, wk, wv, heads, a, tokens_of):
    """Scaled dot-product attention per head over explicit token lists; ``tokens_of(proj, b, h)`` returns the
    [T, a] tokens of head h in sample b; returns per (b, h) outputs."""
    q, k, v = x @ wq.T, x @ wk.T, x @ wv.T
    out = {}
    for b in range(x.shape[0]):
        for h in range(heads):
            qt, kt, vt = tokens_of(q, b, h), tokens_of(k, b, h), tokens_of(v, b, h)
            scores = torch.stack([torch.stack([qt[i] @ kt[j] for j in range(len(kt))]) for i in range(len(qt))])
            att = torch.softmax(scores / a**0.5, dim=-1)
            out[b, h] = att @ vt
    return out


def test_per_head_split_is_standard_multi_head_attention():
    torch.manual_seed(0)
    b, f, d, heads, a = 2, 5, 6, 2, 3
    m = TransformerSelfAttention(d, a, heads, use_residual=False, layer_norm=False, head_split="per_head")
    x = torch.randn(b, f, d)
    res = attention_loops(x, m.W_q.weight, m.W_k.weight, m.W_v.weight, heads, a,
                          lambda p, bb, h: p[bb, :, h * a : (h + 1) * a])
    concat = torch.stack([torch.cat([res[bb, h] for h in range(heads)], dim=-1) for bb in range(b)])
    assert m.W_res is None  # heads * a == d
    assert torch.allclose(m(x), torch.relu(concat), atol=1e-5)


def test_reshape_split_mixes_fields_as_fuxictr_view_does():
    torch.manual_seed(1)
    b, f, d, heads, a = 2, 4, 5, 2, 4
    m = TransformerSelfAttention(d, a, heads, use_residual=True, layer_norm=True, head_split="reshape")
    x = torch.randn(b, f, d)

    def tokens(p, bb, h):  # the flat [F * H * a] projection of sample bb cut into H blocks of F tokens of a
        flat = p[bb].reshape(-1)
        return flat[h * f * a : (h + 1) * f * a].view(f, a)

    res = attention_loops(x, m.W_q.weight, m.W_k.weight, m.W_v.weight, heads, a, tokens)
    merged = torch.stack([torch.cat([res[bb, h].reshape(-1) for h in range(heads)]).view(f, heads * a)
                          for bb in range(b)])
    expected = m.layer_norm(torch.relu(m.W_res(merged)) + x)
    assert torch.allclose(m(x), expected, atol=1e-5)
    per_head = TransformerSelfAttention(d, a, heads, head_split="per_head")
    per_head.load_state_dict(m.state_dict())
    assert not torch.allclose(per_head(x), m(x), atol=1e-3)  # with H > 1 the two splits differ
    one = TransformerSelfAttention(d, a, 1, head_split="reshape")
    one_std = TransformerSelfAttention(d, a, 1, head_split="per_head")
    one_std.load_state_dict(one.state_dict())
    assert torch.allclose(one(x), one_std(x), atol=1e-6)  # with one head they agree
    with pytest.raises(ValueError, match="head_split"):
        TransformerSelfAttention(d, a, 1, head_split="sideways")


def test_feed_forward_and_aggregation_by_hand():
    torch.manual_seed(2)
    ffn = PositionwiseFeedForward(3, 8, use_residual=True, layer_norm=False)
    x = torch.randn(4, 5, 3)
    lin1, lin2 = ffn.ffn[0], ffn.ffn[2]
    assert torch.allclose(ffn(x), lin2(torch.relu(lin1(x))) + x, atol=1e-6)
    agg = AttentionalAggregation(3, 6)
    scores = torch.stack([agg.agg(x[:, n]) for n in range(5)], dim=1)  # [B, N, 1]
    w = torch.softmax(scores, dim=1)
    expected = sum(w[:, n] * x[:, n] for n in range(5))
    assert torch.allclose(agg(x), expected, atol=1e-6)
    assert [n for n, _ in agg.named_parameters()] == ["agg.0.weight", "agg.0.bias", "agg.2.weight"]


@pytest.mark.parametrize("order", [1, 3])
def test_hierarchical_attention_equals_order_loop(order):
    torch.manual_seed(3)
    h = HierarchicalAttention(4, 7, order)
    x1 = torch.randn(3, 5, 4)
    xp, us = x1, []
    for p in range(order):
        u = h.aggregation_layers[p](xp)
        us.append(u)
        xp = u.unsqueeze(1) * x1 + xp
    assert torch.allclose(h(x1), h.attentional_score(torch.stack(us, dim=1)), atol=1e-6)
    assert h(x1).shape == (3, 4)
    with pytest.raises(ValueError):
        HierarchicalAttention(4, 7, 0)
