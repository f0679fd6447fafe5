"""Grids of hyperparameter points a sweep replays (``sweep.sampler.name=grid``): BARS's own tuner grids,
transcribed per (model, BARS split) into ``conf/grids/bars/<split>/<model id>.yaml`` by ``scripts/bars_grids.py``,
or a user's grid file in the same format.

A grid file::

    axes:                      # dotted config keys -> the values the grid walks (flow lists: hidden units)
      model.params.dropout: [0.1, 0.2]
      train.embedding_regularizer: [0.001, 0.01]
    set:                       # keys applied to every point (what BARS used at every expid); optional
      train.batch_size: 4096
    product: true              # the points are the full cartesian product of the axes (default true)
    points: 4                  # the number of points (optional in a user file; checked when given)
    point_list:                # only with product: false: the explicit points, each a value for every axis
      - {model.params.dropout: 0.1, train.embedding_regularizer: 0.001}

BARS's files also carry provenance (``model``, ``bars_model``, ``bars_split``, ``source``, ``bars_commit``,
``expids`` for explicit point lists), kept in :attr:`Grid.meta`.

:func:`load_grid` reads a file (or finds BARS's grid for a model and split) and checks it; :func:`grid_of` the grid
of a composed sweep config. Plain YAML and config: imports neither optuna nor anything that trains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from omegaconf import DictConfig, OmegaConf

from bars.config import CONF_DIR, flatten
from bars.search import Param, SearchSpaceError, to_overrides

GRIDS_DIR = CONF_DIR / "grids"
BARS_GRIDS = GRIDS_DIR / "bars"
FILE_KEYS = {"axes", "set", "product", "points", "point_list", "grid", "model", "data", "bars_model", "bars_split",
             "source", "bars_commit", "expids", "fuxictr_version", "note", "best_expid", "bars_expids"}


class GridError(SearchSpaceError):
    """A grid that cannot be used: no grid for a (model, split), a malformed file, a key the config lacks."""


def _scalar_or_list(v: Any) -> bool:
    scalar = (type(None), bool, int, float, str)
    return isinstance(v, scalar) or (isinstance(v, list) and all(isinstance(x, scalar) for x in v))


def _canon(v: Any) -> str:
    """A value's identity across YAML round trips (1 and 1.0 stay different: 1.0 is a float in the config)."""
    return json.dumps(v, sort_keys=True)


@dataclass(frozen=True)
class Grid:
    """A grid: ``axes`` (key -> values), ``set`` (key -> value for every point), ``points`` (every point as a
    mapping of the axis keys, in replay order: BARS's expid order, or the product in axis order), ``product``
    (True when ``points`` is the full cartesian product of the axes), ``path`` and provenance ``meta``."""

    axes: dict[str, list[Any]]
    set: dict[str, Any]
    points: list[dict[str, Any]]
    product: bool
    path: Path | None = None
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def size(self) -> int:
        return len(self.points)

    @property
    def keys(self) -> list[str]:
        return list(self.axes)

    def digest(self) -> str:
        """Identity of what the grid runs (axes, set, points): a resumed grid study must have the same one."""
        body = json.dumps({"axes": self.axes, "set": self.set, "points": self.points}, sort_keys=True)
        return hashlib.sha256(body.encode()).hexdigest()[:16]

    def describe(self) -> dict[str, Any]:
        """What a study records about its grid."""
        d: dict[str, Any] = {"file": str(self.path) if self.path else None, "points": self.size,
                             "product": self.product, "axes": self.axes, "set": self.set, "digest": self.digest()}
        for k in ("source", "bars_commit", "bars_split", "model"):
            if k in self.meta:
                d[k] = self.meta[k]
        return d


