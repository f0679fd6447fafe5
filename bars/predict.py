"""`bars predict run_id=<id> file=<csv|tsv|parquet> [out=<path>] [keep=a,b]` (`make predict`): score new rows.

The run's model with its best weights and the exact preprocessing of the dataset it trained on
(``bars.recorded``: config, fingerprint-checked data folder, checkpoint) score a new raw file in the file's order:
rows are encoded by ``bars.data.apply`` (the same reader, recipe transform and fitted vocabularies as
``make data``; unseen values are OOV, never a re-fit) and scored by ``bars.train.predict`` in batches of the
run's ``train.eval_batch_size``, aligned as in the run's own test evaluation, so predicting the run's test rows
gives its recorded test metrics exactly. The output (Parquet, or CSV when ``out`` ends in .csv) holds the kept
columns (ids) and ``probability``; it is written to a temporary file and renamed at the end. When every row has
a label, the registered metrics are computed too (``predict_auc``, ...). A multi-task run writes one column per
task, ``probability_<task>`` (e.g. ``probability_click``, ``probability_conversion``), and computes each task's
metrics where the file holds that task's label on every row (``predict_auc_click``, ...); label columns are
optional, as for a single-task run.

The prediction is recorded in MLflow as a child run of the source run (``stage=predict``, tag ``source_run``):
input and output paths with their sha256, rows, seconds, rows/s and the metrics, plus a ``predict.json`` artifact.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

OUTPUT_COLUMN = "probability"


def output_columns(tasks: Sequence[str]) -> list[str]:
    """The probability column(s) a run writes: ``probability``, or ``probability_<task>`` per task of a multi-task
    model."""
    return [f"{OUTPUT_COLUMN}_{t}" for t in tasks] if tasks else [OUTPUT_COLUMN]
OPTIONS = ("run_id", "file", "out", "keep", "sep", "batch_size", "device", "progress")
ALLOWED_OVERRIDE_PREFIXES = ("paths.", "tracking.", "hydra.")


class PredictError(RuntimeError):
    """The prediction cannot be made as asked (bad output path, kept column clash, ...)."""


@dataclass
class PredictResult:
    run_id: str
    out: Path
    rows: int
    seconds: float
    metrics: dict[str, float] = field(default_factory=dict)
    predict_run_id: str | None = None
    input_sha256: str = ""
    output_sha256: str = ""

    @property
    def rows_per_s(self) -> float:
        return self.rows / self.seconds if self.seconds > 0 else 0.0


def default_out(cfg: DictConfig, file: Path, run_id: str) -> Path:
    stem = file.name.split(".")[0] or "input"
    return Path(str(cfg.paths.predictions)) / f"{stem}__{run_id}.parquet"


def _out_format(out: Path) -> str:
    suffix = out.suffix.lower()
    if suffix not in (".parquet", ".csv"):
        raise PredictError(f"out={out}: expected a path ending .parquet or .csv")
    return suffix[1:]


class _Writer:
    """Streams (kept columns + probability) tables into a Parquet or CSV file."""

    def __init__(self, path: Path, fmt: str) -> None:
        self.path, self.fmt, self.writer = path, fmt, None

    def write(self, table: Any) -> None:
        import pyarrow.csv as pacsv
        import pyarrow.parquet as pq

        if self.writer is None:
            self.writer = (pq.ParquetWriter(self.path, table.schema, compression="zstd") if self.fmt == "parquet"
                           else pacsv.CSVWriter(self.path, table.schema))
        self.writer.write_table(table)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _prefetched(it: Iterator[Any], depth: int = 2) -> Iterator[Any]:
    """Read and encode the next block in a thread while this one is scored (polars and torch release the GIL)."""
    from bars.data.engine import prefetch

    return prefetch(it, depth)


def score_file(rec: Any, file: Path, out: Path, *, keep: Sequence[str] = (), sep: str | None = None,
               batch_size: int | None = None, device: str = "auto", progress: bool = True,
               group_column: str | None = None) -> tuple[int, dict[str, float], float]:
    """Score ``file`` with the recorded run ``rec`` into ``out`` (atomically); returns (rows, metrics, seconds)."""
    import numpy as np
    import pyarrow as pa
    import torch

    from bars import metrics as M
    from bars.data.apply import RawEncoder, label_present
    from bars.data.loader import SplitTensors
    from bars.fileio import atomic_write
    from bars.train import model_tasks, predict, resolve_device

    fmt = _out_format(out)
    encoder = RawEncoder(rec.recipe, rec.folder)
    raw = encoder.open(file, keep=keep, sep=sep)
    bs = int(batch_size or rec.cfg.train.eval_batch_size)
    if bs < 1:
        raise PredictError(f"batch_size={bs}: expected a positive number of rows")
    dev = resolve_device(device)
    threads = int(rec.cfg.train.get("num_threads", 0) or 0)
    if threads > 0:
        torch.set_num_threads(threads)  # as the run evaluated its test split
    if rec.cfg.train.get("reuse_freed_memory", True):  # each batch's activations reuse the last one's pages
        from bars.heap import reuse_freed_memory

        reuse_freed_memory()
    model = rec.model.to(dev)
    tasks = tuple(model_tasks(model))  # a multi-task model: probabilities [N, T], one column per task
    names = output_columns(tasks)
    clash = [c for c in names if c in keep]
    if clash:
        raise PredictError(f"keep={','.join(keep)}: {', '.join(map(repr, clash))}: output column(s) of this run; "
                           "rename that input column")
    if tasks and list(tasks) != list(encoder.spec.labels):
        raise PredictError(f"run {rec.cfg.model.get('id') or rec.cfg.model.name} predicts tasks {list(tasks)} but its "
                           f"dataset's label columns are {list(encoder.spec.labels)}")
    total = None
    if raw.source.fmt == "parquet":
        import pyarrow.parquet as pq

        total = pq.ParquetFile(file).metadata.num_rows
    from tqdm import tqdm

    bar = tqdm(total=total, unit=" rows", unit_scale=True, desc=f"predict {file.name}", disable=not progress,
               file=sys.stderr, mininterval=0.5)
    labels, probs_all, groups = [], [], []
    rows = 0
    t0 = time.perf_counter()

    def flush(writer: _Writer, feats: dict, label: Any, kept: pa.Table | None) -> None:
        nonlocal rows
        split = SplitTensors(feats, label[:, 0], label) if label.dim() == 2 else SplitTensors(feats, label)
        p = predict(model, split, bs, dev).numpy()
        scores = {n: pa.array(p[:, j] if tasks else p, pa.float32()) for j, n in enumerate(names)}
        if kept is not None:
            for name, col in scores.items():
                kept = kept.append_column(name, col)
        writer.write(kept if kept is not None else pa.table(scores))
        probs_all.append(p)
        labels.append(label.numpy())
        if group_column is not None:
            groups.append(feats[group_column].numpy())
        rows += len(p)
        bar.update(len(p))

    def run(tmp: Path) -> None:
        writer = _Writer(tmp, fmt)
        feats: list[dict[str, torch.Tensor]] = []
        label: list[torch.Tensor] = []  # [n] or, with several label columns, [n, L]
        kept: list[pa.Table] = []
        pending = 0
        try:
            for _, split, part in _prefetched(encoder.batches(raw)):
                feats.append(split.features)
                label.append(split.labels if split.labels.shape[1] > 1 else split.label)
                kept.append(part)
                pending += len(split)
                if pending < bs:
                    continue
                # whole batches only: batch i holds rows [i*bs, (i+1)*bs) of the file, as in the run's evaluation
                f = {k: torch.cat([x[k] for x in feats]) for k in feats[0]}
                y, t = torch.cat(label), pa.concat_tables(kept) if raw.keep else None
                n = (pending // bs) * bs
                if n:
                    flush(writer, {k: v[:n] for k, v in f.items()}, y[:n], t.slice(0, n) if t is not None else None)
                feats, label = [{k: v[n:] for k, v in f.items()}], [y[n:]]
                kept, pending = [t.slice(n)] if t is not None else [], pending - n
            if pending:
                f = {k: torch.cat([x[k] for x in feats]) for k in feats[0]}
                flush(writer, f, torch.cat(label), pa.concat_tables(kept) if raw.keep else None)
            if rows == 0:
                raise PredictError(f"{file}: no data rows")
        finally:
            writer.close()
            bar.close()

    atomic_write(out, run)
    seconds = time.perf_counter() - t0
    y = np.concatenate(labels)
    metrics: dict[str, float] = {}
    g = np.concatenate(groups) if group_column is not None else None
    p = np.concatenate(probs_all)
    if len(tasks) == 1:  # one task (a multi-task architecture on single-label data): the plain keys, as evaluate
        if tasks[0] in raw.labels and label_present(y[:, 0]):
            metrics = M.compute(y[:, 0], p[:, 0], groups=g)
    elif tasks:  # each task whose label column the file has, on every row
        for j, task in enumerate(tasks):
            if task in raw.labels and label_present(y[:, j]):
                metrics.update({M.task_key(k, task): v for k, v in M.compute(y[:, j], p[:, j], groups=g).items()})
    elif raw.has_label and label_present(y):
        metrics = M.compute(y, p, groups=g)
    return rows, metrics, seconds


def predict_file(run_id: str, file: str | Path, current: DictConfig, *, out: str | Path | None = None,
                 keep: Sequence[str] = (), sep: str | None = None, batch_size: int | None = None,
                 device: str = "auto", progress: bool = True, track: bool = True,
                 say: Any = print) -> PredictResult:
    """Score ``file`` with run ``run_id`` (from the store at ``current.tracking.uri``); see the module doc."""
    from bars.fileio import file_digest
    from bars.recorded import child_run, load_recorded_run
    from bars.run import group_column

    file = Path(file).expanduser().resolve()
    if not file.is_file():
        raise PredictError(f"file={file}: not found")
    rec = load_recorded_run(run_id, current, say=say)
    out_path = Path(out).expanduser().resolve() if out else default_out(rec.cfg, file, run_id)
    _out_format(out_path)
    if out_path == file:
        raise PredictError(f"out={out_path} is the input file")
    keep = tuple(keep)
    groups = group_column(rec.cfg, rec.spec)
    tags = {"stage": "predict", "source_run": run_id, "model": rec.model_label,
            "model_class": str(rec.cfg.model.name), "data": str(rec.cfg.data.name),
            "data_fingerprint": rec.record.tags.get("data_fingerprint"), "input": str(file), "output": str(out_path),
            "keep": ",".join(keep)}
    params = {"predict": {"file": str(file), "out": str(out_path), "keep": ",".join(keep), "sep": sep,
                          "batch_size": int(batch_size or rec.cfg.train.eval_batch_size), "device": device}}
    with cf.ThreadPoolExecutor(max_workers=1) as pool, child_run(
            rec, track, f"predict__{tags['model']}__{Path(tags['input']).name}", tags, params) as child:
        digest = pool.submit(file_digest, file, "sha256")  # the input's identity, read alongside the scoring
        rows, metrics, seconds = score_file(rec, file, out_path, keep=keep, sep=sep, batch_size=batch_size,
                                            device=device, progress=progress, group_column=groups)
        result = PredictResult(run_id, out_path, rows, seconds, {f"predict_{k}": v for k, v in metrics.items()},
                               getattr(child, "run_id", None), digest.result(), file_digest(out_path, "sha256"))
        if child is not None:
            child.set_tags({"input_sha256": result.input_sha256, "output_sha256": result.output_sha256})
            child.log_metrics({"rows": rows, "seconds": seconds, "rows_per_s": result.rows_per_s, **result.metrics})
            summary = {k: (str(v) if isinstance(v, Path) else v) for k, v in asdict(result).items()}
            child.log_text(json.dumps({**summary, "keep": list(keep), "rows_per_s": result.rows_per_s}, indent=1),
                           "predict.json")
    say(summary_text(rec, result))
    return result


def summary_text(rec: Any, r: PredictResult) -> str:
    lines = [(f"bars predict: {r.rows:,} rows from {rec.describe()} in {r.seconds:.1f} s "
             f"({r.rows_per_s:,.0f} rows/s) -> {r.out}")]
    if r.metrics:
        lines.append("  " + "   ".join(f"{k} {v:.6f}" for k, v in r.metrics.items()))
    if r.predict_run_id:
        lines.append(f"  recorded as MLflow run {r.predict_run_id} (child of {r.run_id})")
    return "\n".join(lines)


def parse_options(argv: Sequence[str], allowed: Sequence[str], command: str) -> tuple[dict[str, str], list[str]]:
    """``key=value`` options of the command (not config keys) apart from the Hydra overrides of paths/tracking."""
    opts: dict[str, str] = {}
    rest: list[str] = []
    for a in argv:
        key, eq, value = a.partition("=")
        if eq and key.lstrip("+") in allowed:
            opts[key.lstrip("+")] = value
        elif a.startswith("-") or a.startswith(ALLOWED_OVERRIDE_PREFIXES):
            rest.append(a)
        else:
            raise PredictError(f"bars {command}: unknown argument {a!r}: expected {', '.join(k + '=' for k in allowed)}"
                               f" or paths.*/tracking.* overrides")
    return opts, rest


def main() -> int:
    """``bars predict run_id=<id> file=<path> [out=<path>] [keep=a,b] [sep=,] [batch_size=n] [device=cpu]``."""
    from bars.config import hydra_command
    from bars.data.errors import DataError
    from bars.recorded import RecordedRunError

    try:
        opts, rest = parse_options(sys.argv[1:], OPTIONS, "predict")
    except PredictError as e:
        print(str(e), file=sys.stderr)
        return 2
    if not opts.get("run_id") or not opts.get("file"):
        print("usage: bars predict run_id=<MLflow run id> file=<csv|tsv|parquet> [out=<.parquet|.csv>] "
              "[keep=col1,col2]   (make predict RUN=<id> FILE=<path> [OUT=<path>] [KEEP=col1,col2])", file=sys.stderr)
        return 2
    sys.argv = [sys.argv[0], *rest]

    def body(cfg: DictConfig, _: list[str]) -> int:
        predict_file(opts["run_id"], opts["file"], cfg, out=opts.get("out") or None,
                     keep=[k for k in opts.get("keep", "").split(",") if k], sep=opts.get("sep") or None,
                     batch_size=int(opts["batch_size"]) if opts.get("batch_size") else None,
                     device=opts.get("device") or "auto", progress=opts.get("progress", "true") != "false")
        return 0

    return hydra_command("predict", body, (PredictError, RecordedRunError, DataError, ValueError), error_code=1)


if __name__ == "__main__":
    raise SystemExit(main())
