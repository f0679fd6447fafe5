"""AFM's attention over field pairs computed in chunks, without its two big tensors.

AFM scores every field pair ``v_ij = e_i * e_j`` with ``Linear(D, A) -> ReLU -> Linear(A, 1)`` and pools
``sum_ij a_ij v_ij``. At Criteo's 39 fields and batch 4,096 that is 3M pair rows: the products ``[B, P, D]``
(194 MB) and the hidden ``[3M, 128]`` activations (1.5 GB) were written, read and written again by every forward
and backward op, 5.2 of a 5.6 s CPU step, nearly all memory traffic (and page faults on fresh tensors).
- :func:`pair_relu_scores`: the scores from the field embeddings ``[B, F, D]`` in chunks of batch rows whose
  products and hidden activations fit in cache; the backward recomputes each chunk's products and activations
  (nothing pair- or hidden-sized is kept) and accumulates the weight gradients chunk by chunk.
- :func:`weighted_pair_sum`: the pooling as ``sum_i e_i * (A e)_i`` with ``A`` the ``[F, F]`` upper-triangular
  matrix of the pairs' weights (one batched matrix product), not through the products.
The same functions and gradients; sums over rows and pairs in another order than one big matrix product
(within rounding; tested against the plain composition in float64, values and every gradient).

Both take this path on CPU (float32 or float64) outside traced graphs (an export keeps the plain ops, which
every exporter knows); elsewhere they are the plain composition.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bars.models.layers.kernels import autocast_on, traced

CHUNK_ELEMENTS = 2**20  # hidden activations per chunk (4 MiB of float32)


def _same_float(*ts: Tensor) -> bool:
    return ts[0].dtype in (torch.float32, torch.float64) and all(t.dtype == ts[0].dtype for t in ts)


# ------------------------------------------------------------------------------------------------------------
# AFM's attention over field pairs, from the field embeddings (no [B, P, D] tensor)
# ------------------------------------------------------------------------------------------------------------
def _pair_scatter(values: Tensor, left: Tensor, right: Tensor, num_fields: int) -> Tensor:
    """``[R, P, ...] -> [R, F, F, ...]``: pair ``(i, j)``'s value at ``[i, j]`` and ``[j, i]``, zeros elsewhere
    (the diagonal)."""
    r = values.shape[0]
    rest = values.shape[2:]
    out = values.new_zeros(r, num_fields * num_fields, *rest)
    out[:, left * num_fields + right] = values
    out[:, right * num_fields + left] = values
    return out.view(r, num_fields, num_fields, *rest)


class _PairReLUScores(torch.autograd.Function):
    """``scores[b, p] = w2 . relu(W1 (e[b, l_p] * e[b, r_p]) + b1)`` in chunks of batch rows; the backward
    recomputes each chunk's pair products and hidden activations."""

    @staticmethod
    def forward(ctx, emb: Tensor, left: Tensor, right: Tensor, w1: Tensor, b1: Tensor,  # type: ignore[override]
                w2: Tensor) -> Tensor:
        b, _, d = emb.shape
        p = left.numel()
        rows = max(1, CHUNK_ELEMENTS // max(1, p * w1.shape[0]))
        out = emb.new_empty(b, p, w2.shape[0])
        w1t, w2t = w1.t(), w2.t()
        for s in range(0, b, rows):
            e = emb[s : s + rows]
            prod = (e[:, left] * e[:, right]).view(-1, d)
            h = torch.addmm(b1, prod, w1t).relu_()
            torch.mm(h, w2t, out=out[s : s + rows].view(-1, w2.shape[0]))
        ctx.save_for_backward(emb, left, right, w1, b1, w2)
        return out

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        emb, left, right, w1, b1, w2 = ctx.saved_tensors
        need_e, _, _, need_w1, need_b1, need_w2 = ctx.needs_input_grad
        b, f, d = emb.shape
        p = left.numel()
        rows = max(1, CHUNK_ELEMENTS // max(1, p * w1.shape[0]))
        ge = torch.empty_like(emb) if need_e else None
        gw1, gb1, gw2 = torch.zeros_like(w1), torch.zeros_like(b1), torch.zeros_like(w2)
        w1t = w1.t()
        g = g.contiguous()
        for s in range(0, b, rows):
            e = emb[s : s + rows]
            r = e.shape[0]
            prod = (e[:, left] * e[:, right]).view(-1, d)
            gc = g[s : s + rows].view(-1, w2.shape[0])
            h = torch.addmm(b1, prod, w1t).relu_()
            gw2.addmm_(gc.t(), h)
            gh = torch.ops.aten.threshold_backward(torch.mm(gc, w2), h, 0.0)
            gb1.add_(gh.sum(dim=0))
            gw1.addmm_(gh.t(), prod)
            if ge is not None:
                gp = torch.mm(gh, w1).view(r, p, d)  # d scores / d products
                # d e_i = sum_j G[i, j] * e_j with G the symmetric matrix of the pairs' gradients
                gsym = _pair_scatter(gp, left, right, f)  # [r, F, F, D]
                torch.sum(gsym * e.unsqueeze(1), dim=2, out=ge[s : s + rows])
        return ge, None, None, gw1 if need_w1 else None, gb1 if need_b1 else None, gw2 if need_w2 else None


def pair_relu_scores(emb: Tensor, left: Tensor, right: Tensor, first: nn.Linear, second: nn.Linear) -> Tensor:
    """``second(relu(first(e_l * e_r)))`` for every field pair ``(l, r)`` of ``emb`` ``[B, F, D]`` ->
    ``[B, P, O]`` (AFM's attention scores). On CPU outside traced graphs in chunks of batch rows, never holding
    the ``[B, P, D]`` products nor the ``[B * P, hidden]`` activations; elsewhere the plain ops."""
    if (emb.device.type != "cpu" or traced() or autocast_on() or first.bias is None or second.bias is not None
            or not _same_float(emb, first.weight, second.weight)):
        return second(torch.relu(first(emb.index_select(1, left) * emb.index_select(1, right))))
    return _PairReLUScores.apply(emb.contiguous(), left, right, first.weight, first.bias, second.weight)


def weighted_pair_sum(emb: Tensor, weights: Tensor, left: Tensor, right: Tensor) -> Tensor:
    """``sum_p weights[b, p] * e[b, l_p] * e[b, r_p]`` -> ``[B, D]`` (AFM's pooling) for ``emb`` ``[B, F, D]``
    and ``weights`` ``[B, P]``. On CPU outside traced graphs as ``sum_i e_i * (W e)_i`` with ``W`` the ``[F, F]``
    upper-triangular matrix of the pair weights (a batched matrix product over ``[B, F, F]``), not through the
    ``[B, P, D]`` products; the same sum in another order."""
    if emb.device.type != "cpu" or traced() or autocast_on() or not _same_float(emb, weights):
        return torch.sum(weights.unsqueeze(-1) * (emb.index_select(1, left) * emb.index_select(1, right)), dim=1)
    f = emb.shape[1]
    upper = _PairScatter.apply(weights, left * f + right, f)  # [B, F, F]
    return torch.sum(emb * torch.bmm(upper, emb), dim=1)


class _PairScatter(torch.autograd.Function):
    """``[B, P] -> [B, F, F]``: pair weights at their ``[i, j]`` positions, zeros elsewhere (backward: gather)."""

    @staticmethod
    def forward(ctx, w: Tensor, flat: Tensor, f: int) -> Tensor:  # type: ignore[override]
        out = w.new_zeros(w.shape[0], f * f)
        out[:, flat] = w
        ctx.save_for_backward(flat)
        return out.view(w.shape[0], f, f)

    @staticmethod
    def backward(ctx, g: Tensor):  # type: ignore[override]
        (flat,) = ctx.saved_tensors
        return g.reshape(g.shape[0], -1)[:, flat], None, None
