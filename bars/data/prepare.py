"""`bars prepare data=<name> [data.raw_dir=...] [data.rows=...]`: raw files -> a verified dataset folder.

:func:`prepare` builds the dataset's recipe, named by ``data.recipe`` in ``conf/data/<name>.yaml``: either a
name in ``bars.data.recipes.RECIPES`` (the BARS families, synthetic data, tabular files) or the path of a
``datasets/<name>/prepare.py`` script (run with runpy, never imported) defining
``recipe(data: dict, raw_dir: Path) -> bars.data.engine.Recipe``, for a dataset with code of its own. The output
folder is ``<paths.data>/<name>/<fingerprint>/``; the fingerprint hashes the preprocessing keys of ``cfg.data``
(every key but those in ``NOT_FINGERPRINTED``: where files are, the recipe's name, and facts about the dataset
that do not change its bytes), the raw layout found and the identity of the inputs (file name and size, or the
pinned md5). Only ``cfg.data`` is read: training settings (``protocol.*``, ``model.*``, ``train.*``) never
reach this layer. An existing folder with a manifest is reused after a cheap check.

``data.groups`` (optional: ``{user: [...], item: [...], context: [...]}``) tags fields with their feature group
in the spec (DSSM, FLEN and PPNet read it). It is checked against the recipe's fields before anything is read or
written, and it is fingerprinted like every other data key: it changes ``feature_spec.json``, so a dataset
declared with groups gets its own folder, while a config without the key keeps its earlier fingerprint.

Any number of processes may prepare the same dataset at once (a job array of ``bars train`` on a fresh
project): the build runs under a file lock per output folder (``<paths.data>/.locks/<name>.<fingerprint>.lock``),
so one process builds it and the others wait and reuse it. Temporaries left by killed runs are removed by the
next run (``bars.data.writer.atomic_dir``).
"""

from __future__ import annotations

import json
import runpy
import sys
from collections.abc import Callable
from pathlib import Path

from omegaconf import DictConfig

from bars.config import CONF_DIR, PROJECT_ROOT, fingerprint, hydra_command, to_container
from bars.data.engine import Recipe, build
from bars.data.errors import DataError
from bars.data.recipes import RECIPES
from bars.data.spec import SpecError, assign_groups
from bars.data.transforms import missing_of
from bars.data.vocab import MANIFEST_KEY as VOCAB_KEY
from bars.data.writer import MANIFEST, SPEC, atomic_dir
from bars.fileio import file_lock
from bars.heap import reuse_freed_memory

# cfg.data keys that never change the prepared bytes: where the files are, and facts about the dataset
# (the recipe: the dataset name and the engine's FORMAT_VERSION are in the fingerprint, as for any code)
NOT_FINGERPRINTED = frozenset({"raw_dir", "official_split", "download", "description", "group_column",
                               "bars_split", "recipe", "alias"})
# keys added to existing dataset configs later: left out of the fingerprint while at these defaults, so the
# datasets prepared before them keep their fingerprint
LATE_DEFAULTS = {"labels": None, "meta": [], "validation": "file", "holdout_ratio": 0.1,
                 "copies": {}}


def datasets_dir() -> Path:
    return PROJECT_ROOT / "datasets"


def available_datasets() -> list[str]:
    """The dataset configs: ``conf/data/<name>.yaml`` (aliases such as ``criteo`` included)."""
    return sorted(p.stem for p in (CONF_DIR / "data").glob("*.yaml"))


def dataset_aliases() -> dict[str, str]:
    """The names users type for a default split: ``{"criteo": "criteo_x1", ...}``. An alias is a file
    ``conf/data/<alias>.yaml`` whose defaults list is the target config and which sets only ``data.alias``
    (see conf/data/criteo.yaml); ``DATA=criteo`` then composes the target unchanged, alias recorded."""
    from omegaconf import OmegaConf

    out = {}
    for p in sorted((CONF_DIR / "data").glob("*.yaml")):
        raw = OmegaConf.load(p)
        if "defaults" in raw:
            targets = [d for d in raw.defaults if d != "_self_"]
            out[p.stem] = str(targets[0]) if len(targets) == 1 else ""
    return out


