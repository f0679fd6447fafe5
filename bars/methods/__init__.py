"""Methods: procedures that shrink a backbone model rather than new networks (issue 13), a first-class axis
beside the model and the data: ``make train MODEL=deepfm METHOD=optfs`` (``bars train method=optfs``).

A method is a sequence of named stages (OptFS: ``search`` -> ``retrain``). :func:`run_method` opens one MLflow
parent run for the method (tags ``method``, ``backbone``, ``model``, ``data``, ``seed``) and trains each stage
as a child run of it (tags ``method``, ``stage=<stage>``, ``backbone``) through ``bars.run.train_one`` with the
stage's hooks (:class:`StageHooks`: its own train settings, the backbone wrapped, per-epoch work, its own
metrics). A stage's outputs (OptFS: the gates, the rewind weights) are files in the method's work folder
(``paths.results/methods/<key>/<stage>/``), written atomically, then ``done.json`` last: a rerun of the same
config after a kill skips the stages that finished and reuses the parent run. The final stage's metrics (and
the method's own size figures, e.g. ``features_kept``) are logged to the parent run, so the parent is the
leaderboard row.

Method settings live in ``conf/method/<name>.yaml`` (``name`` + the method's keys); unknown keys are config
errors (:func:`check_method`, run by ``bars.validate``). ``method=none`` (conf/method/none.yaml) or no
``method`` block at all is plain training: the default config composes no ``method`` block, so every existing
run's config (and its fingerprint) is unchanged. A sweep over a method merges ``conf/search/method_<name>.yaml``
into the model's search space (``method.*`` keys).

This module imports no torch: ``bars.validate`` uses :func:`check_method`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

from omegaconf import DictConfig

from bars.config import to_container

if TYPE_CHECKING:
    from bars.run import RunResult

__all__ = ["METHODS", "DNISConfig", "OptEmbedConfig", "OptFSConfig", "OptInterConfig", "StageHooks", "check_method",
           "final_model", "final_stage",
           "method_config", "method_name", "run_method"]


@dataclasses.dataclass(frozen=True)
class OptFSConfig:
    """OptFS (Lyu et al., WWW 2023), keys of conf/method/optfs.yaml; defaults are the official code's
    (``maskTrainer.py`` arguments) except ``search_epochs`` (official 20; the README's settings use 5-15)."""

    search_epochs: int = 10        # epochs of the gate search (fixed: no early stopping, no LR decay)
    final_temperature: float = 200.0  # temperature of the last search epoch; epoch e (0-based) uses T^(e/(E-1))
    rewind_epoch: int = 1          # the retrain starts from the weights after this many search epochs (0: init)
    gate_init: float = 0.5         # initial gate logit m (official --mask_init)
    sparsity: float = 1e-8         # lambda of the penalty sum sigmoid(T m) (official --reg_lambda)

    def problems(self) -> list[str]:
        out = []
        if not (isinstance(self.search_epochs, int) and not isinstance(self.search_epochs, bool)
                and self.search_epochs >= 2):
            out.append(f"method.search_epochs must be an int >= 2, got {self.search_epochs!r}")
        elif not (isinstance(self.rewind_epoch, int) and 0 <= self.rewind_epoch < self.search_epochs):
            out.append(f"method.rewind_epoch must be an int in [0, search_epochs={self.search_epochs}), "
                       f"got {self.rewind_epoch!r}")
        if not (_num(self.final_temperature) and self.final_temperature > 0):
            out.append(f"method.final_temperature must be a number > 0, got {self.final_temperature!r}")
        if not _num(self.gate_init):
            out.append(f"method.gate_init must be a number, got {self.gate_init!r}")
        if not (_num(self.sparsity) and self.sparsity >= 0):
            out.append(f"method.sparsity must be a number >= 0, got {self.sparsity!r}")
        return out


@dataclasses.dataclass(frozen=True)
class DNISConfig:
    """DNIS (Cheng, Shen, Huang, arXiv 2006.04466; no public code), keys of conf/method/dnis.yaml. The paper's
    settings that bars could not read are chosen here and listed in docs/fidelity.md ("DNIS (issue 13)")."""

    search_epochs: int = 5         # epochs of the search (fixed: no early stopping, no LR decay)
    alpha_lr: float = 1e-3         # Adam learning rate of the selection weights (their own optimizer)
    alpha_init: float = 1.0        # initial selection weight (1: the search starts from the plain model)
    l1: float = 1e-4               # weight of sum |alpha| in the validation objective of the selection step
    keep_ratio: float | None = 0.5  # prune to at most this fraction of the embedding parameters
    threshold: float | None = None  # or: keep |alpha| > threshold (exactly one of the two is set)
    min_dims: int = 0              # bars switch (0 = the paper): dims each field keeps whatever the threshold
    prune: str = "global"          # bars switch ("global" = the paper): "per_row" (|alpha| / rows), "per_field"
    retrain_from: str = "scratch"  # bars switch ("scratch" = the paper): "search" (its last weights), "search_scaled"

    def problems(self) -> list[str]:
        out = []
        if not (isinstance(self.search_epochs, int) and not isinstance(self.search_epochs, bool)
                and self.search_epochs >= 1):
            out.append(f"method.search_epochs must be an int >= 1, got {self.search_epochs!r}")
        if not (_num(self.alpha_lr) and self.alpha_lr > 0):
            out.append(f"method.alpha_lr must be a number > 0, got {self.alpha_lr!r}")
        if not _num(self.alpha_init):
            out.append(f"method.alpha_init must be a number, got {self.alpha_init!r}")
        if not (_num(self.l1) and self.l1 >= 0):
            out.append(f"method.l1 must be a number >= 0, got {self.l1!r}")
        if (self.keep_ratio is None) == (self.threshold is None):
            out.append(f"method.keep_ratio and method.threshold: set exactly one (the other null), got "
                       f"keep_ratio={self.keep_ratio!r}, threshold={self.threshold!r}")
        elif self.keep_ratio is not None and not (_num(self.keep_ratio) and 0 < self.keep_ratio <= 1):
            out.append(f"method.keep_ratio must be a number in (0, 1], got {self.keep_ratio!r}")
        elif self.threshold is not None and not (_num(self.threshold) and self.threshold >= 0):
            out.append(f"method.threshold must be a number >= 0, got {self.threshold!r}")
        if not (isinstance(self.min_dims, int) and not isinstance(self.min_dims, bool) and self.min_dims >= 0):
            out.append(f"method.min_dims must be an int >= 0, got {self.min_dims!r}")
        if self.prune not in ("global", "per_row", "per_field"):
            out.append(f"method.prune must be 'global', 'per_row' or 'per_field', got {self.prune!r}")
        elif self.prune != "global" and self.keep_ratio is None:
            out.append(f"method.prune={self.prune} prunes against the keep_ratio budget: set method.keep_ratio")
        if self.retrain_from not in ("scratch", "search", "search_scaled"):
            out.append(f"method.retrain_from must be 'scratch', 'search' or 'search_scaled', got {self.retrain_from!r}")
        return out


@dataclasses.dataclass(frozen=True)
class OptEmbedConfig:
    """OptEmbed (Lyu et al., CIKM 2022, https://github.com/fuyuanlyu/OptEmbed), keys of conf/method/optembed.yaml;
    defaults are the official code's flags and its README's settings (docs/fidelity.md "OptEmbed (issue 13)")."""

    threshold_lr: float = 1e-4     # SGD learning rate of the per-field thresholds (official --t_lr; README 1e-4)
    threshold_reg: float = 1e-4    # weight of sum_f exp(-t_f) in the supernet's loss (official --alpha)
    threshold_init: float = 0.0    # initial threshold (official init_threshold(0))
    norm: int = 1                  # the row norm thresholded: 1 or 2 (official --norm 1)
    threshold_level: str = "field"  # one threshold per field, or per feature value (official --mode_threshold)
    supernet_epochs: int | None = None  # null: train.max_epochs (the supernet trains under the BARS protocol)
    iterations: int = 30           # generations of the evolutionary search (official --epoch 30)
    keep_num: int = 15             # top candidates kept per generation (README k = 15)
    mutation_num: int = 10         # mutated children per generation (from the top mutation_num)
    crossover_num: int = 10        # crossover children per generation (parents from the top crossover_num + 1)
    mutation_prob: float = 0.1     # per-field mutation probability (official --m_prob)
    official_crossover: bool = False  # True: the crossover point drawn in [1, d] as the official code (bars: [1, F-1])
    max_params_kept: float | None = None  # bars switch (null = the paper): the evolution's candidates keep at most
    # this fraction of the embedding parameters (others are infeasible: never scored, never chosen)
    retrain_from: str = "scratch"  # "scratch" (official default --init_name init.pth) or "supernet" (official
    # --init_name <supernet file>: the retrain starts from the supernet's best-epoch weights)
    min_dims: int = 1             # bars switch (1 = the official ranges): the evolution's floor per field dimension
    frequency_blocks: tuple[int, ...] | list[int] = ()  # bars switch (empty = the paper: a dimension per field):
    # training-count cutoffs splitting every field's values into len + 1 blocks, each with its own dimension
    min_row_count: int = 0        # bars switch (0 = the paper): rows of feature values seen fewer times than this in
    # the training split are pruned (zero) from the supernet on, whatever their norm (frequency-aware row pruning)

    def problems(self) -> list[str]:
        out = []

        def int_at_least(name: str, low: int) -> None:
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
                out.append(f"method.{name} must be an int >= {low}, got {v!r}")

        if not (_num(self.threshold_lr) and self.threshold_lr >= 0):
            out.append(f"method.threshold_lr must be a number >= 0, got {self.threshold_lr!r}")
        if not (_num(self.threshold_reg) and self.threshold_reg >= 0):
            out.append(f"method.threshold_reg must be a number >= 0, got {self.threshold_reg!r}")
        if not _num(self.threshold_init):
            out.append(f"method.threshold_init must be a number, got {self.threshold_init!r}")
        if self.norm not in (1, 2) or isinstance(self.norm, bool):
            out.append(f"method.norm must be 1 or 2, got {self.norm!r}")
        if self.threshold_level not in ("field", "feature"):
            out.append(f"method.threshold_level must be 'field' or 'feature', got {self.threshold_level!r}")
        if self.supernet_epochs is not None:
            int_at_least("supernet_epochs", 1)
        for name in ("iterations",):
            int_at_least(name, 1)
        for name in ("keep_num", "mutation_num", "crossover_num"):
            int_at_least(name, 0)
        if not out:
            if self.mutation_num + self.crossover_num < 1:
                out.append("method.mutation_num + method.crossover_num must be >= 1 (no new candidates otherwise)")
            elif self.crossover_num > 0 and self.keep_num + self.mutation_num < 1:
                out.append("method.keep_num + method.mutation_num must be >= 1 when method.crossover_num > 0 "
                           "(crossover parents are the top crossover_num + 1 candidates)")
        if not (_num(self.mutation_prob) and 0 <= self.mutation_prob <= 1):
            out.append(f"method.mutation_prob must be a number in [0, 1], got {self.mutation_prob!r}")
        if not isinstance(self.official_crossover, bool):
            out.append(f"method.official_crossover must be true or false, got {self.official_crossover!r}")
        if self.max_params_kept is not None and not (_num(self.max_params_kept) and 0 < self.max_params_kept <= 1):
            out.append(f"method.max_params_kept must be null or a number in (0, 1], got {self.max_params_kept!r}")
        if self.retrain_from not in ("scratch", "supernet"):
            out.append(f"method.retrain_from must be 'scratch' or 'supernet', got {self.retrain_from!r}")
        if not (isinstance(self.min_dims, int) and not isinstance(self.min_dims, bool) and self.min_dims >= 1):
            out.append(f"method.min_dims must be an int >= 1, got {self.min_dims!r}")
        fb = self.frequency_blocks
        if not (isinstance(fb, (list, tuple)) and all(isinstance(c, int) and not isinstance(c, bool) and c >= 1
                                                        for c in fb) and list(fb) == sorted(set(fb))):
            out.append(f"method.frequency_blocks must be a list of increasing ints >= 1 (training counts), got {fb!r}")
        if not (isinstance(self.min_row_count, int) and not isinstance(self.min_row_count, bool)
                and self.min_row_count >= 0):
            out.append(f"method.min_row_count must be an int >= 0, got {self.min_row_count!r}")
        return out


@dataclasses.dataclass(frozen=True)
class OptInterConfig:
    """OptInter (Lyu et al., ICDE 2022; https://github.com/fuyuanlyu/OptInter @72735504), keys of
    conf/method/optinter.yaml; defaults are the official ``CriteoSearch.py`` arguments where it has them
    (``epochs``, ``arch_lr``, ``tau``, ``Y``); ``hash_rows``, ``fields`` and ``max_embedding_bytes`` are bars'."""

    search_epochs: int = 10        # at most this many search epochs; stops at the first non-improving one
    arch_lr: float = 1e-3          # Adam learning rate of the architecture weights alpha (their own optimizer)
    tau: float = 5e-5              # temperature t = max(0.01, 1 - tau * training steps) of softmax(alpha / t)
    min_count: int = 20            # a pair value seen fewer times in train reads the pair's OOV row (official Y)
    hash_rows: int = 1_000_000     # rows per memorised pair table (beyond: known values hashed into this many)
    fields: list[str] | None = None  # pairs over these categorical fields (null: every categorical field)
    max_embedding_bytes: int = 4 * 2**30  # stop before allocating more float32 bytes of pair tables
    # bars switches (null / "scratch" = the official procedure; docs/fidelity.md 34, measured in docs/methods.md)
    anneal_epochs: float | None = None  # t reaches its floor 0.01 after this many search epochs (replaces tau)
    max_pairs_kept: float | None = None  # keep at most this share of the pairs: the weakest keep-scores dropped
    retrain_from: str = "scratch"  # "search": the retrain's embedding tables start from the search's best epoch
    retrain_max_strikes: int | None = None  # the retrain's train.max_strikes (null: the run's)
    arch_data: str = "train"  # "valid": alpha stepped on the next validation batch (first-order bi-level)

    def problems(self) -> list[str]:
        out = []
        for key, low in (("search_epochs", 1), ("min_count", 1), ("hash_rows", 1), ("max_embedding_bytes", 1)):
            v = getattr(self, key)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
                out.append(f"method.{key} must be an int >= {low}, got {v!r}")
        if not (_num(self.arch_lr) and self.arch_lr > 0):
            out.append(f"method.arch_lr must be a number > 0, got {self.arch_lr!r}")
        if not (_num(self.tau) and self.tau >= 0):
            out.append(f"method.tau must be a number >= 0, got {self.tau!r}")
        if self.fields is not None and not (isinstance(self.fields, (list, tuple)) and len(self.fields) >= 2
                                            and all(isinstance(f, str) for f in self.fields)
                                            and len(set(self.fields)) == len(self.fields)):
            out.append(f"method.fields must be null or a list of at least 2 distinct field names, got {self.fields!r}")
        if self.anneal_epochs is not None and not (_num(self.anneal_epochs) and self.anneal_epochs > 0):
            out.append(f"method.anneal_epochs must be null or a number > 0, got {self.anneal_epochs!r}")
        if self.max_pairs_kept is not None and not (_num(self.max_pairs_kept) and 0 < self.max_pairs_kept <= 1):
            out.append(f"method.max_pairs_kept must be null or a number in (0, 1], got {self.max_pairs_kept!r}")
        if self.retrain_from not in ("scratch", "search"):
            out.append(f"method.retrain_from must be 'scratch' or 'search', got {self.retrain_from!r}")
        v = self.retrain_max_strikes
        if v is not None and not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
            out.append(f"method.retrain_max_strikes must be null or an int >= 1, got {v!r}")
        if self.arch_data not in ("train", "valid"):
            out.append(f"method.arch_data must be 'train' or 'valid', got {self.arch_data!r}")
        return out


def _num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


# name -> (config class, module defining ``stages(config) -> list[StageSpec]``); ``none`` is plain training
METHODS: dict[str, tuple[type, str]] = {
    "optfs": (OptFSConfig, "bars.methods.optfs"),
    "dnis": (DNISConfig, "bars.methods.dnis"),
    "optembed": (OptEmbedConfig, "bars.methods.optembed"),
    "optinter": (OptInterConfig, "bars.methods.optinter"),
}


class StageHooks(Protocol):
    """What ``bars.run.train_one(cfg, stage=...)`` calls for one stage of a method."""

    name: str
    init: bool  # fit initialises the model (False: the stage's wrap set its weights)

    def train_config(self, train_cfg: Any) -> Any: ...  # bars.train.TrainConfig -> the stage's

    def wrap(self, model: Any, spec: Any, train_cfg: Any, seed: int) -> Any: ...  # the backbone -> what is trained

    def on_epoch(self, log: Any) -> None: ...  # after each epoch, before it is logged

    def finish(self, model: Any) -> Mapping[str, float]: ...  # after fit, before test: write outputs, own metrics

    # optional: ``bind_data(splits)``, called after ``wrap`` with the dataset's splits (DNIS's selection step
    # reads validation batches during training)


def method_name(cfg: DictConfig) -> str | None:
    """``cfg.method.name``, or None for plain training (no method block, or ``none``)."""
    node = cfg.get("method")
    name = None if node is None else node.get("name")
    return None if name in (None, "none") else str(name)


def method_config(cfg: DictConfig) -> Any:
    """The method's config dataclass from ``cfg.method`` (strict: unknown keys raise ValueError)."""
    name = method_name(cfg)
    if name not in METHODS:
        raise ValueError(f"method.name {name!r} is not one of {['none', *sorted(METHODS)]}")
    klass = METHODS[name][0]
    node = dict(to_container(cfg.method) or {})
    node.pop("name", None)
    valid = [f.name for f in dataclasses.fields(klass)]
    unknown = sorted(set(node) - set(valid))
    if unknown:
        raise ValueError(f"unknown method.{name} key(s) {unknown}; valid keys are {valid}")
    out = klass(**node)
    for f in dataclasses.fields(klass):  # YAML ints (and "1e-8" strings) for float keys: accepted, as train.*
        v = getattr(out, f.name)
        if f.type in ("float", "float | None") and (_num(v) or isinstance(v, str)):
            try:
                object.__setattr__(out, f.name, float(v))
            except ValueError:
                pass
    return out


def check_method(cfg: DictConfig) -> list[str]:
    """Every problem of the ``method`` block (empty without one)."""
    node = cfg.get("method")
    if node is None:
        return []
    if not isinstance(node, Mapping) and not isinstance(node, DictConfig):
        return [f"method must be a mapping with a name (conf/method/), got {node!r}"]
    name = node.get("name")
    if name == "none":
        extra = sorted(set(node) - {"name"})
        return [f"method=none takes no keys, got {extra}"] if extra else []
    if name not in METHODS:
        return [f"method.name {name!r} is not one of {['none', *sorted(METHODS)]} (conf/method/)"]
    try:
        mcfg = method_config(cfg)
    except (TypeError, ValueError) as e:
        return [str(e)]
    return mcfg.problems()


def final_stage(name: str) -> str:
    """The name of method ``name``'s last stage (whose run holds the method's checkpoint and metrics)."""
    import importlib

    if name not in METHODS:
        raise ValueError(f"method {name!r} is not one of {sorted(METHODS)}")
    return str(importlib.import_module(METHODS[name][1]).STAGES[-1])


def final_model(cfg: DictConfig, backbone: Any, spec: Any, checkpoint: Any = None) -> Any:
    """The final stage's model of ``cfg``'s method over ``backbone``, as its checkpoint holds it (what
    ``bars predict`` / ``bars export`` / ``bars compress`` load a method run's ``best.pt`` into), via the method
    module's hook ``final_model(method_config, backbone, spec)``; a hook that also takes ``checkpoint`` (the
    final stage's ``best.pt``: OptInter reads its architecture from it) is given it. The model's ``bake()`` gives
    the backbone with the selection folded in (:class:`bars.methods.wrapper.BackboneWrapper`). A method module
    without the hook raises ``NotImplementedError`` naming it."""
    import importlib
    import inspect

    name = str(method_name(cfg))
    module = importlib.import_module(METHODS[name][1])
    hook = getattr(module, "final_model", None)
    if hook is None:
        raise NotImplementedError(f"method {name!r} cannot be loaded for scoring: {module.__name__} has no "
                                  "final_model(config, backbone, spec) hook (bars.methods.final_model)")
    if "checkpoint" in inspect.signature(hook).parameters:
        return hook(method_config(cfg), backbone, spec, checkpoint=checkpoint)
    return hook(method_config(cfg), backbone, spec)


def run_method(cfg: DictConfig, **kwargs: Any) -> RunResult:
    """Run ``cfg``'s method over its backbone (``cfg.model``): see the module docstring and
    :func:`bars.methods.runner.run_method`."""
    from bars.methods.runner import run_method as run

    return run(cfg, **kwargs)
