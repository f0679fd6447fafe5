"""FCN's multi-head layout and self-mask cross networks against the equations written out element by element."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bars.models.layers import SelfMaskCrossNet, multihead_split


@pytest.mark.parametrize(("heads", "d"), [(1, 4), (2, 4), (3, 5), (4, 2)])
def test_multihead_split_is_the_authors_layout(heads, d):
    b, f = 3, 5
    emb = torch.randn(b, f, heads * d)
    got = multihead_split(emb, heads)
    half = (d + 1) // 2  # tensor_split in two: the first part takes the odd element
    for h in range(heads):
        head = emb[:, :, h * d:(h + 1) * d]  # [B, F, D]: the h-th slice of every field
        want = torch.cat([head[:, :, :half].reshape(b, -1), head[:, :, half:].reshape(b, -1)], dim=-1)
        torch.testing.assert_close(got[:, h], want, rtol=0, atol=0)
    with pytest.raises(ValueError, match="not divisible by num_heads"):
        multihead_split(torch.randn(2, 3, 5), 2)


def _loop(net: SelfMaskCrossNet, x0: torch.Tensor) -> torch.Tensor:
    x = x0
    for i in range(net.num_layers):
        h = x @ net.w[i].weight.T
        if net.batch_norm is not None:
            h = net.batch_norm[i](h)
        mask = torch.relu(F.layer_norm(h, h.shape[-1:], net.layer_norm[i].weight, net.layer_norm[i].bias)
                          if net.layer_norm is not None else h)
        c = torch.cat([h, h * mask], dim=-1)
        base = x0 if net.kind == "linear" else x
        x = base * (c + net.bias[i]) + x
    return x @ net.fc.weight.T + net.fc.bias


@pytest.mark.parametrize("kind", ["linear", "exponential"])
@pytest.mark.parametrize(("ln", "bn", "heads"), [(True, False, 1), (False, True, 2), (True, True, 3)])
def test_cross_network_follows_its_equations(kind, ln, bn, heads):
    torch.manual_seed(0)
    net = SelfMaskCrossNet(8, 3, kind, layer_norm=ln, batch_norm=bn, num_heads=heads).eval()
    with torch.no_grad():
        for p in net.parameters():
            p.normal_(0.0, 0.3)
        if bn:
            for m in net.batch_norm:
                m.running_mean.normal_(0.0, 0.1)
                m.running_var.uniform_(0.5, 1.5)
    x0 = torch.randn(6, heads, 8)
    out = net(x0)
    assert out.shape == (6, heads, 1)
    torch.testing.assert_close(out, _loop(net, x0))


def test_linear_and_exponential_differ_after_one_layer_and_init():
    torch.manual_seed(0)
    lin = SelfMaskCrossNet(6, 2, "linear")
    exp = SelfMaskCrossNet(6, 2, "exponential")
    exp.load_state_dict(lin.state_dict())
    x0 = torch.randn(4, 1, 6)
    assert not torch.allclose(lin(x0), exp(x0))
    one_l, one_e = SelfMaskCrossNet(6, 1, "linear"), SelfMaskCrossNet(6, 1, "exponential")
    one_e.load_state_dict(one_l.state_dict())
    torch.testing.assert_close(one_l(x0), one_e(x0))  # x_1 is the same when x = x_0
    b = lin.bias.detach()
    assert (b >= 0).all() and (b < 1).all() and b.std() > 0.1  # the authors' uniform [0, 1) bias


def test_bad_widths_and_kinds_are_errors():
    with pytest.raises(ValueError, match="must be even"):
        SelfMaskCrossNet(7, 2, "linear")
    with pytest.raises(ValueError, match="kind must be"):
        SelfMaskCrossNet(8, 2, "quadratic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        SelfMaskCrossNet(8, 0, "linear")
