"""`bars board`: a whole leaderboard in one resumable command: every registered model on one dataset, each tuned
by the default sweep strategy at the same fair compute budget, ``seeds`` final runs of each model's best, then
the dataset's leaderboard.

``make board DATA=<d> [MODELS=a,b|all] [BUDGET="1M samples"|10m] [SEEDS=5] [WORKERS=k] [PLAN=1] [REBUDGET=1]``
runs ``bars board --data <d> ...``; :func:`run_board` is the plain function it calls (tests call it too).

For each model (the model configs of ``conf/model/``, each naming a class of the ``bars.models`` registry):

1. **Can it run on this dataset?** Decided by the data, not by a list: the model is built on the prepared
   dataset's feature spec (no training, milliseconds); a build that fails (a sequence model on data without
   behaviour histories, ESMM without a conversion label) skips the model, its build error the reason.
2. **Sweep** (``bars.sweep.sweep``, in this process, as ``make sweep`` runs it): the study
   ``<model id>__<data>`` with ``sweep.budget=<budget>`` and ``sweep.trials=null`` (the compute budget is the
   only limit, unless the command line sets ``sweep.trials``), the default sampler and pruner. A study that has
   spent its budget only rewrites its results files; a study run with another budget is refused before anything
   trains (naming the study and both budgets) unless ``--rebudget`` (``REBUDGET=1``) continues it with the new one.
3. **Final runs** (``bars.final.run_final``): ``seeds`` seeds of the sweep's best configuration; a seed whose
   run already FINISHED with the same configuration is not retrained, at any git commit
   (``final.same_commit=false``, unless the command line sets it: the board spans sessions and commits).
4. At the end, **the leaderboard** of the dataset (``bars.leaderboard.run``), listing every model with final runs.

A model that fails (an error in its sweep or its final runs) is recorded as failed with its error and the board
goes on; the exit status is 1 when any model failed. The summary (per model: done / partial / failed / skipped,
why, compute spent, seeds finished; the budget, seeds and strategy of the board) is printed and written
atomically to ``results/<d>_board.json`` after every model, so Ctrl-C or a kill leaves the last complete summary
and the stores (Optuna journals, MLflow) in the state their own crash-safety guarantees; the same command again
continues where it stopped. ``--plan`` (``PLAN=1``) prints the same table from the stores without training.

Why in-process rather than a subprocess per model: it is exactly what ``make sweep`` and ``make final`` run with
one worker (the launcher trains in its own process), an error is caught per model as a Python exception, and no
model pays an interpreter and torch start; with ``--workers k`` (k > 1, or one per GPU) the sweep itself starts
worker processes (``bars.sweep.spawn_workers``), so trials are isolated there. A hard crash of the board process
(killed, out of memory) stops the board; rerunning it resumes. ``--jobs k`` (``JOBS=k``) runs k models at a
time, each in its own ``bars board --models <m>`` process (:func:`_run_jobs`): on a CPU machine one-thread models
side by side use the cores better than one model's threads do.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import re
import signal
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bars.compute import Budget, BudgetSyntaxError, fmt_samples, fmt_seconds, parse_budget

DEFAULT_BUDGET = "1M samples"  # when neither --budget nor an earlier board of the dataset names one
DEFAULT_SEEDS = 5  # likewise for --seeds
STATUSES = ("done", "partial", "pending", "failed", "skipped")
_BOARD_KEYS = ("model", "sweep.budget", "sweep.role", "final.seeds")  # the board sets these itself


class BoardError(RuntimeError):
    """A board that cannot start: an unknown model, a budget that differs from its sweeps', a bad option."""


# ------------------------------------------------------------------------------------------------ the models
def registered_models() -> list[str]:
    """Every model config id (``conf/model/<id>.yaml``: what ``MODEL=`` takes), each a class of the registry."""
    from bars.config import CONF_DIR

    return sorted(p.stem for p in (CONF_DIR / "model").glob("*.yaml"))


def resolve_models(models: str | Sequence[str] | None) -> list[str]:
    """``all`` / None / "" -> every registered model; ``"a,b"`` or a list -> those, in that order, checked."""
    known = registered_models()
    if models is None or (isinstance(models, str) and models.strip().lower() in ("", "all")):
        return known
    names = [m.strip() for m in (models.split(",") if isinstance(models, str) else models) if m.strip()]
    unknown = [m for m in names if m not in known]
    if unknown:
        from bars.models import list_models

        raise BoardError(f"unknown model{'s' if len(unknown) > 1 else ''} {unknown}: the registered models are the "
                         f"configs of conf/model/ (each a class of the bars.models registry, {len(list_models())} "
                         f"classes): {', '.join(known)}")
    return list(dict.fromkeys(names))


