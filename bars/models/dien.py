"""DIEN: Deep Interest Evolution Network (Zhou et al., "Deep Interest Evolution Network for Click-Through Rate
Prediction", AAAI 2019), as FuxiCTR 2.3.10's ``model_zoo/DIEN/src/DIEN.py`` computes it.

For each (target, behaviour sequence) pair (bars.models._sequence: ``target_fields`` / ``sequence_fields``, read
from the spec when null; a tuple's embeddings are concatenated, width ``m = dim * len(tuple)``), with the
behaviours first (a pre-padded history is rolled; FuxiCTR packs the first ``len`` positions of a post-padded one):

1. interest extraction: a GRU (``nn.GRU(m, m)``, PyTorch's initialisation) over the behaviours gives the interests
   ``i_1..i_len`` (zero at padding steps);
2. attention of the target ``t`` on the interests (:class:`~bars.models.layers.InterestAttention`:
   ``attention_type`` bilinear ``i_j W t`` with W = I at start, dot ``i_j . t``, or DIN's unit), masked, softmax
   with ``use_attention_softmax``;
3. interest evolution by ``gru_type``: ``GRU`` (a second GRU over the interests, no attention), ``AIGRU`` (a GRU
   over ``a_j * i_j``), ``AGRU`` (the score is the update gate), ``AUGRU`` (the score scales the update gate);
   the state after the last behaviour ``h'`` [B, m] (zero for an empty history);
4. ``logit = MLP([h'_1, (s_1, t_1 * s_1,) ..., e_1, ..., e_F])``: each pair's final state (with
   ``enable_sum_pooling`` also the history's sum ``s`` and ``t * s``, as the paper's code), then every field's
   embedding in spec order (targets included, the attended histories left out, other sequences mean-pooled).

Auxiliary loss (``aux_loss_alpha > 0``, training only; FuxiCTR: on the last pair): the interest ``i_t`` should
predict the next behaviour ``e_{t+1}`` against a negative ``e~_{t+1}``: ``p = sigmoid(MLP_aux([i_t, e]))``
(``aux_hidden_units``, ``aux_activation``, the net dropout), ``L_aux`` = the mean of ``BCE(p_pos, 1)`` and
``BCE(p_neg, 0)`` over the steps t whose next position is a behaviour; the training loss is ``loss(logit) +
aux_loss_alpha * L_aux`` (:meth:`DIEN.training_loss`); validation and test use the logit only. Negatives are
drawn in-batch, deterministically: row b's negative at step t is behaviour ``t mod len`` of row ``b + 1``'s
history (the next row of the batch, cyclically; a shuffled batch makes it another user's behaviour); steps whose
negative row has no behaviour are left out. FuxiCTR reads negatives from a data column (``dien_neg_seq_field``)
and its ``add_loss`` cannot run with ``aux_loss_alpha > 0`` (docs/fidelity.md, DIEN).

FuxiCTR 2.3.10 mapping: dnn_hidden_units -> dnn_hidden_units, dnn_activations -> activation, net_dropout ->
dropout, batch_norm -> batch_norm, gru_type, attention_type, attention_hidden_units, attention_activation,
attention_dropout, use_attention_softmax, enable_sum_pooling, aux_hidden_units, aux_activation, aux_loss_alpha
-> the same names; dien_target_field / dien_sequence_field -> target_fields / sequence_fields.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, check_dropout, check_units, logits
from bars.models._sequence import check_pair_keys, pair_embeddings, sequence_pairs
from bars.models.din import check_din_activation
from bars.models.layers import MLP, FeatureEmbedding
from bars.models.layers.interest_evolution import (
    ATTENTION_TYPES,
    GRU_TYPES,
    AttentionalGRU,
    InterestAttention,
    behaviours_first,
    last_valid,
)
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class DIENConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (1024, 512, 256)
    activation: str = "dice"  # FuxiCTR dnn_activations
    dropout: float = 0.0  # FuxiCTR net_dropout (the DNN and the auxiliary net)
    batch_norm: bool = True
    gru_type: str = "AUGRU"  # GRU, AIGRU, AGRU, AUGRU
    attention_type: str = "bilinear_attention"  # bilinear_attention, dot_attention, din_attention
    attention_hidden_units: tuple[int, ...] = (80, 40)  # din_attention only
    attention_activation: str = "relu"  # din_attention only
    attention_dropout: float = 0.0  # din_attention only
    use_attention_softmax: bool = True
    enable_sum_pooling: bool = False
    aux_loss_alpha: float = 0.0
    aux_hidden_units: tuple[int, ...] = (100, 50)
    aux_activation: str = "relu"
    target_fields: tuple[tuple[str, ...], ...] | None = None  # null: pairs read from the spec (share_embedding)
    sequence_fields: tuple[tuple[str, ...], ...] | None = None

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_units("attention_hidden_units", self.attention_hidden_units)
        check_units("aux_hidden_units", self.aux_hidden_units)
        check_din_activation("activation", self.activation)
        check_din_activation("attention_activation", self.attention_activation)
        check_din_activation("aux_activation", self.aux_activation)
        check_dropout("dropout", self.dropout)
        check_dropout("attention_dropout", self.attention_dropout)
        if self.gru_type not in GRU_TYPES:
            raise ValueError(f"gru_type {self.gru_type!r} is not one of {list(GRU_TYPES)}")
        if self.attention_type not in ATTENTION_TYPES:
            raise ValueError(f"attention_type {self.attention_type!r} is not one of {list(ATTENTION_TYPES)}")
        if not self.aux_loss_alpha >= 0.0:
            raise ValueError(f"aux_loss_alpha must be >= 0, got {self.aux_loss_alpha}")
        check_pair_keys(self.target_fields, self.sequence_fields)


@register("dien", DIENConfig)
class DIEN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DIENConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.pairs = sequence_pairs(spec, cfg.target_fields, cfg.sequence_fields, "dien")
        self.padding: list[str] = []
        for _, seqs in self.pairs:
            sides = {spec[n].padding for n in seqs}
            if len(sides) > 1:
                raise ModelConfigError(f"model 'dien': sequence fields {list(seqs)} are read step by step together "
                                       f"but are padded on different sides {[spec[n].padding for n in seqs]}")
            self.padding.append(sides.pop())
        attended = [n for _, seqs in self.pairs for n in seqs]
        self.embedding = FeatureEmbedding(spec, d, unpooled=attended)
        widths = [d * len(targets) for targets, _ in self.pairs]
        self.extraction = nn.ModuleList([nn.GRU(m, m, batch_first=True) for m in widths])
        attentional = cfg.gru_type in ("AGRU", "AUGRU")
        self.evolution = nn.ModuleList([
            AttentionalGRU(m, m, cfg.gru_type) if attentional else nn.GRU(m, m, batch_first=True) for m in widths])
        self.attention = nn.ModuleList([
            InterestAttention(m, cfg.attention_type, cfg.attention_hidden_units, cfg.attention_activation,
                              cfg.attention_dropout, cfg.use_attention_softmax)
            for m in widths] if cfg.gru_type != "GRU" else [])
        width = sum(widths) * (3 if cfg.enable_sum_pooling else 1) + self.embedding.output_dim
        self.mlp = MLP(width, cfg.dnn_hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, 1)
        # FuxiCTR: one auxiliary net, on the last pair
        self.aux = (MLP(2 * widths[-1], cfg.aux_hidden_units, cfg.aux_activation, False, cfg.dropout, 1)
                    if cfg.aux_loss_alpha > 0 else None)

    def _scores(self, i: int, interest: Tensor, target: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        att = self.attention[i]
        if self.training and att.unit is not None:
            # FuxiCTR scores only the rows with a behaviour: with Dice, DIN's unit normalises over them alone
            rows = lengths > 0
            s = interest.new_zeros(mask.shape)
            if bool(rows.any()):
                s[rows] = att(interest[rows], target[rows], mask[rows])
            return s
        return att(interest, target, mask)

    def evolve(self, batch: dict[str, Tensor]) -> tuple[list[Tensor], tuple[Tensor, Tensor, Tensor, Tensor]]:
        """Per pair, the DNN's inputs from it (the final state [B, m], with sum pooling also ``s`` and ``t * s``),
        and the last pair's (interests, behaviours, behaviour mask, lengths) for the auxiliary loss, behaviours
        first."""
        parts: list[Tensor] = []
        last = None
        for i, ((targets, seqs), padding) in enumerate(zip(self.pairs, self.padding, strict=True)):
            t, h = pair_embeddings(self.embedding, batch, (targets, seqs))
            pad = batch[seqs[0]] > 0
            lengths = pad.sum(dim=1)
            hc = behaviours_first(h, lengths, padding)
            padc = behaviours_first(pad, lengths, padding)
            steps = torch.arange(h.size(1), device=h.device).unsqueeze(0) < lengths.unsqueeze(1)
            interest, _ = self.extraction[i](hc)
            interest = interest * steps.unsqueeze(-1).to(interest.dtype)
            kind = self.cfg.gru_type
            if kind == "GRU":
                final = last_valid(self.evolution[i](interest)[0], lengths)
            else:
                s = self._scores(i, interest, t, padc, lengths)
                if kind == "AIGRU":
                    final = last_valid(self.evolution[i](interest * s.unsqueeze(-1))[0], lengths)
                else:
                    final = self.evolution[i](interest, s, steps)
            parts.append(final)
            if self.cfg.enable_sum_pooling:
                sp = (h * pad.unsqueeze(-1).to(h.dtype)).sum(dim=1)
                parts += [sp, t * sp]
            last = (interest, hc, padc, lengths)
        assert last is not None
        return parts, last

    def auxiliary_loss(self, interest: Tensor, behaviours: Tensor, mask: Tensor, lengths: Tensor) -> Tensor:
        """``L_aux`` (module docstring) from the last pair's interests, behaviours (first), mask and lengths."""
        assert self.aux is not None
        length, m = behaviours.shape[1], behaviours.shape[2]
        # in-batch negatives: row b + 1's behaviour t mod len at step t
        neg_rows = behaviours.roll(-1, dims=0)
        neg_len = lengths.roll(-1, dims=0)
        idx = torch.arange(length, device=behaviours.device).unsqueeze(0) % neg_len.clamp(min=1).unsqueeze(1)
        neg = torch.gather(neg_rows, 1, idx.unsqueeze(-1).expand(-1, -1, m))
        valid = (mask[:, 1:] & (neg_len > 0).unsqueeze(1)).reshape(-1).to(interest.dtype)
        now = interest[:, :-1]
        p_pos = torch.sigmoid(self.aux(torch.cat([now, behaviours[:, 1:]], dim=-1).view(-1, 2 * m))).view(-1)
        p_neg = torch.sigmoid(self.aux(torch.cat([now, neg[:, 1:]], dim=-1).view(-1, 2 * m))).view(-1)
        bce = F.binary_cross_entropy(torch.cat([p_pos, p_neg]),
                                     torch.cat([torch.ones_like(p_pos), torch.zeros_like(p_neg)]), reduction="none")
        both = torch.cat([valid, valid])
        return (bce * both).sum() / (both.sum() + 1.0e-9)

    def forward(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        parts, last = self.evolve(batch)
        x = torch.cat([*parts, self.embedding(batch).flatten(start_dim=1)], dim=1)
        logit = logits(self.mlp(x))
        if self.training and self.aux is not None:
            return {"logit": logit, "aux_loss": self.auxiliary_loss(*last)}
        return logit

    def training_loss(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor,
                      loss_fn: Callable[[Tensor, Tensor], Tensor]) -> Tensor:
        """``loss(logit) + aux_loss_alpha * L_aux`` (without the auxiliary net: the plain loss)."""
        if isinstance(outputs, Tensor):
            return loss_fn(outputs, labels)
        return loss_fn(outputs["logit"], labels) + self.cfg.aux_loss_alpha * outputs["aux_loss"]