def recipe_function(data: dict) -> Callable[[dict, Path], Recipe]:
    """The function ``data.recipe`` names: a RECIPES name, or a ``datasets/<d>/prepare.py`` script's ``recipe``."""
    name, spec = data.get("name"), data.get("recipe")
    if not spec:
        raise DataError(f"data={name}: config key data.recipe is missing: name a recipe ({', '.join(RECIPES)}) or "
                        f"a datasets/<name>/prepare.py script")
    spec = str(spec)
    if not spec.endswith(".py"):
        if spec not in RECIPES:
            raise DataError(f"data.recipe={spec!r} (data={name}): unknown recipe; recipes are {list(RECIPES)}, or "
                            f"give the path of a datasets/<name>/prepare.py script")
        return RECIPES[spec]
    script = recipe_script(spec, name)
    g = runpy.run_path(str(script), run_name=f"bars_dataset_{name}")
    if not callable(g.get("recipe")):
        raise DataError(f"{script}: defines no recipe(data, raw_dir) function")
    return g["recipe"]


def recipe_script(spec: str, name: object = None) -> Path:
    """The ``datasets/<d>/prepare.py`` script a ``data.recipe`` path names. Only scripts of the project's
    ``datasets/`` folder run: a config value never makes bars execute a file from elsewhere."""
    root = datasets_dir().resolve()
    script = (PROJECT_ROOT / spec).resolve()
    if root not in script.parents or script.name != "prepare.py":
        raise DataError(f"data.recipe={spec!r} (data={name}): a recipe script must be datasets/<name>/prepare.py "
                        f"inside the project ({root}); recipes by name: {list(RECIPES)}")
    if not script.is_file():
        raise DataError(f"data.recipe={spec!r} (data={name}): no such script {script}")
    return script


def _is_int(v: object) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def check_config(data: dict) -> list[str]:
    """Problems of a data config (``cfg.data`` as a dict) found without reading or writing anything: the
    dataset, the recipe, and the keys every recipe reads. Empty when fine. (Recipe-specific keys are checked by
    the recipe, which may download its raw files; ``bars.validate`` calls this before any side effect.)"""
    problems: list[str] = []
    name = data.get("name")
    if not name:
        return ["data.name is missing"]
    if name not in available_datasets():
        return [(f"unknown dataset {name!r}: no conf/data/{name}.yaml; available: "
                 f"{', '.join(available_datasets())}")]
    spec = data.get("recipe")
    try:
        if spec and str(spec).endswith(".py"):
            recipe_script(str(spec), name)
        elif str(spec) not in RECIPES:
            recipe_function(data)  # raises naming the recipes
    except DataError as e:
        problems.append(str(e))
    if "split_seed" in data and not _is_int(data["split_seed"]):
        problems.append(f"data.split_seed must be an integer, got {data['split_seed']!r}")
    ratios = data.get("split_ratios")
    if ratios is not None:
        ok = isinstance(ratios, (list, tuple)) and len(ratios) == 3 and all(
            isinstance(r, (int, float)) and not isinstance(r, bool) and r >= 0 for r in ratios)
        if not ok or not ratios[0] > 0:
            problems.append(f"data.split_ratios must be three non-negative numbers (train, valid, test; train > "
                            f"0, normalised to sum 1), got {ratios!r}")
    mc = data.get("min_count")
    if mc is not None and not (_is_int(mc) and mc >= 0):
        problems.append(f"data.min_count must be an integer >= 0, got {mc!r}")
    rows = data.get("rows")
    if rows is not None and not (_is_int(rows) and rows >= 1):
        problems.append(f"data.rows must be null or an integer >= 1, got {rows!r}")
    raw = data.get("raw_dir")
    if raw is not None and not isinstance(raw, str):
        problems.append(f"data.raw_dir must be a folder path, got {raw!r}")
    return problems


