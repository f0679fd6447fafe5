"""The BARS training protocol (DESIGN section 4), exactly, and nothing else.

``fit`` trains one model on one split and returns the best validation result with the best weights restored:

- Adam(lr); loss per batch = mean binary cross-entropy + (lambda_e / 2) * sum ||W||^2 over the *whole* embedding
  tables + (lambda_n / 2) * sum ||W||^2 over every other parameter (biases and norm layers included, as FuxiCTR
  does). ``loss="bce"`` (default) is FuxiCTR's: sigmoid, then BCE on the probability (torch clamps log at -100,
  so a confidently wrong row saturates: loss capped at 100, zero gradient); ``"bce_logits"`` is BCE on the logits
  (numerically exact, keeps training such rows);
- gradient norm clipped at ``clip_grad_norm`` (over all parameters);
- one batch = one call of :class:`TrainStep` (forward, loss, regularizers, backward, clip, Adam): ``fit`` runs
  exactly that object, and the FuxiCTR reference tests (tests/reference) run it too;
- initialisation: ``bars.models.layers.init_bars_`` (embeddings N(0, std) with a zero padding row, Linear
  xavier-normal, bias 0), unless the model defines its own ``init_bars_(embedding_std)`` method;
- validation metrics (every metric of the ``bars.metrics`` registry whose inputs the split provides; ``gauc``
  needs ``group_column``) after every epoch. The monitor (``train.monitor``: ``val_auc`` by default, or a
  weighted sum such as BARS x4's ``{val_auc: 1, val_logloss: -1}``) decides: an epoch improves when its score
  (the monitored value, negated when minimised) is ``>= best + min_delta`` (FuxiCTR's rule: it counts
  ``score < best + min_delta`` as no improvement). A non-improving epoch is a strike: LR *= ``lr_decay_factor``
  (floored at ``min_lr``). Training stops when ``max_strikes`` strikes are reached (consecutive ones when
  ``reset_strikes_on_improvement``, FuxiCTR's patience, which the published numbers assume) or after
  ``max_epochs``;
- the best weights are kept in memory and restored before returning; with ``checkpoint_path`` they are saved
  atomically (``torch.save`` to a temporary file, then ``os.replace``) once when fit ends, and also at an
  improvement when the last save is ``CHECKPOINT_EVERY_S`` (300 s) old or more, so a long run killed mid-way
  keeps a recent best on disk while a short run writes one file instead of one per improvement (issue 16).

The batch objective (regularizers, ``train.loss``, what a model's ``forward`` may return, a model's own
``training_loss``, multi-task models) is defined in :mod:`bars.objective` and re-exported here; the clipping,
the finite-loss check and logging stay here. A multi-task model is trained on every label and evaluated per task
(``<metric>_<task>`` keys, :func:`bars.metrics.compute_tasks`; one task: the plain keys, :func:`evaluate`).
Side effects arrive as callbacks (``on_epoch``): this module never imports mlflow or optuna. The hot loop does no
per-batch host synchronisation on CUDA (losses are accumulated on the device and checked for NaN/inf every
``_CUDA_CHECK_EVERY`` batches); on CPU the check is free and done before every optimizer step.
"""

from __future__ import annotations

import contextlib
import functools
import math
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor, nn

from bars import metrics
from bars.compute import SampleMeter
from bars.heap import reuse_freed_memory
from bars.objective import (
    LOSSES,
    TrainConfigError,
    add_regularization_grad,
    data_loss,
    final_logits,
    loss_function,
    model_tasks,
    regularization,
    regularization_value,
)
from bars.optim import FusedAdam, SparseTables  # noqa: F401 (FusedAdam re-exported)
from bars.optim import make_adam as _make_adam
from bars.optim import set_lr as _set_lr
from bars.precision import PRECISIONS, autocast, set_tf32, warn_if_slow  # noqa: F401 (re-exported)
from bars.precision import float_outputs as _float
from bars.train_config import TrainConfig
from bars.train_support import (  # re-exported (__all__)
    _init,
    _model_device,
    _split_parameters,
    load_checkpoint,
    resolve_device,
    save_checkpoint,
    seed_everything,
)

