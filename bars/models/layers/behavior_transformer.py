"""BST's behaviour transformer: positional encodings appended to the [history..., target] embeddings, then
post-norm transformer blocks whose attention sees every behaviour of the row (and each position itself)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import Dropout, LayerNorm
from bars.models.layers.kernels import intel_avx512_cpu, traced


def scaled_attention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, dropout_p: float = 0.0) -> Tensor:
    """``softmax(q k^T / sqrt(d) + mask) v`` over ``[B, H, L, d]`` heads: ``mask`` bool (true: attend; a
    false key is removed, and every query must attend at least one key) or float (added to the scores), as
    ``F.scaled_dot_product_attention`` takes it. That fused kernel computes it, except on a CPU that is not an
    Intel one with AVX-512 (:func:`~bars.models.layers.kernels.intel_avx512_cpu` false) without attention dropout,
    where the explicit products do: there the fused kernel was ~2.8x slower on DMIN's two attentions (150 ms of a
    ~1 s step at batch 4096, 2 threads, an AMD EPYC, against FuxiCTR's explicit ones: DMIN 0.96x FuxiCTR's step).
    The two differ in float32 rounding only. Traced graphs (exports) keep the fused op."""
    if dropout_p > 0 or q.device.type != "cpu" or traced() or intel_avx512_cpu():
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    scores = (q @ k.transpose(-2, -1)) * (q.shape[-1] ** -0.5)
    scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool else scores + mask
    return torch.softmax(scores, dim=-1) @ v


class MaskedSelfAttention(nn.Module):
    """Multi-head self-attention computing what ``torch.nn.MultiheadAttention(dim, heads, dropout,
    batch_first=True)`` computes for ``attention(x, x, x, attn_mask=~allowed)``, with the same parameters
    (``in_proj_weight`` [3 dim, dim], ``in_proj_bias``, ``out_weight``, ``out_bias``) and the same initialisation
    (in-projection xavier-uniform, out-projection kaiming-uniform(a=sqrt 5) as a fresh ``nn.Linear``, biases
    zero), which FuxiCTR's BST keeps: its initialiser only touches layers of type exactly ``nn.Linear``. Holding
    plain parameters (not an ``nn.Linear``) keeps the BARS initialiser off them too. ``allowed`` [B, 1, L, L]
    (true = query i may attend key j); dropout on the attention weights while training."""

    def __init__(self, dim: int, num_heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"MaskedSelfAttention: dim {dim} is not divisible by num_heads {num_heads}")
        self.num_heads = num_heads
        self.dropout = dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.empty(3 * dim))
        self.out_weight = nn.Parameter(torch.empty(dim, dim))
        self.out_bias = nn.Parameter(torch.empty(dim))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.zeros_(self.in_proj_bias)
        nn.init.kaiming_uniform_(self.out_weight, a=math.sqrt(5))
        nn.init.zeros_(self.out_bias)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        b, length, dim = x.shape
        q, k, v = (t.view(b, length, self.num_heads, -1).transpose(1, 2)
                   for t in F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1))
        out = scaled_attention(q, k, v, allowed, self.dropout if self.training else 0.0)
        return F.linear(out.transpose(1, 2).reshape(b, length, dim), self.out_weight, self.out_bias)


class TransformerBlock(nn.Module):
    """FuxiCTR BST's block: ``s = LN1(x + drop(MHA(x)))``, ``out = LN2(s + drop(W2 LeakyReLU(W1 s)))`` (the
    residuals and layer norms switchable; feed-forward width = ``dim``)."""

    def __init__(self, dim: int, num_heads: int, attention_dropout: float, dropout: float, layer_norm: bool,
                 use_residual: bool) -> None:
        super().__init__()
        self.attention = MaskedSelfAttention(dim, num_heads, attention_dropout)
        self.ffn = nn.Sequential(nn.Linear(dim, dim), nn.LeakyReLU(), nn.Linear(dim, dim))
        self.use_residual = use_residual
        self.dropout1, self.dropout2 = Dropout(dropout), Dropout(dropout)
        self.norm1 = LayerNorm(dim) if layer_norm else None
        self.norm2 = LayerNorm(dim) if layer_norm else None

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        s = self.dropout1(self.attention(x, allowed))
        if self.use_residual:
            s = s + x
        if self.norm1 is not None:
            s = self.norm1(s)
        out = self.dropout2(self.ffn(s))
        if self.use_residual:
            out = out + s
        if self.norm2 is not None:
            out = self.norm2(out)
        return out


class BehaviorTransformer(nn.Module):
    """``x`` [B, L, d] (the history then the target, L = max_len + 1) -> [B, L, model_dim]: a trainable position
    embedding [L, position_dim] (initialised to the sinusoidal encoding) is concatenated to every row when
    ``use_position_emb`` (model_dim = d + position_dim), then ``layers`` :class:`TransformerBlock`s."""

    def __init__(self, seq_len: int, model_dim: int, num_heads: int, layers: int, attention_dropout: float,
                 dropout: float, position_dim: int, use_position_emb: bool, layer_norm: bool,
                 use_residual: bool) -> None:
        super().__init__()
        self.position_dim = position_dim
        self.blocks = nn.ModuleList(TransformerBlock(model_dim, num_heads, attention_dropout, dropout, layer_norm,
                                                     use_residual) for _ in range(layers))
        self.position_emb = nn.Parameter(torch.empty(seq_len, position_dim)) if use_position_emb else None
        self.reset_parameters()

    def reset_parameters(self) -> None:
        if self.position_emb is None:
            return
        seq_len, dim = self.position_emb.shape
        position = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)
        div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * (-math.log(10000.0) / dim))
        pe = torch.zeros(seq_len, dim)
        pe[:, 0::2] = torch.sin(position * div)
        pe[:, 1::2] = torch.cos(position * div)[:, : dim // 2]
        with torch.no_grad():
            self.position_emb.copy_(pe)

    def forward(self, x: Tensor, allowed: Tensor) -> Tensor:
        if self.position_emb is not None:
            x = torch.cat([x, self.position_emb.unsqueeze(0).expand(x.size(0), -1, -1)], dim=-1)
        for block in self.blocks:
            x = block(x, allowed)
        return x


def behaviour_masks(seq: Tensor, causal: bool = False) -> tuple[Tensor, Tensor]:
    """For a history ``seq`` [B, L] (0 = padding) with the target appended: ``(keep [B, L + 1], allowed
    [B, 1, L + 1, L + 1])``. ``keep`` marks the behaviours and the target; query i may attend key j when j is kept
    or j == i (FuxiCTR BST's mask, so a padding row still attends itself), and with ``causal`` only j <= i."""
    b, length = seq.shape
    keep = torch.cat([seq > 0, torch.ones(b, 1, dtype=torch.bool, device=seq.device)], dim=1)
    pos = torch.arange(length + 1, device=seq.device)  # comparisons, not torch.eye/tril: ONNX Runtime lacks a
    allowed = keep.unsqueeze(1) | (pos.unsqueeze(0) == pos.unsqueeze(1))  # bool EyeLike; [B, L + 1, L + 1]
    if causal:
        allowed = allowed & (pos.unsqueeze(0) <= pos.unsqueeze(1))
    return keep, allowed.unsqueeze(1)