def _key(override: str) -> str:
    return override.split("=", 1)[0].lstrip("+~").strip()


_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]*$")


def board_overrides(data: str, budget: Budget, workers: int | None, overrides: Sequence[str],
                    gpus: Sequence[str] | None = None, name: str | None = None) -> list[str]:
    """The overrides every model of the board is composed with (``model=<id>`` is added per model): the dataset,
    the budget, no trial cap, the workers (packed on the visible GPUs), the studies' names for a named board
    (``<model id>__<data>__<name>``), then the command line's own."""
    bad = [o for o in overrides if _key(o) in _BOARD_KEYS or _key(o) == "data"]
    if bad:
        raise BoardError(f"{bad}: the board sets the model (MODELS= / --models), the dataset (DATA= / --data), the "
                         f"budget (BUDGET= / --budget) and the seeds (SEEDS= / --seeds) itself")
    keys = {_key(o) for o in overrides}
    out = [f"data={data}", f"sweep.budget={budget.spec}"]
    if name is not None:
        if not _NAME.match(name):
            raise BoardError(f"--name (BOARD=) must be lower-case letters, digits, _ and -, got {name!r}")
        if "sweep.study" in keys:
            raise BoardError("a named board names its studies <model id>__<data>__<name>: drop sweep.study or BOARD=")
        out.append(f"sweep.study='${{model.id}}__${{data.name}}${{bars_suffix:${{preset}}}}__{name}'")  # quoted: nested
    if "sweep.trials" not in keys:
        out.append("sweep.trials=null")  # the compute budget is the only limit: every model the same compute
    if "final.same_commit" not in keys:
        out.append("final.same_commit=false")  # a board resumed after new commits keeps its final runs
    if workers is not None:
        if workers < 1:
            raise BoardError(f"--workers must be >= 1, got {workers}")
        out.append(f"sweep.workers={workers}")
        if "sweep.workers_per_gpu" not in keys and "sweep.devices" not in keys:
            from bars import placement

            visible = placement.visible_gpus() if gpus is None else list(gpus)
            if visible and workers > len(visible):  # pack: WORKERS=8 on one GPU = 8 workers on it
                out.append(f"sweep.workers_per_gpu={math.ceil(workers / len(visible))}")
    return [*out, *overrides]


# ------------------------------------------------------------------------------------------ per-model state
@dataclass
class ModelState:
    """What the stores say about one model of the board (and what this invocation did to it)."""

    model: str
    status: str = "pending"  # done | partial | pending | failed | skipped
    reason: str | None = None  # skipped: the build error; failed: the error; partial: what is missing
    study: str | None = None
    sweep: dict[str, Any] = field(default_factory=dict)  # started, trials, failed, spent, budget, done, compute
    final: dict[str, Any] = field(default_factory=dict)  # seeds, finished, test_auc (mean over finished seeds)

    def line(self, budget: Budget) -> str:
        """One row of the plan / summary table."""
        if self.status == "skipped":
            why = self.reason or ""
            return f"  {self.model:<16} skipped  {why if len(why) <= 90 else why[:87] + '...'}"
        sw = self.sweep
        if not sw.get("started"):
            sweep = "sweep not started"
        else:
            b = Budget.from_record(sw.get("budget"))
            spent = (b or budget).fmt(sw.get("spent", 0.0))
            sweep = (f"sweep {spent} of {b.fmt(b.amount)} {b.unit}" if b else "sweep (no compute budget)") + \
                (" (spent)" if sw.get("done") else "")
            sweep += f", {sw.get('trials', 0)} trials"
        fin = self.final
        seeds = f"final {fin.get('finished', 0)}/{fin.get('seeds', 0)} seeds" if fin else "final -"
        auc = f", test AUC {fin['test_auc']:.5f}" if fin.get("test_auc") is not None else ""
        why = f"  [{self.reason}]" if self.reason and self.status != "done" else ""
        return f"  {self.model:<16} {self.status:<8} {sweep}; {seeds}{auc}{why}"


