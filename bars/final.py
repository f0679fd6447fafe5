"""`bars final`: rerun a sweep's best configuration with several seeds, tagged ``stage=final`` in MLflow.

``make final MODEL=<m> DATA=<d> [SEEDS=5]`` reads ``sweeps/<model>__<data>/best.overrides`` (written by
``bars sweep``), and trains ``final.seeds`` runs with the full training protocol (no sweep epoch cap, no pruning):
seed ``protocol.seed + i`` for ``i = 0 .. seeds-1``, so run 0 uses exactly the protocol seed (the
BARS-comparable number the leaderboard reports) and the others measure the spread over training seeds (the data
split is fixed by ``data.split_seed``). Each run is tagged ``stage=final``, ``final_index``, ``final_seeds``,
``sweep_study`` and ``sweep_best_trial``; command-line overrides apply on top of the best configuration.

With a preset (``make final MODEL=<m> DATA=<d> PRESET=bars``) and no ``final.overrides`` file, the runs replay the
preset itself (no sweep needed): the published configuration, seeds from the protocol seed on, tagged ``preset``
and ``preset_source`` (``make bars-plan DATA=<d>`` prints one such command per published model). To replay the
best of a sweep started from a preset instead, name its file: ``final.overrides=sweeps/<m>__<d>__bars/best.overrides``.

Every final run's config is composed and validated (``bars.validate``) before the first one starts. A rerun
resumes: a seed whose run already FINISHED with the same configuration (tag ``final_key``: a fingerprint of the
resolved config without paths and tracking, plus the bars version and git commit) is not trained again, so a
``make final`` killed half-way and run again ends with exactly one run per seed; ``final.rerun=true`` trains
every seed anew; ``final.same_commit=false`` counts a FINISHED run of the same configuration made at another git
commit as done too (tag ``final_config_key``: the key without the commit; what ``bars board`` uses, so a board
resumed after new commits does not retrain its final runs).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bars.config import compose, fingerprint, hydra_command, to_container
from bars.metrics import MetricError, Monitor

_NOT_FORWARDED = ("seed", "final.", "sweep.role", "sweep.workers", "hydra.")


class FinalError(RuntimeError):
    pass


def overrides_path(cfg: DictConfig) -> Path:
    p = cfg.final.get("overrides")
    return Path(str(p)) if p else Path(str(cfg.sweep.dir)) / "best.overrides"


def read_overrides(path: Path) -> list[str]:
    if not path.exists():
        raise FinalError(f"{path} does not exist: run the sweep first (make sweep MODEL=.. DATA=..), or point "
                         f"final.overrides at a file of Hydra overrides (one per line)")
    lines = [ln.strip() for ln in path.read_text().splitlines()]
    return [ln for ln in lines if ln and not ln.startswith("#")]


def preset_only(cfg: DictConfig) -> bool:
    """True when the final runs replay a preset itself (``preset`` set, no ``final.overrides`` file named)."""
    return bool(cfg.get("preset")) and not cfg.final.get("overrides")


def final_configs(cfg: DictConfig, cli_overrides: Sequence[str]) -> list[tuple[int, int, DictConfig]]:
    """``(index, seed, config)`` per final run: the CLI overrides, then the best overrides (none when replaying a
    preset), then the seed (the preset, when named, sits under all of them)."""
    best = [] if preset_only(cfg) else read_overrides(overrides_path(cfg))
    base = [o for o in cli_overrides if not o.split("=", 1)[0].lstrip("+~").startswith(_NOT_FORWARDED)]
    # the command line wins over best.overrides for the keys it sets (e.g. train.device=cuda:1)
    cli_keys = {o.split("=", 1)[0].lstrip("+~") for o in base}
    merged = [o for o in best if o.split("=", 1)[0].lstrip("+~") not in cli_keys] + base
    protocol_seed = int(cfg.protocol.seed)
    out = []
    for i in range(int(cfg.final.seeds)):
        seed = protocol_seed + i
        out.append((i, seed, compose([*merged, f"seed={seed}"])))
    return out


# config blocks that do not change what a final run computes (where files go, where runs are recorded)
_NOT_KEYED = ("paths", "tracking", "hydra", "sweep", "final", "leaderboard")


def _key_fields(rcfg: DictConfig) -> dict[str, Any]:
    """What both keys fingerprint: the resolved config without :data:`_NOT_KEYED` blocks and the bars version."""
    from bars import __version__

    return {"config": {k: v for k, v in to_container(rcfg).items() if k not in _NOT_KEYED}, "bars": __version__}


def final_key(rcfg: DictConfig) -> str:
    """What identifies a final run's computation: the resolved config without :data:`_NOT_KEYED` blocks, plus
    the bars version and the git commit. Two runs with the same key give the same numbers (on CPU)."""
    from bars.environment import git_info

    return fingerprint({**_key_fields(rcfg), "commit": git_info().get("git_commit")}, 16)


def config_key(rcfg: DictConfig) -> str:
    """:func:`final_key` without the git commit (tag ``final_config_key``): the same configuration and bars
    version at any commit. ``final.same_commit=false`` resumes by it (a board resumed after new commits)."""
    return fingerprint(_key_fields(rcfg), 16)


@dataclass
class DoneRun:
    """A final run found FINISHED in MLflow with the same ``final_key``: not trained again."""

    run_id: str
    metrics: dict[str, float]


def _finished(cfg: DictConfig, rcfg: DictConfig) -> DoneRun | None:
    """The FINISHED final run of ``rcfg``'s computation: same ``final_key`` (the same commit), or with
    ``final.same_commit=false`` the same ``final_config_key`` (any commit)."""
    if not cfg.tracking.get("enabled", True) or cfg.final.get("rerun"):
        return None
    from bars.tracking import tracker_of

    tags = ({"stage": "final", "final_key": final_key(rcfg)} if cfg.final.get("same_commit", True) else
            {"stage": "final", "final_config_key": config_key(rcfg)})
    found = [r for r in tracker_of(cfg).find_runs(tags) if r.status == "FINISHED"]
    if not found:
        return None
    from bars.records import get_run

    rec = get_run(str(cfg.tracking.uri), max(found, key=lambda r: r.run_id).run_id)
    return DoneRun(rec.run_id, dict(rec.metrics))


def finished_runs(cfg: DictConfig, cli_overrides: Sequence[str] = ()) -> list[tuple[int, int, DoneRun | None]]:
    """``(index, seed, the FINISHED run with that seed's final_key or None)`` per final run of ``cfg``: what a
    rerun would skip, read from MLflow without training (``bars board`` shows it)."""
    return [(i, seed, _finished(cfg, rcfg)) for i, seed, rcfg in final_configs(cfg, cli_overrides)]


def run_final(cfg: DictConfig, cli_overrides: Sequence[str] = (), *,
              train_fn: Callable[..., Any] | None = None) -> list[Any]:
    from bars.validate import validate

    composed: dict[str, list] = {}

    def compose_runs() -> list[DictConfig]:
        composed["runs"] = final_configs(cfg, cli_overrides)
        return [c for _, _, c in composed["runs"]]

    validate(cfg, "final", final_runs=compose_runs)  # every run's config, before the first one starts
    if train_fn is None:
        from bars.run import housekeeping
        from bars.run import train_one as train_fn

        if cfg.tracking.get("enabled", True):
            housekeeping(cfg, "final")
    study = str(cfg.sweep.study)
    from_preset = preset_only(cfg)
    best_trial = None if from_preset else _best_trial_number(Path(str(cfg.sweep.dir)),
                                                             Monitor.parse(to_container(cfg.train.monitor),
                                                                           task=cfg.train.get("monitor_task")))
    runs = composed["runs"]
    what = (f"the {cfg.preset} preset of {cfg.model.get('id') or cfg.model.name} on {cfg.data.name}" if from_preset
            else f"{study} with {overrides_path(cfg)}")
    print(f"bars final: {len(runs)} runs of {what}: seeds {', '.join(str(s) for _, s, _ in runs)}", flush=True)
    results = []
    main = cfg.train.get("monitor_task")  # a multi-task run's main task: test_auc_<task>

    def _auc(m: dict, split: str = "test") -> float:
        return float(m.get(f"{split}_auc", m.get(f"{split}_auc_{main}", float("nan"))))

    for i, seed, rcfg in runs:
        key = final_key(rcfg)
        done = _finished(cfg, rcfg)
        if done is not None:
            m = done.metrics
            print(f"bars final: [{i + 1}/{len(runs)}] seed {seed}: done before (MLflow run {done.run_id}, same "
                  f"configuration): test_auc {_auc(m):.5f}", flush=True)
            results.append(done)
            continue
        tags = {"stage": "final", "final_index": i, "final_seeds": len(runs), "final_key": key,
                "final_config_key": config_key(rcfg),
                "protocol_seed_run": str(seed == int(rcfg.protocol.seed)).lower()}
        if not from_preset:
            tags["sweep_study"] = study
        if best_trial is not None:
            tags["sweep_best_trial"] = best_trial
        r = train_fn(rcfg, extra_tags=tags)
        m = r.metrics
        print(f"bars final: [{i + 1}/{len(runs)}] seed {seed}: val_auc {_auc(m, 'val'):.5f} "
              f"test_auc {_auc(m):.5f}", flush=True)
        results.append(r)
    aucs = [_auc(r.metrics) for r in results]
    if aucs:
        import statistics

        sd = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        print(f"bars final: test AUC {statistics.mean(aucs):.5f} +- {sd:.5f} over {len(aucs)} seeds; "
              f"protocol seed {runs[0][1]}: {aucs[0]:.5f}", flush=True)
    return results


def _best_trial_number(d: Path, monitor: Monitor) -> int | None:
    """The best trial's number from trials.csv (best monitored value among complete trials), if present."""
    import csv

    p = d / "trials.csv"
    if not p.exists():
        return None
    best: tuple[float, int] | None = None
    with p.open() as f:
        for row in csv.DictReader(f):
            try:
                keys = [monitor.resolve(k, row) for k in monitor.keys]  # a multi-task trial: val_auc_<task>
                v = monitor.value({k: float(row[k]) for k in keys if k is not None})
            except (KeyError, ValueError, TypeError, MetricError):
                continue
            if row.get("state") == "complete" and not math.isnan(v) and (best is None or monitor.better(v, best[0])):
                best = (v, int(row["number"]))
    return None if best is None else best[1]


def main() -> int:
    """``bars final model=<m> data=<d> final.seeds=N``."""
    from bars.run import expected_errors

    return hydra_command("final", lambda cfg, overrides: run_final(cfg, overrides) and 0,
                         (FinalError, *expected_errors()))


__all__ = ["DoneRun", "FinalError", "config_key", "final_configs", "final_key", "finished_runs", "main", "preset_only", "read_overrides",
           "run_final"]
