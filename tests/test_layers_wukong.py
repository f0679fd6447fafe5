"""WuKong's factorization machine block and layer against their equations written out per sample and per feature."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bars.models.layers import FactorizationMachineBlock, WuKongLayer, init_bars_


def fmb_loops(fmb: FactorizationMachineBlock, x: torch.Tensor) -> torch.Tensor:
    """Per sample: the interaction matrix from pairwise dot products (X Y for rank k, the Gram matrix without),
    LayerNorm of its flattening by hand, the MLP, ReLU, read as [m, D]."""
    outs = []
    ln = fmb.layer_norm
    for xb in x:  # [n, D]
        n = xb.shape[0]
        gram = torch.stack([torch.stack([xb[i] @ xb[j] for j in range(n)]) for i in range(n)])  # [n, n]
        fm = gram @ fmb.proj if fmb.proj is not None else gram  # X (X^T Y) = (X X^T) Y
        v = fm.flatten()
        v = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + ln.eps) * ln.weight + ln.bias
        outs.append(torch.relu(fmb.mlp(v.unsqueeze(0))).view(fmb.output_features, fmb.embedding_dim))
    return torch.stack(outs)


@pytest.mark.parametrize("rank_k", [3, None])
def test_fmb_equals_its_equation(rank_k):
    torch.manual_seed(0)
    fmb = init_bars_(FactorizationMachineBlock(5, 4, 6, rank_k, (8,), "relu", 0.0)).eval()
    nn.init.normal_(fmb.layer_norm.weight, 1.0, 0.2)
    nn.init.normal_(fmb.layer_norm.bias, 0.0, 0.2)
    x = torch.randn(3, 5, 6)
    with torch.no_grad():
        assert torch.allclose(fmb(x), fmb_loops(fmb, x), atol=1e-5)
    assert fmb(x).shape == (3, 4, 6)


def test_fmb_projection_starts_standard_normal_and_is_kept_by_init_bars():
    torch.manual_seed(0)
    fmb = init_bars_(FactorizationMachineBlock(40, 4, 6, 64, (), "relu", 0.0))
    p = fmb.proj.detach()
    assert abs(float(p.std()) - 1.0) < 0.05 and abs(float(p.mean())) < 0.05
    assert FactorizationMachineBlock(5, 4, 6, None, (), "relu", 0.0).proj is None


@pytest.mark.parametrize("n_in, lcb, fmb_out, layer_norm", [(5, 3, 4, True), (7, 3, 4, False)])
def test_wukong_layer_equals_its_equation(n_in, lcb, fmb_out, layer_norm):
    torch.manual_seed(1)
    layer = init_bars_(WuKongLayer(n_in, lcb, fmb_out, 6, 2, (8,), "relu", 0.0, layer_norm)).eval()
    assert (layer.residual_proj is None) == (n_in == lcb + fmb_out)
    if layer.residual_proj is not None:
        nn.init.normal_(layer.residual_proj.bias, 0.0, 0.3)
    x = torch.randn(3, n_in, 6)
    with torch.no_grad():
        out = layer(x)
        # LCB: new feature o = sum_i W[o, i] x_i; residual: x itself or sum_i R[o, i] x_i + r_o
        lcb_out = torch.einsum("oi,bid->bod", layer.lcb.weight, x)
        if layer.residual_proj is None:
            res = x
        else:
            res = torch.einsum("oi,bid->bod", layer.residual_proj.weight, x) + layer.residual_proj.bias.view(1, -1, 1)
        expect = torch.cat([fmb_loops(layer.fmb, x), lcb_out], dim=1) + res
        if layer_norm:
            expect = nn.functional.layer_norm(expect, (6,), layer.layer_norm.weight, layer.layer_norm.bias)
        assert out.shape == (3, lcb + fmb_out, 6)
        assert torch.allclose(out, expect, atol=1e-5)