__all__ = [
    "LOSSES",
    "EpochLog",
    "FitResult",
    "NonFiniteLossError",
    "TrainConfig",
    "TrainConfigError",
    "TrainStep",
    "evaluate",
    "final_logits",
    "fit",
    "load_checkpoint",
    "loss_function",
    "model_tasks",
    "predict",
    "regularization",
    "regularization_value",
    "resolve_device",
    "save_checkpoint",
    "seed_everything",
]

_CUDA_CHECK_EVERY = 64  # batches between host syncs for the NaN/inf check on accelerators
_GRAPH_WARMUP = 3  # train.cuda_graph: eager steps before the capture (cuBLAS handles, Adam's state, ...)


def _batch_layout(xb: Mapping[str, Tensor], yb: Tensor) -> tuple:
    return (tuple((k, tuple(v.shape), v.dtype) for k, v in xb.items()), tuple(yb.shape), yb.dtype)


class NonFiniteLossError(FloatingPointError):
    """A batch loss was NaN or infinite; the message names the epoch, the batch and the value."""

    def __init__(self, epoch: int, batch: int, value: float) -> None:
        self.epoch, self.batch, self.value = epoch, batch, value
        super().__init__(
            f"non-finite training loss {value} at epoch {epoch}, batch {batch} (1-based); training stopped. "
            "Lower the learning rate or check the inputs (e.g. unscaled numeric features)."
        )


# ------------------------------------------------------------------------------------------------- records
@dataclass(frozen=True)
class EpochLog:
    epoch: int  # 1-based
    train_loss: float  # mean over the epoch's batches of the full objective (BCE + regularizers)
    val: dict[str, float]  # every evaluated metric by name (registry order): {"auc": .., "logloss": .., ...}
    monitor: float  # the monitored value (train.monitor) of this epoch
    lr: float  # learning rate used during this epoch (before any decay this epoch triggered)
    samples_per_s: float  # training rows / training seconds (validation excluded)
    seconds: float  # wall time of the epoch: training + validation
    improved: bool
    strikes: int  # strikes after this epoch
    train_samples: int = 0  # rows trained by the fit so far, this epoch included (bars.compute)
    valid_samples: int = 0  # rows validated by the fit so far, this epoch included

    @property
    def val_auc(self) -> float:
        """Validation AUC (single-task runs; a multi-task run has ``auc_<task>`` keys instead)."""
        return self.val["auc"]

    @property
    def val_logloss(self) -> float:
        return self.val["logloss"]

    def val_metrics(self) -> dict[str, float]:
        """``{"val_auc": .., "val_logloss": .., ...}``: the metric keys of this epoch's validation."""
        return {f"val_{k}": v for k, v in self.val.items()}


@dataclass(frozen=True)
class FitResult:
    best_epoch: int
    epochs: int
    best_val: dict[str, float]  # every evaluated metric by name at best_epoch: {"auc": .., "logloss": .., ...}
    history: list[EpochLog] = field(default_factory=list)
    seconds: float = 0.0  # wall time of fit (training + validation of every epoch)
    stop_reason: str = ""  # "early_stopping" | "max_epochs"
    device: str = "cpu"
    best_monitor: float = math.nan  # the monitored value at best_epoch
    # seconds of fit spent in the epochs' training passes ("train"), validation passes ("valid") and checkpoint
    # writes ("checkpoint"): the rest of ``seconds`` is bookkeeping (bars.run's breakdown of a run's wall time)
    phase_seconds: dict[str, float] = field(default_factory=dict)
    # train.cuda_graph: "off", "replayed <n> of <m> steps" or "fallback: <why the step could not be captured>"
    cuda_graph: str = "off"

    @property
    def seconds_per_epoch(self) -> float:
        """Wall seconds of fit per epoch run: the one definition (runs log it, the leaderboard shows it)."""
        return self.seconds / max(self.epochs, 1)


class Split(Protocol):
    """What fit/evaluate need from ``bars.data.loader.SplitTensors``."""

    features: dict[str, Tensor]
    label: Tensor

    def __len__(self) -> int: ...

    def batches(
        self, batch_size: int, shuffle: bool, seed: int, device: Any = None
    ) -> Iterator[tuple[dict[str, Tensor], Tensor]]: ...


