"""Feature groups: which fields of a field embedding are user, item or context fields.

The groups come from the feature spec (``Feature.group``, declared by the data config's ``data.groups``); a model
that needs them calls :func:`require_groups` first, so a spec without groups stops with an error that says which
config key to set, and :class:`FeatureGroups` gives it per-group views of a ``[B, F, D]`` embedding.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from bars.data.spec import FEATURE_GROUPS, FeatureSpec
from bars.models.registry import ModelConfigError


def require_groups(spec: FeatureSpec, model: str, needed: Sequence[str], *, nonempty: Sequence[str] = ()
                   ) -> dict[str, list[str]]:
    """The spec's groups (``{group: [fields]}``), after checking that it has any and that every group in
    ``nonempty`` has at least one field; otherwise a :class:`ModelConfigError` naming the model, the groups it
    needs and the data config key that declares them (``data.groups``)."""
    groups = spec.groups
    if not groups:
        raise ModelConfigError(
            f"{model} needs feature groups ({', '.join(needed)}), but the feature spec of dataset {spec.dataset!r} "
            f"has none: declare them in the data config (conf/data/<data>.yaml) as data.groups: "
            f"{{user: [...], item: [...], context: [...]}}, with fields from {spec.names}")
    missing = [g for g in nonempty if g not in groups]
    if missing:
        raise ModelConfigError(
            f"{model} needs fields in group(s) {missing}; the feature spec of dataset {spec.dataset!r} has groups "
            f"{groups}: add data.groups.{missing[0]} to the data config")
    return groups


class FeatureGroups(nn.Module):
    """Per-group views of a field embedding ``[B, F, D]`` whose fields are ``field_names`` (in that order, e.g.
    a :class:`FeatureEmbedding`'s ``field_names``), for the groups ``groups`` (in that order):

    - ``select(emb, g)``: the fields of group ``g`` ``[B, F_g, D]`` (in ``field_names`` order);
    - ``sums(emb)``: ``sum_{f in g} e_f`` per group ``[B, G, D]`` (zero for a group without fields);
    - ``bi_interaction(emb)``: FM's pairwise term inside each group, ``sum_{i<j in g} e_i * e_j =
      0.5 * ((sum e)^2 - sum e^2)``, ``[B, G, D]`` (zero for a group with fewer than two fields).
    No parameters."""

    def __init__(self, spec: FeatureSpec, field_names: Sequence[str], groups: Sequence[str] = FEATURE_GROUPS
                 ) -> None:
        super().__init__()
        unknown = [g for g in groups if g not in FEATURE_GROUPS]
        if unknown:
            raise ValueError(f"FeatureGroups: unknown groups {unknown}; groups are {list(FEATURE_GROUPS)}")
        self.groups = tuple(groups)
        self.field_names = tuple(field_names)
        mask = torch.zeros(len(self.groups), len(self.field_names))
        self._positions: dict[str, list[int]] = {}
        for gi, g in enumerate(self.groups):
            pos = [i for i, n in enumerate(self.field_names) if spec[n].group == g]
            self._positions[g] = pos
            mask[gi, pos] = 1.0
            self.register_buffer(f"index_{g}", torch.tensor(pos, dtype=torch.int64), persistent=False)
        self.register_buffer("mask", mask, persistent=False)

    def fields_of(self, group: str) -> list[str]:
        return [self.field_names[i] for i in self._positions[group]]

    def select(self, emb: Tensor, group: str) -> Tensor:
        if group not in self._positions:
            raise KeyError(f"group {group!r} is not one of {self.groups}")
        return emb.index_select(1, getattr(self, f"index_{group}"))

    def sums(self, emb: Tensor) -> Tensor:
        return torch.matmul(self.mask.to(emb.dtype), emb)

    def bi_interaction(self, emb: Tensor) -> Tensor:
        mask = self.mask.to(emb.dtype)
        s = torch.matmul(mask, emb)
        return 0.5 * (s * s - torch.matmul(mask, emb * emb))
