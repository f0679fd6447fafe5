"""OptEmbed (Lyu et al., "OptEmbed: Learning Optimal Embedding Table for Click-through Rate Prediction", CIKM 2022;
https://github.com/fuyuanlyu/OptEmbed, commit 0feda5f8): which embedding rows to keep and how many dimensions per
field, as three stages over any backbone whose fields go through :class:`FeatureEmbedding`.

1. ``supernet`` (``supernet.py``): the backbone with a :class:`bars.models.layers.EmbeddingMask` in supernet mode on
   its ``d``-wide embeddings: rows whose norm is below their field's learnable threshold are zeroed
   (``BinaryStep``, a straight-through surrogate gradient), and each training row of the batch keeps a uniformly
   drawn number of leading dimensions per field. The loss is the backbone's plus ``threshold_reg * sum_f
   exp(-t_f)``; the thresholds are stepped by plain SGD (``threshold_lr``, no weight decay, no clipping: the
   official ``threshold_optimizer``) right after each backward, outside the trainer's Adam. Trained under the BARS
   protocol (``supernet_epochs`` or ``train.max_epochs``, early stopping on validation AUC, best epoch): the
   supernet's weights at its best epoch are ``supernet/supernet.pt``; its hard row mask (``1[||E_row||_p > t_f]``)
   is ``supernet/rows.pt``.
2. ``evolution`` (``evolution.py``): no training. The supernet with its row mask hard scores candidates (one
   embedding dimension per field) by validation AUC; ``iterations`` generations of ``keep_num`` survivors,
   ``mutation_num`` mutations and ``crossover_num`` crossovers, seeded by the run's seed. Its child run logs each
   generation's best (``evo_*`` metrics, step = generation); the best candidate is ``evolution/arch.pt`` (row mask +
   dims) and ``evolution/history.json``.
3. ``retrain`` (``retrain.py``, ``mode_retrain='weight'``): the backbone from scratch (the BARS initialisation with the
   run's seed) under the frozen row mask and per-field dimensions, trained under the BARS protocol; its test
   metrics are the method's.

Metrics (every stage that knows them): ``embedding_params_kept`` (fraction of ``sum_f (vocab_f - 1) * d``),
``embedding_params_kept_count``, ``embedding_params_total``, ``embedding_rows_kept`` (fraction of ``sum_f
(vocab_f - 1)``), ``embedding_rows_kept_count``, ``embedding_rows_total``, ``dims_<field>`` and ``rows_<field>``.
"""

from __future__ import annotations

import dataclasses
import json
import random
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from bars.fileio import atomic_write_text
from bars.methods import OptEmbedConfig
from bars.methods.dnis import embedding_width
from bars.methods.wrapper import BackboneWrapper, BakeError, scale_field_rows, train_columns
from bars.models.layers import EmbeddingMask, FeatureEmbedding, prefix_mask
from bars.train import EpochLog, TrainConfig, save_checkpoint

__all__ = ["STAGES", "EvolutionStage", "FixedDimsStage", "MaskedModel", "RetrainStage", "SupernetStage", "evolve",
           "final_model", "frequency_rows", "make_stage", "mask_metrics"]

STAGES = ("supernet", "evolution", "retrain")


