"""MaskNet's blocks (Wang, She, Zhang, "MaskNet: Introducing Feature-Wise Multiplication to CTR Ranking Models by
Instance-Guided Mask", DLP-KDD 2021): the instance-guided mask block and the per-field layer norm of the
embeddings."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import Dropout, LayerNorm, ReLUDropout, activation


def mask_width(hidden_dim: int, reduction_ratio: float) -> int:
    """Width of the mask's first layer: ``int(hidden_dim * reduction_ratio)`` (truncated, as FuxiCTR)."""
    return int(hidden_dim * reduction_ratio)


class MaskBlock(nn.Module):
    """One MaskBlock: an instance-guided mask computed from the flat embeddings ``v_emb [B, E]`` multiplies the
    block's input ``v_hidden [B, H]`` element-wise, then a Linear without bias, an optional LayerNorm, the
    activation and dropout::

        mask = W_2 ReLU(W_1 v_emb + b_1) + b_2            W_1: E -> int(H * reduction_ratio), W_2: -> H
        out  = Dropout(act(LN(W_h (mask ⊙ v_hidden))))    W_h: H -> output_dim, no bias

    FuxiCTR names (``MaskBlock`` of model_zoo/MaskNet/src/MaskNet.py): ``mask_layer`` = Linear, ReLU, Linear;
    ``hidden_layer`` = Linear (no bias), LayerNorm (``layer_norm``), activation, Dropout (rate > 0).
    ``activation`` is a name of :data:`bars.models.layers.ACTIVATIONS` except ``prelu`` (FuxiCTR's MaskBlock
    builds its activation without a width, which PReLU and Dice need)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, activation_name: str = "relu",
                 reduction_ratio: float = 1.0, dropout: float = 0.0, layer_norm: bool = True) -> None:
        super().__init__()
        width = mask_width(hidden_dim, reduction_ratio)
        if width < 1:
            raise ValueError(f"reduction_ratio {reduction_ratio} gives a mask layer of width int({hidden_dim} * "
                             f"{reduction_ratio}) = {width}; it must be >= 1")
        if activation_name.lower() in ("prelu", "dice"):
            raise ValueError(f"activation {activation_name!r}: FuxiCTR's MaskBlock cannot build it (no width)")
        self.mask_layer = nn.Sequential(nn.Linear(input_dim, width), nn.ReLU(inplace=True), nn.Linear(width, hidden_dim))
        layers: list[nn.Module] = [nn.Linear(hidden_dim, output_dim, bias=False)]
        if layer_norm:
            layers.append(LayerNorm(output_dim))
        if dropout > 0 and activation_name.lower() == "relu":
            layers.append(ReLUDropout(dropout))
        else:
            layers.append(activation(activation_name, inplace=True))
            if dropout > 0:
                layers.append(Dropout(dropout))
        self.hidden_layer = nn.Sequential(*layers)
        self.output_dim = output_dim

    def forward(self, v_emb: Tensor, v_hidden: Tensor) -> Tensor:
        return self.hidden_layer(self.mask_layer(v_emb) * v_hidden)


class FieldLayerNorm(nn.Module):
    """A LayerNorm over each field's embedding with its own affine parameters: ``[B, F, D] -> [B, F, D]``,
    ``out[:, f] = (e_f - mean(e_f)) / sqrt(var(e_f) + eps) * weight[f] + bias[f]`` (FuxiCTR's MaskNet
    ``emb_norm``: one ``nn.LayerNorm(D)`` per field; here one normalisation over all fields, then the
    ``[F, D]`` affine). ``weight`` starts at ones, ``bias`` at zeros."""

    def __init__(self, num_fields: int, dim: int, eps: float = 1e-5) -> None:
        super().__init__()
        self.dim, self.eps = dim, eps
        self.weight = nn.Parameter(torch.ones(num_fields, dim))
        self.bias = nn.Parameter(torch.zeros(num_fields, dim))

    def reset_parameters(self) -> None:
        nn.init.ones_(self.weight)
        nn.init.zeros_(self.bias)

    def forward(self, x: Tensor) -> Tensor:
        return F.layer_norm(x, (self.dim,), eps=self.eps) * self.weight + self.bias

