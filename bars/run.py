"""One run: prepare/load data -> build the model -> fit under the BARS protocol -> test -> record in MLflow.

:func:`train_one` is the plain function (sweeps, finals and tests call it with a composed config); :func:`main`
is the thin Hydra shell behind ``bars train`` / ``make train MODEL=<m> DATA=<d> ARGS="overrides"``.

Ordering: the whole config is validated first (``bars.validate``), then the data is prepared and loaded and the
model built; only then is the MLflow run opened, so a bad value, a missing file or bad raw input never leaves a
run behind (nor a data folder, for a bad value). Inside the run: fit, test, records. Each epoch's metrics are
handed to the run's writer thread before the caller's ``on_epoch`` runs and are in the store before the run ends,
whatever ``on_epoch`` does: a sweep that prunes the trial from its ``on_epoch`` (by raising) still finds the epoch
recorded (ending the run waits for every write in flight). Any exception (``NonFiniteLossError``
included) ends the run FAILED with the error in its tags and propagates, with a note naming the MLflow run.
Final metrics (``val_*`` of the best epoch, ``test_*``) are logged at step = last epoch so that they are what
MLflow shows as each metric's latest value.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import sys
import time
import traceback
from collections.abc import Callable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from bars.compute import SampleMeter
from bars.config import hydra_command, to_container
from bars.plotting import learning_curve, render_png
from bars.timing import PhaseTimer, as_metrics

if TYPE_CHECKING:  # the trainer imports torch: only at run time, inside train_one
    from bars.data.spec import FeatureSpec
    from bars.train import EpochLog, FitResult

EpochCallback = Callable[["EpochLog"], None]


@dataclass
class RunResult:
    """What one run produced. ``metrics`` has ``val_<m>`` (best epoch) and ``test_<m>`` for every evaluated
    metric of the registry (auc, logloss, gauc when the dataset has a group column, ...), ``monitor`` (the
    monitored value at the best epoch), n_params, epochs, best_epoch, wall_seconds, fit_seconds,
    seconds_per_epoch and samples_per_s_mean."""

    run_id: str | None
    metrics: dict[str, float]
    epochs: int
    best_epoch: int
    seconds: float
    n_params: int
    device: str
    stop_reason: str = ""
    checkpoint: Path | None = None
    history: list[EpochLog] = field(default_factory=list)
    tracking_uri: str | None = None
    # where the wall time went (bars.timing.RUN_PHASES, "other", "total"): the whole call, the run's end included
    phases: dict[str, float] = field(default_factory=dict)
    # rows trained / validated / tested (bars.compute: compute_train_samples, compute_valid_samples, ...)
    samples: dict[str, int] = field(default_factory=dict)


class _NullRun:
    """Stands in for a TrackedRun when tracking is disabled."""

    run_id = None
    uri = None

    def log(self, metrics: Mapping[str, Any] | None = None, step: int | None = None, *, params: Any = None,
            tags: Mapping[str, Any] | None = None, wait: bool = True) -> None: ...

    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None, *, wait: bool = True) -> None: ...

    def log_params(self, params: Any, *, wait: bool = True) -> None: ...

    def set_tags(self, tags: Mapping[str, Any]) -> None: ...

    def log_artifact(self, path: Any, artifact_path: str | None = None) -> None: ...

    def log_dict(self, d: Any, name: str) -> None: ...

    def log_text(self, text: str, name: str) -> None: ...

    def log_figure(self, fig: Any, name: str) -> None: ...


def run_name(cfg: DictConfig) -> str:
    return f"{cfg.model.id}__{cfg.data.name}__s{cfg.seed}"


class _EndArtifacts:
    """A run's closing artifacts: history.json and the learning curve PNG. Created when ``fit`` returns, it hands
    the rendering to the process's render helper (``bars.plotting.Renderer``: another process, so the test pass
    that runs meanwhile does not compete with matplotlib for the GIL); :meth:`files` collects the PNG. When the
    helper is unavailable the PNG is rendered here, in :meth:`files` (after the test pass). A failure to render is
    a warning and history.json is still logged: it never fails the run or loses a metric."""

    def __init__(self, history: list[EpochLog], title: str) -> None:
        from bars.plotting import RenderUnavailable, renderer

        self._title = title
        self._history = json.dumps([asdict(h) for h in history], indent=1)
        self._ticket: int | None = None
        try:
            self._ticket = renderer().submit(self._history, title)
        except RenderUnavailable:
            pass

    def _png(self) -> bytes | None:
        from bars.plotting import RenderUnavailable, history_records, renderer

        error: BaseException | None = None
        if self._ticket is not None:
            ticket, self._ticket = self._ticket, None
            try:
                return renderer().result(ticket)
            except RenderUnavailable:
                pass  # rendered here instead
            except RuntimeError as exc:  # the helper's rendering raised: try here (the same error, most likely)
                error = exc
        try:
            return render_png(learning_curve(history_records(self._history), self._title))
        except Exception as exc:  # noqa: BLE001 - a warning: the run keeps its other records
            error = exc
        import warnings

        warnings.warn(f"bars.run: the learning curve was not rendered: {type(error).__name__}: {error}",
                      RuntimeWarning, stacklevel=3)
        return None

    def files(self) -> dict[str, Any]:
        """``{"learning_curve.png": bytes, "history.json": text}`` (the PNG left out, with a warning, when it
        could not be rendered)."""
        png = self._png()
        return {**({"learning_curve.png": png} if png is not None else {}), "history.json": self._history}

    def abandon(self) -> None:
        """The run failed before collecting its files: the helper's reply is discarded."""
        if self._ticket is not None:
            from bars.plotting import renderer

            renderer().drop(self._ticket)
            self._ticket = None


