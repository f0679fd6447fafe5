"""FCN's cross networks (Li et al., "FCN: Fusing Exponential and Linear Cross Network for Click-Through Rate
Prediction", arXiv 2407.13349, first titled "DCNv3"; code salmon1802/FCN ``src/DCNv3.py``, ``src/ECN.py``): the
multi-head field-embedding layout and the linear / exponential cross network with self-mask."""

from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import Dropout, LayerNorm
from bars.models.layers.kernels import _kernel_ok, _load, autocast_on, traced


def multihead_split(emb: Tensor, num_heads: int) -> Tensor:
    """``[B, F, H*D] -> [B, H, F*D]``: head ``h`` takes every field's ``h``-th slice of width ``D``; within a head
    the first halves of all fields come first, then the second halves (width ``ceil(D/2)`` then ``floor(D/2)``),
    the layout of the authors' ``MultiHeadFeatureEmbedding`` (``tensor_split`` into heads, ``stack``,
    ``tensor_split`` in two, ``flatten`` each, ``cat``)."""
    b, f, w = emb.shape
    if w % num_heads:
        raise ValueError(f"multihead_split: width {w} is not divisible by num_heads {num_heads}")
    d = w // num_heads
    heads = emb.reshape(b, f, num_heads, d).transpose(1, 2)  # [B, H, F, D]
    half = (d + 1) // 2
    first, second = heads[..., :half], heads[..., half:]
    return torch.cat([first.reshape(b, num_heads, f * half), second.reshape(b, num_heads, f * (d - half))], dim=-1)


