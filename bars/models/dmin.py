"""DMIN: Deep Multi-Interest Network (Xiao et al., "Deep Multi-Interest Network for Click-through Rate Prediction",
CIKM 2020), as FuxiCTR 2.3.10 ``model_zoo/DMIN/src/DMIN.py`` computes it.

For each (target, behaviour sequence) pair (bars.models._sequence: ``target_fields`` / ``sequence_fields``, read
from the spec when null; a tuple's fields concatenated, width ``dim = n * embedding_dim``) with history ``H``
[B, L, dim] and target ``t`` [B, dim] (bars.models.layers.multi_interest):

1. behaviour refiner (``use_behavior_refiner``): ``R = BehaviorRefiner(H)``: multi-head self-attention under a
   causal padding mask, residual, layer norm, a 2 dim ReLU feed-forward with residual (else ``R = H``);
2. multi-interest extractor: another ``num_heads``-head self-attention over ``R``; head ``k`` becomes an interest
   sequence ``U_k = s + FFN_k(s)``, ``s = LN_k(R + W_o,k head_k)``, pooled by its own target attention
   ``i_k = sum_j a_kj U_k,j``, ``a_k = softmax_j MLP_att([q_j, U_k,j, q_j - U_k,j, q_j * U_k,j])``, where
   ``q_j = W [t, p_j]`` adds a learned position embedding ``p_j`` (``use_pos_emb``; else ``q_j = t``);
3. ``enable_sum_pooling``: also ``sum_j H_j`` and ``t * sum_j H_j`` (the paper's code);

then ``logit = MLP([i_1, ..., i_K, (sums), e_1, ..., e_F])`` where ``e_f`` are the other fields' embeddings in spec
order (targets included; the pairs' sequences and the negative sequences left out; sequences in no pair
mean-pooled), with ``batch_norm``: a BatchNorm after each hidden Linear, or with ``bn_only_once`` one BatchNorm on
the MLP's input instead (FuxiCTR's MLP_Block).

Auxiliary loss (``aux_loss_lambda > 0``; every BARS run has 0): for each pair, the refined behaviour ``R_j``
should tell the next clicked behaviour ``H_{j+1}`` from a negative ``N_{j+1}``: ``aux_net`` (an MLP on
``[R_j, x]``, ``aux_hidden_units`` with ``aux_activation``, sigmoid output) gives ``p+_j``, ``p-_j``; the loss
is the BCE of ``p+`` against 1 and ``p-`` against 0, averaged over the positions ``j+1`` that hold a behaviour,
and ``aux_loss_lambda`` times its sum over pairs is added to the data loss (:meth:`DMIN.training_loss`). The
negatives are inputs, as in FuxiCTR: sequence fields of the data (``neg_sequence_fields``, one tuple per pair,
aligned with ``sequence_fields``), e.g. items sampled offline for each history position. FuxiCTR 2.3.10 cannot
compute this loss (its ``add_loss`` reads an attribute that does not exist, ``self.model_dim``, and multiplies
``2N`` losses by ``N`` mask values); this is its evident intent (docs/fidelity.md, DMIN).

FuxiCTR 2.3.10 mapping: dnn_hidden_units, dnn_activations -> activation, aux_hidden_units, aux_activation,
net_dropout -> dropout, num_heads, enable_sum_pooling, attention_hidden_units, attention_activation,
attention_dropout, use_pos_emb, pos_emb_dim, use_behavior_refiner, aux_loss_lambda, batch_norm, bn_only_once,
layer_norm, target_field / sequence_field -> target_fields / sequence_fields (lists of tuples), neg_seq_field ->
neg_sequence_fields. ``refiner_mask``: ``soft`` (FuxiCTR: the refiner's mask is added to the scores as +1, see
BehaviorRefiner) or ``hard``. Same parameter shapes and initialisation (xavier-normal Linear, zero biases, torch's
init for the refiner's attention, zero position embeddings, Dice alpha zero).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units, logits
from bars.models._sequence import Pair, check_pair_keys, pair_embeddings, sequence_pairs
from bars.models.layers import MLP, BehaviorRefiner, FeatureEmbedding, MultiInterestExtractor, interest_masks
from bars.models.registry import ModelConfigError, register


def _check_act(name: str, value: str) -> None:
    if value.lower() != "dice":
        check_activation(name, value)


@dataclass(frozen=True)
class DMINConfig:
    embedding_dim: int
    dnn_hidden_units: tuple[int, ...] = (512, 128, 64)
    activation: str = "dice"  # FuxiCTR dnn_activations
    aux_hidden_units: tuple[int, ...] = (100, 50)
    aux_activation: str = "relu"
    dropout: float = 0.0  # FuxiCTR net_dropout: the MLPs' and the attention blocks'
    num_heads: int = 4
    enable_sum_pooling: bool = False
    attention_hidden_units: tuple[int, ...] = (80, 40)
    attention_activation: str = "relu"
    attention_dropout: float = 0.0
    use_pos_emb: bool = True
    pos_emb_dim: int = 8
    use_behavior_refiner: bool = True
    aux_loss_lambda: float = 0.0
    batch_norm: bool = True
    bn_only_once: bool = False
    layer_norm: bool = True
    refiner_mask: Literal["soft", "hard"] = "soft"
    target_fields: tuple[tuple[str, ...], ...] | None = None  # null: pairs read from the spec (share_embedding)
    sequence_fields: tuple[tuple[str, ...], ...] | None = None
    neg_sequence_fields: tuple[tuple[str, ...], ...] | None = None  # the aux loss's negatives, one tuple per pair

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_units("dnn_hidden_units", self.dnn_hidden_units)
        check_units("aux_hidden_units", self.aux_hidden_units)
        check_units("attention_hidden_units", self.attention_hidden_units)
        _check_act("activation", self.activation)
        _check_act("aux_activation", self.aux_activation)
        _check_act("attention_activation", self.attention_activation)
        check_dropout("dropout", self.dropout)
        check_dropout("attention_dropout", self.attention_dropout)
        check_dim("num_heads", self.num_heads)
        if self.use_pos_emb:
            check_dim("pos_emb_dim", self.pos_emb_dim)
        if self.aux_loss_lambda < 0:
            raise ValueError(f"aux_loss_lambda must be >= 0, got {self.aux_loss_lambda}")
        if self.refiner_mask not in ("soft", "hard"):
            raise ValueError(f"refiner_mask must be 'soft' (FuxiCTR) or 'hard', got {self.refiner_mask!r}")
        check_pair_keys(self.target_fields, self.sequence_fields)
        if self.aux_loss_lambda > 0 and self.neg_sequence_fields is None:
            raise ValueError(f"aux_loss_lambda={self.aux_loss_lambda} needs negative behaviour sequences: set "
                             "neg_sequence_fields (one tuple of sequence fields per pair, aligned with "
                             "sequence_fields), or aux_loss_lambda=0")


def _neg_fields(spec: FeatureSpec, cfg: DMINConfig, pairs: list[Pair]) -> list[tuple[str, ...]]:
    if cfg.neg_sequence_fields is None:
        return []
    negs = [tuple(n) for n in cfg.neg_sequence_fields]
    if len(negs) != len(pairs):
        raise ModelConfigError(f"model 'dmin': neg_sequence_fields {negs} must list one tuple per pair; pairs: "
                               f"{[list(s) for _, s in pairs]}")
    for neg, (_, seqs) in zip(negs, pairs, strict=True):
        if len(neg) != len(seqs):
            raise ModelConfigError(f"model 'dmin': neg_sequence_fields {list(neg)} must align with sequence fields "
                                   f"{list(seqs)} (same length)")
        for n, s in zip(neg, seqs, strict=True):
            if n not in spec.names or spec[n].type != "sequence":
                raise ModelConfigError(f"model 'dmin': neg_sequence_fields names {n!r}, which is not a sequence "
                                       f"field of spec {spec.dataset!r} (fields: {spec.names})")
            if spec[n].max_len != spec[s].max_len:
                raise ModelConfigError(f"model 'dmin': negative sequence {n!r} (max_len {spec[n].max_len}) and "
                                       f"{s!r} (max_len {spec[s].max_len}) differ in length")
    return negs


@register("dmin", DMINConfig)
class DMIN(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DMINConfig) -> None:
        super().__init__()
        self.cfg = cfg
        d = cfg.embedding_dim
        self.pairs = sequence_pairs(spec, cfg.target_fields, cfg.sequence_fields, "dmin")
        self.negs = _neg_fields(spec, cfg, self.pairs)
        attended = [n for _, seqs in self.pairs for n in seqs]
        clash = sorted({n for neg in self.negs for n in neg} & set(attended))
        if clash:
            raise ModelConfigError(f"model 'dmin': {clash} are named in both sequence_fields and neg_sequence_fields")
        self.embedding = FeatureEmbedding(spec, d, unpooled=attended + [n for neg in self.negs for n in neg])
        self.refiners = nn.ModuleList() if cfg.use_behavior_refiner else None
        self.extractors = nn.ModuleList()
        self.aux_nets = nn.ModuleList()
        in_dim = self.embedding.output_dim
        for targets, seqs in self.pairs:
            dim = d * len(targets)
            if dim % cfg.num_heads:
                raise ModelConfigError(f"model 'dmin': the width of pair {list(targets)} is {dim} (embedding_dim {d} "
                                       f"x {len(targets)} fields), not divisible by num_heads {cfg.num_heads}")
            length = spec[seqs[0]].max_len
            if self.refiners is not None:
                self.refiners.append(BehaviorRefiner(dim, cfg.num_heads, cfg.attention_dropout, cfg.dropout,
                                                     cfg.layer_norm, cfg.refiner_mask))
            self.extractors.append(MultiInterestExtractor(
                dim, cfg.num_heads, length, cfg.attention_hidden_units, cfg.attention_activation,
                cfg.attention_dropout, cfg.dropout, cfg.layer_norm, cfg.use_pos_emb, cfg.pos_emb_dim))
            if cfg.aux_loss_lambda > 0:
                self.aux_nets.append(self._mlp(2 * dim, cfg.aux_hidden_units, cfg.aux_activation))
            in_dim += dim * (cfg.num_heads + 2 * int(cfg.enable_sum_pooling))
        self.dnn = self._mlp(in_dim, cfg.dnn_hidden_units, cfg.activation)

    def _mlp(self, in_dim: int, units: tuple[int, ...], act: str) -> nn.Sequential:
        """FuxiCTR's MLP_Block: a BatchNorm per hidden layer, or (``bn_only_once``) one on the input."""
        once = self.cfg.batch_norm and self.cfg.bn_only_once
        mlp = MLP(in_dim, units, act, self.cfg.batch_norm and not once, self.cfg.dropout, 1)
        return nn.Sequential(nn.BatchNorm1d(in_dim), mlp) if once else nn.Sequential(mlp)

    def forward(self, batch: dict[str, Tensor]) -> Tensor | dict[str, Tensor]:
        parts: list[Tensor] = []
        aux: list[Tensor] = []
        for i, (pair, extractor) in enumerate(zip(self.pairs, self.extractors, strict=True)):
            t, h = pair_embeddings(self.embedding, batch, pair)
            keep, allowed = interest_masks(batch[pair[1][0]])
            refined = self.refiners[i](h, allowed) if self.refiners is not None else h
            parts.extend(extractor(refined, t, keep, allowed))
            if self.cfg.enable_sum_pooling:  # FuxiCTR's MaskedSumPooling: the padding rows are zero
                total = h.sum(dim=1)
                parts.extend([total, t * total])
            if self.training and self.aux_nets:
                aux.append(self._aux_loss(i, refined, h, keep, batch))
        parts.append(self.embedding.flat(batch))
        logit = logits(self.dnn(torch.cat(parts, dim=-1)))
        if aux:
            return {"logit": logit, "aux_loss": torch.stack(aux).sum()}
        return logit

    def _aux_loss(self, i: int, refined: Tensor, h: Tensor, keep: Tensor, batch: dict[str, Tensor]) -> Tensor:
        neg = torch.cat([self.embedding.lookup(n, batch[n]) for n in self.negs[i]], dim=-1)
        head = refined[:, :-1]
        net = self.aux_nets[i]
        width = 2 * refined.size(-1)
        pos_p = torch.sigmoid(net(torch.cat([head, h[:, 1:]], dim=-1).reshape(-1, width)))
        neg_p = torch.sigmoid(net(torch.cat([head, neg[:, 1:]], dim=-1).reshape(-1, width)))
        m = keep[:, 1:].reshape(-1, 1).to(pos_p.dtype)
        bce = (F.binary_cross_entropy(pos_p, torch.ones_like(pos_p), reduction="none")
               + F.binary_cross_entropy(neg_p, torch.zeros_like(neg_p), reduction="none"))
        return (bce * m).sum() / (2 * m.sum() + 1.0e-9)

    def training_loss(self, outputs: Tensor | Mapping[str, Tensor], labels: Tensor, loss_fn) -> Tensor:
        """The data loss (``train.loss`` on the logit) plus ``aux_loss_lambda`` x the auxiliary loss (training
        mode with ``aux_loss_lambda > 0``; otherwise the data loss alone)."""
        if isinstance(outputs, Tensor):
            return loss_fn(outputs, labels)
        return loss_fn(outputs["logit"], labels) + self.cfg.aux_loss_lambda * outputs["aux_loss"]
