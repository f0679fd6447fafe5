"""Convolution over the field axis with k-max pooling (CCPM, Liu et al. CIKM 2015)."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn
from torch.nn import functional as F

from bars.models.layers.core import activation


class KMaxPooling(nn.Module):
    """The ``k`` largest values along ``dim``, kept in their original order (FuxiCTR's ``KMaxPooling``: top-k
    indices sorted ascending, then gathered)."""

    def __init__(self, k: int, dim: int) -> None:
        super().__init__()
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = k
        self.dim = dim

    def extra_repr(self) -> str:
        return f"k={self.k}, dim={self.dim}"

    def forward(self, x: Tensor) -> Tensor:
        index = x.topk(self.k, dim=self.dim).indices.sort(dim=self.dim).values
        return x.gather(self.dim, index)


def ccpm_pooling_sizes(num_fields: int, num_layers: int) -> list[int]:
    """CCPM's k per layer, as FuxiCTR: ``k_i = max(3, int((1 - (i / l) ** (l - i)) * F))`` for ``i < l`` and 3
    for the last layer. (The paper rounds up, ``ceil``; FuxiCTR truncates with ``int``, which we follow.)"""
    ks = []
    for i in range(1, num_layers + 1):
        if i < num_layers:
            ks.append(max(3, int((1 - pow(float(i) / num_layers, num_layers - i)) * num_fields)))
        else:
            ks.append(3)
    return ks


class FieldConvolution(nn.Module):
    """CCPM's convolution stack over the field embeddings ``[B, F, D] -> [B, C_l, 3, D]``. Layer ``i``:

        zero-pad the field axis by ``h_i - 1`` on both sides ("wide" convolution), Conv2d with kernel
        ``(h_i, 1)`` from ``C_{i-1}`` to ``C_i`` channels (each embedding dimension convolved separately, the
        kernel shared across them), k-max pooling over the field axis (:func:`ccpm_pooling_sizes`), activation.

    The convolutions are ``nn.Conv2d`` modules (``convs[i]``: weight ``[C_i, C_{i-1}, h_i, 1]``, FuxiCTR's
    ``conv_layer.conv_layer[4 * i + 1]``), keeping PyTorch's default initialisation as FuxiCTR does (its reset
    only touches Linear and Conv1d). The forward pass runs them as a 1-d convolution over fields with the
    embedding dimension folded into the batch (same weights, same sums; faster on CPU).
    """

    def __init__(
        self, num_fields: int, channels: Sequence[int], kernel_heights: Sequence[int], activation_name: str
    ) -> None:
        super().__init__()
        if not channels:
            raise ValueError("channels must have at least one layer")
        if len(kernel_heights) != len(channels):
            raise ValueError(
                f"channels {tuple(channels)} and kernel_heights {tuple(kernel_heights)} must have the same length"
            )
        if any(c < 1 for c in channels) or any(h < 1 for h in kernel_heights):
            raise ValueError(
                f"channels {tuple(channels)} and kernel_heights {tuple(kernel_heights)} must be positive"
            )
        self.pooling_sizes = ccpm_pooling_sizes(num_fields, len(channels))
        height = num_fields
        for i, (h, k) in enumerate(zip(kernel_heights, self.pooling_sizes, strict=True)):
            out = height + h - 1  # wide convolution
            if k > out:
                raise ValueError(
                    f"CCPM layer {i + 1}: k-max pooling keeps {k} of only {out} convolution outputs "
                    f"({height} rows in, kernel height {h}); use more fields or taller kernels"
                )
            height = k
        ins = [1, *channels[:-1]]
        self.convs = nn.ModuleList(
            nn.Conv2d(c_in, c_out, kernel_size=(h, 1)) for c_in, c_out, h in zip(ins, channels, kernel_heights)
        )
        self.pools = nn.ModuleList(KMaxPooling(k, dim=2) for k in self.pooling_sizes)
        self.act = activation(activation_name)
        self.output_channels = channels[-1]

    def forward(self, emb: Tensor) -> Tensor:
        b, f, d = emb.shape
        x = emb.transpose(1, 2).reshape(b * d, 1, f)  # [B*D, C, F]: each embedding dimension is a sequence
        for conv, pool in zip(self.convs, self.pools, strict=True):
            h = conv.kernel_size[0]
            x = F.conv1d(F.pad(x, (h - 1, h - 1)), conv.weight.squeeze(-1), conv.bias)
            x = self.act(pool(x))
            x = x.contiguous()
        c, k = x.shape[1], x.shape[2]
        return x.view(b, d, c, k).permute(0, 2, 3, 1)  # [B, C, k, D]
