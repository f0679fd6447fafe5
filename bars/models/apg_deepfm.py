"""APG_DeepFM: DeepFM whose MLP is an adaptive parameter generation network (Yan et al., "APG: Adaptive
Parameter Generation Network for Click-Through Rate Prediction", NeurIPS 2022).

    logit = b + sum_f w_f + sum_{i<j} <e_i, e_j> + out_proj(APG-MLP(flat E, z))

(FuxiCTR's FactorizationMachine: LR with its bias + the FM term; the MLP's output Linear has a bias too.) An
APG-MLP layer is ``y = ((x U) S(c) V) + b(c)`` with ``S(c)`` (and the bias) generated per sample by a
hypernetwork from the layer's own input (self-wise) or the embeddings of ``condition_features`` (group-wise):
:class:`bars.models.layers.APGLinear`.

Config -> FuxiCTR ``APG_DeepFM`` (model_zoo/APG/src/APG_DeepFM.py): hidden_units, ``activation`` =
hidden_activations, ``dropout`` = net_dropout, batch_norm, and the APG keys as APG_DCNv2 (bars/models/_apg.py).
Parameters: ``embedding.weight`` = embedding_layer, ``lr`` = fm.lr_layer, ``mlp`` = mlp (``linears[l]`` =
dense_layers.linear_{l+1}, ``out_proj``), ``conditions.own`` = condition_emb_layer.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._apg import Conditions, apg_mlp, check_apg
from bars.models._common import check_deep, logits
from bars.models.layers import FeatureEmbedding, FMInteraction, LogisticRegression
from bars.models.registry import register


@dataclass(frozen=True)
class APGDeepFMConfig:
    embedding_dim: int
    hidden_units: tuple[int, ...] = (64, 64, 64)
    activation: str = "relu"
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
        check_deep(self, "hidden_units")
        check_apg(self)


@register("apg_deepfm", APGDeepFMConfig)
class APGDeepFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: APGDeepFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.lr = LogisticRegression(spec, use_bias=True)
        self.fm = FMInteraction()
        self.conditions = Conditions(spec, cfg, self.embedding, "apg_deepfm")
        self.mlp = apg_mlp(cfg, self.embedding.output_dim, cfg.hidden_units, self.conditions.dim, 1, "apg_deepfm",
                           "hidden_units")

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        z = self.conditions(batch, emb)
        return logits(self.lr(batch) + self.fm(emb) + self.mlp(emb.flatten(start_dim=1), z))
