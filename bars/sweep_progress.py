"""Sweep progress on the terminal: one live line per worker.

:class:`Progress` is one worker's line (``live``: rewritten in place on a terminal; ``plain``: a line per trial;
``relay``: marked lines on stdout that the launcher reads from its worker processes; ``verbose``: plain plus
the training output; ``off``). :class:`WorkerPanel` is the launcher's block of k worker lines.
"""

from __future__ import annotations

import contextlib
import sys
import threading
import time
from typing import Any

import optuna

from bars.compute import Budget
from bars.study import budget_state, maximizes

PROGRESS_MARK = "\x1e@bars-progress "


def fmt_elapsed(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Progress of one worker. ``mode``: ``live`` (rewrite one line on a terminal), ``plain`` (a line per trial),
    ``relay`` (marked lines on stdout that the launcher draws), ``off``. ``metric``: the monitored value's name
    (the sweep's objective)."""

    def __init__(self, mode: str, label: str, budget: int | None, stream: Any = None, metric: str = "val_auc",
                 compute: Budget | None = None) -> None:
        self.mode, self.label, self.budget, self.metric = mode, label, budget, metric
        self.compute, self.spent = compute, 0.0  # a compute budget (sweep.budget) and what the study spent of it
        self.maximize = True
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.best: float | None = None
        self.finished = 0
        self.current = ""

    def _line(self, what: str) -> str:
        best = "-" if self.best is None else f"{self.best:.5f}"
        trial = (f"trial {min(self.finished + 1, self.budget)}/{self.budget}" if self.budget is not None
                 else f"trial {self.finished + 1}")
        spent = (f" | {self.compute.fmt(self.spent)}/{self.compute.fmt(self.compute.amount)} {self.compute.unit}"
                 if self.compute is not None else "")
        return (f"{self.label} {trial} {what} | best {self.metric} {best}{spent} | "
                f"{fmt_elapsed(time.monotonic() - self.t0)}")

    def _emit(self, line: str, final: bool) -> None:
        if self.mode == "off":
            return
        if self.mode == "relay":
            print(PROGRESS_MARK + line, file=sys.__stdout__, flush=True)
        elif self.mode == "live":
            self.stream.write("\r\x1b[2K" + line + ("\n" if final else ""))
            self.stream.flush()
        elif final:
            print(line, file=self.stream, flush=True)

    def _sync(self, study: optuna.Study) -> None:
        tally = budget_state(study, self.budget, self.compute)
        self.best, self.finished, self.budget = tally.best, tally.finished, tally.budget
        self.compute, self.spent = tally.compute, tally.spent
        self.maximize = maximizes(study)

    def trial_started(self, number: int, study: optuna.Study) -> None:
        self._sync(study)
        self.current = f"(#{number})"
        self._emit(self._line(f"(#{number}) starting"), False)

    def epoch(self, number: int, epoch: int, value: float) -> None:
        self._emit(self._line(f"(#{number}) epoch {epoch} {self.metric} {value:.5f}"), False)

    def trial_finished(self, number: int, state: str, study: optuna.Study, val: float | None = None) -> None:
        """Called before the trial is told to the storage: "trial i" counts it."""
        with contextlib.suppress(Exception):
            self._sync(study)
        if state == "complete" and val is not None and (
                self.best is None or (val > self.best if self.maximize else val < self.best)):
            self.best = val
        v = f" {self.metric} {val:.5f}" if isinstance(val, float) else ""
        self._emit(self._line(f"(#{number}) {state}{v}"), True)

    def message(self, text: str) -> None:
        if self.mode == "relay":
            print(PROGRESS_MARK + f"{self.label} {text}", file=sys.__stdout__, flush=True)
        elif self.mode != "off":
            if self.mode == "live":
                self.stream.write("\r\x1b[2K")
            print(f"{self.label} {text}", file=self.stream, flush=True)


class WorkerPanel:
    """The launcher's view of k workers: a block of k live lines on a terminal, else their lines as they come."""

    def __init__(self, k: int, live: bool, stream: Any = None) -> None:
        self.lines = [""] * k
        self.live = live
        self.stream = stream or sys.stderr
        self.drawn = 0
        self.lock = threading.Lock()

    def _clear(self) -> None:
        if self.drawn:
            self.stream.write(f"\x1b[{self.drawn}F\x1b[J")
            self.drawn = 0

    def _draw(self) -> None:
        for ln in self.lines:
            self.stream.write("\x1b[2K" + ln + "\n")
        self.drawn = len(self.lines)
        self.stream.flush()

    def update(self, i: int, line: str, final: bool) -> None:
        with self.lock:
            self.lines[i] = line
            if self.live:
                self._clear()
                self._draw()
            elif final:
                print(line, file=self.stream, flush=True)

    def passthrough(self, i: int, line: str) -> None:
        with self.lock:
            if self.live:
                self._clear()
            print(f"[w{i}] {line}", file=self.stream, flush=True)
            if self.live:
                self._draw()


__all__ = ["PROGRESS_MARK", "Progress", "WorkerPanel", "fmt_elapsed"]
