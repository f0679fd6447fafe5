"""ONN: Operation-aware Neural Network (Yang, Xu, et al., "Operation-aware Neural Networks for User Response
Prediction", Neural Networks 2020; also NFFM / DeepFFM).

Every field keeps F embeddings of ``embedding_dim``: one "copy" embedding used on its own and one per other field
for the pairwise inner products (operation-aware = field-aware per operation). With ``c_f`` field f's copy
embedding and ``v_{i,j}`` field i's embedding for field j:

    x = [c_1, ..., c_F, <v_{1,2}, v_{2,1}>, <v_{1,3}, v_{3,1}>, ..., <v_{F-1,F}, v_{F,F-1}>]   (F*D + F(F-1)/2)
    logit = MLP(x)                                   (hidden layers, then a Linear to 1)

ONN and ONNv2 compute the same function; they differ in the table layout, as in FuxiCTR:
- ``onn`` (FuxiCTR ``ONN``): F separate embedding modules of width ``embedding_dim`` (``embedding.tables[s]`` ->
  ``embedding_layers[s]``): module 0 holds every field's copy embedding; module ``1 + s`` holds field f's
  embedding for field ``s`` if ``s < f`` else ``s + 1``. Numeric vectors are initialised with fan (1, dim).
- ``onnv2`` (FuxiCTR ``ONNv2``, bars/models/onnv2.py): one embedding of width ``F * embedding_dim``
  (``embedding.embedding`` -> ``embedding_layer``) viewed as ``[B, F, F, dim]``: slot g of field f is its
  embedding for field g, slot f (the diagonal) its copy embedding; one gather instead of F; numeric vectors'
  fan is (1, F * dim). FuxiCTR's ONNv2 computes all F x F products and keeps the upper triangle; we compute the
  F(F-1)/2 needed ones (same values).
Both: ``dnn.net.*`` -> ``dnn.mlp.*``. FuxiCTR's ONN also accepts an ``embedding_dropout`` argument that it
never uses; we have no such key.

Memory: ``F * rows * dim * 4`` bytes of parameters (Adam training needs ~4x); checked before allocation against
``max_embedding_bytes`` and the machine's available memory (bars.models.layers.field_aware).
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_deep, check_dim, logits
from bars.models.ffm import DEFAULT_MAX_EMBEDDING_BYTES
from bars.models.layers import (
    MLP,
    FieldAwareEmbedding,
    FieldAwareProducts,
    SlotSelect,
    onn_slot,
    onnv2_slot,
)
from bars.models.registry import ModelConfigError, register


@dataclass(frozen=True)
class ONNConfig:
    embedding_dim: int
    hidden_units: tuple[int, ...] = (64, 64, 64)
    activation: str = "relu"
    batch_norm: bool = False
    dropout: float = 0.0
    max_embedding_bytes: int = DEFAULT_MAX_EMBEDDING_BYTES  # stop before allocating more (parameters only)

    def __post_init__(self) -> None:
        check_deep(self, "hidden_units")
        check_dim("max_embedding_bytes", self.max_embedding_bytes)


@register("onn", ONNConfig)
class ONN(nn.Module):
    separate_tables = True

    def __init__(self, spec: FeatureSpec, cfg: ONNConfig) -> None:
        super().__init__()
        self.cfg = cfg
        f = len(spec.features)
        if f < 2:
            raise ModelConfigError(f"{type(self).__name__.lower()}: needs at least 2 fields, the spec has {f}")
        slot = onn_slot if self.separate_tables else onnv2_slot
        self.embedding = FieldAwareEmbedding(
            spec,
            cfg.embedding_dim,
            num_slots=f,
            separate_tables=self.separate_tables,
            max_bytes=cfg.max_embedding_bytes,
            model=type(self).__name__.lower(),
        )
        self.copy = SlotSelect(f, f, slot)
        self.products = FieldAwareProducts(f, f, slot)
        input_dim = f * cfg.embedding_dim + self.products.num_pairs
        self.dnn = MLP(input_dim, cfg.hidden_units, cfg.activation, cfg.batch_norm, cfg.dropout, output_dim=1)

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        parts = self.embedding.parts(batch)  # F tables' [B, F, D] (onn) or one [B, F * F, D] (onnv2)
        x = self.products.with_selected(parts, self.copy, self.embedding.slots_first_layout)
        return logits(self.dnn(x))
