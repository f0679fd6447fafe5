"""WuKong's interaction stack (Zhang et al., "Wukong: Towards a Scaling Law for Large-Scale Recommendation", ICML
2024), as FuxiCTR 2.3.10's ``model_zoo/WuKong/src/WuKong.py`` computes it: factorization machine blocks (FMB) and
linear compression blocks (LCB) side by side, with a residual and LayerNorm, stacked."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.models.layers.core import MLP


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
        self.layer_norm = nn.LayerNorm(fm_dim)
        self.mlp = MLP(fm_dim, mlp_hidden_units, mlp_activation, False, mlp_dropout,
                       output_dim=output_features * embedding_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """The projection only (N(0, 1)); the LayerNorm and the MLP's Linears are reset by ``init_bars_``."""
        if self.proj is not None:
            nn.init.normal_(self.proj)

    def forward(self, x: Tensor) -> Tensor:
        if self.proj is not None:
            fm = torch.bmm(x, torch.matmul(x.transpose(1, 2), self.proj))  # [B, n, k]
        else:
            fm = torch.bmm(x, x.transpose(1, 2))  # [B, n, n]
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
        self.layer_norm = nn.LayerNorm(embedding_dim) if layer_norm else nn.Identity()
        self.output_features = out

    def forward(self, x: Tensor) -> Tensor:
        xt = x.transpose(1, 2)  # [B, D, n]
        res = x if self.residual_proj is None else self.residual_proj(xt).transpose(1, 2)
        out = torch.cat([self.fmb(x), self.lcb(xt).transpose(1, 2)], dim=1)
        return self.layer_norm(out + res)
