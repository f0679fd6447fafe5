"""EDCN (Chen et al., "Enhancing Explicit and Implicit Feature Interactions via Information Sharing for Parallel
Deep CTR Models", CIKM 2021): a cross network and an MLP in parallel, layer by layer, sharing information through
a bridge module and re-weighting fields for each tower through a regulation module.

    c_0, d_0 = R_1(x_0)                         x_0 = flat field embeddings [B, F*D]
    for l = 1..L:
        c_l = c_0 * (w_l . c_{l-1}) + b_l [+ c_{l-1}]      cross layer
        d_l = Dropout(act(W_l d_{l-1} + a_l))              dense layer (width F*D)
        f_l = bridge(c_l, d_l)                              hadamard c*d | addition c+d |
                                                           concatenation ReLU(W[c; d]) | attention pooling
        c_l, d_l = R_{l+1}(f_l)                             (l < L)
    logit = fc([c_L, d_L, f_L])

    R(x) = (BN?(g_c ⊙ x), BN?(g_d ⊙ x)),  g = softmax(γ / τ) over fields, repeated over the D dimensions
    (γ initialised to ones; without the regulation module, g = 1).

Config -> FuxiCTR ``EDCN`` (model_zoo/EDCN/src/EDCN.py): num_cross_layers, ``activation`` = hidden_activations,
bridge_type, temperature (τ), ``dropout`` = net_dropout (the dense layers), ``batch_norm`` = batch_norm (the
regulation module's two BatchNorms), and two keys of the BARS runs' FuxiCTR 1.2.2 that 2.3.10 changed:
``use_regulation_module`` (1.2.2's switch; 2.3.10 always regulates) and ``cross_residual`` (1.2.2 adds the DCN
residual ``c_{l-1}``, as DCN's cross layer does; 2.3.10's EDCN dropped it). The defaults follow 1.2.2, which
produced the BARS numbers; FuxiCTR 2.3.10 = ``use_regulation_module: true, cross_residual: false``.
``bridge_attention_shared``: FuxiCTR's attention pooling scores both towers with the same network
(``attention1(c) * c + attention1(d) * d``; its ``attention2`` is allocated but never used); ``false`` gives the
paper's second network for the deep tower. Only the attention-pooling bridge reads it. With ``true`` the unused
``attention2`` is built too, as FuxiCTR builds it: it never reaches the output, but its weights are in the net
regularizer (and so in the gradient norm that clipping reads), which FuxiCTR's loss includes (found by the reference
suite: +3.0 loss at FuxiCTR's initialisation for 3 bridges of width 100 at net regularizer 0.01).
Parameters: ``embedding.weight`` = embedding_layer, ``cross_w[l]`` / ``cross_b[l]`` = cross_layers[l].weight /
.bias, ``dense[l].net`` = dense_layers[l].mlp, ``bridges[l]`` = bridge_modules[l], ``regulation[l].g1/g2/bn1/bn2``
= regulation_modules[l].*, ``fc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, logits
from bars.models.layers import MLP, FeatureEmbedding
from bars.models.registry import register

BridgeType = Literal["hadamard_product", "pointwise_addition", "concatenation", "attention_pooling"]


@dataclass(frozen=True)
class EDCNConfig:
    embedding_dim: int
    num_cross_layers: int = 3
    activation: str = "relu"
    bridge_type: BridgeType = "hadamard_product"
    use_regulation_module: bool = True
    temperature: float = 1.0
    dropout: float = 0.0
    batch_norm: bool = False
    cross_residual: bool = True
    bridge_attention_shared: bool = True

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_cross_layers", self.num_cross_layers)
        check_activation("activation", self.activation)
        check_dropout("dropout", self.dropout)
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0, got {self.temperature}")


class Bridge(nn.Module):
    """EDCN's bridge module between the two towers' layer outputs ``c, d [B, H] -> [B, H]``."""

    def __init__(self, hidden_dim: int, bridge_type: BridgeType, shared_attention: bool = True) -> None:
        super().__init__()
        self.bridge_type = bridge_type
        self.shared_attention = shared_attention
        self.concat_pooling = self.attention1 = self.attention2 = None
        if bridge_type == "concatenation":
            self.concat_pooling = nn.Sequential(nn.Linear(2 * hidden_dim, hidden_dim), nn.ReLU())
        elif bridge_type == "attention_pooling":
            self.attention1 = self._attention(hidden_dim)
            self.attention2 = self._attention(hidden_dim)  # unused when shared, but regularized (as FuxiCTR)

    @staticmethod
    def _attention(h: int) -> nn.Sequential:
        return nn.Sequential(nn.Linear(h, h), nn.ReLU(), nn.Linear(h, h, bias=False), nn.Softmax(dim=-1))

    def forward(self, c: Tensor, d: Tensor) -> Tensor:
        if self.bridge_type == "hadamard_product":
            return c * d
        if self.bridge_type == "pointwise_addition":
            return c + d
        if self.concat_pooling is not None:
            return self.concat_pooling(torch.cat([c, d], dim=-1))
        assert self.attention1 is not None and self.attention2 is not None
        second = self.attention1 if self.shared_attention else self.attention2
        return self.attention1(c) * c + second(d) * d


class Regulation(nn.Module):
    """EDCN's regulation module: ``x [B, F*D] -> (BN?(g1 ⊙ x), BN?(g2 ⊙ x))`` with field gates
    ``g = softmax(γ / τ)`` (one weight per field, repeated over its D dimensions; γ starts at ones); without
    regulation both outputs are ``BN?(x)``."""

    def __init__(self, num_fields: int, embedding_dim: int, tau: float, use_bn: bool, use_regulation: bool) -> None:
        super().__init__()
        self.tau, self.embedding_dim = tau, embedding_dim
        self.g1 = nn.Parameter(torch.ones(num_fields)) if use_regulation else None
        self.g2 = nn.Parameter(torch.ones(num_fields)) if use_regulation else None
        self.bn1 = nn.BatchNorm1d(num_fields * embedding_dim) if use_bn else None
        self.bn2 = nn.BatchNorm1d(num_fields * embedding_dim) if use_bn else None

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for g in (self.g1, self.g2):
                if g is not None:
                    g.fill_(1.0)

    def _gate(self, g: Tensor) -> Tensor:
        return torch.softmax(g / self.tau, dim=-1).repeat_interleave(self.embedding_dim).unsqueeze(0)

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        if self.g1 is not None and self.g2 is not None:
            out1, out2 = self._gate(self.g1) * x, self._gate(self.g2) * x
        else:
            out1 = out2 = x
        if self.bn1 is not None and self.bn2 is not None:
            out1, out2 = self.bn1(out1), self.bn2(out2)
        return out1, out2


@register("edcn", EDCNConfig)
class EDCN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: EDCNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        h, n = self.embedding.output_dim, cfg.num_cross_layers
        self.cross_w = nn.ModuleList(nn.Linear(h, 1, bias=False) for _ in range(n))
        self.cross_b = nn.ParameterList(nn.Parameter(torch.zeros(h)) for _ in range(n))
        self.dense = nn.ModuleList(MLP(h, [h], cfg.activation, batch_norm=False, dropout=cfg.dropout)
                                   for _ in range(n))
        self.bridges = nn.ModuleList(Bridge(h, cfg.bridge_type, cfg.bridge_attention_shared) for _ in range(n))
        self.regulation = nn.ModuleList(
            Regulation(self.embedding.num_fields, cfg.embedding_dim, cfg.temperature, cfg.batch_norm,
                       cfg.use_regulation_module)
            for _ in range(n)
        )
        self.fc = nn.Linear(3 * h, 1)

    def reset_parameters(self) -> None:
        with torch.no_grad():
            for b in self.cross_b:
                b.zero_()

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        c, d = self.regulation[0](self.embedding.flat(batch))
        c0 = c
        n = len(self.cross_w)
        for i in range(n):
            cross = c0 * self.cross_w[i](c) + self.cross_b[i]
            c = c + cross if self.cfg.cross_residual else cross
            d = self.dense[i](d)
            f = self.bridges[i](c, d)
            if i + 1 < n:
                c, d = self.regulation[i + 1](f)
        return logits(self.fc(torch.cat([c, d, f], dim=-1)))
