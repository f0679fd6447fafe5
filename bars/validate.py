"""Validation before side effects: the one place that checks a command's whole composed config.

Every command calls :func:`validate` (``bars train``, ``bars sweep`` launcher and worker, ``bars final``,
``bars leaderboard``, ``bars reproduce``, ``bars dashboard``; ``bars prepare`` checks the data block, the only
one it reads, with the same ``bars.data.prepare.check_config``) before it opens an MLflow run, creates or loads
a study, or writes a file; ``bars.run.train_one`` calls it too, so a sweep's trial or a final run with a bad
value fails before its run is opened. A bad value is reported with its key, the value and what was expected,
all problems at once, as a :class:`ConfigError`; nothing is created.

Sections, by command (:data:`SECTIONS`):

- ``common``: ``seed``, ``protocol.*``, the preset (it must exist and fit);
- ``data``: ``bars.data.prepare.check_config`` (dataset, recipe, split keys; no file is read) and ``data.alias``
  (null, or the alias name whose conf/data file composes this dataset: ``DATA=criteo`` -> criteo_x1);
- ``loader``: ``loader.*`` (mode auto|memory|stream, memory_fraction in (0, 1], buffer_rows and prefetch >= 1, verify
  stamp|full|none, no unknown key; bars.data.stream.LoaderConfig);
- ``model``: the registry's strict config dataclass (``bars.models.registry.make_config``);
- ``train``: ``bars.train.TrainConfig.from_cfg`` and the device;
- ``tracking``: ``tracking.uri`` (a kind of store MLflow can use), experiment, retries, spool;
- ``sweep``: ``sweep.*`` (role, budget, workers (auto or >= 0), devices, workers_per_gpu, the launcher-set
  worker_device/device_workers, storage URL, sampler, pruner, heartbeat; a launcher's placement on this
  machine's GPUs, bars.placement) and the search space:
  every key exists, and each bound or choice of every dimension gives a valid model and train config (a space
  that would try a negative learning rate fails here, not in its first trial);
- ``final``: ``final.seeds``, the overrides file, and every final run's config (composed, then checked);
- ``leaderboard``: ``leaderboard.*``;
- ``method``: ``method.*`` (conf/method/: none, or a method of bars.methods with only its keys).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Sequence
from typing import Any

from omegaconf import DictConfig, OmegaConf

from bars.config import safe_url, to_container


class ConfigError(ValueError):
    """A composed config with values a command cannot run with; the message lists every problem with its key."""

    def __init__(self, command: str, problems: Sequence[str]) -> None:
        self.command = command
        self.problems = list(problems)
        super().__init__(f"invalid config for bars {command} ({len(self.problems)} problem"
                         f"{'' if len(self.problems) == 1 else 's'}; nothing was started or written):\n"
                         + "\n".join(f"  - {p}" for p in self.problems))


SECTIONS: dict[str, tuple[str, ...]] = {
    "prepare": ("data",),
    "train": ("common", "data", "loader", "model", "train", "tracking", "method"),
    "sweep": ("common", "data", "loader", "model", "train", "tracking", "method", "sweep"),
    "final": ("common", "data", "loader", "model", "train", "tracking", "method", "final"),
    "reproduce": ("common", "data", "loader", "model", "train", "tracking", "method"),
    "leaderboard": ("tracking", "leaderboard"),
    "dashboard": ("storage",),
    "ui": ("tracking",),
}

_TRACKING = re.compile(r"^(sqlite:///.+|https?://.+|postgresql(\+\w+)?://.+|mysql(\+\w+)?://.+|databricks.*)$")
_STORAGE = re.compile(r"^(postgresql(\+\w+)?://.+|mysql(\+\w+)?://.+|sqlite:///.+|journal://.+)$")
_PROGRESS = ("auto", "live", "plain", "verbose", "off")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_num(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _get(cfg: DictConfig, key: str, default: Any = None) -> Any:
    return to_container(OmegaConf.select(cfg, key, default=default))


def _int(cfg: DictConfig, key: str, low: int, out: list[str], *, optional: bool = False) -> None:
    v = _get(cfg, key)
    if v is None and optional:
        return
    if not (_is_int(v) and v >= low):
        out.append(f"{key} must be an integer >= {low}{' or null' if optional else ''}, got {v!r}")


def _pos(cfg: DictConfig, key: str, out: list[str], *, optional: bool = False, zero: bool = False) -> None:
    v = _get(cfg, key)
    if v is None and optional:
        return
    if not (_is_num(v) and (v >= 0 if zero else v > 0) and not math.isnan(v)):
        out.append(f"{key} must be a number {'>= 0' if zero else '> 0'}{' or null' if optional else ''}, got {v!r}")


# --------------------------------------------------------------------------------------------------- sections
def check_common(cfg: DictConfig) -> list[str]:
    out: list[str] = []
    if not _is_int(_get(cfg, "seed")):
        out.append(f"seed must be an integer, got {_get(cfg, 'seed')!r}")
    if OmegaConf.select(cfg, "protocol", default=None) is not None:
        if not _is_int(_get(cfg, "protocol.seed")):
            out.append(f"protocol.seed must be an integer, got {_get(cfg, 'protocol.seed')!r}")
        if _get(cfg, "protocol.embedding_dim") is not None:
            _int(cfg, "protocol.embedding_dim", 1, out)
    from bars.presets import PresetError, active_preset

    try:
        active_preset(cfg)
    except PresetError as e:
        out.append(f"preset={cfg.get('preset')!r}: {e}")
    return out


def check_data(cfg: DictConfig) -> list[str]:
    from bars.data.prepare import check_config

    data = _get(cfg, "data")
    if not isinstance(data, dict):
        return [f"data must be a mapping (the data: block of conf/data/<name>.yaml), got {data!r}"]
    out = check_config(data)
    alias = data.get("alias")
    if alias is not None:
        from bars.data.prepare import dataset_aliases

        aliases = dataset_aliases()
        if not isinstance(alias, str) or aliases.get(alias) != data.get("name"):
            known = ", ".join(f"{a} -> {t}" for a, t in aliases.items()) or "none"
            out.append(f"data.alias={alias!r} is not an alias of data.name={data.get('name')!r} (data.alias is set "
                       f"by conf/data/<alias>.yaml: DATA=<alias>; aliases: {known})")
    return out


_LOADER_MODES = ("auto", "memory", "stream")  # bars.data.stream.MODES (not imported: it loads torch)
_LOADER_KEYS = ("mode", "memory_fraction", "buffer_rows", "prefetch", "verify")  # bars.data.stream.LoaderConfig


def check_loader(cfg: DictConfig) -> list[str]:
    block = _get(cfg, "loader")
    if block is None:
        return []  # a config recorded before the block existed: the defaults
    if not isinstance(block, dict):
        return [f"loader must be a mapping (the loader: block of conf/config.yaml), got {block!r}"]
    out: list[str] = []
    unknown = sorted(set(block) - set(_LOADER_KEYS))
    if unknown:
        out.append(f"loader: unknown keys {unknown}; known keys are {sorted(_LOADER_KEYS)}")
    if "mode" in block and block["mode"] not in _LOADER_MODES:
        out.append(f"loader.mode must be one of {_LOADER_MODES}, got {block['mode']!r}")
    if "memory_fraction" in block:
        f = block["memory_fraction"]
        if not (_is_num(f) and 0 < f <= 1):
            out.append(f"loader.memory_fraction must be a number in (0, 1], got {f!r}")
    for k in ("buffer_rows", "prefetch"):
        if k in block:
            _int(cfg, f"loader.{k}", 1, out)
    if "verify" in block and block["verify"] not in ("stamp", "full", "none"):
        out.append(f"loader.verify must be one of ['stamp', 'full', 'none'], got {block['verify']!r}")
    return out


def check_model(cfg: DictConfig) -> list[str]:
    from bars.models import registry

    name = _get(cfg, "model.name")
    if not isinstance(name, str):
        return [f"model.name must be a registered model name, got {name!r}"]
    try:
        registry.make_config(name, _get(cfg, "model.params", {}) or {})
    except registry.ModelConfigError as e:
        msg = str(e).split("; valid fields", 1)[0]
        if "unknown model" not in msg:
            import dataclasses

            fields = [f.name for f in dataclasses.fields(registry.config_class(name))]
            msg += f"; model.params of {name!r} are {fields}"
        return [msg]
    return []


def check_train(cfg: DictConfig) -> list[str]:
    from bars.train import TrainConfig, TrainConfigError, resolve_device

    try:
        tc = TrainConfig.from_cfg(cfg.train)
    except TrainConfigError as e:  # "invalid train config: a must ...; b must ..." -> "train.a must ...", ...
        parts = str(e).removeprefix("invalid train config: ").split("; ")
        return [f"train.{p}" if re.match(r"[a-z_]+ must ", p) else f"train: {p}" for p in parts]
    try:
        resolve_device(tc.device)
    except ValueError as e:
        return [f"train.device: {e}"]
    return []


def check_tracking(cfg: DictConfig) -> list[str]:
    out: list[str] = []
    enabled = _get(cfg, "tracking.enabled", True)
    if not isinstance(enabled, bool):
        out.append(f"tracking.enabled must be true or false, got {enabled!r}")
    uri = _get(cfg, "tracking.uri")
    if enabled is not False and not (isinstance(uri, str) and _TRACKING.match(uri)):
        out.append(f"tracking.uri={safe_url(str(uri))!r}: expected sqlite:///<file>, http(s)://<server> or "
                   f"postgresql://<user>@<host>/<db>")
    exp = _get(cfg, "tracking.experiment")
    if not (isinstance(exp, (str, int, float)) and not isinstance(exp, bool) and str(exp).strip()):
        out.append(f"tracking.experiment must be a non-empty name, got {exp!r}")  # (a number is a name: 2024)
    if _get(cfg, "tracking.tries") is not None:
        _int(cfg, "tracking.tries", 1, out)
    if _get(cfg, "tracking.retry_wait") is not None:
        _pos(cfg, "tracking.retry_wait", out, zero=True)
    helper = _get(cfg, "tracking.helper", "auto")
    if not (isinstance(helper, bool) or helper == "auto"):
        out.append(f"tracking.helper must be auto, true or false, got {helper!r}")
    spool = _get(cfg, "tracking.spool_dir")
    if spool is not None and not isinstance(spool, str):
        out.append(f"tracking.spool_dir must be a folder path or null, got {spool!r}")
    return out


def check_storage(cfg: DictConfig) -> list[str]:
    s = _get(cfg, "sweep.storage")
    if s in (None, "", "null") or (isinstance(s, str) and "://" not in s):
        return []  # the journal file (a path)
    if not (isinstance(s, str) and _STORAGE.match(s)):
        return [(f"sweep.storage={safe_url(str(s))!r}: expected a journal file path, postgresql://<user>@<host>/"
                 f"<db> (or another SQLAlchemy URL), or null for sweeps/<study>/study.journal")]
    return []


def _check_budget(cfg: DictConfig) -> list[str]:
    """``sweep.budget`` (bars.compute.parse_budget), and some budget: ``sweep.trials`` or ``sweep.budget``."""
    from bars.compute import BudgetSyntaxError, parse_budget

    try:
        budget = parse_budget(_get(cfg, "sweep.budget"))
    except BudgetSyntaxError as e:
        return [str(e)]
    if budget is None and _get(cfg, "sweep.trials") is None:
        return [("sweep.trials is null and sweep.budget is null: a sweep needs a budget (sweep.trials=<n> trials, "
                 "or sweep.budget=<samples or seconds>, e.g. '5M samples' or 30m)")]
    return []


def check_sweep(cfg: DictConfig) -> list[str]:
    out = check_storage(cfg)
    role = _get(cfg, "sweep.role")
    if role not in ("launcher", "worker"):
        out.append(f"sweep.role must be launcher or worker, got {role!r}")
    _int(cfg, "sweep.trials", 1, out, optional=True)
    out += _check_budget(cfg)
    workers = _get(cfg, "sweep.workers")
    if not (workers == "auto" or (_is_int(workers) and workers >= 0)):
        out.append(f"sweep.workers must be auto or an integer >= 0, got {workers!r}")
    out += _check_devices(cfg)
    _int(cfg, "sweep.workers_per_gpu", 1, out)
    _int(cfg, "sweep.device_workers", 1, out, optional=True)
    wd = _get(cfg, "sweep.worker_device")
    if wd is not None and not (isinstance(wd, str) and re.fullmatch(r"cpu|cuda(:\d+)?", wd)):
        out.append(f"sweep.worker_device must be null, cpu, cuda or cuda:<n> (set by the launcher), got {wd!r}")
    _pos(cfg, "sweep.timeout", out, optional=True)
    _pos(cfg, "sweep.poll", out)
    _int(cfg, "sweep.max_epochs", 1, out, optional=True)
    _int(cfg, "sweep.threads", 1, out, optional=True)
    _int(cfg, "sweep.worker_index", 0, out, optional=True)
    _int(cfg, "sweep.max_failed", 1, out, optional=True)
    _int(cfg, "sweep.max_retry", 0, out, optional=True)
    _int(cfg, "sweep.heartbeat_interval", 1, out)
    _int(cfg, "sweep.grace_period", 1, out)
    hb, grace = _get(cfg, "sweep.heartbeat_interval"), _get(cfg, "sweep.grace_period")
    if _is_int(hb) and _is_int(grace) and grace <= hb:
        out.append(f"sweep.grace_period ({grace}) must be longer than sweep.heartbeat_interval ({hb})")
    if _get(cfg, "sweep.progress") not in _PROGRESS:
        out.append(f"sweep.progress must be one of {_PROGRESS}, got {_get(cfg, 'sweep.progress')!r}")
    _int(cfg, "sweep.seed", 0, out)
    from bars.strategy import strategy_problems

    out += strategy_problems(cfg)  # sweep.sampler / sweep.pruner: name, its block's settings, no ignored key
    if not out and role == "launcher":
        out += _check_placement(cfg)
    if not out:
        out += check_space(cfg)
    return out


def _check_devices(cfg: DictConfig) -> list[str]:
    """``sweep.devices``: auto, cpu, a list of GPUs ([0, 2], cuda:1, a UUID) or the same comma-separated."""
    d = _get(cfg, "sweep.devices")
    if d is None or (isinstance(d, str) and d.strip().lower() in ("auto", "cpu")):
        return []
    items = [p.strip() for p in d.split(",")] if isinstance(d, str) else d if isinstance(d, list) else None
    if items is None or not items or not all((_is_int(i) and i >= 0) or (isinstance(i, str) and i.strip())
                                             for i in items):
        return [f"sweep.devices must be auto, cpu, or a list of GPUs such as [0, 2] or \"0,2\", got {d!r}"]
    return []


def _check_placement(cfg: DictConfig) -> list[str]:
    """A launcher's workers placed on this machine's visible GPUs (bars.placement.plan): a GPU that is not
    visible, a listed GPU twice, more workers than GPUs x sweep.workers_per_gpu."""
    from bars import placement

    try:
        placement.plan(_get(cfg, "sweep.workers"), _get(cfg, "sweep.devices", "auto"),
                       _get(cfg, "sweep.workers_per_gpu", 1), gpus=placement.visible_gpus(),
                       train_device=str(_get(cfg, "train.device", "auto")), threads=_get(cfg, "sweep.threads"))
    except placement.PlacementError as e:
        return [str(e)]
    return []


def check_space(cfg: DictConfig) -> list[str]:
    """The search space exists, its keys are in the config, and every bound and choice of each dimension gives a
    valid model and train config: with the other dimensions at their configured values, or, where a choice only
    makes sense together with another dimension's (CCPM's three channels need three kernel heights), with one other
    categorical dimension at one of its choices. A value valid with no partner is reported with the problems it
    has at the configured values."""
    from bars.search import SearchSpaceError, apply_params, space_of, validate_space

    try:
        space = space_of(cfg)
        validate_space(space, cfg)
    except SearchSpaceError as e:
        return [str(e)]

    def problems(params: dict[str, Any]) -> list[str]:
        tcfg = apply_params(cfg, params)
        return check_model(tcfg) + check_train(tcfg)

    def plain(v: Any) -> Any:
        return list(v) if isinstance(v, tuple) else v

    from bars.grids import GridError, grid_of

    try:
        grid = grid_of(cfg)
    except GridError as e:
        return [str(e)]
    if grid is not None:  # a grid's points are explicit: each must give a valid config
        out_g: list[str] = []
        for i, point in enumerate(grid.points):
            try:
                bad = problems(point)
            except Exception as e:  # noqa: BLE001 - a value OmegaConf cannot put there
                bad = [str(e)]
            out_g += [f"grid {grid.path} point {i} {point}: {b}" for b in bad]
        return out_g[:20]
    out: list[str] = []
    for key, p in space.items():
        values = list(p.choices) if p.type == "categorical" else [p.low, p.high]
        for v in values:
            value = plain(v)
            try:
                bad = problems({key: value})
            except Exception as e:  # noqa: BLE001 - a value OmegaConf cannot put there
                out.append(f"search space {key}={value!r}: {e}")
                continue
            if bad and any(not problems({key: value, other: plain(c)})
                           for other, q in space.items() if other != key and q.type == "categorical"
                           for c in q.choices):
                bad = []  # valid together with a choice of another dimension
            out += [f"search space {key}={value!r} gives an invalid config: {b}" for b in bad]
    return out


def check_final(cfg: DictConfig, compose_runs: Callable[[], list[DictConfig]] | None = None) -> list[str]:
    out: list[str] = []
    _int(cfg, "final.seeds", 1, out)
    if out or compose_runs is None:
        return out
    try:
        runs = compose_runs()
    except Exception as e:  # noqa: BLE001 - a missing or unusable overrides file: a named error
        return [f"final runs: {e}"]
    for i, rcfg in enumerate(runs):
        for section in ("common", "data", "loader", "model", "train"):
            out += [f"final run {i} (seed {rcfg.get('seed')}): {b}" for b in CHECKS[section](rcfg)]
        if out:
            break  # the runs share all but the seed: one run's problems are enough
    return out


def check_method(cfg: DictConfig) -> list[str]:
    """``method``: absent or ``none`` (plain training), or a known method with only its own keys
    (bars.methods.check_method)."""
    from bars.methods import check_method as check

    return check(cfg)


def check_leaderboard(cfg: DictConfig) -> list[str]:
    out: list[str] = []
    alpha = _get(cfg, "leaderboard.alpha")
    if not (_is_num(alpha) and 0 < alpha < 1):
        out.append(f"leaderboard.alpha must be a number in (0, 1), got {alpha!r}")
    data = _get(cfg, "leaderboard.data")
    if data is not None and not isinstance(data, str) and not (
            isinstance(data, list) and all(isinstance(d, str) for d in data)):
        out.append(f"leaderboard.data must be null, a dataset name, a comma-separated list or a list, got {data!r}")
    d = _get(cfg, "leaderboard.out_dir")
    if d is not None and not isinstance(d, str):
        out.append(f"leaderboard.out_dir must be a folder path or null, got {d!r}")
    recs = _get(cfg, "leaderboard.records")
    if recs is not None and not isinstance(recs, str) and not (
            isinstance(recs, list) and all(isinstance(r, str) and r for r in recs)):
        out.append(f"leaderboard.records must be a list of run-record file paths (or one path), got {recs!r}")
    save = _get(cfg, "leaderboard.save_records")
    if not isinstance(save, bool):
        out.append(f"leaderboard.save_records must be true or false, got {save!r}")
    return out


CHECKS: dict[str, Callable[[DictConfig], list[str]]] = {
    "common": check_common, "data": check_data, "loader": check_loader, "model": check_model, "train": check_train,
    "tracking": check_tracking, "sweep": check_sweep, "storage": check_storage, "final": check_final,
    "leaderboard": check_leaderboard, "method": check_method,
}


def problems(cfg: DictConfig, command: str, *, final_runs: Callable[[], list[DictConfig]] | None = None
             ) -> list[str]:
    """Every problem of ``cfg`` for ``command`` (see :data:`SECTIONS`); empty when it can run."""
    if command not in SECTIONS:
        raise ValueError(f"unknown command {command!r}; commands: {sorted(SECTIONS)}")
    out: list[str] = []
    for section in SECTIONS[command]:
        try:
            if section == "final":
                out += check_final(cfg, final_runs)
            else:
                out += CHECKS[section](cfg)
        except Exception as e:  # noqa: BLE001 - a value so wrong a check cannot read it: still a named problem
            out.append(f"{section}: {type(e).__name__}: {e}")
    if "train" in SECTIONS[command]:
        out += _check_processes(cfg, command)
        out += _check_cuda_graph(cfg)
    return out


def _check_cuda_graph(cfg: DictConfig) -> list[str]:
    """``train.cuda_graph`` replays a captured step: a method's search sets plain Python attributes between steps
    (OptInter's and OptFS's temperatures, hard masks) that a captured graph would keep at their capture values."""
    method = _get(cfg, "method.name")
    if _get(cfg, "train.cuda_graph", False) is True and method not in (None, "none"):
        return [(f"train.cuda_graph=true with method={method}: a method changes settings between steps that a "
                 f"captured CUDA graph would freeze; set train.cuda_graph=false")]
    return []


def _check_processes(cfg: DictConfig, command: str) -> list[str]:
    """``train.processes > 1`` (bars.distributed) is for ``bars train`` of a plain run only."""
    n = _get(cfg, "train.processes", 1)
    if not _is_int(n) or n <= 1:
        return []  # the train section names a bad value
    if command != "train":
        hint = ("it reruns a run in its own process: rerun a multi-process run with `bars train` and its recorded "
                "config.yaml" if command == "reproduce" else
                "a sweep places its workers on the GPUs instead: sweep.workers_per_gpu, sweep.devices")
        return [(f"train.processes={n}: several processes train one run of `bars train` (make train ... GPUS={n}); "
                 f"bars {command} runs one process per run ({hint})")]
    method = _get(cfg, "method.name")
    if method not in (None, "none"):
        return [(f"train.processes={n} with method={method}: a method's stages train in one process; "
                 f"set train.processes=1")]
    device = str(_get(cfg, "train.device", "auto")).strip().lower()
    import torch

    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if device == "cuda" or (device == "auto" and gpus):
        if gpus < n:
            return [(f"train.processes={n} on GPUs (train.device={device}) needs {n} GPUs, one per process; "
                     f"{gpus} visible (train.device=cpu runs CPU processes)")]
    elif device not in ("auto", "cpu"):
        return [f"train.device={device} with train.processes={n}: use auto, cuda (one GPU per process) or cpu"]
    return []


def validate(cfg: DictConfig, command: str, *, final_runs: Callable[[], list[DictConfig]] | None = None) -> None:
    """Raise :class:`ConfigError` listing every problem of ``cfg`` for ``command``; return when it can run."""
    found = problems(cfg, command, final_runs=final_runs)
    if found:
        raise ConfigError(command, found)


__all__ = ["CHECKS", "SECTIONS", "ConfigError", "check_space", "problems", "validate"]