class MaskedModel(BackboneWrapper):
    """``backbone`` with ``mask`` hooked on its ``d``-wide embeddings. The trainer sees the backbone's parameter
    groups, tasks and own loss (plus ``threshold_reg * mask.penalty()`` while the thresholds train); the thresholds
    are not among the trainer's parameters: a hook steps them by SGD (``threshold_lr``) as soon as their gradient
    is accumulated, and clears it."""

    def __init__(self, backbone: nn.Module, mask: EmbeddingMask, threshold_lr: float = 0.0,
                 threshold_reg: float = 0.0) -> None:
        super().__init__(backbone)
        self.mask = mask
        self.threshold_lr = float(threshold_lr)
        self.threshold_reg = float(threshold_reg)
        self._handles = mask.attach(backbone)
        self.threshold_steps = 0
        if mask.threshold.requires_grad:
            mask.threshold.register_post_accumulate_grad_hook(self._sgd)

    def _sgd(self, p: Tensor) -> None:
        if p.grad is None:
            return
        with torch.no_grad():
            p.add_(p.grad, alpha=-self.threshold_lr)
        p.grad = None
        self.threshold_steps += 1

    def unregularized_parameters(self) -> list[nn.Parameter]:
        return []  # the thresholds have their own optimizer (plain SGD), never the trainer's Adam

    def init_bars_(self, embedding_std: float) -> None:
        self.init_backbone_(embedding_std)
        self.mask.reset_parameters()

    def training_loss(self, outputs: Any, labels: Tensor, loss_fn: Any) -> Tensor:
        loss = super().training_loss(outputs, labels, loss_fn)
        if self.mask.mode == "supernet" and self.threshold_reg > 0 and self.mask.threshold.requires_grad:
            loss = loss + self.threshold_reg * self.mask.penalty()
        return loss

    def _fold(self, folded: set[tuple[int, int]]) -> int:
        """Each masked field's rows of the ``d``-wide tables times its fixed mask: ``row_keep`` per row (a pruned
        row becomes zero) times the first ``dims_f`` dimensions (the rest zero): exactly the fixed-mode hook's
        factor ``row_keep[value] * prefix(dims_f)``, so the baked tables score bitwise as the hooked model."""
        mask = self.mask
        if mask.mode != "fixed":
            raise BakeError("OptEmbed: only the fixed masks (the evolution's, the retrain's) fold into the tables; "
                            "the supernet's rows depend on its thresholds and its dimensions are sampled")
        removed = 0
        for emb in self.backbone.modules():
            if isinstance(emb, FeatureEmbedding) and emb.dim == mask.dim:
                for name in emb.cat_names:
                    if name in mask.index:
                        i, o = mask.index[name], mask.offsets[name]
                        rows = mask.row_keep[o: o + int(mask.rows[i])].unsqueeze(-1)  # [vocab - 1, 1]
                        if mask.blocks == 1:
                            dims = prefix_mask(mask.dims[i], mask.dim).to(rows.device)  # [d]
                        else:  # frequency blocks: each row's unit's dims, [vocab - 1, d]
                            units = mask.row_unit[o: o + int(mask.rows[i])]
                            dims = prefix_mask(mask.dims[units], mask.dim).to(rows.device)
                        removed += scale_field_rows(emb, name, rows * dims, folded)
        return removed


def mask_metrics(mask: EmbeddingMask, row_keep: Tensor | None = None, dims: Tensor | None = None) -> dict[str, float]:
    rows = mask.rows_kept_per_field(row_keep)
    d = (mask.dims if dims is None else dims).detach().cpu().long()
    kept_rows, total_rows = int(rows.sum()), mask.rows_total
    kept, total = mask.parameters_kept(row_keep, d), mask.parameters_total
    out = {"embedding_params_kept": kept / total, "embedding_params_kept_count": float(kept),
           "embedding_params_total": float(total), "embedding_rows_kept": kept_rows / total_rows,
           "embedding_rows_kept_count": float(kept_rows), "embedding_rows_total": float(total_rows)}
    if mask.blocks == 1:
        for i, name in enumerate(mask.field_names):
            out[f"dims_{name}"] = float(d[i])
            out[f"rows_{name}"] = float(rows[i])
        return out
    unit_rows = mask.rows_kept_per_unit(row_keep)
    for i, name in enumerate(mask.field_names):
        out[f"rows_{name}"] = float(rows[i])
    for u, name in enumerate(mask.unit_names):  # frequency blocks: <field>_b<k>, k = 0 the rarest values
        out[f"dims_{name}"] = float(d[u])
        out[f"rows_{name}"] = float(unit_rows[u])
    return out


