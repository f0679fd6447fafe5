"""bars.metrics against scikit-learn (to 1e-9), on random inputs with and without ties, numpy and torch."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from sklearn.metrics import log_loss, roc_auc_score

from bars.metrics import MetricError, auc, gauc, logloss


def _sk_gauc(y, s, g):
    num = den = 0.0
    for k in np.unique(g):
        m = g == k
        if len(np.unique(y[m])) < 2:
            continue
        num += roc_auc_score(y[m], s[m]) * m.sum()
        den += m.sum()
    return num / den


@st.composite
def binary_case(draw, min_size=2, max_size=400, groups=False):
    n = draw(st.integers(min_size, max_size))
    seed = draw(st.integers(0, 2**32 - 1))
    levels = draw(st.sampled_from([2, 5, 50, 0]))  # 0 = continuous scores (no ties), else heavy ties
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[0], y[1] = 0, 1  # both classes present
    rng.shuffle(y)
    s = rng.integers(0, levels, n).astype(np.float64) if levels else rng.normal(size=n)
    if groups:
        g = rng.integers(0, draw(st.integers(1, 20)), n)
        return y, s, g
    return y, s


@settings(max_examples=200, deadline=None)
@given(binary_case())
def test_auc_equals_sklearn(case):
    y, s = case
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-9)


@settings(max_examples=100, deadline=None)
@given(binary_case())
def test_auc_torch_and_dtypes(case):
    y, s = case
    ref = roc_auc_score(y, s)
    assert auc(torch.from_numpy(y).float(), torch.from_numpy(s)) == pytest.approx(ref, abs=1e-9)
    assert auc(y.astype(bool), s) == pytest.approx(ref, abs=1e-9)
    s32 = s.astype(np.float32)
    assert auc(y, torch.from_numpy(s32)) == pytest.approx(roc_auc_score(y, s32), abs=1e-9)


@settings(max_examples=60, deadline=None)
@given(binary_case(groups=True))
def test_gauc_equals_sklearn_per_group(case):
    y, s, g = case
    try:
        ref = _sk_gauc(y, s, g)
    except ZeroDivisionError:
        with pytest.raises(MetricError):
            gauc(y, s, g)
        return
    assert gauc(y, s, g) == pytest.approx(ref, abs=1e-9)
    # the packed-key path (float32 scores, integer groups) against the general one (float64 scores)
    s32 = s.astype(np.float32)
    assert gauc(y, s32, g) == pytest.approx(_sk_gauc(y, s32, g), abs=1e-9)
    assert gauc(y, s32 - np.float32(s32.mean()), g + 7) == pytest.approx(
        _sk_gauc(y, s32 - s32.mean(), g), abs=1e-9
    )
    assert gauc(y, s, g.astype(str)) == pytest.approx(ref, abs=1e-9)  # non-integer group ids


@settings(max_examples=150, deadline=None)
@given(binary_case())
def test_logloss_equals_sklearn(case):
    y, s = case
    p = 1.0 / (1.0 + np.exp(-s))
    p = np.clip(p, 1e-6, 1 - 1e-6)  # inside the clip range, so clipping conventions do not matter
    assert logloss(y, p) == pytest.approx(log_loss(y, p, labels=[0, 1]), abs=1e-9)
    assert logloss(torch.from_numpy(y), torch.from_numpy(p)) == pytest.approx(
        log_loss(y, p, labels=[0, 1]), abs=1e-9
    )


def test_auc_known_values():
    assert auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert auc([0, 1], [0.5, 0.5]) == 0.5
    assert auc([0, 1], [0.1, 0.9]) == 1.0
    assert auc([1, 0], [0.1, 0.9]) == 0.0
    z = np.array([-0.0, 0.0], dtype=np.float32)  # -0.0 == 0.0: a tie
    assert auc([0, 1], z) == 0.5 and auc([1, 0], z) == 0.5
    assert gauc(np.array([0, 1, 0, 1]), np.r_[z, z], np.array([3, 3, 4, 4])) == 0.5


def test_logloss_clips():
    eps = 1e-7
    assert logloss([1, 0], [0.0, 1.0], eps=eps) == pytest.approx(-np.log(eps), rel=1e-8)


def test_gauc_skips_single_class_groups_and_weights_by_size():
    y = np.array([0, 1, 1, 1, 0, 1, 0, 0, 1])
    s = np.array([0.1, 0.9, 0.5, 0.2, 0.3, 0.8, 0.9, 0.1, 0.6])
    g = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])  # groups: 3, 4, 2 rows; group 2 is mixed, all valid
    a0 = roc_auc_score(y[:3], s[:3])
    a1 = roc_auc_score(y[3:7], s[3:7])
    a2 = roc_auc_score(y[7:], s[7:])
    assert gauc(y, s, g) == pytest.approx((3 * a0 + 4 * a1 + 2 * a2) / 9)
    g2 = np.array([0, 0, 0, 1, 1, 1, 1, 5, 5])
    y2 = y.copy()
    y2[7:] = 1  # group 5 single-class: skipped
    assert gauc(y2, s, g2) == pytest.approx((3 * a0 + 4 * a1) / 7)


@pytest.mark.parametrize(
    "y, s, match",
    [
        ([1, 1, 1], [0.1, 0.2, 0.3], "one class"),
        ([0, 0], [0.1, 0.2], "one class"),
        ([0, 1, 1], [0.1, 0.2], "3 rows but y_score has 2"),
        ([0, 2, 1], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([0, -1, 1], [0.1, 0.2, 0.3], "only 0 and 1"),
        ([0, 1], [0.1, float("nan")], "NaN"),
        ([], [], "empty"),
    ],
)
def test_auc_errors(y, s, match):
    with pytest.raises(ValueError, match=match):
        auc(np.array(y), np.array(s, dtype=float))


def test_other_errors():
    with pytest.raises(ValueError, match="2 rows but y_prob has 3"):
        logloss([0, 1], [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="probabilities"):
        logloss([0, 1], [-0.1, 2.0])
    with pytest.raises(ValueError, match="only 0 and 1"):
        logloss([0, 0.5], [0.1, 0.2])
    with pytest.raises(ValueError, match="groups has 1"):
        gauc([0, 1], [0.1, 0.2], [0])
    with pytest.raises(ValueError, match="none of the 2 groups"):
        gauc([0, 1], [0.1, 0.2], [0, 1])
    with pytest.raises(ValueError, match="none of the 2 groups"):
        gauc(np.array([0, 1]), np.array([0.1, 0.2], dtype=np.float32), np.array([0, 1]))
    with pytest.raises(ValueError, match="none of the 2 groups"):
        gauc(np.array([1, 1]), np.array([0.1, 0.2], dtype=np.float32), np.array([0, 1]))


def test_large_input_matches_sklearn():
    rng = np.random.default_rng(1)
    n = 200_000
    y = (rng.random(n) < 0.2).astype(np.float32)
    s = (rng.random(n) + 0.1 * y).astype(np.float32)
    s[:1000] = 0.5  # a block of ties
    assert auc(y, s) == pytest.approx(roc_auc_score(y, s), abs=1e-9)