class SelfMaskMix(torch.autograd.Function):
    """The element-wise part of one self-mask cross layer in one autograd node: ``(base * (cat([h, h * relu(ln)],
    -1) + bias)) + x`` for ``h``, ``ln [..., k]`` (the projection and its LayerNorm, or ``h`` itself), ``bias [2k]``,
    ``base``, ``x [..., 2k]`` (``base``: ``x0`` in the linear network, ``x`` in the exponential one). Float32 CPU
    rows go through the compiled kernel (``bars_self_mask_cross_*``), others through torch ops: the same values as
    autograd's graph of those ops, bit for bit (the output, and each gradient, whose terms are the same and summed
    in the same order), with one pass over the rows each way instead of six forward and nine backward."""

    @staticmethod
    def forward(ctx, h: Tensor, ln: Tensor, bias: Tensor, base: Tensor, x: Tensor) -> Tensor:  # type: ignore[override]
        h, ln, bias, base, x = h.detach(), ln.detach(), bias.detach(), base.detach(), x.detach()
        ctx.save_for_backward(h, ln, bias, base)
        if _kernel_ok(h, ln, bias, base, x):
            out = torch.empty_like(x)
            _load().bars_self_mask_cross_fwd(h.data_ptr(), ln.data_ptr(), bias.data_ptr(), base.data_ptr(),
                                             x.data_ptr(), out.data_ptr(), h.numel() // h.shape[-1], h.shape[-1])
            return out
        return base * (torch.cat([h, h * F.relu(ln)], dim=-1) + bias) + x

    @staticmethod
    def backward(ctx, go: Tensor):  # type: ignore[override]
        h, ln, bias, base = ctx.saved_tensors
        go = go.contiguous()
        k = h.shape[-1]
        if _kernel_ok(go, h, ln, bias, base):
            gc, gbase, gh, gln = torch.empty_like(go), torch.empty_like(go), torch.empty_like(h), torch.empty_like(h)
            _load().bars_self_mask_cross_bwd(go.data_ptr(), h.data_ptr(), ln.data_ptr(), bias.data_ptr(),
                                             base.data_ptr(), gc.data_ptr(), gbase.data_ptr(), gh.data_ptr(),
                                             gln.data_ptr(), h.numel() // k, k)
        else:
            m = F.relu(ln)
            gc = go * base
            gbase = go * (torch.cat([h, h * m], dim=-1) + bias)
            g2 = gc[..., k:]
            gh = gc[..., :k] + g2 * m
            gln = torch.ops.aten.threshold_backward(g2 * h, m, 0)  # relu's backward, as autograd takes it
        return gh, gln, gc.sum_to_size(bias.shape), gbase, go


class SelfMaskCrossNet(nn.Module):
    """``num_layers`` cross layers with self-mask over ``x_0 [B, H, d]`` (one network for all heads), then one
    ``Linear(d, 1)``; returns the logits ``[B, H, 1]``::

        h_l = W_l x_l                          (W_l: [d/2, d], no bias)
        h_l = BatchNorm_l(h_l)                 (batch_norm: BatchNorm1d over the H heads as channels)
        m_l = ReLU(LayerNorm_l(h_l))           (layer_norm; else ReLU(h_l))
        c_l = [h_l, h_l * m_l]                 (width d)
        linear:       x_{l+1} = x_0 * (c_l + b_l) + x_l
        exponential:  x_{l+1} = x_l * (c_l + b_l) + x_l
        x_{l+1} = Dropout(x_{l+1})             (dropout > 0)

    ``d`` must be even. Parameters: ``w[l]`` (``nn.Linear``, xavier-normal as FuxiCTR's BaseModel resets it),
    ``bias [L, d]`` = the authors' ``b[l]`` (uniform on [0, 1), their ``nn.init.uniform_``), ``layer_norm[l]``,
    ``batch_norm[l]``, ``fc``."""

    def __init__(self, input_dim: int, num_layers: int, kind: Literal["linear", "exponential"], *,
                 layer_norm: bool = True, batch_norm: bool = False, num_heads: int = 1, dropout: float = 0.0) -> None:
        super().__init__()
        if num_layers < 1:
            raise ValueError(f"num_layers must be >= 1, got {num_layers}")
        if kind not in ("linear", "exponential"):
            raise ValueError(f"kind must be 'linear' or 'exponential', got {kind!r}")
        if input_dim < 2 or input_dim % 2:
            raise ValueError(f"the cross network's width (num_fields * embedding_dim = {input_dim}) must be even: "
                             f"the self-mask doubles a half-width projection")
        self.kind = kind
        self.input_dim = input_dim
        half = input_dim // 2
        self.w = nn.ModuleList(nn.Linear(input_dim, half, bias=False) for _ in range(num_layers))
        self.bias = nn.Parameter(torch.empty(num_layers, input_dim))
        self.layer_norm = nn.ModuleList(LayerNorm(half) for _ in range(num_layers)) if layer_norm else None
        self.batch_norm = nn.ModuleList(nn.BatchNorm1d(num_heads) for _ in range(num_layers)) if batch_norm else None
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.fc = nn.Linear(input_dim, 1)
        self.reset_parameters()

    @property
    def num_layers(self) -> int:
        return len(self.w)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for lin in self.w:
                nn.init.xavier_normal_(lin.weight)
            nn.init.uniform_(self.bias)
            nn.init.xavier_normal_(self.fc.weight)
            nn.init.zeros_(self.fc.bias)

    def forward(self, x0: Tensor) -> Tensor:
        x = x0
        # the element-wise part in one autograd node (SelfMaskMix, the same values) on float32 CPU tensors; autograd's
        # ops where the exporters or autocast need them
        fused = (x0.device.type == "cpu" and x0.dtype == torch.float32 and self.bias.dtype == torch.float32
                 and not traced() and not autocast_on())
        for i, lin in enumerate(self.w):
            h = lin(x)
            if self.batch_norm is not None:
                h = self.batch_norm[i](h)
            ln = self.layer_norm[i](h) if self.layer_norm is not None else h
            base = x0 if self.kind == "linear" else x
            if fused:
                x = SelfMaskMix.apply(h, ln, self.bias[i], base, x)
            else:
                x = base * (torch.cat([h, h * F.relu(ln)], dim=-1) + self.bias[i]) + x
            if self.dropout is not None:
                x = self.dropout(x)
        return self.fc(x)
