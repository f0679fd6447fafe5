"""CCPM's convolution + k-max pooling stack against explicit loops, and against FuxiCTR's Conv2d layout; FGCNN's
feature generation against explicit loops."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bars.models.layers import (
    FeatureGeneration,
    FieldConvolution,
    KMaxPooling,
    ccpm_pooling_sizes,
    fgcnn_pooled_heights,
)


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


@pytest.mark.parametrize("capability", ["AVX512", "AVX2"])
@pytest.mark.parametrize("fields, channels, heights", [(6, [3, 2], [3, 2]), (5, [2, 3, 2], [4, 3, 2])])
def test_field_convolution_equals_loops_and_fuxictr_layout(fields, channels, heights, capability, monkeypatch):
    """Both ways the layers compute (the unfolded windows' product; except on Intel AVX-512 CPUs conv1d for layers
    of several input channels: kernels.intel_avx512_cpu), values and gradients."""
    from bars.models.layers import kernels

    monkeypatch.setattr(kernels, "_CAPABILITY", capability)
    torch.manual_seed(0)
    conv = FieldConvolution(fields, channels, heights, "tanh")
    emb = torch.randn(3, fields, 4, requires_grad=True)
    out = conv(emb)
    assert out.shape == (3, channels[-1], 3, 4)
    assert torch.allclose(out, reference(conv, emb, torch.tanh), atol=1e-5)
    # FuxiCTR's layout: ZeroPad2d + Conv2d on [B, 1, F, D] with the same modules
    x = emb.unsqueeze(1)
    for layer, k in zip(conv.convs, conv.pooling_sizes, strict=True):
        h = layer.kernel_size[0]
        x = torch.tanh(KMaxPooling(k, dim=2)(layer(nn.ZeroPad2d((0, 0, h - 1, h - 1))(x))))
    assert torch.allclose(out, x, atol=1e-6)
    g = torch.randn_like(out)
    ours = torch.autograd.grad(out, [emb, *conv.parameters()], g)
    theirs = torch.autograd.grad(x, [emb, *conv.parameters()], g)
    for a, b in zip(ours, theirs, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)


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


# ------------------------------------------------------------------------------------------------ FGCNN
def test_fgcnn_pooled_heights_are_ceil_and_reject_what_fuxictr_cannot_pool():
    assert fgcnn_pooled_heights(10, [2, 2, 2, 2]) == [5, 3, 2, 1]
    assert fgcnn_pooled_heights(39, [2, 2, 2, 2]) == [20, 10, 5, 3]
    assert fgcnn_pooled_heights(9, [1, 3, 2]) == [9, 3, 2]
    assert fgcnn_pooled_heights(6, [4]) == [2]  # 6 % 4 = 2 = 4 / 2: padded to 10 rows, 2 windows
    with pytest.raises(ValueError, match=r"pooling_sizes\[0\] = 3 on 10 rows"):
        fgcnn_pooled_heights(10, [3])
    with pytest.raises(ValueError, match=r"pooling_sizes\[1\] = 4 on 5 rows"):
        fgcnn_pooled_heights(10, [2, 4])


def fgcnn_loops(gen: FeatureGeneration, emb: torch.Tensor, act) -> torch.Tensor:
    """FGCNN's generator written out: per layer an explicit (h x 1) convolution with (h-1)/2 zero rows on both
    sides, BatchNorm in eval mode from its statistics, act, max over windows of p rows after H % p rows of -inf on
    both sides, then the recombination Linear and act, read as new [D]-wide features."""
    b, _f, d = emb.shape
    x = emb.unsqueeze(1)
    new = []
    for conv, norm, pool, rec in zip(gen.convs, gen.norms, gen.pools, gen.recombine, strict=True):
        w, bias = conv.weight[..., 0], conv.bias  # [Cout, Cin, h]
        cout, cin, h = w.shape
        hin, pad = x.shape[2], (h - 1) // 2
        padded = torch.zeros(b, cin, hin + 2 * pad, d)
        padded[:, :, pad : pad + hin] = x
        y = torch.zeros(b, cout, hin, d)
        for o in range(cout):
            for t in range(hin):
                acc = bias[o].expand(b, d).clone()
                for c in range(cin):
                    for u in range(h):
                        acc = acc + w[o, c, u] * padded[:, c, t + u]
                y[:, o, t] = acc
        if isinstance(norm, nn.BatchNorm2d):
            y = (y - norm.running_mean.view(1, -1, 1, 1)) / torch.sqrt(norm.running_var.view(1, -1, 1, 1) + norm.eps)
            y = y * norm.weight.view(1, -1, 1, 1) + norm.bias.view(1, -1, 1, 1)
        y = act(y)
        p, r = pool.kernel_size[0], pool.padding[0]
        full = torch.full((b, cout, hin + 2 * r, d), float("-inf"))
        full[:, :, r : r + hin] = y
        rows = [full[:, :, s : s + p].amax(dim=2) for s in range(0, hin + 2 * r - p + 1, p)]
        x = torch.stack(rows, dim=2)
        new.append(act(x.flatten(start_dim=1) @ rec.weight.T + rec.bias).view(b, -1, d))
    return torch.cat(new, dim=1)


@pytest.mark.parametrize("fields, channels, heights, pools, recombined, bn", [
    (10, [3, 4, 2, 2], [7, 7, 7, 7], [2, 2, 2, 2], [3, 3, 3, 3], True),
    (9, [2, 3, 2], [5, 3, 1], [1, 3, 2], [1, 2, 3], False),
    (6, [2], [3], [4], [2], True),
])
def test_feature_generation_equals_loops(fields, channels, heights, pools, recombined, bn):
    torch.manual_seed(0)
    gen = FeatureGeneration(fields, 4, channels, heights, pools, recombined, "tanh", bn)
    for norm in gen.norms:  # non-trivial statistics and affine parameters
        if isinstance(norm, nn.BatchNorm2d):
            norm.running_mean.uniform_(-0.5, 0.5)
            norm.running_var.uniform_(0.5, 2.0)
            nn.init.normal_(norm.weight, 1.0, 0.3)
            nn.init.normal_(norm.bias, 0.0, 0.3)
    gen.eval()
    emb = torch.randn(3, fields, 4)
    out = gen(emb)
    expect_n = sum(h * r for h, r in zip(fgcnn_pooled_heights(fields, pools), recombined, strict=True))
    assert gen.num_generated == expect_n and out.shape == (3, expect_n, 4)
    with torch.no_grad():
        assert torch.allclose(out, fgcnn_loops(gen, emb, torch.tanh), atol=1e-5)


def test_feature_generation_rejects_bad_stacks():
    with pytest.raises(ValueError, match="same length"):
        FeatureGeneration(6, 4, [3, 3], [3], [2, 2], [2, 2], "tanh", True)
    with pytest.raises(ValueError, match="at least one layer"):
        FeatureGeneration(6, 4, [], [], [], [], "tanh", True)
    with pytest.raises(ValueError, match="odd heights"):
        FeatureGeneration(6, 4, [3], [4], [2], [2], "tanh", True)
    with pytest.raises(ValueError, match="recombined_channels must be positive"):
        FeatureGeneration(6, 4, [3], [3], [2], [0], "tanh", True)
    with pytest.raises(ValueError, match="pooling_sizes"):
        FeatureGeneration(7, 4, [3], [3], [3], [2], "tanh", True)


def test_traced_convolution_equals_the_eager_one():
    torch.manual_seed(1)
    conv = FieldConvolution(10, [3, 3], [3, 3], "tanh")  # CCPM's defaults on 10 fields
    emb = torch.randn(16, 10, 5)
    traced = torch.jit.trace(conv, emb)  # the exported path: conv1d
    assert "conv1d" in str(traced.graph) or "_convolution" in str(traced.graph)
    assert torch.allclose(traced(emb), conv(emb), atol=1e-6)