def _first_line(e: BaseException, limit: int = 300) -> str:
    text = str(e).strip().splitlines()[0] if str(e).strip() else ""
    text = f"{type(e).__name__}: {text}" if text else type(e).__name__
    return text if len(text) <= limit else text[: limit - 3] + "..."


def build_check(cfg: Any, spec: Any) -> str | None:
    """None when the model builds on the dataset's feature spec, else why not (its build error)."""
    from bars.config import to_container
    from bars.models import build

    try:
        build(str(cfg.model.name), spec, to_container(cfg.model.params))
    except Exception as e:  # noqa: BLE001  (the reason the model cannot run on this data)
        return _first_line(e)
    return None


def sweep_progress(cfg: Any) -> dict[str, Any]:
    """The study's state read from its storage without creating anything: ``started`` False when there is none."""
    import optuna

    from bars import study as ST

    url = ST.storage_url(cfg)
    if ST.is_journal(url) and not Path(url[len("journal://"):]).exists():
        return {"started": False}
    storage = ST.open_storage(url, cfg)
    try:
        study = ST.load_study(cfg, storage, 0)
    except ST.SweepError:
        return {"started": False}
    with contextlib.suppress(Exception):
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    tally = ST.budget_state(study, None, None)  # what the study itself stores: its own budget
    best = ST.best_trial(study)
    errors = [t.user_attrs["error"] for t in ST.counted(study.get_trials(deepcopy=False))
              if t.state == optuna.trial.TrialState.FAIL and t.user_attrs.get("error")]
    return {"started": True, "last_error": errors[-1] if errors else None, "trials": tally.finished,
            "failed": tally.failed, "budget": None if tally.compute is None else tally.compute.as_record(),
            "trial_cap": tally.budget, "spent": tally.spent, "done": tally.done,
            "best_value": None if best is None else best.value,
            "compute": {k: round(v, 3) for k, v in tally.totals.items()}}


def final_progress(cfg: Any, overrides: Sequence[str], seeds: int) -> dict[str, Any]:
    """The final runs already FINISHED with the configuration the board would run (bars.final's resume rule)."""
    from bars.final import FinalError, finished_runs

    if not cfg.tracking.get("enabled", True):  # final runs are found in MLflow only
        return {"seeds": seeds, "finished": 0, "note": "tracking.enabled=false: final runs are not recorded"}
    try:
        done = finished_runs(cfg, overrides)
    except FinalError:  # no best.overrides yet: the sweep has not completed a trial
        return {"seeds": seeds, "finished": 0}
    runs = [r for _, _, r in done if r is not None]
    aucs = [float(r.metrics["test_auc"]) for r in runs if "test_auc" in r.metrics]
    secs = [float(r.metrics["wall_seconds"]) for r in runs if "wall_seconds" in r.metrics]
    return {"seeds": seeds, "finished": len(runs), "finished_seeds": [s for _, s, r in done if r is not None],
            "test_auc": sum(aucs) / len(aucs) if aucs else None, "wall_s": round(sum(secs), 3),
            "run_ids": [r.run_id for r in runs]}


def _status(state: ModelState, budget: Budget) -> None:
    """done / partial / pending from the stores (failed and skipped are set by the caller)."""
    sw, fin = state.sweep, state.final
    if not sw.get("started"):
        state.status = "pending"
        return
    if sw.get("done") and fin.get("finished", 0) >= fin.get("seeds", 0) > 0:
        state.status, state.reason = "done", None
        return
    state.status = "partial"
    missing = []
    if not sw.get("done"):
        b = Budget.from_record(sw.get("budget")) or budget
        missing.append(f"sweep at {b.fmt(sw.get('spent', 0.0))} of {b.fmt(b.amount)} {b.unit}")
    if fin.get("finished", 0) < fin.get("seeds", 0):
        missing.append(f"{fin.get('seeds', 0) - fin.get('finished', 0)} final seeds to run")
    state.reason = "; ".join(missing) or None


def _same_budget(a: Budget | None, b: Budget) -> bool:
    return a is not None and a.unit == b.unit and math.isclose(a.amount, b.amount, rel_tol=1e-9)


def _describe_budget(record: dict | None, trial_cap: int | None) -> str:
    b = Budget.from_record(record)
    if b is None:
        return f"no compute budget (sweep.trials={trial_cap})" if trial_cap else "no compute budget"
    return f"sweep.budget={b.spec}"


