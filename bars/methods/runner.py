"""Running a method: the parent MLflow run, one child run per stage, resume from the stages that finished.

The work folder of one (model, data, train, method, seed, preset) config is
``paths.results/methods/<method>__<model id>__<data>__s<seed>__<fingerprint>/``: ``method.json`` (the parent run
id), then per stage ``<stage>/`` with the stage's own files and ``done.json`` (written atomically, last: its
presence means the stage finished). A rerun after a kill reattaches to the parent run, skips the stages with a
``done.json`` and runs the rest; a rerun of a method that finished returns its recorded result and starts
nothing.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bars.config import fingerprint, to_container
from bars.fileio import atomic_write_text
from bars.methods import METHODS, method_config, method_name
from bars.run import RunResult, train_one

__all__ = ["read_done", "run_method", "work_folder"]

# what makes two method runs the same run (the rest of the config does not change what is computed)
_KEY_SECTIONS = ("model", "data", "train", "method", "seed", "preset", "protocol")


def work_folder(cfg: DictConfig) -> Path:
    key = fingerprint({k: to_container(cfg.get(k)) for k in _KEY_SECTIONS}, 12)
    name = f"{method_name(cfg)}__{cfg.model.id}__{cfg.data.name}__s{cfg.seed}__{key}"
    return Path(str(cfg.paths.results)) / "methods" / name


def read_done(folder: Path) -> dict[str, Any] | None:
    """A finished stage's record (``done.json``), or None when the stage has not finished."""
    path = folder / "done.json"
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    atomic_write_text(path, json.dumps(data, indent=1, sort_keys=True))


def _result_of(done: Mapping[str, Any]) -> RunResult:
    return RunResult(run_id=done.get("run_id"), metrics={k: float(v) for k, v in done["metrics"].items()},
                     epochs=int(done["epochs"]), best_epoch=int(done["best_epoch"]), seconds=float(done["seconds"]),
                     n_params=int(done["n_params"]), device=str(done["device"]),
                     stop_reason=str(done.get("stop_reason", "")),
                     checkpoint=Path(done["checkpoint"]) if done.get("checkpoint") else None)