def _fmt_rate(x: float) -> str:
    return f"{x / 1e3:.1f}k" if x < 1e6 else f"{x / 1e6:.2f}M"


def progress_line(log: EpochLog, max_epochs: int) -> str:
    mark = " *" if log.improved else ""
    vals = "  ".join(f"{k} {v:.5f}" for k, v in log.val_metrics().items())
    return (f"epoch {log.epoch:>3}/{max_epochs}  train_loss {log.train_loss:.5f}  {vals}  lr {log.lr:.0e}  "
            f"{_fmt_rate(log.samples_per_s)} samples/s  {log.seconds:.1f}s{mark}")


@contextlib.contextmanager
def _tracked(cfg: DictConfig, tags: dict[str, Any], parent_run_id: str | None, timer: PhaseTimer,
             enabled: bool = True) -> Iterator[Any]:
    """The run (opening and ending it timed as ``tracking``). The config is resolved once (OmegaConf's resolve
    is the slow part of flattening it): the run's params are made from it and config.yaml is written from it.
    Yields ``(run, resolved config)``. ``enabled=False`` (a process other than 0 of a multi-process run) or
    ``tracking.enabled=false``: no run."""
    if not cfg.tracking.enabled or not enabled:
        yield _NullRun(), None
        return
    from bars.tracking_helper import tracker_for

    with contextlib.ExitStack() as stack:
        with timer.phase("tracking"):
            tracker = tracker_for(cfg)  # through the tracking helper (bars.tracking_helper) or in this process
            resolved = OmegaConf.to_container(cfg, resolve=True)
            run = stack.enter_context(tracker.run(run_name(cfg), tags=tags, params=resolved,
                                                  parent_run_id=parent_run_id))
        stack.callback(timer.start, "tracking")  # unwound first: ending the run is timed as tracking
        yield run, resolved
    timer.stop("tracking")


@dataclass
class _Setup:
    """What a run needs, made before its MLflow run is opened."""

    folder: Path
    ds: Any
    groups: str | None
    train_cfg: Any
    device: Any
    model: Any
    n_params: int


