"""synthetic: generate a Criteo-format raw file of data.rows rows (if absent), then the Criteo engine recipe."""

from bars.data.protocols import criteo_recipe
from bars.data.synthetic import generate_criteo


def recipe(data, raw_dir):
    rows, seed = int(data["rows"]), int(data.get("generator_seed", 0))
    path = raw_dir / f"synthetic_criteo_{rows}_{seed}.txt"
    if not path.exists():
        generate_criteo(path, rows, seed)
    r = criteo_recipe(data, raw_dir, raw_file=path)
    r.layout = "synthetic Criteo-format TSV"
    return r
