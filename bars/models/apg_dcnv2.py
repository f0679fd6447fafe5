"""APG_DCNv2: DCN-V2 whose MLPs are adaptive parameter generation networks (Yan et al., "APG: Adaptive Parameter
Generation Network for Click-Through Rate Prediction", NeurIPS 2022).

    x_0 = flat E;  cross = CrossNetV2(x_0)    (x_{l+1} = x_0 ⊙ (W_l x_l + b_l) + x_l)
    crossnet_only:    logit = fc(cross)
    stacked:          logit = fc(APG-MLP_s(cross, z))
    parallel:         logit = fc([cross, APG-MLP_p(x_0, z)])
    stacked_parallel: logit = fc([APG-MLP_s(cross, z), APG-MLP_p(x_0, z)])

An APG-MLP layer is ``y = ((x U) S(c) V) + b(c)`` with ``S(c) [k, k]`` (or the whole weight at full rank) and
the bias generated per sample by a hypernetwork from the condition ``c``: the layer's own input (self-wise) or
the embeddings of ``condition_features`` (group-wise, ``z``). See :class:`bars.models.layers.APGLinear`.

Config -> FuxiCTR ``APG_DCNv2`` (model_zoo/APG/src/APG_DCNv2.py): model_structure, stacked_dnn_hidden_units,
parallel_dnn_hidden_units, ``activation`` = dnn_activations, num_cross_layers, ``dropout`` = net_dropout,
batch_norm, hypernet_hidden_units / hypernet_activation / hypernet_dropout = hypernet_config's hidden_units /
hidden_activations / dropout_rates, condition_features, condition_mode (``self-wise`` | ``group-wise``; FuxiCTR's
``mix-wise`` computes exactly ``group-wise`` and is not accepted), new_condition_emb, rank_k, overparam_p (lists:
see bars/models/_apg.py), generate_bias. Not here: ``use_low_rank_mixture`` (CrossNetMix; the DCNv2 of this
project has no low-rank mixture either). Parameters: ``embedding.weight`` = embedding_layer, ``crossnet.layers``
= crossnet.cross_layers, ``stacked_dnn`` / ``parallel_dnn`` = stacked_dnn / parallel_dnn (``linears[l]`` =
dense_layers.linear_{l+1}, ``post[l]`` = bn/act/drop_{l+1}), ``conditions.own`` = condition_emb_layer, ``fc``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._apg import Conditions, apg_mlp, check_apg
from bars.models._common import check_deep, check_dim, check_units, logits
from bars.models.layers import CrossNetV2, FeatureEmbedding
from bars.models.registry import register


@dataclass(frozen=True)
class APGDCNv2Config:
    embedding_dim: int
    model_structure: Literal["crossnet_only", "stacked", "parallel", "stacked_parallel"] = "parallel"
    stacked_dnn_hidden_units: tuple[int, ...] = ()
    parallel_dnn_hidden_units: tuple[int, ...] = ()
    activation: str = "relu"
    num_cross_layers: int = 3
    dropout: float = 0.0
    batch_norm: bool = False
    hypernet_hidden_units: tuple[int, ...] = ()
    hypernet_activation: str = "relu"
    hypernet_dropout: float = 0.0
    condition_features: tuple[str, ...] = ()
    condition_mode: Literal["self-wise", "group-wise"] = "self-wise"
    new_condition_emb: bool = False
    rank_k: tuple[int, ...] = (32,)
    overparam_p: tuple[int, ...] = (1024,)
    generate_bias: bool = True

    def __post_init__(self) -> None:
        check_deep(self, "parallel_dnn_hidden_units")
        check_units("stacked_dnn_hidden_units", self.stacked_dnn_hidden_units)
        check_dim("num_cross_layers", self.num_cross_layers)
        for part in ("stacked", "parallel"):
            if part in self.model_structure and not getattr(self, f"{part}_dnn_hidden_units"):
                raise ValueError(f"model_structure {self.model_structure!r} needs {part}_dnn_hidden_units")
        check_apg(self)


@register("apg_dcnv2", APGDCNv2Config)
class APGDCNv2(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: APGDCNv2Config) -> None:
        super().__init__()
        self.cfg = cfg
        self.structure = cfg.model_structure
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        d = self.embedding.output_dim
        self.conditions = Conditions(spec, cfg, self.embedding, "apg_dcnv2")
        self.crossnet = CrossNetV2(d, cfg.num_cross_layers)
        self.stacked_dnn = self.parallel_dnn = None
        final = d
        if self.structure in ("stacked", "stacked_parallel"):
            self.stacked_dnn = apg_mlp(cfg, d, cfg.stacked_dnn_hidden_units, self.conditions.dim, None, "apg_dcnv2",
                                       "stacked_dnn_hidden_units")
            final = self.stacked_dnn.output_dim
        if self.structure in ("parallel", "stacked_parallel"):
            self.parallel_dnn = apg_mlp(cfg, d, cfg.parallel_dnn_hidden_units, self.conditions.dim, None,
                                        "apg_dcnv2", "parallel_dnn_hidden_units")
            final = (final if self.structure == "stacked_parallel" else d) + self.parallel_dnn.output_dim
        self.fc = nn.Linear(final, 1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        z = self.conditions(batch, emb)
        x0 = emb.flatten(start_dim=1)
        cross = self.crossnet(x0)
        if self.structure == "crossnet_only":
            out = cross
        elif self.structure == "stacked":
            out = self.stacked_dnn(cross, z)
        elif self.structure == "parallel":
            out = torch.cat([cross, self.parallel_dnn(x0, z)], dim=-1)
        else:
            out = torch.cat([self.stacked_dnn(cross, z), self.parallel_dnn(x0, z)], dim=-1)
        return logits(self.fc(out))
