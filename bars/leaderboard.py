"""Leaderboards from MLflow's records: ``results/<d>.md``, ``results/<d>.csv``, ``results/index.html`` + PNG plots.

``build(records)`` is a pure function of the runs (:class:`bars.records.RunRecord`) -> one :class:`Board` per
dataset; ``write_board`` / ``write_index`` render them (atomic writes, deterministic for the same records).
``main()`` is the ``bars leaderboard`` Hydra shell; ``run(cfg)`` is what it calls.

What goes in (all from MLflow, nothing parsed from logs):
- rows: runs tagged ``stage=final`` that FINISHED, one per (model, seed) — the most recent when a seed was run
  more than once. Test AUC/logloss mean ± sample std over those seeds (n shown); the run whose seed equals the
  dataset's ``data.protocol_seed`` param (the number comparable to BARS); parameter count; seconds per epoch
  and samples/s (mean of the per-epoch ``samples_per_s`` history) with the device tag.
- significance: a paired t-test (``scipy.stats.ttest_rel``) of each model's test AUC against the best model's
  (highest mean) over the seeds both ran; p >= alpha means not significantly different; fewer than 2 matched
  seeds gives ``n/a``.
- sweeps: child runs tagged ``stage=trial``: trials run (distinct trial numbers), and best-so-far validation
  AUC versus trial number over completed trials.
- BARS: the published value (bars/reference/bars_published.csv, shipped with the package) where the dataset
  maps to a BARS split (``BARS_SPLITS``, explicit), and the protocol-seed run minus it.
- presets: final runs made from a preset (tag ``preset``, e.g. ``make final ... PRESET=bars``) form their own
  row, labelled ``<model id> [<preset>]`` (``<model id> [<preset>, tuned]`` when they replay the best of a sweep
  started from the preset); its published value is the one of the README the preset was transcribed from (tag
  ``preset_source`` = the ``source`` column), and its best config is the preset file (or that sweep's).
"""

from __future__ import annotations

import csv
import html
import io
import math
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources
from pathlib import Path
from typing import Any

from bars import __version__

# Our dataset config names -> BARS split ids (explicit: a wrong mapping would compare against the wrong split).
BARS_SPLITS: dict[str, str] = {
    "frappe_x1": "Frappe_x1",
    "movielenslatest_x1": "MovielensLatest_x1",
    "movielens_latest_x1": "MovielensLatest_x1",
    "movielens_x1": "MovielensLatest_x1",
    "criteo_x1": "Criteo_x1",
    "avazu_x1": "Avazu_x1",
    "criteo_x4_001": "Criteo_x4_001",
    "criteo_x4_002": "Criteo_x4_002",
    "avazu_x4_001": "Avazu_x4_001",
    "avazu_x4_002": "Avazu_x4_002",
}
# Our registry keys -> BARS model names where they differ by more than letter case.
BARS_MODELS: dict[str, str] = {
    "widedeep": "WideDeep",
    "wide_deep": "WideDeep",
    "autoint_plus": "AutoInt+",
    "autointplus": "AutoInt+",
    "autoint+": "AutoInt+",
    "dcnv2": "DCNv2",
    "dcnv2_stacked": "DCNv2",
    "dcnv2_parallel": "DCNv2",
    "xdeepfm": "xDeepFM",
    "finalmlp": "FinalMLP",
    "crossnetv2": "CrossNetv2",
}
TRIAL_STATES = ("complete", "pruned", "failed")
PUBLISHED_RESOURCE = ("reference", "bars_published.csv")


# --------------------------------------------------------------------------------------------- published facts
@dataclass(frozen=True)
class Published:
    split: str
    model: str
    auc: float
    logloss: float
    source: str


def load_published() -> dict[tuple[str, str], Published]:
    """(BARS split, BARS model) -> published test AUC/logloss, from the CSV shipped inside the package."""
    text = resources.files("bars").joinpath(*PUBLISHED_RESOURCE).read_text(encoding="utf-8")
    out: dict[tuple[str, str], Published] = {}
    for row in csv.DictReader(io.StringIO(text)):
        p = Published(row["dataset"], row["model"], float(row["auc"]), float(row["logloss"]), row["source"])
        out[(p.split, p.model)] = p
    return out