def _setup(cfg: DictConfig, seed: int, timer: PhaseTimer, stage: Any = None, ctx: Any = None) -> _Setup:
    with timer.phase("prepare"):
        from bars.data.prepare import prepare

        if ctx is None:
            folder = Path(prepare(cfg))
        else:  # several processes: process 0 builds (or checks) the dataset folder, then the others reuse it
            from bars.distributed import barrier

            folder = Path(prepare(cfg)) if ctx.is_main else None
            barrier()
            if folder is None:
                folder = Path(prepare(cfg, quiet=True))
    with timer.phase("load"):
        from bars.data.loader import load_dataset

        ds = load_dataset(folder, loader=_loader_config(cfg))  # loader.mode memory | stream | auto (bars.data.stream)
        groups = group_column(cfg, ds.spec)
    with timer.phase("build"):
        from bars.models import build
        from bars.train import TrainConfig, resolve_device, seed_everything

        train_cfg = TrainConfig.from_cfg(cfg.train)
        if train_cfg.reuse_freed_memory:  # before the model's first buffers (bars.heap); tag host_heap
            from bars.heap import reuse_freed_memory

            reuse_freed_memory()
        if ctx is not None:
            from bars.distributed import device_for

            device = device_for(ctx, train_cfg.device)
        else:
            device = resolve_device(train_cfg.device)
        seed_everything(seed)
        model = build(cfg.model.name, ds.spec, to_container(cfg.model.params))
        if stage is not None:  # a method's stage (bars.methods): its training settings, the backbone wrapped
            train_cfg = stage.train_config(train_cfg)
            model = stage.wrap(model, ds.spec, train_cfg, seed)
            if callable(getattr(stage, "bind_data", None)):  # a stage that reads a split itself (DNIS: valid)
                stage.bind_data(ds.splits)
    return _Setup(folder, ds, groups, train_cfg, device, model, int(sum(p.numel() for p in model.parameters())))