def parse_grid(doc: Any, where: str, path: Path | None = None) -> Grid:
    """A grid from a loaded YAML mapping; every problem raises :class:`GridError` naming ``where`` and the key."""
    if not isinstance(doc, dict):
        raise GridError(f"{where}: a grid file must be a mapping with `axes:` (and optional `set:`, `product:`, "
                        f"`points:`, `point_list:`), got {type(doc).__name__}")
    unknown = sorted(set(doc) - FILE_KEYS)
    if unknown:
        raise GridError(f"{where}: unknown top-level keys {unknown}; a grid has axes, set, product, points, "
                        f"point_list (and provenance: {sorted(FILE_KEYS - {'axes', 'set', 'product', 'points', 'point_list'})})")
    axes = doc.get("axes")
    if not isinstance(axes, dict) or not axes:
        raise GridError(f"{where}: `axes:` must be a non-empty mapping of dotted config keys to value lists")
    for k, vals in axes.items():
        if not isinstance(k, str) or not k:
            raise GridError(f"{where}: axis key {k!r} must be a dotted config key")
        if not isinstance(vals, list) or not vals or not all(_scalar_or_list(v) for v in vals):
            raise GridError(f"{where}: axes.{k} must be a non-empty list of scalars or flat lists, got {vals!r}")
        if len({_canon(v) for v in vals}) != len(vals):
            raise GridError(f"{where}: axes.{k} lists a value twice: {vals!r}")
    fixed = doc.get("set") or {}
    if not isinstance(fixed, dict):
        raise GridError(f"{where}: `set:` must be a mapping of dotted config keys to values")
    for k, v in fixed.items():
        if k in axes:
            raise GridError(f"{where}: set.{k} is also an axis; a key is either walked or fixed")
        if not _scalar_or_list(v) and not isinstance(v, dict):
            raise GridError(f"{where}: set.{k} = {v!r}: expected a scalar, a list or a mapping")
    product = doc.get("product", True)
    if not isinstance(product, bool):
        raise GridError(f"{where}: `product:` must be true or false, got {product!r}")
    listed = doc.get("point_list")
    if product:
        if listed is not None:
            raise GridError(f"{where}: `point_list:` is only for product: false (explicit points)")
        keys = list(axes)
        points = [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*(axes[k] for k in keys))]
    else:
        if not isinstance(listed, list) or not listed:
            raise GridError(f"{where}: product: false needs `point_list:`, a non-empty list of points")
        points = []
        for i, p in enumerate(listed):
            if not isinstance(p, dict) or set(p) != set(axes):
                raise GridError(f"{where}: point_list[{i}] must give a value for every axis {sorted(axes)}, "
                                f"got {sorted(p) if isinstance(p, dict) else p!r}")
            for k, v in p.items():
                if _canon(v) not in {_canon(a) for a in axes[k]}:
                    raise GridError(f"{where}: point_list[{i}].{k} = {v!r} is not in axes.{k} {axes[k]!r}")
            points.append({k: p[k] for k in axes})
        seen = [json.dumps(p, sort_keys=True) for p in points]
        if len(set(seen)) != len(seen):
            raise GridError(f"{where}: point_list lists a point twice")
    n = doc.get("points")
    if n is not None and (not isinstance(n, int) or isinstance(n, bool) or n != len(points)):
        raise GridError(f"{where}: points: {n!r}, but the grid has {len(points)} points"
                        + (f" (the product of {[len(v) for v in axes.values()]})" if product else ""))
    if product:
        assert len(points) == math.prod(len(v) for v in axes.values())
    meta = {k: doc[k] for k in doc if k not in ("axes", "set", "product", "points", "point_list")}
    return Grid(axes={k: list(v) for k, v in axes.items()}, set=dict(fixed), points=points, product=product,
                path=path, meta=meta)


def grid_file(model_id: str, split: str) -> Path:
    """Where BARS's grid for ``model_id`` on BARS split ``split`` (e.g. Frappe_x1) is committed."""
    return BARS_GRIDS / split.lower() / f"{model_id}.yaml"


def available(model_id: str | None = None, split: str | None = None) -> list[tuple[str, str]]:
    """(split, model id) pairs with a committed BARS grid, optionally for one model or one split."""
    out = []
    for p in sorted(BARS_GRIDS.glob("*/*.yaml")):
        if (model_id is None or p.stem == model_id) and (split is None or p.parent.name == split.lower()):
            out.append((p.parent.name, p.stem))
    return out


def load_grid(model_id: str, split: str | None = None, path: str | Path | None = None) -> Grid:
    """The grid in file ``path``, or BARS's grid of ``model_id`` on BARS split ``split`` (case-insensitive:
    Frappe_x1 or frappe_x1). Raises :class:`GridError` when there is none or it is malformed."""
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise GridError(f"grid file {p} does not exist (sweep.grid=<path.yaml> or sweep.grid=bars)")
    else:
        if not split:
            have = sorted({s for s, _ in available(model_id)})
            raise GridError(f"no BARS split to take the grid of model {model_id!r} from: the dataset has no "
                            f"data.bars_split; set sweep.grid_split=<split> to borrow one "
                            f"(BARS grids exist for {model_id} on {have or 'no split'})")
        p = grid_file(model_id, split)
        if not p.is_file():
            splits = sorted({s for s, _ in available(model_id)})
            models = [m for _, m in available(split=split)]
            raise GridError(f"no BARS grid for model {model_id!r} on split {split!r} ({p} does not exist); "
                            f"BARS grids for {model_id}: {splits or 'none'}; models with a grid on {split.lower()}: "
                            f"{len(models)} ({', '.join(models[:12])}{', ...' if len(models) > 12 else ''}); "
                            f"borrow another split's with sweep.grid_split=<split>, or give sweep.grid=<path.yaml>")
    try:
        doc = yaml.safe_load(p.read_text(encoding="utf-8"))
    except yaml.YAMLError as e:
        raise GridError(f"{p}: not valid YAML: {e}") from e
    return parse_grid(doc, str(p), p)


