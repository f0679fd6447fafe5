"""The compute a sweep's trials use, and the fair-budget syntax (``sweep.budget``). Plain Python: no torch, no
optuna, no MLflow (the trainer, the study, the sweep and the leaderboard all read it).

Per trial (Optuna user attributes, the trial's MLflow run metrics and ``trials.csv`` columns, all named
:data:`KEYS`): training samples processed (rows trained over every epoch, a partial epoch of a failed trial
included), validation and test samples evaluated, CPU-seconds of the worker process during the trial
(``time.process_time``: every thread), wall seconds, and on a GPU worker the device seconds (its wall seconds:
the trial holds the device the whole time). ``compute_clock`` says which clock a seconds budget counts for that
trial: ``cpu`` (CPU-seconds) or ``device`` (device wall seconds). ``compute_trial`` is the number of the trial the
attributes were written by: an RDB retry inherits its failed predecessor's user attributes, whose compute must not
be counted twice (:func:`own_compute`).

``sweep.budget`` (:func:`parse_budget`): a number of training samples (``5000000``, ``5e6``, ``"5M samples"``,
``"250k samples"``) or of seconds (``"600s"``, ``"30m"``/``"30min"``, ``"2h"``). A bare ``"5M"`` is refused: ``M``
(million) and ``m`` (minutes) are one keystroke apart.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

TRAIN_SAMPLES = "compute_train_samples"
VALID_SAMPLES = "compute_valid_samples"
TEST_SAMPLES = "compute_test_samples"
CPU_S = "compute_cpu_s"
WALL_S = "compute_wall_s"
DEVICE_S = "compute_device_s"
CLOCK = "compute_clock"  # "cpu" | "device": the seconds a seconds budget counts for this trial
OWNER = "compute_trial"  # the trial number that wrote the compute_* attributes (retries inherit them)
KEYS = (TRAIN_SAMPLES, VALID_SAMPLES, TEST_SAMPLES, CPU_S, WALL_S, DEVICE_S)
SAMPLE_KEYS = (TRAIN_SAMPLES, VALID_SAMPLES, TEST_SAMPLES)

UNITS = ("samples", "seconds")
_SAMPLE_MULT = {"": 1.0, "k": 1e3, "K": 1e3, "m": 1e6, "M": 1e6, "g": 1e9, "G": 1e9, "b": 1e9, "B": 1e9}
_SECONDS_MULT = {"s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0, "hr": 3600.0}
_NUM = r"(\d+(?:\.\d*)?(?:[eE][+-]?\d+)?|\.\d+(?:[eE][+-]?\d+)?)"
_SAMPLES_RE = re.compile(rf"^{_NUM}\s*([kKmMgGbB]?)\s*samples?$")
_SECONDS_RE = re.compile(rf"^{_NUM}\s*(s|sec|m|min|h|hr)$")
_PLAIN_RE = re.compile(rf"^{_NUM}$")

SYNTAX = ("sweep.budget is null (a trial budget: sweep.trials), a number of training samples (5000000, 5e6, "
          "'5M samples', '250k samples') or a time ('600s', '30m' or '30min', '2h': CPU-seconds on CPU workers, "
          "device wall seconds on GPU workers)")


class BudgetSyntaxError(ValueError):
    """A ``sweep.budget`` that is not one of the documented forms."""


@dataclass(frozen=True)
class Budget:
    """A compute budget: ``amount`` training samples or seconds (``unit``); ``spec`` is what the user wrote."""

    unit: str  # "samples" | "seconds"
    amount: float
    spec: str

    def describe(self) -> str:
        if self.unit == "samples":
            return f"{fmt_samples(self.amount)} training samples"
        return f"{fmt_seconds(self.amount)} (CPU-seconds on CPU workers, device seconds on GPU workers)"

    def fmt(self, value: float) -> str:
        return fmt_samples(value) if self.unit == "samples" else fmt_seconds(value)

    def as_record(self) -> dict[str, Any]:
        return {"unit": self.unit, "amount": self.amount, "spec": self.spec}

    @classmethod
    def from_record(cls, record: Mapping[str, Any] | None) -> Budget | None:
        if not record:
            return None
        return cls(str(record["unit"]), float(record["amount"]), str(record.get("spec", record["amount"])))


def parse_budget(value: Any) -> Budget | None:
    """``sweep.budget`` -> a :class:`Budget` (None for null); a :class:`BudgetSyntaxError` naming the key and the
    accepted forms otherwise."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "null", "none")):
        return None
    if isinstance(value, bool):
        raise BudgetSyntaxError(f"{SYNTAX}; got {value!r}")
    if isinstance(value, (int, float)):
        return _checked(Budget("samples", float(value), str(value)), value)
    text = str(value).strip()
    if m := _PLAIN_RE.match(text):
        return _checked(Budget("samples", float(m.group(1)), text), value)
    if m := _SAMPLES_RE.match(text):
        return _checked(Budget("samples", float(m.group(1)) * _SAMPLE_MULT[m.group(2)], text), value)
    m = None if re.search(r"\d\s*M$", text) else _SECONDS_RE.match(text.lower())  # "5M": million or minutes?
    if m:
        return _checked(Budget("seconds", float(m.group(1)) * _SECONDS_MULT[m.group(2)], text), value)
    hint = ""
    if re.fullmatch(rf"{_NUM}\s*[kKMGB]", text):
        hint = (f" ('{text}' has no unit: write '{text} samples' for training samples"
                + (f", or '{text[:-1]}min' for minutes" if text.endswith("M") else "") + ")")
    raise BudgetSyntaxError(f"{SYNTAX}; got {value!r}{hint}")