def train_one(cfg: DictConfig, *, on_epoch: EpochCallback | None = None, parent_run_id: str | None = None,
              extra_tags: Mapping[str, Any] | None = None, quiet: bool = False, stage: Any = None) -> RunResult:
    """Train and test one model on one dataset under ``cfg`` (a composed config); record it in MLflow.

    ``on_epoch(EpochLog)`` runs after the epoch is handed to the run's writer (in the store before the run ends,
    not necessarily while ``on_epoch`` runs); an exception it raises (e.g. optuna's TrialPruned)
    ends the MLflow run FAILED and propagates. ``extra_tags`` override the default tags (``stage=single``...).
    Returns a :class:`RunResult`; ``run_id`` is None when ``cfg.tracking.enabled`` is false.

    A config with a ``method`` (``method=optfs``, conf/method/) runs that method's stages instead
    (:func:`bars.methods.run_method`: a parent run with one child run per stage; the result is the final stage's).
    ``stage`` is one such stage (:class:`bars.methods.StageHooks`): it adjusts the train config, wraps the built
    model, sees every epoch and adds its own metrics after fit; callers other than bars.methods leave it None.
    """
    if stage is None and _method_of(cfg) is not None:
        from bars.methods import run_method

        return run_method(cfg, on_epoch=on_epoch, parent_run_id=parent_run_id, extra_tags=extra_tags, quiet=quiet)
    timer = PhaseTimer()
    timer.start("config")
    from bars.validate import validate

    validate(cfg, "train")  # before any file is written or any MLflow run is opened
    ctx = _distributed(cfg)  # one of several processes training this run (train.processes > 1), or None
    quiet = quiet or (ctx is not None and not ctx.is_main)
    tracked = bool(cfg.tracking.enabled) and (ctx is None or ctx.is_main)  # only process 0 records
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    seed = int(cfg.seed)
    if tracked:  # the tracking helper opens the store, the learning curve's render helper imports matplotlib,
        # while this run loads and builds
        from bars import tracking_helper
        from bars.plotting import renderer

        if tracking_helper.wanted(cfg):
            tracking_helper.start(tracking_helper.options_of(cfg))
        renderer().start()
    timer.stop("config")
    setup = _setup(cfg, seed, timer, stage, ctx)
    timer.start("config")
    tags: dict[str, Any] = {"model": cfg.model.id, "model_class": cfg.model.name, "data": cfg.data.name,
                            "seed": seed, "stage": "single"}
    if cfg.data.get("protocol_name"):  # e.g. bars-seq (validated on the test set, as BARS) or holdout
        tags["protocol_name"] = str(cfg.data.protocol_name)
    if cfg.data.get("alias"):  # the name the user typed (DATA=criteo -> criteo_x1)
        tags["data_alias"] = str(cfg.data.alias)
    if ctx is not None:  # e.g. "2 processes (gloo)": how the run was trained (each process's device: cuda:<rank>)
        tags["processes"] = ctx.world_size
        tags["distributed_backend"] = "nccl" if setup.device.type == "cuda" else "gloo"
    from bars.presets import preset_tags

    tags.update(preset_tags(cfg))  # preset, preset_source (the BARS README), preset_file
    tags.update(_setup_tags(setup))  # known before the run opens: recorded with its creation, no call of their own
    tags.update(dict(extra_tags or {}))
    timer.stop("config")

    run_id: str | None = None
    meter = SampleMeter()
    try:
        with _tracked(cfg, tags, parent_run_id, timer, enabled=tracked) as (run, resolved):
            run_id = run.run_id
            result = _train_in_run(cfg, run, setup, seed, on_epoch, say, timer, meter, stage, resolved, ctx)
    except BaseException as exc:
        with contextlib.suppress(AttributeError):  # what the run processed before it failed (a sweep counts it)
            exc.compute_samples = meter.as_attrs()  # type: ignore[attr-defined]
        if run_id is not None:
            try:  # callers (e.g. the sweep, on a pruned trial) find the run without parsing text
                exc.run_id = run_id  # type: ignore[attr-defined]
            except AttributeError:
                pass
            exc.add_note(f"MLflow run {run_id} ended {'FAILED' if isinstance(exc, Exception) else 'KILLED'} "
                         f"(tracking uri {cfg.tracking.uri})")
        raise
    result.tracking_uri = run.uri
    result.phases = timer.breakdown()
    return result


def _distributed(cfg: DictConfig) -> Any:
    """This process's :class:`bars.distributed.Context` when ``train.processes > 1`` (the process group joined),
    else None."""
    processes = int(cfg.train.get("processes", 1) or 1)
    from bars import distributed

    ctx = distributed.context(processes)
    if ctx is not None:
        distributed.init(ctx, distributed.device_for(ctx, str(cfg.train.get("device", "auto"))))
    return ctx


def _method_of(cfg: DictConfig) -> str | None:
    """The method a config asks for (``method.name``), or None for plain training (no ``method`` block, or
    ``method=none``)."""
    node = cfg.get("method")
    name = None if node is None else node.get("name")
    return None if name in (None, "none") else str(name)


def _loader_config(cfg: DictConfig) -> Any:
    """The ``loader:`` block (absent from configs recorded before it existed: the defaults)."""
    from bars.data.stream import LoaderConfig

    return LoaderConfig.from_cfg(to_container(cfg.get("loader")))


def group_column(cfg: DictConfig, spec: FeatureSpec) -> str | None:
    """``data.group_column`` (the feature grouped metrics such as gAUC group by), checked against the spec."""
    col = cfg.data.get("group_column")
    if col is None:
        return None
    if str(col) not in spec.names and str(col) not in spec.meta:
        raise ValueError(f"data.group_column={col!r} is not a feature or meta column of {cfg.data.name} (features: "
                         f"{spec.names}, meta: {list(spec.meta)})")
    return str(col)


