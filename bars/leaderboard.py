"""Leaderboards from MLflow's records: ``results/<d>.md``, ``results/<d>.csv``, ``results/index.html`` + PNG plots.

``build(records)`` is a pure function of the runs (:class:`bars.records.RunRecord`) -> one :class:`Board` per
dataset; ``bars.leaderboard_render`` writes them (``write_board`` / ``write_index``: atomic writes, deterministic
for the same records).
``main()`` is the ``bars leaderboard`` Hydra shell; ``run(cfg)`` is what it calls.

What goes in (all from MLflow, nothing parsed from logs):
- rows: runs tagged ``stage=final`` that FINISHED, one per (model, seed) — the most recent when a seed was run
  more than once. Test AUC/logloss mean ± sample std over those seeds (n shown); the run whose seed equals the
  dataset's ``protocol.seed`` param (``data.protocol_seed`` for runs recorded before it moved; the number
  comparable to BARS); parameter count; seconds per epoch
  and samples/s (mean of the per-epoch ``samples_per_s`` history) with the device tag.
- significance: a paired t-test (``scipy.stats.ttest_rel``) of each model's test AUC against the best model's
  (highest mean) over the seeds both ran; p >= alpha means not significantly different; fewer than 2 matched
  seeds gives ``n/a``.
- sweeps: child runs tagged ``stage=trial``: trials run (distinct trial numbers), and best-so-far validation
  AUC versus trial number over completed trials.
- tuning compute (:class:`Tuning`, per row): the compute the row's sweep used, summed over its trial runs'
  ``compute_*`` metrics (bars.compute: training samples, CPU-seconds, wall and device seconds), and the tuning-budget
  curve: best-so-far validation AUC after each trial against trials, cumulative training samples and CPU-seconds.
  Trial runs recorded before sweeps measured compute have none: the column shows ``n/a`` (``≥`` when only some
  trials have records: a lower bound).
- BARS: the published value (bars/reference/bars_published.csv and, for the four sequential boards,
  bars_published_seq.csv with its gAUC: both shipped with the package) where the runs recorded a BARS split (``data.bars_split`` in conf/data/<d>.yaml) and a BARS model name (``model.bars_name``
  in conf/model/<id>.yaml), and the protocol-seed run minus it. Rows are named by the model config's id
  (the ``model`` tag).
- presets: final runs made from a preset (tag ``preset``, e.g. ``make final ... PRESET=bars``) form their own
  row, labelled ``<model id> [<preset>]`` (``<model id> [<preset>, tuned]`` when they replay the best of a sweep
  started from the preset); its published value is the one of the README the preset was transcribed from (tag
  ``preset_source`` = the ``source`` column), and its best config is the preset file (or that sweep's).
- compressed runs: ``bars compress`` child runs (``stage=compress``) of a final run on the board form their own row
  beside it, ``<row of the source> [compressed <rank=k | ratio=r>]`` (test metrics and parameters of the
  compressed model; no published value).
- numeric switches: final runs with ``train.precision=bf16`` or ``train.tf32=true`` form their own row, ``<model id>
  [bf16]`` (``[<preset>, tuned, tf32]``): never averaged with float32 runs of the model.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bars import compute, metrics
from bars.leaderboard_render import fmt_pm, plot_names, sig_label, write_board, write_index
from bars.published import (
    SEQ_BOARD_NAMES,
    bars_model_of,
    bars_split_of,
    load_published,
    recorded_value,
)

PROTOCOL_NOTES = {  # data.protocol_name -> what a reader of the board must know
    "bars-seq": ("Protocol bars-seq: validated on the TEST set (valid = test: early stopping, LR decay and the "
                 "checkpoint follow test metrics), as BARS's sequential boards did; comparable to BARS, optimistic "
                 "as an estimate."),
    "holdout": ("Protocol holdout: validated on a held-out part of train; the test set is used once, for the "
                "reported numbers."),
}


def numeric_switches(params: Mapping[str, str]) -> list[str]:
    """The switches a run recorded that change its arithmetic from FuxiCTR's float32 (``bf16``: train.precision,
    ``tf32``: train.tf32); empty for a float32 run, and for runs recorded before the switches existed."""
    out = []
    precision = recorded_value(params, "train.precision")
    if precision not in (None, "fp32"):
        out.append(precision)
    if str(recorded_value(params, "train.tf32")).lower() == "true":
        out.append("tf32")
    return out


def row_key(rec, switches: bool = True) -> str:
    """The leaderboard row a final run belongs to: its model id, or ``<model id> [<preset>]`` for a preset run
    (``[<preset>, tuned]`` when it replays the best of a sweep started from the preset), with the run's numeric
    switches (:func:`numeric_switches`) in the brackets unless ``switches=False``: ``dcn [bf16]``, ``dcn [bars, bf16]``."""
    if rec.stage == "compress":  # bars compress: beside the row of its source run (source_row tag)
        return f"{rec.tags.get('source_row') or rec.model} [compressed {rec.tags.get('compression', '?')}]"
    preset = rec.tags.get("preset")
    labels = ([preset, "tuned"] if rec.tags.get("sweep_study") else [preset]) if preset else []
    labels += numeric_switches(rec.params) if switches else []
    pid = Path(rec.tags["preset_file"]).stem if preset and rec.tags.get("preset_file") else rec.model
    return f"{pid} [{', '.join(labels)}]" if labels else pid


def _method_columns(runs: list) -> dict[str, Any]:
    """A method row's own columns (bars.methods): its ``method`` tag and the mean kept fraction / count / total
    (``features_kept``, ``features_kept_count``, ``features_total`` metrics of OptFS; DNIS's
    ``embedding_params_kept``...)."""
    method = next((r.tags["method"] for r in runs if r.tags.get("method")), None)
    if method is None:
        return {}
    def mean_of(key: str) -> float | None:
        return _mean([r.metrics[key] for r in runs if key in r.metrics])
    what = _KEPT_METRICS.get(method, "features")  # DNIS: embedding_params_kept / _kept_count / _total; OptInter: pairs_kept (not naive)
    out = {"method": method, "kept_fraction": mean_of(f"{what}_kept"), "kept_count": mean_of(f"{what}_kept_count"),
           "kept_total": mean_of(f"{what}_total")}
    second = _KEPT2_METRICS.get(method)  # OptEmbed: embedding_rows_kept / _kept_count / _total
    if second is not None:
        out.update({"kept2_fraction": mean_of(f"{second}_kept"), "kept2_count": mean_of(f"{second}_kept_count"),
                    "kept2_total": mean_of(f"{second}_total")})
    return out


def _size_columns(runs: list) -> dict[str, Any]:
    """The size columns (docs/methods.md "Size"): the mean over the seeds of ``model_bytes`` (the stored model:
    a plain run's best checkpoint, a method run's baked model) and of the effective parameters
    (``params_effective`` of a method run: the baked backbone's parameters less the table entries its masks zero;
    a plain run's ``n_params``, all of which it uses). None where no run recorded it."""
    nbytes = _mean([r.metrics["model_bytes"] for r in runs if "model_bytes" in r.metrics])
    eff = _mean([r.metrics.get("params_effective", r.metrics["n_params"]) for r in runs
                 if "params_effective" in r.metrics or ("n_params" in r.metrics and not r.tags.get("method"))])
    return {"model_bytes": nbytes, "params_effective": eff}


# a method's kept metrics, by the prefix of their names (default ``features``: OptFS)
_KEPT_METRICS = {"dnis": "embedding_params", "optembed": "embedding_params", "optinter": "pairs"}
# a method's second kept figure, shown as its own column (``Kept, 2nd``)
_KEPT2_METRICS = {"optembed": "embedding_rows"}


# ------------------------------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class FinalRun:
    seed: int
    run_id: str
    test: dict[str, float]  # test_<m> of every registered metric the run recorded, by metric name
    val_auc_curve: tuple[tuple[int, float], ...]
    train_loss_curve: tuple[tuple[int, float], ...]

    @property
    def test_auc(self) -> float | None:
        return self.test.get("auc")

    @property
    def test_logloss(self) -> float | None:
        return self.test.get("logloss")


@dataclass(frozen=True)
class Tuning:
    """The compute a row's sweep used and its tuning-budget curve (from the trial runs' ``compute_*`` metrics)."""

    trials: int  # distinct trial numbers
    recorded: int  # of them with compute records (0: a sweep recorded before compute was measured)
    totals: dict[str, float]  # bars.compute.KEYS summed over the recorded trials
    # after each trial (by trial number) once one completed: (trial number, trials so far, cumulative training
    # samples, cumulative CPU-seconds, best validation AUC so far); compute None where a trial has no record
    curve: tuple[tuple[int, int, float | None, float | None, float], ...] = ()

    @property
    def train_samples(self) -> float | None:
        return self.totals.get(compute.TRAIN_SAMPLES) if self.recorded else None

    @property
    def cpu_s(self) -> float | None:
        return self.totals.get(compute.CPU_S) if self.recorded else None

    @property
    def device_s(self) -> float | None:
        return self.totals.get(compute.DEVICE_S) if self.recorded else None

    @property
    def wall_s(self) -> float | None:
        return self.totals.get(compute.WALL_S) if self.recorded else None


def tuning_of(trial_runs: Sequence) -> Tuning | None:
    """:class:`Tuning` over one row's trial runs (the newest run of each trial number); None without trials."""
    latest: dict[Any, Any] = {}
    for t in sorted(trial_runs, key=lambda t: (t.start_time or 0, t.run_id)):
        latest[t.tags.get("trial_number", t.run_id)] = t
    if not latest:
        return None
    order = sorted(latest.values(), key=lambda t: (_int(t.tags.get("trial_number")) is None,
                                                   _int(t.tags.get("trial_number")) or 0, t.start_time or 0))
    recorded = [t for t in order if compute.TRAIN_SAMPLES in t.metrics]
    totals = compute.totals(t.metrics for t in recorded)
    samples: float | None = 0.0
    cpu: float | None = 0.0
    best: float | None = None
    curve = []
    for i, t in enumerate(order, 1):
        has = compute.TRAIN_SAMPLES in t.metrics
        samples = samples + t.metrics[compute.TRAIN_SAMPLES] if has and samples is not None else None
        cpu = cpu + t.metrics.get(compute.CPU_S, 0.0) if has and cpu is not None else None
        val = trial_value(t)
        if trial_state(t) == "complete" and val is not None and (best is None or val > best):
            best = val
        if best is not None:
            curve.append((_int(t.tags.get("trial_number")) or 0, i, samples, cpu, best))
    return Tuning(trials=len(order), recorded=len(recorded), totals=totals, curve=tuple(curve))


@dataclass(frozen=True)
class Row:
    dataset: str
    model: str
    runs: tuple[FinalRun, ...]  # sorted by seed
    n: int
    test_mean: dict[str, float | None]  # metric name -> mean over the seeds (every metric of the board)
    test_std: dict[str, float | None]  # metric name -> sample std (None with fewer than two seeds)
    protocol_seed: int | None
    protocol_run_id: str | None
    protocol_test_auc: float | None
    protocol_test_logloss: float | None
    bars_model: str | None
    bars_auc: float | None
    bars_logloss: float | None
    bars_source: str | None
    diff_auc: float | None
    diff_logloss: float | None
    n_params: int | None
    seconds_per_epoch: float | None
    samples_per_s: float | None
    device: str
    trials: int
    trial_states: tuple[tuple[str, int], ...]
    best_config: str | None  # path relative to the project root, e.g. sweeps/dcn__d/best.overrides
    significance: str = "n/a"  # best | ns (not significantly different from best) | sig | n/a
    p_value: float | None = None
    n_paired: int = 0
    preset: str | None = None  # runs made from a preset (tag preset), e.g. "bars"
    bars_gauc: float | None = None  # the sequential boards' published test gAUC
    diff_gauc: float | None = None  # the protocol-seed run's test gAUC minus it
    # a method row (bars.methods, e.g. deepfm+optfs): the mean over its seeds of the fraction of what the method
    # selects over that it keeps (OptFS: feature values), and of the count kept / the total
    method: str | None = None
    kept_fraction: float | None = None
    kept_count: float | None = None
    kept_total: float | None = None
    # a method's second figure where it has one (OptEmbed: embedding rows kept beside the parameters kept)
    kept2_fraction: float | None = None
    kept2_count: float | None = None
    kept2_total: float | None = None
    tuning: Tuning | None = None  # the compute the row's sweep used (None: no sweep)
    # size (_size_columns): mean serialised model bytes and effective parameters over the seeds
    model_bytes: float | None = None
    params_effective: float | None = None

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(r.run_id for r in self.runs)

    @property
    def test_auc_mean(self) -> float | None:
        return self.test_mean.get("auc")

    @property
    def test_auc_std(self) -> float | None:
        return self.test_std.get("auc")

    @property
    def test_logloss_mean(self) -> float | None:
        return self.test_mean.get("logloss")

    @property
    def test_logloss_std(self) -> float | None:
        return self.test_std.get("logloss")

    @property
    def seeds(self) -> tuple[int, ...]:
        return tuple(r.seed for r in self.runs)


@dataclass(frozen=True)
class Provenance:
    bars_versions: tuple[str, ...]
    git_commits: tuple[str, ...]
    data_fingerprints: tuple[str, ...]
    hardware: tuple[str, ...]
    newest_run_end: str | None  # ISO time (UTC) of the newest run included: deterministic for the same records


@dataclass(frozen=True)
class Board:
    dataset: str
    bars_split: str | None
    rows: tuple[Row, ...]  # best mean test AUC first
    sweeps: dict[str, tuple[tuple[int, float], ...]] = field(default_factory=dict)  # study -> (trial, best so far)
    provenance: Provenance | None = None
    alpha: float = 0.05
    metrics: tuple[str, ...] = ("auc", "logloss")  # metric columns the final runs recorded (incl. <metric>_<task>)
    protocol: str | None = None  # data.protocol_name of the runs (bars-seq, holdout); the board is <data>.<protocol>
    # the metric column rows are ranked by (mean over seeds, best first) and the paired t-test compares: auc, or on a
    # multi-task dataset auc_<main task> (train.monitor_task recorded by the runs; rank_metric_of)
    rank_metric: str = "auc"
    # (row, its sweep's compute budget as the user wrote it: the ``compute_budget`` tag of the sweep's MLflow parent
    # run) for rows whose sweep had one (sweep.budget; every row of a `bars board` has the board's)
    tuning_budgets: tuple[tuple[str, str], ...] = ()

    @property
    def protocol_note(self) -> str | None:
        return PROTOCOL_NOTES.get(self.protocol, f"protocol {self.protocol}") if self.protocol else None


# ------------------------------------------------------------------------------------------------ pure build
def _int(value: Any) -> int | None:
    try:
        return int(float(value))
    except (TypeError, ValueError):
        return None


def _mean(values: Sequence[float]) -> float | None:
    return float(sum(values) / len(values)) if values else None


def _std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (ddof=1); None with fewer than two values."""
    if len(values) < 2:
        return None
    m = sum(values) / len(values)
    return float(math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)))


def _curve(rec, key: str) -> tuple[tuple[int, float], ...]:
    """Per-epoch values of a metric: the first value logged at each step >= 1 (bars.run logs the run's final
    ``val_*`` summary again at the last epoch's step, after that epoch's own value)."""
    out: dict[int, float] = {}
    for s, v in rec.history.get(key, ()):
        if s >= 1 and s not in out:
            out[s] = v
    return tuple(sorted(out.items()))


def _samples_per_s(rec) -> float | None:
    """Training throughput of a run: its ``samples_per_s_mean`` metric, else the mean of the per-epoch values."""
    if "samples_per_s_mean" in rec.metrics:
        return rec.metrics["samples_per_s_mean"]
    return _mean([v for _, v in _curve(rec, "samples_per_s")])


def protocol_seed_param(params: Mapping[str, str]) -> str | None:
    """The protocol seed a run recorded: ``protocol.seed``, or ``data.protocol_seed`` for runs recorded before
    the protocol block moved out of the data config."""
    return params.get("protocol.seed", params.get("data.protocol_seed"))


def trial_state(rec) -> str:
    """complete | pruned | failed | running, from the trial's state tag, else its MLflow status."""
    for key in ("trial_state", "state", "optuna_state"):
        value = rec.tags.get(key)
        if value:
            v = value.lower()
            return {"completed": "complete", "fail": "failed"}.get(v, v)
    return {"FINISHED": "complete", "FAILED": "failed", "KILLED": "failed"}.get(rec.status, "running")


def _study_of(rec) -> str:
    """The Optuna study a run belongs to: its ``sweep_study`` tag, else ``<model>__<data>``."""
    data = rec.tags.get("data") or rec.params.get("data.name") or rec.experiment
    return rec.tags.get("sweep_study") or f"{rec.model}__{data}"


def trial_value(rec) -> float | None:
    """The validation AUC a trial reports: MLflow's latest ``val_auc``, which bars.run logs last (at step = last
    epoch) as the best epoch's value."""
    return rec.metrics.get("val_auc", rec.metrics.get("monitor"))  # a multi-task trial: its monitor (val_auc_<task>)


def hardware_of(rec) -> str:
    """'<device> (<hardware tag>)' from run tags: a GPU name or CPU model/cores when tracking recorded them."""
    device = rec.tags.get("device", "unknown")
    for key in ("hardware", "gpu_name", "gpu", "cpu_model", "cpu"):
        if rec.tags.get(key):
            return f"{device} ({rec.tags[key]})"
    return device


def _iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def rank_metric_of(board_metrics: Sequence[str], main_tasks: Iterable[str]) -> str:
    """The column a board ranks by: ``auc_<task>`` for the main task its runs recorded (``train.monitor_task``,
    on a multi-task dataset) when some run has it, else ``auc``; a board with per-task AUC only and no main task
    ranks by the first of them."""
    for task in sorted(set(main_tasks)):
        if f"auc_{task}" in board_metrics:
            return f"auc_{task}"
    if "auc" in board_metrics:
        return "auc"
    return next((m for m in board_metrics if metrics.parse_column(m)[0] == "auc"), "auc")


def _significance(rows: list[Row], alpha: float, metric: str = "auc") -> list[Row]:
    from dataclasses import replace

    from scipy import stats

    ranked = [r for r in rows if r.test_mean.get(metric) is not None]
    if not ranked:
        return rows
    best = ranked[0]
    best_by_seed = {r.seed: r.test[metric] for r in best.runs if r.test.get(metric) is not None}
    out = []
    for r in rows:
        if r is best:
            out.append(replace(r, significance="best", n_paired=len(best_by_seed)))
            continue
        mine = {x.seed: x.test[metric] for x in r.runs if x.test.get(metric) is not None}
        seeds = sorted(set(mine) & set(best_by_seed))
        if len(seeds) < 2:
            out.append(replace(r, significance="n/a", n_paired=len(seeds)))
            continue
        a = [best_by_seed[s] for s in seeds]
        b = [mine[s] for s in seeds]
        if all(x == y for x, y in zip(a, b)):
            p = 1.0
        else:
            p = float(stats.ttest_rel(a, b).pvalue)
            if math.isnan(p):
                p = 1.0
        out.append(replace(r, significance="ns" if p >= alpha else "sig", p_value=p, n_paired=len(seeds)))
    return out


def board_key(rec) -> str:
    """The board a run belongs to: its dataset, with ``.<protocol>`` when it records data.protocol_name."""
    data = rec.tags.get("data") or rec.params.get("data.name") or rec.experiment
    protocol = recorded_value(rec.params, "data.protocol_name")
    return f"{data}.{protocol}" if protocol else data


def merge_records(store: Sequence, files: Mapping[str, Sequence]) -> list:
    """The store's runs plus those of record files (``{label: records}``): a run (by id) found in several places
    must be the same record in each (the store's copy of a run still running may be newer: it is kept); the
    union, sorted by experiment then run id."""
    by_id = {r.run_id: r for r in store}
    seen: dict[str, str] = {r.run_id: "the store" for r in store}
    for label, recs in files.items():
        for r in recs:
            if r.run_id in by_id:
                if by_id[r.run_id] != r and not (seen[r.run_id] == "the store" and by_id[r.run_id].status == "RUNNING"):
                    raise ValueError(f"run {r.run_id} differs between {seen[r.run_id]} and {label}: a record file "
                                     f"must hold the runs as recorded")
                continue
            by_id[r.run_id] = r
            seen[r.run_id] = label
    return sorted(by_id.values(), key=lambda r: (r.experiment, r.run_id))


def build(records: Iterable, *, alpha: float = 0.05, published: Mapping | None = None,
          datasets: Iterable[str] | None = None) -> dict[str, Board]:
    """MLflow records -> {dataset: Board}. Pure: the same records give the same boards."""
    published = load_published() if published is None else published
    pub_models = sorted({m for _, m in published})
    by_source = {p.source: p for p in published.values()}
    by_data: dict[str, list] = {}
    for rec in records:  # one board per dataset and protocol (data.protocol_name, e.g. bars-seq / holdout)
        by_data.setdefault(board_key(rec), []).append(rec)
    wanted = None if datasets is None else set(datasets)
    boards: dict[str, Board] = {}
    for key in sorted(by_data):
        recs = by_data[key]
        data, _, protocol = key.partition(".")
        if wanted is not None and data not in wanted and key not in wanted:
            continue
        finals = [r for r in recs if r.stage == "final" and r.status == "FINISHED"]
        final_ids = {r.run_id for r in finals}
        finals += [r for r in recs if r.stage == "compress" and r.status == "FINISHED"
                   and r.tags.get("source_run") in final_ids]
        trials = [r for r in recs if r.stage == "trial"]
        budgets: dict[str, str] = {}  # study -> its compute budget (the newest parent run of the study says)
        for p in sorted((r for r in recs if r.stage == "sweep" and r.tags.get("compute_budget")),
                        key=lambda r: (r.start_time or 0, r.run_id)):
            budgets[p.tags.get("sweep_study", "")] = p.tags["compute_budget"]
        row_budgets: list[tuple[str, str]] = []
        if not finals:
            continue
        splits = sorted({bars_split_of(r.params) for r in finals} - {None})
        if len(splits) > 1:
            raise ValueError(f"the final runs of {data} record different BARS splits {splits} (data.bars_split); "
                             f"a board compares with one split")
        split = splits[0] if splits else None
        # the registered metrics any final run of this board recorded (test_<m>), in registry order
        # (per-task columns <metric>_<task> after them: bars.metrics.metric_columns)
        board_metrics = tuple(metrics.metric_columns({k for r in finals for k in r.metrics}))
        rank = rank_metric_of(board_metrics, {t for r in finals if (t := recorded_value(r.params, "train.monitor_task"))})
        rows: list[Row] = []
        for model in sorted({row_key(r) for r in finals}):
            latest: dict[int, Any] = {}
            for r in sorted((r for r in finals if row_key(r) == model),
                            key=lambda r: (r.start_time or 0, r.run_id)):
                seed = _int(r.tags.get("seed", r.params.get("seed")))
                if seed is not None:
                    latest[seed] = r  # the most recent run of a seed wins
            runs = [latest[s] for s in sorted(latest)]
            final_runs = tuple(FinalRun(seed=_int(r.tags.get("seed", r.params.get("seed"))), run_id=r.run_id,
                                test={m: r.metrics[f"test_{m}"] for m in board_metrics
                                      if f"test_{m}" in r.metrics},
                                val_auc_curve=_curve(r, "val_auc"), train_loss_curve=_curve(r, "train_loss"))
                       for r in runs)
            values = {m: [x.test[m] for x in final_runs if m in x.test] for m in board_metrics}
            aucs = values.get("auc", [])
            pseeds = {_int(protocol_seed_param(r.params)) for r in runs} - {None}
            pseed = min(pseeds) if pseeds else None
            protocol_run = next((x for x in final_runs if x.seed == pseed), None)
            preset = runs[0].tags.get("preset") if runs else None
            compressed = bool(runs) and runs[0].stage == "compress"
            if compressed or (runs and runs[0].tags.get("method")):  # a method row is not BARS's model
                pub = None
            elif preset:  # the README the preset was transcribed from
                pub = by_source.get(runs[0].tags.get("preset_source", "")) if split else None
            else:
                bmodel = bars_model_of(runs[0].model, runs[0].params, pub_models) if split and runs else None
                pub = (published.get((split, bmodel)) or published.get((split, SEQ_BOARD_NAMES.get(bmodel, ""))))\
                    if split and bmodel else None
            diff_auc = diff_ll = diff_gauc = None
            if pub and protocol_run is not None:
                if pub.gauc is not None and protocol_run.test.get("gauc") is not None:
                    diff_gauc = protocol_run.test["gauc"] - pub.gauc
                if protocol_run.test_auc is not None:
                    diff_auc = protocol_run.test_auc - pub.auc
                if protocol_run.test_logloss is not None:
                    diff_ll = protocol_run.test_logloss - pub.logloss
            nparams = [_int(r.metrics["n_params"]) for r in runs if "n_params" in r.metrics]
            epoch_seconds = [r.metrics["seconds_per_epoch"] for r in runs if "seconds_per_epoch" in r.metrics]
            throughputs = [m for m in (_samples_per_s(r) for r in runs) if m is not None]
            # the sweep the final runs replayed (their sweep_study tag), else <model>__<data>
            studies = sorted({r.tags["sweep_study"] for r in runs if r.tags.get("sweep_study")})
            study = studies[-1] if studies else f"{row_key(runs[0], switches=False) if runs else model}__{data}"
            base = runs[0].model if runs else model  # the model id trials are tagged with
            mtrials = [t for t in trials if t.model == base and _study_of(t) in (studies or [study])]
            numbers: dict[str, str] = {}
            for t in sorted(mtrials, key=lambda t: (t.start_time or 0, t.run_id)):
                numbers[t.tags.get("trial_number", t.run_id)] = trial_state(t)
            states = tuple((s, sum(1 for v in numbers.values() if v == s))
                           for s in sorted(set(numbers.values())))
            if study in budgets and (numbers or studies):
                row_budgets.append((model, budgets[study]))
            rows.append(Row(
                dataset=data, model=model, runs=final_runs, n=len(aucs),
                test_mean={m: _mean(v) for m, v in values.items()},
                test_std={m: _std(v) for m, v in values.items()},
                protocol_seed=pseed, protocol_run_id=protocol_run.run_id if protocol_run else None,
                protocol_test_auc=protocol_run.test_auc if protocol_run else None,
                protocol_test_logloss=protocol_run.test_logloss if protocol_run else None,
                bars_model=pub.model if pub else None, bars_auc=pub.auc if pub else None,
                bars_logloss=pub.logloss if pub else None, bars_source=pub.source if pub else None,
                diff_auc=diff_auc, diff_logloss=diff_ll,
                n_params=nparams[0] if nparams else None,
                seconds_per_epoch=_mean(epoch_seconds), samples_per_s=_mean(throughputs),
                device=", ".join(sorted({r.tags.get("device", "unknown") for r in runs})),
                trials=len(numbers), trial_states=states,
                best_config=(f"sweeps/{study}/best.overrides" if (numbers or studies) else
                             runs[0].tags.get("preset_file") if preset else None),
                preset=preset, bars_gauc=pub.gauc if pub else None, diff_gauc=diff_gauc,
                **_method_columns(runs),
                tuning=tuning_of(mtrials),
                **_size_columns(runs),
            ))
        rows.sort(key=lambda r: (-(v if (v := r.test_mean.get(rank)) is not None else -math.inf), r.model))
        rows = _significance(rows, alpha, rank)
        # sweeps: best-so-far validation AUC over completed trials, by trial number, per study
        sweeps: dict[str, tuple[tuple[int, float], ...]] = {}
        for study in sorted({_study_of(t) for t in trials}):
            done = []
            for t in trials:
                num = _int(t.tags.get("trial_number"))
                val = trial_value(t)
                if _study_of(t) == study and num is not None and val is not None and trial_state(t) == "complete":
                    done.append((num, val))
            best, pts = -math.inf, []
            for num, val in sorted(done):
                best = max(best, val)
                pts.append((num, best))
            if pts:
                sweeps[study] = tuple(pts)
        used = [r for r in finals if r.run_id in {i for row in rows for i in row.run_ids}]
        used_all = used + trials
        prov = Provenance(
            bars_versions=tuple(sorted({r.tags.get("bars_version", "unknown") for r in used})),
            git_commits=tuple(sorted({r.tags.get("git_commit", "unknown")
                                      + (" (dirty)" if r.tags.get("git_dirty") == "true" else "")
                                      for r in used})),
            data_fingerprints=tuple(sorted({r.tags.get("data_fingerprint", "unknown") for r in used})),
            hardware=tuple(sorted({hardware_of(r) for r in used})),
            newest_run_end=_iso(max((r.end_time for r in used_all if r.end_time), default=None)),
        )
        boards[key] = Board(dataset=key, bars_split=split, rows=tuple(rows), sweeps=sweeps, provenance=prov,
                            tuning_budgets=tuple(sorted(row_budgets)),
                            alpha=alpha, metrics=board_metrics, protocol=protocol or None, rank_metric=rank)
    return boards


def uri_label(uri: str, root: Path) -> str:
    """The tracking URI as shown in the provenance: a SQLite file inside the project relative to it; any other
    URI without its password."""
    from bars.config import safe_url

    prefix = "sqlite:///"
    if uri.startswith(prefix):
        p = uri[len(prefix):]
        rel = _rel(Path(p), root)
        return uri if rel == str(Path(p)) else prefix + rel
    return safe_url(uri)


def _rel(path: Path, root: Path) -> str:
    """``path`` relative to ``root`` when inside it, else as given."""
    try:
        return str(Path(path).resolve().relative_to(Path(root).resolve()))
    except ValueError:
        return str(path)


def generate(uri: str, out_dir: Path, *, datasets: Sequence[str] | None = None, alpha: float = 0.05,
             root: Path | None = None, link_prefix: str | None = None, records: Sequence[str | Path] = (),
             save_records: bool = False) -> dict[str, Board]:
    """Read MLflow (and the run-record files ``records``, merged in: :func:`merge_records`), write results for
    ``datasets`` (all when None) and index.html over all datasets. ``save_records``: also write the runs of each
    written board to ``<out_dir>/<board>_runs.jsonl.gz`` (:func:`bars.records.dump_records`). With record files
    a SQLite store that does not exist is read as empty."""
    from bars.records import dump_records, list_experiments, load_runs, read_records
    from bars.tracking import resolve_uri, sqlite_path

    out_dir = Path(out_dir)
    root = Path(root) if root is not None else out_dir.parent
    if link_prefix is None:
        rel = os.path.relpath(root, out_dir)
        link_prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
    files = {_rel(Path(f), root): read_records(f) for f in records}  # all read before anything is written
    db = sqlite_path(resolve_uri(uri))
    if files and db is not None and not db.exists():
        label = " + ".join(f"records {f}" for f in files)
        store: list = []
    else:
        label = uri_label(uri, root) + "".join(f" + records {f}" for f in files)
        store = load_runs(uri, list_experiments(uri))
    runs = merge_records(store, files)
    boards = build(runs, alpha=alpha)
    selected = sorted(boards) if datasets is None else list(datasets)
    missing = [d for d in selected if d not in boards]
    if missing:
        raise SystemExit(f"bars leaderboard: no finished final runs (stage=final) for {missing} at {label}; "
                         f"datasets with final runs: {sorted(boards)}. Run `make final MODEL=<m> DATA=<d>` first.")
    for d in selected:
        write_board(boards[d], out_dir, label, link_prefix=link_prefix)
        if save_records:
            dump_records([r for r in runs if board_key(r) == d], out_dir / f"{d}_runs.jsonl.gz")
    write_index(boards, out_dir, label)
    return boards


def run(cfg) -> dict[str, Board]:
    """What ``bars leaderboard`` does with its composed config."""
    from bars.fileio import remove_stale_temps
    from bars.validate import validate

    validate(cfg, "leaderboard")  # before anything is read or written
    lb = cfg.leaderboard
    data = lb.get("data")
    datasets = None if data in (None, "", "all") else [str(x) for x in (data if not isinstance(data, str)
                                                                        else data.split(","))]
    out_dir = Path(str(lb.get("out_dir") or cfg.paths.results))
    remove_stale_temps(out_dir)  # left by a leaderboard run that was killed while writing
    root = Path(str(cfg.paths.root))
    recs = lb.get("records") or []
    recs = [x for x in recs.split(",") if x] if isinstance(recs, str) else [str(x) for x in recs]
    files = [p if (p := Path(f)).is_absolute() else root / p for f in recs]
    boards = generate(str(cfg.tracking.uri), out_dir, datasets=datasets, alpha=float(lb.get("alpha", 0.05)),
                      root=root, records=files, save_records=bool(lb.get("save_records", False)))
    for d in sorted(boards) if datasets is None else datasets:
        b = boards[d]
        print(f"{d}: {len(b.rows)} model{'' if len(b.rows) == 1 else 's'} -> {out_dir / (d + '.md')}, {out_dir / (d + '.csv')}")
        for r in b.rows:
            print(f"  {r.model:<14} test AUC {fmt_pm(r.test_auc_mean, r.test_auc_std)} (n={r.n})  "
                  f"{sig_label(r)}")
    print(f"index: {out_dir / 'index.html'}")
    return boards


def main() -> int:
    """``bars leaderboard [leaderboard.data=<d>]``."""
    from bars.config import hydra_command
    from bars.records import RecordsError
    from bars.validate import ConfigError

    return hydra_command("leaderboard", lambda cfg, _: run(cfg) and 0, (ConfigError, RecordsError))


__all__ = [
    "Board", "FinalRun", "Provenance", "Row", "Tuning", "board_key", "build", "generate", "hardware_of", "main",
    "merge_records", "plot_names", "protocol_seed_param", "run", "trial_state", "trial_value", "tuning_of",
    "uri_label", "write_board", "write_index",
]

if __name__ == "__main__":
    raise SystemExit(main())
