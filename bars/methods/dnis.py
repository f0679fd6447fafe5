"""DNIS (Cheng, Shen, Huang, "Differentiable Neural Input Search for Recommender Systems", arXiv 2006.04466; no
public code): mixed embedding dimensions per field by a soft selection weight per (field, dimension), as two
stages over any backbone whose fields go through :class:`FeatureEmbedding`.

1. ``search`` (``search_epochs`` epochs, no early stopping, no LR decay): the backbone with a
   :class:`bars.models.layers.DimensionSelection` on its ``d``-wide embeddings (``e_f * alpha_f``). Bi-level,
   first-order (DARTS's first-order approximation, xi = 0): before every training step of the backbone's
   weights ``w`` (the trainer's Adam, with ``alpha`` fixed: the training forward sees it detached), one step of
   ``alpha`` on the next validation batch, minimising ``L_val(w, alpha) + l1 * sum |alpha|`` with ``w`` fixed
   (its own Adam, learning rate ``alpha_lr``). Validation batches cycle through the validation split, shuffled
   per pass. The stage keeps ``alpha`` at the end of the search (``search/alpha.pt``) and prunes it
   (:func:`bars.models.layers.prune_mask`: ``keep_ratio`` of the embedding parameters, or ``threshold``):
   ``search/mask.pt``. Its metrics: ``embedding_params_kept`` (fraction), ``embedding_params_kept_count``,
   ``embedding_params_total``, ``dims_kept`` (fraction of the (field, dim) entries) and ``dims_<field>`` (the
   mixed dimensions).
2. ``retrain``: the backbone from scratch (the BARS initialisation with the run's seed, as plain training) with
   the mask hard (``e_f * keep_f``, 0/1, frozen), trained under the BARS protocol (early stopping, LR decay,
   best epoch): its test metrics are the method's. A masked dimension is a column the model never reads, so this
   is the paper's retraining of the pruned (smaller) tables for the model's math.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bars.methods import DNISConfig
from bars.methods.wrapper import BackboneWrapper, BakeError, ValidBatches, scale_field_rows
from bars.models.layers import DimensionSelection, FeatureEmbedding, prune_mask
from bars.objective import data_loss, loss_function, model_tasks
from bars.train import EpochLog, TrainConfig, save_checkpoint

__all__ = ["STAGES", "RetrainStage", "SearchStage", "SelectedModel", "final_model", "make_stage", "selection_metrics"]

STAGES = ("search", "retrain")


def embedding_width(backbone: nn.Module) -> int:
    """The width DNIS selects over: the widest :class:`FeatureEmbedding` of the backbone (its field embeddings;
    the first-order term's dim-1 tables are narrower)."""
    dims = [m.dim for m in backbone.modules() if isinstance(m, FeatureEmbedding) and m.cat_names]
    if not dims:
        raise ValueError(f"DNIS: {type(backbone).__name__} has no FeatureEmbedding over a categorical field")
    return max(dims)


class SelectedModel(BackboneWrapper):
    """``backbone`` with ``selection`` hooked on its embeddings. The trainer sees the backbone's parameter groups,
    tasks and own loss; ``alpha`` is not among them (its own optimizer, :class:`AlphaStep`). While ``searcher``
    is set, each training forward first runs one selection step on a validation batch."""

    def __init__(self, backbone: nn.Module, selection: DimensionSelection) -> None:
        super().__init__(backbone)
        self.selection = selection
        self._handles = selection.attach(backbone)
        self.searcher: AlphaStep | None = None

    def forward(self, batch: dict[str, Tensor]) -> Any:
        if self.searcher is not None and self.training and torch.is_grad_enabled():
            self.searcher.step()
        return self.backbone(batch)

    def unregularized_parameters(self) -> list[nn.Parameter]:
        return []  # alpha has its own optimizer (the selection step), never the trainer's

    def init_bars_(self, embedding_std: float) -> None:
        self.init_backbone_(embedding_std)
        if not self.selection.hard:
            self.selection.reset_parameters()

    def _fold(self, folded: set[tuple[int, int]]) -> int:
        """Each selected field's rows of the ``d``-wide tables times its 0/1 mask over the dimensions."""
        sel = self.selection
        if not sel.hard:
            raise BakeError("DNIS: only the retrain's hard mask folds into the tables")
        removed = 0
        for emb in self.backbone.modules():
            if isinstance(emb, FeatureEmbedding) and emb.dim == sel.dim:
                for name in emb.cat_names:
                    if name in sel.index:
                        removed += scale_field_rows(emb, name, sel.keep[sel.index[name]], folded)
        return removed


class AlphaStep:
    """One first-order step of the selection weights on the next validation batch:
    ``alpha <- Adam(alpha, grad_alpha [L_val(w, alpha) + l1 * sum |alpha|])`` with the weights ``w`` fixed."""

    def __init__(self, model: SelectedModel, valid: Any, cfg: DNISConfig, train_cfg: TrainConfig, seed: int) -> None:
        self.model = model
        self.l1 = float(cfg.l1)
        self.loss_fn = loss_function(train_cfg.loss)
        self.steps = 0
        self.optimizer = torch.optim.Adam([model.selection.weight], lr=float(cfg.alpha_lr))
        self.batches = ValidBatches(valid, train_cfg.batch_size, seed, all_labels=bool(model_tasks(model.backbone)))

    def step(self) -> None:
        sel = self.model.selection
        xb, yb = self.batches.next(sel.weight.device)
        sel.grad_on = True
        try:
            loss = data_loss(self.model.backbone, self.model.backbone(xb), yb, self.loss_fn)
        finally:
            sel.grad_on = False
        (grad,) = torch.autograd.grad(loss, [sel.weight])
        if self.l1 > 0:
            grad = grad + self.l1 * torch.sign(sel.weight.detach())
        sel.weight.grad = grad
        self.optimizer.step()
        sel.weight.grad = None
        self.steps += 1


def selection_metrics(selection: DimensionSelection, keep: Tensor) -> dict[str, float]:
    kept = selection.parameters_kept(keep)
    total = selection.parameters_total
    k = keep.bool()
    out = {"embedding_params_kept": kept / total, "embedding_params_kept_count": float(kept),
           "embedding_params_total": float(total), "dims_kept": float(k.float().mean())}
    for i, name in enumerate(selection.field_names):
        out[f"dims_{name}"] = float(k[i].sum())
    return out


@dataclasses.dataclass
class SearchStage:
    cfg: DNISConfig
    folder: Path
    name: str = "search"
    init: bool = True  # fit initialises backbone and alpha (BARS init, the run's seed)
    model: SelectedModel | None = None
    train_cfg: TrainConfig | None = None
    seed: int = 0
    final: Tensor | None = None
    weights: dict[str, Tensor] | None = None  # the backbone at the end of the search (retrain_from=search)

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        e = self.cfg.search_epochs
        return dataclasses.replace(train_cfg, max_epochs=e, lr_decay_factor=1.0, max_strikes=e + 1)

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> SelectedModel:
        selection = DimensionSelection(spec, embedding_width(backbone), self.cfg.alpha_init)
        self.model = SelectedModel(backbone, selection)
        self.train_cfg, self.seed = train_cfg, seed
        return self.model

    def bind_data(self, splits: Mapping[str, Any]) -> None:
        """The validation split the selection step reads (``bars.run`` calls it after :meth:`wrap`)."""
        assert self.model is not None and self.train_cfg is not None
        self.model.searcher = AlphaStep(self.model, splits["valid"], self.cfg, self.train_cfg, self.seed)

    def on_epoch(self, log: EpochLog) -> None:
        assert self.model is not None
        if log.epoch == self.cfg.search_epochs:
            self.final = self.model.selection.weight.detach().cpu().clone()
            if self.cfg.retrain_from != "scratch":  # fit restores its best epoch after: keep the last one's
                self.weights = {k: v.detach().cpu().clone() for k, v in self.model.backbone.state_dict().items()}

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None and self.final is not None
        if self.model.searcher is None:
            raise RuntimeError("DNIS search: no validation data was bound (bars.run calls stage.bind_data)")
        sel = self.model.selection
        keep = prune_mask(self.final, sel.rows.cpu(), keep_ratio=self.cfg.keep_ratio, threshold=self.cfg.threshold,
                          min_dims=self.cfg.min_dims, scope=self.cfg.prune)
        out = self.folder / self.name
        save_checkpoint({"alpha": self.final}, out / "alpha.pt")
        save_checkpoint({"keep": keep.float()}, out / "mask.pt")
        if self.weights is not None:
            save_checkpoint(self.weights, out / "weights.pt")
        steps = self.model.searcher.steps
        self.model.searcher = None  # the test pass and anything after the search see alpha fixed
        return {**selection_metrics(sel, keep), "selection_steps": float(steps),
                "alpha_abs_mean": float(self.final.abs().mean())}


@dataclasses.dataclass
class RetrainStage:
    cfg: DNISConfig
    folder: Path
    name: str = "retrain"
    init: bool = True  # from scratch: fit initialises the backbone with the run's seed, as plain training
    model: SelectedModel | None = None

    def __post_init__(self) -> None:
        if self.cfg.retrain_from != "scratch":  # bars switch: warm start from the search's last weights
            self.init = False

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        return train_cfg

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> SelectedModel:
        keep = torch.load(self.folder / "search" / "mask.pt", map_location="cpu", weights_only=True)["keep"]
        if not self.init:
            weights = torch.load(self.folder / "search" / "weights.pt", map_location="cpu", weights_only=True)
            backbone.load_state_dict(weights, strict=True)
        selection = DimensionSelection(spec, embedding_width(backbone), self.cfg.alpha_init)
        if self.cfg.retrain_from == "search_scaled":  # the search's function on the kept dims: alpha into the tables
            alpha = torch.load(self.folder / "search" / "alpha.pt", map_location="cpu", weights_only=True)["alpha"]
            folded: set[tuple[int, int]] = set()
            for emb in backbone.modules():
                if isinstance(emb, FeatureEmbedding) and emb.dim == selection.dim:
                    for name in emb.cat_names:
                        if name in selection.index:
                            scale_field_rows(emb, name, alpha[selection.index[name]], folded)
        selection.set_mask(keep)
        self.model = SelectedModel(backbone, selection)
        return self.model

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None
        return {**selection_metrics(self.model.selection, self.model.selection.keep), **self.model.bake().metrics()}


def final_model(cfg: DNISConfig, backbone: nn.Module, spec: Any) -> SelectedModel:
    """The retrain stage's model as its checkpoint holds it (the mask hard; the checkpoint fills ``keep``):
    load the final stage's ``best.pt`` into it, then :meth:`SelectedModel.bake` (bars.recorded)."""
    selection = DimensionSelection(spec, embedding_width(backbone), cfg.alpha_init)
    selection.set_mask(torch.ones_like(selection.weight))
    return SelectedModel(backbone, selection)


def make_stage(name: str, cfg: DNISConfig, folder: Path) -> SearchStage | RetrainStage:
    if name == "search":
        return SearchStage(cfg, folder)
    if name == "retrain":
        return RetrainStage(cfg, folder)
    raise ValueError(f"DNIS has no stage {name!r}; stages: {list(STAGES)}")
