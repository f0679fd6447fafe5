"""Sweep strategies as config: ``sweep.sampler`` (tpe | random | grid) and ``sweep.pruner`` (median | sha |
hyperband | none), each name with its own block of settings (``sweep.sampler.tpe.*``, ``sweep.pruner.sha.*``, ...).
The tables of names and settings, the checks (:func:`strategy_problems`, called by ``bars.validate``) and the
settings a study records. Imports no optuna: ``bars.study`` builds the sampler and pruner from these.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from bars.config import to_container

# sweep.sampler.name / sweep.pruner.name -> the class, and the settings of its block (key -> (kind, minimum)).
SAMPLERS = {"tpe": "optuna.samplers.TPESampler", "random": "optuna.samplers.RandomSampler",
            "grid": "bars.study.GridPointsSampler"}
PRUNERS = {"median": "optuna.pruners.MedianPruner", "sha": "optuna.pruners.SuccessiveHalvingPruner",
           "hyperband": "optuna.pruners.HyperbandPruner", "none": "optuna.pruners.NopPruner"}
SAMPLER_KEYS: dict[str, dict[str, tuple[str, int]]] = {
    "tpe": {"n_startup_trials": ("int", 0), "n_ei_candidates": ("int", 1), "multivariate": ("bool", 0),
            "group": ("bool", 0), "constant_liar": ("bool", 0)},
    "random": {}, "grid": {}}
PRUNER_KEYS: dict[str, dict[str, tuple[str, int]]] = {
    "median": {"n_startup_trials": ("int", 0), "n_warmup_steps": ("int", 0), "interval_steps": ("int", 1)},
    "sha": {"min_resource": ("int", 1), "reduction_factor": ("int", 2), "min_early_stopping_rate": ("int", 0)},
    "hyperband": {"min_resource": ("int", 1), "max_resource": ("int?", 1), "reduction_factor": ("int", 2)},
    "none": {}}


def block(cfg: DictConfig, part: str) -> tuple[str, dict[str, Any]]:
    node = cfg.sweep.get(part)
    name = str(node.get("name")) if node is not None else ""
    sub = node.get(name) if node is not None and name in (SAMPLER_KEYS if part == "sampler" else PRUNER_KEYS) \
        else None
    return name, (to_container(sub) or {}) if sub is not None else {}


def _default_blocks() -> dict[str, Any]:
    from bars.config import CONF_DIR

    return OmegaConf.to_container(OmegaConf.load(CONF_DIR / "sweep" / "default.yaml"), resolve=False)


def strategy_problems(cfg: DictConfig) -> list[str]:
    """``sweep.sampler`` and ``sweep.pruner``: a known ``name``, its block's settings of the right kind, no unknown
    key, and no setting changed (from conf/sweep/default.yaml) in a block the chosen name does not use (it would
    be ignored). Every message names the key."""
    out: list[str] = []
    defaults = _default_blocks()
    for part, table, classes in (("sampler", SAMPLER_KEYS, SAMPLERS), ("pruner", PRUNER_KEYS, PRUNERS)):
        node = cfg.sweep.get(part)
        if node is None or not isinstance(node, DictConfig):
            out.append(f"sweep.{part} must be a mapping with `name:` ({' | '.join(classes)})")
            continue
        name = node.get("name")
        if name not in table:
            out.append(f"sweep.{part}.name must be one of {' | '.join(table)}, got {name!r}")
            continue
        for k in node:
            k = str(k)
            if k == "name":
                continue
            if part == "sampler" and k == "unique":
                u = node.get(k)
                if not isinstance(u, bool):
                    out.append(f"sweep.sampler.unique must be true or false, got {u!r}")
                elif name == "grid" and not u and (defaults.get("sampler") or {}).get("unique") is not False:
                    out.append("sweep.sampler.unique=false has no effect with sweep.sampler.name=grid (a grid "
                               "never repeats a point): drop it")
                continue
            if k not in table:
                moved = [n for n, keys in table.items() if k in keys]
                hint = f" (settings live in the name's block: sweep.{part}.{moved[0]}.{k})" if moved else ""
                out.append(f"sweep.{part}.{k}: unknown key; sweep.{part} has name"
                           f"{', unique' if part == 'sampler' else ''} and the blocks "
                           f"{[n for n in table if table[n]]}{hint}")
                continue
            sub = node.get(k)
            if sub is None:
                continue
            if not isinstance(sub, DictConfig):
                out.append(f"sweep.{part}.{k} must be a mapping of {sorted(table[k])}, got {sub!r}")
                continue
            for key in sub:
                key = str(key)
                if key not in table[k]:
                    out.append(f"sweep.{part}.{k}.{key}: unknown setting; {k} takes {sorted(table[k]) or 'none'}")
                    continue
                full, v = f"sweep.{part}.{k}.{key}", sub.get(key)
                if k != name:
                    d = (defaults.get(part) or {}).get(k, {}) or {}
                    if key not in d or d[key] != v:
                        out.append(f"{full}={v!r} is set but sweep.{part}.name={name}: it would be ignored "
                                   f"(set sweep.{part}.name={k}, or drop it)")
                    continue
                kind, low = table[k][key]
                if kind == "bool":
                    if not isinstance(v, bool):
                        out.append(f"{full} must be true or false, got {v!r}")
                elif v is None and kind == "int?":
                    continue
                elif not (isinstance(v, int) and not isinstance(v, bool) and v >= low):
                    out.append(f"{full} must be an integer >= {low}{' or null' if kind == 'int?' else ''}, "
                               f"got {v!r}")
    if not out:
        name, p = block(cfg, "pruner")
        if name == "hyperband":
            top = _hyperband_max(cfg)
            if top != "auto" and int(top) < int(p.get("min_resource", 1)):
                out.append(f"sweep.pruner.hyperband.max_resource ({top}, or sweep.max_epochs when null) must be "
                           f">= sweep.pruner.hyperband.min_resource ({p.get('min_resource')})")
        s_name = cfg.sweep.sampler.get("name")
        if s_name != "grid":
            for k in ("grid", "grid_split"):
                if cfg.sweep.get(k) not in (None, ""):
                    out.append(f"sweep.{k}={cfg.sweep.get(k)} only applies with sweep.sampler.name=grid "
                               f"(now {s_name}): it would be ignored")
    return out


def _hyperband_max(cfg: DictConfig) -> int | str:
    _, p = block(cfg, "pruner")
    if p.get("max_resource") is not None:
        return int(p["max_resource"])
    cap = cfg.sweep.get("max_epochs")
    return "auto" if cap is None else int(cap)


def sampler_settings(cfg: DictConfig) -> dict[str, Any]:
    """The chosen sampler's settings (its block of ``sweep.sampler``); a grid's: how its points are ordered."""
    name, s = block(cfg, "sampler")
    if name == "grid":
        return {"order": "a permutation of the grid's points by sweep.seed (the same in every worker); each "
                         "trial takes the first point no live or finished trial holds", "order_seed":
                int(cfg.sweep.seed)}
    out = {k: (bool(s[k]) if kind == "bool" else int(s[k])) for k, (kind, _) in SAMPLER_KEYS[name].items()}
    out["unique"] = unique(cfg)
    return out


def unique(cfg: DictConfig) -> bool:
    """``sweep.sampler.unique``: a trial never repeats a point another trial holds (bars.samplers.UniqueSampler;
    a grid never does)."""
    node = cfg.sweep.get("sampler")
    return True if block(cfg, "sampler")[0] == "grid" else bool(node.get("unique", False))


def pruner_settings(cfg: DictConfig) -> dict[str, Any]:
    """The chosen pruner's settings (its block of ``sweep.pruner``); the step is the epoch."""
    name, p = block(cfg, "pruner")
    out: dict[str, Any] = {k: int(p[k]) for k in PRUNER_KEYS[name] if k in p and p[k] is not None}
    if name == "hyperband":
        out["max_resource"] = _hyperband_max(cfg)
    return out


__all__ = ["PRUNERS", "PRUNER_KEYS", "SAMPLERS", "SAMPLER_KEYS", "block", "pruner_settings", "sampler_settings",
           "strategy_problems", "unique"]