def _checked(b: Budget, value: Any) -> Budget:
    if not math.isfinite(b.amount) or b.amount <= 0:
        raise BudgetSyntaxError(f"sweep.budget must be positive, got {value!r}")
    return b


# --------------------------------------------------------------------------------------------- per-trial records
def own_compute(attrs: Mapping[str, Any], number: int) -> dict[str, Any]:
    """The compute_* attributes a trial wrote itself ({} for none, or for ones inherited from the failed trial an
    RDB retry replays: their ``compute_trial`` names that other trial)."""
    if attrs.get(OWNER) != number:
        return {}
    return {k: attrs[k] for k in (*KEYS, CLOCK) if k in attrs}


def trial_cost(compute: Mapping[str, Any], unit: str) -> float:
    """What a trial spent of a budget in ``unit``: training samples, or seconds on the trial's clock (device
    seconds on a GPU worker, CPU-seconds otherwise)."""
    if unit == "samples":
        return float(compute.get(TRAIN_SAMPLES) or 0.0)
    if compute.get(CLOCK) == "device":
        return float(compute.get(DEVICE_S) or compute.get(WALL_S) or 0.0)
    return float(compute.get(CPU_S) or 0.0)


def totals(records: Iterable[Mapping[str, Any]]) -> dict[str, float]:
    """Sums of :data:`KEYS` over per-trial compute records (absent keys count 0)."""
    out = dict.fromkeys(KEYS, 0.0)
    for r in records:
        for k in KEYS:
            v = r.get(k)
            if isinstance(v, (int, float)) and math.isfinite(v):
                out[k] += float(v)
    return out


# ------------------------------------------------------------------------------------------------- formatting
def fmt_samples(n: float) -> str:
    if n >= 1e9:
        return f"{n / 1e9:.3g}G"
    if n >= 1e6:
        return f"{n / 1e6:.3g}M"
    if n >= 1e3:
        return f"{n / 1e3:.3g}k"
    return f"{n:.0f}"


def fmt_seconds(s: float) -> str:
    if s >= 3600:
        return f"{s / 3600:.3g} h"
    if s >= 60:
        return f"{s / 60:.3g} min"
    return f"{s:.3g} s"


@dataclass
class SampleMeter:
    """Rows a run has processed so far: trained (partial epochs included), validated, tested. The trainer adds to
    it once per epoch (and once when an epoch is cut short by an exception), never per batch."""

    train: int = 0
    valid: int = 0
    test: int = 0

    def as_attrs(self) -> dict[str, int]:
        return {TRAIN_SAMPLES: self.train, VALID_SAMPLES: self.valid, TEST_SAMPLES: self.test}


__all__ = [
    "CLOCK", "CPU_S", "DEVICE_S", "KEYS", "OWNER", "SAMPLE_KEYS", "SYNTAX", "TEST_SAMPLES", "TRAIN_SAMPLES", "UNITS",
    "VALID_SAMPLES", "WALL_S", "Budget", "BudgetSyntaxError", "SampleMeter", "fmt_samples", "fmt_seconds",
    "own_compute", "parse_budget", "totals", "trial_cost",
]
