"""DSSM (Huang et al., "Learning Deep Structured Semantic Models for Web Search using Clickthrough Data",
CIKM 2013), as a two-tower CTR model: an MLP tower over the user group's field embeddings, one over the item
group's, and the dot product of their outputs.

    u = MLP_user(flat E_user),  v = MLP_item(flat E_item)   (last layer: a Linear, no activation)
    logit = <u, v>

Feature groups come from the feature spec (``data.groups`` in the data config): the user and item groups must
have fields, else building stops with an error naming that key. Fields of the context group (or of no group)
are not inputs of DSSM, as in FuxiCTR, which embeds them but never reads them (BARS's Frappe_x1 runs put the
context fields into the user group instead, and so does conf/data/frappe_x1.yaml); here only the user and item
fields get embedding rows.

Config -> FuxiCTR ``DSSM`` (model_zoo/DSSM/src/DSSM.py; BARS ran v1.2.1, the same computation):
user_tower_units / item_tower_units (the last width is the output; both must agree for the dot product),
``user_tower_activation`` / ``item_tower_activation`` = *_tower_activations, user_tower_dropout /
item_tower_dropout, batch_norm (both towers' hidden layers). Parameters: ``embedding.weight`` = embedding_layer
(user and item fields only), ``user_tower.net`` / ``item_tower.net`` = user_tower.mlp / item_tower.mlp.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models._common import check_activation, check_dim, check_dropout, check_units
from bars.models.layers import MLP, FeatureEmbedding, FeatureGroups, require_groups
from bars.models.registry import register


@dataclass(frozen=True)
class DSSMConfig:
    embedding_dim: int
    user_tower_units: tuple[int, ...] = (64, 64, 64)
    item_tower_units: tuple[int, ...] = (64, 64, 64)
    user_tower_activation: str = "relu"
    item_tower_activation: str = "relu"
    user_tower_dropout: float = 0.0
    item_tower_dropout: float = 0.0
    batch_norm: bool = False

    def __post_init__(self) -> None:
        check_dim("embedding_dim", self.embedding_dim)
        for side in ("user", "item"):
            units = getattr(self, f"{side}_tower_units")
            check_units(f"{side}_tower_units", units)
            if not units:
                raise ValueError(f"{side}_tower_units must not be empty (its last width is the tower's output)")
            check_activation(f"{side}_tower_activation", getattr(self, f"{side}_tower_activation"))
            check_dropout(f"{side}_tower_dropout", getattr(self, f"{side}_tower_dropout"))
        if self.user_tower_units[-1] != self.item_tower_units[-1]:
            raise ValueError(f"the towers' output widths differ (user_tower_units[-1] = {self.user_tower_units[-1]}, "
                             f"item_tower_units[-1] = {self.item_tower_units[-1]}): their dot product needs equal widths")


@register("dssm", DSSMConfig)
class DSSM(nn.Module):
    def __init__(self, spec: FeatureSpec, cfg: DSSMConfig) -> None:
        super().__init__()
        self.cfg = cfg
        groups = require_groups(spec, "dssm", ("user", "item"), nonempty=("user", "item"))
        self.embedding = FeatureEmbedding(spec, cfg.embedding_dim, fields=groups["user"] + groups["item"])
        self.groups = FeatureGroups(spec, self.embedding.field_names, ("user", "item"))
        d = cfg.embedding_dim
        self.user_tower = MLP(d * len(groups["user"]), cfg.user_tower_units[:-1], cfg.user_tower_activation,
                              cfg.batch_norm, cfg.user_tower_dropout, cfg.user_tower_units[-1])
        self.item_tower = MLP(d * len(groups["item"]), cfg.item_tower_units[:-1], cfg.item_tower_activation,
                              cfg.batch_norm, cfg.item_tower_dropout, cfg.item_tower_units[-1])

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        emb = self.embedding(batch)
        u = self.user_tower(self.groups.select(emb, "user").flatten(start_dim=1))
        v = self.item_tower(self.groups.select(emb, "item").flatten(start_dim=1))
        return (u * v).sum(dim=-1)
