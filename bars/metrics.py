"""Evaluation metrics: one definition used everywhere (trainer, runs, sweeps, leaderboard), and their registry.

The registry (:func:`register`; read with :func:`registered`, :func:`get`, :func:`compute`) is what the rest
of bars iterates over: the trainer evaluates every registered metric whose inputs the dataset provides, the
per-epoch record and MLflow hold ``val_<name>`` / ``test_<name>`` for each, the sweep records them per trial,
the leaderboard has a column per metric its runs recorded. Adding a metric is one function plus one
``register(...)`` line (docs/howto-metric.md). Built in: ``auc`` (max), ``logloss`` (min), ``gauc`` (max; needs
the dataset's group column, ``data.group_column``).

Multi-task (several label columns, ``FeatureSpec.labels``): every registered metric is computed per task
(:func:`compute_tasks`) under the name ``<metric>_<task>``, so the keys are ``<split>_<metric>_<task>``:
``val_auc_click``, ``test_logloss_conversion``, ``val_gauc_click``. :func:`parse_key` splits a key back into
(split, metric, task); the monitor, MLflow and the leaderboard address per-task values by these keys
(:func:`metric_columns`, :func:`column_label`). A task name is a label column name (a lower-case identifier).

A :class:`Monitor` is what training selects on (``train.monitor``): one metric key such as ``val_auc`` (its
direction from the registry) or a mapping of keys to weights whose weighted sum is maximised (BARS x4:
``{val_auc: 1, val_logloss: -1}``, FuxiCTR's ``{AUC: 1, logloss: -1}``).

All functions take numpy arrays, torch tensors (any device; detached and copied to CPU) or sequences, and return a
Python ``float``. Labels must be 0/1 (bool, int or float). They agree with scikit-learn to 1e-9 (tests).

- :func:`auc`: area under the ROC curve, the Mann-Whitney statistic with ties counted as one half
  (= ``sklearn.metrics.roc_auc_score``). O(n log n): the positive and the negative scores are sorted separately
  (numpy's vectorised sort, much faster than an argsort) and every positive is located among the negatives by
  binary search. Counting is done in exact integers, the single division comes last.
- :func:`logloss`: mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]``.
- :func:`gauc`: group AUC: the AUC of every group (e.g. user) computed separately, then averaged with weights
  equal to the group's number of rows. Groups with a single class (all clicks or no click) have no AUC and are
  skipped -- they contribute neither to the numerator nor to the weights. This is the definition used by
  FuxiCTR/BARS (``gAUC``, weighted by impressions per user).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["INPUTS", "SPLITS", "Metric", "MetricError", "Monitor", "auc", "column_label", "compute", "compute_tasks",
           "gauc", "get", "logloss", "metric_columns", "metric_keys", "parse_key", "register", "registered",
           "task_key", "unregister"]


class MetricError(ValueError):
    """Inputs a metric cannot be computed on (length mismatch, non-binary labels, one class, NaN scores)."""


def _to_numpy(x: Any, name: str) -> np.ndarray:
    try:
        import torch

        if isinstance(x, torch.Tensor):
            x = x.detach()
            if x.dtype == torch.bfloat16 or x.dtype == torch.float16:
                x = x.float()
            x = x.cpu().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency
        pass
    arr = np.asarray(x)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and 1 in arr.shape else arr
    if arr.ndim != 1:
        raise MetricError(f"{name} must be one-dimensional, got shape {arr.shape}")
    return arr


def _labels(y_true: Any) -> np.ndarray:
    """0/1 labels -> bool array; anything else is an error that shows the offending values."""
    y = _to_numpy(y_true, "y_true")
    if y.dtype == np.bool_:
        return y
    if y.dtype.kind not in "biuf":
        raise MetricError(f"y_true must be numeric 0/1 labels, got dtype {y.dtype}")
    is_one = y == 1
    if not np.all(is_one | (y == 0)):
        bad = np.unique(y[~(is_one | (y == 0))])[:5]
        raise MetricError(f"y_true must contain only 0 and 1; found other values such as {bad.tolist()}")
    return is_one


def _scores(y_score: Any, n: int, name: str = "y_score") -> np.ndarray:
    s = _to_numpy(y_score, name)
    if s.dtype == np.bool_:
        s = s.astype(np.int8)
    if s.dtype.kind not in "biuf":
        raise MetricError(f"{name} must be numeric, got dtype {s.dtype}")
    if s.shape[0] != n:
        raise MetricError(f"y_true has {n} rows but {name} has {s.shape[0]}")
    if s.dtype.kind == "f" and np.isnan(s).any():
        raise MetricError(f"{name} contains {int(np.isnan(s).sum())} NaN value(s)")
    return s


def auc(y_true: Any, y_score: Any) -> float:
    """ROC AUC with ties averaged (equals ``sklearn.metrics.roc_auc_score``).

    Raises :class:`MetricError` (a ``ValueError``) on length mismatch, labels other than 0/1, NaN scores, or when
    only one class is present (AUC is undefined then).
    """
    y = _labels(y_true)
    s = _scores(y_score, y.shape[0])
    if y.shape[0] == 0:
        raise MetricError("auc of an empty input is undefined")
    pos = np.compress(y, s)  # copies; compress is several times faster than boolean indexing
    neg = np.compress(~y, s)
    pos.sort()
    neg.sort()
    n_pos, n_neg = pos.shape[0], neg.shape[0]
    if n_pos == 0 or n_neg == 0:
        raise MetricError(
            f"auc is undefined when only one class is present (positives {n_pos}, negatives {n_neg})"
        )
    # negatives strictly below each positive
    below = np.searchsorted(neg, pos, side="left")
    # ties: only positives whose score also occurs among the negatives need the second search
    idx = np.minimum(below, n_neg - 1)
    tied = neg[idx] == pos
    twice = 2 * int(below.sum(dtype=np.int64))
    if tied.any():
        pt = pos[tied]
        twice += int((np.searchsorted(neg, pt, side="right") - below[tied]).sum(dtype=np.int64))
    return twice / (2.0 * n_pos * n_neg)


def logloss(y_true: Any, y_prob: Any, eps: float = 1e-7) -> float:
    """Mean binary cross-entropy of probabilities clipped to ``[eps, 1 - eps]`` (natural log)."""
    y = _labels(y_true)
    p = _scores(y_prob, y.shape[0], "y_prob").astype(np.float64, copy=False)
    if y.shape[0] == 0:
        raise MetricError("logloss of an empty input is undefined")
    if not 0.0 <= eps < 0.5:
        raise MetricError(f"eps must be in [0, 0.5), got {eps}")
    if (p < 0).any() or (p > 1).any():
        raise MetricError(
            f"y_prob must be probabilities in [0, 1]; found min {p.min()} max {p.max()} (pass sigmoid(logits))"
        )
    p = np.clip(p, eps, 1.0 - eps)
    ll = np.where(y, np.log(p), np.log1p(-p))
    return float(-ll.mean())


def gauc(y_true: Any, y_score: Any, groups: Any) -> float:
    """Group AUC: per-group AUC averaged with weights = rows per group; single-class groups are skipped.

    Raises :class:`MetricError` when no group has both classes.
    """
    y = _labels(y_true)
    n = y.shape[0]
    s = _scores(y_score, n)
    g = _to_numpy(groups, "groups")
    if g.shape[0] != n:
        raise MetricError(f"y_true has {n} rows but groups has {g.shape[0]}")
    if n == 0:
        raise MetricError("gauc of an empty input is undefined")
    fast = _gauc_packed(y, s, g)
    if fast is not None:
        return fast
    order = np.lexsort((s, g))  # by group, then score
    gs, ss, ys = g[order], s[order], y[order]
    new_group = np.empty(n, dtype=bool)
    new_group[0] = True
    new_group[1:] = gs[1:] != gs[:-1]
    new_run = new_group.copy()  # a run = rows of one group with equal scores
    new_run[1:] |= ss[1:] != ss[:-1]
    run_start = np.flatnonzero(new_run)
    group_start = np.flatnonzero(new_group)

    pos_i = ys.astype(np.int64)
    cum_neg = np.concatenate(([0], np.cumsum(1 - pos_i)))  # negatives before row i
    run_pos = np.add.reduceat(pos_i, run_start)
    run_len = np.diff(np.append(run_start, n))
    run_neg = run_len - run_pos
    run_group = np.cumsum(new_group)[run_start] - 1  # group id of each run
    neg_below = cum_neg[run_start] - cum_neg[group_start][run_group]  # negatives below the run, same group
    first_run_of_group = np.flatnonzero(np.diff(np.append(-1, run_group)))
    twice = np.add.reduceat(2 * run_pos * neg_below + run_pos * run_neg, first_run_of_group)

    g_len = np.diff(np.append(group_start, n))
    g_pos = np.add.reduceat(pos_i, group_start)
    g_neg = g_len - g_pos
    valid = (g_pos > 0) & (g_neg > 0)
    if not valid.any():
        raise MetricError(f"gauc: none of the {g_len.shape[0]} groups has both classes")
    per_group = twice[valid] / (2.0 * g_pos[valid] * g_neg[valid])
    w = g_len[valid].astype(np.float64)
    return float((per_group * w).sum() / w.sum())


_SMALL_EXACT = (np.float32, np.float16, np.int8, np.int16, np.uint8, np.uint16, np.bool_)


def _gauc_packed(y: np.ndarray, s: np.ndarray, g: np.ndarray) -> float | None:
    """gAUC with one 64-bit key per row (group id in the high 32 bits, the score's order-preserving bit pattern in
    the low 32) and the AUC's scheme of sorting positives and negatives apart: no argsort. Used when scores are
    exactly representable in float32 and groups are integers in [0, 2**32); ``None`` otherwise."""
    if s.dtype.type not in _SMALL_EXACT or g.dtype.kind not in "iu" or g.shape[0] == 0:
        return None
    if g.min() < 0 or g.max() >= 2**32:
        return None
    f = s.astype(np.float32) + np.float32(0.0)  # -0.0 -> +0.0, so equal scores have equal bits
    u = f.view(np.uint32)
    u = np.where(u >> 31, ~u, u | np.uint32(0x80000000)).astype(np.uint64)  # order-preserving
    key = (g.astype(np.uint64) << np.uint64(32)) | u
    pos = np.compress(y, key)
    neg = np.compress(~y, key)
    pos.sort()
    neg.sort()
    if pos.shape[0] == 0 or neg.shape[0] == 0:
        raise MetricError(f"gauc: none of the {np.unique(g).shape[0]} groups has both classes")
    high = np.uint64(0xFFFFFFFF00000000)
    left = np.searchsorted(neg, pos, side="left")
    twice = 2 * (left - np.searchsorted(neg, pos & high, side="left"))  # 2 x negatives below, same group
    tied = neg[np.minimum(left, neg.shape[0] - 1)] == pos
    if tied.any():
        twice[tied] += np.searchsorted(neg, pos[tied], side="right") - left[tied]
    pg, ng = pos >> np.uint64(32), neg >> np.uint64(32)
    p_start = np.flatnonzero(np.r_[True, pg[1:] != pg[:-1]])
    n_start = np.flatnonzero(np.r_[True, ng[1:] != ng[:-1]])
    p_ids, n_ids = pg[p_start], ng[n_start]
    p_cnt = np.diff(np.append(p_start, pg.shape[0]))
    n_cnt = np.diff(np.append(n_start, ng.shape[0]))
    num = np.add.reduceat(twice, p_start)
    j = np.minimum(np.searchsorted(n_ids, p_ids), n_ids.shape[0] - 1)
    valid = n_ids[j] == p_ids  # groups with both classes
    if not valid.any():
        n_groups = np.union1d(p_ids, n_ids).shape[0]
        raise MetricError(f"gauc: none of the {n_groups} groups has both classes")
    P = p_cnt[valid].astype(np.float64)
    N = n_cnt[j[valid]].astype(np.float64)
    per_group = num[valid] / (2.0 * P * N)
    w = P + N
    return float((per_group * w).sum() / w.sum())


# ----------------------------------------------------------------------------------------------------- registry
SPLITS = ("val", "test")  # metric keys are <split>_<name>: val_auc, test_logloss, ...
INPUTS = ("groups",)  # inputs a metric may need besides labels and probabilities


@dataclass(frozen=True)
class Metric:
    """A registered metric: ``fn(y_true, y_prob, **inputs) -> float`` (probabilities, not logits), the
    ``direction`` in which it improves, the extra ``inputs`` it needs (e.g. ``("groups",)``) and a ``label``
    for table headers."""

    name: str
    fn: Callable[..., float]
    direction: str  # "max" | "min"
    inputs: tuple[str, ...] = ()
    label: str = ""


_REGISTRY: dict[str, Metric] = {}


def register(name: str, fn: Callable[..., float], direction: str, *, inputs: tuple[str, ...] = (),
             label: str | None = None) -> Metric:
    """Add a metric (registration order is column order everywhere). Raises on a taken or malformed name."""
    if not name.isidentifier() or not name.islower():
        raise MetricError(f"metric name {name!r}: expected a lower-case identifier such as 'auc'")
    if name in _REGISTRY:
        raise MetricError(f"metric {name!r} is already registered")
    if direction not in ("max", "min"):
        raise MetricError(f"metric {name!r}: direction must be 'max' or 'min', got {direction!r}")
    unknown = [i for i in inputs if i not in INPUTS]
    if unknown:
        raise MetricError(f"metric {name!r}: unknown inputs {unknown}; a metric may need {list(INPUTS)}")
    _REGISTRY[name] = Metric(name, fn, direction, tuple(inputs), label or name)
    return _REGISTRY[name]


def unregister(name: str) -> None:
    """Remove a metric (tests that register a toy metric clean up with this)."""
    get(name)
    del _REGISTRY[name]


def registered() -> tuple[Metric, ...]:
    """Every registered metric, in registration order."""
    return tuple(_REGISTRY.values())


def get(name: str) -> Metric:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise MetricError(f"unknown metric {name!r}; registered metrics: {list(_REGISTRY)}") from None


def metric_keys(split: str = "val") -> list[str]:
    """``<split>_<name>`` for every registered metric."""
    return [f"{split}_{m.name}" for m in _REGISTRY.values()]


def compute(y_true: Any, y_prob: Any, *, groups: Any = None) -> dict[str, float]:
    """Every registered metric whose inputs are available (``gauc`` only when ``groups`` is given), by name,
    in registration order."""
    available = {"groups": groups} if groups is not None else {}
    out = {}
    for m in _REGISTRY.values():
        if all(i in available for i in m.inputs):
            out[m.name] = float(m.fn(y_true, y_prob, **{i: available[i] for i in m.inputs}))
    return out


def task_key(name: str, task: str, split: str | None = None) -> str:
    """``<metric>_<task>`` (``auc_click``), or the full key ``<split>_<metric>_<task>`` (``val_auc_click``)."""
    get(name)
    if not task.isidentifier():
        raise MetricError(f"task name {task!r}: expected an identifier (a label column name such as 'click')")
    col = f"{name}_{task}"
    return f"{split}_{col}" if split else col


def parse_column(col: str) -> tuple[str, str | None]:
    """``auc`` -> ("auc", None); ``auc_click`` -> ("auc", "click") (the longest registered metric name that is a
    prefix wins); an unknown metric raises, naming the registered ones."""
    if col in _REGISTRY:
        return col, None
    best = max((m for m in _REGISTRY if col.startswith(m + "_") and len(col) > len(m) + 1), key=len, default=None)
    if best is None:
        raise MetricError(f"{col!r} is not a registered metric ({list(_REGISTRY)}) nor <metric>_<task> of one")
    return best, col[len(best) + 1:]


def parse_key(key: str) -> tuple[str, str, str | None]:
    """``val_auc`` -> ("val", "auc", None); ``test_logloss_conversion`` -> ("test", "logloss", "conversion")."""
    split, _, col = key.partition("_")
    if split not in SPLITS or not col:
        raise MetricError(f"metric key {key!r}: expected <split>_<metric>[_<task>] with split one of {list(SPLITS)}")
    name, task = parse_column(col)
    return split, name, task


def metric_columns(keys, split: str = "test") -> list[str]:
    """The metric columns (``auc``, ``auc_click``, ...) among ``keys`` of ``split``: registry order, then per
    task (tasks sorted) in registry order. Keys that are not metrics are ignored."""
    plain, tasks = [], {}
    for key in keys:
        try:
            s, name, task = parse_key(key)
        except MetricError:
            continue
        if s != split:
            continue
        if task is None:
            plain.append(name)
        else:
            tasks.setdefault(task, set()).add(name)
    order = [m.name for m in _REGISTRY.values()]
    out = [m for m in order if m in plain]
    for task in sorted(tasks):
        out += [f"{m}_{task}" for m in order if m in tasks[task]]
    return out


def column_label(col: str) -> str:
    """Table header of a metric column: ``AUC``, ``AUC (click)``."""
    name, task = parse_column(col)
    return get(name).label + (f" ({task})" if task else "")


def compute_tasks(y_true: Any, y_prob: Any, tasks, *, groups: Any = None) -> dict[str, float]:
    """Every registered metric of every task: ``y_true`` and ``y_prob`` are [N, T] (column j = ``tasks[j]``);
    returns ``{"auc_click": .., "logloss_click": .., ..., "auc_conversion": .., ...}`` (task order, then registry
    order)."""
    y = np.asarray(y_true.detach().cpu() if hasattr(y_true, "detach") else y_true)
    p = np.asarray(y_prob.detach().cpu() if hasattr(y_prob, "detach") else y_prob)
    tasks = list(tasks)
    if y.ndim != 2 or p.shape != y.shape or y.shape[1] != len(tasks):
        raise MetricError(f"compute_tasks: y_true {y.shape} and y_prob {p.shape} must both be [N, {len(tasks)}] for "
                          f"tasks {tasks}")
    out = {}
    for j, task in enumerate(tasks):
        for name, v in compute(y[:, j], p[:, j], groups=groups).items():
            out[task_key(name, task)] = v
    return out


register("auc", auc, "max", label="AUC")
register("logloss", logloss, "min", label="logloss")
register("gauc", gauc, "max", inputs=("groups",), label="gAUC")


# ------------------------------------------------------------------------------------------------------ monitor
@dataclass(frozen=True)
class Monitor:
    """What training selects on: ``weights`` maps metric keys (``val_<name>``) to weights. One key with weight 1
    is that metric in its registered direction; several (or any other weight) form a weighted sum that is
    maximised. :meth:`value` is the monitored value, :meth:`score` the value to maximise."""

    weights: tuple[tuple[str, float], ...]
    direction: str  # "max" | "min"
    summed: bool = False  # given as a mapping: the weighted sum is the monitored value
    # multi-task evaluations (keys <metric>_<task> only): the task a task-less key (val_auc) reads, i.e.
    # val_auc_<task> (``train.monitor_task``, the dataset's main task); None: the first task evaluated
    task: str | None = None

    @classmethod
    def parse(cls, spec: str | Mapping[str, Any], where: str = "train.monitor", task: str | None = None) -> Monitor:
        """From ``val_auc`` or ``{val_auc: 1, val_logloss: -1}``; unknown keys raise, naming the valid ones.
        ``task``: the task a task-less key reads when the evaluation is per task (see :meth:`value`)."""
        if task is not None and not str(task).isidentifier():
            raise MetricError(f"{where}_task {task!r}: expected a label column name such as 'conversion'")
        if isinstance(spec, str):
            return cls(((cls._check_key(spec, where), 1.0),), get(parse_key(spec)[1]).direction, task=task)
        if not isinstance(spec, Mapping) or not spec:
            raise MetricError(f"{where}: expected a metric key such as 'val_auc' or a mapping of metric keys to "
                              f"weights such as {{val_auc: 1, val_logloss: -1}}, got {spec!r}")
        weights = []
        for key, w in spec.items():
            cls._check_key(str(key), where)
            if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w == 0:
                raise MetricError(f"{where}.{key}: the weight must be a finite non-zero number, got {w!r}")
            weights.append((str(key), float(w)))
        return cls(tuple(weights), "max", summed=True, task=task)

    @staticmethod
    def _check_key(key: str, where: str) -> str:
        try:
            split, _, _ = parse_key(key)
        except MetricError:
            split = None
        if split != "val":
            raise MetricError(f"{where}: unknown metric key {key!r}; the monitor reads validation metrics, "
                              f"registered: {metric_keys('val')} (per task: val_<metric>_<task>, e.g. "
                              "val_auc_click)")
        return key

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(k for k, _ in self.weights)

    @property
    def metrics(self) -> tuple[Metric, ...]:
        return tuple(get(parse_key(k)[1]) for k in self.keys)

    @property
    def tasks(self) -> tuple[str, ...]:
        """The tasks the monitored keys name (``val_auc_click`` -> ``click``), in key order, without repeats."""
        out: list[str] = []
        for k in self.keys:
            task = parse_key(k)[2]
            if task is not None and task not in out:
                out.append(task)
        return tuple(out)

    @property
    def name(self) -> str:
        """``val_auc`` for one metric, ``monitor`` for a weighted sum (the key its value is logged under)."""
        return "monitor" if self.summed else self.weights[0][0]

    def describe(self) -> str:
        if not self.summed:
            return f"{self.name} ({'maximised' if self.direction == 'max' else 'minimised'})"
        terms = " + ".join(f"{w:g}*{k}" for k, w in self.weights)
        return f"{terms} (maximised)"

    def resolve(self, key: str, values: Mapping[str, Any]) -> str | None:
        """The key of ``values`` that monitored key ``key`` reads: itself, or, for a task-less key of a per-task
        (multi-task) evaluation, ``<key>_<task>`` (:attr:`task`, else the first task among ``values``)."""
        if key in values:
            return key
        split, name, task = parse_key(key)
        if task is not None:
            return None
        if self.task is not None:
            k = f"{key}_{self.task}"
            return k if k in values else None
        for k in values:
            try:
                if parse_key(k)[:2] == (split, name) and parse_key(k)[2] is not None:
                    return k
            except MetricError:
                continue
        return None

    def value(self, values: Mapping[str, float]) -> float:
        """The monitored value from ``values`` (metric keys -> values); a missing key raises, naming it. In a
        multi-task evaluation a task-less key reads the monitor's task (:meth:`resolve`)."""
        found = {k: self.resolve(k, values) for k in self.keys}
        missing = [k for k, v in found.items() if v is None]
        if missing:
            hint = (f" (per task: train.monitor_task={self.task!r} names a task the run did not evaluate)"
                    if self.task is not None else "")
            raise MetricError(f"the monitor needs {missing}; the evaluation gave {sorted(values)}{hint}")
        return float(sum(w * float(values[found[k]]) for k, w in self.weights))

    def score(self, values: Mapping[str, float]) -> float:
        """The value to maximise: the monitored value, negated when it is minimised."""
        v = self.value(values)
        return v if self.direction == "max" else -v

    def better(self, a: float, b: float) -> bool:
        """Whether monitored value ``a`` is better than ``b``."""
        return a > b if self.direction == "max" else a < b
