"""avazu_x4_001: BARS Avazu x4 protocol on the shared engine (see bars.data.protocols.avazu_recipe)."""

from bars.data.protocols import avazu_recipe


def recipe(data, raw_dir):
    return avazu_recipe(data, raw_dir)
