"""The search space of a sweep: ``conf/search/`` as Python. Parsing, validation against the composed config, and
the overrides that apply (and replay) a trial's parameters. Mirrors the files:

- ``conf/search/common.yaml`` (every model) updated by ``conf/search/<model id>.yaml``, then narrowed by
  ``conf/search/data/<data>.yaml`` when it exists (:func:`load_search_space`);
- each key is a dotted path of the composed config; :func:`validate_space` checks every key and value kind
  against the composed config before anything is created or trained (nearest valid keys listed);
- a trial's parameters become Hydra overrides (:func:`to_overrides`, no spaces: ``best.overrides`` is
  word-split by ``$(cat ...)``) or are applied to a config (:func:`apply_params`).

Imports neither optuna's storage side nor mlflow: ``bars.study`` owns the study, ``bars.sweep`` the trials.
"""

from __future__ import annotations

import difflib
import json
import math
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from omegaconf import DictConfig, OmegaConf

from bars.config import CONF_DIR, flatten

if TYPE_CHECKING:
    import optuna

class SearchSpaceError(ValueError):
    """A search-space file that cannot be used: unknown config keys, bad parameter specs."""


# The overrides of the sweep command that best.overrides does not replay (they configure the sweep, not the
# model or its training).
NOT_REPLAYED = ("model", "data", "sweep", "final", "leaderboard", "hydra", "tracking", "paths")


@dataclass(frozen=True)
class Param:
    """One dimension of a search space, addressed by a dotted config key."""

    key: str
    type: str  # float | int | categorical
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple[Any, ...] = ()

    def suggest(self, trial: optuna.Trial) -> Any:
        if self.type == "float":
            return trial.suggest_float(self.key, self.low, self.high, log=self.log, step=self.step)
        if self.type == "int":
            return trial.suggest_int(self.key, int(self.low), int(self.high), log=self.log,
                                     step=int(self.step or 1))
        encoded = [encode_choice(c) for c in self.choices]
        return decode_choice(trial.suggest_categorical(self.key, encoded))

    def describe(self) -> dict[str, Any]:
        if self.type == "categorical":
            return {"type": "categorical", "choices": list(self.choices)}
        d: dict[str, Any] = {"type": self.type, "low": self.low, "high": self.high}
        if self.log:
            d["log"] = True
        if self.step is not None:
            d["step"] = self.step
        return d


def encode_choice(v: Any) -> Any:
    """Optuna categorical choices must be None/bool/int/float/str: lists (hidden units) become JSON strings."""
    if isinstance(v, (list, tuple)):
        return json.dumps(list(v), separators=(",", ":"))
    return v


def decode_choice(v: Any) -> Any:
    if isinstance(v, str) and v.startswith("["):
        return json.loads(v)
    return v


def parse_param(key: str, spec: Any, source: Path) -> Param:
    where = f"{source}: {key}"
    if isinstance(spec, (list, tuple)):  # shorthand: a list of choices
        spec = {"type": "categorical", "choices": list(spec)}
    if not isinstance(spec, dict):
        raise SearchSpaceError(f"{where}: expected a mapping like {{type: float, low: .., high: ..}} or a list "
                               f"of choices, got {spec!r}")
    spec = dict(spec)
    t = spec.pop("type", "categorical" if "choices" in spec else None)
    if t in ("float", "int"):
        unknown = set(spec) - {"low", "high", "log", "step"}
        if unknown or "low" not in spec or "high" not in spec:
            raise SearchSpaceError(f"{where}: type {t} takes low, high and optional log, step; got "
                                   f"{sorted(spec)}")
        low, high = spec["low"], spec["high"]
        if not (isinstance(low, (int, float)) and isinstance(high, (int, float))) or low > high:
            raise SearchSpaceError(f"{where}: need numeric low <= high, got low={low!r} high={high!r}")
        log = bool(spec.get("log", False))
        if log and low <= 0:
            raise SearchSpaceError(f"{where}: log scale needs low > 0, got {low!r}")
        step = spec.get("step")
        if log and step is not None:
            raise SearchSpaceError(f"{where}: log and step cannot be combined")
        if t == "int" and (int(low) != low or int(high) != high):
            raise SearchSpaceError(f"{where}: int bounds must be integers, got {low!r}..{high!r}")
        return Param(key, t, float(low) if t == "float" else int(low), float(high) if t == "float" else int(high),
                     log, step)
    if t == "categorical":
        unknown = set(spec) - {"choices"}
        choices = spec.get("choices")
        if unknown or not isinstance(choices, list) or not choices:
            raise SearchSpaceError(f"{where}: type categorical takes a non-empty list `choices`; got {spec!r}")
        for c in choices:
            if not (c is None or isinstance(c, (bool, int, float, str))
                    or (isinstance(c, list) and all(isinstance(x, (bool, int, float, str)) for x in c))):
                raise SearchSpaceError(f"{where}: choice {c!r} must be a scalar or a flat list of scalars")
        return Param(key, "categorical", choices=tuple(tuple(c) if isinstance(c, list) else c for c in choices))
    raise SearchSpaceError(f"{where}: unknown type {t!r}; use float, int or categorical")