def bars_model_name(model: str, published_models: Iterable[str], params: Mapping[str, str] | None = None
                    ) -> str | None:
    """Our model key -> the BARS model name: the explicit table (autoint is AutoInt+ unless its run had
    ``model.params.use_dnn=False``; dcnv2 with ``model_structure=crossnet_only`` is CrossNetv2), else a
    case-insensitive exact match."""
    key = model.lower()
    params = params or {}
    if key == "autoint":
        return "AutoInt" if str(params.get("model.params.use_dnn", "True")).lower() == "false" else "AutoInt+"
    if key == "dcnv2" and params.get("model.params.model_structure") == "crossnet_only":
        return "CrossNetv2"
    if key in BARS_MODELS:
        return BARS_MODELS[key]
    for name in published_models:
        if name.lower() == key:
            return name
    return None


# ------------------------------------------------------------------------------------------------- data model
@dataclass(frozen=True)
class FinalRun:
    seed: int
    run_id: str
    test_auc: float | None
    test_logloss: float | None
    val_auc_curve: tuple[tuple[int, float], ...]
    train_loss_curve: tuple[tuple[int, float], ...]


@dataclass(frozen=True)
class Row:
    dataset: str
    model: str
    runs: tuple[FinalRun, ...]  # sorted by seed
    n: int
    test_auc_mean: float | None
    test_auc_std: float | None
    test_logloss_mean: float | None
    test_logloss_std: float | None
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

    @property
    def run_ids(self) -> tuple[str, ...]:
        return tuple(r.run_id for r in self.runs)

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


def trial_state(rec) -> str:
    """complete | pruned | failed | running, from the trial's state tag, else its MLflow status."""
    for key in ("trial_state", "state", "optuna_state"):
        value = rec.tags.get(key)
        if value:
            v = value.lower()
            return {"completed": "complete", "fail": "failed"}.get(v, v)
    return {"FINISHED": "complete", "FAILED": "failed", "KILLED": "failed"}.get(rec.status, "running")


def row_key(rec) -> str:
    """The leaderboard row a final run belongs to: its model, or ``<model id> [<preset>]`` for a preset run
    (the id is the preset file's stem: variants such as crossnet share the registry name dcn)."""
    preset = rec.tags.get("preset")
    if not preset:
        return rec.model
    pid = Path(rec.tags["preset_file"]).stem if rec.tags.get("preset_file") else rec.model
    return f"{pid} [{preset}, tuned]" if rec.tags.get("sweep_study") else f"{pid} [{preset}]"


def _study_of(rec) -> str:
    """The Optuna study a run belongs to: its ``sweep_study`` tag, else ``<model>__<data>``."""
    data = rec.tags.get("data") or rec.params.get("data.name") or rec.experiment
    return rec.tags.get("sweep_study") or f"{rec.model}__{data}"


def trial_value(rec) -> float | None:
    """The validation AUC a trial reports: MLflow's latest ``val_auc``, which bars.run logs last (at step = last
    epoch) as the best epoch's value."""
    return rec.metrics.get("val_auc")


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


def _significance(rows: list[Row], alpha: float) -> list[Row]:
    from dataclasses import replace

    from scipy import stats

    ranked = [r for r in rows if r.test_auc_mean is not None]
    if not ranked:
        return rows
    best = ranked[0]
    best_by_seed = {r.seed: r.test_auc for r in best.runs if r.test_auc is not None}
    out = []
    for r in rows:
        if r is best:
            out.append(replace(r, significance="best", n_paired=len(best_by_seed)))
            continue
        mine = {x.seed: x.test_auc for x in r.runs if x.test_auc is not None}
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


