"""CCPM's convolution + k-max pooling stack against explicit loops, and against FuxiCTR's Conv2d layout."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bars.models.layers import FieldConvolution, KMaxPooling, ccpm_pooling_sizes


def test_kmax_keeps_the_largest_in_original_order():
    x = torch.tensor([[3.0, 1.0, 4.0, 1.5, 5.0, 9.0, 2.0]])
    assert torch.equal(KMaxPooling(3, dim=1)(x), torch.tensor([[4.0, 5.0, 9.0]]))
    y = torch.randn(4, 2, 8, 3)
    out = KMaxPooling(5, dim=2)(y)
    for b in range(4):
        for c in range(2):
            for d in range(3):
                col = y[b, c, :, d].tolist()
                keep = sorted(sorted(range(8), key=lambda i: -col[i])[:5])
                assert out[b, c, :, d].tolist() == [col[i] for i in keep]


def test_pooling_sizes_follow_fuxictr():
    # l = 3, F = 10: k1 = int((1 - (1/3)^2) * 10) = 8, k2 = max(3, int((1 - 2/3) * 10)) = 3, k3 = 3
    assert ccpm_pooling_sizes(10, 3) == [8, 3, 3]
    assert ccpm_pooling_sizes(39, 3) == [34, 13, 3]
    assert ccpm_pooling_sizes(4, 2) == [3, 3]
    assert ccpm_pooling_sizes(24, 1) == [3]


def reference(conv: FieldConvolution, emb: torch.Tensor, act) -> torch.Tensor:
    """Explicit loops: wide 1-d convolution along fields per embedding dimension, then k-max, then act."""
    b, _f, d = emb.shape
    x = emb.unsqueeze(1)  # [B, C=1, H, D]
    for layer, k in zip(conv.convs, conv.pooling_sizes, strict=True):
        w, bias = layer.weight[..., 0], layer.bias  # [Cout, Cin, h]
        cout, cin, h = w.shape
        hin = x.shape[2]
        padded = torch.zeros(b, cin, hin + 2 * (h - 1), d)
        padded[:, :, h - 1 : h - 1 + hin] = x
        hout = hin + h - 1
        y = torch.zeros(b, cout, hout, d)
        for o in range(cout):
            for t in range(hout):
                acc = bias[o].expand(b, d).clone()
                for c in range(cin):
                    for u in range(h):
                        acc = acc + w[o, c, u] * padded[:, c, t + u]
                y[:, o, t] = acc
        x = act(KMaxPooling(k, dim=2)(y))
    return x


@pytest.mark.parametrize("fields, channels, heights", [(6, [3, 2], [3, 2]), (5, [2, 3, 2], [4, 3, 2])])
def test_field_convolution_equals_loops_and_fuxictr_layout(fields, channels, heights):
    torch.manual_seed(0)
    conv = FieldConvolution(fields, channels, heights, "tanh")
    emb = torch.randn(3, fields, 4)
    out = conv(emb)
    assert out.shape == (3, channels[-1], 3, 4)
    assert torch.allclose(out, reference(conv, emb, torch.tanh), atol=1e-5)
    # FuxiCTR's layout: ZeroPad2d + Conv2d on [B, 1, F, D] with the same modules
    x = emb.unsqueeze(1)
    for layer, k in zip(conv.convs, conv.pooling_sizes, strict=True):
        h = layer.kernel_size[0]
        x = torch.tanh(KMaxPooling(k, dim=2)(layer(nn.ZeroPad2d((0, 0, h - 1, h - 1))(x))))
    assert torch.allclose(out, x, atol=1e-6)


def test_conv_weights_keep_torch_default_init_shapes():
    conv = FieldConvolution(8, [4, 4, 2], [6, 5, 3], "relu")
    assert [tuple(c.weight.shape) for c in conv.convs] == [(4, 1, 6, 1), (4, 4, 5, 1), (2, 4, 3, 1)]
    assert isinstance(conv.act, nn.ReLU)


def test_invalid_stacks_are_rejected():
    with pytest.raises(ValueError, match="same length"):
        FieldConvolution(6, [3, 3], [3], "tanh")
    with pytest.raises(ValueError, match="at least one layer"):
        FieldConvolution(6, [], [], "tanh")
    with pytest.raises(ValueError, match="keeps 3 of only 2"):
        FieldConvolution(2, [3], [1], "tanh")
