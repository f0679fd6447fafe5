"""DMR: Deep Match to Rank (Lyu et al., "Deep Match to Rank Model for Personalized Click-Through Rate Prediction",
AAAI 2020), as FuxiCTR 2.3.10's ``model_zoo/DMR/src/DMR.py`` computes it.

For each (target, behaviour sequence) pair (bars.models._sequence: ``target_fields`` / ``sequence_fields``, read
from the spec when null; a tuple's fields concatenated, width ``m = n * dim``):

- Item-to-Item network (:class:`~bars.models.layers.ItemToItemRelevance`): target attention with a per-position
  query ``ReLU(W_q [t, p_j])`` gives the pooled history (always in the MLP input) and, with ``enable_i2i_rel``,
  the relevance ``r_i2i`` (the sum of the behaviours' raw attention scores);
- User-to-Item network (``enable_u2i_rel``, :class:`~bars.models.layers.UserToItemRelevance`): position-aware
  causal attention over the history gives the user representation ``u_{L-1}``; ``r_u2i = <u_{L-1}, o_t>`` where
  ``o_t`` is the target's row in an *output* table (one ``nn.Embedding`` per target field, torch's N(0, 1)
  initialisation, padding row 0, in the net regularizer: FuxiCTR keeps them outside its FeatureEmbeddingDict);
- ``enable_sum_pooling``: the history's sum ``s`` and ``t * s`` (the paper code's features);

then ``logit = MLP([pooled, r_i2i, r_u2i, s, t * s] per pair, the other fields' embeddings in spec order)`` (the
attended sequences and the negative fields are not in it; a sequence in no pair is mean-pooled).

Auxiliary match loss (``aux_loss_beta > 0``, FuxiCTR's own variant, not the paper's sampled softmax): the user
representation one step earlier, ``u_{L-2}``, should predict the history's last behaviour ``h_{L-1}`` against
one negative item per row, read from the batch (``neg_fields``: categorical fields, one per target field of the
pair, whose indices live in the target's vocabulary, e.g. declared with ``share_embedding: <target>``):
``aux = mean over rows whose position L-1 holds a behaviour of [-log sigmoid(<u_{L-2}, o_{h_{L-1}}>) - log(1 -
sigmoid(<u_{L-2}, o_neg>))]``, summed over pairs; the training loss is ``BCE + aux_loss_beta * aux``
(:meth:`DMR.training_loss`); validation and test use the logit only. Positions are absolute: with ``padding:
post`` only full-length histories reach position L-1 (FuxiCTR's code notes "padding post required").

FuxiCTR 2.3.10 mapping: dnn_hidden_units, dnn_activations -> activation, net_dropout -> dropout, batch_norm,
attention_hidden_units, attention_activation, attention_dropout, use_pos_emb (the Item-to-Item network's; the
User-to-Item network always has its position embedding), pos_emb_dim, enable_u2i_rel, enable_i2i_rel,
enable_sum_pooling, aux_loss_beta, target_field / sequence_field -> target_fields / sequence_fields, neg_seq_field
-> neg_fields. Not here: ``context_field`` (FuxiCTR 2.3.10 fails with one: ``torch.cat(..., dimi=-1)``),
``bn_only_once`` (false in every BARS run). ``unused_output_tables`` (default true, as FuxiCTR): the output tables
are built even with ``enable_u2i_rel: false``, where only the net regularizer reads them (docs/fidelity.md, DMR).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models._sequence import check_pair_keys, pair_embeddings, sequence_pairs
from bars.models.layers import MLP, FeatureEmbedding, ItemToItemRelevance, UserToItemRelevance
from bars.models.registry import ModelConfigError, register


def _check_activation(name: str, value: str) -> None:
    if value.lower() != "dice":
        check_activation(name, value)


@dataclass(frozen=True)
class DMRConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (512, 128, 64)
    activation: str = "relu"  # FuxiCTR dnn_activations (relu, prelu, dice, ...)
    dropout: float = 0.0
    batch_norm: bool = True
    attention_hidden_units: tuple[int, ...] = (80, 40)
    attention_activation: str = "relu"
    attention_dropout: float = 0.0
    use_pos_emb: bool = True  # the Item-to-Item network's position embedding
    pos_emb_dim: int = 8
    enable_u2i_rel: bool = True
    enable_i2i_rel: bool = False
    enable_sum_pooling: bool = False
    aux_loss_beta: float = 0.0
    neg_fields: tuple[tuple[str, ...], ...] | None = None  # per pair, one negative field per target field
    unused_output_tables: bool = True  # FuxiCTR builds the output tables even without the User-to-Item network
    target_fields: tuple[tuple[str, ...], ...] | None = None  # null: pairs read from the spec (share_embedding)
    sequence_fields: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_units("attention_hidden_units", self.attention_hidden_units)
        _check_activation("activation", self.activation)
        _check_activation("attention_activation", self.attention_activation)
        check_dropout("dropout", self.dropout)
        check_dropout("attention_dropout", self.attention_dropout)
        check_dim("pos_emb_dim", self.pos_emb_dim)
        check_pair_keys(self.target_fields, self.sequence_fields)
        if not self.aux_loss_beta >= 0.0:
            raise ValueError(f"aux_loss_beta must be >= 0, got {self.aux_loss_beta}")
        if self.aux_loss_beta > 0 and not self.enable_u2i_rel:
            raise ValueError("aux_loss_beta > 0 trains the User-to-Item network, which enable_u2i_rel=false turns "
                             "off: set model.params.aux_loss_beta=0 or enable_u2i_rel=true")
        if self.aux_loss_beta > 0 and self.neg_fields is None:
            raise ValueError("aux_loss_beta > 0 needs one negative item per row: set model.params.neg_fields to "
                             "categorical fields of the data (one per target field of each pair)")
        if self.aux_loss_beta == 0 and self.neg_fields is not None:
            raise ValueError("neg_fields is read only by the auxiliary loss, which aux_loss_beta=0 turns off: set "
                             "model.params.neg_fields=null or aux_loss_beta > 0")


@register("dmr", DMRConfig)
class DMR(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DMRConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.pairs = sequence_pairs(spec, cfg.target_fields, cfg.sequence_fields, "dmr")
        self.negs = self._neg_fields(spec)
        attended = [n for _, seqs in self.pairs for n in seqs]
        neg_names = {n for negs in self.negs for n in negs}
        self.embedding = FeatureEmbedding(spec, d, [n for n in spec.names if n not in neg_names], unpooled=attended)
        self.aux = cfg.aux_loss_beta > 0
        # output tables: one per target field (FuxiCTR's output_emb_layer), torch's N(0, 1) init, padding row 0
        self.output_tables = nn.ModuleDict()
        if cfg.enable_u2i_rel or cfg.unused_output_tables:
            for targets, _ in self.pairs:
                for n in targets:
                    if n not in self.output_tables:
                        self.output_tables[n] = nn.Embedding(spec[n].vocab_size, d, padding_idx=0)
        self.i2i = nn.ModuleList()
        self.u2i = nn.ModuleList()
        mlp_in = self.embedding.output_dim
        for targets, seqs in self.pairs:
            m, max_len = d * len(targets), spec[seqs[0]].max_len
            if cfg.enable_u2i_rel:
                for t, s in zip(targets, seqs, strict=True):
                    if spec[s].vocab_size > spec[t].vocab_size:
                        raise ModelConfigError(
                            f"model 'dmr': sequence field {s!r} (vocab {spec[s].vocab_size}) is looked up in the "
                            f"output table of its target {t!r} (vocab {spec[t].vocab_size}), which is smaller")
                if self.aux and max_len < 2:
                    raise ModelConfigError(f"model 'dmr': the auxiliary loss reads position L-2 of {list(seqs)}, "
                                           f"whose max_len is {max_len}")
                self.u2i.append(UserToItemRelevance(m, max_len, cfg.attention_hidden_units, cfg.attention_activation,
                                                    cfg.attention_dropout, cfg.pos_emb_dim))
            self.i2i.append(ItemToItemRelevance(m, max_len, cfg.attention_hidden_units, cfg.attention_activation,
                                                cfg.attention_dropout, cfg.use_pos_emb, cfg.pos_emb_dim))
            mlp_in += m + int(cfg.enable_i2i_rel) + int(cfg.enable_u2i_rel) + 2 * m * int(cfg.enable_sum_pooling)
        self.mlp = MLP(mlp_in, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)

    def _neg_fields(self, spec: FeatureSpec) -> list[tuple[str, ...]]:
        """Per pair, its negative fields (``neg_fields``), checked against the spec and the pairs."""
        negs = self.cfg.neg_fields
        if negs is None:
            return []
        if len(negs) != len(self.pairs):
            raise ModelConfigError(f"model 'dmr': neg_fields {[list(n) for n in negs]} must give one tuple per "
                                   f"target/sequence pair ({len(self.pairs)}: {self.pairs})")
        for (targets, _), ns in zip(self.pairs, negs, strict=True):
            if len(ns) != len(targets):
                raise ModelConfigError(f"model 'dmr': neg_fields {list(ns)} must name one field per target field "
                                       f"{list(targets)}")
            for t, n in zip(targets, ns, strict=True):
                if n not in spec.names:
                    raise ModelConfigError(f"model 'dmr': neg_fields names {n!r}, which is not a field of spec "
                                           f"{spec.dataset!r} (fields: {spec.names})")
                if spec[n].type != "categorical":
                    raise ModelConfigError(f"model 'dmr': neg_fields names {n!r}, a {spec[n].type} field; expected "
                                           "a categorical field (one negative item per row)")
                if spec[n].vocab_size > spec[t].vocab_size:
                    raise ModelConfigError(f"model 'dmr': negative field {n!r} (vocab {spec[n].vocab_size}) is "
                                           f"looked up in the output table of {t!r} (vocab {spec[t].vocab_size}), "
                                           "which is smaller (declare it with share_embedding: the target)")
        return [tuple(ns) for ns in negs]

    def output_embedding(self, targets: tuple[str, ...], names: tuple[str, ...], batch: Mapping[str, Tensor],
                         last: bool = False) -> Tensor:
        """The rows of ``names``' indices (the last position only, for sequences with ``last``) in the output
        tables of ``targets`` (paired in order), concatenated."""
        parts = []
        for t, n in zip(targets, names, strict=True):
            idx = batch[n]
            parts.append(self.output_tables[t]((idx[:, -1] if last else idx).long()))
        return torch.cat(parts, dim=-1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        cfg = self.cfg
        parts: list[Tensor] = []
        aux = []
        with_aux = self.aux and self.training
        for i, (targets, seqs) in enumerate(self.pairs):
            t, h = pair_embeddings(self.embedding, batch, (targets, seqs))
            mask = batch[seqs[0]] > 0
            pooled, r_i2i = self.i2i[i](t, h, mask)
            parts.append(pooled)
            if cfg.enable_i2i_rel:
                parts.append(r_i2i)
            if cfg.enable_u2i_rel:
                u = self.u2i[i](h, mask, 2 if with_aux else 1)
                parts.append((u[:, -1] * self.output_embedding(targets, targets, batch)).sum(-1, keepdim=True))
                if with_aux:
                    aux.append(self.match_loss(u[:, 0], self.output_embedding(targets, seqs, batch, last=True),
                                               self.output_embedding(targets, self.negs[i], batch), mask[:, -1]))
            if cfg.enable_sum_pooling:
                s = h.sum(dim=1)
                parts += [s, t * s]
        logit = logits(self.mlp(torch.cat([*parts, self.embedding.flat(batch)], dim=1)))
        if with_aux:
            return {"logit": logit, "aux_loss": torch.stack(aux).sum()}
        return logit

    @staticmethod
    def match_loss(user: Tensor, positive: Tensor, negative: Tensor, valid: Tensor) -> Tensor:
        """FuxiCTR's auxiliary loss of one pair: ``-log sigmoid(<u, pos>) - log(1 - sigmoid(<u, neg>))``
        (written as softplus: the same values without log(0)) averaged over the rows where ``valid`` (the last
        position holds a behaviour); 0 when no row is valid (FuxiCTR: 0 / 0 = NaN)."""
        rows = F.softplus(-(user * positive).sum(-1)) + F.softplus((user * negative).sum(-1))
        w = valid.to(rows.dtype)
        return (rows * w).sum() / w.sum().clamp(min=1.0)

    def training_loss(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """FuxiCTR's ``add_loss``: the loss of the logit, plus ``aux_loss_beta`` times the auxiliary match loss
        when it is on (training mode)."""
        if isinstance(outputs, Tensor):
            return loss_fn(outputs, labels)
        return loss_fn(outputs["logit"], labels) + self.cfg.aux_loss_beta * outputs["aux_loss"]