def build(records: Iterable, *, alpha: float = 0.05, published: Mapping | None = None,
          datasets: Iterable[str] | None = None) -> dict[str, Board]:
    """MLflow records -> {dataset: Board}. Pure: the same records give the same boards."""
    published = load_published() if published is None else published
    pub_models = sorted({m for _, m in published})
    by_source = {p.source: p for p in published.values()}
    by_data: dict[str, list] = {}
    for rec in records:
        data = rec.tags.get("data") or rec.params.get("data.name") or rec.experiment
        by_data.setdefault(data, []).append(rec)
    wanted = None if datasets is None else set(datasets)
    boards: dict[str, Board] = {}
    for data in sorted(by_data):
        if wanted is not None and data not in wanted:
            continue
        recs = by_data[data]
        finals = [r for r in recs if r.stage == "final" and r.status == "FINISHED"]
        trials = [r for r in recs if r.stage == "trial"]
        if not finals:
            continue
        split = BARS_SPLITS.get(data.lower())
        rows: list[Row] = []
        for model in sorted({row_key(r) for r in finals}):
            latest: dict[int, Any] = {}
            for r in sorted((r for r in finals if row_key(r) == model),
                            key=lambda r: (r.start_time or 0, r.run_id)):
                seed = _int(r.tags.get("seed", r.params.get("seed")))
                if seed is not None:
                    latest[seed] = r  # the most recent run of a seed wins
            runs = [latest[s] for s in sorted(latest)]
            fr = tuple(FinalRun(seed=_int(r.tags.get("seed", r.params.get("seed"))), run_id=r.run_id,
                                test_auc=r.metrics.get("test_auc"), test_logloss=r.metrics.get("test_logloss"),
                                val_auc_curve=_curve(r, "val_auc"), train_loss_curve=_curve(r, "train_loss"))
                       for r in runs)
            aucs = [x.test_auc for x in fr if x.test_auc is not None]
            lls = [x.test_logloss for x in fr if x.test_logloss is not None]
            pseeds = {_int(r.params.get("data.protocol_seed")) for r in runs} - {None}
            pseed = min(pseeds) if pseeds else None
            prot = next((x for x in fr if x.seed == pseed), None)
            preset = runs[0].tags.get("preset") if runs else None
            if preset:  # the README the preset was transcribed from
                pub = by_source.get(runs[0].tags.get("preset_source", "")) if split else None
            else:
                bmodel = bars_model_name(model, pub_models, runs[0].params if runs else None) if split else None
                pub = published.get((split, bmodel)) if split and bmodel else None
            diff_auc = diff_ll = None
            if pub and prot is not None:
                if prot.test_auc is not None:
                    diff_auc = prot.test_auc - pub.auc
                if prot.test_logloss is not None:
                    diff_ll = prot.test_logloss - pub.logloss
            nparams = [_int(r.metrics["n_params"]) for r in runs if "n_params" in r.metrics]
            spe = []
            for r in runs:
                if "seconds_per_epoch" in r.metrics:
                    spe.append(r.metrics["seconds_per_epoch"])
                elif r.metrics.get("wall_seconds") and r.metrics.get("epochs"):
                    spe.append(r.metrics["wall_seconds"] / r.metrics["epochs"])
            sps = [m for m in (_samples_per_s(r) for r in runs) if m is not None]
            # the sweep the final runs replayed (their sweep_study tag), else <model>__<data>
            studies = sorted({r.tags["sweep_study"] for r in runs if r.tags.get("sweep_study")})
            study = studies[-1] if studies else f"{model}__{data}"
            base = runs[0].model if runs else model  # the registry name trials are tagged with
            mtrials = [t for t in trials if t.model == base and _study_of(t) in (studies or [study])]
            numbers: dict[str, str] = {}
            for t in sorted(mtrials, key=lambda t: (t.start_time or 0, t.run_id)):
                numbers[t.tags.get("trial_number", t.run_id)] = trial_state(t)
            states = tuple((s, sum(1 for v in numbers.values() if v == s))
                           for s in sorted(set(numbers.values())))
            rows.append(Row(
                dataset=data, model=model, runs=fr, n=len(aucs),
                test_auc_mean=_mean(aucs), test_auc_std=_std(aucs),
                test_logloss_mean=_mean(lls), test_logloss_std=_std(lls),
                protocol_seed=pseed, protocol_run_id=prot.run_id if prot else None,
                protocol_test_auc=prot.test_auc if prot else None,
                protocol_test_logloss=prot.test_logloss if prot else None,
                bars_model=pub.model if pub else None, bars_auc=pub.auc if pub else None,
                bars_logloss=pub.logloss if pub else None, bars_source=pub.source if pub else None,
                diff_auc=diff_auc, diff_logloss=diff_ll,
                n_params=nparams[0] if nparams else None,
                seconds_per_epoch=_mean(spe), samples_per_s=_mean(sps),
                device=", ".join(sorted({r.tags.get("device", "unknown") for r in runs})),
                trials=len(numbers), trial_states=states,
                best_config=(f"sweeps/{study}/best.overrides" if (numbers or studies) else
                             runs[0].tags.get("preset_file") if preset else None),
                preset=preset,
            ))
        rows.sort(key=lambda r: (-(r.test_auc_mean if r.test_auc_mean is not None else -math.inf), r.model))
        rows = _significance(rows, alpha)
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
        boards[data] = Board(dataset=data, bars_split=split, rows=tuple(rows), sweeps=sweeps, provenance=prov,
                             alpha=alpha)
    return boards


