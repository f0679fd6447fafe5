"""The sweep's MLflow records (through bars.tracking, the only module importing mlflow): a parent run per study,
a child run per trial, trial-state tags, and reconciliation from the Optuna storage (the source of truth).
Split from bars.sweep, which uses it; every call is best effort: MLflow trouble never stops a trial."""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from omegaconf import DictConfig
from optuna.trial import TrialState

from bars import compute, process
from bars.study import WORKER_ATTR, BudgetState, SweepStudy, monitor_of, state_name

__all__ = ["SweepTracking", "make_tracking"]


class SweepTracking:
    """Parent run per study (its id kept in the study's user attributes, so reruns and workers reuse it), child
    run per trial (created by ``train_one`` with ``stage=trial``), trial-state tags, and reconciliation from the
    Optuna storage (the source of truth). Every call is best effort: MLflow trouble never stops a trial."""

    def __init__(self, cfg: DictConfig) -> None:
        from bars import tracking

        self.cfg = cfg
        self.tracking = tracking
        self.tracker = tracking.tracker_of(cfg, tries=3, first_delay=1.0)

    def ensure_parent(self, study: SweepStudy, record: dict[str, Any]) -> str | None:
        run_id = study.user_attrs.get("mlflow_parent_run_id")
        tags = {"stage": "sweep", "sweep_study": study.study_name, "model": record["model"],
                "data": record["data"], "sampler": record["sampler"], "optuna_version": record["optuna_version"],
                "storage": study.user_attrs.get("storage_kind", ""), "sweep_state": "running"}
        params = {k: json.dumps(v) if isinstance(v, (dict, list)) else v for k, v in record.items()}
        if run_id and self.tracker.run_status(run_id) is not None:
            # resume: the same parent, RUNNING again, owned by this process (for tracking.reconcile)
            env = self.tracking.environment_tags()
            own = {k: env[k] for k in ("hostname", "pid", "pid_start", "command") if k in env}
            self.tracker.end_run(run_id, "RUNNING", {**tags, **own, "resumed_at": time.strftime(
                "%Y-%m-%dT%H:%M:%S%z")})
            if study.user_attrs.get("budget") is not None:
                self.tracker.attach(run_id).log_metrics({"budget": float(study.user_attrs["budget"])})
            return run_id
        run = self.tracker.start_run(study.study_name, tags=tags, params=params)
        study.set_user_attr("mlflow_parent_run_id", run.run_id)
        return run.run_id

    def trial_finished(self, run_id: str | None, tags: dict[str, str], state: str, number: int,
                       used: dict[str, Any] | None = None) -> None:
        """Tag the trial's run with its state and log the compute it used (bars.compute.KEYS) as metrics."""
        if not run_id:
            return
        # the compute and the state tag in one store call (a waited SQLite commit each: issue 16)
        self.tracker.attach(run_id).log({k: float(v) for k, v in (used or {}).items() if k in compute.KEYS},
                                        tags={"state": state})
        if state == "pruned":  # train_one ended it FAILED (TrialPruned propagated): pruning is not a failure
            self.tracker.end_run(run_id, "FINISHED")

    def finish_parent(self, run_id: str | None, study: SweepStudy, tally: BudgetState,
                      summary: dict[str, Any]) -> None:
        if not run_id:
            return
        run = self.tracker.attach(run_id)
        best = summary.get("best")
        metrics = {"trials_finished": tally.finished, "trials_failed": tally.failed,
                   **({"budget": tally.budget} if tally.budget is not None else {}),
                   **{k: v for k, v in tally.totals.items()}}  # the sweep's total compute (bars.compute.KEYS)
        if tally.compute is not None:
            metrics.update(compute_budget=tally.compute.amount, compute_spent=tally.spent,
                           compute_overshoot=tally.spent - tally.compute.amount)
            run.set_tags({"compute_budget": tally.compute.spec, "compute_budget_unit": tally.compute.unit})
        if best:
            metrics[f"best_{monitor_of(self.cfg).name}"] = best["value"]
            run.set_tags({"best_trial": best["number"], "best_overrides": " ".join(best["overrides"])})
        run.log_metrics(metrics)
        self.tracker.end_run(run_id, "FINISHED" if tally.done else "KILLED",
                             {"sweep_state": "done" if tally.done else "incomplete"})

    def reconcile(self, study: SweepStudy) -> list[str]:
        """End trial runs still RUNNING in MLflow whose Optuna trial is not running (or whose worker is dead);
        tag every trial run with the trial's state."""
        try:
            return self._reconcile(study)
        except Exception as e:  # never let bookkeeping kill the sweep  # noqa: BLE001
            print(f"bars sweep: warning: MLflow reconcile failed: {type(e).__name__}: {e}", file=sys.stderr)
            return []

    def _reconcile(self, study: SweepStudy) -> list[str]:
        trials = {t.number: t for t in study.get_trials(deepcopy=False)}
        ended = []
        for r in self.tracker.find_runs({"sweep_study": study.study_name, "stage": "trial"}):
            number = r.tags.get("trial_number", "")
            t = trials.get(int(number)) if number.isdigit() else None
            state = None if t is None else state_name(t.state)
            if r.status == "RUNNING":
                if t is not None and t.state == TrialState.RUNNING:
                    ident = t.user_attrs.get(WORKER_ATTR)
                    if ident is None or process.identity_alive(ident) is not False:
                        continue
                    state = "failed"
                self.tracker.end_run(r.run_id, "FAILED", {
                    "state": state or "failed", "error_type": "WorkerDied",
                    "error": "reconciled from the Optuna storage: the trial is "
                             f"{state or 'gone'} but its run was left RUNNING"})
                ended.append(r.run_id)
            elif state is not None and r.tags.get("state") != state and t.state != TrialState.RUNNING:
                self.tracker.attach(r.run_id).set_tags({"state": state})
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
