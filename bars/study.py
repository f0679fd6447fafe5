"""The Optuna study of a sweep: storage, sampler and pruner, the global trial budget, stale trials of dead
workers, and the results files (``trials.csv``, ``best.overrides``).

- Storage: a journal file ``sweeps/<model id>__<data>/study.journal`` by default (one machine, many processes),
  or ``postgresql://...`` (RDB with heartbeats: a trial whose worker stops beating is failed and retried with
  the same parameters). :func:`open_storage` (in :mod:`bars.sweep_storage`, re-exported here) returns the storage
  object; :class:`SweepStudy` keeps it as the handle every state write goes through.
- Arithmetic: the trials of one study share ``train.precision`` and ``train.tf32`` (:func:`check_arithmetic`).
- Budget: a worker starts a trial only while ``finished + running + waiting < budget`` (finished = complete +
  pruned); a trial that loses the race to another worker is marked with ``SKIPPED_ATTR`` before it trains
  (:func:`claim_or_skip`) and ignored everywhere (:func:`counted`). Failed trials do not count.
- Compute budget (``sweep.budget``, :mod:`bars.compute`): a worker starts a trial only while the compute spent by
  the study's trials (complete, pruned, failed, and running ones up to their last finished epoch) is below it;
  :func:`claim_or_skip` re-checks it against the trials numbered before the new one, as for trial counts. The
  trial budget (``sweep.trials``) is then an optional cap (null: none).
- Liveness: each trial records its worker's ``host:pid:start`` (``WORKER_ATTR``); a RUNNING trial whose worker
  is dead on this host is failed (:func:`fail_stale_trials`, liveness from ``bars.process``).

Never imports mlflow or the trainer: ``bars.sweep`` runs the trials.
"""

from __future__ import annotations

import csv
import io
import json
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig
from optuna.trial import FrozenTrial, TrialState

from bars import compute, metrics, process, search
from bars.compute import Budget
from bars.config import to_container
from bars.fileio import atomic_write_text
from bars.metrics import Monitor
from bars.samplers import UniqueSampler, space_exhausted, space_size
from bars.search import Param, SearchSpaceError, decode_choice, encode_choice, format_value, to_overrides
from bars.strategy import PRUNERS, SAMPLERS, block, pruner_settings, sampler_settings
from bars.sweep_storage import (  # re-exported: the storage of a study (bars.sweep_storage)
    _experimental_ok,
    first_use_lock,
    heartbeat_callback,
    is_journal,
    open_storage,
    storage_url,
    sweep_dir,
)

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)
SKIPPED_ATTR = "bars_skipped"
WORKER_ATTR = "bars_worker"
STALE_MIN_AGE = 5.0  # seconds: a RUNNING trial younger than this is never failed by the process check
# trials.csv columns: number, state, the parameters, val_<metric> per registered metric recorded, then these
RUN_KEYS = ("epochs", "seconds")
COMPUTE_COLUMNS = (*compute.KEYS, compute.CLOCK)  # trials.csv: after RUN_KEYS (bars.compute)


class SweepError(RuntimeError):
    """The sweep cannot start or continue (no study for a worker, too many failed trials, ...)."""


class SweepStudy(optuna.Study):
    """An Optuna study that keeps the storage object this process opened: trial-state writes, system attributes
    and trial ids by number go through this handle (public storage API), never through Optuna's private
    members. Built by :func:`create_study` / :func:`load_study`."""

    def __init__(self, study_name: str, storage: optuna.storages.BaseStorage,
                 sampler: optuna.samplers.BaseSampler, pruner: optuna.pruners.BasePruner) -> None:
        super().__init__(study_name, storage, sampler, pruner)
        self.opened_storage = storage
        self.study_id = storage.get_study_id_from_name(study_name)

    def trial_id(self, number: int) -> int:
        """The storage's id of trial ``number`` (what a ``failed_trial`` system attribute refers to)."""
        return self.opened_storage.get_trial_id_from_study_id_trial_number(self.study_id, number)

    def trial_system_attrs(self, number: int) -> dict[str, Any]:
        return dict(self.opened_storage.get_trial_system_attrs(self.trial_id(number)))