# ------------------------------------------------------------------------------------------------- formatting
def fmt(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:.{digits}f}"


def fmt_signed(value: float | None, digits: int = 4) -> str:
    return "—" if value is None else f"{value:+.{digits}f}"


def fmt_pm(mean: float | None, std: float | None, digits: int = 4) -> str:
    if mean is None:
        return "—"
    return f"{mean:.{digits}f} ± {'n/a' if std is None else f'{std:.{digits}f}'}"


def fmt_p(p: float | None) -> str:
    return "—" if p is None else f"{p:.3g}"


def sig_label(row: Row) -> str:
    return {"best": "best", "ns": f"≈ (p={fmt_p(row.p_value)})", "sig": f"< (p={fmt_p(row.p_value)})",
            "n/a": "n/a"}[row.significance]


def fmt_int(value: float | None) -> str:
    return "—" if value is None else f"{round(value):,}"


def trials_label(row: Row) -> str:
    if not row.trials:
        return "0"
    return f"{row.trials} ({', '.join(f'{n} {s}' for s, n in row.trial_states)})"


CSV_COLUMNS = [
    "dataset", "model", "n", "seeds", "test_auc_mean", "test_auc_std", "test_logloss_mean", "test_logloss_std",
    "significance", "p_value", "n_paired", "protocol_seed", "protocol_test_auc", "protocol_test_logloss",
    "bars_split", "bars_model", "bars_auc", "bars_logloss", "diff_auc", "diff_logloss", "bars_source",
    "n_params", "seconds_per_epoch", "samples_per_s", "device", "trials", "best_config", "protocol_run_id",
    "run_ids", "preset",
]


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest round-trip: parses back to the exact float
    return str(v)


def render_csv(board: Board) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(CSV_COLUMNS)
    for r in board.rows:
        w.writerow([_csv_value(v) for v in [
            r.dataset, r.model, r.n, " ".join(str(s) for s in r.seeds), r.test_auc_mean, r.test_auc_std,
            r.test_logloss_mean, r.test_logloss_std, r.significance, r.p_value, r.n_paired, r.protocol_seed,
            r.protocol_test_auc, r.protocol_test_logloss, board.bars_split, r.bars_model, r.bars_auc,
            r.bars_logloss, r.diff_auc, r.diff_logloss, r.bars_source, r.n_params, r.seconds_per_epoch,
            r.samples_per_s, r.device, r.trials, r.best_config, r.protocol_run_id, " ".join(r.run_ids), r.preset,
        ]])
    return buf.getvalue()


def plot_names(dataset: str) -> dict[str, str]:
    return {"test_auc": f"{dataset}_test_auc.png", "sweeps": f"{dataset}_sweeps.png",
            "curves": f"{dataset}_curves.png"}


def _columns(board: Board) -> list[tuple[str, str, str]]:
    """(header, kind, key) for the table: kind num|text."""
    pseed = next((r.protocol_seed for r in board.rows if r.protocol_seed is not None), None)
    cols = [
        ("Model", "text", "model"),
        ("Test AUC (mean ± std)", "num", "test_auc"),
        ("Test logloss (mean ± std)", "num", "test_logloss"),
        ("n", "num", "n"),
        ("vs best¹", "num", "sig"),
        (f"Test AUC, seed {pseed}" if pseed is not None else "Test AUC, protocol seed", "num", "p_auc"),
        (f"Test logloss, seed {pseed}" if pseed is not None else "Test logloss, protocol seed", "num", "p_ll"),
    ]
    if board.bars_split:
        cols += [("BARS AUC", "num", "bars_auc"), ("Δ AUC²", "num", "diff_auc"),
                 ("BARS logloss", "num", "bars_ll"), ("Δ logloss²", "num", "diff_ll")]
    cols += [("Params", "num", "n_params"), ("s/epoch", "num", "spe"), ("samples/s", "num", "sps"),
             ("Device", "text", "device"), ("Trials", "num", "trials"), ("Best config", "text", "best_config")]
    return cols


