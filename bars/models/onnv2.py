"""ONNv2 (FuxiCTR ``ONNv2``): ONN (Yang et al., Neural Networks 2020) with a field's F operation-aware embeddings
in one wide table row viewed as ``[B, F, F, dim]`` (slot g = its embedding for field g, the diagonal slot its
copy embedding): the same function as ``onn`` with one gather per batch instead of F. How the two differ and the
parameter mapping: bars/models/onn.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from bars.models.onn import ONN, ONNConfig
from bars.models.registry import register


@dataclass(frozen=True)
class ONNv2Config(ONNConfig):
    pass


@register("onnv2", ONNv2Config)
class ONNv2(ONN):
    separate_tables = False
