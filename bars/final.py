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
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from omegaconf import DictConfig

from bars.config import compose, hydra_command, to_container
from bars.metrics import Monitor

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


def run_final(cfg: DictConfig, cli_overrides: Sequence[str] = (), *,
              train_fn: Callable[..., Any] | None = None) -> list[Any]:
    if int(cfg.final.seeds) < 1:
        raise FinalError(f"final.seeds must be >= 1, got {cfg.final.seeds}")
    if train_fn is None:
        from bars.run import train_one as train_fn
    study = str(cfg.sweep.study)
    from_preset = preset_only(cfg)
    best_trial = None if from_preset else _best_trial_number(Path(str(cfg.sweep.dir)),
                                                             Monitor.parse(to_container(cfg.train.monitor)))
    runs = final_configs(cfg, cli_overrides)
    what = (f"the {cfg.preset} preset of {cfg.model.get('id') or cfg.model.name} on {cfg.data.name}" if from_preset
            else f"{study} with {overrides_path(cfg)}")
    print(f"bars final: {len(runs)} runs of {what}: seeds {', '.join(str(s) for _, s, _ in runs)}", flush=True)
    results = []
    for i, seed, rcfg in runs:
        tags = {"stage": "final", "final_index": i, "final_seeds": len(runs),
                "protocol_seed_run": str(seed == int(rcfg.protocol.seed)).lower()}
        if not from_preset:
            tags["sweep_study"] = study
        if best_trial is not None:
            tags["sweep_best_trial"] = best_trial
        r = train_fn(rcfg, extra_tags=tags)
        m = r.metrics
        print(f"bars final: [{i + 1}/{len(runs)}] seed {seed}: val_auc {m.get('val_auc', float('nan')):.5f} "
              f"test_auc {m.get('test_auc', float('nan')):.5f}", flush=True)
        results.append(r)
    aucs = [float(r.metrics.get("test_auc", float("nan"))) for r in results]
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
                v = monitor.value({k: float(row[k]) for k in monitor.keys})
            except (KeyError, ValueError, TypeError):
                continue
            if row.get("state") == "complete" and not math.isnan(v) and (best is None or monitor.better(v, best[0])):
                best = (v, int(row["number"]))
    return None if best is None else best[1]


def main() -> int:
    """``bars final model=<m> data=<d> final.seeds=N``."""
    return hydra_command("final", lambda cfg, overrides: run_final(cfg, overrides) and 0, (FinalError,))


__all__ = ["FinalError", "final_configs", "main", "preset_only", "read_overrides", "run_final"]
