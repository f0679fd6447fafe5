"""OptInter (Lyu et al., "Memorize, Factorize, or be Naive: Learning Optimal Feature Interaction Methods for CTR
Prediction", ICDE 2022; https://github.com/fuyuanlyu/OptInter, commit 72735504): for every pair of categorical
fields, a choice among memorising the pair (its own cross-product embedding), factorising it (the product of two
field embeddings) and dropping it, searched with architecture weights, then retrained with the choices fixed.

How the pairs enter the backbone (the official ``DNN_cart``: the pair embeddings concatenated to the field
embeddings into the MLP): the backbone is rebuilt for the data's fields plus one *slot field* per pair
(``<i>__x__<j>``, a categorical field of vocabulary 2 that the batch always sets to padding), and the output of
every backbone :class:`FeatureEmbedding` of the backbone's embedding width is patched so that a slot holds its
pair's embedding (:class:`bars.models.layers.PairInteraction`). So a pair is one more field for the backbone:
DNN's MLP reads ``[fields, pairs]`` (DNN_cart); DeepFM's FM and MLP and DCN's cross net and MLP read it too.
Embeddings of another width (the first-order LR term's dim-1 tables) see the slot as padding: zero.

1. ``search`` (at most ``search_epochs`` epochs; stops at the first epoch whose validation AUC does not improve
   and keeps the best epoch, no LR decay: the official ``CriteoSearch.py`` loop): every pair is
   ``w0 * memorise + w1 * factorise + w2 * 0`` with ``w = softmax(alpha / t)``, ``t = max(0.01, 1 - tau * s)``
   after ``s`` training steps. One level, jointly: each training batch's loss gives the gradient of the weights
   (the trainer's Adam) and of ``alpha`` (its own Adam, ``arch_lr``, no weight decay, no clipping), both stepped
   on that batch (official: ``loss.backward(); arch_optimizer.step(); optimizer.step()``). Outputs:
   ``search/arch.pt`` (``alpha`` of the best epoch and the choices, ``argmax`` per pair), ``search/pairs.pt``
   (the pair vocabularies, built from the training split).
2. ``retrain``: the backbone from scratch (BARS initialisation, the run's seed) with one slot per pair not chosen
   naive, its memorised table or its factorised product, under the BARS protocol: its test metrics are the
   method's.

bars switches (off by default, the official procedure above; docs/fidelity.md 34): ``max_pairs_kept`` (at most
that share of the pairs kept: the weakest keep-scores ``max(alpha_m, alpha_f) - alpha_n`` dropped,
:func:`budget_choices`), ``anneal_epochs`` (``tau`` sized so that ``t`` reaches its floor after that many search
epochs), ``arch_data: valid`` (``alpha`` stepped on the next validation batch, first-order bi-level),
``retrain_from: search`` (the retrain's embedding tables start from the search's best epoch), ``retrain_max_strikes``.

Predict, export, reproduce (:func:`final_model`, :meth:`PairModel.bake`): the retrain's checkpoint holds its
architecture (the choice per pair and the memorised pairs' vocabularies, buffers of the pair layer), so the final
model is rebuilt from the checkpoint alone; baked, it is :class:`PairBackbone`: the rebuilt backbone whose slot
embedding computes the pair embeddings itself (:class:`PairSlotEmbedding`, no patched ``forward``), which traces to
ONNX and TorchScript (the pair lookup's ``searchsorted`` becomes a binary search of gathers for ONNX).

Metrics of both stages: ``pairs_memorise``, ``pairs_factorise``, ``pairs_naive``, ``pairs_total``,
``pairs_kept`` (fraction not naive, ``_count``: the board's kept column) and ``pair_params_kept`` (the pair
tables' embedding parameters against memorising every pair; ``_count``, ``_total``).
"""

from __future__ import annotations

import copy
import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bars.data.spec import Feature, FeatureSpec
from bars.methods import OptInterConfig
from bars.methods.wrapper import BackboneWrapper, Baked, BakeError, ValidBatches, train_columns
from bars.models.layers import FeatureEmbedding, PairInteraction, all_pairs, pair_vocabulary, split_parameters
from bars.models.layers.feature_gate import _Patched, patch_embeddings
from bars.models.layers.pair_interaction import CHOICES
from bars.objective import data_loss, loss_function
from bars.train import EpochLog, TrainConfig, save_checkpoint

__all__ = ["STAGES", "PairBackbone", "PairModel", "PairSlotEmbedding", "RetrainStage", "SearchStage", "final_model",
           "make_stage", "slot_spec"]

