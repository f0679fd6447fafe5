"""`bars sweep`: an Optuna hyperparameter sweep, on one machine or many, crash-safe.

The launcher (``sweep.role=launcher``, what ``make sweep`` runs) validates the search space against the composed
config, creates the study ``<model>__<data>`` once in the storage, opens (or reuses) the MLflow parent run, then
runs one worker in-process (``sweep.workers=1``) or starts ``sweep.workers`` worker processes
(``python -m bars.cli sweep ... sweep.role=worker``), and at the end writes ``sweeps/<model>__<data>/trials.csv``
and ``best.overrides``. Workers started by any job runner on other machines run the same worker command against
a shared ``postgresql://`` storage.

Budget: a worker starts a trial only while ``finished + running + waiting < sweep.trials`` (finished = complete +
pruned); a trial that loses the race to another worker is marked failed with the user attribute
``bars_skipped`` before it trains and is ignored everywhere. Failed trials (a crash, a killed worker) do not count
and are replaced, so the sweep ends with the full budget of finished trials. Rerunning the command resumes the
study (the budget is global: ``TRIALS`` is the total, not an increment).

Killed workers: with a journal file (one machine) a RUNNING trial whose worker process no longer exists on this
host is marked failed by the next worker or launcher that looks. With RDB storage (PostgreSQL) a heartbeat
thread runs with every trial; a trial without a heartbeat for ``sweep.grace_period`` seconds (or whose worker is
known dead on this host) is failed and retried with the same parameters (``RetryFailedTrialCallback``).

Everything is a plain function of the composed config; :func:`main` is the Hydra shell.
"""

from __future__ import annotations

import contextlib
import csv
import difflib
import io
import json
import math
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState

from bars.config import CONF_DIR, flatten, hydra_command

FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
ACTIVE = (TrialState.RUNNING, TrialState.WAITING)
SKIPPED_ATTR = "bars_skipped"
WORKER_ATTR = "bars_worker"
STALE_MIN_AGE = 5.0  # seconds: a RUNNING trial younger than this is never failed by the process check
RESULT_KEYS = ("val_auc", "val_logloss", "epochs", "seconds")

# The overrides of the sweep command that are not replayed by best.overrides (they configure the sweep, not the
# model or its training).
_NOT_REPLAYED = ("model", "data", "sweep", "final", "leaderboard", "hydra", "tracking", "paths")


class SearchSpaceError(ValueError):
    """A search-space file that cannot be used: unknown config keys, bad parameter specs."""


class SweepError(RuntimeError):
    """The sweep cannot start or continue (no study for a worker, too many failed trials, ...)."""


