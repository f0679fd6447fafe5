"""Read-only access to MLflow's records: the second (and only other) module that imports mlflow.

``bars.tracking`` writes runs; this module only reads them back, as plain frozen dataclasses, for
``bars.leaderboard`` (a pure function of these records) and ``bars.reproduce``. It never creates, changes or
deletes anything in the store. The import-linter contract allows exactly ``bars.tracking`` and ``bars.records``
to import mlflow.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

# Per-epoch metrics read back (as full histories) for the runs that need them.
HISTORY_KEYS = ("train_loss", "val_auc", "val_logloss", "lr", "samples_per_s")


class RecordsError(RuntimeError):
    """A tracking store, experiment, run or artifact that cannot be read."""


@dataclass(frozen=True)
class RunRecord:
    """One MLflow run as plain data. ``metrics`` holds MLflow's latest value per key; ``history`` (filled
    only when asked for) holds ``key -> ((step, value), ...)`` sorted by step then timestamp."""

    run_id: str
    experiment: str
    status: str
    start_time: int | None
    end_time: int | None
    tags: dict[str, str] = field(default_factory=dict)
    params: dict[str, str] = field(default_factory=dict)
    metrics: dict[str, float] = field(default_factory=dict)
    history: dict[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)

    @property
    def stage(self) -> str:
        return self.tags.get("stage", "")

    @property
    def model(self) -> str:
        """The model config's id (the ``model`` tag; the registry key for runs recorded before model ids)."""
        return self.tags.get("model") or self.params.get("model.id") or self.params.get("model.name", "")

    @property
    def parent_run_id(self) -> str | None:
        return self.tags.get("mlflow.parentRunId")


def _client(uri: str):
    """A client on ``uri``. A SQLite store that does not exist is an error (reading never creates one); one that
    another process is creating is waited for (``bars.tracking.ensure_store``: the same first-use lock)."""
    from mlflow.tracking import MlflowClient

    from bars.config import safe_url
    from bars.tracking import ensure_store, resolve_uri, sqlite_path

    uri = resolve_uri(uri)
    db = sqlite_path(uri)
    if db is not None and not db.exists():
        raise RecordsError(f"no tracking store at {db}: nothing was recorded there yet (run make train / make sweep "
                           f"/ make final first, or set tracking.uri)")
    try:
        ensure_store(uri)
    except Exception as e:  # a store that cannot be opened: say which
        raise RecordsError(f"cannot open the tracking store {safe_url(uri)}: {type(e).__name__}: {e}") from e
    return MlflowClient(tracking_uri=uri)


def list_experiments(uri: str) -> list[str]:
    """Names of the active experiments in the store, sorted (MLflow's ``Default`` left out)."""
    client = _client(uri)
    names = [e.name for e in client.search_experiments() if e.name != "Default"]
    return sorted(names)


def _to_record(client, run, experiment: str, history_keys: Iterable[str]) -> RunRecord:
    history: dict[str, tuple[tuple[int, float], ...]] = {}
    for key in history_keys:
        if key in run.data.metrics:
            points = client.get_metric_history(run.info.run_id, key)
            points = sorted(points, key=lambda m: (m.step, m.timestamp))
            history[key] = tuple((int(m.step), float(m.value)) for m in points)
    return RunRecord(
        run_id=run.info.run_id,
        experiment=experiment,
        status=run.info.status,
        start_time=run.info.start_time,
        end_time=run.info.end_time,
        tags=dict(run.data.tags),
        params=dict(run.data.params),
        metrics={k: float(v) for k, v in run.data.metrics.items()},
        history=history,
    )


def load_runs(
    uri: str,
    experiments: Iterable[str] | None = None,
    *,
    history_stages: Iterable[str] = ("final",),
    history_keys: Iterable[str] = HISTORY_KEYS,
) -> list[RunRecord]:
    """Every run (any status) of the named experiments (all when None), sorted by experiment then run id.

    Metric histories are read for runs whose ``stage`` tag is in ``history_stages`` (one query per run and key,
    so only where they are needed). An experiment name that does not exist raises :class:`RecordsError`.
    """
    client = _client(uri)
    names = list_experiments(uri) if experiments is None else list(experiments)
    stages = set(history_stages)
    keys = tuple(history_keys)
    out: list[RunRecord] = []
    for name in names:
        exp = client.get_experiment_by_name(name)
        if exp is None:
            raise RecordsError(
                f"no MLflow experiment named {name!r} at {uri}; experiments there: {list_experiments(uri)}"
            )
        token = None
        while True:
            page = client.search_runs([exp.experiment_id], max_results=1000, page_token=token)
            for run in page:
                want = keys if run.data.tags.get("stage", "") in stages else ()
                out.append(_to_record(client, run, name, want))
            token = page.token
            if not token:
                break
    return sorted(out, key=lambda r: (r.experiment, r.run_id))


def get_run(uri: str, run_id: str, *, history_keys: Iterable[str] = ()) -> RunRecord:
    """One run by id, with the histories asked for."""
    client = _client(uri)
    try:
        run = client.get_run(run_id)
    except Exception as e:  # mlflow raises MlflowException (RESOURCE_DOES_NOT_EXIST) for unknown ids
        raise RecordsError(f"no MLflow run {run_id!r} at {uri}: {e}") from e
    exp = client.get_experiment(run.info.experiment_id)
    return _to_record(client, run, exp.name if exp else "", history_keys)


def download_artifact(uri: str, run_id: str, path: str, dst_dir: str | Path) -> Path:
    """Copy one artifact of a run (e.g. ``config.yaml``) into ``dst_dir``; returns the local path."""
    client = _client(uri)
    Path(dst_dir).mkdir(parents=True, exist_ok=True)
    try:
        local = client.download_artifacts(run_id, path, str(dst_dir))
    except Exception as e:
        raise RecordsError(f"run {run_id} at {uri} has no artifact {path!r}: {e}") from e
    return Path(local)


def load_run_config(run_id: str, uri: str | None = None, name: str = "config.yaml"):
    """The resolved config a run recorded (its ``config.yaml`` artifact) as a ``DictConfig``."""
    import tempfile

    from omegaconf import OmegaConf

    with tempfile.TemporaryDirectory() as tmp:
        return OmegaConf.load(get_client(uri).download_artifacts(run_id, name, tmp))


def get_client(uri: str | None = None):
    """A plain client on the resolved URI (creates nothing, checks nothing; ``_client`` is the strict reader's)."""
    from mlflow.tracking import MlflowClient

    from bars.tracking import resolve_uri

    return MlflowClient(tracking_uri=resolve_uri(uri))
