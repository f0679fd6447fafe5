"""criteo_x4_001: BARS Criteo x4 protocol on the shared engine (see bars.data.protocols.criteo_recipe)."""

from bars.data.protocols import criteo_recipe


def recipe(data, raw_dir):
    return criteo_recipe(data, raw_dir)