# --------------------------------------------------------------------------------------------------------------
# Search spaces
# --------------------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One dimension of a search space, addressed by a dotted config key."""

    key: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        encoded = [encode_choice(c) for c in self.choices]
        return decode_choice(trial.suggest_categorical(self.key, encoded))

    def describe(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        d: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        return d


def encode_choice(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists (hidden units) become JSON strings."""
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), separators=(",", ":"))
    return v


def decode_choice(v: Any) -> Any:
    if isinstance(v, str) and v.startswith("["):
        return json.loads(v)
    return v


def _parse_param(key: str, spec: Any, source: Path) -> Param:
    where = f"{source}: {key}"
    if isinstance(spec, (list, tuple)):  # shorthand: a list of choices
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"{where}: expected a mapping like {{type: float, low: .., high: ..}} or a list "
                               f"of choices, got {spec!r}")
    spec = dict(spec)
    t = spec.pop("type", "categorical" if "choices" in spec else None)
    if t in ("float", "int"):
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown or "low" not in spec or "high" not in spec:
            raise SearchSpaceError(f"{where}: type {t} takes low, high and optional log, step; got "
                                   f"{sorted(spec)}")
        low, high = spec["low"], spec["high"]
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or low > high:
            raise SearchSpaceError(f"{where}: need numeric low <= high, got low={low!r} high={high!r}")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise SearchSpaceError(f"{where}: log scale needs low > 0, got {low!r}")
        step = spec.get("step")
        if log and step is not None:
            raise SearchSpaceError(f"{where}: log and step cannot be combined")
        if t == "int" and (int(low) != low or int(high) != high):
            raise SearchSpaceError(f"{where}: int bounds must be integers, got {low!r}..{high!r}")
        return Param(key, t, float(low) if t == "float" else int(low), float(high) if t == "float" else int(high),
                     log, step)
    if t == "categorical":
        unknown = set(spec) - {"choices"}
        choices = spec.get("choices")
        if unknown or not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: type categorical takes a non-empty list `choices`; got {spec!r}")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))
                    or (isinstance(c, list) and all(isinstance(x, (bool, int, float, str)) for x in c))):
                raise SearchSpaceError(f"{where}: choice {c!r} must be a scalar or a flat list of scalars")
        return Param(key, "categorical", choices=tuple(tuple(c) if isinstance(c, list) else c for c in choices))
    raise SearchSpaceError(f"{where}: unknown type {t!r}; use float, int or categorical")


def _load_yaml(path: Path) -> dict[str, Any]:
    node = OmegaConf.load(path)
    data = OmegaConf.to_container(node, resolve=True)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{path}: expected a mapping of dotted config keys to parameter specs")
    return data


SEARCH_DIR = CONF_DIR / "search"


def search_dir_of(cfg: DictConfig) -> Path:
    d = cfg.sweep.get("search_dir")
    return Path(str(d)) if d else SEARCH_DIR


def search_space_files(model: str, search_dir: Path | str = SEARCH_DIR) -> tuple[Path, Path]:
    d = Path(search_dir)
    return d / "common.yaml", d / f"{model}.yaml"


def load_search_space(model: str, search_dir: Path | str = SEARCH_DIR, data: str | None = None
                      ) -> dict[str, Param]:
    """``conf/search/common.yaml`` updated by ``conf/search/<model>.yaml``: the model file adds keys, overrides
    common ones, and drops a common key by mapping it to ``null`` (a model without dropout, say). Then, when it
    exists, ``conf/search/data/<data>.yaml`` narrows the space for that dataset: it replaces (or, with ``null``,
    drops) keys the space already has and ignores the others, so one file serves every model (e.g. smaller
    networks for the CPU demo data)."""
    common_path, model_path = search_space_files(model, search_dir)
    if not model_path.exists():
        have = sorted(p.stem for p in model_path.parent.glob("*.yaml") if p.stem != "common")
        raise SearchSpaceError(f"no search space for model {model!r}: {model_path} does not exist; "
                               f"search spaces exist for {have}")
    merged: dict[str, tuple[Any, Path]] = {}
    for path in (common_path, model_path):
        if not path.exists():
            continue
        for key, spec in _load_yaml(path).items():
            if spec is None:
                merged.pop(key, None)
            else:
                merged[key] = (spec, path)
    data_path = Path(search_dir) / "data" / f"{data}.yaml"
    if data and data_path.exists():
        for key, spec in _load_yaml(data_path).items():
            if key in merged:
                if spec is None:
                    merged.pop(key)
                else:
                    merged[key] = (spec, data_path)
    return {k: _parse_param(k, s, p) for k, (s, p) in merged.items()}


def _model_id(cfg: DictConfig) -> str:
    """The model config's id (conf/model/<id>.yaml; variants such as crossnet share a registry name)."""
    return str(cfg.model.get("id") or cfg.model.name)


def space_of(cfg: DictConfig) -> dict[str, Param]:
    """The search space of the composed config's model (by its config id) and dataset."""
    return load_search_space(_model_id(cfg), search_dir_of(cfg), str(cfg.data.name))


def validate_space(space: dict[str, Param], cfg: DictConfig) -> None:
    """Every key must be a leaf (or list) of the composed config: otherwise raise listing the nearest keys."""
    keys = flatten(cfg)
    bad = []
    for key, p in space.items():
        if key not in keys:
            near = difflib.get_close_matches(key, list(keys), n=5, cutoff=0.5)
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            near += [k for k in keys if prefix and k.startswith(prefix) and k not in near][:8]
            bad.append(f"  {key}: not in the composed config; nearest valid keys: {near or sorted(keys)[:10]}")
            continue
        current = keys[key]
        if p.type in ("float", "int") and (isinstance(current, (bool, list, dict, str))):
            bad.append(f"  {key}: {p.type} range for a config value {current!r}")
        if p.type == "categorical":
            for c in p.choices:
                if isinstance(c, tuple) != isinstance(current, list) and current is not None:
                    bad.append(f"  {key}: choice {c!r} does not match the config value {current!r} (list vs scalar)")
                    break
    if bad:
        files = " + ".join(str(p) for p in search_space_files(_model_id(cfg), search_dir_of(cfg)))
        raise SearchSpaceError(f"search space {files} does not fit the composed config:\n" + "\n".join(bad))


def format_value(v: Any) -> str:
    """A Hydra override value without spaces (best.overrides is word-split by `$(cat ...)`)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"cannot write {v!r} as an override")
        return repr(float(f"{v:.12g}"))  # 0.30000000000000004 (a float step) -> 0.3
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    s = str(v)
    if s and all(ch.isalnum() or ch in "_-./:" for ch in s) and s not in ("true", "false", "null"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in params.items()]


def apply_params(cfg: DictConfig, params: dict[str, Any]) -> DictConfig:
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for k, v in params.items():
        OmegaConf.update(out, k, v, merge=False)
    return out


def replayable_overrides(cli_overrides: Iterable[str]) -> list[str]:
    """The sweep command's overrides that also configure a replay (train.*, seed, model.params.*, ...)."""
    out = []
    for o in cli_overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] in _NOT_REPLAYED:
            continue
        out.append(o)
    return out


# --------------------------------------------------------------------------------------------------------------
# Storage, sampler, pruner, study
# --------------------------------------------------------------------------------------------------------------
def sweep_dir(cfg: DictConfig) -> Path:
    return Path(str(cfg.sweep.dir))


def storage_url(cfg: DictConfig) -> str:
    """``sweep.storage`` or the default journal file; journal paths are returned as ``journal:///abs/path``."""
    s = cfg.sweep.storage
    if s in (None, "", "null"):
        return "journal://" + str((sweep_dir(cfg) / "study.journal").resolve())
    s = str(s)
    if "://" not in s:  # a plain path: a journal file
        return "journal://" + str(Path(s).resolve())
    return s


def is_journal(url: str) -> bool:
    return url.startswith("journal://")


def open_storage(url: str, cfg: DictConfig | None = None) -> optuna.storages.BaseStorage:
    if is_journal(url):
        path = Path(url[len("journal://"):])
        path.parent.mkdir(parents=True, exist_ok=True)
        from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock

        backend = JournalFileBackend(str(path), lock_obj=JournalFileOpenLock(str(path)))
        return optuna.storages.JournalStorage(backend)
    s = cfg.sweep if cfg is not None else OmegaConf.create({})
    kwargs: dict[str, Any] = {}
    if not url.startswith("sqlite"):
        kwargs = {
            "heartbeat_interval": int(s.get("heartbeat_interval") or 10),
            "grace_period": int(s.get("grace_period") or 30),
            "heartbeat_stale_trial_callback": _retry_callback(s.get("max_retry", 3)),
        }
        engine = {"pool_pre_ping": True}
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.storages.RDBStorage(url, engine_kwargs=engine, **kwargs)
    return optuna.storages.RDBStorage(url)


def _retry_callback(max_retry: int | None) -> Any:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=max_retry)


def sampler_settings(cfg: DictConfig) -> dict[str, Any]:
    s = cfg.sweep.sampler
    return {
        "n_startup_trials": int(s.n_startup_trials),
        "n_ei_candidates": int(s.n_ei_candidates),
        "multivariate": bool(s.multivariate),
        "group": bool(s.group),
        "constant_liar": bool(s.constant_liar),
    }


def pruner_settings(cfg: DictConfig) -> dict[str, Any]:
    p = cfg.sweep.pruner
    return {"n_startup_trials": int(p.n_startup_trials), "n_warmup_steps": int(p.n_warmup_steps),
            "interval_steps": int(p.interval_steps)}