def run_method(cfg: DictConfig, *, on_epoch: Any = None, parent_run_id: str | None = None,
               extra_tags: Mapping[str, Any] | None = None, quiet: bool = False,
               folder: Path | None = None) -> RunResult:
    """Run every stage of ``cfg``'s method over the backbone ``cfg.model``; return the parent run's result (the
    final stage's metrics plus the method's own figures). ``on_epoch`` (a sweep's pruning callback) sees the final
    stage's epochs; ``parent_run_id`` (a sweep) becomes the method run's parent; ``extra_tags`` go to the method's
    run (its ``stage`` tag too: ``trial``, ``final``...); ``folder`` replaces the config's work folder
    (``bars reproduce``: a fresh one, so nothing is resumed)."""
    from bars.validate import validate

    validate(cfg, "train")
    say = (lambda *a, **k: None) if quiet else (lambda *a, **k: print(*a, **k, flush=True))
    name = str(method_name(cfg))
    mcfg = method_config(cfg)
    module = importlib.import_module(METHODS[name][1])
    stage_names: list[str] = list(module.STAGES)
    folder = work_folder(cfg) if folder is None else Path(folder)
    state_path = folder / "method.json"
    state = json.loads(state_path.read_text()) if state_path.exists() else {}
    backbone = str(cfg.model.id)
    t0 = time.perf_counter()

    last_done = read_done(folder / stage_names[-1])
    if last_done is not None and state.get("finished"):
        say(f"bars train: {name} over {backbone} already finished in {folder} (MLflow run {state.get('parent_run_id')}); "
            "nothing to do (delete the folder to run it again)")
        return _result_of(state["result"])

    tags: dict[str, Any] = {"model": f"{backbone}+{name}", "backbone": backbone, "model_class": str(cfg.model.name),
                            "method": name, "data": str(cfg.data.name), "seed": int(cfg.seed), "stage": "single",
                            "method_folder": str(folder)}
    if cfg.data.get("protocol_name"):
        tags["protocol_name"] = str(cfg.data.protocol_name)
    from bars.presets import preset_tags

    tags.update(preset_tags(cfg))
    tags.update(dict(extra_tags or {}))
    parent: Any = None
    if cfg.tracking.enabled:
        from bars.tracking import tracker_of

        tracker = tracker_of(cfg)
        pid = state.get("parent_run_id")
        if pid and tracker.run_status(pid) is not None:
            parent = tracker.attach(pid)
            parent.set_tags({"resumed": "true"})
            say(f"bars train: resuming {name} over {backbone} (MLflow run {pid}, {folder})")
        else:
            parent = tracker.start_run(f"{backbone}+{name}__{cfg.data.name}__s{cfg.seed}", tags=tags, params=cfg,
                                       parent_run_id=parent_run_id)
            state = {"parent_run_id": parent.run_id}
            _write_json(state_path, state)
    try:
        results: dict[str, RunResult] = {}
        for i, stage_name in enumerate(stage_names):
            sdir = folder / stage_name
            done = read_done(sdir)
            if done is not None:
                say(f"bars train: {name} stage {stage_name} finished before (MLflow run {done.get('run_id')}): skipped")
                results[stage_name] = _result_of(done)
                continue
            last = i == len(stage_names) - 1
            stage = module.make_stage(stage_name, mcfg, folder)
            stage_tags = {"method": name, "stage": stage_name, "backbone": backbone, "model": backbone,
                          "method_stage_index": i}
            if parent is not None:
                stage_tags["method_run"] = parent.run_id
            own = getattr(stage, "run_stage", None)  # a stage that trains nothing (OptEmbed's evolution)
            if callable(own):
                r = own(cfg, parent_run_id=parent.run_id if parent is not None else None, extra_tags=stage_tags,
                        quiet=quiet)
            else:
                r = train_one(cfg, stage=stage, parent_run_id=parent.run_id if parent is not None else None,
                              extra_tags=stage_tags, quiet=quiet, on_epoch=on_epoch if last else None)
            _write_json(sdir / "done.json", {
                "run_id": r.run_id, "metrics": r.metrics, "epochs": r.epochs, "best_epoch": r.best_epoch,
                "seconds": r.seconds, "n_params": r.n_params, "device": r.device, "stop_reason": r.stop_reason,
                "checkpoint": str(r.checkpoint) if r.checkpoint else None})
            results[stage_name] = r
        final = results[stage_names[-1]]
        metrics = dict(final.metrics)
        for stage_name, r in results.items():
            metrics[f"{stage_name}_epochs"] = float(r.epochs)
            metrics[f"{stage_name}_seconds"] = float(r.seconds)
        metrics["method_seconds"] = sum(r.seconds for r in results.values())
        if parent is not None:
            parent.log(metrics, step=max(final.epochs, 1),
                       tags={"stop_reason": final.stop_reason, "best_epoch": final.best_epoch, "device": final.device,
                             "final_stage_run": final.run_id or "",
                             **({"checkpoint": str(final.checkpoint)} if final.checkpoint else {})})
            parent.end("FINISHED")
    except BaseException as exc:
        if parent is not None:
            with contextlib.suppress(Exception):
                if isinstance(exc, Exception):
                    parent.fail(exc)
                else:
                    parent.end("KILLED", {"error": f"{type(exc).__name__}: {exc}"[:500]})
            with contextlib.suppress(Exception):
                exc.run_id = parent.run_id  # type: ignore[attr-defined]
        raise
    result = RunResult(run_id=parent.run_id if parent is not None else None, metrics=metrics, epochs=final.epochs,
                       best_epoch=final.best_epoch, seconds=time.perf_counter() - t0, n_params=final.n_params,
                       device=final.device, stop_reason=final.stop_reason, checkpoint=final.checkpoint,
                       history=final.history, tracking_uri=getattr(parent, "uri", None))
    _write_json(state_path, {**state, "finished": True, "result": {
        "run_id": result.run_id, "metrics": metrics, "epochs": result.epochs, "best_epoch": result.best_epoch,
        "seconds": result.seconds, "n_params": result.n_params, "device": result.device,
        "stop_reason": result.stop_reason, "checkpoint": str(result.checkpoint) if result.checkpoint else None}})
    kept = metrics.get("features_kept")
    emb = metrics.get("embedding_params_kept")  # DNIS
    pairs = metrics.get("pair_params_kept")  # OptInter
    say(f"\n== {backbone}+{name} on {cfg.data.name} (seed {cfg.seed}) ==\n"
        f"  test  AUC {metrics.get('test_auc', float('nan')):.5f}   logloss {metrics.get('test_logloss', float('nan')):.5f}"
        + (f"   features kept {kept:.4f} ({int(metrics['features_kept_count'])}/{int(metrics['features_total'])})"
           if kept is not None else "")
        + (f"   embedding parameters kept {emb:.4f} ({int(metrics['embedding_params_kept_count'])}/"
           f"{int(metrics['embedding_params_total'])})" if emb is not None else "")
        + (f"   embedding rows kept {metrics['embedding_rows_kept']:.4f}" if "embedding_rows_kept" in metrics else "")
        + (f"   pairs memorise/factorise/naive {int(metrics['pairs_memorise'])}/{int(metrics['pairs_factorise'])}/"
           f"{int(metrics['pairs_naive'])}, pair parameters kept {pairs:.4f} ({int(metrics['pair_params_kept_count'])}/"
           f"{int(metrics['pair_params_total'])})" if pairs is not None else "")
        + (f"\n  MLflow run {result.run_id}" if result.run_id else ""))
    return result
