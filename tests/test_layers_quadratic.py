"""QNN-alpha's QuadraticLayer against FuxiCTR's formulation (tensor_split into heads, einsum, sum over rows) written
out, with one head and with several (where the product is laid out head-major)."""

from __future__ import annotations

import pytest
import torch

from bars.models.layers import QuadraticLayer


def fuxictr_form(q: QuadraticLayer, x: torch.Tensor) -> torch.Tensor:
    """model_zoo/QNN/src/QNN_alpha.py QuadraticLayer.forward (no dropout)."""
    ego = x
    x3 = x.view(-1, q.num_fields, q.embedding_dim)
    heads = torch.stack(torch.tensor_split(x3, q.num_heads, dim=-1), dim=1).view(-1, q.num_heads, q.head_dim)
    p = q.linear(ego)
    if q.bn is not None:
        p = q.bn(p)
    h = torch.relu(p).view(-1, q.num_heads, q.num_row, q.head_dim)
    return torch.einsum("bhd,bhrd->bhrd", heads, h).sum(dim=-2).view(-1, q.input_dim) + ego


@pytest.mark.parametrize(("heads", "rows", "bn"), [(1, 2, False), (2, 3, True), (4, 1, False)])
def test_quadratic_layer_equals_fuxictr_form(heads, rows, bn):
    torch.manual_seed(heads * 10 + rows)
    q = QuadraticLayer(num_fields=3, embedding_dim=4, num_row=rows, num_heads=heads, batch_norm=bn).double()
    with torch.no_grad():
        for p in q.parameters():
            p.copy_(torch.randn_like(p))
    x = torch.randn(6, 12, dtype=torch.float64)
    q.train()
    torch.testing.assert_close(q(x), fuxictr_form(q, x))
    q.eval()
    torch.testing.assert_close(q(x), fuxictr_form(q, x))


def test_one_head_one_row_is_the_elementwise_product_plus_input():
    torch.manual_seed(0)
    q = QuadraticLayer(2, 3, num_row=1, num_heads=1).double()
    x = torch.randn(4, 6, dtype=torch.float64)
    want = x * torch.relu(q.linear(x)) + x
    torch.testing.assert_close(q(x), want)


def test_dropout_draws_on_the_projection_in_training_only():
    torch.manual_seed(0)
    q = QuadraticLayer(2, 4, num_row=2, num_heads=2, dropout=0.5)
    x = torch.randn(8, 8)
    q.train()
    assert not torch.equal(q(x), q(x))  # two draws
    q.eval()
    assert torch.equal(q(x), q(x))


def test_heads_must_divide_the_embedding_width():
    with pytest.raises(ValueError, match="embedding_dim 5 is not divisible by num_heads 2"):
        QuadraticLayer(3, 5, num_heads=2)


@pytest.mark.parametrize("bn", [False, True])
def test_relu_and_dropout_in_one_module_are_relu_then_dropout(bn):
    """The layer's ReLU + dropout run as one ReLUDropout: the same output and gradients, bit for bit, as torch's ReLU
    followed by the same dropout (the same mask: one key drawn per call from the same seed)."""
    from bars.models.layers import Dropout, ReLUDropout

    torch.manual_seed(0)
    q = QuadraticLayer(5, 4, num_row=3, num_heads=2, batch_norm=bn, dropout=0.3).train()
    assert isinstance(q.dropout, ReLUDropout)
    x = torch.randn(64, 20)
    x[0, :5] = 0.0
    g = torch.randn(64, 20)

    def run(split: bool):
        q.zero_grad()
        xr = x.clone().requires_grad_()
        torch.manual_seed(7)
        if split:  # the layer's forward with torch.relu and a plain Dropout
            b = xr.shape[0]
            heads = xr.reshape(b, q.num_fields, q.num_heads, -1).transpose(1, 2).reshape(b, q.num_heads, q.head_dim)
            p = q.linear(xr)
            p = torch.relu(q.bn(p) if q.bn is not None else p).view(b, q.num_heads, q.num_row, q.head_dim)
            drop = Dropout(q.dropout.p)
            y = (heads * drop(p).sum(dim=2)).reshape(b, q.input_dim) + xr
        else:
            y = q(xr)
        y.backward(g)
        return [y.detach(), xr.grad, *(p.grad.clone() for p in q.parameters())]

    for a, b in zip(run(False), run(True), strict=True):
        assert torch.equal(a.view(torch.int32), b.view(torch.int32))
