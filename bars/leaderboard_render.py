"""Rendering of leaderboards (``bars.leaderboard`` builds them): ``results/<d>.md`` and ``results/<d>.csv``, the
three PNG plots per dataset and the self-contained, sortable ``results/index.html``. Every file is written
atomically (``bars.fileio``) and byte-deterministically for the same boards. The test-metric columns follow the
board's metrics, i.e. the ``bars.metrics`` registry (auc, logloss, then any other metric the runs recorded).
"""

from __future__ import annotations

import csv
import html
import io
import math
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from bars import __version__, metrics
from bars.compute import fmt_samples
from bars.fileio import atomic_write, atomic_write_text

if TYPE_CHECKING:
    from bars.leaderboard import Board, Row


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


def tuning_label(row: Row) -> str:
    """The compute the row's sweep used: '3.2M samples, 0.012 CPU-h' (+ GPU-h on GPU workers; '≥ ' when some
    trials have no record), 'n/a' for a sweep recorded before compute was measured, '—' without a sweep."""
    t = row.tuning
    if t is None or not t.trials:
        return "—"
    if not t.recorded:
        return "n/a"
    text = f"{fmt_samples(t.train_samples or 0.0)} samples, {(t.cpu_s or 0.0) / 3600:.3g} CPU-h"
    if t.device_s:
        text += f", {t.device_s / 3600:.3g} GPU-h"
    return ("≥ " if t.recorded < t.trials else "") + text


CSV_COLUMNS_AFTER_METRICS = [
    "significance", "p_value", "n_paired", "protocol_seed", "protocol_test_auc", "protocol_test_logloss",
    "bars_split", "bars_model", "bars_auc", "bars_logloss", "diff_auc", "diff_logloss", "bars_source",
    "n_params", "seconds_per_epoch", "samples_per_s", "device", "trials", "best_config", "protocol_run_id",
    "run_ids", "preset", "bars_gauc", "diff_gauc", "method", "kept_fraction", "kept_count", "kept_total",
    "tuning_trials_recorded", "tuning_train_samples", "tuning_cpu_s", "tuning_wall_s", "tuning_device_s",
    "kept2_fraction", "kept2_count", "kept2_total",
    "params_effective", "model_bytes",
]


def csv_columns(board: Board) -> list[str]:
    """dataset, model, n, seeds, then test_<m>_mean and test_<m>_std for every metric of the board (registry
    order: auc, logloss, ...), then the rest (CSV_COLUMNS_AFTER_METRICS)."""
    per_metric = [f"test_{m}_{stat}" for m in board.metrics for stat in ("mean", "std")]
    return ["dataset", "model", "n", "seeds", *per_metric, *CSV_COLUMNS_AFTER_METRICS]


def _csv_value(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, float):
        return repr(v)  # shortest round-trip: parses back to the exact float
    return str(v)


def _tuning_csv(r: Row) -> list[Any]:
    t = r.tuning
    return [None] * 5 if t is None else [t.recorded, t.train_samples, t.cpu_s, t.wall_s, t.device_s]


def render_csv(board: Board) -> str:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(csv_columns(board))
    for r in board.rows:
        per_metric = [v for m in board.metrics for v in (r.test_mean.get(m), r.test_std.get(m))]
        w.writerow([_csv_value(v) for v in [
            r.dataset, r.model, r.n, " ".join(str(s) for s in r.seeds), *per_metric, r.significance, r.p_value,
            r.n_paired, r.protocol_seed, r.protocol_test_auc, r.protocol_test_logloss, board.bars_split,
            r.bars_model, r.bars_auc, r.bars_logloss, r.diff_auc, r.diff_logloss, r.bars_source, r.n_params,
            r.seconds_per_epoch, r.samples_per_s, r.device, r.trials, r.best_config, r.protocol_run_id,
            " ".join(r.run_ids), r.preset, r.bars_gauc, r.diff_gauc, r.method, r.kept_fraction, r.kept_count,
            r.kept_total,
            *_tuning_csv(r),
            r.kept2_fraction, r.kept2_count, r.kept2_total, r.params_effective, r.model_bytes,
        ]])
    return buf.getvalue()


def plot_names(dataset: str) -> dict[str, str]:
    return {"test_auc": f"{dataset}_test_auc.png", "sweeps": f"{dataset}_sweeps.png",
            "curves": f"{dataset}_curves.png", "tuning": f"{dataset}_tuning.png"}


