"""What APG_DCNv2 and APG_DeepFM share (private: not a model module): their APG keys, checked once, and the
condition vector of a batch."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dropout, check_units
from bars.models.layers import APGMLP, FeatureEmbedding
from bars.models.registry import ModelConfigError

# The APG keys (FuxiCTR names in brackets): hypernet_hidden_units / hypernet_activation / hypernet_dropout
# [hypernet_config: hidden_units, hidden_activations, dropout_rates], condition_features, condition_mode,
# new_condition_emb, rank_k, overparam_p, generate_bias. rank_k / overparam_p: [] = FuxiCTR None (full-rank
# generation / no over-parameterisation), [k] = k for every hidden layer (FuxiCTR's int), [k1, k2, ...] = one per
# hidden layer (FuxiCTR's list). overparam_p has no effect on a layer generated at full rank (as in FuxiCTR).


def check_apg(cfg) -> None:
    check_units("hypernet_hidden_units", cfg.hypernet_hidden_units)
    check_activation("hypernet_activation", cfg.hypernet_activation)
    check_dropout("hypernet_dropout", cfg.hypernet_dropout)
    check_units("rank_k", cfg.rank_k)
    check_units("overparam_p", cfg.overparam_p)
    if cfg.condition_mode == "group-wise" and not cfg.condition_features:
        raise ValueError("condition_mode 'group-wise' needs condition_features (the fields whose embeddings "
                         "condition the generated weights)")
    if len(set(cfg.condition_features)) != len(cfg.condition_features):
        raise ValueError(f"condition_features {list(cfg.condition_features)} names a field twice")


def per_layer(values: Sequence[int], n: int, key: str) -> list[int | None]:
    """``[]`` -> None per layer, ``[k]`` -> k per layer, ``n`` values -> one per layer; else an error naming ``key``."""
    if not values:
        return [None] * n
    if len(values) == 1:
        return [values[0]] * n
    if len(values) != n:
        raise ModelConfigError(f"{key} {list(values)}: give one value (every layer) or one per hidden layer ({n})")
    return list(values)


class Conditions(nn.Module):
    """The group-wise condition ``z [B, len(condition_features) * dim]``: the condition fields' embeddings (spec
    order, as FuxiCTR's dict2tensor) from the model's own table, or from a table of their own
    (``new_condition_emb``). None in self-wise mode."""

    def __init__(self, spec: FeatureSpec, cfg, embedding: FeatureEmbedding, model: str) -> None:
        super().__init__()
        self.mode = cfg.condition_mode
        unknown = [n for n in cfg.condition_features if n not in spec.names]
        if unknown:
            raise ModelConfigError(f"{model} condition_features: fields {unknown} are not in the spec; "
                                   f"fields: {spec.names}")
        self.dim = len(cfg.condition_features) * cfg.embedding_dim
        self.own = None
        self.register_buffer("index", None, persistent=False)
        if self.mode == "group-wise":
            if cfg.new_condition_emb:
                self.own = FeatureEmbedding(spec, cfg.embedding_dim, fields=list(cfg.condition_features))
            else:
                pos = [i for i, n in enumerate(embedding.field_names) if n in set(cfg.condition_features)]
                self.index = torch.tensor(pos, dtype=torch.int64)

    def forward(self, batch: dict[str, Tensor], emb: Tensor) -> Tensor | None:
        if self.mode == "self-wise":
            return None
        if self.own is not None:
            return self.own.flat(batch)
        return emb.index_select(1, self.index).flatten(start_dim=1)


def apg_mlp(cfg, input_dim: int, hidden_units: Sequence[int], condition_dim: int, output_dim: int | None,
            model: str, units_key: str) -> APGMLP:
    n = len(hidden_units)
    ranks = per_layer(cfg.rank_k, n, "rank_k")
    overparams = [p if r is not None else None for r, p in zip(ranks, per_layer(cfg.overparam_p, n, "overparam_p"),
                                                                strict=True)]
    try:
        return APGMLP(input_dim, hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, output_dim,
                      condition_mode=cfg.condition_mode, condition_dim=condition_dim or None, rank_k=ranks,
                      overparam_p=overparams, generate_bias=cfg.generate_bias,
                      hypernet_hidden_units=cfg.hypernet_hidden_units, hypernet_activation=cfg.hypernet_activation,
                      hypernet_dropout=cfg.hypernet_dropout)
    except ValueError as e:
        raise ModelConfigError(f"{model} ({units_key} {list(hidden_units)}): {e}") from None
