"""GateNU and GatedMLP (PPNet): the gate formula, the layer-by-layer product, and the stopped gradient of the
feature embedding in the gate input."""

from __future__ import annotations

import torch

from bars.models.layers import MLP, GatedMLP, GateNU
from bars.models.layers.personalization import gate_input


def test_gate_nu_formula_and_range():
    torch.manual_seed(0)
    g = GateNU(6, 5, 3)
    z = torch.randn(4, 6) * 10
    l1, l2 = g.gate[0], g.gate[2]
    want = 2 * torch.sigmoid(l2(torch.relu(l1(z))))
    torch.testing.assert_close(g(z), want)
    out = g(z)
    assert out.shape == (4, 3) and torch.all(out > 0) and torch.all(out < 2)


def test_gated_mlp_is_mlp_layers_times_gates():
    torch.manual_seed(1)
    m = GatedMLP(6, [5, 4], gate_input_dim=7, gate_hidden_dim=3, batch_norm=True, dropout=0.0).train()
    assert len(m.mlp_layers) == 3 and len(m.gate_layers) == 2 and isinstance(m.mlp_layers[0], MLP)
    x, z = torch.randn(8, 6), torch.randn(8, 7)
    h = m.mlp_layers[0](x) * m.gate_layers[0](z)
    h = m.mlp_layers[1](h) * m.gate_layers[1](z)
    torch.testing.assert_close(m(x, z), m.mlp_layers[2](h))
    assert m(x, z).shape == (8, 1)


def test_gate_input_stops_the_feature_gradient_but_trains_the_priors():
    x = torch.randn(3, 4, requires_grad=True)
    p = torch.randn(3, 2, requires_grad=True)
    z = gate_input(x, p)
    assert torch.equal(z, torch.cat([x, p], dim=1))
    z.sum().backward()
    assert x.grad is None and p.grad is not None and torch.all(p.grad == 1)
    assert torch.equal(gate_input(x, None), x.detach())