def _load_yaml(path: Path) -> dict[str, Any]:
    node = OmegaConf.load(path)
    data = OmegaConf.to_container(node, resolve=True)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise SearchSpaceError(f"{path}: expected a mapping of dotted config keys to parameter specs")
    return data


SEARCH_DIR = CONF_DIR / "search"


def search_dir_of(cfg: DictConfig) -> Path:
    d = cfg.sweep.get("search_dir")
    return Path(str(d)) if d else SEARCH_DIR


def search_space_files(model: str, search_dir: Path | str = SEARCH_DIR) -> tuple[Path, Path]:
    d = Path(search_dir)
    return d / "common.yaml", d / f"{model}.yaml"


def load_search_space(model: str, search_dir: Path | str = SEARCH_DIR, data: str | None = None,
                      method: str | None = None) -> dict[str, Param]:
    """``conf/search/common.yaml`` updated by ``conf/search/<model id>.yaml``: the model file adds keys, overrides
    common ones, and drops a common key by mapping it to ``null`` (a model without dropout, say). Then, when it
    exists, ``conf/search/data/<data>.yaml`` narrows the space for that dataset: it replaces (or, with ``null``,
    drops) keys the space already has and ignores the others, so one file serves every model (e.g. smaller
    networks for the CPU demo data). With ``method`` (a method's name, bars.methods), ``conf/search/method_<method>.yaml``
    (``method.*`` keys) is merged last; it must exist."""
    common_path, model_path = search_space_files(model, search_dir)
    if not model_path.exists():
        have = sorted(p.stem for p in model_path.parent.glob("*.yaml") if p.stem != "common")
        raise SearchSpaceError(f"no search space for model {model!r}: {model_path} does not exist; "
                               f"search spaces exist for {have}")
    merged: dict[str, tuple[Any, Path]] = {}
    for path in (common_path, model_path):
        if not path.exists():
            continue
        for key, spec in _load_yaml(path).items():
            if spec is None:
                merged.pop(key, None)
            else:
                merged[key] = (spec, path)
    data_path = Path(search_dir) / "data" / f"{data}.yaml"
    if data and data_path.exists():
        for key, spec in _load_yaml(data_path).items():
            if key in merged:
                if spec is None:
                    merged.pop(key)
                else:
                    merged[key] = (spec, data_path)
    if method and method != "none":
        method_path = Path(search_dir) / f"method_{method}.yaml"
        if not method_path.exists():
            raise SearchSpaceError(f"no search space for method {method!r}: {method_path} does not exist")
        for key, spec in _load_yaml(method_path).items():
            if spec is None:
                merged.pop(key, None)
            else:
                merged[key] = (spec, method_path)
    return {k: parse_param(k, s, p) for k, (s, p) in merged.items()}


