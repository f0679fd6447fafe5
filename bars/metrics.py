"""Evaluation metrics: one definition used everywhere (trainer, runs, sweeps, leaderboard).

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

from typing import Any

import numpy as np

__all__ = ["MetricError", "auc", "gauc", "logloss"]


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
