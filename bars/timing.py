"""Where a run's wall time goes: an exclusive phase timer (issue 16, a run's fixed cost).

``timer = PhaseTimer()`` starts the clock; ``with timer.phase("load"): ...`` credits the time inside to ``load``.
Phases nest exclusively: time spent in an inner phase is credited to the inner one only (a tracking call made
from inside the epochs is ``tracking``, not ``epochs``), so the phases never count a second twice and their sum
is at most the wall time since the timer started. ``carve(name, into, parts)`` splits a phase already measured
(e.g. ``epochs`` into the ``train``/``valid``/``checkpoint`` seconds the trainer measured, the rest going to
``into``). ``breakdown()`` gives every phase plus ``other`` (wall time in no phase) and ``total``.

This module imports nothing from bars (the trainer, the runner and the benchmarks all use it).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping

# The phases of one run (bars.run.train_one), in the order a breakdown table shows them. ``train`` and ``valid``
# are the epochs' training and validation passes; everything else is the run's fixed cost.
RUN_PHASES = ("config", "prepare", "load", "build", "tracking", "epoch_bookkeeping", "on_epoch", "train", "valid",
              "checkpoint", "test", "artifacts")
PASSES = ("train", "valid")


class PhaseTimer:
    """Exclusive wall-clock seconds per named phase since construction (see the module docstring)."""

    def __init__(self, clock: Callable[[], float] = time.perf_counter) -> None:
        self._clock = clock
        self.t0 = clock()
        self.seconds: dict[str, float] = {}
        self._stack: list[list] = []  # [name, start of its current uninterrupted stretch]

    def _add(self, name: str, s: float) -> None:
        self.seconds[name] = self.seconds.get(name, 0.0) + s

    def start(self, name: str) -> None:
        now = self._clock()
        if self._stack:  # the enclosing phase pauses
            self._add(self._stack[-1][0], now - self._stack[-1][1])
        self._stack.append([name, now])

    def stop(self, name: str | None = None) -> float:
        """End the innermost phase (``name``, when given, must be it); the enclosing one resumes."""
        if not self._stack:
            raise RuntimeError(f"PhaseTimer.stop({name!r}): no phase is running")
        top, start = self._stack[-1]
        if name is not None and top != name:
            raise RuntimeError(f"PhaseTimer.stop({name!r}): the innermost running phase is {top!r}")
        self._stack.pop()
        now = self._clock()
        self._add(top, now - start)
        if self._stack:
            self._stack[-1][1] = now
        return now - start

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        self.start(name)
        try:
            yield
        finally:
            self.stop(name)

    def carve(self, name: str, into: str, parts: Mapping[str, float]) -> None:
        """Split the seconds of phase ``name``: ``parts`` (measured inside it) go to their own phases, the rest
        to ``into``. Parts are clipped so that no phase becomes negative."""
        left = self.seconds.pop(name, 0.0)
        for k, v in parts.items():
            v = min(max(float(v), 0.0), left)
            self._add(k, v)
            left -= v
        self._add(into, left)

    def elapsed(self) -> float:
        return self._clock() - self.t0

    def breakdown(self) -> dict[str, float]:
        """``{phase: seconds, ..., "other": wall time in no phase, "total": wall time since the start}``; phases
        still running are counted up to now."""
        now = self._clock()
        out = dict(self.seconds)
        if self._stack:
            name, start = self._stack[-1]
            out[name] = out.get(name, 0.0) + now - start
        total = now - self.t0
        out["other"] = max(total - sum(out.values()), 0.0)
        out["total"] = total
        return out


def fixed_cost(breakdown: Mapping[str, float]) -> float:
    """A run's fixed cost: its wall time less the epochs' training and validation passes."""
    return breakdown["total"] - sum(breakdown.get(p, 0.0) for p in PASSES)


def as_metrics(breakdown: Mapping[str, float]) -> dict[str, float]:
    """MLflow metric names: ``time_<phase>_s`` for each phase, ``time_fixed_s`` (total less the passes)."""
    out = {f"time_{k}_s": float(v) for k, v in breakdown.items()}
    if "total" in breakdown:
        out["time_fixed_s"] = fixed_cost(breakdown)
    return out


__all__ = ["PASSES", "RUN_PHASES", "PhaseTimer", "as_metrics", "fixed_cost"]
