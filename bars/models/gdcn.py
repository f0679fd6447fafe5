"""GDCN (Wang et al., "Towards Deeper, Lighter and Interpretable Cross Network for CTR Prediction", CIKM 2023):
the gated cross network, stacked with an MLP (``gdcn``, GDCN-S) or beside it (``gdcnp``, GDCN-P), as FuxiCTR's
GDCN / GDCNP compute them (model_zoo/GDCN/src/GDCN.py; the paper's field-level dimension optimisation is not there
and not here).

    x_0 = flat field embeddings [B, F*D]
    c   = GatedCrossNet(x_0):  c_{l+1} = x_0 ⊙ (W_l c_l + b_l) ⊙ sigmoid(W_g,l c_l) + c_l
    gdcn  (stacked):  logit = MLP(c) + output Linear
    gdcnp (parallel): logit = Linear([c; MLP(x_0)])

``dnn_hidden_units`` empty (or null): no MLP, ``logit = Linear(c)`` for both (what FuxiCTR's code means by
"in case of only crossing net used": its GDCN sets ``dnn = None`` and then calls it, and its GDCNP sizes the output
Linear with ``dnn_hidden_units[-1]``; both crash there). The MLP keys (``activation``, ``batch_norm``,
``dropout``) must then be null, as every MLP-less model here (a key the model would ignore is an error).

Config -> FuxiCTR ``GDCN`` / ``GDCNP``: num_cross_layers, dnn_hidden_units, ``activation`` = dnn_activations,
``batch_norm``, ``dropout`` = net_dropout (the MLP's only). Parameters: ``embedding`` = embedding_layer,
``cross.weight[l]`` = [cross_net.w[l].weight; cross_net.wg[l].weight], ``cross.bias[l]`` = cross_net.b[l]
(initialised uniform on [0, 1), as FuxiCTR), ``dnn`` = dnn (gdcn: with its output Linear), ``fc`` = gdcnp's fc
(gdcn without MLP: FuxiCTR's MLP_Block of no hidden layer, the same Linear).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import MLP_DEFAULTS, check_deep, check_dim, logits, part_keys
from bars.models.layers import MLP, FeatureEmbedding, GatedCrossNet
from bars.models.registry import register


@dataclass(frozen=True)
class GDCNConfig:
    embedding_dim: int
    num_cross_layers: int = 3
    # MLP keys: None = the defaults (MLP_DEFAULTS) when there is an MLP; without one (empty units) they stay None
    dnn_hidden_units: tuple[int, ...] | None = (1024, 512, 256)
    activation: str | None = None
    batch_norm: bool | None = None
    dropout: float | None = None

    def __post_init__(self) -> None:
        part_keys(self, bool(self.dnn_hidden_units), MLP_DEFAULTS,
                  "dnn_hidden_units is empty (no MLP: the gated cross network alone)")
        check_deep(self, "dnn_hidden_units")
        check_dim("num_cross_layers", self.num_cross_layers)


class _GDCNBase(nn.Module):
    parallel = False

    def __init__(self, spec: FeatureSpec, cfg: GDCNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        d = self.embedding.output_dim
        self.cross = GatedCrossNet(d, cfg.num_cross_layers)
        units = tuple(cfg.dnn_hidden_units or ())
        self.dnn = self.fc = None
        if not units:
            self.fc = nn.Linear(d, 1)
        elif self.parallel:
            self.dnn = MLP(d, units, cfg.activation, cfg.batch_norm, cfg.dropout)
            self.fc = nn.Linear(d + self.dnn.output_dim, 1)
        else:
            self.dnn = MLP(d, units, cfg.activation, cfg.batch_norm, cfg.dropout, output_dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        x0 = self.embedding.flat(batch)
        c = self.cross(x0)
        if self.dnn is None:
            assert self.fc is not None
            return logits(self.fc(c))
        if self.fc is None:
            return logits(self.dnn(c))
        return logits(self.fc(torch.cat([c, self.dnn(x0)], dim=-1)))


@register("gdcn", GDCNConfig)
class GDCN(_GDCNBase):
    """GDCN-S: the MLP on top of the gated cross network."""


@register("gdcnp", GDCNConfig)
class GDCNP(_GDCNBase):
    """GDCN-P: the gated cross network and the MLP side by side on the embeddings, one output Linear."""

    parallel = True
