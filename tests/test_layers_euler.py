"""EulerNet's blocks against the complex arithmetic they stand for: the explicit part of an Euler interaction layer
is, per output field and embedding dimension, the product of the input fields' complex values raised to the
learned orders (``exp(sum_f a_fo Log z_f)`` with torch's principal complex logarithm), times ``e^{b_lam + i
b_theta}``; the implicit part a ReLU Linear per part; the network r = mu cos E, p = mu sin E and the output
``reg(r) + reg(p)``."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from bars.models.layers import EulerInteractionLayer, EulerNetwork, init_bars_


def complex_layer(layer: EulerInteractionLayer, r: torch.Tensor, p: torch.Tensor):
    """The layer written with complex numbers and loops over output fields (no dropout)."""
    z = torch.complex(r, p)  # [B, F_in, D]
    b, _, d = r.shape
    outs = []
    for o in range(layer.out_fields):
        log_prod = (layer.inter_orders[:, o].view(1, -1, 1) * torch.log(z)).sum(dim=1)  # [B, D]
        bias = torch.complex(layer.bias_lam[0, :, o], layer.bias_theta[0, :, o])
        outs.append(torch.exp(log_prod + bias))
    explicit = torch.stack(outs, dim=1)  # [B, F_out, D]
    implicit_r = torch.relu(F.linear(r.reshape(b, -1), layer.weight, layer.bias)).view(b, -1, d)
    implicit_p = torch.relu(F.linear(p.reshape(b, -1), layer.weight, layer.bias)).view(b, -1, d)
    out_r, out_p = implicit_r + explicit.real, implicit_p + explicit.imag
    if layer.layer_norm:
        out_r = F.layer_norm(out_r, (d,), layer.norm_r.weight, layer.norm_r.bias)
        out_p = F.layer_norm(out_p, (d,), layer.norm_p.weight, layer.norm_p.bias)
    return out_r, out_p


@pytest.mark.parametrize(("fin", "fout", "norm"), [(5, 3, False), (4, 4, True), (3, 7, True)])
def test_layer_is_a_product_of_complex_powers_plus_relu_linear(fin, fout, norm):
    torch.manual_seed(fin * 10 + fout)
    layer = EulerInteractionLayer(fin, fout, 6, layer_norm=norm).double().eval()
    with torch.no_grad():  # orders away from one-hot, so that every field's power matters
        layer.inter_orders.copy_(torch.randn(fin, fout, dtype=torch.float64))
        layer.norm_r.weight.uniform_(0.5, 1.5)
        layer.norm_p.bias.uniform_(-0.5, 0.5)
    # moduli in [0.5, 2]: the 1e-8 inside the layer's log-modulus is then below 1e-7 relative
    rho, phi = 0.5 + 1.5 * torch.rand(8, fin, 6, dtype=torch.float64), 6 * torch.rand(8, fin, 6, dtype=torch.float64)
    r, p = rho * torch.cos(phi), rho * torch.sin(phi)
    got = layer(r, p)
    want = complex_layer(layer, r, p)
    assert got[0].shape == got[1].shape == (8, fout, 6)
    torch.testing.assert_close(got[0], want[0], rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got[1], want[1], rtol=1e-6, atol=1e-6)


def test_initialisation_as_fuxictr():
    torch.manual_seed(0)
    same, wider = EulerInteractionLayer(4, 4, 5), EulerInteractionLayer(4, 30, 5)
    assert torch.equal(same.inter_orders, torch.eye(4))
    # softmax(N(0, 1) / 0.01) over the input fields: columns sum to 1 and are nearly one-hot
    torch.testing.assert_close(wider.inter_orders.sum(0), torch.ones(30))
    assert (wider.inter_orders.max(0).values > 0.9).float().mean() > 0.9
    bound = 1 / (4 * 5) ** 0.5
    assert wider.bias.abs().max() <= bound and wider.bias.abs().max() > bound / 4  # nn.Linear's default, not 0
    assert 0.003 < float(wider.bias_lam.detach().std()) < 0.03
    net = init_bars_(EulerNetwork(4, 5, (30,)))  # the BARS initialiser leaves these parameters as FuxiCTR's
    assert torch.equal(net.mu, torch.ones(1, 4, 1))
    assert float(net.bias.detach().abs()) > 0 and float(net.layers[0].bias.detach().abs().max()) > 0
    assert not torch.equal(net.layers[0].inter_orders, torch.zeros(4, 30))


def test_network_is_reg_of_both_parts_and_trains_every_tensor():
    torch.manual_seed(1)
    net = EulerNetwork(5, 4, (6, 3), layer_norm=True).double()
    emb = torch.randn(7, 5, 4, dtype=torch.float64)
    r, p = net.mu * torch.cos(emb), net.mu * torch.sin(emb)
    for layer in net.layers:
        r, p = complex_layer(layer, r, p)
    want = F.linear(r.reshape(7, -1), net.weight, net.bias) + F.linear(p.reshape(7, -1), net.weight, net.bias)
    out = net(emb)
    torch.testing.assert_close(out, want, rtol=1e-6, atol=1e-6)
    out.sum().backward()
    assert all(t.grad is not None and bool(t.grad.abs().sum() > 0) for t in net.parameters())


def test_no_layer_reads_the_embeddings_directly():
    net = EulerNetwork(3, 2, ())
    emb = torch.randn(4, 3, 2)
    want = F.linear((torch.cos(emb) + torch.sin(emb)).reshape(4, -1), net.weight) + 2 * net.bias
    torch.testing.assert_close(net(emb), want)


def test_dropout_applies_only_while_training():
    torch.manual_seed(2)
    layer = EulerInteractionLayer(3, 3, 4, ex_dropout=0.5, im_dropout=0.5)
    r, p = torch.randn(16, 3, 4), torch.randn(16, 3, 4)
    layer.train()
    a, b = layer(r, p), layer(r, p)
    assert not torch.equal(a[0], b[0])
    layer.eval()
    torch.testing.assert_close(layer(r, p), complex_layer(layer, r, p), rtol=1e-5, atol=1e-5)


def test_bad_sizes_are_errors():
    with pytest.raises(ValueError, match="must be >= 1"):
        EulerInteractionLayer(0, 3, 4)