def frequency_rows(mask: EmbeddingMask, train: Any, min_count: int) -> Tensor:
    """``[1 + sum(vocab - 1)]`` 0/1 (``mask``'s global row layout, the padding row 1): 1 where the feature value
    occurs at least ``min_count`` times in ``train`` (a split, in memory or streamed)."""
    allow = (_row_counts(mask, train, "min_row_count") >= min_count).to(mask.row_keep.dtype)
    allow[0] = 1  # the padding row (zero anyway) is never counted as pruned
    return allow


def _row_counts(mask: EmbeddingMask, train: Any, key: str) -> Tensor:
    """``[1 + sum(vocab - 1)]`` int: how often each global row's value occurs in ``train`` (the padding row: 0)."""
    columns = train_columns(train, list(mask.field_names))  # in memory, or read batch by batch
    out = torch.zeros(mask.row_keep.shape, dtype=torch.int64)
    for i, name in enumerate(mask.field_names):
        n = int(mask.rows[i])
        counts = torch.bincount(columns[name].long().reshape(-1).cpu(), minlength=n + 1)
        if counts.numel() > n + 1:
            raise ValueError(f"OptEmbed method.{key}: field {name!r} has value index {counts.numel() - 1} in the "
                             f"training split, beyond its vocabulary of {n + 1}")
        o = mask.offsets[name]
        out[o: o + n] = counts[1:]
    return out


def frequency_units(mask: EmbeddingMask, train: Any, cutoffs: Any) -> Tensor:
    """``[1 + sum(vocab - 1)]`` int (a bars switch, OptEmbed's ``frequency_blocks``): the unit of each global row,
    ``f * blocks + k`` for field ``f`` and ``k`` the number of ``cutoffs`` (increasing counts) its value's training
    count reaches: block 0 holds the values seen fewer than ``cutoffs[0]`` times, the last the most frequent."""
    counts = _row_counts(mask, train, "frequency_blocks")
    k = torch.bucketize(counts, torch.tensor([int(c) for c in cutoffs], dtype=torch.int64), right=True)
    unit = torch.zeros_like(counts)
    for i, name in enumerate(mask.field_names):
        o, n = mask.offsets[name], int(mask.rows[i])
        unit[o: o + n] = i * mask.blocks + k[o: o + n]
    return unit


def _build(backbone: nn.Module, spec: Any, cfg: OptEmbedConfig, *, train_thresholds: bool) -> MaskedModel:
    mask = EmbeddingMask(spec, embedding_width(backbone), norm=cfg.norm, threshold_init=cfg.threshold_init,
                         level=cfg.threshold_level, blocks=len(cfg.frequency_blocks or ()) + 1)
    if not train_thresholds:
        mask.threshold.requires_grad_(False)
    return MaskedModel(backbone, mask, cfg.threshold_lr, cfg.threshold_reg)


# --------------------------------------------------------------------------------------------------- stages
@dataclasses.dataclass
class SupernetStage:
    cfg: OptEmbedConfig
    folder: Path
    name: str = "supernet"
    init: bool = True  # fit initialises backbone and thresholds (BARS init, the run's seed)
    model: MaskedModel | None = None

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        e = self.cfg.supernet_epochs
        return train_cfg if e is None else dataclasses.replace(train_cfg, max_epochs=int(e))

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> MaskedModel:
        self.model = _build(backbone, spec, self.cfg, train_thresholds=True)
        return self.model

    def bind_data(self, splits: Mapping[str, Any]) -> None:
        """``min_row_count`` (a bars switch): the rows of values seen fewer than that many times in the training
        split are forced off (``bars.run`` calls this after :meth:`wrap`); 0 leaves the paper's masks."""
        assert self.model is not None
        if self.cfg.min_row_count > 0:
            self.model.mask.set_row_allow(frequency_rows(self.model.mask, splits["train"], self.cfg.min_row_count))
        if self.model.mask.blocks > 1:
            self.model.mask.set_units(frequency_units(self.model.mask, splits["train"], self.cfg.frequency_blocks))

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None
        mask = self.model.mask  # fit restored the best epoch's weights and thresholds
        rows = mask.hard_row_mask()
        out = self.folder / self.name
        save_checkpoint(self.model, out / "supernet.pt")
        save_checkpoint({"row_keep": rows, "threshold": mask.threshold.detach(),
                         **({"row_unit": mask.row_unit} if mask.blocks > 1 else {})}, out / "rows.pt")
        t = mask.threshold.detach().cpu()
        full = torch.full_like(mask.dims.cpu(), mask.dim)
        extra = {} if mask.row_allow is None else {
            "rows_below_min_count": float(mask.rows_total - int(mask.rows_kept_per_field(mask.row_allow).sum()))}
        return {**mask_metrics(mask, rows, full), **extra, "threshold_steps": float(self.model.threshold_steps),
                "threshold_mean": float(t.mean()), "threshold_min": float(t.min()), "threshold_max": float(t.max())}


