"""AW-MoE's gate blocks (bars/models/layers/attention_weighted_moe.py) against hand computations: the activation
unit's raw scores agree with DINAttention, the gate logits are the attention-weighted sum of the per-behaviour gate
unit, the random mask is seeded by torch's generator, InfoNCE by its formula and its bounds."""

from __future__ import annotations

import math

import pytest
import torch

from bars.models.layers import AttentionWeightedGate, DINAttention, gate_info_nce, random_keep
from bars.models.layers.attention_weighted_moe import activation_scores, attention_weights


def _inputs(seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(4, 3, generator=g)
    h = torch.randn(4, 5, 3, generator=g)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False], [False] * 5,
                         [False, False, True, True, True]])
    return t, h * mask.unsqueeze(-1), mask


@pytest.mark.parametrize("use_softmax", [False, True])
def test_scores_pool_to_din_attention(use_softmax):
    """Masking and pooling activation_scores gives DINAttention's output (rows with behaviours; DIN's softmax
    gives an empty row the mean of its zero padding rows, 0, and so does the zero weights here)."""
    torch.manual_seed(0)
    att = DINAttention(3, (8, 4), "relu", "sigmoid", use_softmax=use_softmax).eval()
    t, h, mask = _inputs()
    w = attention_weights(activation_scores(att, t, h), mask, use_softmax)
    assert torch.allclose(torch.bmm(w.unsqueeze(1), h).squeeze(1), att(t, h, mask), atol=1e-6)
    # the scores are the MLP on [t, h_j, t - h_j, t * h_j] (then the output activation), by hand
    x = torch.cat([t.unsqueeze(1).expand_as(h), h, t.unsqueeze(1) - h, t.unsqueeze(1) * h], dim=-1)
    assert torch.allclose(activation_scores(att, t, h), torch.sigmoid(att.mlp(x).squeeze(-1)), atol=1e-6)


def test_attention_weights_by_hand():
    s = torch.tensor([[1.0, 2.0, 3.0], [0.5, -1.0, 4.0]])
    m = torch.tensor([[True, True, False], [False, False, False]])
    e = math.exp(1.0) + math.exp(2.0)
    want = torch.tensor([[math.exp(1.0) / e, math.exp(2.0) / e, 0.0], [0.0, 0.0, 0.0]])
    assert torch.allclose(attention_weights(s, m, True), want, atol=1e-7)
    assert torch.equal(attention_weights(s, m, False), torch.tensor([[1.0, 2.0, 0.0], [0.0, 0.0, 0.0]]))


@pytest.mark.parametrize("normalize", [True, False])
def test_gate_logits_by_hand(normalize):
    torch.manual_seed(1)
    gate = AttentionWeightedGate(3, num_experts=4, gate_units=(6,), attention_units=(5,),
                                 attention_activation="relu", normalize=normalize).eval()
    t, h, mask = _inputs(1)
    z = gate(t, h, mask)
    assert z.shape == (4, 4)
    for b in range(4):
        want = torch.zeros(4)
        scores = []
        for j in range(5):
            x = torch.cat([t[b], h[b, j], t[b] - h[b, j], t[b] * h[b, j]])
            scores.append(gate.activation_unit.mlp(x.unsqueeze(0)).squeeze())
        scores = torch.stack(scores)
        valid = mask[b]
        if normalize:
            w = torch.zeros(5)
            if valid.any():
                w[valid] = torch.softmax(scores[valid], dim=0)
        else:
            w = scores * valid
        for j in range(5):
            want = want + w[j] * gate.gate_unit(h[b, j].unsqueeze(0)).squeeze(0)
        assert torch.allclose(z[b], want, atol=1e-6), b
    assert torch.equal(z[2], torch.zeros(4))  # no behaviour: zero logits (a uniform activation vector)


def test_random_keep_is_seeded_and_only_drops():
    mask = torch.rand(64, 20, generator=torch.Generator().manual_seed(0)) < 0.7
    torch.manual_seed(5)
    a = random_keep(mask, 0.5)
    torch.manual_seed(5)
    b = random_keep(mask, 0.5)
    torch.manual_seed(6)
    c = random_keep(mask, 0.5)
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert not (a & ~mask).any()  # never adds a behaviour
    kept = a.sum() / mask.sum()
    assert 0.4 < float(kept) < 0.6
    torch.manual_seed(5)
    assert torch.equal(random_keep(mask, 0.0), mask)  # rate 0 keeps every behaviour
    torch.manual_seed(5)
    assert torch.equal(a, mask & (torch.rand(mask.shape) >= 0.5))  # the documented draw


def test_info_nce_by_hand_and_bounds():
    g = torch.Generator().manual_seed(2)
    a, b = torch.rand(6, 4, generator=g), torch.rand(6, 4, generator=g)
    tau = 0.3
    got = gate_info_nce(a, b, tau)
    want = 0.0
    for i in range(6):
        sims = [float(torch.nn.functional.cosine_similarity(a[i], b[j], dim=0)) / tau for j in range(6)]
        want += -(sims[i] - math.log(sum(math.exp(s) for s in sims)))
    assert got.item() == pytest.approx(want / 6, rel=1e-5)
    assert got.item() > 0
    # every vector the same direction: log B (no sample can be told apart)
    same = torch.ones(6, 4)
    assert gate_info_nce(same, 2 * same, tau).item() == pytest.approx(math.log(6), rel=1e-6)
    # one sample: no negative, exactly zero
    assert gate_info_nce(a[:1], b[:1], tau).item() == 0.0
    # orthogonal one-hot views matching their own sample, small temperature: close to zero
    eye = torch.eye(4)
    assert 0.0 <= gate_info_nce(eye, eye, 0.01).item() < 1e-6
    assert gate_info_nce(eye, eye, 1.0).item() > gate_info_nce(eye, eye, 0.1).item()  # the temperature sharpens