# ------------------------------------------------------------------------------------------------- pieces
class TrainStep:
    """One optimisation step of the BARS protocol; ``fit`` calls it once per training batch.

    ``step = TrainStep(model, cfg)`` builds the optimizer (Adam over the embedding parameters, then the net
    parameters) and reads the loss, the two regularizers and the clipping norm from ``cfg``;
    ``step(xb, yb)`` runs forward, :meth:`objective`, backward, gradient clipping and the Adam update, and returns
    the objective's value (detached). The model must already be on its device and initialised.
    ``check_finite`` (default: on CPU) raises :class:`NonFiniteLossError` *before* a NaN/inf loss updates any
    weight; ``epoch`` / ``batch`` only label that error.

    Several processes (:mod:`bars.distributed`): ``forward_module`` is the model wrapped in
    ``DistributedDataParallel`` (the forward goes through it, so its backward averages the gradients over the
    processes) and ``distributed`` the process's context; ``step(xb, yb, weight=w)`` then takes this process's
    share of a global batch, ``w`` its share of the rows, and returns the global batch's objective (the same in
    every process: the finite-loss check raises in all of them or in none)."""

    def __init__(self, model: nn.Module, cfg: TrainConfig, *, check_finite: bool | None = None,
                 forward_module: nn.Module | None = None, distributed: Any = None) -> None:
        self.model = model
        self.forward_module = model if forward_module is None else forward_module
        self.distributed = distributed
        if distributed is not None:  # resolved once, not per step
            from bars.distributed import all_reduce_sum, ghost_rows

            self._all_reduce_sum, self._ghost_rows = all_reduce_sum, ghost_rows
        self.cfg = cfg
        if cfg.reuse_freed_memory:  # the step's large buffers (embedding gradients, ...) reused, not re-faulted
            reuse_freed_memory()
        self.device = _model_device(model)
        self.emb_params, self.net_params = _split_parameters(model)
        # a method's own parameters (OptFS's gates): trained by the same Adam, outside both regularizers
        own = getattr(model, "unregularized_parameters", None)
        self.free_params = [p for p in own() if p.requires_grad] if callable(own) else []
        self.params = self.emb_params + self.net_params + self.free_params
        if not self.params:
            raise ValueError("model has no trainable parameters")
        self.optimizer = _make_adam(self.params, cfg.learning_rate, self.device)
        self.loss_fn = loss_function(cfg.loss)
        self.lam_e, self.lam_n = float(cfg.embedding_regularizer), float(cfg.net_regularizer)
        self.clip = float(cfg.clip_grad_norm)
        self.check_finite = self.device.type == "cpu" if check_finite is None else check_finite
        # train.cuda_graph: CUDA and one process only (TrainConfig refuses processes > 1; no effect on the CPU)
        self._graph_wanted = bool(cfg.cuda_graph) and self.device.type == "cuda" and distributed is None
        self._graph: Any = None  # torch.cuda.CUDAGraph of the step, once captured
        self._graph_layout: tuple | None = None  # the batch layout (keys, shapes, dtypes) it was captured for
        self._graph_warm = 0  # eager warm-up steps taken
        self._static: tuple[dict[str, Tensor], Tensor] | None = None  # the graph's input tensors
        self._static_loss: Tensor | None = None  # and its output
        self.graph_fallback: str | None = None  # why the step could not be captured (then it runs eagerly)
        self.graph_captures = 0
        self.graph_replays = 0
        self.steps = 0
        self.sparse_tables: SparseTables | None = None  # SparseTables([]) keeps every table's gradient dense

    def regularization(self) -> Tensor:
        """``(lam_e / 2) ||E||^2 + (lam_n / 2) ||W||^2`` (differentiable; a zero tensor when both lambdas are 0)."""
        return self._add_regularization(torch.zeros((), device=self.device))

    def _add_regularization(self, loss: Tensor) -> Tensor:
        for reg in (regularization(self.emb_params, self.lam_e), regularization(self.net_params, self.lam_n)):
            if reg is not None:
                loss = loss + reg
        return loss

    def objective(self, outputs: Tensor | Mapping[str, Tensor], yb: Tensor) -> Tensor:
        """The data term of the model's ``outputs`` against ``yb`` (:func:`data_loss`: the model's own
        ``training_loss`` or the trainer's loss) plus the regularization term: what every batch minimises."""
        return self._add_regularization(data_loss(self.model, outputs, yb, self.loss_fn))

    def set_lr(self, lr: float) -> None:
        if self._graph is not None and lr != self.optimizer.param_groups[0]["lr"]:
            self._graph = None  # Adam's learning rate is a constant of the captured kernels: capture again
        _set_lr(self.optimizer, lr)

    def __call__(self, xb: dict[str, Tensor], yb: Tensor, *, epoch: int = 0, batch: int = 0,
                 weight: float = 1.0) -> Tensor:
        """One step. The regularizers' gradient ``lam * W`` is added to each parameter's gradient directly
        instead of back-propagating ``(lam / 2) ||W||^2`` through autograd (which squares, expands and multiplies
        whole tables, a large share of a step with big embedding tables): the same gradient in float32 bit for bit
        (``(2 W) * (lam / 2)`` and ``W * lam`` round alike; a sum of two gradients is commutative), so the
        gradients, clipping and the update are those of :meth:`objective`'s graph; the returned objective is
        its value (:func:`bars.objective.regularization_value`: bit for bit up to tables of 2**18 entries). On the
        CPU (one process) an embedding table that the step looks up once gets ``lam * W`` from that lookup's
        backward instead, in the same order: with the compiled kernels its gradient is held as the looked-up rows
        alone, then clipped and applied without a dense one (:class:`bars.optim.SparseTables`; ``sparse_tables =
        SparseTables([])`` keeps it dense; without the kernels, tables of width 16 or more get a dense one).

        ``train.cuda_graph`` (CUDA, one process): the first full batches run eagerly (warm-up), the next one
        captures the step as a CUDA graph, and every later batch of that layout copies its tensors into the
        graph's inputs and replays it: the same kernels on the same tensors, without Python and launch costs per
        kernel. A batch of another layout (the epoch's last, shorter one) runs eagerly. A model whose step cannot
        be captured (a host sync, a data-dependent shape) trains eagerly; :attr:`graph_fallback` says why."""
        self.steps += 1
        if self._graph_wanted and self.graph_fallback is None:
            layout = _batch_layout(xb, yb)
            if self._graph is not None and layout == self._graph_layout:
                return self._replay(xb, yb)
            if self._graph_layout is None or layout == self._graph_layout:
                self._graph_layout = layout
                if self._graph_warm < _GRAPH_WARMUP:
                    self._graph_warm += 1
                    side = torch.cuda.Stream(self.device)  # warm-up off the default stream (torch's recipe)
                    side.wait_stream(torch.cuda.current_stream(self.device))
                    with torch.cuda.stream(side):
                        loss = self._step(xb, yb, epoch, batch, weight)
                    torch.cuda.current_stream(self.device).wait_stream(side)
                    return loss
                return self._capture(xb, yb, epoch, batch, weight)
        return self._step(xb, yb, epoch, batch, weight)

    def graph_summary(self) -> str:
        """``train.cuda_graph``'s outcome so far: "off", "replayed <n> of <m> steps" or "fallback: <why>"."""
        if not self._graph_wanted:
            return "off"
        if self.graph_fallback is not None:
            return f"fallback: {self.graph_fallback}"
        return f"replayed {self.graph_replays} of {self.steps} steps"

    def _capture(self, xb: dict[str, Tensor], yb: Tensor, epoch: int, batch: int, weight: float) -> Tensor:
        """Capture the step on copies of this batch, then replay it (a capture runs nothing)."""
        self._static = ({k: v.clone() for k, v in xb.items()}, yb.clone())
        self.optimizer.zero_grad(set_to_none=True)  # the gradients are allocated in the graph's memory
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph, capture_error_mode="thread_local"):
                self._static_loss = self._step(*self._static, epoch, batch, weight, zero_grad=False,
                                               autocast_cache=False)
        except Exception as e:  # noqa: BLE001 - any capture failure: train eagerly, say why
            self.graph_fallback = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"
            self._graph, self._static = None, None
            self.optimizer.zero_grad(set_to_none=True)
            torch.cuda.synchronize(self.device)
            import warnings

            warnings.warn(f"train.cuda_graph: the step could not be captured ({self.graph_fallback}); "
                          "training eagerly", RuntimeWarning, stacklevel=3)
            return self._step(xb, yb, epoch, batch, weight)
        self._graph = graph
        self.graph_captures += 1
        return self._replay(xb, yb)

    def _replay(self, xb: dict[str, Tensor], yb: Tensor) -> Tensor:
        sx, sy = self._static
        for k, v in xb.items():
            sx[k].copy_(v)
        sy.copy_(yb)
        self._graph.replay()
        self.graph_replays += 1
        return self._static_loss.clone()  # the graph overwrites its output at the next replay

    def _step(self, xb: dict[str, Tensor], yb: Tensor, epoch: int, batch: int, weight: float, *,
              zero_grad: bool = True, autocast_cache: bool = True) -> Tensor:
        with self._regularizer_in_lookups() as tables:
            ghost = contextlib.nullcontext() if self.distributed is None else self._ghost_rows(weight == 0)
            with autocast(self.device, self.cfg.precision, cache=autocast_cache), ghost:
                outputs = self.forward_module(xb)
            if self.cfg.precision != "fp32":
                outputs = _float(outputs)
            data = data_loss(self.model, outputs, yb, self.loss_fn)
            if self.distributed is not None:  # this process's part of the global batch's mean loss
                data = data * weight
                loss = self._all_reduce_sum(data.detach().clone())  # the global batch's mean data loss, in every process
                data = data * self.distributed.world_size  # DistributedDataParallel averages: the sum of the parts
            else:
                loss = data.detach()
            reg_e = regularization_value(self.emb_params, self.lam_e)
            for reg in (reg_e, regularization_value(self.net_params, self.lam_n)):
                if reg is not None:
                    loss = loss + reg
            if self.check_finite and not torch.isfinite(loss):
                raise NonFiniteLossError(epoch, batch, float(loss))
            if zero_grad:
                self.optimizer.zero_grad(set_to_none=True)
            data.backward()
        emb = self.emb_params if not tables else [p for p in self.emb_params if not tables[id(p)].done]
        add_regularization_grad(emb, self.lam_e)
        add_regularization_grad(self.net_params, self.lam_n)
        if self.sparse_tables is None:  # no table in the lookups (GPU, several processes, no embedding regularizer)
            self.sparse_tables = SparseTables([])
        self.sparse_tables.step(self.optimizer, self.params, self.clip, tables, reg_e, self.lam_e)
        return loss

    def _regularizer_in_lookups(self) -> contextlib.AbstractContextManager[dict]:
        """The embedding tables whose lookup's backward writes their regularizer's gradient too (CPU, one process:
        :func:`bars.models.layers.embedding.regularizer_in_lookup_grad`, the same gradient with fewer passes
        over a big table); a no-op context elsewhere or without an embedding regularizer."""
        if self.lam_e == 0 or self.device.type != "cpu" or self.distributed is not None or not self.emb_params:
            return contextlib.nullcontext({})
        from bars.models.layers.embedding import regularizer_in_lookup_grad

        if self.sparse_tables is None:  # the tables whose gradient the lookup may hold sparse
            self.sparse_tables = SparseTables(self.emb_params)
        return regularizer_in_lookup_grad(self.emb_params, self.lam_e, self.sparse_tables.for_step())