def _columns(board: Board) -> list[tuple[str, str, str]]:
    """(header, kind, key) for the table: kind num|text."""
    pseed = next((r.protocol_seed for r in board.rows if r.protocol_seed is not None), None)
    cols = [("Model", "text", "model")]
    cols += [(f"Test {metrics.column_label(m)} (mean ± std)", "num", f"test_{m}") for m in board.metrics]
    cols += [
        ("n", "num", "n"),
        ("vs best¹", "num", "sig"),
        (f"Test AUC, seed {pseed}" if pseed is not None else "Test AUC, protocol seed", "num", "p_auc"),
        (f"Test logloss, seed {pseed}" if pseed is not None else "Test logloss, protocol seed", "num", "p_ll"),
    ]
    if any(r.bars_gauc is not None for r in board.rows):  # a sequential board: BARS published gAUC too
        cols += [("BARS gAUC", "num", "bars_gauc"), ("Δ gAUC²", "num", "diff_gauc")]
    if board.bars_split:
        cols += [("BARS AUC", "num", "bars_auc"), ("Δ AUC²", "num", "diff_auc"),
                 ("BARS logloss", "num", "bars_ll"), ("Δ logloss²", "num", "diff_ll")]
    if any(r.kept_fraction is not None for r in board.rows):  # method rows (bars.methods): what they keep
        cols += [("Kept (OptFS: features, DNIS: emb. params, OptInter: pairs)", "num", "kept")]
    if any(r.kept2_fraction is not None for r in board.rows):  # a method's second figure
        cols += [("Kept, 2nd (OptEmbed: emb. rows)", "num", "kept2")]
    cols += [("Params", "num", "n_params")]
    if any(r.method for r in board.rows):  # method rows beside their backbones: the size after the masks
        cols += [("Eff. params⁴", "num", "params_effective")]
    if any(r.model_bytes is not None for r in board.rows):
        cols += [("Model bytes⁴", "num", "model_bytes")]
    cols += [("s/epoch", "num", "spe"), ("samples/s", "num", "sps"),
             ("Device", "text", "device"), ("Trials", "num", "trials"), ("Tuning compute³", "num", "tuning"),
             ("Best config", "text", "best_config")]
    return cols