def _setup_tags(setup: _Setup) -> dict[str, Any]:
    from bars.heap import state as heap_state

    ds = setup.ds
    return {"data_fingerprint": ds.fingerprint, "data_folder": str(setup.folder),
            **{f"rows_{s}": len(ds.splits[s]) for s in ("train", "valid", "test")},
            **{f"loader_{s}": m for s, m in (ds.modes or {}).items()},  # memory | stream (bars.data.stream)
            "device": str(setup.device), "n_params": setup.n_params, "host_heap": heap_state()}


def _train_in_run(cfg: DictConfig, run: Any, setup: _Setup, seed: int, on_epoch: EpochCallback | None,
                  say: Callable[..., None], timer: PhaseTimer, meter: SampleMeter,
                  stage: Any = None, resolved: Any = None, ctx: Any = None) -> RunResult:
    from bars.train import fit

    folder, ds, groups = setup.folder, setup.ds, setup.groups
    train_cfg, device, model, n_params = setup.train_cfg, setup.device, setup.model, setup.n_params
    n_rows = {s: len(ds.splits[s]) for s in ("train", "valid", "test")}
    tracked = run.run_id is not None

    def phase(name: str) -> Any:  # an untracked run's no-op calls are not timed: no tracking/artifacts phase
        return timer.phase(name) if tracked else contextlib.nullcontext()

    ckpt_dir = Path(cfg.paths.checkpoints) / (run.run_id or f"untracked-{time.strftime('%Y%m%d-%H%M%S')}")
    ckpt = ckpt_dir / "best.pt"
    if tracked:  # the data and model tags came with the run's creation (_setup_tags)
        with timer.phase("tracking"):  # the start artifacts in one store call (log_artifacts of a folder)
            from bars.environment import environment_report
            from bars.tracking_helper import dict_text

            files: dict[str, Any] = {
                "config.yaml": dict_text(resolved, "config.yaml").encode("utf-8")}
            files.update({name: folder / name for name in ("feature_spec.json", "manifest.json")
                          if (folder / name).exists()})
            files["env.txt"] = environment_report()
            run.log_files(files)
    say(f"bars train: {cfg.model.id} on {cfg.data.name} (fingerprint {ds.fingerprint}), seed {seed}, "
        f"{n_params:,} parameters, device {device}; rows train {n_rows['train']:,} valid {n_rows['valid']:,} "
        f"test {n_rows['test']:,}" + ("" if ctx is None else f"; {ctx.world_size} processes") + ("" if set((ds.modes or {}).values()) <= {"memory"} else
                                     f" (streamed: {', '.join(k for k, m in ds.modes.items() if m == 'stream')})") + (f"; MLflow run {run.run_id}" if run.run_id else "; tracking disabled"))

    def on_epoch_tracked(log: EpochLog) -> None:
        if stage is not None:  # e.g. OptFS anneals its temperature and keeps its rewind weights here
            stage.on_epoch(log)
        per_epoch = {"train_loss": log.train_loss, **log.val_metrics(), "monitor": log.monitor, "lr": log.lr,
                     "samples_per_s": log.samples_per_s, "epoch_seconds": log.seconds}
        with phase("tracking"):  # handed to the run's writer before the caller's on_epoch runs (a sweep prunes
            # there): the write overlaps the callback and the next epoch; the run's end waits for it, also when
            # on_epoch raises (issue 16: a waited SQLite commit per epoch was a sweep trial's fixed cost)
            run.log_metrics({k: v for k, v in per_epoch.items() if math.isfinite(v)}, step=log.epoch, wait=False)
        say(progress_line(log, train_cfg.max_epochs))
        if on_epoch is not None:
            with timer.phase("on_epoch"):  # the caller's callback (a sweep reports to its study here)
                on_epoch(log)

    with timer.phase("epochs"):
        fit_result: FitResult = fit(model, ds.splits["train"], ds.splits["valid"], train_cfg, seed=seed,
                                    on_epoch=on_epoch_tracked,
                                    checkpoint_path=ckpt if ctx is None or ctx.is_main else None,
                                    group_column=groups, init=True if stage is None else stage.init, meter=meter,
                                    distributed=ctx)
    stage_metrics: dict[str, float] = {} if stage is None else dict(stage.finish(model))
    # the learning curve is rendered by the render helper (another process) while the test pass runs
    curve = _EndArtifacts(fit_result.history, f"{cfg.model.id} on {cfg.data.name} (seed {seed})") \
        if tracked and fit_result.history else None
    try:
        return _finish_run(cfg, run, setup, fit_result, stage_metrics, curve, ckpt, phase, say, timer, meter, ctx)
    except BaseException:
        if curve is not None:
            curve.abandon()
        raise


