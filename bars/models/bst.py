"""BST: Behavior Sequence Transformer (Chen et al., "Behavior Sequence Transformer for E-commerce Recommendation in
Alibaba", DLP-KDD 2019).

For each (target, behaviour sequence) pair (bars.models._sequence: ``target_fields`` / ``sequence_fields``, read
from the spec when null) the sequence ``[h_1, ..., h_L, t]`` (history embeddings, then the target's; a tuple's
fields concatenated, width n * dim) gets a trainable position embedding concatenated (width dim, initialised to
the sinusoidal encoding) and passes ``transformer_layers`` post-norm transformer blocks
(:class:`~bars.models.layers.BehaviorTransformer`):

    S = LN(X + Dropout(MHA(X))),   F = LN(S + Dropout(W_2 LeakyReLU(W_1 S)))

where attention sees the behaviours and the target (a padding position only itself). The output is pooled
(``seq_pooling``: ``mean`` over the behaviours and the target, ``sum``, ``target`` = the target position, or
``concat`` of all positions) and appended to the other fields' embeddings (the pair's sequence fields are
dropped; its target fields stay), which an MLP maps to the logit.

FuxiCTR 2.3.10 ``model_zoo/BST/src/BST.py`` mapping: dnn_hidden_units, dnn_activations -> activation, num_heads,
stacked_transformer_layers -> transformer_layers, attention_dropout, net_dropout -> dropout (the MLP's and the
blocks'), batch_norm, layer_norm, use_residual, bst_target_field / bst_sequence_field -> target_fields /
sequence_fields, seq_pooling_type -> seq_pooling, use_position_emb, use_causal_mask. Same parameter shapes and
initialisation (the attention's out-projection keeps torch's default, as in FuxiCTR, see MaskedSelfAttention);
the MLP input is [other fields in spec order, pooled pair 1, pair 2, ...] as FuxiCTR's embedding dict order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models._sequence import check_pair_keys, pair_embeddings, sequence_pairs
from bars.models.layers import MLP, BehaviorTransformer, FeatureEmbedding, behaviour_masks
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class BSTConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (256, 128, 64)
    activation: str = "relu"
    num_heads: int = 2
    transformer_layers: int = 1
    attention_dropout: float = 0.0
    dropout: float = 0.0
    batch_norm: bool = False
    layer_norm: bool = True
    use_residual: bool = True
    seq_pooling: Literal["mean", "sum", "target", "concat"] = "mean"
    use_position_emb: bool = True
    use_causal_mask: bool = False
    target_fields: tuple[tuple[str, ...], ...] | None = None  # null: pairs read from the spec (share_embedding)
    sequence_fields: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_activation("activation", self.activation)
        check_dim("num_heads", self.num_heads)
        check_dim("transformer_layers", self.transformer_layers)
        check_dropout("attention_dropout", self.attention_dropout)
        check_dropout("dropout", self.dropout)
        check_pair_keys(self.target_fields, self.sequence_fields)


@register("bst", BSTConfig)
class BST(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: BSTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.pairs = sequence_pairs(spec, cfg.target_fields, cfg.sequence_fields, "bst")
        attended = [n for _, seqs in self.pairs for n in seqs]
        self.embedding = FeatureEmbedding(spec, d, unpooled=attended)
        self.transformers = nn.ModuleList()
        out_dim = self.embedding.output_dim
        for _, seqs in self.pairs:
            model_dim = d * (len(seqs) + int(cfg.use_position_emb))
            if model_dim % cfg.num_heads:
                pos = " + 1 position" if cfg.use_position_emb else ""
                raise ModelConfigError(f"model 'bst': the transformer width of {list(seqs)} is {model_dim} "
                                       f"(embedding_dim {d} x ({len(seqs)} fields{pos})), not divisible by "
                                       f"num_heads {cfg.num_heads}")
            seq_len = spec[seqs[0]].max_len + 1
            self.transformers.append(BehaviorTransformer(
                seq_len, model_dim, cfg.num_heads, cfg.transformer_layers, cfg.attention_dropout, cfg.dropout,
                d, cfg.use_position_emb, cfg.layer_norm, cfg.use_residual))
            out_dim += model_dim * (seq_len if cfg.seq_pooling == "concat" else 1)
        self.mlp = MLP(out_dim, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)

    def pool(self, out: Tensor, keep: Tensor) -> Tensor:
        how = self.cfg.seq_pooling
        if how == "target":
            return out[:, -1]
        if how == "concat":
            return out.flatten(start_dim=1)
        m = keep.to(out.dtype).unsqueeze(-1)
        total = (out * m).sum(dim=1)
        return total / (m.sum(dim=1) + 1.0e-12) if how == "mean" else total

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts = [self.embedding.flat(batch)]
        for (targets, seqs), transformer in zip(self.pairs, self.transformers, strict=True):
            t, h = pair_embeddings(self.embedding, batch, (targets, seqs))
            keep, allowed = behaviour_masks(batch[seqs[0]], self.cfg.use_causal_mask)
            out = transformer(torch.cat([h, t.unsqueeze(1)], dim=1), allowed)
            parts.append(self.pool(out, keep))
        return logits(self.mlp(torch.cat(parts, dim=1)))
