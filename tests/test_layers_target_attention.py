"""DINAttention and Dice against hand computations with explicit weights."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import MLP, Dice, DINAttention


def test_dice_by_hand_train_and_eval():
    torch.manual_seed(0)
    x = torch.randn(8, 3)
    dice = Dice(3)
    with torch.no_grad():
        dice.alpha.copy_(torch.tensor([0.0, 0.5, -1.0]))
    dice.train()
    mean, var = x.mean(0), x.var(0, unbiased=False)
    p = torch.sigmoid((x - mean) / torch.sqrt(var + 1e-9))
    assert torch.allclose(dice(x), p * x + dice.alpha * (1 - p) * x, atol=1e-6)
    # running statistics with momentum 0.01 (from mean 0, var 1)
    assert torch.allclose(dice.bn.running_mean, 0.01 * mean, atol=1e-7)
    dice.eval()
    rm, rv = dice.bn.running_mean, dice.bn.running_var
    p = torch.sigmoid((x - rm) / torch.sqrt(rv + 1e-9))
    assert torch.allclose(dice(x), p * x + dice.alpha * (1 - p) * x, atol=1e-6)
    dice.reset_parameters()
    assert torch.equal(dice.alpha, torch.zeros(3)) and torch.equal(dice.bn.running_mean, torch.zeros(3))


def test_mlp_dice_layers():
    mlp = MLP(4, (5, 3), "dice", output_dim=1)
    kinds = [type(m).__name__ for m in mlp.net]
    assert kinds == ["Linear", "Dice", "Linear", "Dice", "Linear"]
    assert mlp.net[1].alpha.shape == (5,) and mlp.net[3].alpha.shape == (3,)


def _attention(use_softmax: bool) -> DINAttention:
    att = DINAttention(2, units=(1,), hidden_activation="identity", use_softmax=use_softmax)
    with torch.no_grad():  # score = [t, h, t - h, t * h] . w + 0 -> * 1 + 0.5
        att.mlp.net[0].weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 1.0, 1.0]]))
        att.mlp.net[0].bias.zero_()
        att.mlp.net[2].weight.fill_(1.0)
        att.mlp.net[2].bias.fill_(0.5)
    return att


@pytest.mark.parametrize("use_softmax", [False, True])
def test_din_attention_by_hand(use_softmax):
    t = torch.tensor([[1.0, 2.0], [0.5, -1.0]])
    h = torch.tensor([[[3.0, 1.0], [-1.0, 2.0], [0.0, 0.0]], [[0.0, 0.0], [0.0, 0.0], [2.0, 2.0]]])
    mask = torch.tensor([[True, True, False], [False, False, True]])  # post- and pre-padded rows
    out = _attention(use_softmax)(t, h, mask)
    expected = []
    for b in range(2):
        scores = []
        for j in range(3):
            hj = h[b, j]
            s = t[b, 0] + hj[1] + (t[b] * hj).sum() + 0.5
            scores.append(s * float(mask[b, j]))
        w = torch.stack(scores)
        if use_softmax:
            w = torch.softmax(w + -1e9 * (1 - mask[b].float()), dim=0)
        expected.append((w.unsqueeze(1) * h[b]).sum(0))
    assert torch.allclose(out, torch.stack(expected), atol=1e-6)


def test_din_attention_empty_history_is_zero():
    att = _attention(True)
    t = torch.randn(2, 2)
    out = att(t, torch.zeros(2, 4, 2), torch.zeros(2, 4, dtype=torch.bool))
    assert torch.equal(out, torch.zeros(2, 2))