@torch.no_grad()
def predict(model: nn.Module, split: Split, batch_size: int = 8192, device: Any = None, *,
            precision: str = "fp32") -> Tensor:
    """Probabilities (float32, on CPU) for every row of ``split`` in order: [N], or [N, T] for a multi-task
    model (one column per task); the model is in eval mode meanwhile and only its final prediction is used.
    ``precision`` as ``train.precision`` (:func:`autocast`)."""
    device = _model_device(model) if device is None else resolve_device(device)
    was_training = model.training
    model.eval()
    n_tasks = len(model_tasks(model))
    try:
        n = len(split)
        out = torch.empty((n, n_tasks) if n_tasks else n, dtype=torch.float32, device=device)
        start = 0
        with torch.inference_mode():
            for xb, _ in split.batches(batch_size, shuffle=False, seed=0, device=device):
                with autocast(torch.device(device), precision):
                    outputs = model(xb)
                logits = final_logits(outputs if precision == "fp32" else _float(outputs))
                b = logits.shape[0]
                if n_tasks:
                    if logits.dim() != 2 or logits.shape[1] != n_tasks:
                        raise ValueError(f"{type(model).__name__} declares {n_tasks} tasks but returned logits of "
                                         f"shape {tuple(logits.shape)}; expected [B, {n_tasks}]")
                    out[start : start + b] = logits.float()
                else:
                    out[start : start + b] = logits.reshape(-1).float()
                start += b
            if start != n:
                raise RuntimeError(f"split yielded {start} rows in batches but has {n}")
            probs = torch.sigmoid(out)
        return probs.cpu()
    finally:
        model.train(was_training)


