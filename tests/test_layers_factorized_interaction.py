"""FinalNet's blocks (bars.models.layers.factorized_interaction) against their definitions written out element by
element, and FuxiCTR's form (a Linear over the transposed field axis) for the feature gating."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bars.models.layers import FactorizedInteraction, FeatureGating, FinalBlock, init_bars_


def randomise(m: nn.Module) -> None:
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p))


def test_feature_gating_mixes_fields_and_concats_or_sums():
    torch.manual_seed(0)
    b, f, d = 3, 4, 5
    e = torch.randn(b, f, d, dtype=torch.float64)
    for residual in ("concat", "sum"):
        g = FeatureGating(f, residual).double()
        randomise(g)
        gates = torch.zeros(b, f, d, dtype=torch.float64)
        for i in range(f):  # g[b, i, :] = sum_j W[i, j] e[b, j, :] + bias[i]
            gates[:, i] = sum(g.weight[i, j] * e[:, j] for j in range(f)) + g.bias[i]
        want = torch.cat([e, e * gates], 1) if residual == "concat" else e + e * gates
        torch.testing.assert_close(g(e), want)
        # FuxiCTR's form: Linear(F, F) over the field axis
        lin = nn.Linear(f, f).double()
        with torch.no_grad():
            lin.weight.copy_(g.weight)
            lin.bias.copy_(g.bias)
        fux = lin(e.transpose(1, 2)).transpose(1, 2)
        torch.testing.assert_close(fux, gates)
        assert g.output_fields == (2 * f if residual == "concat" else f)


def test_feature_gating_starts_open_and_survives_the_bars_initialisation():
    g = nn.Sequential(FeatureGating(3), nn.Linear(2, 2))
    randomise(g)
    init_bars_(g)  # xavier for every Linear, reset_parameters for the rest: the gate is not a Linear
    assert torch.all(g[0].weight == 0) and torch.all(g[0].bias == 1)
    e = torch.randn(2, 3, 4)
    torch.testing.assert_close(g[0](e), torch.cat([e, e], 1))  # every gate is 1 at the start


@pytest.mark.parametrize("residual", ["concat", "sum"])
def test_factorized_interaction_halves_multiply(residual):
    torch.manual_seed(1)
    layer = FactorizedInteraction(6, 4, residual).double()
    randomise(layer)
    x = torch.randn(5, 6, dtype=torch.float64)
    h = x @ layer.linear.weight.T + layer.linear.bias
    half = h.shape[1] // 2
    h2, h1 = h[:, :half], h[:, half:]  # the first half is the one that passes through
    want = torch.cat([h2, h1 * h2], 1) if residual == "concat" else h2 + h1 * h2
    out = layer(x)
    assert out.shape == (5, 4)
    assert layer.linear.out_features == (4 if residual == "concat" else 8)
    torch.testing.assert_close(out, want)


def test_factorized_interaction_concat_needs_an_even_width():
    with pytest.raises(ValueError, match="must be even, got 3"):
        FactorizedInteraction(4, 3, "concat")
    FactorizedInteraction(4, 3, "sum")
    with pytest.raises(ValueError, match="residual must be 'concat' or 'sum'"):
        FactorizedInteraction(4, 4, "mean")  # type: ignore[arg-type]


def test_final_block_order_and_shapes():
    torch.manual_seed(2)
    block = FinalBlock(6, [8, 4], "relu", dropout=0.0, batch_norm=True).double().eval()
    randomise(block)
    kinds = [type(m).__name__ for m in block.net]
    assert kinds == ["FactorizedInteraction", "BatchNorm1d", "ReLU"] * 2
    x = torch.randn(7, 6, dtype=torch.float64)
    want = x
    for fi, bn in ((block.net[0], block.net[1]), (block.net[3], block.net[4])):
        want = torch.relu(bn(fi(want)))
    torch.testing.assert_close(block(x), want)
    assert block(x).shape == (7, 4) and block.output_dim == 4
    # no activation (FuxiCTR's default None), no batch norm, dropout last
    plain = FinalBlock(6, [4], None, dropout=0.3, batch_norm=False)
    assert [type(m).__name__ for m in plain.net] == ["FactorizedInteraction", "Dropout"]
    with pytest.raises(ValueError, match="hidden_units must not be empty"):
        FinalBlock(6, [], None)
