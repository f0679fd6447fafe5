"""OptFS's feature gate (Lyu et al., WWW 2023): one learnable gate per feature value, applied to every field
embedding a model computes, without editing the model.

A *feature* is one value of one categorical field (OptFS's "feature id" in its one global table). The gate of
feature ``i`` is ``scale * sigmoid(temperature * m_i)`` while searching and ``scale * 1[m_i > 0]`` once the
mask is hard (OptFS's ``ticket``), with ``scale = 1 / sigmoid(init)`` so that a fresh gate is exactly 1 at
temperature 1 (OptFS ``modules/mask.py:MaskEmbedding.compute_mask``). Its sparsity penalty is
``sum_i sigmoid(temperature * m_i)`` over every feature value (``MaskEmbedding.reg``).

:meth:`FeatureGate.attach` hooks every :class:`FeatureEmbedding` of a model (the shared embedding and, e.g.,
the first-order LR term's own dim-1 tables) by replacing that instance's ``forward`` (not a forward hook: models
that call ``embedding.flat(batch)`` reach ``forward`` without ``__call__``, where hooks run): the embedding of field ``f`` for value ``i`` is multiplied by
feature ``(f, i)``'s gate, so a feature closed by the gate is removed from every part of the model. Gates are
per field (a field that reads another field's table through ``share_embedding`` still has gates of its own).
Numeric fields, pretrained tables and sequence fields are not gated (they pass unchanged): OptFS selects among
categorical values only (Criteo's numerics are bucketised into categorical values there).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from bars.data.spec import FeatureSpec
from bars.models.layers.embedding import FeatureEmbedding

__all__ = ["FeatureGate"]


class FeatureGate(nn.Module):
    """Gates ``weight [1 + sum(vocab_size - 1), 1]`` over the categorical fields of ``spec`` (row 0: padding,
    never counted). ``temperature`` (float) and ``hard`` (bool) are plain attributes the search sets."""

    def __init__(self, spec: FeatureSpec, init: float = 0.5) -> None:
        super().__init__()
        if not math.isfinite(init):
            raise ValueError(f"FeatureGate: init must be finite, got {init!r}")
        self.init_value = float(init)
        self.scale = 1.0 / (1.0 / (1.0 + math.exp(-self.init_value)))
        self.field_names = tuple(f.name for f in spec.features if f.type == "categorical")
        if not self.field_names:
            raise ValueError("FeatureGate: the dataset has no categorical field to gate")
        self.offsets: dict[str, int] = {}
        rows = 1
        for name in self.field_names:
            self.offsets[name] = rows
            rows += spec[name].vocab_size - 1
        self.weight = nn.Parameter(torch.empty(rows, 1))
        self.temperature = 1.0
        self.hard = False
        self.reset_parameters()

    @property
    def num_features(self) -> int:
        """Feature values that can be selected (padding excluded)."""
        return self.weight.shape[0] - 1

    def reset_parameters(self) -> None:
        with torch.no_grad():
            self.weight.fill_(self.init_value)

    def forward(self, rows: Tensor) -> Tensor:
        """Gates of global feature rows ``rows`` (any shape; 0 = padding): same shape, float."""
        m = F.embedding(rows, self.weight).squeeze(-1)
        mask = (m > 0).to(m.dtype) if self.hard else torch.sigmoid(self.temperature * m)
        return mask * self.scale

    def penalty(self) -> Tensor:
        """OptFS's sparsity term ``sum sigmoid(temperature * m)`` over every feature value (no padding row)."""
        return torch.sigmoid(self.temperature * self.weight[1:]).sum()

    @torch.no_grad()
    def kept(self) -> Tensor:
        """Bool ``[num_features]``: the features the hard mask keeps (``m > 0``)."""
        return self.weight[1:, 0] > 0

    def kept_per_field(self) -> dict[str, int]:
        keep = self.kept()
        return {n: int(keep[self.offsets[n] - 1: self.offsets[n] - 1 + self._size(n)].sum()) for n in self.field_names}

    def _size(self, name: str) -> int:
        i = self.field_names.index(name)
        end = self.offsets[self.field_names[i + 1]] if i + 1 < len(self.field_names) else self.weight.shape[0]
        return end - self.offsets[name]

    def attach(self, model: nn.Module) -> list[_Patched]:
        """Gate the output of every :class:`FeatureEmbedding` in ``model`` (its ``forward``, whether called through
        the module or by :meth:`FeatureEmbedding.flat`); returns handles whose ``remove()`` restores it. Raises when
        the model has none or no embedding serves a gated field."""
        handles = patch_embeddings(model, self._hook_for)
        if not handles:
            raise ValueError(f"FeatureGate: {type(model).__name__} has no FeatureEmbedding over a categorical field; "
                             "the feature gate hooks the shared embedding layer")
        return handles

    def _hook_for(self, emb: FeatureEmbedding) -> Callable[..., Tensor] | None:
        names = [n for n in emb.field_names if n in self.offsets and emb._vocab.get(n) is not None]
        if not names:
            return None
        positions = [emb.field_names.index(n) for n in names]
        offsets = torch.tensor([self.offsets[n] - 1 for n in names], dtype=torch.int64)
        everything = positions == list(range(emb.num_fields))
        pos = torch.tensor(positions, dtype=torch.int64)
        cache: dict[torch.device, tuple[Tensor, Tensor]] = {}

        def hook(batch: dict[str, Tensor], out: Tensor) -> Tensor:
            dev = out.device
            if dev not in cache:
                cache[dev] = (offsets.to(dev), pos.to(dev))
            off, p = cache[dev]
            idx = torch.stack([batch[n] for n in names], dim=1).long()  # [B, Fg]
            gates = self(torch.where(idx > 0, idx + off, 0)).to(out.dtype)  # [B, Fg]
            if everything:
                return out * gates.unsqueeze(-1)
            full = torch.ones(out.shape[:2], dtype=out.dtype, device=dev)
            full = full.index_copy(1, p, gates)
            return out * full.unsqueeze(-1)

        return hook


def patch_embeddings(model: nn.Module, hook_for: Callable[[FeatureEmbedding], Callable[..., Tensor] | None],
                     width: int | None = None) -> list[_Patched]:
    """Patch the ``forward`` of every :class:`FeatureEmbedding` of ``model`` (of width ``width`` when given) for
    which ``hook_for`` returns a hook ``(batch, output) -> output``; returns the handles (``remove()`` undoes)."""
    handles = []
    for m in model.modules():
        if isinstance(m, FeatureEmbedding) and (width is None or m.dim == width):
            hook = hook_for(m)
            if hook is not None:
                handles.append(_Patched(m, hook))
    return handles


class _Patched:
    """``emb.forward`` replaced by ``gate(batch, original forward(batch))`` on that instance; ``remove()`` undoes it."""

    def __init__(self, emb: FeatureEmbedding, gate: Callable[[dict[str, Tensor], Tensor], Tensor]) -> None:
        if "forward" in vars(emb):
            raise ValueError("FeatureGate: this FeatureEmbedding is already gated")
        original = emb.forward
        self.emb = emb

        def forward(batch: dict[str, Tensor]) -> Any:
            return gate(batch, original(batch))

        emb.forward = forward  # type: ignore[method-assign]

    def remove(self) -> None:
        vars(self.emb).pop("forward", None)