def evolve(score: Any, num_fields: int, dim: int, cfg: OptEmbedConfig, seed: int,
           on_generation: Any = None, cost: Any = None) -> tuple[list[int], float, list[dict[str, Any]]]:
    """The official ``EvolutionSearcher.search`` over candidates (the embedding dimension of each field, in
    ``[1, dim]``), maximising ``score(candidate) -> float`` (validation AUC). Returns the best candidate, its score
    and one record per generation. Seeded by ``seed`` (same seed, same candidates).

    Per generation: score every candidate (a candidate already scored is not scored again: the score is
    deterministic), sort by score (descending, stable), keep the best so far, then the next population is the top
    ``keep_num``, ``mutation_num`` mutations (candidate ``i`` of the top, each field redrawn in ``[2, dim]`` with
    probability ``mutation_prob``: the official ``randint(1, latent_dim)`` index) and ``crossover_num`` crossovers
    (pairs ``(x, y)`` drawn from the top ``crossover_num + 1``, no pair twice; ``x[:p] + y[p:]`` with ``p`` in
    ``[1, F-1]``, or ``[1, dim]`` with ``official_crossover``). The first population is uniform in ``[1, dim]``.

    ``cfg.max_params_kept`` (a bars switch; ``cost(candidate)`` gives its fraction of the embedding parameters): a
    candidate above the budget is infeasible, scored ``-inf`` without evaluating it (so never kept ahead of a
    feasible one, never the result); the first population is drawn uniform among the feasible candidates (each
    redrawn until feasible). Without it (null) nothing changes: the same draws, the same result.

    ``cfg.min_dims`` (a bars switch; 1 = the official ranges): the first population is drawn in ``[min_dims, dim]``
    and mutations in ``[max(2, min_dims), dim]`` (crossovers keep the parents' values), so no field falls below it."""
    rng = random.Random(int(seed))
    population = cfg.keep_num + cfg.mutation_num + cfg.crossover_num
    budget = cfg.max_params_kept
    if budget is not None and cost is None:
        raise ValueError("OptEmbed evolution: method.max_params_kept needs the candidates' cost")
    low = int(cfg.min_dims)  # bars switch (1 = the official range): the floor of every field's dimension
    if low > dim:
        raise ValueError(f"method.min_dims={low} is above the embedding width {dim}")
    if budget is not None and cost([low] * num_fields) > budget:
        raise ValueError(f"method.max_params_kept={budget}: even {low} dimension(s) per field keep(s) "
                         f"{cost([low] * num_fields):.4f} of the embedding parameters; raise it")

    def draw() -> list[int]:
        for _ in range(100_000):  # a budget that leaves almost nothing feasible would never end otherwise
            c = [rng.randint(low, dim) for _ in range(num_fields)]
            if budget is None or cost(c) <= budget:
                return c
        raise ValueError(f"method.max_params_kept={budget} with method.min_dims={low}: no feasible candidate in "
                         "100,000 uniform draws (the budget leaves almost nothing above the floor); raise the budget "
                         "or lower min_dims")

    def fitness(c: list[int]) -> float:
        return float("-inf") if budget is not None and cost(c) > budget else float(score(c))

    cands = [draw() for _ in range(population)]
    cache: dict[tuple[int, ...], float] = {}
    best: list[int] | None = None
    best_score = float("-inf")
    history: list[dict[str, Any]] = []
    for gen in range(cfg.iterations):
        scores = []
        for c in cands:
            key = tuple(c)
            if key not in cache:
                cache[key] = fitness(c)
            scores.append(cache[key])
        order = sorted(range(len(cands)), key=lambda i: -scores[i])
        cands = [cands[i] for i in order]
        scores = [scores[i] for i in order]
        if scores[0] > best_score:
            best, best_score = list(cands[0]), scores[0]
        feasible = [x for x in scores if x > float("-inf")]
        rec = {"generation": gen + 1, "best": scores[0], "worst": min(feasible, default=scores[-1]),
               "best_so_far": best_score, "candidate": list(cands[0]), "scored": len(cache),
               "infeasible": len(scores) - len(feasible)}
        history.append(rec)
        if on_generation is not None:
            on_generation(rec)
        mutation = []
        for i in range(cfg.mutation_num):
            child = list(cands[i])
            for f in range(num_fields):
                if rng.random() < cfg.mutation_prob:
                    child[f] = rng.randint(max(2, low), dim) if dim >= 2 else 1
            mutation.append(child)
        crossover = []
        seen: set[tuple[int, int]] = set()
        for _ in range(cfg.crossover_num):
            while True:
                x, y = rng.randint(0, cfg.crossover_num), rng.randint(0, cfg.crossover_num)
                if (x, y) not in seen:
                    break
            seen.add((x, y))
            hi = dim if cfg.official_crossover else max(num_fields - 1, 1)
            p = rng.randint(1, hi)
            crossover.append(list(cands[x][:p]) + list(cands[y][p:]))
        cands = [list(c) for c in cands[:cfg.keep_num]] + mutation + crossover
    if best is None:  # every candidate infeasible (only possible with a budget; the first population is feasible)
        raise ValueError(f"method.max_params_kept={budget}: no candidate within the budget was found")
    return best, best_score, history