def evaluate(model: nn.Module, split: Split, batch_size: int = 8192, device: Any = None, *,
             group_column: str | None = None, precision: str = "fp32", distributed: Any = None) -> dict[str, float]:
    """Every registered metric (``bars.metrics.compute``) of ``model`` on ``split`` by name, in registry order:
    ``{"auc": .., "logloss": .., ...}`` on probabilities = sigmoid(logits), float32. With ``group_column`` (a
    feature of the split, e.g. the user) the grouped metrics (gAUC) are computed too. A multi-task model
    (:func:`model_tasks`) is scored per task: ``{"auc_click": .., ...}``; with one task, under the plain keys.

    ``distributed`` (a :class:`bars.distributed.Context`; collective: every process calls it): each process
    scores its share of the rows with process 0's buffers, process 0 gathers the probabilities and computes the
    metrics, and every process returns process 0's values."""
    if distributed is not None:
        from bars import distributed as dist

        dist.broadcast_buffers(model)
        shard = dist.EvalShard(split, distributed, batch_size)
        local = predict(model, shard, batch_size, device, precision=precision)
        probs_all = dist.gather_rows(local, shard)
        scores: Any = None
        if probs_all is not None:  # process 0; an error there is raised in every process, not waited for
            try:
                scores = score(model, split, probs_all.numpy(), group_column)
            except Exception as exc:  # noqa: BLE001 - re-raised below, in every process
                scores = exc
        scores = dist.broadcast_object(scores, distributed)
        if isinstance(scores, BaseException):
            raise scores
        return scores
    return score(model, split, predict(model, split, batch_size, device, precision=precision).numpy(), group_column)


