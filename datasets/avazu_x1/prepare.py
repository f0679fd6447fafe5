"""avazu_x1: BARS Avazu_x1 (official CSVs, md5-checked) on the shared engine."""

from bars.data.protocols import onehot_recipe


def recipe(data, raw_dir):
    return onehot_recipe(data, raw_dir, list(data["fields"]), allow_libsvm=False)
