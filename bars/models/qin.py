"""QIN: Quadratic Interest Network (Li et al., "Quadratic Interest Network for Multimodal Click-Through Rate
Prediction", arXiv 2504.17699, 2025; 2nd place in the WWW 2025 EReL@MIR multimodal CTR challenge), as the authors'
salmon1802/QIN ``src/QIN_variety_v9.py`` computes it.

For each (target, behaviour sequence) pair (bars.models._sequence: ``target_fields`` / ``sequence_fields``, read
from the spec when null; a tuple's fields concatenated: target ``t`` [B, n*dim], history ``h`` [B, L, n*dim]) the
history is pooled against the target by adaptive sparse target attention
(:class:`~bars.models.layers.SparseTargetAttention`: ReLU instead of softmax, ``o = W_o ReLU(q k^T / sqrt(a)) v +
t``), and the quadratic network (:class:`~bars.models.layers.QuadraticInterestNetwork`) maps

    x_0 = [e_other_1, ..., e_other_k, t_1, o_1, t_2, o_2, ...]      (other fields in spec order, then each pair)

to the logit. "Other" fields are those in no pair: a pair's target fields enter once, as ``t`` (the authors' data
loader takes the target item out of the user-side features), and its sequence fields only through ``o``; a
sequence field in no pair is mean-pooled by FeatureEmbedding as in every flat model.

Authors' ``QIN_variety_v9`` mapping: num_layers, num_row, net_dropout -> dropout (on each quadratic projection and
after each block's activation), batch_norm; the item fields (``source: item``: the target item's id, tags and
multimodal embedding, and the same features of every behaviour) -> one pair ``target_fields`` / ``sequence_fields``;
the attention width ``2 x item_info_dim`` -> ``attention_dim: null``; one head (``num_heads: 1``), scale on
(``use_scale``). Same parameter shapes and initialisation (xavier-normal Linear weights, zero biases, PReLU 0.25,
embeddings N(0, 1e-4)). ``num_heads > 1`` splits the attention width into heads (the paper's "multi-head" naming;
the authors' code has one head).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_dropout, logits
from bars.models._sequence import check_pair_keys, pair_embeddings, sequence_pairs
from bars.models.layers import FeatureEmbedding, QuadraticInterestNetwork, SparseTargetAttention
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class QINConfig:
    embedding_dim: int
    num_layers: int = 3  # the authors' constructor defaults (their MicroLens config: conf/model/qin.yaml)
    num_row: int = 2
    dropout: float = 0.0
    batch_norm: bool = False
    attention_dim: int | None = None  # null: 2 x the pair's target width (the authors')
    num_heads: int = 1
    use_scale: bool = True
    target_fields: tuple[tuple[str, ...], ...] | None = None  # null: pairs read from the spec (share_embedding)
    sequence_fields: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("num_layers", self.num_layers)
        check_dim("num_row", self.num_row)
        check_dropout("dropout", self.dropout)
        check_dim("num_heads", self.num_heads)
        if self.attention_dim is not None:
            check_dim("attention_dim", self.attention_dim)
            if self.attention_dim % self.num_heads:
                raise ValueError(f"attention_dim {self.attention_dim} is not divisible by num_heads {self.num_heads}")
        check_pair_keys(self.target_fields, self.sequence_fields)


@register("qin", QINConfig)
class QIN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: QINConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.pairs = sequence_pairs(spec, cfg.target_fields, cfg.sequence_fields, "qin")
        attended = [n for _, seqs in self.pairs for n in seqs]
        self.embedding = FeatureEmbedding(spec, d, unpooled=attended)
        targets = {n for t, _ in self.pairs for n in t}
        others = [i for i, n in enumerate(self.embedding.field_names) if n not in targets]
        self.register_buffer("others", torch.tensor(others, dtype=torch.long), persistent=False)
        self.attention = nn.ModuleList()
        width = len(others) * d
        for t, _ in self.pairs:
            item_dim = len(t) * d
            att_dim = 2 * item_dim if cfg.attention_dim is None else cfg.attention_dim
            if att_dim % cfg.num_heads:
                raise ModelConfigError(f"model 'qin': the attention width of {list(t)} is {att_dim} (2 x embedding_dim "
                                       f"{d} x {len(t)} fields; attention_dim null), not divisible by num_heads "
                                       f"{cfg.num_heads}")
            self.attention.append(SparseTargetAttention(item_dim, att_dim, cfg.num_heads, cfg.use_scale))
            width += 2 * item_dim
        self.qnn = QuadraticInterestNetwork(width, cfg.num_layers, cfg.num_row, cfg.dropout, cfg.batch_norm)

    def features(self, batch: dict[str, Tensor]) -> Tensor:
        """The quadratic network's input ``x_0`` [B, D] (module docstring)."""
        parts = [self.embedding(batch).index_select(1, self.others).flatten(start_dim=1)]
        for pair, att in zip(self.pairs, self.attention, strict=True):
            t, h = pair_embeddings(self.embedding, batch, pair)
            parts += [t, att(t, h, batch[pair[1][0]] > 0)]
        return torch.cat(parts, dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        return logits(self.qnn(self.features(batch)))
