"""FiGNN: Feature Interaction Graph Neural Network (Li, Cui, Wu, Zhang, Wang, "Fi-GNN: Modeling Feature
Interactions via Graph Neural Networks for CTR Prediction", CIKM 2019).

Fields are the nodes of a fully connected graph (bars/models/layers/graph.py, ``FieldGraphNetwork``):

    g_ij = softmax_{j != i} LeakyReLU(w^T [e_i ; e_j])                       edge weights, from the embeddings
    a_i^t = W_in[i] sum_j g_ij W_out[j] h_j^{t-1} + b                        t = 1..gnn_layers
    h^t = GRU(a^t, h^{t-1}) (use_gru) or a^t + h^{t-1};  h^t += e (use_residual)
    logit = sum_i sigmoid(W_2 flatten(h))_i * (w_1 . h_i)                    attentional prediction

Parameter names (ours -> FuxiCTR FiGNN): embedding -> embedding_layer; fignn.{W_attn, gnn[t] or gnn (reused),
gru} -> fignn.{W_attn, gnn, gru} (GraphLayer: W_in, W_out [F, D, D], bias_p [D]); fc.mlp1 (Linear(D, 1, no
bias)) and fc.mlp2.0 (Linear(F*D, F, no bias)) -> fc.mlp1, fc.mlp2.0. Initialisation as FuxiCTR: W_in / W_out
xavier-normal over the 3-d tensor (std sqrt(2 / (D^2 + F D))), GRUCell PyTorch's default, Linear xavier-normal.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, logits
from bars.models.layers import FeatureEmbedding, FieldGraphNetwork
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class FiGNNConfig:
    embedding_dim: int
    gnn_layers: int = 17
    use_residual: bool = True
    use_gru: bool = False
    reuse_graph_layer: bool = False

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("gnn_layers", self.gnn_layers)


class AttentionalPrediction(nn.Module):
    """``[B, F, D] -> [B, 1]``: ``sum_i sigmoid(W_2 flatten(h))_i * (w_1 . h_i)`` (FuxiCTR's names)."""

    def __init__(self, num_fields: int, dim: int) -> None:
        super().__init__()
        self.mlp1 = nn.Linear(dim, 1, bias=False)
        self.mlp2 = nn.Sequential(nn.Linear(num_fields * dim, num_fields, bias=False), nn.Sigmoid())

    def forward(self, h: Tensor) -> Tensor:
        score = self.mlp1(h).squeeze(-1)  # [B, F]
        weight = self.mlp2(h.flatten(start_dim=1))  # [B, F]
        return (weight * score).sum(dim=1, keepdim=True)


@register("fignn", FiGNNConfig)
class FiGNN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: FiGNNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        f = self.embedding.num_fields
        try:
            self.fignn = FieldGraphNetwork(
                f,
                cfg.embedding_dim,
                cfg.gnn_layers,
                reuse_graph_layer=cfg.reuse_graph_layer,
                use_gru=cfg.use_gru,
                use_residual=cfg.use_residual,
            )
        except ValueError as e:
            raise ModelConfigError(f"fignn: {e}") from None
        self.fc = AttentionalPrediction(f, cfg.embedding_dim)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.fc(self.fignn(self.embedding(batch))))
