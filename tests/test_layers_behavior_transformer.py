"""BST's behaviour transformer: the attention equals torch's nn.MultiheadAttention with the same weights and mask,
the masks by hand, the sinusoidal position initialisation, and the block's post-norm residual structure."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from bars.models.layers.behavior_transformer import (
    BehaviorTransformer,
    MaskedSelfAttention,
    TransformerBlock,
    behaviour_masks,
    scaled_attention,
)


def test_masks_by_hand():
    seq = torch.tensor([[3, 0, 5], [0, 0, 0]])
    keep, allowed = behaviour_masks(seq)
    assert keep.tolist() == [[True, False, True, True], [False, False, False, True]]
    a = allowed[0, 0]
    assert a[1].tolist() == [True, True, True, True]  # a padding row attends the behaviours, the target and itself
    assert a[0].tolist() == [True, False, True, True]  # a behaviour does not attend padding
    assert allowed[1, 0, 2].tolist() == [False, False, True, True]
    _, causal = behaviour_masks(seq, causal=True)
    assert causal[0, 0, 0].tolist() == [True, False, False, False]
    assert causal[0, 0, 3].tolist() == [True, False, True, True]


@pytest.mark.parametrize("capability", ["AVX512", "AVX2"])
@pytest.mark.parametrize("mask_kind", ["bool", "float"])
def test_scaled_attention_both_paths_follow_the_equation(mask_kind, capability, monkeypatch):
    """torch's fused kernel (AVX-512, or attention dropout) and the explicit products (an AVX2 CPU) against
    softmax(q k^T / sqrt(d) + mask) v in float64: values and gradients; a bool mask removes keys (every query keeps
    itself), a float one is added."""
    from bars.models.layers import kernels

    monkeypatch.setattr(kernels, "_CAPABILITY", capability)
    torch.manual_seed(1)
    q, k, v = (torch.randn(3, 2, 5, 4, requires_grad=True) for _ in range(3))
    _, allowed = behaviour_masks(torch.tensor([[1, 2, 0, 0], [0, 0, 3, 1], [0, 0, 0, 0]]))  # [3, 1, 5, 5]
    mask = allowed if mask_kind == "bool" else torch.randn(3, 1, 5, 5)
    out = scaled_attention(q, k, v, mask)
    q64, k64, v64 = (t.detach().double().requires_grad_() for t in (q, k, v))
    scores = q64 @ k64.transpose(-2, -1) / 2.0
    scores = scores.masked_fill(~mask, float("-inf")) if mask_kind == "bool" else scores + mask.double()
    want = torch.softmax(scores, dim=-1) @ v64
    torch.testing.assert_close(out.double(), want, rtol=1e-5, atol=1e-6)
    g = torch.randn_like(out)
    out.backward(g)
    want.backward(g.double())
    for a, b in ((q, q64), (k, k64), (v, v64)):
        torch.testing.assert_close(a.grad.double(), b.grad, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("capability", ["AVX512", "AVX2"])
def test_attention_equals_torch_multihead_attention(capability, monkeypatch):
    from bars.models.layers import kernels

    monkeypatch.setattr(kernels, "_CAPABILITY", capability)
    torch.manual_seed(0)
    ours = MaskedSelfAttention(8, 2)
    ref = nn.MultiheadAttention(8, 2, batch_first=True)
    with torch.no_grad():
        ref.in_proj_weight.copy_(ours.in_proj_weight)
        ref.in_proj_bias.copy_(torch.randn(24))
        ours.in_proj_bias.copy_(ref.in_proj_bias)
        ref.out_proj.weight.copy_(ours.out_weight)
        ref.out_proj.bias.copy_(torch.randn(8))
        ours.out_bias.copy_(ref.out_proj.bias)
    x = torch.randn(3, 5, 8)
    _, allowed = behaviour_masks(torch.tensor([[1, 2, 0, 0], [0, 0, 3, 1], [0, 0, 0, 0]]))
    want, _ = ref(x, x, x, attn_mask=~allowed.squeeze(1).repeat_interleave(2, dim=0))
    assert torch.allclose(ours(x, allowed), want, atol=1e-6)


def test_attention_initialisation_is_torchs():
    torch.manual_seed(0)
    a = MaskedSelfAttention(64, 4)
    assert torch.equal(a.in_proj_bias, torch.zeros(192)) and torch.equal(a.out_bias, torch.zeros(64))
    bound_in = math.sqrt(6.0 / (64 + 192))  # xavier-uniform of [192, 64]
    assert a.in_proj_weight.abs().max() <= bound_in and a.in_proj_weight.std() > 0.8 * bound_in / math.sqrt(3)
    bound_out = 1.0 / math.sqrt(64)  # kaiming-uniform(a=sqrt 5) of a fresh Linear(64, 64)
    assert a.out_weight.abs().max() <= bound_out and a.out_weight.std() > 0.8 * bound_out / math.sqrt(3)


def test_position_embedding_is_sinusoidal_and_block_is_post_norm():
    t = BehaviorTransformer(4, 8, 2, 1, 0.0, 0.0, 4, True, True, True)
    pos = torch.arange(4.0).unsqueeze(1)
    div = torch.exp(torch.arange(0, 4, 2).float() * (-math.log(10000.0) / 4))
    assert torch.allclose(t.position_emb[:, 0::2], torch.sin(pos * div))
    assert torch.allclose(t.position_emb[:, 1::2], torch.cos(pos * div))
    x = torch.randn(2, 4, 4)
    _, allowed = behaviour_masks(torch.tensor([[1, 1, 0], [1, 2, 3]]))
    block = t.blocks[0]
    xp = torch.cat([x, t.position_emb.expand(2, -1, -1)], dim=-1)
    s = block.norm1(xp + block.attention(xp, allowed))
    assert torch.allclose(t(x, allowed), block.norm2(s + block.ffn(s)), atol=1e-6)
    bare = TransformerBlock(8, 2, 0.0, 0.0, layer_norm=False, use_residual=False)
    assert torch.allclose(bare(xp, allowed), bare.ffn(bare.attention(xp, allowed)), atol=1e-6)
