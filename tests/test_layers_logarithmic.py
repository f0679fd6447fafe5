"""AFN's logarithmic transformation layer against the product form prod_f |e_f| ** w_jf and explicit batch
statistics."""

from __future__ import annotations

import math

import pytest
import torch

from bars.models.layers import LogarithmicTransformation


def test_eval_with_identity_norms_is_a_product_of_powers():
    torch.manual_seed(0)
    layer = LogarithmicTransformation(num_fields=3, num_neurons=2)
    with torch.no_grad():
        layer.coefficient_W.weight.copy_(torch.tensor([[1.0, 2.0, 0.0], [0.5, -1.0, 1.0]]))
    layer.eval()  # fresh running stats: mean 0, var 1, affine 1/0 -> each BN is x / sqrt(1 + eps)
    e = torch.tensor([[[2.0, -3.0], [0.5, 4.0], [-1.5, 1e-9]]])  # 1e-9 is clamped to 1e-5
    out = layer(e)
    s = 1 / math.sqrt(1 + 1e-5)
    w = layer.coefficient_W.weight.detach()
    for j in range(2):
        for d in range(2):
            z = [math.log(max(abs(float(e[0, f, d])), 1e-5)) * s for f in range(3)]
            expected = math.exp(sum(float(w[j, f]) * z[f] for f in range(3))) * s
            assert float(out[0, j, d].detach()) == pytest.approx(expected, rel=1e-5)


def test_train_mode_normalises_per_field_then_per_neuron():
    torch.manual_seed(1)
    b, f, d, n = 7, 4, 3, 5
    layer = LogarithmicTransformation(f, n).train()
    e = torch.randn(b, f, d)
    out = layer(e)
    # explicit: statistics over (batch, embedding dim) for each field, then for each neuron
    z = torch.log(e.abs().clamp(min=1e-5))
    zn = torch.empty_like(z)
    for k in range(f):
        v = z[:, k]
        zn[:, k] = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
    y = torch.empty(b, n, d)
    for j in range(n):
        y[:, j] = torch.exp(sum(layer.coefficient_W.weight[j, k] * zn[:, k] for k in range(f)))
    yn = torch.empty_like(y)
    for j in range(n):
        v = y[:, j]
        yn[:, j] = (v - v.mean()) / torch.sqrt(v.var(unbiased=False) + 1e-5)
    assert out.shape == (b, n, d)
    assert torch.allclose(out, yn, atol=1e-4)


def test_parameter_names_and_validation():
    layer = LogarithmicTransformation(6, 9)
    names = {n for n, _ in layer.named_parameters()}
    assert names == {
        "log_batch_norm.weight", "log_batch_norm.bias", "coefficient_W.weight",
        "exp_batch_norm.weight", "exp_batch_norm.bias",
    }
    assert layer.coefficient_W.weight.shape == (9, 6) and layer.num_neurons == 9
    with pytest.raises(ValueError):
        LogarithmicTransformation(0, 3)
    with pytest.raises(ValueError):
        LogarithmicTransformation(3, 3, clamp_min=0.0)
