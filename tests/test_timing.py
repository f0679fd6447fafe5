"""bars.timing.PhaseTimer: exclusive nested phases, carving, the breakdown (a fake clock: no timing thresholds)."""

from __future__ import annotations

import pytest

from bars.timing import PhaseTimer, as_metrics, fixed_cost


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_nested_phases_are_exclusive_and_sum_to_the_total():
    c = Clock()
    t = PhaseTimer(clock=c)
    c.t += 1  # in no phase: "other"
    with t.phase("epochs"):
        c.t += 2
        with t.phase("tracking"):
            c.t += 3
        c.t += 4
        with t.phase("tracking"):
            c.t += 0.5
    with t.phase("test"):
        c.t += 5
    b = t.breakdown()
    assert b == {"epochs": 6, "tracking": 3.5, "test": 5, "other": 1, "total": 15.5}
    t.carve("epochs", "epoch_bookkeeping", {"train": 4, "valid": 1.5, "checkpoint": 99})  # clipped at what is left
    b = t.breakdown()
    assert "epochs" not in b and (b["train"], b["valid"], b["checkpoint"], b["epoch_bookkeeping"]) == (4, 1.5, 0.5, 0)
    assert sum(v for k, v in b.items() if k != "total") == pytest.approx(b["total"])
    assert fixed_cost(b) == pytest.approx(15.5 - 5.5)
    m = as_metrics(b)
    assert m["time_train_s"] == 4 and m["time_total_s"] == 15.5 and m["time_fixed_s"] == pytest.approx(10)


def test_running_phase_counts_up_to_now_and_stop_checks_the_name():
    c = Clock()
    t = PhaseTimer(clock=c)
    t.start("load")
    c.t += 2
    assert t.breakdown()["load"] == 2
    with pytest.raises(RuntimeError, match="innermost running phase is 'load'"):
        t.stop("build")
    assert t.stop("load") == 2
    with pytest.raises(RuntimeError, match="no phase is running"):
        t.stop()