def score(model: nn.Module, split: Split, probs: np.ndarray, group_column: str | None = None) -> dict[str, float]:
    """The metrics of :func:`evaluate` for ``probs`` (what :func:`predict` returned for ``model`` on ``split``)."""
    tasks = model_tasks(model)
    y = split.labels if tasks else split.label
    y = y.detach().cpu().numpy() if isinstance(y, Tensor) else np.asarray(y)
    groups = None
    if group_column is not None:
        columns = {**split.features, **(getattr(split, "meta", None) or {})}  # a feature or a meta column
        if group_column not in columns:
            raise ValueError(f"group column {group_column!r} is not a feature or meta column of the split; "
                             f"columns: {sorted(columns)}")
        groups = columns[group_column].detach().cpu().numpy()
    if tasks:
        names = tuple(getattr(split, "label_names", ()) or ())
        if names != tasks:
            raise ValueError(f"{type(model).__name__} predicts tasks {list(tasks)} but the split's labels are "
                             f"{list(names)}")
        if len(tasks) > 1:
            return metrics.compute_tasks(y, probs, tasks, groups=groups)
        y, probs = y[:, 0], probs[:, 0]  # [N, 1] -> [N]
    return metrics.compute(y, probs, groups=groups)


def _state_copy(model: nn.Module) -> dict[str, Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


CHECKPOINT_EVERY_S = 300.0  # at an improvement, save the best weights when the last save is this old (or older)

EvaluateFn = Callable[[nn.Module, Split, int, torch.device], Mapping[str, float]]


# ------------------------------------------------------------------------------------------------- fit
def fit(
    model: nn.Module,
    train: Split,
    valid: Split,
    cfg: TrainConfig,
    *,
    seed: int,
    on_epoch: Callable[[EpochLog], None] | None = None,
    checkpoint_path: str | Path | None = None,
    init: bool = True,
    evaluate_fn: EvaluateFn | None = None,
    group_column: str | None = None,
    meter: SampleMeter | None = None,
    distributed: Any = None,
) -> FitResult:
    """Train ``model`` under the BARS protocol; best weights are restored on return.

    ``seed`` seeds python/numpy/torch before initialisation, and the shuffling of epoch ``e`` uses seed
    ``seed * 1_000_003 + e``. ``init=False`` keeps the model's current weights. ``evaluate_fn(model, split,
    batch_size, device) -> {metric name: value}`` replaces :func:`evaluate` (tests script validation curves with
    it). ``group_column`` names the feature that groups rows for grouped metrics (gAUC) in :func:`evaluate`.
    An exception raised by ``on_epoch`` propagates (e.g. a pruning signal); the model then keeps its last weights.
    ``meter`` (:class:`bars.compute.SampleMeter`) counts the rows trained and validated, a partial epoch cut short
    by an exception included (added to once per epoch, not per batch).

    ``distributed`` (a :class:`bars.distributed.Context`, the process group joined): this process is one of
    several training the run together (:mod:`bars.distributed`): the model is wrapped in
    ``DistributedDataParallel``, each process trains its share of every global batch and scores its share of the
    validation rows, and every decision (improvement, LR decay, stop) is taken on process 0's metrics, the same in
    every process. Only process 0 should pass ``checkpoint_path`` and ``on_epoch``.
    """
    if not isinstance(cfg, TrainConfig):
        raise TypeError(
            f"cfg must be a TrainConfig (use TrainConfig.from_cfg(cfg.train)), got {type(cfg).__name__}"
        )
    if len(train) == 0 or len(valid) == 0:
        raise ValueError(f"empty split: train has {len(train)} rows, valid has {len(valid)}")
    meter = SampleMeter() if meter is None else meter
    t_fit = time.perf_counter()
    if distributed is not None:
        from bars import distributed as dist

        device = dist.device_for(distributed, cfg.device)
        dist.init(distributed, device)
        if cfg.num_threads == 0 and device.type == "cpu":
            torch.set_num_threads(dist.cpu_threads(distributed))
    else:
        device = resolve_device(cfg.device)
    if cfg.num_threads > 0:
        torch.set_num_threads(cfg.num_threads)
    set_tf32(cfg.tf32)
    warn_if_slow(device, cfg.precision)
    seed_everything(seed, deterministic=cfg.deterministic)
    monitor = cfg.monitor_spec
    needs_groups = [m.name for m in monitor.metrics if "groups" in m.inputs]
    if needs_groups and group_column is None and evaluate_fn is None:
        raise ValueError(f"train.monitor {monitor.describe()} needs {needs_groups}, which needs a group column: "
                         f"set data.group_column to a feature of the dataset")
    if evaluate_fn is None:
        evaluate_fn = functools.partial(evaluate, group_column=group_column, precision=cfg.precision,
                                        distributed=distributed)

    model.to(device)
    train, valid = _to_device(train, device), _to_device(valid, device)
    if init:
        _init(model, cfg.embedding_init_std)
    all_labels = bool(model_tasks(model))  # a multi-task model trains on every label column
    forward_module = None
    restore_batch_norm: Callable[[], None] = lambda: None
    if distributed is not None:  # the same weights everywhere (seeded alike; process 0's, to be sure), then each
        # process its own random stream (dropout masks): process 0 keeps the one a single process would have
        from torch.nn.parallel import DistributedDataParallel

        dist.broadcast_parameters(model)
        unused = dist.unused_parameters(model, train, cfg, device, all_labels)
        restore_batch_norm = dist.global_batch_norm(model)  # put back when fit returns or raises
        if distributed.rank:
            torch.manual_seed((seed * 1_000_003 + 7_919 * distributed.rank) % 2**63)
        forward_module = DistributedDataParallel(
            model, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(unused),
            **dist.no_forward_buffer_sync(DistributedDataParallel))
    step = TrainStep(model, cfg, check_finite=device.type == "cpu", forward_module=forward_module,
                     distributed=distributed)
    check_every = 1 if device.type == "cpu" else _CUDA_CHECK_EVERY

    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    lr = float(cfg.learning_rate)
    best_score = -math.inf
    best_epoch = 0
    best_val: dict[str, float] = {}
    best_monitor = math.nan
    best_state: dict[str, Tensor] | None = None
    strikes = 0
    history: list[EpochLog] = []
    stop_reason = "max_epochs"
    n_train = len(train)
    n_batches = math.ceil(n_train / cfg.batch_size)
    phase = {"train": 0.0, "valid": 0.0, "checkpoint": 0.0}
    saved_at, unsaved = t_fit, False  # the last checkpoint save; best weights newer than it

    def save_best() -> None:
        nonlocal saved_at, unsaved
        t_ckpt = time.perf_counter()
        save_checkpoint(best_state, ckpt)
        saved_at, unsaved = time.perf_counter(), False
        phase["checkpoint"] += saved_at - t_ckpt

    try:
        for epoch in range(1, cfg.max_epochs + 1):
            t_epoch = time.perf_counter()
            (model if forward_module is None else forward_module).train()
            losses = torch.zeros(n_batches, dtype=torch.float32, device=device)
            nb = 0
            try:
                batches = train.batches(
                    cfg.batch_size, shuffle=True, seed=(seed * 1_000_003 + epoch) % 2**63, device=device,
                    **({"all_labels": True} if all_labels else {}),
                )
                shared = dist.shard_batches(batches, distributed) if distributed is not None else \
                    ((xb, yb, 1.0) for xb, yb in batches)
                for xb, yb, weight in shared:
                    losses[nb] = step(xb, yb, epoch=epoch, batch=nb + 1, weight=weight)
                    nb += 1
                    if check_every > 1 and nb % check_every == 0:
                        _check_losses(losses[:nb], epoch)
            finally:  # every batch but the last has batch_size rows: a cut-short epoch counts the batches it trained
                meter.train += n_train if nb == n_batches else min(nb * cfg.batch_size, n_train)
            if nb == 0:
                raise ValueError("train split yielded no batches")
            _check_losses(losses[:nb], epoch)
            train_loss = float(losses[:nb].mean())
            train_seconds = time.perf_counter() - t_epoch
            phase["train"] += train_seconds

            t_valid = time.perf_counter()
            val = {k: float(v) for k, v in evaluate_fn(model, valid, cfg.eval_batch_size, device).items()}
            meter.valid += len(valid)
            phase["valid"] += time.perf_counter() - t_valid
            keyed = {f"val_{k}": v for k, v in val.items()}
            value = monitor.value(keyed)
            score = monitor.score(keyed)
            improved = score >= best_score + cfg.min_delta  # FuxiCTR: "< best + min_delta" is no improvement
            epoch_lr = lr
            if improved:
                best_score, best_epoch, best_monitor = score, epoch, value
                best_val = dict(val)
                best_state = _state_copy(model)
                unsaved = ckpt is not None
                if unsaved and time.perf_counter() - saved_at >= CHECKPOINT_EVERY_S:
                    save_best()
                if cfg.reset_strikes_on_improvement:
                    strikes = 0
            else:
                strikes += 1
                lr = max(lr * cfg.lr_decay_factor, cfg.min_lr)
                step.set_lr(lr)
            log = EpochLog(
                epoch=epoch,
                train_loss=train_loss,
                val=val,
                monitor=value,
                lr=epoch_lr,
                samples_per_s=n_train / train_seconds if train_seconds > 0 else float("inf"),
                seconds=time.perf_counter() - t_epoch,
                improved=improved,
                strikes=strikes,
                train_samples=meter.train,
                valid_samples=meter.valid,
            )
            history.append(log)
            if on_epoch is not None:
                on_epoch(log)
            if strikes >= cfg.max_strikes:
                stop_reason = "early_stopping"
                break
    finally:
        restore_batch_norm()

    if unsaved and best_state is not None:
        save_best()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return FitResult(
        best_epoch=best_epoch,
        epochs=len(history),
        best_val=best_val,
        history=history,
        seconds=time.perf_counter() - t_fit,
        stop_reason=stop_reason,
        device=str(device),
        best_monitor=best_monitor,
        phase_seconds=phase,
        cuda_graph=step.graph_summary(),
    )


def _to_device(split: Split, device: torch.device) -> Split:
    """On an accelerator, move a split's tensors there once (if it has ``.to`` and fits); batches are then sliced
    on the device. On CPU, or when memory is short, batches are moved one by one."""
    if device.type == "cpu" or not hasattr(split, "to") or split.label.device == device:
        return split
    try:
        return split.to(device)
    except torch.OutOfMemoryError:
        torch.cuda.empty_cache()
        return split


def _check_losses(losses: Tensor, epoch: int) -> None:
    bad = ~torch.isfinite(losses)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise NonFiniteLossError(epoch, i + 1, float(losses[i]))