def _finish_run(cfg: DictConfig, run: Any, setup: _Setup, fit_result: FitResult, stage_metrics: dict[str, float],
                curve: _EndArtifacts | None, ckpt: Path, phase: Callable[[str], Any], say: Callable[..., None],
                timer: PhaseTimer, meter: SampleMeter, ctx: Any = None) -> RunResult:
    """After ``fit``: the test pass, the checkpoint's digest, the summary call and the closing artifacts."""
    from bars.train import evaluate

    ds, groups, train_cfg, n_params, model = setup.ds, setup.groups, setup.train_cfg, setup.n_params, setup.model
    n_rows_test = len(ds.splits["test"])
    # the epochs less their training/validation passes and checkpoint writes: per-epoch bookkeeping
    timer.carve("epochs", "epoch_bookkeeping", fit_result.phase_seconds)
    with timer.phase("test"):
        test = evaluate(model, ds.splits["test"], train_cfg.eval_batch_size, fit_result.device, group_column=groups,
                        precision=train_cfg.precision, distributed=ctx)
        meter.test += n_rows_test

    with timer.phase("checkpoint"):
        if ckpt.exists():  # the best weights' identity: bars predict / bars export check the file against it
            from bars.fileio import file_digest

            ckpt_sha = file_digest(ckpt, "sha256")
        else:
            ckpt_sha = None

    wall = timer.elapsed()
    rates = [h.samples_per_s for h in fit_result.history]
    metrics: dict[str, float] = {
        **{f"val_{k}": v for k, v in fit_result.best_val.items()},
        **{f"test_{k}": v for k, v in test.items()},
        "monitor": fit_result.best_monitor,
        "n_params": float(n_params), "epochs": float(fit_result.epochs),
        "best_epoch": float(fit_result.best_epoch),
        "wall_seconds": wall, "fit_seconds": fit_result.seconds, "seconds_per_epoch": fit_result.seconds_per_epoch,
        "samples_per_s_mean": sum(rates) / len(rates) if rates else 0.0,
        # the size of the model as stored: its best checkpoint's bytes (a method's final stage: its baked model's)
        **({"model_bytes": float(ckpt.stat().st_size)} if ckpt.exists() else {}),
        **stage_metrics,
    }
    # the breakdown of the wall time so far (bars.timing): the final tracking call itself is not in it
    timings = as_metrics(timer.breakdown())
    with phase("tracking"):  # one call: the summary metrics, the breakdown and the final tags; handed to the
        # run's writer thread (it overlaps the wait for the learning curve), in the store before the run ends
        run.log({**metrics, **timings}, step=max(fit_result.epochs, 1),
                tags={"stop_reason": fit_result.stop_reason, "best_epoch": fit_result.best_epoch,
                      "cuda_graph": fit_result.cuda_graph,
                      "device": fit_result.device, "checkpoint": str(ckpt),
                      **({"checkpoint_sha256": ckpt_sha} if ckpt_sha is not None else {})}, wait=False)
    # after the metrics (nothing measured waits on the render helper): the curve rendered meanwhile, and
    # history.json, in one call; the wait and the upload are in RunResult.phases, not in the time_* metrics
    with phase("artifacts"):
        if curve is not None:  # nothing to render for an untracked run
            run.log_files(curve.files())

    result = RunResult(run_id=run.run_id, metrics=metrics, epochs=fit_result.epochs,
                       best_epoch=fit_result.best_epoch, seconds=wall, n_params=n_params, device=fit_result.device,
                       stop_reason=fit_result.stop_reason, checkpoint=ckpt if ckpt.exists() else None,
                       history=fit_result.history, samples=meter.as_attrs())
    say(summary(cfg, result))
    return result


