"""AFM: attentional factorization machine (Xiao et al., "Attentional Factorization Machines: Learning the Weight
of Feature Interactions via Attention Networks", IJCAI 2017; FuxiCTR ``model_zoo/AFM``).

    v_ij = e_i * e_j                                     for i < j   ([P, D], P = F(F-1)/2)
    a_ij = softmax_ij( h^T ReLU(W v_ij + b) )            (attention network, W: D -> attention_dim)
    logit = b0 + sum_f w_f[x_f] + p^T dropout2( sum_ij dropout1(a_ij) v_ij )

``attention_dropout = (p1, p2)``: p1 on the attention weights, p2 on the pooled vector (FuxiCTR's two values).
``use_attention = false`` replaces the attention pooling by the plain sum of all ``v_ij`` entries (the FM term),
as FuxiCTR. ``unused_attention_params`` (only with ``use_attention = false``): ``true`` (default, FuxiCTR) still
builds the attention network and ``p``, unused, as FuxiCTR does; they never change the forward (the logits are the
same either way), but they are net parameters, so their ``net_regularizer / 2 * ||.||^2`` is in the training loss
and their regularization gradients are in the norm that gradient clipping reads (and Adam shrinks them). ``false``
does not build them (no such term). Measured by the reference suite on Frappe rows (attention_dim 16, net
regularizer 0.01): +0.092 loss at step 1 (11 % of it). See docs/fidelity.md.

Parameters <-> FuxiCTR 2.3.10 ``AFM``: ``embedding`` = ``embedding_layer``; ``lr`` = ``lr_layer`` (dim-1 weights
+ bias); ``attention.0`` / ``attention.2`` = ``attention.0`` (Linear D -> attention_dim, bias) / ``attention.2``
(Linear attention_dim -> 1, no bias); ``weight_p`` = ``weight_p`` (Linear D -> 1, no bias).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_dropout, logits
from bars.models._pairs import pairwise_fields
from bars.models.layers import Dropout, FeatureEmbedding, InnerProductInteraction, LogisticRegression
from bars.models.layers.chunked import pair_relu_scores, weighted_pair_sum
from bars.models.registry import register


@dataclass(frozen=True)
class AFMConfig:
    embedding_dim: int
    attention_dim: int = 128
    attention_dropout: tuple[float, float] = (0.1, 0.1)
    use_attention: bool = True
    unused_attention_params: bool = True  # FuxiCTR: the attention net is built even when use_attention is false

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        if self.use_attention and not self.unused_attention_params:
            raise ValueError("unused_attention_params: false only applies with use_attention: false (with attention "
                             "the attention network is used, not unused)")
        check_dim("attention_dim", self.attention_dim)
        if len(self.attention_dropout) != 2:
            raise ValueError(
                f"attention_dropout must be two rates (attention weights, pooled vector), got {self.attention_dropout}"
            )
        for i, p in enumerate(self.attention_dropout):
            check_dropout(f"attention_dropout[{i}]", p)


@register("afm", AFMConfig)
class AFM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: AFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim)
        self.product = InnerProductInteraction(pairwise_fields("afm", self.embedding), "elementwise_product")
        self.lr = LogisticRegression(spec, use_bias=True)
        self.attention = self.weight_p = None
        if cfg.use_attention or cfg.unused_attention_params:
            self.attention = nn.Sequential(
                nn.Linear(cfg.embedding_dim, cfg.attention_dim),
                nn.ReLU(),
                nn.Linear(cfg.attention_dim, 1, bias=False),
                nn.Softmax(dim=1),
            )
            self.weight_p = nn.Linear(cfg.embedding_dim, 1, bias=False)
        self.dropout1 = Dropout(cfg.attention_dropout[0])
        self.dropout2 = Dropout(cfg.attention_dropout[1])

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)  # [B, F, D]
        if self.cfg.use_attention and self.attention is not None and self.weight_p is not None:
            # v_ij = e_i * e_j is never materialised on CPU: the attention net runs over the pairs in chunks of
            # rows and the pooling is sum_i e_i * (A e)_i with A the pairs' weights (bars.models.layers.chunked)
            left, right = self.product.left, self.product.right
            scores = pair_relu_scores(emb, left, right, self.attention[0], self.attention[2])  # [B, P, 1]
            weights = self.dropout1(self.attention[3](scores))  # softmax over the pairs, then dropout
            pooled = self.dropout2(weighted_pair_sum(emb, weights.squeeze(-1), left, right))  # [B, D]
            out = self.weight_p(pooled)
        else:
            out = self.product(emb).flatten(start_dim=1).sum(dim=1, keepdim=True)
        return logits(self.lr(batch) + out)