# ------------------------------------------------------------------------------------------------ the board
@dataclass
class Board:
    data: str
    budget: Budget
    seeds: int
    workers: int | None
    overrides: list[str]  # every model's, before model=<id>
    models: list[str]
    states: dict[str, ModelState]
    results: Path
    name: str | None = None  # a named board: its own studies (<model id>__<data>__<name>) and summary file
    strategy: dict[str, Any] = field(default_factory=dict)
    configs: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def path(self) -> Path:
        return board_path(self.results, self.data, self.name)

    def model_overrides(self, model: str) -> list[str]:
        """The model's sweep and final runs are composed from these (final.seeds does not change a sweep)."""
        return [f"model={model}", *self.overrides, f"final.seeds={self.seeds}"]

    def config(self, model: str) -> Any:
        """The model's composed config (composed once; read-only use)."""
        if model not in self.configs:
            from bars.config import compose

            self.configs[model] = compose(self.model_overrides(model))
        return self.configs[model]

    def counts(self) -> dict[str, int]:
        return {s: sum(1 for st in self.states.values() if st.status == s) for s in STATUSES}

    def record(self, previous: dict[str, Any] | None = None, only: Sequence[str] | None = None) -> dict[str, Any]:
        """The summary file's content (models of earlier invocations not in this one, and with ``only`` every
        model but those, are kept as they were)."""
        from bars.config import redact

        models = dict((previous or {}).get("models", {}))
        for m in (self.models if only is None else only):
            models[m] = {k: v for k, v in asdict(self.states[m]).items() if k != "model"}
        models = dict(sorted(models.items()))
        total = {"train_samples": 0.0, "cpu_s": 0.0, "wall_s": 0.0, "device_s": 0.0, "final_wall_s": 0.0}
        for st in models.values():
            c = st.get("sweep", {}).get("compute", {})
            total["train_samples"] += c.get("compute_train_samples", 0.0)
            total["cpu_s"] += c.get("compute_cpu_s", 0.0)
            total["wall_s"] += c.get("compute_wall_s", 0.0)
            total["device_s"] += c.get("compute_device_s", 0.0)
            total["final_wall_s"] += st.get("final", {}).get("wall_s", 0.0) or 0.0
        counts = {s: sum(1 for st in models.values() if st.get("status") == s) for s in STATUSES}
        return {"data": self.data, "name": self.name, "budget": self.budget.as_record(), "seeds": self.seeds,
                "workers": self.workers, "strategy": self.strategy, "overrides": [redact(o) for o in self.overrides],
                "counts": counts, "compute": {k: round(v, 3) for k, v in total.items()}, "models": models}


def board_path(results: Path, data: str, name: str | None = None) -> Path:
    """``results/<d>_board.json``; a named board's ``results/<d>__<name>_board.json``."""
    return Path(results) / f"{data}{'__' + name if name else ''}_board.json"


def read_board(results: Path, data: str, name: str | None = None) -> dict[str, Any] | None:
    p = board_path(results, data, name)
    if not p.exists():
        return None
    try:
        return json.loads(p.read_text())
    except (OSError, ValueError):
        return None


def write_board(board: Board, only: Sequence[str] | None = None) -> Path:
    """Merge this board's states (``only``: those models') into the summary file (under a lock: ``--jobs``
    processes write it too)."""
    import hashlib
    import tempfile

    from bars.fileio import atomic_write_text, file_lock

    key = hashlib.sha256(str(board.path.resolve()).encode()).hexdigest()[:16]  # one lock per summary file
    with file_lock(Path(tempfile.gettempdir()) / f"bars-board-{key}.lock"):  # not beside it: results/ stays clean
        record = board.record(read_board(board.results, board.data, board.name), only)
        return atomic_write_text(board.path, json.dumps(record, indent=1, sort_keys=False) + "\n")