def summary(cfg: DictConfig, r: RunResult) -> str:
    m = r.metrics
    nan = float("nan")
    # a multi-task run has <metric>_<task> keys only: one val/test line per task
    tasks = [k[len("test_auc_"):] for k in m if k.startswith("test_auc_")] if "test_auc" not in m else [""]
    scored = []
    for t in tasks:
        sfx, name = (f"_{t}", f" ({t})") if t else ("", "")
        scored += [
            (f"  val   AUC {m.get('val_auc' + sfx, nan):.5f}   logloss {m.get('val_logloss' + sfx, nan):.5f}"
             f"   (best epoch {r.best_epoch}){name}"),
            f"  test  AUC {m.get('test_auc' + sfx, nan):.5f}   logloss {m.get('test_logloss' + sfx, nan):.5f}{name}",
        ]
    lines = [
        "",
        f"== {cfg.model.id} on {cfg.data.name} (seed {cfg.seed}) ==",
        *scored,
        (f"  {r.epochs} epochs ({r.stop_reason or 'done'}), {r.seconds:.1f}s, "
        f"{m['samples_per_s_mean']:,.0f} samples/s, {r.n_params:,} parameters, device {r.device}"),
    ]
    if r.run_id:
        lines.append(f"  MLflow run {r.run_id} in experiment '{cfg.tracking.experiment}' "
                     f"({cfg.tracking.uri}); open it with `make ui`")
    else:
        lines.append("  tracking disabled (tracking.enabled=false): nothing recorded in MLflow")
    return "\n".join(lines)


def _end_on_sigterm() -> None:
    """SIGTERM (job runners, ``kill``) -> SystemExit, so the MLflow run ends KILLED instead of staying RUNNING."""
    import signal

    def _handler(signum: int, frame: Any) -> None:
        raise SystemExit(128 + signum)

    with contextlib.suppress(ValueError):  # not in the main thread
        signal.signal(signal.SIGTERM, _handler)


def housekeeping(cfg: DictConfig, command: str = "train") -> None:
    """Before a command uses the store: send records kept locally while it was unreachable (``bars sync``), then
    end runs of this experiment left RUNNING by killed processes on this host (kill -9, OOM, power loss), and
    remove the checkpoint temporaries such processes left. For ``bars train`` through the tracking helper
    (``bars.tracking_helper``), the helper does the store's part, started here, while this process goes on."""
    from bars.fileio import remove_stale_temps

    remove_stale_temps(Path(str(cfg.paths.checkpoints)), recursive=True)
    from bars import tracking_helper

    if command == "train" and tracking_helper.wanted(cfg) and \
            tracking_helper.start(tracking_helper.options_of(cfg), command) is not None:
        return  # the helper does it while this process goes on; it says what it did when the run opens
    try:
        from bars.tracking import reconcile, sync_spools

        sync_spools(str(cfg.tracking.uri), cfg.tracking.get("spool_dir"),
                    say=lambda m: print(f"bars {command}: {m}", file=sys.stderr, flush=True))
        ended = reconcile(cfg.tracking.uri, str(cfg.tracking.experiment))
        if ended:
            print(f"bars {command}: marked {len(ended)} run(s) of dead processes FAILED: {', '.join(ended)}",
                  flush=True)
    except Exception as exc:  # noqa: BLE001 - housekeeping must never block a run
        print(f"bars {command}: could not reconcile stale runs: {type(exc).__name__}: {exc}", file=sys.stderr)