def _cell(row: Row, key: str, link_prefix: str) -> tuple[str, Any, str | None]:
    """(text, sort value, link) for one cell."""
    sig_rank = {"best": 0, "ns": 1, "sig": 2, "n/a": 3}
    if key.startswith("test_"):  # a registered metric's mean ± std
        m = key[len("test_"):]
        return fmt_pm(row.test_mean.get(m), row.test_std.get(m)), row.test_mean.get(m), None
    return {
        "model": (row.model, row.model, None),
        "n": (str(row.n), row.n, None),
        "sig": (sig_label(row), sig_rank[row.significance], None),
        "p_auc": (fmt(row.protocol_test_auc), row.protocol_test_auc, None),
        "p_ll": (fmt(row.protocol_test_logloss), row.protocol_test_logloss, None),
        "bars_gauc": (fmt(row.bars_gauc), row.bars_gauc, None),
        "diff_gauc": (fmt_signed(row.diff_gauc), row.diff_gauc, None),
        "bars_auc": (fmt(row.bars_auc), row.bars_auc, None),
        "diff_auc": (fmt_signed(row.diff_auc), row.diff_auc, None),
        "bars_ll": (fmt(row.bars_logloss), row.bars_logloss, None),
        "diff_ll": (fmt_signed(row.diff_logloss), row.diff_logloss, None),
        "n_params": (fmt_int(row.n_params), row.n_params, None),
        "params_effective": (fmt_int(row.params_effective), row.params_effective, None),
        "model_bytes": (fmt_int(row.model_bytes), row.model_bytes, None),
        "kept": (f"{row.kept_fraction:.3f} ({fmt_int(row.kept_count)}/{fmt_int(row.kept_total)})"
                 if row.kept_fraction is not None else "—", row.kept_fraction, None),
        "kept2": (f"{row.kept2_fraction:.3f} ({fmt_int(row.kept2_count)}/{fmt_int(row.kept2_total)})"
                  if row.kept2_fraction is not None else "—", row.kept2_fraction, None),
        "spe": (fmt(row.seconds_per_epoch, 2), row.seconds_per_epoch, None),
        "sps": (fmt_int(row.samples_per_s), row.samples_per_s, None),
        "device": (row.device, row.device, None),
        "trials": (trials_label(row), row.trials, None),
        "tuning": (tuning_label(row), row.tuning.train_samples if row.tuning else None, None),
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
    presets = sorted({r.preset for r in board.rows if r.preset})
    if presets:
        notes.append(f"[{'], ['.join(presets)}]: runs of a preset (no sweep): the configuration transcribed from the "
                     f"BARS README of that model and split (conf/presets/, linked as best config), compared with "
                     f"that README's published value.")
    notes.append("s/epoch: mean over the final runs; samples/s: mean of the per-epoch training throughput. "
                 "Trials: distinct Optuna trial numbers among the sweep's child runs (stage=trial).")
    notes.append("³ Tuning compute: what the model's sweep used, over all its trials (complete, pruned, failed): "
                 "training samples processed and CPU-hours of the worker processes (GPU-hours: device time of GPU "
                 "workers); n/a: a sweep recorded before compute was measured; ≥: some trials have no record.")
    if board.tuning_budgets:
        specs = sorted({b for _, b in board.tuning_budgets})
        seeds = sorted({r.n for r in board.rows})
        if len(specs) == 1:
            who = ("every model's sweep" if len(board.tuning_budgets) == len(board.rows) else
                   f"the sweeps of {', '.join(m for m, _ in board.tuning_budgets)}")
            note = f"Tuning budget: {who} had the same compute budget, sweep.budget={specs[0]}"
        else:
            note = ("Tuning budgets DIFFER between models (not a fair comparison of tuned models): "
                    + ", ".join(f"{m} {b}" for m, b in board.tuning_budgets))
        notes.append(note + (f"; {seeds[0]} final seeds per model." if len(seeds) == 1 else "."))
    methods = any(r.method for r in board.rows)
    if methods or any(r.model_bytes is not None for r in board.rows):
        notes.append("⁴ Size. Model bytes: the stored model, its float32 state dict as a checkpoint file holds it "
                     "(a plain run: its best checkpoint; a method run: its final model with the method's masks folded "
                     "into the embedding tables, the masked entries still stored). "
                     + ("Eff. params: the parameters the model uses: a method row's backbone parameters less the "
                        "embedding-table entries its masks zero (OptFS: closed feature values' rows, DNIS: pruned "
                        "dimensions); a plain row's Params. Params: the parameters the final run trained (a method's "
                        "own gates or selection weights included). " if methods else "")
                     + "Means over the seeds.")
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
    if board.protocol_note:
        out += [board.protocol_note, ""]
    if board.rank_metric != "auc":  # a multi-task dataset: ranked by its main task
        note = (f"Ranked by test {metrics.column_label(board.rank_metric)} (the dataset's main task, "
                "train.monitor_task); single-task runs, trained on the first label, have no value there.")
        out += [note, ""]
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
    if has_tuning_curves(board):
        out += [f"![Tuning-budget curves: best validation AUC against trials and compute]({names['tuning']})", ""]
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


def has_tuning_curves(board: Board) -> bool:
    return any(r.tuning is not None and r.tuning.curve for r in board.rows)


def plot_tuning(board: Board, path: Path) -> None:
    """Tuning-budget curves: per row with a sweep, best-so-far validation AUC against trials, training samples
    and CPU-seconds (cumulative over its trials); a panel says so when no row recorded that compute."""
    plt = _figure()
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8), sharey=True)
    panels = ((1, "trials", "trials"), (2, "training samples (cumulative)", "samples"),
              (3, "CPU-seconds (cumulative)", "cpu"))
    from matplotlib.ticker import MaxNLocator

    for ax, (i, label, kind) in zip(axes, panels):
        drawn = 0
        for k, row in enumerate(board.rows):  # one colour per row in every panel
            pts = [p for p in (row.tuning.curve if row.tuning else ()) if p[i] is not None]
            if pts:
                ax.step([p[i] for p in pts], [p[4] for p in pts], where="post", marker=".", label=row.model,
                        color=f"C{k % 10}")
                drawn += 1
        if not drawn:
            ax.text(0.5, 0.5, "no compute records\n(sweeps before compute was measured)", ha="center",
                    va="center", transform=ax.transAxes, fontsize=9, color="tab:gray")
        elif kind != "trials":
            ax.set_xscale("log")
        if kind == "trials":
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("best validation AUC so far")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"{board.dataset}: tuning-budget curves")
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

    try:
        atomic_write(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png", metadata={"Software": None}))
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
    if board.protocol_note:
        out.append(f"<p>{e(board.protocol_note)}</p>")
    if board.rank_metric != "auc":
        out.append(f"<p>Ranked by test {e(metrics.column_label(board.rank_metric))} (the dataset's main task, "
                   f"train.monitor_task).</p>")
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
                     ("tuning", "Tuning-budget curves"), ("curves", "Learning curves of the final runs")):
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
    if has_tuning_curves(board):
        plot_tuning(board, out_dir / names["tuning"])
        written.append(out_dir / names["tuning"])
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


__all__ = [
    "CSV_COLUMNS_AFTER_METRICS", "csv_columns", "fmt", "fmt_int", "fmt_p", "fmt_pm", "fmt_signed", "footnotes",
    "has_tuning_curves", "plot_curves", "plot_names", "plot_sweeps", "plot_test_auc", "plot_tuning", "provenance_lines", "render_board_html",
    "render_csv", "render_index", "render_markdown", "sig_label", "trials_label", "tuning_label", "write_board", "write_index",
]
