"""FFM: Field-aware Factorization Machine (Juan, Zhuang, Chin, Lin, "Field-aware Factorization Machines for CTR
Prediction", RecSys 2016).

    logit = b + sum_f w_f + sum_{i<j} <v_{i,j}, v_{j,i}>

where ``v_{i,j}`` is field i's embedding for meeting field j: every field keeps F - 1 embeddings of
``embedding_dim``, one per other field (the FFM memory cost: F - 1 times an FM's tables).

FFM and FFMv2 compute the same function; they differ in how the tables are laid out, as in FuxiCTR:
- ``ffm`` (FuxiCTR ``FFM``): F - 1 separate embedding modules of width ``embedding_dim``; module ``s`` holds, for
  every field f, its embedding for field ``s`` if ``s < f`` else ``s + 1`` (``embedding.tables[s]`` ->
  ``embedding_layers[s]``). Numeric fields' vectors are initialised xavier-normal with fan (1, dim).
- ``ffmv2`` (FuxiCTR ``FFMv2``, bars/models/ffmv2.py): one embedding of width ``(F - 1) * embedding_dim`` per value
  (``embedding.embedding`` -> ``embedding_layer``), slot ``s`` = columns ``s*dim .. (s+1)*dim``, same slot rule;
  one gather per batch instead of F - 1 (faster); numeric vectors' fan is (1, (F - 1) * dim).
Both: the first-order term ``lr`` -> ``lr_layer`` (a dim-1 embedding + bias). Every table is an embedding
(embedding regularizer); the bias is the only net parameter. FuxiCTR's single ``regularizer`` key sets both
regularizers to one value: use ``train.embedding_regularizer`` (and ``train.net_regularizer``) here.

Memory: ``(F - 1) * rows * dim * 4`` bytes of parameters (Adam training needs ~4x); checked before allocation
against ``max_embedding_bytes`` and the machine's available memory (bars.models.layers.field_aware).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_dim, logits
from bars.models.layers import FieldAwareEmbedding, FieldAwareProducts, LogisticRegression, ffm_slot
from bars.models.registry import ModelConfigError, register

DEFAULT_MAX_EMBEDDING_BYTES = 4 * 2**30


@dataclass(frozen=True)
class FFMConfig:
    embedding_dim: int
    max_embedding_bytes: int = DEFAULT_MAX_EMBEDDING_BYTES  # stop before allocating more (parameters only)

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        check_dim("max_embedding_bytes", self.max_embedding_bytes)


@register("ffm", FFMConfig)
class FFM(nn.Module):
    separate_tables = True

    def __init__(self, spec: FeatureSpec, cfg: FFMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = len(spec.features)
        if f < 2:
            raise ModelConfigError(f"{type(self).__name__.lower()}: needs at least 2 fields, the spec has {f}")
        self.embedding = FieldAwareEmbedding(  # first: its size check runs before any table is allocated
            spec,
            cfg.embedding_dim,
            num_slots=f - 1,
            separate_tables=self.separate_tables,
            max_bytes=cfg.max_embedding_bytes,
            model=type(self).__name__.lower(),
        )
        self.products = FieldAwareProducts(f, f - 1, ffm_slot)
        self.lr = LogisticRegression(spec, use_bias=True)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts = self.embedding.parts(batch)  # F - 1 tables' [B, F, D] (ffm) or one [B, F * (F - 1), D] (ffmv2)
        pairs = self.products.dot_sum(parts, self.embedding.slots_first_layout)  # [B]: sum of <v_ij, v_ji>
        return logits(self.lr(batch)) + pairs
