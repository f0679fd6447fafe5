"""FFMv2 (FuxiCTR ``FFMv2``): FFM (Juan et al., RecSys 2016) with all F - 1 field-aware embeddings of a value in
one wide table row, ``[B, F, (F - 1) * dim]`` viewed as ``[B, F, F - 1, dim]``: the same function as ``ffm`` with
one gather per batch instead of F - 1. How the two differ (layout, numeric-vector initialisation fan) and the
parameter mapping: bars/models/ffm.py. BARS ran its FFM rows on Avazu_x1 and Criteo_x1 with this variant.
"""

from __future__ import annotations

from dataclasses import dataclass

from bars.models.ffm import FFM, FFMConfig
from bars.models.registry import register


@dataclass(frozen=True)
class FFMv2Config(FFMConfig):
    pass


@register("ffmv2", FFMv2Config)
class FFMv2(FFM):
    separate_tables = False
