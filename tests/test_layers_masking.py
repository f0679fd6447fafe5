"""MaskNet's blocks: MaskBlock against its equation written out (mask MLP, element-wise product, bias-free Linear,
LayerNorm, activation), the mask width FuxiCTR truncates, and FieldLayerNorm against one nn.LayerNorm per field."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bars.models.layers import FieldLayerNorm, MaskBlock, mask_width


def randomise(m: nn.Module) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))


def by_hand(block: MaskBlock, v_emb: torch.Tensor, v_hidden: torch.Tensor, layer_norm: bool, act) -> torch.Tensor:
    w1, b1 = block.mask_layer[0].weight, block.mask_layer[0].bias
    w2, b2 = block.mask_layer[2].weight, block.mask_layer[2].bias
    mask = torch.relu(v_emb @ w1.T + b1) @ w2.T + b2
    z = (mask * v_hidden) @ block.hidden_layer[0].weight.T
    if layer_norm:
        ln = block.hidden_layer[1]
        mu = z.mean(dim=-1, keepdim=True)
        var = z.var(dim=-1, unbiased=False, keepdim=True)
        z = (z - mu) / torch.sqrt(var + ln.eps) * ln.weight + ln.bias
    return act(z)


@pytest.mark.parametrize("layer_norm", [True, False])
@pytest.mark.parametrize(("name", "act"), [("relu", torch.relu), ("tanh", torch.tanh)])
def test_mask_block_is_its_equation(layer_norm, name, act):
    torch.manual_seed(0)
    block = MaskBlock(12, 7, 5, name, reduction_ratio=0.5, dropout=0.0, layer_norm=layer_norm).double()
    randomise(block)
    v_emb, v_hidden = torch.randn(4, 12, dtype=torch.float64), torch.randn(4, 7, dtype=torch.float64)
    assert block.mask_layer[0].out_features == 3 and block.mask_layer[2].out_features == 7  # int(7 * 0.5)
    assert block.hidden_layer[0].bias is None
    torch.testing.assert_close(block(v_emb, v_hidden), by_hand(block, v_emb, v_hidden, layer_norm, act))


def test_mask_block_dropout_follows_the_activation():
    torch.manual_seed(1)
    block = MaskBlock(6, 6, 8, "relu", dropout=0.5)
    v = torch.randn(64, 6)
    block.eval()
    ref = block(v, v)
    block.train()
    out = block(v, v)
    kept = out != 0
    assert 0.2 < kept[ref > 0].float().mean() < 0.8  # about half of the active units dropped
    torch.testing.assert_close(out[kept], 2 * ref[kept])  # the kept ones scaled by 1 / (1 - p)


def test_mask_width_truncates_and_a_zero_width_is_an_error():
    assert mask_width(400, 0.2) == 80 and mask_width(100, 0.25) == 25 and mask_width(7, 0.5) == 3
    assert mask_width(10, 2) == 20
    with pytest.raises(ValueError, match="reduction_ratio 0.01"):
        MaskBlock(10, 10, 4, reduction_ratio=0.01)
    with pytest.raises(ValueError, match="prelu"):
        MaskBlock(10, 10, 4, "prelu")


def test_field_layer_norm_is_one_layer_norm_per_field():
    torch.manual_seed(2)
    f, d = 5, 4
    ours = FieldLayerNorm(f, d).double()
    assert torch.all(ours.weight == 1) and torch.all(ours.bias == 0)
    randomise(ours)
    norms = [nn.LayerNorm(d).double() for _ in range(f)]
    with torch.no_grad():
        for i, n in enumerate(norms):
            n.weight.copy_(ours.weight[i])
            n.bias.copy_(ours.bias[i])
    x = torch.randn(3, f, d, dtype=torch.float64) * 3 + 1
    want = torch.stack([norms[i](x[:, i]) for i in range(f)], dim=1)
    torch.testing.assert_close(ours(x), want)
    ours.reset_parameters()
    assert torch.all(ours.weight == 1) and torch.all(ours.bias == 0)
