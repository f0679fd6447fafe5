"""FiGNN's graph interaction against explicit loops over nodes and edges (FuxiCTR's concatenation form of the
attention, per-field matrix products)."""

from __future__ import annotations

import math

import pytest
import torch

from bars.models.layers import FieldGraphNetwork, GraphLayer


def attention_reference(net: FieldGraphNetwork, e: torch.Tensor) -> torch.Tensor:
    b, f, _d = e.shape
    g = torch.empty(b, f, f)
    w = net.W_attn.weight[0]
    for i in range(f):
        scores = []
        for j in range(f):
            s = torch.nn.functional.leaky_relu(torch.cat([e[:, i], e[:, j]], dim=-1) @ w, 0.01)
            scores.append(s if j != i else torch.full((b,), float("-inf")))
        g[:, i] = torch.softmax(torch.stack(scores, dim=1), dim=1)
    return g


def graph_layer_reference(layer: GraphLayer, g: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    b, f, d = h.shape
    h_out = torch.stack([h[:, j] @ layer.W_out[j].T for j in range(f)], dim=1)
    out = torch.empty(b, f, d)
    for i in range(f):
        aggr = sum(g[:, i, j : j + 1] * h_out[:, j] for j in range(f))
        out[:, i] = aggr @ layer.W_in[i].T + layer.bias_p
    return out


def test_attention_graph_has_no_self_loops_and_matches_concat_form():
    torch.manual_seed(0)
    net = FieldGraphNetwork(4, 3, gnn_layers=1)
    e = torch.randn(5, 4, 3)
    g = net.graph(e)
    assert torch.allclose(g, attention_reference(net, e), atol=1e-6)
    assert torch.all(torch.diagonal(g, dim1=1, dim2=2) == 0)
    assert torch.allclose(g.sum(-1), torch.ones(5, 4))


def test_graph_layer_is_per_field_message_passing():
    torch.manual_seed(1)
    layer = GraphLayer(3, 4)
    with torch.no_grad():
        layer.bias_p.normal_()
    g = torch.softmax(torch.randn(2, 3, 3), dim=-1)
    h = torch.randn(2, 3, 4)
    assert torch.allclose(layer(g, h), graph_layer_reference(layer, g, h), atol=1e-5)


@pytest.mark.parametrize("use_gru, reuse, residual", [(True, False, True), (False, False, True),
                                                      (True, True, False), (False, True, False)])
def test_network_equals_explicit_rounds(use_gru, reuse, residual):
    torch.manual_seed(2)
    net = FieldGraphNetwork(4, 3, gnn_layers=3, reuse_graph_layer=reuse, use_gru=use_gru, use_residual=residual)
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0, 0.3)
    e = torch.randn(5, 4, 3)
    g = attention_reference(net, e)
    h = e
    for t in range(3):
        layer = net.gnn if reuse else net.gnn[t]
        a = graph_layer_reference(layer, g, h)
        if use_gru:
            h = torch.stack([net.gru(a[:, i], h[:, i]) for i in range(4)], dim=1)
        else:
            h = a + h
        if residual:
            h = h + e
    assert torch.allclose(net(e), h, atol=1e-5)
    n_layers = 1 if reuse else 3
    assert sum(isinstance(m, GraphLayer) for m in net.modules()) == n_layers
    assert (net.gru is not None) == use_gru


def test_init_is_fuxictr_xavier_over_the_3d_tensor():
    torch.manual_seed(0)
    f, d = 30, 10
    layer = GraphLayer(f, d)
    expected = math.sqrt(2.0 / (d * d + f * d))  # torch fans of [F, D, D]: in D*D, out F*D
    for w in (layer.W_in, layer.W_out):
        assert abs(w.std().item() - expected) / expected < 0.05
    assert torch.all(layer.bias_p == 0)


def test_invalid_graphs():
    with pytest.raises(ValueError, match="at least 2 fields"):
        FieldGraphNetwork(1, 4, gnn_layers=2)
    with pytest.raises(ValueError, match="gnn_layers"):
        FieldGraphNetwork(3, 4, gnn_layers=0)