# --------------------------------------------------------------------------------------------------------------
# Sampler, pruner, study (the storage: bars.sweep_storage)
# --------------------------------------------------------------------------------------------------------------
GRID_POINT_ATTR = "bars_grid_point"  # the index (in the grid's points) of the point a grid trial trains


def make_sampler(cfg: DictConfig, seed: int) -> optuna.samplers.BaseSampler:
    """``sweep.sampler.name``: tpe (its settings), random, or grid (:class:`GridPointsSampler` over
    :func:`bars.grids.grid_of`; its order comes from ``sweep.seed``, so every worker walks the same one); tpe and
    random with ``sweep.sampler.unique=true`` never repeat a point (:class:`bars.samplers.UniqueSampler`)."""
    name, _ = block(cfg, "sampler")
    if name == "grid":
        from bars.grids import grid_of

        grid = grid_of(cfg)
        assert grid is not None
        return GridPointsSampler(grid, int(cfg.sweep.seed))
    if name not in ("tpe", "random"):
        raise SweepError(f"sweep.sampler.name must be one of {' | '.join(SAMPLERS)}, got {name!r}")
    settings = sampler_settings(cfg)
    unique = settings.pop("unique")
    with _experimental_ok():
        base = optuna.samplers.RandomSampler(seed=seed) if name == "random" else \
            optuna.samplers.TPESampler(seed=seed, **settings)
    return UniqueSampler(base, seed=seed, space_of=recorded_space) if unique else base


def make_pruner(cfg: DictConfig) -> optuna.pruners.BasePruner:
    """``sweep.pruner.name``: median, sha (successive halving), hyperband or none; the step is the epoch."""
    name, _ = block(cfg, "pruner")
    settings = pruner_settings(cfg)
    if name == "median":
        return optuna.pruners.MedianPruner(**settings)
    if name == "sha":
        return optuna.pruners.SuccessiveHalvingPruner(**settings)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(**settings)
    if name == "none":
        return optuna.pruners.NopPruner()
    raise SweepError(f"sweep.pruner.name must be one of {' | '.join(PRUNERS)}, got {name!r}")


class GridPointsSampler(optuna.samplers.BaseSampler):
    """Replays a grid's points (:class:`bars.grids.Grid`: a product or an explicit point list) in a fixed order
    (a permutation by ``seed``, the same in every worker). The objective first claims a point for its trial
    (:func:`claim_grid_point`, which records its index in the ``bars_grid_point`` user attribute); the sampler
    then answers each axis with that point's value. A failed trial frees its point; a retried one keeps it."""

    def __init__(self, grid: Any, seed: int) -> None:
        import random

        self.grid = grid
        self.seed = int(seed)
        self.order = list(range(grid.size))
        random.Random(self.seed).shuffle(self.order)
        self._encoded = [{k: encode_choice(v) for k, v in p.items()} for p in grid.points]

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, Any]:
        return {}

    def sample_relative(self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, Any]
                        ) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: optuna.Study, trial: FrozenTrial, param_name: str,
                           param_distribution: optuna.distributions.BaseDistribution) -> Any:
        idx = trial.user_attrs.get(GRID_POINT_ATTR)
        if idx is None:
            raise SweepError(f"grid sweep: trial {trial.number} asks for {param_name} before claiming a grid point")
        point = self._encoded[int(idx)]
        if param_name not in point:
            raise SweepError(f"grid sweep: {param_name} is not an axis of the grid ({sorted(point)})")
        return point[param_name]


def grid_holders(study: optuna.Study, exclude: int | None = None) -> dict[int, list[int]]:
    """Grid point -> the numbers of the live or finished (not skipped) trials holding it."""
    out: dict[int, list[int]] = {}
    for t in counted(study.get_trials(deepcopy=False)):
        idx = t.user_attrs.get(GRID_POINT_ATTR)
        if idx is None or t.number == exclude or not (t.state in FINISHED or t.state in ACTIVE):
            continue
        out.setdefault(int(idx), []).append(t.number)
    return out


