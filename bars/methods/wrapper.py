"""What every method's model wrapper shares: a registered backbone the trainer sees through the wrapper (its
parameter groups, tasks, BARS initialisation and own loss), with the method's layer hooked on its embeddings
(OptFS's :class:`~bars.models.layers.FeatureGate`, DNIS's :class:`~bars.models.layers.DimensionSelection`)."""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn

from bars.models.layers import init_bars_, split_parameters
from bars.objective import data_loss

__all__ = ["BackboneWrapper"]


class BackboneWrapper(nn.Module):
    """``backbone`` behind a method: forward, parameter groups, tasks, initialisation and loss are the
    backbone's; subclasses add their layer and its parameters."""

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
