"""What every method's model wrapper shares: a registered backbone the trainer sees through the wrapper (its
parameter groups, tasks, BARS initialisation and own loss), with the method's layer hooked on its embeddings
(OptFS's :class:`~bars.models.layers.FeatureGate`, DNIS's :class:`~bars.models.layers.DimensionSelection`), and
the baking of a trained wrapper into the plain backbone that scores the same (``bars predict`` / ``bars export``
of a method run, the run's ``model_bytes`` and ``params_effective``)."""

from __future__ import annotations

import copy
import io
from collections.abc import Iterator, Mapping
from typing import Any

import torch
from torch import Tensor, nn

from bars.models.layers import FeatureEmbedding, init_bars_, split_parameters
from bars.objective import data_loss

__all__ = ["BackboneWrapper", "BakeError", "Baked", "ValidBatches", "scale_field_rows", "state_bytes",
           "train_columns"]


def train_columns(split: Any, names: list[str]) -> dict[str, Tensor]:
    """The field indices of ``names`` over every row of ``split`` (in memory, or read batch by batch)."""
    feats = getattr(split, "features", None)
    if isinstance(feats, Mapping) and all(n in feats for n in names):
        return {n: feats[n] for n in names}
    parts: dict[str, list[Tensor]] = {n: [] for n in names}
    for xb, _ in split.batches(65536, shuffle=False, seed=0, device=torch.device("cpu")):
        for n in names:
            parts[n].append(xb[n])
    return {n: torch.cat(v) for n, v in parts.items()}


class ValidBatches:
    """The validation split's batches, endlessly, reshuffled every pass (seeded by the run's seed and the pass
    number): what a first-order bi-level search steps its architecture weights on (DNIS's ``alpha``, OptInter's
    ``arch_data=valid``). ``all_labels``: every task's labels (a multi-task backbone)."""

    def __init__(self, valid: Any, batch_size: int, seed: int, *, all_labels: bool = False) -> None:
        self.valid = valid
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.all_labels = bool(all_labels)
        self.passes = 0
        self._it: Iterator[tuple[dict[str, Tensor], Tensor]] | None = None

    def next(self, device: torch.device) -> tuple[dict[str, Tensor], Tensor]:
        while True:
            if self._it is None:
                kw = {"all_labels": True} if self.all_labels else {}
                self._it = iter(self.valid.batches(self.batch_size, shuffle=True, device=device,
                                                   seed=(self.seed * 1_000_003 + 7919 * (self.passes + 1)) % 2**63,
                                                   **kw))
                self.passes += 1
            try:
                return next(self._it)
            except StopIteration:
                self._it = None


class BakeError(ValueError):
    """The method's selection cannot be folded into the backbone's tables (a shared or pretrained table)."""


class Baked:
    """The outcome of :meth:`BackboneWrapper.bake`: ``model`` (the plain backbone, masks folded in) and
    ``removed`` (table entries the folding set to zero: what the method's masks take away)."""

    def __init__(self, model: nn.Module, removed: int) -> None:
        self.model = model
        self.removed = int(removed)

    @property
    def params_effective(self) -> int:
        """The backbone's parameters less the table entries the masks zero (see docs/methods.md "Size")."""
        return int(sum(p.numel() for p in self.model.parameters())) - self.removed

    def metrics(self) -> dict[str, float]:
        return {"params_effective": float(self.params_effective), "params_removed": float(self.removed),
                "model_bytes": float(state_bytes(self.model))}


def state_bytes(model: nn.Module) -> int:
    """Bytes of ``model``'s state dict serialised as ``bars.train.save_checkpoint`` writes a checkpoint."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, buf)
    return buf.getbuffer().nbytes


def scale_field_rows(emb: FeatureEmbedding, name: str, factor: Tensor, folded: set[tuple[int, int]]) -> int:
    """Multiply the rows of categorical field ``name`` in ``emb``'s table (index ``i >= 1`` at row
    ``offset + i - 1``) by ``factor`` (``[vocab - 1, 1]`` per value or ``[dim]`` per dimension), in place; returns
    how many table entries became zero by a zero factor. ``folded`` holds the (table, first row) pairs already
    folded: a table two fields read (``share_embedding``) or a pretrained one cannot take a per-field factor."""
    if name in emb.pcat_names or emb.weight is None:
        raise BakeError(f"field {name!r} reads a pretrained table: its selection cannot be folded into it")
    owner = emb._owner[name]
    readers = [n for n, o in emb._owner.items() if o == owner]
    if len(readers) > 1:
        raise BakeError(f"fields {readers} read one table ({owner!r}): a per-field selection cannot be folded into it")
    start = emb._offset[name]
    key = (id(emb.weight), start)
    if key in folded:
        raise BakeError(f"field {name!r}: its table rows are folded twice (a table shared between embeddings)")
    folded.add(key)
    n = emb._vocab[name] - 1
    with torch.no_grad():
        rows = emb.weight[start:start + n]
        f = factor.to(rows.dtype)
        rows.mul_(f)
        return int((f == 0).expand_as(rows).sum())


class BackboneWrapper(nn.Module):
    """``backbone`` behind a method: forward, parameter groups, tasks, initialisation and loss are the
    backbone's; subclasses add their layer and its parameters, and :meth:`_fold` (the final selection folded
    into the backbone's tables) for :meth:`bake`."""

    _handles: list[Any]

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        if getattr(backbone, "tasks", ()):
            self.tasks = tuple(backbone.tasks)

    def forward(self, batch: dict[str, Tensor]) -> Any:
        return self.backbone(batch)

    def split_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        own = getattr(self.backbone, "split_parameters", None)
        return own() if callable(own) else split_parameters(self.backbone)

    def init_backbone_(self, embedding_std: float) -> None:
        """The backbone's BARS initialisation (its own ``init_bars_`` where it has one)."""
        own = getattr(self.backbone, "init_bars_", None)
        if callable(own):
            own(embedding_std)
        else:
            init_bars_(self.backbone, embedding_std)

    def training_loss(self, outputs: Any, labels: Tensor, loss_fn: Any) -> Tensor:
        return data_loss(self.backbone, outputs, labels, loss_fn)

    def _fold(self, folded: set[tuple[int, int]]) -> int:  # pragma: no cover - each method's own
        raise BakeError(f"{type(self).__name__} cannot fold its selection into the backbone")

    def bake(self) -> Baked:
        """A copy of the backbone that scores exactly as this wrapper in eval mode with its selection final
        (hard): the selection multiplied into the embedding tables (a lookup then a product is the product of
        the looked-up row, so the scores are bitwise the same), the hooks removed. The wrapper is unchanged."""
        twin = copy.deepcopy(self)  # the copied embeddings still carry the hooked forward: removed below
        for h in twin._handles:
            h.remove()
        removed = twin._fold(set())
        return Baked(twin.backbone.eval(), removed)
