"""FLEN (Chen et al., "FLEN: Leveraging Field for Scalable CTR Prediction", DLP-KDD 2020): a field-wise
bi-interaction over the user / item / context feature groups ("fields" in the paper), an LR term and an MLP.

    g_m   = sum_{f in group m} e_f                               m in (user, item, context)   [B, 3, D]
    h_MF  = sum_{m<n} r_ij[(m,n)] * (g_m ⊙ g_n)                   inter-group (MF) part        [B, D]
    h_FM  = sum_m r_mm[m] * sum_{i<j in m} (e_i ⊙ e_j)            intra-group (FM) part        [B, D]
    h_FwBI = ReLU(W_FwBI [LR(x); h_MF + h_FM])                    (LR with its bias)           [B, D + 1]
    logit = w_F . [h_FwBI; MLP(flat E)]                           (no bias)

Feature groups come from the feature spec (``data.groups`` in the data config); a spec without groups stops with
an error naming that key. A group without fields contributes zero vectors (the sums over an empty set), e.g. the
context group of Frappe_x1, whose BARS grouping puts the context fields on the user side; FuxiCTR cannot run
with an empty group. Fields in no group feed the LR and the MLP only.

Config -> FuxiCTR ``FLEN`` (model_zoo/FLEN/src/FLEN.py; BARS ran v1.0.2, the same computation):
dnn_hidden_units (non-empty), ``activation`` = dnn_activations, ``dropout`` = net_dropout, batch_norm.
Parameters: ``embedding.weight`` = embedding_layer, ``lr`` = lr_layer, ``r_ij`` / ``r_mm`` (Linear(3, 1), no bias;
r_ij's inputs are the pairs (user,item), (user,context), (item,context)), ``w_FwBI.0`` = w_FwBI.0,
``dnn.net`` = dnn.mlp, ``w_F``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_deep
from bars.models.layers import MLP, FeatureEmbedding, FeatureGroups, LogisticRegression, require_groups
from bars.models.registry import register

GROUPS = ("user", "item", "context")


@dataclass(frozen=True)
class FLENConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (64, 64, 64)
    activation: str = "relu"
    dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_deep(self, "dnn_hidden_units")
        if not self.dnn_hidden_units:
            raise ValueError("dnn_hidden_units must not be empty (FLEN's output layer reads the MLP's last width)")


@register("flen", FLENConfig)
class FLEN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FLENConfig) -> None:
        super().__init__()
        self.cfg = cfg
        require_groups(spec, "flen", GROUPS)
        d = cfg.embedding_dim
        self.embedding = FeatureEmbedding(spec, d)
        self.groups = FeatureGroups(spec, self.embedding.field_names, GROUPS)
        pairs = torch.triu_indices(len(GROUPS), len(GROUPS), offset=1)  # (0,1), (0,2), (1,2)
        self.register_buffer("pair_p", pairs[0], persistent=False)
        self.register_buffer("pair_q", pairs[1], persistent=False)
        self.lr = LogisticRegression(spec, use_bias=True)
        self.r_ij = nn.Linear(pairs.shape[1], 1, bias=False)
        self.r_mm = nn.Linear(len(GROUPS), 1, bias=False)
        self.w_FwBI = nn.Sequential(nn.Linear(d + 1, d + 1, bias=False), nn.ReLU())
        self.dnn = MLP(self.embedding.output_dim, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout)
        self.w_F = nn.Linear(self.dnn.output_dim + d + 1, 1, bias=False)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        g = self.groups.sums(emb)  # [B, 3, D]
        mf = g.index_select(1, self.pair_p) * g.index_select(1, self.pair_q)  # [B, 3 pairs, D]
        h_mf = self.r_ij(mf.transpose(1, 2)).squeeze(-1)  # [B, D]
        h_fm = self.r_mm(self.groups.bi_interaction(emb).transpose(1, 2)).squeeze(-1)  # [B, D]
        h_fwbi = self.w_FwBI(torch.cat([self.lr(batch), h_mf + h_fm], dim=-1))
        return self.w_F(torch.cat([h_fwbi, self.dnn(emb.flatten(start_dim=1))], dim=-1)).squeeze(-1)