def claim_grid_point(study: optuna.Study, trial: optuna.Trial) -> int | None:
    """For a grid sweep (the study's sampler is a :class:`GridPointsSampler`), give ``trial`` the first point in
    the sampler's order that no live or finished trial holds (a retried trial keeps the point it inherited).
    Two workers claiming the same point at once: the lower trial number keeps it, the other takes the next free
    one. No free point left: the trial is marked skipped (like a budget-race loser) and :class:`OverBudget` is
    raised. Returns the point's index (None for other samplers)."""
    sampler = study.sampler
    if not isinstance(sampler, GridPointsSampler):
        return None
    mine = trial.user_attrs.get(GRID_POINT_ATTR)
    for _ in range(sampler.grid.size + 1):
        held = grid_holders(study, exclude=trial.number)
        if mine is not None and not held.get(int(mine)):
            return int(mine)
        free = [i for i in sampler.order if i not in held]
        if not free:
            trial.set_user_attr(SKIPPED_ATTR, "every grid point is taken by another trial")
            raise OverBudget
        mine = free[0]
        trial.set_user_attr(GRID_POINT_ATTR, mine)
        if not any(n < trial.number for n in grid_holders(study, exclude=trial.number).get(mine, [])):
            return mine
    trial.set_user_attr(SKIPPED_ATTR, "no grid point could be claimed")
    raise OverBudget


def grid_coverage(study: optuna.Study, size: int) -> dict[str, int]:
    """A grid sweep's points: ``finished`` (distinct points with a finished trial), ``repeated`` (points run by
    more than one finished trial: two workers raced for the same point), ``missing`` (points not yet run)."""
    runs: dict[int, int] = {}
    for t in counted(study.get_trials(deepcopy=False)):
        idx = t.user_attrs.get(GRID_POINT_ATTR)
        if idx is not None and t.state in FINISHED:
            runs[int(idx)] = runs.get(int(idx), 0) + 1
    return {"points": size, "finished": len(runs), "repeated": sum(1 for n in runs.values() if n > 1),
            "missing": size - len(runs)}


def distribution(p: Param) -> optuna.distributions.BaseDistribution:
    """The Optuna distribution a search-space dimension suggests from (``Param.suggest``; choices encoded)."""
    if p.type == "float":
        return optuna.distributions.FloatDistribution(float(p.low), float(p.high), log=p.log, step=p.step)
    if p.type == "int":
        return optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log, step=int(p.step or 1))
    return optuna.distributions.CategoricalDistribution([encode_choice(c) for c in p.choices])


def distributions(space: dict[str, Param]) -> dict[str, optuna.distributions.BaseDistribution]:
    """The search space as Optuna distributions (``bars.samplers.space_size`` counts its points)."""
    return {k: distribution(p) for k, p in space.items()}


def study_record(cfg: DictConfig, space: dict[str, Param]) -> dict[str, Any]:
    """What the launcher writes into the study's user attributes (and the MLflow parent run)."""
    s_name, _ = block(cfg, "sampler")
    p_name, _ = block(cfg, "pruner")
    record: dict[str, Any] = {
        "model": str(cfg.model.id),
        "model_class": str(cfg.model.name),
        "data": str(cfg.data.name),
        "sampler": SAMPLERS[s_name],
        "sampler_settings": sampler_settings(cfg),
        "sampler_seed": int(cfg.sweep.seed),
        "sampler_seed_rule": ("grid order: a permutation by sweep.seed, the same in every worker" if s_name == "grid"
                              else "seed + 1000 * worker_index + trials in the study when the worker starts"),
        "pruner": PRUNERS[p_name],
        "pruner_settings": pruner_settings(cfg),
        "pruning_metric": f"{monitor_of(cfg).name} per epoch" if p_name != "none" else "none",
        "objective": monitor_of(cfg).describe(),
        "optuna_version": optuna.__version__,
        "search_space": json.loads(json.dumps({k: p.describe() for k, p in space.items()})),
        "max_epochs_cap": None if cfg.sweep.max_epochs is None else int(cfg.sweep.max_epochs),
        "space_points": space_size(distributions(space)),  # None: infinite; an exhausted finite space ends the sweep
        "arithmetic": arithmetic(cfg),
    }
    if s_name == "grid":
        from bars.grids import grid_of

        grid = grid_of(cfg)
        assert grid is not None
        record["grid"] = json.loads(json.dumps(grid.describe()))
    return record