@dataclasses.dataclass
class EvolutionStage:
    """No training: :meth:`run_stage` (called by the method runner instead of ``bars.run.train_one``) opens the
    stage's child run, builds the supernet, runs :func:`evolve` and records the result."""

    cfg: OptEmbedConfig
    folder: Path
    name: str = "evolution"
    init: bool = False
    model: MaskedModel | None = None

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        return train_cfg

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> MaskedModel:
        sdir = self.folder / "supernet"
        model = _build(backbone, spec, self.cfg, train_thresholds=False)
        model.load_state_dict(torch.load(sdir / "supernet.pt", map_location="cpu", weights_only=True), strict=True)
        saved = torch.load(sdir / "rows.pt", map_location="cpu", weights_only=True)
        if model.mask.blocks > 1:
            model.mask.set_units(saved["row_unit"])
        model.mask.set_fixed(saved["row_keep"], torch.full((len(model.mask.unit_names),), model.mask.dim))
        self.model = model
        return model

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        return {}

    def run_stage(self, cfg: Any, *, parent_run_id: str | None, extra_tags: Mapping[str, Any],
                  quiet: bool) -> Any:
        from bars.run import RunResult, _setup, _tracked, run_name
        from bars.timing import PhaseTimer
        from bars.train import evaluate, resolve_device

        say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
        timer = PhaseTimer()
        timer.start("config")
        seed = int(cfg.seed)
        timer.stop("config")
        setup = _setup(cfg, seed, timer, self)
        model = setup.model
        device = resolve_device(setup.train_cfg.device)
        if setup.train_cfg.num_threads > 0:
            torch.set_num_threads(setup.train_cfg.num_threads)
        model.to(device).eval()
        mask = model.mask
        valid, test = setup.ds.splits["valid"], setup.ds.splits["test"]
        bs = setup.train_cfg.eval_batch_size
        tags = {"model": cfg.model.id, "model_class": cfg.model.name, "data": cfg.data.name, "seed": seed,
                "device": str(device), "n_params": setup.n_params, **dict(extra_tags)}
        t0 = time.perf_counter()
        with _tracked(cfg, tags, parent_run_id, timer) as (run, _resolved):
            def score(cand: list[int]) -> float:
                mask.set_dims(cand)
                return float(evaluate(model, valid, bs, device, group_column=setup.groups)["auc"])

            def on_generation(rec: Mapping[str, Any]) -> None:
                row_keep = mask.row_keep
                kept = mask.parameters_kept(row_keep, torch.tensor(rec["candidate"])) / mask.parameters_total
                run.log_metrics({"evo_best_auc": rec["best"], "evo_worst_auc": rec["worst"],
                                 "evo_best_so_far_auc": rec["best_so_far"], "evo_best_params_kept": kept,
                                 "evo_scored": rec["scored"]}, step=rec["generation"])
                say(f"evolution {rec['generation']:>3}/{self.cfg.iterations}  best val AUC {rec['best']:.5f}  "
                    f"worst {rec['worst']:.5f}  best so far {rec['best_so_far']:.5f}  params kept {kept:.4f}")

            with timer.phase("epochs"):
                def cost(cand: list[int]) -> float:
                    return mask.parameters_kept(mask.row_keep, torch.tensor(cand)) / mask.parameters_total

                best, best_auc, history = evolve(score, len(mask.unit_names), mask.dim, self.cfg, seed, on_generation,
                                                 cost)
            mask.set_dims(best)
            val = evaluate(model, valid, bs, device, group_column=setup.groups)
            tst = evaluate(model, test, bs, device, group_column=setup.groups)
            out = self.folder / self.name
            save_checkpoint({"row_keep": mask.row_keep, "dims": mask.dims,
                             **({"row_unit": mask.row_unit} if mask.blocks > 1 else {})}, out / "arch.pt")
            atomic_write_text(out / "history.json", json.dumps(history, indent=1))
            best_gen = next(r["generation"] for r in history if r["best_so_far"] == best_auc)
            seconds = time.perf_counter() - t0
            metrics = {**{f"val_{k}": v for k, v in val.items()}, **{f"test_{k}": v for k, v in tst.items()},
                       **mask_metrics(mask), "n_params": float(setup.n_params), "epochs": float(len(history)),
                       "best_epoch": float(best_gen), "candidates_scored": float(history[-1]["scored"]),
                       "fit_seconds": seconds}
            run.log(metrics, step=len(history), tags={"stop_reason": "done", "best_epoch": best_gen,
                                                      "device": str(device)})
            run.log_text(json.dumps(history, indent=1), "evolution_history.json")
        say(f"\n== {run_name(cfg)} OptEmbed evolution: dims {best} (val AUC {best_auc:.5f}), embedding parameters "
            f"kept {metrics['embedding_params_kept']:.4f} ==")
        return RunResult(run_id=run.run_id, metrics=metrics, epochs=len(history), best_epoch=best_gen,
                         seconds=seconds, n_params=setup.n_params, device=str(device), stop_reason="done",
                         checkpoint=None)