def _cell(row: Row, key: str, link_prefix: str) -> tuple[str, Any, str | None]:
    """(text, sort value, link) for one cell."""
    sig_rank = {"best": 0, "ns": 1, "sig": 2, "n/a": 3}
    return {
        "model": (row.model, row.model, None),
        "test_auc": (fmt_pm(row.test_auc_mean, row.test_auc_std), row.test_auc_mean, None),
        "test_logloss": (fmt_pm(row.test_logloss_mean, row.test_logloss_std), row.test_logloss_mean, None),
        "n": (str(row.n), row.n, None),
        "sig": (sig_label(row), sig_rank[row.significance], None),
        "p_auc": (fmt(row.protocol_test_auc), row.protocol_test_auc, None),
        "p_ll": (fmt(row.protocol_test_logloss), row.protocol_test_logloss, None),
        "bars_auc": (fmt(row.bars_auc), row.bars_auc, None),
        "diff_auc": (fmt_signed(row.diff_auc), row.diff_auc, None),
        "bars_ll": (fmt(row.bars_logloss), row.bars_logloss, None),
        "diff_ll": (fmt_signed(row.diff_logloss), row.diff_logloss, None),
        "n_params": (fmt_int(row.n_params), row.n_params, None),
        "spe": (fmt(row.seconds_per_epoch, 2), row.seconds_per_epoch, None),
        "sps": (fmt_int(row.samples_per_s), row.samples_per_s, None),
        "device": (row.device, row.device, None),
        "trials": (trials_label(row), row.trials, None),
        "best_config": (Path(row.best_config).name if row.best_config else "—", row.best_config or "",
                        link_prefix + row.best_config if row.best_config else None),
    }[key]


def footnotes(board: Board) -> list[str]:
    notes = [
        (f"¹ Paired t-test (scipy.stats.ttest_rel, two-sided) of each model's test AUC against the best model's "
        f"(highest mean) over the seeds both ran; ≈: not significantly different from the best "
        f"(p ≥ {board.alpha:g}); <: significantly worse (p < {board.alpha:g}); n/a: fewer than 2 matched seeds. "
        f"Means and sample standard deviations (ddof=1) over the final runs (stage=final, one per seed, the "
        f"most recent when a seed ran twice)."),
    ]
    if board.bars_split:
        notes.append(f"² The run with the protocol seed minus the BARS published value for {board.bars_split} "
                     f"(BARS counts a rerun within 0.001 AUC as reproduced).")
    notes.append("s/epoch: mean over the final runs; samples/s: mean of the per-epoch training throughput. "
                 "Trials: distinct Optuna trial numbers among the sweep's child runs (stage=trial).")
    presets = sorted({r.preset for r in board.rows if r.preset})
    if presets:
        notes.append(f"[{'], ['.join(presets)}]: runs of a preset (no sweep): the configuration transcribed from the "
                     f"BARS README of that model and split (conf/presets/, linked as best config), compared with "
                     f"that README's published value.")
    return notes


def provenance_lines(board: Board, uri_label: str) -> list[str]:
    p = board.provenance
    assert p is not None
    return [
        f"bars version: {', '.join(p.bars_versions)}",
        f"git commit: {', '.join(p.git_commits)}",
        f"data fingerprint: {', '.join(p.data_fingerprints)}",
        f"hardware: {', '.join(p.hardware)}",
        f"generated by bars {__version__} from MLflow at {uri_label}",
        f"newest run included ended: {p.newest_run_end or 'unknown'}",
    ]


def _md_escape(text: str) -> str:
    return text.replace("|", "\\|")