STAGES = ("search", "retrain")
BAKED_NOTE = ("the backbone rebuilt with one input slot per pair kept, the slots filled by the pair layer inside the "
              "model: memorised pair tables (with their pair-value vocabularies) and the factorisation table")
MIN_TEMPERATURE = 0.01  # official: max(0.01, 1 - tau * step)


def embedding_width(backbone: nn.Module) -> int:
    """The backbone's field-embedding width: its widest :class:`FeatureEmbedding` over a categorical field."""
    dims = [m.dim for m in backbone.modules() if isinstance(m, FeatureEmbedding) and m.cat_names]
    if not dims:
        raise ValueError(f"OptInter: {type(backbone).__name__} has no FeatureEmbedding over a categorical field")
    return max(dims)


def slot_spec(spec: FeatureSpec, slots: list[str]) -> FeatureSpec:
    """``spec`` plus one categorical slot field (vocabulary 2, always padding) per name in ``slots``."""
    clash = sorted(set(slots) & set(spec.names))
    if clash:
        raise ValueError(f"OptInter: slot fields {clash} clash with the data's fields")
    extra = tuple(Feature(n, "categorical", vocab_size=2, source="OptInter pair slot") for n in slots)
    return dataclasses.replace(spec, features=spec.features + extra)


def rebuild(backbone: nn.Module, spec: FeatureSpec) -> nn.Module:
    """The backbone's class and config built again for ``spec`` (its fields plus the pair slots)."""
    cfg = getattr(backbone, "cfg", None)
    if cfg is None:
        raise ValueError(f"OptInter: {type(backbone).__name__} keeps no config (self.cfg); it cannot be rebuilt "
                         "with pair slots")
    return type(backbone)(spec, cfg)


