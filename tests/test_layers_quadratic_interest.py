"""QIN's blocks against their equations written out (salmon1802/QIN src/QIN_variety_v9.py): the sparse target
attention (computed without projecting each behaviour) equals the projected form, masks and zero-weight
behaviours drop out; the quadratic layer without ReLU / residual; the residual quadratic network."""

from __future__ import annotations

import math

import pytest
import torch

from bars.models.layers import QuadraticInterestNetwork, QuadraticLayer, SparseTargetAttention, init_bars_


def naive_attention(att: SparseTargetAttention, t, h, mask, scale: bool = True):
    """The authors' order: project target and every behaviour, scores * mask, ReLU, weighted values, W_o, + t."""
    b, length, _ = h.shape
    n, e = att.num_heads, att.head_dim
    q = (t @ att.query.weight.T).view(b, n, 1, e)
    k = (h @ att.key.weight.T).view(b, length, n, e).transpose(1, 2)
    v = (h @ att.value.weight.T).view(b, length, n, e).transpose(1, 2)
    s = q @ k.transpose(-1, -2)
    if scale:
        s = s / math.sqrt(e)
    s = s * mask.to(s.dtype).view(b, 1, 1, length)
    out = (torch.relu(s) @ v).reshape(b, n * e)
    return out @ att.output.weight.T + t


def data(b=5, length=6, d=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(b, d, generator=g, dtype=torch.float64)
    h = torch.randn(b, length, d, generator=g, dtype=torch.float64)
    mask = torch.rand(b, length, generator=g) > 0.3
    mask[0] = False  # an empty history
    return t, h, mask


@pytest.mark.parametrize(("heads", "width", "scale"), [(1, 16, True), (2, 16, True), (4, 12, False), (1, 5, True)])
def test_sparse_target_attention_equals_the_projected_form(heads, width, scale):
    torch.manual_seed(0)
    att = init_bars_(SparseTargetAttention(8, width, heads, use_scale=scale)).double()
    t, h, mask = data()
    got = att(t, h, mask)
    assert got.shape == (5, 8)
    assert torch.allclose(got, naive_attention(att, t, h, mask, scale), atol=1e-12)
    assert torch.equal(got[0], t[0])  # no behaviour: the target itself


def test_sparse_target_attention_is_sparse_and_ignores_padding():
    torch.manual_seed(1)
    att = init_bars_(SparseTargetAttention(8, 16)).double()
    t, h, mask = data()
    w = att.weights(t, h, mask)
    assert w.shape == (5, 1, 6)
    assert bool((w[~mask.unsqueeze(1)] == 0).all())
    assert bool((w >= 0).all()) and bool((w[mask.unsqueeze(1)] == 0).any())  # ReLU: some behaviours get exactly 0
    assert not torch.allclose(w.sum(-1), torch.ones_like(w.sum(-1)))  # not normalised (no softmax)
    # whatever a padding position holds, the output is the same
    h2 = torch.where(mask.unsqueeze(-1), h, torch.randn_like(h) * 10)
    assert torch.allclose(att(t, h, mask), att(t, h2, mask), atol=1e-12)
    # a behaviour with zero weight can change (within its zero-weight region) without moving the output
    row, col = [int(i) for i in ((w[:, 0] == 0) & mask).nonzero()[0]]
    h3 = h.clone()
    h3[row, col] *= 2.0  # scaling by a positive number keeps its score <= 0
    assert torch.allclose(att(t, h, mask)[row], att(t, h3, mask)[row], atol=1e-12)


def test_sparse_target_attention_rejects_bad_widths():
    with pytest.raises(ValueError, match="attention_dim 10 is not divisible by num_heads 4"):
        SparseTargetAttention(8, 10, 4)


def test_quadratic_layer_without_relu_and_residual():
    torch.manual_seed(2)
    layer = init_bars_(QuadraticLayer(1, 6, num_row=3, relu=False, residual=False)).double()
    torch.nn.init.normal_(layer.linear.bias)
    x = torch.randn(4, 6, dtype=torch.float64)
    p = (x @ layer.linear.weight.T + layer.linear.bias).view(4, 3, 6)
    assert torch.allclose(layer(x), x * p.sum(dim=1), atol=1e-12)
    default = QuadraticLayer(1, 6, num_row=3).double()
    default.load_state_dict(layer.state_dict())
    assert torch.allclose(default(x), x * torch.relu(p).sum(dim=1) + x, atol=1e-12)  # defaults unchanged


@pytest.mark.parametrize("batch_norm", [False, True])
def test_quadratic_interest_network_equation(batch_norm):
    torch.manual_seed(3)
    net = init_bars_(QuadraticInterestNetwork(6, num_layers=2, num_row=2, dropout=0.0, batch_norm=batch_norm))
    net = net.double()
    for a, v in zip(net.activations, (0.1, 0.4), strict=True):
        torch.nn.init.constant_(a.weight, v)
    for layer in net.layers:
        torch.nn.init.normal_(layer.linear.bias)
    x0 = torch.randn(7, 6, dtype=torch.float64)
    net.train()
    x = x0
    for i in range(2):
        lin = net.layers[i].linear
        y = x * (x @ lin.weight.T + lin.bias).view(7, 2, 6).sum(dim=1)
        if batch_norm:
            y = (y - y.mean(0)) / torch.sqrt(y.var(0, unbiased=False) + 1e-5)
        a = net.activations[i].weight
        x = x + torch.where(y >= 0, y, a * y)
    want = x @ net.fc.weight.T + net.fc.bias
    assert torch.allclose(net(x0), want, atol=1e-10)
    assert [type(m).__name__ for m in net.activations] == ["PReLU", "PReLU"]
    assert float(init_bars_(QuadraticInterestNetwork(6)).activations[0].weight.detach()) == 0.25  # torch's PReLU init


def test_quadratic_interest_network_dropout_only_in_training():
    torch.manual_seed(4)
    net = init_bars_(QuadraticInterestNetwork(6, num_layers=2, dropout=0.5)).eval()
    x = torch.randn(3, 6)
    assert torch.equal(net(x), net(x))
    net.train()
    assert not torch.equal(net(x), net(x))