@dataclasses.dataclass
class RetrainStage:
    cfg: OptEmbedConfig
    folder: Path
    name: str = "retrain"
    init: bool = True  # from scratch: fit initialises the backbone with the run's seed, as plain training
    model: MaskedModel | None = None

    def __post_init__(self) -> None:
        if self.cfg.retrain_from == "supernet":  # official --init_name: start from the supernet's weights
            self.init = False

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        return train_cfg

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> MaskedModel:
        arch = torch.load(self.folder / "evolution" / "arch.pt", map_location="cpu", weights_only=True)
        model = _build(backbone, spec, self.cfg, train_thresholds=False)
        if not self.init:  # the supernet's best-epoch weights (its thresholds too; the masks are set below)
            model.load_state_dict(torch.load(self.folder / "supernet" / "supernet.pt", map_location="cpu",
                                             weights_only=True), strict=True)
        if model.mask.blocks > 1:
            model.mask.set_units(arch["row_unit"])
        model.mask.set_fixed(arch["row_keep"], arch["dims"])
        self.model = model
        return model

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None
        return {**mask_metrics(self.model.mask), **self.model.bake().metrics()}


@dataclasses.dataclass
class FixedDimsStage:
    """A control, not a method: the backbone trained from scratch (BARS initialisation, the run's seed, BARS
    protocol) under a dimension allocation given by hand instead of searched: every row kept, the first ``dims[u]``
    embedding dimensions of unit ``u`` (a field, or with ``frequency_blocks`` a field's block of values by training
    count, rarest first: OptEmbed's retrain under ``arch.pt`` with the allocation written in). Pass it as
    ``bars.run.train_one(cfg, stage=...)`` on a config without a method; ``scripts/measure_methods.py
    --fixed-dims`` does, to measure what an allocation costs apart from any search (docs/methods.md)."""

    dims: list[int]
    frequency_blocks: list[int] = dataclasses.field(default_factory=list)
    name: str = "retrain"
    init: bool = True  # fit initialises the backbone with the run's seed, as plain training
    model: MaskedModel | None = None

    def train_config(self, train_cfg: TrainConfig) -> TrainConfig:
        return train_cfg

    def wrap(self, backbone: nn.Module, spec: Any, train_cfg: TrainConfig, seed: int) -> MaskedModel:
        cfg = OptEmbedConfig(frequency_blocks=list(self.frequency_blocks))
        self.model = _build(backbone, spec, cfg, train_thresholds=False)
        units = len(self.model.mask.unit_names)
        if len(self.dims) != units:
            raise ValueError(f"fixed dims: {len(self.dims)} given, the mask has {units} units "
                             f"({list(self.model.mask.unit_names)})")
        return self.model

    def bind_data(self, splits: Mapping[str, Any]) -> None:
        """The blocks need the training split's counts: the allocation is set here, after :meth:`wrap`."""
        assert self.model is not None
        mask = self.model.mask
        if mask.blocks > 1:
            mask.set_units(frequency_units(mask, splits["train"], self.frequency_blocks))
        mask.set_fixed(torch.ones_like(mask.row_keep), torch.as_tensor(self.dims))

    def on_epoch(self, log: EpochLog) -> None:
        pass

    def finish(self, model: nn.Module) -> Mapping[str, float]:
        assert self.model is not None
        return {**mask_metrics(self.model.mask), **self.model.bake().metrics()}


def final_model(cfg: OptEmbedConfig, backbone: nn.Module, spec: Any) -> MaskedModel:
    """The retrain stage's model as its checkpoint holds it (the masks fixed; the checkpoint fills ``row_keep`` and
    ``dims``): load the final stage's ``best.pt`` into it, then :meth:`MaskedModel.bake` (bars.recorded)."""
    model = _build(backbone, spec, cfg, train_thresholds=False)
    model.mask.set_fixed(torch.ones_like(model.mask.row_keep), model.mask.dims.clone())
    return model


def make_stage(name: str, cfg: OptEmbedConfig, folder: Path) -> SupernetStage | EvolutionStage | RetrainStage:
    if name == "supernet":
        return SupernetStage(cfg, folder)
    if name == "evolution":
        return EvolutionStage(cfg, folder)
    if name == "retrain":
        return RetrainStage(cfg, folder)
    raise ValueError(f"OptEmbed has no stage {name!r}; stages: {list(STAGES)}")