def create_study(cfg: DictConfig, storage: optuna.storages.BaseStorage, space: dict[str, Param],
                 replay: Sequence[str] = ()) -> SweepStudy:
    """Create the study once (the launcher, before any worker starts, so workers never race to create it) or
    load it, and record its setup."""
    name = str(cfg.sweep.study)
    monitor = monitor_of(cfg)
    direction = optuna.study.StudyDirection.MAXIMIZE if monitor.direction == "max" else \
        optuna.study.StudyDirection.MINIMIZE
    optuna.create_study(storage=storage, study_name=name, direction=direction, load_if_exists=True)
    study = SweepStudy(name, storage, make_sampler(cfg, int(cfg.sweep.seed)), make_pruner(cfg))
    if study.direction != direction:
        raise SweepError(f"study {name!r} was created to {study.direction.name.lower()} its objective, but "
                         f"train.monitor={monitor.describe()} asks to {direction.name.lower()}; start a new "
                         f"study (sweep.study=<new name>) or restore the monitor")
    record = study_record(cfg, space)
    old = study.user_attrs
    if "sampler" in old and (old.get("grid") or record.get("grid")) and \
            (old.get("grid") or {}).get("digest") != (record.get("grid") or {}).get("digest"):
        was = (old.get("grid") or {}).get("file") or f"no grid ({old.get('sampler')})"
        now = (record.get("grid") or {}).get("file") or f"no grid ({record['sampler']})"
        raise SweepError(f"study {name!r} was created to walk {was}; this sweep walks {now}: a grid study's trials "
                         f"are its grid's points, so the grid cannot change. Start a new study (sweep.study=<new "
                         f"name>) or restore the grid")
    check_arithmetic(name, old, cfg)
    check_space_compatible(study, space)
    if old.get("search_space") not in (None, record["search_space"]):
        print(f"bars sweep: warning: the search space of study {name!r} changed since it was created; the sampler "
              f"continues with the trials so far", file=sys.stderr)
    for k in ("sampler", "sampler_settings", "pruner", "pruner_settings"):
        if k in old and old[k] != record[k]:
            print(f"bars sweep: warning: study {name!r} was run with {k} {old[k]}; it continues with {record[k]} "
                  f"(the trials so far are kept)", file=sys.stderr)
    for k, v in record.items():
        study.set_user_attr(k, v)
    study.set_user_attr("budget", trial_cap(cfg))
    budget = compute_budget(cfg)
    study.set_user_attr("compute_budget", None if budget is None else budget.as_record())
    study.set_user_attr("replay_overrides", list(replay))
    if "created_at" not in old:
        study.set_user_attr("created_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return study


def arithmetic(cfg: DictConfig) -> dict[str, Any]:
    """``train.precision`` and ``train.tf32``: what one study's trials share (its ``arithmetic`` attribute)."""
    return {"precision": str(cfg.train.precision), "tf32": bool(cfg.train.tf32)}


def check_arithmetic(name: str, attrs: dict[str, Any], cfg: DictConfig) -> None:
    """Refuse to run ``cfg``'s trials in study ``name`` (user attributes ``attrs``) with other arithmetic than its
    own (recorded since session 42; older studies record it on their next launch)."""
    was, now = attrs.get("arithmetic"), arithmetic(cfg)
    if was is not None and was != now:
        raise SweepError(f"study {name!r} was run with train.precision={was['precision']}, train.tf32={was['tf32']}; "
                         f"this sweep asks for train.precision={now['precision']}, train.tf32={now['tf32']}: one "
                         "study's trials share their arithmetic. Start a new study (sweep.study=<new name>) or restore it")


def check_space_compatible(study: optuna.Study, space: dict[str, Param]) -> None:
    """Optuna lets float/int ranges change within a study, but not categorical choices: a trial would fail at
    its first suggestion. Check against the distributions the study's trials used, before any trial starts."""
    seen: dict[str, Any] = {}
    for t in study.get_trials(deepcopy=False):
        for k, d in t.distributions.items():
            seen.setdefault(k, d)
    bad = []
    for k, p in space.items():
        d = seen.get(k)
        if d is None:
            continue
        if p.type == "categorical":
            new = tuple(encode_choice(c) for c in p.choices)
            if not isinstance(d, optuna.distributions.CategoricalDistribution) or tuple(d.choices) != new:
                bad.append(f"  {k}: the study used {getattr(d, 'choices', d)}, the space now has {list(new)}")
        elif isinstance(d, optuna.distributions.CategoricalDistribution):
            bad.append(f"  {k}: the study used categorical {d.choices}, the space now has a {p.type} range")
    if bad:
        raise SearchSpaceError(
            f"study {study.study_name!r} ({len(study.get_trials(deepcopy=False))} trials) was run with other "
            f"categorical choices; Optuna cannot change them within a study:\n" + "\n".join(bad) +
            "\nRestore the old choices, or start a new study: sweep.study=<new name> (or remove its storage, "
            "e.g. sweeps/<model>__<data>/study.journal, to start over)")


def load_study(cfg: DictConfig, storage: optuna.storages.BaseStorage, seed: int) -> SweepStudy:
    name = str(cfg.sweep.study)
    try:
        return SweepStudy(name, storage, make_sampler(cfg, seed), make_pruner(cfg))
    except KeyError as e:
        raise SweepError(f"study {name!r} does not exist in the storage; start the sweep with `make sweep` "
                         f"(the launcher creates it) before starting workers") from e


# --------------------------------------------------------------------------------------------------------------
# Trial bookkeeping
# --------------------------------------------------------------------------------------------------------------
def counted(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that are part of the sweep (not the budget-race losers)."""
    return [t for t in trials if SKIPPED_ATTR not in t.user_attrs]


def budget_of(study: optuna.Study, default: int | None) -> int | None:
    """The study's trial budget (a cap when a compute budget is set; None: no cap)."""
    v = study.user_attrs.get("budget", default)
    return None if v is None else int(v)


def trial_cap(cfg: DictConfig) -> int | None:
    """``sweep.trials`` (None when null)."""
    v = cfg.sweep.get("trials")
    return None if v is None else int(v)


def compute_budget(cfg: DictConfig) -> Budget | None:
    """``sweep.budget`` parsed (:func:`bars.compute.parse_budget`), None when null."""
    return compute.parse_budget(cfg.sweep.get("budget"))


def compute_budget_of(study: optuna.Study, default: Budget | None) -> Budget | None:
    """The compute budget the launcher stored in the study (a worker follows it), else ``default``."""
    if "compute_budget" in study.user_attrs:
        return Budget.from_record(study.user_attrs["compute_budget"])
    return default


def trial_compute(t: FrozenTrial) -> dict[str, Any]:
    """The compute a trial recorded itself (:func:`bars.compute.own_compute`)."""
    return compute.own_compute(t.user_attrs, t.number)


def worker_identity() -> str:
    """``host:pid:start`` of this worker process, written into each trial it runs (``WORKER_ATTR``)."""
    return process.identity()


def fail_stale_trials(study: SweepStudy, retry: bool) -> list[int]:
    """Mark RUNNING trials whose worker is dead as failed. Journal: by process id on this host. RDB: also by
    heartbeat (optuna's ``fail_stale_trials``, which enqueues retries through the storage's callback); with
    ``retry`` a trial found dead by process id is retried with the same parameters too."""
    storage = study.opened_storage
    failed: list[int] = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ident = t.user_attrs.get(WORKER_ATTR)
        if ident is None or process.identity_alive(ident) is not False:
            continue
        # a retried trial inherits its user attributes (the dead worker's identity) until its new worker
        # writes its own, a moment after it starts: leave young trials alone
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        if now - started < STALE_MIN_AGE:
            continue
        trial_id = study.trial_id(t.number)
        try:
            storage.set_trial_user_attr(trial_id, "bars_failed_reason", f"worker {ident} died")
            if not storage.set_trial_state_values(trial_id, TrialState.FAIL):
                continue
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, KeyError):
            continue  # another process finished or failed it first
        failed.append(t.number)
        callback = heartbeat_callback(storage)
        if retry and callback is not None:
            with _experimental_ok():
                callback(study, storage.get_trial(trial_id))
    if isinstance(storage, optuna.storages.RDBStorage) and storage.get_heartbeat_interval():
        with _experimental_ok():
            optuna.storages.fail_stale_trials(study)
    return failed


@dataclass
class BudgetState:
    budget: int | None  # trials (a cap when ``compute`` is set; None: no cap)
    finished: int
    active: int
    failed: int
    best: float | None
    compute: Budget | None = None  # the compute budget (sweep.budget), if any
    spent: float = 0.0  # of ``compute``'s unit: every counted trial's, running ones' progress included
    totals: dict[str, float] = field(default_factory=dict)  # bars.compute.KEYS summed over the counted trials
    exhausted: bool = False  # every point of the study's finite search space has a finished trial

    @property
    def done(self) -> bool:
        return ((self.budget is not None and self.finished >= self.budget) or self.exhausted
                or (self.compute is not None and self.spent >= self.compute.amount))

    @property
    def overshoot(self) -> float | None:
        """Compute spent beyond the compute budget (negative: stopped before it, e.g. by the trial cap)."""
        return None if self.compute is None else self.spent - self.compute.amount

    def describe_compute(self) -> str:
        """'5.2M of 5M training samples (overshoot +0.2M)', or the totals when there is no compute budget."""
        t = self.totals
        used = (f"{compute.fmt_samples(t.get(compute.TRAIN_SAMPLES, 0.0))} training samples, "
                f"{compute.fmt_seconds(t.get(compute.CPU_S, 0.0))} CPU, "
                f"{compute.fmt_seconds(t.get(compute.WALL_S, 0.0))} wall")
        if t.get(compute.DEVICE_S):
            used += f", {compute.fmt_seconds(t[compute.DEVICE_S])} device"
        if self.compute is None:
            return used
        b = self.compute
        over = self.spent - b.amount
        return (f"budget {b.spec}: spent {b.fmt(self.spent)} of {b.fmt(b.amount)} {b.unit} "
                f"(overshoot {'+' if over >= 0 else '-'}{b.fmt(abs(over))}); {used}")


def recorded_space(study: optuna.Study) -> dict[str, Any] | None:
    """The study's current search space (the last launcher's ``search_space``) as Optuna distributions; None when
    it records none or it is infinite. Read from the storage: the unique sampler asks with Optuna's Hyperband
    bracket view of the study, which has no ``user_attrs``."""
    attrs = study._storage.get_study_user_attrs(study._study_id)
    space = search.space_from_record(attrs.get("search_space"))
    if not space or attrs.get("space_points") is None:
        return None
    return distributions(space)


def budget_state(study: optuna.Study, default_budget: int | None, default_compute: Budget | None = None
                 ) -> BudgetState:
    trials = counted(study.get_trials(deepcopy=False))
    fin = [t for t in trials if t.state in FINISHED]
    comp = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    cb = compute_budget_of(study, default_compute)
    used = [trial_compute(t) for t in trials]
    return BudgetState(
        budget=budget_of(study, default_budget),
        finished=len(fin),
        active=sum(t.state in ACTIVE for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        best=(max(comp) if maximizes(study) else min(comp)) if comp else None,
        compute=cb,
        spent=sum(compute.trial_cost(c, cb.unit) for c in used) if cb is not None else 0.0,
        totals=compute.totals(used),
        exhausted=space_exhausted(fin, recorded_space(study)),
    )


class OverBudget(Exception):
    """This trial lost the race for the last places of the budget: it is marked skipped and never trains."""


def claim_or_skip(study: optuna.Study, trial: optuna.Trial, budget: int | None,
                  compute_budget: Budget | None = None) -> None:
    """Called first in the objective: if trials numbered before this one already fill the trial budget, or have
    already spent the compute budget (running ones: their progress so far), this trial lost a race between
    workers: mark it skipped and raise (it is then failed without training)."""
    ahead = [t for t in counted(study.get_trials(deepcopy=False)) if t.number < trial.number]
    if budget is not None and sum(t.state in FINISHED or t.state in ACTIVE for t in ahead) >= budget:
        trial.set_user_attr(SKIPPED_ATTR, "budget filled by other workers")
        raise OverBudget
    if compute_budget is not None:
        spent = sum(compute.trial_cost(trial_compute(t), compute_budget.unit) for t in ahead)
        if spent >= compute_budget.amount:
            trial.set_user_attr(SKIPPED_ATTR, f"compute budget {compute_budget.spec} spent")
            raise OverBudget


# --------------------------------------------------------------------------------------------------------------
# Results files
# --------------------------------------------------------------------------------------------------------------
def state_name(s: TrialState) -> str:
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
            "WAITING": "waiting"}.get(s.name, s.name.lower())


def trials_table(study: optuna.Study, space_keys: Sequence[str] | None = None) -> tuple[list[str], list[list]]:
    trials = sorted(counted(study.get_trials(deepcopy=False)), key=lambda t: t.number)
    keys = list(space_keys or [])
    for t in trials:
        for k in t.params:
            if k not in keys:
                keys.append(k)
    recorded = {k for t in trials for k in t.user_attrs}
    # registry order, then per task (a multi-task trial records val_<metric>_<task>)
    metric_keys = [f"val_{c}" for c in metrics.metric_columns(recorded, "val")]
    header = ["number", "state", *keys, *metric_keys, *RUN_KEYS, *COMPUTE_COLUMNS]
    rows = []
    for t in trials:
        row: list[Any] = [t.number, state_name(t.state)]
        for k in keys:
            v = t.params.get(k, "")
            row.append(format_value(decode_choice(v)) if v != "" else "")
        for r in (*metric_keys, *RUN_KEYS):
            v = t.user_attrs.get(r, "")
            if isinstance(v, float):
                v = f"{v:.6f}" if r != "seconds" else f"{v:.1f}"
            row.append(v)
        used = trial_compute(t)
        for r in COMPUTE_COLUMNS:
            v = used.get(r, "")
            row.append(f"{v:.2f}" if isinstance(v, float) and r not in compute.SAMPLE_KEYS else
                       int(v) if isinstance(v, float) else v)
        rows.append(row)
    return header, rows


def maximizes(study: optuna.Study) -> bool:
    return study.direction == optuna.study.StudyDirection.MAXIMIZE


def monitor_of(cfg: DictConfig) -> Monitor:
    """The sweep's objective: the training monitor (``train.monitor``), per epoch and at the best epoch."""
    return Monitor.parse(to_container(cfg.train.monitor), task=cfg.train.get("monitor_task"))


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    comp = [t for t in counted(study.get_trials(deepcopy=False))
            if t.state == TrialState.COMPLETE and t.value is not None]
    sign = 1.0 if maximizes(study) else -1.0
    return max(comp, key=lambda t: (sign * t.value, -t.number)) if comp else None


def write_results(study: optuna.Study, out_dir: Path, space_keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``trials.csv`` and ``best.overrides`` (when a trial completed). Returns a summary."""
    header, rows = trials_table(study, space_keys)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    atomic_write_text(out_dir / "trials.csv", buf.getvalue())
    best = best_trial(study)
    summary: dict[str, Any] = {"trials": len(rows), "best": None,
                               "compute": compute.totals(trial_compute(t) for t in counted(study.get_trials(
                                   deepcopy=False)))}
    if best is not None:
        lines = list(best.user_attrs.get("replay_overrides", study.user_attrs.get("replay_overrides", [])))
        params = {k: decode_choice(v) for k, v in best.params.items()}
        keys = set(params)
        lines = [o for o in lines if o.split("=", 1)[0].lstrip("+~") not in keys] + to_overrides(params)
        atomic_write_text(out_dir / "best.overrides", "\n".join(lines) + "\n")
        summary["best"] = {"number": best.number, "value": best.value, "overrides": lines}
    return summary


__all__ = [
    "ACTIVE", "COMPUTE_COLUMNS", "FINISHED", "GRID_POINT_ATTR", "PRUNERS", "RUN_KEYS", "SAMPLERS", "SKIPPED_ATTR",
    "STALE_MIN_AGE", "WORKER_ATTR", "BudgetState", "GridPointsSampler", "OverBudget", "SweepError", "SweepStudy",
    "arithmetic", "best_trial", "budget_of", "budget_state", "check_arithmetic", "check_space_compatible",
    "claim_grid_point", "claim_or_skip", "compute_budget", "compute_budget_of", "counted", "create_study",
    "distribution", "distributions", "fail_stale_trials", "first_use_lock", "grid_coverage", "grid_holders",
    "heartbeat_callback", "is_journal", "load_study", "make_pruner", "make_sampler", "maximizes", "monitor_of",
    "open_storage", "pruner_settings", "recorded_space", "sampler_settings", "state_name", "storage_url",
    "study_record", "sweep_dir", "trial_cap", "trial_compute", "trials_table", "worker_identity", "write_results",
]
