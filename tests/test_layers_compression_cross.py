"""MLCC's blocks (bars.models.layers.compression_cross) against the equations of their docstrings, written out with
loops over tokens and channels: the Global Compressor's linear combination of tokens, the crossing step
x_f * (W c + b)_f + x_f, the Local Compressor's per-token bottleneck, the channel pipeline and the channel split."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import (
    CompressionCrossChannel,
    GlobalCompressor,
    LocalCompressor,
    MultiChannelCompressionCross,
    ProgressiveCross,
)


def _randomise(m: torch.nn.Module) -> torch.nn.Module:
    torch.manual_seed(1)
    with torch.no_grad():
        for p in m.parameters():
            p.copy_(torch.randn_like(p) * 0.5)
    return m.double()


def test_global_compressor_is_a_linear_combination_of_tokens():
    gc = _randomise(GlobalCompressor(num_fields=3, num_heads=2))
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    a = gc.linear.weight  # [K, F]
    want = torch.stack([sum(a[k, f] * x[:, f] for f in range(3)) for k in range(2)], dim=1)
    torch.testing.assert_close(gc(x), want)
    assert gc.linear.bias is None


def test_progressive_cross_by_hand():
    cross = _randomise(ProgressiveCross(num_fields=3, token_dim=4, context_dim=8))
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    c = torch.randn(5, 8, dtype=torch.float64)
    w, b = cross.linear.weight, cross.linear.bias  # [F*d, K*d], [F*d]
    for f in range(3):
        rows = slice(f * 4, (f + 1) * 4)  # token f's own projection of the context
        u = c @ w[rows].T + b[rows]
        torch.testing.assert_close(cross(x, c)[:, f], x[:, f] * u + x[:, f])


def test_local_compressor_is_the_same_bottleneck_for_every_token():
    lc = _randomise(LocalCompressor(token_dim=4, local_dim=2))
    x = torch.randn(5, 3, 4, dtype=torch.float64)
    for f in range(3):
        h = torch.relu(x[:, f] @ lc.down.weight.T + lc.down.bias)
        torch.testing.assert_close(lc(x)[:, f], x[:, f] + h @ lc.up.weight.T + lc.up.bias)


@pytest.mark.parametrize(("local_dim", "layer_norm"), [(2, True), (None, False), (3, False), (None, True)])
def test_channel_pipeline_by_hand(local_dim, layer_norm):
    ch = _randomise(CompressionCrossChannel(3, 4, num_heads=2, num_layers=2, local_dim=local_dim,
                                            layer_norm=layer_norm))
    x0 = torch.randn(6, 3, 4, dtype=torch.float64)
    c = torch.einsum("kf,bfd->bkd", ch.compressor.linear.weight, x0).reshape(6, 8)  # the context, once
    x = x0
    for i in range(2):
        lin = ch.cross[i].linear
        x = x * (c @ lin.weight.T + lin.bias).view(6, 3, 4) + x
        if local_dim is not None:
            lc = ch.local[i]
            x = x + torch.relu(x @ lc.down.weight.T + lc.down.bias) @ lc.up.weight.T + lc.up.bias
        if layer_norm:
            ln = ch.norm[i]
            x = (x - x.mean(-1, keepdim=True)) / torch.sqrt(x.var(-1, unbiased=False, keepdim=True) + ln.eps)
            x = x * ln.weight + ln.bias
    torch.testing.assert_close(ch(x0), x)
    assert (ch.local is None) == (local_dim is None) and (ch.norm is None) == (not layer_norm)


def test_zero_crossing_weights_leave_the_tokens_unchanged():
    """W = 0, b = 0: every cross step is the identity (x * 0 + x), so without Local Compressor and LayerNorm the
    channel returns its input."""
    ch = CompressionCrossChannel(3, 4, num_heads=2, num_layers=3, local_dim=None, layer_norm=False)
    with torch.no_grad():
        for cross in ch.cross:
            cross.linear.weight.zero_()
            cross.linear.bias.zero_()
    x = torch.randn(5, 3, 4)
    assert torch.equal(ch(x), x)


def test_order_grows_by_one_per_layer():
    """No bias, no Local Compressor, no LayerNorm: X_L(t E) is a polynomial in t of degree L + 1 with the terms of
    every degree 1..L+1; its (L+1)-th finite difference is constant in t, its (L+2)-th zero."""
    torch.manual_seed(0)
    for layers in (1, 2, 3):
        ch = CompressionCrossChannel(3, 4, num_heads=2, num_layers=layers, local_dim=None, layer_norm=False).double()
        with torch.no_grad():
            for cross in ch.cross:
                cross.linear.bias.zero_()
        x = torch.randn(2, 3, 4, dtype=torch.float64)
        ts = torch.arange(layers + 3, dtype=torch.float64)
        with torch.no_grad():
            vals = torch.stack([ch(t * x) for t in ts])
        diffs = vals
        for _ in range(layers + 1):
            diffs = diffs[1:] - diffs[:-1]
        assert diffs.abs().max() > 1e-6  # degree L + 1 present
        assert (diffs[1:] - diffs[:-1]).abs().max() < 1e-8 * max(1.0, float(vals.abs().max()))


def test_channels_split_the_projection_and_concatenate():
    mc = _randomise(MultiChannelCompressionCross(3, 5, num_channels=3, token_dim=4, project=True, num_heads=2,
                                                 num_layers=2, local_dim=2, layer_norm=True))
    e = torch.randn(6, 3, 5, dtype=torch.float64)
    p = mc.projection.weight  # [C*d, D]
    parts = []
    for c in range(3):
        x = e @ p[c * 4:(c + 1) * 4].T  # channel c's own projection P_c
        parts.append(mc.channels[c](x).flatten(1))
    torch.testing.assert_close(mc(e), torch.cat(parts, dim=1))
    assert mc.output_dim == 3 * 3 * 4 and mc.projection.bias is None


def test_one_channel_without_projection_reads_the_embeddings():
    mc = _randomise(MultiChannelCompressionCross(3, 4, 1, 4, False, 2, 2, 2, True))
    e = torch.randn(6, 3, 4, dtype=torch.float64)
    assert mc.projection is None
    torch.testing.assert_close(mc(e), mc.channels[0](e).flatten(1))
    with pytest.raises(ValueError, match="without a projection there is one channel"):
        MultiChannelCompressionCross(3, 4, 2, 4, False, 2, 2, 2, True)
