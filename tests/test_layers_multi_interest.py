"""DMIN's blocks (bars.models.layers.multi_interest) against their definitions written out: the causal padding mask,
the behaviour refiner against torch's MultiheadAttention (FuxiCTR's soft mask and the hard one), the target
attention with position embeddings, and the multi-interest extractor head by head."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bars.models.layers import (
    BehaviorRefiner,
    MultiInterestExtractor,
    PositionalTargetAttention,
    init_bars_,
    interest_masks,
)

SEQ = torch.tensor([[3, 5, 2, 0, 0], [0, 0, 0, 0, 0], [4, 4, 4, 4, 4], [7, 0, 0, 0, 0]])


def test_interest_masks_are_fuxictrs_causal_padding_mask():
    keep, allowed = interest_masks(SEQ)
    assert keep.tolist() == (SEQ > 0).tolist() and allowed.shape == (4, 1, 5, 5)
    for b in range(4):
        for i in range(5):
            for j in range(5):
                assert bool(allowed[b, 0, i, j]) == (j <= i and (bool(SEQ[b, j] > 0) or i == j)), (b, i, j)


def _history(dim: int = 8, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    h = torch.randn(4, 5, dim, generator=g)
    return h * (SEQ > 0).unsqueeze(-1)  # padding rows are zero, as a padding embedding


@pytest.mark.parametrize("capability", ["AVX512", "AVX2"])
@pytest.mark.parametrize("mask", ["soft", "hard"])
def test_refiner_equals_torch_multihead_attention(mask, capability, monkeypatch):
    from bars.models.layers import kernels

    monkeypatch.setattr(kernels, "_CAPABILITY", capability)
    torch.manual_seed(0)
    ref = init_bars_(BehaviorRefiner(8, 2, mask=mask)).eval()
    mha = nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        mha.in_proj_weight.copy_(ref.attention.in_proj_weight)
        mha.in_proj_bias.copy_(torch.randn(24))
        ref.attention.in_proj_bias.copy_(mha.in_proj_bias)
        mha.out_proj.weight.copy_(ref.attention.out_weight)
        mha.out_proj.bias.copy_(ref.attention.out_bias)
    x = _history()
    _, allowed = interest_masks(SEQ)
    per_head = allowed.expand(-1, 2, -1, -1).reshape(8, 5, 5)
    # FuxiCTR: attn_mask = 1 - keep.float(), which torch adds to the scores; hard: a bool mask (true = hidden)
    torch_mask = (1 - per_head.float()) if mask == "soft" else ~per_head
    s = ref.layer_norm(mha(x, x, x, attn_mask=torch_mask)[0] + x)
    want = ref.ffn(s) + s
    with torch.no_grad():
        assert torch.allclose(ref(x, allowed), want, atol=1e-6)


def test_soft_mask_lets_hidden_keys_in():
    torch.manual_seed(0)
    soft = init_bars_(BehaviorRefiner(8, 2, mask="soft")).eval()
    hard = BehaviorRefiner(8, 2, mask="hard").eval()
    hard.load_state_dict(soft.state_dict())
    x = _history()
    _, allowed = interest_masks(SEQ)
    with torch.no_grad():
        a, b = soft(x, allowed), hard(x, allowed)
    # hard: the first behaviour attends only itself; soft: every key, the hidden ones with their score + 1
    assert not torch.allclose(a[0, 0], b[0, 0], atol=1e-4)
    # a key that is hidden from every query changes nothing with the hard mask only
    y = x.clone()
    y[0, 4] = 1.0  # a padding position of row 0 (its row is kept: padding rows see themselves)
    with torch.no_grad():
        assert torch.allclose(hard(y, allowed)[0, :3], b[0, :3], atol=1e-6)
        assert not torch.allclose(soft(y, allowed)[0, :3], a[0, :3], atol=1e-4)
    with pytest.raises(ValueError, match="mask must be 'soft' or 'hard'"):
        BehaviorRefiner(8, 2, mask="causal")


def test_positional_target_attention_definition():
    torch.manual_seed(0)
    att = init_bars_(PositionalTargetAttention(8, 5, (6, 3), "relu", 0.0, True, 4)).eval()
    assert att.pos_emb is not None and not att.pos_emb.any()  # zero at init, as FuxiCTR leaves it
    with torch.no_grad():
        att.pos_emb.normal_()
    h, t = _history(), torch.randn(4, 8)
    keep = SEQ > 0
    with torch.no_grad():
        out = att(h, t, keep)
        for b in range(4):
            q = att.proj(torch.cat([t[b].expand(5, -1), att.pos_emb], dim=-1))
            s = att.mlp(torch.cat([q, h[b], q - h[b], q * h[b]], dim=-1)).squeeze(-1)
            w = torch.where(keep[b], s, torch.full_like(s, -1e9)).softmax(-1)
            assert torch.allclose(out[b], w @ h[b], atol=1e-6)
        assert torch.allclose(out[1], h[1].mean(0))  # no behaviour: the uniform average (FuxiCTR's softmax)
    no_pos = PositionalTargetAttention(8, 5, (6,), "dice", 0.0, False, 4)
    assert no_pos.pos_emb is None and no_pos.proj is None


@pytest.mark.parametrize("capability", ["AVX512", "AVX2"])
def test_extractor_head_by_head(capability, monkeypatch):
    from bars.models.layers import kernels

    monkeypatch.setattr(kernels, "_CAPABILITY", capability)
    torch.manual_seed(0)
    ext = init_bars_(MultiInterestExtractor(8, 2, 5, (6,), "relu", 0.0, 0.0, True, True, 3)).eval()
    x, t = _history(), torch.randn(4, 8)
    keep, allowed = interest_masks(SEQ)
    with torch.no_grad():
        interests = ext(x, t, keep, allowed)
        assert len(interests) == 2 and all(i.shape == (4, 8) for i in interests)
        q, k, v = ext.qkv(x).chunk(3, dim=-1)
        for head in range(2):
            cols = slice(4 * head, 4 * head + 4)
            scores = q[..., cols] @ k[..., cols].transpose(1, 2) / 2.0  # sqrt(head_dim 4)
            a = scores.masked_fill(~allowed[:, 0], -1e9).softmax(-1) @ v[..., cols]
            s = ext.layer_norm[head](ext.out[head](a) + x)
            u = ext.ffn[head](s) + s
            assert torch.allclose(interests[head], ext.target_attention[head](u, t, keep), atol=1e-6)
    with pytest.raises(ValueError, match="dim 8 is not divisible by num_heads 3"):
        MultiInterestExtractor(8, 3, 5)
