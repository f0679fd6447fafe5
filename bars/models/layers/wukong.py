"""WuKong's interaction stack (Zhang et al., "Wukong: Towards a Scaling Law for Large-Scale Recommendation", ICML
2024), as FuxiCTR 2.3.10's ``model_zoo/WuKong/src/WuKong.py`` computes it: factorization machine blocks (FMB) and
linear compression blocks (LCB) side by side, with a residual and LayerNorm, stacked."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.models.layers.core import MLP, LayerNorm


class FactorizationMachineBlock(nn.Module):
    """FMB: ``[B, n, D] -> [B, m, D]``.

        rank k:   P = X (X^T Y)     [B, n, k]   (Y [n, k]: a learned projection, ``proj``; N(0, 1) at init, as
                                                 FuxiCTR's ``torch.randn``, which its reset leaves alone)
        vanilla:  P = X X^T         [B, n, n]   (``rank_k`` None)
        out = ReLU(MLP(LayerNorm(flatten(P)))) read as ``[B, m, D]``

    The MLP (``mlp``): hidden layers Linear -> activation -> dropout, no batch norm, then Linear to ``m * D``
    (FuxiCTR's MLP_Block with ``output_activation="relu"``). ``layer_norm`` is always there (FuxiCTR's too)."""

    def __init__(
        self,
        input_features: int,
        output_features: int,
        embedding_dim: int,
        rank_k: int | None,
        mlp_hidden_units: Sequence[int],
        mlp_activation: str,
        mlp_dropout: float,
    ) -> None:
        super().__init__()
        self.output_features, self.embedding_dim, self.rank_k = output_features, embedding_dim, rank_k
        if rank_k is not None:
            self.proj = nn.Parameter(torch.empty(input_features, rank_k))
            fm_dim = input_features * rank_k
        else:
            self.register_parameter("proj", None)
            fm_dim = input_features * input_features
        self.layer_norm = LayerNorm(fm_dim)
        self.mlp = MLP(fm_dim, mlp_hidden_units, mlp_activation, False, mlp_dropout,
                       output_dim=output_features * embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The projection only (N(0, 1)); the LayerNorm and the MLP's Linears are reset by ``init_bars_``."""
        if self.proj is not None:
            nn.init.normal_(self.proj)

    def forward(self, x: Tensor, xt: Tensor | None = None) -> Tensor:
        """``x [B, n, D]``; ``xt``: the same values as ``[B, D, n]`` where the caller holds them so (contiguous:
        ``X^T Y`` is then one matrix product, with no transposed copy)."""
        xt = x.transpose(1, 2) if xt is None else xt
        if self.proj is not None:
            fm = torch.bmm(x, torch.matmul(xt, self.proj))  # [B, n, k]
        else:
            fm = torch.bmm(x, xt)  # [B, n, n]
        out = torch.relu(self.mlp(self.layer_norm(fm.flatten(start_dim=1))))
        return out.view(-1, self.output_features, self.embedding_dim)


class WuKongLayer(nn.Module):
    """One WuKong layer ``[B, n, D] -> [B, m_f + m_l, D]``:

        out = LayerNorm_D([FMB(X); LCB(X)] + R(X))

    LCB: ``lcb`` (Linear ``n -> m_l`` over the feature axis, no bias); R: ``X`` when ``n = m_f + m_l``, else
    ``residual_proj`` (Linear ``n -> m_f + m_l`` over the feature axis, with bias); LayerNorm over the embedding
    dimension when ``layer_norm`` (``nn.Identity`` otherwise)."""

    def __init__(
        self,
        input_features: int,
        lcb_features: int,
        fmb_features: int,
        embedding_dim: int,
        rank_k: int | None,
        fmb_mlp_units: Sequence[int],
        fmb_mlp_activation: str,
        fmb_dropout: float,
        layer_norm: bool,
    ) -> None:
        super().__init__()
        self.fmb = FactorizationMachineBlock(input_features, fmb_features, embedding_dim, rank_k, fmb_mlp_units,
                                             fmb_mlp_activation, fmb_dropout)
        self.lcb = nn.Linear(input_features, lcb_features, bias=False)
        out = lcb_features + fmb_features
        self.residual_proj = nn.Linear(input_features, out) if input_features != out else None
        self.layer_norm = LayerNorm(embedding_dim) if layer_norm else nn.Identity()
        self.output_features = out

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_t(x.transpose(1, 2).contiguous()).transpose(1, 2)

    def forward_t(self, xt: Tensor) -> Tensor:
        """The layer on the transposed layout, ``[B, D, n] -> [B, D, m_f + m_l]`` (what the stack passes on): the
        maps over the feature axis (LCB, the residual projection, the FMB's ``X^T Y``) are then plain matrix
        products over the contiguous ``[B * D, n]`` rows, with no transposed copies, and the LayerNorm runs over
        the middle axis. Same values as FuxiCTR's layout up to float32 rounding (LCB and the residual
        projection are one product here)."""
        x = xt.transpose(1, 2)  # [B, n, D], a view
        fmb = self.fmb(x, xt).transpose(1, 2)  # [B, D, m_f], a view
        m_l = self.lcb.out_features
        if self.residual_proj is None:
            out = torch.cat([fmb, F.linear(xt, self.lcb.weight)], dim=2) + xt
        else:  # LCB and the residual projection in one product
            lcb, res = F.linear(xt, torch.cat([self.lcb.weight, self.residual_proj.weight])).split(
                [m_l, self.output_features], dim=2)  # split, not slices: whose backward fills zeros, twice
            out = torch.cat([fmb, lcb], dim=2) + (res + self.residual_proj.bias)
        if isinstance(self.layer_norm, LayerNorm):
            return self.layer_norm.forward_dim(out, 1)
        return out