class PairModel(BackboneWrapper):
    """The backbone rebuilt with pair slots; ``pairs`` fills them. While ``arch_optimizer`` is set (the search),
    ``alpha``'s gradient from the last training batch is applied by its own Adam before the next forward, and
    every training forward advances the temperature schedule."""

    def __init__(self, backbone: nn.Module, slots: list[str], width: int, tau: float = 0.0) -> None:
        super().__init__(backbone)
        self.slots = list(slots)
        self.width = int(width)
        self.tau = float(tau)
        self.steps = 0
        self.pairs: PairInteraction | None = None
        self.arch_optimizer: torch.optim.Optimizer | None = None
        self.warm_tables: dict[str, Tensor] | None = None  # retrain_from=search: rows copied in after the BARS init
        self.arch_valid: ValidBatches | None = None  # arch_data=valid: alpha steps on these, not the training batch
        self.arch_loss_fn: Any = None  # ... with the run's training loss
        self._current: Tensor | None = None
        self._handles: list[_Patched] = []
        if self.slots:
            self._handles = patch_embeddings(backbone, self._hook_for, width=self.width)
            if not self._handles:
                raise ValueError(f"OptInter: {type(backbone).__name__} has no FeatureEmbedding of width {self.width} "
                                 "over every pair slot; OptInter feeds the pairs through the backbone's field embedding")

    def set_pairs(self, pairs: PairInteraction) -> None:
        if pairs.num_slots != len(self.slots) or pairs.dim != self.width:
            raise ValueError(f"OptInter: {pairs.num_slots} pair slots of width {pairs.dim} for a backbone with "
                             f"{len(self.slots)} slots of width {self.width}")
        self.pairs = pairs

    def _hook_for(self, emb: FeatureEmbedding) -> Any:
        names = [n for n in self.slots if n in emb.field_names]
        if not names:
            return None
        if names != self.slots:
            raise ValueError(f"OptInter: a FeatureEmbedding of {type(self.backbone).__name__} embeds only some pair "
                             f"slots ({len(names)} of {len(self.slots)})")
        positions = torch.tensor([emb.field_names.index(n) for n in self.slots], dtype=torch.int64)
        cache: dict[torch.device, Tensor] = {}

        def hook(batch: dict[str, Tensor], out: Tensor) -> Tensor:
            if self._current is None:
                raise RuntimeError("OptInter: the backbone's embedding was called outside PairModel.forward")
            if out.device not in cache:
                cache[out.device] = positions.to(out.device)
            return out.index_copy(1, cache[out.device], self._current.to(out.dtype))

        return hook

    def temperature(self) -> float:
        return max(MIN_TEMPERATURE, 1.0 - self.tau * self.steps)

    def _apply_arch_step(self) -> None:
        assert self.pairs is not None and self.pairs.alpha is not None and self.arch_optimizer is not None
        if self.pairs.alpha.grad is None:
            return
        with torch.inference_mode(False), torch.no_grad():
            self.arch_optimizer.step()
        self.pairs.alpha.grad = None

    def forward(self, batch: dict[str, Tensor]) -> Any:
        if not self.slots:
            return self.backbone(batch)
        if self.pairs is None:
            raise RuntimeError("OptInter: the pair layer was not set (the search builds it from the training split)")
        if self.arch_optimizer is not None and self.arch_valid is not None:  # bars switch arch_data=valid
            if self.training and torch.is_grad_enabled():
                self.pairs.temperature = self.temperature()
                self.steps += 1
                self._valid_arch_step()
        elif self.arch_optimizer is not None:
            self._apply_arch_step()  # the previous training batch's alpha step (official: after its backward)
            if self.training and torch.is_grad_enabled():
                self.pairs.temperature = self.temperature()
                self.steps += 1
        ref = next(iter(batch.values()))
        pad = torch.zeros(ref.shape[0], dtype=torch.int32, device=ref.device)
        self._current = self.pairs(batch)
        try:
            return self.backbone({**batch, **dict.fromkeys(self.slots, pad)})
        finally:
            self._current = None

    def _valid_arch_step(self) -> None:
        """``alpha <- Adam(alpha, grad_alpha L_val(w, alpha))`` on the next validation batch, the weights fixed and
        the network in evaluation mode (no dropout, batch norm's running statistics read, not updated); ``alpha``
        then takes no gradient from the training batch (the trainer's step sees it as a constant)."""
        assert self.pairs is not None and self.pairs.alpha is not None and self.arch_optimizer is not None
        assert self.arch_valid is not None
        alpha = self.pairs.alpha
        xb, yb = self.arch_valid.next(alpha.device)
        ref = next(iter(xb.values()))
        pad = torch.zeros(ref.shape[0], dtype=torch.int32, device=ref.device)
        self.backbone.eval()
        alpha.requires_grad_(True)
        try:
            self._current = self.pairs(xb)
            loss = data_loss(self.backbone, self.backbone({**xb, **dict.fromkeys(self.slots, pad)}), yb,
                             self.arch_loss_fn)
            (grad,) = torch.autograd.grad(loss, [alpha])
        finally:
            self._current = None
            alpha.requires_grad_(False)
            self.backbone.train()
        alpha.grad = grad
        with torch.no_grad():
            self.arch_optimizer.step()
        alpha.grad = None

    def split_parameters(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        emb, net = super().split_parameters()
        if self.pairs is not None:
            pe, _ = split_parameters(self.pairs)  # its tables; alpha is neither (its own optimizer)
            emb = emb + pe
        return emb, net

    def unregularized_parameters(self) -> list[nn.Parameter]:
        return []  # alpha has its own Adam (arch_lr), never the trainer's

    def init_bars_(self, embedding_std: float) -> None:
        self.init_backbone_(embedding_std)
        if self.pairs is not None:
            self.pairs.reset_parameters(embedding_std)
        if self.warm_tables is not None:
            load_tables(self, self.warm_tables)

    def bake(self) -> Baked:
        """The retrained model as one module without hooks (what ``bars predict`` / ``bars export`` use):
        :class:`PairBackbone` over a copy of the rebuilt backbone whose slot embeddings are
        :class:`PairSlotEmbedding` s holding the pair layer; without slots (every pair naive) the plain backbone.
        It computes the hooked model's operations on the same values, so it scores bitwise the same. Nothing is
        folded away: ``removed`` is 0 (the pair tables are the model's, counted in its parameters)."""
        if self.arch_optimizer is not None or (self.pairs is not None and self.pairs.choices is None):
            raise BakeError("OptInter: only the retrained model (choices fixed) can be baked, not the search's")
        twin = copy.deepcopy(self)
        for h in twin._handles:
            h.remove()
        if not twin.slots:
            return Baked(twin.backbone.eval(), 0)
        assert twin.pairs is not None
        targets = [m for m in twin.backbone.modules() if isinstance(m, FeatureEmbedding) and m.dim == twin.width
                   and any(s in m.field_names for s in twin.slots)]
        for emb in targets:
            PairSlotEmbedding.convert(emb, twin.pairs, [emb.field_names.index(s) for s in twin.slots])
        return Baked(PairBackbone(twin.backbone, twin.slots).eval(), 0)


class PairSlotEmbedding(FeatureEmbedding):
    """A :class:`FeatureEmbedding` of a backbone rebuilt with pair slots whose slot fields hold the pair layer's
    embeddings: the baked form of :class:`PairModel`'s hook (its ``forward`` is the class's, so a traced or
    deep-copied model carries it). ``convert`` turns an embedding into one in place."""

    pair_layer: PairInteraction
    slot_gather: Tensor

    @classmethod
    def convert(cls, emb: FeatureEmbedding, layer: PairInteraction, positions: list[int]) -> PairSlotEmbedding:
        if type(emb) is not FeatureEmbedding:
            raise BakeError(f"OptInter: the slot embedding is a {type(emb).__name__}, not a FeatureEmbedding")
        n = emb.num_fields
        # [B, F + S] (the table's output, then the pair slots) -> [B, F]: slot field p reads pair slot s
        gather = list(range(n))
        for s, p in enumerate(positions):
            gather[p] = n + s
        emb.__class__ = cls
        emb.add_module("pair_layer", layer)
        emb.register_buffer("slot_gather", torch.tensor(gather, dtype=torch.int64), persistent=False)
        return emb  # type: ignore[return-value]

    def forward(self, batch: dict[str, Tensor]) -> Tensor:
        out = super().forward(batch)
        pairs = self.pair_layer(batch).to(out.dtype)
        return torch.cat([out, pairs], dim=1).index_select(1, self.slot_gather)


class PairBackbone(nn.Module):
    """The baked OptInter model: ``backbone`` (rebuilt with the pair slots, its slot embeddings
    :class:`PairSlotEmbedding` s) called with the slot fields set to padding, so it takes the data's fields only."""

    def __init__(self, backbone: nn.Module, slots: list[str]) -> None:
        super().__init__()
        self.backbone = backbone
        self.slots = list(slots)
        if getattr(backbone, "tasks", ()):
            self.tasks = tuple(backbone.tasks)

    def forward(self, batch: dict[str, Tensor]) -> Any:
        ref = next(iter(batch.values()))
        pad = torch.zeros(ref.shape[0], dtype=torch.int32, device=ref.device)
        return self.backbone({**batch, **dict.fromkeys(self.slots, pad)})


def choice_metrics(pairs: PairInteraction, spec: FeatureSpec, choices: list[str]) -> dict[str, float]:
    return pairs.parameters_of(spec, choices)


def budget_choices(alpha: Tensor, max_pairs_kept: float | None) -> list[str]:
    """The choice per pair: ``argmax(alpha)`` (official), then, with ``max_pairs_kept`` (bars switch), at most
    ``floor(max_pairs_kept * P)`` pairs not naive: beyond that, the kept pairs of weakest keep-score
    ``max(alpha_memorise, alpha_factorise) - alpha_naive`` (the log-odds of the better keeping choice against
    dropping, at any temperature) become naive, ties by pair order (the later pair dropped first)."""
    choices = [CHOICES[int(i)] for i in alpha.argmax(dim=1).tolist()]
    if max_pairs_kept is None:
        return choices
    limit = math.floor(max_pairs_kept * len(choices) + 1e-9)
    kept = [k for k, c in enumerate(choices) if c != "naive"]
    if len(kept) <= limit:
        return choices
    a = alpha.detach().to(torch.float64)
    score = (torch.maximum(a[:, 0], a[:, 1]) - a[:, 2]).tolist()
    for k in sorted(kept, key=lambda k: (score[k], -k))[:len(kept) - limit]:
        choices[k] = "naive"
    return choices


def embedding_tables(model: nn.Module) -> dict[str, Tensor]:
    """Every :class:`FeatureEmbedding` table's rows per field, keyed ``<module path>::<field>`` (copies)."""
    out = {}
    for path, emb in model.named_modules():
        if isinstance(emb, FeatureEmbedding) and emb.weight is not None:
            for name, (a, b) in emb.table_rows.items():
                out[f"{path}::{name}"] = emb.weight.detach()[a:b].cpu().clone()
    return out


def load_tables(model: nn.Module, tables: Mapping[str, Tensor]) -> int:
    """Copy ``tables`` (:func:`embedding_tables` of another model) into ``model``'s FeatureEmbedding rows of the same
    module path and field (the pair slots' padding-only rows excepted); returns the fields copied. A field of both
    with another shape is an error."""
    copied = 0
    with torch.no_grad():
        for path, emb in model.named_modules():
            if not (isinstance(emb, FeatureEmbedding) and emb.weight is not None):
                continue
            for name, (a, b) in emb.table_rows.items():
                src = tables.get(f"{path}::{name}")
                if src is None or ("__x__" in name and path.startswith("backbone")):
                    continue
                if tuple(src.shape) != (b - a, emb.dim):
                    raise ValueError(f"OptInter retrain_from=search: table {path}::{name} is {tuple(src.shape)} in "
                                     f"the search, {(b - a, emb.dim)} in the retrain")
                emb.weight[a:b] = src.to(emb.weight.device, emb.weight.dtype)
                copied += 1
    if not copied:
        raise ValueError("OptInter retrain_from=search: no embedding table of the search matches the retrain's")
    return copied


@dataclasses.dataclass
class SearchStage:
    cfg: OptInterConfig
    folder: Path
    name: str = "search"
    init: bool = True  # fit initialises backbone, tables and alpha (BARS init, alpha xavier-normal; the run's seed)
    model: PairModel | None = None
    spec: FeatureSpec | None = None
    width: int = 0
    pairs: list[tuple[str, str]] = dataclasses.field(default_factory=list)
    batch_size: int = 0
    train_cfg: TrainConfig | None = None
    seed: int = 0

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        # official search: at most `epochs`, stop at the first non-improving epoch, keep the best one, no decay
        return dataclasses.replace(train_cfg, max_epochs=self.cfg.search_epochs, lr_decay_factor=1.0, max_strikes=1)

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> PairModel:
        self.spec, self.width = spec, embedding_width(backbone)
        self.pairs = all_pairs(spec, self.cfg.fields)
        slots = [PairInteraction.slot_name(p) for p in self.pairs]
        self.model = PairModel(rebuild(backbone, slot_spec(spec, slots)), slots, self.width, self.cfg.tau)
        self.batch_size, self.train_cfg, self.seed = train_cfg.batch_size, train_cfg, seed
        return self.model

    def bind_data(self, splits: Mapping[str, Any]) -> None:
        """Build the pair vocabularies from the training split and the pair layer (``bars.run`` calls it after
        :meth:`wrap`, before training)."""
        assert self.model is not None and self.spec is not None
        names = sorted({n for p in self.pairs for n in p})
        keys = pair_vocabulary(train_columns(splits["train"], names), self.spec, self.pairs, self.cfg.min_count)
        if self.cfg.anneal_epochs is not None:  # bars switch: the floor after anneal_epochs epochs of this data
            steps = self.cfg.anneal_epochs * math.ceil(len(splits["train"]) / self.batch_size)
            self.model.tau = (1.0 - MIN_TEMPERATURE) / steps
        layer = PairInteraction(self.spec, self.width, self.pairs, keys, hash_rows=self.cfg.hash_rows,
                                max_bytes=self.cfg.max_embedding_bytes)
        self.model.set_pairs(layer)
        assert layer.alpha is not None
        self.model.arch_optimizer = torch.optim.Adam([layer.alpha], lr=float(self.cfg.arch_lr))
        if self.cfg.arch_data == "valid":  # bars switch: alpha on validation batches, never on the training loss
            assert self.train_cfg is not None
            layer.alpha.requires_grad_(False)
            self.model.arch_valid = ValidBatches(splits["valid"], self.train_cfg.batch_size, self.seed)
            self.model.arch_loss_fn = loss_function(self.train_cfg.loss)
        save_checkpoint({f"keys_{k}": keys[p] for k, p in enumerate(self.pairs)}, self.folder / self.name / "pairs.pt")

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None and self.model.pairs is not None and self.spec is not None
        layer = self.model.pairs
        if layer.alpha is None:
            raise RuntimeError("OptInter search: the pair layer has no architecture weights")
        self.model.arch_optimizer = None  # fit restored the best epoch's weights and alpha; the test pass uses them
        self.model.arch_valid = None
        choices = budget_choices(layer.alpha.detach().cpu(), self.cfg.max_pairs_kept)
        if self.cfg.retrain_from == "search":  # the best epoch's tables (fit restored it), for the retrain's start
            save_checkpoint(embedding_tables(self.model), self.folder / self.name / "tables.pt")
        save_checkpoint({"alpha": layer.alpha.detach().cpu(),
                         "choices": torch.tensor([["memorise", "factorise", "naive"].index(c) for c in choices])},
                        self.folder / self.name / "arch.pt")
        w = layer.mixing().detach()
        return {**choice_metrics(layer, self.spec, choices), "temperature": self.model.temperature(),
                "search_steps": float(self.model.steps), "alpha_weight_max_mean": float(w.max(dim=1).values.mean()),
                "pairs_kept_argmax": sum(c != "naive" for c in layer.chosen()) / len(choices)}


@dataclasses.dataclass
class RetrainStage:
    cfg: OptInterConfig
    folder: Path
    name: str = "retrain"
    init: bool = True  # from scratch, as the official retrain (a new model)
    model: PairModel | None = None
    spec: FeatureSpec | None = None
    choices: list[str] = dataclasses.field(default_factory=list)
    layer: PairInteraction | None = None

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        if self.cfg.retrain_max_strikes is not None:  # bars switch: the retrain's patience
            return dataclasses.replace(train_cfg, max_strikes=self.cfg.retrain_max_strikes)
        return train_cfg

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> PairModel:
        search = self.folder / "search"
        arch = torch.load(search / "arch.pt", map_location="cpu", weights_only=True)
        stored = torch.load(search / "pairs.pt", map_location="cpu", weights_only=True)
        pairs = all_pairs(spec, self.cfg.fields)
        if len(pairs) != len(arch["choices"]):
            raise ValueError(f"OptInter retrain: the search chose for {len(arch['choices'])} pairs, the data has "
                             f"{len(pairs)}")
        self.spec = spec
        self.choices = [("memorise", "factorise", "naive")[int(i)] for i in arch["choices"].tolist()]
        keys = {p: stored[f"keys_{k}"] for k, p in enumerate(pairs)}
        layer = PairInteraction(spec, embedding_width(backbone), pairs, keys, hash_rows=self.cfg.hash_rows,
                                choices=self.choices, max_bytes=self.cfg.max_embedding_bytes)
        self.model = _retrain_model(backbone, spec, layer)
        if self.cfg.retrain_from == "search":  # bars switch: fit's BARS init, then the search's tables copied in
            self.model.warm_tables = torch.load(search / "tables.pt", map_location="cpu", weights_only=True)
        self.layer = layer
        return self.model

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.spec is not None and self.layer is not None and self.model is not None
        return {**choice_metrics(self.layer, self.spec, self.choices), **self.model.bake().metrics()}


def _retrain_model(backbone: nn.Module, spec: FeatureSpec, layer: PairInteraction) -> PairModel:
    """The retrain's model: the backbone rebuilt with one slot per pair not naive (none: the backbone as it is),
    ``layer`` (choices fixed) filling the slots."""
    slots = [PairInteraction.slot_name(layer.pairs[k]) for k in layer.slot_pairs]  # type: ignore[arg-type]
    model = PairModel(rebuild(backbone, slot_spec(spec, slots)) if slots else backbone, slots, layer.dim)
    if slots:
        model.set_pairs(layer)
    return model


def final_model(cfg: OptInterConfig, backbone: nn.Module, spec: Any, checkpoint: Any = None) -> PairModel:
    """The retrain stage's model as its checkpoint ``checkpoint`` (the final stage's ``best.pt``) holds it: the
    architecture (the choice per pair, the memorised pairs' vocabularies) is read from the checkpoint's pair layer
    (:meth:`PairInteraction.from_state`); load the checkpoint into it, then :meth:`PairModel.bake` (bars.recorded).
    A checkpoint without a pair layer is the all-naive retrain (the plain backbone)."""
    if checkpoint is None:
        raise ValueError("OptInter: the final model's pair choices are read from its checkpoint; none was given")
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)
    pairs = all_pairs(spec, cfg.fields)
    if not any(k.startswith("pairs.") for k in state):  # every pair naive: no slots, no pair layer
        return PairModel(backbone, [], embedding_width(backbone))
    try:
        layer = PairInteraction.from_state(state, "pairs.", spec, embedding_width(backbone), pairs,
                                           hash_rows=cfg.hash_rows, max_bytes=cfg.max_embedding_bytes)
    except ValueError as e:
        raise ValueError(f"OptInter: checkpoint {checkpoint}: {e}") from None
    return _retrain_model(backbone, spec, layer)


def make_stage(name: str, cfg: OptInterConfig, folder: Path) -> SearchStage | RetrainStage:
    if name == "search":
        return SearchStage(cfg, folder)
    if name == "retrain":
        return RetrainStage(cfg, folder)
    raise ValueError(f"OptInter has no stage {name!r}; stages: {list(STAGES)}")