def _run_jobs(board: Board, todo: list[str], jobs: int, *, rebudget: bool, overrides: Sequence[str],
              say: Callable[[str], None]) -> None:
    """``--jobs k``: k models at a time, each in its own ``bars board --models <m> --no-leaderboard`` process
    (the same sweep and final runs as in this process), its lines relayed with a ``[<model>]`` prefix. Each
    process gets ``cores // k`` torch threads (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` unless set), so k
    one-thread models fill k cores: on a CPU machine the sweep of one model and the final runs of another no
    longer wait for each other. Passwords in the overrides go through the environment, as for sweep workers."""
    import os
    import subprocess
    import threading

    from bars.sweep import SECRET_ENV, has_secret

    threads = max(1, (os.cpu_count() or 1) // jobs)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        env.setdefault(k, str(threads))
    keep = []
    for o in overrides:
        key, _, value = o.partition("=")
        if _key(key) in SECRET_ENV and has_secret(value):
            env[SECRET_ENV[_key(key)]] = value
        else:
            keep.append(o)
    base = ["--data", board.data, "--budget", board.budget.spec, "--seeds", str(board.seeds), "--no-leaderboard",
            *(["--name", board.name] if board.name else []), *(["--rebudget"] if rebudget else [])]

    def relay(p: subprocess.Popen, m: str) -> None:
        assert p.stdout is not None
        for line in p.stdout:  # drained to the end whatever happens: a full pipe would block the model's process
            with contextlib.suppress(Exception):
                say(f"[{m}] {line.rstrip()}")

    queue, running = list(todo), {}
    say(f"bars board: {len(todo)} models, {jobs} at a time, one process each ({env['OMP_NUM_THREADS']} threads)")
    try:
        while queue or running:
            while queue and len(running) < jobs:
                m = queue.pop(0)
                p = subprocess.Popen([sys.executable, "-m", "bars.cli", "board", *base, "--models", m, *keep],
                                     env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     errors="replace", bufsize=1)
                t = threading.Thread(target=relay, args=(p, m), daemon=True)
                t.start()
                running[m] = (p, t)
            time.sleep(0.2)
            for m, (p, t) in list(running.items()):
                if p.poll() is not None:
                    t.join(timeout=5)
                    del running[m]
                    _collect(board, m, p.returncode, say)
    finally:  # Ctrl-C (which the models' processes got too) or an error here: stop them, keep what they recorded
        deadline = time.monotonic() + 30
        for sig in ("wait", "terminate", "kill"):
            for p, _ in running.values():
                if p.poll() is None and sig != "wait":
                    getattr(p, sig)()
            while any(p.poll() is None for p, _ in running.values()) and time.monotonic() < deadline:
                time.sleep(0.2)
            deadline = time.monotonic() + 10
        for m, (p, _) in running.items():
            _collect(board, m, p.returncode if p.returncode is not None else 130, say)


def _collect(board: Board, m: str, code: int, say: Callable[[str], None]) -> None:
    """A ``--jobs`` process ended: its model's state from the stores (failed: the reason its process recorded;
    killed by a signal or Ctrl-C: partial, interrupted); only that model's entry of the summary is rewritten."""
    st = board.states[m]
    try:
        refresh(board, m)
    except Exception as e:  # noqa: BLE001  (a store that cannot be read: the model is failed, the board goes on)
        st.status, st.reason = "failed", f"its state could not be read: {_first_line(e)}"
    if code != 0 and st.status != "done":
        child = ((read_board(board.results, board.data, board.name) or {}).get("models") or {}).get(m) or {}
        if code in (130, -2, -9, -15):
            st.status, st.reason = "partial", "interrupted"
        else:
            st.status = "failed"
            st.reason = child.get("reason") if child.get("status") == "failed" and child.get("reason") else \
                f"its process exited with status {code} (its lines above say why)"
        say(f"bars board: {m} {st.status}: {st.reason}")
    write_board(board, only=[m])


def plan_board(data: str, *, models: str | Sequence[str] | None = None, budget: str | None = None,
               seeds: int | None = None,
               workers: int | None = None, overrides: Sequence[str] = (), gpus: Sequence[str] | None = None,
               name: str | None = None) -> Board:
    """Compose every model, prepare the data once, build each model on its feature spec, and read each sweep
    and its final runs from the stores. Trains nothing; writes only the prepared data."""
    from bars.config import compose
    from bars.data.prepare import prepare
    from bars.data.spec import FeatureSpec
    from bars.data.writer import SPEC

    names = resolve_models(models)
    if any(_key(o) == "sweep.budget" for o in overrides):
        raise BoardError("set the board's budget with BUDGET= (--budget), not sweep.budget: the board checks it "
                         "against its sweeps")
    base_cfg = compose([f"data={data}", *[o for o in overrides if _key(o) not in _BOARD_KEYS]])
    results = Path(str(base_cfg.paths.results))
    earlier = read_board(results, data, name)
    seeds = int(seeds if seeds is not None else (earlier or {}).get("seeds") or DEFAULT_SEEDS)
    if seeds < 1:
        raise BoardError(f"--seeds must be >= 1, got {seeds}")
    spec_text = budget if budget is not None else (earlier or {}).get("budget", {}).get("spec") or DEFAULT_BUDGET
    try:
        b = parse_budget(spec_text)
    except BudgetSyntaxError as e:
        raise BoardError(str(e).replace("sweep.budget", "BUDGET (--budget)", 1)) from None
    if b is None:
        raise BoardError(f"a board needs a compute budget (BUDGET=, e.g. {DEFAULT_BUDGET!r} or 10m); got {spec_text!r}")
    ov = board_overrides(data, b, workers, list(overrides), gpus, name)
    cfg0 = compose(ov)
    folder = Path(prepare(cfg0, quiet=True))
    spec = FeatureSpec.load(folder / SPEC)
    from bars.strategy import unique

    strategy = {"sampler": str(cfg0.sweep.sampler.name), "unique": unique(cfg0), "pruner": str(cfg0.sweep.pruner.name),
                "max_epochs": cfg0.sweep.max_epochs, "workers": str(cfg0.sweep.workers)}
    board = Board(data=data, budget=b, seeds=seeds, workers=workers, overrides=ov, models=names, states={},
                  results=results, name=name, strategy=strategy)
    for m in names:
        st = ModelState(m)
        board.states[m] = st
        try:
            cfg = board.config(m)
        except Exception as e:  # noqa: BLE001  (an override this model lacks: its own failure, not the board's)
            st.status, st.reason = "failed", _first_line(e)
            continue
        st.study = str(cfg.sweep.study)
        why = build_check(cfg, spec)
        if why is not None:
            st.status, st.reason = "skipped", why
            continue
        refresh(board, m)
    return board


def refresh(board: Board, model: str) -> ModelState:
    """Re-read one model's sweep and final runs from the stores and set its status."""
    st = board.states[model]
    cfg = board.config(model)
    st.sweep = sweep_progress(cfg)
    st.final = final_progress(cfg, board.model_overrides(model), board.seeds) if st.sweep.get("started") else \
        {"seeds": board.seeds, "finished": 0}
    _status(st, board.budget)
    return st


def budget_conflicts(board: Board) -> dict[str, str]:
    """Studies of the board run with another budget than the board's: model -> a line naming both budgets."""
    out = {}
    for m in board.models:
        st = board.states[m]
        sw = st.sweep
        if st.status in ("skipped", "failed") or not sw.get("started"):
            continue
        if not _same_budget(Budget.from_record(sw.get("budget")), board.budget):
            out[m] = (f"study {st.study} was run with {_describe_budget(sw.get('budget'), sw.get('trial_cap'))}; "
                      f"this board asks for {board.budget.spec}")
    return out


def print_table(board: Board, say: Callable[[str], None], title: str) -> None:
    c = board.counts()
    named = f" (board {board.name})" if board.name else ""
    say(f"bars board: {title}: {board.data}{named}, {len(board.models)} models, budget {board.budget.spec} "
        f"({board.budget.describe()}) per model, {board.seeds} seeds, sampler {board.strategy.get('sampler')}, "
        f"pruner {board.strategy.get('pruner')}, workers {board.strategy.get('workers')}")
    for m in board.models:
        say(board.states[m].line(board.budget))
    skipped = [board.states[m] for m in board.models if board.states[m].status == "skipped"]
    failed = [board.states[m] for m in board.models if board.states[m].status == "failed"]
    say(f"bars board: {c['done']} done, {c['partial']} partial, {c['pending']} not started, {c['failed']} failed, "
        f"{c['skipped']} skipped (cannot run on {board.data})")
    if skipped:
        say("bars board: skipped (their build on the dataset's feature spec fails):")
        for st in skipped:
            say(f"  {st.model}: {st.reason}")
    if failed:
        say("bars board: failed:")
        for st in failed:
            say(f"  {st.model}: {st.reason}")
    spent = {k: sum(board.states[m].sweep.get("compute", {}).get(k, 0.0) for m in board.models)
             for k in ("compute_train_samples", "compute_cpu_s", "compute_wall_s", "compute_device_s")}
    line = (f"bars board: sweeps spent {fmt_samples(spent['compute_train_samples'])} training samples, "
            f"{fmt_seconds(spent['compute_cpu_s'])} CPU, {fmt_seconds(spent['compute_wall_s'])} wall")
    if spent["compute_device_s"]:
        line += f", {fmt_seconds(spent['compute_device_s'])} device"
    say(line)


def run_board(data: str, *, models: str | Sequence[str] | None = None, budget: str | None = None,
              seeds: int | None = None,
              workers: int | None = None, plan: bool = False, rebudget: bool = False,
              overrides: Sequence[str] = (), train_fn: Callable[..., Any] | None = None,
              leaderboard: bool = True, gpus: Sequence[str] | None = None, name: str | None = None,
              say: Callable[[str], None] | None = None, jobs: int | None = None) -> dict[str, Any]:
    """The board (see the module doc). Returns ``{"board": <the summary record>, "exit_code": 0 | 1,
    "leaderboard": <bars.leaderboard boards or None>}``; raises :class:`BoardError` before anything trains
    (unknown model, budget conflict without ``rebudget``) and KeyboardInterrupt after writing the summary."""
    say = say or (lambda s: print(s, flush=True))
    if jobs is not None and jobs < 1:
        raise BoardError(f"--jobs (JOBS=) must be >= 1, got {jobs}")
    if jobs is not None and jobs > 1 and workers is not None:
        raise BoardError("--jobs (JOBS=) runs one process per model; --workers (WORKERS=) starts sweep workers per "
                         "model (GPU machines): choose one")
    if jobs is not None and jobs > 1 and train_fn is not None:
        raise BoardError("--jobs > 1 trains in child processes: a train_fn cannot be passed to them")
    board = plan_board(data, models=models, budget=budget, seeds=seeds, workers=workers, overrides=overrides,
                       gpus=gpus, name=name)
    conflicts = budget_conflicts(board)
    if plan:
        print_table(board, say, "plan")
        if conflicts:
            say("bars board: budget conflicts (a run would be refused; REBUDGET=1 / --rebudget continues them "
                "with the board's budget):\n  " + "\n  ".join(conflicts.values()))
        return {"board": board.record(), "exit_code": 2 if conflicts else 0, "leaderboard": None}
    if conflicts and not rebudget:
        raise BoardError("the budget must be the same for every model of a board:\n  " + "\n  ".join(conflicts.values())
                         + "\nrerun with the budget those sweeps used, or REBUDGET=1 (--rebudget) to continue them "
                         "with the new one")
    from bars.config import compose
    from bars.final import run_final
    from bars.sweep import sweep

    # a study of another budget is run again with REBUDGET (its stored budget becomes the board's) even when done
    todo = [m for m in board.models if board.states[m].status not in ("skipped", "failed", "done") or m in conflicts]
    print_table(board, say, "start")
    t0, cpu0 = time.monotonic(), time.process_time()
    write_board(board)
    try:
        if jobs is not None and jobs > 1 and len(todo) > 1:
            _run_jobs(board, todo, jobs, rebudget=rebudget, overrides=overrides, say=say)
            todo = []
        for n, m in enumerate(todo, 1):
            st = board.states[m]
            say(f"bars board: [{n}/{len(todo)}] {m}: sweep {st.study} at {board.budget.spec}, then {board.seeds} "
                f"final seeds")
            ov = board.model_overrides(m)
            try:
                summary = sweep(compose(ov), ov, train_fn=train_fn)  # a fresh config: the sweep may change it
                if not summary.get("done"):
                    refresh(board, m)
                    st.status = "partial"
                    st.reason = f"sweep stopped before its budget ({st.sweep.get('trials', 0)} trials)"
                    continue
                if not summary.get("best"):
                    raise BoardError(f"sweep {st.study}: no trial completed ({summary.get('failed', 0)} failed)")
                run_final(compose(ov), ov, train_fn=train_fn)
                refresh(board, m)
            except KeyboardInterrupt:
                with contextlib.suppress(Exception):
                    refresh(board, m)
                st.status = "partial"
                st.reason = "interrupted"
                raise
            except Exception as e:  # noqa: BLE001  (one model failing does not stop the board)
                with contextlib.suppress(Exception):
                    refresh(board, m)
                st.status, st.reason = "failed", _first_line(e)
                if st.sweep.get("last_error") and st.sweep["last_error"] not in st.reason:
                    st.reason += f" (last failed trial: {st.sweep['last_error'][:300]})"
                say(f"bars board: {m} failed: {st.reason}")
            finally:
                write_board(board)
    except KeyboardInterrupt:
        write_board(board)
        say(f"bars board: interrupted; the summary is in {board.path}; rerun the same command to continue")
        raise
    boards = None
    if leaderboard:
        boards = _leaderboard(board, say)
    print_table(board, say, "summary")
    say(f"bars board: this invocation took {fmt_seconds(time.monotonic() - t0)} wall, "
        f"{fmt_seconds(time.process_time() - cpu0)} CPU in this process (worker processes not included); "
        f"summary: {board.path}")
    failed = board.counts()["failed"]
    return {"board": read_board(board.results, board.data, board.name), "exit_code": 1 if failed else 0,
            "leaderboard": boards}


def _leaderboard(board: Board, say: Callable[[str], None]) -> Any:
    """The dataset's leaderboard (results/<d>.md, .csv, plots, index.html) over every model with final runs."""
    from bars.config import compose
    from bars.leaderboard import run as leaderboard_run

    if not any(board.states[m].final.get("finished") for m in board.models):
        say(f"bars board: no model has finished final runs on {board.data} yet: no leaderboard written")
        return None
    try:
        return leaderboard_run(compose([*board.overrides, f"leaderboard.data={board.data}"]))
    except (Exception, SystemExit) as e:  # noqa: BLE001  (the board's summary is still written)
        say(f"bars board: the leaderboard could not be written: {_first_line(e)}")
        return None


# ------------------------------------------------------------------------------------------------- the shell
def main(argv: Sequence[str] | None = None) -> int:
    """``bars board --data <d> [--models a,b|all] [--budget "1M samples"] [--seeds 5] [--workers k] [--jobs k]
    [--no-leaderboard] [--plan] [--rebudget] [overrides...]``."""
    ap = argparse.ArgumentParser(prog="bars board", description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", required=True, help="the dataset (conf/data/<d>.yaml)")
    ap.add_argument("--models", default="all", help="comma-separated model config ids, or all (default)")
    ap.add_argument("--budget", default=None,
                    help=f"every model's sweep budget: '1M samples', 5e6, '30m' (default: the board's earlier "
                         f"budget, else {DEFAULT_BUDGET!r})")
    ap.add_argument("--seeds", type=int, default=None,
                    help=f"final runs per model (default: the board's earlier seeds, else {DEFAULT_SEEDS})")
    ap.add_argument("--workers", type=int, default=None,
                    help="sweep workers per model (default: sweep.workers=auto: one per GPU, 1 on the CPU); "
                         "packed on the visible GPUs")
    ap.add_argument("--name", default=None,
                    help="a named board: its own studies <model id>__<data>__<name> (beside earlier sweeps of the "
                         "same models) and summary results/<d>__<name>_board.json")
    ap.add_argument("--jobs", type=int, default=None,
                    help="models run at the same time, each in its own process with cores // jobs threads "
                         "(default 1: one after the other in this process)")
    ap.add_argument("--no-leaderboard", action="store_true", help="do not write the leaderboard at the end")
    ap.add_argument("--plan", action="store_true", help="print what would run and what is done; train nothing")
    ap.add_argument("--rebudget", action="store_true",
                    help="continue sweeps that were run with another budget with this one")
    ap.add_argument("overrides", nargs="*", help="Hydra overrides applied to every model (e.g. data.raw_dir=...)")
    args = ap.parse_args(sys.argv[1:] if argv is None else list(argv))

    def _term(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    with contextlib.suppress(ValueError):
        signal.signal(signal.SIGTERM, _term)
    from bars.run import expected_errors

    try:
        out = run_board(args.data, models=args.models, budget=args.budget, seeds=args.seeds, workers=args.workers,
                        plan=args.plan, rebudget=args.rebudget, overrides=args.overrides, name=args.name,
                        jobs=args.jobs, leaderboard=not args.no_leaderboard)
    except KeyboardInterrupt:
        return 130
    except (BoardError, *expected_errors()) as e:
        print(f"bars board: error: {e}", file=sys.stderr, flush=True)
        return 2
    return int(out["exit_code"])


__all__ = ["DEFAULT_BUDGET", "DEFAULT_SEEDS", "Board", "BoardError", "ModelState", "board_overrides", "board_path",
           "budget_conflicts", "build_check", "final_progress", "main", "plan_board", "read_board", "refresh",
           "registered_models", "resolve_models", "run_board", "sweep_progress", "write_board"]
