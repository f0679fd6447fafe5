"""GDCN's gated cross network against its equation with separate matrices (FuxiCTR's GateCorssLayer written
out), and its initialisation (xavier-normal per d x d matrix, bias uniform on [0, 1))."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import GatedCrossNet


def by_hand(net: GatedCrossNet, x0: torch.Tensor) -> torch.Tensor:
    d = net.input_dim
    x = x0
    for layer in range(net.num_layers):
        w, wg, b = net.weight[layer, :d], net.weight[layer, d:], net.bias[layer]
        x = x0 * (x @ w.T + b) * torch.sigmoid(x @ wg.T) + x
    return x


def test_gated_cross_net_is_its_equation():
    torch.manual_seed(0)
    net = GatedCrossNet(6, 3).double()
    with torch.no_grad():
        net.weight.normal_(0, 0.5)
        net.bias.normal_()
    x0 = torch.randn(5, 6, dtype=torch.float64)
    out = net(x0)
    assert out.shape == (5, 6)
    torch.testing.assert_close(out, by_hand(net, x0))
    # one layer, written out element by element for row 0
    one = GatedCrossNet(3, 1).double()
    with torch.no_grad():
        one.weight.copy_(torch.arange(18, dtype=torch.float64).view(1, 6, 3) / 10)
        one.bias.copy_(torch.tensor([[0.1, -0.2, 0.3]]))
    x = torch.tensor([[1.0, -1.0, 2.0]], dtype=torch.float64)
    w, wg = one.weight[0, :3], one.weight[0, 3:]
    want = [x[0, i] * (sum(w[i, j] * x[0, j] for j in range(3)) + one.bias[0, i])
            * torch.sigmoid(sum(wg[i, j] * x[0, j] for j in range(3))) + x[0, i] for i in range(3)]
    torch.testing.assert_close(one(x)[0], torch.stack(want))


def test_initialisation_is_fuxictrs():
    torch.manual_seed(1)
    d = 64
    net = GatedCrossNet(d, 2).requires_grad_(False)
    xavier = (2.0 / (d + d)) ** 0.5  # nn.Linear(d, d) xavier-normal, each of W and W_g on its own
    for layer in range(2):
        for half in (net.weight[layer, :d], net.weight[layer, d:]):
            assert abs(float(half.std()) - xavier) / xavier < 0.05
    assert float(net.bias.min()) >= 0.0 and float(net.bias.max()) < 1.0
    assert abs(float(net.bias.mean()) - 0.5) < 0.05
    with pytest.raises(ValueError, match="num_layers"):
        GatedCrossNet(4, 0)
