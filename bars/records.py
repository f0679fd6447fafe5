"""Read-only access to MLflow's records: the second (and only other) module that imports mlflow.

``bars.tracking`` writes runs; this module only reads them back, as plain frozen dataclasses, for
``bars.leaderboard`` (a pure function of these records) and ``bars.reproduce``. It never creates, changes or
deletes anything in the store. The import-linter contract allows exactly ``bars.tracking`` and ``bars.records``
to import mlflow.

Records can also be kept as a file (:func:`dump_records` / :func:`read_records`: gzip JSON lines, deterministic
bytes): the runs behind a published board (``results/<d>_runs.jsonl.gz``, ``leaderboard.save_records``), from
which ``bars leaderboard leaderboard.records=[...]`` rebuilds or extends the board without the store they came from
(a board run on several machines or over several sessions).
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


RECORDS_FORMAT = "bars-run-records"
RECORDS_VERSION = 1
_RECORD_FIELDS = ("run_id", "experiment", "status", "start_time", "end_time", "tags", "params", "metrics", "history")


def dump_records(records: Iterable[RunRecord], path: str | Path) -> Path:
    """Write ``records`` to ``path`` (gzip JSON lines: a header line, then one run per line sorted by run id;
    gzip without a timestamp, so the same records give the same bytes), atomically."""
    import gzip
    import json

    from bars.fileio import atomic_write

    recs = sorted(records, key=lambda r: r.run_id)
    lines = [json.dumps({"format": RECORDS_FORMAT, "version": RECORDS_VERSION, "runs": len(recs)}, sort_keys=True)]
    for r in recs:
        d = {k: getattr(r, k) for k in _RECORD_FIELDS}
        d["history"] = {k: [list(p) for p in v] for k, v in r.history.items()}
        lines.append(json.dumps(d, sort_keys=True, allow_nan=True))
    data = ("\n".join(lines) + "\n").encode()

    def write(tmp: Path) -> None:
        with open(tmp, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz:
            gz.write(data)

    return atomic_write(path, write)


def read_records(path: str | Path) -> list[RunRecord]:
    """The runs of a file :func:`dump_records` wrote; anything else is a :class:`RecordsError` naming the file and
    line and what was expected."""
    import gzip
    import json

    path = Path(path)
    try:
        with gzip.open(path, "rt", encoding="utf-8") as f:
            lines = f.read().splitlines()
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise RecordsError(f"{path}: cannot read run records (expected a gzip JSON-lines file written by bars "
                           f"leaderboard leaderboard.save_records=true): {type(e).__name__}: {e}") from e

    def parse(i: int) -> dict:
        try:
            d = json.loads(lines[i])
        except ValueError as e:
            raise RecordsError(f"{path}, line {i + 1}: not JSON: {e}") from e
        if not isinstance(d, dict):
            raise RecordsError(f"{path}, line {i + 1}: expected a JSON object, got {type(d).__name__}")
        return d

    if not lines:
        raise RecordsError(f"{path}: empty; expected a header line {{\"format\": \"{RECORDS_FORMAT}\", ...}}")
    head = parse(0)
    if head.get("format") != RECORDS_FORMAT or head.get("version") != RECORDS_VERSION:
        raise RecordsError(f"{path}, line 1: expected the header format {RECORDS_FORMAT!r} version "
                           f"{RECORDS_VERSION}, got format {head.get('format')!r} version {head.get('version')!r}")
    if head.get("runs") != len(lines) - 1:
        raise RecordsError(f"{path}: the header announces {head.get('runs')} runs but the file holds "
                           f"{len(lines) - 1} (truncated or edited)")
    out: list[RunRecord] = []
    for i in range(1, len(lines)):
        d = parse(i)
        keys = set(d)
        if keys != set(_RECORD_FIELDS):
            raise RecordsError(f"{path}, line {i + 1}: expected the keys {sorted(_RECORD_FIELDS)}; missing "
                               f"{sorted(set(_RECORD_FIELDS) - keys)}, unknown {sorted(keys - set(_RECORD_FIELDS))}")
        try:
            out.append(RunRecord(
                run_id=str(d["run_id"]), experiment=str(d["experiment"]), status=str(d["status"]),
                start_time=d["start_time"], end_time=d["end_time"],
                tags={str(k): str(v) for k, v in d["tags"].items()},
                params={str(k): str(v) for k, v in d["params"].items()},
                metrics={str(k): float(v) for k, v in d["metrics"].items()},
                history={str(k): tuple((int(s), float(v)) for s, v in pts) for k, pts in d["history"].items()},
            ))
        except (AttributeError, TypeError, ValueError) as e:
            raise RecordsError(f"{path}, line {i + 1} (run {d.get('run_id')!r}): malformed field: "
                               f"{type(e).__name__}: {e}") from e
    ids = [r.run_id for r in out]
    if len(set(ids)) != len(ids):
        raise RecordsError(f"{path}: run ids repeated: {sorted({x for x in ids if ids.count(x) > 1})[:5]}")
    return out
