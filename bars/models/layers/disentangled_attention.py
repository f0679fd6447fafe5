"""DESTINE's disentangled self-attention over fields."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from bars.models.layers.core import Dropout
from bars.models.layers.kernels import autocast_on, traced

HeadSplit = Literal["view", "columns"]


class _SharedInputLinears(torch.autograd.Function):
    """``[x W_i^T + b_i for each i]`` whose input gradient ``sum_i g_i W_i`` is accumulated by matrix products
    into one tensor (``addmm_``), not as one new tensor per Linear summed afterwards by autograd."""

    @staticmethod
    def forward(ctx, x: Tensor, *wb: Tensor) -> tuple[Tensor, ...]:  # type: ignore[override]
        ctx.save_for_backward(x, *wb)
        flat = x.reshape(-1, x.shape[-1])
        outs = [torch.addmm(b, flat, w.t()).view(*x.shape[:-1], w.shape[0]) for w, b in zip(wb[::2], wb[1::2],
                                                                                             strict=True)]
        return tuple(outs)

    @staticmethod
    def backward(ctx, *grads: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x, *wb = ctx.saved_tensors
        flat = x.reshape(-1, x.shape[-1])
        gx = None
        out: list[Tensor | None] = []
        for w, g in zip(wb[::2], grads, strict=True):
            g = g.reshape(-1, w.shape[0])
            if ctx.needs_input_grad[0]:
                gx = torch.mm(g, w) if gx is None else gx.addmm_(g, w)
            out += [torch.mm(g.t(), flat), g.sum(dim=0)]
        return (None if gx is None else gx.view(x.shape), *out)


def shared_input_linears(x: Tensor, linears: list[nn.Linear]) -> list[Tensor]:
    """``[m(x) for m in linears]`` (each with a bias): on CPU outside traced graphs through
    :class:`_SharedInputLinears` (the same values; the input gradient's sum in one tensor)."""
    if (x.device.type != "cpu" or traced() or autocast_on() or not torch.is_grad_enabled()
            or any(m.bias is None for m in linears)):
        return [m(x) for m in linears]
    return list(_SharedInputLinears.apply(x, *[t for m in linears for t in (m.weight, m.bias)]))


class DisentangledSelfAttention(nn.Module):
    """Disentangled self-attention (Xu et al., DESTINE, CIKM 2021) over fields ``x [B, F, input_dim]`` ->
    ``[B, F, attention_dim]``.

    With ``q, k, v = W_q x, W_k x, W_v x`` (Linear with bias; ReLU'd when ``relu_before_att``) split into heads
    of width ``d = attention_dim / num_heads``, per head:
    ``A = softmax_j((q_i - mean_f q) . (k_j - mean_f k) [/ sqrt(d)]) + softmax_j(u_j)`` with the unary term
    ``u = W_unary x`` (one logit per field and head), dropout on ``A``, output ``A v`` (heads concatenated)
    ``+ W_res x`` when ``use_residual`` (a Linear with bias, even when the widths agree). No activation after.

    ``head_split``: how ``[B, F, H * d]`` becomes heads. ``"view"`` is FuxiCTR 2.3.10's (and the authors' code's)
    plain reshape to ``[B * H, F, d]`` (and of the unary logits ``[B, F, H]`` to ``[B * H, F]``): with more than
    one head, a "head" then holds a block of consecutive (field, column) values, so fields and heads mix;
    ``"columns"`` splits the columns into heads (head h = columns h*d..(h+1)*d of every field; unary logits of
    head h = column h). With one head (every BARS run) both are the same computation.

    FuxiCTR names: ``W_q``, ``W_k``, ``W_v``, ``W_unary``, ``W_res`` (same shapes)."""

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int = 1,
        dropout: float = 0.0,
        use_residual: bool = True,
        use_scale: bool = False,
        relu_before_att: bool = False,
        head_split: HeadSplit = "view",
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by num_heads {num_heads}")
        if head_split not in ("view", "columns"):
            raise ValueError(f"head_split {head_split!r} is not 'view' or 'columns'")
        self.attention_dim = attention_dim
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.use_scale = use_scale
        self.relu_before_att = relu_before_att
        self.head_split = head_split
        self.W_q = nn.Linear(input_dim, attention_dim)
        self.W_k = nn.Linear(input_dim, attention_dim)
        self.W_v = nn.Linear(input_dim, attention_dim)
        self.W_unary = nn.Linear(input_dim, num_heads)
        self.W_res = nn.Linear(input_dim, attention_dim) if use_residual else None
        self.dropout = Dropout(dropout) if dropout > 0 else None

    def _heads(self, t: Tensor) -> Tensor:
        b, f, _ = t.shape
        if self.head_split == "view" or self.num_heads == 1:
            return t.reshape(b * self.num_heads, f, self.head_dim)
        return t.view(b, f, self.num_heads, self.head_dim).transpose(1, 2).reshape(b * self.num_heads, f,
                                                                                 self.head_dim)

    def forward(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape
        linears = [self.W_q, self.W_k, self.W_v, self.W_unary] + ([self.W_res] if self.W_res is not None else [])
        q, k, v, unary, *res = shared_input_linears(x, linears)
        unary = torch.softmax(unary, dim=1)  # [B, F, H]: over fields
        if self.relu_before_att:
            q, k, v = q.relu(), k.relu(), v.relu()
        q, k, v = self._heads(q), self._heads(k), self._heads(v)  # [B*H, F, d]
        q = q - q.mean(dim=1, keepdim=True)  # whitening: centred over fields
        k = k - k.mean(dim=1, keepdim=True)
        pair = torch.bmm(q, k.transpose(1, 2))
        if self.use_scale:
            pair = pair / self.head_dim**0.5
        pair = torch.softmax(pair, dim=2)  # [B*H, F, F]
        if self.head_split == "view" or self.num_heads == 1:
            unary = unary.reshape(b * self.num_heads, 1, f)
        else:
            unary = unary.transpose(1, 2).reshape(b * self.num_heads, 1, f)
        att = pair + unary
        if self.dropout is not None:
            att = self.dropout(att)
        out = torch.bmm(att, v)  # [B*H, F, d]
        if self.head_split == "view" or self.num_heads == 1:
            out = out.reshape(b, f, self.attention_dim)
        else:
            out = out.view(b, self.num_heads, f, self.head_dim).transpose(1, 2).reshape(b, f, self.attention_dim)
        if res:
            out = out + res[0]
        return out