def load_recipe(cfg: DictConfig) -> Recipe:
    data = to_container(cfg.data)
    name = data.get("name")
    if not name:
        raise DataError("config key data.name is missing")
    if name not in available_datasets():
        raise DataError(f"unknown dataset {name!r}: no conf/data/{name}.yaml; available: "
                        f"{', '.join(available_datasets())}")
    raw_dir = Path(data.get("raw_dir") or datasets_dir() / name / "raw").expanduser()
    recipe = recipe_function(data)(data, raw_dir)
    try:
        groups = assign_groups([f.name for f in recipe.fields], data.get("groups"), where="data.groups")
    except SpecError as e:
        raise DataError(f"data={name}: {e}") from None
    for f in recipe.fields:
        f.group = groups.get(f.name, "")
    recipe.params = {k: v for k, v in data.items()
                     if k not in NOT_FINGERPRINTED and not (k in LATE_DEFAULTS and v == LATE_DEFAULTS[k])}
    if recipe.params.get("groups") is None:  # `groups: null` = no groups: the same bytes, the same fingerprint
        recipe.params.pop("groups", None)
    recipe.missing = missing_of(data)
    return recipe


def dataset_fingerprint(recipe: Recipe) -> str:
    return fingerprint(recipe.fingerprint_payload())


def _quick_verify(folder: Path) -> dict | None:
    """A reusable folder has a readable manifest, a spec, split files of the recorded sizes and the vocabulary
    files (a folder prepared before bars kept them is rebuilt: same Parquet bytes, same fingerprint)."""
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
        if not (folder / SPEC).is_file() or VOCAB_KEY not in manifest:
            return None
        for s in manifest["splits"].values():
            if (folder / s["file"]).stat().st_size != s["bytes"]:
                return None
        if not all((folder / v["file"]).is_file() for v in manifest[VOCAB_KEY].values()):
            return None
        return manifest
    except (OSError, ValueError, KeyError):
        return None


def summary(folder: Path, manifest: dict, reused: bool) -> str:
    lines = [f"dataset {manifest['dataset']} ({'reused' if reused else 'built'}): {folder}",
             (f"  fingerprint {manifest['fingerprint']}   layout {manifest.get('layout', '')}   "
              f"split: {manifest.get('split', '')}")]
    for k, s in manifest["splits"].items():
        rate = s["positive_rate"]
        lines.append(f"  {k:<6} {s['rows']:>12,} rows   positive rate {rate if rate is not None else '-'}")
    return "\n".join(lines)


def prepare(cfg: DictConfig, quiet: bool = False) -> Path:
    """Build (or reuse) ``cfg.paths.data/<data.name>/<fingerprint>/`` and return it. The data config is checked
    (:func:`check_config`) before anything is read, downloaded or written."""
    problems = check_config(to_container(cfg.data))
    if problems:
        raise DataError("invalid data config: " + "; ".join(problems))
    recipe = load_recipe(cfg)
    fp = dataset_fingerprint(recipe)
    out = Path(str(cfg.paths.data)).expanduser() / recipe.name / fp
    manifest = _quick_verify(out) if (out / MANIFEST).exists() else None
    if manifest is not None:
        if not quiet:
            print(summary(out, manifest, reused=True))
        return out
    lock = out.parent.parent / ".locks" / f"{recipe.name}.{fp}.lock"
    with file_lock(lock, waiting=lambda: print(f"waiting for another process preparing {out}", file=sys.stderr,
                                               flush=True)):
        manifest = _quick_verify(out) if (out / MANIFEST).exists() else None  # built meanwhile by another one
        if manifest is not None:
            if not quiet:
                print(summary(out, manifest, reused=True))
            return out
        print(f"preparing {recipe.name} ({recipe.layout}) -> {out}", file=sys.stderr, flush=True)
        if (cfg.get("train") or {}).get("reuse_freed_memory", True):
            # the reader's block buffers and the encoder's batches reuse freed pages, not fresh ones from the
            # kernel (bars.heap; 45M Criteo rows: read phase 30.8-33.5 -> 29.0 s, kernel time 11-20 -> 8-10 s)
            reuse_freed_memory()
        with atomic_dir(out) as tmp:
            manifest = build(recipe, tmp, fp)
    if not quiet:
        print(summary(out, manifest, reused=False))
    return out


def main() -> int:
    """``bars prepare data=<name> [overrides]``: exit 1 with ``file:line: ...`` on bad input."""
    return hydra_command("prepare", lambda cfg, _: prepare(cfg) and 0, (DataError,), error_code=1)


if __name__ == "__main__":
    sys.exit(main())
