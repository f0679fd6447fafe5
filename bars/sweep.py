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

Modules: ``bars.search`` (the search space), ``bars.study`` (storage, budget, stale trials, results files),
``bars.sweep_progress`` (the terminal lines) and this one (the objective, workers, MLflow bookkeeping through
``bars.tracking``'s public calls, the launcher). Everything is a plain function of the composed config;
:func:`main` is the Hydra shell.
"""

from __future__ import annotations

import contextlib
import io
import math
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import TrialState

from bars import compute, placement
from bars.config import hydra_command, safe_url
from bars.metrics import Monitor
from bars.search import Param, SearchSpaceError, apply_params, replayable_overrides, space_of, validate_space
from bars.study import (
    WORKER_ATTR,
    BudgetState,
    SweepError,
    SweepStudy,
    budget_of,
    budget_state,
    check_arithmetic,
    check_space_compatible,
    claim_grid_point,
    claim_or_skip,
    compute_budget,
    compute_budget_of,
    create_study,
    fail_stale_trials,
    first_use_lock,
    grid_coverage,
    is_journal,
    load_study,
    monitor_of,
    open_storage,
    storage_url,
    study_record,
    sweep_dir,
    trial_cap,
    worker_identity,
    write_results,
)
from bars.sweep_progress import PROGRESS_MARK, Progress, WorkerPanel, fmt_elapsed
from bars.sweep_tracking import SweepTracking, make_tracking

if TYPE_CHECKING:  # the trainer imports torch; the sweep only reads its records
    from bars.train import EpochLog

RECORDED_PREFIXES = ("val_", "test_")  # a trial records every validation and test metric of its run

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
    monitor: Monitor
    worker_seed: int
    threads: int | None
    stop: threading.Event = field(default_factory=threading.Event)
    device: str | None = None  # what this worker trains on (bars.placement); None: train.device as configured
    device_tags: dict[str, str] = field(default_factory=dict)  # sweep_worker, sweep_device, sweep_device_workers


def trial_config(cfg: DictConfig, params: dict[str, Any], threads: int | None,
                 device: str | None = None) -> DictConfig:
    tcfg = apply_params(cfg, params)
    if device is not None:
        tcfg.train.device = device
    cap = cfg.sweep.get("max_epochs")
    if cap is not None and int(tcfg.train.max_epochs) > int(cap):
        tcfg.train.max_epochs = int(cap)
    if threads and int(tcfg.train.get("num_threads", 0) or 0) == 0 and "num_threads" in tcfg.train:
        tcfg.train.num_threads = int(threads)
    return tcfg


def make_objective(ctx: TrialContext, study: SweepStudy) -> Callable[[optuna.Trial], float]:
    """The trial: suggest, train through ``ctx.train_fn`` (``bars.run.train_one``), report the monitored value
    (``train.monitor``) per epoch to the pruner, record every validation/test metric in the trial's user
    attributes, and return the best epoch's monitored value."""
    budget_default = trial_cap(ctx.cfg)
    compute_default = compute_budget(ctx.cfg)
    monitor = ctx.monitor
    # the clock a seconds budget counts: CPU-seconds on a CPU worker, wall (= device) seconds on a GPU worker
    clock = "cpu" if ctx.device_tags.get("sweep_device", "cpu") == "cpu" else "device"

    def objective(trial: optuna.Trial) -> float:
        trial.set_user_attr(WORKER_ATTR, worker_identity())
        claim_or_skip(study, trial, budget_of(study, budget_default), compute_budget_of(study, compute_default))
        cpu0, t0 = time.process_time(), time.monotonic()
        trial.set_user_attr(compute.OWNER, trial.number)  # the compute_* attributes below are this trial's
        trial.set_user_attr(compute.CLOCK, clock)
        claim_grid_point(study, trial)  # a grid sweep: the point this trial trains (the sampler answers from it)
        trial.set_user_attr("sampler_seed", ctx.worker_seed)
        trial.set_user_attr("replay_overrides", ctx.replay)
        params = {k: p.suggest(trial) for k, p in ctx.space.items()}
        sys_attrs = study.trial_system_attrs(trial.number)
        if sys_attrs.get("failed_trial") is not None:  # a retry: optuna names the trial it replaces
            trial.set_user_attr("retry_of", int(sys_attrs["failed_trial"]))
        tcfg = trial_config(ctx.cfg, params, ctx.threads, ctx.device)
        trial.set_user_attr("max_epochs", int(tcfg.train.max_epochs))
        last_epoch = int(tcfg.train.max_epochs)
        seen: dict[str, Any] = {"epochs": 0, "value": None, "val": {}}  # the best epoch so far
        samples: dict[str, int] = {}  # rows processed so far (the last epoch's cumulative counts)
        ctx.progress.trial_started(trial.number, study)

        def spent() -> dict[str, Any]:
            wall = time.monotonic() - t0
            out: dict[str, Any] = {**samples, compute.CPU_S: round(time.process_time() - cpu0, 3),
                                   compute.WALL_S: round(wall, 3)}
            if clock == "device":
                out[compute.DEVICE_S] = round(wall, 3)
            return out

        def on_epoch(log: EpochLog) -> None:
            seen["epochs"] = log.epoch
            if seen["value"] is None or monitor.better(log.monitor, seen["value"]):
                seen["value"], seen["val"] = log.monitor, log.val_metrics()
            samples.update({compute.TRAIN_SAMPLES: int(log.train_samples),
                            compute.VALID_SAMPLES: int(log.valid_samples)})
            for k, v in spent().items():  # progress of a running trial: what a compute budget counts meanwhile
                trial.set_user_attr(k, v)
            ctx.progress.epoch(trial.number, log.epoch, log.monitor)
            trial.report(log.monitor, step=log.epoch)
            # pruning after the last epoch saves nothing and would hide a finished result
            if log.epoch < last_epoch and trial.should_prune():
                raise optuna.TrialPruned(f"epoch {log.epoch}: {monitor.name} {log.monitor:.5f}, pruned by "
                                         f"{type(study.pruner).__name__}")
            if ctx.stop.is_set():
                raise KeyboardInterrupt

        tags = {"stage": "trial", "sweep_study": str(ctx.cfg.sweep.study), "trial_number": str(trial.number),
                "optuna_trial_id": str(study.trial_id(trial.number)), **ctx.device_tags}
        if "sweep_device" in ctx.device_tags:
            trial.set_user_attr("device", ctx.device_tags["sweep_device"])
        state = "failed"
        run_id = None
        result: Any = None
        value: float | None = None
        err: BaseException | None = None
        quiet = ctx.progress.mode != "verbose"
        try:
            with contextlib.redirect_stdout(io.StringIO()) if quiet else contextlib.nullcontext():
                result = ctx.train_fn(tcfg, on_epoch=on_epoch, parent_run_id=ctx.parent_run_id,
                                      extra_tags=tags, quiet=quiet)
            run_id = result.run_id
            value = monitor.value(result.metrics)
            if not math.isfinite(value):
                raise ValueError(f"{monitor.name} is {value}")
            for k, v in result.metrics.items():
                if k.startswith(RECORDED_PREFIXES):
                    trial.set_user_attr(k, float(v))
            trial.set_user_attr("epochs", result.epochs)
            state = "complete"
            return value
        except optuna.TrialPruned as e:
            err = e
            state = "pruned"
            value = seen["value"]
            trial.set_user_attr("epochs", seen["epochs"])
            for k, v in seen["val"].items():
                trial.set_user_attr(k, v)
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
            # the run's own counts (a partial epoch included), else the last epoch's: a stand-in train_fn has none
            got = getattr(result, "samples", None) if state == "complete" else getattr(err, "compute_samples", None)
            samples.update({k: int(v) for k, v in (got or {}).items() if k in compute.SAMPLE_KEYS})
            used = spent()
            with contextlib.suppress(Exception):
                trial.set_user_attr("seconds", round(secs, 2))
                for k, v in used.items():
                    trial.set_user_attr(k, v)
                if run_id is None:
                    run_id = _run_id_from_error(err)
                if run_id:
                    trial.set_user_attr("mlflow_run_id", run_id)
            if ctx.tracking is not None:
                with contextlib.suppress(Exception):
                    ctx.tracking.trial_finished(run_id, tags, state, trial.number, used)
            with contextlib.suppress(Exception):
                ctx.progress.trial_finished(trial.number, state, study, value)

    return objective


def _run_id_from_error(e: BaseException | None) -> str | None:
    """``train_one`` sets ``run_id`` on an exception it re-raises (the MLflow run it ended)."""
    if e is None:
        return None
    return getattr(e, "run_id", None)


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


MAX_FAILED_UNCAPPED = 10  # sweep.max_failed=null without a trial cap (a compute budget only): this many failures


def run_worker(cfg: DictConfig, *, replay: Sequence[str], train_fn: TrainFn | None = None,
               storage: optuna.storages.BaseStorage | None = None, progress_mode: str = "plain",
               threads: int | None = None, tracking: SweepTracking | None | bool = True,
               label: str | None = None, device: str | None = None, device_workers: int | None = None
               ) -> BudgetState:
    """Join the study and run trials until the global budget of finished trials is reached (or timeout).
    ``device`` (default ``sweep.worker_device``, set by the launcher) is what every trial trains on; the
    physical device, this worker's index and ``device_workers`` (workers sharing it) are recorded per trial."""
    url = storage_url(cfg)
    device = device if device is not None else cfg.sweep.get("worker_device")
    device_workers = device_workers if device_workers is not None else cfg.sweep.get("device_workers")
    if storage is None:
        with first_use_lock(url):
            storage = open_storage(url, cfg)
    idx = _worker_index(cfg)
    probe = load_study(cfg, storage, 0)
    seed = int(cfg.sweep.seed) + 1000 * idx + len(probe.get_trials(deepcopy=False))
    study = load_study(cfg, storage, seed)
    space = space_of(cfg)
    validate_space(space, cfg)
    check_space_compatible(study, space)
    check_arithmetic(study.study_name, study.user_attrs, cfg)  # a worker started with other train.* switches
    if tracking is True:
        tracking = make_tracking(cfg)
    elif tracking is False:
        tracking = None
    budget_default = trial_cap(cfg)
    compute_default = compute_budget(cfg)
    monitor = monitor_of(cfg)
    progress = Progress(progress_mode, label or f"w{idx}", budget_of(study, budget_default), metric=monitor.name,
                        compute=compute_budget_of(study, compute_default))
    ctx = TrialContext(cfg=cfg, space=space, replay=list(replay), train_fn=train_fn or default_train_fn(),
                       parent_run_id=study.user_attrs.get("mlflow_parent_run_id"), tracking=tracking,
                       progress=progress, monitor=monitor, worker_seed=seed, threads=threads,
                       device=None if device is None else str(device),
                       device_tags=placement.device_tags(idx, device, cfg.train.get("device", "auto"),
                                                         device_workers))
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
        tally = budget_state(study, budget_default, compute_default)
        if tally.done:
            break
        limit = max_failed if max_failed is not None else max(tally.budget or MAX_FAILED_UNCAPPED, 3)
        if tally.failed >= limit:
            raise SweepError(f"study {study.study_name!r}: {tally.failed} trials failed (limit sweep.max_failed="
                             f"{limit}); see the worker logs and trials.csv")
        if deadline is not None and time.monotonic() >= deadline:
            progress.message(f"timeout ({cfg.sweep.timeout} s): no new trials")
            break
        waiting = any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
        if tally.budget is not None and tally.finished + tally.active >= tally.budget and not waiting:
            if not waiting_said:
                progress.message(f"budget {tally.budget}: {tally.finished} finished, {tally.active} running "
                                 f"elsewhere; waiting for them")
                waiting_said = True
            time.sleep(float(cfg.sweep.poll))
            continue
        waiting_said = False
        with warnings_quiet():
            study.optimize(objective, n_trials=1, catch=(Exception,), gc_after_trial=False)
    return budget_state(study, budget_default, compute_default)


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
# Overrides whose value may hold a password travel to worker processes in these environment variables (read by
# conf/config.yaml and conf/sweep/default.yaml), never on their command lines, which every user can read (ps).
SECRET_ENV = {"tracking.uri": "MLFLOW_TRACKING_URI", "sweep.storage": "BARS_SWEEP_STORAGE"}


def has_secret(value: str) -> bool:
    """Whether a URL holds a password (what :func:`bars.config.safe_url` would hide)."""
    return safe_url(value) != value


def worker_command(cli_overrides: Sequence[str], url: str, index: int, threads: int | None,
                   slot: placement.Slot | None = None) -> list[str]:
    """A local worker's command line; a storage or tracking URL with a password is left out of it (it goes in
    the worker's environment: :func:`worker_secrets`). ``slot`` (bars.placement) names the device the worker
    trains on and how many workers share it; its CUDA_VISIBLE_DEVICES is set by :func:`placement.worker_env`."""
    keep = [o for o in cli_overrides
            if o.split("=", 1)[0].lstrip("+~") not in
            ("sweep.role", "sweep.workers", "sweep.worker_index", "sweep.storage", "sweep.threads",
             "sweep.worker_device", "sweep.device_workers")
            and not (o.split("=", 1)[0].lstrip("+~") in SECRET_ENV and has_secret(o))]
    cmd = [sys.executable, "-m", "bars.cli", "sweep", *keep, "sweep.role=worker", "sweep.workers=1",
           f"sweep.worker_index={index}"]
    if not has_secret(url):
        cmd.append(f"sweep.storage={url if not is_journal(url) else url[len('journal://'):]}")
    if threads:
        cmd.append(f"sweep.threads={threads}")
    if slot is not None:
        cmd += [f"sweep.worker_device={slot.device}", f"sweep.device_workers={slot.sharing}"]
    return cmd


def worker_secrets(cli_overrides: Sequence[str], url: str) -> dict[str, str]:
    """The environment that hands a local worker the URLs :func:`worker_command` left out."""
    env = {SECRET_ENV["sweep.storage"]: url} if has_secret(url) else {}
    for o in cli_overrides:
        key, _, value = o.partition("=")
        key = key.lstrip("+~")
        if key == "tracking.uri" and has_secret(value):
            env[SECRET_ENV[key]] = value
    return env


def placement_of(cfg: DictConfig, gpus: Sequence[str] | None = None) -> placement.Placement:
    """Where this sweep's local workers run (bars.placement.plan over the visible GPUs)."""
    return placement.plan(cfg.sweep.workers, cfg.sweep.get("devices", "auto"), cfg.sweep.get("workers_per_gpu", 1),
                          gpus=placement.visible_gpus() if gpus is None else gpus,
                          train_device=str(cfg.train.get("device", "auto")), threads=cfg.sweep.get("threads"))


def spawn_workers(cfg: DictConfig, cli_overrides: Sequence[str], url: str, plan: placement.Placement,
                  board: WorkerPanel | None) -> list[subprocess.Popen]:
    procs = []
    for slot in plan.slots:
        env = placement.worker_env(slot, os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env["BARS_SWEEP_PROGRESS"] = "relay"
        env.update(worker_secrets(cli_overrides, url))
        cmd = worker_command(cli_overrides, url, slot.index, slot.threads, slot)
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                             bufsize=1, start_new_session=False)
        procs.append(p)
        threading.Thread(target=_relay, args=(p, slot.index, board), daemon=True).start()
    return procs


def _relay(p: subprocess.Popen, i: int, board: WorkerPanel | None) -> None:
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
    from bars.grids import apply_grid
    from bars.validate import validate

    applied = apply_grid(cfg, cli_overrides)  # sweep.sampler.name=grid: the grid's set: keys, trials = its size
    cfg = applied.cfg
    validate(cfg, "sweep")  # the whole config and the search space, before anything is created or trained
    role = str(cfg.sweep.role)
    replay = [*applied.set_overrides, *replayable_overrides(cli_overrides)]
    url = storage_url(cfg)
    space = space_of(cfg)
    mode = _progress_mode(cfg)
    if role == "launcher":
        plan = placement_of(cfg)  # a device setting that cannot be met fails here, before the study exists
    if role == "worker":
        tally = run_worker(cfg, replay=replay, train_fn=train_fn, progress_mode=mode,
                        threads=default_threads(cfg, 1))
        storage = open_storage(url, cfg)
        study = load_study(cfg, storage, 0)
        summary = write_results(study, sweep_dir(cfg), list(space))
        return {"role": "worker", "finished": tally.finished, "budget": tally.budget, "done": tally.done, **summary}
    if role != "launcher":
        raise SweepError(f"sweep.role must be launcher or worker, got {role!r}")

    t0 = time.monotonic()
    with first_use_lock(url):  # several launchers at once on a new storage: one creates, the others load
        storage = open_storage(url, cfg)
        study = create_study(cfg, storage, space, replay)
        study.set_user_attr("storage_kind", "journal" if is_journal(url) else url.split(":", 1)[0])
    out = sweep_dir(cfg)
    _say_store_limits(cfg, plan.workers)
    tracking = make_tracking(cfg)
    if tracking is not None:
        from bars.run import housekeeping

        housekeeping(cfg, "sweep")
    parent = None
    if tracking is not None:
        try:
            parent = tracking.ensure_parent(study, study_record(cfg, space))
        except Exception as e:  # noqa: BLE001
            print(f"bars sweep: warning: could not open the MLflow parent run: {e}", file=sys.stderr)
        tracking.reconcile(study)
    fail_stale_trials(study, retry=not is_journal(url))
    tally = budget_state(study, trial_cap(cfg), compute_budget(cfg))
    what = (f"budget {tally.compute.describe()}" + (f", at most {tally.budget} trials" if tally.budget else "")
            + f"; {tally.finished} trials finished and {tally.compute.fmt(tally.spent)} spent so far"
            if tally.compute is not None else
            f"budget {tally.budget} trials, {tally.finished} finished so far")
    print(f"bars sweep: study {study.study_name} in {safe_url(url)}: {what}; results in {out}", file=sys.stderr,
          flush=True)
    if applied.grid is not None:
        g = applied.grid
        print(f"bars sweep: grid {g.path} ({g.size} points, {'product of ' + str(len(g.axes)) + ' axes' if g.product else 'explicit point list'}"
              f"{', set: ' + str(len(applied.set_overrides)) + ' keys' if applied.set_overrides else ''})"
              + (f"; PARTIAL grid: sweep.trials={tally.budget} of its {g.size} points (in the order of sweep.seed)"
                 if applied.partial else "")
              + (f"; the command line keeps {applied.kept} over the grid's set:" if applied.kept else ""),
              file=sys.stderr, flush=True)
    k = plan.workers
    if k:
        print(f"bars sweep: {plan.describe()}", file=sys.stderr, flush=True)
    interrupted = False
    error: SweepError | None = None
    external = k == 0 and not tally.done
    if external:
        cmd = " ".join(["bars", "sweep", *[o for o in cli_overrides if not o.startswith(("sweep.workers",
                                                                                     "sweep.role"))],
                        "sweep.role=worker"])
        print(f"bars sweep: sweep.workers=0: study ready, no local workers; start workers with\n  {cmd}\n"
              f"and rerun this command at the end to write the results and close the MLflow parent run",
              file=sys.stderr)
    elif not tally.done:
        if plan.in_process:
            slot = plan.slots[0]
            try:
                wcfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
                wcfg.sweep.worker_index = 0 if cfg.sweep.get("worker_index") is None else cfg.sweep.worker_index
                tally = run_worker(wcfg, replay=replay, train_fn=train_fn, storage=storage, progress_mode=mode,
                                   threads=default_threads(cfg, 1), tracking=tracking, label="sweep",
                                   device=slot.device, device_workers=slot.sharing)
            except KeyboardInterrupt:
                interrupted = True
            except SweepError as e:
                error = e
        else:
            _prepare_data_once(cfg)
            board = WorkerPanel(k, live=(mode == "live")) if mode != "off" else None
            procs = spawn_workers(cfg, cli_overrides, url, plan, board)
            interrupted = _wait_workers(procs)
    fail_stale_trials(study, retry=not is_journal(url))
    tally = budget_state(study, trial_cap(cfg), compute_budget(cfg))
    summary = write_results(study, out, list(space))
    if tracking is not None:
        tracking.reconcile(study)
        if not external:
            tracking.finish_parent(parent, study, tally, summary)
    if applied.grid is not None:
        summary["grid"] = grid_coverage(study, applied.grid.size)
        cov = summary["grid"]
        print(f"bars sweep: grid: {cov['finished']}/{cov['points']} points run, {cov['repeated']} run twice "
              f"(workers raced for a point), {cov['missing']} not run", file=sys.stderr)
    summary.update(role="launcher", workers=k, devices=[s.label for s in plan.slots], finished=tally.finished,
                   budget=tally.budget, failed=tally.failed,
                   seconds=round(time.monotonic() - t0, 1), study=study.study_name, storage=safe_url(url),
                   parent_run_id=parent, done=tally.done, exhausted=tally.exhausted,
                   compute_budget=None if tally.compute is None else tally.compute.as_record(),
                   compute_spent=tally.spent if tally.compute is not None else None, overshoot=tally.overshoot)
    best = summary.get("best")
    count = f"{tally.finished}/{tally.budget}" if tally.budget is not None else f"{tally.finished}"
    print(f"bars sweep: {count} trials finished ({tally.failed} failed) in "
          f"{fmt_elapsed(summary['seconds'])}; best {monitor_of(cfg).name} "
          f"{best['value']:.5f} (trial {best['number']})" if best else
          f"bars sweep: {count} trials finished, none complete", file=sys.stderr)
    print(f"bars sweep: compute: {tally.describe_compute()}", file=sys.stderr)
    if tally.exhausted:
        print(f"bars sweep: the search space is exhausted: all {study.user_attrs.get('space_points')} of its points "
              f"have a finished trial (the sweep is done)", file=sys.stderr)
    if best:
        print(f"bars sweep: wrote {out / 'trials.csv'} and {out / 'best.overrides'}; replay with\n"
              f"  bars train model={cfg.model.id} data={cfg.data.name} $(cat {out / 'best.overrides'})",
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


SQLITE_MAX_WRITERS = 8  # concurrent writers tested on one SQLite MLflow store (tests/test_first_use.py)


def _say_store_limits(cfg: DictConfig, workers: int) -> None:
    """Before any worker starts: more local workers than the embedded SQLite store was tested with get a
    note pointing to the server setup (docs/reliability.md)."""
    from bars.tracking import resolve_uri, sqlite_path

    if not cfg.tracking.get("enabled", True) or workers <= SQLITE_MAX_WRITERS:
        return
    if sqlite_path(resolve_uri(str(cfg.tracking.uri))) is not None:
        print(f"bars sweep: note: {workers} workers will write to the embedded SQLite MLflow store, which was "
              f"tested with up to {SQLITE_MAX_WRITERS} concurrent writers (docs/reliability.md); for more, run an "
              f"MLflow server on PostgreSQL and set MLFLOW_TRACKING_URI (docs/sweeps.md)", file=sys.stderr, flush=True)


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
    if (summary.get("role") == "launcher" and not summary["done"]
            and summary.get("workers", 1) > 0 and cfg.sweep.timeout is None):  # e.g. all workers died
        return 1
    return 0


def main() -> int:
    """``bars sweep model=<m> data=<d> [sweep.*=...]`` (launcher or worker)."""

    def _term(signum: int, frame: Any) -> None:  # job runners (Slurm, k8s) stop workers with SIGTERM
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _term)
    from bars.run import expected_errors

    return hydra_command("sweep", _sweep_command,
                         (SearchSpaceError, SweepError, placement.PlacementError, *expected_errors()))


__all__ = ["SweepTracking", "TrialContext", "default_threads", "main", "make_objective", "placement_of", "run_worker",
           "spawn_workers", "sweep", "trial_config", "worker_command", "worker_secrets"]