def grid_of(cfg: Any) -> Grid | None:
    """The grid a composed config's sweep replays (``sweep.sampler.name=grid``), else None. ``sweep.grid``:
    ``bars`` (BARS's grid of ``model.id`` on ``sweep.grid_split`` or ``data.bars_split``) or a file path."""
    sweep = cfg.sweep
    sampler = sweep.get("sampler")
    if sampler is None or sampler.get("name") != "grid":
        return None
    spec = sweep.get("grid")
    if spec in (None, ""):
        raise GridError("sweep.sampler.name=grid needs sweep.grid: bars (BARS's grid for the model and the "
                        "dataset's BARS split) or a path to a grid file")
    model_id = str(cfg.model.id)
    if str(spec) == "bars":
        split = sweep.get("grid_split") or cfg.data.get("bars_split")
        return load_grid(model_id, split=None if split is None else str(split))
    if sweep.get("grid_split"):
        raise GridError(f"sweep.grid_split={sweep.grid_split} only applies to sweep.grid=bars, not to the grid "
                        f"file {spec}")
    return load_grid(model_id, path=Path(str(spec)))


def grid_space(grid: Grid) -> dict[str, Param]:
    """The grid's axes as a search space (categorical choices): what the study records and checks."""
    return {k: Param(k, "categorical", choices=tuple(tuple(v) if isinstance(v, list) else v for v in vals))
            for k, vals in grid.axes.items()}


def _touched(key: str, cli: set[str]) -> bool:
    return any(key == o or key.startswith(o + ".") or o.startswith(key + ".") for o in cli)


@dataclass(frozen=True)
class Applied:
    """A sweep config with its grid applied (:func:`apply_grid`)."""

    cfg: DictConfig
    grid: Grid | None
    set_overrides: list[str]  # the grid's set: keys as overrides (replayed in best.overrides before the CLI's)
    kept: list[str]  # set: keys the command line gives (the command line wins)
    partial: bool  # sweep.trials < the grid's size


def apply_grid(cfg: DictConfig, overrides: Any = ()) -> Applied:
    """For ``sweep.sampler.name=grid``: the grid's ``set:`` keys applied to ``cfg`` under the command line (keys
    the ``overrides`` set keep their value), and ``sweep.trials`` = the grid's size unless the command line sets
    it (more than the grid's size is an error). Every axis and set key must exist in the composed config."""
    grid = grid_of(cfg)
    if grid is None:
        return Applied(cfg, None, [], [], False)
    from bars.presets import override_keys

    keys = flatten(cfg)
    where = str(grid.path) if grid.path else "the grid"
    bad = sorted(k for k in [*grid.axes, *grid.set] if k not in keys and not any(
        x.startswith(k + ".") for x in keys))
    if bad:
        import difflib

        near = {k: difflib.get_close_matches(k, list(keys), n=3, cutoff=0.5) for k in bad}
        raise GridError(f"{where}: keys the composed config (model {cfg.model.id}, data {cfg.data.name}) does not "
                        f"have: " + "; ".join(f"{k} (nearest: {near[k] or 'none'})" for k in bad))
    cli = override_keys(overrides)
    out = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    applied, kept = {}, []
    for k, v in grid.set.items():
        if _touched(k, cli):
            kept.append(k)
            continue
        OmegaConf.update(out, k, v, merge=False)
        applied[k] = v
    if "sweep.trials" not in cli:
        out.sweep.trials = grid.size
    trials = int(out.sweep.trials)
    if trials > grid.size:
        raise GridError(f"sweep.trials={trials} is more than the {grid.size} points of the grid {where}; a grid "
                        f"sweep runs each point once (leave sweep.trials out to run the whole grid)")
    return Applied(out, grid, to_overrides(applied), kept, trials < grid.size)


__all__ = ["BARS_GRIDS", "GRIDS_DIR", "Applied", "Grid", "GridError", "apply_grid", "available", "grid_file",
           "grid_of", "grid_space", "load_grid", "parse_grid"]
