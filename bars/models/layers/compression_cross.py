"""MLCC's blocks (Yu et al., "Compress, Cross and Scale: Multi-Level Compression Cross Networks for Efficient Scaling
in Recommender Systems", Bilibili, arXiv 2602.12041, 2026). No public code exists and only the abstract could be
retrieved, so every form below is an assumption (docs/fidelity.md, "MLCC"); the names follow the abstract's parts.

Tokens are the field embeddings of one channel, ``X [B, F, d]``.

    Global Compressor        G = A X                    A [K, F]: a linear compression of the F tokens into K global
                                                        tokens (K = num_heads); c = flat(G) [B, K*d], the global context
    Progressive crossing     X' = X * (W_l c + b_l) + X   W_l [F*d, K*d]: a token-specific projection of the context,
                                                        element-wise with each token plus the token (a cross step)
    Local Compressor         X'' = X' + V2 relu(V1 X')   V1 [r, d], V2 [d, r] (with biases), the same for every token;
                                                        a compression when r = local_dim < d (not enforced)
    (optional) LayerNorm     over each token's d

The context is computed once, from the channel's input tokens; the crossing and the local compression repeat
``num_layers`` times (layer by layer, each raising the order of the tokens in the embeddings by one).
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from bars.models.layers.core import LayerNorm


class GlobalCompressor(nn.Module):
    """``X [B, F, d] -> G [B, K, d]``: each global token a learned linear combination of the F tokens
    (``Linear(F, K, bias=False)`` over the token axis, as WuKong's linear compression block)."""

    def __init__(self, num_fields: int, num_heads: int) -> None:
        super().__init__()
        self.num_fields, self.num_heads = num_fields, num_heads
        self.linear = nn.Linear(num_fields, num_heads, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


class ProgressiveCross(nn.Module):
    """One crossing layer: ``(X [B, F, d], c [B, K*d]) -> X * u + X`` with ``u = (W c + b)`` viewed ``[B, F, d]``
    (``W``: one ``Linear(K*d, F*d)``, i.e. a projection of the global context per token)."""

    def __init__(self, num_fields: int, token_dim: int, context_dim: int) -> None:
        super().__init__()
        self.num_fields, self.token_dim = num_fields, token_dim
        self.linear = nn.Linear(context_dim, num_fields * token_dim)

    def forward(self, x: Tensor, context: Tensor) -> Tensor:
        u = self.linear(context).view(-1, self.num_fields, self.token_dim)
        return x * u + x


class LocalCompressor(nn.Module):
    """``X [B, F, d] -> X + V2 relu(V1 X)``: each token squeezed to ``local_dim`` and back, the same two Linears for
    every token, both with a bias."""

    def __init__(self, token_dim: int, local_dim: int) -> None:
        super().__init__()
        self.down = nn.Linear(token_dim, local_dim)
        self.up = nn.Linear(local_dim, token_dim)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.up(torch.relu(self.down(x)))


class CompressionCrossChannel(nn.Module):
    """One MLCC channel: ``X_0 [B, F, d] -> X_L [B, F, d]``.

        c = flat(GlobalCompressor(X_0));  for l in 1..L:  X_l = LN_l(LC_l(Cross_l(X_{l-1}, c)))

    (``local_dim`` None: no local compressor; ``layer_norm`` False: no LayerNorm)."""

    def __init__(self, num_fields: int, token_dim: int, num_heads: int, num_layers: int, local_dim: int | None,
                 layer_norm: bool) -> None:
        super().__init__()
        self.num_fields, self.token_dim = num_fields, token_dim
        self.compressor = GlobalCompressor(num_fields, num_heads)
        self.cross = nn.ModuleList(ProgressiveCross(num_fields, token_dim, num_heads * token_dim)
                                   for _ in range(num_layers))
        self.local = (nn.ModuleList(LocalCompressor(token_dim, local_dim) for _ in range(num_layers))
                      if local_dim is not None else None)
        self.norm = nn.ModuleList(LayerNorm(token_dim) for _ in range(num_layers)) if layer_norm else None

    def context(self, x: Tensor) -> Tensor:
        """The global context ``c = flat(G)`` [B, K*d] of the input tokens."""
        return self.compressor(x).flatten(start_dim=1)

    def forward(self, x: Tensor) -> Tensor:
        c = self.context(x)
        for i, cross in enumerate(self.cross):
            x = cross(x, c)
            if self.local is not None:
                x = self.local[i](x)
            if self.norm is not None:
                x = self.norm[i](x)
        return x


class MultiChannelCompressionCross(nn.Module):
    """MC-MLCC's interaction: ``E [B, F, D] -> [B, C*F*d]``, the C channels' output tokens concatenated.

    With ``project`` each channel first maps every token by its own ``Linear(D, d, bias=False)`` (all channels' maps
    are one ``Linear(D, C*d)``: channel c reads columns ``c*d .. (c+1)*d``); without it (one channel, ``d == D``)
    the channel reads the embeddings themselves."""

    def __init__(self, num_fields: int, embedding_dim: int, num_channels: int, token_dim: int, project: bool,
                 num_heads: int, num_layers: int, local_dim: int | None, layer_norm: bool) -> None:
        super().__init__()
        if not project and (num_channels != 1 or token_dim != embedding_dim):
            raise ValueError("MultiChannelCompressionCross: without a projection there is one channel of the "
                             f"embedding width, got {num_channels} channels of {token_dim} (embedding {embedding_dim})")
        self.num_fields, self.num_channels, self.token_dim = num_fields, num_channels, token_dim
        self.projection = nn.Linear(embedding_dim, num_channels * token_dim, bias=False) if project else None
        self.channels = nn.ModuleList(
            CompressionCrossChannel(num_fields, token_dim, num_heads, num_layers, local_dim, layer_norm)
            for _ in range(num_channels))
        self.output_dim = num_channels * num_fields * token_dim

    def channel_inputs(self, e: Tensor) -> list[Tensor]:
        """Each channel's input tokens [B, F, d]."""
        if self.projection is None:
            return [e]
        return list(self.projection(e).split(self.token_dim, dim=-1))

    def forward(self, e: Tensor) -> Tensor:
        outs = [ch(x).flatten(start_dim=1) for ch, x in zip(self.channels, self.channel_inputs(e), strict=True)]
        return outs[0] if len(outs) == 1 else torch.cat(outs, dim=1)