def make_sampler(cfg: DictConfig, seed: int) -> optuna.samplers.TPESampler:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(seed=seed, **sampler_settings(cfg))


def make_pruner(cfg: DictConfig) -> optuna.pruners.MedianPruner:
    return optuna.pruners.MedianPruner(**pruner_settings(cfg))


def study_record(cfg: DictConfig, space: dict[str, Param]) -> dict[str, Any]:
    """What the launcher writes into the study's user attributes (and the MLflow parent run)."""
    return {
        "model": str(cfg.model.name),
        "data": str(cfg.data.name),
        "sampler": "optuna.samplers.TPESampler",
        "sampler_settings": sampler_settings(cfg),
        "sampler_seed": int(cfg.sweep.seed),
        "sampler_seed_rule": "seed + 1000 * worker_index + trials in the study when the worker starts",
        "pruner": "optuna.pruners.MedianPruner",
        "pruner_settings": pruner_settings(cfg),
        "pruning_metric": "val_auc per epoch",
        "optuna_version": optuna.__version__,
        "search_space": json.loads(json.dumps({k: p.describe() for k, p in space.items()})),
        "max_epochs_cap": None if cfg.sweep.max_epochs is None else int(cfg.sweep.max_epochs),
    }


def create_study(cfg: DictConfig, storage: optuna.storages.BaseStorage, space: dict[str, Param],
                 replay: Sequence[str] = ()) -> optuna.Study:
    """Create the study once (launcher only; see STACK.md on creation races) or load it, and record its setup."""
    name = str(cfg.sweep.study)
    study = optuna.create_study(storage=storage, study_name=name, direction="maximize", load_if_exists=True,
                                sampler=make_sampler(cfg, int(cfg.sweep.seed)), pruner=make_pruner(cfg))
    record = study_record(cfg, space)
    old = study.user_attrs
    check_space_compatible(study, space)
    if old.get("search_space") not in (None, record["search_space"]):
        print(f"bars sweep: warning: the search space of study {name!r} changed since it was created; TPE "
              f"continues with the trials so far", file=sys.stderr)
    for k, v in record.items():
        study.set_user_attr(k, v)
    study.set_user_attr("budget", int(cfg.sweep.trials))
    study.set_user_attr("replay_overrides", list(replay))
    if "created_at" not in old:
        study.set_user_attr("created_at", time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    return study


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


def load_study(cfg: DictConfig, storage: optuna.storages.BaseStorage, seed: int) -> optuna.Study:
    name = str(cfg.sweep.study)
    try:
        return optuna.load_study(study_name=name, storage=storage, sampler=make_sampler(cfg, seed),
                                 pruner=make_pruner(cfg))
    except KeyError as e:
        raise SweepError(f"study {name!r} does not exist in the storage; start the sweep with `make sweep` "
                         f"(the launcher creates it) before starting workers") from e


# --------------------------------------------------------------------------------------------------------------
# Trial bookkeeping
# --------------------------------------------------------------------------------------------------------------
def counted(trials: Iterable[FrozenTrial]) -> list[FrozenTrial]:
    """Trials that are part of the sweep (not the budget-race losers)."""
    return [t for t in trials if SKIPPED_ATTR not in t.user_attrs]


def budget_of(study: optuna.Study, default: int) -> int:
    return int(study.user_attrs.get("budget", default))


def _proc_stat(pid: int) -> list[str] | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def _proc_start(pid: int) -> str | None:
    st = _proc_stat(pid)
    return st[19] if st and len(st) > 19 else None


def worker_identity() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{_proc_start(os.getpid()) or 0}"


def _alive(identity: str) -> bool | None:
    """True/False for a worker on this host; None when it runs elsewhere (unknown)."""
    try:
        host, pid_s, start = identity.rsplit(":", 2)
        pid = int(pid_s)
    except ValueError:
        return None
    if host != socket.gethostname():
        return None
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    st = _proc_stat(pid)
    if st is not None and st[0] in ("Z", "X"):
        return False  # killed, not yet reaped by its parent
    now = st[19] if st and len(st) > 19 else None
    # a different start time: the pid was reused by another process
    return not (now is not None and start != "0" and now != start)


def fail_stale_trials(study: optuna.Study, retry: bool) -> list[int]:
    """Mark RUNNING trials whose worker is dead as failed. Journal: by process id on this host. RDB: also by
    heartbeat (optuna's ``fail_stale_trials``, which enqueues retries through the storage's callback); with
    ``retry`` a trial found dead by process id is retried with the same parameters too."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # RDBStorage hides behind optuna's _CachedStorage
    failed: list[int] = []
    now = time.time()
    for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        ident = t.user_attrs.get(WORKER_ATTR)
        if ident is None or _alive(ident) is not False:
            continue
        # a retried trial inherits its user attributes (the dead worker's identity) until its new worker
        # writes its own, a moment after it starts: leave young trials alone
        started = t.datetime_start.timestamp() if t.datetime_start else 0.0
        if now - started < STALE_MIN_AGE:
            continue
        try:
            storage.set_trial_user_attr(t._trial_id, "bars_failed_reason", f"worker {ident} died")
            if not storage.set_trial_state_values(t._trial_id, TrialState.FAIL):
                continue
        except (optuna.exceptions.UpdateFinishedTrialError, RuntimeError, KeyError):
            continue  # another process finished or failed it first
        failed.append(t.number)
        if retry:
            cb = getattr(backend, "heartbeat_stale_trial_callback", None)
            if cb is not None:
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    cb(study, storage.get_trial(t._trial_id))
    if isinstance(backend, optuna.storages.RDBStorage) and backend.get_heartbeat_interval():
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            optuna.storages.fail_stale_trials(study)
    return failed


@dataclass
class BudgetState:
    budget: int
    finished: int
    active: int
    failed: int
    best: float | None

    @property
    def done(self) -> bool:
        return self.finished >= self.budget


def budget_state(study: optuna.Study, default_budget: int) -> BudgetState:
    trials = counted(study.get_trials(deepcopy=False))
    fin = [t for t in trials if t.state in FINISHED]
    comp = [t.value for t in trials if t.state == TrialState.COMPLETE and t.value is not None]
    return BudgetState(
        budget=budget_of(study, default_budget),
        finished=len(fin),
        active=sum(t.state in ACTIVE for t in trials),
        failed=sum(t.state == TrialState.FAIL for t in trials),
        best=max(comp) if comp else None,
    )


class _OverBudget(Exception):
    pass


def claim_or_skip(study: optuna.Study, trial: optuna.Trial, budget: int) -> None:
    """Called first in the objective: if trials numbered before this one already fill the budget, this trial
    lost a race between workers: mark it skipped and raise (it is then failed without training)."""
    ahead = [t for t in counted(study.get_trials(deepcopy=False))
             if t.number < trial.number and (t.state in FINISHED or t.state in ACTIVE)]
    if len(ahead) >= budget:
        trial.set_user_attr(SKIPPED_ATTR, "budget filled by other workers")
        raise _OverBudget


# --------------------------------------------------------------------------------------------------------------
# Results files
# --------------------------------------------------------------------------------------------------------------
def _state_name(s: TrialState) -> str:
    return {"COMPLETE": "complete", "PRUNED": "pruned", "FAIL": "failed", "RUNNING": "running",
            "WAITING": "waiting"}.get(s.name, s.name.lower())


def trials_table(study: optuna.Study, space_keys: Sequence[str] | None = None) -> tuple[list[str], list[list]]:
    trials = sorted(counted(study.get_trials(deepcopy=False)), key=lambda t: t.number)
    keys = list(space_keys or [])
    for t in trials:
        for k in t.params:
            if k not in keys:
                keys.append(k)
    header = ["number", "state", *keys, *RESULT_KEYS]
    rows = []
    for t in trials:
        row: list[Any] = [t.number, _state_name(t.state)]
        for k in keys:
            v = t.params.get(k, "")
            row.append(format_value(decode_choice(v)) if v != "" else "")
        for r in RESULT_KEYS:
            v = t.user_attrs.get(r, "")
            if isinstance(v, float):
                v = f"{v:.6f}" if r != "seconds" else f"{v:.1f}"
            row.append(v)
        rows.append(row)
    return header, rows


def _atomic_write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def best_trial(study: optuna.Study) -> FrozenTrial | None:
    comp = [t for t in counted(study.get_trials(deepcopy=False))
            if t.state == TrialState.COMPLETE and t.value is not None]
    return max(comp, key=lambda t: (t.value, -t.number)) if comp else None


def write_results(study: optuna.Study, out_dir: Path, space_keys: Sequence[str] | None = None) -> dict[str, Any]:
    """Write ``trials.csv`` and ``best.overrides`` (when a trial completed). Returns a summary."""
    header, rows = trials_table(study, space_keys)
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    _atomic_write(out_dir / "trials.csv", buf.getvalue())
    best = best_trial(study)
    summary: dict[str, Any] = {"trials": len(rows), "best": None}
    if best is not None:
        lines = list(best.user_attrs.get("replay_overrides", study.user_attrs.get("replay_overrides", [])))
        params = {k: decode_choice(v) for k, v in best.params.items()}
        keys = set(params)
        lines = [o for o in lines if o.split("=", 1)[0].lstrip("+~") not in keys] + to_overrides(params)
        _atomic_write(out_dir / "best.overrides", "\n".join(lines) + "\n")
        summary["best"] = {"number": best.number, "value": best.value, "overrides": lines}
    return summary


# --------------------------------------------------------------------------------------------------------------
# The objective
# --------------------------------------------------------------------------------------------------------------
TrainFn = Callable[..., Any]


def default_train_fn() -> TrainFn:
    from bars.run import train_one

    return train_one


@dataclass
class TrialContext:
    cfg: DictConfig
    space: dict[str, Param]
    replay: list[str]
    train_fn: TrainFn
    parent_run_id: str | None
    tracking: Any
    progress: Progress
    worker_seed: int
    threads: int | None
    stop: threading.Event = field(default_factory=threading.Event)


def trial_config(cfg: DictConfig, params: dict[str, Any], threads: int | None) -> DictConfig:
    tcfg = apply_params(cfg, params)
    cap = cfg.sweep.get("max_epochs")
    if cap is not None and int(tcfg.train.max_epochs) > int(cap):
        tcfg.train.max_epochs = int(cap)
    if threads and int(tcfg.train.get("num_threads", 0) or 0) == 0 and "num_threads" in tcfg.train:
        tcfg.train.num_threads = int(threads)
    return tcfg


def seen_val(trial: optuna.Trial) -> float | None:
    v = trial.user_attrs.get("val_auc")
    return float(v) if isinstance(v, (int, float)) else None


def make_objective(ctx: TrialContext, study: optuna.Study) -> Callable[[optuna.Trial], float]:
    budget_default = int(ctx.cfg.sweep.trials)

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        claim_or_skip(study, trial, budget_of(study, budget_default))
        trial.set_user_attr("sampler_seed", ctx.worker_seed)
        trial.set_user_attr("replay_overrides", ctx.replay)
        params = {k: p.suggest(trial) for k, p in ctx.space.items()}
        sys_attrs = study._storage.get_trial_system_attrs(trial._trial_id)
        if sys_attrs.get("failed_trial") is not None:
            trial.set_user_attr("retry_of", int(sys_attrs["failed_trial"]))
        tcfg = trial_config(ctx.cfg, params, ctx.threads)
        trial.set_user_attr("max_epochs", int(tcfg.train.max_epochs))
        last_epoch = int(tcfg.train.max_epochs)
        t0 = time.monotonic()
        seen = {"epochs": 0, "val_auc": None, "val_logloss": None}
        ctx.progress.trial_started(trial.number, study)

        def on_epoch(log: Any) -> None:
            seen["epochs"] = int(log.epoch)
            if seen["val_auc"] is None or float(log.val_auc) > seen["val_auc"]:
                seen["val_auc"], seen["val_logloss"] = float(log.val_auc), float(log.val_logloss)
            ctx.progress.epoch(trial.number, int(log.epoch), float(log.val_auc))
            trial.report(float(log.val_auc), step=int(log.epoch))
            # pruning after the last epoch saves nothing and would hide a finished result
            if int(log.epoch) < last_epoch and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {log.epoch}: val_auc {log.val_auc:.5f} below the median")
            if ctx.stop.is_set():
                raise KeyboardInterrupt

        tags = {"stage": "trial", "sweep_study": str(ctx.cfg.sweep.study), "trial_number": str(trial.number),
                "optuna_trial_id": str(trial._trial_id)}
        state = "failed"
        run_id = None
        err: BaseException | None = None
        quiet = ctx.progress.mode != "verbose"
        try:
            with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
                result = ctx.train_fn(tcfg, on_epoch=on_epoch, parent_run_id=ctx.parent_run_id,
                                      extra_tags=tags, quiet=quiet)
            run_id = getattr(result, "run_id", None)
            metrics = dict(getattr(result, "metrics", {}) or {})
            val = float(metrics["val_auc"])
            if not math.isfinite(val):
                raise ValueError(f"val_auc is {val}")
            trial.set_user_attr("val_auc", val)
            trial.set_user_attr("val_logloss", float(metrics.get("val_logloss", float("nan"))))
            trial.set_user_attr("epochs", int(getattr(result, "epochs", seen["epochs"])))
            for k in ("test_auc", "test_logloss"):
                if k in metrics:
                    trial.set_user_attr(k, float(metrics[k]))
            state = "complete"
            return val
        except optuna.TrialPruned as e:
            err = e
            state = "pruned"
            trial.set_user_attr("epochs", seen["epochs"])
            if seen["val_auc"] is not None:
                trial.set_user_attr("val_auc", seen["val_auc"])
                trial.set_user_attr("val_logloss", seen["val_logloss"])
            raise
        except BaseException as e:
            err = e
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", f"{type(e).__name__}: {e}"[:500])
            if isinstance(e, Exception):
                import traceback

                tb = "".join(traceback.format_exception(type(e), e, e.__traceback__))
                ctx.progress.message(f"trial #{trial.number} failed:\n{tb}")
            raise
        finally:
            secs = time.monotonic() - t0
            with contextlib.suppress(Exception):
                trial.set_user_attr("seconds", round(secs, 2))
                if run_id is None:
                    run_id = _run_id_from_error(err)
                if run_id:
                    trial.set_user_attr("mlflow_run_id", run_id)
            if ctx.tracking is not None:
                with contextlib.suppress(Exception):
                    ctx.tracking.trial_finished(run_id, tags, state, trial.number)
            with contextlib.suppress(Exception):
                ctx.progress.trial_finished(trial.number, state, study, seen_val(trial))

    return objective


def _run_id_from_error(e: BaseException | None) -> str | None:
    """``train_one`` sets ``run_id`` on an exception it re-raises (the MLflow run it ended)."""
    if e is None:
        return None
    return getattr(e, "run_id", None)


# --------------------------------------------------------------------------------------------------------------
# Progress: one live line per worker
# --------------------------------------------------------------------------------------------------------------
PROGRESS_MARK = "\x1e@bars-progress "


def _fmt_elapsed(s: float) -> str:
    s = int(s)
    return f"{s // 3600}:{s % 3600 // 60:02d}:{s % 60:02d}" if s >= 3600 else f"{s // 60}:{s % 60:02d}"


class Progress:
    """Progress of one worker. ``mode``: ``live`` (rewrite one line on a terminal), ``plain`` (a line per trial),
    ``relay`` (marked lines on stdout that the launcher draws), ``off``."""

    def __init__(self, mode: str, label: str, budget: int, stream: Any = None) -> None:
        self.mode, self.label, self.budget = mode, label, budget
        self.stream = stream or sys.stderr
        self.t0 = time.monotonic()
        self.best: float | None = None
        self.finished = 0
        self.current = ""

    def _line(self, what: str) -> str:
        best = "-" if self.best is None else f"{self.best:.5f}"
        i = min(self.finished + 1, self.budget)
        return (f"{self.label} trial {i}/{self.budget} {what} | best val_auc {best} | "
                f"{_fmt_elapsed(time.monotonic() - self.t0)}")

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
        st = budget_state(study, self.budget)
        self.best, self.finished, self.budget = st.best, st.finished, st.budget

    def trial_started(self, number: int, study: optuna.Study) -> None:
        self._sync(study)
        self.current = f"(#{number})"
        self._emit(self._line(f"(#{number}) starting"), False)

    def epoch(self, number: int, epoch: int, val_auc: float) -> None:
        self._emit(self._line(f"(#{number}) epoch {epoch} val_auc {val_auc:.5f}"), False)

    def trial_finished(self, number: int, state: str, study: optuna.Study, val: float | None = None) -> None:
        """Called before the trial is told to the storage: "trial i" counts it."""
        with contextlib.suppress(Exception):
            self._sync(study)
        if state == "complete" and val is not None and (self.best is None or val > self.best):
            self.best = val
        v = f" val_auc {val:.5f}" if isinstance(val, float) else ""
        self._emit(self._line(f"(#{number}) {state}{v}"), True)

    def message(self, text: str) -> None:
        if self.mode == "relay":
            print(PROGRESS_MARK + f"{self.label} {text}", file=sys.__stdout__, flush=True)
        elif self.mode != "off":
            if self.mode == "live":
                self.stream.write("\r\x1b[2K")
            print(f"{self.label} {text}", file=self.stream, flush=True)


class Board:
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


# --------------------------------------------------------------------------------------------------------------
# MLflow (through bars.tracking, the only module importing mlflow)
# --------------------------------------------------------------------------------------------------------------
class SweepTracking:
    """Parent run per study (its id kept in the study's user attributes, so reruns and workers reuse it), child
    run per trial (created by ``train_one`` with ``stage=trial``), trial-state tags, and reconciliation from the
    Optuna storage (the source of truth). Every call is best effort: MLflow trouble never stops a trial."""

    def __init__(self, cfg: DictConfig) -> None:
        from bars import tracking

        self.cfg = cfg
        self.mod = tracking
        self.tracker = tracking.Tracker(str(cfg.tracking.uri), str(cfg.tracking.experiment), tries=3,
                                        first_delay=1.0)

    def _run(self, run_id: str) -> Any:
        return self.mod.TrackedRun(self.tracker, run_id)

    def ensure_parent(self, study: optuna.Study, record: dict[str, Any]) -> str | None:
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        tags = {"stage": "sweep", "sweep_study": study.study_name, "model": record["model"],
                "data": record["data"], "sampler": record["sampler"], "optuna_version": record["optuna_version"],
                "storage": study.user_attrs.get("storage_kind", ""), "sweep_state": "running"}
        params = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in record.items()}
        if run_id:
            exists = self.tracker._call("get run", self.tracker.client.get_run, run_id)
            if exists is not None:
                # resume: the same parent, RUNNING again, owned by this process (for tracking.reconcile)
                env = self.mod.environment_tags()
                own = {k: env[k] for k in ("hostname", "pid", "pid_start", "command") if k in env}
                self.mod.end_run(run_id, "RUNNING", {**tags, **own, "resumed_at": time.strftime(
                    "%Y-%m-%dT%H:%M:%S%z")}, tracker=self.tracker)
                self._run(run_id).log_metrics({"budget": float(study.user_attrs.get("budget", 0))})
                return run_id
        run = self.tracker.start_run(study.study_name, tags=tags, params=params)
        study.set_user_attr("mlflow_parent_run_id", run.run_id)
        return run.run_id

    def trial_finished(self, run_id: str | None, tags: dict[str, str], state: str, number: int) -> None:
        if not run_id:
            return
        extra = {"state": state}
        if state == "pruned":  # train_one ended it FAILED (TrialPruned propagated): pruning is not a failure
            self.mod.end_run(run_id, "FINISHED", extra, tracker=self.tracker)
        else:
            self._run(run_id).set_tags(extra)

    def finish_parent(self, run_id: str | None, study: optuna.Study, st: BudgetState,
                      summary: dict[str, Any]) -> None:
        if not run_id:
            return
        run = self._run(run_id)
        best = summary.get("best")
        metrics = {"trials_finished": st.finished, "trials_failed": st.failed, "budget": st.budget}
        if best:
            metrics["best_val_auc"] = best["value"]
            run.set_tags({"best_trial": best["number"], "best_overrides": " ".join(best["overrides"])})
        run.log_metrics(metrics)
        self.mod.end_run(run_id, "FINISHED" if st.done else "KILLED",
                         {"sweep_state": "done" if st.done else "incomplete"}, tracker=self.tracker)

    def reconcile(self, study: optuna.Study) -> list[str]:
        """End trial runs still RUNNING in MLflow whose Optuna trial is not running (or whose worker is dead);
        tag every trial run with the trial's state."""
        try:
            return self._reconcile(study)
        except Exception as e:  # never let bookkeeping kill the sweep  # noqa: BLE001
            print(f"bars sweep: warning: MLflow reconcile failed: {type(e).__name__}: {e}", file=sys.stderr)
            return []

    def _reconcile(self, study: optuna.Study) -> list[str]:
        exp_id = self.tracker.experiment_id(create=False)
        if exp_id is None:
            return []
        client = self.tracker.client
        flt = f"tags.sweep_study = '{study.study_name}' and tags.stage = 'trial'"
        trials = {t._trial_id: t for t in study.get_trials(deepcopy=False)}
        ended = []
        token = None
        while True:
            page = client.search_runs([exp_id], filter_string=flt, max_results=1000, page_token=token)
            for r in page:
                tags = r.data.tags
                t = trials.get(int(tags.get("optuna_trial_id", -1)))
                state = None if t is None else _state_name(t.state)
                if r.info.status == "RUNNING":
                    if t is not None and t.state == TrialState.RUNNING:
                        ident = t.user_attrs.get(WORKER_ATTR)
                        if ident is None or _alive(ident) is not False:
                            continue
                        state = "failed"
                    self.mod.end_run(r.info.run_id, "FAILED", {
                        "state": state or "failed", "error_type": "WorkerDied",
                        "error": "reconciled from the Optuna storage: the trial is "
                                 f"{state or 'gone'} but its run was left RUNNING"}, tracker=self.tracker)
                    ended.append(r.info.run_id)
                elif state is not None and tags.get("state") != state and t.state != TrialState.RUNNING:
                    self._run(r.info.run_id).set_tags({"state": state})
            token = page.token
            if not token:
                break
        return ended


def make_tracking(cfg: DictConfig) -> SweepTracking | None:
    if not cfg.tracking.get("enabled", True):
        return None
    try:
        return SweepTracking(cfg)
    except Exception as e:  # noqa: BLE001
        print(f"bars sweep: warning: MLflow tracking unavailable ({e}); trials are recorded in Optuna only",
              file=sys.stderr)
        return None


# --------------------------------------------------------------------------------------------------------------
# Worker loop
# --------------------------------------------------------------------------------------------------------------
def _worker_index(cfg: DictConfig) -> int:
    if cfg.sweep.get("worker_index") is not None:
        return int(cfg.sweep.worker_index)
    for env in ("SLURM_PROCID", "JOB_COMPLETION_INDEX", "OMPI_COMM_WORLD_RANK", "RANK"):
        if os.environ.get(env, "").isdigit():
            return int(os.environ[env])
    return os.getpid() % 997 + 1


def default_threads(cfg: DictConfig, workers: int) -> int | None:
    if cfg.sweep.get("threads") is not None:
        return int(cfg.sweep.threads)
    if workers <= 1:
        return None
    return max(1, (os.cpu_count() or 1) // workers)


def run_worker(cfg: DictConfig, *, replay: Sequence[str], train_fn: TrainFn | None = None,
               storage: optuna.storages.BaseStorage | None = None, progress_mode: str = "plain",
               threads: int | None = None, tracking: SweepTracking | None | bool = True,
               label: str | None = None) -> BudgetState:
    """Join the study and run trials until the global budget of finished trials is reached (or timeout)."""
    url = storage_url(cfg)
    storage = storage or open_storage(url, cfg)
    idx = _worker_index(cfg)
    probe = load_study(cfg, storage, 0)
    seed = int(cfg.sweep.seed) + 1000 * idx + len(probe.get_trials(deepcopy=False))
    study = load_study(cfg, storage, seed)
    space = space_of(cfg)
    validate_space(space, cfg)
    check_space_compatible(study, space)
    if tracking is True:
        tracking = make_tracking(cfg)
    elif tracking is False:
        tracking = None
    budget_default = int(cfg.sweep.trials)
    progress = Progress(progress_mode, label or f"w{idx}", budget_of(study, budget_default))
    ctx = TrialContext(cfg=cfg, space=space, replay=list(replay), train_fn=train_fn or default_train_fn(),
                       parent_run_id=study.user_attrs.get("mlflow_parent_run_id"), tracking=tracking,
                       progress=progress, worker_seed=seed, threads=threads)
    if threads:
        with contextlib.suppress(Exception):
            import torch

            torch.set_num_threads(int(threads))
    objective = make_objective(ctx, study)
    retry = not is_journal(url)
    deadline = None if cfg.sweep.timeout is None else time.monotonic() + float(cfg.sweep.timeout)
    max_failed = int(cfg.sweep.max_failed) if cfg.sweep.get("max_failed") is not None else None
    waiting_said = False
    while True:
        fail_stale_trials(study, retry=retry)
        st = budget_state(study, budget_default)
        if st.done:
            break
        if st.failed >= (max_failed if max_failed is not None else max(st.budget, 3)):
            raise SweepError(f"study {study.study_name!r}: {st.failed} trials failed (limit sweep.max_failed="
                             f"{max_failed if max_failed is not None else st.budget}); see the worker logs "
                             f"and trials.csv")
        if deadline is not None and time.monotonic() >= deadline:
            progress.message(f"timeout ({cfg.sweep.timeout} s): no new trials")
            break
        waiting = any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
        if st.finished + st.active >= st.budget and not waiting:
            if not waiting_said:
                progress.message(f"budget {st.budget}: {st.finished} finished, {st.active} running elsewhere; "
                                 f"waiting for them")
                waiting_said = True
            time.sleep(float(cfg.sweep.poll))
            continue
        waiting_said = False
        with warnings_quiet():
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
    return budget_state(study, budget_default)


@contextlib.contextmanager
def warnings_quiet():
    import logging
    import warnings

    lg = optuna.logging.get_logger("optuna")
    old = lg.level
    lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            yield
    finally:
        lg.setLevel(old)


# --------------------------------------------------------------------------------------------------------------
# Launcher
# --------------------------------------------------------------------------------------------------------------
def _gpu_ids() -> list[str]:
    vis = os.environ.get("CUDA_VISIBLE_DEVICES")
    if vis is not None:
        return [g for g in vis.split(",") if g.strip() and g.strip() != "-1"]
    try:
        import torch

        return [str(i) for i in range(torch.cuda.device_count())]
    except Exception:  # noqa: BLE001
        return []


def worker_command(cli_overrides: Sequence[str], url: str, index: int, threads: int | None) -> list[str]:
    keep = [o for o in cli_overrides
            if o.split("=", 1)[0] not in ("sweep.role", "sweep.workers", "sweep.worker_index", "sweep.storage",
                                          "sweep.threads")]
    cmd = [sys.executable, "-m", "bars.cli", "sweep", *keep, "sweep.role=worker", "sweep.workers=1",
           f"sweep.worker_index={index}", f"sweep.storage={url if not is_journal(url) else url[len('journal://'):]}"]
    if threads:
        cmd.append(f"sweep.threads={threads}")
    return cmd


def spawn_workers(cfg: DictConfig, cli_overrides: Sequence[str], url: str, k: int, board: Board | None
                  ) -> list[subprocess.Popen]:
    gpus = _gpu_ids()
    threads = None if gpus else default_threads(cfg, k)
    procs = []
    for i in range(k):
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["BARS_SWEEP_PROGRESS"] = "relay"
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = gpus[i % len(gpus)]
        elif threads:
            env.setdefault("OMP_NUM_THREADS", str(threads))
            env["OMP_NUM_THREADS"] = str(threads)
            env["MKL_NUM_THREADS"] = str(threads)
        cmd = worker_command(cli_overrides, url, i, threads)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1, start_new_session=False)
        procs.append(p)
        threading.Thread(target=_relay, args=(p, i, board), daemon=True).start()
    return procs


def _relay(p: subprocess.Popen, i: int, board: Board | None) -> None:
    assert p.stdout is not None
    for raw in p.stdout:
        line = raw.rstrip("\n")
        if board is None:
            continue
        if line.startswith(PROGRESS_MARK):
            text = line[len(PROGRESS_MARK):]
            board.update(i, text, final=any(w in text for w in (" complete", " pruned", " failed", "waiting",
                                                               "timeout")))
        elif line.strip():
            board.passthrough(i, line)


def _progress_mode(cfg: DictConfig) -> str:
    m = os.environ.get("BARS_SWEEP_PROGRESS") or str(cfg.sweep.get("progress", "auto"))
    if m == "auto":
        return "live" if sys.stderr.isatty() else "plain"
    return m


def sweep(cfg: DictConfig, cli_overrides: Sequence[str] = (), *, train_fn: TrainFn | None = None) -> dict[str, Any]:
    """The launcher (or, with ``sweep.role=worker``, one worker). Returns a summary dict."""
    role = str(cfg.sweep.role)
    replay = replayable_overrides(cli_overrides)
    url = storage_url(cfg)
    space = space_of(cfg)
    validate_space(space, cfg)  # before anything is created or trained
    mode = _progress_mode(cfg)
    if role == "worker":
        st = run_worker(cfg, replay=replay, train_fn=train_fn, progress_mode=mode,
                        threads=default_threads(cfg, 1))
        storage = open_storage(url, cfg)
        study = load_study(cfg, storage, 0)
        summary = write_results(study, sweep_dir(cfg), list(space))
        return {"role": "worker", "finished": st.finished, "budget": st.budget, **summary}
    if role != "launcher":
        raise SweepError(f"sweep.role must be launcher or worker, got {role!r}")

    t0 = time.monotonic()
    storage = open_storage(url, cfg)
    study = create_study(cfg, storage, space, replay)
    study.set_user_attr("storage_kind", "journal" if is_journal(url) else url.split(":", 1)[0])
    out = sweep_dir(cfg)
    tracking = make_tracking(cfg)
    parent = None
    if tracking is not None:
        try:
            parent = tracking.ensure_parent(study, study_record(cfg, space))
        except Exception as e:  # noqa: BLE001
            print(f"bars sweep: warning: could not open the MLflow parent run: {e}", file=sys.stderr)
        tracking.reconcile(study)
    fail_stale_trials(study, retry=not is_journal(url))
    st = budget_state(study, int(cfg.sweep.trials))
    print(f"bars sweep: study {study.study_name} in {_safe_url(url)}: budget {st.budget} trials, {st.finished} "
          f"finished so far; results in {out}", file=sys.stderr, flush=True)
    k = int(cfg.sweep.workers)
    interrupted = False
    error: SweepError | None = None
    external = k == 0 and not st.done
    if external:
        cmd = " ".join(["bars", "sweep", *[o for o in cli_overrides if not o.startswith(("sweep.workers",
                                                                                     "sweep.role"))],
                        "sweep.role=worker"])
        print(f"bars sweep: sweep.workers=0: study ready, no local workers; start workers with\n  {cmd}\n"
              f"and rerun this command at the end to write the results and close the MLflow parent run",
              file=sys.stderr)
    elif not st.done:
        if k <= 1:
            try:
                wcfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
                wcfg.sweep.worker_index = 0 if cfg.sweep.get("worker_index") is None else cfg.sweep.worker_index
                st = run_worker(wcfg, replay=replay, train_fn=train_fn, storage=storage, progress_mode=mode,
                                threads=default_threads(cfg, 1), tracking=tracking, label="sweep")
            except KeyboardInterrupt:
                interrupted = True
            except SweepError as e:
                error = e
        else:
            _prepare_data_once(cfg)
            board = Board(k, live=(mode == "live")) if mode != "off" else None
            procs = spawn_workers(cfg, cli_overrides, url, k, board)
            interrupted = _wait_workers(procs)
    fail_stale_trials(study, retry=not is_journal(url))
    st = budget_state(study, int(cfg.sweep.trials))
    summary = write_results(study, out, list(space))
    if tracking is not None:
        tracking.reconcile(study)
        if not external:
            tracking.finish_parent(parent, study, st, summary)
    summary.update(role="launcher", finished=st.finished, budget=st.budget, failed=st.failed,
                   seconds=round(time.monotonic() - t0, 1), study=study.study_name, storage=_safe_url(url),
                   parent_run_id=parent)
    best = summary.get("best")
    print(f"bars sweep: {st.finished}/{st.budget} trials finished ({st.failed} failed) in "
          f"{_fmt_elapsed(summary['seconds'])}; best val_auc "
          f"{best['value']:.5f} (trial {best['number']})" if best else
          f"bars sweep: {st.finished}/{st.budget} trials finished, none complete", file=sys.stderr)
    if best:
        print(f"bars sweep: wrote {out / 'trials.csv'} and {out / 'best.overrides'}; replay with\n"
              f"  bars train model={_model_id(cfg)} data={cfg.data.name} $(cat {out / 'best.overrides'})",
              file=sys.stderr)
    if parent:
        print(f"bars sweep: MLflow parent run {parent} (one child run per trial) in experiment "
              f"'{cfg.tracking.experiment}'; browse with `make ui`", file=sys.stderr)
    if interrupted:
        raise KeyboardInterrupt
    if error is not None:
        raise error
    return summary


def _prepare_data_once(cfg: DictConfig) -> None:
    """Prepare the dataset before starting workers, so k workers do not all build it at once."""
    try:
        from bars.data.prepare import prepare
    except ImportError:
        return
    with contextlib.redirect_stdout(io.StringIO()):
        prepare(cfg)


def _safe_url(url: str) -> str:
    if "@" in url and "://" in url:
        scheme, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        user = cred.split(":", 1)[0]
        return f"{scheme}://{user}@{host}"
    return url


def _wait_workers(procs: list[subprocess.Popen]) -> bool:
    try:
        while [p.poll() for p in procs].count(None):  # poll every one: reaps a killed worker at once
            time.sleep(0.5)
    except KeyboardInterrupt:
        for p in procs:
            if p.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGINT)
        deadline = time.monotonic() + 30
        for p in procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            if p.poll() is None:
                p.kill()
        return True
    for i, p in enumerate(procs):
        if p.returncode:
            print(f"bars sweep: worker {i} (pid {p.pid}) exited with status {p.returncode}", file=sys.stderr)
    return False


def _sweep_command(cfg: DictConfig, overrides: list[str]) -> int:
    try:
        summary = sweep(cfg, overrides)
    except KeyboardInterrupt:
        print("bars sweep: interrupted; rerun the same command to resume", file=sys.stderr)
        return 130
    if (summary.get("role") == "launcher" and summary["finished"] < summary["budget"]
            and int(cfg.sweep.workers) > 0 and cfg.sweep.timeout is None):  # e.g. all workers died
        return 1
    return 0


def main() -> int:
    """``bars sweep model=<m> data=<d> [sweep.*=...]`` (launcher or worker)."""

    def _term(signum: int, frame: Any) -> None:  # job runners (Slurm, k8s) stop workers with SIGTERM
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _term)
    return hydra_command("sweep", _sweep_command, (SearchSpaceError, SweepError))


__all__ = [
    "Param", "SearchSpaceError", "SweepError", "budget_state", "create_study", "fail_stale_trials",
    "format_value", "load_search_space", "load_study", "main", "open_storage", "run_worker", "space_of",
    "storage_url", "sweep", "to_overrides", "trials_table", "validate_space", "write_results",
]
