"""OptFS (Lyu et al., WWW 2023, https://github.com/fuyuanlyu/OptFS): feature selection by one learnable gate per
feature value, as two stages over any backbone whose fields go through :class:`FeatureEmbedding`.

1. ``search`` (``search_epochs`` epochs, no early stopping, no LR decay, as ``maskTrainer.py:Trainer.search``):
   the backbone with a :class:`bars.models.layers.FeatureGate` on every embedding, gates soft,
   ``sigmoid(T_e * m)`` with ``T_e = final_temperature ** (e / (search_epochs - 1))`` for epoch ``e`` (0-based;
   learning by continuation), and the objective plus ``sparsity * sum sigmoid(T_e * m)``. The gates train in the
   same Adam as the backbone, outside the L2 regularizers (the official code gives them their own Adam without
   weight decay: Adam is per-parameter, so one optimizer or two is the same update). The backbone's weights
   after ``rewind_epoch`` epochs (before any training when 0) are kept: ``search/rewind.pt``; the gates at the
   end of the search: ``search/gates.pt``. The stage's own metrics: ``features_kept`` (fraction of feature values
   with ``m > 0``), ``features_kept_count``, ``features_total``.
2. ``retrain``: the backbone rewound to ``rewind.pt``, the gates hard (``1[m > 0]``, frozen) and the backbone
   trained under the BARS protocol (early stopping, LR decay, best epoch) from there: its test metrics are the
   method's.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bars.methods import OptFSConfig
from bars.methods.wrapper import BackboneWrapper, BakeError, scale_field_rows
from bars.models.layers import FeatureEmbedding, FeatureGate
from bars.train import EpochLog, TrainConfig, save_checkpoint, seed_everything

__all__ = ["STAGES", "GatedModel", "RetrainStage", "SearchStage", "final_model", "make_stage"]

STAGES = ("search", "retrain")


class GatedModel(BackboneWrapper):
    """``backbone`` with ``gate`` hooked on its embeddings. The trainer sees the backbone's parameter groups (the
    gates are ``unregularized_parameters``), its tasks and its own loss, plus ``sparsity * gate.penalty()`` while
    the gates are soft."""

    def __init__(self, backbone: nn.Module, gate: FeatureGate, sparsity: float = 0.0) -> None:
        super().__init__(backbone)
        self.gate = gate
        self.sparsity = float(sparsity)
        self._handles = gate.attach(backbone)

    def unregularized_parameters(self) -> list[nn.Parameter]:
        return [self.gate.weight]

    def init_bars_(self, embedding_std: float) -> None:
        self.init_backbone_(embedding_std)
        self.gate.reset_parameters()

    def training_loss(self, outputs: Any, labels: Tensor, loss_fn: Any) -> Tensor:
        loss = super().training_loss(outputs, labels, loss_fn)
        if self.sparsity > 0 and not self.gate.hard and self.gate.weight.requires_grad:
            loss = loss + self.sparsity * self.gate.penalty()
        return loss

    def _fold(self, folded: set[tuple[int, int]]) -> int:
        """Each gated field's rows of every table times its values' hard gates (``scale * 1[m > 0]``)."""
        if not self.gate.hard:
            raise BakeError("OptFS: only hard gates (the retrain's) fold into the tables")
        removed = 0
        with torch.no_grad():
            for emb in self.backbone.modules():
                if not isinstance(emb, FeatureEmbedding):
                    continue
                for name in emb.field_names:
                    if name in self.gate.offsets and emb._vocab.get(name) is not None:
                        lo = self.gate.offsets[name]
                        rows = torch.arange(lo, lo + emb._vocab[name] - 1, device=self.gate.weight.device)
                        removed += scale_field_rows(emb, name, self.gate(rows).unsqueeze(-1), folded)
        return removed


def gate_metrics(gate: FeatureGate) -> dict[str, float]:
    kept = int(gate.kept().sum())
    return {"features_kept": kept / gate.num_features, "features_kept_count": float(kept),
            "features_total": float(gate.num_features)}


def _cpu_state(module: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}


@dataclasses.dataclass
class SearchStage:
    cfg: OptFSConfig
    folder: Path
    name: str = "search"
    init: bool = False  # wrap initialises (BARS init, same seed as plain training) so the epoch-0 weights exist
    model: GatedModel | None = None
    rewind: dict[str, Tensor] | None = None
    final: dict[str, Tensor] | None = None

    def temperature(self, epoch0: int) -> float:
        """The temperature of search epoch ``epoch0`` (0-based): final ** (epoch0 / (epochs - 1))."""
        return float(self.cfg.final_temperature) ** (epoch0 / (self.cfg.search_epochs - 1))

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        e = self.cfg.search_epochs
        return dataclasses.replace(train_cfg, max_epochs=e, lr_decay_factor=1.0, max_strikes=e + 1)

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> GatedModel:
        seed_everything(seed)  # as fit does before it initialises: the backbone starts where plain training does
        gate = FeatureGate(spec, self.cfg.gate_init)
        self.model = GatedModel(backbone, gate, self.cfg.sparsity)
        self.model.init_bars_(train_cfg.embedding_init_std)
        gate.temperature = self.temperature(0)
        if self.cfg.rewind_epoch == 0:
            self.rewind = _cpu_state(backbone)
        return self.model

    def on_epoch(self, log: EpochLog) -> None:
        assert self.model is not None
        if log.epoch == self.cfg.rewind_epoch:
            self.rewind = _cpu_state(self.model.backbone)
        if log.epoch == self.cfg.search_epochs:
            self.final = _cpu_state(self.model)
        else:
            self.model.gate.temperature = self.temperature(log.epoch)

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None and self.rewind is not None and self.final is not None
        self.model.load_state_dict(self.final)  # fit restored its best epoch: the search ends at its last
        gate = self.model.gate
        out = self.folder / self.name
        save_checkpoint({"weight": gate.weight}, out / "gates.pt")
        save_checkpoint(self.rewind, out / "rewind.pt")
        return {**gate_metrics(gate), "temperature": gate.temperature}


@dataclasses.dataclass
class RetrainStage:
    cfg: OptFSConfig
    folder: Path
    name: str = "retrain"
    init: bool = False  # the rewound weights
    model: GatedModel | None = None

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        return train_cfg

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> GatedModel:
        search = self.folder / "search"
        gate = FeatureGate(spec, self.cfg.gate_init)
        gates = torch.load(search / "gates.pt", map_location="cpu", weights_only=True)
        rewind = torch.load(search / "rewind.pt", map_location="cpu", weights_only=True)
        with torch.no_grad():
            gate.weight.copy_(gates["weight"])
        gate.weight.requires_grad_(False)
        gate.hard = True
        backbone.load_state_dict(rewind, strict=True)
        self.model = GatedModel(backbone, gate, 0.0)
        return self.model

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None
        return {**gate_metrics(self.model.gate), **self.model.bake().metrics()}


def final_model(cfg: OptFSConfig, backbone: nn.Module, spec: Any) -> GatedModel:
    """The retrain stage's model as its checkpoint holds it (gates hard and frozen): load the final stage's
    ``best.pt`` into it, then :meth:`GatedModel.bake` (bars.recorded)."""
    gate = FeatureGate(spec, cfg.gate_init)
    gate.weight.requires_grad_(False)
    gate.hard = True
    return GatedModel(backbone, gate, 0.0)


def make_stage(name: str, cfg: OptFSConfig, folder: Path) -> SearchStage | RetrainStage:
    if name == "search":
        return SearchStage(cfg, folder)
    if name == "retrain":
        return RetrainStage(cfg, folder)
    raise ValueError(f"OptFS has no stage {name!r}; stages: {list(STAGES)}")