def render_markdown(board: Board, uri_label: str, *, link_prefix: str = "../") -> str:
    cols = _columns(board)
    names = plot_names(board.dataset)
    out = [f"# Leaderboard: {board.dataset}", ""]
    if board.bars_split:
        out += [f"BARS split: {board.bars_split}.", ""]
    else:
        out += ["Not a BARS split: no published values to compare with.", ""]
    out.append("| " + " | ".join(h for h, _, _ in cols) + " |")
    out.append("|" + "|".join("---" if kind == "text" else "---:" for _, kind, _ in cols) + "|")
    for row in board.rows:
        cells = []
        for _, _, key in cols:
            text, _, link = _cell(row, key, link_prefix)
            cells.append(f"[{_md_escape(text)}]({link})" if link else _md_escape(text))
        out.append("| " + " | ".join(cells) + " |")
    out.append("")
    out += footnotes(board)
    out += ["", "## Runs", "",
            "Every final run; rerun one exactly with `make reproduce RUN=<run id>`.", "",
            "| Model | Seed | Test AUC | Test logloss | MLflow run id |", "|---|---:|---:|---:|---|"]
    for row in board.rows:
        for r in row.runs:
            out.append(f"| {row.model} | {r.seed} | {fmt(r.test_auc, 6)} | {fmt(r.test_logloss, 6)} | "
                       f"`{r.run_id}` |")
    out += ["", "## Plots", "",
            f"![Test AUC per model]({names['test_auc']})", ""]
    if board.sweeps:
        out += [f"![Best-so-far validation AUC per trial]({names['sweeps']})", ""]
    out += [f"![Learning curves of the final runs]({names['curves']})", "",
            "## Provenance", ""]
    out += [f"- {line}" for line in provenance_lines(board, uri_label)]
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------------ plots
def _figure():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_test_auc(board: Board, path: Path) -> None:
    plt = _figure()
    rows = [r for r in board.rows if r.test_auc_mean is not None]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.1 * len(rows) + 2), 3.6))
    xs = list(range(len(rows)))
    ax.errorbar(xs, [r.test_auc_mean for r in rows], yerr=[r.test_auc_std or 0.0 for r in rows], fmt="o",
                capsize=5, color="tab:blue", label="mean ± std over seeds")
    for x, r in zip(xs, rows):
        vals = [v.test_auc for v in r.runs if v.test_auc is not None]
        ax.scatter([x + 0.15] * len(vals), vals, s=10, color="tab:gray", zorder=3)
    pubs = [(x, r.bars_auc) for x, r in zip(xs, rows) if r.bars_auc is not None]
    if pubs:
        ax.scatter([p[0] for p in pubs], [p[1] for p in pubs], marker="x", color="tab:red", label="BARS published")
    ax.set_xticks(xs, [r.model for r in rows], rotation=30, ha="right")
    ax.set_ylabel("test AUC")
    ax.set_title(f"{board.dataset}: test AUC per model")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_sweeps(board: Board, path: Path) -> None:
    plt = _figure()
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for study, pts in sorted(board.sweeps.items()):
        ax.step([p[0] for p in pts], [p[1] for p in pts], where="post", marker=".", label=study)
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_xlabel("trial number")
    ax.set_ylabel("best validation AUC so far")
    ax.set_title(f"{board.dataset}: sweeps")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    _save(fig, path)