def expected_errors() -> tuple[type[BaseException], ...]:
    """Errors whose message says it all (bad config, bad input, full disk, diverged training): no traceback."""
    from bars.data.errors import DataError
    from bars.distributed import DistributedError
    from bars.fileio import DiskFullError
    from bars.train import NonFiniteLossError
    from bars.validate import ConfigError

    return (ConfigError, DataError, DiskFullError, NonFiniteLossError, DistributedError)


def _train_command(cfg: DictConfig, overrides: list[str]) -> int:
    _end_on_sigterm()
    from bars import distributed, tracking_helper
    from bars.validate import validate

    try:
        validate(cfg, "train")  # a ConfigError: `bars train: error: ...`, exit 2, nothing opened or written
    except BaseException:
        tracking_helper.discard()
        raise
    processes = int(cfg.train.get("processes", 1) or 1)
    rank = int(os.environ.get("RANK", "0")) if processes > 1 else 0  # this process's rank among the run's
    launcher = processes > 1 and distributed.launched_world() is None
    if launcher or not (cfg.tracking.enabled and rank == 0) or _method_of(cfg) is not None:
        tracking_helper.discard()  # no run of this process writes through it (a method's parent run holds mlflow)
    if launcher:  # start the processes (each runs this command)
        return distributed.launch(processes, overrides)
    if cfg.tracking.enabled and rank == 0:
        housekeeping(cfg)
    ok = False
    try:
        train_one(cfg)
        ok = True
    except KeyboardInterrupt:
        print("\nbars train: interrupted; the MLflow run was ended KILLED", file=sys.stderr, flush=True)
        return 130
    except Exception as exc:  # noqa: BLE001 - any failure: clear message, non-zero exit
        if rank:  # another process of a multi-process run: one line (most often: process 0 failed first)
            first = str(exc).splitlines()[0] if str(exc) else ""
            print(f"bars train (process {rank} of {distributed.launched_world()}): stopped: {type(exc).__name__}: "
                  f"{first}", file=sys.stderr, flush=True)
            return 1
        if not isinstance(exc, expected_errors()):
            traceback.print_exc(file=sys.stderr)
        notes = " ".join(getattr(exc, "__notes__", []))
        print(f"\nbars train: FAILED: {type(exc).__name__}: {exc}" + (f"\n  {notes}" if notes else ""),
              file=sys.stderr, flush=True)
        return 1
    finally:
        distributed.shutdown(wait=ok)
    return 0


# What every run imports (torch, the trainer, the models, the data engine, hydra), imported up front by startup()
RUN_MODULES = ("torch", "hydra", "omegaconf", "bars.distributed", "bars.train", "bars.models", "bars.data.prepare",
               "bars.data.loader")


def startup() -> None:
    """``bars train`` as its own process, before :func:`main` (bars.cli): the tracking helper started first (it
    imports mlflow while this process imports the rest), then :data:`RUN_MODULES` imported with the garbage
    collector paused and what they leave frozen (bars.startup): ~0.2 s less per process (issue 16)."""
    import importlib

    from bars import tracking_helper
    from bars.startup import collector_paused

    tracking_helper.prestart()
    with collector_paused():
        for name in RUN_MODULES:
            importlib.import_module(name)


def main() -> int:
    """``bars train [hydra overrides]``: one run; exits non-zero with a clear error when the run fails."""
    from bars import tracking_helper
    from bars.validate import ConfigError

    tracking_helper.prestart()  # imports mlflow and the store's modules while this process composes and loads
    return hydra_command("train", _train_command, (ConfigError,))


__all__ = ["RUN_MODULES", "RunResult", "expected_errors", "housekeeping", "learning_curve", "main", "progress_line",
           "startup", "summary", "train_one"]
