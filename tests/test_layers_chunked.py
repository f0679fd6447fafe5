"""AFM's chunked pair attention (bars/models/layers/chunked.py) against the plain composition it replaces."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from bars.models.layers import chunked, field_pairs
from bars.models.layers.chunked import pair_relu_scores, weighted_pair_sum


def _plain_scores(emb, left, right, first, second):
    return second(torch.relu(first(emb.index_select(1, left) * emb.index_select(1, right))))


def _plain_pool(emb, w, left, right):
    return torch.sum(w.unsqueeze(-1) * (emb.index_select(1, left) * emb.index_select(1, right)), dim=1)


def _grads(out, g, inputs):
    return torch.autograd.grad(out, inputs, g)


@pytest.mark.parametrize(("b", "f", "d", "a", "chunk"), [(7, 2, 3, 4, 16), (33, 5, 4, 8, 64), (20, 9, 10, 16, 2**20)])
def test_pair_relu_scores_equal_the_plain_composition(monkeypatch, b, f, d, a, chunk):
    """float64: values and the gradients of the embeddings and of all three weights, several chunks of rows
    (a last partial one) and one; some hidden units dead (negative bias) so ReLU's gradient mask matters."""
    monkeypatch.setattr(chunked, "CHUNK_ELEMENTS", chunk)
    torch.manual_seed(b)
    left, right = field_pairs(f)
    emb = torch.randn(b, f, d, dtype=torch.float64, requires_grad=True)
    first, second = nn.Linear(d, a).double(), nn.Linear(a, 1, bias=False).double()
    with torch.no_grad():
        first.bias.sub_(0.5)
    g = torch.randn(b, left.numel(), 1, dtype=torch.float64)
    params = [emb, first.weight, first.bias, second.weight]
    want = _plain_scores(emb, left, right, first, second)
    got = pair_relu_scores(emb, left, right, first, second)
    assert got.grad_fn is not None and "PairReLUScores" in type(got.grad_fn).__name__  # the chunked path ran
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for x, y in zip(_grads(got, g, params), _grads(want, g, params), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("b", "f", "d"), [(5, 2, 3), (64, 39, 16)])
def test_weighted_pair_sum_equals_the_plain_pooling(b, f, d):
    torch.manual_seed(f)
    left, right = field_pairs(f)
    emb = torch.randn(b, f, d, dtype=torch.float64, requires_grad=True)
    w = torch.rand(b, left.numel(), dtype=torch.float64, requires_grad=True)
    g = torch.randn(b, d, dtype=torch.float64)
    got, want = weighted_pair_sum(emb, w, left, right), _plain_pool(emb, w, left, right)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    for x, y in zip(_grads(got, g, [emb, w]), _grads(want, g, [emb, w]), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_float32_within_rounding_and_traced_graphs_keep_the_plain_ops():
    torch.manual_seed(0)
    left, right = field_pairs(6)
    emb = torch.randn(50, 6, 8)
    first, second = nn.Linear(8, 32), nn.Linear(32, 1, bias=False)
    torch.testing.assert_close(pair_relu_scores(emb, left, right, first, second),
                               _plain_scores(emb, left, right, first, second), rtol=1e-5, atol=1e-6)
    w = torch.rand(50, left.numel())
    torch.testing.assert_close(weighted_pair_sum(emb, w, left, right), _plain_pool(emb, w, left, right),
                               rtol=1e-5, atol=1e-6)

    class Both(nn.Module):
        def __init__(self):
            super().__init__()
            self.first, self.second = first, second

        def forward(self, e, weights):
            return (pair_relu_scores(e, left, right, self.first, self.second),
                    weighted_pair_sum(e, weights, left, right))

    both = Both()
    graph = torch.jit.trace(both, (emb, w))
    kinds = {n.kind() for n in graph.graph.nodes()}
    assert "prim::PythonOp" not in kinds, kinds  # no custom autograd Function in an exported graph
    for x, y in zip(graph(emb, w), both(emb, w), strict=True):
        torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)
