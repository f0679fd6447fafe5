"""Self-attention over fields (AutoInt's interacting layer)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import Dropout, LayerNorm
from bars.models.layers.kernels import intel_avx512_cpu, traced


class MultiHeadSelfAttention(nn.Module):
    """AutoInt's interacting layer over fields ``[B, F, input_dim] -> [B, F, attention_dim]``: multi-head
    dot-product attention (optional 1/sqrt(head_dim) scaling, dropout on the attention weights), plus a residual
    (projected by a Linear when the widths differ), optional LayerNorm, then ReLU.

    Query, key and value are three Linear maps (``w_q``, ``w_k``, ``w_v``), as FuxiCTR: each is initialised on
    its own (xavier-normal of a ``[attention_dim, input_dim]`` matrix). One fused ``[3 * attention_dim,
    input_dim]`` matrix would start with a smaller std and make the first attention logits ~2x smaller."""

    def __init__(
        self,
        input_dim: int,
        attention_dim: int,
        num_heads: int = 1,
        dropout: float = 0.0,
        use_residual: bool = True,
        use_scale: bool = False,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        if attention_dim % num_heads:
            raise ValueError(f"attention_dim {attention_dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.head_dim = attention_dim // num_heads
        self.scale = self.head_dim**0.5 if use_scale else None  # scores / sqrt(head_dim), as FuxiCTR
        self.w_q = nn.Linear(input_dim, attention_dim, bias=False)
        self.w_k = nn.Linear(input_dim, attention_dim, bias=False)
        self.w_v = nn.Linear(input_dim, attention_dim, bias=False)
        self.use_residual = use_residual
        self.res = (
            nn.Linear(input_dim, attention_dim, bias=False)
            if use_residual and input_dim != attention_dim
            else None
        )
        self.dropout = Dropout(dropout) if dropout > 0 else None
        self.norm = LayerNorm(attention_dim) if layer_norm else None

    def forward(self, x: Tensor) -> Tensor:
        b, f, _ = x.shape
        q, k, v = (
            w(x).view(b, f, self.num_heads, self.head_dim).transpose(1, 2) for w in (self.w_q, self.w_k, self.w_v)
        )  # [B, H, F, d]
        if (self.dropout is None and x.device.type == "cpu" and torch.is_grad_enabled() and not traced()
                and intel_avx512_cpu()):
            # training on an Intel AVX-512 CPU: softmax(q k^T [/ sqrt(d)]) v as torch's fused CPU kernel computes
            # it (no [B, H, F, F] scores kept, no copies of the transposed head views): the same function up to float32
            # rounding (its softmax is taken in blocks); 60 -> 47 ms forward + backward for AutoInt's default layer
            # at batch 4096 (an Intel Xeon), its step 0.98-1.02x -> 1.12x FuxiCTR's. With AVX2 kernels (an AMD
            # EPYC, 2 threads; 10 fields, 4 heads of 32) the fused kernel is ~3x slower than the explicit form,
            # 126-129 ms against 40-44 ms, which made AutoInt's step 0.73x FuxiCTR's there: the explicit form then;
            # the same on an AMD EPYC with AVX-512 (Zen 4): 0.71x fused, 1.04x explicit.
            # Scoring (no gradient) keeps the explicit form, which exported graphs hold, so an export equals the
            # model it came from
            scale = 1.0 if self.scale is None else 1.0 / self.scale
            out = F.scaled_dot_product_attention(q, k, v, scale=scale)
        else:  # attention dropout (our Dropout's masks), other devices, scoring, traced graphs (export)
            scores = q @ k.transpose(-2, -1)
            if self.scale is not None:
                scores = scores / self.scale
            att = torch.softmax(scores, dim=-1)
            if self.dropout is not None:
                att = self.dropout(att)
            out = att @ v
        out = out.transpose(1, 2).reshape(b, f, self.num_heads * self.head_dim)
        if self.use_residual:
            out = out + (self.res(x) if self.res is not None else x)
        if self.norm is not None:
            out = self.norm(out)
        return torch.relu(out)