def space_from_record(described: dict[str, Any] | None) -> dict[str, Param] | None:
    """The space a study records (``search_space``: each dimension's :meth:`Param.describe`) as Params again;
    None when the study records none."""
    if not isinstance(described, dict):
        return None
    return {k: parse_param(k, spec, Path("<the study's search_space>")) for k, spec in described.items()}


def space_of(cfg: DictConfig) -> dict[str, Param]:
    """The search space of the composed config's model (its ``model.id``: a variant config has its own) and
    dataset; with ``sweep.sampler.name=grid`` the grid's axes instead (``bars.grids``: conf/search is not used)."""
    from bars.grids import grid_of, grid_space

    grid = grid_of(cfg)
    if grid is not None:
        return grid_space(grid)
    method = cfg.get("method")
    return load_search_space(str(cfg.model.id), search_dir_of(cfg), str(cfg.data.name),
                             None if method is None else method.get("name"))


def validate_space(space: dict[str, Param], cfg: DictConfig) -> None:
    """Every key must be a leaf (or list) of the composed config: otherwise raise listing the nearest keys."""
    keys = flatten(cfg)
    bad = []
    for key, p in space.items():
        if key not in keys:
            near = difflib.get_close_matches(key, list(keys), n=5, cutoff=0.5)
            prefix = key.rsplit(".", 1)[0] + "." if "." in key else ""
            near += [k for k in keys if prefix and k.startswith(prefix) and k not in near][:8]
            bad.append(f"  {key}: not in the composed config; nearest valid keys: {near or sorted(keys)[:10]}")
            continue
        current = keys[key]
        if p.type in ("float", "int") and (isinstance(current, (bool, list, dict, str))):
            bad.append(f"  {key}: {p.type} range for a config value {current!r}")
        if p.type == "categorical":
            for c in p.choices:
                if c is not None and isinstance(c, tuple) != isinstance(current, list) and current is not None:
                    bad.append(f"  {key}: choice {c!r} does not match the config value {current!r} (list vs scalar)")
                    break
    if bad:
        files = " + ".join(str(p) for p in search_space_files(str(cfg.model.id), search_dir_of(cfg)))
        if cfg.sweep.get("sampler") is not None and cfg.sweep.sampler.get("name") == "grid":
            files = f"the grid sweep.grid={cfg.sweep.get('grid')}"
        raise SearchSpaceError(f"search space {files} does not fit the composed config:\n" + "\n".join(bad))


def format_value(v: Any) -> str:
    """A Hydra override value without spaces (best.overrides is word-split by `$(cat ...)`)."""
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v) or math.isinf(v):
            raise ValueError(f"cannot write {v!r} as an override")
        return repr(float(f"{v:.12g}"))  # 0.30000000000000004 (a float step) -> 0.3
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(format_value(x) for x in v) + "]"
    s = str(v)
    if s and all(ch.isalnum() or ch in "_-./:" for ch in s) and s not in ("true", "false", "null"):
        return s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def to_overrides(params: dict[str, Any]) -> list[str]:
    return [f"{k}={format_value(v)}" for k, v in params.items()]


def apply_params(cfg: DictConfig, params: dict[str, Any]) -> DictConfig:
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    for k, v in params.items():
        OmegaConf.update(out, k, v, merge=False)
    return out


def replayable_overrides(cli_overrides: Iterable[str]) -> list[str]:
    """The sweep command's overrides that also configure a replay (train.*, seed, model.params.*, ...)."""
    out = []
    for o in cli_overrides:
        key = o.split("=", 1)[0].lstrip("+~")
        if key.split(".", 1)[0] in NOT_REPLAYED:
            continue
        out.append(o)
    return out


__all__ = [
    "NOT_REPLAYED", "SEARCH_DIR", "Param", "SearchSpaceError", "apply_params", "decode_choice", "encode_choice",
    "format_value", "load_search_space", "parse_param", "replayable_overrides", "search_dir_of",
    "search_space_files", "space_from_record", "space_of", "to_overrides", "validate_space",
]
