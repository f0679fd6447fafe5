"""criteo_x1: BARS Criteo_x1 (official CSVs, md5-checked) on the shared engine: I1-I13 numeric, C1-C26 categorical."""

from bars.data.protocols import criteo_recipe


def recipe(data, raw_dir):
    return criteo_recipe(data, raw_dir)