def plot_curves(board: Board, path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    plt = _figure()
    rows = list(board.rows)
    n = max(1, len(rows))
    ncols = min(3, n)
    nrows = math.ceil(n / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(4 * ncols, 3 * nrows), squeeze=False)
    for i, row in enumerate(rows):
        ax = axes[i // ncols][i % ncols]
        for r in row.runs:
            if r.val_auc_curve:
                ax.plot([p[0] for p in r.val_auc_curve], [p[1] for p in r.val_auc_curve], marker=".",
                        label=f"seed {r.seed}")
        ax.set_title(row.model, fontsize=10)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel("epoch")
        ax.set_ylabel("validation AUC")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    for j in range(len(rows), nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    fig.suptitle(f"{board.dataset}: learning curves of the final runs")
    fig.tight_layout()
    _save(fig, path)


def _save(fig, path: Path) -> None:
    import matplotlib.pyplot as plt

    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".png")
    os.close(fd)
    try:
        fig.savefig(tmp, dpi=100, metadata={"Software": None})
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    finally:
        plt.close(fig)


# ------------------------------------------------------------------------------------------------------- HTML
CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:2em auto;max-width:1400px;
 padding:0 1em;color:#222}
table{border-collapse:collapse;font-size:13px;margin:1em 0}
th,td{border:1px solid #ccc;padding:4px 8px;white-space:nowrap}
th{background:#f3f3f3;cursor:pointer;user-select:none}
th[aria-sort=ascending]::after{content:" \\25B2"} th[aria-sort=descending]::after{content:" \\25BC"}
td.num{text-align:right;font-variant-numeric:tabular-nums}
tr.best td{font-weight:600}
.note,.prov{font-size:12px;color:#555}
img{max-width:100%;border:1px solid #eee}
figure{display:inline-block;vertical-align:top;margin:0.5em 1em 0.5em 0}
.tablewrap{overflow-x:auto}
code{font-size:12px}
"""

JS = """
function barsSort(th){
  var table=th.closest('table'), tbody=table.tBodies[0];
  var idx=Array.prototype.indexOf.call(th.parentNode.children, th);
  var num=th.getAttribute('data-type')==='num';
  var dir=th.getAttribute('aria-sort')==='ascending'?'descending':'ascending';
  Array.prototype.forEach.call(th.parentNode.children,function(h){h.removeAttribute('aria-sort');});
  th.setAttribute('aria-sort',dir);
  var rows=Array.prototype.slice.call(tbody.rows).map(function(r,i){return [r,i];});
  rows.sort(function(a,b){
    var x=a[0].cells[idx].getAttribute('data-v'), y=b[0].cells[idx].getAttribute('data-v');
    if(x===''&&y==='') return a[1]-b[1];
    if(x==='') return 1;
    if(y==='') return -1;
    var c=num?(parseFloat(x)-parseFloat(y)):(x<y?-1:(x>y?1:0));
    if(dir==='descending') c=-c;
    return c!==0?c:a[1]-b[1];
  });
  rows.forEach(function(r){tbody.appendChild(r[0]);});
}
document.addEventListener('DOMContentLoaded',function(){
  document.querySelectorAll('table.sortable th').forEach(function(th){
    th.addEventListener('click',function(){barsSort(th);});
  });
});
"""


def _sort_attr(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    return str(value)


def render_board_html(board: Board, uri_label: str, plots_present: Iterable[str]) -> str:
    e = html.escape
    cols = _columns(board)
    present = set(plots_present)
    names = plot_names(board.dataset)
    out = [f'<section id="{e(board.dataset)}">', f"<h2>{e(board.dataset)}</h2>"]
    out.append(f"<p>BARS split: {e(board.bars_split)}</p>" if board.bars_split
               else "<p>Not a BARS split: no published values to compare with.</p>")
    out.append(f'<div class="tablewrap"><table class="sortable" id="table-{e(board.dataset)}"><thead><tr>')
    for h, kind, key in cols:
        out.append(f'<th data-type="{kind}" data-key="{key}">{e(h)}</th>')
    out.append("</tr></thead><tbody>")
    for row in board.rows:
        cls = ' class="best"' if row.significance == "best" else ""
        out.append(f'<tr data-model="{e(row.model)}"{cls}>')
        for _, kind, key in cols:
            text, sv, link = _cell(row, key, "")
            inner = f'<a href="{e(link)}">{e(text)}</a>' if link else e(text)
            tdcls = ' class="num"' if kind == "num" else ""
            out.append(f'<td{tdcls} data-v="{e(_sort_attr(sv))}">{inner}</td>')
        out.append("</tr>")
    out.append("</tbody></table></div>")
    out += [f'<p class="note">{e(n)}</p>' for n in footnotes(board)]
    out.append("<details><summary>MLflow runs</summary><table><thead><tr><th>Model</th><th>Seed</th>"
               "<th>Test AUC</th><th>Test logloss</th><th>run id</th></tr></thead><tbody>")
    for row in board.rows:
        for r in row.runs:
            out.append(f"<tr><td>{e(row.model)}</td><td class=num>{r.seed}</td>"
                       f"<td class=num>{fmt(r.test_auc, 6)}</td><td class=num>{fmt(r.test_logloss, 6)}</td>"
                       f"<td><code>{e(r.run_id)}</code></td></tr>")
    out.append("</tbody></table></details>")
    for key, alt in (("test_auc", "Test AUC per model"), ("sweeps", "Best-so-far validation AUC per trial"),
                     ("curves", "Learning curves of the final runs")):
        if names[key] in present:
            out.append(f'<figure><img src="{e(names[key])}" alt="{e(board.dataset)}: {e(alt)}"></figure>')
    out.append('<ul class="prov">' + "".join(f"<li>{e(x)}</li>" for x in provenance_lines(board, uri_label))
               + "</ul>")
    out.append("</section>")
    return "\n".join(out)


def render_index(boards: Mapping[str, Board], uri_label: str, plots: Mapping[str, Iterable[str]]) -> str:
    e = html.escape
    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
             '<meta name="viewport" content="width=device-width, initial-scale=1">',
             "<title>bars leaderboard</title>", f"<style>{CSS}</style>", "</head><body>",
             "<h1>bars leaderboard</h1>",
             ("<p>Generated from MLflow records only; click a column header to sort. "
             "Every row reruns with <code>make reproduce RUN=&lt;run id&gt;</code>.</p>")]
    if boards:
        parts.append("<nav><ul>" + "".join(f'<li><a href="#{e(d)}">{e(d)}</a></li>' for d in sorted(boards))
                     + "</ul></nav>")
    else:
        parts.append("<p>No final runs (stage=final) in MLflow yet.</p>")
    for d in sorted(boards):
        parts.append(render_board_html(boards[d], uri_label, plots.get(d, ())))
    parts += [f"<script>{JS}</script>", "</body></html>"]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------------------------------------------ write
def atomic_write_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:
            f.write(text)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_board(board: Board, out_dir: Path, uri_label: str, *, link_prefix: str = "../") -> list[Path]:
    """results/<d>.md, results/<d>.csv and the three PNG plots (the sweep plot only when there are sweeps)."""
    out_dir = Path(out_dir)
    names = plot_names(board.dataset)
    written = []
    plot_test_auc(board, out_dir / names["test_auc"])
    written.append(out_dir / names["test_auc"])
    if board.sweeps:
        plot_sweeps(board, out_dir / names["sweeps"])
        written.append(out_dir / names["sweeps"])
    plot_curves(board, out_dir / names["curves"])
    written.append(out_dir / names["curves"])
    atomic_write_text(out_dir / f"{board.dataset}.csv", render_csv(board))
    atomic_write_text(out_dir / f"{board.dataset}.md", render_markdown(board, uri_label, link_prefix=link_prefix))
    written += [out_dir / f"{board.dataset}.csv", out_dir / f"{board.dataset}.md"]
    return written


def write_index(boards: Mapping[str, Board], out_dir: Path, uri_label: str) -> Path:
    out_dir = Path(out_dir)
    plots = {d: [n for n in plot_names(d).values() if (out_dir / n).is_file()] for d in boards}
    path = out_dir / "index.html"
    atomic_write_text(path, render_index(boards, uri_label, plots))
    return path


def uri_label(uri: str, root: Path) -> str:
    """The tracking URI as shown in the provenance: a SQLite file inside the project relative to it."""
    prefix = "sqlite:///"
    if uri.startswith(prefix):
        p = Path(uri[len(prefix):])
        try:
            return prefix + str(p.resolve().relative_to(Path(root).resolve()))
        except ValueError:
            return uri
    return uri


def generate(uri: str, out_dir: Path, *, datasets: Sequence[str] | None = None, alpha: float = 0.05,
             root: Path | None = None, link_prefix: str | None = None) -> dict[str, Board]:
    """Read MLflow, write results for ``datasets`` (all when None) and index.html over all datasets."""
    from bars.records import list_experiments, load_runs

    out_dir = Path(out_dir)
    root = Path(root) if root is not None else out_dir.parent
    if link_prefix is None:
        rel = os.path.relpath(root, out_dir)
        link_prefix = "" if rel == "." else rel.replace(os.sep, "/") + "/"
    label = uri_label(uri, root)
    records = load_runs(uri, list_experiments(uri))
    boards = build(records, alpha=alpha)
    selected = sorted(boards) if datasets is None else list(datasets)
    missing = [d for d in selected if d not in boards]
    if missing:
        raise SystemExit(f"bars leaderboard: no finished final runs (stage=final) for {missing} at {label}; "
                         f"datasets with final runs: {sorted(boards)}. Run `make final MODEL=<m> DATA=<d>` first.")
    for d in selected:
        write_board(boards[d], out_dir, label, link_prefix=link_prefix)
    write_index(boards, out_dir, label)
    return boards


def run(cfg) -> dict[str, Board]:
    """What ``bars leaderboard`` does with its composed config."""
    lb = cfg.leaderboard
    data = lb.get("data")
    datasets = None if data in (None, "", "all") else [str(x) for x in (data if not isinstance(data, str)
                                                                        else data.split(","))]
    out_dir = Path(str(lb.get("out_dir") or cfg.paths.results))
    boards = generate(str(cfg.tracking.uri), out_dir, datasets=datasets, alpha=float(lb.get("alpha", 0.05)),
                      root=Path(str(cfg.paths.root)))
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

    return hydra_command("leaderboard", lambda cfg, _: run(cfg) and 0)


if __name__ == "__main__":
    raise SystemExit(main())
