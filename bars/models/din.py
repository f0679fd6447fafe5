"""DIN: Deep Interest Network (Zhou et al., "Deep Interest Network for Click-Through Rate Prediction", KDD 2018).

For each (target, behaviour sequence) pair (bars.models._sequence: ``target_fields`` / ``sequence_fields``, read
from the spec when null) the history's embeddings ``h_j`` are pooled by the target's activation unit
(:class:`~bars.models.layers.DINAttention`):

    v_U(t) = sum_j a(h_j, t) h_j,   a(h_j, t) = MLP_att([t, h_j, t - h_j, t * h_j])   (masked; softmax optional)

and the pooled vector replaces the sequence field(s) among the field embeddings, which an MLP maps to the logit:
``logit = MLP([e_1, ..., v_U(t), ..., e_F])`` (fields in spec order; a tuple's pooled vector is split back into
one ``dim``-wide part per sequence field, as FuxiCTR). Sequence fields in no pair are mean-pooled by
FeatureEmbedding as in every flat model. Dice (the paper's data-adaptive activation) is ``activation: dice`` /
``attention_activation: dice``.

FuxiCTR 2.3.10 ``model_zoo/DIN/src/DIN.py`` mapping: dnn_hidden_units -> dnn_hidden_units, dnn_activations ->
activation, attention_hidden_units -> attention_hidden_units, attention_hidden_activations ->
attention_activation, attention_output_activation -> attention_output_activation, attention_dropout ->
attention_dropout, net_dropout -> dropout, batch_norm -> batch_norm, din_use_softmax -> use_softmax,
din_target_field / din_sequence_field -> target_fields / sequence_fields (a list of tuples; a single tuple in a
FuxiCTR config is one pair). Same parameter shapes and initialisation (xavier-normal Linear, zero biases, Dice
alpha zero).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models._sequence import check_pair_keys, pair_embeddings, sequence_pairs
from bars.models.layers import MLP, DINAttention, FeatureEmbedding
from bars.models.registry import register


def check_din_activation(name: str, value: str) -> None:
    if value.lower() != "dice":
        check_activation(name, value)


@dataclass(frozen=True)
class DINConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (512, 128, 64)
    activation: str = "relu"  # relu, dice, ... (FuxiCTR dnn_activations)
    attention_hidden_units: tuple[int, ...] = (64,)
    attention_activation: str = "dice"
    attention_output_activation: str | None = None
    attention_dropout: float = 0.0
    dropout: float = 0.0
    batch_norm: bool = False
    use_softmax: bool = False
    target_fields: tuple[tuple[str, ...], ...] | None = None  # null: pairs read from the spec (share_embedding)
    sequence_fields: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_units("attention_hidden_units", self.attention_hidden_units)
        check_din_activation("activation", self.activation)
        check_din_activation("attention_activation", self.attention_activation)
        if self.attention_output_activation is not None:
            check_activation("attention_output_activation", self.attention_output_activation)
        check_dropout("attention_dropout", self.attention_dropout)
        check_dropout("dropout", self.dropout)
        check_pair_keys(self.target_fields, self.sequence_fields)


@register("din", DINConfig)
class DIN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DINConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.pairs = sequence_pairs(spec, cfg.target_fields, cfg.sequence_fields, "din")
        attended = [n for _, seqs in self.pairs for n in seqs]
        self.embedding = FeatureEmbedding(spec, d, unpooled=attended)
        self.attention = nn.ModuleList([
            DINAttention(d * len(targets), cfg.attention_hidden_units, cfg.attention_activation,
                         cfg.attention_output_activation, cfg.attention_dropout, cfg.use_softmax)
            for targets, _ in self.pairs
        ])
        # the MLP reads the fields in spec order: [the other fields..., pooled sequences...] permuted back
        order = list(self.embedding.field_names) + attended
        self.register_buffer("order", torch.tensor([order.index(n) for n in spec.names]), persistent=False)
        self.mlp = MLP(len(spec.names) * d, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)

    def pooled(self, batch: dict[str, Tensor]) -> list[Tensor]:
        """Per pair, the attention-pooled history ``[B, n, dim]`` (one row per sequence field of the pair)."""
        out = []
        for (targets, seqs), att in zip(self.pairs, self.attention, strict=True):
            t, h = pair_embeddings(self.embedding, batch, (targets, seqs))
            v = att(t, h, batch[seqs[0]] > 0)
            out.append(v.view(v.size(0), len(seqs), self.cfg.embedding_dim))
        return out

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = torch.cat([self.embedding(batch), *self.pooled(batch)], dim=1).index_select(1, self.order)
        return logits(self.mlp(emb.flatten(start_dim=1)))
